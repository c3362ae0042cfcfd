/* SPDX-License-Identifier: MIT */
/*
 * notes_map_vs_submit.c - blog notes "Using Concurrent.futures in Python",
 * map() vs submit() + as_completed():
 *
 *     def square(x):
 *         return x*x
 *
 *     num = 10
 *     with report_time("using map"):
 *         with ThreadPoolExecutor() as executor:
 *             res = executor.map(square, range(num))
 *         res = list(res)
 *
 *     with report_time('using executor.submit'):
 *         with ThreadPoolExecutor() as executor:
 *             my_futures = [executor.submit(square, x) for x in range(num)]
 *             res = []
 *             for future in concurrent.futures.as_completed(my_futures):
 *                 res.append(future.result())
 *
 * report_time() prints "Time for <des>: <seconds>"; each timed block
 * includes creating and shutting down the pool, as in the notes.  The
 * results are printed too: map keeps input order, as_completed gives
 * completion order (which varies, so sorted(res) is printed as well).
 */
#include "example_util.h"

#define NUM 10

static int square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}

static void report_time(const char *des, double start)
{
    char num[32];
    printf("Time for %s: %s\n", des, ex_float_repr(ex_now() - start, num,
                                                    sizeof num));
}

static void print_list(const char *label, const int64_t *v, size_t n)
{
    printf("%s: [", label);
    for (size_t i = 0; i < n; i++)
        printf("%s%lld", i ? ", " : "", (long long)v[i]);
    printf("]\n");
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    int64_t res[NUM];
    size_t nres = 0;

    /* with report_time("using map"): */
    double start = ex_now();
    {
        cf_map_iter *it;
        {
            CF_WITH_EXECUTOR(executor);
            ex_check(cf_thread_pool_new(&executor, NULL), "cf_thread_pool_new");
            cf_value xs[NUM];
            for (int x = 0; x < NUM; x++)
                xs[x] = cf_i64(x);
            cf_map_input in = cf_input_array(xs, NUM);
            ex_check(cf_map(executor, square, &in, 1, NULL, &it), "cf_map");
        } /* the executor waits for the calls; the iterator still holds them */
        const cf_value *v;
        int rc;
        while ((rc = cf_map_next(it, &v, NULL)) == CF_OK) /* list(res) */
            res[nres++] = v->as.i64;
        if (rc != CF_EDONE)
            ex_check(rc, "cf_map_next");
        cf_map_close(it);
    }
    report_time("using map", start);
    print_list("res", res, nres);

    /* with report_time('using executor.submit'): */
    start = ex_now();
    nres = 0;
    {
        CF_WITH_EXECUTOR(executor);
        ex_check(cf_thread_pool_new(&executor, NULL), "cf_thread_pool_new");
        cf_future *my_futures[NUM];
        for (int x = 0; x < NUM; x++)
            ex_check(cf_submit(executor, square, CF_ARGS(cf_i64(x)),
                               &my_futures[x]),
                     "cf_submit");
        cf_as_completed_iter *ac;
        ex_check(cf_as_completed(my_futures, NUM, CF_FOREVER, &ac),
                 "cf_as_completed");
        cf_future *future;
        int rc;
        while ((rc = cf_as_completed_next(ac, &future)) == CF_OK) {
            int64_t r;
            ex_check(cf_future_result_i64(future, CF_FOREVER, &r), "result");
            res[nres++] = r;
        }
        if (rc != CF_EDONE)
            ex_check(rc, "cf_as_completed_next");
        cf_as_completed_free(ac);
        for (int x = 0; x < NUM; x++)
            cf_future_release(my_futures[x]);
    }
    report_time("using executor.submit", start);
    print_list("res", res, nres);
    qsort(res, nres, sizeof res[0], cmp_i64);
    print_list("sorted(res)", res, nres);
    return 0;
}
