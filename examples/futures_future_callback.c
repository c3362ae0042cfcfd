/* SPDX-License-Identifier: MIT */
/*
 * futures_future_callback.c - PyMOTW "concurrent.futures", "Future
 * Callbacks" (futures_future_callback.py):
 *
 *     def done(fn):
 *         if fn.cancelled():
 *             print('{}: canceled'.format(fn.arg))
 *         elif fn.done():
 *             error = fn.exception()
 *             if error:
 *                 print('{}: error returned: {}'.format(fn.arg, error))
 *             else:
 *                 result = fn.result()
 *                 print('{}: value returned: {}'.format(fn.arg, result))
 *
 *     ex = futures.ThreadPoolExecutor(max_workers=2)
 *     print('main: starting')
 *     f = ex.submit(task, 5)
 *     f.arg = 5
 *     f.add_done_callback(done)
 *     result = f.result()
 *
 * Python attaches `arg` to the future object; in C it is the callback's
 * void *arg.
 */
#include "example_util.h"

static int task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    printf("%lld: sleeping\n", (long long)n);
    ex_sleep(0.5);
    printf("%lld: done\n", (long long)n);
    return cf_return_f64(call, (double)n / 10);
}

/* Runs in the worker that finished the task (or in main, had the task
 * already been done when the callback was added). */
static int done(cf_future *fn, void *arg)
{
    const int *n = arg;
    if (cf_future_cancelled(fn)) {
        printf("%d: canceled\n", *n);
    } else if (cf_future_done(fn)) {
        const cf_failure *error;
        int rc = cf_future_exception(fn, 0, &error);
        if (rc != CF_OK)
            return rc;
        if (error) {
            printf("%d: error returned: %s\n", *n, cf_failure_message(error));
        } else {
            const cf_value *result;
            rc = cf_future_result(fn, 0, &result);
            if (rc != CF_OK)
                return rc;
            char num[32];
            printf("%d: value returned: %s\n", *n,
                   ex_float_repr(result->as.f64, num, sizeof num));
        }
    }
    return 0;
}

int main(void)
{
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 2;
    cf_executor *ex;
    ex_check(cf_thread_pool_new(&ex, &opts), "cf_thread_pool_new");

    printf("main: starting\n");
    static int arg = 5; /* f.arg = 5; outlives the callback */
    cf_future *f;
    ex_check(cf_submit(ex, task, CF_ARGS(cf_i64(5)), &f), "cf_submit");
    ex_check(cf_future_add_done_callback(f, done, &arg), "add_done_callback");
    ex_check(cf_future_result(f, CF_FOREVER, NULL), "result");

    /* Python waits for the worker threads at exit, so the callback's line
     * is always printed; destroying the executor joins them likewise. */
    cf_future_release(f);
    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    return 0;
}
