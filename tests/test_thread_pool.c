/* SPDX-License-Identifier: MIT */
/*
 * test_thread_pool.c - the thread pool engine: submit and results, values,
 * failures, options, thread names, lazy start and reuse of threads, the
 * worker limit, initializers, shutdown/destroy and their races.
 */
#include "cf_test_util.h"
#include "internal.h" /* cf__test_hook_before_finish, CF__HOOKED */

#include <poll.h>
#include <sched.h>

/* ---- tasks ---------------------------------------------------------------- */

static int t_raise(cf_call *call)
{
    return cf_raise(call, 7, "ValueError", "bad value %d", 3);
}

static int t_raise_default_type(cf_call *call)
{
    return cf_raise(call, -9, NULL, "no type");
}

static int t_raise_twice(cf_call *call)
{
    cf_raise(call, 1, "FirstError", "first");
    return cf_raise(call, 2, "SecondError", "second");
}

static int t_raise_then_return_zero(cf_call *call)
{
    cf_raise(call, 5, "LateError", "raised then returned 0");
    cf_return_i64(call, 1);
    return 0;
}

static int t_return_nonzero(cf_call *call)
{
    (void)call;
    return 42;
}

static int t_return_nothing(cf_call *call)
{
    (void)call;
    return 0;
}

static int t_wrong_kind(cf_call *call)
{
    /* argument 0 is a string; asking for an int raises TypeError */
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x == 0 ? 1000 : -1);
}

static int t_missing_arg(cf_call *call)
{
    double d = cf_arg_f64(call, 3);
    return cf_return_f64(call, d);
}

static int t_last_return_wins(cf_call *call)
{
    cf_return_i64(call, 1);
    cf_return_str(call, "two");
    cf_return_f64(call, 3.0);
    return 0;
}

static int t_return_too_big(cf_call *call)
{
    static const char small[4] = "abc";
    int rc = cf_return_bytes(call, small, CF_PAYLOAD_MAX + 1);
    /* report what cf_return_bytes gave through the failure's code check */
    return rc == CF_ETOOBIG ? 0 : cf_raise(call, rc, "WrongReturn", "rc %d", rc);
}

/* Checks every kind of argument and returns a string describing them. */
static int t_all_kinds(cf_call *call)
{
    if (cf_arg_count(call) != 6)
        return cf_raise(call, 1, "TestError", "nargs %zu", cf_arg_count(call));
    const cf_value *a0 = cf_arg(call, 0);
    if (!a0 || a0->kind != CF_NONE)
        return cf_raise(call, 2, "TestError", "arg0");
    int64_t i = cf_arg_i64(call, 1);
    double d = cf_arg_f64(call, 2);
    size_t bsize = 0;
    const unsigned char *b = cf_arg_bytes(call, 3, &bsize);
    const char *s = cf_arg_str(call, 4);
    int *p = cf_arg_ptr(call, 5);
    if (cf_arg(call, 6) != NULL)
        return cf_raise(call, 3, "TestError", "arg 6 exists");
    if (!b || bsize != 3 || b[0] != 9 || b[1] != 0 || b[2] != 8)
        return cf_raise(call, 4, "TestError", "bytes");
    if (cf_arg(call, 4)->size != strlen(s))
        return cf_raise(call, 5, "TestError", "str size");
    if (!p)
        return cf_raise(call, 6, "TestError", "ptr");
    (*p)++;
    char out[128];
    snprintf(out, sizeof out, "%lld|%.2f|%s|%d", (long long)i, d, s, *p);
    return cf_return_str(call, out);
}

static int t_nargs(cf_call *call)
{
    return cf_return_i64(call, (int64_t)cf_arg_count(call));
}

static int t_thread_name(cf_call *call)
{
    return cf_return_str(call, cf_thread_name());
}

static int t_ptr_identity(cf_call *call)
{
    void *p = cf_arg_ptr(call, 0);
    return cf_return_ptr(call, p);
}

/* ---- basics ------------------------------------------------------------------ */

static void test_submit_result_basic(void **state)
{
    (void)state;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, NULL));
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(12)), &f));
    assert_non_null(f);
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 10, &x));
    assert_int_equal(x, 144);
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    assert_ok(cf_future_release(f));

    assert_ok(cf_submit(ex, t_sum, CF_ARGS(cf_i64(323), cf_i64(1235)), &f));
    assert_ok(cf_future_result_i64(f, 10, &x));
    assert_int_equal(x, 1558);
    assert_ok(cf_future_release(f));

    assert_ok(cf_submit(ex, t_return_nothing, CF_NOARGS, &f));
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, 10, &r));
    assert_int_equal(r->kind, CF_NONE);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_echo_every_kind(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    int target = 0;
    const unsigned char bytes[5] = {0, 1, 0, 2, 0};
    cf_value vals[] = {cf_none(), cf_i64(-5), cf_f64(6.25), cf_bytes(bytes, 5),
                       cf_str("text"), cf_ptr(&target), cf_str(""), cf_bytes(bytes, 0)};
    size_t n = sizeof vals / sizeof vals[0];
    cf_future *fs[8];
    for (size_t i = 0; i < n; i++)
        assert_ok(cf_submit(ex, t_echo, &vals[i], 1, &fs[i]));
    const cf_value *r;
    assert_ok(cf_future_result(fs[0], 10, &r));
    assert_int_equal(r->kind, CF_NONE);
    assert_ok(cf_future_result(fs[1], 10, &r));
    assert_int_equal(r->kind, CF_I64);
    assert_int_equal(r->as.i64, -5);
    assert_ok(cf_future_result(fs[2], 10, &r));
    assert_int_equal(r->kind, CF_F64);
    assert_true(r->as.f64 == 6.25);
    assert_ok(cf_future_result(fs[3], 10, &r));
    assert_int_equal(r->kind, CF_BYTES);
    assert_int_equal(r->size, 5);
    assert_memory_equal(r->as.bytes, bytes, 5);
    assert_ok(cf_future_result(fs[4], 10, &r));
    assert_int_equal(r->kind, CF_STR);
    assert_int_equal(r->size, 4);
    assert_string_equal(r->as.str, "text");
    assert_ok(cf_future_result(fs[5], 10, &r));
    assert_int_equal(r->kind, CF_PTR);
    assert_ptr_equal(r->as.ptr, &target);
    assert_ok(cf_future_result(fs[6], 10, &r));
    assert_int_equal(r->kind, CF_STR);
    assert_string_equal(r->as.str, "");
    assert_ok(cf_future_result(fs[7], 10, &r));
    assert_int_equal(r->kind, CF_BYTES);
    assert_int_equal(r->size, 0);
    for (size_t i = 0; i < n; i++)
        assert_ok(cf_future_release(fs[i]));
    assert_ok(cf_executor_destroy(ex));
}

static void test_all_kinds_as_arguments(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    int counter = 41;
    const unsigned char b[3] = {9, 0, 8};
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_all_kinds,
                        CF_ARGS(cf_none(), cf_i64(-17), cf_f64(2.5), cf_bytes(b, 3),
                                cf_str("word"), cf_ptr(&counter)),
                        &f));
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, 10, &r));
    assert_int_equal(r->kind, CF_STR);
    assert_string_equal(r->as.str, "-17|2.50|word|42");
    assert_int_equal(counter, 42); /* CF_PTR shared by reference */
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_args_copied_at_submit(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *fb = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &fb));
    assert_true(blocker_wait_started(&b, 1, 5));

    /* The only worker is busy: the echo calls cannot run before we free and
     * scribble over the buffers. */
    char *s = strdup("original string");
    unsigned char *bytes = malloc(4);
    assert_non_null(s);
    assert_non_null(bytes);
    memcpy(bytes, "\x01\x02\x03\x04", 4);
    char stack[16];
    strcpy(stack, "stack text");
    cf_future *fs = NULL, *fbytes = NULL, *fstack = NULL;
    assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_str(s)), &fs));
    assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_bytes(bytes, 4)), &fbytes));
    assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_str(stack)), &fstack));
    memset(s, 'X', strlen(s));
    free(s);
    memset(bytes, 0xEE, 4);
    free(bytes);
    memset(stack, 'Q', sizeof stack - 1);
    blocker_release(&b);

    const cf_value *r = NULL;
    assert_ok(cf_future_result(fs, 10, &r));
    assert_string_equal(r->as.str, "original string");
    assert_ok(cf_future_result(fbytes, 10, &r));
    assert_int_equal(r->size, 4);
    assert_memory_equal(r->as.bytes, "\x01\x02\x03\x04", 4);
    assert_ok(cf_future_result(fstack, 10, &r));
    assert_string_equal(r->as.str, "stack text");
    assert_ok(cf_future_result(fb, 10, NULL));
    assert_ok(cf_future_release(fs));
    assert_ok(cf_future_release(fbytes));
    assert_ok(cf_future_release(fstack));
    assert_ok(cf_future_release(fb));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_ptr_passes_through(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    static char object[32];
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_ptr_identity, CF_ARGS(cf_ptr(object)), &f));
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, 10, &r));
    assert_int_equal(r->kind, CF_PTR);
    assert_ptr_equal(r->as.ptr, object);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_max_args(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    cf_value args[CF_ARGS_MAX + 1];
    for (int i = 0; i <= CF_ARGS_MAX; i++)
        args[i] = cf_i64(i);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_nargs, args, CF_ARGS_MAX, &f));
    int64_t n = 0;
    assert_ok(cf_future_result_i64(f, 10, &n));
    assert_int_equal(n, CF_ARGS_MAX);
    assert_ok(cf_future_release(f));
    f = NULL;
    assert_cf(CF_EINVAL, cf_submit(ex, t_nargs, args, CF_ARGS_MAX + 1, &f));
    assert_null(f);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- failures -------------------------------------------------------------------- */

static void test_raise_gives_etask(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_raise, CF_NOARGS, &f));
    const cf_failure *fail = expect_task_failure(f, 10);
    assert_int_equal(cf_failure_code(fail), 7);
    assert_string_equal(cf_failure_type(fail), "ValueError");
    assert_string_equal(cf_failure_message(fail), "bad value 3");
    char buf[128];
    assert_true(cf_future_format(f, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "state=finished raised ValueError>"));
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_raise_variants(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f1, *f2, *f3, *f4;
    assert_ok(cf_submit(ex, t_raise_default_type, CF_NOARGS, &f1));
    assert_ok(cf_submit(ex, t_raise_twice, CF_NOARGS, &f2));
    assert_ok(cf_submit(ex, t_raise_then_return_zero, CF_NOARGS, &f3));
    assert_ok(cf_submit(ex, t_return_nonzero, CF_NOARGS, &f4));
    const cf_failure *fail = NULL;

    fail = expect_task_failure(f1, 10);
    assert_int_equal(cf_failure_code(fail), -9);
    assert_string_equal(cf_failure_type(fail), "Exception");
    assert_string_equal(cf_failure_message(fail), "no type");

    fail = expect_task_failure(f2, 10);
    assert_int_equal(cf_failure_code(fail), 2);
    assert_string_equal(cf_failure_type(fail), "SecondError");
    assert_string_equal(cf_failure_message(fail), "second");

    fail = expect_task_failure(f3, 10);
    assert_int_equal(cf_failure_code(fail), 5);
    assert_string_equal(cf_failure_type(fail), "LateError");

    fail = expect_task_failure(f4, 10);
    assert_int_equal(cf_failure_code(fail), 42);
    assert_string_equal(cf_failure_type(fail), "TaskError");

    assert_ok(cf_future_release(f1));
    assert_ok(cf_future_release(f2));
    assert_ok(cf_future_release(f3));
    assert_ok(cf_future_release(f4));
    assert_ok(cf_executor_destroy(ex));
}

static void test_typed_accessor_wrong_kind(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL, *g = NULL;
    assert_ok(cf_submit(ex, t_wrong_kind, CF_ARGS(cf_str("not an int")), &f));
    assert_ok(cf_submit(ex, t_missing_arg, CF_ARGS(cf_f64(1.0)), &g));
    const cf_failure *fail = NULL;
    fail = expect_task_failure(f, 10);
    assert_string_equal(cf_failure_type(fail), "TypeError");
    fail = expect_task_failure(g, 10);
    assert_string_equal(cf_failure_type(fail), "TypeError");
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(g));
    assert_ok(cf_executor_destroy(ex));
}

static void test_last_return_wins(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_last_return_wins, CF_NOARGS, &f));
    double d = 0;
    assert_ok(cf_future_result_f64(f, 10, &d));
    assert_true(d == 3.0);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_return_too_big(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_return_too_big, CF_NOARGS, &f));
    /* cf_return_bytes raised ValueError and returned CF_ETOOBIG; the task
     * then returned 0 but the call fails anyway */
    const cf_failure *fail = expect_task_failure(f, 10);
    assert_string_equal(cf_failure_type(fail), "ValueError");
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_failure_does_not_break_pool(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    for (int i = 0; i < 20; i++) {
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, i % 2 ? t_raise : t_return_nonzero, CF_NOARGS, &f));
        assert_cf(CF_ETASK, cf_future_result(f, 10, NULL));
        assert_ok(cf_future_release(f));
    }
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(9)), &f));
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 10, &x));
    assert_int_equal(x, 81);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

/* ---- options ------------------------------------------------------------------------ */

static void test_default_workers(void **state)
{
    (void)state;
    int cpus = cf_usable_cpus();
    assert_true(cpus >= 1);
    int expect = cpus + 4 < 32 ? cpus + 4 : 32;
    assert_int_equal(cf_thread_pool_default_workers(), expect);
}

