/* SPDX-License-Identifier: MIT */
/*
 * progress_bar.c - a progress bar for a batch of calls, the thing tqdm
 * gives Python users:
 *
 *     with ThreadPoolExecutor() as ex:
 *         fs = [ex.submit(count_primes, lo, lo + STEP) for lo in ...]
 *         total = sum(f.result() for f in tqdm(as_completed(fs), total=len(fs)))
 *
 * Counts the primes below 2,000,000 in 200 blocks on a thread pool.  The
 * executor's progress callback feeds a cf_progress_bar every 100 ms from
 * its own timer thread, so the main thread just waits.  On a terminal
 * the bar is redrawn in place on stderr:
 *
 *     primes:  61% [##############..........] 122/200 00:01<00:00 97.6/s
 *
 * otherwise (a pipe, a log file) it writes a plain line every 5 s and
 * one at the end.  The count goes to stdout.
 */
#include "example_util.h"

#define LIMIT 2000000
#define BLOCKS 200

/* The primes in [lo, hi), by trial division (slow enough to watch). */
static int count_primes(cf_call *call)
{
    int64_t lo = cf_arg_i64(call, 0), hi = cf_arg_i64(call, 1), n = 0;
    for (int64_t x = lo < 2 ? 2 : lo; x < hi; x++) {
        bool prime = true;
        for (int64_t d = 2; d * d <= x; d++) {
            if (x % d == 0) {
                prime = false;
                break;
            }
        }
        n += prime;
    }
    return cf_return_i64(call, n);
}

int main(void)
{
    cf_executor *ex;
    ex_check(cf_thread_pool_new(&ex, NULL), "cf_thread_pool_new");

    cf_progress_bar *bar;
    ex_check(cf_progress_bar_new(&bar, "primes", BLOCKS), "cf_progress_bar_new");
    ex_check(cf_executor_set_progress_callback(ex, cf_progress_bar_callback, bar, 100),
             "cf_executor_set_progress_callback");

    static cf_future *fs[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        int64_t lo = (int64_t)i * (LIMIT / BLOCKS);
        ex_check(cf_submit(ex, count_primes, CF_ARGS(cf_i64(lo), cf_i64(lo + LIMIT / BLOCKS)),
                           &fs[i]),
                 "cf_submit");
    }
    int64_t total = 0;
    for (int i = 0; i < BLOCKS; i++) {
        int64_t n;
        ex_check(cf_future_result_i64(fs[i], CF_FOREVER, &n), "cf_future_result_i64");
        total += n;
        cf_future_release(fs[i]);
    }

    /* Stop the callback before the bar goes, then draw the final state. */
    ex_check(cf_executor_set_progress_callback(ex, NULL, NULL, 0),
             "cf_executor_set_progress_callback");
    cf_progress p;
    ex_check(cf_executor_progress(ex, &p), "cf_executor_progress");
    cf_progress_bar_finish(bar, &p);

    printf("primes below %d: %lld\n", LIMIT, (long long)total);
    return cf_executor_destroy(ex) == CF_OK ? 0 : 1;
}
