/* SPDX-License-Identifier: MIT */
/*
 * test_worker_program.c - process pools whose workers run a program of
 * their own (cf_process_pool_options.worker_program), as a library or
 * plugin makes them: this program never calls cf_process_init(), the
 * worker program (worker_program/wp_worker.c) does, and both link the
 * tasks of worker_program/wp_tasks.c.  Covers: the pool works and its
 * calls run in that program; a wrong path or a file that cannot be run is
 * refused at creation; a task the worker program lacks breaks the pool at
 * start-up with a message naming it; other bad options.
 */
/* The point of this file: main() does not call cf_process_init(). */
#define CF_TEST_PROCESS_INIT(argc, argv) ((void)(argc), (void)(argv))
#include "harness.h"
#include "cf_test_util.h"
#include "worker_program/wp_tasks.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CF_TEST_WORKER
#error "CF_TEST_WORKER must name the worker program (tests/CMakeLists.txt)"
#endif

/* Registered here but not in the worker program. */
static int wp_only_here(cf_call *call)
{
    return cf_return_i64(call, 1);
}
CF_TASK(wp_only_here);

/* Never registered. */
static int wp_nobody(cf_call *call)
{
    return cf_return_none(call);
}

static cf_task_fn *const shared_tasks[] = {wp_square, wp_exe, NULL};

static void opts_for_worker(cf_process_pool_options *o, const char *program,
                            cf_task_fn *const *tasks)
{
    cf_process_pool_options_init(o);
    o->max_workers = 2;
    o->worker_program = program;
    o->tasks = tasks;
}

/* Asserts cf_process_pool_new(o) fails with `code`, leaves *out NULL and
 * says `needle` in its message. */
static void expect_refused(const cf_process_pool_options *o, int code, const char *needle)
{
    cf_executor *ex = (cf_executor *)&ex; /* not NULL: must be cleared */
    assert_cf(code, cf_process_pool_new(&ex, o));
    assert_null(ex);
    const char *msg = cf_last_error_message();
    if (!strstr(msg, needle))
        fail_msg("message \"%s\" does not say \"%s\"", msg, needle);
}

/* Makes a pool of `o`, checks that its calls give the right results and
 * run in the executable `exe`, and destroys it. */
static void expect_runs_in(const cf_process_pool_options *o, const char *exe)
{
    cf_executor *ex;
    assert_ok(cf_process_pool_new(&ex, o));
    enum { N = 40 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, wp_square, CF_ARGS(cf_i64(i)), &fs[i]));
    for (int i = 0; i < N; i++) {
        int64_t r = -1;
        assert_ok(cf_future_result_i64(fs[i], 10 * cf_test_scale(), &r));
        assert_int_equal(r, (int64_t)i * i);
        cf_future_release(fs[i]);
    }
    cf_future *f;
    assert_ok(cf_submit(ex, wp_exe, CF_NOARGS, &f));
    const cf_value *v = NULL;
    assert_ok(cf_future_result(f, 10 * cf_test_scale(), &v));
    assert_int_equal(v->kind, CF_STR);
    char want[PATH_MAX];
    assert_non_null(realpath(exe, want));
    assert_string_equal(v->as.str, want);
    cf_future_release(f);
    assert_ok(cf_executor_destroy(ex));
}

static void worker_program_runs_tasks(void **state)
{
    (void)state;
    /* Without a worker program, this program cannot be a worker. */
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    expect_refused(&o, CF_EINVALSTATE, "cf_process_init");

    opts_for_worker(&o, CF_TEST_WORKER, shared_tasks);
    expect_runs_in(&o, CF_TEST_WORKER);
}