static void test_options_init(void **state)
{
    (void)state;
    cf_thread_pool_options o;
    memset(&o, 0x5A, sizeof o);
    cf_thread_pool_options_init(&o);
    assert_int_equal(o.max_workers, CF_AUTO);
    assert_null(o.thread_name_prefix);
    assert_null(o.initializer);
    assert_null(o.initarg);
    cf_thread_pool_options_init(NULL); /* ignored */
}

static void test_options_validation(void **state)
{
    (void)state;
    cf_thread_pool_options o;
    const int bad[] = {0, -2, -5, -1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cf_thread_pool_options_init(&o);
        o.max_workers = bad[i];
        cf_executor *ex = NULL;
        assert_cf(CF_EINVAL, cf_thread_pool_new(&ex, &o));
        assert_null(ex);
    }
    char prefix[80];
    memset(prefix, 'p', sizeof prefix);
    prefix[65] = '\0'; /* 65 bytes: too long */
    cf_thread_pool_options_init(&o);
    o.thread_name_prefix = prefix;
    cf_executor *ex = NULL;
    assert_cf(CF_EINVAL, cf_thread_pool_new(&ex, &o));
    assert_null(ex);
    prefix[64] = '\0'; /* 64 bytes: allowed */
    assert_ok(cf_thread_pool_new(&ex, &o));
    assert_non_null(ex);
    assert_ok(cf_executor_destroy(ex));

    cf_thread_pool_options_init(&o);
    assert_cf(CF_EINVAL, cf_thread_pool_new(NULL, &o));
    o.max_workers = CF_AUTO;
    ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    assert_ok(cf_executor_destroy(ex));
    o.max_workers = 1;
    ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    assert_ok(cf_executor_destroy(ex));
}

static void test_no_thread_before_first_submit(void **state)
{
    (void)state;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, NULL));
    assert_int_equal(cf_executor_worker_count(ex), 0);
    assert_int_equal(cf_executor_worker_count(NULL), -1);
    assert_ok(cf_executor_destroy(ex));
}

/* Returns true if s is "<prefix><digits>_<digits>" and stores the numbers. */
static bool parse_default_name(const char *s, long *pool, long *idx)
{
    const char *p = "ThreadPoolExecutor-";
    if (strncmp(s, p, strlen(p)) != 0)
        return false;
    s += strlen(p);
    char *end;
    if (*s < '0' || *s > '9')
        return false;
    *pool = strtol(s, &end, 10);
    if (*end != '_')
        return false;
    s = end + 1;
    if (*s < '0' || *s > '9')
        return false;
    *idx = strtol(s, &end, 10);
    return *end == '\0';
}

static void test_thread_name_default(void **state)
{
    (void)state;
    long pools[3], idx[3];
    for (int k = 0; k < 3; k++) {
        cf_executor *ex = NULL;
        /* An empty prefix means the default too, as in CPython. */
        cf_thread_pool_options o;
        cf_thread_pool_options_init(&o);
        o.thread_name_prefix = "";
        assert_ok(cf_thread_pool_new(&ex, k == 2 ? &o : NULL));
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, t_thread_name, CF_NOARGS, &f));
        const cf_value *r = NULL;
        assert_ok(cf_future_result(f, 10, &r));
        if (!parse_default_name(r->as.str, &pools[k], &idx[k]))
            fail_msg("thread name \"%s\" is not ThreadPoolExecutor-<n>_<i>", r->as.str);
        assert_int_equal(idx[k], 0); /* the first worker is _0 */
        assert_ok(cf_future_release(f));
        assert_ok(cf_executor_destroy(ex));
    }
    /* n counts the pools this process made */
    assert_true(pools[1] > pools[0]);
    assert_true(pools[2] > pools[1]);
}

static void test_thread_name_long_prefix(void **state)
{
    (void)state;
    const char *prefix = "a-rather-long-worker-prefix-for-names";
    assert_true(strlen(prefix) > 15);
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 3;
    char copy[64];
    strcpy(copy, prefix);
    o.thread_name_prefix = copy;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    memset(copy, 'z', strlen(copy)); /* the pool keeps its own copy */

    /* Three tasks held at once run on three distinct workers _0.._2. */
    blocker b;
    blocker_init(&b);
    cf_future *blk[3], *names[3];
    blocker_submit_held(ex, &b, blk, 3);
    blocker_release(&b);
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_result(blk[i], 10, NULL));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_submit(ex, t_thread_name, CF_NOARGS, &names[i]));
    for (int i = 0; i < 3; i++) {
        const cf_value *r = NULL;
        assert_ok(cf_future_result(names[i], 10, &r));
        size_t pl = strlen(prefix);
        if (strncmp(r->as.str, prefix, pl) != 0 || r->as.str[pl] != '_' ||
            r->as.str[pl + 1] < '0' || r->as.str[pl + 1] > '2' || r->as.str[pl + 2] != '\0')
            fail_msg("thread name \"%s\" is not \"%s_<0..2>\"", r->as.str, prefix);
    }
    for (int i = 0; i < 3; i++) {
        assert_ok(cf_future_release(blk[i]));
        assert_ok(cf_future_release(names[i]));
    }
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* Records the worker's name, then blocks like t_block; returns the name. */
static int t_name_then_block(cf_call *call)
{
    char name[128];
    snprintf(name, sizeof name, "%s", cf_thread_name());
    int rc = t_block(call);
    if (rc != 0)
        return rc;
    return cf_return_str(call, name);
}

static void test_thread_name_distinct_indices(void **state)
{
    (void)state;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 4;
    o.thread_name_prefix = "idx";
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    blocker b;
    blocker_init(&b);
    cf_future *blk[4];
    for (int i = 0; i < 4; i++) {
        assert_ok(cf_submit(ex, t_name_then_block, CF_ARGS(cf_ptr(&b)), &blk[i]));
        assert_true(blocker_wait_started(&b, i + 1, 5));
    }
    assert_int_equal(cf_executor_worker_count(ex), 4);
    blocker_release(&b);
    bool seen[4] = {false, false, false, false};
    for (int i = 0; i < 4; i++) {
        const cf_value *r = NULL;
        assert_ok(cf_future_result(blk[i], 10, &r));
        assert_int_equal(r->kind, CF_STR);
        if (strncmp(r->as.str, "idx_", 4) != 0 || r->as.str[4] < '0' || r->as.str[4] > '3' ||
            r->as.str[5] != '\0')
            fail_msg("thread name \"%s\" is not idx_<0..3>", r->as.str);
        int k = r->as.str[4] - '0';
        assert_false(seen[k]);
        seen[k] = true;
        assert_ok(cf_future_release(blk[i]));
    }
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* ---- lazy threads, reuse, limit ---------------------------------------------------- */

static void test_lazy_thread_start(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(5);
    assert_int_equal(cf_executor_worker_count(ex), 0);
    blocker b;
    blocker_init(&b);
    cf_future *fs[3];
    blocker_submit_held(ex, &b, fs, 3);
    assert_int_equal(cf_executor_worker_count(ex), 3);
    blocker_release(&b);
    for (int i = 0; i < 3; i++) {
        assert_ok(cf_future_result(fs[i], 10, NULL));
        assert_ok(cf_future_release(fs[i]));
    }
    assert_int_equal(cf_executor_worker_count(ex), 3);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_idle_thread_reuse(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(5);
    for (int i = 0; i < 10; i++) {
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &f));
        int64_t x = -1;
        assert_ok(cf_future_result_i64(f, 10, &x));
        assert_int_equal(x, i * i);
        assert_ok(cf_future_release(f));
    }
    assert_int_equal(cf_executor_worker_count(ex), 1);
    assert_ok(cf_executor_destroy(ex));
}

/* A worker that finds work while searching (it holds the spin token, so
 * submitters wake nobody) must wake a parked worker for what is queued
 * behind the call it takes.  A long spin budget keeps one worker searching
 * while the other parks; then two calls arrive together and both must
 * start.  Each round after the first starts from that state.  The budget
 * is set through the test override, not CF_SPIN_NS: the environment is
 * read once per process, so in a whole-binary run it would neither take
 * effect here nor stay out of the tests after. */
static void test_searcher_wakes_parked_worker(void **state)
{
    (void)state;
    int64_t spin_before = cf__test_set_spin_ns(1000000000);
    cf_executor *ex = pool_new(2);
    for (int round = 0; round < 6; round++) {
        blocker b;
        blocker_init(&b);
        cf_future *fs[2];
        for (int i = 0; i < 2; i++)
            assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &fs[i]));
        bool both = blocker_wait_started(&b, 2, 5);
        blocker_release(&b);
        if (!both)
            fail_msg("round %d: a call stayed queued while a worker was idle", round);
        for (int i = 0; i < 2; i++) {
            assert_ok(cf_future_result(fs[i], 10, NULL));
            assert_ok(cf_future_release(fs[i]));
        }
        blocker_destroy(&b);
        /* Lets one worker park while the other searches; a correct pool
         * passes without it. */
        sleep_ms(50);
    }
    assert_ok(cf_executor_destroy(ex));
    cf__test_set_spin_ns(spin_before);
}

/* ---- short calls: wake-ups left out, and the sentry ------------------------ */

static int t_wait_event(cf_call *call)
{
    cf_test_event *e = cf_arg_ptr(call, 0);
    return cf_return_i64(call, cf_test_event_wait(e, 10) ? 1 : 0);
}

static int t_set_event(cf_call *call)
{
    cf_test_event_set(cf_arg_ptr(call, 0));
    return cf_return_i64(call, 2);
}

/* Runs tiny calls one at a time on a pool with a call blocked, until the
 * pool counts its calls as short and has left out a submit's wake-up at
 * least once and its sentry has taken such a call (or `timeout` passes).
 * Every call must finish: the only worker awake is blocked, so a call left
 * queued finishes only if the sentry takes it. */
static void run_until_rescued(cf_executor *ex, double timeout)
{
    double end = cf_test_now() + timeout * cf_test_scale();
    cf__short_calls sc = {0};
    for (int64_t i = 0; cf_test_now() < end; i++) {
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &f));
        int64_t x = -1;
        assert_ok(cf_future_result_i64(f, 5 * cf_test_scale(), &x));
        assert_int_equal(x, i * i);
        assert_ok(cf_future_release(f));
        sc = cf__thread_pool_short_calls(ex);
        if (sc.submit_skips > 0 && sc.rescues > 0)
            break;
    }
    if (sc.submit_skips == 0 || sc.rescues == 0)
        fail_msg("no wake-up left out and taken up by the sentry in %.0f s "
                 "(submits left out %u, rescues %u, quick %d)",
                 timeout * cf_test_scale(), sc.submit_skips, sc.rescues, (int)sc.quick);
}

/* On a pool of 4 threads: starts all 4 (a call on `b` and three on a
 * blocker of their own, each submitted while the others block), then
 * lets the three go, so that one worker stays blocked in a call (awake)
 * and three are free: one to run calls while another watches.  Returns
 * the blocked call's future. */
static cf_future *start_blocked_and_free(cf_executor *ex, blocker *b)
{
    cf_future *g = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(b)), &g));
    assert_true(blocker_wait_started(b, 1, 5));
    blocker tmp;
    blocker_init(&tmp);
    cf_future *three[3];
    blocker_submit_held(ex, &tmp, three, 3);
    assert_int_equal(cf_executor_worker_count(ex), 4);
    blocker_release(&tmp);
    for (int i = 0; i < 3; i++) {
        assert_ok(cf_future_result(three[i], 10 * cf_test_scale(), NULL));
        assert_ok(cf_future_release(three[i]));
    }
    blocker_destroy(&tmp);
    return g;
}

/* A pool of 4 whose calls count as short (the test hook), whose workers
 * park at once (no spinning: every submit looks for a parked one), with
 * one worker held awake in a blocked call and three free (see
 * start_blocked_and_free). */
typedef struct held_pool {
    cf_executor *ex;
    blocker b;
    cf_future *held;
    int64_t spin_ns; /* the spin budget before, put back by close */
} held_pool;

static void held_pool_open(held_pool *hp)
{
    /* No spinning, whatever this process kept before (the whole binary
     * in one process) and without leaving CF_SPIN_NS for later tests. */
    hp->spin_ns = cf__test_set_spin_ns(0);
    atomic_store(&cf__test_hook_short_calls, true);
    hp->ex = pool_new(4);
    blocker_init(&hp->b);
    hp->held = start_blocked_and_free(hp->ex, &hp->b);
}

/* Lets the held call go, checks it finishes, and destroys the pool. */
static void held_pool_close(held_pool *hp)
{
    blocker_release(&hp->b);
    assert_ok(cf_future_result(hp->held, 10 * cf_test_scale(), NULL));
    assert_ok(cf_future_release(hp->held));
    assert_ok(cf_executor_destroy(hp->ex));
    blocker_destroy(&hp->b);
    atomic_store(&cf__test_hook_short_calls, false);
    cf__test_set_spin_ns(hp->spin_ns);
}

/* A pool whose calls are short leaves the wake-up out when a worker is
 * awake and few calls are queued.  Here the awake worker is blocked in a
 * call of its own, so each call left queued must be taken by the sentry,
 * within its period; the test fails (a result times out) if it is not. */
static void test_short_calls_sentry_takes_left_call(void **state)
{
    (void)state;
    held_pool hp;
    held_pool_open(&hp);
    cf_executor *ex = hp.ex;
    run_until_rescued(ex, 5);
    held_pool_close(&hp);
}

/* With calls short, pairs of calls where the first waits for the second:
 * the worker that takes the first may leave the wake-up for the second
 * out, and then blocks; the second must still run (the sentry, or another
 * worker, takes it), or the first times out and returns 0. */
