/* SPDX-License-Identifier: MIT */
/*
 * test_mpi.c - the MPI engine in spawn mode: this plain program creates
 * pools, and Open MPI starts copies of it that stop in cf_mpi_init().
 *
 * Remote tasks are held back with a gate file (they poll for it), since a
 * worker process cannot see the test's events.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "cfutures_mpi.h"
#include "mpi_test_tasks.h"

#define CF_TEST_PROCESS_INIT(argc, argv) cf_mpi_init(argc, argv)
/* Debian 12's Open MPI 4.1.4 with its external PMIx 4.2 now and then
 * leaves MPI_Comm_spawn waiting for ever with healthy workers: the parent
 * in PMIx_Lookup under ompi_dpm_connect_accept (openpmix/openpmix#2735;
 * README, "MPI engine").  Such a test hits the watchdog, whose stack dump
 * shows that; it is run once more (harness.h, cf_test_supervise). */
#define CF_TEST_RETRY_SIGNATURE                                               \
    {"watchdog: test exceeded its time limit", "MPI_Comm_spawn", "ompi_dpm_connect_accept", \
     "PMIx_Lookup", NULL}
#define CF_TEST_RETRY_WHY "Open MPI 4.1.4 spawn hang in PMIx_Lookup, openpmix/openpmix#2735"
#include "harness.h"

static int square(cf_call *c)
{
    int64_t x = cf_arg_i64(c, 0);
    return cf_return_i64(c, x * x);
}
CF_TASK(square);

static int echo(cf_call *c)
{
    return cf_return_value(c, cf_arg(c, 0));
}
CF_TASK(echo);

/* "a|b" from two strings. */
static int join2(cf_call *c)
{
    const cf_value *a = cf_arg(c, 0), *b = cf_arg(c, 1);
    if (a->kind != CF_STR || b->kind != CF_STR)
        return cf_raise(c, 1, "TypeError", "two strings expected");
    char buf[256];
    snprintf(buf, sizeof buf, "%s|%s", a->as.str, b->as.str);
    cf_value v = cf_str(buf);
    return cf_return_value(c, &v);
}
CF_TASK(join2);

/* Its worker dies (SIGKILL) at input 5; others are squared. */
static int die_at_5(cf_call *c)
{
    int64_t x = cf_arg_i64(c, 0);
    if (x == 5)
        raise(SIGKILL);
    return cf_return_i64(c, x * x);
}
CF_TASK(die_at_5);

static int fail_odd(cf_call *c)
{
    int64_t x = cf_arg_i64(c, 0);
    if (x % 2)
        return cf_raise(c, 42, "ValueError", "odd input %lld", (long long)x);
    return cf_return_i64(c, x);
}
CF_TASK(fail_odd);

/* Returns a pointer, which cannot leave the worker's address space. */
static int return_ptr(cf_call *c)
{
    static int here;
    return cf_return_ptr(c, &here);
}
CF_TASK(return_ptr);

/* Waits until the file named by argument 0 exists (at most 30 s). */
static int wait_gate(cf_call *c)
{
    const char *path = cf_arg_str(c, 0);
    for (int i = 0; i < 30000; i++) {
        if (access(path, F_OK) == 0)
            return cf_return_i64(c, 1);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return cf_raise(c, 1, "TimeoutError", "gate never opened");
}
CF_TASK(wait_gate);

static int die(cf_call *c)
{
    (void)c;
    raise(SIGKILL);
    return 0;
}
CF_TASK(die);

/* Ends the worker process with status argument 0 and no MPI_Finalize. */
static int exit_now(cf_call *c)
{
    fflush(stdout);
    _exit((int)cf_arg_i64(c, 0));
}
CF_TASK(exit_now);

/* Calls exit() with status argument 0: the process's exit handlers run
 * (MPI_Finalize's among them), on the worker's main thread, in a call. */
static int exit_call(cf_call *c)
{
    exit((int)cf_arg_i64(c, 0));
}
CF_TASK(exit_call);

static int nap_ms(cf_call *c)
{
    int64_t ms = cf_arg_i64(c, 0);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    return cf_return_i64(c, ms);
}
CF_TASK(nap_ms);

/* Runs until cf_cancel_requested() (at most 15 s), then raises. */
static int until_stopped(cf_call *c)
{
    for (int i = 0; i < 15000; i++) {
        if (cf_cancel_requested(c))
            return cf_raise(c, CF_ECANCELLED, "CancelledError", "stopped after %d ms", i);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return cf_return_i64(c, 0);
}
CF_TASK(until_stopped);

/* Leaves a file named after its worker's pid in the directory given as
 * argument 0, then runs for 30 s whatever it is asked: only the end of
 * its process stops it. */
static int hold_pid(cf_call *c)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%d", cf_arg_str(c, 0), (int)getpid());
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    if (fd >= 0)
        close(fd);
    struct timespec ts = {0, 1000000};
    for (int i = 0; i < 30000; i++)
        nanosleep(&ts, NULL);
    return cf_return_i64(c, 1);
}
CF_TASK(hold_pid);

/* Returns argument 0 bytes of 0x5a. */
static int big_result(cf_call *c)
{
    size_t n = (size_t)cf_arg_i64(c, 0);
    unsigned char *b = malloc(n);
    if (!b)
        return cf_raise(c, CF_ENOMEM, "MemoryError", "no memory for %zu bytes", n);
    memset(b, 0x5a, n);
    cf_value v = cf_bytes(b, n);
    int rc = cf_return_value(c, &v);
    free(b);
    return rc;
}
CF_TASK(big_result);

/* Registered only after cf_mpi_init(), so the workers never know it. */
static int late(cf_call *c)
{
    return cf_return_i64(c, 1);
}

/* A value no other task returns: a worker's heartbeat thread fails to
 * send the held answers that carry it (see MPI_Send below). */
#define UNSENDABLE INT64_C(0x5eedf00dcafe1234)

static int unsendable(cf_call *c)
{
    return cf_return_i64(c, UNSENDABLE);
}
CF_TASK(unsendable);

/* Until when (CLOCK_MONOTONIC, ns) a worker's heartbeat thread keeps
 * probing inside MPI_Improbe (see below): set by MPI_Send when it fails
 * the held answers, so that this thread is inside MPI while the worker
 * leaves. */
static _Atomic int64_t heartbeat_probe_until;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Through the MPI profiling interface, every MPI_Send of this program
 * (the workers are copies of it) comes here: a RESULT or RESULTS message
 * that a worker's heartbeat thread sends and that carries UNSENDABLE
 * fails, as a send may under MPI_ERRORS_RETURN (out of resources), and
 * that thread then spends half a second inside MPI_Improbe; everything
 * else goes to MPI. */
static bool fail_unsendable(const void *buf, int count, int tag)
{
    const int64_t mark = UNSENDABLE;
    if ((tag == 112 || tag == 115) && buf && count >= 8 &&
        strcmp(cf_thread_name(), "cf-mpi-heartbeat") == 0 &&
        memmem(buf, (size_t)count, &mark, sizeof mark)) {
        atomic_store(&heartbeat_probe_until, mono_ns() + 500000000);
        return true;
    }
    return false;
}

int MPI_Send(const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm)
{
    if (fail_unsendable(buf, count, tag))
        return MPI_ERR_OTHER;
    if (heartbeat_muted(tag)) /* mute_heartbeats */
        return MPI_SUCCESS;
    return PMPI_Send(buf, count, type, dest, tag, comm);
}

/* The same for the answers, which go with MPI_Isend (so that a worker
 * waiting for one still sees EXIT). */
int MPI_Isend(const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm,
              MPI_Request *req)
{
    if (fail_unsendable(buf, count, tag))
        return MPI_ERR_OTHER;
    return PMPI_Isend(buf, count, type, dest, tag, comm, req);
}

/* Returns its worker's pid after argument 0 ms. */
static int pid_after(cf_call *c)
{
    int64_t ms = cf_arg_i64(c, 0);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    return cf_return_i64(c, (int64_t)getpid());
}
CF_TASK(pid_after);

/* How long a worker's heartbeat thread stalls at its next probe for a
 * STOP (see MPI_Improbe below): set in the worker by stall_heartbeat. */
static _Atomic int heartbeat_stall_ms;

static int stall_heartbeat(cf_call *c)
{
    atomic_store(&heartbeat_stall_ms, (int)cf_arg_i64(c, 0));
    return cf_return_i64(c, 7);
}
CF_TASK(stall_heartbeat);

/* Through the MPI profiling interface too: a worker's heartbeat thread
 * sleeps heartbeat_stall_ms once, as a thread that is not scheduled
 * would (no other thread ever sets it). */
int MPI_Improbe(int source, int tag, MPI_Comm comm, int *flag, MPI_Message *message,
                MPI_Status *status)
{
    if (atomic_load(&heartbeat_stall_ms) > 0 &&
        strcmp(cf_thread_name(), "cf-mpi-heartbeat") == 0) {
        int ms = atomic_exchange(&heartbeat_stall_ms, 0);
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    /* Probes on, inside MPI, while heartbeat_probe_until lasts (bounded
     * by that time). */
    while (mono_ns() < atomic_load(&heartbeat_probe_until) &&
           strcmp(cf_thread_name(), "cf-mpi-heartbeat") == 0) {
        int rc = PMPI_Improbe(source, tag, comm, flag, message, status);
        if (rc != MPI_SUCCESS || *flag)
            return rc;
    }
    return PMPI_Improbe(source, tag, comm, flag, message, status);
}

static cf_executor *pool(int n, double hb)
{
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.max_workers = n;
    if (hb > 0)
        o.heartbeat_timeout = hb * cf_test_scale();
    cf_executor *ex = NULL;
    assert_ok(cf_mpi_pool_new(&ex, &o));
    return ex;
}

static int64_t result_i64(cf_future *f)
{
    const cf_value *v = NULL;
    assert_ok(cf_future_result(f, CF_FOREVER, &v));
    assert_int_equal(v->kind, CF_I64);
    return v->as.i64;
}

/* A burst of quick calls of `fn` (square, fail_odd or nap_ms, given even
 * numbers; nap_ms naps 0 ms), all submitted at once: once their answers
 * come (many per message), the manager knows ex's worker(s) for quick
 * at fn (their recent time per call of it is small) and hands a backlog
 * of fn's calls over many at a time. */
static void quick_pace(cf_executor *ex, cf_task_fn *fn)
{
    enum { N = 400 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, fn, CF_ARGS(cf_i64(fn == nap_ms ? 0 : 2 * i)), &fs[i]));
    for (int i = 0; i < N; i++) {
        int64_t want = fn == nap_ms ? 0 : fn == square ? 4 * (int64_t)i * i : 2 * i;
        assert_int_equal(result_i64(fs[i]), want);
        cf_future_release(fs[i]);
    }
}

/* A gate file: closed until gate_open(). */
static char gate_path[64];
static void gate_new(void)
{
    snprintf(gate_path, sizeof gate_path, "/tmp/cf-mpi-gate-%d", (int)getpid());
    unlink(gate_path);
}
static void gate_open(void)
{
    int fd = open(gate_path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
}
static void gate_remove(void)
{
    unlink(gate_path);
}

static void test_results(void **state)
{
    (void)state;
    cf_executor *ex = pool(2, 0);
    assert_int_equal(cf_executor_worker_count(ex), 2);
    cf_future *fs[20];
    for (int i = 0; i < 20; i++)
        assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &fs[i]));
    for (int i = 0; i < 20; i++) {
        assert_int_equal(result_i64(fs[i]), (int64_t)i * i);
        cf_future_release(fs[i]);
    }
    /* Strings and bytes, small and big (references in the encoder). */
    size_t big = 3u << 20;
    unsigned char *buf = malloc(big);
    assert_non_null(buf);
    for (size_t i = 0; i < big; i++)
        buf[i] = (unsigned char)(i * 7);
    cf_future *fb, *fstr;
    assert_ok(cf_submit(ex, echo, CF_ARGS(cf_bytes(buf, big)), &fb));
    assert_ok(cf_submit(ex, echo, CF_ARGS(cf_str("hello")), &fstr));
    const cf_value *v;
    assert_ok(cf_future_result(fb, CF_FOREVER, &v));
    assert_int_equal(v->kind, CF_BYTES);
    assert_int_equal(v->size, big);
    assert_memory_equal(v->as.bytes, buf, big);
    assert_ok(cf_future_result(fstr, CF_FOREVER, &v));
    assert_int_equal(v->kind, CF_STR);
    assert_string_equal(v->as.str, "hello");
    cf_future_release(fb);
    cf_future_release(fstr);
    free(buf);
    assert_ok(cf_executor_destroy(ex));
}

