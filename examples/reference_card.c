/* SPDX-License-Identifier: MIT */
/*
 * reference_card.c - the "concurrent.futures reference" card, its
 * thread-pool snippets in order:
 *
 *     with ThreadPoolExecutor(max_workers=8) as pool:
 *         ...
 *     futures = [pool.submit(work, x) for x in items]   # submit form
 *     results = list(pool.map(work, items))             # map form (ordered)
 *     pool.map(fn, it_a, it_b)       # results of fn(a, b), like built-in map
 *
 *     future_to_item = {pool.submit(work, x): x for x in items}
 *     for future in as_completed(future_to_item):
 *         item = future_to_item[future]
 *         try:
 *             result = future.result()
 *         except Exception as exc:
 *             handle(item, exc)
 *
 *     done, not_done = wait(futures, timeout=10, return_when=ALL_COMPLETED)
 *
 *     pool.shutdown(wait=False, cancel_futures=True)
 *
 * The card shows no output; each section prints what it did.  work(x)
 * squares x and raises ValueError for a negative x, so the as_completed
 * section has a failure to handle.
 */
#include "example_util.h"

static int work(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    if (x < 0)
        return cf_raise(call, 1, "ValueError", "negative item: %lld",
                        (long long)x);
    return cf_return_i64(call, x * x);
}

static int add(cf_call *call)
{
    return cf_return_i64(call, cf_arg_i64(call, 0) + cf_arg_i64(call, 1));
}

static void handle(int64_t item, const cf_failure *exc)
{
    printf("as_completed: item %lld failed: %s: %s\n", (long long)item,
           cf_failure_type(exc), cf_failure_message(exc));
}

static void print_results(const char *label, const int64_t *r, size_t n)
{
    printf("%s: [", label);
    for (size_t i = 0; i < n; i++)
        printf("%s%lld", i ? ", " : "", (long long)r[i]);
    printf("]\n");
}

/* For the shutdown section: a call that runs until main lets it go. */
static ex_event blocker_started = EX_EVENT_INIT;
static ex_event blocker_may_end = EX_EVENT_INIT;

static int blocker(cf_call *call)
{
    ex_event_set(&blocker_started);
    ex_event_wait(&blocker_may_end);
    return cf_return_str(call, "blocker done");
}

/* For the `with` section: counts calls that have finished. */
static ex_counter finished = EX_COUNTER_INIT;

static int short_call(cf_call *call)
{
    ex_sleep(0.01 * (double)cf_arg_i64(call, 0));
    ex_counter_inc(&finished);
    return 0;
}

enum { NITEMS = 5 };

