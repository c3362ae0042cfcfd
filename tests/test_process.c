/* SPDX-License-Identifier: MIT */
/*
 * test_process.c - the process engine: submit/result across processes,
 * values and failures on the wire, argument validation, map with chunks,
 * wait/as_completed/callbacks on process futures, the crash matrix under
 * both crash policies (crashes while decoding, running and encoding, bad
 * frames, workers killed from outside, crashes during shutdown and with
 * big arguments in flight, failing initializers), recycling, per-call and
 * pool-wide timeouts, interrupts, terminate/kill_workers, the thread-pool
 * side of cf_cancel_requested(), and descriptor/child leaks.
 *
 * Tasks run in other processes, so they never use cmocka asserts: they
 * report through their result or failure.  A task that has to "hang"
 * sleeps (bounded) in the worker, and the test kills or interrupts it.
 * A test that needs to know a task has really started in its worker hands
 * it the path of a FIFO the task writes one byte to.
 */
#include "cf_test_util.h"
#include "internal.h" /* sent_to_worker() looks at a future's claim word */
#include "os.h"       /* cf__os_note_exe(), cf__os_exe() */
#include "process.h"  /* cf__process_argv */

#include <dirent.h>
#include <inttypes.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

/* Sanitizers catch SIGSEGV in the worker and turn it into a report and an
 * exit status or SIGABRT; the plain build checks the exact signal. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CF_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CF_TEST_SANITIZED 1
#endif
#endif
#ifndef CF_TEST_SANITIZED
#define CF_TEST_SANITIZED 0
#endif

#define SEGV_HOW (CF_TEST_SANITIZED ? NULL : "killed by signal 11 (SIGSEGV)")

/* A generous bound for things that must happen (scaled by callers). */
#define T_OK 10.0

/* ---- helpers used inside tasks (no cmocka here) ---------------------------- */

static void task_sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Writes one byte to the FIFO at `path` ("" or missing: nothing). */
static void task_signal_started(cf_call *call, size_t i)
{
    const cf_value *v = cf_arg(call, i);
    if (!v || v->kind != CF_STR || v->size == 0)
        return;
    int fd = open(v->as.str, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t w = write(fd, "x", 1);
        (void)w;
        close(fd);
    }
}

/* The test byte pattern (see pattern()); also made inside workers. */
static void pattern_fill(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)((i * 131u + (i >> 9) + seed * 7u) & 0xff);
}

/* Waits (at most 10 s, scaled) for one byte on the FIFO at `path`. */
static void task_wait_gate(const char *path)
{
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0)
        return;
    struct pollfd pfd = {fd, POLLIN, 0};
    /* 10 s, stretched like every test limit (the worker inherits
     * CF_TEST_TIMEOUT_SCALE): under TSan at load 15 the test's submits
     * outlasted a fixed 10 s and the gate opened by itself. */
    if (poll(&pfd, 1, 10000 * cf_test_scale()) == 1) {
        char c;
        ssize_t r = read(fd, &c, 1);
        (void)r;
    }
    close(fd);
}

/* ---- tasks (every one runs in a worker process, so every one is
 * registered) ------------------------------------------------------------------ */

CF_TASK(t_square);
CF_TASK(t_echo);
CF_TASK(t_sum);

static int p_getpid(cf_call *call)
{
    return cf_return_i64(call, (int64_t)getpid());
}
CF_TASK(p_getpid);

static int p_raise(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_raise(call, 42, "ValueError", "bad input %lld", (long long)x);
}
CF_TASK(p_raise);

static int p_segv(cf_call *call)
{
    (void)call;
    raise(SIGSEGV);
    return 0;
}
CF_TASK(p_segv);

static int p_exit3(cf_call *call)
{
    (void)call;
    _exit(3);
}
CF_TASK(p_exit3);

static int p_abort(cf_call *call)
{
    (void)call;
    abort();
}
CF_TASK(p_abort);

/* The target of CFUTURES_FAULT in the tests: otherwise an echo. */
static int p_faulty(cf_call *call)
{
    const cf_value *v = cf_arg(call, 0);
    return v ? cf_return_value(call, v) : cf_return_none(call);
}
CF_TASK(p_faulty);

/* arg 0: FIFO path ("" for none).  Sleeps 30 s; returns its pid. */
static int p_hang(cf_call *call)
{
    task_signal_started(call, 0);
    task_sleep_ms(30000);
    return cf_return_i64(call, (int64_t)getpid());
}
CF_TASK(p_hang);

/* arg 0: ms to sleep, arg 1 (optional): FIFO path.  Returns its pid. */
static int p_sleep_ms(cf_call *call)
{
    int64_t ms = cf_arg_i64(call, 0);
    task_signal_started(call, 1);
    task_sleep_ms(ms);
    return cf_return_i64(call, (int64_t)getpid());
}
CF_TASK(p_sleep_ms);

/* arg 0: ms to sleep.  Returns when it began: CLOCK_MONOTONIC ns, which
 * every process of the machine reads alike. */
static int p_sleep_from(cf_call *call)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    task_sleep_ms(cf_arg_i64(call, 0));
    return cf_return_i64(call, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
}
CF_TASK(p_sleep_from);

static int p_sleep_then_segv(cf_call *call)
{
    task_sleep_ms(cf_arg_i64(call, 0));
    raise(SIGSEGV);
    return 0;
}
CF_TASK(p_sleep_then_segv);

/* arg 0: bytes.  Returns the checksum of the bytes. */
static int p_big_sum(cf_call *call)
{
    size_t n = 0;
    const unsigned char *b = cf_arg_bytes(call, 0, &n);
    if (!b)
        return cf_raise(call, 1, "TestError", "no bytes");
    return cf_return_i64(call, (int64_t)checksum(b, n));
}
CF_TASK(p_big_sum);

/* arg 0: bytes, arg 1: path of a FIFO to wait on (at most 10 s) for one
 * byte.  Then exits with status 5 (6 if the argument did not arrive). */
static int p_big_crash(cf_call *call)
{
    size_t n = 0;
    const unsigned char *b = cf_arg_bytes(call, 0, &n);
    task_wait_gate(cf_arg_str(call, 1));
    _exit(b && n > 0 ? 5 : 6);
}
CF_TASK(p_big_crash);

/* arg 0: bytes.  Returns them twice over: a result bigger than the
 * argument (bigger than a buffer lent for it). */
static int p_doubled(cf_call *call)
{
    size_t n = 0;
    const unsigned char *b = cf_arg_bytes(call, 0, &n);
    unsigned char *out = malloc(2 * n + 1);
    if (!b || !out) {
        free(out);
        return cf_raise(call, 1, "TestError", "no bytes or no memory");
    }
    memcpy(out, b, n);
    memcpy(out + n, b, n);
    int rc = cf_return_bytes(call, out, 2 * n);
    free(out);
    return rc;
}
CF_TASK(p_doubled);

/* arg 0: bytes.  Returns them, then changes its mind and returns them
 * with every byte xor 0x5a: the second result replaces the first. */
static int p_return_twice(cf_call *call)
{
    size_t n = 0;
    const unsigned char *b = cf_arg_bytes(call, 0, &n);
    unsigned char *out = malloc(n + 1);
    if (!b || !out) {
        free(out);
        return cf_raise(call, 1, "TestError", "no bytes or no memory");
    }
    int rc = cf_return_bytes(call, b, n);
    for (size_t i = 0; i < n; i++)
        out[i] = b[i] ^ 0x5a;
    if (rc == CF_OK)
        rc = cf_return_bytes(call, out, n);
    free(out);
    return rc;
}
CF_TASK(p_return_twice);

/* arg 0: size, arg 1: seed.  Returns pattern bytes made in the worker (a
 * big result of a call with small arguments). */
static int p_make_bytes(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0), seed = cf_arg_i64(call, 1);
    unsigned char *b = n > 0 ? malloc((size_t)n) : NULL;
    if (!b)
        return cf_raise(call, 1, "TestError", "bad size");
    pattern_fill(b, (size_t)n, (unsigned)seed);
    int rc = cf_return_bytes(call, b, (size_t)n);
    free(b);
    return rc;
}
CF_TASK(p_make_bytes);

/* arg 0: bytes, arg 1: n.  Returns the first n of them (a big result
 * much smaller than its big argument). */
static int p_head(cf_call *call)
{
    size_t n = 0;
    const void *b = cf_arg_bytes(call, 0, &n);
    int64_t want = cf_arg_i64(call, 1);
    if (!b || want < 0 || (size_t)want > n)
        return cf_raise(call, 1, "TestError", "bad arguments");
    return cf_return_bytes(call, b, (size_t)want);
}
CF_TASK(p_head);

/* Tries to shrink every cfutures memfd this worker can reach: its
 * descriptors, and (as root) the files behind its mappings, which
 * include the shared memory the parent made.  Returns found * 1000 +
 * shrunk. */
static int p_shrink_memfds(cf_call *call)
{
    int64_t found = 0, shrunk = 0;
    const char *dirs[] = {"/proc/self/fd", "/proc/self/map_files"};
    for (int k = 0; k < 2; k++) {
        DIR *d = opendir(dirs[k]);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            char path[300], target[300];
            snprintf(path, sizeof path, "%s/%s", dirs[k], e->d_name);
            ssize_t len = readlink(path, target, sizeof target - 1);
            if (len <= 0)
                continue;
            target[len] = '\0';
            if (!strstr(target, "memfd:cfutures"))
                continue;
            int fd = open(path, O_RDWR | O_CLOEXEC);
            if (fd < 0)
                continue;
            found++;
            if (ftruncate(fd, 0) == 0)
                shrunk++;
            close(fd);
        }
        if (d)
            closedir(d);
    }
    return cf_return_i64(call, found * 1000 + shrunk);
}
CF_TASK(p_shrink_memfds);

/* x -> 10x + 1, except x == 24, which raises. */
static int p_map_elem(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    if (x == 24)
        return cf_raise(call, 24, "ElementError", "element %lld refused", (long long)x);
    return cf_return_i64(call, x * 10 + 1);
}
CF_TASK(p_map_elem);

static bool stream_crashes(int64_t i)
{
    return (i * 7919) % 97 == 0;
}

/* i -> 3i, except the inputs stream_crashes() picks, which kill the
 * worker (SIGKILL or _exit(7), alternately: neither makes a sanitizer
 * report). */
static int p_stream(cf_call *call)
{
    int64_t i = cf_arg_i64(call, 0);
    if (stream_crashes(i)) {
        if ((i / 97) % 2 == 0)
            raise(SIGKILL);
        _exit(7);
    }
    return cf_return_i64(call, i * 3);
}
CF_TASK(p_stream);

/* x -> pid * 65536 + x*x (x < 256). */
static int p_pid_sq(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, (int64_t)getpid() * 65536 + x * x);
}
CF_TASK(p_pid_sq);

/* arg 0: FIFO path.  Writes its pid (an int64_t) there, then sleeps 30 s. */
static int p_report_and_hang(cf_call *call)
{
    int64_t pid = (int64_t)getpid();
    int fd = open(cf_arg_str(call, 0), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t w = write(fd, &pid, sizeof pid);
        (void)w;
        close(fd);
    }
    task_sleep_ms(30000);
    return 0;
}
CF_TASK(p_report_and_hang);

static int p_init_raise(cf_call *call)
{
    return cf_raise(call, 77, "InitError", "init exploded: %s", cf_arg_str(call, 0));
}
CF_TASK(p_init_raise);

static int p_init_segv(cf_call *call)
{
    (void)call;
    raise(SIGSEGV);
    return 0;
}
CF_TASK(p_init_segv);

static int64_t g_init_value = -1;

static int p_init_set(cf_call *call)
{
    g_init_value = cf_arg_i64(call, 0) + (int64_t)cf_arg(call, 1)->size;
    return 0;
}
CF_TASK(p_init_set);

static int p_get_init(cf_call *call)
{
    return cf_return_i64(call, g_init_value);
}
CF_TASK(p_get_init);

/* Deliberately not registered. */
static int p_not_registered(cf_call *call)
{
    return cf_return_i64(call, 1);
}

/* ---- helpers for the tests ---------------------------------------------------- */

static int64_t worker_pid(cf_executor *ex)
{
    int64_t pid = run_i64(ex, p_getpid, CF_NOARGS);
    assert_true(pid > 1);
    assert_int_not_equal(pid, (int64_t)getpid());
    return pid;
}

/* True if `msg` names "pid <pid>" exactly (not a longer number). */
static bool names_pid(const char *msg, int64_t pid)
{
    char needle[40];
    snprintf(needle, sizeof needle, "pid %lld", (long long)pid);
    for (const char *p = msg; (p = strstr(p, needle)) != NULL; p++) {
        char c = p[strlen(needle)];
        if (c < '0' || c > '9')
            return true;
    }
    return false;
}

/* Waits for f to fail with a library error `code` of type `type`; returns
 * the failure (borrowed from f). */
static const cf_failure *expect_failure(cf_future *f, double timeout, int code, const char *type)
{
    const cf_failure *fl = NULL;
    int rc = cf_future_exception(f, timeout * cf_test_scale(), &fl);
    if (rc != CF_OK)
        fail_msg("future did not finish within %.1f s (x%d): %s, %s", timeout, cf_test_scale(),
                 cf_err_name(rc), cf_last_error_message());
    if (!fl)
        fail_msg("future succeeded; expected %s (%s)", cf_err_name(code), type);
    if (cf_failure_code(fl) != code || strcmp(cf_failure_type(fl), type) != 0)
        fail_msg("future failed with code %d (%s) type \"%s\": \"%s\"; expected %s \"%s\"",
                 cf_failure_code(fl), cf_err_name(cf_failure_code(fl)), cf_failure_type(fl),
                 cf_failure_message(fl), cf_err_name(code), type);
    assert_cf(code, cf_future_result(f, 0, NULL));
    assert_false(cf_future_cancelled(f));
    assert_int_equal(cf_future_state(f), CF_FINISHED);
    return fl;
}

/* True once the pool has sent `f` to a worker (it may not have begun). */
static bool sent_to_worker(cf_future *f)
{
    cf__lock_acquire(&f->lock);
    bool sent = f->claimable && f->claim != NULL;
    cf__lock_release(&f->lock);
    return sent || cf_future_running(f) || cf_future_done(f);
}

/* Waits (bounded) until every one of fs[0..n) was sent to a worker. */
static bool wait_sent(cf_future **fs, int n)
{
    double end = cf_test_now() + T_OK * cf_test_scale();
    for (int i = 0; i < n; i++)
        while (!sent_to_worker(fs[i]))
            if (cf_test_now() > end)
                return false;
            else
                sleep_ms(1);
    return true;
}

/* Waits for f, a call interrupted while running, to end cancelled: the
 * state and the code it reports agree. */
static void expect_interrupted(cf_future *f, double timeout)
{
    const cf_failure *fl = NULL;
    int rc = cf_future_exception(f, timeout * cf_test_scale(), &fl);
    if (rc != CF_ECANCELLED)
        fail_msg("interrupted call: exception() said %s (%s), expected CF_ECANCELLED",
                 cf_err_name(rc), fl ? cf_failure_message(fl) : cf_last_error_message());
    assert_true(cf_future_cancelled(f));
    assert_false(cf_future_running(f));
    assert_int_equal(cf_future_state(f), CF_CANCELLED_AND_NOTIFIED);
    assert_cf(CF_ECANCELLED, cf_future_result(f, 0, NULL));
}

/* Waits for f to fail with CF_EBROKEN / "BrokenProcessPool", with a
 * message naming `pid` (if > 0) and containing `how` (if not NULL; NULL
 * means "an exit status or a signal"). */
static void expect_broken(cf_future *f, double timeout, int64_t pid, const char *how)
{
    const cf_failure *fl = expect_failure(f, timeout, CF_EBROKEN, "BrokenProcessPool");
    const char *msg = cf_failure_message(fl);
    if (pid > 0 && !names_pid(msg, pid))
        fail_msg("message does not name worker pid %lld: \"%s\"", (long long)pid, msg);
    if (how && !contains(msg, how))
        fail_msg("message does not say \"%s\": \"%s\"", how, msg);
    if (!how && !contains(msg, "exited with status") && !contains(msg, "killed by signal"))
        fail_msg("message names neither an exit status nor a signal: \"%s\"", msg);
}

/* cf_executor_destroy() must succeed within `limit` seconds (scaled). */
static void destroy_quickly(cf_executor *ex, double limit)
{
    double t0 = cf_test_now();
    assert_ok(cf_executor_destroy(ex));
    double took = cf_test_now() - t0;
    if (took > limit * cf_test_scale())
        fail_msg("cf_executor_destroy took %.2f s (limit %.1f s x%d)", took, limit,
                 cf_test_scale());
}

/* Waits (bounded, polling an atomic counter) until the pool reports `n`
 * live workers.  Used by CF_START_FORK tests after a worker was replaced,
 * before the main thread allocates: the manager forks replacements while
 * this thread runs, and one forked while this thread is inside malloc
 * would inherit a held allocator lock under some sanitizer runtimes.
 * (The first workers are forked inside cf_process_pool_new().) */
static void settle_workers(cf_executor *ex, int n)
{
    double end = cf_test_now() + T_OK * cf_test_scale();
    while (cf_executor_worker_count(ex) != n && cf_test_now() < end)
        sleep_ms(2);
    assert_int_equal(cf_executor_worker_count(ex), n);
}

/* A FIFO a task writes a byte to once it runs in its worker. */
typedef struct start_sig {
    char path[96];
    int fd;
} start_sig;

static void start_sig_open(start_sig *s)
{
    static _Atomic int counter;
    snprintf(s->path, sizeof s->path, "/tmp/cf_test_process_%d_%d.fifo", (int)getpid(),
             atomic_fetch_add(&counter, 1));
    unlink(s->path);
    assert_int_equal(mkfifo(s->path, 0600), 0);
    /* O_RDWR: never sees EOF while no task has it open. */
    s->fd = open(s->path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    assert_true(s->fd >= 0);
}

/* Waits until `n` tasks have signalled (bounded, scaled). */
static bool start_sig_wait(start_sig *s, int n, double timeout)
{
    double end = cf_test_now() + timeout * cf_test_scale();
    int got = 0;
    while (got < n) {
        double left = end - cf_test_now();
        if (left <= 0)
            return false;
        struct pollfd pfd = {s->fd, POLLIN, 0};
        int r = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        char buf[16];
        ssize_t k = read(s->fd, buf, (size_t)(n - got) < sizeof buf ? (size_t)(n - got)
                                                                      : sizeof buf);
        if (k > 0)
            got += (int)k;
    }
    return true;
}

static void start_sig_close(start_sig *s)
{
    close(s->fd);
    unlink(s->path);
}

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *b = malloc(n ? n : 1);
    assert_non_null(b);
    pattern_fill(b, n, seed);
    return b;
}

static const char *policy_name(cf_crash_policy p)
{
    return p == CF_CRASH_BREAKS_POOL ? "breaks" : "replaces";
}

/* A submit to a pool that broke (or is breaking): either refused with
 * CF_EBROKEN, or accepted and its future fails with CF_EBROKEN, with a
 * message containing `how` (NULL: an exit status or a signal). */
static void submit_to_broken(cf_executor *ex, const char *how)
{
    cf_future *g = NULL;
    int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &g);
    if (rc == CF_OK) {
        expect_broken(g, T_OK, 0, how);
        assert_ok(cf_future_release(g));
    } else {
        assert_cf(CF_EBROKEN, rc);
        assert_null(g);
        if (how && !contains(cf_last_error_message(), how))
            fail_msg("submit's message does not say \"%s\": \"%s\"", how,
                     cf_last_error_message());
    }
}

/* After a crash took down the (single) worker `old_pid`: a broken pool
 * refuses new work with CF_EBROKEN; a resilient one runs it on a new
 * worker. */
static void check_after_crash(cf_executor *ex, cf_crash_policy policy, cf_start_method sm,
                              int64_t old_pid, const char *how)
{
    if (policy == CF_CRASH_BREAKS_POOL) {
        submit_to_broken(ex, how);
        /* Once a future accepted after the crash has failed, the pool
         * knows it is broken. */
        cf_future *g = NULL;
        assert_cf(CF_EBROKEN, cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &g));
        assert_null(g);
        return;
    }
    if (sm == CF_START_FORK)
        settle_workers(ex, 1);
    int64_t pid = worker_pid(ex);
    assert_true(pid != old_pid);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(9))), 81);
}

