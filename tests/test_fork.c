/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c - fork() while pools exist: the child can make and use a new
 * pool, an inherited executor reports CF_EBROKEN instead of hanging, and the
 * child can exit() normally.
 *
 * Children never use cmocka asserts: they report through their exit status
 * (0 = all good, anything else names the check that failed), and the parent
 * waits for them with a time limit, killing a child that hangs.
 */
#include "cf_test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

/* ThreadSanitizer cannot start threads in the child of a multi-threaded
 * process ("starting new threads after multi-threaded fork is not
 * supported"), so under TSan the children skip the parts that make a new
 * pool; everything else (inherited executors, standalone futures, exit())
 * is still checked. */
#if defined(__SANITIZE_THREAD__)
#define CF_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CF_TEST_TSAN 1
#endif
#endif
#ifndef CF_TEST_TSAN
#define CF_TEST_TSAN 0
#endif

/* AddressSanitizer's allocator (GCC 12's libasan) takes no lock around
 * fork(): a child forked while another parent thread is inside malloc can
 * block forever on that lock at its first malloc.  glibc's malloc does not
 * have this problem, so the plain build checks it; under ASan, children
 * forked while a parent thread allocates stay off the heap. */
#if defined(__SANITIZE_ADDRESS__)
#define CF_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CF_TEST_ASAN 1
#endif
#endif
#ifndef CF_TEST_ASAN
#define CF_TEST_ASAN 0
#endif

/* The forked child inherits the parent's heap, including objects that only
 * the parent's (now absent) threads reference; LeakSanitizer would report
 * them when a child calls exit().  Leak checking stays on in the parent. */
static volatile int g_in_child;
__attribute__((used, visibility("default"))) int __lsan_is_turned_off(void);
__attribute__((used, visibility("default"))) int __lsan_is_turned_off(void)
{
    return g_in_child;
}

typedef int child_fn(void *arg);

/* Forks; the child runs fn(arg) and leaves with its return value through
 * exit() (use_exit) or _exit(). */
static pid_t spawn_child(child_fn *fn, void *arg, bool use_exit)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        g_in_child = 1;
        alarm((unsigned)(10 * cf_test_scale())); /* the harness handler _exit(3)s */
        int rc = fn(arg);
        if (use_exit)
            exit(rc);
        _exit(rc);
    }
    return pid;
}

/* Waits up to `limit` seconds (scaled) for the child.  Returns its exit
 * status, 1000+signal if it died of a signal, -1 if it hung (then it is
 * killed), -2 if waitpid failed. */
static int reap_child(pid_t pid, double limit)
{
    double end = cf_test_now() + limit * cf_test_scale();
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(st))
                return WEXITSTATUS(st);
            if (WIFSIGNALED(st))
                return 1000 + WTERMSIG(st);
            return -2;
        }
        if (r < 0 && errno != EINTR)
            return -2;
        if (cf_test_now() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        sleep_ms(5);
    }
}

static void check_child_status(int status)
{
    if (status == -1)
        fail_msg("the child hung and was killed");
    if (status >= 1000)
        fail_msg("the child died of signal %d", status - 1000);
    if (status != 0)
        fail_msg("the child failed with status %d", status);
}

/* ---- what children do -------------------------------------------------------- */

/* A new pool in the child: submit, result, destroy. */
static int child_roundtrip(void *arg)
{
    (void)arg;
    if (CF_TEST_TSAN)
        goto standalone;
    cf_executor *ex = NULL;
    if (cf_thread_pool_new(&ex, NULL) != CF_OK)
        return 10;
    for (int i = 0; i < 5; i++) {
        cf_future *f = NULL;
        if (cf_submit(ex, t_square, CF_ARGS(cf_i64(i + 5)), &f) != CF_OK)
            return 11;
        int64_t x = 0;
        if (cf_future_result_i64(f, 5, &x) != CF_OK)
            return 12;
        if (x != (i + 5) * (i + 5))
            return 13;
        if (cf_future_release(f) != CF_OK)
            return 14;
    }
    if (cf_executor_destroy(ex) != CF_OK)
        return 15;
standalone:;
    /* standalone futures work too */
    cf_future *g = NULL;
    if (cf_future_new(&g) != CF_OK)
        return 16;
    cf_value v = cf_i64(3);
    if (cf_future_set_result(g, &v) != CF_OK || cf_future_result(g, 1, NULL) != CF_OK)
        return 17;
    cf_future_release(g);
    return 0;
}

