/* SPDX-License-Identifier: MIT */
/*
 * test_map.c - cf_map over arrays and generators: input order, zipping,
 * failures, timeouts, early close, options and the buffersize mode.
 */
#include "cf_test_util.h"

#include <limits.h>
#include <sys/resource.h>

/* Sanitizers reserve terabytes of address space: no RLIMIT_AS there. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MAP_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MAP_TEST_SANITIZED 1
#endif
#endif
#ifndef MAP_TEST_SANITIZED
#define MAP_TEST_SANITIZED 0
#endif

/* ---- tasks and generators -------------------------------------------------- */

static int t_double(cf_call *call)
{
    return cf_return_i64(call, 2 * cf_arg_i64(call, 0));
}

static int t_add2(cf_call *call)
{
    return cf_return_i64(call, cf_arg_i64(call, 0) + cf_arg_i64(call, 1));
}

static int t_fail_on_3(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    if (x == 3)
        return cf_raise(call, 33, "ValueError", "three is bad");
    return cf_return_i64(call, x * 10);
}

static int t_strlen(cf_call *call)
{
    const char *s = cf_arg_str(call, 0);
    return cf_return_i64(call, (int64_t)strlen(s));
}

/* Per-element release: element i waits for go[i]; records finish order. */
typedef struct {
    cf_test_event go[8];
    pthread_mutex_t mu;
    int finish_order[8];
    int nfinished;
} ooo_state;

static ooo_state g_ooo;

static int t_out_of_order(cf_call *call)
{
    int64_t i = cf_arg_i64(call, 0);
    if (!cf_test_event_wait(&g_ooo.go[i], 10))
        return cf_raise(call, 1, "TimeoutError", "not released");
    pthread_mutex_lock(&g_ooo.mu);
    g_ooo.finish_order[g_ooo.nfinished++] = (int)i;
    pthread_mutex_unlock(&g_ooo.mu);
    return cf_return_i64(call, i * 100);
}

static int ooo_finished(void)
{
    pthread_mutex_lock(&g_ooo.mu);
    int n = g_ooo.nfinished;
    pthread_mutex_unlock(&g_ooo.mu);
    return n;
}

/* Counting generator: yields start, start+1, ... up to limit (or forever
 * when limit < 0); fail_at >= 0 returns an error at that index. */
typedef struct {
    int64_t next;
    int64_t limit;
    int64_t fail_at;
    atomic_long calls;   /* values produced */
} counter_gen;

static int counter_next(void *ctx, cf_value *out)
{
    counter_gen *g = (counter_gen *)ctx;
    if (g->fail_at >= 0 && g->next == g->fail_at)
        return -1;
    if (g->limit >= 0 && g->next >= g->limit)
        return 0;
    *out = cf_i64(g->next++);
    atomic_fetch_add(&g->calls, 1);
    return 1;
}

static void counter_init(counter_gen *g, int64_t limit, int64_t fail_at)
{
    g->next = 0;
    g->limit = limit;
    g->fail_at = fail_at;
    atomic_init(&g->calls, 0);
}

/* A generator reusing one buffer for its strings: the value only has to
 * stay valid until the next call. */
typedef struct {
    int i;
    int n;
    char buf[32];
} str_gen;

static int str_next(void *ctx, cf_value *out)
{
    str_gen *g = (str_gen *)ctx;
    if (g->i >= g->n)
        return 0;
    memset(g->buf, 0, sizeof g->buf);
    memset(g->buf, 'a', (size_t)g->i + 1); /* "a", "aa", "aaa", ... */
    g->i++;
    *out = cf_str(g->buf);
    return 1;
}

