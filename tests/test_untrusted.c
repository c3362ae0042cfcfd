/*
 * test_untrusted.c - what a worker process, its shared memory, its values
 * and the environment may not do to the parent: results a worker cannot
 * send (CF_PTR) or values that lie about their size, result memory the
 * worker rewrites after answering, oversized shared memory, a forged
 * worker variable, the worker's socket leaking into programs a task
 * starts, and a fake worker answering with random frames.
 *
 * Tasks run in other processes, so they never use cmocka asserts: they
 * report through their result or failure.
 */
#include "cf_test_util.h"

#include <fcntl.h>
#include <sys/wait.h>

#define T_OK 10.0

/* Destroys the pool and checks every worker was reaped. */
static void udestroy(cf_executor *ex)
{
    assert_ok(cf_executor_destroy(ex));
    assert_no_children();
}

/* ---- tasks ----------------------------------------------------------------- */

CF_TASK(t_square);

static int u_return_ptr(cf_call *call)
{
    static int x;
    return cf_return_ptr(call, &x);
}
CF_TASK(u_return_ptr);

/* Returns i64 arg 0 squared, or a pointer when it is negative. */
static int u_square_or_ptr(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    if (x < 0)
        return u_return_ptr(call);
    return cf_return_i64(call, x * x);
}
CF_TASK(u_square_or_ptr);

/* Returns a string value whose size is not its length. */
static int u_return_bad_str(cf_call *call)
{
    cf_value v = cf_str("abc");
    v.size = 10;
    return cf_return_value(call, &v);
}
CF_TASK(u_return_bad_str);

/* ---- values ------------------------------------------------------------------ */

static void test_ptr_result_fails_only_its_call(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, u_return_ptr, CF_NOARGS, &f));
    const cf_failure *fl = expect_task_failure(f, T_OK);
    assert_int_equal(cf_failure_code(fl), CF_ENOTCOPYABLE);
    assert_true(contains(cf_failure_message(fl), "\"u_return_ptr\""));
    assert_true(contains(cf_failure_message(fl), "pointer"));
    assert_ok(cf_future_release(f));
    /* In a map chunk: only that element fails; the pool carries on. */
    cf_value in[5] = {cf_i64(1), cf_i64(2), cf_i64(-1), cf_i64(4), cf_i64(5)};
    cf_map_input mi = cf_input_array(in, 5);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 5;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, u_square_or_ptr, &mi, 1, &mo, &it));
    for (int i = 0; i < 5; i++) {
        const cf_value *v = NULL;
        const cf_failure *mf = NULL;
        int rc = cf_map_next(it, &v, &mf);
        if (i == 2) {
            assert_cf(CF_ETASK, rc);
            assert_int_equal(cf_failure_code(mf), CF_ENOTCOPYABLE);
            assert_true(contains(cf_failure_message(mf), "u_square_or_ptr"));
        } else {
            assert_ok(rc);
            assert_int_equal(v->as.i64, (int64_t)(i + 1) * (i + 1));
        }
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(7))), 49);
    udestroy(ex);
}

/* A CF_STR's size is its strlen: a value that says otherwise is refused
 * where it enters (submit, initargs, return), by every engine. */
static void test_str_size_must_match_text(void **state)
{
    (void)state;
    cf_executor *pools[2] = {ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC), pool_new(1)};
    for (int k = 0; k < 2; k++) {
        cf_executor *ex = pools[k];
        size_t sizes[3] = {10, 1, 0};
        for (int s = 0; s < 3; s++) {
            cf_value v = cf_str("abc");
            v.size = sizes[s];
            cf_future *f = (cf_future *)&v;
            assert_cf(CF_EINVAL, cf_submit(ex, t_square, &v, 1, &f));
            assert_null(f);
            assert_true(contains(cf_last_error_message(), "size"));
        }
        /* The same text with its right size is fine; a task that returns
         * a lying string fails alone. */
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, u_return_bad_str, CF_NOARGS, &f));
        const cf_failure *fl = expect_task_failure(f, T_OK);
        assert_int_equal(cf_failure_code(fl), CF_EINVAL);
        assert_true(contains(cf_failure_message(fl), "size"));
        assert_ok(cf_future_release(f));
        assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(9))), 81);
    }
    udestroy(pools[0]);
    assert_ok(cf_executor_destroy(pools[1]));
    /* initargs too. */
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.initializer = t_square;
    cf_value bad = cf_str("abc");
    bad.size = 2;
    o.initargs = &bad;
    o.ninitargs = 1;
    cf_executor *ex = NULL;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));
    assert_null(ex);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_ptr_result_fails_only_its_call),
    cmocka_unit_test(test_str_size_must_match_text),
};

CF_TEST_MAIN(tests)