/* Using the executor inherited from the parent fails instead of hanging. */
static int child_inherited_broken(void *arg)
{
    cf_executor *inherited = (cf_executor *)arg;
    cf_future *f = NULL;
    int rc = cf_submit(inherited, t_square, CF_ARGS(cf_i64(2)), &f);
    if (rc != CF_EBROKEN)
        return 20;
    if (f != NULL)
        return 21;
    cf_value in[2] = {cf_i64(1), cf_i64(2)};
    cf_map_input mi = cf_input_array(in, 2);
    cf_map_iter *it = NULL;
    rc = cf_map(inherited, t_square, &mi, 1, NULL, &it);
    if (rc != CF_EBROKEN)
        return 22;
    /* and a fresh pool still works */
    return child_roundtrip(NULL);
}

/* Exits through exit() right away: atexit handlers must not wait for the
 * parent's workers. */
static int child_just_exit(void *arg)
{
    (void)arg;
    return 0;
}

/* Heap-free check of an inherited executor (see CF_TEST_ASAN). */
static int child_inherited_submit_only(void *arg)
{
    cf_future *f = NULL;
    if (cf_submit((cf_executor *)arg, t_square, CF_ARGS(cf_i64(2)), &f) != CF_EBROKEN)
        return 25;
    return f == NULL ? 0 : 26;
}

/* Makes a pool, uses it and exits through exit() without destroying it. */
static int child_new_pool_then_exit(void *arg)
{
    (void)arg;
    if (CF_TEST_TSAN)
        return 0;
    cf_executor *ex = NULL;
    if (cf_thread_pool_new(&ex, NULL) != CF_OK)
        return 30;
    cf_future *f = NULL;
    if (cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &f) != CF_OK)
        return 31;
    int64_t x = 0;
    if (cf_future_result_i64(f, 5, &x) != CF_OK || x != 16)
        return 32;
    return 0;
}

/* ---- tests ------------------------------------------------------------------------ */

/* A pool whose `n` workers are all blocked on b. */
static cf_executor *busy_pool(blocker *b, int n, cf_future **fs)
{
    cf_executor *ex = pool_new(n);
    for (int i = 0; i < n; i++)
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(b), cf_i64(i)), &fs[i]));
    assert_true(blocker_wait_started(b, n, 5));
    return ex;
}

static void finish_busy_pool(cf_executor *ex, blocker *b, int n, cf_future **fs)
{
    blocker_release(b);
    for (int i = 0; i < n; i++) {
        int64_t x = -1;
        assert_ok(cf_future_result_i64(fs[i], 10, &x));
        assert_int_equal(x, i);
        assert_ok(cf_future_release(fs[i]));
    }
    /* the parent's pool still works after the fork */
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(12)), &f));
    int64_t x = 0;
    assert_ok(cf_future_result_i64(f, 10, &x));
    assert_int_equal(x, 144);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(b);
}

static void test_fork_main_thread_busy_pool(void **state)
{
    (void)state;
    blocker b;
    blocker_init(&b);
    cf_future *fs[3];
    cf_executor *ex = busy_pool(&b, 3, fs);
    pid_t pid = spawn_child(child_roundtrip, NULL, false);
    assert_true(pid > 0);
    check_child_status(reap_child(pid, 10));
    finish_busy_pool(ex, &b, 3, fs);
}