static cf_map_options opts_default(void)
{
    cf_map_options o;
    cf_map_options_init(&o);
    return o;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_map_options_init(void **state)
{
    (void)state;
    cf_map_options o;
    memset(&o, 0x7B, sizeof o);
    cf_map_options_init(&o);
    assert_true(o.timeout == CF_FOREVER);
    assert_int_equal(o.chunksize, 1);
    assert_int_equal(o.buffersize, 0);
}

static void test_map_basic_array(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    enum { N = 200 };
    cf_value in[N];
    for (int i = 0; i < N; i++)
        in[i] = cf_i64(i);
    cf_map_input mi = cf_input_array(in, N);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_double, &mi, 1, NULL, &it));
    assert_non_null(it);
    for (int i = 0; i < N; i++) {
        const cf_value *v = NULL;
        const cf_failure *fail = (const cf_failure *)1;
        assert_ok(cf_map_next(it, &v, &fail));
        assert_non_null(v);
        assert_int_equal(v->kind, CF_I64);
        assert_int_equal(v->as.i64, 2 * i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_results_in_input_order(void **state)
{
    (void)state;
    memset(&g_ooo, 0, sizeof g_ooo);
    pthread_mutex_init(&g_ooo.mu, NULL);
    for (int i = 0; i < 4; i++)
        cf_test_event_init(&g_ooo.go[i]);
    cf_executor *ex = pool_new(4);
    cf_value in[4] = {cf_i64(0), cf_i64(1), cf_i64(2), cf_i64(3)};
    cf_map_input mi = cf_input_array(in, 4);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_out_of_order, &mi, 1, NULL, &it));
    /* finish them in reverse order, one at a time */
    for (int k = 3; k >= 0; k--) {
        cf_test_event_set(&g_ooo.go[k]);
        double end = cf_test_now() + 5.0 * cf_test_scale();
        while (ooo_finished() < 4 - k && cf_test_now() < end)
            sleep_ms(1);
        assert_int_equal(ooo_finished(), 4 - k);
    }
    for (int k = 0; k < 4; k++)
        assert_int_equal(g_ooo.finish_order[k], 3 - k);
    for (int i = 0; i < 4; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, i * 100);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
    pthread_mutex_destroy(&g_ooo.mu);
}

static void test_map_zip_shortest(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(3);
    cf_value a[5] = {cf_i64(1), cf_i64(2), cf_i64(3), cf_i64(4), cf_i64(5)};
    cf_value b[3] = {cf_i64(10), cf_i64(20), cf_i64(30)};
    cf_map_input ins[2] = {cf_input_array(a, 5), cf_input_array(b, 3)};
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_add2, ins, 2, NULL, &it));
    const int64_t expect[3] = {11, 22, 33};
    for (int i = 0; i < 3; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, expect[i]);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_zip_with_empty_input(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_value a[2] = {cf_i64(1), cf_i64(2)};
    cf_map_input ins[2] = {cf_input_array(a, 2), cf_input_array(a, 0)};
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_add2, ins, 2, NULL, &it));
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_generator_input(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    counter_gen g;
    counter_init(&g, 25, -1);
    cf_value b[30];
    for (int i = 0; i < 30; i++)
        b[i] = cf_i64(1000);
    cf_map_input ins[2] = {cf_input_generator(counter_next, &g), cf_input_array(b, 30)};
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_add2, ins, 2, NULL, &it));
    for (int i = 0; i < 25; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, 1000 + i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_generator_values_copied(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(3);
    str_gen g = {0, 12, ""};
    cf_map_input mi = cf_input_generator(str_next, &g);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_strlen, &mi, 1, NULL, &it));
    for (int i = 0; i < 12; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, i + 1);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

/* One generator feeding both inputs, or one that frees its last value
 * when called again: each value is copied before the next call. */