/* ---- basics ------------------------------------------------------------------- */

static void test_submit_result(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *fs[8];
    for (int i = 0; i < 8; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i + 1)), &fs[i]));
    for (int i = 0; i < 8; i++) {
        int64_t r = 0;
        assert_ok(cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &r));
        assert_int_equal(r, (int64_t)(i + 1) * (i + 1));
        assert_int_equal(cf_future_state(fs[i]), CF_FINISHED);
        assert_ok(cf_future_release(fs[i]));
    }
    assert_int_equal(run_i64(ex, t_sum, CF_ARGS(cf_i64(323), cf_i64(1235), cf_i64(-8))), 1550);
    assert_int_equal(run_i64(ex, t_sum, CF_NOARGS), 0);
    cf_value many[CF_ARGS_MAX];
    for (int i = 0; i < CF_ARGS_MAX; i++)
        many[i] = cf_i64(i + 1);
    assert_int_equal(run_i64(ex, t_sum, many, CF_ARGS_MAX), CF_ARGS_MAX * (CF_ARGS_MAX + 1) / 2);
    /* The call runs in another process. */
    assert_int_not_equal(worker_pid(ex), (int64_t)getpid());
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* cf_submit_many on an engine that schedules one call at a time. */
static void test_submit_many_process(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_value args[5];
    cf_future *fs[5];
    for (int i = 0; i < 5; i++)
        args[i] = cf_i64(i + 2);
    assert_ok(cf_submit_many(ex, t_square, args, 1, 5, fs));
    for (int i = 0; i < 5; i++) {
        int64_t r = 0;
        assert_ok(cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &r));
        assert_int_equal(r, (int64_t)(i + 2) * (i + 2));
        assert_ok(cf_future_release(fs[i]));
    }
    /* CF_PTR cannot cross: refused before anything is scheduled. */
    int x = 0;
    args[3] = cf_ptr(&x);
    assert_cf(CF_ENOTCOPYABLE, cf_submit_many(ex, t_square, args, 1, 5, fs));
    for (int i = 0; i < 5; i++)
        assert_null(fs[i]);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_raise_travels(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, p_raise, CF_ARGS(cf_i64(5)), &f));
    const cf_failure *fl = expect_task_failure(f, T_OK);
    assert_int_equal(cf_failure_code(fl), 42);
    assert_string_equal(cf_failure_type(fl), "ValueError");
    assert_string_equal(cf_failure_message(fl), "bad input 5");
    assert_ok(cf_future_release(f));
    /* A TypeError raised by an accessor in the worker travels too. */
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_str("not a number")), &f));
    fl = expect_task_failure(f, T_OK);
    assert_string_equal(cf_failure_type(fl), "TypeError");
    assert_ok(cf_future_release(f));
    /* The pool is not hurt by failures. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(6))), 36);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_ptr_and_unregistered_refused(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    int x = 5;
    cf_future *f = (cf_future *)&x; /* must be reset to NULL */
    assert_cf(CF_ENOTCOPYABLE, cf_submit(ex, t_echo, CF_ARGS(cf_ptr(&x)), &f));
    assert_null(f);
    f = (cf_future *)&x;
    assert_cf(CF_ENOTCOPYABLE,
              cf_submit(ex, t_sum, CF_ARGS(cf_i64(1), cf_ptr(&x), cf_i64(2)), &f));
    assert_null(f);
    f = (cf_future *)&x;
    assert_cf(CF_ENOTCOPYABLE, cf_submit(ex, p_not_registered, CF_NOARGS, &f));
    assert_null(f);
    assert_true(contains(cf_last_error_message(), "CF_TASK"));
    assert_null(cf_task_name(p_not_registered));
    assert_string_equal(cf_task_name(p_getpid), "p_getpid");
    /* map refuses them too, and leaves nothing running. */
    cf_value in[3] = {cf_i64(1), cf_i64(2), cf_i64(3)};
    cf_map_input mi = cf_input_array(in, 3);
    cf_map_iter *it = NULL;
    assert_cf(CF_ENOTCOPYABLE, cf_map(ex, p_not_registered, &mi, 1, NULL, &it));
    assert_null(it);
    /* The pool still works. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(7))), 49);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static int reg_probe_a(cf_call *c)
{
    return cf_return_i64(c, 1);
}

static int reg_probe_b(cf_call *c)
{
    return cf_return_i64(c, 2);
}

/* cf_task_name() remembers its last answer per thread; a registration made
 * afterwards (a new name, or a clash that makes a name unusable) must show
 * in the very next answer, in this thread and in another. */
static void *name_of_probe_a(void *arg)
{
    (void)arg;
    return (void *)cf_task_name(reg_probe_a);
}

static void test_task_names_follow_registrations(void **state)
{
    (void)state;
    assert_null(cf_task_name(reg_probe_a));
    assert_null(cf_task_name(reg_probe_a)); /* the remembered answer */
    assert_ok(cf_task_register("reg_probe", reg_probe_a));
    assert_string_equal(cf_task_name(reg_probe_a), "reg_probe");
    assert_string_equal(cf_task_name(reg_probe_a), "reg_probe");
    pthread_t t;
    void *other = NULL;
    assert_int_equal(pthread_create(&t, NULL, name_of_probe_a, NULL), 0);
    assert_int_equal(pthread_join(t, &other), 0);
    assert_string_equal((const char *)other, "reg_probe");
    /* Another function under the same name: neither may be named now. */
    assert_cf(CF_EINVAL, cf_task_register("reg_probe", reg_probe_b));
    assert_null(cf_task_name(reg_probe_a));
    assert_null(cf_task_name(reg_probe_b));
    assert_int_equal(pthread_create(&t, NULL, name_of_probe_a, NULL), 0);
    assert_int_equal(pthread_join(t, &other), 0);
    assert_null(other);
}

static int clash_probe_a(cf_call *c)
{
    return cf_return_i64(c, 1);
}

static int clash_probe_b(cf_call *c)
{
    return cf_return_i64(c, 2);
}

static int never_registered(cf_call *c)
{
    return cf_return_i64(c, 3);
}

/* Two functions registered under one name (two files each with a static
 * `work` and CF_TASK(work)) cannot be sent; a submit of either says that,
 * not "add CF_TASK", which is already there.  One never registered still
 * gets the advice to register it. */
static void test_submit_of_clashing_name_says_so(void **state)
{
    (void)state;
    assert_ok(cf_task_register("clash_probe", clash_probe_a));
    assert_cf(CF_EINVAL, cf_task_register("clash_probe", clash_probe_b));
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex;
    assert_ok(cf_process_pool_new(&ex, &o));
    cf_task_fn *const fns[] = {clash_probe_a, clash_probe_b};
    for (size_t i = 0; i < 2; i++) {
        cf_future *f = (cf_future *)&o;
        assert_cf(CF_ENOTCOPYABLE, cf_submit(ex, fns[i], CF_NOARGS, &f));
        assert_null(f);
        const char *msg = cf_last_error_message();
        assert_non_null(strstr(msg, "\"clash_probe\" is registered for two functions"));
        assert_null(strstr(msg, "add CF_TASK"));
    }
    cf_future *f;
    assert_cf(CF_ENOTCOPYABLE, cf_submit(ex, never_registered, CF_NOARGS, &f));
    assert_non_null(strstr(cf_last_error_message(), "add CF_TASK(fn)"));
    /* The pool's constructor says the same of its tasks list. */
    cf_task_fn *tasks[] = {clash_probe_b, NULL};
    o.tasks = tasks;
    cf_executor *ex2 = NULL;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex2, &o));
    assert_non_null(strstr(cf_last_error_message(), "\"clash_probe\" is registered for two"));
    assert_ok(cf_executor_destroy(ex));
}

static void test_pool_new_validation(void **state)
{
    (void)state;
    cf_process_pool_options o;
    cf_executor *ex = (cf_executor *)&o;

    assert_cf(CF_EINVAL, cf_process_pool_new(NULL, NULL));

    cf_process_pool_options_init(&o);
    o.max_workers = 0;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));
    assert_null(ex);

    cf_process_pool_options_init(&o);
    o.max_workers = 2000;
    ex = (cf_executor *)&o;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));
    assert_null(ex);

    cf_process_pool_options_init(&o);
    o.max_workers = -7;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));

    cf_process_pool_options_init(&o);
    o.max_tasks_per_child = -1;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));

    cf_process_pool_options_init(&o);
    o.on_crash = (cf_crash_policy)7;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));

    cf_process_pool_options_init(&o);
    o.start_method = (cf_start_method)9;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));

    cf_process_pool_options_init(&o);
    o.task_timeout = NAN;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));

    cf_process_pool_options_init(&o);
    o.task_timeout = -1.0;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));

    cf_process_pool_options_init(&o);
    o.initializer = p_not_registered;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));
    assert_null(ex);

    cf_process_pool_options_init(&o);
    o.initializer = p_init_set;
    o.ninitargs = 1;
    o.initargs = NULL;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));

    int x = 0;
    cf_value bad[2] = {cf_i64(1), cf_ptr(&x)};
    cf_process_pool_options_init(&o);
    o.initializer = p_init_set;
    o.initargs = bad;
    o.ninitargs = 2;
    assert_cf(CF_ENOTCOPYABLE, cf_process_pool_new(&ex, &o));
    assert_null(ex);

    /* The defaults are what the header says. */
    cf_process_pool_options_init(&o);
    assert_int_equal(o.max_workers, CF_AUTO);
    assert_int_equal(o.max_tasks_per_child, 0);
    assert_int_equal(o.on_crash, CF_CRASH_BREAKS_POOL);
    assert_int_equal(o.start_method, CF_START_EXEC);
    assert_true(o.task_timeout == CF_FOREVER);
    assert_null(o.initializer);
    assert_int_equal(cf_process_pool_default_workers(), cf_usable_cpus());
    /* No refused pool left a process behind. */
    assert_no_children();
}

static void test_submit_after_shutdown(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(2))), 4);
    assert_ok(cf_shutdown(ex, false, false));
    cf_future *f = (cf_future *)ex;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f));
    assert_null(f);
    cf_submit_options so;
    cf_submit_options_init(&so);
    assert_cf(CF_ESHUTDOWN, cf_submit_with(ex, &so, t_square, CF_ARGS(cf_i64(3)), &f));
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(cf_executor_worker_count(ex), 0);
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f));
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void check_echo(cf_executor *ex, cf_value v)
{
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_echo, &v, 1, &f));
    const cf_value *r = NULL;
    assert_ok(cf_future_result(f, T_OK * cf_test_scale(), &r));
    assert_non_null(r);
    assert_int_equal(r->kind, v.kind);
    assert_int_equal(r->size, v.size);
    if (v.kind == CF_BYTES && v.size)
        assert_memory_equal(r->as.bytes, v.as.bytes, v.size);
    if (v.kind == CF_STR) {
        assert_int_equal(strlen(r->as.str), v.size);
        assert_memory_equal(r->as.str, v.as.str, v.size + 1);
    }
    if (v.kind == CF_I64)
        assert_int_equal(r->as.i64, v.as.i64);
    if (v.kind == CF_F64)
        assert_memory_equal(&r->as.f64, &v.as.f64, sizeof(double));
    assert_ok(cf_future_release(f));
}

static void roundtrip(cf_start_method sm)
{
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, sm);
    if (sm == CF_START_FORK)
        settle_workers(ex, 1);
    check_echo(ex, cf_str(""));
    check_echo(ex, cf_str("hello, worker"));
    check_echo(ex, cf_bytes("", 0));
    check_echo(ex, cf_bytes("a\0b\0\xff", 5));
    check_echo(ex, cf_i64(INT64_MIN));
    check_echo(ex, cf_f64(-0.0));
    check_echo(ex, cf_f64(1e300));
    check_echo(ex, cf_none());
    /* Around the inline limit (64 KiB) and far above it (memfd). */
    size_t sizes[] = {(size_t)60 * 1024, (size_t)64 * 1024 + 1, (size_t)4 << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        unsigned char *b = pattern(sizes[k], (unsigned)k);
        check_echo(ex, cf_bytes(b, sizes[k]));
        /* The same size as a string: no NUL inside. */
        for (size_t i = 0; i < sizes[k]; i++)
            b[i] = (unsigned char)('a' + (b[i] % 26));
        b[sizes[k] - 1] = '\0';
        check_echo(ex, cf_str((const char *)b));
        free(b);
    }
    /* A 4 MiB argument in, its checksum out. */
    size_t n = (size_t)4 << 20;
    unsigned char *b = pattern(n, 9);
    assert_int_equal(run_i64(ex, p_big_sum, CF_ARGS(cf_bytes(b, n))), (int64_t)checksum(b, n));
    free(b);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_roundtrip_values(void **state)
{
    (void)state;
    int fds = count_fds();
    roundtrip(CF_START_EXEC);
    assert_int_equal(count_fds(), fds);
}

static void test_roundtrip_values_fork(void **state)
{
    (void)state;
    int fds = count_fds();
    roundtrip(CF_START_FORK);
    assert_int_equal(count_fds(), fds);
}

/* ---- recycled shared buffers -------------------------------------------------- */

enum { RB_ECHO, RB_DOUBLED, RB_TWICE, RB_SUM };

typedef struct rb_call {
    int kind;
    size_t n;
    unsigned char *in;
    cf_future *f;
} rb_call;

/* Checks a finished call's result against what its task makes of `in`. */
static void rb_check(const rb_call *c, const char *when)
{
    const cf_value *v = NULL;
    int rc = cf_future_result(c->f, T_OK * cf_test_scale(), &v);
    if (rc != CF_OK)
        fail_msg("%s: %s (%s)", when, cf_err_name(rc), cf_last_error_message());
    assert_non_null(v);
    if (c->kind == RB_SUM) {
        assert_int_equal(v->kind, CF_I64);
        assert_int_equal(v->as.i64, (int64_t)checksum(c->in, c->n));
        return;
    }
    assert_int_equal(v->kind, CF_BYTES);
    const unsigned char *got = v->as.bytes;
    size_t bad = SIZE_MAX;
    if (c->kind == RB_DOUBLED) {
        assert_int_equal(v->size, 2 * c->n);
        if (memcmp(got, c->in, c->n) != 0 || memcmp(got + c->n, c->in, c->n) != 0)
            bad = 0;
    } else if (c->kind == RB_TWICE) {
        assert_int_equal(v->size, c->n);
        for (size_t i = 0; i < c->n && bad == SIZE_MAX; i++)
            if (got[i] != (c->in[i] ^ 0x5a))
                bad = i;
    } else {
        assert_int_equal(v->size, c->n);
        if (memcmp(got, c->in, c->n) != 0)
            bad = 0;
    }
    if (bad != SIZE_MAX)
        fail_msg("%s: a %zu-byte result of kind %d is wrong", when, c->n, c->kind);
}

/* Big calls reuse the pool's shared buffers: arguments, and results made
 * in a buffer lent to the worker.  A buffer goes round only once nobody
 * holds it, so every result stays intact while later calls run (two at a
 * time, on both workers) and after the pool is destroyed; results bigger
 * than the lent buffer, small results of big calls and a task returning
 * twice all come back right; no descriptor is left once the futures are
 * released. */
static void recycled_buffers(cf_start_method sm)
{
    enum { ROUNDS = 5, PER = 4 };
    static const int kinds[PER] = {RB_ECHO, RB_DOUBLED, RB_TWICE, RB_SUM};
    static const size_t kib[ROUNDS][PER] = {{3072, 3072, 3072, 3072},
                                            {3072, 200, 5120, 3072},
                                            {8192, 3072, 100, 3072},
                                            {70, 3072, 3072, 4096},
                                            {3072, 1024, 3072, 3072}};
    int fds = count_fds();
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, sm);
    if (sm == CF_START_FORK)
        settle_workers(ex, 2);
    rb_call calls[ROUNDS * PER];
    char when[64];
    for (int r = 0; r < ROUNDS; r++) {
        rb_call *c = &calls[r * PER];
        for (int k = 0; k < PER; k++) {
            /* Rotate the kinds so every kind meets every size. */
            c[k].kind = kinds[(k + r) % PER];
            c[k].n = kib[r][k] * 1024;
            c[k].in = pattern(c[k].n, (unsigned)(r * PER + k) + 40);
            cf_task_fn *fn = c[k].kind == RB_DOUBLED ? p_doubled
                             : c[k].kind == RB_TWICE ? p_return_twice
                             : c[k].kind == RB_SUM   ? p_big_sum
                                                     : t_echo;
            assert_ok(cf_submit(ex, fn, CF_ARGS(cf_bytes(c[k].in, c[k].n)), &c[k].f));
        }
        for (int k = 0; k < PER; k++) {
            snprintf(when, sizeof when, "round %d call %d", r, k);
            rb_check(&c[k], when);
        }
        /* Give half of the results back now: their buffers go round. */
        for (int k = 0; k < PER; k += 2) {
            assert_ok(cf_future_release(c[k].f));
            c[k].f = NULL;
        }
    }
    destroy_quickly(ex, 5);
    for (int i = 0; i < ROUNDS * PER; i++) {
        if (calls[i].f) {
            snprintf(when, sizeof when, "call %d after destroy", i);
            rb_check(&calls[i], when);
            assert_ok(cf_future_release(calls[i].f));
        }
        free(calls[i].in);
    }
    assert_no_children();
    assert_int_equal(count_fds(), fds);
}

/* Holding many big results does not hold a descriptor each: a program
 * keeping thousands of them must not run out of descriptors (which would
 * break the pool).  Results made in lent buffers (echo of a big argument)
 * and in the worker's own memory (small arguments) both count. */
static void test_big_results_held_few_fds(void **state)
{
    (void)state;
    enum { EACH = 30 };
    size_t n = (size_t)3 << 19; /* 1.5 MiB */
    int fds = count_fds();
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    unsigned char *in = pattern(n, 5);
    cf_future *fs[2 * EACH];
    for (int i = 0; i < EACH; i++) {
        assert_ok(cf_submit(ex, t_echo, CF_ARGS(cf_bytes(in, n)), &fs[i]));
        assert_ok(cf_submit(ex, p_make_bytes, CF_ARGS(cf_i64((int64_t)n), cf_i64(5)),
                            &fs[EACH + i]));
    }
    for (int i = 0; i < 2 * EACH; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_future_result(fs[i], T_OK * cf_test_scale(), &v));
        assert_int_equal(v->size, n);
        assert_memory_equal(v->as.bytes, in, n);
    }
    /* The pool's own (wake-up, 2 x socket and pidfd), its idle buffers
     * (at most 2 x workers) and results keeping a descriptor (at most as
     * many): far fewer than the 60 results held. */
    int used = count_fds() - fds;
    if (used > 5 + 4 + 4)
        fail_msg("%d descriptors in use while holding %d big results", used, 2 * EACH);
    for (int i = 0; i < 2 * EACH; i++)
        assert_ok(cf_future_release(fs[i]));
    free(in);
    destroy_quickly(ex, 5);
    assert_no_children();
    assert_int_equal(count_fds(), fds);
}

/* Shared-memory mappings of this process (lines of /proc/self/maps). */
static int count_shm_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "memfd:cfutures-buf")) /* not the workers' claim words */
            n++;
    fclose(f);
    return n;
}

/* A big result much smaller than the buffer lent for it (1.5 MiB made in
 * an 8 MiB lent buffer) is copied out, so holding such results does not
 * keep their big buffers mapped: only the pool's few idle buffers stay. */
