/* SPDX-License-Identifier: MIT */
/*
 * test_compose.c - user data on futures, continuations and combinators.
 */
#include "cf_test_util.h"

#include <poll.h>
#include <sched.h>

#include "internal.h" /* cf__test_hook_then_submitted */

/* ---- user data ---------------------------------------------------------- */

static void test_data_set_get(void **state)
{
    (void)state;
    cf_future *f;
    assert_ok(cf_future_new(&f));
    assert_null(cf_future_data(f));
    int x = 7, y = 8;
    assert_ok(cf_future_set_data(f, &x));
    assert_ptr_equal(cf_future_data(f), &x);
    assert_ok(cf_future_set_data(f, &y));
    assert_ptr_equal(cf_future_data(f), &y);
    /* Completion does not touch it. */
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(f, &v));
    assert_ptr_equal(cf_future_data(f), &y);
    assert_ok(cf_future_set_data(f, NULL));
    assert_null(cf_future_data(f));
    assert_ok(cf_future_release(f));
}

static void test_data_bad_input(void **state)
{
    (void)state;
    assert_cf(CF_EINVAL, cf_future_set_data(NULL, &state));
    assert_true(contains(cf_last_error_message(), "NULL"));
    assert_null(cf_future_data(NULL));
}

typedef struct data_seen {
    cf_test_event done;
    void *seen;
} data_seen;

static int cb_read_data(cf_future *f, void *arg)
{
    data_seen *d = arg;
    d->seen = cf_future_data(f);
    cf_test_event_set(&d->done);
    return 0;
}

/* A pointer set on the submitting thread is what a done-callback on the
 * worker thread reads, and the memory behind it is visible there. */
static void test_data_seen_by_worker_callback(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    for (int round = 0; round < 200; round++) {
        blocker b;
        blocker_init(&b);
        cf_future *f;
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &f));
        int *payload = malloc(sizeof *payload);
        assert_non_null(payload);
        *payload = round;
        assert_ok(cf_future_set_data(f, payload));
        data_seen d = {CF_TEST_EVENT_INIT, NULL};
        assert_ok(cf_future_add_done_callback(f, cb_read_data, &d));
        blocker_release(&b);
        assert_true(cf_test_event_wait(&d.done, 10));
        assert_ptr_equal(d.seen, payload);
        assert_int_equal(*(int *)d.seen, round);
        free(payload);
        assert_ok(cf_future_release(f));
        blocker_destroy(&b);
    }
    assert_ok(cf_executor_destroy(ex));
}




/* ---- continuations -------------------------------------------------------- */

CF_TASK(t_square);
CF_TASK(t_echo);

/* Task: describes the outcome cf_then() passes, and its extra arguments:
 * "<status> <value> <code> <type> <message> +<nextra>". */
static int t_outcome(cf_call *call)
{
    int64_t status = cf_arg_i64(call, CF_THEN_STATUS);
    const cf_value *v = cf_arg(call, CF_THEN_VALUE);
    char value[64];
    if (v->kind == CF_I64)
        snprintf(value, sizeof value, "%lld", (long long)v->as.i64);
    else if (v->kind == CF_BYTES)
        snprintf(value, sizeof value, "bytes:%zu", v->size);
    else
        snprintf(value, sizeof value, "%s", cf_kind_name(v->kind));
    char out[256];
    snprintf(out, sizeof out, "%s %s %lld %s %s +%zu", cf_err_name((int)status), value,
             (long long)cf_arg_i64(call, CF_THEN_CODE), cf_arg_str(call, CF_THEN_TYPE),
             cf_arg_str(call, CF_THEN_MESSAGE), cf_arg_count(call) - CF_THEN_NARGS);
    return cf_return_str(call, out);
}
CF_TASK(t_outcome);

/* Task: argument 0 plus 1 (a cf_then_ok() step). */
static int t_inc(cf_call *call)
{
    return cf_return_i64(call, cf_arg_i64(call, 0) + 1);
}
CF_TASK(t_inc);

/* Task: the size of a bytes argument 0. */
static int t_len(cf_call *call)
{
    size_t size = 0;
    cf_arg_bytes(call, 0, &size);
    return cf_return_i64(call, (int64_t)size);
}
CF_TASK(t_len);

/* Task: returns the name of the thread it runs on. */
static int t_thread_name(cf_call *call)
{
    return cf_return_str(call, cf_thread_name());
}

static _Atomic int ran_count;

/* Task: counts its runs, returns argument 0. */
static int t_count(cf_call *call)
{
    atomic_fetch_add(&ran_count, 1);
    return cf_return_value(call, cf_arg(call, 0));
}

static void expect_str(cf_future *f, const char *want)
{
    const cf_value *v;
    assert_ok(cf_future_result(f, 10 * cf_test_scale(), &v));
    assert_int_equal(v->kind, CF_STR);
    assert_string_equal(v->as.str, want);
}

static void test_then_sees_every_outcome(void **state)
{
    (void)state;
    cf_future *ok, *bad, *gone, *d1, *d2, *d3;
    assert_ok(cf_future_new(&ok));
    assert_ok(cf_future_new(&bad));
    assert_ok(cf_future_new(&gone));
    assert_ok(cf_then(ok, NULL, t_outcome, CF_ARGS(cf_i64(1), cf_str("x")), &d1));
    assert_ok(cf_then(bad, NULL, t_outcome, CF_NOARGS, &d2));
    assert_ok(cf_then(gone, NULL, t_outcome, CF_NOARGS, &d3));
    assert_false(cf_future_done(d1));
    cf_value v = cf_i64(5);
    assert_ok(cf_future_set_result(ok, &v));
    assert_ok(cf_future_set_exception(bad, 7, "ValueError", "bad input"));
    assert_true(cf_future_cancel(gone));
    /* Inline: done before the completing call returned. */
    assert_true(cf_future_done(d1) && cf_future_done(d2) && cf_future_done(d3));
    expect_str(d1, "CF_OK 5 0   +2");
    expect_str(d2, "CF_ETASK NoneType 7 ValueError bad input +0");
    expect_str(d3, "CF_ECANCELLED NoneType 0   +0");
    cf_future *all[] = {ok, bad, gone, d1, d2, d3};
    for (size_t i = 0; i < 6; i++)
        assert_ok(cf_future_release(all[i]));
}

/* Inline task (a then_ok step on argument 0): starts a continuation of its
 * own and waits for it, which must neither queue it behind itself nor
 * hang.  Argument 1 picks how: 0, cf_then_ok() on a done future (runs at
 * once: done when cf_then_ok() returns), then cf_future_result(); 1,
 * cf_then_ok() on a pending future this task then completes, then
 * cf_wait().  Returns argument 0 + 2. */