static void test_map_zip_one_generator(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    check_map_zip_one_generator(ex, t_join2);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_failure_at_position(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_value in[6];
    for (int i = 0; i < 6; i++)
        in[i] = cf_i64(i);
    cf_map_input mi = cf_input_array(in, 6);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_fail_on_3, &mi, 1, NULL, &it));
    for (int i = 0; i < 6; i++) {
        const cf_value *v = NULL;
        const cf_failure *fail = NULL;
        int rc = cf_map_next(it, &v, &fail);
        if (i == 3) {
            assert_int_equal(rc, CF_ETASK);
            assert_non_null(fail);
            assert_int_equal(cf_failure_code(fail), 33);
            assert_string_equal(cf_failure_type(fail), "ValueError");
            assert_string_equal(cf_failure_message(fail), "three is bad");
        } else {
            assert_int_equal(rc, CF_OK);
            assert_int_equal(v->as.i64, i * 10);
        }
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_str_array_copied(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *busy = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
    assert_true(blocker_wait_started(&b, 1, 5));
    char s1[8] = "abc", s2[8] = "defgh";
    cf_value in[2] = {cf_str(s1), cf_str(s2)};
    cf_map_input mi = cf_input_array(in, 2);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_strlen, &mi, 1, NULL, &it));
    /* default mode read and copied every input in cf_map() */
    memset(s1, 0, sizeof s1);
    memset(s2, 0, sizeof s2);
    memset(in, 0, sizeof in);
    blocker_release(&b);
    const cf_value *v = NULL;
    assert_ok(cf_map_next(it, &v, NULL));
    assert_int_equal(v->as.i64, 3);
    assert_ok(cf_map_next(it, &v, NULL));
    assert_int_equal(v->as.i64, 5);
    cf_map_close(it);
    assert_ok(cf_future_release(busy));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static atomic_int g_ran;

static blocker *g_first_blocker;

/* Counts its runs; element 0 waits for g_first_blocker (if set). */
static int t_count_block_first(cf_call *call)
{
    atomic_fetch_add(&g_ran, 1);
    int64_t x = cf_arg_i64(call, 0);
    if (x == 0 && g_first_blocker != NULL &&
        !cf_test_event_wait(&g_first_blocker->go, 10))
        return cf_raise(call, 1, "TimeoutError", "not released");
    return cf_return_i64(call, x);
}

