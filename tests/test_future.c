/* SPDX-License-Identifier: MIT */
/*
 * test_future.c - standalone futures (cf_future_new): the state machine,
 * result/exception with timeouts, done-callbacks, cf_future_format,
 * reference counting, values of every kind and NULL arguments.
 */
#include "cf_test_util.h"
#include "internal.h"

#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>

static cf_future *new_future(void)
{
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    assert_non_null(f);
    return f;
}

/* ---- states ----------------------------------------------------------- */

static void test_new_future_is_pending(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_int_equal(cf_future_state(f), CF_PENDING);
    assert_false(cf_future_done(f));
    assert_false(cf_future_running(f));
    assert_false(cf_future_cancelled(f));
    assert_ok(cf_future_release(f));
}

static void test_new_null_out(void **state)
{
    (void)state;
    assert_cf(CF_EINVAL, cf_future_new(NULL));
}

static void test_set_result_finishes(void **state)
{
    (void)state;
    cf_future *f = new_future();
    cf_value v = cf_i64(42);
    assert_ok(cf_future_set_result(f, &v));
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    assert_true(cf_future_done(f));
    assert_false(cf_future_running(f));
    assert_false(cf_future_cancelled(f));
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, 0, &r));
    assert_non_null(r);
    assert_int_equal(r->kind, CF_I64);
    assert_int_equal(r->as.i64, 42);
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 0, &x));
    assert_int_equal(x, 42);
    const cf_failure *fail = (const cf_failure *)1;
    assert_ok(cf_future_exception(f, 0, &fail));
    assert_null(fail);
    /* out may be NULL */
    assert_ok(cf_future_result(f, 0, NULL));
    /* cancel of a finished future fails and changes nothing */
    assert_false(cf_future_cancel(f));
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    assert_ok(cf_future_release(f));
}

static void test_complete_exactly_once_result(void **state)
{
    (void)state;
    cf_future *f = new_future();
    cf_value a = cf_i64(1), b = cf_i64(2);
    assert_ok(cf_future_set_result(f, &a));
    assert_cf(CF_EINVALSTATE, cf_future_set_result(f, &b));
    assert_cf(CF_EINVALSTATE, cf_future_set_exception(f, 5, "ValueError", "x"));
    assert_cf(CF_EINVALSTATE, cf_future_set_running_or_notify_cancel(f));
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 0, &x));
    assert_int_equal(x, 1);
    const cf_failure *fail = (const cf_failure *)1;
    assert_ok(cf_future_exception(f, 0, &fail));
    assert_null(fail);
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    assert_ok(cf_future_release(f));
}

static void test_complete_exactly_once_exception(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_ok(cf_future_set_exception(f, 7, "ValueError", "bad value"));
    assert_cf(CF_EINVALSTATE, cf_future_set_exception(f, 8, "KeyError", "other"));
    cf_value v = cf_i64(3);
    assert_cf(CF_EINVALSTATE, cf_future_set_result(f, &v));
    const cf_failure *fail = expect_task_failure(f, 0);
    assert_int_equal(cf_failure_code(fail), 7);
    assert_string_equal(cf_failure_type(fail), "ValueError");
    assert_string_equal(cf_failure_message(fail), "bad value");
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    assert_true(cf_future_done(f));
    assert_false(cf_future_cancelled(f));
    assert_ok(cf_future_release(f));
}

static void test_set_exception_defaults(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_ok(cf_future_set_exception(f, -3, NULL, NULL));
    const cf_failure *fail = NULL;
    assert_ok(cf_future_exception(f, 0, &fail));
    assert_non_null(fail);
    assert_int_equal(cf_failure_code(fail), -3);
    assert_string_equal(cf_failure_type(fail), "Exception");
    assert_string_equal(cf_failure_message(fail), "");
    assert_ok(cf_future_release(f));
}

static void test_exception_strings_copied(void **state)
{
    (void)state;
    cf_future *f = new_future();
    char type[32], msg[64];
    strcpy(type, "OSError");
    strcpy(msg, "disk on fire");
    assert_ok(cf_future_set_exception(f, 5, type, msg));
    memset(type, 'X', sizeof type - 1);
    memset(msg, 'Y', sizeof msg - 1);
    const cf_failure *fail = NULL;
    assert_ok(cf_future_exception(f, 0, &fail));
    assert_string_equal(cf_failure_type(fail), "OSError");
    assert_string_equal(cf_failure_message(fail), "disk on fire");
    assert_ok(cf_future_release(f));
}

static void test_cancel_pending(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_true(cf_future_cancel(f));
    assert_int_equal(cf_future_state(f), CF_CANCELLED);
    assert_true(cf_future_cancelled(f));
    assert_true(cf_future_done(f));
    assert_false(cf_future_running(f));
    /* already cancelled: true again, nothing changes */
    assert_true(cf_future_cancel(f));
    assert_int_equal(cf_future_state(f), CF_CANCELLED);
    /* cannot complete a cancelled future */
    cf_value v = cf_i64(1);
    assert_cf(CF_EINVALSTATE, cf_future_set_result(f, &v));
    assert_cf(CF_EINVALSTATE, cf_future_set_exception(f, 1, NULL, NULL));
    assert_int_equal(cf_future_state(f), CF_CANCELLED);
    assert_cf(CF_ECANCELLED, cf_future_result(f, 0, NULL));
    assert_cf(CF_ECANCELLED, cf_future_result(f, CF_FOREVER, NULL));
    const cf_failure *fail = NULL;
    assert_cf(CF_ECANCELLED, cf_future_exception(f, 0, &fail));
    int64_t i = 0;
    assert_cf(CF_ECANCELLED, cf_future_result_i64(f, 0, &i));
    double d = 0;
    assert_cf(CF_ECANCELLED, cf_future_result_f64(f, 0, &d));
    assert_ok(cf_future_release(f));
}

/* A timed wait ends at its timeout even when the spin budget before
 * sleeping is longer (CF_SPIN_NS may be up to 1 s): the spin stops at the
 * wait's deadline.  The budget here is 5 s, so a spin that ignored the
 * deadline would take 5 s; the bound checked is half of that. */
static void test_timed_wait_not_held_by_spin(void **state)
{
    (void)state;
    int64_t before = cf__test_set_spin_ns(5000000000LL);
    cf_future *f = new_future();
    double t0 = cf_test_now();
    int rc = cf_future_result(f, 0.05, NULL);
    double took_result = cf_test_now() - t0;
    const cf_failure *fail = NULL;
    t0 = cf_test_now();
    int rc2 = cf_future_exception(f, 0.05, &fail);
    double took_exception = cf_test_now() - t0;
    cf__test_set_spin_ns(before);
    assert_cf(CF_ETIMEDOUT, rc);
    assert_cf(CF_ETIMEDOUT, rc2);
    if (took_result >= 2.5 || took_exception >= 2.5)
        fail_msg("a 0.05 s wait took %.3f s (result) and %.3f s (exception)", took_result,
                 took_exception);
    assert_true(took_result >= 0.05 && took_exception >= 0.05);
    assert_ok(cf_future_release(f));
}

static void test_cancel_running_fails(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 1);
    assert_int_equal(cf_future_state(f), CF_RUNNING);
    assert_true(cf_future_running(f));
    assert_false(cf_future_done(f));
    assert_false(cf_future_cancel(f));
    assert_int_equal(cf_future_state(f), CF_RUNNING);
    assert_false(cf_future_cancelled(f));
    /* a running future can still time out */
    assert_cf(CF_ETIMEDOUT, cf_future_result(f, 0, NULL));
    /* and be completed */
    cf_value v = cf_f64(2.5);
    assert_ok(cf_future_set_result(f, &v));
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    assert_false(cf_future_running(f));
    double d = 0;
    assert_ok(cf_future_result_f64(f, 0, &d));
    assert_true(d == 2.5);
    assert_false(cf_future_cancel(f));
    assert_ok(cf_future_release(f));
}