static void worker_program_bad_paths(void **state)
{
    (void)state;
    cf_process_pool_options o;
    opts_for_worker(&o, "wp_worker", shared_tasks);
    expect_refused(&o, CF_EINVAL, "absolute path");
    opts_for_worker(&o, "", shared_tasks);
    expect_refused(&o, CF_EINVAL, "absolute path");
    opts_for_worker(&o, "/nonexistent-dir/cfutures-worker", shared_tasks);
    expect_refused(&o, CF_EINVAL, "No such file");
    opts_for_worker(&o, "/tmp", shared_tasks);
    expect_refused(&o, CF_EINVAL, "not a regular file");
    static char longpath[5000];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    opts_for_worker(&o, longpath, shared_tasks);
    expect_refused(&o, CF_EINVAL, "absolute path");

    /* A regular file without execute permission (none for anyone, so even
     * root may not run it). */
    char tmp[] = "/tmp/cf-test-noexec-XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, 0644), 0);
    close(fd);
    opts_for_worker(&o, tmp, shared_tasks);
    expect_refused(&o, CF_EINVAL, "not executable");
    unlink(tmp);
}

static void worker_program_bad_options(void **state)
{
    (void)state;
    cf_process_pool_options o;
    /* The tasks are required: without them nothing would be checked. */
    opts_for_worker(&o, CF_TEST_WORKER, NULL);
    expect_refused(&o, CF_EINVAL, "needs `tasks`");
    opts_for_worker(&o, CF_TEST_WORKER, shared_tasks);
    o.start_method = CF_START_FORK;
    expect_refused(&o, CF_EINVAL, "CF_START_EXEC");
    /* A function nobody registered cannot be looked up by name. */
    cf_task_fn *const unregistered[] = {wp_square, wp_nobody, NULL};
    opts_for_worker(&o, CF_TEST_WORKER, unregistered);
    expect_refused(&o, CF_EINVAL, "tasks[1] is not registered");
    /* Too many names for the start-up frame. */
    enum { MANY = 4097 };
    cf_task_fn **many = calloc(MANY + 1, sizeof *many);
    assert_non_null(many);
    for (int i = 0; i < MANY; i++)
        many[i] = wp_square;
    opts_for_worker(&o, CF_TEST_WORKER, many);
    expect_refused(&o, CF_EINVAL, "more than 4096 tasks");
    free(many);
}

/* Fails the test unless every call of `ex` fails with CF_EBROKEN and the
 * pool's message says each of `needles`; returns nothing. */
static void expect_broken(cf_executor *ex, const char *const *needles)
{
    cf_future *f = NULL;
    int rc = cf_submit(ex, wp_square, CF_ARGS(cf_i64(3)), &f);
    char msg[512];
    if (rc == CF_OK) {
        assert_cf(CF_EBROKEN, cf_future_result(f, 10 * cf_test_scale(), NULL));
        const cf_failure *fl = NULL;
        assert_ok(cf_future_exception(f, 0, &fl));
        assert_non_null(fl);
        snprintf(msg, sizeof msg, "%s", cf_failure_message(fl));
        cf_future_release(f);
    } else {
        assert_int_equal(rc, CF_EBROKEN);
        snprintf(msg, sizeof msg, "%s", cf_last_error_message());
    }
    for (size_t i = 0; needles[i]; i++)
        if (!strstr(msg, needles[i]))
            fail_msg("message \"%s\" does not say \"%s\"", msg, needles[i]);
    /* Later submits are refused. */
    assert_cf(CF_EBROKEN, cf_submit(ex, wp_square, CF_ARGS(cf_i64(4)), &f));
}

static void worker_program_missing_task(void **state)
{
    (void)state;
    cap_install();
    cf_task_fn *const tasks[] = {wp_square, wp_only_here, wp_exe, NULL};
    cf_process_pool_options o;
    opts_for_worker(&o, CF_TEST_WORKER, tasks);
    cf_executor *ex;
    assert_ok(cf_process_pool_new(&ex, &o));
    const char *needles[] = {"lacks tasks", "\"wp_only_here\" is not registered", CF_TEST_WORKER,
                             "1 missing of 3", NULL};
    expect_broken(ex, needles);
    assert_ok(cf_executor_destroy(ex));
    /* Said once through the log hook. */
    char first[512];
    cap_first(first, sizeof first);
    cap_restore();
    if (!strstr(first, "wp_only_here"))
        fail_msg("log line \"%s\" does not name the missing task", first);
}

