/* SPDX-License-Identifier: MIT */
/*
 * blog_process_item.c - blog post "Simpler Parallelism with
 * concurrent.futures", "Working with Futures":
 *
 *     def process_item(item):
 *         time.sleep(item['delay'])
 *         return item['id'], item['value'] * 2
 *
 *     items = [{'id': 1, 'value': 10, 'delay': 0.5},
 *              {'id': 2, 'value': 20, 'delay': 0.1},
 *              {'id': 3, 'value': 30, 'delay': 0.3}]
 *
 *     with ThreadPoolExecutor(max_workers=3) as executor:
 *         future_to_item = {executor.submit(process_item, item): item
 *                           for item in items}
 *         for future in as_completed(future_to_item):
 *             item = future_to_item[future]
 *             try:
 *                 result_id, result_value = future.result()
 *                 print(f"Item {result_id}: {result_value}")
 *             except Exception as e:
 *                 print(f"Item {item['id']} failed: {e}")
 *
 * as_completed() yields each future as it finishes: item 2 (0.1 s), then
 * 3 (0.3 s), then 1 (0.5 s).  The order comes from the delays themselves,
 * 0.2 s apart, as in the post.
 */
#include "example_util.h"

typedef struct {
    int64_t id, value;
    double delay;
} item;

/* The (id, value * 2) tuple, returned as bytes. */
typedef struct {
    int64_t id, value;
} id_value;

static int process_item(cf_call *call)
{
    /* The item dict travels as copied values: id, value, delay. */
    int64_t id = cf_arg_i64(call, 0);
    int64_t value = cf_arg_i64(call, 1);
    ex_sleep(cf_arg_f64(call, 2));
    id_value r = {id, value * 2};
    return cf_return_bytes(call, &r, sizeof r);
}

int main(void)
{
    static const item items[] = {
        {1, 10, 0.5},
        {2, 20, 0.1},
        {3, 30, 0.3},
    };
    enum { NITEMS = sizeof items / sizeof items[0] };

    CF_WITH_EXECUTOR(executor);
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 3;
    ex_check(cf_thread_pool_new(&executor, &opts), "cf_thread_pool_new");

    /* future_to_item: futures[i] belongs to items[i]. */
    cf_future *futures[NITEMS];
    for (size_t i = 0; i < NITEMS; i++)
        ex_check(cf_submit(executor, process_item,
                           CF_ARGS(cf_i64(items[i].id), cf_i64(items[i].value),
                                   cf_f64(items[i].delay)),
                           &futures[i]),
                 "cf_submit");

    cf_as_completed_iter *it;
    ex_check(cf_as_completed(futures, NITEMS, CF_FOREVER, &it),
             "cf_as_completed");
    cf_future *future;
    int rc;
    while ((rc = cf_as_completed_next(it, &future)) == CF_OK) {
        const item *itm = NULL;
        for (size_t i = 0; i < NITEMS; i++)
            if (futures[i] == future)
                itm = &items[i];
        const cf_value *v;
        if (cf_future_result(future, CF_FOREVER, &v) == CF_OK) {
            id_value r;
            memcpy(&r, v->as.bytes, sizeof r);
            printf("Item %lld: %lld\n", (long long)r.id, (long long)r.value);
        } else { /* except Exception as e: */
            const cf_failure *e = NULL;
            (void)cf_future_exception(future, 0, &e);
            printf("Item %lld failed: %s\n", (long long)itm->id,
                   e ? cf_failure_message(e) : "cancelled");
        }
    }
    if (rc != CF_EDONE)
        ex_check(rc, "cf_as_completed_next");
    cf_as_completed_free(it);
    for (size_t i = 0; i < NITEMS; i++)
        cf_future_release(futures[i]);
    return 0;
}