static void test_running_then_exception(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 1);
    assert_ok(cf_future_set_exception(f, 11, "KeyError", "k"));
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    assert_cf(CF_ETASK, cf_future_result(f, 0, NULL));
    assert_ok(cf_future_release(f));
}

static void test_set_running_twice(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 1);
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_EINVALSTATE);
    assert_int_equal(cf_future_state(f), CF_RUNNING);
    assert_ok(cf_future_set_result(f, NULL));
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_EINVALSTATE);
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    assert_ok(cf_future_release(f));
}

static void test_notify_cancel(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_true(cf_future_cancel(f));
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
    assert_int_equal(cf_future_state(f), CF_CANCELLED_AND_NOTIFIED);
    assert_true(cf_future_cancelled(f));
    assert_true(cf_future_done(f));
    assert_false(cf_future_running(f));
    /* already notified */
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_EINVALSTATE);
    assert_int_equal(cf_future_state(f), CF_CANCELLED_AND_NOTIFIED);
    /* still "cancelled": cancel() reports true and changes nothing */
    assert_true(cf_future_cancel(f));
    assert_int_equal(cf_future_state(f), CF_CANCELLED_AND_NOTIFIED);
    assert_cf(CF_EINVALSTATE, cf_future_set_result(f, NULL));
    assert_cf(CF_ECANCELLED, cf_future_result(f, 0, NULL));
    assert_ok(cf_future_release(f));
}

static void test_set_result_from_pending_without_running(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_ok(cf_future_set_result(f, NULL));
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, 0, &r));
    assert_non_null(r);
    assert_int_equal(r->kind, CF_NONE);
    assert_ok(cf_future_release(f));
}

/* ---- timeouts ----------------------------------------------------------- */

static void test_timeout_zero_on_pending(void **state)
{
    (void)state;
    cf_future *f = new_future();
    double t0 = cf_test_now();
    assert_cf(CF_ETIMEDOUT, cf_future_result(f, 0, NULL));
    const cf_failure *fail = NULL;
    assert_cf(CF_ETIMEDOUT, cf_future_exception(f, 0, &fail));
    int64_t i = 0;
    assert_cf(CF_ETIMEDOUT, cf_future_result_i64(f, 0, &i));
    double d = 0;
    assert_cf(CF_ETIMEDOUT, cf_future_result_f64(f, 0, &d));
    assert_true(cf_test_now() - t0 < 0.5 * cf_test_scale());
    assert_int_equal(cf_future_state(f), CF_PENDING);
    assert_ok(cf_future_release(f));
}

static void test_small_timeout_on_pending(void **state)
{
    (void)state;
    cf_future *f = new_future();
    double t0 = cf_test_now();
    assert_cf(CF_ETIMEDOUT, cf_future_result(f, 0.05, NULL));
    double el = cf_test_now() - t0;
    assert_true(el >= 0.045);
    assert_true(el < 2.0 * cf_test_scale());
    t0 = cf_test_now();
    const cf_failure *fail = NULL;
    assert_cf(CF_ETIMEDOUT, cf_future_exception(f, 0.03, &fail));
    el = cf_test_now() - t0;
    assert_true(el >= 0.025);
    assert_int_equal(cf_future_state(f), CF_PENDING);
    /* unchanged: it can still be completed */
    assert_ok(cf_future_set_result(f, NULL));
    assert_ok(cf_future_release(f));
}

static void test_bad_timeouts(void **state)
{
    (void)state;
    cf_future *f = new_future();
    const double bad[] = {-1.0, -0.001, -HUGE_VAL, NAN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_cf(CF_EINVAL, cf_future_result(f, bad[i], NULL));
        const cf_failure *fail = NULL;
        assert_cf(CF_EINVAL, cf_future_exception(f, bad[i], &fail));
        int64_t x;
        assert_cf(CF_EINVAL, cf_future_result_i64(f, bad[i], &x));
        double d;
        assert_cf(CF_EINVAL, cf_future_result_f64(f, bad[i], &d));
    }
    assert_int_equal(cf_future_state(f), CF_PENDING);
    /* the rule holds for a done future too */
    cf_value v = cf_i64(5);
    assert_ok(cf_future_set_result(f, &v));
    assert_cf(CF_EINVAL, cf_future_result(f, -1.0, NULL));
    assert_cf(CF_EINVAL, cf_future_result(f, NAN, NULL));
    assert_ok(cf_future_release(f));
}

typedef struct {
    cf_future *f;
    int what; /* 0 result, 1 exception, 2 cancel */
    int rc;
} completer;

static void complete_later(void *arg)
{
    completer *c = (completer *)arg;
    sleep_ms(20); /* give the waiter a chance to block; not needed for correctness */
    if (c->what == 0) {
        cf_value v = cf_i64(99);
        c->rc = cf_future_set_result(c->f, &v);
    } else if (c->what == 1) {
        c->rc = cf_future_set_exception(c->f, 3, "RuntimeError", "late");
    } else {
        c->rc = cf_future_cancel(c->f) ? CF_OK : CF_EINVALSTATE;
    }
}

static void test_forever_result_other_thread(void **state)
{
    (void)state;
    cf_future *f = new_future();
    completer c = {f, 0, -100};
    bg_thread t;
    bg_start(&t, complete_later, &c);
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, CF_FOREVER, &x));
    assert_int_equal(x, 99);
    bg_join(&t, 5);
    assert_ok(c.rc);
    assert_ok(cf_future_release(f));
}

static void test_timeout_result_other_thread(void **state)
{
    (void)state;
    cf_future *f = new_future();
    completer c = {f, 0, -100};
    bg_thread t;
    bg_start(&t, complete_later, &c);
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 10.0, &x));
    assert_int_equal(x, 99);
    bg_join(&t, 5);
    assert_ok(cf_future_release(f));
}

static void test_forever_exception_other_thread(void **state)
{
    (void)state;
    cf_future *f = new_future();
    completer c = {f, 1, -100};
    bg_thread t;
    bg_start(&t, complete_later, &c);
    assert_cf(CF_ETASK, cf_future_result(f, CF_FOREVER, NULL));
    const cf_failure *fail = NULL;
    assert_ok(cf_future_exception(f, CF_FOREVER, &fail));
    assert_string_equal(cf_failure_type(fail), "RuntimeError");
    assert_string_equal(cf_failure_message(fail), "late");
    assert_int_equal(cf_failure_code(fail), 3);
    bg_join(&t, 5);
    assert_ok(c.rc);
    assert_ok(cf_future_release(f));
}

static void test_forever_cancel_other_thread(void **state)
{
    (void)state;
    cf_future *f = new_future();
    completer c = {f, 2, -100};
    bg_thread t;
    bg_start(&t, complete_later, &c);
    assert_cf(CF_ECANCELLED, cf_future_result(f, CF_FOREVER, NULL));
    bg_join(&t, 5);
    assert_ok(c.rc);
    assert_ok(cf_future_release(f));
}

typedef struct {
    cf_future *f;
    atomic_int woke;
    int64_t got[8];
} multi_waiters;

typedef struct {
    multi_waiters *m;
    int idx;
} waiter_arg;

static void wait_forever(void *arg)
{
    waiter_arg *w = (waiter_arg *)arg;
    int64_t x = -1;
    if (cf_future_result_i64(w->m->f, CF_FOREVER, &x) == CF_OK)
        w->m->got[w->idx] = x;
    atomic_fetch_add(&w->m->woke, 1);
}

