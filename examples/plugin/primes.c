/* SPDX-License-Identifier: MIT */
/*
 * primes.c - libprimes: a library with a process pool inside.  Its host
 * program knows nothing of cfutures, so the pool names the library's own
 * worker program (worker_program) and the tasks that program must have
 * (tasks); every worker checks them at start-up.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cfutures.h"
#include "primes.h"
#include "primes_tasks.h"

/* Where the build put the worker program; an installed library would
 * name its libexec directory here. */
#ifndef PRIMES_WORKER
#error "PRIMES_WORKER must be the absolute path of primes_worker"
#endif

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static cf_executor *pool; /* guarded by pool_mu */
static _Thread_local char error[256];

static cf_task_fn *const tasks[] = {primes_count_below, NULL};

static int fail(const char *what, int rc)
{
    snprintf(error, sizeof error, "%s: %s (%s)", what, cf_strerror(rc), cf_last_error_message());
    return -1;
}

/* The library's pool, started on first use; NULL with error set. */
static cf_executor *get_pool(void)
{
    pthread_mutex_lock(&pool_mu);
    if (!pool) {
        cf_process_pool_options o;
        cf_process_pool_options_init(&o);
        o.max_workers = 2;
        o.worker_program = PRIMES_WORKER;
        o.tasks = tasks;
        int rc = cf_process_pool_new(&pool, &o);
        if (rc != CF_OK)
            fail("starting the worker processes", rc);
    }
    cf_executor *ex = pool;
    pthread_mutex_unlock(&pool_mu);
    return ex;
}

int primes_count(const long *limits, size_t n, long *counts, long *pids)
{
    if (!limits || !counts || n > 1024) {
        snprintf(error, sizeof error, "primes_count: bad arguments");
        return -1;
    }
    cf_executor *ex = get_pool();
    if (!ex)
        return -1;
    cf_future *fs[1024];
    size_t sent;
    int rc = CF_OK;
    for (sent = 0; sent < n; sent++) {
        rc = cf_submit(ex, primes_count_below, CF_ARGS(cf_i64(limits[sent])), &fs[sent]);
        if (rc != CF_OK)
            break; /* the failed submit made no future */
    }
    for (size_t i = 0; i < sent; i++) {
        const cf_value *v = NULL;
        int r = cf_future_result(fs[i], CF_FOREVER, &v);
        if (r == CF_OK && v->kind == CF_BYTES && v->size == 2 * sizeof(int64_t)) {
            int64_t out[2];
            memcpy(out, v->as.bytes, sizeof out);
            counts[i] = (long)out[0];
            if (pids)
                pids[i] = (long)out[1];
        } else if (rc == CF_OK) {
            rc = r != CF_OK ? r : CF_EINVAL;
        }
        cf_future_release(fs[i]);
    }
    return rc == CF_OK ? 0 : fail("counting primes", rc);
}

const char *primes_error(void)
{
    return error;
}

void primes_close(void)
{
    pthread_mutex_lock(&pool_mu);
    cf_executor_destroy(pool);
    pool = NULL;
    pthread_mutex_unlock(&pool_mu);
}