static void test_fork_child_inherited_executor_broken(void **state)
{
    (void)state;
    blocker b;
    blocker_init(&b);
    cf_future *fs[2];
    cf_executor *ex = busy_pool(&b, 2, fs);
    pid_t pid = spawn_child(child_inherited_broken, ex, false);
    assert_true(pid > 0);
    check_child_status(reap_child(pid, 10));
    finish_busy_pool(ex, &b, 2, fs);
}

static void test_fork_child_inherited_idle_executor_broken(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f));
    assert_ok(cf_future_result(f, 10, NULL));
    assert_ok(cf_future_release(f));
    pid_t pid = spawn_child(child_inherited_broken, ex, false);
    assert_true(pid > 0);
    check_child_status(reap_child(pid, 10));
    assert_ok(cf_executor_destroy(ex));
}

static void test_fork_child_exit_normally(void **state)
{
    (void)state;
    blocker b;
    blocker_init(&b);
    cf_future *fs[2];
    cf_executor *ex = busy_pool(&b, 2, fs);
    pid_t pid = spawn_child(child_just_exit, NULL, true);
    assert_true(pid > 0);
    check_child_status(reap_child(pid, 10));
    pid = spawn_child(child_roundtrip, NULL, true);
    assert_true(pid > 0);
    check_child_status(reap_child(pid, 10));
    pid = spawn_child(child_new_pool_then_exit, NULL, true);
    assert_true(pid > 0);
    check_child_status(reap_child(pid, 10));
    finish_busy_pool(ex, &b, 2, fs);
}

static int t_fork_in_task(cf_call *call)
{
    pid_t pid = spawn_child(child_roundtrip, NULL, false);
    if (pid < 0)
        return cf_raise(call, errno, "OSError", "fork failed");
    return cf_return_i64(call, reap_child(pid, 10));
}

static int t_fork_in_task_exit(cf_call *call)
{
    pid_t pid = spawn_child(child_new_pool_then_exit, NULL, true);
    if (pid < 0)
        return cf_raise(call, errno, "OSError", "fork failed");
    return cf_return_i64(call, reap_child(pid, 10));
}

static void test_fork_from_worker_thread(void **state)
{
    (void)state;
    blocker b;
    blocker_init(&b);
    cf_executor *ex = pool_new(3);
    cf_future *busy = NULL, *forker = NULL, *forker2 = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b), cf_i64(0)), &busy));
    assert_true(blocker_wait_started(&b, 1, 5));
    assert_ok(cf_submit(ex, t_fork_in_task, CF_NOARGS, &forker));
    int64_t status = -100;
    assert_ok(cf_future_result_i64(forker, 30, &status));
    check_child_status((int)status);
    assert_ok(cf_submit(ex, t_fork_in_task_exit, CF_NOARGS, &forker2));
    assert_ok(cf_future_result_i64(forker2, 30, &status));
    check_child_status((int)status);
    blocker_release(&b);
    assert_ok(cf_future_result(busy, 10, NULL));
    assert_ok(cf_future_release(busy));
    assert_ok(cf_future_release(forker));
    assert_ok(cf_future_release(forker2));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

typedef struct {
    cf_executor *ex;
    atomic_int stop;
    int errors;
    int rounds;
} churn_arg;

static void churn(void *arg)
{
    churn_arg *c = (churn_arg *)arg;
    while (!atomic_load(&c->stop)) {
        cf_future *f = NULL;
        if (cf_submit(c->ex, t_square, CF_ARGS(cf_i64(3)), &f) != CF_OK) {
            c->errors++;
            break;
        }
        int64_t x = 0;
        if (cf_future_result_i64(f, 10, &x) != CF_OK || x != 9)
            c->errors++;
        cf_future_release(f);
        c->rounds++;
    }
}