/* A completer that holds no reference of its own: the owner hands the
 * pointer over, waits until the future is done and releases it at once.
 * cancel() / set_result() / set_exception() must be done with the future
 * when it shows done (they hold their own reference until they return),
 * not unlock a future the owner has freed: AddressSanitizer builds fail
 * with a use after free otherwise, other builds see the states. */
typedef struct borrowed_handoff {
    cf_future *_Atomic slot;
    atomic_int mode; /* -1: stop */
} borrowed_handoff;

static void *borrowed_completer(void *p)
{
    borrowed_handoff *h = p;
    for (unsigned idle = 0;;) {
        /* The mode after the future: it was set before the future was
         * handed over (seq_cst both), so it is that future's mode. */
        cf_future *f = atomic_exchange(&h->slot, NULL);
        int mode = atomic_load(&h->mode);
        if (!f) {
            if (mode < 0)
                return NULL;
            /* Spin: hand-offs come quickly; but yield now and then, or
             * two threads sharing a CPU (a loaded machine) would hand
             * over once per time slice. */
            if (++idle % 64 == 0)
                sched_yield();
            continue;
        }
        idle = 0;
        if (mode == 0)
            cf_future_cancel(f);
        else if (mode == 1)
            cf_future_set_result(f, NULL);
        else
            cf_future_set_exception(f, 1, "ValueError", "m");
    }
}

static void test_complete_borrowed_then_released(void **state)
{
    (void)state;
    borrowed_handoff h;
    atomic_init(&h.slot, NULL);
    atomic_init(&h.mode, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, borrowed_completer, &h), 0);
    static const cf_state want[3] = {CF_CANCELLED, CF_FINISHED, CF_FINISHED};
    for (int mode = 0; mode < 3; mode++) {
        atomic_store(&h.mode, mode);
        /* 100,000 rounds, or as many as 2 s allow (at least 1,000) on a
         * machine too loaded for them. */
        double until = cf_test_now() + 2.0;
        for (int round = 0; round < 100000 && (round < 1000 || cf_test_now() < until); round++) {
            cf_future *f = new_future();
            atomic_store(&h.slot, f);
            /* Spin: the window is the completer's last few instructions;
             * yield now and then, as the completer does. */
            for (unsigned spins = 1; !cf_future_done(f); spins++)
                if (spins % 64 == 0)
                    sched_yield();
            assert_int_equal(cf_future_state(f), want[mode]);
            assert_ok(cf_future_release(f));
        }
    }
    atomic_store(&h.mode, -1);
    assert_int_equal(pthread_join(th, NULL), 0);
}

static void test_many_waiters_all_wake(void **state)
{
    (void)state;
    multi_waiters m;
    memset(&m, 0, sizeof m);
    m.f = new_future();
    atomic_init(&m.woke, 0);
    enum { N = 6 };
    bg_thread t[N];
    waiter_arg wa[N];
    for (int i = 0; i < N; i++) {
        wa[i].m = &m;
        wa[i].idx = i;
        bg_start(&t[i], wait_forever, &wa[i]);
    }
    sleep_ms(20);
    assert_int_equal(atomic_load(&m.woke), 0);
    cf_value v = cf_i64(1234);
    assert_ok(cf_future_set_result(m.f, &v));
    for (int i = 0; i < N; i++)
        bg_join(&t[i], 5);
    assert_int_equal(atomic_load(&m.woke), N);
    for (int i = 0; i < N; i++)
        assert_int_equal(m.got[i], 1234);
    assert_ok(cf_future_release(m.f));
}

/* ---- typed result accessors ----------------------------------------------- */

static void test_result_typed_wrong_kind(void **state)
{
    (void)state;
    cf_future *fi = new_future(), *ff = new_future(), *fs = new_future();
    cf_value vi = cf_i64(5), vf = cf_f64(1.5), vs = cf_str("five");
    assert_ok(cf_future_set_result(fi, &vi));
    assert_ok(cf_future_set_result(ff, &vf));
    assert_ok(cf_future_set_result(fs, &vs));
    double d = 0;
    int64_t i = 0;
    assert_cf(CF_EINVAL, cf_future_result_f64(fi, 0, &d));
    assert_cf(CF_EINVAL, cf_future_result_i64(ff, 0, &i));
    assert_cf(CF_EINVAL, cf_future_result_i64(fs, 0, &i));
    assert_cf(CF_EINVAL, cf_future_result_f64(fs, 0, &d));
    assert_ok(cf_future_result_i64(fi, 0, &i));
    assert_int_equal(i, 5);
    assert_ok(cf_future_result_f64(ff, 0, &d));
    assert_true(d == 1.5);
    /* a failed future reports the failure through the typed accessors too */
    cf_future *fe = new_future();
    assert_ok(cf_future_set_exception(fe, 1, "ValueError", "v"));
    assert_cf(CF_ETASK, cf_future_result_i64(fe, 0, &i));
    assert_cf(CF_ETASK, cf_future_result_f64(fe, 0, &d));
    assert_ok(cf_future_release(fi));
    assert_ok(cf_future_release(ff));
    assert_ok(cf_future_release(fs));
    assert_ok(cf_future_release(fe));
}

/* ---- values ----------------------------------------------------------- */

static void test_result_values_every_kind(void **state)
{
    (void)state;
    int target = 5;
    char sbuf[32];
    unsigned char bbuf[6] = {1, 0, 2, 0, 3, 255};
    strcpy(sbuf, "hello world");
    cf_value vals[] = {cf_none(), cf_i64(INT64_MIN), cf_i64(INT64_MAX), cf_f64(-0.125),
                       cf_bytes(bbuf, sizeof bbuf), cf_str(sbuf), cf_ptr(&target),
                       cf_str(""), cf_bytes(bbuf, 0)};
    size_t n = sizeof vals / sizeof vals[0];
    cf_future *fs[16];
    for (size_t i = 0; i < n; i++) {
        fs[i] = new_future();
        assert_ok(cf_future_set_result(fs[i], &vals[i]));
    }
    /* mutate the sources: the futures own copies */
    memset(sbuf, 'Z', sizeof sbuf - 1);
    sbuf[sizeof sbuf - 1] = '\0';
    memset(bbuf, 0xAA, sizeof bbuf);

    const cf_value *r;
    assert_ok(cf_future_result(fs[0], 0, &r));
    assert_int_equal(r->kind, CF_NONE);
    assert_ok(cf_future_result(fs[1], 0, &r));
    assert_int_equal(r->kind, CF_I64);
    assert_true(r->as.i64 == INT64_MIN);
    assert_ok(cf_future_result(fs[2], 0, &r));
    assert_true(r->as.i64 == INT64_MAX);
    assert_ok(cf_future_result(fs[3], 0, &r));
    assert_int_equal(r->kind, CF_F64);
    assert_true(r->as.f64 == -0.125);
    assert_ok(cf_future_result(fs[4], 0, &r));
    assert_int_equal(r->kind, CF_BYTES);
    assert_int_equal(r->size, 6);
    const unsigned char expect[6] = {1, 0, 2, 0, 3, 255};
    assert_memory_equal(r->as.bytes, expect, 6);
    assert_true(r->as.bytes != (const void *)bbuf);
    assert_ok(cf_future_result(fs[5], 0, &r));
    assert_int_equal(r->kind, CF_STR);
    assert_int_equal(r->size, 11);
    assert_string_equal(r->as.str, "hello world");
    assert_true(r->as.str != sbuf);
    assert_ok(cf_future_result(fs[6], 0, &r));
    assert_int_equal(r->kind, CF_PTR);
    assert_ptr_equal(r->as.ptr, &target);
    assert_ok(cf_future_result(fs[7], 0, &r));
    assert_int_equal(r->kind, CF_STR);
    assert_int_equal(r->size, 0);
    assert_non_null(r->as.str);
    assert_string_equal(r->as.str, "");
    assert_ok(cf_future_result(fs[8], 0, &r));
    assert_int_equal(r->kind, CF_BYTES);
    assert_int_equal(r->size, 0);
    for (size_t i = 0; i < n; i++)
        assert_ok(cf_future_release(fs[i]));
}