static void test_small_result_does_not_pin_lent_buffer(void **state)
{
    (void)state;
    enum { HELD = 8 };
    size_t n = (size_t)8 << 20, part = (size_t)3 << 19;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    unsigned char *in = pattern(n, 12);
    cf_future *fs[HELD];
    for (int i = 0; i < HELD; i++) {
        assert_ok(cf_submit(ex, p_head, CF_ARGS(cf_bytes(in, n), cf_i64((int64_t)part)), &fs[i]));
        const cf_value *v = NULL;
        assert_ok(cf_future_result(fs[i], T_OK * cf_test_scale(), &v));
        assert_int_equal(v->size, part);
        assert_memory_equal(v->as.bytes, in, part);
    }
    /* At most the cache's 2 x 1 idle buffers; not one per held result. */
    int maps = count_shm_maps();
    if (maps > 2)
        fail_msg("%d shared-memory mappings while holding %d small results", maps, HELD);
    for (int i = 0; i < HELD; i++)
        assert_ok(cf_future_release(fs[i]));
    free(in);
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* The shared memory the parent makes (arguments, lent result buffers) is
 * sealed: a worker that gets hold of it cannot shrink it under the
 * parent's mapping, which would kill the parent with SIGBUS at its next
 * big call. */
static void test_worker_cannot_shrink_parent_memory(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE("no seals: big arguments are not shared with workers there, and the "
                        "claim words, which are, can be shrunk (README)");
    if (geteuid() != 0)
        skip(); /* the files behind a worker's mappings are root's to open */
    size_t n = (size_t)2 << 20;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    unsigned char *b = pattern(n, 8);
    check_echo(ex, cf_bytes(b, n)); /* buffers now go round */
    int64_t r = run_i64(ex, p_shrink_memfds, CF_ARGS(cf_bytes(b, n)));
    int64_t found = r / 1000, shrunk = r % 1000;
    if (found < 2)
        fail_msg("the task found %" PRId64 " of the call's shared buffers (expected its "
                 "arguments and its lent buffer)", found);
    assert_int_equal(shrunk, 0);
    for (unsigned k = 0; k < 3; k++) {
        free(b);
        b = pattern(n, 9 + k);
        check_echo(ex, cf_bytes(b, n));
    }
    free(b);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_recycled_buffers(void **state)
{
    (void)state;
    recycled_buffers(CF_START_EXEC);
}

static void test_recycled_buffers_fork(void **state)
{
    (void)state;
    recycled_buffers(CF_START_FORK);
}

static void map_chunks(cf_executor *ex, int chunksize)
{
    enum { N = 50 };
    cf_value in[N];
    for (int i = 0; i < N; i++)
        in[i] = cf_i64(i);
    cf_map_input mi = cf_input_array(in, N);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = chunksize;
    mo.timeout = 30.0 * cf_test_scale();
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, p_map_elem, &mi, 1, &mo, &it));
    for (int i = 0; i < N; i++) {
        const cf_value *v = NULL;
        const cf_failure *fl = NULL;
        int rc = cf_map_next(it, &v, &fl);
        if (i == 24) {
            if (rc != CF_ETASK)
                fail_msg("chunksize %d, element %d: %s, expected CF_ETASK", chunksize, i,
                         cf_err_name(rc));
            assert_non_null(fl);
            assert_int_equal(cf_failure_code(fl), 24);
            assert_string_equal(cf_failure_type(fl), "ElementError");
            assert_string_equal(cf_failure_message(fl), "element 24 refused");
        } else {
            if (rc != CF_OK)
                fail_msg("chunksize %d, element %d: %s (%s)", chunksize, i, cf_err_name(rc),
                         fl ? cf_failure_message(fl) : cf_last_error_message());
            assert_non_null(v);
            assert_int_equal(v->kind, CF_I64);
            assert_int_equal(v->as.i64, (int64_t)i * 10 + 1);
        }
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);

    /* Two inputs zipped, stopping at the shortest. */
    cf_value a[10], b[7];
    for (int i = 0; i < 10; i++)
        a[i] = cf_i64(i);
    for (int i = 0; i < 7; i++)
        b[i] = cf_i64(100 * i);
    cf_map_input two[2] = {cf_input_array(a, 10), cf_input_array(b, 7)};
    assert_ok(cf_map(ex, t_sum, two, 2, &mo, &it));
    for (int i = 0; i < 7; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, (int64_t)i + 100 * i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
}

static void test_map_chunksize_1_and_7(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    map_chunks(ex, 1);
    map_chunks(ex, 7);
    map_chunks(ex, 50);
    destroy_quickly(ex, 5);
    assert_no_children();
}

typedef struct gen {
    int next, limit;
} gen;

static int gen_next(void *ctx, cf_value *out)
{
    gen *g = ctx;
    if (g->next >= g->limit)
        return 0;
    *out = cf_i64(g->next++);
    return 1;
}

/* Generator values travel to a worker as copies made before the
 * generator runs again (zip(g, g); one freeing its last value). */
CF_TASK(t_join2);

static void test_map_zip_one_generator(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    check_map_zip_one_generator(ex, t_join2);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_map_lazy_chunks(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    gen g = {0, 40};
    cf_map_input mi = cf_input_generator(gen_next, &g);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 5;
    mo.buffersize = 2;
    mo.timeout = 30.0 * cf_test_scale();
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, p_map_elem, &mi, 1, &mo, &it));
    /* Lazy: not every input has been read up front. */
    assert_true(g.next < 40);
    for (int i = 0; i < 40; i++) {
        const cf_value *v = NULL;
        const cf_failure *fl = NULL;
        int rc = cf_map_next(it, &v, &fl);
        if (i == 0)
            assert_true(g.next < 40);
        if (i == 24) {
            assert_cf(CF_ETASK, rc);
            assert_string_equal(cf_failure_type(fl), "ElementError");
        } else {
            if (rc != CF_OK)
                fail_msg("element %d: %s", i, cf_err_name(rc));
            assert_int_equal(v->as.i64, (int64_t)i * 10 + 1);
        }
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    assert_int_equal(g.next, 40);
    cf_map_close(it);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static bool in_set(cf_future *const *set, size_t n, const cf_future *f)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == f)
            return true;
    return false;
}

static void test_wait_and_as_completed(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    /* The hanging call has a timeout, so nothing else is queued behind it
     * on its worker. */
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 60;
    cf_future *h = NULL;
    assert_ok(cf_submit_with(ex, &so, p_hang, CF_ARGS(cf_str("")), &h));
    cf_future *all[6];
    all[0] = h;
    for (int i = 1; i <= 4; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &all[i]));
    assert_ok(cf_submit(ex, p_raise, CF_ARGS(cf_i64(1)), &all[5]));

    cf_future *done[6], *not_done[6];
    size_t nd = 0, nn = 0;
    assert_ok(cf_wait(all, 6, T_OK * cf_test_scale(), CF_FIRST_COMPLETED, done, &nd, not_done,
                      &nn));
    assert_true(nd >= 1);
    assert_int_equal(nd + nn, 6);
    assert_true(in_set(not_done, nn, h));

    assert_ok(cf_wait(all, 6, T_OK * cf_test_scale(), CF_FIRST_EXCEPTION, done, &nd, not_done,
                      &nn));
    assert_true(in_set(done, nd, all[5]));
    assert_true(in_set(not_done, nn, h));

    /* ALL_COMPLETED cannot hold while h hangs. */
    assert_cf(CF_ETIMEDOUT, cf_wait(all, 6, 0.2, CF_ALL_COMPLETED, done, &nd, not_done, &nn));
    assert_true(in_set(not_done, nn, h));
    assert_ok(cf_wait(all + 1, 5, T_OK * cf_test_scale(), CF_ALL_COMPLETED, done, &nd, NULL,
                      &nn));
    assert_int_equal(nd, 5);
    assert_int_equal(nn, 0);

    cf_as_completed_iter *it = NULL;
    assert_ok(cf_as_completed(all + 1, 5, T_OK * cf_test_scale(), &it));
    bool seen[6] = {false};
    for (int k = 0; k < 5; k++) {
        cf_future *f = NULL;
        assert_ok(cf_as_completed_next(it, &f));
        assert_true(cf_future_done(f));
        int idx = -1;
        for (int i = 1; i < 6; i++)
            if (all[i] == f)
                idx = i;
        assert_true(idx > 0);
        assert_false(seen[idx]);
        seen[idx] = true;
    }
    cf_future *extra = NULL;
    assert_cf(CF_EDONE, cf_as_completed_next(it, &extra));
    cf_as_completed_free(it);

    assert_ok(cf_as_completed(&h, 1, 0.2, &it));
    assert_cf(CF_ETIMEDOUT, cf_as_completed_next(it, &extra));
    cf_as_completed_free(it);

    assert_ok(cf_future_interrupt(h));
    expect_interrupted(h, 5);
    for (int i = 0; i < 6; i++)
        assert_ok(cf_future_release(all[i]));
    destroy_quickly(ex, 5);
    assert_no_children();
}

typedef struct cb_rec {
    _Atomic int calls;
    _Atomic int64_t value;
    cf_test_event ev;
} cb_rec;

static int on_done(cf_future *f, void *arg)
{
    cb_rec *r = arg;
    const cf_value *v = NULL;
    if (cf_future_result(f, 0, &v) == CF_OK && v->kind == CF_I64)
        atomic_store(&r->value, v->as.i64);
    else
        atomic_store(&r->value, -999);
    atomic_fetch_add(&r->calls, 1);
    cf_test_event_set(&r->ev);
    return 0;
}

static void test_done_callbacks(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cb_rec a = {0}, b = {0};
    cf_test_event_init(&a.ev);
    cf_test_event_init(&b.ev);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, p_sleep_ms, CF_ARGS(cf_i64(100)), &f));
    assert_ok(cf_future_add_done_callback(f, on_done, &a));
    assert_true(cf_test_event_wait(&a.ev, T_OK));
    int64_t pid = 0;
    assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &pid));
    assert_int_equal(atomic_load(&a.value), pid);
    /* Already done: runs now, in this thread. */
    assert_ok(cf_future_add_done_callback(f, on_done, &b));
    assert_int_equal(atomic_load(&b.calls), 1);
    assert_int_equal(atomic_load(&b.value), pid);
    assert_ok(cf_future_release(f));

    /* A failed process future runs its callbacks too. */
    cb_rec c = {0};
    cf_test_event_init(&c.ev);
    assert_ok(cf_submit(ex, p_raise, CF_ARGS(cf_i64(0)), &f));
    assert_ok(cf_future_add_done_callback(f, on_done, &c));
    assert_true(cf_test_event_wait(&c.ev, T_OK));
    assert_int_equal(atomic_load(&c.value), -999);
    assert_ok(cf_future_release(f));
    destroy_quickly(ex, 5);
    assert_int_equal(atomic_load(&a.calls), 1);
    assert_int_equal(atomic_load(&c.calls), 1);
    assert_no_children();
}

static void test_worker_count(void **state)
{
    (void)state;
    assert_int_equal(cf_executor_worker_count(NULL), -1);
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    assert_true(cf_executor_worker_count(ex) >= 0 && cf_executor_worker_count(ex) <= 2);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(3))), 9);
    assert_int_equal(cf_executor_worker_count(ex), 2);
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(cf_executor_worker_count(ex), 0);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_initializer_with_args(void **state)
{
    (void)state;
    cf_value ia[2] = {cf_i64(1000), cf_str("four")};
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 2;
    o.initializer = p_init_set;
    o.initargs = ia;
    o.ninitargs = 2;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    for (int i = 0; i < 6; i++)
        assert_int_equal(run_i64(ex, p_get_init, CF_NOARGS), 1004);
    /* The parent's copy is untouched: the initializer ran elsewhere. */
    assert_int_equal(g_init_value, -1);
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* ---- the crash matrix ------------------------------------------------------- */

typedef struct crash_spec {
    const char *fault;   /* CFUTURES_FAULT, or NULL */
    cf_task_fn *fn;
    size_t big;          /* > 0: one bytes argument of this size */
    int ext_sig;         /* > 0: fn is p_hang; kill the worker with this */
    const char *how;     /* expected in the message (NULL: status or signal) */
    bool warm;           /* a big call first, so the crashing call's worker
                          * holds a lent result buffer */
} crash_spec;

/* Echoes `n` pattern bytes through t_echo and checks them. */
static void big_echo(cf_executor *ex, size_t n, unsigned seed)
{
    unsigned char *b = pattern(n, seed);
    check_echo(ex, cf_bytes(b, n));
    free(b);
}

static void run_crash(const crash_spec *s, cf_crash_policy policy, cf_start_method sm)
{
    if (s->fault)
        assert_int_equal(setenv("CFUTURES_FAULT", s->fault, 1), 0);
    int fds = count_fds();
    cf_executor *ex = ppool(1, policy, sm);
    if (sm == CF_START_FORK)
        settle_workers(ex, 1);
    int64_t pid = worker_pid(ex);
    if (s->warm)
        big_echo(ex, s->big, 21);
    start_sig sig = {.fd = -1};
    unsigned char *big = NULL;
    cf_value arg = cf_i64(5);
    if (s->ext_sig) {
        start_sig_open(&sig);
        arg = cf_str(sig.path);
    } else if (s->big) {
        big = pattern(s->big, 3);
        arg = cf_bytes(big, s->big);
    }
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, s->fn, &arg, 1, &f));
    if (s->ext_sig) {
        assert_true(start_sig_wait(&sig, 1, T_OK));
        assert_int_equal(kill((pid_t)pid, s->ext_sig), 0);
    }
    double t0 = cf_test_now();
    expect_broken(f, T_OK, pid, s->how);
    double took = cf_test_now() - t0;
    if (took > 5.0 * cf_test_scale())
        fail_msg("the crash took %.2f s to be reported (%s)", took, policy_name(policy));
    /* The replacement is forked as the crash is reported: let it start
     * before this thread frees (settle_workers). */
    if (sm == CF_START_FORK && policy == CF_CRASH_REPLACES_WORKER)
        settle_workers(ex, 1);
    assert_ok(cf_future_release(f));
    free(big);
    check_after_crash(ex, policy, sm, pid, s->how);
    if (s->warm && policy == CF_CRASH_REPLACES_WORKER)
        big_echo(ex, s->big, 22); /* the buffers still go round */
    destroy_quickly(ex, 5);
    if (s->ext_sig)
        start_sig_close(&sig);
    if (s->fault)
        unsetenv("CFUTURES_FAULT");
    assert_no_children();
    assert_int_equal(count_fds(), fds);
}

static const crash_spec crash_decode_segv = {"decode-segv:p_faulty", p_faulty, 0, 0, NULL, false};
static const crash_spec crash_decode_segv_big = {"decode-segv:p_faulty", p_faulty,
                                                 (size_t)6 << 20, 0, NULL, false};
static const crash_spec crash_decode_exit = {"decode-exit:p_faulty", p_faulty, 0, 0,
                                             "exited with status 3", false};
static const crash_spec crash_run_segv = {NULL, p_segv, 0, 0, NULL, false};
static const crash_spec crash_run_exit = {NULL, p_exit3, 0, 0, "exited with status 3", false};
static const crash_spec crash_run_abort = {NULL, p_abort, 0, 0, "signal 6 (SIGABRT)", false};
static const crash_spec crash_encode_segv = {"encode-segv:p_faulty", p_faulty, 0, 0, NULL, false};
static const crash_spec crash_encode_exit = {"encode-exit:p_faulty", p_faulty, 0, 0,
                                             "exited with status 3", false};
static const crash_spec crash_bad_frame = {"bad-frame:p_faulty", p_faulty, 0, 0,
                                           "malformed frame", false};
static const crash_spec crash_short_frame = {"short-frame:p_faulty", p_faulty, 0, 0,
                                             "exited with status 0", false};
static const crash_spec crash_huge_frame = {"huge-frame:p_faulty", p_faulty, 0, 0,
                                            "malformed frame", false};
/* With a result buffer lent to the worker: it dies after making its
 * result there; it says its result is in a lent buffer that cannot hold
 * it. */
static const crash_spec crash_encode_segv_lent = {"encode-segv:p_faulty", p_faulty,
                                                  (size_t)3 << 20, 0, NULL, true};
static const crash_spec crash_bad_lent = {"bad-lent:p_faulty", p_faulty, (size_t)3 << 20, 0,
                                          "malformed frame", true};
/* Memory a worker sends must be a sealed memfd; a plain file is not.
 * The portable build has no seals: it copies the file, whose zeros then
 * fail as a frame. */
#ifdef CF_TEST_PORTABLE
#define FILE_FRAME_HOW "result count does not match the job"
#else
#define FILE_FRAME_HOW "not sealed against shrinking"
#endif
static const crash_spec crash_file_frame = {"file-frame:p_faulty", p_faulty, 0, 0,
                                            FILE_FRAME_HOW, false};
/* Every frame must be one the worker owes: a result carries the id of
 * the call it answers, a running worker says HELLO no more, and a frame
 * of an unknown type is refused on its header (its worker then stays
 * silent: waiting for the announced bytes would wait for ever). */
static const crash_spec crash_stray_result = {"stray-result:p_faulty", p_faulty, 0, 0,
                                              "result for call id", false};
static const crash_spec crash_second_hello = {"second-hello:p_faulty", p_faulty, 0, 0,
                                              "a second hello", false};
static const crash_spec crash_unknown_frame = {"unknown-frame:p_faulty", p_faulty, 0, 0,
                                               "unknown frame type 99", false};
/* A worker writes its claim words; one that writes nonsense is crashing. */
static const crash_spec crash_claim_nonsense = {"claim-nonsense:p_faulty", p_faulty, 0, 0,
                                                "claim word disagrees", false};
/* The result ring is untrusted too: a position beyond what it can hold,
 * or only part of a frame there. */
static const crash_spec crash_ring_overrun = {"ring-overrun:p_faulty", p_faulty, 0, 0,
                                              "result ring position out of range", false};
static const crash_spec crash_ring_partial = {"ring-partial:p_faulty", p_faulty, 0, 0,
                                              "part of a frame in the result ring", false};
static const crash_spec crash_sigkill = {NULL, p_hang, 0, SIGKILL, "signal 9 (SIGKILL)", false};
static const crash_spec crash_sigterm = {NULL, p_hang, 0, SIGTERM, "signal 15 (SIGTERM)", false};

/* The plain build knows the exact signal of a SIGSEGV. */
static crash_spec segv_spec(crash_spec s)
{
    if (!s.how)
        s.how = SEGV_HOW;
    return s;
}

#define CRASH_TESTS(name, spec)                                                 \
    static void test_crash_##name##_breaks(void **state)                        \
    {                                                                           \
        (void)state;                                                            \
        crash_spec s = segv_spec(spec);                                         \
        run_crash(&s, CF_CRASH_BREAKS_POOL, CF_START_EXEC);                     \
    }                                                                           \
    static void test_crash_##name##_replaces(void **state)                      \
    {                                                                           \
        (void)state;                                                            \
        crash_spec s = segv_spec(spec);                                         \
        run_crash(&s, CF_CRASH_REPLACES_WORKER, CF_START_EXEC);                 \
    }

/* A forked worker keeps the parent's signal handlers (cmocka's SIGSEGV
 * handler here, which exits), so a SIGSEGV there is only checked for "an
 * exit status or a signal". */
#define CRASH_TESTS_FORK(name, spec)                                            \
    static void test_fork_crash_##name##_breaks(void **state)                   \
    {                                                                           \
        (void)state;                                                            \
        run_crash(&(spec), CF_CRASH_BREAKS_POOL, CF_START_FORK);                \
    }                                                                           \
    static void test_fork_crash_##name##_replaces(void **state)                 \
    {                                                                           \
        (void)state;                                                            \
        run_crash(&(spec), CF_CRASH_REPLACES_WORKER, CF_START_FORK);            \
    }

