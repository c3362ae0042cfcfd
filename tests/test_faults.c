/* SPDX-License-Identifier: MIT */
/*
 * test_faults.c - process-pool behaviour when things go wrong around a
 * call rather than in it: a replacement worker that cannot start (fault
 * injection, fault/cf_fault.h), an initializer the worker does not know,
 * a pool that breaks with nobody waiting, initializer arguments above the
 * inline frame size, and task output that must not be lost when the
 * worker is killed right after it answers.
 *
 * Tasks run in other processes, so they never use cmocka asserts: they
 * report through their result or failure.
 */
#include "cf_test_util.h"
#include "cf_fault.h"
#include "internal.h" /* cf__test_first_forks_wait_ns */
#include "os.h"       /* cf__os_pidfd() */
#include "process.h"  /* cf__test_hook_before_reap */

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

#define T_OK 10.0

CF_TASK(t_square);

static int p_die(cf_call *call)
{
    (void)call;
    _exit(3);
}
CF_TASK(p_die);

static int p_print(cf_call *call)
{
    int64_t i = cf_arg_i64(call, 0);
    printf("marker %lld\n", (long long)i); /* stdout is a file: buffered */
    return cf_return_i64(call, i);
}
CF_TASK(p_print);

static int p_getpid(cf_call *call)
{
    return cf_return_i64(call, (int64_t)getpid());
}
CF_TASK(p_getpid);

/* The initializer's view of its argument, for p_init_seen. */
static uint64_t init_sum;
static uint64_t init_size;

static int p_init_big(cf_call *call)
{
    const cf_value *v = cf_arg(call, 0);
    if (!v || v->kind != CF_BYTES)
        return cf_raise(call, CF_EINVAL, "ValueError", "want bytes");
    init_size = v->size;
    init_sum = checksum(v->as.bytes, v->size);
    return 0;
}
CF_TASK(p_init_big);

static int p_init_seen(cf_call *call)
{
    return cf_return_i64(call, (int64_t)(init_sum ^ init_size));
}
CF_TASK(p_init_seen);

/* Registered at run time, after cf_process_init(): a CF_START_EXEC worker
 * never learns of it. */
static int late_init(cf_call *call)
{
    (void)call;
    return 0;
}

/* A pool of one worker (CF_START_EXEC). */
static cf_executor *pool1(cf_crash_policy policy)
{
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.on_crash = policy;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    return ex;
}

/* ---- max_tasks_per_child: the replacement cannot start ------------------- */

/* The retiring worker's own call was killed along with it when its
 * replacement failed to start; it must finish, and later calls get the
 * start failure. */
static void test_retiring_call_survives_failed_replacement(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        cf_process_pool_options o;
        cf_process_pool_options_init(&o);
        o.max_workers = 1;
        o.max_tasks_per_child = 2;
        cf_executor *ex = NULL;
        assert_ok(cf_process_pool_new(&ex, &o));
        cf_future *f = NULL;
        int64_t r = 0;
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f));
        assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &r));
        assert_int_equal(r, 9);
        cf_future_release(f);
        /* The second call retires the worker; no replacement can start. */
        cf_fault_arm(CF_FAULT_POSIX_SPAWN, 1, true);
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &f));
        assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &r));
        assert_int_equal(r, 16);
        cf_future_release(f);
        /* Later calls: the start failure, at submit or on the future. */
        int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(5)), &f);
        if (rc == CF_OK) {
            rc = cf_future_result_i64(f, T_OK * cf_test_scale(), &r);
            cf_future_release(f);
        }
        assert_true(rc == CF_EBROKEN || rc == CF_ENOMEM);
        assert_ok(cf_executor_destroy(ex));
        cf_fault_disarm();
        assert_true(cf_fault_failed() >= 1);
    }
}

/* ---- CF_CRASH_REPLACES_WORKER: an idle worker killed ---------------------- */

/* A call submitted right after an idle worker was killed may be sent to it
 * before its death is seen; the worker never began it, so it runs on the
 * replacement instead of failing as if it had crashed there. */
static void test_call_after_idle_kill_runs_on_replacement(void **state)
{
    (void)state;
    enum { ROUNDS = 200 };
    cf_executor *ex = pool1(CF_CRASH_REPLACES_WORKER);
    int failed = 0;
    for (int i = 0; i < ROUNDS; i++) {
        cf_future *f = NULL;
        int64_t pid = 0;
        assert_ok(cf_submit(ex, p_getpid, NULL, 0, &f));
        assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &pid));
        cf_future_release(f);
        assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &f));
        int64_t r = -1;
        int rc = cf_future_result_i64(f, T_OK * cf_test_scale(), &r);
        if (rc != CF_OK || r != (int64_t)i * i)
            failed++;
        cf_future_release(f);
    }
    assert_ok(cf_executor_destroy(ex));
    if (failed)
        fail_msg("%d of %d calls submitted right after an idle worker was killed failed", failed,
                 ROUNDS);
}