static int t_nested_then(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    bool later = cf_arg_i64(call, 1) != 0;
    cf_future *a, *d;
    if (cf_future_new(&a) != CF_OK)
        return cf_raise(call, 1, "TestError", "future_new failed");
    cf_value v = cf_i64(x + 1);
    if (!later && cf_future_set_result(a, &v) != CF_OK)
        return cf_raise(call, 1, "TestError", "set_result failed");
    if (cf_then_ok(a, NULL, t_inc, CF_NOARGS, &d) != CF_OK)
        return cf_raise(call, 1, "TestError", "then_ok: %s", cf_last_error_message());
    bool at_once = cf_future_done(d);
    int rc;
    int64_t y = 0;
    if (later) {
        cf_future_set_result(a, &v);
        rc = cf_wait(&d, 1, 2 * cf_test_scale(), CF_ALL_COMPLETED, NULL, NULL, NULL, NULL);
        if (rc == CF_OK && !cf_future_done(d))
            rc = CF_ETIMEDOUT;
        if (rc == CF_OK)
            rc = cf_future_result_i64(d, 0, &y);
    } else {
        rc = cf_future_result_i64(d, 2 * cf_test_scale(), &y);
    }
    cf_future_release(a);
    cf_future_release(d);
    if (!later && !at_once)
        return cf_raise(call, 2, "TestError", "the nested continuation did not run at once");
    if (rc != CF_OK)
        return cf_raise(call, 3, "TestError", "waiting for it: %s", cf_err_name(rc));
    return cf_return_i64(call, y);
}

static void test_then_nested_inside_inline_task(void **state)
{
    (void)state;
    for (int later = 0; later < 2; later++) {
        cf_future *a, *d;
        assert_ok(cf_future_new(&a));
        assert_ok(cf_then_ok(a, NULL, t_nested_then, CF_ARGS(cf_i64(later)), &d));
        cf_value v = cf_i64(40);
        assert_ok(cf_future_set_result(a, &v));
        int64_t x = 0;
        int rc = cf_future_result_i64(d, 10 * cf_test_scale(), &x);
        if (rc != CF_OK)
            print_error("later=%d: %s\n", later, cf_last_error_message());
        assert_ok(rc);
        assert_int_equal(x, 42);
        assert_ok(cf_future_release(a));
        assert_ok(cf_future_release(d));
    }
}

static void test_then_ok_propagates(void **state)
{
    (void)state;
    cf_future *ok, *bad, *gone, *d1, *d2, *d3;
    assert_ok(cf_future_new(&ok));
    assert_ok(cf_future_new(&bad));
    assert_ok(cf_future_new(&gone));
    atomic_store(&ran_count, 0);
    assert_ok(cf_then_ok(ok, NULL, t_inc, CF_NOARGS, &d1));
    assert_ok(cf_then_ok(bad, NULL, t_count, CF_NOARGS, &d2));
    assert_ok(cf_then_ok(gone, NULL, t_count, CF_NOARGS, &d3));
    cf_value v = cf_i64(41);
    assert_ok(cf_future_set_result(ok, &v));
    assert_ok(cf_future_set_exception(bad, 7, "ValueError", "bad input"));
    assert_true(cf_future_cancel(gone));
    int64_t x;
    assert_ok(cf_future_result_i64(d1, 0, &x));
    assert_int_equal(x, 42);
    assert_cf(CF_ETASK, cf_future_result(d2, 0, NULL));
    const cf_failure *fl;
    assert_ok(cf_future_exception(d2, 0, &fl));
    assert_int_equal(cf_failure_code(fl), 7);
    assert_string_equal(cf_failure_type(fl), "ValueError");
    assert_string_equal(cf_failure_message(fl), "bad input");
    assert_true(cf_future_cancelled(d3));
    assert_int_equal(atomic_load(&ran_count), 0);
    cf_future *all[] = {ok, bad, gone, d1, d2, d3};
    for (size_t i = 0; i < 6; i++)
        assert_ok(cf_future_release(all[i]));
}

/* Inline runs on the completing thread (a worker here), or at once in the
 * caller when the antecedent is already done. */
static void test_then_inline_thread(void **state)
{
    (void)state;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 1;
    o.thread_name_prefix = "cw";
    cf_executor *ex;
    assert_ok(cf_thread_pool_new(&ex, &o));
    blocker b;
    blocker_init(&b);
    cf_future *f, *d, *d_now;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &f));
    assert_ok(cf_then(f, NULL, t_thread_name, CF_NOARGS, &d));
    blocker_release(&b);
    expect_str(d, "cw_0");
    assert_ok(cf_then(f, NULL, t_thread_name, CF_NOARGS, &d_now));
    assert_true(cf_future_done(d_now));
    const cf_value *v;
    assert_ok(cf_future_result(d_now, 0, &v));
    assert_string_equal(v->as.str, cf_thread_name());
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(d_now));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* 100,000 inline steps built on a pending future, then set off: the
 * trampoline keeps the stack flat (nested, this would overflow it).  The
 * intermediate futures are released as the chain is built. */
static void test_then_chain_100000(void **state)
{
    (void)state;
    enum { STEPS = 100000 };
    cf_future *first, *f;
    assert_ok(cf_future_new(&first));
    f = cf_future_retain(first);
    for (int i = 0; i < STEPS; i++) {
        cf_future *next;
        assert_ok(cf_then_ok(f, NULL, t_inc, CF_NOARGS, &next));
        assert_ok(cf_future_release(f));
        f = next;
    }
    cf_value v = cf_i64(0);
    assert_ok(cf_future_set_result(first, &v));
    int64_t x;
    assert_ok(cf_future_result_i64(f, 0, &x));
    assert_int_equal(x, STEPS);
    assert_ok(cf_future_release(f));
    /* The same length propagating a failure without running anything. */
    cf_future *start;
    assert_ok(cf_future_new(&start));
    f = cf_future_retain(start);
    for (int i = 0; i < STEPS; i++) {
        cf_future *next;
        assert_ok(cf_then_ok(f, NULL, t_inc, CF_NOARGS, &next));
        assert_ok(cf_future_release(f));
        f = next;
    }
    assert_ok(cf_future_set_exception(start, 3, "IOError", "gone"));
    const cf_failure *fl;
    assert_ok(cf_future_exception(f, 0, &fl));
    assert_string_equal(cf_failure_type(fl), "IOError");
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(first));
    assert_ok(cf_future_release(start));
}

