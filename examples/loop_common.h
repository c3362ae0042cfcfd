/* SPDX-License-Identifier: MIT */
/*
 * loop_common.h - what the three event-loop examples share: the calls
 * they drive and what they do with each completed future.  Only the glue
 * to each loop differs (loop_epoll.c, loop_libuv.c, loop_glib.c).
 *
 * TOTAL calls of square() run on a thread pool with at most WINDOW in
 * flight: each completion handled on the loop thread submits the next
 * call.  The call's index rides along as the future's user data.
 */
#ifndef CF_LOOP_COMMON_H
#define CF_LOOP_COMMON_H

#include "example_util.h"

enum { TOTAL = 10000, WINDOW = 64 };

static inline int square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}

typedef struct loop_calls {
    cf_executor *ex;
    cf_completion_queue *q;
    int submitted, completed;
    int64_t sum;
} loop_calls;

/* Submits the next call and hands its future to the queue. */
static inline void submit_one(loop_calls *c)
{
    cf_future *f;
    int64_t i = c->submitted++;
    ex_check(cf_submit(c->ex, square, CF_ARGS(cf_i64(i)), &f), "submit");
    ex_check(cf_future_set_data(f, (void *)(intptr_t)i), "future_set_data");
    ex_check(cf_cq_add(c->q, f), "cq_add");
    cf_future_release(f); /* the queue holds its own reference */
}

/* Makes the pool and the queue and submits the first WINDOW calls. */
static inline void loop_calls_start(loop_calls *c)
{
    ex_check(cf_thread_pool_new(&c->ex, NULL), "thread_pool_new");
    ex_check(cf_cq_new(&c->q), "cq_new");
    while (c->submitted < WINDOW)
        submit_one(c);
}

/* Handles one popped future (and its reference); submits the next call.
 * Returns whether calls are still outstanding. */
static inline bool loop_calls_done(loop_calls *c, cf_future *f)
{
    int64_t i = (intptr_t)cf_future_data(f), r;
    ex_check(cf_future_result_i64(f, 0, &r), "result");
    if (r != i * i) {
        fprintf(stderr, "call %lld returned %lld\n", (long long)i, (long long)r);
        exit(1);
    }
    c->sum += r;
    c->completed++;
    cf_future_release(f);
    if (c->submitted < TOTAL)
        submit_one(c);
    return c->completed < TOTAL;
}

/* Pops and handles everything completed so far.  Returns whether calls
 * are still outstanding. */
static inline bool loop_calls_drain(loop_calls *c)
{
    cf_future *done[WINDOW];
    int n;
    while ((n = cf_cq_pop(c->q, done, WINDOW)) > 0)
        for (int k = 0; k < n; k++)
            loop_calls_done(c, done[k]);
    return c->completed < TOTAL;
}

static inline void loop_calls_finish(loop_calls *c, const char *loop_name)
{
    printf("%s loop: %d calls completed on the loop thread\n", loop_name, c->completed);
    printf("sum of squares: %lld\n", (long long)c->sum);
    cf_cq_destroy(c->q);
    ex_check(cf_executor_destroy(c->ex), "executor_destroy");
}

#endif