/* A call that kills every worker before it can begin (CFUTURES_FAULT
 * "unclaimed-exit") is tried on a few replacements, then fails, instead of
 * killing worker after worker for ever; the pool carries on. */
static int p_unclaimed(cf_call *call)
{
    return cf_return_i64(call, 1);
}
CF_TASK(p_unclaimed);

static void test_call_killing_workers_unbegun_fails(void **state)
{
    (void)state;
    assert_int_equal(setenv("CFUTURES_FAULT", "unclaimed-exit:p_unclaimed", 1), 0);
    cf_executor *ex = pool1(CF_CRASH_REPLACES_WORKER);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, p_unclaimed, NULL, 0, &f));
    assert_cf(CF_EBROKEN, cf_future_result(f, T_OK * cf_test_scale(), NULL));
    cf_future_release(f);
    int64_t r = 0;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(7)), &f));
    assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &r));
    assert_int_equal(r, 49);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
    unsetenv("CFUTURES_FAULT");
}

/* ---- an initializer the worker does not know ----------------------------- */

/* Submits a call to `ex`, which must be broken or break before running
 * it, and copies the reason into buf. */
static void broken_reason(cf_executor *ex, char *buf, size_t size)
{
    cf_future *f = NULL;
    int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &f);
    const char *msg = cf_last_error_message();
    if (rc == CF_OK) {
        assert_cf(CF_EBROKEN, cf_future_result(f, T_OK * cf_test_scale(), NULL));
        const cf_failure *fl = NULL;
        assert_ok(cf_future_exception(f, 0, &fl));
        assert_non_null(fl);
        snprintf(buf, size, "%s", cf_failure_message(fl));
        cf_future_release(f);
    } else {
        assert_cf(CF_EBROKEN, rc);
        snprintf(buf, size, "%s", msg);
    }
}

static void test_unknown_initializer_is_named(void **state)
{
    (void)state;
    assert_ok(cf_task_register("late_init", late_init));
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.initializer = late_init;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    char buf[512] = "";
    broken_reason(ex, buf, sizeof buf);
    if (!contains(buf, "NameError: initializer \"late_init\" is not registered"))
        fail_msg("message does not name the initializer: %s", buf);
    assert_ok(cf_executor_destroy(ex));
}

/* `tasks` with the running program as the worker: the listed tasks it has
 * pass; one registered at run time, which a CF_START_EXEC worker never
 * learns of, breaks the pool at start-up, named. */
static void test_listed_tasks_checked_at_start(void **state)
{
    (void)state;
    cf_task_fn *const known[] = {t_square, p_init_seen, NULL};
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.tasks = known;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(6)), &f));
    int64_t r = 0;
    assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &r));
    assert_int_equal(r, 36);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));

    assert_ok(cf_task_register("late_init", late_init));
    cf_task_fn *const with_late[] = {t_square, late_init, NULL};
    o.tasks = with_late;
    assert_ok(cf_process_pool_new(&ex, &o));
    char buf[512] = "";
    broken_reason(ex, buf, sizeof buf);
    if (!contains(buf, "(this program) lacks tasks this pool runs: \"late_init\" is not "
                       "registered there"))
        fail_msg("message does not name the missing task: %s", buf);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- a pool that breaks in the background says so ------------------------- */

static void test_background_break_is_logged(void **state)
{
    (void)state;
    cap_install();
    cf_executor *ex = pool1(CF_CRASH_BREAKS_POOL);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, p_die, NULL, 0, &f));
    /* The line is written before any future fails. */
    assert_cf(CF_EBROKEN, cf_future_result(f, T_OK * cf_test_scale(), NULL));
    char first[1024];
    cap_first(first, sizeof first);
    int n = cap_count();
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
    cap_restore();
    assert_int_equal(n, 1);
    if (!contains(first, "process pool broken") || !contains(first, "terminated abruptly"))
        fail_msg("unexpected log line: %s", first);
}

/* ---- CF_START_FORK: the constructor's wait for the first forks ------------ */

static pthread_mutex_t log_gate = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int gated_entered, gated_lines;

/* A log hook that waits for a lock the test thread holds. */
static void gated_log(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
    atomic_fetch_add(&gated_entered, 1);
    pthread_mutex_lock(&log_gate);
    atomic_fetch_add(&gated_lines, 1);
    pthread_mutex_unlock(&log_gate);
}

/* cf_process_pool_new() with CF_START_FORK waits for the manager to fork
 * the first workers.  When none can start, the manager breaks the pool
 * and logs it through the application's log hook; a hook that waits for
 * a lock the caller holds around the constructor must not hang it: the
 * wait gives up (after 200 ms here, 10 s in programs) and the pool comes
 * back, broken.  With an unbounded wait this test hangs (the watchdog
 * fails it). */
