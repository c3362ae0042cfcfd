/* SPDX-License-Identifier: MIT */
/*
 * futures_thread_pool_map.c - PyMOTW "concurrent.futures", "Using map()
 * with a Basic Thread Pool" (futures_thread_pool_map.py):
 *
 *     ex = futures.ThreadPoolExecutor(max_workers=2)
 *     print('main: starting')
 *     results = ex.map(task, range(5, 0, -1))
 *     print('main: unprocessed results {}'.format(results))
 *     print('main: waiting for real results')
 *     real_results = list(results)
 *     print('main: results: {}'.format(real_results))
 *
 * Whatever order the tasks finish in, map() yields the results in input
 * order: [0.5, 0.4, 0.3, 0.2, 0.1].
 *
 * The sleeps (n/10 s) are the point of the example and stay.  One addition:
 * main prints "unprocessed results" only after both workers announced
 * their first task, which in the Python run happened by luck of timing.
 * Which thread runs which task and the tie at 0.7 s (task 2 and task 3
 * end together) still depend on timing; expected/futures_thread_pool_map.txt
 * checks those lines loosely and says why.
 */
#include "example_util.h"

/* Counts tasks that have printed their "sleeping" line. */
static ex_counter started = EX_COUNTER_INIT;

static int task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    printf("%s: sleeping %lld\n", cf_thread_name(), (long long)n);
    ex_counter_inc(&started);
    ex_sleep((double)n / 10);
    printf("%s: done with %lld\n", cf_thread_name(), (long long)n);
    return cf_return_f64(call, (double)n / 10);
}

int main(void)
{
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 2;
    cf_executor *ex;
    ex_check(cf_thread_pool_new(&ex, &opts), "cf_thread_pool_new");

    printf("main: starting\n");

    /* range(5, 0, -1) */
    cf_value inputs[5];
    for (int i = 0; i < 5; i++)
        inputs[i] = cf_i64(5 - i);
    cf_map_input in = cf_input_array(inputs, 5);
    cf_map_iter *results;
    ex_check(cf_map(ex, task, &in, 1, NULL, &results), "cf_map");

    /* Both workers have picked up a task before the Python program got
     * here; wait for that so the lines come out in the same order. */
    ex_counter_wait_for(&started, 2);
    printf("main: unprocessed results <cf_map_iter at %p>\n", (void *)results);
    printf("main: waiting for real results\n");

    /* list(results) */
    char text[256] = "[";
    const cf_value *v;
    int rc;
    while ((rc = cf_map_next(results, &v, NULL)) == CF_OK) {
        char num[32];
        if (text[1] != '\0')
            strcat(text, ", ");
        strcat(text, ex_float_repr(v->as.f64, num, sizeof num));
    }
    if (rc != CF_EDONE)
        ex_check(rc, "cf_map_next");
    strcat(text, "]");
    cf_map_close(results);

    printf("main: results: %s\n", text);
    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    return 0;
}
