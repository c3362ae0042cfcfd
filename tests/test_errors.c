/* SPDX-License-Identifier: MIT */
/*
 * test_errors.c - error codes, their names and descriptions, the per-thread
 * "last error" message, the log hook, and small naming helpers.
 */
#include "cf_test_util.h"

#include <fcntl.h>
#include <limits.h>
#include <sched.h>

static void test_strerror_every_code(void **state)
{
    (void)state;
#define CHECK_CODE(name, value, text)                                         \
    assert_int_equal(CF_##name, value);                                       \
    assert_string_equal(cf_strerror(value), text);                            \
    assert_string_equal(cf_err_name(value), "CF_" #name);
    CF_ERROR_TABLE(CHECK_CODE)
#undef CHECK_CODE
}

static void test_strerror_unknown_codes(void **state)
{
    (void)state;
    const int unknown[] = {1, 2, 100, -16, -17, -100, -1000, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = cf_strerror(unknown[i]);
        assert_non_null(s);
        assert_string_equal(s, "unknown error");
        const char *n = cf_err_name(unknown[i]);
        assert_non_null(n);
        assert_string_equal(n, "CF_UNKNOWN");
    }
}

static void test_error_names_distinct(void **state)
{
    (void)state;
    /* Every code has its own name and description. */
    const int codes[] = {
#define LIST_CODE(name, value, text) value,
        CF_ERROR_TABLE(LIST_CODE)
#undef LIST_CODE
    };
    size_t n = sizeof codes / sizeof codes[0];
    assert_int_equal(n, 16);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            assert_string_not_equal(cf_err_name(codes[i]), cf_err_name(codes[j]));
            assert_string_not_equal(cf_strerror(codes[i]), cf_strerror(codes[j]));
        }
}

static void *fresh_thread_message(void *arg)
{
    const char **out = (const char **)arg;
    const char *m = cf_last_error_message();
    /* copy the verdict, not the pointer (thread-local storage dies) */
    *out = (m == NULL) ? "NULL" : (m[0] == '\0' ? "" : "nonempty");
    return NULL;
}

static void test_last_error_empty_in_fresh_thread(void **state)
{
    (void)state;
    const char *verdict = "unset";
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fresh_thread_message, &verdict), 0);
    pthread_join(th, NULL);
    assert_string_equal(verdict, "");
}

static void test_last_error_after_failure(void **state)
{
    (void)state;
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));

    assert_cf(CF_EINVAL, cf_future_result(f, -1.0, NULL));
    const char *m1 = cf_last_error_message();
    assert_non_null(m1);
    assert_true(strlen(m1) > 0);
    char saved[512];
    snprintf(saved, sizeof saved, "%s", m1);

    /* A successful call does not clear it. */
    assert_ok(cf_future_set_result(f, NULL));
    assert_ok(cf_future_result(f, 0, NULL));
    assert_string_equal(cf_last_error_message(), saved);

    /* A different failure replaces it. */
    assert_cf(CF_EINVALSTATE, cf_future_set_result(f, NULL));
    const char *m2 = cf_last_error_message();
    assert_non_null(m2);
    assert_true(strlen(m2) > 0);

    assert_ok(cf_future_release(f));
}

static void test_last_error_timeout_message(void **state)
{
    (void)state;
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    assert_cf(CF_ETIMEDOUT, cf_future_result(f, 0, NULL));
    assert_true(strlen(cf_last_error_message()) > 0);
    assert_ok(cf_future_release(f));
}

static void test_last_error_submit_after_shutdown(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    assert_ok(cf_shutdown(ex, true, false));
    cf_future *f = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &f));
    assert_null(f);
    const char *m = cf_last_error_message();
    assert_non_null(m);
    assert_true(strlen(m) > 0);
    assert_ok(cf_executor_destroy(ex));
}

typedef struct {
    cf_test_event failed;
    cf_test_event checked;
    int rc;
} other_thread_err;

static void *fail_in_other_thread(void *arg)
{
    other_thread_err *o = (other_thread_err *)arg;
    o->rc = cf_wait(NULL, 3, 0, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL);
    cf_test_event_set(&o->failed);
    cf_test_event_wait(&o->checked, 10);
    return NULL;
}

