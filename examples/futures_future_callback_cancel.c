/* SPDX-License-Identifier: MIT */
/*
 * futures_future_callback_cancel.c - PyMOTW "concurrent.futures",
 * "Canceling Tasks" (futures_future_callback_cancel.py):
 *
 *     def done(fn):
 *         if fn.cancelled():
 *             print('{}: canceled'.format(fn.arg))
 *         elif fn.done():
 *             print('{}: not canceled'.format(fn.arg))
 *
 *     ex = futures.ThreadPoolExecutor(max_workers=2)
 *     print('main: starting')
 *     tasks = []
 *     for i in range(10, 0, -1):
 *         print('main: submitting {}'.format(i))
 *         f = ex.submit(task, i)
 *         f.arg = i
 *         f.add_done_callback(done)
 *         tasks.append((i, f))
 *     for i, t in reversed(tasks):
 *         if not t.cancel():
 *             print('main: did not cancel {}'.format(i))
 *     ex.shutdown()
 *
 * Only calls that have not started can be cancelled: tasks 10 and 9 are
 * running on the two workers, 8..1 are still queued.
 *
 * The Python run gets its order from timing: each worker prints
 * "sleeping" before main submits the next task, and the 0.5 s sleep is
 * long enough for main to finish cancelling.  Here events give the same
 * order every run:
 *   - main waits for each of the first two tasks to start (there is a free
 *     worker for each) before submitting the next one;
 *   - instead of sleeping, the running tasks wait until main has finished
 *     cancelling, and then finish one after the other in the order they
 *     started (10 first), each after the previous one's callback.
 */
#include "example_util.h"

#define NTASKS 10
#define NWORKERS 2

static ex_counter started = EX_COUNTER_INIT;

/* The gate the running tasks wait at. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool cancels_done;  /* main has tried to cancel every task */
static int callbacks_done; /* "not canceled" callbacks run so far */

static int task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    printf("%lld: sleeping\n", (long long)n);
    long order = ex_counter_inc(&started); /* 0 for the first to start */

    pthread_mutex_lock(&gate_lock);
    while (!cancels_done || callbacks_done != order)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);

    printf("%lld: done\n", (long long)n);
    return cf_return_f64(call, (double)n / 10);
}

static int done(cf_future *fn, void *arg)
{
    int n = *(const int *)arg;
    if (cf_future_cancelled(fn)) {
        printf("%d: canceled\n", n);
    } else if (cf_future_done(fn)) {
        printf("%d: not canceled\n", n);
        /* Let the next running task finish. */
        pthread_mutex_lock(&gate_lock);
        callbacks_done++;
        pthread_cond_broadcast(&gate_cond);
        pthread_mutex_unlock(&gate_lock);
    }
    return 0;
}

int main(void)
{
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = NWORKERS;
    cf_executor *ex;
    ex_check(cf_thread_pool_new(&ex, &opts), "cf_thread_pool_new");
    printf("main: starting\n");

    static int args[NTASKS]; /* f.arg, one per future */
    cf_future *tasks[NTASKS];
    for (int k = 0; k < NTASKS; k++) {
        int i = NTASKS - k; /* range(10, 0, -1) */
        printf("main: submitting %d\n", i);
        ex_check(cf_submit(ex, task, CF_ARGS(cf_i64(i)), &tasks[k]),
                 "cf_submit");
        args[k] = i;
        ex_check(cf_future_add_done_callback(tasks[k], done, &args[k]),
                 "add_done_callback");
        if (k < NWORKERS)
            ex_counter_wait_for(&started, k + 1); /* a worker took it */
    }

    for (int k = NTASKS - 1; k >= 0; k--) /* reversed(tasks) */
        if (!cf_future_cancel(tasks[k]))
            printf("main: did not cancel %d\n", args[k]);

    pthread_mutex_lock(&gate_lock);
    cancels_done = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);

    ex_check(cf_shutdown(ex, true, false), "cf_shutdown");

    for (int k = 0; k < NTASKS; k++)
        cf_future_release(tasks[k]);
    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    return 0;
}