static void test_short_calls_dependent_pairs_finish(void **state)
{
    (void)state;
    held_pool hp;
    held_pool_open(&hp);
    cf_executor *ex = hp.ex;
    run_until_rescued(ex, 5);
    for (int round = 0; round < 50; round++) {
        cf_test_event e;
        cf_test_event_init(&e);
        cf_future *x = NULL, *y = NULL;
        assert_ok(cf_submit(ex, t_wait_event, CF_ARGS(cf_ptr(&e)), &x));
        assert_ok(cf_submit(ex, t_set_event, CF_ARGS(cf_ptr(&e)), &y));
        int64_t vx = -1, vy = -1;
        assert_ok(cf_future_result_i64(y, 5 * cf_test_scale(), &vy));
        assert_ok(cf_future_result_i64(x, 5 * cf_test_scale(), &vx));
        if (vx != 1)
            fail_msg("round %d: the second call of a pair did not run while the first waited",
                     round);
        assert_int_equal(vy, 2);
        assert_ok(cf_future_release(x));
        assert_ok(cf_future_release(y));
    }
    held_pool_close(&hp);
}

/* Waits for fs[0..k), calls of t_square on round + i, checks each result
 * and releases them. */
static void collect_squares(cf_future **fs, int k, int64_t round)
{
    for (int i = 0; i < k; i++) {
        int64_t x = -1;
        assert_ok(cf_future_result_i64(fs[i], 5 * cf_test_scale(), &x));
        assert_int_equal(x, (round + i) * (round + i));
        assert_ok(cf_future_release(fs[i]));
    }
}

/* A pool of two workers running bursts of tiny calls, each queued at
 * once: each burst wakes both (the second by the first, as it takes a
 * call with more queued), so whichever parks as sentry is woken again
 * before its first look.  The pool must still come to count its calls as
 * short, and soon: within its first MAX_WINDOWS windows of WINDOW bursts,
 * one must leave out at least a wake-up per 4 bursts.  That takes the
 * sentry's measure carried from one watch to the next, which gets a look
 * after about a millisecond of bursts (the test hook then counts the
 * calls as short; a slower machine runs fewer bursts in that time), and
 * then 0.7-3 wake-ups per burst are left out, on one CPU under
 * ThreadSanitizer too.  Without the carry-over none were, for 3,000 to
 * 39,000 bursts, until a pause of the machine let a sentry sleep through
 * a whole period.  Every call must finish too. */
static void test_short_calls_two_workers_bursts(void **state)
{
    (void)state;
    enum { K = 4, WINDOW = 200, MAX_WINDOWS = 10 };
    atomic_store(&cf__test_hook_short_calls, true);
    cf_executor *ex = pool_new(2);
    double end = cf_test_now() + 20 * cf_test_scale();
    cf__short_calls sc = {0};
    unsigned window_start = 0;
    bool met = false;
    int64_t round = 0;
    for (; !met && round <= WINDOW * MAX_WINDOWS && cf_test_now() < end; round++) {
        cf_future *fs[K];
        cf_value args[K];
        for (int i = 0; i < K; i++)
            args[i] = cf_i64(round + i);
        assert_ok(cf_submit_many(ex, t_square, args, 1, K, fs));
        collect_squares(fs, K, round);
        if (round % WINDOW == 0) {
            sc = cf__thread_pool_short_calls(ex);
            met = round > 0 && sc.worker_skips - window_start >= WINDOW / 4;
            window_start = sc.worker_skips;
        }
    }
    if (!met)
        fail_msg("two workers, bursts of %d short calls: no window of %d bursts left %d "
                 "wake-ups out in the first %lld bursts (%u in all; quick %d)",
                 K, WINDOW, WINDOW / 4, (long long)round, sc.worker_skips, (int)sc.quick);
    assert_ok(cf_executor_destroy(ex));
    atomic_store(&cf__test_hook_short_calls, false);
}

/* Submits 4 tiny calls (which keep the pool's calls counted as short)
 * and collects them. */
static void short_burst(cf_executor *ex, int64_t round)
{
    cf_future *fs[4];
    for (int i = 0; i < 4; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(round + i)), &fs[i]));
    collect_squares(fs, 4, round);
}

/* Rounds in which calls counted as short before and after the submit a
 * test checks: enough that the check was made with the wake-up-skipping
 * path open. */
enum { SHORT_CHECKS = 20 };

/* A submit of more than 16 calls at once (an eager map of 64, queued in
 * one piece) never leaves its wake-up out, even while calls are short:
 * they are not one awake worker's to run.  One worker stays awake in a
 * blocked call, and the others park at once (no spinning), so that each
 * submit finds the pool where a wake-up may be left out.  The main
 * thread is the only submitter, so the pool's count of submits' skips
 * must not move across cf_map(). */
static void test_short_calls_big_submit_wakes(void **state)
{
    (void)state;
    enum { N = 64 };
    held_pool hp;
    held_pool_open(&hp);
    cf_executor *ex = hp.ex;
    cf_value in[N];
    for (int i = 0; i < N; i++)
        in[i] = cf_i64(i);
    cf_map_input mi = cf_input_array(in, N);
    double end = cf_test_now() + 10 * cf_test_scale();
    int checked = 0;
    for (int64_t round = 0; checked < SHORT_CHECKS && cf_test_now() < end; round++) {
        short_burst(ex, round);
        cf__short_calls before = cf__thread_pool_short_calls(ex);
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, t_square, &mi, 1, NULL, &it));
        cf__short_calls after = cf__thread_pool_short_calls(ex);
        for (int i = 0; i < N; i++) {
            const cf_value *v = NULL;
            assert_ok(cf_map_next(it, &v, NULL));
            assert_int_equal(v->as.i64, (int64_t)i * i);
        }
        assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
        cf_map_close(it);
        if (before.quick && after.quick) {
            checked++;
            if (after.submit_skips != before.submit_skips)
                fail_msg("round %lld: a map of %d calls left its wake-up out",
                         (long long)round, N);
        }
    }
    if (checked < SHORT_CHECKS)
        fail_msg("calls counted as short around only %d of the maps in %d s", checked,
                 10 * cf_test_scale());
    held_pool_close(&hp);
}

/* A call that submits to its own pool: returns 1 when calls counted as
 * short around its submit and the submit left no wake-up out, 2 when it
 * left one out, 0 when calls were not short (nothing checked), negative
 * on an error.  It begins its submit only once `go` is set, after the
 * main thread's last submit. */
static int t_submit_to_own_pool(cf_call *call)
{
    cf_executor *ex = cf_arg_ptr(call, 0);
    if (!cf_test_event_wait(cf_arg_ptr(call, 1), 10))
        return cf_return_i64(call, -1);
    cf__short_calls before = cf__thread_pool_short_calls(ex);
    cf_future *f = NULL;
    if (cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f) != CF_OK)
        return cf_return_i64(call, -2);
    cf__short_calls after = cf__thread_pool_short_calls(ex);
    int64_t x = 0;
    int rc = cf_future_result_i64(f, 10 * cf_test_scale(), &x);
    cf_future_release(f);
    if (rc != CF_OK || x != 9)
        return cf_return_i64(call, -3);
    if (!before.quick || !after.quick)
        return cf_return_i64(call, 0);
    return cf_return_i64(call, after.submit_skips == before.submit_skips ? 1 : 2);
}

/* A worker's submit to its own pool never leaves its wake-up out, even
 * while calls are short: the worker may go on to wait for the call it
 * queued (as t_submit_to_own_pool does), and then no worker of the pool
 * but the sentry would be awake to run it. */
static void test_short_calls_worker_submit_wakes(void **state)
{
    (void)state;
    atomic_store(&cf__test_hook_short_calls, true);
    cf_executor *ex = pool_new(4);
    double end = cf_test_now() + 10 * cf_test_scale();
    int checked = 0;
    for (int64_t round = 0; checked < SHORT_CHECKS && cf_test_now() < end; round++) {
        short_burst(ex, round);
        cf_test_event go;
        cf_test_event_init(&go);
        cf_future *parent = NULL;
        assert_ok(cf_submit(ex, t_submit_to_own_pool, CF_ARGS(cf_ptr(ex), cf_ptr(&go)),
                            &parent));
        cf_test_event_set(&go);
        int64_t r = -9;
        assert_ok(cf_future_result_i64(parent, 20 * cf_test_scale(), &r));
        assert_ok(cf_future_release(parent));
        if (r < 0)
            fail_msg("round %lld: the call submitting to its own pool failed (%lld)",
                     (long long)round, (long long)r);
        if (r == 2)
            fail_msg("round %lld: a worker's submit to its own pool left its wake-up out",
                     (long long)round);
        checked += r == 1;
    }
    if (checked < SHORT_CHECKS)
        fail_msg("calls counted as short around only %d of the workers' submits in %d s",
                 checked, 10 * cf_test_scale());
    assert_ok(cf_executor_destroy(ex));
    atomic_store(&cf__test_hook_short_calls, false);
}

/* ---- trailing a submitter (thread_pool.c) ---- */

#define TRAIL_CALLS 300
static _Atomic int64_t trail_published; /* the last call number submitted */

/* Call i returns once call i + 1 is queued (-1 after 10 s). */
static int t_wait_for_successor(cf_call *call)
{
    int64_t i = cf_arg_i64(call, 0);
    double end = cf_test_now() + 10 * cf_test_scale();
    while (atomic_load(&trail_published) <= i) {
        if (cf_test_now() > end)
            return cf_return_i64(call, -1);
        sched_yield();
    }
    return cf_return_i64(call, i);
}

/* Runs TRAIL_CALLS calls on a one-worker pool in lockstep with this
 * thread so that the worker always trails it: call i + 1 is submitted
 * while call i runs, and call i + 2 only once i + 1 has started.  So each
 * time the worker comes back from a call it finds exactly one queued,
 * pushed by another thread, and never finds the queue empty.  With
 * `low`, a call of a lower priority stays queued behind them all the
 * while.  Returns the pool's count of pauses. */
static unsigned lockstep_slips(int64_t spin_ns, bool low)
{
    int64_t spin_before = cf__test_set_spin_ns(spin_ns);
    cf_executor *ex = pool_new(1);
    atomic_store(&trail_published, -1);
    cf_future *fs[TRAIL_CALLS], *low_f = NULL;
    for (int64_t i = 0; i < TRAIL_CALLS; i++) {
        if (i == 1 && low) {
            cf_submit_options o;
            cf_submit_options_init(&o);
            o.priority = -1;
            assert_ok(cf_submit_with(ex, &o, t_square, CF_ARGS(cf_i64(5)), &low_f));
        }
        assert_ok(cf_submit(ex, t_wait_for_successor, CF_ARGS(cf_i64(i)), &fs[i]));
        atomic_store(&trail_published, i);
        double end = cf_test_now() + 10 * cf_test_scale();
        while (!cf_future_running(fs[i]) && !cf_future_done(fs[i])) {
            if (cf_test_now() > end)
                fail_msg("call %lld did not start in %d s", (long long)i, 10 * cf_test_scale());
            sched_yield();
        }
    }
    atomic_store(&trail_published, TRAIL_CALLS);
    for (int64_t i = 0; i < TRAIL_CALLS; i++) {
        int64_t x = -9;
        assert_ok(cf_future_result_i64(fs[i], 10 * cf_test_scale(), &x));
        assert_int_equal(x, i);
        assert_ok(cf_future_release(fs[i]));
    }
    if (low_f) {
        int64_t x = -9;
        assert_ok(cf_future_result_i64(low_f, 10 * cf_test_scale(), &x));
        assert_int_equal(x, 25);
        assert_ok(cf_future_release(low_f));
    }
    unsigned slips = cf__thread_pool_short_calls(ex).slips;
    assert_ok(cf_executor_destroy(ex));
    cf__test_set_spin_ns(spin_before);
    return slips;
}

/* A worker that keeps taking the one call queued, pushed by another
 * thread, pauses before its next look once it has taken CF__SLIP_RUN
 * calls without finding the queue empty.  Here the submitter cannot get
 * ahead (it waits for each call to start), so after each pause the worker
 * finds one call queued again: the pause did not help, and the next needs
 * twice the run (CF__SLIP_RUN, then 2x, 4x ...): in TRAIL_CALLS = 300
 * calls, a pause after about 64 and after about 64 + 128, not one per
 * call.  With no spinning (one CPU, CF_SPIN_NS=0) it never pauses, nor
 * while calls of another priority are in use (one is queued behind them
 * all the while). */
static void test_trailing_worker_slips(void **state)
{
    (void)state;
    unsigned slips = lockstep_slips(5000, false);
    if (slips < 1 || slips > 3)
        fail_msg("a worker trailing a submitter that cannot get ahead paused %u times in %d "
                 "calls, want 1 to 3",
                 slips, TRAIL_CALLS);
    assert_int_equal(lockstep_slips(0, false), 0);
    assert_int_equal(lockstep_slips(5000, true), 0);
}

static cf_test_event chain_end;

/* Call i submits call i + 1 to its own pool, up to TRAIL_CALLS calls. */
static int t_chain(cf_call *call)
{
    cf_executor *ex = cf_arg_ptr(call, 0);
    int64_t i = cf_arg_i64(call, 1);
    if (i + 1 == TRAIL_CALLS) {
        cf_test_event_set(&chain_end);
        return cf_return_i64(call, i);
    }
    cf_future *f = NULL;
    if (cf_submit(ex, t_chain, CF_ARGS(cf_ptr(ex), cf_i64(i + 1)), &f) != CF_OK)
        return cf_return_i64(call, -1); /* the chain stops: the wait below fails */
    cf_future_release(f);
    return cf_return_i64(call, i);
}

/* A chain of calls, each submitting the next to its own pool, also leaves
 * its worker one call queued each time it comes back; but the worker
 * pushed it itself, on its own CPU, so it never pauses. */