/* A chain whose steps are submitted to a pool. */
static void test_then_chain_on_executor(void **state)
{
    (void)state;
    enum { STEPS = 2000 };
    cf_executor *ex = pool_new(2);
    cf_future *f;
    assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_i64(0)), &f));
    for (int i = 0; i < STEPS; i++) {
        cf_future *next;
        assert_ok(cf_then_ok(f, ex, t_inc, CF_NOARGS, &next));
        assert_ok(cf_future_release(f));
        f = next;
    }
    int64_t x;
    assert_ok(cf_future_result_i64(f, 20 * cf_test_scale(), &x));
    assert_int_equal(x, STEPS);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

/* A continuation attached while another thread completes the antecedent:
 * it runs exactly once, with the value, in 1,000 rounds. */
static void test_then_race_attach_vs_complete(void **state)
{
    (void)state;
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    atomic_store(&ran_count, 0);
    for (int round = 0; round < 1000; round++) {
        cf_future *f, *d;
        assert_ok(cf_future_new(&f));
        race_arg a = {&bar, f, round};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, complete_after_barrier, &a), 0);
        pthread_barrier_wait(&bar);
        assert_ok(cf_then_ok(f, NULL, t_count, CF_NOARGS, &d));
        int64_t x = -1;
        assert_ok(cf_future_result_i64(d, 10 * cf_test_scale(), &x));
        assert_int_equal(x, round);
        void *rc;
        pthread_join(t, &rc);
        assert_int_equal((intptr_t)rc, CF_OK);
        assert_ok(cf_future_release(d));
        assert_ok(cf_future_release(f));
    }
    assert_int_equal(atomic_load(&ran_count), 1000);
    pthread_barrier_destroy(&bar);
}

/* Cancelling a derived future that has not started cancels it alone. */
static void test_then_cancel_derived_alone(void **state)
{
    (void)state;
    atomic_store(&ran_count, 0);
    /* Inline. */
    cf_future *f, *d, *dd;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then_ok(f, NULL, t_count, CF_NOARGS, &d));
    assert_ok(cf_then(d, NULL, t_outcome, CF_NOARGS, &dd));
    assert_true(cf_future_cancel(d));
    assert_false(cf_future_cancelled(f));
    assert_false(cf_future_done(f));
    expect_str(dd, "CF_ECANCELLED NoneType 0   +0");
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(f, &v));
    assert_int_equal(atomic_load(&ran_count), 0);
    assert_true(cf_future_cancelled(d));
    assert_ok(cf_future_release(dd));
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));
    /* On an executor whose only worker is busy: the queued call is
     * cancelled there too and never runs. */
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *busy;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
    assert_true(blocker_wait_started(&b, 1, 10));
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then_ok(f, ex, t_count, CF_NOARGS, &d));
    assert_ok(cf_future_set_result(f, &v)); /* d's call is now queued */
    assert_false(cf_future_done(d));
    assert_true(cf_future_cancel(d));
    blocker_release(&b);
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(atomic_load(&ran_count), 0);
    assert_true(cf_future_cancelled(d));
    assert_false(cf_future_cancelled(f));
    assert_ok(cf_future_release(busy));
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* The executor was destroyed before the antecedent completed. */
static void test_then_executor_gone(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    cf_future *f, *d;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then_ok(f, ex, t_inc, CF_NOARGS, &d));
    assert_ok(cf_executor_destroy(ex));
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(f, &v));
    assert_cf(CF_ESHUTDOWN, cf_future_result(d, 0, NULL));
    const cf_failure *fl;
    assert_ok(cf_future_exception(d, 0, &fl));
    assert_string_equal(cf_failure_type(fl), "SubmitError");
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));
}

/* Releases a blocker after a delay, unless told to stop first: the bound
 * on the test below when the thread completing an antecedent waits. */
typedef struct late_release {
    blocker *b;
    cf_test_event stop;
    _Atomic bool fired;
} late_release;

static void *release_late(void *arg)
{
    late_release *l = arg;
    if (!cf_test_event_wait(&l->stop, 3)) {
        atomic_store(&l->fired, true);
        blocker_release(l->b);
    }
    return NULL;
}

/* The continuation's submit runs on whatever thread completed the
 * antecedent (a worker of another pool, a process pool's manager, an
 * event loop), so it never waits for room in a full bounded queue: the
 * derived future fails with CF_EFULL at once.  Waiting there could
 * deadlock - that thread may be the one the full executor's workers wait
 * for. */
static void test_then_never_waits_for_room(void **state)
{
    (void)state;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 1;
    o.max_queued = 1;
    cf_executor *ex;
    assert_ok(cf_thread_pool_new(&ex, &o));
    blocker b;
    blocker_init(&b);
    cf_future *busy, *queued;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
    assert_true(blocker_wait_started(&b, 1, 10));
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &queued)); /* now full */
    cf_future *f, *d;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then_ok(f, ex, t_inc, CF_NOARGS, &d));
    cf_submit_options so; /* a queue_timeout given to cf_then_ok_with() is not used either */
    cf_submit_options_init(&so);
    so.queue_timeout = CF_FOREVER;
    cf_future *dw;
    assert_ok(cf_then_ok_with(f, ex, &so, t_inc, CF_NOARGS, &dw));
    late_release l = {.b = &b};
    cf_test_event_init(&l.stop);
    atomic_init(&l.fired, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_late, &l), 0);
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(f, &v)); /* must not wait for room */
    bool fired = atomic_load(&l.fired);
    cf_test_event_set(&l.stop);
    blocker_release(&b);
    pthread_join(t, NULL);
    assert_false(fired);
    assert_cf(CF_EFULL, cf_future_result(d, 10 * cf_test_scale(), NULL));
    assert_cf(CF_EFULL, cf_future_result(dw, 10 * cf_test_scale(), NULL));
    assert_ok(cf_future_release(dw));
    const cf_failure *fl;
    assert_ok(cf_future_exception(d, 0, &fl));
    assert_string_equal(cf_failure_type(fl), "SubmitError");
    assert_ok(cf_shutdown(ex, true, false));
    assert_ok(cf_future_release(busy));
    assert_ok(cf_future_release(queued));
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* Task (cf_then form): appends its second extra argument to the id_log
 * in its first; returns the id. */
typedef struct id_log {
    _Atomic int n;
    int ids[8];
} id_log;

static int t_then_log(cf_call *call)
{
    id_log *l = cf_arg_ptr(call, CF_THEN_NARGS);
    int id = (int)cf_arg_i64(call, CF_THEN_NARGS + 1);
    int k = atomic_fetch_add(&l->n, 1);
    if (k < 8)
        l->ids[k] = id;
    return cf_return_i64(call, id);
}

/* Task (cf_then form): waits up to 10 s (scaled) for cf_cancel_requested();
 * returns 1 if it turned true. */
static int t_then_until_requested(cf_call *call)
{
    double end = cf_test_now() + 10 * cf_test_scale();
    while (!cf_cancel_requested(call) && cf_test_now() < end)
        sleep_ms(1);
    return cf_return_i64(call, cf_cancel_requested(call));
}