static void test_last_error_is_thread_local(void **state)
{
    (void)state;
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    assert_cf(CF_EINVAL, cf_future_result(f, NAN, NULL));
    char mine[512];
    snprintf(mine, sizeof mine, "%s", cf_last_error_message());
    assert_true(strlen(mine) > 0);

    other_thread_err o;
    cf_test_event_init(&o.failed);
    cf_test_event_init(&o.checked);
    o.rc = 0;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fail_in_other_thread, &o), 0);
    assert_true(cf_test_event_wait(&o.failed, 5));
    /* The other thread failed after us; our message is unchanged. */
    assert_string_equal(cf_last_error_message(), mine);
    cf_test_event_set(&o.checked);
    pthread_join(th, NULL);
    assert_int_equal(o.rc, CF_EINVAL);
    assert_ok(cf_future_release(f));
}

/* ---- log hook --------------------------------------------------------- */

static int failing_callback(cf_future *f, void *arg)
{
    (void)f;
    (void)arg;
    return -42;
}

static int counting_callback(cf_future *f, void *arg)
{
    (void)f;
    (*(int *)arg)++;
    return 0;
}

static void test_log_hook_receives_callback_failure(void **state)
{
    (void)state;
    cap_install();
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    int ran = 0;
    assert_ok(cf_future_add_done_callback(f, failing_callback, NULL));
    assert_ok(cf_future_add_done_callback(f, counting_callback, &ran));
    assert_int_equal(cap_count(), 0);
    assert_ok(cf_future_set_result(f, NULL));
    cap_restore();

    assert_int_equal(ran, 1);
    assert_int_equal(cap_count(), 1);
    assert_int_equal(cap()->bad_arg, 0);
    char msg[1024];
    cap_first(msg, sizeof msg);
    assert_true(strlen(msg) > 0);
    assert_null(strchr(msg, '\n'));
    assert_ok(cf_future_release(f));
}

static void test_log_hook_restore_default_writes_stderr(void **state)
{
    (void)state;
    /* With the hook restored (NULL), the message goes to stderr followed by
     * a newline.  Redirect fd 2 into a temporary file to see it. */
    cap_install();
    cap_restore();

    char path[] = "/tmp/cf_test_stderr_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fd, 2) >= 0);

    cf_future *f = NULL;
    int rc_new = cf_future_new(&f);
    int rc_cb = CF_EINVAL, rc_set = CF_EINVAL;
    if (rc_new == CF_OK) {
        rc_cb = cf_future_add_done_callback(f, failing_callback, NULL);
        rc_set = cf_future_set_result(f, NULL);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);

    assert_ok(rc_new);
    assert_ok(rc_cb);
    assert_ok(rc_set);
    char buf[2048];
    off_t len = lseek(fd, 0, SEEK_END);
    assert_true(len > 0);
    assert_true(len < (off_t)sizeof buf);
    assert_int_equal(pread(fd, buf, (size_t)len, 0), len);
    buf[len] = '\0';
    close(fd);
    assert_int_equal(buf[len - 1], '\n');
    /* nothing reached the (uninstalled) capture hook */
    assert_int_equal(cap_count(), 0);
    assert_ok(cf_future_release(f));
}

static void test_log_hook_replaced_and_restored(void **state)
{
    (void)state;
    cap_install();
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_future_add_done_callback(f, failing_callback, NULL));
    assert_ok(cf_future_add_done_callback(f, failing_callback, NULL));
    assert_ok(cf_future_set_result(f, NULL));
    assert_int_equal(cap_count(), 2);
    /* A callback added after completion runs at once; its failure is
     * reported too. */
    assert_ok(cf_future_add_done_callback(f, failing_callback, NULL));
    assert_int_equal(cap_count(), 3);
    cap_restore();
    assert_ok(cf_future_release(f));
}

typedef struct {
    cf_future *f;
    int calls;
    int done_seen;
} hook_probe;

static hook_probe g_probe;

static void probing_hook(void *arg, const char *msg)
{
    (void)msg;
    hook_probe *p = (hook_probe *)arg;
    p->calls++;
    /* No cfutures lock is held: querying the same future must not block. */
    if (cf_future_done(p->f) && cf_future_result(p->f, 0, NULL) == CF_OK)
        p->done_seen++;
}