static void test_chain_does_not_slip(void **state)
{
    (void)state;
    int64_t spin_before = cf__test_set_spin_ns(5000);
    cf_executor *ex = pool_new(1);
    cf_test_event_init(&chain_end);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_chain, CF_ARGS(cf_ptr(ex), cf_i64(0)), &f));
    assert_true(cf_test_event_wait(&chain_end, 10));
    int64_t x = -9;
    assert_ok(cf_future_result_i64(f, 10 * cf_test_scale(), &x));
    assert_int_equal(x, 0);
    assert_ok(cf_future_release(f));
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(cf__thread_pool_short_calls(ex).slips, 0);
    assert_ok(cf_executor_destroy(ex));
    cf__test_set_spin_ns(spin_before);
}

/* A sentry that sees no wake-up left out or wanted, and nothing queued,
 * gives the role up (after about 55 ms of slowing looks), so an idle
 * pool has no thread waking on a timer.  Bursts of short calls make one;
 * then the pool idles, and the role must be free within 5 s. */
static void test_short_calls_sentry_gives_up_when_idle(void **state)
{
    (void)state;
    atomic_store(&cf__test_hook_short_calls, true);
    cf_executor *ex = pool_new(4);
    double end = cf_test_now() + 10 * cf_test_scale();
    cf__short_calls sc = {0};
    for (int64_t round = 0; !(sc.watching && sc.quick) && cf_test_now() < end; round++) {
        short_burst(ex, round);
        sc = cf__thread_pool_short_calls(ex);
    }
    if (!(sc.watching && sc.quick))
        fail_msg("no sentry counted the calls as short in %d s", 10 * cf_test_scale());
    end = cf_test_now() + 5 * cf_test_scale();
    while ((sc = cf__thread_pool_short_calls(ex)).watching && cf_test_now() < end)
        sleep_ms(5);
    if (sc.watching)
        fail_msg("an idle pool's sentry still watched after %d s", 5 * cf_test_scale());
    assert_false(sc.quick);
    assert_ok(cf_executor_destroy(ex));
    atomic_store(&cf__test_hook_short_calls, false);
}

static int t_sleep_1ms(cf_call *call)
{
    sleep_ms(1);
    return cf_return_i64(call, 1);
}

/* Calls that take a millisecond are not short: no wake-up is ever left
 * out, so a call queued behind a blocking one never waits for the
 * sentry.  Pairs of calls keep one worker busy while the other is
 * submitted, which is when a wake-up could be left out. */
static void test_long_calls_keep_every_wakeup(void **state)
{
    (void)state;
    setenv("CF_SPIN_NS", "0", 1);
    cf_executor *ex = pool_new(4);
    for (int round = 0; round < 200; round++) {
        cf_future *fs[2];
        for (int i = 0; i < 2; i++)
            assert_ok(cf_submit(ex, t_sleep_1ms, NULL, 0, &fs[i]));
        for (int i = 0; i < 2; i++) {
            assert_ok(cf_future_result(fs[i], 10 * cf_test_scale(), NULL));
            assert_ok(cf_future_release(fs[i]));
        }
    }
    cf__short_calls sc = cf__thread_pool_short_calls(ex);
    assert_int_equal(sc.submit_skips + sc.worker_skips, 0);
    assert_false(sc.quick);
    assert_ok(cf_executor_destroy(ex));
}

static void test_max_workers_respected(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    blocker b;
    blocker_init(&b);
    enum { N = 20 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b), cf_i64(i)), &fs[i]));
    assert_true(blocker_wait_started(&b, 4, 5));
    sleep_ms(50); /* a fifth task, if wrongly started, gets time to show up */
    assert_int_equal(blocker_get(&b, &b.started), 4);
    assert_int_equal(cf_executor_worker_count(ex), 4);
    blocker_release(&b);
    for (int i = 0; i < N; i++) {
        int64_t x = -1;
        assert_ok(cf_future_result_i64(fs[i], 10, &x));
        assert_int_equal(x, i);
        assert_ok(cf_future_release(fs[i]));
    }
    assert_int_equal(blocker_get(&b, &b.started), N);
    assert_true(blocker_get(&b, &b.max_running) <= 4);
    assert_true(cf_executor_worker_count(ex) <= 4);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_default_pool_runs_many(void **state)
{
    (void)state;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, NULL));
    enum { N = 200 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &fs[i]));
    for (int i = 0; i < N; i++) {
        int64_t x = -1;
        assert_ok(cf_future_result_i64(fs[i], 10, &x));
        assert_int_equal(x, (int64_t)i * i);
        assert_ok(cf_future_release(fs[i]));
    }
    assert_true(cf_executor_worker_count(ex) <= cf_thread_pool_default_workers());
    assert_true(cf_executor_worker_count(ex) >= 1);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- initializer --------------------------------------------------------------------- */

typedef struct {
    atomic_int calls;
    atomic_int bad_arg;
    atomic_int bad_name;
    int fail;
} init_state;

static int count_init(void *arg)
{
    init_state *s = (init_state *)arg;
    atomic_fetch_add(&s->calls, 1);
    if (strncmp(cf_thread_name(), "initpool_", 9) != 0)
        atomic_fetch_add(&s->bad_name, 1);
    return s->fail;
}

static void test_initializer_once_per_worker(void **state)
{
    (void)state;
    init_state s;
    atomic_init(&s.calls, 0);
    atomic_init(&s.bad_arg, 0);
    atomic_init(&s.bad_name, 0);
    s.fail = 0;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 3;
    o.thread_name_prefix = "initpool";
    o.initializer = count_init;
    o.initarg = &s;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    assert_int_equal(atomic_load(&s.calls), 0);
    blocker b;
    blocker_init(&b);
    cf_future *fs[3];
    blocker_submit_held(ex, &b, fs, 3);
    assert_int_equal(atomic_load(&s.calls), 3);
    blocker_release(&b);
    for (int i = 0; i < 3; i++) {
        assert_ok(cf_future_result(fs[i], 10, NULL));
        assert_ok(cf_future_release(fs[i]));
    }
    /* more work on the same threads: no more initializer calls */
    for (int i = 0; i < 30; i++) {
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &f));
        assert_ok(cf_future_result(f, 10, NULL));
        assert_ok(cf_future_release(f));
    }
    assert_int_equal(atomic_load(&s.calls), cf_executor_worker_count(ex));
    assert_int_equal(atomic_load(&s.calls), 3);
    assert_int_equal(atomic_load(&s.bad_name), 0);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_initializer_failure_breaks_pool(void **state)
{
    (void)state;
    init_state s;
    atomic_init(&s.calls, 0);
    atomic_init(&s.bad_arg, 0);
    atomic_init(&s.bad_name, 0);
    s.fail = -1;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 2;
    o.thread_name_prefix = "initpool";
    o.initializer = count_init;
    o.initarg = &s;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    cap_install(); /* the break may be logged; keep stderr quiet */
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f));
    assert_non_null(f);
    assert_cf(CF_EBROKEN, cf_future_result(f, 10, NULL));
    const cf_failure *fail = NULL;
    assert_ok(cf_future_exception(f, 0, &fail));
    assert_non_null(fail);
    assert_int_equal(cf_failure_code(fail), CF_EBROKEN);
    assert_true(cf_future_done(f));
    assert_false(cf_future_cancelled(f));

    /* later submits fail and create nothing */
    for (int i = 0; i < 3; i++) {
        cf_future *g = NULL;
        assert_cf(CF_EBROKEN, cf_submit(ex, t_square, CF_ARGS(cf_i64(1)), &g));
        assert_null(g);
    }
    assert_true(atomic_load(&s.calls) >= 1);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
    cap_restore();
}

static void test_initializer_failure_fails_queued(void **state)
{
    (void)state;
    init_state s;
    atomic_init(&s.calls, 0);
    atomic_init(&s.bad_arg, 0);
    atomic_init(&s.bad_name, 0);
    s.fail = 1;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 1;
    o.initializer = count_init;
    o.initarg = &s;
    o.thread_name_prefix = "initpool";
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    cap_install();
    cf_future *fs[10];
    int n = 0;
    for (int i = 0; i < 10; i++) {
        cf_future *g = NULL;
        int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &g);
        if (rc == CF_OK) {
            assert_non_null(g);
            fs[n++] = g;
        } else {
            assert_int_equal(rc, CF_EBROKEN);
            assert_null(g);
        }
    }
    assert_true(n >= 1);
    for (int i = 0; i < n; i++) {
        assert_cf(CF_EBROKEN, cf_future_result(fs[i], 10, NULL));
        assert_ok(cf_future_release(fs[i]));
    }
    assert_ok(cf_executor_destroy(ex));
    cap_restore();
}

/* ---- shutdown ----------------------------------------------------------------------- */

static void test_submit_after_shutdown(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(5)), &f));
    assert_ok(cf_shutdown(ex, true, false));
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 0, &x)); /* done already: wait=true */
    assert_int_equal(x, 25);
    cf_future *g = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(5)), &g));
    assert_null(g);
    assert_true(strlen(cf_last_error_message()) > 0);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static atomic_int g_slow_done;

static int t_slow_count(cf_call *call)
{
    sleep_ms(5);
    atomic_fetch_add(&g_slow_done, 1);
    return cf_return_i64(call, cf_arg_i64(call, 0));
}

static void test_shutdown_wait_waits_for_all(void **state)
{
    (void)state;
    atomic_store(&g_slow_done, 0);
    cf_executor *ex = pool_new(2);
    enum { N = 12 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, t_slow_count, CF_ARGS(cf_i64(i)), &fs[i]));
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(atomic_load(&g_slow_done), N);
    assert_int_equal(cf_executor_worker_count(ex), 0);
    for (int i = 0; i < N; i++) {
        assert_true(cf_future_done(fs[i]));
        int64_t x = -1;
        assert_ok(cf_future_result_i64(fs[i], 0, &x));
        assert_int_equal(x, i);
        assert_ok(cf_future_release(fs[i]));
    }
    assert_ok(cf_executor_destroy(ex));
}

static void test_shutdown_cancel_futures(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *running = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b), cf_i64(11)), &running));
    assert_true(blocker_wait_started(&b, 1, 5));
    cf_future *queued[5];
    for (int i = 0; i < 5; i++)
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b), cf_i64(i)), &queued[i]));
    double t0 = cf_test_now();
    assert_ok(cf_shutdown(ex, false, true));
    assert_true(cf_test_now() - t0 < 2.0 * cf_test_scale()); /* did not wait */
    for (int i = 0; i < 5; i++) {
        assert_true(cf_future_cancelled(queued[i]));
        assert_cf(CF_ECANCELLED, cf_future_result(queued[i], 0, NULL));
    }
    assert_true(cf_future_running(running));
    assert_false(cf_future_done(running));
    blocker_release(&b);
    int64_t x = 0;
    assert_ok(cf_future_result_i64(running, 10, &x));
    assert_int_equal(x, 11);
    /* idempotent; a later call may still wait */
    assert_ok(cf_shutdown(ex, true, false));
    assert_ok(cf_shutdown(ex, true, true));
    assert_int_equal(cf_executor_worker_count(ex), 0);
    assert_int_equal(blocker_get(&b, &b.started), 1); /* queued ones never ran */
    cf_future *g = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(1)), &g));
    assert_null(g);
    assert_ok(cf_future_release(running));
    for (int i = 0; i < 5; i++)
        assert_ok(cf_future_release(queued[i]));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_shutdown_later_call_cancels(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *running = NULL, *queued[3];
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &running));
    assert_true(blocker_wait_started(&b, 1, 5));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &queued[i]));
    assert_ok(cf_shutdown(ex, false, false));
    for (int i = 0; i < 3; i++)
        assert_false(cf_future_done(queued[i]));
    assert_ok(cf_shutdown(ex, false, true)); /* the second call cancels */
    for (int i = 0; i < 3; i++)
        assert_true(cf_future_cancelled(queued[i]));
    blocker_release(&b);
    assert_ok(cf_shutdown(ex, true, false));
    assert_ok(cf_future_result(running, 0, NULL));
    assert_int_equal(blocker_get(&b, &b.started), 1);
    assert_ok(cf_future_release(running));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_release(queued[i]));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_shutdown_idempotent_and_null(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    assert_ok(cf_shutdown(ex, false, false));
    assert_ok(cf_shutdown(ex, false, false));
    assert_ok(cf_shutdown(ex, true, false));
    assert_ok(cf_shutdown(ex, true, true));
    assert_cf(CF_EINVAL, cf_shutdown(NULL, true, false));
    assert_ok(cf_executor_destroy(ex));
    assert_ok(cf_executor_destroy(NULL));
}

static void test_shutdown_unused_pool(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(3);
    assert_ok(cf_shutdown(ex, true, true));
    assert_int_equal(cf_executor_worker_count(ex), 0);
    assert_ok(cf_executor_destroy(ex));
}

static int t_shutdown_self_wait(cf_call *call)
{
    cf_executor *ex = cf_arg_ptr(call, 0);
    return cf_return_i64(call, cf_shutdown(ex, true, false));
}

static int t_shutdown_self_nowait(cf_call *call)
{
    cf_executor *ex = cf_arg_ptr(call, 0);
    return cf_return_i64(call, cf_shutdown(ex, false, false));
}

static int t_destroy_self(cf_call *call)
{
    cf_executor *ex = cf_arg_ptr(call, 0);
    return cf_return_i64(call, cf_executor_destroy(ex));
}