/* cf_then_with(): the continuation is queued at its priority (ids 2, 1, 3
 * run in that order behind a busy single worker, though submitted 1, 2,
 * 3 by the antecedent's completion) and runs under its timeout; bad
 * options create nothing. */
static void test_then_with_options(void **state)
{
    (void)state;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex;
    assert_ok(cf_thread_pool_new(&ex, &o));
    blocker b;
    blocker_init(&b);
    cf_future *busy, *f, *d[3];
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
    assert_true(blocker_wait_started(&b, 1, 10));
    assert_ok(cf_future_new(&f));
    id_log log = {0};
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.priority = 1;
    assert_ok(cf_then_with(f, ex, &so, t_then_log, CF_ARGS(cf_ptr(&log), cf_i64(1)), &d[0]));
    so.priority = 5;
    assert_ok(cf_then_with(f, ex, &so, t_then_log, CF_ARGS(cf_ptr(&log), cf_i64(2)), &d[1]));
    assert_ok(cf_then_with(f, ex, NULL, t_then_log, CF_ARGS(cf_ptr(&log), cf_i64(3)), &d[2]));
    cf_value v = cf_i64(0);
    assert_ok(cf_future_set_result(f, &v));
    blocker_release(&b);
    for (int i = 0; i < 3; i++) {
        int64_t id = 0;
        assert_ok(cf_future_result_i64(d[i], 10 * cf_test_scale(), &id));
        assert_int_equal(id, i + 1);
        assert_ok(cf_future_release(d[i]));
    }
    assert_int_equal(atomic_load(&log.n), 3);
    assert_int_equal(log.ids[0], 2);
    assert_int_equal(log.ids[1], 1);
    assert_int_equal(log.ids[2], 3);

    /* A timeout: a thread pool's task sees cf_cancel_requested(). */
    cf_submit_options_init(&so);
    so.timeout = 0.05;
    cf_future *t;
    assert_ok(cf_then_ok_with(f, ex, &so, t_then_until_requested, CF_NOARGS, &t));
    int64_t seen = 0;
    assert_ok(cf_future_result_i64(t, 20 * cf_test_scale(), &seen));
    assert_int_equal(seen, 1);
    assert_ok(cf_future_release(t));

    /* Bad options, or options an inline task cannot have: nothing made. */
    cf_future *x = (cf_future *)&x;
    cf_submit_options_init(&so);
    so.timeout = -1;
    assert_cf(CF_EINVAL, cf_then_with(f, ex, &so, t_outcome, CF_NOARGS, &x));
    assert_null(x);
    so.timeout = NAN;
    assert_cf(CF_EINVAL, cf_then_ok_with(f, ex, &so, t_inc, CF_NOARGS, &x));
    cf_submit_options_init(&so);
    so.priority = CF_PRIORITY_MAX + 1;
    assert_cf(CF_EINVAL, cf_then_with(f, ex, &so, t_outcome, CF_NOARGS, &x));
    so.priority = 3;
    assert_cf(CF_EINVAL, cf_then_with(f, NULL, &so, t_outcome, CF_NOARGS, &x));
    cf_submit_options_init(&so);
    so.timeout = 1;
    assert_cf(CF_EINVAL, cf_then_ok_with(f, NULL, &so, t_inc, CF_NOARGS, &x));
    assert_null(x);
    /* Defaults inline: as cf_then_ok(). */
    cf_submit_options_init(&so);
    so.queue_timeout = 0; /* not used */
    assert_ok(cf_then_ok_with(f, NULL, &so, t_inc, CF_NOARGS, &x));
    int64_t r = 0;
    assert_ok(cf_future_result_i64(x, 0, &r));
    assert_int_equal(r, 1);
    assert_ok(cf_future_release(x));

    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(busy));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* On a process pool: registered continuation tasks, the antecedent's
 * value (a 2 MiB one too) travelling to the worker as an argument. */
static void test_then_process_pool(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *f, *d, *d2;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(7)), &f));
    assert_ok(cf_then_ok(f, ex, t_square, CF_NOARGS, &d));
    int64_t x;
    assert_ok(cf_future_result_i64(d, 20 * cf_test_scale(), &x));
    assert_int_equal(x, 2401);
    assert_ok(cf_then(d, ex, t_outcome, CF_ARGS(cf_str("extra")), &d2));
    expect_str(d2, "CF_OK 2401 0   +1");
    /* Inline on the pool's completing thread (its manager). */
    cf_future *d3;
    assert_ok(cf_then_ok(f, NULL, t_inc, CF_NOARGS, &d3));
    assert_ok(cf_future_result_i64(d3, 20 * cf_test_scale(), &x));
    assert_int_equal(x, 50);
    assert_ok(cf_future_release(d3));
    cf_future *slow, *d4;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &slow));
    assert_ok(cf_then_ok(slow, NULL, t_inc, CF_NOARGS, &d4));
    assert_ok(cf_future_result_i64(d4, 20 * cf_test_scale(), &x));
    assert_int_equal(x, 10);
    assert_ok(cf_future_release(slow));
    assert_ok(cf_future_release(d4));
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(d2));
    size_t big = (size_t)2 << 20;
    char *buf = calloc(1, big);
    assert_non_null(buf);
    assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_bytes(buf, big)), &f));
    free(buf);
    assert_ok(cf_then_ok(f, ex, t_len, CF_NOARGS, &d));
    assert_ok(cf_future_result_i64(d, 20 * cf_test_scale(), &x));
    assert_int_equal(x, (int64_t)big);
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(d));
    /* A pointer cannot travel to a worker process. */
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then_ok(f, ex, t_echo, CF_NOARGS, &d));
    cf_value p = cf_ptr(&x);
    assert_ok(cf_future_set_result(f, &p));
    assert_cf(CF_ENOTCOPYABLE, cf_future_result(d, 10 * cf_test_scale(), NULL));
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(d));
    assert_ok(cf_executor_destroy(ex));
}

/* Task (cf_then form): signals the event in its first extra argument,
 * then waits up to 10 s (scaled) on its cancellation descriptor; returns 1
 * if it turned readable. */
static int t_until_cancelled(cf_call *call)
{
    cf_test_event *started = cf_arg_ptr(call, CF_THEN_NARGS);
    int fd = cf_cancel_fd(call);
    if (fd < 0)
        return cf_raise(call, 1, "TestError", "cancel_fd: %s", cf_last_error_message());
    cf_test_event_set(started);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, 10000 * cf_test_scale());
    while (rc < 0 && errno == EINTR);
    return cf_return_i64(call, rc == 1 && cf_cancel_requested(call));
}