static void test_task_failure_names_worker(void **state)
{
    (void)state;
    cf_executor *ex = pool(2, 0);
    cf_future *f;
    assert_ok(cf_submit(ex, fail_odd, CF_ARGS(cf_i64(3)), &f));
    assert_cf(CF_ETASK, cf_future_result(f, CF_FOREVER, NULL));
    const cf_failure *fl = NULL;
    assert_ok(cf_future_exception(f, CF_FOREVER, &fl));
    assert_non_null(fl);
    assert_int_equal(cf_failure_code(fl), 42);
    assert_string_equal(cf_failure_type(fl), "ValueError");
    const char *msg = cf_failure_message(fl);
    char host[256];
    gethostname(host, sizeof host);
    assert_non_null(strstr(msg, "odd input 3"));
    assert_non_null(strstr(msg, " of 2 on "));
    assert_true(strncmp(msg, "worker 0 of 2", 13) == 0 || strncmp(msg, "worker 1 of 2", 13) == 0);
    /* tests/mpi/two_hosts.sh puts the workers on another host and names
     * it here. */
    const char *remote = getenv("CF_TEST_WORKER_HOST");
    if (remote) {
        char on[300];
        snprintf(on, sizeof on, " of 2 on %s: ", remote);
        assert_non_null(strstr(msg, on));
    }
    cf_future_release(f);
    /* A task the workers do not know: a per-call error, the pool goes on. */
    assert_ok(cf_task_register("late", late));
    assert_ok(cf_submit(ex, late, CF_NOARGS, &f));
    assert_cf(CF_ETASK, cf_future_result(f, CF_FOREVER, NULL));
    assert_ok(cf_future_exception(f, CF_FOREVER, &fl));
    assert_string_equal(cf_failure_type(fl), "NameError");
    assert_non_null(strstr(cf_failure_message(fl), "\"late\" is not registered"));
    cf_future_release(f);
    /* A pointer result fails its own call (it cannot be copied to this
     * process); the frame around it still decodes and the pool goes on. */
    assert_ok(cf_submit(ex, return_ptr, CF_NOARGS, &f));
    assert_cf(CF_ETASK, cf_future_result(f, CF_FOREVER, NULL));
    assert_ok(cf_future_exception(f, CF_FOREVER, &fl));
    assert_int_equal(cf_failure_code(fl), CF_ENOTCOPYABLE);
    assert_string_equal(cf_failure_type(fl), "TypeError");
    assert_non_null(strstr(cf_failure_message(fl), "\"return_ptr\" returned a"));
    cf_future_release(f);
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(5)), &f));
    assert_int_equal(result_i64(f), 25);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_chunks(void **state)
{
    (void)state;
    cf_executor *ex = pool(2, 0);
    enum { N = 1000 };
    static cf_value in[N];
    for (int i = 0; i < N; i++)
        in[i] = cf_i64(i);
    for (int chunk = 1; chunk <= 300; chunk *= 7) {
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = chunk;
        cf_map_input input = cf_input_array(in, N);
        cf_map_iter *it;
        assert_ok(cf_map(ex, fail_odd, &input, 1, &mo, &it));
        for (int i = 0; i < N; i++) {
            const cf_value *v = NULL;
            const cf_failure *fl = NULL;
            int rc = cf_map_next(it, &v, &fl);
            if (i % 2) {
                assert_int_equal(rc, CF_ETASK);
                assert_non_null(strstr(cf_failure_message(fl), "odd input"));
            } else {
                assert_int_equal(rc, CF_OK);
                assert_int_equal(v->as.i64, i);
            }
        }
        assert_int_equal(cf_map_next(it, NULL, NULL), CF_EDONE);
        cf_map_close(it);
    }
    assert_ok(cf_executor_destroy(ex));
}

/* Counts of a map or an executor, checked in one line. */
static void expect_progress(const cf_progress *p, uint64_t submitted, uint64_t running,
                            uint64_t ok, uint64_t failed, uint64_t cancelled, const char *what)
{
    if (p->submitted != submitted || p->running != running || p->succeeded != ok ||
        p->failed != failed || p->cancelled != cancelled)
        fail_msg("%s: submitted %llu running %llu succeeded %llu failed %llu cancelled %llu; "
                 "expected %llu %llu %llu %llu %llu",
                 what, (unsigned long long)p->submitted, (unsigned long long)p->running,
                 (unsigned long long)p->succeeded, (unsigned long long)p->failed,
                 (unsigned long long)p->cancelled, (unsigned long long)submitted,
                 (unsigned long long)running, (unsigned long long)ok,
                 (unsigned long long)failed, (unsigned long long)cancelled);
}

/* Waits (bounded) until ex counts no call running, and returns its counts. */
static cf_progress settled(cf_executor *ex)
{
    cf_progress p;
    double until = cf_test_now() + 30 * cf_test_scale();
    for (;;) {
        assert_ok(cf_executor_progress(ex, &p));
        if (p.running == 0 && cf_progress_ended(&p) == p.submitted)
            return p;
        assert_true(cf_test_now() < until);
        struct timespec ts = {0, 5000000}; /* polling a count: no event for it */
        nanosleep(&ts, NULL);
    }
}

/* An eager map over arrays goes to an MPI pool as chunks, each one object
 * (see cf__chunk), with every guarantee of a map of futures: several
 * inputs stopping at the shortest, copied strings and bytes both ways,
 * frames over the part size, failures at their position, progress counts
 * of the map and of the executor, the map's timeout and an early close
 * cancelling what had not begun, shutdown(cancel_futures) cancelling
 * pending chunks, a pool that breaks failing the rest, and values that
 * cannot be sent refused by cf_map() itself. */
static void test_map_in_chunks(void **state)
{
    (void)state;
    double scale = cf_test_scale();
    cf_executor *ex = pool(2, 0);
    /* Two inputs of strings, the shorter one ending the map. */
    {
        enum { NA = 100, NB = 80 };
        static char sa[NA][8], sb[NB][8];
        static cf_value a[NA], b[NB];
        for (int i = 0; i < NA; i++) {
            snprintf(sa[i], sizeof sa[i], "a%03d", i);
            a[i] = cf_str(sa[i]);
        }
        for (int i = 0; i < NB; i++) {
            snprintf(sb[i], sizeof sb[i], "b%03d", i);
            b[i] = cf_str(sb[i]);
        }
        cf_map_input in[2] = {cf_input_array(a, NA), cf_input_array(b, NB)};
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = 7;
        cf_map_iter *it;
        assert_ok(cf_map(ex, join2, in, 2, &mo, &it));
        memset(sa, 0, sizeof sa); /* copied: the caller's buffers are free */
        for (int i = 0; i < NB; i++) {
            const cf_value *v = NULL;
            assert_ok(cf_map_next(it, &v, NULL));
            char want[32];
            snprintf(want, sizeof want, "a%03d|b%03d", i, i);
            assert_int_equal(v->kind, CF_STR);
            assert_string_equal(v->as.str, want);
        }
        assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
        cf_progress p;
        assert_ok(cf_map_progress(it, &p));
        expect_progress(&p, NB, 0, NB, 0, 0, "two inputs");
        cf_map_close(it);
    }
    /* Failures at their position, counted. */
    {
        enum { N = 50 };
        static cf_value in[N];
        for (int i = 0; i < N; i++)
            in[i] = cf_i64(i);
        cf_map_input mi = cf_input_array(in, N);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = 10;
        cf_map_iter *it;
        assert_ok(cf_map(ex, fail_odd, &mi, 1, &mo, &it));
        for (int i = 0; i < N; i++) {
            const cf_value *v = NULL;
            const cf_failure *fl = NULL;
            int rc = cf_map_next(it, &v, &fl);
            if (i % 2) {
                assert_cf(CF_ETASK, rc);
                assert_non_null(strstr(cf_failure_message(fl), "odd input"));
                assert_non_null(strstr(cf_failure_message(fl), " of 2 on "));
                assert_non_null(strstr(cf_last_error_message(), "ValueError"));
                assert_int_equal(cf_failure_code(fl), 42);
            } else {
                assert_ok(rc);
                assert_int_equal(v->as.i64, i);
            }
        }
        cf_progress p;
        assert_ok(cf_map_progress(it, &p));
        expect_progress(&p, N, 0, N / 2, N / 2, 0, "failures");
        cf_map_close(it);
    }
    /* Bytes over the part size both ways: 4 x 5 MiB in one chunk. */
    {
        enum { N = 4 };
        size_t size = (size_t)5 << 20;
        unsigned char *buf[N];
        static cf_value in[N];
        for (int i = 0; i < N; i++) {
            buf[i] = malloc(size);
            assert_non_null(buf[i]);
            memset(buf[i], 'A' + i, size);
            in[i] = cf_bytes(buf[i], size);
        }
        cf_map_input mi = cf_input_array(in, N);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = N;
        cf_map_iter *it;
        assert_ok(cf_map(ex, echo, &mi, 1, &mo, &it));
        for (int i = 0; i < N; i++)
            free(buf[i]); /* copied */
        for (int i = 0; i < N; i++) {
            const cf_value *v = NULL;
            assert_ok(cf_map_next(it, &v, NULL));
            assert_int_equal(v->kind, CF_BYTES);
            assert_int_equal(v->size, size);
            const unsigned char *p = v->as.bytes;
            assert_true(p[0] == 'A' + i && p[size / 2] == 'A' + i && p[size - 1] == 'A' + i);
        }
        cf_map_close(it);
    }
    /* Values a worker cannot get are refused by cf_map(): in the first
     * chunk, nothing is sent. */
    {
        cf_progress before, after;
        assert_ok(cf_executor_progress(ex, &before));
        int x = 0;
        cf_value bad[3] = {cf_i64(1), cf_ptr(&x), cf_i64(3)};
        cf_map_input mi = cf_input_array(bad, 3);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = 10;
        cf_map_iter *it = NULL;
        assert_cf(CF_ENOTCOPYABLE, cf_map(ex, square, &mi, 1, &mo, &it));
        assert_null(it);
        assert_non_null(strstr(cf_last_error_message(), "map: "));
        cf_value str = cf_str("abc");
        str.size = 1;
        cf_value bad2[2] = {cf_str("ok"), str};
        mi = cf_input_array(bad2, 2);
        assert_cf(CF_EINVAL, cf_map(ex, echo, &mi, 1, &mo, &it));
        assert_ok(cf_executor_progress(ex, &after));
        assert_int_equal(after.submitted, before.submitted);
    }
    assert_ok(cf_executor_destroy(ex));

    /* The map's timeout, then an early close: what had not begun is
     * cancelled (more calls than the manager hands a worker ahead), the
     * rest ends on its own, and every call is counted once. */
    for (int how = 0; how < 2; how++) {
        ex = pool(1, 0);
        enum { N = 300 };
        static cf_value in[N];
        for (int i = 0; i < N; i++)
            in[i] = cf_i64(20);
        cf_map_input mi = cf_input_array(in, N);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.timeout = how == 0 ? 0.5 * scale : CF_FOREVER;
        cf_map_iter *it;
        assert_ok(cf_map(ex, nap_ms, &mi, 1, &mo, &it));
        int got = 0, rc;
        while ((rc = cf_map_next(it, NULL, NULL)) == CF_OK && (how == 0 || got < 1))
            got++;
        if (how == 0) {
            assert_cf(CF_ETIMEDOUT, rc);
            assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
        }
        cf_map_close(it);
        cf_progress p = settled(ex);
        assert_int_equal(p.submitted, N);
        assert_int_equal(p.failed, 0);
        if (p.cancelled < N / 2 || p.succeeded < (uint64_t)got)
            fail_msg("%s: %llu cancelled, %llu succeeded, %d read",
                     how ? "close" : "timeout", (unsigned long long)p.cancelled,
                     (unsigned long long)p.succeeded, got);
        assert_ok(cf_executor_destroy(ex));
    }

    /* shutdown(cancel_futures) while a map runs: its pending chunks are
     * cancelled, and read as cancelled in their place. */
    {
        ex = pool(1, 0);
        enum { N = 300 };
        static cf_value in[N];
        for (int i = 0; i < N; i++)
            in[i] = cf_i64(10);
        cf_map_input mi = cf_input_array(in, N);
        cf_map_iter *it;
        assert_ok(cf_map(ex, nap_ms, &mi, 1, NULL, &it));
        assert_ok(cf_map_next(it, NULL, NULL));
        assert_ok(cf_shutdown(ex, false, true));
        int ok = 1, cancelled = 0, rc;
        bool seen_cancel = false;
        while ((rc = cf_map_next(it, NULL, NULL)) != CF_EDONE) {
            if (rc == CF_OK) {
                assert_false(seen_cancel); /* in input order: the begun first */
                ok++;
            } else {
                assert_cf(CF_ECANCELLED, rc);
                seen_cancel = true;
                cancelled++;
            }
        }
        assert_int_equal(ok + cancelled, N);
        assert_true(cancelled >= N / 2);
        cf_progress p;
        assert_ok(cf_map_progress(it, &p));
        expect_progress(&p, N, 0, (uint64_t)ok, 0, (uint64_t)cancelled, "shutdown");
        cf_map_close(it);
        assert_ok(cf_executor_destroy(ex));
    }

    /* A worker dies in a chunk: earlier elements keep their results, that
     * chunk's and every later one fail with CF_EBROKEN. */
    {
        ex = pool(2, 1.5);
        enum { N = 40 };
        static cf_value in[N];
        for (int i = 0; i < N; i++)
            in[i] = cf_i64(i);
        cf_map_input mi = cf_input_array(in, N);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = 4;
        cf_map_iter *it;
        assert_ok(cf_map(ex, die_at_5, &mi, 1, &mo, &it));
        int broken = 0;
        for (int i = 0; i < N; i++) {
            const cf_value *v = NULL;
            const cf_failure *fl = NULL;
            int rc = cf_map_next(it, &v, &fl);
            if (i >= 4 && i < 8) {
                assert_cf(CF_EBROKEN, rc); /* the chunk of input 5 */
                assert_non_null(strstr(cf_failure_type(fl), "BrokenMPIPool"));
            }
            if (rc == CF_OK)
                assert_int_equal(v->as.i64, (int64_t)i * i);
            else
                assert_cf(CF_EBROKEN, rc);
            broken += rc != CF_OK;
        }
        assert_true(broken >= 4);
        assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
        cf_progress p;
        assert_ok(cf_map_progress(it, &p));
        expect_progress(&p, N, 0, (uint64_t)(N - broken), (uint64_t)broken, 0, "broken");
        cf_map_close(it);
        assert_ok(cf_executor_destroy(ex));
    }
}