static void test_fork_constructor_wait_is_bounded(void **state)
{
    (void)state;
    atomic_store(&cf__test_first_forks_wait_ns, (int64_t)200 * 1000 * 1000);
    atomic_store(&gated_entered, 0);
    atomic_store(&gated_lines, 0);
    cf_set_log_hook(gated_log, NULL);
    pthread_mutex_lock(&log_gate);
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 2;
    o.start_method = CF_START_FORK;
    cf_fault_arm(CF_FAULT_SOCKETPAIR, 1, true); /* no worker can start */
    cf_executor *ex = NULL;
    int rc = cf_process_pool_new(&ex, &o);
    /* Back, while the manager waits (or is about to) in the hook for the
     * lock this thread still holds.  The fault stays armed until the hook
     * is entered: a manager first scheduled after the constructor's wait
     * must still find no worker can start. */
    double end = cf_test_now() + T_OK * cf_test_scale();
    while (atomic_load(&gated_entered) == 0 && cf_test_now() < end)
        sleep_ms(2);
    cf_fault_disarm();
    int entered = atomic_load(&gated_entered), lines = atomic_load(&gated_lines);
    pthread_mutex_unlock(&log_gate);
    atomic_store(&cf__test_first_forks_wait_ns, 0);
    assert_ok(rc);
    assert_non_null(ex);
    assert_true(entered >= 1);
    assert_int_equal(lines, 0);
    assert_true(cf_fault_failed() >= 1);
    cf_future *f = NULL;
    rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &f);
    if (rc == CF_OK) {
        rc = cf_future_result(f, T_OK * cf_test_scale(), NULL);
        cf_future_release(f);
    }
    assert_cf(CF_EBROKEN, rc);
    assert_ok(cf_executor_destroy(ex));
    cf_set_log_hook(NULL, NULL);
    assert_true(atomic_load(&gated_lines) >= 1);
}

/* ---- initargs above the inline frame size --------------------------------- */

static void test_big_initargs(void **state)
{
    (void)state;
    static const size_t sizes[] = {(size_t)64 << 10, ((size_t)64 << 10) + 1, (size_t)3 << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        unsigned char *b = malloc(n);
        assert_non_null(b);
        for (size_t i = 0; i < n; i++)
            b[i] = (unsigned char)(i * 31u + k);
        cf_value arg = cf_bytes(b, n);
        cf_process_pool_options o;
        cf_process_pool_options_init(&o);
        o.max_workers = 2;
        o.initializer = p_init_big;
        o.initargs = &arg;
        o.ninitargs = 1;
        cf_executor *ex = NULL;
        assert_ok(cf_process_pool_new(&ex, &o));
        int64_t want = (int64_t)(checksum(b, n) ^ n);
        free(b); /* copied by pool_new */
        for (int i = 0; i < 4; i++) {
            cf_future *f = NULL;
            int64_t r = 0;
            assert_ok(cf_submit(ex, p_init_seen, NULL, 0, &f));
            assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &r));
            assert_int_equal(r, want);
            cf_future_release(f);
        }
        assert_ok(cf_executor_destroy(ex));
    }
}

/* ---- what a task printed is out before its answer ------------------------- */

static void test_stdout_flushed_before_answer(void **state)
{
    (void)state;
    enum { ROUNDS = 200 };
    /* One CPU for this process and its worker: the worker's answer wakes
     * the parent, which then tends to run before the worker's next step
     * (the order a flush placed after the answer loses to). */
    cpu_set_t all, one;
    assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &all)) {
            CPU_SET(c, &one);
            break;
        }
    }
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    fflush(stdout);
    int saved = dup(1);
    int tf = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (tf < 0)
        tf = fileno(tmpfile());
    assert_true(saved >= 0 && tf >= 0);
    assert_int_equal(dup2(tf, 1), 1);
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    int rc = cf_process_pool_new(&ex, &o);
    cf_future *f = NULL;
    if (rc == CF_OK)
        rc = cf_submit(ex, p_print, CF_ARGS(cf_i64(0)), &f);
    if (rc == CF_OK)
        rc = cf_future_result(f, T_OK * cf_test_scale(), NULL); /* the worker has our file */
    dup2(saved, 1);
    close(saved);
    assert_ok(rc);
    cf_future_release(f);
    static char text[ROUNDS * 32];
    for (int i = 1; i <= ROUNDS; i++) {
        assert_ok(cf_submit(ex, p_print, CF_ARGS(cf_i64(i)), &f));
        assert_ok(cf_future_result(f, T_OK * cf_test_scale(), NULL));
        cf_future_release(f);
        ssize_t got = pread(tf, text, sizeof text - 1, 0);
        assert_true(got >= 0);
        text[got] = '\0';
        char want[32];
        snprintf(want, sizeof want, "marker %d\n", i);
        if (!contains(text, want))
            fail_msg("round %d: the answer came before the task's output", i);
    }
    assert_ok(cf_executor_destroy(ex));
    close(tf);
    sched_setaffinity(0, sizeof all, &all);
}

