/* SPDX-License-Identifier: MIT */
/*
 * test_cancel_fd.c - cf_cancel_fd(): a running thread-pool task blocked in
 * poll() sees an interrupt, its timeout and terminate_workers.
 */
#include "cf_test_util.h"
#include "internal.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#define NO_TIMERFD "cf_cancel_fd() needs a timerfd, so it returns CF_ENOTSUP"

/* Task: arg 0 = cf_test_event* set once the descriptor is ready (or
 * NULL); optional arg 1 = a cf_test_event* to wait for before asking for
 * the descriptor, or an i64 count of sched_yield()s to make first.  Checks
 * the descriptor is quiet, then blocks in poll() on it for up to 10 s
 * (scaled).  Returns 1 if it turned readable and cf_cancel_requested()
 * agrees, 0 if poll timed out; raises on errors. */
static int t_wait_cancel_fd(cf_call *call)
{
    cf_test_event *ready = cf_arg_ptr(call, 0);
    const cf_value *before = cf_arg(call, 1);
    if (before && before->kind == CF_PTR)
        cf_test_event_wait(before->as.ptr, 10);
    else if (before)
        for (int64_t i = 0; i < before->as.i64; i++)
            sched_yield();
    int fd = cf_cancel_fd(call);
    if (fd < 0)
        return cf_raise(call, fd, "TestError", "cancel_fd: %s", cf_last_error_message());
    if (cf_cancel_fd(call) != fd)
        return cf_raise(call, 1, "TestError", "a second call gave another descriptor");
    if (ready) {
        struct pollfd q = {.fd = fd, .events = POLLIN};
        if (poll(&q, 1, 0) != 0 && !cf_cancel_requested(call))
            return cf_raise(call, 2, "TestError", "readable before any request");
        cf_test_event_set(ready);
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, 10000 * cf_test_scale());
    while (rc < 0 && errno == EINTR);
    if (rc == 0)
        return cf_return_i64(call, 0);
    if (rc != 1 || !(p.revents & POLLIN) || !cf_cancel_requested(call))
        return cf_raise(call, 3, "TestError", "poll %d revents %d", rc, p.revents);
    return cf_return_i64(call, 1);
}

static void test_cancel_fd_interrupt(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE(NO_TIMERFD);
    int fds_before = count_fds();
    cf_executor *ex = pool_new(1);
    cf_test_event ready = CF_TEST_EVENT_INIT;
    cf_future *f;
    assert_ok(cf_submit(ex, t_wait_cancel_fd, CF_ARGS(cf_ptr(&ready)), &f));
    assert_true(cf_test_event_wait(&ready, 10));
    assert_ok(cf_future_interrupt(f));
    int64_t x;
    assert_ok(cf_future_result_i64(f, 10 * cf_test_scale(), &x));
    assert_int_equal(x, 1);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
    /* The descriptor closed with the call. */
    assert_int_equal(count_fds(), fds_before);
}