/* The rest of the executor API on an MPI pool: a lazy map (buffersize)
 * over a generator, which goes as futures, keeps at most buffersize + 1
 * calls out; cf_as_completed yields every future once, failures included;
 * shutdown(wait, no cancel) runs every queued call before it returns. */
typedef struct {
    int next, n;
    cf_executor *ex;
    uint64_t most_out;
} gen_state;

static int gen_next(void *ctx, cf_value *out)
{
    gen_state *g = ctx;
    if (g->next == g->n)
        return 0;
    cf_progress p;
    if (cf_executor_progress(g->ex, &p) == CF_OK) {
        uint64_t out_now = p.submitted - cf_progress_ended(&p);
        if (out_now > g->most_out)
            g->most_out = out_now;
    }
    *out = cf_i64(g->next++);
    return 1;
}

static void test_lazy_map_as_completed_shutdown(void **state)
{
    (void)state;
    cf_executor *ex = pool(2, 0);
    {
        gen_state g = {0, 200, ex, 0};
        cf_map_input mi = cf_input_generator(gen_next, &g);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.buffersize = 8;
        mo.chunksize = 3;
        cf_map_iter *it;
        assert_ok(cf_map(ex, square, &mi, 1, &mo, &it));
        for (int i = 0; i < 200; i++) {
            const cf_value *v = NULL;
            assert_ok(cf_map_next(it, &v, NULL));
            assert_int_equal(v->as.i64, (int64_t)i * i);
        }
        assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
        cf_map_close(it);
        /* buffersize + 1 units of chunksize calls at most */
        if (g.most_out > (8 + 1) * 3)
            fail_msg("%llu calls out at once", (unsigned long long)g.most_out);
    }
    {
        enum { N = 30 };
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            assert_ok(cf_submit(ex, fail_odd, CF_ARGS(cf_i64(i)), &fs[i]));
        cf_as_completed_iter *ac;
        assert_ok(cf_as_completed(fs, N, 60 * cf_test_scale(), &ac));
        bool seen[N] = {false};
        int failed = 0;
        for (int k = 0; k < N; k++) {
            cf_future *f = NULL;
            assert_ok(cf_as_completed_next(ac, &f));
            int i = -1;
            for (int j = 0; j < N; j++)
                if (fs[j] == f)
                    i = j;
            assert_true(i >= 0 && !seen[i]);
            seen[i] = true;
            assert_true(cf_future_done(f));
            int rc = cf_future_result(f, 0, NULL);
            assert_int_equal(rc, i % 2 ? CF_ETASK : CF_OK);
            failed += rc != CF_OK;
        }
        assert_int_equal(failed, N / 2);
        cf_future *f = NULL;
        assert_cf(CF_EDONE, cf_as_completed_next(ac, &f));
        cf_as_completed_free(ac);
        for (int i = 0; i < N; i++)
            cf_future_release(fs[i]);
    }
    {
        /* Queued behind slow calls: all run before shutdown(wait) returns. */
        enum { N = 40 };
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            assert_ok(cf_submit(ex, i < 2 ? nap_ms : square, CF_ARGS(cf_i64(i < 2 ? 300 : i)),
                                &fs[i]));
        assert_ok(cf_shutdown(ex, true, false));
        for (int i = 0; i < N; i++) {
            assert_true(cf_future_done(fs[i]));
            const cf_value *v = NULL;
            assert_ok(cf_future_result(fs[i], 0, &v));
            assert_int_equal(v->as.i64, i < 2 ? 300 : (int64_t)i * i);
            cf_future_release(fs[i]);
        }
        cf_future *f;
        assert_cf(CF_ESHUTDOWN, cf_submit(ex, square, CF_ARGS(cf_i64(1)), &f));
    }
    assert_ok(cf_executor_destroy(ex));
}

/* Calls queued behind a busy worker travel in batches (several CALL
 * frames in one message, their answers held and sent together): every
 * answer still comes in order and names its worker, a quick call's answer
 * is not held back while a slow call after it in the same message runs,
 * and the call left pending can still be cancelled. */
static void test_batched_calls(void **state)
{
    (void)state;
    {
        cf_executor *ex = pool(1, 0);
        quick_pace(ex, fail_odd);
        quick_pace(ex, nap_ms);
        quick_pace(ex, square);
        gate_new();
        cf_future *gate, *quick[20], *slow, *after[20];
        assert_ok(cf_submit(ex, wait_gate, CF_ARGS(cf_str(gate_path)), &gate));
        /* Queued while the worker (known to be quick) waits at the gate,
         * so the manager hands them over in batches once it has more
         * than one to give. */
        for (int i = 0; i < 20; i++)
            assert_ok(cf_submit(ex, fail_odd, CF_ARGS(cf_i64(i)), &quick[i]));
        assert_ok(cf_submit(ex, nap_ms, CF_ARGS(cf_i64(8000)), &slow));
        for (int i = 0; i < 20; i++)
            assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &after[i]));
        /* One worker and more calls than it: the last one is not sent. */
        assert_true(cf_future_cancel(after[19]));
        gate_open();
        assert_int_equal(result_i64(gate), 1);
        for (int i = 0; i < 20; i++) {
            /* Well before the slow call's 8 s are over. */
            int rc = cf_future_result(quick[i], 4.0 * cf_test_scale(), NULL);
            if (i % 2) {
                assert_int_equal(rc, CF_ETASK);
                const cf_failure *fl = NULL;
                assert_ok(cf_future_exception(quick[i], 0, &fl));
                assert_non_null(strstr(cf_failure_message(fl), "odd input"));
                assert_true(strncmp(cf_failure_message(fl), "worker 0 of 1", 13) == 0);
            } else {
                assert_int_equal(rc, CF_OK);
                assert_int_equal(result_i64(quick[i]), i);
            }
            cf_future_release(quick[i]);
        }
        assert_false(cf_future_done(slow));
        assert_int_equal(result_i64(slow), 8000);
        for (int i = 0; i < 19; i++) {
            assert_int_equal(result_i64(after[i]), (int64_t)i * i);
            cf_future_release(after[i]);
        }
        assert_true(cf_future_cancelled(after[19]));
        cf_future_release(after[19]);
        cf_future_release(slow);
        cf_future_release(gate);
        gate_remove();
        assert_ok(cf_executor_destroy(ex));
    }
}

static int count_cb(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 0;
}

static void test_cancel_wait_callbacks(void **state)
{
    (void)state;
    gate_new();
    cf_executor *ex = pool(2, 0);
    cf_future *block[2], *queued[3];
    static _Atomic int called;
    atomic_store(&called, 0);
    for (int i = 0; i < 2; i++) {
        assert_ok(cf_submit(ex, wait_gate, CF_ARGS(cf_str(gate_path)), &block[i]));
        assert_ok(cf_future_add_done_callback(block[i], count_cb, (void *)&called));
    }
    /* Both blockers go to idle workers at once; what comes next waits. */
    for (int i = 0; i < 2; i++) {
        cf_state st;
        while ((st = cf_future_state(block[i])) != CF_RUNNING)
            assert_int_equal(st, CF_PENDING);
    }
    for (int i = 0; i < 3; i++)
        assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &queued[i]));
    assert_true(cf_future_cancel(queued[1]));
    assert_false(cf_future_cancel(block[0]));
    gate_open();
    cf_future *all[5] = {block[0], block[1], queued[0], queued[1], queued[2]};
    assert_ok(cf_wait(all, 5, CF_FOREVER, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
    assert_int_equal(result_i64(block[0]), 1);
    assert_int_equal(result_i64(queued[2]), 4);
    assert_true(cf_future_cancelled(queued[1]));
    for (int i = 0; i < 5; i++)
        cf_future_release(all[i]);
    /* Callbacks run on the manager thread, maybe just after the waiters
     * are woken; a waited shutdown has joined it. */
    assert_ok(cf_executor_destroy(ex));
    assert_int_equal(atomic_load(&called), 2);
    gate_remove();
}

static void test_shutdown_cancels_pending(void **state)
{
    (void)state;
    gate_new();
    cf_executor *ex = pool(1, 0);
    cf_future *block, *queued[4];
    assert_ok(cf_submit(ex, wait_gate, CF_ARGS(cf_str(gate_path)), &block));
    while (cf_future_state(block) != CF_RUNNING)
        ;
    for (int i = 0; i < 4; i++)
        assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &queued[i]));
    /* The busy worker is handed more jobs only while more are pending
     * than there are workers, so the last call is still pending here; how
     * many before it the manager handed out (marking them running) by now
     * depends on when it looked.  Those run; every call not handed out is
     * cancelled - the latest calls, in submission order. */
    assert_ok(cf_shutdown(ex, false, true));
    cf_future *f;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, square, CF_ARGS(cf_i64(1)), &f));
    bool cancelled[4];
    for (int i = 0; i < 4; i++)
        cancelled[i] = cf_future_cancelled(queued[i]);
    assert_true(cancelled[3]);
    for (int i = 1; i < 4; i++)
        if (cancelled[i - 1])
            assert_true(cancelled[i]);
    gate_open();
    assert_int_equal(result_i64(block), 1);
    for (int i = 0; i < 4; i++)
        if (!cancelled[i])
            assert_int_equal(result_i64(queued[i]), i * i);
    cf_future_release(block);
    for (int i = 0; i < 4; i++)
        cf_future_release(queued[i]);
    assert_ok(cf_executor_destroy(ex));
    gate_remove();
}

/* A worker whose calls are long is handed one call beyond the one it
 * runs, however many wait (its pace for a function is unknown until it
 * answered a call of it, and then long) - also right after a burst of
 * quick calls of another function: so cf_future_cancel(), progress and
 * shutdown(cancel_futures) see the rest as pending, not running. */
static void test_few_calls_handed_ahead(void **state)
{
    (void)state;
    enum { K = 12 };
    cf_executor *ex = pool(2, 0);
    quick_pace(ex, square);
    int64_t ms = (int64_t)(400 * cf_test_scale());
    cf_future *fs[K];
    for (int i = 0; i < K; i++)
        assert_ok(cf_submit(ex, nap_ms, CF_ARGS(cf_i64(ms)), &fs[i]));
    /* Two go to the idle workers at once, and one more to each. */
    for (int i = 0; i < 4; i++) {
        cf_state st;
        while ((st = cf_future_state(fs[i])) != CF_RUNNING)
            assert_int_equal(st, CF_PENDING);
    }
    cf_progress pr;
    assert_ok(cf_executor_progress(ex, &pr));
    assert_true(pr.running <= 4);
    int out = 0;
    for (int i = 0; i < K; i++)
        out += cf_future_running(fs[i]);
    /* 6 once a worker answered (`ms`): one more each. */
    assert_true(out <= 6);
    assert_true(cf_future_cancel(fs[K - 1]));
    assert_ok(cf_shutdown(ex, true, true));
    int ran = 0, cancelled = 0;
    for (int i = 0; i < K; i++) {
        if (cf_future_cancelled(fs[i])) {
            cancelled++;
        } else {
            assert_int_equal(result_i64(fs[i]), ms);
            ran++;
        }
        cf_future_release(fs[i]);
    }
    assert_int_equal(ran + cancelled, K);
    assert_true(ran >= 4);
    assert_true(ran <= 6);
    assert_ok(cf_executor_destroy(ex));
}

