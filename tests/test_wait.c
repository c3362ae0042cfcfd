/* SPDX-License-Identifier: MIT */
/*
 * test_wait.c - cf_wait (FIRST_COMPLETED / FIRST_EXCEPTION / ALL_COMPLETED)
 * and cf_as_completed over standalone and pool futures.
 *
 * ac_iter is a short name for cf_as_completed_iter.
 */
#include "cf_test_util.h"

#include <float.h>

typedef cf_as_completed_iter ac_iter;

static cf_future *pending(void)
{
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    return f;
}

static cf_future *finished_i64(int64_t x)
{
    cf_future *f = pending();
    cf_value v = cf_i64(x);
    assert_ok(cf_future_set_result(f, &v));
    return f;
}

static cf_future *failed(const char *type)
{
    cf_future *f = pending();
    assert_ok(cf_future_set_exception(f, 1, type, "failed"));
    return f;
}

static bool in_list(cf_future *f, cf_future **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == f)
            return true;
    return false;
}

static void release_all(cf_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_ok(cf_future_release(fs[i]));
}

/* ---- cf_wait -------------------------------------------------------------- */

static void test_wait_all_already_done(void **state)
{
    (void)state;
    cf_future *fs[3] = {finished_i64(1), failed("ValueError"), pending()};
    assert_true(cf_future_cancel(fs[2]));
    cf_future *done[3], *not_done[3];
    size_t nd = 99, nn = 99;
    assert_ok(cf_wait(fs, 3, 0, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    assert_int_equal(nd, 3);
    assert_int_equal(nn, 0);
    for (int i = 0; i < 3; i++)
        assert_true(in_list(fs[i], done, nd));
    release_all(fs, 3);
}

static void test_wait_timeout_zero_polls(void **state)
{
    (void)state;
    cf_future *fs[3] = {finished_i64(1), pending(), pending()};
    cf_future *done[3], *not_done[3];
    size_t nd = 0, nn = 0;
    double t0 = cf_test_now();
    assert_cf(CF_ETIMEDOUT, cf_wait(fs, 3, 0, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    assert_true(cf_test_now() - t0 < 0.5 * cf_test_scale());
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 2);
    assert_ptr_equal(done[0], fs[0]);
    assert_true(in_list(fs[1], not_done, nn));
    assert_true(in_list(fs[2], not_done, nn));
    /* FIRST_COMPLETED holds already */
    assert_ok(cf_wait(fs, 3, 0, CF_FIRST_COMPLETED, done, &nd, not_done, &nn));
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 2);
    /* FIRST_EXCEPTION: no failure and not all done */
    assert_cf(CF_ETIMEDOUT, cf_wait(fs, 3, 0, CF_FIRST_EXCEPTION, done, &nd, not_done, &nn));
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 2);
    release_all(fs, 3);
}

static void test_wait_timeout_fills_outputs(void **state)
{
    (void)state;
    cf_future *fs[4] = {pending(), finished_i64(2), pending(), failed("E")};
    cf_future *done[4], *not_done[4];
    size_t nd = 0, nn = 0;
    double t0 = cf_test_now();
    assert_cf(CF_ETIMEDOUT, cf_wait(fs, 4, 0.05, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    double el = cf_test_now() - t0;
    assert_true(el >= 0.045);
    assert_true(el < 2.0 * cf_test_scale());
    assert_int_equal(nd, 2);
    assert_int_equal(nn, 2);
    assert_true(in_list(fs[1], done, nd));
    assert_true(in_list(fs[3], done, nd));
    assert_true(in_list(fs[0], not_done, nn));
    assert_true(in_list(fs[2], not_done, nn));
    assert_true(strlen(cf_last_error_message()) > 0);
    release_all(fs, 4);
}

static void test_wait_null_outputs_allowed(void **state)
{
    (void)state;
    cf_future *fs[2] = {finished_i64(1), pending()};
    assert_ok(cf_wait(fs, 2, 0, CF_FIRST_COMPLETED, NULL, NULL, NULL, NULL));
    size_t nd = 0, nn = 0;
    assert_ok(cf_wait(fs, 2, 0, CF_FIRST_COMPLETED, NULL, &nd, NULL, &nn));
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 1);
    cf_future *done[2];
    assert_cf(CF_ETIMEDOUT, cf_wait(fs, 2, 0, CF_ALL_COMPLETED, done, NULL, NULL, NULL));
    assert_ptr_equal(done[0], fs[0]);
    release_all(fs, 2);
}

static void test_wait_duplicates_collapsed(void **state)
{
    (void)state;
    cf_future *a = finished_i64(1), *b = pending();
    cf_future *fs[6] = {a, b, a, b, b, a};
    cf_future *done[6], *not_done[6];
    size_t nd = 0, nn = 0;
    assert_cf(CF_ETIMEDOUT, cf_wait(fs, 6, 0, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 1);
    assert_ptr_equal(done[0], a);
    assert_ptr_equal(not_done[0], b);
    assert_ok(cf_future_set_result(b, NULL));
    assert_ok(cf_wait(fs, 6, CF_FOREVER, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    assert_int_equal(nd, 2);
    assert_int_equal(nn, 0);
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
}

typedef struct {
    cf_future *f;
    int what; /* 0 set_result, 1 set_exception, 2 cancel */
    int delay_ms;
} later;

static void do_later(void *arg)
{
    later *l = (later *)arg;
    sleep_ms(l->delay_ms); /* lets the waiter block; correctness does not depend on it */
    if (l->what == 0) {
        cf_value v = cf_i64(5);
        cf_future_set_result(l->f, &v);
    } else if (l->what == 1) {
        cf_future_set_exception(l->f, 9, "KeyError", "k");
    } else {
        cf_future_cancel(l->f);
    }
}

static void test_wait_first_completed_blocks_until_one(void **state)
{
    (void)state;
    cf_future *fs[3] = {pending(), pending(), pending()};
    later l = {fs[1], 0, 30};
    bg_thread t;
    bg_start(&t, do_later, &l);
    cf_future *done[3], *not_done[3];
    size_t nd = 0, nn = 0;
    assert_ok(cf_wait(fs, 3, CF_FOREVER, CF_FIRST_COMPLETED, done, &nd, not_done, &nn));
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 2);
    assert_ptr_equal(done[0], fs[1]);
    bg_join(&t, 5);
    release_all(fs, 3);
}

static void test_wait_cancel_wakes_waiter(void **state)
{
    (void)state;
    cf_future *fs[2] = {pending(), pending()};
    later l = {fs[0], 2, 30};
    bg_thread t;
    bg_start(&t, do_later, &l);
    cf_future *done[2], *not_done[2];
    size_t nd = 0, nn = 0;
    assert_ok(cf_wait(fs, 2, CF_FOREVER, CF_FIRST_COMPLETED, done, &nd, not_done, &nn));
    assert_int_equal(nd, 1);
    assert_ptr_equal(done[0], fs[0]);
    assert_true(cf_future_cancelled(fs[0]));
    assert_ptr_equal(not_done[0], fs[1]);
    bg_join(&t, 5);
    release_all(fs, 2);
}

typedef struct {
    cf_future **fs;
    size_t n;
    cf_return_when when;
    double timeout;
    int rc;
    size_t nd, nn;
    cf_future *done[8];
} wait_job;

static void wait_in_thread(void *arg)
{
    wait_job *w = (wait_job *)arg;
    w->rc = cf_wait(w->fs, w->n, w->timeout, w->when, w->done, &w->nd, NULL, &w->nn);
}

static void test_wait_cancel_queued_pool_future_wakes_waiter(void **state)
{
    (void)state;
    /* The pool's only worker is stuck, so the executor never looks at the
     * queued future again; cancelling it must still wake the waiter. */
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *busy = NULL, *queued = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
    assert_true(blocker_wait_started(&b, 1, 5));
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &queued));
    cf_future *fs[1] = {queued};
    wait_job w = {fs, 1, CF_FIRST_COMPLETED, CF_FOREVER, -100, 0, 0, {0}};
    bg_thread t;
    bg_start(&t, wait_in_thread, &w);
    sleep_ms(30);
    assert_false(cf_test_event_is_set(&t.done));
    assert_true(cf_future_cancel(queued));
    bg_join(&t, 5); /* returned while the worker is still blocked */
    assert_false(cf_future_done(busy));
    assert_ok(w.rc);
    assert_int_equal(w.nd, 1);
    assert_int_equal(w.nn, 0);
    blocker_release(&b);
    assert_ok(cf_future_result(busy, 10, NULL));
    assert_ok(cf_future_release(busy));
    assert_ok(cf_future_release(queued));
    assert_ok(cf_executor_destroy(ex));
    assert_int_equal(blocker_get(&b, &b.started), 1);
    blocker_destroy(&b);
}

static void test_wait_first_exception_returns_on_failure(void **state)
{
    (void)state;
    cf_future *fs[3] = {pending(), pending(), finished_i64(1)};
    later l = {fs[1], 1, 30};
    bg_thread t;
    bg_start(&t, do_later, &l);
    cf_future *done[3], *not_done[3];
    size_t nd = 0, nn = 0;
    assert_ok(cf_wait(fs, 3, CF_FOREVER, CF_FIRST_EXCEPTION, done, &nd, not_done, &nn));
    assert_int_equal(nd, 2);
    assert_int_equal(nn, 1);
    assert_true(in_list(fs[1], done, nd));
    assert_true(in_list(fs[2], done, nd));
    assert_ptr_equal(not_done[0], fs[0]);
    bg_join(&t, 5);
    release_all(fs, 3);
}

static void test_wait_first_exception_already_failed(void **state)
{
    (void)state;
    cf_future *fs[3] = {pending(), failed("ValueError"), pending()};
    size_t nd = 0, nn = 0;
    assert_ok(cf_wait(fs, 3, 0, CF_FIRST_EXCEPTION, NULL, &nd, NULL, &nn));
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 2);
    release_all(fs, 3);
}

static void test_wait_first_exception_like_all_when_none_fail(void **state)
{
    (void)state;
    cf_future *fs[3] = {pending(), pending(), finished_i64(0)};
    later l0 = {fs[0], 0, 10}, l1 = {fs[1], 0, 40};
    bg_thread t0, t1;
    bg_start(&t0, do_later, &l0);
    bg_start(&t1, do_later, &l1);
    size_t nd = 0, nn = 0;
    assert_ok(cf_wait(fs, 3, CF_FOREVER, CF_FIRST_EXCEPTION, NULL, &nd, NULL, &nn));
    /* did not return after the first success: all done */
    assert_int_equal(nd, 3);
    assert_int_equal(nn, 0);
    assert_true(cf_future_done(fs[0]) && cf_future_done(fs[1]));
    bg_join(&t0, 5);
    bg_join(&t1, 5);
    release_all(fs, 3);
}

static void test_wait_first_exception_cancel_is_not_failure(void **state)
{
    (void)state;
    /* As in CPython, a cancelled future is done but did not raise. */
    cf_future *fs[2] = {pending(), pending()};
    assert_true(cf_future_cancel(fs[0]));
    size_t nd = 0, nn = 0;
    assert_cf(CF_ETIMEDOUT, cf_wait(fs, 2, 0.03, CF_FIRST_EXCEPTION, NULL, &nd, NULL, &nn));
    assert_int_equal(nd, 1);
    assert_int_equal(nn, 1);
    release_all(fs, 2);
}

static void test_wait_all_completed_blocks(void **state)
{
    (void)state;
    cf_future *fs[3] = {pending(), pending(), pending()};
    later l[3] = {{fs[0], 0, 5}, {fs[1], 1, 15}, {fs[2], 2, 25}};
    bg_thread t[3];
    for (int i = 0; i < 3; i++)
        bg_start(&t[i], do_later, &l[i]);
    cf_future *done[3];
    size_t nd = 0, nn = 9;
    assert_ok(cf_wait(fs, 3, 10.0, CF_ALL_COMPLETED, done, &nd, NULL, &nn));
    assert_int_equal(nd, 3);
    assert_int_equal(nn, 0);
    for (int i = 0; i < 3; i++) {
        assert_true(cf_future_done(fs[i]));
        bg_join(&t[i], 5);
    }
    release_all(fs, 3);
}

static int t_sleep_then(cf_call *call)
{
    sleep_ms((int)cf_arg_i64(call, 0));
    if (cf_arg_i64(call, 1))
        return cf_raise(call, 3, "RuntimeError", "boom");
    return cf_return_i64(call, cf_arg_i64(call, 0));
}

static void test_wait_mixed_pool_and_standalone(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    blocker b;
    blocker_init(&b);
    cf_future *fs[5];
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &fs[0]));
    assert_ok(cf_submit(ex, t_sleep_then, CF_ARGS(cf_i64(1), cf_i64(0)), &fs[1]));
    fs[2] = pending();
    fs[3] = finished_i64(3);
    assert_ok(cf_submit(ex, t_sleep_then, CF_ARGS(cf_i64(2), cf_i64(1)), &fs[4]));

    size_t nd = 0, nn = 0;
    cf_future *done[5], *not_done[5];
    /* the pool failure ends a FIRST_EXCEPTION wait */
    assert_ok(cf_wait(fs, 5, 10.0, CF_FIRST_EXCEPTION, done, &nd, not_done, &nn));
    assert_true(in_list(fs[4], done, nd));
    assert_true(in_list(fs[3], done, nd));
    assert_true(in_list(fs[0], not_done, nn));
    assert_true(in_list(fs[2], not_done, nn));
    assert_int_equal(nd + nn, 5);

    /* ALL times out while fs[0] and fs[2] pend (fs[1], 1 ms, is let
     * finish first: a loaded machine may not have run it yet) */
    assert_ok(cf_future_result(fs[1], 10.0 * cf_test_scale(), NULL));
    assert_cf(CF_ETIMEDOUT, cf_wait(fs, 5, 0.02, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    assert_int_equal(nn, 2);
    assert_ok(cf_future_set_result(fs[2], NULL));
    blocker_release(&b);
    assert_ok(cf_wait(fs, 5, 10.0, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    assert_int_equal(nd, 5);
    assert_int_equal(nn, 0);
    release_all(fs, 5);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_wait_bad_arguments(void **state)
{
    (void)state;
    cf_future *f = pending();
    cf_future *fs[2] = {f, NULL};
    size_t nd = 0, nn = 0;
    assert_cf(CF_EINVAL, cf_wait(fs, 1, 0, (cf_return_when)0, NULL, &nd, NULL, &nn));
    assert_cf(CF_EINVAL, cf_wait(fs, 1, 0, (cf_return_when)4, NULL, &nd, NULL, &nn));
    assert_cf(CF_EINVAL, cf_wait(fs, 1, 0, (cf_return_when)-1, NULL, &nd, NULL, &nn));
    assert_cf(CF_EINVAL, cf_wait(fs, 2, 0, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn));
    assert_cf(CF_EINVAL, cf_wait(fs, 2, CF_FOREVER, CF_FIRST_COMPLETED, NULL, &nd, NULL, &nn));
    assert_cf(CF_EINVAL, cf_wait(NULL, 1, 0, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn));
    assert_cf(CF_EINVAL, cf_wait(fs, 1, -1.0, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn));
    assert_cf(CF_EINVAL, cf_wait(fs, 1, NAN, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn));
    /* Memory that is not a live future (as a released one reads while its
     * block is not reused) is refused, not waited on. */
    static _Alignas(64) unsigned char fake[4096];
    fs[1] = (cf_future *)(void *)fake;
    assert_cf(CF_EINVAL, cf_wait(fs, 2, 0, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn));
    assert_true(strstr(cf_last_error_message(), "fs[1] is not a live future") != NULL);
    assert_ok(cf_future_release(f));
}

static void test_wait_empty(void **state)
{
    (void)state;
    size_t nd = 7, nn = 7;
    double t0 = cf_test_now();
    assert_ok(cf_wait(NULL, 0, CF_FOREVER, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn));
    assert_int_equal(nd, 0);
    assert_int_equal(nn, 0);
    cf_future *dummy[1];
    assert_ok(cf_wait(dummy, 0, CF_FOREVER, CF_FIRST_COMPLETED, dummy, &nd, dummy, &nn));
    assert_int_equal(nd, 0);
    assert_int_equal(nn, 0);
    assert_ok(cf_wait(NULL, 0, CF_FOREVER, CF_FIRST_EXCEPTION, NULL, NULL, NULL, NULL));
    assert_true(cf_test_now() - t0 < 1.0 * cf_test_scale());
}

static void test_wait_many_futures_concurrent_completion(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(8);
    enum { N = 300 };
    cf_future **fs = calloc(N, sizeof *fs);
    assert_non_null(fs);
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &fs[i]));
    size_t nd = 0, nn = 0;
    assert_ok(cf_wait(fs, N, 20.0, CF_ALL_COMPLETED, NULL, &nd, NULL, &nn));
    assert_int_equal(nd, N);
    assert_int_equal(nn, 0);
    for (int i = 0; i < N; i++)
        assert_true(cf_future_done(fs[i]));
    release_all(fs, N);
    free(fs);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- cf_as_completed ------------------------------------------------------------ */

static void test_as_completed_done_first_then_completion_order(void **state)
{
    (void)state;
    cf_future *fs[5] = {pending(), finished_i64(1), pending(), pending(), failed("E")};
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, 5, CF_FOREVER, &it));
    assert_non_null(it);
    cf_future *got = NULL;
    /* the two already done come first, in some order */
    assert_ok(cf_as_completed_next(it, &got));
    cf_future *first = got;
    assert_ok(cf_as_completed_next(it, &got));
    assert_true((first == fs[1] && got == fs[4]) || (first == fs[4] && got == fs[1]));
    /* then completion order, completed by this thread before asking */
    assert_ok(cf_future_set_result(fs[3], NULL));
    assert_true(cf_future_cancel(fs[0]));
    assert_ok(cf_future_set_exception(fs[2], 1, NULL, NULL));
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, fs[3]);
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, fs[0]);
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, fs[2]);
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    cf_as_completed_free(it);
    release_all(fs, 5);
}

