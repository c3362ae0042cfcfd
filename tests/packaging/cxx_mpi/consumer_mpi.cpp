// SPDX-License-Identifier: MIT
// consumer_mpi.c in C++: the MPI engine's header, linked and loaded,
// then a thread pool computes 12 * 12.
#include <cfutures_mpi.h>

#include <cstdio>

static int square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}

int main()
{
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    if (o.mode != CF_MPI_AUTO || o.max_workers != CF_AUTO || cf_in_mpi_worker())
        return 4;
    cf_executor *ex;
    if (cf_thread_pool_new(&ex, nullptr) != CF_OK)
        return 1;
    cf_future *f;
    int64_t r = 0;
    if (cf_submit(ex, square, CF_ARGS(cf_i64(12)), &f) != CF_OK ||
        cf_future_result_i64(f, 5.0, &r) != CF_OK)
        return 2;
    cf_future_release(f);
    cf_executor_destroy(ex);
    std::printf("%lld\n", static_cast<long long>(r));
    return r == 144 ? 0 : 3;
}