/* cf_future_interrupt() reaches the task in its worker: it sees
 * cf_cancel_requested() and ends; the pool goes on. */
static void test_interrupt_reaches_task(void **state)
{
    (void)state;
    cf_executor *ex = pool(1, 0);
    for (int round = 0; round < 3; round++) {
        cf_future *f;
        assert_ok(cf_submit(ex, until_stopped, CF_NOARGS, &f));
        while (cf_future_state(f) == CF_PENDING)
            ;
        double t0 = cf_test_now();
        assert_ok(cf_future_interrupt(f));
        assert_cf(CF_ETASK, cf_future_result(f, CF_FOREVER, NULL));
        const cf_failure *fl;
        assert_ok(cf_future_exception(f, CF_FOREVER, &fl));
        assert_string_equal(cf_failure_type(fl), "CancelledError");
        assert_true(cf_test_now() - t0 < 10);
        cf_future_release(f);
    }
    /* Interrupts racing the dispatch and the start of the call: a STOP
     * may reach the worker before the call begins, and must still stop
     * it; a call not yet handed out is cancelled. */
    for (int round = 0; round < 200; round++) {
        cf_future *f;
        assert_ok(cf_submit(ex, until_stopped, CF_NOARGS, &f));
        assert_ok(cf_future_interrupt(f));
        int rc = cf_future_result(f, CF_FOREVER, NULL);
        if (rc == CF_ETASK) {
            const cf_failure *fl;
            assert_ok(cf_future_exception(f, CF_FOREVER, &fl));
            assert_string_equal(cf_failure_type(fl), "CancelledError");
        } else {
            assert_int_equal(rc, CF_ECANCELLED);
        }
        cf_future_release(f);
    }
    cf_future *g;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(6)), &g));
    assert_int_equal(result_i64(g), 36);
    cf_future_release(g);
    assert_ok(cf_executor_destroy(ex));
}

/* Interrupts of many calls handed to a worker and not begun yet: the
 * worker remembers every STOP until its call begins (it once kept only
 * the last 16, so the calls that began next ran without theirs, here
 * for 15 s each).  A call not yet handed out is cancelled instead. */
static void test_many_interrupts_remembered(void **state)
{
    (void)state;
    enum { K = 40 };
    /* A worker is handed many calls ahead only while they would take
     * little time at its recent pace; how much time that is here depends
     * on the machine's load, so the test knob stretches the limit. */
    assert_int_equal(setenv("CFUTURES_TEST_MPI_AHEAD_NS", "10000000000", 1), 0);
    cf_executor *ex = pool(1, 0);
    assert_int_equal(unsetenv("CFUTURES_TEST_MPI_AHEAD_NS"), 0);
    /* Nor before the worker has answered a call of until_stopped: two
     * stopped at once give it a pace (the time a stop takes). */
    for (int i = 0; i < 2; i++) {
        cf_future *f;
        assert_ok(cf_submit(ex, until_stopped, CF_NOARGS, &f));
        while (cf_future_state(f) == CF_PENDING)
            ;
        assert_ok(cf_future_interrupt(f));
        assert_cf(CF_ETASK, cf_future_result(f, CF_FOREVER, NULL));
        cf_future_release(f);
    }
    /* Then until_stopped never answers, so the pace stays: wait until
     * most of these are out (RUNNING here) before interrupting. */
    cf_future *fs[K];
    for (int i = 0; i < K; i++)
        assert_ok(cf_submit(ex, until_stopped, CF_NOARGS, &fs[i]));
    double t0 = cf_test_now();
    int out = 0;
    while (out < K / 2 && cf_test_now() - t0 < 10 * cf_test_scale()) {
        out = 0;
        for (int i = 0; i < K; i++)
            out += cf_future_state(fs[i]) != CF_PENDING;
    }
    assert_true(out >= K / 2);
    t0 = cf_test_now();
    for (int i = 0; i < K; i++)
        assert_ok(cf_future_interrupt(fs[i]));
    for (int i = 0; i < K; i++) {
        int rc = cf_future_result(fs[i], CF_FOREVER, NULL);
        if (rc == CF_ETASK) {
            const cf_failure *fl;
            assert_ok(cf_future_exception(fs[i], CF_FOREVER, &fl));
            assert_string_equal(cf_failure_type(fl), "CancelledError");
        } else {
            assert_int_equal(rc, CF_ECANCELLED);
        }
        cf_future_release(fs[i]);
    }
    assert_true(cf_test_now() - t0 < 10 * cf_test_scale());
    assert_ok(cf_executor_destroy(ex));
}

static void test_timeout(void **state)
{
    (void)state;
    cf_executor *ex = pool(1, 0);
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 0.05;
    cf_future *f, *g;
    assert_ok(cf_submit_with(ex, &so, nap_ms, CF_ARGS(cf_i64(600)), &f));
    assert_cf(CF_ETIMEDOUT, cf_future_result(f, CF_FOREVER, NULL));
    /* The worker finishes that call, then runs the next. */
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(9)), &g));
    assert_int_equal(result_i64(g), 81);
    cf_future_release(f);
    cf_future_release(g);
    /* A task that watches cf_cancel_requested() ends at its timeout,
     * which frees the worker at once (it would run 15 s otherwise). */
    double t0 = cf_test_now();
    assert_ok(cf_submit_with(ex, &so, until_stopped, CF_NOARGS, &f));
    assert_cf(CF_ETIMEDOUT, cf_future_result(f, CF_FOREVER, NULL));
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(4)), &g));
    assert_int_equal(result_i64(g), 16);
    assert_true(cf_test_now() - t0 < 10);
    cf_future_release(f);
    cf_future_release(g);
    assert_ok(cf_executor_destroy(ex));
}

/* Answers held for a RESULTS message that the heartbeat thread fails to
 * send are lost: the worker must not answer anything after them (the
 * manager takes each answer for its oldest call), it leaves, and its
 * calls fail with the pool.  Its heartbeat thread is then inside MPI
 * (MPI_Improbe above) while the main thread leaves: the worker must not
 * finalize MPI under it (Open MPI crashed in that thread's call; ctest
 * fails the test on the crash report).  A and B go as one CALLS message: a timed
 * call waits at the head of the queue until the worker is idle (nothing
 * timed goes to a busy worker), then goes alone, and they follow it as a
 * backlog (from the second round on, when the worker has answered both
 * functions: A quick, so B may wait behind it; C waits for B).  A's
 * quick answer is held while B runs; if A was not quick
 * (a loaded machine, a sanitizer), nothing is held and every answer
 * comes right: another round, on the same pool. */
static void test_held_answers_lost(void **state)
{
    (void)state;
    cf_executor *ex = pool(1, 1.5);
    /* The worker's first calls are slow (fresh pages): not in a round. */
    cf_future *warm[64];
    for (int i = 0; i < 64; i++)
        assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &warm[i]));
    for (int i = 0; i < 64; i++) {
        assert_int_equal(result_i64(warm[i]), (int64_t)i * i);
        cf_future_release(warm[i]);
    }
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 60;
    bool broke = false;
    for (int round = 0; round < 20 && !broke; round++) {
        gate_new();
        cf_future *gate, *h, *a, *b, *c, *d;
        assert_ok(cf_submit(ex, wait_gate, CF_ARGS(cf_str(gate_path)), &gate));
        assert_ok(cf_submit_with(ex, &so, square, CF_ARGS(cf_i64(2)), &h));
        assert_ok(cf_submit(ex, unsendable, CF_NOARGS, &a));
        assert_ok(cf_submit(ex, nap_ms, CF_ARGS(cf_i64(300)), &b));
        assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(3)), &c));
        assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(4)), &d));
        gate_open();
        assert_int_equal(result_i64(gate), 1);
        assert_int_equal(result_i64(h), 4);
        const cf_value *v = NULL;
        int rc = cf_future_result(a, CF_FOREVER, &v);
        if (rc == CF_OK) {
            /* Sent by the main thread: right, and so is the rest. */
            assert_int_equal(v->as.i64, UNSENDABLE);
            assert_int_equal(result_i64(b), 300);
            assert_int_equal(result_i64(c), 9);
            assert_int_equal(result_i64(d), 16);
        } else {
            /* Lost: the worker left, nobody got another's answer. */
            assert_int_equal(rc, CF_EBROKEN);
            cf_future *rest[] = {b, c, d};
            for (int i = 0; i < 3; i++) {
                rc = cf_future_result(rest[i], CF_FOREVER, &v);
                assert_int_equal(rc, CF_EBROKEN);
            }
            broke = true;
        }
        cf_future *all[] = {gate, h, a, b, c, d};
        for (int i = 0; i < 6; i++)
            cf_future_release(all[i]);
        gate_remove();
    }
    assert_ok(cf_executor_destroy(ex));
    assert_true(broke);
}

/* A call with a timeout is answered as soon as it is done, even when the
 * calls handed over behind it run long: its answer is not held for a
 * RESULTS message, which might leave only after the timeout (here the
 * heartbeat thread that would send it is stalled past it).  The timed
 * call waits at the head of the queue until the worker is idle (nothing
 * timed goes to a busy worker), then goes with the backlog behind it. */
static void test_timed_answer_not_held(void **state)
{
    (void)state;
    double scale = cf_test_scale();
    cf_executor *ex = pool(1, 10);
    gate_new();
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 0.5 * scale;
    int64_t stall_ms = (int64_t)(1500 * scale);
    cf_future *gate, *t, *b, *c, *d;
    assert_ok(cf_submit(ex, wait_gate, CF_ARGS(cf_str(gate_path)), &gate));
    assert_ok(cf_submit_with(ex, &so, stall_heartbeat, CF_ARGS(cf_i64(stall_ms)), &t));
    assert_ok(cf_submit(ex, nap_ms, CF_ARGS(cf_i64(stall_ms + 500)), &b));
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(3)), &c));
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(4)), &d));
    gate_open();
    assert_int_equal(result_i64(gate), 1);
    assert_int_equal(result_i64(t), 7); /* not CF_ETIMEDOUT */
    assert_int_equal(result_i64(b), stall_ms + 500);
    assert_int_equal(result_i64(c), 9);
    assert_int_equal(result_i64(d), 16);
    cf_future *all[] = {gate, t, b, c, d};
    for (int i = 0; i < 5; i++)
        cf_future_release(all[i]);
    gate_remove();
    assert_ok(cf_executor_destroy(ex));
}

/* The log hook's lines, counted and the last kept (the hook runs on the
 * manager thread). */
static struct {
    pthread_mutex_t mu;
    int n;
    char last[512];
} g_log = {PTHREAD_MUTEX_INITIALIZER, 0, ""};

static void log_capture(void *arg, const char *msg)
{
    (void)arg;
    pthread_mutex_lock(&g_log.mu);
    g_log.n++;
    snprintf(g_log.last, sizeof g_log.last, "%s", msg);
    pthread_mutex_unlock(&g_log.mu);
}

static void log_capture_start(void)
{
    pthread_mutex_lock(&g_log.mu);
    g_log.n = 0;
    g_log.last[0] = '\0';
    pthread_mutex_unlock(&g_log.mu);
    cf_set_log_hook(log_capture, NULL);
}

/* Stops capturing; returns the number of lines, the last in `last`. */
static int log_capture_stop(char *last, size_t size)
{
    cf_set_log_hook(NULL, NULL);
    pthread_mutex_lock(&g_log.mu);
    int n = g_log.n;
    snprintf(last, size, "%s", g_log.last);
    pthread_mutex_unlock(&g_log.mu);
    return n;
}

/* A worker that dies is noticed by its silence: its call and the pool
 * break with CF_EBROKEN naming it, within the heartbeat timeout; later
 * submits fail the same way.  The break is said once through the log hook
 * (nobody may be waiting on a future to hear of it). */
static void dead_worker_found(void)
{
    double hb = 1.5;
    log_capture_start();
    cf_executor *ex = pool(2, hb);
    cf_future *f;
    assert_ok(cf_submit(ex, die, CF_NOARGS, &f));
    double t0 = cf_test_now();
    assert_cf(CF_EBROKEN, cf_future_result(f, CF_FOREVER, NULL));
    double took = cf_test_now() - t0;
    const cf_failure *fl = NULL;
    assert_ok(cf_future_exception(f, CF_FOREVER, &fl));
    const char *msg = cf_failure_message(fl);
    assert_non_null(strstr(msg, " of 2 on "));
    assert_non_null(strstr(msg, "sent nothing for"));
    /* Bounded: the heartbeat timeout plus the manager's check interval
     * (a fifth of it), with room for a loaded machine. */
    assert_true(took < 3 * hb * cf_test_scale() + 5);
    cf_future_release(f);
    assert_cf(CF_EBROKEN, cf_submit(ex, square, CF_ARGS(cf_i64(2)), &f));
    assert_non_null(strstr(cf_last_error_message(), "sent nothing for"));
    assert_ok(cf_executor_destroy(ex));
    char last[512];
    int lines = log_capture_stop(last, sizeof last);
    if (lines != 1 || !strstr(last, "MPI pool broken") || !strstr(last, "sent nothing for"))
        fail_msg("%d log lines, the last \"%s\"; expected one saying the pool broke", lines,
                 last);
}