/* ---- out of memory while a dead worker's last answers are read ---------- */

/* The test's hooks.  cf__test_hook_before_reap: once per test, when the
 * manager is about to look at the exit of a worker that owes answers,
 * waits (bounded) until that worker has exited - leaving it for the pool
 * to reap - and makes every realloc() fail.  cf__test_hook_after_reap_read
 * ends that, right after the manager's last read of the dead worker: its
 * result ring, where a new worker's first answer waits (one call per
 * child here), is read into a buffer that read must allocate.  Both run
 * on the manager thread. */
enum { STARVE_NOT_YET, STARVE_ARMED, STARVE_DONE };
static _Atomic int reap_starved;
static _Atomic bool starved_read;

static void starve_reap(pid_t pid, bool unanswered)
{
    if (!unanswered || atomic_load(&reap_starved) != STARVE_NOT_YET)
        return;
    if (wait_exit_unreaped(pid, 0.5 * cf_test_scale()) > 0) {
        atomic_store(&reap_starved, STARVE_ARMED);
        cf_fault_arm(CF_FAULT_REALLOC, 1, true);
    }
}

static void end_starving(pid_t pid, bool starved)
{
    (void)pid;
    if (atomic_load(&reap_starved) != STARVE_ARMED)
        return;
    cf_fault_disarm();
    atomic_store(&starved_read, starved);
    atomic_store(&reap_starved, STARVE_DONE);
}

static int clear_starve_hooks(void **state)
{
    (void)state;
    atomic_store(&cf__test_hook_before_reap, NULL);
    atomic_store(&cf__test_hook_after_reap_read, NULL);
    cf_fault_disarm();
    return 0;
}

/* A worker answers and exits, and the manager, reading its answers before
 * it reaps it, finds no memory for them: the answers must wait for memory
 * (the pool's bounded out-of-memory retry), not be lost with the reap -
 * which broke the pool ("exited with status 0 during start-up").  Where
 * workers have no pidfd (the portable build) the manager looks for their
 * exits at start and every second, and the hooks can catch a worker that
 * owes its answer there; calls go on until they did.  With a pidfd the
 * death checks come only after the exit, when every answer has been read,
 * the hooks never starve a read, and one round of calls is run. */
static void test_reap_read_out_of_memory(void **state)
{
    (void)state;
    int me = cf__os_pidfd(getpid());
    bool pidfd = me >= 0;
    if (me >= 0)
        close(me);
    atomic_store(&reap_starved, STARVE_NOT_YET);
    atomic_store(&starved_read, false);
    atomic_store(&cf__test_hook_after_reap_read, end_starving);
    atomic_store(&cf__test_hook_before_reap, starve_reap);
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.max_tasks_per_child = 1;
    o.start_method = CF_START_EXEC;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    double end = cf_test_now() + 20 * cf_test_scale();
    int round = 0;
    do {
        square_round(ex, round, 8);
        round++;
    } while (!pidfd && atomic_load(&reap_starved) != STARVE_DONE && cf_test_now() < end);
    atomic_store(&cf__test_hook_before_reap, NULL);
    atomic_store(&cf__test_hook_after_reap_read, NULL);
    assert_ok(cf_executor_destroy(ex));
    cf_fault_disarm();
    if (!pidfd && atomic_load(&reap_starved) != STARVE_DONE)
        fail_msg("no pidfd, and in %d rounds the manager never looked at the exit of a "
                 "worker that owed an answer", round);
    /* The read before the reap did run out of memory. */
    if (atomic_load(&reap_starved) == STARVE_DONE) {
        assert_true(atomic_load(&starved_read));
        assert_true(cf_fault_failed() >= 1);
    }
    assert_no_children();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_retiring_call_survives_failed_replacement),
    cmocka_unit_test(test_fork_constructor_wait_is_bounded),
    cmocka_unit_test(test_call_after_idle_kill_runs_on_replacement),
    cmocka_unit_test(test_call_killing_workers_unbegun_fails),
    cmocka_unit_test(test_unknown_initializer_is_named),
    cmocka_unit_test(test_listed_tasks_checked_at_start),
    cmocka_unit_test(test_background_break_is_logged),
    cmocka_unit_test(test_big_initargs),
    cmocka_unit_test(test_stdout_flushed_before_answer),
    cmocka_unit_test_teardown(test_reap_read_out_of_memory, clear_starve_hooks),
};

CF_TEST_MAIN(tests)
