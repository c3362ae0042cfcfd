/* SPDX-License-Identifier: MIT */
/*
 * blog_might_fail.c - blog post "Simpler Parallelism with
 * concurrent.futures", exception handling with map():
 *
 *     def might_fail(x):
 *         if x < 0:
 *             raise ValueError("Negative values not allowed")
 *         return x * 2
 *
 *     with ThreadPoolExecutor() as executor:
 *         results = executor.map(might_fail, [1, -2, 3])
 *         for value in results:
 *             try:
 *                 print(value)  # Exception raises here, not during map()
 *             except ValueError as e:
 *                 print(f"Error: {e}")
 *
 * The post's intent is to print 2, the error, then 6.  (In CPython the
 * exception actually escapes the `for` statement and ends the loop.)
 * cf_map_next() reports each element's own outcome - CF_ETASK with the
 * failure for -2 - and iteration goes on, so all three lines print.
 */
#include "example_util.h"

static int might_fail(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    if (x < 0)
        return cf_raise(call, 1, "ValueError", "Negative values not allowed");
    return cf_return_i64(call, x * 2);
}

int main(void)
{
    CF_WITH_EXECUTOR(executor);
    ex_check(cf_thread_pool_new(&executor, NULL), "cf_thread_pool_new");

    const cf_value xs[] = {cf_i64(1), cf_i64(-2), cf_i64(3)};
    cf_map_input in = cf_input_array(xs, 3);
    cf_map_iter *results;
    ex_check(cf_map(executor, might_fail, &in, 1, NULL, &results), "cf_map");

    for (;;) {
        const cf_value *value;
        const cf_failure *e;
        int rc = cf_map_next(results, &value, &e);
        if (rc == CF_EDONE)
            break;
        if (rc == CF_OK)
            printf("%lld\n", (long long)value->as.i64);
        else if (rc == CF_ETASK &&
                 strcmp(cf_failure_type(e), "ValueError") == 0)
            printf("Error: %s\n", cf_failure_message(e));
        else
            ex_check(rc, "cf_map_next");
    }
    cf_map_close(results);
    return 0;
}