static void test_shutdown_wait_from_own_worker(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_shutdown_self_wait, CF_ARGS(cf_ptr(ex)), &f));
    int64_t rc = 0;
    assert_ok(cf_future_result_i64(f, 10, &rc));
    assert_int_equal(rc, CF_EDEADLK);
    /* the shutdown was still signalled */
    cf_future *g = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &g));
    assert_null(g);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_shutdown_nowait_from_own_worker(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_shutdown_self_nowait, CF_ARGS(cf_ptr(ex)), &f));
    int64_t rc = -100;
    assert_ok(cf_future_result_i64(f, 10, &rc));
    assert_int_equal(rc, CF_OK);
    cf_future *g = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &g));
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_destroy_from_own_worker(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_destroy_self, CF_ARGS(cf_ptr(ex)), &f));
    int64_t rc = 0;
    assert_ok(cf_future_result_i64(f, 10, &rc));
    assert_int_equal(rc, CF_EDEADLK);
    /* nothing was freed: the handle is still usable (a submit either runs
     * or reports the shutdown destroy may have signalled) */
    cf_future *g = NULL;
    int rc2 = cf_submit(ex, t_square, CF_ARGS(cf_i64(6)), &g);
    if (rc2 == CF_OK) {
        int64_t x = 0;
        assert_ok(cf_future_result_i64(g, 10, &x));
        assert_int_equal(x, 36);
        assert_ok(cf_future_release(g));
    } else {
        assert_int_equal(rc2, CF_ESHUTDOWN);
        assert_null(g);
    }
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_destroy_waits_for_pending(void **state)
{
    (void)state;
    atomic_store(&g_slow_done, 0);
    cf_executor *ex = pool_new(2);
    enum { N = 10 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, t_slow_count, CF_ARGS(cf_i64(i * 3)), &fs[i]));
    assert_ok(cf_executor_destroy(ex));
    assert_int_equal(atomic_load(&g_slow_done), N);
    /* futures outlive the executor */
    for (int i = 0; i < N; i++) {
        int64_t x = -1;
        assert_ok(cf_future_result_i64(fs[i], 0, &x));
        assert_int_equal(x, i * 3);
        char buf[128];
        assert_true(cf_future_format(fs[i], buf, sizeof buf) > 0);
        assert_ok(cf_future_release(fs[i]));
    }
}

static void test_with_executor_scope(void **state)
{
    (void)state;
    atomic_store(&g_slow_done, 0);
    cf_future *fs[6];
    {
        CF_WITH_EXECUTOR(ex);
        assert_ok(cf_thread_pool_new(&ex, NULL));
        for (int i = 0; i < 6; i++)
            assert_ok(cf_submit(ex, t_slow_count, CF_ARGS(cf_i64(i)), &fs[i]));
    } /* waits for pending calls, then frees */
    assert_int_equal(atomic_load(&g_slow_done), 6);
    for (int i = 0; i < 6; i++) {
        assert_true(cf_future_done(fs[i]));
        assert_ok(cf_future_release(fs[i]));
    }
    {
        CF_WITH_EXECUTOR(unused); /* never created: a no-op at scope exit */
        assert_null(unused);
    }
}

static void test_release_future_before_completion(void **state)
{
    (void)state;
    atomic_store(&g_slow_done, 0);
    cf_executor *ex = pool_new(2);
    for (int i = 0; i < 8; i++) {
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, t_slow_count, CF_ARGS(cf_i64(i)), &f));
        assert_ok(cf_future_release(f)); /* the pool keeps its own reference */
    }
    assert_ok(cf_executor_destroy(ex));
    assert_int_equal(atomic_load(&g_slow_done), 8);
}

static void test_cancel_queued_future(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *first = NULL, *second = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &first));
    assert_true(blocker_wait_started(&b, 1, 5));
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &second));
    assert_true(cf_future_running(first));
    assert_false(cf_future_cancel(first));
    assert_true(cf_future_cancel(second));
    assert_true(cf_future_done(second)); /* done at once */
    assert_cf(CF_ECANCELLED, cf_future_result(second, 0, NULL));
    blocker_release(&b);
    assert_ok(cf_future_result(first, 10, NULL));
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(blocker_get(&b, &b.started), 1);
    assert_true(cf_future_cancelled(second));
    assert_ok(cf_future_release(first));
    assert_ok(cf_future_release(second));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static int t_nested_submit(cf_call *call)
{
    cf_executor *ex = cf_arg_ptr(call, 0);
    cf_future *inner = NULL;
    int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(cf_arg_i64(call, 1))), &inner);
    if (rc != CF_OK)
        return cf_raise(call, rc, "SubmitError", "%s", cf_strerror(rc));
    int64_t x = 0;
    rc = cf_future_result_i64(inner, 10, &x);
    cf_future_release(inner);
    if (rc != CF_OK)
        return cf_raise(call, rc, "ResultError", "%s", cf_strerror(rc));
    return cf_return_i64(call, x + 1);
}

static void test_submit_from_task(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_nested_submit, CF_ARGS(cf_ptr(ex), cf_i64(7)), &f));
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 10, &x));
    assert_int_equal(x, 50);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

typedef struct {
    char name[128];
    atomic_int calls;
} cb_name;

static int record_thread_cb(cf_future *f, void *arg)
{
    (void)f;
    cb_name *c = (cb_name *)arg;
    snprintf(c->name, sizeof c->name, "%s", cf_thread_name());
    atomic_fetch_add(&c->calls, 1);
    return 0;
}

static void test_callback_runs_in_worker(void **state)
{
    (void)state;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 1;
    o.thread_name_prefix = "cbworker";
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    blocker b;
    blocker_init(&b);
    cb_name c;
    c.name[0] = '\0';
    atomic_init(&c.calls, 0);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &f));
    assert_ok(cf_future_add_done_callback(f, record_thread_cb, &c));
    blocker_release(&b);
    assert_ok(cf_future_result(f, 10, NULL));
    assert_ok(cf_shutdown(ex, true, false)); /* callbacks have run */
    assert_int_equal(atomic_load(&c.calls), 1);
    assert_string_equal(c.name, "cbworker_0");
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* ---- races ------------------------------------------------------------------------- */

typedef struct {
    cf_executor *ex;
    cf_future *fs[400];
    int nok;
    int nshut;
    int other;
    int ok_after_shutdown; /* CF_OK after a CF_ESHUTDOWN was seen */
    atomic_int *progress;
} submitter;

static void submit_loop(void *arg)
{
    submitter *s = (submitter *)arg;
    for (int i = 0; i < 400; i++) {
        cf_future *f = NULL;
        int rc = cf_submit(s->ex, t_square, CF_ARGS(cf_i64(i)), &f);
        if (rc == CF_OK) {
            if (s->nshut)
                s->ok_after_shutdown++;
            s->fs[s->nok++] = f;
        } else if (rc == CF_ESHUTDOWN) {
            if (f != NULL)
                s->other++;
            s->nshut++;
        } else {
            s->other++;
        }
        atomic_fetch_add(s->progress, 1);
    }
}

static void shutdown_race(bool wait, bool cancel)
{
    cf_executor *ex = pool_new(3);
    atomic_int progress;
    atomic_init(&progress, 0);
    enum { T = 4 };
    submitter *s = calloc(T, sizeof *s);
    assert_non_null(s);
    bg_thread th[T];
    for (int i = 0; i < T; i++) {
        s[i].ex = ex;
        s[i].progress = &progress;
        bg_start(&th[i], submit_loop, &s[i]);
    }
    double end = cf_test_now() + 5.0 * cf_test_scale();
    while (atomic_load(&progress) < 100 && cf_test_now() < end)
        sleep_ms(1);
    assert_ok(cf_shutdown(ex, wait, cancel));
    for (int i = 0; i < T; i++)
        bg_join(&th[i], 20);
    if (!wait)
        assert_ok(cf_shutdown(ex, true, false));
    int total_ok = 0, total_shut = 0;
    for (int i = 0; i < T; i++) {
        assert_int_equal(s[i].other, 0);
        assert_int_equal(s[i].ok_after_shutdown, 0);
        total_ok += s[i].nok;
        total_shut += s[i].nshut;
        for (int k = 0; k < s[i].nok; k++) {
            cf_future *f = s[i].fs[k];
            /* every accepted call finished or was cancelled: nothing lost */
            assert_true(cf_future_done(f));
            int rc = cf_future_result(f, 0, NULL);
            if (cancel)
                assert_true(rc == CF_OK || rc == CF_ECANCELLED);
            else
                assert_ok(rc);
            assert_ok(cf_future_release(f));
        }
    }
    assert_int_equal(total_ok + total_shut, T * 400);
    assert_true(total_ok >= 100); /* counted before shutdown was called */
    assert_int_equal(cf_executor_worker_count(ex), 0);
    assert_ok(cf_executor_destroy(ex));
    free(s);
}

static void test_race_shutdown_wait_vs_submit(void **state)
{
    (void)state;
    shutdown_race(true, false);
}

static void test_race_shutdown_cancel_vs_submit(void **state)
{
    (void)state;
    shutdown_race(false, true);
}

typedef struct {
    cf_future **fs;
    size_t n;
    int rc;
    size_t ndone, nnot;
} wait_all_arg;

static void wait_all_thread(void *arg)
{
    wait_all_arg *w = (wait_all_arg *)arg;
    w->rc = cf_wait(w->fs, w->n, CF_FOREVER, CF_ALL_COMPLETED, NULL, &w->ndone, NULL, &w->nnot);
}

typedef struct {
    cf_future **fs;
    size_t n;
    int create_rc;
    int yielded;
    int distinct_ok;
    int end_rc;
} ac_arg;

static void as_completed_thread(void *arg)
{
    ac_arg *a = (ac_arg *)arg;
    cf_as_completed_iter *it = NULL;
    a->create_rc = cf_as_completed(a->fs, a->n, CF_FOREVER, &it);
    if (a->create_rc != CF_OK)
        return;
    bool *seen = calloc(a->n, sizeof *seen);
    a->distinct_ok = 1;
    cf_future *f;
    int rc;
    while ((rc = cf_as_completed_next(it, &f)) == CF_OK) {
        a->yielded++;
        size_t k;
        for (k = 0; k < a->n; k++)
            if (a->fs[k] == f)
                break;
        if (k == a->n || seen[k] || !cf_future_done(f))
            a->distinct_ok = 0;
        else
            seen[k] = true;
    }
    a->end_rc = rc;
    free(seen);
    cf_as_completed_free(it);
}

static void test_many_complete_at_once_with_waiters(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(32);
    blocker b;
    blocker_init(&b);
    enum { N = 100 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b), cf_i64(i)), &fs[i]));
    wait_all_arg w = {fs, N, -100, 0, 0};
    ac_arg a = {fs, N, -100, 0, 0, -100};
    bg_thread tw, ta;
    bg_start(&tw, wait_all_thread, &w);
    bg_start(&ta, as_completed_thread, &a);
    assert_true(blocker_wait_started(&b, 32, 10));
    sleep_ms(30); /* let both waiters block (not needed for correctness) */
    assert_false(cf_test_event_is_set(&tw.done));
    blocker_release(&b);
    bg_join(&tw, 20);
    bg_join(&ta, 20);
    assert_ok(w.rc);
    assert_int_equal(w.ndone, N);
    assert_int_equal(w.nnot, 0);
    assert_ok(a.create_rc);
    assert_int_equal(a.yielded, N);
    assert_int_equal(a.distinct_ok, 1);
    assert_int_equal(a.end_rc, CF_EDONE);
    for (int i = 0; i < N; i++) {
        int64_t x = -1;
        assert_ok(cf_future_result_i64(fs[i], 0, &x));
        assert_int_equal(x, i);
        assert_ok(cf_future_release(fs[i]));
    }
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* ---- bad arguments ----------------------------------------------------------------- */

static void test_submit_bad_arguments(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    cf_future *f = NULL;
    assert_cf(CF_EINVAL, cf_submit(NULL, t_square, CF_ARGS(cf_i64(1)), &f));
    assert_null(f);
    assert_cf(CF_EINVAL, cf_submit(ex, NULL, CF_ARGS(cf_i64(1)), &f));
    assert_null(f);
    assert_cf(CF_EINVAL, cf_submit(ex, t_square, CF_ARGS(cf_i64(1)), NULL));
    assert_cf(CF_EINVAL, cf_submit(ex, t_square, NULL, 2, &f));
    assert_null(f);
    cf_value many[CF_ARGS_MAX + 5];
    for (int i = 0; i < CF_ARGS_MAX + 5; i++)
        many[i] = cf_i64(i);
    assert_cf(CF_EINVAL, cf_submit(ex, t_sum, many, CF_ARGS_MAX + 1, &f));
    assert_null(f);
    assert_cf(CF_EINVAL, cf_submit(ex, t_sum, many, CF_ARGS_MAX + 5, &f));
    assert_null(f);
    cf_value weird = cf_i64(1);
    weird.kind = (cf_kind)99;
    assert_cf(CF_EINVAL, cf_submit(ex, t_echo, &weird, 1, &f));
    assert_null(f);
    /* the executor is unharmed */
    assert_ok(cf_submit(ex, t_sum, many, 3, &f));
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 10, &x));
    assert_int_equal(x, 3);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_submit_too_big(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    static const char small[8] = "tiny";
    cf_future *f = NULL;
    /* fake sizes with a small buffer: must be rejected before copying */
    assert_cf(CF_ETOOBIG, cf_submit(ex, t_echo, CF_ARGS(cf_bytes(small, CF_PAYLOAD_MAX + 1)), &f));
    assert_null(f);
    assert_cf(CF_ETOOBIG, cf_submit(ex, t_echo, CF_ARGS(cf_bytes(small, SIZE_MAX)), &f));
    assert_null(f);
    /* each within the limit, together far above it */
    assert_cf(CF_ETOOBIG,
              cf_submit(ex, t_echo,
                        CF_ARGS(cf_bytes(small, CF_PAYLOAD_MAX / 2 + 4096),
                                cf_str("x"),
                                cf_bytes(small, CF_PAYLOAD_MAX / 2 + 4096)),
                        &f));
    assert_null(f);
    assert_cf(CF_ETOOBIG,
              cf_submit(ex, t_echo,
                        CF_ARGS(cf_i64(0), cf_bytes(small, SIZE_MAX / 2 + 1),
                                cf_bytes(small, SIZE_MAX / 2 + 1)),
                        &f));
    assert_null(f);
    assert_int_equal(cf_executor_worker_count(ex), 0); /* nothing ran */
    assert_ok(cf_executor_destroy(ex));
}