static void test_log_hook_called_without_lock(void **state)
{
    (void)state;
    memset(&g_probe, 0, sizeof g_probe);
    assert_ok(cf_future_new(&g_probe.f));
    cf_set_log_hook(probing_hook, &g_probe);
    assert_ok(cf_future_add_done_callback(g_probe.f, failing_callback, NULL));
    assert_ok(cf_future_set_result(g_probe.f, NULL));
    cf_set_log_hook(NULL, NULL);
    assert_int_equal(g_probe.calls, 1);
    assert_int_equal(g_probe.done_seen, 1);
    assert_ok(cf_future_release(g_probe.f));
}

/* A logged message that quotes text with line breaks (here a failure's
 * type and message, as a task may raise them) still reaches the hook as
 * one line: the breaks come as the characters \n and \r. */
static void test_log_message_is_one_line(void **state)
{
    (void)state;
    cap_install();
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_future_set_exception(f, 7, "Bad\nType", "line1\r\nline2"));
    assert_ok(cf_future_add_done_callback(f, failing_callback, NULL));
    assert_int_equal(cap_count(), 1);
    char msg[1024];
    cap_first(msg, sizeof msg);
    cap_restore();
    if (strchr(msg, '\n') || strchr(msg, '\r'))
        fail_msg("the message holds a line break: \"%s\"", msg);
    assert_true(contains(msg, "Bad\\nType"));
    assert_ok(cf_future_release(f));
}

/* A hook that waits on a gate inside its call, for the tests below. */
typedef struct gated_hook {
    cf_test_event entered, gate;
    _Atomic bool set_returned; /* the replacing cf_set_log_hook() returned */
    _Atomic int early;         /* ... while this hook's call was running */
} gated_hook;

static void gated_hook_fn(void *arg, const char *msg)
{
    (void)msg;
    gated_hook *g = arg;
    if (cf_test_event_is_set(&g->entered))
        return; /* only the first call waits */
    cf_test_event_set(&g->entered);
    cf_test_event_wait(&g->gate, 20 * cf_test_scale());
    if (atomic_load(&g->set_returned))
        atomic_fetch_add(&g->early, 1);
}

/* Logs once (a failing done-callback). */
static void log_once(void *arg)
{
    (void)arg;
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    assert_ok(cf_future_add_done_callback(f, failing_callback, NULL));
    assert_ok(cf_future_set_result(f, NULL));
    assert_ok(cf_future_release(f));
}

static void replace_hook(void *arg)
{
    gated_hook *g = arg;
    cf_set_log_hook(NULL, NULL);
    atomic_store(&g->set_returned, true);
}

/* Installs a gated hook (the caller frees it) and has `logger` log once:
 * returns when that thread is inside the hook, waiting for the gate. */
static gated_hook *gated_hook_entered(bg_thread *logger)
{
    gated_hook *g = calloc(1, sizeof *g);
    assert_non_null(g);
    cf_test_event_init(&g->entered);
    cf_test_event_init(&g->gate);
    cf_set_log_hook(gated_hook_fn, g);
    bg_start(logger, log_once, NULL);
    assert_true(cf_test_event_wait(&g->entered, 10 * cf_test_scale()));
    return g;
}

/* cf_set_log_hook() returns only once the hook it replaced is not running
 * anywhere, so its arg may be freed then; it used to return at once while
 * another thread was still inside the old hook.  The pause before the gate
 * opens is the time a wrong early return has to show. */
static void test_log_hook_set_waits_for_calls_in_progress(void **state)
{
    (void)state;
    bg_thread logger, setter;
    gated_hook *g = gated_hook_entered(&logger);
    bg_start(&setter, replace_hook, g);
    sleep_ms(100);
    bool returned_early = atomic_load(&g->set_returned);
    cf_test_event_set(&g->gate);
    bg_join(&logger, 10 * cf_test_scale());
    bg_join(&setter, 10 * cf_test_scale());
    assert_false(returned_early);
    assert_int_equal(atomic_load(&g->early), 0);
    assert_true(atomic_load(&g->set_returned));
    free(g); /* nothing calls the old hook with it any more */
}

/* A hook may replace itself (and the hook of any other thread) from
 * inside its call: that set does not wait, so it cannot wait for itself,
 * nor for another thread's hook waiting for it. */
static int self_replacing_calls;