CRASH_TESTS(decode_segv, crash_decode_segv)
CRASH_TESTS(decode_segv_big, crash_decode_segv_big)
CRASH_TESTS(decode_exit, crash_decode_exit)
CRASH_TESTS(run_segv, crash_run_segv)
CRASH_TESTS(run_exit, crash_run_exit)
CRASH_TESTS(run_abort, crash_run_abort)
CRASH_TESTS(encode_segv, crash_encode_segv)
CRASH_TESTS(encode_exit, crash_encode_exit)
CRASH_TESTS(encode_segv_lent, crash_encode_segv_lent)
CRASH_TESTS(bad_lent, crash_bad_lent)
CRASH_TESTS(file_frame, crash_file_frame)
CRASH_TESTS(bad_frame, crash_bad_frame)
CRASH_TESTS(short_frame, crash_short_frame)
CRASH_TESTS(huge_frame, crash_huge_frame)
CRASH_TESTS(stray_result, crash_stray_result)
CRASH_TESTS(second_hello, crash_second_hello)
CRASH_TESTS(unknown_frame, crash_unknown_frame)
CRASH_TESTS(claim_nonsense, crash_claim_nonsense)
CRASH_TESTS(ring_overrun, crash_ring_overrun)
CRASH_TESTS(ring_partial, crash_ring_partial)
CRASH_TESTS(sigkill, crash_sigkill)
CRASH_TESTS(sigterm, crash_sigterm)
CRASH_TESTS_FORK(run_segv, crash_run_segv)
CRASH_TESTS_FORK(decode_exit, crash_decode_exit)
CRASH_TESTS_FORK(encode_segv, crash_encode_segv)
CRASH_TESTS_FORK(sigkill, crash_sigkill)

/* A crash while destroy (shutdown with wait) waits for it: destroy still
 * returns, the crashed call fails, the call queued behind it runs on a
 * replacement (resilient) or fails (broken). */
static void crash_during_shutdown(cf_crash_policy policy)
{
    cf_executor *ex = ppool(1, policy, CF_START_EXEC);
    int64_t pid = worker_pid(ex);
    cf_future *f1 = NULL, *f2 = NULL;
    assert_ok(cf_submit(ex, p_sleep_then_segv, CF_ARGS(cf_i64(150)), &f1));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(12)), &f2));
    destroy_quickly(ex, 5);
    assert_true(cf_future_done(f1));
    assert_true(cf_future_done(f2));
    expect_broken(f1, 0, pid, SEGV_HOW);
    if (policy == CF_CRASH_REPLACES_WORKER) {
        int64_t r = 0;
        assert_ok(cf_future_result_i64(f2, 0, &r));
        assert_int_equal(r, 144);
    } else {
        expect_broken(f2, 0, pid, SEGV_HOW);
    }
    assert_ok(cf_future_release(f1));
    assert_ok(cf_future_release(f2));
    assert_no_children();
}

static void test_crash_during_shutdown_breaks(void **state)
{
    (void)state;
    crash_during_shutdown(CF_CRASH_BREAKS_POOL);
}

static void test_crash_during_shutdown_replaces(void **state)
{
    (void)state;
    crash_during_shutdown(CF_CRASH_REPLACES_WORKER);
}

/* A crash while several-MiB arguments are queued on the worker (memfd
 * frames in flight): the queued calls are resent (resilient) or failed
 * (broken), and no descriptor is left behind. */
static void crash_big_in_flight(cf_crash_policy policy)
{
    enum { NBIG = 4 };
    size_t n = (size_t)6 << 20;
    int fds = count_fds();
    cf_executor *ex = ppool(1, policy, CF_START_EXEC);
    int64_t pid = worker_pid(ex);
    /* The crashing call waits at a gate until every call is queued. */
    start_sig gate;
    start_sig_open(&gate);
    unsigned char *bufs[NBIG];
    cf_future *fs[NBIG];
    for (int i = 0; i < NBIG; i++) {
        bufs[i] = pattern(n, (unsigned)i + 11);
        if (i == 0)
            assert_ok(cf_submit(ex, p_big_crash,
                                CF_ARGS(cf_bytes(bufs[i], n), cf_str(gate.path)), &fs[i]));
        else
            assert_ok(cf_submit(ex, p_big_sum, CF_ARGS(cf_bytes(bufs[i], n)), &fs[i]));
    }
    assert_int_equal(write(gate.fd, "g", 1), 1);
    expect_broken(fs[0], T_OK, pid, "exited with status 5");
    for (int i = 1; i < NBIG; i++) {
        if (policy == CF_CRASH_REPLACES_WORKER) {
            int64_t r = 0;
            int rc = cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &r);
            if (rc != CF_OK)
                fail_msg("call %d queued behind the crash: %s (%s)", i, cf_err_name(rc),
                         cf_last_error_message());
            assert_int_equal(r, (int64_t)checksum(bufs[i], n));
        } else {
            expect_broken(fs[i], T_OK, 0, NULL);
        }
    }
    for (int i = 0; i < NBIG; i++) {
        assert_ok(cf_future_release(fs[i]));
        free(bufs[i]);
    }
    check_after_crash(ex, policy, CF_START_EXEC, pid, "exited with status 5");
    destroy_quickly(ex, 5);
    start_sig_close(&gate);
    assert_no_children();
    assert_int_equal(count_fds(), fds);
}

static void test_crash_big_in_flight_breaks(void **state)
{
    (void)state;
    crash_big_in_flight(CF_CRASH_BREAKS_POOL);
}

static void test_crash_big_in_flight_replaces(void **state)
{
    (void)state;
    crash_big_in_flight(CF_CRASH_REPLACES_WORKER);
}

/* A failing initializer breaks the pool under either policy, and says
 * why. */
static void initializer_fails(cf_crash_policy policy, cf_task_fn *init, const char *expect)
{
    cf_value ia[1] = {cf_str("cfg-A")};
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 2;
    o.on_crash = policy;
    o.initializer = init;
    o.initargs = ia;
    o.ninitargs = 1;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    /* Submits race the break: each is refused or fails, saying why. */
    for (int i = 0; i < 2; i++) {
        cf_future *f = NULL;
        int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f);
        if (rc == CF_OK) {
            const cf_failure *fl = expect_failure(f, T_OK, CF_EBROKEN, "BrokenProcessPool");
            if (!contains(cf_failure_message(fl), expect))
                fail_msg("message does not say \"%s\": \"%s\"", expect,
                         cf_failure_message(fl));
            assert_true(contains(cf_failure_message(fl), "pid "));
            assert_ok(cf_future_release(f));
        } else {
            assert_cf(CF_EBROKEN, rc);
            assert_null(f);
        }
    }
    /* By now the pool knows it is broken. */
    cf_future *f = NULL;
    assert_cf(CF_EBROKEN, cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &f));
    assert_null(f);
    if (!contains(cf_last_error_message(), expect))
        fail_msg("submit's message does not say \"%s\": \"%s\"", expect,
                 cf_last_error_message());
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_initializer_raises_breaks(void **state)
{
    (void)state;
    initializer_fails(CF_CRASH_BREAKS_POOL, p_init_raise, "init exploded: cfg-A");
}

static void test_initializer_raises_replaces(void **state)
{
    (void)state;
    initializer_fails(CF_CRASH_REPLACES_WORKER, p_init_raise, "init exploded: cfg-A");
}

static void test_initializer_crashes_breaks(void **state)
{
    (void)state;
    initializer_fails(CF_CRASH_BREAKS_POOL, p_init_segv, "during start-up");
}

static void test_initializer_crashes_replaces(void **state)
{
    (void)state;
    initializer_fails(CF_CRASH_REPLACES_WORKER, p_init_segv, "during start-up");
}

/* ---- recycling ------------------------------------------------------------ */

/* A pool of `workers` that replaces each after `tasks` calls. */
static cf_executor *recycling_pool(int workers, int tasks, cf_start_method sm)
{
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = workers;
    o.max_tasks_per_child = tasks;
    o.start_method = sm;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    return ex;
}

static void recycle(cf_start_method sm, int ntasks)
{
    cf_executor *ex = recycling_pool(2, 2, sm);
    if (sm == CF_START_FORK)
        settle_workers(ex, 2);
    cf_future *fs[64];
    assert_true(ntasks <= 64);
    for (int i = 0; i < ntasks; i++)
        assert_ok(cf_submit(ex, p_pid_sq, CF_ARGS(cf_i64(i)), &fs[i]));
    int64_t pids[64];
    int uses[64];
    int npids = 0;
    for (int i = 0; i < ntasks; i++) {
        int64_t r = 0;
        int rc = cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &r);
        if (rc != CF_OK)
            fail_msg("task %d: %s (%s)", i, cf_err_name(rc), cf_last_error_message());
        assert_int_equal(r % 65536, (int64_t)i * i);
        int64_t pid = r / 65536;
        int k = 0;
        while (k < npids && pids[k] != pid)
            k++;
        if (k == npids) {
            pids[npids] = pid;
            uses[npids++] = 0;
        }
        uses[k]++;
        assert_ok(cf_future_release(fs[i]));
    }
    /* Each worker ran at most max_tasks_per_child calls. */
    for (int k = 0; k < npids; k++)
        if (uses[k] > 2)
            fail_msg("worker %lld ran %d calls (max_tasks_per_child 2)", (long long)pids[k],
                     uses[k]);
    assert_true(npids >= (ntasks + 1) / 2);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_recycle_max_tasks_per_child(void **state)
{
    (void)state;
    recycle(CF_START_EXEC, 50);
}

/* Workers recycled after every call still run at most max_workers calls
 * at once: a replacement starts once the worker it replaces has answered,
 * where it used to start as soon as that worker had been sent its last
 * call - with a backlog, one process per call, each running the call sent
 * ahead to it (60 calls of 200 ms ran at once on a pool of 2).  Each call
 * sleeps 100 ms from when it began; intervals [start, start + 100 ms)
 * then lie within the real ones, so more than 2 of them overlapping means
 * more than 2 calls ran at once. */
static void test_recycling_keeps_max_workers(void **state)
{
    (void)state;
    enum { N = 16, MS = 100 };
    cf_executor *ex = recycling_pool(2, 1, CF_START_EXEC);
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, p_sleep_from, CF_ARGS(cf_i64(MS)), &fs[i]));
    int64_t start[N];
    for (int i = 0; i < N; i++) {
        int rc = cf_future_result_i64(fs[i], 3 * T_OK * cf_test_scale(), &start[i]);
        if (rc != CF_OK)
            fail_msg("call %d: %s (%s)", i, cf_err_name(rc), cf_last_error_message());
        assert_ok(cf_future_release(fs[i]));
    }
    int most = 0;
    for (int i = 0; i < N; i++) {
        int at_once = 0; /* calls running when call i began */
        for (int k = 0; k < N; k++)
            at_once += start[k] <= start[i] && start[i] < start[k] + MS * 1000000LL;
        most = at_once > most ? at_once : most;
    }
    if (most > 2)
        fail_msg("%d calls ran at once in a pool of 2 workers", most);
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* A map chunk bigger than what is left of every worker's budget: the
 * workers were never given it (a worker is recycled once it has run its
 * max_tasks_per_child calls, and it could not reach that with chunks of 2
 * from 2 of 3), so the map stalled for good with the workers idle.  Now
 * idle workers that cannot take it retire early and fresh ones take it.
 * Every element's result, in order; no worker runs more than its budget
 * but for a single chunk bigger than it. */
static void test_recycling_chunk_bigger_than_what_is_left(void **state)
{
    (void)state;
    enum { N = 50 };
    for (int chunk = 2; chunk <= 4; chunk++) {
        cf_executor *ex = recycling_pool(2, 3, CF_START_EXEC);
        /* One call first: one worker has 1 of its 3 calls left. */
        assert_int_equal(run_i64(ex, p_map_elem, CF_ARGS(cf_i64(1))), 11);
        cf_value in[N];
        for (int i = 0; i < N; i++)
            in[i] = cf_i64(i == 24 ? 1000 : i);
        cf_map_input mi = cf_input_array(in, N);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = (size_t)chunk;
        mo.timeout = T_OK * cf_test_scale(); /* below the watchdog */
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, p_map_elem, &mi, 1, &mo, &it));
        for (int i = 0; i < N; i++) {
            const cf_value *v = NULL;
            int rc = cf_map_next(it, &v, NULL);
            if (rc != CF_OK)
                fail_msg("chunks of %d, element %d: %s (%s)", chunk, i, cf_err_name(rc),
                         cf_last_error_message());
            assert_int_equal(v->as.i64, (i == 24 ? 1000 : i) * 10 + 1);
        }
        assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
        cf_map_close(it);
        destroy_quickly(ex, 5);
        assert_no_children();
    }
}

/* cf__test_hook_before_reap: waits (bounded) until `pid` has exited,
 * leaving it for the pool to reap (WNOWAIT), and counts in hook_waited
 * the workers that were running, with calls unanswered, when it was
 * called and exited within the bound.  A worker with no call to answer
 * stays: the manager then loses the bound at that look. */
static _Atomic int hook_waited;

static void wait_for_exit(pid_t pid, bool unanswered)
{
    if (wait_exit_unreaped(pid, 0.5 * cf_test_scale()) == 2 && unanswered)
        atomic_fetch_add(&hook_waited, 1);
}

/* The hook goes even when the test fails half-way (cmocka jumps out of
 * it), so that later tests of a whole-binary run do not wait in it. */
static int clear_reap_hook(void **state)
{
    (void)state;
    atomic_store(&cf__test_hook_before_reap, NULL);
    return 0;
}

/* A worker that answers and exits between the manager's read of its
 * socket and its look at the exit: its answers must still count.  Where
 * workers have no pidfd (the portable build) the manager looks for their
 * exits, at start and every EXIT_LOOK_MS (1 s), by reading each socket
 * and then asking whether the worker exited; the hook holds it between
 * the two until the worker - one call per child, so each has its call
 * and EXIT queued - has answered and gone.  Judged on the first read, the
 * call was lost and the pool broke ("exited with status 0 during
 * start-up", about 3 % of the runs of test_recycle_max_tasks_per_child).
 * Calls go on until such a look came while a worker that had a call to
 * answer was running (starting up, or running the call).  With a pidfd
 * the death checks come only after the exit, the hook finds every worker
 * gone, and one round of calls is run. */
static void test_exit_seen_after_last_answer(void **state)
{
    (void)state;
    int me = cf__os_pidfd(getpid());
    bool pidfd = me >= 0;
    if (me >= 0)
        close(me);
    atomic_store(&hook_waited, 0);
    atomic_store(&cf__test_hook_before_reap, wait_for_exit);
    cf_executor *ex = recycling_pool(1, 1, CF_START_EXEC);
    double end = cf_test_now() + 20 * cf_test_scale();
    int round = 0;
    do {
        square_round(ex, round, 8);
        round++;
    } while (!pidfd && atomic_load(&hook_waited) == 0 && cf_test_now() < end);
    atomic_store(&cf__test_hook_before_reap, NULL);
    if (!pidfd && atomic_load(&hook_waited) == 0)
        fail_msg("no pidfd, and in %d rounds the manager never looked at the exit of a "
                 "worker running its call", round);
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* Replacements would be forked from the running, threaded program (as
 * CPython, the pair is refused). */
static void test_recycle_refused_with_fork(void **state)
{
    (void)state;
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_tasks_per_child = 2;
    o.start_method = CF_START_FORK;
    cf_executor *ex = NULL;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));
    assert_null(ex);
    assert_true(contains(cf_last_error_message(), "max_tasks_per_child needs CF_START_EXEC"));
}

/* Destroy while workers are being recycled after every call. */
static void test_shutdown_races_recycle(void **state)
{
    (void)state;
    int fds = count_fds();
    for (int round = 0; round < 8; round++) {
        cf_process_pool_options o;
        cf_process_pool_options_init(&o);
        o.max_workers = 2;
        o.max_tasks_per_child = 1;
        cf_executor *ex = NULL;
        assert_ok(cf_process_pool_new(&ex, &o));
        int n = 1 + round % 4;
        cf_future *fs[4];
        for (int i = 0; i < n; i++)
            assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(round * 10 + i)), &fs[i]));
        destroy_quickly(ex, 5);
        for (int i = 0; i < n; i++) {
            int64_t r = 0;
            assert_ok(cf_future_result_i64(fs[i], 0, &r));
            assert_int_equal(r, (int64_t)(round * 10 + i) * (round * 10 + i));
            assert_ok(cf_future_release(fs[i]));
        }
        assert_no_children();
    }
    assert_int_equal(count_fds(), fds);
}

/* ---- resilient mode under a stream of crashes ------------------------------- */

static int count_done(cf_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((_Atomic int *)arg, 1);
    return 0;
}

static void test_resilient_stream_with_crashes(void **state)
{
    (void)state;
    int scale = cf_test_scale();
    int n = scale > 1 ? 10000 / (2 * scale) : 10000;
    cf_executor *ex = ppool(2, CF_CRASH_REPLACES_WORKER, CF_START_EXEC);
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    _Atomic int *calls = calloc((size_t)n, sizeof *calls);
    assert_non_null(fs);
    assert_non_null(calls);
    for (int i = 0; i < n; i++) {
        assert_ok(cf_submit(ex, p_stream, CF_ARGS(cf_i64(i)), &fs[i]));
        assert_ok(cf_future_add_done_callback(fs[i], count_done, (void *)&calls[i]));
    }
    assert_ok(cf_wait(fs, (size_t)n, 60.0 * scale, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
    int ok = 0, failed = 0, crashing = 0;
    for (int i = 0; i < n; i++) {
        if (stream_crashes(i)) {
            crashing++;
            expect_broken(fs[i], 0, 0, NULL);
            failed++;
        } else {
            int64_t r = 0;
            int rc = cf_future_result_i64(fs[i], 0, &r);
            if (rc != CF_OK)
                fail_msg("input %d (not a crashing one) ended with %s: %s", i, cf_err_name(rc),
                         cf_last_error_message());
            assert_int_equal(r, (int64_t)i * 3);
            ok++;
        }
    }
    assert_int_equal(ok + failed, n);
    assert_true(crashing > 0);
    /* The manager runs the callbacks; once destroy has joined it, every
     * callback has run. */
    destroy_quickly(ex, 10);
    for (int i = 0; i < n; i++)
        if (atomic_load(&calls[i]) != 1)
            fail_msg("future %d completed %d times", i, atomic_load(&calls[i]));
    for (int i = 0; i < n; i++)
        assert_ok(cf_future_release(fs[i]));
    free(fs);
    free((void *)calls);
    assert_no_children();
}

/* ---- timeouts ------------------------------------------------------------------ */

static void timeout_per_call(cf_crash_policy policy)
{
    cf_executor *ex = ppool(1, policy, CF_START_EXEC);
    int64_t pid = worker_pid(ex);
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 0.3;
    cf_future *f = NULL;
    double t0 = cf_test_now();
    assert_ok(cf_submit_with(ex, &so, p_hang, CF_ARGS(cf_str("")), &f));
    const cf_failure *fl = expect_failure(f, 5, CF_ETIMEDOUT, "TimeoutError");
    double took = cf_test_now() - t0;
    assert_true(names_pid(cf_failure_message(fl), pid));
    if (took < 0.29 || took > 3.0 * cf_test_scale())
        fail_msg("a 0.3 s timeout fired after %.2f s", took);
    assert_ok(cf_future_release(f));
    /* The pool goes on, with a new worker, under either policy. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(11))), 121);
    assert_true(worker_pid(ex) != pid);
    /* A call that finishes in time is unaffected by its timeout. */
    so.timeout = 5.0 * cf_test_scale();
    assert_ok(cf_submit_with(ex, &so, t_square, CF_ARGS(cf_i64(5)), &f));
    int64_t r = 0;
    assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &r));
    assert_int_equal(r, 25);
    assert_ok(cf_future_release(f));
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_timeout_per_call_breaks(void **state)
{
    (void)state;
    timeout_per_call(CF_CRASH_BREAKS_POOL);
}

static void test_timeout_per_call_replaces(void **state)
{
    (void)state;
    timeout_per_call(CF_CRASH_REPLACES_WORKER);
}

static void test_timeout_pool_wide(void **state)
{
    (void)state;
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    /* Scaled: the call after the timed-out one runs on a worker started
     * meanwhile, within this timeout, on a loaded machine too. */
    double limit = 0.3 * cf_test_scale();
    o.task_timeout = limit;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    cf_future *f = NULL;
    double t0 = cf_test_now();
    assert_ok(cf_submit(ex, p_hang, CF_ARGS(cf_str("")), &f));
    expect_failure(f, 5, CF_ETIMEDOUT, "TimeoutError");
    double took = cf_test_now() - t0;
    if (took < limit - 0.01 || took > 3.0 * cf_test_scale())
        fail_msg("the pool-wide %.1f s timeout fired after %.2f s", limit, took);
    assert_ok(cf_future_release(f));
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(4))), 16);
    /* A per-call timeout overrides the pool's. */
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 10.0 * cf_test_scale();
    assert_ok(cf_submit_with(ex, &so, p_sleep_ms, CF_ARGS(cf_i64(600)), &f));
    int64_t pid = 0;
    assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &pid));
    assert_true(pid > 1);
    assert_ok(cf_future_release(f));
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* A map without a timeout of its own, over a pool whose calls have one:
 * the element that overruns fails alone (CF_ETIMEDOUT with its
 * "TimeoutError" record) and the elements after it still yield their
 * results.  It once ended the whole map as if the map's own timeout had
 * passed: the rest were cancelled and cf_map_next() said CF_EDONE. */