static void test_submit_too_big_sum_boundary(void **state)
{
    (void)state;
    /* Two arguments of CF_PAYLOAD_MAX/2 + 1 bytes: each is allowed, their
     * sum is 2 bytes over the limit, so the call is CF_ETOOBIG.  (Fake sizes
     * over a tiny buffer: an implementation that accepts them reads far past
     * it and crashes.) */
    cf_executor *ex = pool_new(1);
    static const char small[8] = "tiny";
    cf_future *f = NULL;
    assert_cf(CF_ETOOBIG,
              cf_submit(ex, t_echo,
                        CF_ARGS(cf_bytes(small, CF_PAYLOAD_MAX / 2 + 1),
                                cf_bytes(small, CF_PAYLOAD_MAX / 2 + 1)),
                        &f));
    assert_null(f);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- regressions found in review ---------------------------------------- */

typedef struct cb_submit_ctx {
    cf_executor *ex;
    int inner_rc;
    int64_t inner_value;
    cf_test_event submitted; /* the callback's cf_submit() has returned */
} cb_submit_ctx;

/* Runs on the worker that finished the outer call: submits to the same
 * pool and waits.  The pool must start another thread for it (CPython's
 * worker only counts as idle once its callbacks are done). */
static int cb_submit_and_wait(cf_future *f, void *arg)
{
    (void)f;
    cb_submit_ctx *c = arg;
    cf_future *inner = NULL;
    c->inner_rc = cf_submit(c->ex, t_square, CF_ARGS(cf_i64(9)), &inner);
    cf_test_event_set(&c->submitted);
    if (c->inner_rc == CF_OK) {
        c->inner_rc = cf_future_result_i64(inner, 5.0 * cf_test_scale(), &c->inner_value);
        cf_future_release(inner);
    }
    return 0;
}

static void test_callback_submitting_to_own_pool_gets_a_thread(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    blocker b;
    blocker_init(&b);
    cb_submit_ctx ctx = {ex, CF_EINVAL, 0, CF_TEST_EVENT_INIT};
    cf_future *outer = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &outer));
    assert_true(blocker_wait_started(&b, 1, 5.0));
    /* Registered while the call runs, so the callback runs on the worker. */
    assert_ok(cf_future_add_done_callback(outer, cb_submit_and_wait, &ctx));
    blocker_release(&b);
    assert_ok(cf_future_result(outer, 10.0 * cf_test_scale(), NULL));
    /* result() returns once the future is done, which is before its
     * callbacks run: shutting down now would race the callback's submit. */
    assert_true(cf_test_event_wait(&ctx.submitted, 10.0));
    assert_ok(cf_executor_destroy(ex)); /* waits for the callback too */
    assert_cf(CF_OK, ctx.inner_rc);
    assert_int_equal(ctx.inner_value, 81);
    cf_future_release(outer);
    blocker_destroy(&b);
}

static int t_return_long_after_release(cf_call *call)
{
    blocker *b = (blocker *)cf_arg_ptr(call, 0);
    int rc = t_block(call);
    (void)b;
    if (rc != 0)
        return rc;
    return cf_return_str(call, "TASK-WROTE-THIS");
}

/* The executor completes the futures it runs: a hand-made completion of a
 * running submitted future is refused instead of racing with the task. */
static void test_set_result_refused_while_executor_runs_it(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_return_long_after_release, CF_ARGS(cf_ptr(&b)), &f));
    assert_true(blocker_wait_started(&b, 1, 5.0));
    cf_value v = cf_str("set-by-hand");
    assert_cf(CF_EINVALSTATE, cf_future_set_result(f, &v));
    assert_cf(CF_EINVALSTATE, cf_future_set_exception(f, 1, "X", "by hand"));
    assert_true(cf_future_running(f));
    blocker_release(&b);
    const cf_value *out = NULL;
    assert_ok(cf_future_result(f, 10.0 * cf_test_scale(), &out));
    assert_string_equal(out->as.str, "TASK-WROTE-THIS");
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* A pending submitted future may still be completed by hand; the executor
 * then skips the call. */
/* ---- lock-free completion against waiters and callbacks ---------------------
 *
 * A worker ends a call without the future's lock unless a waiter or a
 * callback hooked the future first (future.c, "Lock-free completion").
 * Odd rounds hold the worker between the outcome and its CAS of the
 * state until a waiter, a callback or a completion queue has hooked the
 * future (seen in the state word), so the completion must notice the hook
 * and take the lock; even rounds let the two race freely.  A completion
 * that ignored the hook would leave the callback uncalled, the wait
 * hanging and the queue empty. */

typedef struct hook_race {
    atomic_int armed;           /* hold the next lock-free completion */
    _Atomic(cf_future *) held;  /* the future held at the hook, if any */
    cf_test_event at_finish;    /* the worker reached the hook */
    cf_test_event go;           /* the worker may go on */
    atomic_int calls;           /* callback calls this round */
    atomic_llong seen;          /* the result the callback read */
} hook_race;

static hook_race hr;

static void hold_until_go(cf_future *f)
{
    if (!atomic_exchange(&hr.armed, 0))
        return;
    atomic_store(&hr.held, f);
    cf_test_event_set(&hr.at_finish);
    /* Bounded: a test that fails to hook must not hang the worker. */
    cf_test_event_wait(&hr.go, 10.0 * cf_test_scale());
}

static int hook_race_cb(cf_future *f, void *arg)
{
    (void)arg;
    int64_t v = -1;
    if (cf_future_result_i64(f, 0, &v) != CF_OK)
        v = -2;
    atomic_store(&hr.seen, v);
    atomic_fetch_add(&hr.calls, 1);
    return 0;
}

/* Lets the held worker go once `f` shows CF__HOOKED (bounded). */
static void release_when_hooked(void *arg)
{
    cf_future *f = arg;
    double end = cf_test_now() + 10.0 * cf_test_scale();
    while (!(atomic_load(&f->state) & CF__HOOKED) && cf_test_now() < end)
        sched_yield();
    cf_test_event_set(&hr.go);
}

/* A round of the races below: hold the next lock-free completion or not. */
static void hr_round_begin(bool hold)
{
    cf_test_event_init(&hr.at_finish);
    cf_test_event_init(&hr.go);
    atomic_store(&hr.held, NULL);
    atomic_store(&hr.calls, 0);
    atomic_store(&hr.seen, -1);
    atomic_store(&hr.armed, hold ? 1 : 0);
}

static void hr_round_end(void)
{
    pthread_mutex_destroy(&hr.at_finish.mu);
    pthread_cond_destroy(&hr.at_finish.cv);
    pthread_mutex_destroy(&hr.go.mu);
    pthread_cond_destroy(&hr.go.cv);
}

/* Hooks f the way `mode` says (0 a callback, 1 cf_wait, 2 the completion
 * queue q) and checks that the completion was seen: the callback ran once
 * and read `round`, the wait returned f, the queue gave f. */
static void hook_and_check(cf_future *f, int mode, int round, cf_completion_queue *q)
{
    if (mode == 0) {
        assert_ok(cf_future_add_done_callback(f, hook_race_cb, NULL));
        double end = cf_test_now() + 10.0 * cf_test_scale();
        while (atomic_load(&hr.calls) == 0 && cf_test_now() < end)
            sched_yield();
        assert_int_equal(atomic_load(&hr.calls), 1);
        assert_int_equal(atomic_load(&hr.seen), round);
    } else if (mode == 1) {
        cf_future *done[1] = {NULL};
        size_t ndone = 0;
        assert_ok(cf_wait(&f, 1, 10.0 * cf_test_scale(), CF_FIRST_COMPLETED, done, &ndone,
                          NULL, NULL));
        assert_int_equal(ndone, 1);
        assert_ptr_equal(done[0], f);
    } else {
        assert_ok(cf_cq_add(q, f));
        cf_future *out = NULL;
        double end = cf_test_now() + 10.0 * cf_test_scale();
        while (cf_cq_pop(q, &out, 1) == 0 && cf_test_now() < end) {
            struct pollfd pfd = {.fd = cf_cq_fd(q), .events = POLLIN};
            poll(&pfd, 1, 100);
        }
        assert_ptr_equal(out, f);
        cf_future_release(out);
    }
}

/* One round's middle, once f's completion is under way: when `hold`,
 * waits until the completer is held with the outcome written and the
 * state still RUNNING, and lets it go once f is hooked; hooks f
 * (hook_and_check); checks f's result is `round`. */
static void race_round(cf_future *f, bool hold, int mode, int round, cf_completion_queue *q)
{
    bg_thread rel;
    if (hold) {
        assert_true(cf_test_event_wait(&hr.at_finish, 10.0 * cf_test_scale()));
        assert_ptr_equal(atomic_load(&hr.held), f);
        assert_int_equal(cf_future_state(f), CF_RUNNING);
        bg_start(&rel, release_when_hooked, f);
    }
    hook_and_check(f, mode, round, q);
    if (hold)
        bg_join(&rel, 10.0 * cf_test_scale());
    int64_t v = -1;
    assert_ok(cf_future_result_i64(f, 0, &v));
    assert_int_equal(v, round);
}

static void test_lockfree_completion_vs_hooks_race(void **state)
{
    (void)state;
    enum { ROUNDS = 600 };
    cf_executor *ex = pool_new(1);
    /* Start the only thread, so the pool counts no ended calls and its
     * worker ends calls lock-free. */
    assert_int_equal(run_i64(ex, t_echo, CF_ARGS(cf_i64(0))), 0);
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    atomic_store(&cf__test_hook_before_finish, hold_until_go);
    for (int round = 0; round < ROUNDS; round++) {
        int mode = round / 2 % 3; /* callback, cf_wait, completion queue */
        bool hold = round % 2 == 1;
        hr_round_begin(hold);
        cf_future *f;
        assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_i64(round)), &f));
        race_round(f, hold, mode, round, q);
        assert_ok(cf_future_release(f));
        hr_round_end();
    }
    atomic_store(&cf__test_hook_before_finish, NULL);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.succeeded, ROUNDS + 1);
    assert_int_equal(p.running, 0);
    cf_cq_destroy(q);
    assert_ok(cf_executor_destroy(ex));
}

/* The same race for an engine's one completer (the MPI manager), which
 * starts a call with cf__future_start_call() and ends it with an outcome
 * from elsewhere through cf__future_complete_owned(): a completer that
 * ignored a hook would leave the callback uncalled, the wait hanging and
 * the queue empty. */
typedef struct owned_completion {
    cf_future *f;
    int64_t value;
} owned_completion;

static void complete_owned_bg(void *arg)
{
    owned_completion *oc = arg;
    cf_value v = cf_i64(oc->value);
    assert_ok(cf__future_complete_owned(oc->f, CF_OK, &v, NULL, NULL));
}

static void test_owned_completion_vs_hooks_race(void **state)
{
    (void)state;
    enum { ROUNDS = 600 };
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    atomic_store(&cf__test_hook_before_finish, hold_until_go);
    for (int round = 0; round < ROUNDS; round++) {
        int mode = round / 2 % 3;
        bool hold = round % 2 == 1;
        hr_round_begin(hold);
        cf_future *f = cf__future_new_borrowed(t_echo, NULL, 0);
        assert_non_null(f);
        assert_int_equal(cf__future_start_call(f), 1);
        owned_completion oc = {f, round};
        bg_thread comp;
        bg_start(&comp, complete_owned_bg, &oc);
        race_round(f, hold, mode, round, q);
        bg_join(&comp, 10.0 * cf_test_scale());
        assert_ok(cf_future_release(f));
        hr_round_end();
    }
    atomic_store(&cf__test_hook_before_finish, NULL);
    cf_cq_destroy(q);
}

/* cf__future_complete_owned() keeps what the locked completion does: small
 * bytes copied inline, a failure with the status given, and a future
 * already done refused with nothing taken. */
static void test_owned_completion_outcomes(void **state)
{
    (void)state;
    cf_future *f = cf__future_new_borrowed(t_echo, NULL, 0);
    assert_non_null(f);
    assert_int_equal(cf__future_start_call(f), 1);
    char text[] = "abc";
    cf_value v = cf_bytes(text, 3);
    assert_ok(cf__future_complete_owned(f, CF_OK, &v, NULL, NULL));
    text[0] = 'x'; /* the result must not point here */
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, 0, &r));
    assert_int_equal(r->kind, CF_BYTES);
    assert_int_equal(r->size, 3);
    assert_memory_equal(r->as.bytes, "abc", 3);
    cf_failure *fl = cf__failure_new(7, "ValueError", "bad");
    assert_non_null(fl);
    assert_cf(CF_EINVALSTATE, cf__future_complete_owned(f, CF_ETASK, NULL, NULL, fl));
    cf__failure_free(fl); /* refused: still ours */
    assert_ok(cf_future_release(f));

    f = cf__future_new_borrowed(t_echo, NULL, 0);
    assert_non_null(f);
    assert_int_equal(cf__future_start_call(f), 1);
    fl = cf__failure_new(7, "ValueError", "bad");
    assert_non_null(fl);
    assert_ok(cf__future_complete_owned(f, CF_ETASK, NULL, NULL, fl));
    assert_cf(CF_ETASK, cf_future_result(f, 0, NULL));
    const cf_failure *got = NULL;
    assert_ok(cf_future_exception(f, 0, &got));
    assert_non_null(got);
    assert_string_equal(cf_failure_type(got), "ValueError");
    assert_ok(cf_future_release(f));
}