static void test_map_timeout_then_done(void **state)
{
    (void)state;
    atomic_store(&g_ran, 0);
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    /* element 0 blocks the only worker; element 1.. are queued */
    enum { N = 5 };
    cf_value xs[N], bs[N];
    for (int i = 0; i < N; i++) {
        xs[i] = cf_i64(i);
        bs[i] = cf_ptr(&b);
    }
    /* t_block takes arg 0 as the blocker: put the blocker first */
    cf_map_input ins[2] = {cf_input_array(bs, N), cf_input_array(xs, N)};
    cf_map_options o = opts_default();
    o.timeout = 0.1;
    cf_map_iter *it = NULL;
    double t0 = cf_test_now();
    assert_ok(cf_map(ex, t_block, ins, 2, &o, &it));
    assert_true(blocker_wait_started(&b, 1, 5));
    const cf_value *v = NULL;
    assert_cf(CF_ETIMEDOUT, cf_map_next(it, &v, NULL));
    double el = cf_test_now() - t0;
    assert_true(el >= 0.095);
    assert_true(el < 3.0 * cf_test_scale());
    assert_cf(CF_EDONE, cf_map_next(it, &v, NULL));
    assert_cf(CF_EDONE, cf_map_next(it, &v, NULL));
    blocker_release(&b);
    cf_map_close(it);
    assert_ok(cf_shutdown(ex, true, false));
    /* the calls that had not started were cancelled */
    assert_int_equal(blocker_get(&b, &b.started), 1);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_map_timeout_measured_from_map_call(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_value bs[2] = {cf_ptr(&b), cf_ptr(&b)};
    cf_map_input mi = cf_input_array(bs, 2);
    cf_map_options o = opts_default();
    o.timeout = 2.0;
    cf_map_iter *it = NULL;
    double t0 = cf_test_now();
    assert_ok(cf_map(ex, t_block, &mi, 1, &o, &it));
    sleep_ms(1000);
    double t1 = cf_test_now();
    assert_cf(CF_ETIMEDOUT, cf_map_next(it, NULL, NULL));
    double end = cf_test_now();
    assert_true(end - t0 >= 1.99);
    /* Waited the remainder (1 s), not a fresh 2 s; 0.8 s to spare for a
     * loaded machine. */
    assert_true(end - t1 < 1.8);
    blocker_release(&b);
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
    assert_int_equal(blocker_get(&b, &b.started), 1);
    blocker_destroy(&b);
}

static void test_map_timeout_first_results_ok(void **state)
{
    (void)state;
    /* results that are ready are returned before the timeout hits */
    cf_executor *ex = pool_new(2);
    cf_value in[3] = {cf_i64(1), cf_i64(2), cf_i64(3)};
    cf_map_input mi = cf_input_array(in, 3);
    cf_map_options o = opts_default();
    o.timeout = 5.0;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_double, &mi, 1, &o, &it));
    const cf_value *v = NULL;
    for (int i = 1; i <= 3; i++) {
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, 2 * i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, &v, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

/* Bytes of address space mapped now, from /proc/self/statm. */
static size_t mapped_bytes(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    assert_non_null(fp);
    unsigned long pages = 0;
    assert_int_equal(fscanf(fp, "%lu", &pages), 1);
    fclose(fp);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* The largest legal chunksize over a short input costs what the input
 * needs: under an address-space limit 1 GiB above today's use, a map with
 * chunksize INT_MAX (INT_MAX pointers would be 16 GiB) still works. */
static void test_map_huge_chunksize_bounded_by_input(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_value in[3] = {cf_i64(1), cf_i64(2), cf_i64(3)};
    cf_map_input mi = cf_input_array(in, 3);
    cf_map_options o = opts_default();
    o.chunksize = INT_MAX;
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
    if (!MAP_TEST_SANITIZED) {
        struct rlimit lim = old;
        lim.rlim_cur = mapped_bytes() + ((rlim_t)1 << 30);
        if (old.rlim_cur == RLIM_INFINITY || lim.rlim_cur < old.rlim_cur)
            assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
    }
    cf_map_iter *it = NULL;
    int rc = cf_map(ex, t_double, &mi, 1, &o, &it);
    assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
    assert_ok(rc);
    for (int i = 0; i < 3; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, 2 * (i + 1));
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_chunksize(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_value in[12];
    for (int i = 0; i < 12; i++)
        in[i] = cf_i64(i);
    cf_map_input mi = cf_input_array(in, 12);
    cf_map_options o = opts_default();
    cf_map_iter *it = NULL;
    o.chunksize = 0;
    assert_cf(CF_EINVAL, cf_map(ex, t_double, &mi, 1, &o, &it));
    o.chunksize = -3;
    assert_cf(CF_EINVAL, cf_map(ex, t_double, &mi, 1, &o, &it));
    o.chunksize = 5;
    assert_ok(cf_map(ex, t_double, &mi, 1, &o, &it));
    for (int i = 0; i < 12; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, 2 * i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_bad_arguments(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    cf_value in[2] = {cf_i64(1), cf_i64(2)};
    cf_map_input mi = cf_input_array(in, 2);
    cf_map_iter *it = NULL;
    assert_cf(CF_EINVAL, cf_map(ex, t_double, &mi, 0, NULL, &it));
    assert_cf(CF_EINVAL, cf_map(ex, t_double, NULL, 1, NULL, &it));
    assert_cf(CF_EINVAL, cf_map(NULL, t_double, &mi, 1, NULL, &it));
    assert_cf(CF_EINVAL, cf_map(ex, NULL, &mi, 1, NULL, &it));
    assert_cf(CF_EINVAL, cf_map(ex, t_double, &mi, 1, NULL, NULL));
    cf_map_options o = opts_default();
    o.timeout = -1.0;
    assert_cf(CF_EINVAL, cf_map(ex, t_double, &mi, 1, &o, &it));
    o.timeout = NAN;
    assert_cf(CF_EINVAL, cf_map(ex, t_double, &mi, 1, &o, &it));
    assert_cf(CF_EINVAL, cf_map_next(NULL, NULL, NULL));
    cf_map_close(NULL);
    assert_int_equal(cf_executor_worker_count(ex), 0); /* nothing ran */
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_after_shutdown(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    assert_ok(cf_shutdown(ex, true, false));
    cf_value in[2] = {cf_i64(1), cf_i64(2)};
    cf_map_input mi = cf_input_array(in, 2);
    cf_map_iter *it = NULL;
    assert_cf(CF_ESHUTDOWN, cf_map(ex, t_double, &mi, 1, NULL, &it));
    /* The engine's refusal, named as the map's. */
    const char *msg = cf_last_error_message();
    if (strncmp(msg, "map: ", 5) != 0 || !strstr(msg, "shutdown"))
        fail_msg("message: \"%s\"", msg);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_close_early_cancels(void **state)
{
    (void)state;
    atomic_store(&g_ran, 0);
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    enum { N = 10 };
    g_first_blocker = &b;
    cf_value xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = cf_i64(i);
    cf_map_input mi = cf_input_array(xs, N);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_count_block_first, &mi, 1, NULL, &it));
    double end = cf_test_now() + 5.0 * cf_test_scale();
    while (atomic_load(&g_ran) < 1 && cf_test_now() < end)
        sleep_ms(1);
    assert_int_equal(atomic_load(&g_ran), 1);
    cf_map_close(it); /* elements 1..9 never started: cancelled */
    blocker_release(&b);
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(atomic_load(&g_ran), 1);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* A map's calls count in the map's counts as they start and end without
 * their futures' locks; cf_map_close() hands the counts to the calls
 * still running, and the last to end frees them.  1,000 rounds of a map
 * closed while its calls start and end on two workers: no count lands in
 * freed memory (ASan), none is lost (the executor's counts add up every
 * round), and the map's counts block is never leaked. */
static int t_spin_then_double(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    for (volatile int64_t i = 0; i < (x * 7919) % 20000; i++)
        ;
    return cf_return_i64(call, 2 * x);
}

static void test_map_close_while_calls_run_race(void **state)
{
    (void)state;
    enum { ROUNDS = 1000, N = 8 };
    cf_executor *ex = pool_new(2);
    uint64_t want = 0;
    for (int round = 0; round < ROUNDS; round++) {
        cf_value xs[N];
        for (int i = 0; i < N; i++)
            xs[i] = cf_i64(round * N + i);
        cf_map_input mi = cf_input_array(xs, N);
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, t_spin_then_double, &mi, 1, NULL, &it));
        /* Read 0..3 results first, then close with the rest in flight. */
        for (int i = 0; i < round % 4; i++) {
            const cf_value *v = NULL;
            assert_ok(cf_map_next(it, &v, NULL));
            assert_int_equal(v->as.i64, 2 * (round * N + i));
        }
        cf_progress mp;
        assert_ok(cf_map_progress(it, &mp));
        assert_int_equal(mp.submitted, N);
        cf_map_close(it);
        want += N;
        /* Liveness: the two workers end or skip every call; bounded. */
        cf_progress p;
        double end = cf_test_now() + 10.0 * cf_test_scale();
        for (;;) {
            assert_ok(cf_executor_progress(ex, &p));
            if (cf_progress_ended(&p) == want || cf_test_now() > end)
                break;
            sched_yield();
        }
        assert_int_equal(p.submitted, want);
        assert_int_equal(cf_progress_ended(&p), want);
        assert_int_equal(p.failed, 0);
    }
    assert_ok(cf_shutdown(ex, true, false));
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.running, 0);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_submits_without_iteration(void **state)
{
    (void)state;
    /* Default mode submits every call in cf_map(): they all run even if the
     * iterator is never advanced. */
    atomic_store(&g_ran, 0);
    g_first_blocker = NULL;
    cf_executor *ex = pool_new(3);
    cf_value in[10];
    for (int i = 0; i < 10; i++)
        in[i] = cf_i64(i + 1);
    cf_map_input mi = cf_input_array(in, 10);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_count_block_first, &mi, 1, NULL, &it));
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(atomic_load(&g_ran), 10);
    /* the outcomes are still there after the shutdown */
    for (int i = 0; i < 10; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, i + 1);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_close_after_partial_consumption(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_value in[50];
    for (int i = 0; i < 50; i++)
        in[i] = cf_i64(i);
    cf_map_input mi = cf_input_array(in, 50);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_double, &mi, 1, NULL, &it));
    const cf_value *v = NULL;
    assert_ok(cf_map_next(it, &v, NULL));
    assert_int_equal(v->as.i64, 0);
    cf_map_close(it); /* the rest finish or are cancelled; nothing leaks */
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_generator_failure_at_start(void **state)
{
    (void)state;
    atomic_store(&g_ran, 0);
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *busy = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &busy));
    assert_true(blocker_wait_started(&b, 1, 5));
    counter_gen g;
    counter_init(&g, 100, 3); /* yields 0, 1, 2 then fails */
    cf_map_input mi = cf_input_generator(counter_next, &g);
    cf_map_iter *it = NULL;
    g_first_blocker = NULL;
    assert_cf(CF_EINVAL, cf_map(ex, t_count_block_first, &mi, 1, NULL, &it));
    blocker_release(&b);
    assert_ok(cf_shutdown(ex, true, false));
    /* calls already submitted were cancelled: none of them ran */
    assert_int_equal(atomic_load(&g_ran), 0);
    assert_ok(cf_future_release(busy));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static void test_map_buffersize_endless_generator(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(4);
    counter_gen g;
    counter_init(&g, -1, -1); /* endless */
    cf_map_input mi = cf_input_generator(counter_next, &g);
    cf_map_options o = opts_default();
    o.buffersize = 4;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_double, &mi, 1, &o, &it));
    assert_true(atomic_load(&g.calls) <= 5);
    long max_ahead = 0;
    for (long consumed = 0; consumed < 1000; consumed++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, 2 * consumed);
        long ahead = atomic_load(&g.calls) - (consumed + 1);
        if (ahead > max_ahead)
            max_ahead = ahead;
    }
    if (max_ahead > 5)
        fail_msg("generator ran %ld values ahead of consumption (buffersize 4)", max_ahead);
    assert_true(max_ahead >= 1); /* it did buffer ahead */
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