/* The first half of the next test alone: two_hosts.sh runs it over a
 * lossy link, where Open MPI's TCP transport was seen to mistake a new
 * job's connection for an old one ("received unexpected process
 * identifier") and a pool started right after a broken one then did not
 * start (1 run in 31 with 3 % of the packets nftables saw dropped). */
static void test_dead_worker_found(void **state)
{
    (void)state;
    dead_worker_found();
}

/* The same, and then a new pool in the same process works. */
static void test_dead_worker_breaks_pool(void **state)
{
    (void)state;
    dead_worker_found();
    cf_executor *ex = pool(2, 0);
    cf_future *f;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(12)), &f));
    assert_int_equal(result_i64(f), 144);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

/* A task that calls exit() ends its worker: the pool breaks at once,
 * naming the worker, well before the (long) heartbeat timeout; later
 * submits fail; the process's other pool goes on and a new pool works.
 * (It hung for ever: the worker's MPI_Finalize, run by exit(), waited for
 * the parent while its heartbeat thread kept it looking alive.) */
static void task_calls_exit(int n)
{
    double scale = cf_test_scale();
    cf_executor *ex = pool(n, 30), *other = pool(1, 30);
    cf_future *f;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(3)), &f));
    assert_int_equal(result_i64(f), 9);
    cf_future_release(f);
    assert_int_equal(cf_executor_worker_count(ex), n);
    double t0 = cf_test_now();
    assert_ok(cf_submit(ex, exit_call, CF_ARGS(cf_i64(4)), &f));
    int rc = cf_future_result(f, 20 * scale, NULL);
    print_message("the call failed %.2f s after its submit\n", cf_test_now() - t0);
    assert_cf(CF_EBROKEN, rc);
    const cf_failure *fl = NULL;
    assert_ok(cf_future_exception(f, 0, &fl));
    char of_n[32];
    snprintf(of_n, sizeof of_n, " of %d on ", n);
    if (!strstr(cf_failure_message(fl), of_n) ||
        !strstr(cf_failure_message(fl), "left during a call"))
        fail_msg("failure message: %s", cf_failure_message(fl));
    cf_future_release(f);
    assert_cf(CF_EBROKEN, cf_submit(ex, square, CF_ARGS(cf_i64(2)), &f));
    assert_int_equal(cf_executor_worker_count(ex), 0); /* a broken pool's are lost */
    assert_ok(cf_executor_destroy(ex));
    assert_ok(cf_submit(other, square, CF_ARGS(cf_i64(6)), &f));
    assert_int_equal(result_i64(f), 36);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(other));
    ex = pool(1, 0);
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(7)), &f));
    assert_int_equal(result_i64(f), 49);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

/* With one worker too: the pool then has no worker told that it broke,
 * and wind_down() disconnected from the worker that had left - which
 * made Open MPI end this whole program (exit 5) in 6 runs of 10. */
static void test_task_calls_exit(void **state)
{
    (void)state;
    task_calls_exit(2);
    task_calls_exit(1);
}

/* A child forked beside a live pool that ends with exit() runs the
 * parent's exit handlers: the library's must not finalize MPI there.  It
 * did, over the parent's sockets: the child hung in MPI_Finalize and the
 * parent's pool broke.  Now the child exits at once and the pool goes
 * on. */
static void test_fork_child_exit_leaves_mpi_alone(void **state)
{
    (void)state;
    cf_executor *ex = pool(1, 5);
    cf_future *f;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(5)), &f));
    assert_int_equal(result_i64(f), 25);
    cf_future_release(f);
    fflush(stdout);
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) {
        alarm((unsigned)(30 * cf_test_scale())); /* a hang ends as SIGALRM */
        exit(7);
    }
    int st = 0;
    double end = cf_test_now() + 20 * cf_test_scale();
    pid_t r;
    while ((r = waitpid(c, &st, WNOHANG)) == 0 && cf_test_now() < end) {
        struct timespec ts = {0, 10000000}; /* no event for a child's end here */
        nanosleep(&ts, NULL);
    }
    if (r == 0) {
        kill(c, SIGKILL);
        waitpid(c, &st, 0);
        fail_msg("the child did not exit within 20 s");
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 7);
    /* Longer than the heartbeat timeout: a pool the child broke shows. */
    assert_ok(cf_submit(ex, nap_ms, CF_ARGS(cf_i64((int64_t)(6000 * cf_test_scale()))), &f));
    assert_int_equal(result_i64(f), (int64_t)(6000 * cf_test_scale()));
    cf_future_release(f);
    assert_int_equal(cf_executor_worker_count(ex), 1);
    assert_ok(cf_executor_destroy(ex));
}

static void fault_for_workers(const char *spec);

/* cf_mpi_pool_new() of `workers` workers (heartbeat_timeout `hb` when
 * > 0, start_timeout `start`), the workers given the test fault `fault`
 * (NULL: none), must fail with `want`, *out NULL, and a message holding
 * `needle`.  Returns how long it took, in seconds. */
static double start_up_fails(const char *fault, int workers, double hb, double start, int want,
                             const char *needle)
{
    if (fault)
        fault_for_workers(fault);
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.max_workers = workers;
    if (hb > 0)
        o.heartbeat_timeout = hb;
    o.start_timeout = start;
    cf_executor *ex = (cf_executor *)&o;
    double t0 = cf_test_now();
    assert_cf(want, cf_mpi_pool_new(&ex, &o));
    double took = cf_test_now() - t0;
    if (fault)
        unsetenv("CFUTURES_FAULT");
    assert_null(ex);
    print_message("%s (%.2f s)\n", cf_last_error_message(), took);
    assert_non_null(strstr(cf_last_error_message(), needle));
    return took;
}

/* A program whose file was deleted since it started (a deployment that
 * replaced it, say) cannot spawn copies of itself: cf_mpi_pool_new()
 * says so at once with CF_ESYS.  Open MPI's daemon kept the failure to
 * itself and the spawn waited until start_timeout, which then blamed
 * workers dying in MPI_Init.  Run in a copy of this program that deletes
 * its own file first. */
static void test_deleted_program_refused(void **state)
{
    (void)state;
    if (getenv("CF_TEST_DELETED_SELF")) {
        assert_int_equal(unlink(getenv("CF_TEST_DELETED_SELF")), 0);
        assert_true(start_up_fails(NULL, 1, 0, 60, CF_ESYS, "cannot be run") < 30);
        return;
    }
    char self[4096], copy[] = "/tmp/cf-test-mpi-copy-XXXXXX";
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(k > 0);
    self[k] = '\0';
    int out = mkstemp(copy);
    assert_true(out >= 0);
    int in = open(self, O_RDONLY);
    assert_true(in >= 0);
    char buf[1 << 16];
    ssize_t r;
    while ((r = read(in, buf, sizeof buf)) > 0)
        assert_int_equal(write(out, buf, (size_t)r), r);
    close(in);
    assert_int_equal(fchmod(out, 0700), 0);
    close(out);
    fflush(stdout);
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) {
        setenv("CF_TEST_DELETED_SELF", copy, 1);
        setenv("CF_TEST_SUPERVISED", "1", 1); /* run it here, not under a retry */
        char *argv[] = {copy, "test_deleted_program_refused", NULL};
        execv(copy, argv);
        _exit(127);
    }
    int st = 0;
    assert_int_equal(waitpid(c, &st, 0), c); /* the copy's own watchdog bounds it */
    unlink(copy); /* in case it failed before */
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* A heartbeat timeout over 5 h (accepted up to a day) gave a worker an
 * interval over the hour it accepts on its command line: it exited before
 * MPI_Init and the spawn never returned.  The interval is capped. */
static void test_long_heartbeat_timeout(void **state)
{
    (void)state;
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.max_workers = 1;
    o.heartbeat_timeout = 86400;
    o.start_timeout = 30 * cf_test_scale();
    cf_executor *ex = NULL;
    assert_ok(cf_mpi_pool_new(&ex, &o));
    cf_future *f;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(9)), &f));
    assert_int_equal(result_i64(f), 81);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

/* Waits until the n processes are gone, by `end` (cf_test_now()). */
static void await_gone(const pid_t *pids, int n, double end)
{
    for (int i = 0; i < n; i++) {
        while (kill(pids[i], 0) == 0) {
            assert_true(cf_test_now() < end);
            struct timespec ts = {0, 2000000}; /* no event for another's end */
            nanosleep(&ts, NULL);
        }
        assert_int_equal(errno, ESRCH);
    }
}

/* A pool that breaks while its workers live (one falls silent: its
 * heartbeats stop for 4 s, in a call that ignores cf_cancel_requested;
 * the other runs a long map chunk): every worker is told to leave, and
 * their processes end soon after the silent one's call (they once served
 * the broken pool for ever, beating into the intercommunicator the pool
 * had freed); a new pool works. */
static void test_broken_pool_workers_leave(void **state)
{
    (void)state;
    double scale = cf_test_scale();
    cf_executor *ex = pool(2, 1.0);
    cf_future *p[2], *f;
    for (int i = 0; i < 2; i++) /* one each: idle workers go first */
        assert_ok(cf_submit(ex, pid_after, CF_ARGS(cf_i64(300)), &p[i]));
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = (pid_t)result_i64(p[i]);
        cf_future_release(p[i]);
    }
    assert_true(pids[0] != pids[1]);
    double t0 = cf_test_now();
    assert_ok(cf_submit(ex, mute_heartbeats, CF_ARGS(cf_i64((int64_t)(4000 * scale))), &f));
    /* The other worker gets one map chunk of 100 calls of 300 ms (30 s):
     * once told, it runs none after the one under way. */
    static cf_value naps[100];
    for (int i = 0; i < 100; i++)
        naps[i] = cf_i64(300);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 100;
    cf_map_input in = cf_input_array(naps, 100);
    cf_map_iter *it;
    assert_ok(cf_map(ex, nap_ms, &in, 1, &mo, &it));
    assert_cf(CF_EBROKEN, cf_future_result(f, CF_FOREVER, NULL));
    cf_future_release(f);
    assert_non_null(strstr(cf_last_error_message(), "sent nothing for"));
    const cf_value *v;
    assert_cf(CF_EBROKEN, cf_map_next(it, &v, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
    print_message("broken and destroyed after %.2f s\n", cf_test_now() - t0);
    /* Both end: the silent one when its call is over (4 s), the other
     * then too (its MPI_Finalize waits for every worker of its job). */
    await_gone(pids, 2, t0 + 4.0 * scale + 10.0 * scale);
    print_message("workers gone after %.2f s\n", cf_test_now() - t0);
    ex = pool(2, 0);
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(6)), &f));
    assert_int_equal(result_i64(f), 36);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

/* Sleeps the milliseconds it is given as its argument. */
static int slow_cb(cf_future *f, void *arg)
{
    (void)f;
    int64_t ms = *(const int64_t *)arg;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    return 0;
}

/* A done-callback runs on the manager thread; one that takes longer than
 * the heartbeat timeout keeps the manager from reading the heartbeats
 * meanwhile, but the workers were not silent: the pool goes on (it once
 * broke, calling its healthy workers dead). */
static void test_slow_callback_keeps_pool(void **state)
{
    (void)state;
    double hb = 1.0 * cf_test_scale();
    cf_executor *ex = pool(2, 1.0);
    gate_new();
    static int64_t cb_ms;
    cb_ms = (int64_t)(2500 * hb);
    cf_future *f, *g;
    assert_ok(cf_submit(ex, wait_gate, CF_ARGS(cf_str(gate_path)), &f));
    assert_ok(cf_future_add_done_callback(f, slow_cb, &cb_ms));
    gate_open();
    assert_int_equal(result_i64(f), 1);
    /* Handed out while the callback runs, or after it. */
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(9)), &g));
    assert_int_equal(result_i64(g), 81);
    cf_future_release(g);
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(5)), &g));
    assert_int_equal(result_i64(g), 25);
    cf_future_release(g);
    cf_future_release(f);
    gate_remove();
    assert_ok(cf_executor_destroy(ex));
}

