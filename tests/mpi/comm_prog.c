/* SPDX-License-Identifier: MIT */
/*
 * comm_prog.c - an executor over a communicator of a program that uses MPI
 * itself, run by ctest under `mpirun -np N`.  The program initialises and
 * finalizes MPI; cf_mpi_comm_pool_new() is collective over
 * MPI_COMM_WORLD with the last rank as root; the others serve until the
 * root shuts its executor down.  A message the program sends on
 * MPI_COMM_WORLD with the engine's own tag numbers must reach the program,
 * not the engine.  Prints "comm OK" on the root when all is well.
 *
 *   comm_prog broken   first a pool that breaks (one rank's heartbeats
 *                      stop for 3 s while it runs a call): every rank must
 *                      still come back from cf_mpi_comm_pool_new (they
 *                      once served the broken pool for ever), and the
 *                      next pools over the same ranks must work - the
 *                      muted rank's late answer, heartbeats and BYE must
 *                      not reach them (a new communicator can take a freed
 *                      one's context id, and Open MPI hands it the
 *                      messages that came for that id).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfutures_mpi.h"
#include "mpi_test_tasks.h"

static int rank_of(cf_call *c)
{
    return cf_return_i64(c, cf_arg_i64(c, 0) * 10);
}
CF_TASK(rank_of);

int MPI_Send(const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm)
{
    if (heartbeat_muted(tag)) /* mute_heartbeats */
        return MPI_SUCCESS;
    return PMPI_Send(buf, count, type, dest, tag, comm);
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
            fprintf(stderr, "comm_prog: check failed at line %d: %s (%s)\n",  \
                    __LINE__, #cond, cf_last_error_message());                \
            MPI_Abort(MPI_COMM_WORLD, 1);                                     \
        }                                                                     \
    } while (0)

/* One executor's life on every rank; returns on all of them. */
static void one_round(int rank, int size, int round)
{
    int root = size - 1;
    if (rank == root && size > 1) /* the engine's CALL tag, on the world */
        MPI_Send(&round, 1, MPI_INT, 0, 101, MPI_COMM_WORLD);
    cf_executor *ex = NULL;
    /* start_timeout bounds a spawn, and there is none here: the tiniest
     * must not give start-up up (it abandoned the pool, its manager still
     * calling MPI, in 2 runs of 3 before). */
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.start_timeout = 1e-6;
    CHECK(cf_mpi_comm_pool_new(&ex, MPI_COMM_WORLD, root, &o) == CF_OK);
    if (rank != root) {
        CHECK(ex == NULL);
        if (rank == 0) {
            int got = -1;
            MPI_Recv(&got, 1, MPI_INT, root, 101, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            CHECK(got == round);
        }
        return;
    }
    CHECK(cf_executor_worker_count(ex) == size - 1);
    cf_future *fs[40];
    for (int i = 0; i < 40; i++)
        CHECK(cf_submit(ex, rank_of, CF_ARGS(cf_i64(i)), &fs[i]) == CF_OK);
    for (int i = 0; i < 40; i++) {
        const cf_value *v;
        CHECK(cf_future_result(fs[i], CF_FOREVER, &v) == CF_OK);
        CHECK(v->as.i64 == i * 10);
        cf_future_release(fs[i]);
    }
    CHECK(cf_executor_destroy(ex) == CF_OK);
}

/* A pool that breaks: one worker rank falls silent for 3 s (heartbeat
 * timeout 1 s); every rank comes back. */
static void broken_round(int rank, int size)
{
    int root = size - 1;
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.heartbeat_timeout = 1;
    cf_executor *ex = NULL;
    double t0 = now_s();
    CHECK(cf_mpi_comm_pool_new(&ex, MPI_COMM_WORLD, root, &o) == CF_OK);
    if (rank != root) {
        CHECK(ex == NULL);
        fprintf(stderr, "comm_prog: rank %d left the broken pool after %.2f s\n", rank,
                now_s() - t0);
        return;
    }
    CHECK(break_by_silence(ex));
    CHECK(cf_executor_destroy(ex) == CF_OK);
    fprintf(stderr, "comm_prog: broken pool destroyed after %.2f s\n", now_s() - t0);
}

int main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1 && strcmp(argv[1], "broken") == 0)
        broken_round(rank, size);
    /* Two executors one after the other over the same communicator. */
    one_round(rank, size, 1);
    one_round(rank, size, 2);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == size - 1)
        printf("comm OK\n");
    MPI_Finalize();
    return 0;
}
