/* SPDX-License-Identifier: MIT */
/* A program built against an installed cfutures, the way a user would. */
#include <cfutures.h>
#include <stdio.h>

static int square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}

int main(void)
{
    cf_executor *ex;
    if (cf_thread_pool_new(&ex, NULL) != CF_OK)
        return 1;
    cf_future *f;
    int64_t r = 0;
    if (cf_submit(ex, square, CF_ARGS(cf_i64(12)), &f) != CF_OK ||
        cf_future_result_i64(f, 5.0, &r) != CF_OK)
        return 2;
    cf_future_release(f);
    cf_executor_destroy(ex);
    printf("%lld\n", (long long)r);
    return r == 144 ? 0 : 3;
}