/* The pids hold_pid() left in `dir`: waits until there are n. */
static void read_pids(const char *dir, int n, pid_t *pids)
{
    double end = cf_test_now() + 20.0 * cf_test_scale();
    for (;;) {
        int k = 0;
        DIR *d = opendir(dir);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d)) && k < n)
            if (e->d_name[0] != '.')
                pids[k++] = (pid_t)atoi(e->d_name);
        closedir(d);
        if (k == n)
            return;
        assert_true(cf_test_now() < end);
        struct timespec ts = {0, 2000000}; /* the workers signal only by files */
        nanosleep(&ts, NULL);
    }
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[300];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* cf_terminate_workers() and cf_kill_workers() of a spawn-mode pool end
 * its worker processes, even while they run calls that never look at
 * cf_cancel_requested(): those calls fail with CF_EBROKEN at once, the
 * calls not handed out are cancelled, later submits are refused as after
 * a shutdown (and nothing is logged: the owner asked), and a new pool
 * works. */
static void test_terminate_and_kill_workers(void **state)
{
    (void)state;
    for (int kill_them = 0; kill_them < 2; kill_them++) {
        char dir[] = "/tmp/cf-mpi-pids-XXXXXX";
        assert_non_null(mkdtemp(dir));
        log_capture_start();
        cf_executor *ex = pool(2, 20); /* silence alone would take 20 s */
        cf_future *hold[2], *more[4];
        for (int i = 0; i < 2; i++)
            assert_ok(cf_submit(ex, hold_pid, CF_ARGS(cf_str(dir)), &hold[i]));
        for (int i = 0; i < 4; i++)
            assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &more[i]));
        pid_t pids[2];
        read_pids(dir, 2, pids);
        double t0 = cf_test_now();
        assert_ok(kill_them ? cf_kill_workers(ex) : cf_terminate_workers(ex));
        for (int i = 0; i < 2; i++) {
            assert_cf(CF_EBROKEN, cf_future_result(hold[i], CF_FOREVER, NULL));
            const cf_failure *fl;
            assert_ok(cf_future_exception(hold[i], CF_FOREVER, &fl));
            assert_non_null(strstr(cf_failure_message(fl),
                                   kill_them ? "stopped by kill_workers"
                                             : "stopped by terminate_workers"));
            cf_future_release(hold[i]);
        }
        /* At once: not after the heartbeat timeout, nor the 30 s call. */
        print_message("calls failed %.3f s after the %s\n", cf_test_now() - t0,
                      kill_them ? "kill" : "terminate");
        assert_true(cf_test_now() - t0 < 5.0 * cf_test_scale());
        for (int i = 0; i < 4; i++) {
            int rc = cf_future_result(more[i], CF_FOREVER, NULL);
            assert_true(rc == CF_ECANCELLED || rc == CF_EBROKEN);
            cf_future_release(more[i]);
        }
        cf_future *f;
        assert_cf(CF_ESHUTDOWN, cf_submit(ex, square, CF_ARGS(cf_i64(2)), &f));
        /* The processes are gone (their parent, Open MPI's daemon, reaps
         * them). */
        await_gone(pids, 2, cf_test_now() + 10.0 * cf_test_scale());
        assert_ok(cf_executor_destroy(ex));
        remove_dir(dir);
        /* Asked for: not a break to report. */
        char last[512];
        if (log_capture_stop(last, sizeof last) != 0)
            fail_msg("logged \"%s\" for a pool its owner stopped", last);
    }
    cf_executor *ex = pool(2, 0);
    cf_future *f;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(5)), &f));
    assert_int_equal(result_i64(f), 25);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

static unsigned char *pattern(size_t n)
{
    unsigned char *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(i * 31 + (i >> 20));
    return b;
}

/* 64 MiB each way: an argument and the result made from it. */
static void test_big_payloads(void **state)
{
    (void)state;
    /* 64 MiB copied several times each way over TCP: at load 16 on 2
     * cores that outran the default 20 s watchdog (ctest: CF_TEST_TIMEOUT). */
    alarm((unsigned)(50 * cf_test_scale()));
    size_t big = (size_t)64 << 20;
    unsigned char *buf = pattern(big);
    cf_executor *ex = pool(1, 0);
    cf_future *f;
    assert_ok(cf_submit(ex, echo, CF_ARGS(cf_bytes(buf, big)), &f));
    const cf_value *v;
    assert_ok(cf_future_result(f, CF_FOREVER, &v));
    assert_int_equal(v->kind, CF_BYTES);
    assert_int_equal(v->size, big);
    assert_memory_equal(v->as.bytes, buf, big);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
    free(buf);
}

/* A result that takes several seconds to cross (two_hosts.sh runs this
 * with the workers behind a link limited to 25 Mbit/s, where 16 MiB take
 * about 5.4 s) must not look like a silent worker: each part that comes
 * proves the worker alive, and a part is small enough to come well within
 * a 2 s heartbeat timeout there.  On one host it crosses in a moment. */
static void test_slow_big_result_keeps_pool(void **state)
{
    (void)state;
    alarm((unsigned)(40 * cf_test_scale()));
    size_t big = (size_t)16 << 20;
    cf_executor *ex = pool(1, 2.0);
    cf_future *f;
    double t0 = cf_test_now();
    assert_ok(cf_submit(ex, big_result, CF_ARGS(cf_i64((int64_t)big)), &f));
    const cf_value *v;
    assert_ok(cf_future_result(f, CF_FOREVER, &v));
    assert_int_equal(v->kind, CF_BYTES);
    assert_int_equal(v->size, big);
    const unsigned char *bytes = v->as.bytes;
    assert_true(bytes[0] == 0x5a && bytes[big / 2] == 0x5a && bytes[big - 1] == 0x5a);
    print_message("16 MiB result in %.2f s\n", cf_test_now() - t0);
    cf_future_release(f);
    /* The pool is whole: another call runs. */
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(7)), &f));
    assert_int_equal(result_i64(f), 49);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

/* Frames longer than the part limit go as LONG + PARTs; a small limit
 * (the test knob, read by every process when MPI starts) makes ordinary
 * values cross that way, in both directions: frames around the limit,
 * a map chunk whose big values each span several parts, and results. */
static void test_long_frames_split(void **state)
{
    (void)state;
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited)
        skip(); /* the knob is read when MPI starts */
    enum { PART = 100000 };
    setenv("CFUTURES_TEST_MPI_PART", "100000", 1);
    cf_executor *ex = pool(2, 0);
    size_t big = (size_t)1 << 20;
    unsigned char *buf = pattern(big + 64);
    for (int round = 0; round < 3; round++) {
        cf_future *f;
        assert_ok(cf_submit(ex, echo, CF_ARGS(cf_bytes(buf + round, big)), &f));
        const cf_value *v;
        assert_ok(cf_future_result(f, CF_FOREVER, &v));
        assert_int_equal(v->size, big);
        assert_memory_equal(v->as.bytes, buf + round, big);
        cf_future_release(f);
    }
    /* Around the limit: some frames fit one message, the next do not. */
    cf_future *fs[48];
    for (int i = 0; i < 48; i++)
        assert_ok(cf_submit(ex, echo, CF_ARGS(cf_bytes(buf, PART - 40 + (size_t)i)), &fs[i]));
    for (int i = 0; i < 48; i++) {
        const cf_value *v;
        assert_ok(cf_future_result(fs[i], CF_FOREVER, &v));
        assert_int_equal(v->size, PART - 40 + (size_t)i);
        assert_memory_equal(v->as.bytes, buf, v->size);
        cf_future_release(fs[i]);
    }
    /* A chunk of 4 calls of 250 000 bytes each: one frame of 1 MB. */
    enum { N = 16 };
    cf_value in[N];
    for (int i = 0; i < N; i++)
        in[i] = cf_bytes(buf + i, 250000);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 4;
    cf_map_input input = cf_input_array(in, N);
    cf_map_iter *it;
    assert_ok(cf_map(ex, echo, &input, 1, &mo, &it));
    for (int i = 0; i < N; i++) {
        const cf_value *v;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->size, 250000);
        assert_memory_equal(v->as.bytes, buf + i, 250000);
    }
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
    free(buf);
    unsetenv("CFUTURES_TEST_MPI_PART");
}

/* Over 2 GiB in one frame (a map chunk of three calls of 870 MiB each):
 * more than one MPI message can count, so it crosses as PARTs.  About 6
 * GiB of memory at the peak, so it runs only in the plain gcc build
 * (CF_TEST_BIG_TRANSFER) and only when the machine has room. */
static void test_frame_over_2gib(void **state)
{
    (void)state;
#ifndef CF_TEST_BIG_TRANSFER
    print_message("skipped: the >2 GiB transfer runs in the plain gcc build only\n");
    skip();
#else
    long long avail_kb = 0;
    FILE *mi = fopen("/proc/meminfo", "r");
    char line[128];
    while (mi && fgets(line, sizeof line, mi))
        if (sscanf(line, "MemAvailable: %lld kB", &avail_kb) == 1)
            break;
    if (mi)
        fclose(mi);
    if (avail_kb < 10LL << 20) {
        print_message("skipped: %lld MiB available, the >2 GiB transfer needs 10 GiB\n",
                      avail_kb >> 10);
        skip();
    }
    alarm((unsigned)(280 * cf_test_scale())); /* copies, 2.5 GiB over TCP (ctest: room for two) */
    size_t each = (size_t)870 << 20;
    unsigned char *buf = malloc(each + 2);
    assert_non_null(buf);
    for (size_t i = 0; i < each + 2; i++)
        buf[i] = (unsigned char)(i * 7 + (i >> 12));
    int64_t want[3];
    for (int k = 0; k < 3; k++) {
        want[k] = 0;
        for (size_t i = 0; i < each; i++)
            want[k] += buf[k + i];
    }
    cf_executor *ex = pool(1, 0);
    cf_value in[3] = {cf_bytes(buf, each), cf_bytes(buf + 1, each), cf_bytes(buf + 2, each)};
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 3; /* one frame of 2.55 GiB */
    cf_map_input input = cf_input_array(in, 3);
    cf_map_iter *it;
    double t0 = cf_test_now();
    assert_ok(cf_map(ex, sum_bytes, &input, 1, &mo, &it));
    free(buf); /* the calls hold their own copies */
    for (int k = 0; k < 3; k++) {
        const cf_value *v;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, want[k]);
    }
    print_message("2.55 GiB frame crossed in %.2f s\n", cf_test_now() - t0);
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
#endif
}

/* A worker dies while its sibling sends results of 64 MiB (the sibling,
 * told that the pool broke, leaves in the middle of a result): the pool
 * breaks, the half-received message is let go, a new pool works and the
 * process finalizes MPI and exits.
 * The other direction - a worker that dies while a big message to it is
 * being written - is not tested: there Open MPI 4.1's TCP transport
 * deadlocks the writing thread inside MPI (its error path takes the
 * connection's lock again to send a FIN) or, without RDMA, aborts the
 * process (README, "Limits today"). */
static void test_death_during_big_transfer(void **state)
{
    (void)state;
    size_t big = (size_t)64 << 20;
    double t0 = cf_test_now();
    cf_executor *ex = pool(2, 1.5);
    cf_future *f, *g[6];
    assert_ok(cf_submit(ex, die, CF_NOARGS, &f));
    for (int i = 0; i < 6; i++)
        assert_ok(cf_submit(ex, big_result, CF_ARGS(cf_i64((int64_t)big)), &g[i]));
    assert_cf(CF_EBROKEN, cf_future_result(f, CF_FOREVER, NULL));
    int rc = CF_OK;
    for (int i = 0; i < 6; i++) {
        const cf_value *v;
        int r = cf_future_result(g[i], CF_FOREVER, &v);
        assert_true(r == CF_EBROKEN || r == CF_OK);
        if (r == CF_OK)
            assert_int_equal(v->size, big);
        else
            rc = r;
        cf_future_release(g[i]);
    }
    print_message("broken after %.2f s (the big calls: %s)\n", cf_test_now() - t0,
                  cf_err_name(rc));
    fflush(stdout);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
    ex = pool(1, 0);
    print_message("new pool after %.2f s\n", cf_test_now() - t0);
    fflush(stdout);
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(3)), &f));
    assert_int_equal(result_i64(f), 9);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
    print_message("done after %.2f s; MPI_Finalize at exit next\n", cf_test_now() - t0);
}

/* A worker that breaks the protocol: the task sends the manager a
 * message of its own on the pool's intercommunicator - tag argument 0,
 * argument 1 bytes (a LONG header when the tag is LONG's: of 2^60 bytes,
 * or, when argument 2 is 2, of 100, which fits) - and, when argument 2 is
 * 1, dies before the manager has received it all; when it is 2, it then
 * holds its worker until asked to stop (at most 30 s), sending nothing
 * more, while the heartbeats go on.
 * Tags are the engine's (src/mpi/mpi_engine.h): RESULT 112, HB 113,
 * RESULTS 115, LONG 120, PART 121. */