static void complete_with_zero(void *arg)
{
    cf_value v = cf_i64(0);
    cf_future_set_result(arg, &v);
}

/* A running inline continuation is interrupted through its flag and
 * descriptor, and refuses an outside set_result (its task writes the
 * outcome). */
static void test_then_inline_running_interrupt(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE("cf_cancel_fd() needs a timerfd (CF_ENOTSUP)");
    cf_future *f, *d;
    cf_test_event started = CF_TEST_EVENT_INIT;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then(f, NULL, t_until_cancelled, CF_ARGS(cf_ptr(&started)), &d));
    bg_thread t;
    bg_start(&t, complete_with_zero, f); /* the task runs on that thread */
    assert_true(cf_test_event_wait(&started, 10));
    assert_true(cf_future_running(d));
    assert_false(cf_future_cancel(d));
    cf_value v = cf_i64(5);
    assert_cf(CF_EINVALSTATE, cf_future_set_result(d, &v));
    assert_ok(cf_future_interrupt(d));
    int64_t x;
    assert_ok(cf_future_result_i64(d, 10 * cf_test_scale(), &x));
    assert_int_equal(x, 1);
    bg_join(&t, 10);
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));
}

/* The derived future of a continuation on an executor: an interrupt goes
 * to the call the continuation submitted (on a thread pool, the task sees
 * cf_cancel_requested() and its descriptor turn readable), or, before
 * that call exists, cancels the derived future, and the task never runs.
 * A hand-made future is still no executor's call. */
static void test_then_executor_interrupt(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE("cf_cancel_fd() needs a timerfd (CF_ENOTSUP)");
    cf_executor *ex = pool_new(1);
    cf_future *f, *d;
    cf_test_event started = CF_TEST_EVENT_INIT;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then(f, ex, t_until_cancelled, CF_ARGS(cf_ptr(&started)), &d));
    cf_value zero = cf_i64(0);
    assert_ok(cf_future_set_result(f, &zero)); /* the task now runs on ex */
    assert_true(cf_test_event_wait(&started, 10));
    assert_false(cf_future_done(d));
    assert_ok(cf_future_interrupt(d));
    int64_t x = 0;
    assert_ok(cf_future_result_i64(d, 10 * cf_test_scale(), &x));
    assert_int_equal(x, 1);
    assert_cf(CF_EDONE, cf_future_interrupt(d));
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));

    /* Before the antecedent is done there is no call yet. */
    atomic_store(&ran_count, 0);
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then_ok(f, ex, t_count, CF_NOARGS, &d));
    assert_ok(cf_future_interrupt(d));
    assert_true(cf_future_cancelled(d));
    assert_ok(cf_future_set_result(f, &zero));
    assert_cf(CF_ECANCELLED, cf_future_result(d, 0, NULL));
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(atomic_load(&ran_count), 0);
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));

    cf_future *plain;
    assert_ok(cf_future_new(&plain));
    assert_cf(CF_EINVAL, cf_future_interrupt(plain));
    assert_ok(cf_future_release(plain));
    assert_ok(cf_executor_destroy(ex));
}

/* A task that runs up to 5 s (scaled) unless cf_cancel_requested() turns
 * true; it notes in its slot (argument after the outcome) how it ended. */
typedef struct stop_slot {
    _Atomic int started, stopped, ran_full;
} stop_slot;

static int t_until_stop_requested(cf_call *call)
{
    stop_slot *s = cf_arg_ptr(call, CF_THEN_NARGS);
    atomic_store(&s->started, 1);
    double end = cf_test_now() + 5.0 * cf_test_scale();
    while (cf_test_now() < end) {
        if (cf_cancel_requested(call)) {
            atomic_store(&s->stopped, 1);
            return cf_raise(call, CF_ECANCELLED, "CancelledError", "stopped");
        }
    }
    atomic_store(&s->ran_full, 1);
    return cf_return_none(call);
}

static void complete_with_one(void *arg)
{
    cf_value v = cf_i64(1);
    cf_future_set_result(arg, &v);
}

/* cf_future_interrupt() of a continuation's derived future racing the
 * completion of its antecedent, which hands the call to the executor on
 * the other thread: whether the interrupt lands before, during or after
 * the hand-over, a task that began is told to stop.  (An interrupt that
 * came while the job was between its look at the derived future and
 * publishing the call used to become a plain cancel, which a task that
 * had begun ignores: 1.5-3 % of interrupts in a stress run.) */
static void test_then_executor_interrupt_races_submit(void **state)
{
    (void)state;
    enum { ROUNDS = 300 };
    cf_executor *ex = pool_new(2);
    int began = 0;
    for (int round = 0; round < ROUNDS; round++) {
        stop_slot slot;
        atomic_init(&slot.started, 0);
        atomic_init(&slot.stopped, 0);
        atomic_init(&slot.ran_full, 0);
        cf_future *f, *d;
        assert_ok(cf_future_new(&f));
        assert_ok(cf_then(f, ex, t_until_stop_requested, CF_ARGS(cf_ptr(&slot)), &d));
        bg_thread t;
        bg_start(&t, complete_with_one, f);
        /* Not a synchronisation: a spread of head starts for the other
         * thread, so that rounds meet the hand-over at different points. */
        double until = cf_test_now() + (double)(round % 60) * 1e-6;
        while (cf_test_now() < until)
            ;
        int rc = cf_future_interrupt(d);
        assert_true(rc == CF_OK || rc == CF_EDONE);
        bg_join(&t, 10);
        /* Cancelled, or (a task that began) ended as the task ended: it
         * raised when told to stop. */
        int drc = cf_future_result(d, 10 * cf_test_scale(), NULL);
        if (drc != CF_ECANCELLED && drc != CF_ETASK)
            fail_msg("round %d: the derived future said %s", round, cf_err_name(drc));
        /* The executor's call ends as the task ends (it may still be
         * returning when the derived future shows cancelled). */
        assert_ok(cf_shutdown(ex, true, false));
        if (atomic_load(&slot.ran_full))
            fail_msg("round %d: interrupted (%s), but the task that began never saw "
                     "cf_cancel_requested()", round, cf_err_name(rc));
        began += atomic_load(&slot.started);
        assert_ok(cf_future_release(d));
        assert_ok(cf_future_release(f));
        assert_ok(cf_executor_destroy(ex));
        ex = pool_new(2);
    }
    print_message("tasks that began before the interrupt: %d of %d\n", began, ROUNDS);
    assert_ok(cf_executor_destroy(ex));
}

/* The window itself, made deterministic: the interrupt comes after the
 * job submitted the call and the worker began it, before the job has
 * published the call to the derived future (a test hook on the job's
 * thread).  The task must still be told to stop; a plain cancel, which
 * is what such an interrupt used to become, cannot stop a call that began. */
