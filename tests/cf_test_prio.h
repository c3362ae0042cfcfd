/* SPDX-License-Identifier: MIT */
/*
 * cf_test_prio.h - helpers shared by the tests of priorities and of the
 * bound on queued calls (test_priority.c, test_fault_batches.c): a log of
 * the order thread-pool calls ran in, a submit at a priority, and bounded
 * polls of an executor's bound.  The polls use T_OK, which the test
 * file defines before it includes this header.
 */
#ifndef CF_TEST_PRIO_H
#define CF_TEST_PRIO_H

#include "cf_test_util.h"
#include "internal.h" /* the bound's counters: waiters, slots held */

typedef struct order_log {
    pthread_mutex_t mu;
    int ids[128];
    int n;
} order_log;

static inline void order_init(order_log *o)
{
    pthread_mutex_init(&o->mu, NULL);
    o->n = 0;
}

/* arg 0: order_log*, arg 1: id.  Appends the id (the first 128), returns
 * it. */
static inline int t_record(cf_call *call)
{
    order_log *o = (order_log *)cf_arg_ptr(call, 0);
    int id = (int)cf_arg_i64(call, 1);
    pthread_mutex_lock(&o->mu);
    if (o->n < 128)
        o->ids[o->n++] = id;
    pthread_mutex_unlock(&o->mu);
    return cf_return_i64(call, id);
}

static inline cf_future *submit_prio(cf_executor *ex, cf_task_fn *fn, const cf_value *args,
                                     size_t nargs, int priority)
{
    cf_submit_options o;
    cf_submit_options_init(&o);
    o.priority = priority;
    cf_future *f = NULL;
    assert_ok(cf_submit_with(ex, &o, fn, args, nargs, &f));
    return f;
}

/* Polls (bounded) until `n` threads wait for room in ex's queue. */
static inline void await_waiters(cf_executor *ex, uint32_t n)
{
    double end = cf_test_now() + T_OK * cf_test_scale();
    while (atomic_load(&ex->bound.waiters) != n && cf_test_now() < end)
        sleep_ms(1);
    assert_int_equal(atomic_load(&ex->bound.waiters), n);
}

/* Polls (bounded) until `n` slots of ex's bound are held. */
static inline void await_queued(cf_executor *ex, size_t n)
{
    double end = cf_test_now() + T_OK * cf_test_scale();
    while (atomic_load(&ex->bound.queued) != n && cf_test_now() < end)
        sleep_ms(1);
    assert_int_equal(atomic_load(&ex->bound.queued), n);
}

#endif