/* A lazy map with chunks reads and submits a whole chunk at a time: at
 * most N + C calls outstanding (cf_map_options.buffersize), and no more
 * read ahead of what was consumed; N + 1 with chunks of one. */
static void test_map_buffersize_with_chunks(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        int c;
    } cases[] = {{3, 4}, {2, 5}, {1, 64}, {4, 1}};
    cf_executor *ex = pool_new(4);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t n = cases[k].n;
        int c = cases[k].c;
        counter_gen g;
        counter_init(&g, -1, -1); /* endless */
        cf_map_input mi = cf_input_generator(counter_next, &g);
        cf_map_options o = opts_default();
        o.buffersize = n;
        o.chunksize = c;
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, t_double, &mi, 1, &o, &it));
        long up_front = atomic_load(&g.calls);
        if (up_front < (long)n || up_front > (long)n + c - 1)
            fail_msg("buffersize %zu, chunksize %d: %ld inputs read up front", n, c, up_front);
        long max_out = 0;
        for (long consumed = 0; consumed < 300; consumed++) {
            /* Outstanding while cf_map_next() waits: read, not consumed. */
            const cf_value *v = NULL;
            assert_ok(cf_map_next(it, &v, NULL));
            assert_int_equal(v->as.i64, 2 * consumed);
            long out = atomic_load(&g.calls) - consumed;
            if (out > max_out)
                max_out = out;
        }
        if (max_out > (long)n + c)
            fail_msg("buffersize %zu, chunksize %d: %ld calls outstanding (at most %ld)", n, c,
                     max_out, (long)n + c);
        assert_true(max_out >= (long)n);
        cf_map_close(it);
    }
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_buffersize_finite(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(3);
    counter_gen g;
    counter_init(&g, 37, -1);
    cf_map_input mi = cf_input_generator(counter_next, &g);
    cf_map_options o = opts_default();
    o.buffersize = 4;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_double, &mi, 1, &o, &it));
    for (int i = 0; i < 37; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, 2 * i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_buffersize_larger_than_input(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_value in[3] = {cf_i64(5), cf_i64(6), cf_i64(7)};
    cf_map_input mi = cf_input_array(in, 3);
    cf_map_options o = opts_default();
    o.buffersize = 100;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_double, &mi, 1, &o, &it));
    for (int i = 0; i < 3; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, 2 * (5 + i));
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_buffersize_str_generator(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    str_gen g = {0, 20, ""};
    cf_map_input mi = cf_input_generator(str_next, &g);
    cf_map_options o = opts_default();
    o.buffersize = 3;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_strlen, &mi, 1, &o, &it));
    for (int i = 0; i < 20; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, i + 1);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_buffersize_generator_error(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    counter_gen g;
    counter_init(&g, -1, 10); /* fails when asked for the 11th value */
    cf_map_input mi = cf_input_generator(counter_next, &g);
    cf_map_options o = opts_default();
    o.buffersize = 4;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_double, &mi, 1, &o, &it));
    int ok = 0, rc = CF_OK;
    for (int i = 0; i < 20; i++) {
        const cf_value *v = NULL;
        rc = cf_map_next(it, &v, NULL);
        if (rc != CF_OK)
            break;
        assert_int_equal(v->as.i64, 2 * ok);
        ok++;
    }
    assert_int_equal(rc, CF_EINVAL);
    assert_true(ok <= 10);
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_buffersize_error_at_start(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    counter_gen g;
    counter_init(&g, -1, 0); /* fails at once */
    cf_map_input mi = cf_input_generator(counter_next, &g);
    cf_map_options o = opts_default();
    o.buffersize = 4;
    cf_map_iter *it = NULL;
    int rc = cf_map(ex, t_double, &mi, 1, &o, &it);
    if (rc == CF_OK) {
        /* a lazy map may report it on the first refill instead */
        assert_cf(CF_EINVAL, cf_map_next(it, NULL, NULL));
        cf_map_close(it);
    } else {
        assert_int_equal(rc, CF_EINVAL);
    }
    assert_ok(cf_executor_destroy(ex));
}