static stop_slot hook_slot;

static void interrupt_in_window(cf_future *derived, cf_future *inner)
{
    (void)inner;
    double end = cf_test_now() + 10.0 * cf_test_scale();
    while (!atomic_load(&hook_slot.started) && cf_test_now() < end)
        sched_yield();
    cf_future_interrupt(derived);
}

static void test_then_executor_interrupt_while_handing_over(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    atomic_init(&hook_slot.started, 0);
    atomic_init(&hook_slot.stopped, 0);
    atomic_init(&hook_slot.ran_full, 0);
    cf_future *f, *d;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then(f, ex, t_until_stop_requested, CF_ARGS(cf_ptr(&hook_slot)), &d));
    atomic_store(&cf__test_hook_then_submitted, interrupt_in_window);
    cf_value one = cf_i64(1);
    assert_ok(cf_future_set_result(f, &one)); /* the job runs here, with the hook */
    atomic_store(&cf__test_hook_then_submitted, NULL);
    assert_true(atomic_load(&hook_slot.started));
    assert_true(cf_future_cancelled(d));
    assert_ok(cf_shutdown(ex, true, false));
    assert_true(atomic_load(&hook_slot.stopped));
    assert_false(atomic_load(&hook_slot.ran_full));
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

/* Waiting on a derived or combined future honours the timeout; an
 * engine-API misuse on a derived future fails it instead of hanging; a
 * derived future its user completed first keeps that outcome. */
static void test_compose_timeouts_and_misuse(void **state)
{
    (void)state;
    cf_future *f, *d, *d2, *all;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_then_ok(f, NULL, t_inc, CF_NOARGS, &d));
    assert_ok(cf_then_ok(f, NULL, t_inc, CF_NOARGS, &d2));
    assert_ok(cf_when_all(&f, 1, &all));
    assert_cf(CF_ETIMEDOUT, cf_future_result(d, 0.01, NULL));
    assert_cf(CF_ETIMEDOUT, cf_future_result(all, 0, NULL));
    assert_int_equal(cf_future_set_running_or_notify_cancel(d), 1);
    cf_value five = cf_i64(5);
    assert_ok(cf_future_set_result(d2, &five));
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(f, &v));
    assert_cf(CF_EINVALSTATE, cf_future_result(d, 0, NULL));
    int64_t r = 0;
    assert_ok(cf_future_result_i64(d2, 0, &r));
    assert_int_equal(r, 5);
    assert_ok(cf_future_result(all, 0, NULL));
    assert_ok(cf_future_release(all));
    assert_ok(cf_future_release(d2));
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));
}

/* The library's own callbacks run on whichever thread completes a future;
 * completing outputs their users already cancelled fails inside them, and
 * that must not show in the thread's cf_last_error_message() (successful
 * calls do not change it). */
static void test_compose_keeps_callers_last_error(void **state)
{
    (void)state;
    cf_future *a, *d, *all, *any, *orf;
    assert_ok(cf_future_new(&a));
    assert_ok(cf_then_ok(a, NULL, t_inc, CF_NOARGS, &d));
    assert_ok(cf_when_all(&a, 1, &all));
    assert_ok(cf_when_any(&a, 1, &any));
    assert_ok(cf_when_all_or_fail(&a, 1, &orf));
    assert_true(cf_future_cancel(d));
    assert_true(cf_future_cancel(all));
    assert_true(cf_future_cancel(any));
    assert_true(cf_future_cancel(orf));
    assert_cf(CF_EINVAL, cf_future_result(NULL, 0, NULL));
    char before[256];
    snprintf(before, sizeof before, "%s", cf_last_error_message());
    assert_true(before[0] != '\0');
    assert_ok(cf_future_set_exception(a, 1, "ValueError", "x"));
    assert_string_equal(cf_last_error_message(), before);
    cf_future *fs[] = {d, all, any, orf, a};
    for (size_t i = 0; i < 5; i++)
        assert_ok(cf_future_release(fs[i]));
}

static int t_unregistered(cf_call *call)
{
    (void)call;
    return 0;
}

static void test_then_bad_input(void **state)
{
    (void)state;
    cf_future *f, *d = (cf_future *)&d;
    assert_ok(cf_future_new(&f));
    assert_cf(CF_EINVAL, cf_then(NULL, NULL, t_inc, CF_NOARGS, &d));
    assert_null(d);
    assert_cf(CF_EINVAL, cf_then(f, NULL, NULL, CF_NOARGS, &d));
    assert_cf(CF_EINVAL, cf_then_ok(f, NULL, t_inc, CF_NOARGS, NULL));
    assert_cf(CF_EINVAL, cf_then(f, NULL, t_inc, NULL, 1, &d));
    cf_value many[CF_ARGS_MAX];
    for (size_t i = 0; i < CF_ARGS_MAX; i++)
        many[i] = cf_i64((int64_t)i);
    assert_cf(CF_EINVAL, cf_then(f, NULL, t_inc, many, CF_ARGS_MAX - CF_THEN_NARGS + 1, &d));
    assert_cf(CF_EINVAL, cf_then_ok(f, NULL, t_inc, many, CF_ARGS_MAX, &d));
    cf_value bad = {(cf_kind)99, 0, {0}};
    assert_cf(CF_EINVAL, cf_then(f, NULL, t_inc, &bad, 1, &d));
    /* The most arguments allowed work. */
    assert_ok(cf_then(f, NULL, t_outcome, many, CF_ARGS_MAX - CF_THEN_NARGS, &d));
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *d2;
    assert_cf(CF_ENOTCOPYABLE, cf_then(f, ex, t_unregistered, CF_NOARGS, &d2));
    if (strncmp(cf_last_error_message(), "then: ", 6) != 0)
        fail_msg("the error names another function: %s", cf_last_error_message());
    assert_cf(CF_ENOTCOPYABLE, cf_then(f, ex, t_outcome, CF_ARGS(cf_ptr(f)), &d2));
    cf_value v = cf_i64(3);
    assert_ok(cf_future_set_result(f, &v));
    char want[64];
    snprintf(want, sizeof want, "CF_OK 3 0   +%d", CF_ARGS_MAX - CF_THEN_NARGS);
    expect_str(d, want);
    assert_ok(cf_future_release(d));
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

/* ---- combinators ---------------------------------------------------------- */

static cf_future *new_future(void)
{
    cf_future *f;
    assert_ok(cf_future_new(&f));
    return f;
}

static void test_when_all_outcomes(void **state)
{
    (void)state;
    cf_future *fs[4] = {new_future(), new_future(), new_future(), NULL};
    fs[3] = fs[0]; /* duplicates are allowed */
    cf_future *all;
    assert_ok(cf_when_all(fs, 4, &all));
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(fs[0], &v));
    assert_ok(cf_future_set_exception(fs[1], 2, "E", "m"));
    assert_false(cf_future_done(all));
    assert_true(cf_future_cancel(fs[2]));
    const cf_value *r;
    assert_ok(cf_future_result(all, 0, &r));
    assert_int_equal(r->size, 4 * sizeof(int32_t));
    assert_int_equal(cf_when_all_status(r, 0), CF_OK);
    assert_int_equal(cf_when_all_status(r, 1), CF_ETASK);
    assert_int_equal(cf_when_all_status(r, 2), CF_ECANCELLED);
    assert_int_equal(cf_when_all_status(r, 3), CF_OK);
    assert_int_equal(cf_when_all_status(r, 4), CF_EINVAL);
    assert_int_equal(cf_when_all_status(NULL, 0), CF_EINVAL);
    assert_int_equal(cf_when_all_count(r), 4);
    assert_int_equal(cf_when_all_count(NULL), 0);
    cf_value i64 = cf_i64(4);
    assert_int_equal(cf_when_all_count(&i64), 0);
    /* Nothing to wait for: done at once, empty. */
    cf_future *none;
    assert_ok(cf_when_all(NULL, 0, &none));
    assert_ok(cf_future_result(none, 0, &r));
    assert_int_equal(r->size, 0);
    assert_int_equal(cf_when_all_count(r), 0);
    assert_ok(cf_future_release(none));
    assert_ok(cf_future_release(all));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_release(fs[i]));
}

