/* SPDX-License-Identifier: MIT */
/*
 * static_prog.c - the MPI engine in static mode, run by ctest under
 * `mpirun -np N`: rank 0 runs this main, ranks 1..N-1 serve its pool from
 * cf_mpi_init() and exit 0 when the pool is destroyed.
 *
 *   static_prog          results, a task failure naming its worker, a
 *                        chunked map; exits 0 when all is well
 *   static_prog crash    a worker rank kills itself: the launcher must
 *                        end the whole job with a non-zero status
 *   static_prog exitcall  a worker rank's task calls exit(0): the rank
 *                        ends with status 1 (not MPI_Finalize, which
 *                        crashed there), rank 0's call fails at once
 *                        (unless the launcher ends it first), and the
 *                        launcher ends the job non-zero
 *   static_prog nopool   rank 0 never makes a pool: the other ranks must
 *                        still leave when it exits, and the job exit 0
 *   static_prog terminate  cf_terminate_workers() while every worker runs a
 *                        long call: the calls are asked to stop (a rank
 *                        is not killed, which would end the job), the
 *                        waiting ones are cancelled, the job exits 0
 *   static_prog mute     a worker's heartbeats stop for 3 s (the rank
 *                        lives on): the pool breaks, and the job must
 *                        still end, 0 (the ranks once kept serving the
 *                        broken pool, and rank 0's MPI_Finalize waited
 *                        for them until the launcher's time limit)
 *   static_prog partfail  a call's argument goes as LONG + PARTs (small
 *                        parts) and MPI fails rank 0's third PART: the pool
 *                        breaks while the worker waits for the rest, and
 *                        the job must still end, 0 (the worker once waited
 *                        for that PART for ever, never reading EXIT)
 */
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfutures_mpi.h"
#include "mpi_test_tasks.h"

static int square(cf_call *c)
{
    int64_t x = cf_arg_i64(c, 0);
    if (x < 0)
        return cf_raise(c, 7, "ValueError", "negative input %lld", (long long)x);
    return cf_return_i64(c, x * x);
}
CF_TASK(square);

static int die(cf_call *c)
{
    (void)c;
    raise(SIGKILL);
    return 0;
}
CF_TASK(die);

static int exit_call(cf_call *c)
{
    (void)c;
    exit(0);
}
CF_TASK(exit_call);

/* Runs until cf_cancel_requested() (at most 30 s), then raises. */
static int until_stopped(cf_call *c)
{
    struct timespec ts = {0, 1000000};
    for (int i = 0; i < 30000; i++) {
        if (cf_cancel_requested(c))
            return cf_raise(c, CF_ECANCELLED, "CancelledError", "stopped after %d ms", i);
        nanosleep(&ts, NULL);
    }
    return cf_return_i64(c, 0);
}
CF_TASK(until_stopped);

int MPI_Send(const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm)
{
    if (heartbeat_muted(tag)) /* mute_heartbeats */
        return MPI_SUCCESS;
    return PMPI_Send(buf, count, type, dest, tag, comm);
}

/* Rank 0, partfail: the PART sends that fail (counted down to 1, the
 * one that fails; 0: none). */
static _Atomic int fail_part_in;

int MPI_Isend(const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm,
              MPI_Request *req)
{
    if (tag == 121 && atomic_load(&fail_part_in) > 0 && atomic_fetch_sub(&fail_part_in, 1) == 1)
        return MPI_ERR_OTHER;
    return PMPI_Isend(buf, count, type, dest, tag, comm, req);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "static_prog: check failed at line %d: %s (%s)\n", \
                    __LINE__, #cond, cf_last_error_message());                \
            return 1;                                                         \
        }                                                                     \
    } while (0)

/* One call, to show the pool is up; then says so, naming what comes
 * (so that a caller can tell it from a launch that failed), and submits
 * `task`.  Returns its future, or NULL (said on stderr) if a step
 * failed. */
static cf_future *after_one_call(cf_executor *ex, cf_task_fn *task, const char *what)
{
    cf_future *f;
    int rc = cf_submit(ex, square, CF_ARGS(cf_i64(5)), &f);
    if (rc == CF_OK) {
        rc = cf_future_result(f, CF_FOREVER, NULL);
        cf_future_release(f);
    }
    if (rc == CF_OK) {
        printf("static_prog: pool up, %s now\n", what);
        fflush(stdout);
        rc = cf_submit(ex, task, CF_NOARGS, &f);
    }
    if (rc != CF_OK) {
        fprintf(stderr, "static_prog: before %s: %s (%s)\n", what, cf_err_name(rc),
                cf_last_error_message());
        return NULL;
    }
    return f;
}