static void test_set_result_heap_source_freed(void **state)
{
    (void)state;
    cf_future *f = new_future();
    char *s = strdup("a heap string that is freed right away");
    assert_non_null(s);
    cf_value v = cf_str(s);
    assert_ok(cf_future_set_result(f, &v));
    free(s);
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, 0, &r));
    assert_string_equal(r->as.str, "a heap string that is freed right away");
    assert_ok(cf_future_release(f));
}

static void test_set_result_too_big(void **state)
{
    (void)state;
    cf_future *f = new_future();
    char small[4] = "abc";
    /* A fake size: it must be rejected before anything is copied. */
    cf_value v = cf_bytes(small, CF_PAYLOAD_MAX + 1);
    assert_cf(CF_ETOOBIG, cf_future_set_result(f, &v));
    assert_int_equal(cf_future_state(f), CF_PENDING);
    assert_false(cf_future_done(f));
    cf_value ok = cf_bytes(small, 3);
    assert_ok(cf_future_set_result(f, &ok));
    assert_ok(cf_future_release(f));
}

/* ---- done callbacks -------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    int order[32];
    int n;
    pthread_t threads[32];
    cf_future *seen[32];
    bool done_inside[32];
} cb_log;

typedef struct {
    cb_log *log;
    int id;
    int ret;
} cb_arg;

static void cb_log_init(cb_log *l)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
}

static int record_cb(cf_future *f, void *arg)
{
    cb_arg *a = (cb_arg *)arg;
    bool d = cf_future_done(f);
    pthread_mutex_lock(&a->log->mu);
    int k = a->log->n++;
    if (k < 32) {
        a->log->order[k] = a->id;
        a->log->threads[k] = pthread_self();
        a->log->seen[k] = f;
        a->log->done_inside[k] = d;
    }
    pthread_mutex_unlock(&a->log->mu);
    return a->ret;
}

static void test_callbacks_run_once_in_order(void **state)
{
    (void)state;
    cb_log log;
    cb_log_init(&log);
    cf_future *f = new_future();
    cb_arg args[5];
    for (int i = 0; i < 5; i++) {
        args[i] = (cb_arg){&log, i, 0};
        assert_ok(cf_future_add_done_callback(f, record_cb, &args[i]));
    }
    assert_int_equal(log.n, 0);
    assert_ok(cf_future_set_result(f, NULL));
    assert_int_equal(log.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(log.order[i], i);
        assert_ptr_equal(log.seen[i], f);
        assert_true(log.done_inside[i]);
        assert_true(pthread_equal(log.threads[i], pthread_self()));
    }
    /* completing again fails and runs nothing */
    assert_cf(CF_EINVALSTATE, cf_future_set_result(f, NULL));
    assert_false(cf_future_cancel(f));
    assert_int_equal(log.n, 5);
    assert_ok(cf_future_release(f));
    pthread_mutex_destroy(&log.mu);
}

static void test_callback_immediate_when_done(void **state)
{
    (void)state;
    cb_log log;
    cb_log_init(&log);
    cf_future *f = new_future();
    assert_ok(cf_future_set_exception(f, 1, NULL, NULL));
    cb_arg a = {&log, 7, 0};
    assert_ok(cf_future_add_done_callback(f, record_cb, &a));
    /* ran before add returned, in this thread */
    assert_int_equal(log.n, 1);
    assert_int_equal(log.order[0], 7);
    assert_true(pthread_equal(log.threads[0], pthread_self()));
    cb_arg b = {&log, 8, 0};
    assert_ok(cf_future_add_done_callback(f, record_cb, &b));
    assert_int_equal(log.n, 2);
    assert_int_equal(log.order[1], 8);
    assert_ok(cf_future_release(f));
    pthread_mutex_destroy(&log.mu);
}

static void test_callbacks_run_on_cancel(void **state)
{
    (void)state;
    cb_log log;
    cb_log_init(&log);
    cf_future *f = new_future();
    cb_arg a = {&log, 1, 0}, b = {&log, 2, 0};
    assert_ok(cf_future_add_done_callback(f, record_cb, &a));
    assert_ok(cf_future_add_done_callback(f, record_cb, &b));
    assert_true(cf_future_cancel(f));
    assert_int_equal(log.n, 2);
    assert_int_equal(log.order[0], 1);
    assert_int_equal(log.order[1], 2);
    assert_true(log.done_inside[0]);
    /* cancel again: already cancelled, callbacks not re-run */
    assert_true(cf_future_cancel(f));
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
    assert_int_equal(log.n, 2);
    /* added after cancel: runs at once */
    cb_arg c = {&log, 3, 0};
    assert_ok(cf_future_add_done_callback(f, record_cb, &c));
    assert_int_equal(log.n, 3);
    assert_ok(cf_future_release(f));
    pthread_mutex_destroy(&log.mu);
}

typedef struct {
    cf_future *f;
    pthread_t self;
} setter_arg;

static void set_result_in_thread(void *arg)
{
    setter_arg *s = (setter_arg *)arg;
    s->self = pthread_self();
    cf_value v = cf_i64(1);
    cf_future_set_result(s->f, &v);
}

static void test_callback_runs_in_completing_thread(void **state)
{
    (void)state;
    cb_log log;
    cb_log_init(&log);
    cf_future *f = new_future();
    cb_arg a = {&log, 1, 0};
    assert_ok(cf_future_add_done_callback(f, record_cb, &a));
    setter_arg s = {f, pthread_self()};
    bg_thread t;
    bg_start(&t, set_result_in_thread, &s);
    bg_join(&t, 5);
    assert_int_equal(log.n, 1);
    assert_true(pthread_equal(log.threads[0], s.self));
    assert_false(pthread_equal(log.threads[0], pthread_self()));
    assert_ok(cf_future_release(f));
    pthread_mutex_destroy(&log.mu);
}

static void test_failing_callback_logged_others_run(void **state)
{
    (void)state;
    cb_log log;
    cb_log_init(&log);
    cf_future *f = new_future();
    cb_arg a = {&log, 1, 0}, b = {&log, 2, 17}, c = {&log, 3, 0};
    assert_ok(cf_future_add_done_callback(f, record_cb, &a));
    assert_ok(cf_future_add_done_callback(f, record_cb, &b));
    assert_ok(cf_future_add_done_callback(f, record_cb, &c));
    cap_install();
    assert_ok(cf_future_set_result(f, NULL));
    cap_restore();
    assert_int_equal(log.n, 3);
    assert_int_equal(log.order[0], 1);
    assert_int_equal(log.order[1], 2);
    assert_int_equal(log.order[2], 3);
    assert_int_equal(cap_count(), 1);
    assert_int_equal(cap()->bad_arg, 0);
    char msg[1024];
    cap_first(msg, sizeof msg);
    assert_true(strlen(msg) > 0);
    assert_null(strchr(msg, '\n'));
    assert_ok(cf_future_release(f));
    pthread_mutex_destroy(&log.mu);
}

/* A callback added to a done future runs at once; it may release the last
 * reference and still fail: the report must neither read freed memory
 * (ASan) nor differ from the one a completion logs. */
static int release_and_fail_cb(cf_future *f, void *arg)
{
    (void)arg;
    cf_future_release(f);
    return 5;
}