static void test_when_any_index(void **state)
{
    (void)state;
    cf_future *fs[3] = {new_future(), new_future(), new_future()};
    cf_future *any;
    assert_ok(cf_when_any(fs, 3, &any));
    assert_false(cf_future_done(any));
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(fs[2], &v));
    int64_t i;
    assert_ok(cf_future_result_i64(any, 0, &i));
    assert_int_equal(i, 2);
    assert_ok(cf_future_set_result(fs[1], &v));
    assert_ok(cf_future_result_i64(any, 0, &i));
    assert_int_equal(i, 2); /* the first stays */
    assert_ok(cf_future_release(any));
    /* Several already done: the lowest index. */
    assert_ok(cf_when_any(fs, 3, &any));
    assert_ok(cf_future_result_i64(any, 0, &i));
    assert_int_equal(i, 1);
    assert_ok(cf_future_release(any));
    assert_true(cf_future_cancel(fs[0]));
    for (int k = 0; k < 3; k++)
        assert_ok(cf_future_release(fs[k]));
}

static void test_when_all_or_fail(void **state)
{
    (void)state;
    cf_future *fs[3] = {new_future(), new_future(), new_future()};
    cf_future *w;
    assert_ok(cf_when_all_or_fail(fs, 3, &w));
    assert_true(cf_future_cancel(fs[0])); /* not a failure */
    assert_false(cf_future_done(w));
    assert_ok(cf_future_set_exception(fs[2], 9, "KeyError", "k"));
    /* Failed at once, fs[1] still pending. */
    assert_cf(CF_ETASK, cf_future_result(w, 0, NULL));
    const cf_failure *fl;
    assert_ok(cf_future_exception(w, 0, &fl));
    assert_int_equal(cf_failure_code(fl), 9);
    assert_string_equal(cf_failure_type(fl), "KeyError");
    assert_false(cf_future_done(fs[1]));
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(fs[1], &v));
    assert_ok(cf_future_release(w));
    /* None failing: when_all's result. */
    cf_future *gs[2] = {new_future(), fs[0]};
    assert_ok(cf_when_all_or_fail(gs, 2, &w));
    assert_ok(cf_future_set_result(gs[0], &v));
    const cf_value *r;
    assert_ok(cf_future_result(w, 0, &r));
    assert_int_equal(cf_when_all_status(r, 0), CF_OK);
    assert_int_equal(cf_when_all_status(r, 1), CF_ECANCELLED);
    assert_ok(cf_future_release(w));
    assert_ok(cf_future_release(gs[0]));
    for (int k = 0; k < 3; k++)
        assert_ok(cf_future_release(fs[k]));
}

typedef struct completer {
    pthread_barrier_t *bar;
    cf_future **fs;
    int n;
} completer;

static void *complete_list(void *p)
{
    completer *c = p;
    pthread_barrier_wait(c->bar);
    for (int i = c->n - 1; i >= 0; i--) {
        cf_value v = cf_i64(i);
        if (cf_future_set_result(c->fs[i], &v) != CF_OK)
            return (void *)1;
        cf_future_release(c->fs[i]); /* the completer's reference */
    }
    return NULL;
}

/* Inputs released by everyone but the completer before the combinator
 * completes, completions racing the set-up, and the combinators' own
 * results released in either order: 300 rounds, under ASan/TSan too. */
static void test_when_inputs_released_early(void **state)
{
    (void)state;
    enum { N = 6 };
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    for (int round = 0; round < 300; round++) {
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            fs[i] = new_future();
        completer c = {&bar, fs, N};
        pthread_t t;
        cf_future *all, *any, *orfail;
        /* The thread gets its own reference to each input. */
        for (int i = 0; i < N; i++)
            cf_future_retain(fs[i]);
        assert_int_equal(pthread_create(&t, NULL, complete_list, &c), 0);
        pthread_barrier_wait(&bar);
        assert_ok(cf_when_all(fs, N, &all));
        assert_ok(cf_when_any(fs, N, &any));
        assert_ok(cf_when_all_or_fail(fs, N, &orfail));
        for (int i = 0; i < N; i++)
            assert_ok(cf_future_release(fs[i]));
        if (round % 2)
            assert_ok(cf_future_release(any)); /* before it completes, maybe */
        const cf_value *r;
        assert_ok(cf_future_result(all, 10 * cf_test_scale(), &r));
        for (int i = 0; i < N; i++)
            assert_int_equal(cf_when_all_status(r, (size_t)i), CF_OK);
        assert_ok(cf_future_result(orfail, 10 * cf_test_scale(), &r));
        assert_int_equal(r->size, N * sizeof(int32_t));
        if (round % 2 == 0) {
            int64_t i;
            assert_ok(cf_future_result_i64(any, 10 * cf_test_scale(), &i));
            assert_true(i >= 0 && i < N);
            assert_ok(cf_future_release(any));
        }
        void *rc;
        pthread_join(t, &rc);
        assert_null(rc);
        assert_ok(cf_future_release(all));
        assert_ok(cf_future_release(orfail));
    }
    pthread_barrier_destroy(&bar);
}

/* Combinators fed one into the next, 100000 deep, each kind: the chain
 * completes in a loop on the completing thread (it used to recurse
 * through the inputs' done-callbacks and overflow the stack). */