static void test_as_completed_interleaved_order(void **state)
{
    (void)state;
    enum { N = 6 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = pending();
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, N, 5.0, &it));
    const int order[N] = {4, 0, 5, 2, 1, 3};
    for (int k = 0; k < N; k++) {
        assert_ok(cf_future_set_result(fs[order[k]], NULL));
        cf_future *got = NULL;
        assert_ok(cf_as_completed_next(it, &got));
        assert_ptr_equal(got, fs[order[k]]);
    }
    cf_future *got = NULL;
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    cf_as_completed_free(it);
    release_all(fs, N);
}

typedef struct {
    cf_future **fs;
    const int *order;
    int n;
} ordered_completer;

static void complete_in_order(void *arg)
{
    ordered_completer *c = (ordered_completer *)arg;
    for (int k = 0; k < c->n; k++) {
        sleep_ms(3);
        cf_value v = cf_i64(c->order[k]);
        cf_future_set_result(c->fs[c->order[k]], &v);
    }
}

static void test_as_completed_blocking_other_thread(void **state)
{
    (void)state;
    enum { N = 8 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = pending();
    static const int order[N] = {7, 3, 1, 0, 6, 2, 5, 4};
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, N, CF_FOREVER, &it));
    ordered_completer c = {fs, order, N};
    bg_thread t;
    bg_start(&t, complete_in_order, &c);
    for (int k = 0; k < N; k++) {
        cf_future *got = NULL;
        assert_ok(cf_as_completed_next(it, &got));
        assert_ptr_equal(got, fs[order[k]]);
    }
    cf_future *got = NULL;
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    bg_join(&t, 5);
    cf_as_completed_free(it);
    release_all(fs, N);
}

