/* SPDX-License-Identifier: MIT */
/*
 * futures_as_completed.c - PyMOTW "concurrent.futures", "Waiting for Tasks
 * in Any Order" (futures_as_completed.py):
 *
 *     def task(n):
 *         time.sleep(random.random())
 *         return (n, n / 10)
 *
 *     ex = futures.ThreadPoolExecutor(max_workers=5)
 *     print('main: starting')
 *     wait_for = [ex.submit(task, i) for i in range(5, 0, -1)]
 *     for f in futures.as_completed(wait_for):
 *         print('main: result: {}'.format(f.result()))
 *
 * The tasks sleep a random time, so - as in Python - the results come out
 * in a different order on each run; the expected file accepts any order.
 */
#include "example_util.h"

/* The (n, n / 10) tuple, returned as bytes: cf_return_bytes() copies it
 * into the future. */
typedef struct {
    int64_t n;
    double tenth;
} pair;

/* random.random(): one shared generator, guarded because every worker
 * draws from it. */
static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rng_state;

static double random_unit(void)
{
    pthread_mutex_lock(&rng_lock);
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    uint64_t bits = rng_state >> 11;
    pthread_mutex_unlock(&rng_lock);
    return (double)bits / 9007199254740992.0; /* [0, 1) */
}

static int task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    ex_sleep(random_unit());
    pair p = {n, (double)n / 10};
    return cf_return_bytes(call, &p, sizeof p);
}

int main(void)
{
    struct timespec seed;
    clock_gettime(CLOCK_REALTIME, &seed);
    rng_state = (uint64_t)seed.tv_nsec ^ ((uint64_t)seed.tv_sec << 20);

    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 5;
    cf_executor *ex;
    ex_check(cf_thread_pool_new(&ex, &opts), "cf_thread_pool_new");
    printf("main: starting\n");

    cf_future *wait_for[5];
    for (int i = 0; i < 5; i++)
        ex_check(cf_submit(ex, task, CF_ARGS(cf_i64(5 - i)), &wait_for[i]),
                 "cf_submit");

    cf_as_completed_iter *it;
    ex_check(cf_as_completed(wait_for, 5, CF_FOREVER, &it), "cf_as_completed");
    cf_future *f;
    int rc;
    while ((rc = cf_as_completed_next(it, &f)) == CF_OK) {
        const cf_value *v;
        ex_check(cf_future_result(f, CF_FOREVER, &v), "result");
        pair p;
        memcpy(&p, v->as.bytes, sizeof p);
        char num[32];
        printf("main: result: (%lld, %s)\n", (long long)p.n,
               ex_float_repr(p.tenth, num, sizeof num));
    }
    if (rc != CF_EDONE)
        ex_check(rc, "cf_as_completed_next");
    cf_as_completed_free(it);

    for (int i = 0; i < 5; i++)
        cf_future_release(wait_for[i]);
    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    return 0;
}