static void test_immediate_callback_releasing_last_ref_logged(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        cf_future *f = new_future();
        cf_value v = cf_i64(round);
        assert_ok(cf_future_set_result(f, &v));
        cap_install();
        assert_ok(cf_future_add_done_callback(f, release_and_fail_cb, NULL));
        cap_restore();
        assert_int_equal(cap_count(), 1);
        char msg[1024];
        cap_first(msg, sizeof msg);
        assert_non_null(strstr(msg, "exception calling callback for <Future at "));
        assert_non_null(strstr(msg, "state=finished returned int"));
        assert_non_null(strstr(msg, ": callback returned 5"));
    }
}

typedef struct {
    int result_rc;
    int64_t value;
    bool done;
    cf_state st;
    int add_rc;
    int inner_ran;
    bool cancel_rv;
    int fmt_rc;
    int other_thread_rc;
    int other_thread_add_rc;
    int other_thread_inner_ran;
} reentrant_probe;

static int inner_cb(cf_future *f, void *arg)
{
    (void)f;
    (*(int *)arg)++;
    return 0;
}

typedef struct {
    cf_future *f;
    reentrant_probe *p;
} other_args;

static void *other_thread_queries(void *arg)
{
    other_args *o = (other_args *)arg;
    o->p->other_thread_rc = cf_future_result(o->f, CF_FOREVER, NULL);
    o->p->other_thread_add_rc =
        cf_future_add_done_callback(o->f, inner_cb, &o->p->other_thread_inner_ran);
    return NULL;
}

static int reentrant_cb(cf_future *f, void *arg)
{
    reentrant_probe *p = (reentrant_probe *)arg;
    p->result_rc = cf_future_result_i64(f, 0, &p->value);
    p->done = cf_future_done(f);
    p->st = cf_future_state(f);
    p->add_rc = cf_future_add_done_callback(f, inner_cb, &p->inner_ran);
    p->cancel_rv = cf_future_cancel(f);
    char buf[128];
    p->fmt_rc = cf_future_format(f, buf, sizeof buf);
    /* Another thread touching the same future must not block either (a
     * recursive lock held by this thread would make it hang). */
    other_args o = {f, p};
    pthread_t th;
    if (pthread_create(&th, NULL, other_thread_queries, &o) == 0)
        pthread_join(th, NULL);
    return 0;
}

static void test_callback_runs_without_lock(void **state)
{
    (void)state;
    reentrant_probe p;
    memset(&p, 0, sizeof p);
    p.result_rc = p.add_rc = p.other_thread_rc = p.other_thread_add_rc = -100;
    cf_future *f = new_future();
    assert_ok(cf_future_add_done_callback(f, reentrant_cb, &p));
    cf_value v = cf_i64(77);
    assert_ok(cf_future_set_result(f, &v));
    assert_ok(p.result_rc);
    assert_int_equal(p.value, 77);
    assert_true(p.done);
    assert_int_equal(p.st, CF_FINISHED);
    assert_ok(p.add_rc);
    assert_int_equal(p.inner_ran, 1);
    assert_false(p.cancel_rv);
    assert_true(p.fmt_rc > 0);
    assert_ok(p.other_thread_rc);
    assert_ok(p.other_thread_add_rc);
    assert_int_equal(p.other_thread_inner_ran, 1);
    assert_ok(cf_future_release(f));
}

static void test_callback_runs_without_lock_on_cancel(void **state)
{
    (void)state;
    reentrant_probe p;
    memset(&p, 0, sizeof p);
    cf_future *f = new_future();
    assert_ok(cf_future_add_done_callback(f, reentrant_cb, &p));
    assert_true(cf_future_cancel(f));
    assert_int_equal(p.result_rc, CF_ECANCELLED);
    assert_true(p.done);
    assert_ok(p.add_rc);
    assert_int_equal(p.inner_ran, 1);
    assert_true(p.cancel_rv);
    assert_int_equal(p.other_thread_rc, CF_ECANCELLED);
    assert_int_equal(p.other_thread_inner_ran, 1);
    assert_ok(cf_future_release(f));
}

static int add_many_cb(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

static void test_many_callbacks(void **state)
{
    (void)state;
    cf_future *f = new_future();
    atomic_int n;
    atomic_init(&n, 0);
    for (int i = 0; i < 500; i++)
        assert_ok(cf_future_add_done_callback(f, add_many_cb, &n));
    assert_ok(cf_future_set_exception(f, 1, NULL, "x"));
    assert_int_equal(atomic_load(&n), 500);
    assert_ok(cf_future_release(f));
}

static void test_add_done_callback_null(void **state)
{
    (void)state;
    cf_future *f = new_future();
    int x = 0;
    assert_cf(CF_EINVAL, cf_future_add_done_callback(NULL, inner_cb, &x));
    assert_cf(CF_EINVAL, cf_future_add_done_callback(f, NULL, &x));
    assert_ok(cf_future_set_result(f, NULL));
    assert_int_equal(x, 0);
    assert_ok(cf_future_release(f));
}

/* ---- format --------------------------------------------------------------- */

/* Checks buf is "<Future at 0x<hex of f> state=<rest>>". */
static void check_format(cf_future *f, const char *rest)
{
    char buf[256];
    int n = cf_future_format(f, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(buf));
    const char *prefix = "<Future at 0x";
    if (strncmp(buf, prefix, strlen(prefix)) != 0)
        fail_msg("format gave \"%s\"", buf);
    char *end = NULL;
    unsigned long long addr = strtoull(buf + strlen(prefix), &end, 16);
    if (addr != (unsigned long long)(uintptr_t)f)
        fail_msg("format gave \"%s\", address %p expected", buf, (void *)f);
    char expect[128];
    snprintf(expect, sizeof expect, " state=%s>", rest);
    if (strcmp(end, expect) != 0)
        fail_msg("format gave \"%s\", expected the tail \"%s\"", buf, expect);
}

static void test_format_states(void **state)
{
    (void)state;
    cf_future *f = new_future();
    check_format(f, "pending");
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 1);
    check_format(f, "running");
    cf_value v = cf_f64(1.0);
    assert_ok(cf_future_set_result(f, &v));
    check_format(f, "finished returned float");
    assert_ok(cf_future_release(f));

    f = new_future();
    assert_true(cf_future_cancel(f));
    check_format(f, "cancelled");
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
    check_format(f, "cancelled");
    assert_ok(cf_future_release(f));
}

static void test_format_result_kinds(void **state)
{
    (void)state;
    int x = 0;
    struct {
        cf_value v;
        const char *text;
    } cases[] = {
        {cf_i64(3), "finished returned int"},
        {cf_f64(3.5), "finished returned float"},
        {cf_str("s"), "finished returned str"},
        {cf_bytes("b", 1), "finished returned bytes"},
        {cf_none(), "finished returned NoneType"},
        {cf_ptr(&x), "finished returned pointer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cf_future *f = new_future();
        assert_ok(cf_future_set_result(f, &cases[i].v));
        check_format(f, cases[i].text);
        assert_ok(cf_future_release(f));
    }
    cf_future *f = new_future();
    assert_ok(cf_future_set_exception(f, 2, "ValueError", "nope"));
    check_format(f, "finished raised ValueError");
    assert_ok(cf_future_release(f));
    f = new_future();
    assert_ok(cf_future_set_exception(f, 2, NULL, NULL));
    check_format(f, "finished raised Exception");
    assert_ok(cf_future_release(f));
}

static void test_format_truncation(void **state)
{
    (void)state;
    cf_future *f = new_future();
    char full[256];
    int n = cf_future_format(f, full, sizeof full);
    assert_true(n > 20);
    assert_int_equal((size_t)n, strlen(full));

    char small[10];
    memset(small, 'x', sizeof small);
    assert_int_equal(cf_future_format(f, small, sizeof small), n);
    assert_int_equal(strlen(small), 9);
    assert_memory_equal(small, full, 9);

    char one[1] = {'x'};
    assert_int_equal(cf_future_format(f, one, 1), n);
    assert_int_equal(one[0], '\0');

    /* size 0: nothing written, NULL allowed */
    char untouched[4] = "abc";
    assert_int_equal(cf_future_format(f, untouched, 0), n);
    assert_string_equal(untouched, "abc");
    assert_int_equal(cf_future_format(f, NULL, 0), n);

    /* exact fit: n+1 */
    char *exact = malloc((size_t)n + 1);
    assert_non_null(exact);
    assert_int_equal(cf_future_format(f, exact, (size_t)n + 1), n);
    assert_string_equal(exact, full);
    /* one short */
    assert_int_equal(cf_future_format(f, exact, (size_t)n), n);
    assert_int_equal(strlen(exact), (size_t)n - 1);
    free(exact);

    assert_cf(CF_EINVAL, cf_future_format(f, NULL, 5));
    assert_cf(CF_EINVAL, cf_future_format(NULL, full, sizeof full));
    assert_ok(cf_future_release(f));
}

/* ---- refcounting ------------------------------------------------------------ */

static void test_retain_release(void **state)
{
    (void)state;
    cf_future *f = new_future();
    assert_ptr_equal(cf_future_retain(f), f);
    assert_ptr_equal(cf_future_retain(f), f);
    assert_null(cf_future_retain(NULL));
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(f));
    /* still alive on the last reference */
    cf_value v = cf_str("still here");
    assert_ok(cf_future_set_result(f, &v));
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, 0, &r));
    assert_string_equal(r->as.str, "still here");
    assert_ok(cf_future_release(f));
    assert_cf(CF_EINVAL, cf_future_release(NULL));
}