static void test_as_completed_duplicates(void **state)
{
    (void)state;
    cf_future *a = finished_i64(1), *b = pending();
    cf_future *fs[5] = {a, b, a, a, b};
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, 5, CF_FOREVER, &it));
    cf_future *got = NULL;
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, a);
    assert_ok(cf_future_set_result(b, NULL));
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, b);
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    cf_as_completed_free(it);
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
}

static void test_as_completed_timeout_message(void **state)
{
    (void)state;
    cf_future *fs[4] = {pending(), finished_i64(1), pending(), finished_i64(2)};
    ac_iter *it = NULL;
    double t0 = cf_test_now();
    assert_ok(cf_as_completed(fs, 4, 0.05, &it));
    cf_future *got = NULL;
    assert_ok(cf_as_completed_next(it, &got));
    assert_true(got == fs[1] || got == fs[3]);
    assert_ok(cf_as_completed_next(it, &got));
    assert_true(got == fs[1] || got == fs[3]);
    assert_cf(CF_ETIMEDOUT, cf_as_completed_next(it, &got));
    assert_true(cf_test_now() - t0 >= 0.045);
    const char *m = cf_last_error_message();
    if (!contains(m, "2 (of 4) futures unfinished"))
        fail_msg("message \"%s\" lacks \"2 (of 4) futures unfinished\"", m);
    /* keeps timing out while they pend */
    assert_cf(CF_ETIMEDOUT, cf_as_completed_next(it, &got));
    /* once they are done they are yielded */
    assert_ok(cf_future_set_result(fs[2], NULL));
    assert_ok(cf_future_set_result(fs[0], NULL));
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, fs[2]);
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, fs[0]);
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    cf_as_completed_free(it);
    release_all(fs, 4);
}