static int send_raw(cf_call *c)
{
    int tag = (int)cf_arg_i64(c, 0);
    size_t size = (size_t)cf_arg_i64(c, 1);
    MPI_Comm parent = MPI_COMM_NULL;
    MPI_Comm_get_parent(&parent);
    unsigned char *buf = calloc(1, size ? size : 1);
    if (parent == MPI_COMM_NULL || !buf)
        return cf_raise(c, CF_ESYS, "OSError", "no parent or no memory");
    int64_t mode = cf_arg_i64(c, 2);
    if (tag == 120 && size == 12) {
        uint32_t result_tag = 112;
        uint64_t total = mode == 2 ? 100 : UINT64_C(1) << 60;
        memcpy(buf, &result_tag, 4); /* the wire is little-endian, as is x86 */
        memcpy(buf + 4, &total, 8);
    }
    MPI_Request req;
    if (MPI_Isend(buf, (int)size, MPI_BYTE, 0, tag, parent, &req) != MPI_SUCCESS)
        return cf_raise(c, CF_ESYS, "OSError", "MPI_Isend failed");
    if (mode == 2) {
        MPI_Wait(&req, MPI_STATUS_IGNORE);
        free(buf);
        double end = cf_test_now() + 30;
        while (!cf_cancel_requested(c) && cf_test_now() < end) {
            struct timespec ts = {0, 10000000}; /* polls the stop request */
            nanosleep(&ts, NULL);
        }
        return cf_return_i64(c, 0);
    }
    if (mode) {
        /* A few turns of progress, so that the first fragment is surely
         * out; the manager cannot ask for the rest that fast. */
        for (int i = 0; i < 10; i++) {
            int done = 0;
            MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        }
        raise(SIGKILL); /* the rest never comes */
    }
    MPI_Wait(&req, MPI_STATUS_IGNORE);
    free(buf);
    return cf_return_i64(c, 0);
}
CF_TASK(send_raw);

/* A message a worker must not send breaks the pool at once, naming what
 * was wrong, even when the worker dies before the message is whole: the
 * manager lets such a message go without waiting for the rest of it
 * (before, a blocking, truncating receive waited for ever). */
static void test_protocol_breach_breaks_pool(void **state)
{
    (void)state;
    static const struct {
        int tag;
        int64_t size, die;
        const char *what;
    } cases[] = {
        {121, 8 << 20, 1, "broke the order of a long frame"},
        {113, 8 << 20, 1, "sent a heartbeat with a body"},
        /* The same from a worker that stays: the message is read in
         * full (a truncated long message crashed Open MPI's TCP
         * transport) and dropped. */
        {121, 8 << 20, 0, "broke the order of a long frame"},
        {113, 8 << 20, 0, "sent a heartbeat with a body"},
        {121, 100000, 0, "broke the order of a long frame"},
        {120, 12, 0, "sent a long frame that does not fit its calls"},
        {112, 4, 0, "sent a result that does not match its calls"}, /* 0 outcomes */
        {115, 8, 0, "sent results that do not match its calls"},    /* an empty frame */
        {99, 100, 0, "sent a message with an unknown tag"},
        /* Sizes are checked before anything is taken for a message: a
         * RESULT over the 1 MiB a worker puts in one message is refused
         * as such, not read in and then found not to match; an unknown
         * tag's 100 MiB (over what the manager reads only to drop it) is
         * left unread, not taken into memory. */
        {112, 4 << 20, 0, "sent a message of 4194304 bytes with tag 112, more than"},
        {99, 100 << 20, 1, "sent a message with an unknown tag"},
        /* A long answer begun and never continued, the worker alive:
         * it held its call, and a destroy, for as long as it lasted. */
        {120, 12, 2, "stopped in the middle of a long answer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double t0 = cf_test_now();
        /* The breach breaks the pool in well under a second; the
         * heartbeat timeout also bounds how long destroying it waits for
         * the dead worker's goodbye. */
        cf_executor *ex = pool(1, 3);
        cf_future *f;
        assert_ok(cf_submit(ex, send_raw,
                            CF_ARGS(cf_i64(cases[i].tag), cf_i64(cases[i].size),
                                    cf_i64(cases[i].die)),
                            &f));
        assert_cf(CF_EBROKEN, cf_future_result(f, 20 * cf_test_scale(), NULL));
        print_message("tag %d: %s (%.2f s)\n", cases[i].tag, cf_last_error_message(),
                      cf_test_now() - t0);
        assert_non_null(strstr(cf_last_error_message(), cases[i].what));
        cf_future_release(f);
        assert_ok(cf_executor_destroy(ex));
    }
}

/* Sets the test fault `spec` (CFUTURES_FAULT) for the workers the next
 * pool spawns; skips the test when MPI is initialised already, since
 * spawned copies get the environment of MPI_Init's time. */
static void fault_for_workers(const char *spec)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited)
        skip();
    setenv("CFUTURES_FAULT", spec, 1);
}

/* A worker out of memory for a frame's answer fails each of the frame's
 * calls with MemoryError - in one message, or in parts for a chunk whose
 * failures (about 60 bytes each) pass the 1 MiB a message carries - and
 * the pool goes on.  The fault "mpi-results-oom:square" builds square's
 * answers as if memory ran out. */
static void test_results_out_of_memory(void **state)
{
    (void)state;
    fault_for_workers("mpi-results-oom:square");
    cf_executor *ex = pool(1, 0);
    unsetenv("CFUTURES_FAULT");
    enum { BIG = 30000 };
    static cf_value in[BIG];
    for (int i = 0; i < BIG; i++)
        in[i] = cf_i64(i);
    static const size_t sizes[] = {1, 100, BIG};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = sizes[k];
        cf_map_input input = cf_input_array(in, sizes[k]);
        cf_map_iter *it;
        assert_ok(cf_map(ex, square, &input, 1, &mo, &it));
        for (size_t i = 0; i < sizes[k]; i++) {
            const cf_failure *fl = NULL;
            assert_int_equal(cf_map_next(it, NULL, &fl), CF_ETASK);
            assert_string_equal(cf_failure_type(fl), "MemoryError");
            assert_non_null(strstr(cf_failure_message(fl), "out of memory for the results"));
        }
        assert_int_equal(cf_map_next(it, NULL, NULL), CF_EDONE);
        cf_map_close(it);
    }
    cf_future *f;
    assert_ok(cf_submit(ex, nap_ms, CF_ARGS(cf_i64(1)), &f));
    assert_int_equal(result_i64(f), 1);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

/* A worker that breaks the protocol while the pool starts (the fault
 * "mpi-bad-hello": an empty HELLO) makes cf_mpi_pool_new() fail at once
 * with CF_EBROKEN naming the breach.  It used to wait for all of
 * start_timeout and then say the workers never started, and the process
 * then did not finalize MPI at exit. */
static void test_breach_during_start_up(void **state)
{
    (void)state;
    start_up_fails("mpi-bad-hello", 2, 0, 15 * cf_test_scale(), CF_EBROKEN,
                   "sent a malformed hello");
}

/* A worker that sends heartbeats but never HELLO (the fault
 * "mpi-no-hello") makes cf_mpi_pool_new() fail after heartbeat_timeout:
 * its heartbeats prove it alive, not started.  It used to hold start-up
 * until start_timeout, and a start_timeout below heartbeat_timeout then
 * abandoned a manager still calling MPI, which a later MPI_Finalize
 * crashed under (this process finalizes MPI at exit). */
static void test_heartbeats_without_hello(void **state)
{
    (void)state;
    /* start_timeout 1 bounds the spawn alone. */
    assert_true(start_up_fails("mpi-no-hello", 1, 2, 1, CF_EBROKEN,
                               "did not say hello within 2.0 s") >= 2);
}

/* A worker that floods the manager with heartbeats (the fault
 * "mpi-hb-flood") breaks its pool, named as such, at start-up or soon
 * after; it used to take every turn of the manager (over TCP no call was
 * sent and no timeout seen while it lasted) and grow the parent by
 * gigabytes. */
static void test_heartbeat_flood_breaks_pool(void **state)
{
    (void)state;
    fault_for_workers("mpi-hb-flood");
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.max_workers = 1;
    o.heartbeat_timeout = 3 * cf_test_scale();
    cf_executor *ex = NULL;
    int rc = cf_mpi_pool_new(&ex, &o);
    unsetenv("CFUTURES_FAULT");
    if (rc == CF_OK) {
        cf_future *f;
        assert_ok(cf_submit(ex, nap_ms, CF_ARGS(cf_i64(5000)), &f));
        assert_cf(CF_EBROKEN, cf_future_result(f, 20 * cf_test_scale(), NULL));
        cf_future_release(f);
    } else {
        assert_int_equal(rc, CF_EBROKEN);
    }
    print_message("%s\n", cf_last_error_message());
    assert_non_null(strstr(cf_last_error_message(), "flooded the manager"));
    if (ex)
        assert_ok(cf_executor_destroy(ex));
}

/* A pool of one worker with the test fault `fault`, which answers a call
 * and misbehaves at the end: destroy must return heartbeat_timeout (1 s
 * scaled) plus 5 s after the end began, give or take, with a log line
 * holding `said`. */
static void let_go_at_end(const char *fault, int64_t x, const char *said)
{
    fault_for_workers(fault);
    cf_executor *ex = pool(1, 1);
    unsetenv("CFUTURES_FAULT");
    cf_future *f;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(x)), &f));
    assert_int_equal(result_i64(f), x * x);
    cf_future_release(f);
    log_capture_start();
    double t0 = cf_test_now();
    assert_ok(cf_executor_destroy(ex));
    double took = cf_test_now() - t0;
    char last[512];
    int n = log_capture_stop(last, sizeof last);
    print_message("destroy took %.2f s; %d log lines, last: %s\n", took, n, last);
    assert_true(n >= 1);
    assert_non_null(strstr(last, said));
    double hb = cf_test_scale(); /* pool(1, 1) */
    assert_true(took >= hb + 5);
    assert_true(took < hb + 5 + 4 * cf_test_scale());
}

/* A worker told EXIT with nothing left to run that goes on beating but
 * never says BYE (the fault "mpi-no-bye") is let go heartbeat_timeout
 * plus 5 s later, with a log line; destroy used to wait for it for ever. */
static void test_worker_without_bye_let_go(void **state)
{
    (void)state;
    let_go_at_end("mpi-no-bye", 7, "did not say BYE within");
}

/* A spawned worker that says BYE and then never disconnects (the fault
 * "mpi-no-disconnect") holds the parent's collective
 * MPI_Comm_disconnect for ever, and MPI has no way out of it: destroy
 * returns heartbeat_timeout plus 5 s after the disconnect began, leaving
 * the manager thread there with a log line, and the process does not
 * finalize MPI at exit (the watchdog would fail a hang there). */
static void test_worker_without_disconnect_let_go(void **state)
{
    (void)state;
    let_go_at_end("mpi-no-disconnect", 8, "does not disconnect");
}

/* Workers that die before MPI_Init leave MPI_Comm_spawn waiting for
 * ever; the constructor gives up after start_timeout instead, and the
 * process still exits (the watchdog would fail a hang at exit). */
static void test_spawn_that_never_returns_times_out(void **state)
{
    (void)state;
    assert_true(start_up_fails("mpi-init-exit", 1, 0, 2, CF_EBROKEN, "within 2 s") >= 2);
}

/* Two pools at once in one process: each talks on its own
 * intercommunicator, so their calls and answers never cross.  When a
 * worker of one ends (`ender` with argument `code`), that pool breaks (its
 * heartbeats) and the other goes on: cf_mpi_init() asked Open MPI's
 * daemon not to end every job of the process (unless the environment
 * says otherwise); a new pool works too. */
static void two_pools_one_ends(cf_task_fn *ender, int64_t code)
{
    const char *abort_env = getenv("OMPI_MCA_orte_abort_on_non_zero_status");
    const char *nosync_env = getenv("OMPI_MCA_orte_allowed_exit_without_sync");
    assert_non_null(abort_env);
    assert_non_null(nosync_env);
    bool others_survive = strcmp(abort_env, "0") == 0 && strcmp(nosync_env, "1") == 0;
    cf_executor *a = pool(2, 1.5), *b = pool(2, 1.5);
    cf_future *fa[50], *fb[50];
    for (int i = 0; i < 50; i++) {
        assert_ok(cf_submit(a, square, CF_ARGS(cf_i64(i)), &fa[i]));
        assert_ok(cf_submit(b, square, CF_ARGS(cf_i64(1000 + i)), &fb[i]));
    }
    for (int i = 0; i < 50; i++) {
        assert_int_equal(result_i64(fa[i]), (int64_t)i * i);
        assert_int_equal(result_i64(fb[i]), (int64_t)(1000 + i) * (1000 + i));
        cf_future_release(fa[i]);
        cf_future_release(fb[i]);
    }
    cf_future *f;
    assert_ok(cf_submit(a, ender, CF_ARGS(cf_i64(code)), &f));
    assert_cf(CF_EBROKEN, cf_future_result(f, CF_FOREVER, NULL));
    cf_future_release(f);
    assert_cf(CF_EBROKEN, cf_submit(a, square, CF_ARGS(cf_i64(2)), &f));
    /* Past a's heartbeat timeout again, so a daemon that ended b's
     * workers would have broken b by now. */
    double until = cf_test_now() + 2 * 1.5 * cf_test_scale();
    for (int i = 0; cf_test_now() < until || i < 10; i++) {
        assert_ok(cf_submit(b, square, CF_ARGS(cf_i64(i)), &f));
        const cf_value *v;
        int rc = cf_future_result(f, CF_FOREVER, &v);
        if (others_survive) {
            assert_ok(rc);
            assert_int_equal(v->as.i64, (int64_t)i * i);
        } else if (rc != CF_OK) {
            assert_int_equal(rc, CF_EBROKEN);
            cf_future_release(f);
            break;
        }
        cf_future_release(f);
        struct timespec ts = {0, 20000000}; /* pacing only: b is checked until `until` */
        nanosleep(&ts, NULL);
    }
    assert_ok(cf_executor_destroy(a));
    assert_ok(cf_executor_destroy(b));
    a = pool(1, 0);
    assert_ok(cf_submit(a, square, CF_ARGS(cf_i64(8)), &f));
    assert_int_equal(result_i64(f), 64);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(a));
}