static void worker_program_not_a_worker(void **state)
{
    (void)state;
    /* An executable that never says HELLO: the pool breaks at start-up. */
    const char *prog = access("/bin/true", X_OK) == 0 ? "/bin/true" : "/usr/bin/true";
    cap_install();
    cf_process_pool_options o;
    opts_for_worker(&o, prog, shared_tasks);
    o.max_workers = 1;
    cf_executor *ex;
    assert_ok(cf_process_pool_new(&ex, &o));
    const char *needles[] = {"start-up", NULL};
    expect_broken(ex, needles);
    assert_ok(cf_executor_destroy(ex));
    cap_restore();
}

/* A worker program that never says HELLO and never exits (a script that
 * sleeps for a minute): shutdown with cancel_futures left the workers
 * nothing to run, yet waited for them as long as they lived, and so did
 * cf_executor_destroy().  They are now killed EXIT_GRACE_MS (5 s) after
 * that, quietly (a log line each, no broken pool); the call is
 * cancelled.  Without the kill the watchdog (20 s) ends the test. */
static void worker_program_never_starts(void **state)
{
    (void)state;
    char prog[] = "/tmp/cf-never-starts-XXXXXX";
    int fd = mkstemp(prog);
    assert_true(fd >= 0);
    static const char script[] = "#!/bin/sh\nexec sleep 60\n";
    assert_int_equal(write(fd, script, sizeof script - 1), (ssize_t)(sizeof script - 1));
    assert_int_equal(fchmod(fd, 0700), 0);
    close(fd);
    cap_install();
    cf_process_pool_options o;
    opts_for_worker(&o, prog, shared_tasks);
    cf_executor *ex;
    int rc = cf_process_pool_new(&ex, &o);
    if (rc != CF_OK)
        unlink(prog);
    assert_ok(rc);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, wp_square, CF_ARGS(cf_i64(3)), &f));
    assert_cf(CF_ETIMEDOUT, cf_future_result(f, 0.2, NULL));
    double t0 = cf_test_now();
    assert_ok(cf_shutdown(ex, true, true));
    double took = cf_test_now() - t0;
    assert_cf(CF_ECANCELLED, cf_future_result(f, 0, NULL));
    assert_ok(cf_executor_destroy(ex));
    unlink(prog);
    assert_no_children();
    int logged = cap_count();
    char first[1024];
    cap_first(first, sizeof first);
    cap_restore();
    cf_future_release(f);
    if (took < 4.5 || took > 15 * cf_test_scale())
        fail_msg("shutdown took %.1f s, not the 5 s grace", took);
    if (logged != 2 || !strstr(first, "never started"))
        fail_msg("%d log lines, the first \"%s\"", logged, first);
}