static void test_as_completed_timeout_measured_from_call(void **state)
{
    (void)state;
    cf_future *fs[1] = {pending()};
    ac_iter *it = NULL;
    double t0 = cf_test_now();
    assert_ok(cf_as_completed(fs, 1, 2.0, &it));
    sleep_ms(1000);
    double t1 = cf_test_now();
    cf_future *got = NULL;
    assert_cf(CF_ETIMEDOUT, cf_as_completed_next(it, &got));
    double end = cf_test_now();
    assert_true(end - t0 >= 1.99);
    /* it waited only the remainder (1 s), not a fresh 2 s; 0.8 s to
     * spare for a loaded machine */
    assert_true(end - t1 < 1.8);
    if (!contains(cf_last_error_message(), "1 (of 1) futures unfinished"))
        fail_msg("message \"%s\"", cf_last_error_message());
    cf_as_completed_free(it);
    release_all(fs, 1);
}

static void test_as_completed_timeout_zero(void **state)
{
    (void)state;
    cf_future *fs[3] = {pending(), pending(), finished_i64(0)};
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, 3, 0, &it));
    cf_future *got = NULL;
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, fs[2]);
    assert_cf(CF_ETIMEDOUT, cf_as_completed_next(it, &got));
    if (!contains(cf_last_error_message(), "2 (of 3) futures unfinished"))
        fail_msg("message \"%s\"", cf_last_error_message());
    cf_as_completed_free(it);
    release_all(fs, 3);
}