static void test_cancel_fd_timeout(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE(NO_TIMERFD);
    cf_executor *ex = pool_new(1);
    cf_submit_options o;
    cf_submit_options_init(&o);
    o.timeout = 0.05;
    cf_future *f;
    assert_ok(cf_submit_with(ex, &o, t_wait_cancel_fd, CF_ARGS(cf_ptr(NULL)), &f));
    int64_t x;
    assert_ok(cf_future_result_i64(f, 10 * cf_test_scale(), &x));
    assert_int_equal(x, 1);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_cancel_fd_terminate_workers(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE(NO_TIMERFD);
    cf_executor *ex = pool_new(2);
    cf_test_event ready[2] = {CF_TEST_EVENT_INIT, CF_TEST_EVENT_INIT};
    cf_future *fs[2];
    for (int i = 0; i < 2; i++)
        assert_ok(cf_submit(ex, t_wait_cancel_fd, CF_ARGS(cf_ptr(&ready[i])), &fs[i]));
    for (int i = 0; i < 2; i++)
        assert_true(cf_test_event_wait(&ready[i], 10));
    assert_ok(cf_terminate_workers(ex));
    for (int i = 0; i < 2; i++) {
        int64_t x;
        assert_ok(cf_future_result_i64(fs[i], 10 * cf_test_scale(), &x));
        assert_int_equal(x, 1);
        assert_ok(cf_future_release(fs[i]));
    }
    assert_ok(cf_executor_destroy(ex));
}

/* The interrupt races the task making its descriptor: 300 rounds, the
 * task always wakes. */
static void test_cancel_fd_race_interrupt_vs_create(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE(NO_TIMERFD);
    cf_executor *ex = pool_new(1);
    for (int round = 0; round < 300; round++) {
        cf_future *f;
        assert_ok(cf_submit(ex, t_wait_cancel_fd,
                            CF_ARGS(cf_ptr(NULL), cf_i64(round % 16)), &f));
        while (!cf_future_running(f) && !cf_future_done(f))
            sched_yield(); /* not a sleep: the state is what we wait for */
        assert_false(cf_future_done(f));
        assert_ok(cf_future_interrupt(f));
        int64_t x;
        assert_ok(cf_future_result_i64(f, 10 * cf_test_scale(), &x));
        assert_int_equal(x, 1);
        assert_ok(cf_future_release(f));
    }
    assert_ok(cf_executor_destroy(ex));
}

/* Task: returns 1 as soon as cf_cancel_requested() turns true. */
static int t_spin_until_requested(cf_call *call)
{
    double end = cf_test_now() + 10 * cf_test_scale();
    while (!cf_cancel_requested(call))
        if (cf_test_now() > end)
            return cf_return_i64(call, 0);
    return cf_return_i64(call, 1);
}

/* A task that ends the moment it sees the request: the interrupt that made
 * the request answers CF_OK, never CF_EDONE (it used to set the flag
 * before its last look at the state, so the task could end in between:
 * 4-8 rounds in 20,000 answered CF_EDONE). */
static void test_interrupt_seen_at_once_answers_ok(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    double end = cf_test_now() + 3 * cf_test_scale();
    int rounds = 0;
    for (; rounds < 20000 && cf_test_now() < end; rounds++) {
        cf_future *f;
        assert_ok(cf_submit(ex, t_spin_until_requested, NULL, 0, &f));
        while (!cf_future_running(f) && !cf_future_done(f))
            sched_yield(); /* not a sleep: the state is what we wait for */
        assert_false(cf_future_done(f));
        int rc = cf_future_interrupt(f);
        if (rc != CF_OK)
            fail_msg("round %d: interrupt of a running call answered %s", rounds,
                     cf_err_name(rc));
        int64_t x = -9;
        assert_ok(cf_future_result_i64(f, 10 * cf_test_scale(), &x));
        assert_int_equal(x, 1);
        assert_ok(cf_future_release(f));
    }
    assert_true(rounds >= 100);
    assert_ok(cf_executor_destroy(ex));
}

/* Interrupted before the task asked: the descriptor is readable at once. */
static void test_cancel_fd_after_interrupt(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE(NO_TIMERFD);
    cf_executor *ex = pool_new(1);
    cf_test_event go = CF_TEST_EVENT_INIT;
    cf_future *f;
    assert_ok(cf_submit(ex, t_wait_cancel_fd, CF_ARGS(cf_ptr(NULL), cf_ptr(&go)), &f));
    while (!cf_future_running(f))
        sched_yield(); /* not a sleep: the state is what we wait for */
    assert_ok(cf_future_interrupt(f));
    cf_test_event_set(&go);
    int64_t x;
    assert_ok(cf_future_result_i64(f, 10 * cf_test_scale(), &x));
    assert_int_equal(x, 1);
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

/* Task: arg 0 = cf_test_event* set once the descriptor is readable, arg 1
 * = cf_test_event* set by the test when its requests are over.  Polls the
 * descriptor without blocking until then, and returns how many polls
 * found it not readable (it should stay readable). */
static int t_watch_readable(cf_call *call)
{
    cf_test_event *readable = cf_arg_ptr(call, 0);
    cf_test_event *over = cf_arg_ptr(call, 1);
    int fd = cf_cancel_fd(call);
    if (fd < 0)
        return cf_raise(call, fd, "TestError", "cancel_fd: %s", cf_last_error_message());
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, 10000 * cf_test_scale());
    while (rc < 0 && errno == EINTR);
    if (rc != 1)
        return cf_raise(call, 1, "TestError", "never readable");
    cf_test_event_set(readable);
    int64_t misses = 0;
    int polls = 0;
    while (!cf_test_event_wait(over, 0) || polls < 1000) {
        if (poll(&p, 1, 0) != 1)
            misses++;
        polls++;
    }
    return cf_return_i64(call, misses);
}

/* Once readable the descriptor stays readable: more requests (a second
 * interrupt, terminate_workers, an interrupt after the timeout passed)
 * must not set the timer again, which would clear its expiry until the
 * new one. */
static void test_cancel_fd_stays_readable(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE(NO_TIMERFD);
    for (int use_timeout = 0; use_timeout < 2; use_timeout++) {
        cf_executor *ex = pool_new(1);
        cf_test_event readable = CF_TEST_EVENT_INIT, over = CF_TEST_EVENT_INIT;
        cf_submit_options o;
        cf_submit_options_init(&o);
        if (use_timeout)
            o.timeout = 0.001;
        cf_future *f;
        assert_ok(cf_submit_with(ex, &o, t_watch_readable,
                                 CF_ARGS(cf_ptr(&readable), cf_ptr(&over)), &f));
        if (!use_timeout) {
            while (!cf_future_running(f))
                sched_yield(); /* not a sleep: the state is what we wait for */
            assert_ok(cf_future_interrupt(f));
        }
        assert_true(cf_test_event_wait(&readable, 10));
        for (int i = 0; i < 2000; i++)
            assert_ok(cf_future_interrupt(f));
        assert_ok(cf_terminate_workers(ex));
        cf_test_event_set(&over);
        int64_t misses;
        assert_ok(cf_future_result_i64(f, 10 * cf_test_scale(), &misses));
        assert_int_equal(misses, 0);
        assert_ok(cf_future_release(f));
        assert_ok(cf_executor_destroy(ex));
    }
}

/* Task: what cf_cancel_fd() returned, and its message in arg 0. */
static int t_cancel_fd_code(cf_call *call)
{
    char *msg = cf_arg_ptr(call, 0);
    int fd = cf_cancel_fd(call);
    snprintf(msg, 256, "%s", fd < 0 ? cf_last_error_message() : "");
    return cf_return_i64(call, fd);
}

/* The Linux build gives a descriptor; the portable one, which has no
 * timer descriptor, says so with CF_ENOTSUP rather than a descriptor that
 * would never turn readable at the deadline. */
static void test_cancel_fd_or_not_supported(void **state)
{
    (void)state;
    char msg[256] = "";
    cf_executor *ex = pool_new(1);
    cf_future *f;
    assert_ok(cf_submit(ex, t_cancel_fd_code, CF_ARGS(cf_ptr(msg)), &f));
    int64_t fd;
    assert_ok(cf_future_result_i64(f, 10 * cf_test_scale(), &fd));
#ifdef CF_TEST_PORTABLE
    assert_int_equal(fd, CF_ENOTSUP);
    assert_true(contains(msg, "CF_PORTABLE"));
#else
    assert_true(fd >= 0);
#endif
    assert_ok(cf_future_release(f));
    assert_ok(cf_executor_destroy(ex));
}

static void test_cancel_fd_bad_input(void **state)
{
    (void)state;
    assert_cf(CF_EINVAL, cf_cancel_fd(NULL));
    assert_true(contains(cf_last_error_message(), "NULL"));
}

/* fork() racing interrupts, in a process that never asked for a
 * descriptor: the child must not inherit the descriptor list's lock held.
 * A thread fires the descriptors (what cf_future_interrupt() does after
 * its checks) over and over; each child fires once more, which takes the
 * same lock (a child that hangs there is ended by its alarm). */
static void *fire_loop(void *p)
{
    atomic_bool *stop = p;
    while (!atomic_load(stop))
        cf__cancel_fd_fire(NULL);
    return NULL;
}

static void test_cancel_fd_fork_while_interrupting(void **state)
{
    (void)state;
    atomic_bool stop;
    atomic_init(&stop, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fire_loop, &stop), 0);
    int hung = 0;
    for (int round = 0; round < 200 && !hung; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            alarm((unsigned)(5 * cf_test_scale()));
            cf__cancel_fd_fire(NULL);
            _exit(0);
        }
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            hung++;
    }
    atomic_store(&stop, true);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(hung, 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_cancel_fd_interrupt),
    cmocka_unit_test(test_cancel_fd_timeout),
    cmocka_unit_test(test_cancel_fd_terminate_workers),
    cmocka_unit_test(test_cancel_fd_race_interrupt_vs_create),
    cmocka_unit_test(test_interrupt_seen_at_once_answers_ok),
    cmocka_unit_test(test_cancel_fd_after_interrupt),
    cmocka_unit_test(test_cancel_fd_stays_readable),
    cmocka_unit_test(test_cancel_fd_or_not_supported),
    cmocka_unit_test(test_cancel_fd_bad_input),
    cmocka_unit_test(test_cancel_fd_fork_while_interrupting),
};

CF_TEST_MAIN(tests)