static void pool_section(void)
{
    /* with ThreadPoolExecutor(max_workers=8) as pool: */
    CF_WITH_EXECUTOR(pool);
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 8;
    ex_check(cf_thread_pool_new(&pool, &opts), "cf_thread_pool_new");

    cf_value items[NITEMS];
    for (int i = 0; i < NITEMS; i++)
        items[i] = cf_i64(i + 1);

    /* submit form */
    cf_future *futures[NITEMS];
    int64_t results[NITEMS];
    for (int i = 0; i < NITEMS; i++)
        ex_check(cf_submit(pool, work, &items[i], 1, &futures[i]), "cf_submit");
    for (int i = 0; i < NITEMS; i++)
        ex_check(cf_future_result_i64(futures[i], CF_FOREVER, &results[i]),
                 "result");
    print_results("submit form", results, NITEMS);

    /* map form */
    cf_map_input in = cf_input_array(items, NITEMS);
    cf_map_iter *it;
    ex_check(cf_map(pool, work, &in, 1, NULL, &it), "cf_map");
    size_t n = 0;
    const cf_value *v;
    int rc;
    while ((rc = cf_map_next(it, &v, NULL)) == CF_OK)
        results[n++] = v->as.i64;
    if (rc != CF_EDONE)
        ex_check(rc, "cf_map_next");
    cf_map_close(it);
    print_results("map form", results, n);

    /* pool.map(fn, it_a, it_b): zipped, stopping at the shorter input */
    const cf_value it_a[] = {cf_i64(1), cf_i64(2), cf_i64(3)};
    const cf_value it_b[] = {cf_i64(10), cf_i64(20), cf_i64(30), cf_i64(40)};
    cf_map_input ab[] = {cf_input_array(it_a, 3), cf_input_array(it_b, 4)};
    ex_check(cf_map(pool, add, ab, 2, NULL, &it), "cf_map");
    n = 0;
    while ((rc = cf_map_next(it, &v, NULL)) == CF_OK)
        results[n++] = v->as.i64;
    if (rc != CF_EDONE)
        ex_check(rc, "cf_map_next");
    cf_map_close(it);
    print_results("map(add, [1, 2, 3], [10, 20, 30, 40])", results, n);

    /* as_completed with future_to_item */
    const int64_t ac_items[] = {1, 2, -3, 4};
    enum { NAC = sizeof ac_items / sizeof ac_items[0] };
    cf_future *future_to_item[NAC]; /* future_to_item[i] computes ac_items[i] */
    for (int i = 0; i < NAC; i++)
        ex_check(cf_submit(pool, work, CF_ARGS(cf_i64(ac_items[i])),
                           &future_to_item[i]),
                 "cf_submit");
    cf_as_completed_iter *ac;
    ex_check(cf_as_completed(future_to_item, NAC, CF_FOREVER, &ac),
             "cf_as_completed");
    cf_future *future;
    while ((rc = cf_as_completed_next(ac, &future)) == CF_OK) {
        int64_t item = 0;
        for (int i = 0; i < NAC; i++)
            if (future_to_item[i] == future)
                item = ac_items[i];
        int64_t result;
        rc = cf_future_result_i64(future, CF_FOREVER, &result);
        if (rc == CF_OK) {
            printf("as_completed: item %lld -> %lld\n", (long long)item,
                   (long long)result);
        } else { /* except Exception as exc: handle(item, exc) */
            const cf_failure *exc = NULL;
            (void)cf_future_exception(future, 0, &exc);
            handle(item, exc);
        }
    }
    if (rc != CF_EDONE)
        ex_check(rc, "cf_as_completed_next");
    cf_as_completed_free(ac);
    for (int i = 0; i < NAC; i++)
        cf_future_release(future_to_item[i]);

    /* wait(futures, timeout=10, return_when=ALL_COMPLETED) */
    cf_future *done[NITEMS], *not_done[NITEMS];
    size_t ndone, nnot_done;
    rc = cf_wait(futures, NITEMS, 10, CF_ALL_COMPLETED, done, &ndone, not_done,
                 &nnot_done);
    printf("wait(timeout=10, ALL_COMPLETED): %s, %zu done, %zu not done\n",
           cf_err_name(rc), ndone, nnot_done);
    for (int i = 0; i < NITEMS; i++)
        cf_future_release(futures[i]);
} /* leaving the block waits for pending calls, then frees the pool */

static void shutdown_section(void)
{
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 1;
    cf_executor *pool;
    ex_check(cf_thread_pool_new(&pool, &opts), "cf_thread_pool_new");

    /* One call occupies the only worker; four more wait in the queue. */
    cf_future *running, *queued[4];
    ex_check(cf_submit(pool, blocker, CF_NOARGS, &running), "cf_submit");
    for (int i = 0; i < 4; i++)
        ex_check(cf_submit(pool, work, CF_ARGS(cf_i64(i)), &queued[i]),
                 "cf_submit");
    ex_event_wait(&blocker_started);

    ex_check(cf_shutdown(pool, false, true), "cf_shutdown");
    int ncancelled = 0;
    for (int i = 0; i < 4; i++)
        ncancelled += cf_future_cancelled(queued[i]);
    printf("shutdown(wait=False, cancel_futures=True): returned with the "
           "running call %s, %d of 4 queued calls cancelled\n",
           cf_state_name(cf_future_state(running)), ncancelled);

    cf_future *late = NULL;
    int rc = cf_submit(pool, work, CF_ARGS(cf_i64(1)), &late);
    printf("submit after shutdown: %s (%s)\n", cf_err_name(rc),
           cf_strerror(rc));
    if (late)
        cf_future_release(late);

    ex_event_set(&blocker_may_end);
    const cf_value *v;
    ex_check(cf_future_result(running, CF_FOREVER, &v), "result");
    printf("the running call still finished: %s\n", v->as.str);

    cf_future_release(running);
    for (int i = 0; i < 4; i++)
        cf_future_release(queued[i]);
    ex_check(cf_executor_destroy(pool), "cf_executor_destroy");
}

static void with_section(void)
{
    enum { NCALLS = 8 };
    {
        CF_WITH_EXECUTOR(pool);
        cf_thread_pool_options opts;
        cf_thread_pool_options_init(&opts);
        opts.max_workers = 8;
        ex_check(cf_thread_pool_new(&pool, &opts), "cf_thread_pool_new");
        for (int i = 0; i < NCALLS; i++) {
            cf_future *f;
            ex_check(cf_submit(pool, short_call, CF_ARGS(cf_i64(i)), &f),
                     "cf_submit");
            cf_future_release(f);
        }
    } /* on exit: waits for running tasks, then shuts the pool down */
    printf("with block: %ld of %d calls had finished when the block ended\n",
           ex_counter_get(&finished), NCALLS);
}

int main(void)
{
    pool_section();
    shutdown_section();
    with_section();
    return 0;
}