static void test_set_result_on_queued_submitted_future(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *busy = NULL, *queued = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
    assert_true(blocker_wait_started(&b, 1, 5.0));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &queued));
    cf_value v = cf_i64(-1);
    assert_ok(cf_future_set_result(queued, &v));
    blocker_release(&b);
    int64_t r = 0;
    assert_ok(cf_future_result_i64(queued, 5.0, &r));
    assert_int_equal(r, -1);
    assert_ok(cf_executor_destroy(ex));
    cf_future_release(busy);
    cf_future_release(queued);
    blocker_destroy(&b);
}

/* A queued call that its user completes gives back its max_queued slot at
 * once, as a cancelled one does (no worker will take it). */
static void test_set_result_on_queued_call_frees_its_slot(void **state)
{
    (void)state;
    for (int how = 0; how < 2; how++) {
        cf_thread_pool_options o;
        cf_thread_pool_options_init(&o);
        o.max_workers = 1;
        o.max_queued = 1;
        cf_executor *ex = NULL;
        assert_ok(cf_thread_pool_new(&ex, &o));
        blocker b;
        blocker_init(&b);
        cf_future *busy = NULL, *queued = NULL, *next = NULL;
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
        assert_true(blocker_wait_started(&b, 1, 5.0));
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &queued));
        cf_submit_options so;
        cf_submit_options_init(&so);
        so.queue_timeout = 0;
        assert_cf(CF_EFULL, cf_submit_with(ex, &so, t_square, CF_ARGS(cf_i64(4)), &next));
        if (how == 0) {
            cf_value v = cf_i64(-1);
            assert_ok(cf_future_set_result(queued, &v));
        } else {
            assert_ok(cf_future_set_exception(queued, 7, "ValueError", "set by hand"));
        }
        assert_ok(cf_submit_with(ex, &so, t_square, CF_ARGS(cf_i64(4)), &next));
        blocker_release(&b);
        int64_t r = 0;
        assert_ok(cf_future_result_i64(next, 5.0 * cf_test_scale(), &r));
        assert_int_equal(r, 16);
        assert_cf(how == 0 ? CF_OK : CF_ETASK, cf_future_result(queued, 0, NULL));
        assert_ok(cf_executor_destroy(ex));
        cf_future_release(busy);
        cf_future_release(queued);
        cf_future_release(next);
        blocker_destroy(&b);
    }
}

/* The engine API cannot start a call submitted to an executor: the
 * executor starts it.  (Marked running by its user, it would be skipped
 * by the worker, whose own start fails, and never complete.) */
static void test_set_running_refused_on_submitted_call(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *busy = NULL, *queued = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
    assert_true(blocker_wait_started(&b, 1, 5.0));
    assert_cf(CF_EINVALSTATE, cf_future_set_running_or_notify_cancel(busy));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &queued));
    assert_cf(CF_EINVALSTATE, cf_future_set_running_or_notify_cancel(queued));
    assert_int_equal(cf_future_state(queued), CF_PENDING);
    blocker_release(&b);
    int64_t r = 0;
    assert_ok(cf_future_result_i64(queued, 5.0 * cf_test_scale(), &r));
    assert_int_equal(r, 9);
    assert_ok(cf_executor_destroy(ex));
    cf_future_release(busy);
    cf_future_release(queued);
    blocker_destroy(&b);
}

/* cf_future_set_running_or_notify_cancel() decides against a lock-free
 * start with a CAS, not with a hook: a call it starts stays unhooked, so
 * the thread running it can still end it without the lock. */
static void test_set_running_leaves_call_unhooked(void **state)
{
    (void)state;
    cf_value arg = cf_i64(5);
    cf_future *f = cf__future_new_call(t_echo, &arg, 1, 0);
    assert_non_null(f);
    assert_int_equal(cf_future_set_running_or_notify_cancel(f), 1);
    assert_int_equal(atomic_load(&f->state) & ~(uint32_t)CF__SLEEPERS, CF_RUNNING);
    /* A second start loses, whichever way it comes. */
    assert_cf(CF_EINVALSTATE, cf_future_set_running_or_notify_cancel(f));
    assert_cf(CF_EINVALSTATE, cf__future_start_call(f));
    cf__future_run_call(f, NULL);
    int64_t v = 0;
    assert_ok(cf_future_result_i64(f, 0, &v));
    assert_int_equal(v, 5);
    assert_ok(cf_future_release(f));
}

/* A worker starts a queued call with one CAS and no lock (future.c,
 * "Lock-free start"); cancel() and set_result() move it out of PENDING
 * under the lock after hooking it.  10,000 rounds, half cancel and half
 * set_result, on a pool of one worker, most of them raced after varying
 * head starts (the worker parked, waking or searching): exactly one side
 * wins every round, the task runs iff the call was not cancelled or set,
 * and the counts add up. */
static _Atomic int start_race_ran;

static int t_count_echo(cf_call *call)
{
    atomic_fetch_add(&start_race_ran, 1);
    return cf_return_i64(call, cf_arg_i64(call, 0));
}

static void test_lockfree_start_vs_cancel_and_set_result_race(void **state)
{
    (void)state;
    enum { ROUNDS = 10000 };
    cf_executor *ex = pool_new(1);
    assert_int_equal(run_i64(ex, t_echo, CF_ARGS(cf_i64(0))), 0);
    atomic_store(&start_race_ran, 0);
    int cancelled = 0, set = 0, ran = 0;
    for (int round = 0; round < ROUNDS; round++) {
        bool by_cancel = round % 2 == 0;
        /* Most rounds race.  One in ten the worker is held busy first, so
         * the call is still queued when we act (we win); one in ten we
         * wait until the worker has begun it (it wins): both outcomes are
         * exercised whatever the scheduler does. */
        int kind = round % 20 == 3 || round % 20 == 4     ? 1
                   : round % 20 == 13 || round % 20 == 14 ? 2
                                                          : 0;
        blocker b;
        cf_future *busy = NULL;
        if (kind == 1) {
            blocker_init(&b);
            assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
            assert_true(blocker_wait_started(&b, 1, 10.0));
        }
        cf_future *f;
        assert_ok(cf_submit(ex, t_count_echo, CF_ARGS(cf_i64(round)), &f));
        if (kind == 2) {
            /* Liveness: the idle worker takes the call; bounded. */
            double end = cf_test_now() + 10.0 * cf_test_scale();
            while (!cf_future_running(f) && !cf_future_done(f) && cf_test_now() < end)
                sched_yield();
        } else if (kind == 0) {
            /* A varying head start for the worker. */
            for (volatile int spin = 0; spin < (round * 7919) % 100000; spin++)
                ;
        }
        int before = atomic_load(&start_race_ran);
        bool won;
        if (by_cancel) {
            won = cf_future_cancel(f);
        } else {
            cf_value v = cf_i64(-round - 1);
            int rc = cf_future_set_result(f, &v);
            assert_true(rc == CF_OK || rc == CF_EINVALSTATE);
            won = rc == CF_OK;
        }
        if (kind == 1) {
            assert_true(won);
            blocker_release(&b);
            assert_ok(cf_future_result(busy, 10.0 * cf_test_scale(), NULL));
            assert_ok(cf_future_release(busy));
            blocker_destroy(&b);
        } else if (kind == 2) {
            assert_false(won);
        }
        int64_t r = 0;
        int rc = cf_future_result_i64(f, 10.0 * cf_test_scale(), &r);
        if (won && by_cancel) {
            assert_cf(CF_ECANCELLED, rc);
            assert_true(cf_future_cancelled(f));
            cancelled++;
        } else if (won) {
            assert_ok(rc);
            assert_int_equal(r, -round - 1);
            set++;
        } else {
            assert_ok(rc);
            assert_int_equal(r, round);
            assert_false(cf_future_cancelled(f));
            ran++;
        }
        assert_ok(cf_future_release(f));
        /* The task never runs after losing: once the pool is idle again
         * (the next round's submit comes after this wait), the count of
         * runs is exact. */
        if (won) {
            cf_future *probe;
            assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_i64(1)), &probe));
            int64_t one = 0;
            assert_ok(cf_future_result_i64(probe, 10.0 * cf_test_scale(), &one));
            assert_ok(cf_future_release(probe));
            assert_int_equal(atomic_load(&start_race_ran), before);
        }
    }
    assert_int_equal(atomic_load(&start_race_ran), ran);
    assert_int_equal(cancelled + set + ran, ROUNDS);
    assert_true(ran >= ROUNDS / 10);
    assert_true(cancelled + set >= ROUNDS / 10);
    assert_ok(cf_shutdown(ex, true, false));
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.running, 0);
    assert_int_equal(p.cancelled, (uint64_t)cancelled);
    /* A call completed by set_result() ended without running: it counts
     * as succeeded, as every call that returned normally does. */
    assert_int_equal(p.succeeded + p.cancelled, p.submitted);
    assert_ok(cf_executor_destroy(ex));
    printf("lock-free start race: %d cancelled, %d set, %d ran\n", cancelled, set, ran);
}

/* ---- cf_submit_many ------------------------------------------------------ */

static _Atomic int many_ran;

static int t_count_square(cf_call *call)
{
    atomic_fetch_add(&many_ran, 1);
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}

/* 200 rounds of batches over parked workers: a lost wake-up would leave a
 * call queued and time out its result. */
static void test_submit_many_results_in_order(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    enum { N = 97 };
    cf_value args[N];
    cf_future *fs[N];
    for (int r = 0; r < 200; r++) {
        for (int i = 0; i < N; i++)
            args[i] = cf_i64(r * N + i);
        assert_ok(cf_submit_many(ex, t_square, args, 1, N, fs));
        for (int i = 0; i < N; i++) {
            int64_t v = 0;
            assert_ok(cf_future_result_i64(fs[i], 10.0 * cf_test_scale(), &v));
            assert_int_equal(v, (int64_t)(r * N + i) * (r * N + i));
            assert_ok(cf_future_release(fs[i]));
        }
    }
    /* Lazy threads: a batch starts at most max_workers threads. */
    assert_true(cf_executor_worker_count(ex) <= 4);
    assert_ok(cf_executor_destroy(ex));
}

static void test_submit_many_two_args_and_none(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_value args[6] = {cf_i64(1), cf_i64(2), cf_i64(30), cf_i64(40), cf_i64(-5), cf_i64(5)};
    cf_future *fs[3];
    assert_ok(cf_submit_many(ex, t_sum, args, 2, 3, fs));
    int64_t want[3] = {3, 70, 0};
    for (int i = 0; i < 3; i++) {
        int64_t v = -1;
        assert_ok(cf_future_result_i64(fs[i], 10.0 * cf_test_scale(), &v));
        assert_int_equal(v, want[i]);
        assert_ok(cf_future_release(fs[i]));
    }
    /* No arguments: args may be NULL. */
    assert_ok(cf_submit_many(ex, t_sum, NULL, 0, 3, fs));
    for (int i = 0; i < 3; i++) {
        int64_t v = -1;
        assert_ok(cf_future_result_i64(fs[i], 10.0 * cf_test_scale(), &v));
        assert_int_equal(v, 0);
        assert_ok(cf_future_release(fs[i]));
    }
    assert_ok(cf_submit_many(ex, t_sum, NULL, 0, 0, fs));
    /* n == 0: ex, fn and out are still checked; nothing else is, and a
     * shut-down executor schedules nothing anyway. */
    assert_cf(CF_EINVAL, cf_submit_many(ex, t_sum, args, 1, 0, NULL));
    assert_cf(CF_EINVAL, cf_submit_many(ex, NULL, args, 1, 0, fs));
    assert_ok(cf_submit_many(ex, t_sum, NULL, 1, 0, fs));
    assert_ok(cf_shutdown(ex, true, false));
    assert_ok(cf_submit_many(ex, t_sum, args, 1, 0, fs));
    assert_cf(CF_ESHUTDOWN, cf_submit_many(ex, t_sum, args, 1, 1, fs));
    assert_ok(cf_executor_destroy(ex));
}

static void test_submit_many_all_or_nothing(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *fs[4] = {NULL, NULL, NULL, NULL};
    cf_value args[4] = {cf_i64(1), cf_i64(2), cf_i64(3), cf_i64(4)};
    atomic_store(&many_ran, 0);
    assert_cf(CF_EINVAL, cf_submit_many(NULL, t_square, args, 1, 4, fs));
    assert_cf(CF_EINVAL, cf_submit_many(ex, NULL, args, 1, 4, fs));
    assert_cf(CF_EINVAL, cf_submit_many(ex, t_square, args, 1, 4, NULL));
    assert_cf(CF_EINVAL, cf_submit_many(ex, t_square, NULL, 1, 4, fs));
    assert_cf(CF_EINVAL, cf_submit_many(ex, t_square, args, CF_ARGS_MAX + 1, 4, fs));
    /* The third call is bad: nothing of the batch runs. */
    cf_value bad = cf_str("abc");
    bad.size = 1; /* not its strlen */
    args[2] = bad;
    fs[0] = fs[3] = (cf_future *)args; /* overwritten with NULL */
    assert_cf(CF_EINVAL, cf_submit_many(ex, t_count_square, args, 1, 4, fs));
    assert_true(strstr(cf_last_error_message(), "submit_many") != NULL);
    for (int i = 0; i < 4; i++)
        assert_null(fs[i]);
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(atomic_load(&many_ran), 0);
    /* After shutdown: refused as a whole. */
    args[2] = cf_i64(3);
    assert_cf(CF_ESHUTDOWN, cf_submit_many(ex, t_count_square, args, 1, 4, fs));
    for (int i = 0; i < 4; i++)
        assert_null(fs[i]);
    assert_int_equal(atomic_load(&many_ran), 0);
    assert_ok(cf_executor_destroy(ex));
}