static int exit_from_callback(cf_future *f, void *arg)
{
    (void)f;
    (void)arg;
    printf("static_prog: cbexit, workers OK\n");
    fflush(stdout);
    exit(0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "partfail") == 0)
        setenv("CFUTURES_TEST_MPI_PART", "4096", 1); /* every rank, before MPI */
    CHECK(cf_mpi_init(argc, argv) == CF_OK); /* ranks 1..N-1 stop here */
    if (argc > 1 && strcmp(argv[1], "nopool") == 0) {
        printf("static_prog: no pool, workers OK\n");
        return 0;
    }
    cf_executor *ex = NULL;
    if (argc > 1 && strcmp(argv[1], "mute") == 0) {
        cf_mpi_pool_options o;
        cf_mpi_pool_options_init(&o);
        o.heartbeat_timeout = 1; /* the least static mode takes */
        CHECK(cf_mpi_pool_new(&ex, &o) == CF_OK);
        CHECK(break_by_silence(ex));
        CHECK(cf_executor_destroy(ex) == CF_OK);
        printf("static_prog: mute, workers OK\n");
        return 0; /* the job ends once every rank finalizes */
    }
    if (argc > 1 && strcmp(argv[1], "partfail") == 0) {
        cf_mpi_pool_options o;
        cf_mpi_pool_options_init(&o);
        o.heartbeat_timeout = 1;
        CHECK(cf_mpi_pool_new(&ex, &o) == CF_OK);
        static unsigned char big[64 * 1024];
        memset(big, 1, sizeof big);
        cf_future *f;
        /* A first call whole, then one whose third PART fails. */
        CHECK(cf_submit(ex, sum_bytes, CF_ARGS(cf_bytes(big, sizeof big)), &f) == CF_OK);
        const cf_value *v;
        CHECK(cf_future_result(f, CF_FOREVER, &v) == CF_OK && v->as.i64 == (int64_t)sizeof big);
        cf_future_release(f);
        atomic_store(&fail_part_in, 3);
        CHECK(cf_submit(ex, sum_bytes, CF_ARGS(cf_bytes(big, sizeof big)), &f) == CF_OK);
        CHECK(cf_future_result(f, CF_FOREVER, NULL) != CF_OK);
        cf_future_release(f);
        CHECK(cf_submit(ex, square, CF_ARGS(cf_i64(2)), &f) == CF_EBROKEN);
        CHECK(cf_executor_destroy(ex) == CF_OK);
        printf("static_prog: partfail, workers OK\n");
        return 0; /* the job ends once every rank finalizes */
    }
    if (argc > 1 && strcmp(argv[1], "late") == 0) {
        /* The worker ranks beat from cf_mpi_init() on, every 0.2 s: a
         * pool made 16 s later finds 80 heartbeats queued, which must
         * not count as a flood (they did: budget counted from the pool's
         * start). */
        sleep(16);
    }
    CHECK(cf_mpi_pool_new(&ex, NULL) == CF_OK);
    int n = cf_executor_worker_count(ex);
    CHECK(n >= 1);
    if (argc > 1 && strcmp(argv[1], "cbexit") == 0) {
        /* exit() from a done-callback, on the pool's manager thread: the
         * worker ranks must still be told to leave, or MPI_Finalize at
         * exit waits for them for ever (it did). */
        cf_future *f;
        CHECK(cf_submit(ex, square, CF_ARGS(cf_i64(3)), &f) == CF_OK);
        CHECK(cf_future_add_done_callback(f, exit_from_callback, NULL) == CF_OK);
        pause(); /* the callback ends the process */
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "crash") == 0) {
        cf_future *f = after_one_call(ex, die, "a rank dies");
        CHECK(f != NULL);
        cf_future_result(f, CF_FOREVER, NULL); /* the launcher ends us */
        fprintf(stderr, "static_prog: still alive after a rank died\n");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "exitcall") == 0) {
        cf_future *f = after_one_call(ex, exit_call, "a task calls exit(0)");
        CHECK(f != NULL);
        /* Not the heartbeat timeout's 5 s: the worker says it leaves. */
        int rc = cf_future_result(f, 4.0, NULL);
        printf("static_prog: exitcall: %s\n", cf_err_name(rc));
        fflush(stdout);
        CHECK(rc == CF_EBROKEN);
        cf_future_release(f);
        cf_executor_destroy(ex);
        return 0; /* the launcher ends the job: a rank ended with status 1 */
    }
    if (argc > 1 && strcmp(argv[1], "terminate") == 0) {
        cf_future *run[16], *wait[4];
        CHECK(n <= 16);
        for (int i = 0; i < n; i++)
            CHECK(cf_submit(ex, until_stopped, CF_NOARGS, &run[i]) == CF_OK);
        for (int i = 0; i < 4; i++)
            CHECK(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &wait[i]) == CF_OK);
        /* Handed to their workers (one each: idle workers go first). */
        for (int i = 0; i < n; i++)
            while (cf_future_state(run[i]) == CF_PENDING) {
                struct timespec ts = {0, 1000000}; /* no event for RUNNING */
                nanosleep(&ts, NULL);
            }
        double t0 = now_s();
        CHECK(cf_terminate_workers(ex) == CF_OK);
        for (int i = 0; i < n; i++) {
            CHECK(cf_future_result(run[i], CF_FOREVER, NULL) == CF_ETASK);
            const cf_failure *fl;
            CHECK(cf_future_exception(run[i], CF_FOREVER, &fl) == CF_OK);
            CHECK(strcmp(cf_failure_type(fl), "CancelledError") == 0);
            cf_future_release(run[i]);
        }
        CHECK(now_s() - t0 < 15); /* not the calls' 30 s */
        for (int i = 0; i < 4; i++) {
            int rc = cf_future_result(wait[i], CF_FOREVER, NULL);
            CHECK(rc == CF_ECANCELLED || rc == CF_OK);
            cf_future_release(wait[i]);
        }
        cf_future *f;
        CHECK(cf_submit(ex, square, CF_ARGS(cf_i64(1)), &f) == CF_ESHUTDOWN);
        CHECK(cf_executor_destroy(ex) == CF_OK);
        printf("static_prog: terminate after %.2f s, %d workers OK\n", now_s() - t0, n);
        return 0;
    }
    cf_future *fs[50];
    for (int i = 0; i < 50; i++)
        CHECK(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &fs[i]) == CF_OK);
    for (int i = 0; i < 50; i++) {
        const cf_value *v;
        CHECK(cf_future_result(fs[i], CF_FOREVER, &v) == CF_OK);
        CHECK(v->as.i64 == (int64_t)i * i);
        cf_future_release(fs[i]);
    }
    cf_future *f;
    CHECK(cf_submit(ex, square, CF_ARGS(cf_i64(-3)), &f) == CF_OK);
    CHECK(cf_future_result(f, CF_FOREVER, NULL) == CF_ETASK);
    const cf_failure *fl;
    CHECK(cf_future_exception(f, CF_FOREVER, &fl) == CF_OK);
    char expect[128];
    snprintf(expect, sizeof expect, " of %d on ", n + 1);
    CHECK(strstr(cf_failure_message(fl), expect) != NULL);
    CHECK(strstr(cf_failure_message(fl), "negative input -3") != NULL);
    /* two_hosts.sh puts every worker rank on the host it names. */
    const char *remote = getenv("CF_TEST_WORKER_HOST");
    if (remote) {
        snprintf(expect, sizeof expect, " of %d on %s: ", n + 1, remote);
        CHECK(strstr(cf_failure_message(fl), expect) != NULL);
    }
    cf_future_release(f);

    enum { N = 500 };
    static cf_value in[N];
    for (int i = 0; i < N; i++)
        in[i] = cf_i64(i);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 64;
    cf_map_input input = cf_input_array(in, N);
    cf_map_iter *it;
    CHECK(cf_map(ex, square, &input, 1, &mo, &it) == CF_OK);
    for (int i = 0; i < N; i++) {
        const cf_value *v;
        CHECK(cf_map_next(it, &v, NULL) == CF_OK);
        CHECK(v->as.i64 == (int64_t)i * i);
    }
    cf_map_close(it);
    CHECK(cf_executor_destroy(ex) == CF_OK);
    /* The ranks have left: a second static pool is refused. */
    CHECK(cf_mpi_pool_new(&ex, NULL) == CF_EINVALSTATE);
    printf("static_prog: %d workers OK\n", n);
    return 0;
}