static void test_map_element_timeout_is_per_element(void **state)
{
    (void)state;
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 2;
    o.task_timeout = 0.3 * cf_test_scale(); /* the 0-4 ms calls must not overrun */
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    enum { N = 6 };
    cf_value in[N] = {cf_i64(0), cf_i64(10000), cf_i64(1), cf_i64(2), cf_i64(3), cf_i64(4)};
    cf_map_input mi = cf_input_array(in, N);
    cf_map_iter *it = NULL;
    double t0 = cf_test_now();
    assert_ok(cf_map(ex, p_sleep_ms, &mi, 1, NULL, &it));
    for (int i = 0; i < N; i++) {
        const cf_value *v = NULL;
        const cf_failure *fl = NULL;
        int rc = cf_map_next(it, &v, &fl);
        if (i == 1) {
            assert_cf(CF_ETIMEDOUT, rc);
            assert_non_null(fl);
            assert_string_equal(cf_failure_type(fl), "TimeoutError");
        } else {
            if (rc != CF_OK)
                fail_msg("element %d: %s, expected its result", i, cf_err_name(rc));
            assert_true(v->as.i64 > 1); /* a worker's pid */
        }
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    if (cf_test_now() - t0 > 5.0 * cf_test_scale())
        fail_msg("the map took %.2f s", cf_test_now() - t0);
    cf_map_close(it);
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* The same in a map chunk: each call of a chunk has the pool's timeout
 * to itself, from when the worker begins it (the chunk's calls were once
 * given the sum of their timeouts together, and all failed with
 * CF_ETIMEDOUT when the sum ran out).  The call that overruns fails with
 * CF_ETIMEDOUT; the one before it, which had run but whose answer goes
 * with the chunk's, is lost with the worker (CF_EBROKEN, as for an
 * interrupt); the one after it had not begun and runs on the replacement.
 * Under a loaded machine a 20 ms call may take longer; the timeout is
 * scaled with the machine, the 3 s call is not. */
static void test_map_chunk_timeout_is_per_call(void **state)
{
    (void)state;
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.task_timeout = 0.5 * cf_test_scale();
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    int64_t long_ms = (int64_t)(6000 * cf_test_scale());
    cf_value in[3] = {cf_i64(20), cf_i64(long_ms), cf_i64(20)};
    cf_map_input mi = cf_input_array(in, 3);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 3;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, p_sleep_ms, &mi, 1, &mo, &it));
    const cf_value *v = NULL;
    const cf_failure *fl = NULL;
    assert_cf(CF_EBROKEN, cf_map_next(it, &v, &fl));
    assert_non_null(fl);
    assert_string_equal(cf_failure_type(fl), "BrokenProcessPool");
    assert_non_null(strstr(cf_failure_message(fl), "exceeded its timeout"));
    assert_cf(CF_ETIMEDOUT, cf_map_next(it, &v, &fl));
    assert_non_null(fl);
    assert_string_equal(cf_failure_type(fl), "TimeoutError");
    assert_ok(cf_map_next(it, &v, &fl));
    assert_true(v->as.i64 > 1); /* the replacement worker's pid */
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(4))), 16);
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* arg 0: ms to sleep (an initializer slower than the calls' timeout). */
static int p_init_sleep(cf_call *call)
{
    task_sleep_ms(cf_arg_i64(call, 0));
    return cf_return_none(call);
}
CF_TASK(p_init_sleep);

/* A call's timeout counts from when a started worker gets it: not the
 * worker's start-up, nor its initializer (slow on a loaded machine). */
static void test_timeout_excludes_worker_start(void **state)
{
    (void)state;
    /* The initializer outlasts the timeout twice over; both scaled, so
     * that the call itself, on a loaded machine, stays within it. */
    cf_value ia[1] = {cf_i64(600 * cf_test_scale())};
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.initializer = p_init_sleep;
    o.initargs = ia;
    o.ninitargs = 1;
    o.task_timeout = 0.3 * cf_test_scale();
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    /* Submitted at once: the worker is still in its initializer. */
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(5)), &f));
    int64_t r = 0;
    int rc = cf_future_result_i64(f, T_OK * cf_test_scale(), &r);
    if (rc != CF_OK)
        fail_msg("%s: %s", cf_err_name(rc), cf_last_error_message());
    assert_int_equal(r, 25);
    assert_ok(cf_future_release(f));
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_submit_with_bad_options(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_submit_options so;
    cf_submit_options_init(&so);
    assert_true(so.timeout == CF_FOREVER);
    cf_future *f = NULL;
    so.timeout = NAN;
    assert_cf(CF_EINVAL, cf_submit_with(ex, &so, t_square, CF_ARGS(cf_i64(2)), &f));
    assert_null(f);
    so.timeout = -0.5;
    assert_cf(CF_EINVAL, cf_submit_with(ex, &so, t_square, CF_ARGS(cf_i64(2)), &f));
    assert_null(f);
    assert_ok(cf_submit_with(ex, NULL, t_square, CF_ARGS(cf_i64(2)), &f));
    int64_t r = 0;
    assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &r));
    assert_int_equal(r, 4);
    assert_ok(cf_future_release(f));
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* ---- interrupts ------------------------------------------------------------------ */

static void interrupt_running(cf_crash_policy policy)
{
    cf_executor *ex = ppool(1, policy, CF_START_EXEC);
    int64_t pid = worker_pid(ex);
    start_sig sig;
    start_sig_open(&sig);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, p_hang, CF_ARGS(cf_str(sig.path)), &f));
    assert_true(start_sig_wait(&sig, 1, T_OK));
    assert_true(cf_future_running(f));
    double t0 = cf_test_now();
    assert_ok(cf_future_interrupt(f));
    expect_interrupted(f, 5);
    assert_true(cf_test_now() - t0 < 3.0 * cf_test_scale());
    assert_cf(CF_EDONE, cf_future_interrupt(f));
    assert_ok(cf_future_release(f));
    /* Not a crash: the pool goes on under either policy. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(8))), 64);
    assert_true(worker_pid(ex) != pid);
    destroy_quickly(ex, 5);
    start_sig_close(&sig);
    assert_no_children();
}

static void test_interrupt_running_breaks(void **state)
{
    (void)state;
    interrupt_running(CF_CRASH_BREAKS_POOL);
}

static void test_interrupt_running_replaces(void **state)
{
    (void)state;
    interrupt_running(CF_CRASH_REPLACES_WORKER);
}

/* Every worker of a full pool dies at once and is replaced while the
 * manager is still going through what its last poll() reported: starting
 * the replacements grows the manager's poll arrays (8 workers fill their
 * first capacity), which it must not read afterwards (ASan). */
static void test_interrupt_every_worker_at_once(void **state)
{
    (void)state;
    enum { N = 8 };
    for (int policy = 0; policy < 2; policy++) {
        cf_executor *ex = ppool(N, policy ? CF_CRASH_REPLACES_WORKER : CF_CRASH_BREAKS_POOL,
                                CF_START_EXEC);
        for (int round = 0; round < 3; round++) {
            start_sig sig;
            start_sig_open(&sig);
            cf_future *fs[N];
            for (int i = 0; i < N; i++)
                assert_ok(cf_submit(ex, p_hang, CF_ARGS(cf_str(sig.path)), &fs[i]));
            assert_true(start_sig_wait(&sig, N, T_OK));
            for (int i = 0; i < N; i++)
                assert_ok(cf_future_interrupt(fs[i]));
            for (int i = 0; i < N; i++) {
                expect_interrupted(fs[i], 10);
                assert_ok(cf_future_release(fs[i]));
            }
            assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(round))), round * round);
            start_sig_close(&sig);
        }
        destroy_quickly(ex, 10);
    }
    assert_no_children();
}

static void test_interrupt_pending(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    /* A call with a timeout keeps the worker to itself, so the next call
     * stays pending. */
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 60;
    start_sig sig;
    start_sig_open(&sig);
    cf_future *a = NULL, *b = NULL;
    assert_ok(cf_submit_with(ex, &so, p_hang, CF_ARGS(cf_str(sig.path)), &a));
    assert_true(start_sig_wait(&sig, 1, T_OK));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &b));
    assert_int_equal(cf_future_state(b), CF_PENDING);
    assert_ok(cf_future_interrupt(b));
    assert_true(cf_future_cancelled(b));
    assert_cf(CF_ECANCELLED, cf_future_result(b, 0, NULL));
    /* The running call was not touched. */
    assert_true(cf_future_running(a));
    assert_ok(cf_future_interrupt(a));
    expect_interrupted(a, 5);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(5))), 25);
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
    destroy_quickly(ex, 5);
    start_sig_close(&sig);
    assert_no_children();
}

/* A call queued on a worker behind another is failed without killing the
 * worker, which finishes the call it is running. */
static void test_interrupt_queued_on_worker(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    int64_t pid = worker_pid(ex);
    start_sig sig;
    start_sig_open(&sig);
    cf_future *a = NULL, *b = NULL;
    assert_ok(cf_submit(ex, p_sleep_ms, CF_ARGS(cf_i64(1000), cf_str(sig.path)), &a));
    assert_true(start_sig_wait(&sig, 1, T_OK));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &b));
    /* Sent to the busy worker, not begun: cancelled on the spot. */
    assert_ok(cf_future_interrupt(b));
    assert_true(cf_future_cancelled(b));
    assert_cf(CF_ECANCELLED, cf_future_result(b, 0, NULL));
    int64_t apid = 0;
    assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &apid));
    assert_int_equal(apid, pid);
    assert_int_equal(worker_pid(ex), pid);
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
    destroy_quickly(ex, 5);
    start_sig_close(&sig);
    assert_no_children();
}

/* A done-callback: shutdown(wait=false, cancel_futures=true) of `arg`;
 * what it returned goes to shutdown_cb_rc (checked by the test thread:
 * cmocka's asserts belong to that thread), and then shutdown_cb_done is
 * set.  The shutdown cancels the pool's calls before it returns, so a
 * thread that saw them cancelled must still wait for the event before it
 * reads the code. */
static _Atomic int shutdown_cb_rc = -1;
static cf_test_event shutdown_cb_done = CF_TEST_EVENT_INIT;

static int shutdown_cancel_cb(cf_future *f, void *arg)
{
    (void)f;
    atomic_store(&shutdown_cb_rc, cf_shutdown(arg, false, true));
    cf_test_event_set(&shutdown_cb_done);
    return 0;
}

/* shutdown(cancel_futures) while the manager handles a worker killed to
 * interrupt the first call of a batch (one job of three calls on one
 * worker): the interrupted call's done-callback shuts the pool down from
 * the manager thread, between the moment the job left the worker and the
 * moment its two unbegun calls go back to the queue.  Those two must end
 * cancelled without running (they would hang and say so on the FIFO), and
 * the pool must wind down. */
static void test_interrupt_then_shutdown_cancel_from_callback(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    start_sig sig;
    start_sig_open(&sig);
    cf_value args[3] = {cf_str(sig.path), cf_str(sig.path), cf_str(sig.path)};
    cf_future *fs[3];
    assert_ok(cf_submit_many(ex, p_hang, args, 1, 3, fs));
    assert_true(start_sig_wait(&sig, 1, T_OK));
    assert_true(cf_future_running(fs[0]));
    assert_int_equal(cf_future_state(fs[1]), CF_PENDING);
    atomic_store(&shutdown_cb_rc, -1);
    assert_ok(cf_future_add_done_callback(fs[0], shutdown_cancel_cb, ex));
    assert_ok(cf_future_interrupt(fs[0]));
    expect_interrupted(fs[0], 5);
    for (int i = 1; i < 3; i++) {
        assert_cf(CF_ECANCELLED, cf_future_result(fs[i], 5 * cf_test_scale(), NULL));
        assert_true(cf_future_cancelled(fs[i]));
    }
    /* The callback ran, on the manager, and its shutdown succeeded; the
     * two calls were cancelled by that shutdown (their job still listed
     * as sent) or by the manager as it put them back. */
    assert_true(cf_test_event_wait(&shutdown_cb_done, 5));
    assert_int_equal(atomic_load(&shutdown_cb_rc), CF_OK);
    cf_future *late = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &late));
    /* No call began after the first one. */
    assert_false(start_sig_wait(&sig, 1, 0.2));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_release(fs[i]));
    destroy_quickly(ex, 5);
    start_sig_close(&sig);
    assert_no_children();
}

/* The same race without a hook: the interrupt and shutdown(cancel_futures)
 * are issued back to back by the test thread, and the manager meets the
 * worker's death before, during or after the shutdown.  Every call ends:
 * the interrupted one cancelled, the two others cancelled or (when a new
 * worker took them before the shutdown) finished with their result; and
 * the pool winds down.  The window in which the manager changes a job's
 * calls while a shutdown reads them is too narrow to hit on demand (the
 * job now leaves `sent` before that, see interrupted()), so this checks
 * the outcomes over a spread of timings rather than that one. */
static void test_interrupt_races_shutdown_cancel(void **state)
{
    (void)state;
    for (int round = 0; round < 12; round++) {
        cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
        start_sig sig;
        start_sig_open(&sig);
        /* One job of three calls on the one worker: a long one, then two
         * that return at once. */
        cf_value args[6] = {cf_i64(30000), cf_str(sig.path), cf_i64(0), cf_str(""),
                            cf_i64(0),     cf_str("")};
        cf_future *fs[3];
        assert_ok(cf_submit_many(ex, p_sleep_ms, args, 2, 3, fs));
        assert_true(start_sig_wait(&sig, 1, T_OK));
        assert_ok(cf_future_interrupt(fs[0]));
        /* Not a synchronisation: a spread of head starts for the manager
         * (0 to 2.4 ms), so that the rounds meet the death at different
         * points; every outcome below is accepted whatever the timing. */
        usleep((useconds_t)(round * round * 20));
        assert_ok(cf_shutdown(ex, false, true));
        expect_interrupted(fs[0], 5);
        for (int i = 1; i < 3; i++) {
            int64_t pid = 0;
            int rc = cf_future_result_i64(fs[i], 5 * cf_test_scale(), &pid);
            if (rc == CF_OK)
                assert_true(pid > 1);
            else if (rc != CF_ECANCELLED)
                fail_msg("round %d, call %d: %s (%s)", round, i, cf_err_name(rc),
                         cf_last_error_message());
            assert_true(cf_future_done(fs[i]));
        }
        for (int i = 0; i < 3; i++)
            assert_ok(cf_future_release(fs[i]));
        destroy_quickly(ex, 5);
        start_sig_close(&sig);
    }
    assert_no_children();
}

/* arg 0: FIFO to signal start on, arg 1: FIFO to wait on (at most 10 s)
 * for one byte.  Returns its pid. */
static int p_gated(cf_call *call)
{
    task_signal_started(call, 0);
    task_wait_gate(cf_arg_str(call, 1));
    return cf_return_i64(call, (int64_t)getpid());
}
CF_TASK(p_gated);

/* The gate of the running call, opened from inside cancel() of the call
 * queued behind it, after cancel() took that call's claim word and before
 * the cancel shows: the worker then skips the call and answers at once,
 * while the cancelling thread is still "preempted". */
static int hook_gate_fd = -1;

static void open_gate_then_stall(cf_future *f)
{
    (void)f;
    ssize_t w = write(hook_gate_fd, "g", 1);
    (void)w;
    usleep(300 * 1000);
}

/* A worker that rightly skips a call the parent cancelled is not judged
 * malformed because the parent's cancel had not yet shown when its answer
 * was read: the pool is not broken and the calls end as they should. */
static void test_skip_answered_before_cancel_shows(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    for (int round = 0; round < 3; round++) {
        start_sig started, gate;
        start_sig_open(&started);
        start_sig_open(&gate);
        cf_future *a = NULL, *b = NULL, *c = NULL;
        assert_ok(cf_submit(ex, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate.path)), &a));
        assert_true(start_sig_wait(&started, 1, T_OK));
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &b));
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &c));
        assert_true(wait_sent(&b, 1));
        hook_gate_fd = gate.fd;
        atomic_store(&cf__test_hook_claim_cancelled, open_gate_then_stall);
        bool cancelled = cf_future_cancel(b);
        atomic_store(&cf__test_hook_claim_cancelled, NULL);
        assert_true(cancelled);
        assert_true(cf_future_cancelled(b));
        int64_t r = 0;
        assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &r));
        assert_cf(CF_ECANCELLED, cf_future_result(b, 0, NULL));
        assert_ok(cf_future_result_i64(c, T_OK * cf_test_scale(), &r));
        assert_int_equal(r, 16);
        assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(5))), 25);
        assert_ok(cf_future_release(a));
        assert_ok(cf_future_release(b));
        assert_ok(cf_future_release(c));
        start_sig_close(&started);
        start_sig_close(&gate);
    }
    destroy_quickly(ex, 5);
    assert_no_children();
}

/* set_result()/set_exception() of a process pool's calls.  A call a
 * worker has begun is refused even when nobody looked at its future since
 * (the claim word says it began); a call sent to the worker and not begun
 * is taken back from it the way cancel() takes one: the worker skips it,
 * which the pool accepts (it is not broken), and the future keeps what
 * was set. */
static void test_set_result_of_sent_calls(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    cf_future *a = NULL, *b = NULL, *c = NULL;
    assert_ok(cf_submit(ex, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate.path)), &a));
    assert_true(start_sig_wait(&started, 1, T_OK));
    cf_value v = cf_i64(-1);
    assert_cf(CF_EINVALSTATE, cf_future_set_result(a, &v));
    assert_cf(CF_EINVALSTATE, cf_future_set_exception(a, 1, "ValueError", "a"));
    assert_true(cf_future_running(a));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &b));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &c));
    cf_future *bc[2] = {b, c};
    assert_true(wait_sent(bc, 2));
    assert_ok(cf_future_set_result(b, &v));
    assert_ok(cf_future_set_exception(c, 7, "ValueError", "set by the caller"));
    assert_int_equal(write(gate.fd, "g", 1), 1);
    int64_t apid = 0, r = 0;
    assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &apid));
    assert_true(apid > 1);
    assert_ok(cf_future_result_i64(b, 0, &r));
    assert_int_equal(r, -1);
    const cf_failure *fl = NULL;
    assert_ok(cf_future_exception(c, 0, &fl));
    assert_non_null(fl);
    assert_cf(CF_ETASK, cf_future_result(c, 0, NULL));
    assert_string_equal(cf_failure_type(fl), "ValueError");
    assert_int_equal(cf_failure_code(fl), 7);
    /* The worker skipped b and c, and the pool goes on with it. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(5))), 25);
    assert_int_equal(worker_pid(ex), apid);
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
    assert_ok(cf_future_release(c));
    destroy_quickly(ex, 5);
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

typedef struct hold_manager {
    cf_test_event entered, release;
} hold_manager;

/* A done-callback that holds the pool's manager thread until released. */
static int hold_manager_cb(cf_future *f, void *arg)
{
    (void)f;
    hold_manager *h = arg;
    cf_test_event_set(&h->entered);
    cf_test_event_wait(&h->release, T_OK * cf_test_scale());
    return 0;
}

typedef struct next_calls {
    cf_future *g[2];
} next_calls;

/* A's done-callback (on the manager thread): interrupt the two calls the
 * workers are running now. */
static int interrupt_next_cb(cf_future *f, void *arg)
{
    (void)f;
    next_calls *in = arg;
    for (int i = 0; i < 2; i++)
        cf_future_interrupt(in->g[i]);
    return 0;
}