static void test_release_not_a_future(void **state)
{
    (void)state;
    /* A zeroed block of memory is detectably not a live future. */
    static _Alignas(64) unsigned char fake[4096];
    memset(fake, 0, sizeof fake);
    assert_cf(CF_EINVAL, cf_future_release((cf_future *)(void *)fake));
}

static void test_release_with_pending_callbacks(void **state)
{
    (void)state;
    /* Dropping the last reference of a pending future with callbacks
     * registered frees everything (ASan checks); callbacks never run. */
    cf_future *f = new_future();
    int x = 0;
    assert_ok(cf_future_add_done_callback(f, inner_cb, &x));
    assert_ok(cf_future_release(f));
    assert_int_equal(x, 0);
    f = new_future();
    cf_value v = cf_str("owned result");
    assert_ok(cf_future_set_result(f, &v));
    assert_ok(cf_future_release(f));
    f = new_future();
    assert_ok(cf_future_set_exception(f, 1, "T", "owned failure"));
    assert_ok(cf_future_release(f));
}

typedef struct {
    cf_future *f;
    cf_test_event go;
} rc_race;

static void retain_release_loop(void *arg)
{
    rc_race *r = (rc_race *)arg;
    cf_test_event_wait(&r->go, 5);
    for (int i = 0; i < 2000; i++) {
        cf_future_retain(r->f);
        (void)cf_future_done(r->f);
        cf_future_release(r->f);
    }
}

static void test_retain_release_concurrent(void **state)
{
    (void)state;
    rc_race r;
    r.f = new_future();
    cf_test_event_init(&r.go);
    bg_thread t[4];
    for (int i = 0; i < 4; i++)
        bg_start(&t[i], retain_release_loop, &r);
    cf_test_event_set(&r.go);
    for (int i = 0; i < 4; i++)
        bg_join(&t[i], 10);
    /* exactly our reference is left */
    assert_ok(cf_future_set_result(r.f, NULL));
    assert_ok(cf_future_release(r.f));
}

/* ---- races on completion ------------------------------------------------------- */

typedef struct {
    cf_future *f;
    cf_test_event go;
    atomic_int ok;
    atomic_int invalid;
    atomic_int other;
    atomic_int cb_runs;
} complete_race;

static void race_set(void *arg)
{
    complete_race *r = (complete_race *)arg;
    cf_test_event_wait(&r->go, 5);
    cf_value v = cf_i64(1);
    int rc = cf_future_set_result(r->f, &v);
    if (rc == CF_OK)
        atomic_fetch_add(&r->ok, 1);
    else if (rc == CF_EINVALSTATE)
        atomic_fetch_add(&r->invalid, 1);
    else
        atomic_fetch_add(&r->other, 1);
}

static void race_exc(void *arg)
{
    complete_race *r = (complete_race *)arg;
    cf_test_event_wait(&r->go, 5);
    int rc = cf_future_set_exception(r->f, 1, NULL, NULL);
    if (rc == CF_OK)
        atomic_fetch_add(&r->ok, 1);
    else if (rc == CF_EINVALSTATE)
        atomic_fetch_add(&r->invalid, 1);
    else
        atomic_fetch_add(&r->other, 1);
}

static void race_cancel(void *arg)
{
    complete_race *r = (complete_race *)arg;
    cf_test_event_wait(&r->go, 5);
    if (cf_future_cancel(r->f))
        atomic_fetch_add(&r->ok, 1);
    else
        atomic_fetch_add(&r->invalid, 1);
}

static int race_cb(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&((complete_race *)arg)->cb_runs, 1);
    return 0;
}

static void test_concurrent_completion_exactly_once(void **state)
{
    (void)state;
    for (int round = 0; round < 50; round++) {
        complete_race r;
        r.f = new_future();
        cf_test_event_init(&r.go);
        atomic_init(&r.ok, 0);
        atomic_init(&r.invalid, 0);
        atomic_init(&r.other, 0);
        atomic_init(&r.cb_runs, 0);
        assert_ok(cf_future_add_done_callback(r.f, race_cb, &r));
        bg_thread t[6];
        for (int i = 0; i < 6; i++)
            bg_start(&t[i], i % 3 == 0 ? race_set : i % 3 == 1 ? race_exc : race_cancel, &r);
        cf_test_event_set(&r.go);
        for (int i = 0; i < 6; i++)
            bg_join(&t[i], 10);
        assert_int_equal(atomic_load(&r.other), 0);
        /* exactly one completion won (two cancels both succeed if cancel won) */
        int ok = atomic_load(&r.ok);
        if (cf_future_cancelled(r.f))
            assert_int_equal(ok, 2);
        else
            assert_int_equal(ok, 1);
        assert_int_equal(ok + atomic_load(&r.invalid), 6);
        assert_int_equal(atomic_load(&r.cb_runs), 1);
        assert_true(cf_future_done(r.f));
        assert_ok(cf_future_release(r.f));
        pthread_mutex_destroy(&r.go.mu);
        pthread_cond_destroy(&r.go.cv);
    }
}

typedef struct {
    cf_future *f;
    cf_test_event go;
    int run_rc;
    bool cancel_rv;
} run_cancel_race;

static void rc_run(void *arg)
{
    run_cancel_race *r = (run_cancel_race *)arg;
    cf_test_event_wait(&r->go, 5);
    r->run_rc = cf_future_set_running_or_notify_cancel(r->f);
}

static void rc_cancel(void *arg)
{
    run_cancel_race *r = (run_cancel_race *)arg;
    cf_test_event_wait(&r->go, 5);
    r->cancel_rv = cf_future_cancel(r->f);
}

static void test_cancel_vs_set_running_race(void **state)
{
    (void)state;
    for (int round = 0; round < 100; round++) {
        run_cancel_race r;
        r.f = new_future();
        cf_test_event_init(&r.go);
        r.run_rc = -100;
        r.cancel_rv = false;
        bg_thread a, b;
        bg_start(&a, rc_run, &r);
        bg_start(&b, rc_cancel, &r);
        cf_test_event_set(&r.go);
        bg_join(&a, 10);
        bg_join(&b, 10);
        if (r.cancel_rv) {
            assert_int_equal(r.run_rc, 0);
            assert_int_equal(cf_future_state(r.f), CF_CANCELLED_AND_NOTIFIED);
        } else {
            assert_int_equal(r.run_rc, 1);
            assert_int_equal(cf_future_state(r.f), CF_RUNNING);
            assert_ok(cf_future_set_result(r.f, NULL));
        }
        assert_ok(cf_future_release(r.f));
        pthread_mutex_destroy(&r.go.mu);
        pthread_cond_destroy(&r.go.cv);
    }
}