static void test_map_default_mode_generator_error(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    counter_gen g;
    counter_init(&g, -1, 7);
    cf_map_input mi = cf_input_generator(counter_next, &g);
    cf_map_iter *it = NULL;
    assert_cf(CF_EINVAL, cf_map(ex, t_double, &mi, 1, NULL, &it));
    assert_ok(cf_executor_destroy(ex));
}

static int t_mul(cf_call *call)
{
    return cf_return_i64(call, cf_arg_i64(call, 0) * cf_arg_i64(call, 1));
}

/* A generator that must not be called after it said it had no more, or
 * past the element where a shorter input ends the zip. */
typedef struct {
    int i, n;
    int fail_at;   /* -1: never */
    int after_end; /* calls after it returned 0 */
} strict_gen;

static int strict_next(void *ctx, cf_value *out)
{
    strict_gen *g = ctx;
    if (g->i > g->n) {
        g->after_end++;
        return -1;
    }
    if (g->i == g->fail_at)
        return -1;
    if (g->i == g->n) {
        g->i++;
        return 0;
    }
    *out = cf_i64(g->i++);
    return 1;
}

static void drain_squares(cf_map_iter *it, int n)
{
    const cf_value *v;
    for (int i = 0; i < n; i++) {
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, (int64_t)i * i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, &v, NULL));
}