/* An interrupt that reaches the manager after the call answered, but
 * before the manager read the answer, while the worker already runs the
 * next call queued on it.  The interrupted call keeps its result and the
 * next call is spared (it neither fails as "interrupted" nor runs twice).
 * With `interrupt_next`, A's done-callback then interrupts the calls the
 * workers moved on to: those interrupts must not be lost.  Made
 * deterministic by holding the manager in a done-callback of another
 * worker's call (W) while A's answer is written. */
static void interrupt_after_answer(bool interrupt_next)
{
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    start_sig started, gate_w, gate_a;
    start_sig_open(&started);
    start_sig_open(&gate_w);
    start_sig_open(&gate_a);
    hold_manager h;
    cf_test_event_init(&h.entered);
    cf_test_event_init(&h.release);
    /* W and A run on the two workers, each waiting at its gate. */
    cf_future *w = NULL, *a = NULL, *g[3];
    assert_ok(cf_submit(ex, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate_w.path)), &w));
    assert_ok(cf_submit(ex, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate_a.path)), &a));
    assert_true(start_sig_wait(&started, 2, T_OK));
    assert_ok(cf_future_add_done_callback(w, hold_manager_cb, &h));
    /* A backlog: one call gets queued behind W, one behind A (long ones
     * when they are to be interrupted), one waits. */
    int64_t ms = interrupt_next ? 5000 : 200;
    for (int i = 0; i < 3; i++)
        assert_ok(cf_submit(ex, p_sleep_ms, CF_ARGS(cf_i64(i < 2 ? ms : 10), cf_str(started.path)),
                            &g[i]));
    next_calls in = {{g[0], g[1]}};
    if (interrupt_next)
        assert_ok(cf_future_add_done_callback(a, interrupt_next_cb, &in));
    /* Queued on the workers, not begun: still pending (cancellable). */
    assert_true(wait_sent(g, 2));
    assert_int_equal(cf_future_state(g[0]), CF_PENDING);
    assert_int_equal(cf_future_state(g[1]), CF_PENDING);
    /* W answers; its callback holds the manager. */
    assert_int_equal(write(gate_w.fd, "w", 1), 1);
    assert_true(cf_test_event_wait(&h.entered, T_OK * cf_test_scale()));
    /* A answers (unread), then both workers start their next calls. */
    assert_int_equal(write(gate_a.fd, "a", 1), 1);
    assert_true(start_sig_wait(&started, 2, T_OK));
    assert_ok(cf_future_interrupt(a));
    cf_test_event_set(&h.release);
    int64_t pid = 0;
    assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &pid));
    assert_true(pid > 1);
    for (int i = 0; i < 3; i++) {
        if (interrupt_next && i < 2) {
            expect_interrupted(g[i], T_OK);
            continue;
        }
        int rc = cf_future_result_i64(g[i], T_OK * cf_test_scale(), &pid);
        if (rc != CF_OK)
            fail_msg("call %d: %s (%s)", i, cf_err_name(rc), cf_last_error_message());
    }
    assert_ok(cf_future_release(w));
    assert_ok(cf_future_release(a));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_release(g[i]));
    destroy_quickly(ex, 5);
    start_sig_close(&started);
    start_sig_close(&gate_w);
    start_sig_close(&gate_a);
    assert_no_children();
}

static void test_interrupt_after_answer_spares_next_call(void **state)
{
    (void)state;
    interrupt_after_answer(false);
}

static void test_interrupt_of_next_call_not_lost(void **state)
{
    (void)state;
    interrupt_after_answer(true);
}

static void test_interrupt_invalid(void **state)
{
    (void)state;
    assert_cf(CF_EINVAL, cf_future_interrupt(NULL));
    cf_future *f = NULL;
    assert_ok(cf_future_new(&f));
    assert_cf(CF_EINVAL, cf_future_interrupt(f));
    assert_ok(cf_future_release(f));
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f));
    int64_t r = 0;
    assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &r));
    assert_cf(CF_EDONE, cf_future_interrupt(f));
    assert_ok(cf_future_release(f));
    destroy_quickly(ex, 5);
    assert_cf(CF_EINVAL, cf_terminate_workers(NULL));
    assert_cf(CF_EINVAL, cf_kill_workers(NULL));
    assert_no_children();
}

/* ---- terminate_workers / kill_workers ---------------------------------------- */

static void stop_workers_case(bool kill_them, cf_start_method sm)
{
    cf_executor *ex = ppool(2, CF_CRASH_REPLACES_WORKER, sm);
    if (sm == CF_START_FORK)
        settle_workers(ex, 2);
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 60; /* keeps each worker to one call */
    start_sig sig;
    start_sig_open(&sig);
    cf_future *run[2], *pend[3];
    for (int i = 0; i < 2; i++)
        assert_ok(cf_submit_with(ex, &so, p_hang, CF_ARGS(cf_str(sig.path)), &run[i]));
    assert_true(start_sig_wait(&sig, 2, T_OK));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &pend[i]));
    for (int i = 0; i < 3; i++)
        assert_int_equal(cf_future_state(pend[i]), CF_PENDING);
    double t0 = cf_test_now();
    assert_ok(kill_them ? cf_kill_workers(ex) : cf_terminate_workers(ex));
    const char *sigtext = kill_them ? "(SIGKILL)" : "(SIGTERM)";
    for (int i = 0; i < 2; i++) {
        const cf_failure *fl = expect_failure(run[i], 5, CF_EBROKEN, "BrokenProcessPool");
        const char *msg = cf_failure_message(fl);
        if (!contains(msg, sigtext) || !contains(msg, "terminate_workers/kill_workers") ||
            !contains(msg, "pid "))
            fail_msg("unexpected message: \"%s\"", msg);
    }
    assert_true(cf_test_now() - t0 < 3.0 * cf_test_scale());
    for (int i = 0; i < 3; i++) {
        assert_true(cf_future_cancelled(pend[i]));
        assert_cf(CF_ECANCELLED, cf_future_result(pend[i], 0, NULL));
    }
    cf_future *f = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(1)), &f));
    assert_null(f);
    /* Every worker goes, and none is replaced. */
    double end = cf_test_now() + 5.0 * cf_test_scale();
    while (cf_executor_worker_count(ex) != 0 && cf_test_now() < end)
        sleep_ms(5);
    assert_int_equal(cf_executor_worker_count(ex), 0);
    /* Idempotent. */
    assert_ok(cf_kill_workers(ex));
    destroy_quickly(ex, 2);
    for (int i = 0; i < 2; i++)
        assert_ok(cf_future_release(run[i]));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_release(pend[i]));
    start_sig_close(&sig);
    assert_no_children();
}

static void test_terminate_workers(void **state)
{
    (void)state;
    stop_workers_case(false, CF_START_EXEC);
}

static void test_kill_workers(void **state)
{
    (void)state;
    stop_workers_case(true, CF_START_EXEC);
}

static void test_kill_workers_fork(void **state)
{
    (void)state;
    stop_workers_case(true, CF_START_FORK);
}

/* Stopping an idle pool, or one that never ran anything. */
static void test_terminate_idle_pool(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(2))), 4);
    assert_ok(cf_terminate_workers(ex));
    cf_future *f = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(1)), &f));
    destroy_quickly(ex, 2);
    ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    assert_ok(cf_kill_workers(ex));
    destroy_quickly(ex, 2);
    assert_no_children();
}

/* ---- thread pools: cf_cancel_requested ------------------------------------------ */

typedef struct coop {
    cf_test_event started;
    _Atomic int saw_stop;
} coop;

/* Polls cf_cancel_requested() for up to 10 s. */
static int t_coop(cf_call *call)
{
    coop *c = cf_arg_ptr(call, 0);
    if (!c)
        return cf_raise(call, 1, "TestError", "no coop");
    bool early = cf_cancel_requested(call);
    cf_test_event_set(&c->started);
    if (early)
        return cf_raise(call, 2, "TestError", "cancel requested before anything asked");
    double end = cf_test_now() + 10.0 * cf_test_scale();
    while (cf_test_now() < end) {
        if (cf_cancel_requested(call)) {
            atomic_fetch_add(&c->saw_stop, 1);
            return cf_raise(call, CF_ECANCELLED, "CancelledError", "stopped on request");
        }
        sleep_ms(1);
    }
    return cf_raise(call, 3, "TestError", "cancel never requested");
}

static void expect_coop_cancelled(cf_future *f)
{
    const cf_failure *fl = expect_task_failure(f, 5);
    if (cf_failure_code(fl) != CF_ECANCELLED || strcmp(cf_failure_type(fl), "CancelledError"))
        fail_msg("task ended with %d %s: %s", cf_failure_code(fl), cf_failure_type(fl),
                 cf_failure_message(fl));
}

static void test_thread_cancel_requested_interrupt(void **state)
{
    (void)state;
    assert_false(cf_cancel_requested(NULL));
    cf_executor *ex = pool_new(2);
    coop c = {.saw_stop = 0};
    cf_test_event_init(&c.started);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_coop, CF_ARGS(cf_ptr(&c)), &f));
    assert_true(cf_test_event_wait(&c.started, T_OK));
    sleep_ms(20); /* give a wrong flag a chance to show */
    assert_false(cf_future_done(f));
    assert_ok(cf_future_interrupt(f));
    expect_coop_cancelled(f);
    assert_int_equal(atomic_load(&c.saw_stop), 1);
    assert_cf(CF_EDONE, cf_future_interrupt(f));
    assert_ok(cf_future_release(f));
    /* Another task on the same pool is not affected. */
    coop d = {.saw_stop = 0};
    cf_test_event_init(&d.started);
    assert_ok(cf_submit(ex, t_coop, CF_ARGS(cf_ptr(&d)), &f));
    assert_true(cf_test_event_wait(&d.started, T_OK));
    sleep_ms(20);
    assert_false(cf_future_done(f));
    assert_ok(cf_future_interrupt(f));
    expect_coop_cancelled(f);
    assert_ok(cf_future_release(f));
    destroy_quickly(ex, 5);
}

static void test_thread_cancel_requested_timeout(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    coop c = {.saw_stop = 0};
    cf_test_event_init(&c.started);
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 0.2;
    cf_future *f = NULL;
    double t0 = cf_test_now();
    assert_ok(cf_submit_with(ex, &so, t_coop, CF_ARGS(cf_ptr(&c)), &f));
    expect_coop_cancelled(f);
    double took = cf_test_now() - t0;
    if (took < 0.19 || took > 3.0 * cf_test_scale())
        fail_msg("a 0.2 s cooperative timeout was seen after %.2f s", took);
    assert_int_equal(atomic_load(&c.saw_stop), 1);
    assert_ok(cf_future_release(f));
    destroy_quickly(ex, 5);
}

static void thread_stop(bool kill_them)
{
    cf_executor *ex = pool_new(2);
    coop c[2];
    cf_future *fs[2];
    for (int i = 0; i < 2; i++) {
        c[i].saw_stop = 0;
        cf_test_event_init(&c[i].started);
        assert_ok(cf_submit(ex, t_coop, CF_ARGS(cf_ptr(&c[i])), &fs[i]));
    }
    for (int i = 0; i < 2; i++)
        assert_true(cf_test_event_wait(&c[i].started, T_OK));
    assert_ok(kill_them ? cf_kill_workers(ex) : cf_terminate_workers(ex));
    for (int i = 0; i < 2; i++) {
        expect_coop_cancelled(fs[i]);
        assert_int_equal(atomic_load(&c[i].saw_stop), 1);
    }
    cf_future *f = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(1)), &f));
    destroy_quickly(ex, 5);
    for (int i = 0; i < 2; i++)
        assert_ok(cf_future_release(fs[i]));
}

static void test_thread_cancel_requested_terminate(void **state)
{
    (void)state;
    thread_stop(false);
}

static void test_thread_cancel_requested_kill(void **state)
{
    (void)state;
    thread_stop(true);
}

/* ---- fork start method ------------------------------------------------------- */

static pthread_mutex_t fork_app_lock = PTHREAD_MUTEX_INITIALIZER;

/* 1 if the application's lock was free when this worker was forked
 * (trylock: a copy held by nobody must not hang the call). */
static int p_fork_lock_free(cf_call *call)
{
    (void)call;
    int64_t lock_free = pthread_mutex_trylock(&fork_app_lock) == 0;
    if (lock_free)
        pthread_mutex_unlock(&fork_app_lock);
    return cf_return_i64(call, lock_free);
}
CF_TASK(p_fork_lock_free);

/* CF_START_FORK: the first workers are forked before
 * cf_process_pool_new() returns, so they are all alive when it does, and
 * a lock the application takes right after the call is free in every
 * worker.  (Forked while the caller went on, as before, a worker could
 * copy that lock held.) */
static void test_fork_workers_forked_before_the_constructor_returns(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_FORK);
    pthread_mutex_lock(&fork_app_lock);
    assert_int_equal(cf_executor_worker_count(ex), 2);
    /* Both workers, whichever takes which call. */
    cf_future *fs[8];
    for (int i = 0; i < 8; i++)
        assert_ok(cf_submit(ex, p_fork_lock_free, CF_ARGS(cf_i64(i)), &fs[i]));
    for (int i = 0; i < 8; i++) {
        int64_t v = -1;
        assert_ok(cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &v));
        assert_int_equal(v, 1);
        assert_ok(cf_future_release(fs[i]));
    }
    pthread_mutex_unlock(&fork_app_lock);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void *make_fork_pool(void *arg)
{
    cf_executor **ex = arg;
    *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_FORK);
    return NULL;
}

/* A fork pool made by a thread that then exits keeps its workers: their
 * death signal (PR_SET_PDEATHSIG) follows the thread that forked them,
 * which must be the pool's manager, not the thread that made the pool. */
static void test_fork_pool_outlives_the_thread_that_made_it(void **state)
{
    (void)state;
    cf_executor *ex = NULL;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, make_fork_pool, &ex), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_non_null(ex);
    for (int i = 0; i < 8; i++)
        assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(i))), i * i);
    assert_int_equal(cf_executor_worker_count(ex), 2);
    destroy_quickly(ex, 5);
    assert_no_children();
}

static _Atomic int concurrent_fork_bad;

static void *make_fork_pools(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < 10; round++) {
        /* No cmocka assertion off the test's thread: failures are counted. */
        cf_process_pool_options o;
        cf_process_pool_options_init(&o);
        o.max_workers = 2;
        o.on_crash = round % 2 ? CF_CRASH_REPLACES_WORKER : CF_CRASH_BREAKS_POOL;
        o.start_method = CF_START_FORK;
        cf_executor *ex = NULL;
        if (cf_process_pool_new(&ex, &o) != CF_OK) {
            atomic_fetch_add(&concurrent_fork_bad, 1);
            continue;
        }
        if (cf_executor_worker_count(ex) != 2)
            atomic_fetch_add(&concurrent_fork_bad, 1);
        cf_future *fs[4];
        for (int i = 0; i < 4; i++)
            if (cf_submit(ex, t_square, CF_ARGS(cf_i64(id * 100 + i)), &fs[i]) != CF_OK)
                fs[i] = NULL;
        for (int i = 0; i < 4; i++) {
            int64_t v = -1;
            if (!fs[i] || cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &v) != CF_OK ||
                v != (int64_t)(id * 100 + i) * (id * 100 + i))
                atomic_fetch_add(&concurrent_fork_bad, 1);
            if (fs[i])
                cf_future_release(fs[i]);
        }
        if (cf_executor_destroy(ex) != CF_OK)
            atomic_fetch_add(&concurrent_fork_bad, 1);
    }
    return NULL;
}

/* Four threads make, use and destroy fork pools at once, so forks happen
 * while other threads submit, register executors and start or stop
 * pools: every pool must come back with all its workers forked, and every
 * call must be answered.  (A worker that inherited one of the library's
 * locks held would hang its calls; this run makes that likely, not
 * certain.)  Sanitizer runtimes are skipped: GCC 12's
 * ASan allocator takes no lock around fork() (a worker can inherit it
 * held), and TSan does not support threads after a multi-threaded fork. */
static void test_fork_pools_made_by_several_threads_at_once(void **state)
{
    (void)state;
    if (CF_TEST_SANITIZED) {
        print_message("sanitizer runtime: forks from a threaded parent are not safe here\n");
        skip();
    }
    atomic_store(&concurrent_fork_bad, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, make_fork_pools, (void *)(intptr_t)(i + 1)),
                         0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(atomic_load(&concurrent_fork_bad), 0);
    assert_no_children();
}

static void test_fork_basics(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_FORK);
    settle_workers(ex, 2);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(12))), 144);
    assert_int_not_equal(worker_pid(ex), (int64_t)getpid());
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, p_raise, CF_ARGS(cf_i64(9)), &f));
    const cf_failure *fl = expect_task_failure(f, T_OK);
    assert_string_equal(cf_failure_type(fl), "ValueError");
    assert_string_equal(cf_failure_message(fl), "bad input 9");
    assert_ok(cf_future_release(f));
    map_chunks(ex, 7);
    /* A per-call timeout kills and replaces a forked worker too. */
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 0.3;
    assert_ok(cf_submit_with(ex, &so, p_hang, CF_ARGS(cf_str("")), &f));
    expect_failure(f, 5, CF_ETIMEDOUT, "TimeoutError");
    settle_workers(ex, 2); /* before this thread frees: see settle_workers */
    assert_ok(cf_future_release(f));
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(3))), 9);
    destroy_quickly(ex, 5);
    assert_no_children();
}


/* ---- more shutdown, callback and lifetime cases ----------------------------------- */

static void test_shutdown_cancel_futures(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 60; /* keeps the worker to this call */
    start_sig sig;
    start_sig_open(&sig);
    cf_future *a = NULL, *b[3];
    assert_ok(cf_submit_with(ex, &so, p_sleep_ms, CF_ARGS(cf_i64(300), cf_str(sig.path)), &a));
    assert_true(start_sig_wait(&sig, 1, T_OK));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &b[i]));
    assert_ok(cf_shutdown(ex, false, true));
    for (int i = 0; i < 3; i++) {
        assert_true(cf_future_cancelled(b[i]));
        assert_cf(CF_ECANCELLED, cf_future_result(b[i], 0, NULL));
    }
    /* The running call finishes normally. */
    int64_t pid = 0;
    assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &pid));
    assert_true(pid > 1);
    destroy_quickly(ex, 5);
    assert_ok(cf_future_release(a));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_release(b[i]));
    start_sig_close(&sig);
    assert_no_children();
}

/* A worker that dies while idle: a broken pool breaks, a resilient one
 * replaces it. */
static void idle_worker_killed(cf_crash_policy policy)
{
    cf_executor *ex = ppool(1, policy, CF_START_EXEC);
    int64_t pid = worker_pid(ex);
    assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
    /* Gone (reaped by the pool) within a bounded time. */
    double end = cf_test_now() + T_OK * cf_test_scale();
    while (kill((pid_t)pid, 0) == 0 && cf_test_now() < end)
        sleep_ms(2);
    assert_int_equal(kill((pid_t)pid, 0), -1);
    if (policy == CF_CRASH_BREAKS_POOL) {
        submit_to_broken(ex, "signal 9 (SIGKILL)");
        cf_future *g = NULL;
        assert_cf(CF_EBROKEN, cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &g));
        assert_true(names_pid(cf_last_error_message(), pid));
    } else {
        int64_t npid = worker_pid(ex);
        assert_true(npid != pid);
        assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(6))), 36);
    }
    destroy_quickly(ex, 5);
    assert_no_children();
}

static void test_idle_worker_killed_breaks(void **state)
{
    (void)state;
    idle_worker_killed(CF_CRASH_BREAKS_POOL);
}

static void test_idle_worker_killed_replaces(void **state)
{
    (void)state;
    idle_worker_killed(CF_CRASH_REPLACES_WORKER);
}

typedef struct cb_ctx {
    cf_executor *ex;
    _Atomic int shutdown_rc;
    _Atomic(cf_future *) sub;
    _Atomic int submit_rc;
    cf_test_event ev;
} cb_ctx;

/* Runs on the pool's manager thread: submits to the same pool, then asks
 * for a waiting shutdown, which must refuse to wait for itself. */
