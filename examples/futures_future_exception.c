/* SPDX-License-Identifier: MIT */
/*
 * futures_future_exception.c - PyMOTW "concurrent.futures", "Exceptions in
 * Tasks" (futures_future_exception.py):
 *
 *     def task(n):
 *         print('{}: starting'.format(n))
 *         raise ValueError('the value {} is no good'.format(n))
 *
 *     ex = futures.ThreadPoolExecutor(max_workers=2)
 *     print('main: starting')
 *     f = ex.submit(task, 5)
 *     error = f.exception()
 *     print('main: error: {}'.format(error))
 *     try:
 *         result = f.result()
 *     except ValueError as e:
 *         print('main: saw error "{}" when accessing result'.format(e))
 *
 * cf_raise() is the task's `raise`: the failure (type "ValueError" and its
 * message) is stored on the future.  cf_future_exception() reports it
 * without treating it as an error; cf_future_result() returns CF_ETASK,
 * the C counterpart of result() re-raising.
 */
#include "example_util.h"

/* The task's own failure code, like an exception class would be. */
enum { VALUE_ERROR = 1 };

static int task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    printf("%lld: starting\n", (long long)n);
    return cf_raise(call, VALUE_ERROR, "ValueError",
                    "the value %lld is no good", (long long)n);
}

int main(void)
{
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 2;
    cf_executor *ex;
    ex_check(cf_thread_pool_new(&ex, &opts), "cf_thread_pool_new");

    printf("main: starting\n");
    cf_future *f;
    ex_check(cf_submit(ex, task, CF_ARGS(cf_i64(5)), &f), "cf_submit");

    const cf_failure *error;
    ex_check(cf_future_exception(f, CF_FOREVER, &error), "exception");
    printf("main: error: %s\n", cf_failure_message(error));

    int rc = cf_future_result(f, CF_FOREVER, NULL);
    if (rc == CF_ETASK) { /* except ValueError as e: */
        const cf_failure *e;
        ex_check(cf_future_exception(f, 0, &e), "exception");
        if (strcmp(cf_failure_type(e), "ValueError") == 0)
            printf("main: saw error \"%s\" when accessing result\n",
                   cf_failure_message(e));
    } else {
        fprintf(stderr, "result: expected CF_ETASK, got %s\n", cf_err_name(rc));
        return 1;
    }

    cf_future_release(f);
    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    return 0;
}