static void self_replacing_hook(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
    self_replacing_calls++;
    cf_set_log_hook(NULL, NULL);
}

static void test_log_hook_replaces_itself(void **state)
{
    (void)state;
    self_replacing_calls = 0;
    cf_set_log_hook(self_replacing_hook, NULL);
    bg_thread t;
    bg_start(&t, log_once, NULL);
    bg_join(&t, 10 * cf_test_scale());
    assert_int_equal(self_replacing_calls, 1);
}

/* A child forked while another thread is inside the hook does not wait
 * for that call when it sets a hook: the thread, and its call, are not in
 * the child. */
static void test_log_hook_set_in_fork_child(void **state)
{
    (void)state;
    bg_thread logger;
    gated_hook *g = gated_hook_entered(&logger);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        cf_set_log_hook(NULL, NULL);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    cf_test_event_set(&g->gate);
    bg_join(&logger, 10 * cf_test_scale());
    cf_set_log_hook(NULL, NULL);
    free(g);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child ended with status 0x%x (SIGALRM: its cf_set_log_hook() waited "
                 "for a call of a thread it does not have)",
                 status);
}

/* For test_log_hook_outlives_later_atexit: the hook's context, freed
 * (marked) by an atexit handler the program registers after setting the
 * hook; the hook reports through a pipe whether it ran before that. */
typedef struct exit_ctx {
    bool freed;
    int report; /* write end of the pipe */
} exit_ctx;

static exit_ctx g_exit_ctx;

static void exit_ctx_hook(void *arg, const char *msg)
{
    (void)msg;
    exit_ctx *c = arg;
    const char *what = c->freed ? "L" : "K"; /* late: after the free; kept */
    if (write(c->report, what, 1) != 1)
        _exit(5);
}

static void exit_ctx_free(void)
{
    g_exit_ctx.freed = true;
}

static int sleep_100ms(cf_call *call)
{
    sleep_ms(100);
    return cf_return_none(call);
}

/* Setting a hook installs no exit handler: the library's (which waits for
 * the calls of executors not destroyed, whose done-callbacks may log) is
 * registered with the first executor, so it runs before atexit handlers
 * the program registered before that executor - here, one that frees the
 * hook's context, registered after the hook was set.  It used to be
 * registered by cf_set_log_hook() itself and so ran after that free.
 * Checked in a child: the handlers of this process may be registered
 * already. */