/* ---- NULL everywhere ------------------------------------------------------------ */

static void test_null_arguments(void **state)
{
    (void)state;
    const cf_value *r = NULL;
    const cf_failure *fail = NULL;
    int64_t i = 0;
    double d = 0;
    char buf[16];
    assert_false(cf_future_cancelled(NULL));
    assert_false(cf_future_running(NULL));
    assert_false(cf_future_done(NULL));
    assert_false(cf_future_cancel(NULL));
    assert_cf(CF_EINVAL, cf_future_result(NULL, 0, &r));
    assert_cf(CF_EINVAL, cf_future_result(NULL, CF_FOREVER, &r));
    assert_cf(CF_EINVAL, cf_future_result_i64(NULL, 0, &i));
    assert_cf(CF_EINVAL, cf_future_result_f64(NULL, 0, &d));
    assert_cf(CF_EINVAL, cf_future_exception(NULL, 0, &fail));
    assert_cf(CF_EINVAL, cf_future_add_done_callback(NULL, inner_cb, NULL));
    assert_cf(CF_EINVAL, cf_future_format(NULL, buf, sizeof buf));
    assert_cf(CF_EINVAL, cf_future_set_running_or_notify_cancel(NULL));
    cf_value v = cf_i64(1);
    assert_cf(CF_EINVAL, cf_future_set_result(NULL, &v));
    assert_cf(CF_EINVAL, cf_future_set_exception(NULL, 1, "T", "m"));
    assert_cf(CF_EINVAL, cf_future_release(NULL));
    assert_null(cf_future_retain(NULL));
}

/* ---- the cache of freed future blocks ---------------------------------- */

/* A thread whose first use of the block cache is an allocation (it takes a
 * magazine from the depot) must give those blocks back when it exits: a
 * stream of short-lived threads keeps the heap bounded, and lowering the
 * limit to 0 gives the depot back too.  (No cache under ASan, where
 * LeakSanitizer checks the same.) */
static void *alloc_then_exit(void *arg)
{
    (void)arg;
    cf_future *f = NULL;
    if (cf_future_new(&f) == CF_OK)
        cf_future_release(f);
    return NULL;
}

static void free_many_here(void)
{
    enum { N = 4 * 2048 + 16 };
    static cf_future *fs[N];
    for (size_t i = 0; i < N; i++)
        assert_ok(cf_future_new(&fs[i]));
    for (size_t i = 0; i < N; i++)
        assert_ok(cf_future_release(fs[i]));
}

static void test_future_cache_short_lived_threads(void **state)
{
    (void)state;
    enum { ROUNDS = 200, WARMUP = 10 };
    size_t before = 0;
    for (int round = 0; round < ROUNDS; round++) {
        if (round == WARMUP)
            before = mallinfo2().uordblks;
        free_many_here(); /* fills the depot */
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, alloc_then_exit, NULL), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
    }
    size_t after = mallinfo2().uordblks;
    /* A lost magazine is 2048 x 264 bytes (528 KiB) a round: 100 MiB over
     * these rounds.  Bounded means: no more than a few magazines. */
    size_t grown = after > before ? after - before : 0;
    assert_true(grown < (size_t)8 << 20);
    /* With the depot emptied, what is left is this thread's two magazines. */
    size_t old = cf_set_future_cache_limit(0);
    size_t emptied = mallinfo2().uordblks;
    assert_true(emptied < before + ((size_t)2 << 20));
    cf_set_future_cache_limit(old);
}

static void test_future_cache_limit_knob(void **state)
{
    (void)state;
    /* Each case runs in a process of its own: the first call sees the
     * default. */
    assert_true(cf_set_future_cache_limit(0) == CF_FUTURE_CACHE_DEFAULT);
    cf_future *f = new_future();
    assert_ok(cf_future_release(f));
    assert_true(cf_set_future_cache_limit(4096) == 0);
    assert_true(cf_set_future_cache_limit(CF_FUTURE_CACHE_DEFAULT) == 4096);
}

/* Map chunks' memory (cf__chunk_mem_get/put) is kept for reuse within
 * the cache limit: a freed block serves the next chunk it fits (not one
 * that would waste more than half of it), the limit bounds what is kept
 * and lowering it gives the kept blocks back.  Builds with
 * AddressSanitizer keep nothing. */
static void test_chunk_memory_kept(void **state)
{
    (void)state;
    /* keeps: blocks are kept (not under ASan); counted: mallinfo2() sees
     * them (not under a sanitizer, whose allocator it does not know). */
#if defined(__SANITIZE_ADDRESS__)
    bool keeps = false, counted = false;
#elif defined(__SANITIZE_THREAD__)
    bool keeps = true, counted = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    bool keeps = false, counted = false;
#elif __has_feature(thread_sanitizer)
    bool keeps = true, counted = false;
#else
    bool keeps = true, counted = true;
#endif
#else
    bool keeps = true, counted = true;
#endif
    size_t cap = 0;
    void *a = cf__chunk_mem_get(100000, &cap);
    assert_non_null(a);
    assert_int_equal(cap, 100000);
    memset(a, 1, cap);
    cf__chunk_mem_put(a, cap);
    size_t before = mallinfo2().uordblks;
    void *small = cf__chunk_mem_get(40000, &cap); /* would waste over half */
    assert_true(small != a || !keeps);
    assert_int_equal(cap, 40000);
    void *b = cf__chunk_mem_get(90000, &cap);
    if (keeps) {
        assert_ptr_equal(b, a);
        assert_int_equal(cap, 100000);
        if (counted)
            assert_true(mallinfo2().uordblks >= before + 40000); /* only `small` is new */
    }
    memset(b, 2, cap);
    cf__chunk_mem_put(b, cap);
    cf__chunk_mem_put(small, 40000);
    /* Lowering the limit gives them back; a limit of 0 keeps none. */
    size_t kept = mallinfo2().uordblks;
    size_t old = cf_set_future_cache_limit(0);
    if (counted)
        assert_true(mallinfo2().uordblks + 140000 <= kept);
    void *c = cf__chunk_mem_get(100000, &cap);
    assert_non_null(c);
    cf__chunk_mem_put(c, cap);
    if (counted)
        assert_true(mallinfo2().uordblks + 100000 <= kept);
    cf_set_future_cache_limit(old);
}

/* Two threads each make more futures than a thread keeps (so magazines
 * move through the process-wide cache), hand them to the other, which
 * checks and releases them; a third thread changes the limit meanwhile.
 * A block handed out twice would show as a wrong result or a refused
 * set_result. */
#define XBLOCKS 4500
#define XROUNDS 200

typedef struct xchange {
    pthread_barrier_t *bar;
    cf_future **mine, **theirs;
    int64_t base; /* added to each result of this thread's futures */
    int64_t their_base;
    atomic_bool *stop;
    int failures;
} xchange;

static void *xchange_thread(void *arg)
{
    xchange *x = arg;
    for (int r = 0; r < XROUNDS; r++) {
        for (int i = 0; i < XBLOCKS; i++) {
            cf_future *f = NULL;
            cf_value v = cf_i64(x->base + r * XBLOCKS + i);
            if (cf_future_new(&f) != CF_OK || cf_future_set_result(f, &v) != CF_OK)
                x->failures++;
            x->mine[i] = f;
        }
        pthread_barrier_wait(x->bar);
        for (int i = 0; i < XBLOCKS; i++) {
            int64_t got = -1;
            if (!x->theirs[i] || cf_future_result_i64(x->theirs[i], 0, &got) != CF_OK ||
                got != x->their_base + r * XBLOCKS + i)
                x->failures++;
            if (x->theirs[i])
                cf_future_release(x->theirs[i]);
        }
        pthread_barrier_wait(x->bar);
    }
    return NULL;
}

