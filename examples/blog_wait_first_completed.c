/* SPDX-License-Identifier: MIT */
/*
 * blog_wait_first_completed.c - blog post "Simpler Parallelism with
 * concurrent.futures", wait() with FIRST_COMPLETED:
 *
 *     futures = [executor.submit(slow_function, i) for i in range(10)]
 *     done, pending = wait(futures, return_when=FIRST_COMPLETED)
 *     fastest_result = next(iter(done)).result()
 *     for future in pending:
 *         future.cancel()
 *
 * The post leaves executor and slow_function open; here the executor has
 * 2 workers, slow_function(0) returns at once and the others wait for an
 * event (their "long work") that main sets at the end, so the first
 * completed call is always slow_function(0).
 *
 * When slow_function(0) ends, its worker takes the next queued call,
 * slow_function(2), racing main's cancel loop.  main waits until that
 * call has started, so every run cancels the same seven queued calls and
 * fails to cancel the two running ones.
 */
#include "example_util.h"

#define NCALLS 10

static ex_counter started = EX_COUNTER_INIT;
static ex_event work_over = EX_EVENT_INIT;

static int slow_function(cf_call *call)
{
    int64_t i = cf_arg_i64(call, 0);
    ex_counter_inc(&started);
    if (i != 0)
        ex_event_wait(&work_over);
    return cf_return_i64(call, i * i);
}

int main(void)
{
    CF_WITH_EXECUTOR(executor);
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 2;
    ex_check(cf_thread_pool_new(&executor, &opts), "cf_thread_pool_new");

    cf_future *futures[NCALLS];
    for (int i = 0; i < NCALLS; i++)
        ex_check(cf_submit(executor, slow_function, CF_ARGS(cf_i64(i)),
                           &futures[i]),
                 "cf_submit");
    printf("submitted slow_function(0) .. slow_function(%d) to 2 workers\n",
           NCALLS - 1);

    cf_future *done[NCALLS], *pending[NCALLS];
    size_t ndone, npending;
    ex_check(cf_wait(futures, NCALLS, CF_FOREVER, CF_FIRST_COMPLETED, done,
                     &ndone, pending, &npending),
             "cf_wait");
    printf("wait(FIRST_COMPLETED): %zu done, %zu pending\n", ndone, npending);

    int64_t fastest_result;
    ex_check(cf_future_result_i64(done[0], CF_FOREVER, &fastest_result),
             "result");
    int fastest = -1;
    for (int i = 0; i < NCALLS; i++)
        if (futures[i] == done[0])
            fastest = i;
    printf("fastest result: slow_function(%d) = %lld\n", fastest,
           (long long)fastest_result);

    /* The freed worker has picked up slow_function(2) (see the top). */
    ex_counter_wait_for(&started, 3);

    /* for future in pending: future.cancel() */
    int ncancelled = 0, nrunning = 0;
    for (size_t k = 0; k < npending; k++) {
        if (cf_future_cancel(pending[k]))
            ncancelled++;
        else
            nrunning++;
    }

    /* wait() returns the pending futures in no particular order, so list
     * the outcome by index. */
    char cancelled[128] = "", running[128] = "";
    for (int i = 0; i < NCALLS; i++) {
        if (futures[i] == done[0])
            continue;
        char *list = cf_future_cancelled(futures[i]) ? cancelled : running;
        char num[16];
        snprintf(num, sizeof num, "%s%d", list[0] ? ", " : "", i);
        strcat(list, num);
    }
    printf("cancel() succeeded for %d queued calls: %s\n", ncancelled,
           cancelled);
    printf("cancel() failed for %d running calls: %s\n", nrunning, running);

    ex_event_set(&work_over); /* let the running calls finish */
    for (int i = 0; i < NCALLS; i++)
        cf_future_release(futures[i]);
    return 0;
}
