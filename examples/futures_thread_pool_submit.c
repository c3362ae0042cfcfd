/* SPDX-License-Identifier: MIT */
/*
 * futures_thread_pool_submit.c - PyMOTW "concurrent.futures", "Scheduling
 * Individual Tasks" (futures_thread_pool_submit.py):
 *
 *     ex = futures.ThreadPoolExecutor(max_workers=2)
 *     print('main: starting')
 *     f = ex.submit(task, 5)
 *     print('main: future: {}'.format(f))
 *     print('main: waiting for results')
 *     result = f.result()
 *     print('main: result: {}'.format(result))
 *     print('main: future after result: {}'.format(f))
 *
 * The Python run printed "state=running" because the worker happened to
 * pick the task up before main printed the future.  Here the task signals
 * an event once it has started and main waits for it, so the repr says
 * "running" on every run.
 */
#include "example_util.h"

static ex_event task_started = EX_EVENT_INIT;

static int task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    printf("%s: sleeping %lld\n", cf_thread_name(), (long long)n);
    ex_event_set(&task_started);
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
    cf_future *f;
    ex_check(cf_submit(ex, task, CF_ARGS(cf_i64(5)), &f), "cf_submit");

    ex_event_wait(&task_started);
    char repr[128];
    cf_future_format(f, repr, sizeof repr);
    printf("main: future: %s\n", repr);

    printf("main: waiting for results\n");
    double result;
    ex_check(cf_future_result_f64(f, CF_FOREVER, &result), "result");
    char num[32];
    printf("main: result: %s\n", ex_float_repr(result, num, sizeof num));
    cf_future_format(f, repr, sizeof repr);
    printf("main: future after result: %s\n", repr);

    cf_future_release(f);
    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    return 0;
}