static void test_when_chain_100000(void **state)
{
    (void)state;
    enum { STEPS = 100000 };
    for (int kind = 0; kind < 3; kind++) {
        cf_future *first, *f;
        assert_ok(cf_future_new(&first));
        f = cf_future_retain(first);
        for (int i = 0; i < STEPS; i++) {
            cf_future *next;
            if (kind == 0)
                assert_ok(cf_when_any(&f, 1, &next));
            else if (kind == 1)
                assert_ok(cf_when_all(&f, 1, &next));
            else
                assert_ok(cf_when_all_or_fail(&f, 1, &next));
            assert_ok(cf_future_release(f));
            f = next;
        }
        if (kind == 2) {
            assert_ok(cf_future_set_exception(first, 3, "IOError", "gone"));
            const cf_failure *fl;
            assert_ok(cf_future_exception(f, 0, &fl));
            assert_string_equal(cf_failure_type(fl), "IOError");
        } else {
            cf_value v = cf_i64(7);
            assert_ok(cf_future_set_result(first, &v));
            const cf_value *r;
            assert_ok(cf_future_result(f, 0, &r));
            if (kind == 0)
                assert_int_equal(r->as.i64, 0);
            else
                assert_int_equal(cf_when_all_status(r, 0), CF_OK);
        }
        assert_ok(cf_future_release(f));
        assert_ok(cf_future_release(first));
    }
}

typedef struct when_in_cb {
    cf_future *later; /* a combinator over the future the callback is on */
    cf_future *done;  /* an input already done */
    int wait_rc;      /* cf_future_result() of `later` in the callback */
    bool made_done;   /* a cf_when_all() made there was done at once */
} when_in_cb;

static int wait_in_callback(cf_future *f, void *arg)
{
    (void)f;
    when_in_cb *w = arg;
    const cf_value *r;
    w->wait_rc = cf_future_result(w->later, 5 * cf_test_scale(), &r);
    cf_future *all;
    if (cf_when_all(&w->done, 1, &all) == CF_OK) {
        w->made_done = cf_future_done(all);
        cf_future_release(all);
    }
    return 0;
}

/* Inside a callback run while combinators complete on this thread, a
 * combinator whose completion is queued behind the callback is completed
 * by a wait on it, and one set up there over done inputs is done when
 * cf_when_all() returns. */
static void test_when_completes_inside_callbacks(void **state)
{
    (void)state;
    cf_future *root = new_future(), *a, *done = new_future();
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(done, &v));
    assert_ok(cf_when_any(&root, 1, &a));
    when_in_cb w = {NULL, done, CF_EINVAL, false};
    assert_ok(cf_when_any(&a, 1, &w.later));
    assert_ok(cf_future_add_done_callback(a, wait_in_callback, &w));
    assert_ok(cf_future_set_result(root, &v));
    assert_ok(w.wait_rc);
    assert_true(w.made_done);
    assert_true(cf_future_done(w.later));
    assert_ok(cf_future_release(w.later));
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(root));
    assert_ok(cf_future_release(done));
}

/* Inputs from both pools and a hand-made future, in one when_all. */
static void test_when_all_mixed_engines(void **state)
{
    (void)state;
    cf_executor *tp = pool_new(2), *pp;
    pp = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *fs[3];
    assert_ok(cf_submit(tp, t_square, CF_ARGS(cf_i64(3)), &fs[0]));
    assert_ok(cf_submit(pp, t_square, CF_ARGS(cf_i64(4)), &fs[1]));
    fs[2] = new_future();
    cf_future *all;
    assert_ok(cf_when_all(fs, 3, &all));
    cf_value v = cf_i64(0);
    assert_ok(cf_future_set_result(fs[2], &v));
    const cf_value *r;
    assert_ok(cf_future_result(all, 20 * cf_test_scale(), &r));
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(cf_when_all_status(r, i), CF_OK);
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_release(fs[i]));
    assert_ok(cf_future_release(all));
    assert_ok(cf_executor_destroy(tp));
    assert_ok(cf_executor_destroy(pp));
}

static void test_when_bad_input(void **state)
{
    (void)state;
    cf_future *f = new_future(), *out = (cf_future *)&out;
    cf_future *fs[2] = {f, NULL};
    assert_cf(CF_EINVAL, cf_when_all(fs, 2, &out));
    assert_null(out);
    assert_true(contains(cf_last_error_message(), "fs[1] is NULL"));
    assert_cf(CF_EINVAL, cf_when_any(fs, 0, &out));
    assert_cf(CF_EINVAL, cf_when_any(NULL, 1, &out));
    assert_cf(CF_EINVAL, cf_when_all_or_fail(fs, 1, NULL));
    /* Nothing was hooked: f is released once and the watchdog-free run of
     * ASan's leak check says nothing was kept. */
    assert_ok(cf_future_release(f));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_data_set_get),
    cmocka_unit_test(test_data_bad_input),
    cmocka_unit_test(test_data_seen_by_worker_callback),
    cmocka_unit_test(test_then_sees_every_outcome),
    cmocka_unit_test(test_then_ok_propagates),
    cmocka_unit_test(test_then_inline_thread),
    cmocka_unit_test(test_then_chain_100000),
    cmocka_unit_test(test_then_chain_on_executor),
    cmocka_unit_test(test_then_race_attach_vs_complete),
    cmocka_unit_test(test_then_cancel_derived_alone),
    cmocka_unit_test(test_then_executor_gone),
    cmocka_unit_test(test_then_never_waits_for_room),
    cmocka_unit_test(test_then_with_options),
    cmocka_unit_test(test_then_process_pool),
    cmocka_unit_test(test_then_inline_running_interrupt),
    cmocka_unit_test(test_then_bad_input),
    cmocka_unit_test(test_compose_timeouts_and_misuse),
    cmocka_unit_test(test_compose_keeps_callers_last_error),
    cmocka_unit_test(test_then_executor_interrupt),
    cmocka_unit_test(test_then_executor_interrupt_races_submit),
    cmocka_unit_test(test_then_executor_interrupt_while_handing_over),
    cmocka_unit_test(test_when_all_outcomes),
    cmocka_unit_test(test_when_any_index),
    cmocka_unit_test(test_when_all_or_fail),
    cmocka_unit_test(test_when_inputs_released_early),
    cmocka_unit_test(test_when_all_mixed_engines),
    cmocka_unit_test(test_when_chain_100000),
    cmocka_unit_test(test_when_completes_inside_callbacks),
    cmocka_unit_test(test_when_bad_input),
    cmocka_unit_test(test_then_nested_inside_inline_task),
};

CF_TEST_MAIN(tests)