/* Task: i64 argument 0 plus the length of string argument 1. */
static int t_plus_len(cf_call *call)
{
    atomic_fetch_add(&many_ran, 1);
    return cf_return_i64(call, cf_arg_i64(call, 0) + (int64_t)strlen(cf_arg_str(call, 1)));
}

/* A batch larger than one piece (the pool makes and queues the calls of
 * a cf_submit_many() 256 at a time) with strings of every length, some
 * too long for a cached future block: every call runs once with its own
 * copied arguments, the results come back in order, the counts add up,
 * and on a bounded pool (max_queued N) every slot goes back, so the
 * second batch, which fills the bound, fits. */
static void test_submit_many_in_pieces(void **state)
{
    (void)state;
    enum { N = 1000 };
    static char text[N][80];
    static cf_value args[2 * N];
    static cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        int len = i % 70;
        memset(text[i], 'a' + i % 26, (size_t)len);
        text[i][len] = '\0';
        args[2 * i] = cf_i64(i * 1000);
        args[2 * i + 1] = cf_str(text[i]);
    }
    for (int bounded = 0; bounded < 2; bounded++) {
        cf_thread_pool_options o;
        cf_thread_pool_options_init(&o);
        o.max_workers = 3;
        o.max_queued = bounded ? N : 0;
        cf_executor *ex = NULL;
        assert_ok(cf_thread_pool_new(&ex, &o));
        atomic_store(&many_ran, 0);
        for (int round = 0; round < 2; round++) {
            assert_ok(cf_submit_many(ex, t_plus_len, args, 2, N, fs));
            /* The caller's strings may change once the call returns. */
            if (round == 0)
                for (int i = 0; i < N; i++)
                    text[i][0] = text[i][0] ? '#' : '\0';
            for (int i = 0; i < N; i++) {
                int64_t v = -1;
                assert_ok(cf_future_result_i64(fs[i], 10.0 * cf_test_scale(), &v));
                assert_int_equal(v, (int64_t)i * 1000 + i % 70);
                assert_ok(cf_future_release(fs[i]));
            }
        }
        assert_int_equal(atomic_load(&many_ran), 2 * N);
        cf_progress pr;
        assert_ok(cf_executor_progress(ex, &pr));
        assert_int_equal(pr.submitted, 2 * N);
        assert_int_equal(pr.succeeded, 2 * N);
        assert_int_equal(pr.running, 0);
        assert_ok(cf_executor_destroy(ex));
    }
}

typedef struct many_race {
    pthread_barrier_t bar;
    cf_executor *ex;
    bool cancel;
    double delay; /* seconds between the barrier and the shutdown */
} many_race;

static void shutdown_after_barrier(void *arg)
{
    many_race *r = arg;
    pthread_barrier_wait(&r->bar);
    /* Busy, not asleep: a sleep would end far later than asked, and the
     * delays spread the shutdown over the time the batch is made. */
    double until = cf_test_now() + r->delay;
    while (cf_test_now() < until) {
    }
    assert_ok(cf_shutdown(r->ex, true, r->cancel));
}

/* A shutdown racing a batch of several pieces: the batch is scheduled
 * whole (every call runs, or with cancel_futures each ends finished or
 * cancelled, none left pending) or refused whole with CF_ESHUTDOWN (no
 * call runs, every out[] NULL).  A worker that left while pieces were
 * still coming would leave calls queued for ever: their results would
 * time out.  The shutdown comes 0 to 2 ms after the batch begins: while
 * its blocks are reserved, while its pieces are made, or after. */
static void test_submit_many_races_shutdown(void **state)
{
    (void)state;
    enum { N = 20000, ROUNDS = 40 };
    static cf_value args[N];
    static cf_future *fs[N];
    for (int i = 0; i < N; i++)
        args[i] = cf_i64(i);
    int whole = 0, refused = 0;
    for (int r = 0; r < ROUNDS; r++) {
        many_race race = {.ex = pool_new(2), .cancel = r % 2 == 1, .delay = r * 50e-6};
        pthread_barrier_init(&race.bar, NULL, 2);
        atomic_store(&many_ran, 0);
        bg_thread bg;
        bg_start(&bg, shutdown_after_barrier, &race);
        pthread_barrier_wait(&race.bar);
        int rc = cf_submit_many(race.ex, t_count_square, args, 1, N, fs);
        bg_join(&bg, 30.0);
        if (rc == CF_OK) {
            whole++;
            int finished = 0;
            for (int i = 0; i < N; i++) {
                int64_t v = -1;
                int got = cf_future_result_i64(fs[i], 10.0 * cf_test_scale(), &v);
                if (got == CF_OK) {
                    assert_int_equal(v, (int64_t)i * i);
                    finished++;
                } else {
                    assert_true(race.cancel);
                    assert_cf(CF_ECANCELLED, got);
                }
                assert_ok(cf_future_release(fs[i]));
            }
            assert_int_equal(atomic_load(&many_ran), finished);
            if (!race.cancel)
                assert_int_equal(finished, N);
        } else {
            refused++;
            assert_cf(CF_ESHUTDOWN, rc);
            for (int i = 0; i < N; i++)
                assert_null(fs[i]);
            assert_int_equal(atomic_load(&many_ran), 0);
        }
        pthread_barrier_destroy(&race.bar);
        assert_ok(cf_executor_destroy(race.ex));
    }
    assert_int_equal(whole + refused, ROUNDS);
}

/* Each call of a batch records what cf_executor_progress() says as it
 * runs: the calls not yet ended or running must show as pending (counted
 * as submitted) from the moment they are queued. */
typedef struct seen_progress {
    cf_executor *ex;
    _Atomic uint64_t min_pending; /* smallest submitted - ended - running seen */
    _Atomic int while_making;     /* calls that ran before cf_submit_many returned */
    _Atomic bool returned;
} seen_progress;

static seen_progress many_seen;

static int t_see_progress(cf_call *call)
{
    int64_t i = cf_arg_i64(call, 0), n = cf_arg_i64(call, 1);
    cf_progress p;
    if (cf_executor_progress(many_seen.ex, &p) != CF_OK)
        return cf_raise(call, CF_EINVAL, "ProgressError", "%s", cf_last_error_message());
    if (!atomic_load(&many_seen.returned))
        atomic_fetch_add(&many_seen.while_making, 1);
    /* This call is running; the n - i - 1 after it are queued or still to
     * be made.  Those queued count as pending, at least the rest of this
     * call's piece of 256 (the pool queues a batch 256 calls at a time,
     * counting each piece before it queues it). */
    uint64_t pending = p.submitted - cf_progress_ended(&p) - p.running;
    int64_t piece_rest = 255 - i % 256;
    if (piece_rest > n - i - 1)
        piece_rest = n - i - 1;
    uint64_t expect = (uint64_t)piece_rest;
    if (pending < expect) {
        uint64_t seen = atomic_load(&many_seen.min_pending);
        while (pending < seen &&
               !atomic_compare_exchange_weak(&many_seen.min_pending, &seen, pending))
            ;
    }
    return cf_return_none(call);
}

/* A large batch on one worker, which runs its first calls while the rest
 * are made: every call, as it runs, sees the rest of its piece counted as
 * submitted and pending (counted only once the batch was in, the calls
 * run meanwhile saw no call pending and `submitted` equal to what had
 * ended).  Afterwards the counts add up to the batch. */
static void test_submit_many_counts_queued_pieces(void **state)
{
    (void)state;
    enum { N = 100000 };
    static cf_value args[2 * N];
    static cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        args[2 * i] = cf_i64(i);
        args[2 * i + 1] = cf_i64(N);
    }
    cf_executor *ex = pool_new(1);
    many_seen.ex = ex;
    atomic_store(&many_seen.min_pending, UINT64_MAX);
    atomic_store(&many_seen.while_making, 0);
    atomic_store(&many_seen.returned, false);
    assert_ok(cf_submit_many(ex, t_see_progress, args, 2, N, fs));
    atomic_store(&many_seen.returned, true);
    for (int i = 0; i < N; i++) {
        assert_ok(cf_future_result(fs[i], 30.0 * cf_test_scale(), NULL));
        assert_ok(cf_future_release(fs[i]));
    }
    printf("calls run while the batch was made: %d\n", atomic_load(&many_seen.while_making));
    assert_int_equal(atomic_load(&many_seen.min_pending), UINT64_MAX);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.submitted, N);
    assert_int_equal(p.succeeded, N);
    assert_int_equal(p.running, 0);
    assert_ok(cf_executor_destroy(ex));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_submit_many_in_pieces),
    cmocka_unit_test(test_submit_many_counts_queued_pieces),
    cmocka_unit_test(test_submit_many_races_shutdown),
    cmocka_unit_test(test_submit_many_results_in_order),
    cmocka_unit_test(test_submit_many_two_args_and_none),
    cmocka_unit_test(test_submit_many_all_or_nothing),
    cmocka_unit_test(test_submit_result_basic),
    cmocka_unit_test(test_echo_every_kind),
    cmocka_unit_test(test_all_kinds_as_arguments),
    cmocka_unit_test(test_args_copied_at_submit),
    cmocka_unit_test(test_ptr_passes_through),
    cmocka_unit_test(test_max_args),
    cmocka_unit_test(test_raise_gives_etask),
    cmocka_unit_test(test_raise_variants),
    cmocka_unit_test(test_typed_accessor_wrong_kind),
    cmocka_unit_test(test_last_return_wins),
    cmocka_unit_test(test_return_too_big),
    cmocka_unit_test(test_failure_does_not_break_pool),
    cmocka_unit_test(test_default_workers),
    cmocka_unit_test(test_options_init),
    cmocka_unit_test(test_options_validation),
    cmocka_unit_test(test_no_thread_before_first_submit),
    cmocka_unit_test(test_thread_name_default),
    cmocka_unit_test(test_thread_name_long_prefix),
    cmocka_unit_test(test_thread_name_distinct_indices),
    cmocka_unit_test(test_lazy_thread_start),
    cmocka_unit_test(test_idle_thread_reuse),
    cmocka_unit_test(test_searcher_wakes_parked_worker),
    cmocka_unit_test(test_short_calls_sentry_takes_left_call),
    cmocka_unit_test(test_short_calls_dependent_pairs_finish),
    cmocka_unit_test(test_short_calls_two_workers_bursts),
    cmocka_unit_test(test_short_calls_big_submit_wakes),
    cmocka_unit_test(test_short_calls_worker_submit_wakes),
    cmocka_unit_test(test_short_calls_sentry_gives_up_when_idle),
    cmocka_unit_test(test_trailing_worker_slips),
    cmocka_unit_test(test_chain_does_not_slip),
    cmocka_unit_test(test_long_calls_keep_every_wakeup),
    cmocka_unit_test(test_max_workers_respected),
    cmocka_unit_test(test_default_pool_runs_many),
    cmocka_unit_test(test_initializer_once_per_worker),
    cmocka_unit_test(test_initializer_failure_breaks_pool),
    cmocka_unit_test(test_initializer_failure_fails_queued),
    cmocka_unit_test(test_submit_after_shutdown),
    cmocka_unit_test(test_shutdown_wait_waits_for_all),
    cmocka_unit_test(test_shutdown_cancel_futures),
    cmocka_unit_test(test_shutdown_later_call_cancels),
    cmocka_unit_test(test_shutdown_idempotent_and_null),
    cmocka_unit_test(test_shutdown_unused_pool),
    cmocka_unit_test(test_shutdown_wait_from_own_worker),
    cmocka_unit_test(test_shutdown_nowait_from_own_worker),
    cmocka_unit_test(test_destroy_from_own_worker),
    cmocka_unit_test(test_destroy_waits_for_pending),
    cmocka_unit_test(test_with_executor_scope),
    cmocka_unit_test(test_release_future_before_completion),
    cmocka_unit_test(test_cancel_queued_future),
    cmocka_unit_test(test_submit_from_task),
    cmocka_unit_test(test_callback_runs_in_worker),
    cmocka_unit_test(test_race_shutdown_wait_vs_submit),
    cmocka_unit_test(test_race_shutdown_cancel_vs_submit),
    cmocka_unit_test(test_many_complete_at_once_with_waiters),
    cmocka_unit_test(test_submit_bad_arguments),
    cmocka_unit_test(test_submit_too_big),
    cmocka_unit_test(test_submit_too_big_sum_boundary),
    cmocka_unit_test(test_callback_submitting_to_own_pool_gets_a_thread),
    cmocka_unit_test(test_set_result_refused_while_executor_runs_it),
    cmocka_unit_test(test_set_running_refused_on_submitted_call),
    cmocka_unit_test(test_set_result_on_queued_submitted_future),
    cmocka_unit_test(test_set_result_on_queued_call_frees_its_slot),
    cmocka_unit_test(test_set_running_leaves_call_unhooked),
    cmocka_unit_test(test_lockfree_start_vs_cancel_and_set_result_race),
    cmocka_unit_test(test_lockfree_completion_vs_hooks_race),
    cmocka_unit_test(test_owned_completion_vs_hooks_race),
    cmocka_unit_test(test_owned_completion_outcomes),
};

CF_TEST_MAIN(tests)