static void *limit_changer(void *arg)
{
    atomic_bool *stop = arg;
    /* Stopped by the test once both exchangers are done. */
    for (size_t k = 0; !atomic_load(stop); k++)
        cf_set_future_cache_limit(k % 3 == 0 ? 0 : k % 3 == 1 ? (size_t)1 << 20
                                                               : CF_FUTURE_CACHE_DEFAULT);
    return NULL;
}

static void test_future_blocks_change_threads(void **state)
{
    (void)state;
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    cf_future **a = calloc(XBLOCKS, sizeof *a), **b = calloc(XBLOCKS, sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    atomic_bool stop;
    atomic_init(&stop, false);
    xchange xa = {&bar, a, b, 0, 1000000000, &stop, 0};
    xchange xb = {&bar, b, a, 1000000000, 0, &stop, 0};
    pthread_t ta, tb, tc;
    assert_int_equal(pthread_create(&tc, NULL, limit_changer, &stop), 0);
    assert_int_equal(pthread_create(&ta, NULL, xchange_thread, &xa), 0);
    assert_int_equal(pthread_create(&tb, NULL, xchange_thread, &xb), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    atomic_store(&stop, true);
    pthread_join(tc, NULL);
    assert_int_equal(xa.failures, 0);
    assert_int_equal(xb.failures, 0);
    cf_set_future_cache_limit(CF_FUTURE_CACHE_DEFAULT);
    free(a);
    free(b);
    pthread_barrier_destroy(&bar);
}

/* cf__futex_wait/wake - a futex, or in the portable build a condition
 * variable in a bucket several words may share - lose no wake-up: two
 * pairs of threads hand a word back and forth, each sleeping with no
 * deadline until the other's change, for 2000 rounds (a lost wake-up
 * hangs, and the watchdog fails the test). */
#define HANDOFF_ROUNDS 2000u

static _Atomic uint32_t handoff_words[2];

/* Sleeps until *w == want. */
static void handoff_wait(_Atomic uint32_t *w, uint32_t want)
{
    uint32_t v;
    while ((v = atomic_load(w)) != want)
        cf__futex_wait(w, v, CF__NS_FOREVER);
}

static void handoff_set(_Atomic uint32_t *w, uint32_t v)
{
    atomic_store(w, v);
    cf__futex_wake(w, 1);
}

static void *handoff_answer(void *arg)
{
    _Atomic uint32_t *w = arg;
    for (uint32_t i = 0; i < HANDOFF_ROUNDS; i++) {
        handoff_wait(w, 2 * i + 1);
        handoff_set(w, 2 * i + 2);
    }
    return NULL;
}

static void *handoff_ask(void *arg)
{
    _Atomic uint32_t *w = arg;
    for (uint32_t i = 0; i < HANDOFF_ROUNDS; i++) {
        handoff_set(w, 2 * i + 1);
        handoff_wait(w, 2 * i + 2);
    }
    return NULL;
}

static void test_futex_handoff_loses_no_wakeup(void **state)
{
    (void)state;
    pthread_t th[4];
    for (int k = 0; k < 2; k++) {
        atomic_store(&handoff_words[k], 0);
        assert_int_equal(pthread_create(&th[2 * k], NULL, handoff_answer, &handoff_words[k]), 0);
        assert_int_equal(pthread_create(&th[2 * k + 1], NULL, handoff_ask, &handoff_words[k]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int k = 0; k < 2; k++)
        assert_int_equal(atomic_load(&handoff_words[k]), 2 * HANDOFF_ROUNDS);
}

/* A wait with a deadline ends by itself once the deadline has passed. */
static void test_futex_wait_deadline_ends(void **state)
{
    (void)state;
    _Atomic uint32_t w = 7;
    int64_t deadline = cf__now_ns() + 20 * 1000 * 1000;
    int waits = 0;
    while (cf__now_ns() < deadline) {
        cf__futex_wait(&w, 7, deadline); /* nobody wakes it */
        waits++;
    }
    cf__futex_wait(&w, 7, deadline); /* past: returns at once */
    assert_true(waits >= 1);
    assert_int_equal(atomic_load(&w), 7);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_futex_handoff_loses_no_wakeup),
    cmocka_unit_test(test_futex_wait_deadline_ends),
    cmocka_unit_test(test_future_cache_limit_knob),
    cmocka_unit_test(test_chunk_memory_kept),
    cmocka_unit_test(test_future_cache_short_lived_threads),
    cmocka_unit_test(test_future_blocks_change_threads),
    cmocka_unit_test(test_new_future_is_pending),
    cmocka_unit_test(test_new_null_out),
    cmocka_unit_test(test_set_result_finishes),
    cmocka_unit_test(test_complete_exactly_once_result),
    cmocka_unit_test(test_complete_exactly_once_exception),
    cmocka_unit_test(test_set_exception_defaults),
    cmocka_unit_test(test_exception_strings_copied),
    cmocka_unit_test(test_cancel_pending),
    cmocka_unit_test(test_cancel_running_fails),
    cmocka_unit_test(test_timed_wait_not_held_by_spin),
    cmocka_unit_test(test_running_then_exception),
    cmocka_unit_test(test_set_running_twice),
    cmocka_unit_test(test_notify_cancel),
    cmocka_unit_test(test_set_result_from_pending_without_running),
    cmocka_unit_test(test_timeout_zero_on_pending),
    cmocka_unit_test(test_small_timeout_on_pending),
    cmocka_unit_test(test_bad_timeouts),
    cmocka_unit_test(test_forever_result_other_thread),
    cmocka_unit_test(test_timeout_result_other_thread),
    cmocka_unit_test(test_forever_exception_other_thread),
    cmocka_unit_test(test_forever_cancel_other_thread),
    cmocka_unit_test(test_complete_borrowed_then_released),
    cmocka_unit_test(test_many_waiters_all_wake),
    cmocka_unit_test(test_result_typed_wrong_kind),
    cmocka_unit_test(test_result_values_every_kind),
    cmocka_unit_test(test_set_result_heap_source_freed),
    cmocka_unit_test(test_set_result_too_big),
    cmocka_unit_test(test_callbacks_run_once_in_order),
    cmocka_unit_test(test_callback_immediate_when_done),
    cmocka_unit_test(test_callbacks_run_on_cancel),
    cmocka_unit_test(test_callback_runs_in_completing_thread),
    cmocka_unit_test(test_failing_callback_logged_others_run),
    cmocka_unit_test(test_immediate_callback_releasing_last_ref_logged),
    cmocka_unit_test(test_callback_runs_without_lock),
    cmocka_unit_test(test_callback_runs_without_lock_on_cancel),
    cmocka_unit_test(test_many_callbacks),
    cmocka_unit_test(test_add_done_callback_null),
    cmocka_unit_test(test_format_states),
    cmocka_unit_test(test_format_result_kinds),
    cmocka_unit_test(test_format_truncation),
    cmocka_unit_test(test_retain_release),
    cmocka_unit_test(test_release_not_a_future),
    cmocka_unit_test(test_release_with_pending_callbacks),
    cmocka_unit_test(test_retain_release_concurrent),
    cmocka_unit_test(test_concurrent_completion_exactly_once),
    cmocka_unit_test(test_cancel_vs_set_running_race),
    cmocka_unit_test(test_null_arguments),
};

CF_TEST_MAIN(tests)