static void test_log_hook_outlives_later_atexit(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        close(fds[0]);
        g_exit_ctx.report = fds[1];
        cf_set_log_hook(exit_ctx_hook, &g_exit_ctx);
        atexit(exit_ctx_free);
        cf_executor *ex = NULL;
        cf_thread_pool_options o;
        cf_thread_pool_options_init(&o);
        o.max_workers = 1;
        cf_future *f = NULL;
        if (cf_thread_pool_new(&ex, &o) != CF_OK ||
            cf_submit(ex, sleep_100ms, CF_NOARGS, &f) != CF_OK ||
            cf_future_add_done_callback(f, failing_callback, NULL) != CF_OK)
            _exit(4);
        exit(0); /* the pool's call ends in the exit handler, and logs */
    }
    close(fds[1]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    char got[8] = "";
    ssize_t n = read(fds[0], got, sizeof got - 1);
    close(fds[0]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("child status 0x%x", status);
    if (n != 1 || got[0] != 'K')
        fail_msg("the hook %s", n == 1 ? "ran after the program's atexit handler freed its "
                                         "context"
                                       : "was not called at exit");
}

/* ---- names ------------------------------------------------------------ */

static void test_kind_names(void **state)
{
    (void)state;
    assert_string_equal(cf_kind_name(CF_NONE), "NoneType");
    assert_string_equal(cf_kind_name(CF_I64), "int");
    assert_string_equal(cf_kind_name(CF_F64), "float");
    assert_string_equal(cf_kind_name(CF_BYTES), "bytes");
    assert_string_equal(cf_kind_name(CF_STR), "str");
    assert_string_equal(cf_kind_name(CF_PTR), "pointer");
    assert_non_null(cf_kind_name((cf_kind)77));
}

static void test_state_names(void **state)
{
    (void)state;
    assert_string_equal(cf_state_name(CF_PENDING), "pending");
    assert_string_equal(cf_state_name(CF_RUNNING), "running");
    assert_string_equal(cf_state_name(CF_CANCELLED), "cancelled");
    assert_string_equal(cf_state_name(CF_CANCELLED_AND_NOTIFIED), "cancelled");
    assert_string_equal(cf_state_name(CF_FINISHED), "finished");
}

static void test_value_constructors(void **state)
{
    (void)state;
    cf_value v = cf_str("hello");
    assert_int_equal(v.kind, CF_STR);
    assert_int_equal(v.size, 5);
    assert_string_equal(v.as.str, "hello");
    v = cf_str(NULL);
    assert_int_equal(v.kind, CF_STR);
    assert_int_equal(v.size, 0);
    assert_non_null(v.as.str);
    assert_string_equal(v.as.str, "");
    v = cf_i64(-7);
    assert_int_equal(v.kind, CF_I64);
    assert_int_equal(v.as.i64, -7);
    v = cf_bytes("ab\0c", 4);
    assert_int_equal(v.kind, CF_BYTES);
    assert_int_equal(v.size, 4);
}

static void test_failure_accessors_null(void **state)
{
    (void)state;
    assert_int_equal(cf_failure_code(NULL), 0);
    assert_non_null(cf_failure_type(NULL));
    assert_string_equal(cf_failure_type(NULL), "");
    assert_non_null(cf_failure_message(NULL));
    assert_string_equal(cf_failure_message(NULL), "");
}

static void test_usable_cpus(void **state)
{
    (void)state;
    int n = cf_usable_cpus();
    assert_true(n >= 1);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        assert_true(n <= CPU_COUNT(&set));
    int d = cf_thread_pool_default_workers();
    assert_int_equal(d, n + 4 < 32 ? n + 4 : 32);
}

static void test_thread_name_main_thread(void **state)
{
    (void)state;
    char kname[64] = "";
#ifndef CF_TEST_PORTABLE
    assert_int_equal(pthread_getname_np(pthread_self(), kname, sizeof kname), 0);
#endif
    /* The portable build knows no system names: "" (kname stays so). */
    const char *n = cf_thread_name();
    assert_non_null(n);
    assert_string_equal(n, kname);
}

static void *named_thread(void *arg)
{
    char *out = (char *)arg;
    pthread_setname_np(pthread_self(), "cf-plain-thr");
    snprintf(out, 64, "%s", cf_thread_name());
    return NULL;
}

static void test_thread_name_plain_thread(void **state)
{
    (void)state;
    char out[64] = "";
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, named_thread, out), 0);
    pthread_join(th, NULL);
#ifdef CF_TEST_PORTABLE
    assert_string_equal(out, ""); /* the system's name is not read there */
#else
    assert_string_equal(out, "cf-plain-thr");
#endif
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_strerror_every_code),
    cmocka_unit_test(test_strerror_unknown_codes),
    cmocka_unit_test(test_error_names_distinct),
    cmocka_unit_test(test_last_error_empty_in_fresh_thread),
    cmocka_unit_test(test_last_error_after_failure),
    cmocka_unit_test(test_last_error_timeout_message),
    cmocka_unit_test(test_last_error_submit_after_shutdown),
    cmocka_unit_test(test_last_error_is_thread_local),
    cmocka_unit_test(test_log_hook_receives_callback_failure),
    cmocka_unit_test(test_log_hook_restore_default_writes_stderr),
    cmocka_unit_test(test_log_hook_replaced_and_restored),
    cmocka_unit_test(test_log_hook_called_without_lock),
    cmocka_unit_test(test_log_message_is_one_line),
    cmocka_unit_test(test_log_hook_set_waits_for_calls_in_progress),
    cmocka_unit_test(test_log_hook_replaces_itself),
    cmocka_unit_test(test_log_hook_set_in_fork_child),
    cmocka_unit_test(test_log_hook_outlives_later_atexit),
    cmocka_unit_test(test_kind_names),
    cmocka_unit_test(test_state_names),
    cmocka_unit_test(test_value_constructors),
    cmocka_unit_test(test_failure_accessors_null),
    cmocka_unit_test(test_usable_cpus),
    cmocka_unit_test(test_thread_name_main_thread),
    cmocka_unit_test(test_thread_name_plain_thread),
};

CF_TEST_MAIN(tests)
