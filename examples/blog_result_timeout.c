/* SPDX-License-Identifier: MIT */
/*
 * blog_result_timeout.c - blog post "Simpler Parallelism with
 * concurrent.futures", timeouts:
 *
 *     future = executor.submit(potentially_slow_function, arg)
 *     try:
 *         result = future.result(timeout=5.0)  # Wait max 5 seconds
 *     except TimeoutError:
 *         print("Function took too long")
 *         future.cancel()  # Won't stop already-running tasks
 *
 * To stay quick the limit is 0.2 s instead of 5 s, and the slow function
 * waits for an event instead of working for a long time: it runs until
 * main lets it finish.  main also waits until the call has started, so
 * cancel() meets a running call on every run and returns false, as the
 * post's comment says.  The call then runs to completion on its own.
 */
#include "example_util.h"

static ex_event started = EX_EVENT_INIT;
static ex_event may_finish = EX_EVENT_INIT;

static int potentially_slow_function(cf_call *call)
{
    int64_t arg = cf_arg_i64(call, 0);
    ex_event_set(&started);
    ex_event_wait(&may_finish); /* the "slow" part */
    return cf_return_i64(call, arg * 2);
}

int main(void)
{
    CF_WITH_EXECUTOR(executor);
    ex_check(cf_thread_pool_new(&executor, NULL), "cf_thread_pool_new");

    cf_future *future;
    ex_check(cf_submit(executor, potentially_slow_function, CF_ARGS(cf_i64(21)),
                       &future),
             "cf_submit");
    ex_event_wait(&started);

    int64_t result;
    int rc = cf_future_result_i64(future, 0.2, &result);
    if (rc == CF_ETIMEDOUT) {
        printf("Function took too long\n");
        bool cancelled = cf_future_cancel(future);
        printf("future.cancel() -> %s: the call is %s\n",
               cancelled ? "True" : "False",
               cf_state_name(cf_future_state(future)));
    } else {
        fprintf(stderr, "result: expected CF_ETIMEDOUT, got %s\n",
                cf_err_name(rc));
        ex_event_set(&may_finish); /* so the executor can shut down */
        cf_future_release(future);
        return 1;
    }

    /* Not part of the post: show that the call was not stopped. */
    ex_event_set(&may_finish);
    ex_check(cf_future_result_i64(future, CF_FOREVER, &result), "result");
    printf("it finished anyway: result %lld\n", (long long)result);
    cf_future_release(future);
    return 0;
}