/* Timeouts too long to ever pass but short of CF_FOREVER (up to 9e9 s)
 * sleep until the future completes, as CF_FOREVER does: neither return at
 * once nor spin (a deadline that overflowed would lie in the past). */
static void complete_after_100ms(void *arg)
{
    sleep_ms(100);
    cf_future_set_result((cf_future *)arg, NULL); /* the waiter checks */
}

static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_huge_timeouts_sleep_until_done(void **state)
{
    (void)state;
    const double huge[] = {1e9, 7.5e9, 8.5e9, 9e9, 1e10, 1e300, DBL_MAX};
    static const char *const what[] = {"result", "wait", "as_completed"};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        for (int how = 0; how < 3; how++) {
            cf_future *f = pending();
            bg_thread t;
            bg_start(&t, complete_after_100ms, f);
            double t0 = cf_test_now(), cpu0 = thread_cpu_seconds();
            if (how == 0) {
                assert_ok(cf_future_result(f, huge[i], NULL));
            } else if (how == 1) {
                assert_ok(cf_wait(&f, 1, huge[i], CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
            } else {
                ac_iter *it = NULL;
                cf_future *got = NULL;
                assert_ok(cf_as_completed(&f, 1, huge[i], &it));
                assert_ok(cf_as_completed_next(it, &got));
                assert_ptr_equal(got, f);
                cf_as_completed_free(it);
            }
            double took = cf_test_now() - t0, cpu = thread_cpu_seconds() - cpu0;
            if (took < 0.05 || cpu > 0.05)
                fail_msg("timeout %g, %s: returned after %.3f s, using %.3f s of CPU", huge[i],
                         what[how], took, cpu);
            bg_join(&t, 5);
            assert_ok(cf_future_release(f));
        }
    }
}

static void test_as_completed_cancelled_yielded(void **state)
{
    (void)state;
    cf_future *fs[3] = {pending(), pending(), pending()};
    assert_true(cf_future_cancel(fs[1]));
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, 3, CF_FOREVER, &it));
    cf_future *got = NULL;
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, fs[1]);
    later l = {fs[2], 2, 20};
    bg_thread t;
    bg_start(&t, do_later, &l);
    assert_ok(cf_as_completed_next(it, &got)); /* woken by a cancel */
    assert_ptr_equal(got, fs[2]);
    assert_true(cf_future_cancelled(got));
    bg_join(&t, 5);
    assert_true(cf_future_cancel(fs[0]));
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, fs[0]);
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    cf_as_completed_free(it);
    release_all(fs, 3);
}