static int cb_submit_then_shutdown(cf_future *f, void *arg)
{
    (void)f;
    cb_ctx *c = arg;
    cf_future *g = NULL;
    atomic_store(&c->submit_rc, cf_submit(c->ex, t_square, CF_ARGS(cf_i64(21)), &g));
    atomic_store(&c->sub, g);
    atomic_store(&c->shutdown_rc, cf_shutdown(c->ex, true, false));
    cf_test_event_set(&c->ev);
    return 0;
}

static void test_callback_on_manager_thread(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cb_ctx c = {.ex = ex, .shutdown_rc = 1, .sub = NULL, .submit_rc = 1};
    cf_test_event_init(&c.ev);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, p_sleep_ms, CF_ARGS(cf_i64(200)), &f));
    assert_ok(cf_future_add_done_callback(f, cb_submit_then_shutdown, &c));
    assert_true(cf_test_event_wait(&c.ev, T_OK));
    assert_int_equal(atomic_load(&c.submit_rc), CF_OK);
    /* The callback may have run here, if the call finished first. */
    int sr = atomic_load(&c.shutdown_rc);
    assert_true(sr == CF_EDEADLK || sr == CF_OK);
    cf_future *g = atomic_load(&c.sub);
    assert_non_null(g);
    int64_t r = 0;
    assert_ok(cf_future_result_i64(g, T_OK * cf_test_scale(), &r));
    assert_int_equal(r, 441);
    destroy_quickly(ex, 5);
    assert_ok(cf_future_release(f));
    assert_ok(cf_future_release(g));
    assert_no_children();
}

/* A broken pool under a stream: one crash fails the rest, every future
 * completes exactly once. */
static void test_broken_stream_completes_each_once(void **state)
{
    (void)state;
    enum { N = 600 };
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *fs[N];
    static _Atomic int calls[N];
    int submitted = 0;
    for (int i = 0; i < N; i++) {
        /* 97 * 3 = 291 is the one crashing input below N. */
        int64_t x = i == 291 ? 291 : (i % 97 == 0 ? i + 1 : i);
        int rc = cf_submit(ex, p_stream, CF_ARGS(cf_i64(x)), &fs[i]);
        if (rc != CF_OK) {
            assert_cf(CF_EBROKEN, rc);
            break;
        }
        atomic_store(&calls[i], 0);
        assert_ok(cf_future_add_done_callback(fs[i], count_done, (void *)&calls[i]));
        submitted++;
    }
    assert_true(submitted > 291);
    assert_ok(cf_wait(fs, (size_t)submitted, 30.0 * cf_test_scale(), CF_ALL_COMPLETED, NULL,
                      NULL, NULL, NULL));
    int broken = 0;
    for (int i = 0; i < submitted; i++) {
        const cf_value *v = NULL;
        int rc = cf_future_result(fs[i], 0, &v);
        if (rc == CF_OK) {
            assert_true(i != 291);
            assert_int_equal(v->as.i64 % 3, 0);
        } else {
            expect_broken(fs[i], 0, 0, NULL);
            broken++;
        }
    }
    assert_true(broken >= 1);
    cf_future *g = NULL;
    assert_cf(CF_EBROKEN, cf_submit(ex, t_square, CF_ARGS(cf_i64(1)), &g));
    destroy_quickly(ex, 5);
    for (int i = 0; i < submitted; i++) {
        if (atomic_load(&calls[i]) != 1)
            fail_msg("future %d completed %d times", i, atomic_load(&calls[i]));
        assert_ok(cf_future_release(fs[i]));
    }
    assert_no_children();
}

/* A call's timeout runs from when a worker starts it, not from submit. */
static void test_timeout_clock_starts_at_start(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    start_sig sig;
    start_sig_open(&sig);
    cf_future *a = NULL, *b = NULL;
    assert_ok(cf_submit(ex, p_sleep_ms, CF_ARGS(cf_i64(700), cf_str(sig.path)), &a));
    assert_true(start_sig_wait(&sig, 1, T_OK));
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 0.5;
    assert_ok(cf_submit_with(ex, &so, p_sleep_ms, CF_ARGS(cf_i64(100)), &b));
    int64_t pa = 0, pb = 0;
    assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &pa));
    int rc = cf_future_result_i64(b, T_OK * cf_test_scale(), &pb);
    if (rc != CF_OK)
        fail_msg("a 100 ms call with a 0.5 s timeout queued behind a 700 ms call: %s (%s)",
                 cf_err_name(rc), cf_last_error_message());
    assert_int_equal(pa, pb); /* same worker: nobody was killed */
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
    destroy_quickly(ex, 5);
    start_sig_close(&sig);
    assert_no_children();
}

static void test_thread_timeout_clock_starts_at_start(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker bl;
    blocker_init(&bl);
    cf_future *a = NULL, *b = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&bl)), &a));
    assert_true(blocker_wait_started(&bl, 1, T_OK));
    coop c = {.saw_stop = 0};
    cf_test_event_init(&c.started);
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 0.3;
    assert_ok(cf_submit_with(ex, &so, t_coop, CF_ARGS(cf_ptr(&c)), &b));
    sleep_ms(500); /* b waits in the queue longer than its timeout */
    assert_false(cf_test_event_is_set(&c.started));
    /* Taken before b can start, so a late wake-up of this thread after
     * it started cannot shorten what is measured. */
    double t0 = cf_test_now();
    blocker_release(&bl);
    /* Started only now: not stopped at once, but 0.3 s later. */
    assert_true(cf_test_event_wait(&c.started, T_OK));
    expect_coop_cancelled(b);
    assert_true(cf_test_now() - t0 >= 0.29);
    assert_ok(cf_future_result(a, T_OK * cf_test_scale(), NULL));
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
    destroy_quickly(ex, 5);
    blocker_destroy(&bl);
}

/* The file a CF_START_EXEC worker runs.  Linux: /proc/self/exe, whatever
 * argv[0] said.  Portable: argv[0] made absolute - with a slash, through
 * realpath(); a bare name, looked up on PATH as execvp() would - and NULL
 * (a worker cannot start) when it names no executable file. */
static void test_worker_image_from_argv0(void **state)
{
    (void)state;
    char *saved_path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    char want[4096];
    assert_non_null(realpath("/bin/sh", want));
    setenv("PATH", "/nonexistent-dir::/bin", 1);
    cf__os_note_exe("sh");
    const char *bare = cf__os_exe();
    assert_non_null(bare);
    cf__os_note_exe("../../../../../../../../bin/sh");
    const char *dotted = cf__os_exe();
    assert_non_null(dotted);
#ifdef CF_TEST_PORTABLE
    assert_string_equal(dotted, want);
    cf__os_note_exe("sh");
    assert_string_equal(cf__os_exe(), want);
    cf__os_note_exe("no-such-program-cfutures");
    assert_null(cf__os_exe());
    char plain[] = "/tmp/cf-not-exec-XXXXXX"; /* a file, not executable */
    int fd = mkstemp(plain);
    assert_true(fd >= 0);
    close(fd);
    cf__os_note_exe(plain);
    unlink(plain);
    assert_null(cf__os_exe());
#else
    assert_string_equal(bare, "/proc/self/exe");
#endif
    if (saved_path)
        setenv("PATH", saved_path, 1);
    else
        unsetenv("PATH");
    free(saved_path);
    cf__os_note_exe(cf__process_argv[0]); /* as cf_process_init() left it */
    assert_non_null(cf__os_exe());
}

/* True once `pid` has exited: gone, or a zombie not yet reaped (orphans
 * are reaped by init, which may take its time, or never in a container
 * whose first process does not reap). */
static bool pid_gone(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return true;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* the name may hold anything */
    return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

/* Workers never outlive their parent: a busy one (killed by the parent-
 * death signal) and an idle one (EOF on its socket) both go when the
 * process that made the pool is killed. */
static void test_workers_die_with_parent(void **state)
{
    (void)state;
    start_sig sig;
    start_sig_open(&sig);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* No cmocka here: failures show as missing pids in the parent. */
        cf_process_pool_options o;
        cf_process_pool_options_init(&o);
        o.max_workers = 2;
        cf_executor *ex = NULL;
        if (cf_process_pool_new(&ex, &o) != CF_OK)
            _exit(10);
        cf_submit_options so;
        cf_submit_options_init(&so);
        so.timeout = 60;
        cf_future *h = NULL, *g = NULL;
        if (cf_submit_with(ex, &so, p_report_and_hang, CF_ARGS(cf_str(sig.path)), &h) != CF_OK)
            _exit(11);
        if (cf_submit(ex, p_getpid, CF_NOARGS, &g) != CF_OK)
            _exit(12);
        int64_t pid = 0;
        if (cf_future_result_i64(g, 30, &pid) != CF_OK)
            _exit(13);
        ssize_t w = write(sig.fd, &pid, sizeof pid);
        (void)w;
        for (;;)
            pause();
    }
    int64_t pids[2] = {0, 0};
    size_t got = 0;
    double end = cf_test_now() + T_OK * cf_test_scale();
    while (got < sizeof pids && cf_test_now() < end) {
        struct pollfd pfd = {sig.fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) == 1) {
            ssize_t k = read(sig.fd, (char *)pids + got, sizeof pids - got);
            if (k > 0)
                got += (size_t)k;
        }
    }
    kill(child, SIGKILL);
    int st = 0;
    assert_int_equal(waitpid(child, &st, 0), child);
    if (got != sizeof pids)
        fail_msg("the child reported %zu of %zu bytes of worker pids (status %d)", got,
                 sizeof pids, st);
    assert_true(pids[0] > 1 && pids[1] > 1 && pids[0] != pids[1]);
#ifdef CF_TEST_PORTABLE
    /* No parent-death signal in the portable build: the busy worker lives
     * until its task returns (README).  The idle one must still go. */
    end = cf_test_now() + 5.0 * cf_test_scale();
    int gone = -1;
    while (gone < 0 && cf_test_now() < end) {
        for (int i = 0; i < 2 && gone < 0; i++)
            if (pid_gone((pid_t)pids[i]))
                gone = i;
        sleep_ms(5);
    }
    if (gone < 0)
        fail_msg("the idle worker outlived its parent");
    kill((pid_t)pids[1 - gone], SIGKILL);
    pids[gone] = pids[1 - gone];
#endif
    for (int i = 0; i < 2; i++) {
        end = cf_test_now() + 5.0 * cf_test_scale();
        while (!pid_gone((pid_t)pids[i]) && cf_test_now() < end)
            sleep_ms(5);
        if (!pid_gone((pid_t)pids[i]))
            fail_msg("worker %lld outlived its parent", (long long)pids[i]);
    }
    start_sig_close(&sig);
    assert_no_children();
}


/* Big arguments of calls that never run (cancelled, interrupted while
 * pending, cancelled by shutdown or by kill_workers) leave no descriptor
 * behind. */
static void big_pending_dropped(bool kill_them)
{
    size_t n = (size_t)6 << 20;
    int fds = count_fds();
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 60; /* keeps the worker to this call; the rest stay pending */
    start_sig sig;
    start_sig_open(&sig);
    cf_future *h = NULL, *b[3];
    assert_ok(cf_submit_with(ex, &so, p_hang, CF_ARGS(cf_str(sig.path)), &h));
    assert_true(start_sig_wait(&sig, 1, T_OK));
    unsigned char *buf = pattern(n, 5);
    for (int i = 0; i < 3; i++)
        assert_ok(cf_submit(ex, p_big_sum, CF_ARGS(cf_bytes(buf, n)), &b[i]));
    free(buf);
    for (int i = 0; i < 3; i++)
        assert_int_equal(cf_future_state(b[i]), CF_PENDING);
    if (!kill_them) {
        assert_true(cf_future_cancel(b[0]));
        assert_ok(cf_future_interrupt(b[1]));
        assert_ok(cf_shutdown(ex, false, true));
        for (int i = 0; i < 3; i++)
            assert_true(cf_future_cancelled(b[i]));
        assert_ok(cf_future_interrupt(h));
        expect_interrupted(h, 5);
    } else {
        assert_ok(cf_kill_workers(ex));
        expect_failure(h, 5, CF_EBROKEN, "BrokenProcessPool");
        for (int i = 0; i < 3; i++)
            assert_true(cf_future_cancelled(b[i]));
    }
    destroy_quickly(ex, 5);
    assert_ok(cf_future_release(h));
    for (int i = 0; i < 3; i++)
        assert_ok(cf_future_release(b[i]));
    start_sig_close(&sig);
    assert_no_children();
    int after = count_fds();
    if (after != fds)
        fail_msg("%d descriptors open before, %d after", fds, after);
}

static void test_big_pending_cancelled_no_leak(void **state)
{
    (void)state;
    big_pending_dropped(false);
}

static void test_big_pending_killed_no_leak(void **state)
{
    (void)state;
    big_pending_dropped(true);
}

/* ---- cancelled calls and shutdown ------------------------------------------------ */

/* A waited shutdown (`destroy`: cf_executor_destroy) run in a thread. */
typedef struct shut_arg {
    cf_executor *ex;
    bool destroy;
    int rc;
} shut_arg;

static void shut_main(void *arg)
{
    shut_arg *a = arg;
    a->rc = a->destroy ? cf_executor_destroy(a->ex) : cf_shutdown(a->ex, true, false);
}

/* The worker is kept busy by a call waiting at `gate`; the caller then
 * makes calls that stay pending behind it. */
static cf_future *busy_worker(cf_executor *ex, start_sig *started, start_sig *gate)
{
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 60; /* keeps the worker to this call */
    cf_future *a = NULL;
    assert_ok(cf_submit_with(ex, &so, p_gated, CF_ARGS(cf_str(started->path), cf_str(gate->path)),
                             &a));
    assert_true(start_sig_wait(started, 1, T_OK));
    return a;
}

/* Returns once `ex` refuses new calls (a shutdown has begun in another
 * thread).  Probe calls that get in are cancelled (they stay pending
 * behind busy_worker()).  False if that does not happen in time. */
static bool shutdown_begun(cf_executor *ex)
{
    double end = cf_test_now() + T_OK * cf_test_scale();
    while (cf_test_now() < end) {
        cf_future *f = NULL;
        int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(1)), &f);
        if (rc != CF_OK)
            return rc == CF_ESHUTDOWN || rc == CF_EINVAL; /* EINVAL: destroyed */
        cf_future_cancel(f);
        cf_future_release(f);
        sleep_ms(1);
    }
    return false;
}

/* Runs a waited shutdown (`destroy`: cf_executor_destroy) in a thread;
 * once it has begun, opens `gate_fd` (if >= 0), which lets the busy call
 * finish.  Fails the test if the shutdown has not returned within 10 s
 * (scaled). */
static void shutdown_returns(cf_executor *ex, bool destroy, int gate_fd)
{
    shut_arg sa = {ex, destroy, -1};
    bg_thread t;
    bg_start(&t, shut_main, &sa);
    if (gate_fd >= 0) {
        assert_true(shutdown_begun(ex));
        assert_int_equal(write(gate_fd, "g", 1), 1);
    }
    if (!cf_test_event_wait(&t.done, 10 * cf_test_scale()))
        fail_msg("%s did not return within 10 s (x%d)",
                 destroy ? "cf_executor_destroy" : "cf_shutdown(wait)", cf_test_scale());
    bg_join(&t, 1);
    assert_ok(sa.rc);
}

/* A call cancelled while pending is dropped by the manager; a waited
 * shutdown (or destroy) under way must still return.  The busy call ends
 * only once the shutdown has begun, so the manager learns "shutting
 * down, one call pending" before it drops the call, and nothing wakes it
 * afterwards. */
static void cancel_pending_then_shutdown(cf_start_method sm, bool destroy)
{
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, sm);
    if (sm == CF_START_FORK)
        settle_workers(ex, 1);
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    cf_future *a = busy_worker(ex, &started, &gate);
    cf_future *b = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &b));
    assert_true(cf_future_cancel(b));
    shutdown_returns(ex, destroy, gate.fd);
    int64_t pid = 0;
    assert_ok(cf_future_result_i64(a, 0, &pid));
    if (!destroy)
        assert_ok(cf_executor_destroy(ex));
    assert_true(cf_future_cancelled(b));
    assert_cf(CF_ECANCELLED, cf_future_result(b, 0, NULL));
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

static void test_cancel_pending_then_shutdown(void **state)
{
    (void)state;
    cancel_pending_then_shutdown(CF_START_EXEC, false);
}

static void test_cancel_pending_then_destroy(void **state)
{
    (void)state;
    cancel_pending_then_shutdown(CF_START_EXEC, true);
}

static void test_cancel_pending_then_shutdown_fork(void **state)
{
    (void)state;
    cancel_pending_then_shutdown(CF_START_FORK, false);
}

static void test_cancel_pending_then_destroy_fork(void **state)
{
    (void)state;
    cancel_pending_then_shutdown(CF_START_FORK, true);
}

/* A generator that yields `ok` values, then fails. */
typedef struct failing_gen {
    int ok;
    int given;
} failing_gen;

static int failing_next(void *ctx, cf_value *out)
{
    failing_gen *g = ctx;
    if (g->given == g->ok)
        return -1;
    *out = cf_i64(g->given++);
    return 1;
}

/* cf_map() whose later input fails cancels the calls it had submitted;
 * destroying the pool afterwards must return. */
static void test_map_input_fails_then_destroy(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    cf_future *a = busy_worker(ex, &started, &gate);
    failing_gen g = {2, 0};
    cf_map_input in = cf_input_generator(failing_next, &g);
    cf_map_iter *it = NULL;
    assert_cf(CF_EINVAL, cf_map(ex, t_square, &in, 1, NULL, &it));
    assert_null(it);
    assert_int_equal(g.given, 2);
    shutdown_returns(ex, true, gate.fd);
    assert_ok(cf_future_release(a));
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

/* Opens the gate once the exit handler's shutdown has begun. */
typedef struct opener_arg {
    cf_executor *ex;
    int gate_fd;
} opener_arg;

static void *open_gate_at_shutdown(void *arg)
{
    opener_arg *oa = arg;
    if (shutdown_begun(oa->ex)) {
        ssize_t w = write(oa->gate_fd, "g", 1);
        (void)w;
    }
    return NULL;
}

/* At program exit the exit handler waits for every pool; a cancelled
 * call must not keep it waiting.  Runs in a child, which must exit. */
static void test_cancel_pending_then_exit(void **state)
{
    (void)state;
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* No cmocka here: the parent judges by the exit status. */
        cf_process_pool_options o;
        cf_process_pool_options_init(&o);
        o.max_workers = 1;
        cf_executor *ex = NULL;
        if (cf_process_pool_new(&ex, &o) != CF_OK)
            _exit(10);
        cf_submit_options so;
        cf_submit_options_init(&so);
        so.timeout = 60;
        cf_future *a = NULL, *b = NULL;
        if (cf_submit_with(ex, &so, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate.path)),
                           &a) != CF_OK ||
            !start_sig_wait(&started, 1, T_OK))
            _exit(11);
        if (cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &b) != CF_OK || !cf_future_cancel(b))
            _exit(12);
        opener_arg oa = {ex, gate.fd};
        pthread_t th;
        if (pthread_create(&th, NULL, open_gate_at_shutdown, &oa) != 0)
            _exit(13);
        pthread_detach(th);
        exit(0); /* the exit handler joins the pool */
    }
    double end = cf_test_now() + T_OK * cf_test_scale();
    int st = 0;
    pid_t r = 0;
    while ((r = waitpid(child, &st, WNOHANG)) == 0 && cf_test_now() < end)
        sleep_ms(5);
    if (r == 0) {
        kill(child, SIGKILL);
        waitpid(child, &st, 0);
        fail_msg("the program did not exit within %.1f s (x%d)", T_OK, cf_test_scale());
    }
    assert_int_equal(r, child);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the child ended with status 0x%x", st);
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

/* The race behind the above without a gate: submit, cancel at once (the
 * manager may or may not have taken the call), destroy. */
static void test_cancel_then_destroy_race(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
        worker_pid(ex); /* started: nothing else will wake the manager */
        cf_future *b = NULL;
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(round)), &b));
        bool cancelled = cf_future_cancel(b);
        shutdown_returns(ex, true, -1);
        if (cancelled)
            assert_cf(CF_ECANCELLED, cf_future_result(b, 0, NULL));
        else
            assert_ok(cf_future_result(b, 0, NULL));
        assert_ok(cf_future_release(b));
    }
    assert_no_children();
}