/* A worker killed (SIGKILL). */
static void test_two_pools_at_once(void **state)
{
    (void)state;
    two_pools_one_ends(die, 0);
}

/* A worker that ends with status 3, and one that ends with status 0
 * without MPI_Finalize (which Open MPI 4.1 counts apart: "without
 * sync"). */
static void test_worker_exit_keeps_other_pool(void **state)
{
    (void)state;
    /* Four pools and two waits past a heartbeat timeout: 11-12 s alone,
     * over the default 20 s watchdog once beside the 2.55 GiB transfer of
     * test_frame_over_2gib (ctest -j2). */
    alarm((unsigned)(40 * cf_test_scale()));
    two_pools_one_ends(exit_now, 3);
    two_pools_one_ends(exit_now, 0);
}

/* CF_AUTO takes the worker count from CFUTURES_MPI_WORKERS; a bad value
 * is refused. */
static void test_workers_from_environment(void **state)
{
    (void)state;
    setenv("CFUTURES_MPI_WORKERS", "3", 1);
    cf_executor *ex = pool(CF_AUTO, 0);
    assert_int_equal(cf_executor_worker_count(ex), 3);
    cf_future *f;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(11)), &f));
    assert_int_equal(result_i64(f), 121);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
    setenv("CFUTURES_MPI_WORKERS", "many", 1);
    assert_cf(CF_EINVAL, cf_mpi_pool_new(&ex, NULL));
    assert_non_null(strstr(cf_last_error_message(), "CFUTURES_MPI_WORKERS"));
    unsetenv("CFUTURES_MPI_WORKERS");
}

/* Run without OMPI_MCA_rmaps_base_oversubscribe, which every other case
 * gets, as a user's program runs (taken out before MPI starts: each case
 * is a process of its own, which starts MPI with its first pool).
 * CF_AUTO without
 * CFUTURES_MPI_WORKERS takes the ranks the universe size offers beyond
 * the running ones, else cf_usable_cpus() (a singleton's universe is 1).
 * More workers than the host has slots (Open MPI's default: one per
 * core) start because `oversubscribe` defaults to true; with it false
 * Open MPI refuses them, and the constructor says so. */
static void test_default_workers_and_oversubscription(void **state)
{
    (void)state;
    int inited = 0;
    MPI_Initialized(&inited);
    assert_false(inited);
    unsetenv("OMPI_MCA_rmaps_base_oversubscribe");
    unsetenv("CFUTURES_MPI_WORKERS");
    cf_executor *ex = pool(CF_AUTO, 0);
    int *usize = NULL, flag = 0, wsize = 1;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_UNIVERSE_SIZE, &usize, &flag);
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    int want = flag && usize && *usize > wsize ? *usize - wsize : cf_usable_cpus();
    assert_int_equal(cf_executor_worker_count(ex), want);
    cf_future *f;
    assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(12)), &f));
    assert_int_equal(result_i64(f), 144);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));

    /* cf_usable_cpus() >= the cores Open MPI counts as slots. */
    int n = cf_usable_cpus() + 2;
    ex = pool(n, 0);
    assert_int_equal(cf_executor_worker_count(ex), n);
    cf_future *fs[16];
    assert_true(n <= 16 || cf_usable_cpus() > 14);
    int k = n < 16 ? n : 16;
    for (int i = 0; i < k; i++)
        assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &fs[i]));
    for (int i = 0; i < k; i++) {
        assert_int_equal(result_i64(fs[i]), (int64_t)i * i);
        cf_future_release(fs[i]);
    }
    assert_ok(cf_executor_destroy(ex));

    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.oversubscribe = false;
    o.max_workers = 256;
    ex = NULL;
    assert_cf(CF_ESYS, cf_mpi_pool_new(&ex, &o));
    assert_null(ex);
    assert_non_null(strstr(cf_last_error_message(), "MPI_Comm_spawn of 256 workers"));
}

/* A program may end with a pool still alive: at exit the pool is shut
 * down (its call finished) before MPI_Finalize, and the process ends (a
 * hang at exit would trip the watchdog, still armed). */
static void test_exit_without_destroy(void **state)
{
    (void)state;
    cf_executor *ex = pool(2, 0);
    static cf_future *f;
    assert_ok(cf_submit(ex, nap_ms, CF_ARGS(cf_i64(200)), &f));
    /* No destroy, no wait: the exit handlers do it. */
}

static void test_bad_options(void **state)
{
    (void)state;
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    cf_executor *ex = (cf_executor *)&o;
    o.max_workers = 0;
    assert_cf(CF_EINVAL, cf_mpi_pool_new(&ex, &o));
    assert_null(ex);
    cf_mpi_pool_options_init(&o);
    o.heartbeat_timeout = -1;
    assert_cf(CF_EINVAL, cf_mpi_pool_new(&ex, &o));
    cf_mpi_pool_options_init(&o);
    o.start_timeout = 0;
    assert_cf(CF_EINVAL, cf_mpi_pool_new(&ex, &o));
    cf_mpi_pool_options_init(&o);
    o.mode = CF_MPI_STATIC; /* not launched by mpirun */
    assert_cf(CF_EINVALSTATE, cf_mpi_pool_new(&ex, &o));
    assert_cf(CF_EINVAL, cf_mpi_pool_new(NULL, NULL));
}

/* The MPI engine does not order calls: a priority other than the default
 * is refused, by submit and by map, and nothing is queued; the default
 * one (also spelled out) is fine. */
static void test_priority_refused(void **state)
{
    (void)state;
    cf_executor *ex = pool(1, 0);
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.priority = 3;
    cf_future *f = NULL;
    assert_cf(CF_ENOTSUP, cf_submit_with(ex, &so, square, CF_ARGS(cf_i64(2)), &f));
    assert_null(f);
    assert_non_null(strstr(cf_last_error_message(), "priority"));
    cf_value xs[2] = {cf_i64(1), cf_i64(2)};
    cf_map_input in = cf_input_array(xs, 2);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.priority = -1;
    cf_map_iter *it = NULL;
    assert_cf(CF_ENOTSUP, cf_map(ex, square, &in, 1, &mo, &it));
    assert_null(it);
    so.priority = CF_PRIORITY_DEFAULT;
    assert_ok(cf_submit_with(ex, &so, square, CF_ARGS(cf_i64(4)), &f));
    assert_int_equal(result_i64(f), 16);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

/* Composition works on MPI futures as on any engine's: a continuation
 * inline and one on the pool, the combinators, a completion queue whose
 * descriptor turns readable, user data, and exact progress counts. */
static void test_compose_cq_progress(void **state)
{
    (void)state;
    cf_executor *ex = pool(1, 0);
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    enum { N = 4 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        assert_ok(cf_submit(ex, square, CF_ARGS(cf_i64(i + 1)), &fs[i]));
        assert_ok(cf_future_set_data(fs[i], &fs[i]));
        assert_ok(cf_cq_add(q, fs[i]));
    }
    cf_future *inl, *on_pool, *all, *any;
    assert_ok(cf_then_ok(fs[1], NULL, square, CF_NOARGS, &inl));
    assert_ok(cf_then_ok(fs[2], ex, square, CF_NOARGS, &on_pool));
    assert_ok(cf_when_all(fs, N, &all));
    assert_ok(cf_when_any(fs, N, &any));
    for (int i = 0; i < N; i++)
        assert_ok(cf_future_release(fs[i])); /* the queue and the rest hold theirs */
    assert_int_equal(result_i64(inl), 16);
    assert_int_equal(result_i64(on_pool), 81);
    const cf_value *r;
    assert_ok(cf_future_result(all, CF_FOREVER, &r));
    for (size_t i = 0; i < N; i++)
        assert_int_equal(cf_when_all_status(r, i), CF_OK);
    int64_t first = result_i64(any);
    assert_true(first >= 0 && first < N);
    /* Every input is done: the queue hands all of them back. */
    struct pollfd p = {.fd = cf_cq_fd(q), .events = POLLIN};
    assert_int_equal(poll(&p, 1, (int)(10000 * cf_test_scale())), 1);
    cf_future *out[N + 1];
    assert_int_equal(cf_cq_pop(q, out, N + 1), N);
    for (int i = 0; i < N; i++) {
        cf_future **slot = cf_future_data(out[i]);
        assert_true(slot >= &fs[0] && slot < &fs[N]);
        int64_t k = slot - fs + 1;
        assert_int_equal(result_i64(out[i]), k * k);
        assert_ok(cf_future_release(out[i]));
    }
    cf_progress pr;
    assert_ok(cf_executor_progress(ex, &pr));
    assert_int_equal(pr.submitted, N + 1);
    assert_int_equal(pr.succeeded, N + 1);
    assert_int_equal(pr.running + pr.failed + pr.cancelled, 0);
    cf_cq_destroy(q);
    assert_ok(cf_future_release(inl));
    assert_ok(cf_future_release(on_pool));
    assert_ok(cf_future_release(all));
    assert_ok(cf_future_release(any));
    assert_ok(cf_executor_destroy(ex));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_results),
    cmocka_unit_test(test_task_failure_names_worker),
    cmocka_unit_test(test_map_chunks),
    cmocka_unit_test(test_map_in_chunks),
    cmocka_unit_test(test_lazy_map_as_completed_shutdown),
    cmocka_unit_test(test_batched_calls),
    cmocka_unit_test(test_cancel_wait_callbacks),
    cmocka_unit_test(test_shutdown_cancels_pending),
    cmocka_unit_test(test_timeout),
    cmocka_unit_test(test_interrupt_reaches_task),
    cmocka_unit_test(test_many_interrupts_remembered),
    cmocka_unit_test(test_few_calls_handed_ahead),
    cmocka_unit_test(test_held_answers_lost),
    cmocka_unit_test(test_timed_answer_not_held),
    cmocka_unit_test(test_dead_worker_found),
    cmocka_unit_test(test_dead_worker_breaks_pool),
    cmocka_unit_test(test_broken_pool_workers_leave),
    cmocka_unit_test(test_slow_callback_keeps_pool),
    cmocka_unit_test(test_terminate_and_kill_workers),
    cmocka_unit_test(test_task_calls_exit),
    cmocka_unit_test(test_fork_child_exit_leaves_mpi_alone),
    cmocka_unit_test(test_long_heartbeat_timeout),
    cmocka_unit_test(test_deleted_program_refused),
    cmocka_unit_test(test_big_payloads),
    cmocka_unit_test(test_slow_big_result_keeps_pool),
    cmocka_unit_test(test_long_frames_split),
    cmocka_unit_test(test_frame_over_2gib),
    cmocka_unit_test(test_death_during_big_transfer),
    cmocka_unit_test(test_protocol_breach_breaks_pool),
    cmocka_unit_test(test_results_out_of_memory),
    cmocka_unit_test(test_breach_during_start_up),
    cmocka_unit_test(test_spawn_that_never_returns_times_out),
    cmocka_unit_test(test_heartbeats_without_hello),
    cmocka_unit_test(test_heartbeat_flood_breaks_pool),
    cmocka_unit_test(test_worker_without_bye_let_go),
    cmocka_unit_test(test_worker_without_disconnect_let_go),
    cmocka_unit_test(test_two_pools_at_once),
    cmocka_unit_test(test_worker_exit_keeps_other_pool),
    cmocka_unit_test(test_workers_from_environment),
    cmocka_unit_test(test_default_workers_and_oversubscription),
    cmocka_unit_test(test_exit_without_destroy),
    cmocka_unit_test(test_bad_options),
    cmocka_unit_test(test_priority_refused),
    cmocka_unit_test(test_compose_cq_progress),
};

CF_TEST_MAIN(tests)