static void test_as_completed_holds_references(void **state)
{
    (void)state;
    cf_future *f = finished_i64(77);
    cf_future *g = pending();
    cf_future *fs[2] = {f, g};
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, 2, CF_FOREVER, &it));
    /* drop our references: the iterator keeps them alive */
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_set_result(g, NULL));
    assert_ok(cf_future_release(g));
    cf_future *got = NULL;
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, f);
    int64_t x = 0;
    assert_ok(cf_future_result_i64(got, 0, &x));
    assert_int_equal(x, 77);
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, g);
    assert_true(cf_future_done(got));
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    cf_as_completed_free(it);
}

static void test_as_completed_free_unfinished(void **state)
{
    (void)state;
    /* Freeing an iterator whose futures are still pending, then completing
     * them, must not touch freed memory (ASan checks). */
    cf_future *fs[3] = {pending(), pending(), finished_i64(1)};
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, 3, CF_FOREVER, &it));
    cf_future *got = NULL;
    assert_ok(cf_as_completed_next(it, &got));
    cf_as_completed_free(it);
    assert_ok(cf_future_set_result(fs[0], NULL));
    assert_true(cf_future_cancel(fs[1]));
    cf_as_completed_free(NULL);
    release_all(fs, 3);
}

static void test_as_completed_empty(void **state)
{
    (void)state;
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(NULL, 0, CF_FOREVER, &it));
    assert_non_null(it);
    cf_future *got = NULL;
    assert_cf(CF_EDONE, cf_as_completed_next(it, &got));
    cf_as_completed_free(it);
}