/* Inputs that end inside a chunk end the map: a generator is called once
 * to learn that it has no more and never again, and one ahead of a
 * shorter input is called no further than zip() would call it (it used
 * to be called again for a next chunk, and its error there failed the
 * whole map). */
static void test_map_generator_not_called_after_the_end(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    for (int lazy = 0; lazy < 2; lazy++) {
        cf_map_options o;
        cf_map_options_init(&o);
        o.chunksize = 3;
        o.buffersize = lazy ? 2 : 0;
        strict_gen g = {0, 10, -1, 0};
        cf_map_input mi = cf_input_generator(strict_next, &g);
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, t_square, &mi, 1, &o, &it));
        drain_squares(it, 10);
        assert_int_equal(g.after_end, 0);
        cf_map_close(it);
        /* zip(g, a): g fails at the element after a's last, which zip()
         * never asks for. */
        cf_value a[4] = {cf_i64(0), cf_i64(1), cf_i64(2), cf_i64(3)};
        strict_gen h = {0, 100, 5, 0};
        cf_map_input two[2] = {cf_input_generator(strict_next, &h), cf_input_array(a, 4)};
        o.chunksize = 3;
        assert_ok(cf_map(ex, t_mul, two, 2, &o, &it));
        drain_squares(it, 4);
        assert_int_equal(h.i, 5);
        cf_map_close(it);
    }
    assert_ok(cf_executor_destroy(ex));
}