static void test_fork_repeatedly_while_pool_busy(void **state)
{
    (void)state;
    /* Forks while another thread keeps submitting: the child must never
     * inherit a lock held mid-operation. */
    cf_executor *ex = pool_new(4);
    churn_arg c = {ex, 0, 0, 0};
    atomic_init(&c.stop, 0);
    bg_thread t;
    bg_start(&t, churn, &c);
    for (int i = 0; i < 8; i++) {
        pid_t pid = CF_TEST_ASAN ? spawn_child(child_inherited_submit_only, ex, i % 2 == 0)
                                 : spawn_child(child_roundtrip, NULL, i % 2 == 0);
        assert_true(pid > 0);
        check_child_status(reap_child(pid, 10));
    }
    atomic_store(&c.stop, 1);
    bg_join(&t, 10);
    assert_int_equal(c.errors, 0);
    assert_true(c.rounds > 0);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- process-pool results across fork ------------------------------------ */

CF_TASK(t_echo);

typedef struct fork_result {
    cf_future *f;          /* done, with a big result */
    const unsigned char *want;
    size_t n;
    int go[2];             /* the parent writes one byte when done */
} fork_result;

static void fill(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)((i * 131u + (i >> 11) + seed * 29u) & 0xff);
}

static int child_checks_result(void *arg)
{
    fork_result *fr = arg;
    char c;
    if (read(fr->go[0], &c, 1) != 1) /* bounded by spawn_child's alarm */
        return 2;
    const cf_value *v = NULL;
    if (cf_future_result(fr->f, 0, &v) != CF_OK || !v || v->kind != CF_BYTES ||
        v->size != fr->n)
        return 3;
    if (memcmp(v->as.bytes, fr->want, fr->n) != 0)
        return 4;
    /* Freeing the inherited copy must leave the parent's buffers alone
     * (and not take the parent's locks).  Off the heap under sanitizers:
     * their allocators are not fork-safe with other parent threads. */
    if (!CF_TEST_ASAN && !CF_TEST_TSAN && cf_future_release(fr->f) != CF_OK)
        return 5;
    return 0;
}

/* A process pool's big result that a child inherited stays as it was,
 * whatever the parent does afterwards: the parent releases its copy and
 * makes more big calls of the same size, which would reuse that buffer
 * if it went round. */
static void test_fork_child_keeps_big_result(void **state)
{
    (void)state;
    size_t n = (size_t)3 << 20;
    unsigned char *want = malloc(n), *other = malloc(n);
    assert_non_null(want);
    assert_non_null(other);
    fill(want, n, 1);
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    fork_result fr = {NULL, want, n, {-1, -1}};
    for (int round = 0; round < 2; round++) { /* the second is warm */
        if (fr.f)
            assert_ok(cf_future_release(fr.f));
        assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_bytes(want, n)), &fr.f));
        const cf_value *v = NULL;
        assert_ok(cf_future_result(fr.f, 10 * cf_test_scale(), &v));
        assert_memory_equal(v->as.bytes, want, n);
    }
    assert_int_equal(pipe2(fr.go, O_CLOEXEC), 0);
    pid_t pid = spawn_child(child_checks_result, &fr, false);
    assert_true(pid > 0);
    assert_ok(cf_future_release(fr.f));
    for (unsigned k = 0; k < 3; k++) {
        fill(other, n, 7 + k);
        cf_future *g = NULL;
        assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_bytes(other, n)), &g));
        const cf_value *v = NULL;
        assert_ok(cf_future_result(g, 10 * cf_test_scale(), &v));
        assert_memory_equal(v->as.bytes, other, n);
        assert_ok(cf_future_release(g));
    }
    assert_int_equal(write(fr.go[1], "g", 1), 1);
    check_child_status(reap_child(pid, 10));
    close(fr.go[0]);
    close(fr.go[1]);
    assert_ok(cf_executor_destroy(ex));
    free(want);
    free(other);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fork_main_thread_busy_pool),
    cmocka_unit_test(test_fork_child_inherited_executor_broken),
    cmocka_unit_test(test_fork_child_inherited_idle_executor_broken),
    cmocka_unit_test(test_fork_child_exit_normally),
    cmocka_unit_test(test_fork_from_worker_thread),
    cmocka_unit_test(test_fork_repeatedly_while_pool_busy),
    cmocka_unit_test(test_fork_child_keeps_big_result),
};

CF_TEST_MAIN(tests)