static void test_as_completed_bad_arguments(void **state)
{
    (void)state;
    cf_future *f = pending();
    cf_future *fs[2] = {f, NULL};
    ac_iter *it = NULL;
    assert_cf(CF_EINVAL, cf_as_completed(NULL, 1, CF_FOREVER, &it));
    assert_cf(CF_EINVAL, cf_as_completed(fs, 2, CF_FOREVER, &it));
    assert_cf(CF_EINVAL, cf_as_completed(fs, 1, CF_FOREVER, NULL));
    assert_cf(CF_EINVAL, cf_as_completed(fs, 1, -0.5, &it));
    assert_cf(CF_EINVAL, cf_as_completed(fs, 1, NAN, &it));
    static _Alignas(64) unsigned char fake[4096];
    fs[1] = (cf_future *)(void *)fake;
    assert_cf(CF_EINVAL, cf_as_completed(fs, 2, CF_FOREVER, &it));
    fs[1] = NULL;
    assert_null(it);
    cf_future *got = NULL;
    assert_cf(CF_EINVAL, cf_as_completed_next(NULL, &got));
    assert_ok(cf_as_completed(fs, 1, CF_FOREVER, &it));
    assert_cf(CF_EINVAL, cf_as_completed_next(it, NULL));
    cf_as_completed_free(it);
    assert_ok(cf_future_release(f));
}