/* ---- a call is running only once a worker has begun it ---------------------------- */

/* Bytes waiting on a start FIFO (each a call that began), without
 * blocking. */
static int started_count(start_sig *s)
{
    int n = 0;
    char buf[64];
    ssize_t k;
    while ((k = read(s->fd, buf, sizeof buf)) > 0)
        n += (int)k;
    return n;
}

/* Calls queued behind busy workers stay pending, and cancellable, even
 * once sent to a worker: with 2 workers and 10 calls, 2 run. */
static void queued_calls_cancellable(cf_start_method sm)
{
    enum { N = 10 };
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, sm);
    if (sm == CF_START_FORK)
        settle_workers(ex, 2);
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate.path)),
                            &fs[i]));
    assert_true(start_sig_wait(&started, 2, T_OK));
    /* Some of the rest are on the workers' queues by now. */
    assert_true(wait_sent(fs, 3));
    int running = 0, cancelled = 0;
    for (int i = 0; i < N; i++)
        running += cf_future_running(fs[i]);
    assert_int_equal(running, 2);
    for (int i = 0; i < N; i++) {
        if (cf_future_running(fs[i]))
            continue;
        assert_true(cf_future_cancel(fs[i]));
        assert_true(cf_future_cancelled(fs[i]));
        assert_cf(CF_ECANCELLED, cf_future_result(fs[i], 0, NULL));
        cancelled++;
    }
    assert_int_equal(cancelled, N - 2);
    assert_int_equal(write(gate.fd, "gg", 2), 2);
    for (int i = 0; i < N; i++) {
        if (cf_future_cancelled(fs[i]))
            continue;
        int64_t pid = 0;
        assert_ok(cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &pid));
        assert_false(cf_future_cancel(fs[i]));
    }
    destroy_quickly(ex, 5);
    /* Every worker is gone: a cancelled call that ran would have said so. */
    assert_int_equal(started_count(&started), 0);
    for (int i = 0; i < N; i++)
        assert_ok(cf_future_release(fs[i]));
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

static void test_queued_calls_cancellable(void **state)
{
    (void)state;
    queued_calls_cancellable(CF_START_EXEC);
}

static void test_queued_calls_cancellable_fork(void **state)
{
    (void)state;
    queued_calls_cancellable(CF_START_FORK);
}

/* shutdown(cancel_futures) cancels every call not begun, at once,
 * including those already sent to the worker. */
static void test_shutdown_cancels_all_not_begun(void **state)
{
    (void)state;
    enum { N = 45 };
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    cf_future *a = NULL, *fs[N];
    assert_ok(cf_submit(ex, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate.path)), &a));
    assert_true(start_sig_wait(&started, 1, T_OK));
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &fs[i]));
    assert_true(wait_sent(fs, 1));
    assert_ok(cf_shutdown(ex, false, true));
    for (int i = 0; i < N; i++)
        if (!cf_future_cancelled(fs[i]))
            fail_msg("call %d of %d not cancelled by shutdown(cancel_futures): %s", i, N,
                     cf_state_name(cf_future_state(fs[i])));
    assert_true(cf_future_running(a));
    assert_int_equal(write(gate.fd, "g", 1), 1);
    int64_t pid = 0;
    assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &pid));
    destroy_quickly(ex, 5);
    assert_ok(cf_future_release(a));
    for (int i = 0; i < N; i++)
        assert_ok(cf_future_release(fs[i]));
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

/* After cf_map_close() (or the map's timeout) no call that had not begun
 * runs; a chunk counts call by call. */
static void map_close_runs_nothing_more(int chunksize, bool by_timeout)
{
    enum { N = 20 };
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    cf_value starts[N], gates[N];
    for (int i = 0; i < N; i++) {
        starts[i] = cf_str(started.path);
        gates[i] = cf_str(gate.path);
    }
    cf_map_input in[2] = {cf_input_array(starts, N), cf_input_array(gates, N)};
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = chunksize;
    if (by_timeout)
        mo.timeout = 1.0 * cf_test_scale();
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, p_gated, in, 2, &mo, &it));
    assert_true(start_sig_wait(&started, 1, T_OK));
    if (by_timeout) /* the first call waits at the gate past the timeout */
        assert_cf(CF_ETIMEDOUT, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    char g[N];
    memset(g, 'g', sizeof g);
    assert_int_equal(write(gate.fd, g, sizeof g), (ssize_t)sizeof g);
    destroy_quickly(ex, 5);
    int more = started_count(&started);
    if (more)
        fail_msg("%d calls ran after cf_map_close() (chunksize %d)", more, chunksize);
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

static void test_map_close_runs_nothing_more(void **state)
{
    (void)state;
    map_close_runs_nothing_more(1, false);
}

static void test_map_close_runs_nothing_more_chunked(void **state)
{
    (void)state;
    map_close_runs_nothing_more(5, false);
}

static void test_map_timeout_runs_nothing_more(void **state)
{
    (void)state;
    map_close_runs_nothing_more(5, true);
}

/* wait(FIRST_EXCEPTION), then cancel the rest: everything no worker has
 * begun is cancelled (4 workers, 13 calls, the first fails at once: 8). */
static void test_first_exception_cancel_rest(void **state)
{
    (void)state;
    enum { N = 13, W = 4 };
    cf_executor *ex = ppool(W, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    settle_workers(ex, W);
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    cf_future *fs[N];
    assert_ok(cf_submit(ex, p_raise, CF_ARGS(cf_i64(1)), &fs[0]));
    for (int i = 1; i < N; i++)
        assert_ok(cf_submit(ex, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate.path)),
                            &fs[i]));
    assert_ok(cf_wait(fs, N, T_OK * cf_test_scale(), CF_FIRST_EXCEPTION, NULL, NULL, NULL,
                      NULL));
    assert_cf(CF_ETASK, cf_future_result(fs[0], 0, NULL));
    /* Every worker has begun a gated call: at most one each. */
    assert_true(start_sig_wait(&started, W, T_OK));
    int cancelled = 0, begun = 0;
    for (int i = 1; i < N; i++) {
        if (cf_future_cancel(fs[i]))
            cancelled++;
        else
            begun += cf_future_running(fs[i]);
    }
    if (begun != W || cancelled != N - 1 - W)
        fail_msg("%d cancelled, %d running of %d (%d workers)", cancelled, begun, N - 1, W);
    char g[N];
    memset(g, 'g', sizeof g);
    assert_int_equal(write(gate.fd, g, sizeof g), (ssize_t)sizeof g);
    for (int i = 1; i < N; i++) {
        if (cf_future_cancelled(fs[i]))
            continue;
        int64_t pid = 0;
        assert_ok(cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &pid));
    }
    destroy_quickly(ex, 5);
    /* No cancelled call began. */
    assert_int_equal(started_count(&started), 0);
    for (int i = 0; i < N; i++)
        assert_ok(cf_future_release(fs[i]));
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

/* Cancel races the worker's claim: whichever wins, the future and the
 * worker agree (a call is never both cancelled and run; the pool would
 * see a worker run a cancelled call as a bad frame and break). */
static void test_cancel_races_claim(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    settle_workers(ex, 2);
    int won = 0, lost = 0;
    for (int round = 0; round < 400; round++) {
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(round)), &f));
        if (round % 3)
            sleep_ms(0); /* a yield: vary who gets there first */
        if (cf_future_cancel(f)) {
            won++;
            assert_true(cf_future_cancelled(f));
            assert_cf(CF_ECANCELLED, cf_future_result(f, 0, NULL));
        } else {
            lost++;
            int64_t v = 0;
            assert_ok(cf_future_result_i64(f, T_OK * cf_test_scale(), &v));
            assert_int_equal(v, (int64_t)round * round);
            assert_false(cf_future_cancelled(f));
        }
        assert_ok(cf_future_release(f));
    }
    /* Still whole: no worker was taken for lying. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(9))), 81);
    destroy_quickly(ex, 5);
    assert_true(won + lost == 400);
    assert_no_children();
}

/* A child of fork() inherits futures whose claim words it does not have
 * (they are not inherited): it may look at them and try to cancel them
 * without harm; the call stays the parent's. */
static void test_claimed_future_in_fork_child(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    start_sig started, gate;
    start_sig_open(&started);
    start_sig_open(&gate);
    cf_future *a = NULL, *b = NULL;
    assert_ok(cf_submit(ex, p_gated, CF_ARGS(cf_str(started.path), cf_str(gate.path)), &a));
    assert_true(start_sig_wait(&started, 1, T_OK));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &b));
    assert_true(wait_sent(&b, 1));
    assert_true(cf_future_running(a)); /* seen here: RUNNING in the child too */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* No cmocka here: the exit status says what went wrong. */
        if (cf_future_state(b) != CF_PENDING || cf_future_state(a) != CF_RUNNING)
            _exit(10);
        if (cf_future_cancel(b) || cf_future_cancel(a))
            _exit(11);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(child, &st, 0), child);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the child ended with status 0x%x", st);
    /* Here, both calls are as they were. */
    assert_true(cf_future_cancel(b));
    assert_int_equal(write(gate.fd, "g", 1), 1);
    int64_t pid = 0;
    assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &pid));
    destroy_quickly(ex, 5);
    assert_ok(cf_future_release(a));
    assert_ok(cf_future_release(b));
    start_sig_close(&started);
    start_sig_close(&gate);
    assert_no_children();
}

/* ---- no leaks ---------------------------------------------------------------------- */

static void many_pools(cf_start_method sm, int n)
{
    int fds = count_fds();
    for (int i = 0; i < n; i++) {
        cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, sm);
        if (sm == CF_START_FORK)
            settle_workers(ex, 1);
        assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(i))), (int64_t)i * i);
        assert_ok(cf_executor_destroy(ex));
    }
    int after = count_fds();
    if (after != fds)
        fail_msg("%d descriptors open before %d pools, %d after", fds, n, after);
    assert_no_children();
}

static void test_no_leaks_200_pools(void **state)
{
    (void)state;
    many_pools(CF_START_EXEC, cf_test_scale() > 1 ? 40 : 200);
}

static void test_no_leaks_fork_pools(void **state)
{
    (void)state;
    many_pools(CF_START_FORK, cf_test_scale() > 1 ? 20 : 100);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_submit_many_process),
    cmocka_unit_test(test_submit_result),
    cmocka_unit_test(test_raise_travels),
    cmocka_unit_test(test_ptr_and_unregistered_refused),
    cmocka_unit_test(test_task_names_follow_registrations),
    cmocka_unit_test(test_submit_of_clashing_name_says_so),
    cmocka_unit_test(test_pool_new_validation),
    cmocka_unit_test(test_submit_after_shutdown),
    cmocka_unit_test(test_roundtrip_values),
    cmocka_unit_test(test_roundtrip_values_fork),
    cmocka_unit_test(test_recycled_buffers),
    cmocka_unit_test(test_recycled_buffers_fork),
    cmocka_unit_test(test_big_results_held_few_fds),
    cmocka_unit_test(test_worker_cannot_shrink_parent_memory),
    cmocka_unit_test(test_small_result_does_not_pin_lent_buffer),
    cmocka_unit_test(test_map_chunksize_1_and_7),
    cmocka_unit_test(test_map_lazy_chunks),
    cmocka_unit_test(test_map_zip_one_generator),
    cmocka_unit_test(test_wait_and_as_completed),
    cmocka_unit_test(test_done_callbacks),
    cmocka_unit_test(test_worker_count),
    cmocka_unit_test(test_initializer_with_args),
    cmocka_unit_test(test_crash_decode_segv_breaks),
    cmocka_unit_test(test_crash_decode_segv_replaces),
    cmocka_unit_test(test_crash_decode_segv_big_breaks),
    cmocka_unit_test(test_crash_decode_segv_big_replaces),
    cmocka_unit_test(test_crash_decode_exit_breaks),
    cmocka_unit_test(test_crash_decode_exit_replaces),
    cmocka_unit_test(test_crash_run_segv_breaks),
    cmocka_unit_test(test_crash_run_segv_replaces),
    cmocka_unit_test(test_crash_run_exit_breaks),
    cmocka_unit_test(test_crash_run_exit_replaces),
    cmocka_unit_test(test_crash_run_abort_breaks),
    cmocka_unit_test(test_crash_run_abort_replaces),
    cmocka_unit_test(test_crash_encode_segv_breaks),
    cmocka_unit_test(test_crash_encode_segv_replaces),
    cmocka_unit_test(test_crash_encode_exit_breaks),
    cmocka_unit_test(test_crash_encode_exit_replaces),
    cmocka_unit_test(test_crash_encode_segv_lent_breaks),
    cmocka_unit_test(test_crash_encode_segv_lent_replaces),
    cmocka_unit_test(test_crash_bad_lent_breaks),
    cmocka_unit_test(test_crash_bad_lent_replaces),
    cmocka_unit_test(test_crash_file_frame_breaks),
    cmocka_unit_test(test_crash_file_frame_replaces),
    cmocka_unit_test(test_crash_bad_frame_breaks),
    cmocka_unit_test(test_crash_bad_frame_replaces),
    cmocka_unit_test(test_crash_short_frame_breaks),
    cmocka_unit_test(test_crash_short_frame_replaces),
    cmocka_unit_test(test_crash_huge_frame_breaks),
    cmocka_unit_test(test_crash_huge_frame_replaces),
    cmocka_unit_test(test_crash_stray_result_breaks),
    cmocka_unit_test(test_crash_stray_result_replaces),
    cmocka_unit_test(test_crash_second_hello_breaks),
    cmocka_unit_test(test_crash_second_hello_replaces),
    cmocka_unit_test(test_crash_unknown_frame_breaks),
    cmocka_unit_test(test_crash_unknown_frame_replaces),
    cmocka_unit_test(test_crash_claim_nonsense_breaks),
    cmocka_unit_test(test_crash_claim_nonsense_replaces),
    cmocka_unit_test(test_crash_ring_overrun_breaks),
    cmocka_unit_test(test_crash_ring_overrun_replaces),
    cmocka_unit_test(test_crash_ring_partial_breaks),
    cmocka_unit_test(test_crash_ring_partial_replaces),
    cmocka_unit_test(test_crash_sigkill_breaks),
    cmocka_unit_test(test_crash_sigkill_replaces),
    cmocka_unit_test(test_crash_sigterm_breaks),
    cmocka_unit_test(test_crash_sigterm_replaces),
    cmocka_unit_test(test_fork_crash_run_segv_breaks),
    cmocka_unit_test(test_fork_crash_run_segv_replaces),
    cmocka_unit_test(test_fork_crash_decode_exit_breaks),
    cmocka_unit_test(test_fork_crash_decode_exit_replaces),
    cmocka_unit_test(test_fork_crash_encode_segv_breaks),
    cmocka_unit_test(test_fork_crash_encode_segv_replaces),
    cmocka_unit_test(test_fork_crash_sigkill_breaks),
    cmocka_unit_test(test_fork_crash_sigkill_replaces),
    cmocka_unit_test(test_crash_during_shutdown_breaks),
    cmocka_unit_test(test_crash_during_shutdown_replaces),
    cmocka_unit_test(test_crash_big_in_flight_breaks),
    cmocka_unit_test(test_crash_big_in_flight_replaces),
    cmocka_unit_test(test_initializer_raises_breaks),
    cmocka_unit_test(test_initializer_raises_replaces),
    cmocka_unit_test(test_initializer_crashes_breaks),
    cmocka_unit_test(test_initializer_crashes_replaces),
    cmocka_unit_test(test_recycle_max_tasks_per_child),
    cmocka_unit_test(test_recycling_keeps_max_workers),
    cmocka_unit_test(test_recycling_chunk_bigger_than_what_is_left),
    cmocka_unit_test_teardown(test_exit_seen_after_last_answer, clear_reap_hook),
    cmocka_unit_test(test_recycle_refused_with_fork),
    cmocka_unit_test(test_shutdown_races_recycle),
    cmocka_unit_test(test_resilient_stream_with_crashes),
    cmocka_unit_test(test_timeout_per_call_breaks),
    cmocka_unit_test(test_timeout_per_call_replaces),
    cmocka_unit_test(test_timeout_pool_wide),
    cmocka_unit_test(test_map_element_timeout_is_per_element),
    cmocka_unit_test(test_map_chunk_timeout_is_per_call),
    cmocka_unit_test(test_timeout_excludes_worker_start),
    cmocka_unit_test(test_submit_with_bad_options),
    cmocka_unit_test(test_interrupt_running_breaks),
    cmocka_unit_test(test_interrupt_running_replaces),
    cmocka_unit_test(test_interrupt_every_worker_at_once),
    cmocka_unit_test(test_skip_answered_before_cancel_shows),
    cmocka_unit_test(test_interrupt_pending),
    cmocka_unit_test(test_interrupt_queued_on_worker),
    cmocka_unit_test(test_interrupt_then_shutdown_cancel_from_callback),
    cmocka_unit_test(test_interrupt_races_shutdown_cancel),
    cmocka_unit_test(test_set_result_of_sent_calls),
    cmocka_unit_test(test_interrupt_after_answer_spares_next_call),
    cmocka_unit_test(test_interrupt_of_next_call_not_lost),
    cmocka_unit_test(test_interrupt_invalid),
    cmocka_unit_test(test_terminate_workers),
    cmocka_unit_test(test_kill_workers),
    cmocka_unit_test(test_kill_workers_fork),
    cmocka_unit_test(test_terminate_idle_pool),
    cmocka_unit_test(test_thread_cancel_requested_interrupt),
    cmocka_unit_test(test_thread_cancel_requested_timeout),
    cmocka_unit_test(test_thread_cancel_requested_terminate),
    cmocka_unit_test(test_thread_cancel_requested_kill),
    cmocka_unit_test(test_fork_basics),
    cmocka_unit_test(test_fork_workers_forked_before_the_constructor_returns),
    cmocka_unit_test(test_fork_pool_outlives_the_thread_that_made_it),
    cmocka_unit_test(test_fork_pools_made_by_several_threads_at_once),
    cmocka_unit_test(test_shutdown_cancel_futures),
    cmocka_unit_test(test_idle_worker_killed_breaks),
    cmocka_unit_test(test_idle_worker_killed_replaces),
    cmocka_unit_test(test_callback_on_manager_thread),
    cmocka_unit_test(test_broken_stream_completes_each_once),
    cmocka_unit_test(test_timeout_clock_starts_at_start),
    cmocka_unit_test(test_thread_timeout_clock_starts_at_start),
    cmocka_unit_test(test_workers_die_with_parent),
    cmocka_unit_test(test_worker_image_from_argv0),
    cmocka_unit_test(test_big_pending_cancelled_no_leak),
    cmocka_unit_test(test_big_pending_killed_no_leak),
    cmocka_unit_test(test_cancel_pending_then_shutdown),
    cmocka_unit_test(test_cancel_pending_then_destroy),
    cmocka_unit_test(test_cancel_pending_then_shutdown_fork),
    cmocka_unit_test(test_cancel_pending_then_destroy_fork),
    cmocka_unit_test(test_map_input_fails_then_destroy),
    cmocka_unit_test(test_cancel_pending_then_exit),
    cmocka_unit_test(test_cancel_then_destroy_race),
    cmocka_unit_test(test_queued_calls_cancellable),
    cmocka_unit_test(test_queued_calls_cancellable_fork),
    cmocka_unit_test(test_shutdown_cancels_all_not_begun),
    cmocka_unit_test(test_map_close_runs_nothing_more),
    cmocka_unit_test(test_map_close_runs_nothing_more_chunked),
    cmocka_unit_test(test_map_timeout_runs_nothing_more),
    cmocka_unit_test(test_first_exception_cancel_rest),
    cmocka_unit_test(test_cancel_races_claim),
    cmocka_unit_test(test_claimed_future_in_fork_child),
    cmocka_unit_test(test_no_leaks_200_pools),
    cmocka_unit_test(test_no_leaks_fork_pools),
};

CF_TEST_MAIN(tests)
