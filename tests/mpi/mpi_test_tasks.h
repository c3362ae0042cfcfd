/* SPDX-License-Identifier: MIT */
/*
 * mpi_test_tasks.h - what the MPI test programs (test_mpi, static_prog,
 * comm_prog) share: tasks, and a heartbeat fault for their MPI_Send
 * (which each program defines, through the MPI profiling interface).
 * Included once per program, after cfutures_mpi.h.
 */
#ifndef CF_MPI_TEST_TASKS_H
#define CF_MPI_TEST_TASKS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "cfutures_mpi.h"

/* The engine's heartbeat tag (MTAG_HB, src/mpi/mpi_engine.h). */
#define CF_TEST_MTAG_HB 113

/* Set in a worker by mute_heartbeats: its heartbeats are dropped
 * meanwhile (the program's MPI_Send asks heartbeat_muted()). */
static _Atomic bool heartbeats_muted;

static inline bool heartbeat_muted(int tag)
{
    return tag == CF_TEST_MTAG_HB && atomic_load(&heartbeats_muted);
}

/* No heartbeat for argument 0 ms (the call ignores cf_cancel_requested),
 * then returns it. */
static int mute_heartbeats(cf_call *c)
{
    int64_t ms = cf_arg_i64(c, 0);
    atomic_store(&heartbeats_muted, true);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    atomic_store(&heartbeats_muted, false);
    return cf_return_i64(c, ms);
}
CF_TASK(mute_heartbeats);

/* Breaks ex (heartbeat_timeout under 3 s): the worker that takes the call
 * falls silent for 3 s.  True when the call failed as a broken pool's
 * calls do. */
static inline bool break_by_silence(cf_executor *ex)
{
    cf_future *f;
    if (cf_submit(ex, mute_heartbeats, CF_ARGS(cf_i64(3000)), &f) != CF_OK)
        return false;
    bool ok = cf_future_result(f, CF_FOREVER, NULL) == CF_EBROKEN &&
              strstr(cf_last_error_message(), "sent nothing for") != NULL;
    cf_future_release(f);
    return ok;
}

/* The sum of the bytes of argument 0. */
static int sum_bytes(cf_call *c)
{
    const cf_value *v = cf_arg(c, 0);
    const unsigned char *b = v->as.bytes;
    int64_t sum = 0;
    for (size_t i = 0; i < v->size; i++)
        sum += b[i];
    return cf_return_i64(c, sum);
}
CF_TASK(sum_bytes);

#endif