static void test_as_completed_pool_futures(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    enum { N = 40 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, t_sleep_then, CF_ARGS(cf_i64(i % 5), cf_i64(i % 7 == 0)), &fs[i]));
    ac_iter *it = NULL;
    assert_ok(cf_as_completed(fs, N, 20.0, &it));
    bool seen[N] = {false};
    int count = 0, rc;
    cf_future *got = NULL;
    while ((rc = cf_as_completed_next(it, &got)) == CF_OK) {
        int k = -1;
        for (int i = 0; i < N; i++)
            if (fs[i] == got)
                k = i;
        assert_true(k >= 0);
        assert_false(seen[k]);
        seen[k] = true;
        assert_true(cf_future_done(got));
        count++;
    }
    assert_int_equal(rc, CF_EDONE);
    assert_int_equal(count, N);
    cf_as_completed_free(it);
    release_all(fs, N);
    assert_ok(cf_executor_destroy(ex));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_wait_all_already_done),
    cmocka_unit_test(test_wait_timeout_zero_polls),
    cmocka_unit_test(test_wait_timeout_fills_outputs),
    cmocka_unit_test(test_wait_null_outputs_allowed),
    cmocka_unit_test(test_wait_duplicates_collapsed),
    cmocka_unit_test(test_wait_first_completed_blocks_until_one),
    cmocka_unit_test(test_wait_cancel_wakes_waiter),
    cmocka_unit_test(test_wait_cancel_queued_pool_future_wakes_waiter),
    cmocka_unit_test(test_wait_first_exception_returns_on_failure),
    cmocka_unit_test(test_wait_first_exception_already_failed),
    cmocka_unit_test(test_wait_first_exception_like_all_when_none_fail),
    cmocka_unit_test(test_wait_first_exception_cancel_is_not_failure),
    cmocka_unit_test(test_wait_all_completed_blocks),
    cmocka_unit_test(test_wait_mixed_pool_and_standalone),
    cmocka_unit_test(test_wait_bad_arguments),
    cmocka_unit_test(test_wait_empty),
    cmocka_unit_test(test_wait_many_futures_concurrent_completion),
    cmocka_unit_test(test_as_completed_done_first_then_completion_order),
    cmocka_unit_test(test_as_completed_interleaved_order),
    cmocka_unit_test(test_as_completed_blocking_other_thread),
    cmocka_unit_test(test_as_completed_duplicates),
    cmocka_unit_test(test_as_completed_timeout_message),
    cmocka_unit_test(test_huge_timeouts_sleep_until_done),
    cmocka_unit_test(test_as_completed_timeout_measured_from_call),
    cmocka_unit_test(test_as_completed_timeout_zero),
    cmocka_unit_test(test_as_completed_cancelled_yielded),
    cmocka_unit_test(test_as_completed_holds_references),
    cmocka_unit_test(test_as_completed_free_unfinished),
    cmocka_unit_test(test_as_completed_empty),
    cmocka_unit_test(test_as_completed_bad_arguments),
    cmocka_unit_test(test_as_completed_pool_futures),
};

CF_TEST_MAIN(tests)