static void worker_program_unlisted_task(void **state)
{
    (void)state;
    /* A task the pool did not list and the worker lacks fails alone. */
    cf_process_pool_options o;
    opts_for_worker(&o, CF_TEST_WORKER, shared_tasks);
    o.max_workers = 1;
    cf_executor *ex;
    assert_ok(cf_process_pool_new(&ex, &o));
    cf_future *f, *g;
    assert_ok(cf_submit(ex, wp_only_here, CF_NOARGS, &f));
    const cf_failure *fl = expect_task_failure(f, 10);
    assert_string_equal(cf_failure_type(fl), "NameError");
    assert_non_null(strstr(cf_failure_message(fl), "wp_only_here"));
    assert_ok(cf_submit(ex, wp_square, CF_ARGS(cf_i64(5)), &g));
    int64_t r = 0;
    assert_ok(cf_future_result_i64(g, 10 * cf_test_scale(), &r));
    assert_int_equal(r, 25);
    cf_future_release(f);
    cf_future_release(g);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- worker_library: the generic worker program loads the tasks ------- */

static void opts_for_library(cf_process_pool_options *o, const char *library,
                             cf_task_fn *const *tasks)
{
    opts_for_worker(o, CF_TEST_GENERIC_WORKER, tasks);
    o->worker_library = library;
}

static void worker_library_runs_tasks(void **state)
{
    (void)state;
    cf_process_pool_options o;
    opts_for_library(&o, CF_TEST_TASKS_LIB, shared_tasks);
    /* The calls run in cfutures-worker, which loaded the library. */
    expect_runs_in(&o, CF_TEST_GENERIC_WORKER);
}

static void worker_library_bad_inputs(void **state)
{
    (void)state;
    cf_process_pool_options o;
    opts_for_library(&o, "libcf_test_tasks.so", shared_tasks);
    expect_refused(&o, CF_EINVAL, "worker_library must be an absolute path");
    opts_for_library(&o, "/nonexistent-dir/libtasks.so", shared_tasks);
    expect_refused(&o, CF_EINVAL, "No such file");
    opts_for_library(&o, "/tmp", shared_tasks);
    expect_refused(&o, CF_EINVAL, "not a regular file");
    opts_for_library(&o, CF_TEST_TASKS_LIB, NULL);
    expect_refused(&o, CF_EINVAL, "worker_library needs `tasks`");
    opts_for_library(&o, CF_TEST_TASKS_LIB, shared_tasks);
    o.start_method = CF_START_FORK;
    expect_refused(&o, CF_EINVAL, "CF_START_EXEC");
    /* Without worker_program: the installed cfutures-worker, or a clear
     * error where cfutures is not installed. */
    opts_for_library(&o, CF_TEST_TASKS_LIB, shared_tasks);
    o.worker_program = NULL;
    cf_executor *ex = NULL;
    int rc = cf_process_pool_new(&ex, &o);
    if (rc == CF_OK) {
        assert_ok(cf_executor_destroy(ex));
    } else {
        assert_int_equal(rc, CF_EINVAL);
        assert_null(ex);
        assert_non_null(strstr(cf_last_error_message(), "cfutures-worker"));
    }
}

static void worker_library_missing_task(void **state)
{
    (void)state;
    cap_install();
    cf_task_fn *const tasks[] = {wp_only_here, wp_square, NULL};
    cf_process_pool_options o;
    opts_for_library(&o, CF_TEST_TASKS_LIB, tasks);
    cf_executor *ex;
    assert_ok(cf_process_pool_new(&ex, &o));
    const char *needles[] = {"lacks tasks", "\"wp_only_here\" is not registered",
                             CF_TEST_TASKS_LIB, NULL};
    expect_broken(ex, needles);
    assert_ok(cf_executor_destroy(ex));
    cap_restore();
}

static void worker_library_not_loadable(void **state)
{
    (void)state;
    /* A readable regular file that is no shared object: cfutures-worker
     * cannot load it and exits during start-up, which breaks the pool. */
    char tmp[] = "/tmp/cf-test-notalib-XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not ELF\n", 8), 8);
    close(fd);
    cap_install();
    cf_process_pool_options o;
    opts_for_library(&o, tmp, shared_tasks);
    o.max_workers = 1;
    cf_executor *ex;
    assert_ok(cf_process_pool_new(&ex, &o));
    const char *needles[] = {"start-up", "exit", NULL};
    expect_broken(ex, needles);
    assert_ok(cf_executor_destroy(ex));
    cap_restore();
    unlink(tmp);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(worker_library_runs_tasks),
    cmocka_unit_test(worker_library_bad_inputs),
    cmocka_unit_test(worker_library_missing_task),
    cmocka_unit_test(worker_library_not_loadable),
    cmocka_unit_test(worker_program_runs_tasks),
    cmocka_unit_test(worker_program_bad_paths),
    cmocka_unit_test(worker_program_bad_options),
    cmocka_unit_test(worker_program_missing_task),
    cmocka_unit_test(worker_program_not_a_worker),
    cmocka_unit_test(worker_program_never_starts),
    cmocka_unit_test(worker_program_unlisted_task),
};

CF_TEST_MAIN(tests)