/* A failed cf_map() leaves its own message, not one from its clean-up. */
static void test_map_error_message_is_the_cause(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    assert_ok(cf_shutdown(ex, true, false));
    cf_value in[2] = {cf_i64(1), cf_i64(2)};
    cf_map_input mi = cf_input_array(in, 2);
    cf_map_iter *it = NULL;
    assert_cf(CF_ESHUTDOWN, cf_map(ex, t_square, &mi, 1, NULL, &it));
    assert_null(it);
    assert_non_null(strstr(cf_last_error_message(), "shutdown"));
    assert_ok(cf_executor_destroy(ex));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_map_error_message_is_the_cause),
    cmocka_unit_test(test_map_options_init),
    cmocka_unit_test(test_map_basic_array),
    cmocka_unit_test(test_map_results_in_input_order),
    cmocka_unit_test(test_map_zip_shortest),
    cmocka_unit_test(test_map_zip_with_empty_input),
    cmocka_unit_test(test_map_generator_input),
    cmocka_unit_test(test_map_generator_values_copied),
    cmocka_unit_test(test_map_zip_one_generator),
    cmocka_unit_test(test_map_failure_at_position),
    cmocka_unit_test(test_map_str_array_copied),
    cmocka_unit_test(test_map_timeout_then_done),
    cmocka_unit_test(test_map_timeout_measured_from_map_call),
    cmocka_unit_test(test_map_timeout_first_results_ok),
    cmocka_unit_test(test_map_chunksize),
    cmocka_unit_test(test_map_huge_chunksize_bounded_by_input),
    cmocka_unit_test(test_map_bad_arguments),
    cmocka_unit_test(test_map_after_shutdown),
    cmocka_unit_test(test_map_close_early_cancels),
    cmocka_unit_test(test_map_close_while_calls_run_race),
    cmocka_unit_test(test_map_submits_without_iteration),
    cmocka_unit_test(test_map_close_after_partial_consumption),
    cmocka_unit_test(test_map_generator_failure_at_start),
    cmocka_unit_test(test_map_buffersize_endless_generator),
    cmocka_unit_test(test_map_buffersize_with_chunks),
    cmocka_unit_test(test_map_buffersize_finite),
    cmocka_unit_test(test_map_buffersize_larger_than_input),
    cmocka_unit_test(test_map_buffersize_str_generator),
    cmocka_unit_test(test_map_buffersize_generator_error),
    cmocka_unit_test(test_map_buffersize_error_at_start),
    cmocka_unit_test(test_map_default_mode_generator_error),
    cmocka_unit_test(test_map_generator_not_called_after_the_end),
};

CF_TEST_MAIN(tests)
