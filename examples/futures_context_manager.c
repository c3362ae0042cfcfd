/* SPDX-License-Identifier: MIT */
/*
 * futures_context_manager.c - PyMOTW "concurrent.futures", "Context
 * Manager" (futures_context_manager.py):
 *
 *     def task(n):
 *         print(n)
 *
 *     with futures.ThreadPoolExecutor(max_workers=2) as ex:
 *         print('main: starting')
 *         ex.submit(task, 1)
 *         ex.submit(task, 2)
 *         ex.submit(task, 3)
 *         ex.submit(task, 4)
 *
 *     print('main: done')
 *
 * CF_WITH_EXECUTOR is the `with` block: when `ex` goes out of scope the
 * executor waits for the pending calls and is freed, so "main: done" comes
 * after all four numbers.  The Python program drops the futures it gets
 * back; C has to release its reference, which does not cancel the call.
 *
 * Two workers print concurrently, so 1..4 may come in any order (in
 * CPython too); the expected file accepts any order of those four lines
 * rather than making the tasks wait for each other.
 */
#include "example_util.h"

static int task(cf_call *call)
{
    printf("%lld\n", (long long)cf_arg_i64(call, 0));
    return 0;
}

int main(void)
{
    {
        CF_WITH_EXECUTOR(ex);
        cf_thread_pool_options opts;
        cf_thread_pool_options_init(&opts);
        opts.max_workers = 2;
        ex_check(cf_thread_pool_new(&ex, &opts), "cf_thread_pool_new");

        printf("main: starting\n");
        for (int n = 1; n <= 4; n++) {
            cf_future *f;
            ex_check(cf_submit(ex, task, CF_ARGS(cf_i64(n)), &f), "cf_submit");
            cf_future_release(f);
        }
    } /* waits for the four calls, then frees the executor */

    printf("main: done\n");
    return 0;
}
