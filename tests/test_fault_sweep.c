/* SPDX-License-Identifier: MIT */
/*
 * test_fault_sweep.c - every allocation, thread start, process start,
 * socketpair, memfd and mmap the library makes in a representative
 * scenario (create a pool, submit, map, collect results, shut down,
 * destroy) is made to fail in turn, once and from there on, on the thread
 * pool and the process pool (both start methods).  Each run must end in a
 * clean error code: no crash, no hang (a time limit), no leak (the ASan
 * build checks at exit), no flood of log lines.
 *
 * Each injection point runs in a child process (this program started
 * again with CF_SWEEP_CHILD set), so a crash or a hang fails one point
 * with its number instead of the whole test.  `CF_SWEEP_CHILD=<engine>
 * CF_FAULT=<n>[+] ./test_fault_sweep` replays one point by hand.
 */
#include "cf_test_util.h"
#include "cf_fault.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

extern char **environ;

CF_TASK(t_square);
CF_TASK(t_echo);

/* The fork start is not swept under ASan: a worker forked while another
 * thread of the parent is inside GCC 12's ASan allocator can block for
 * ever (it takes no lock around fork(); glibc's malloc does). */
#if defined(__SANITIZE_ADDRESS__)
#define SWEEP_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SWEEP_SANITIZED 1
#endif
#endif
#ifndef SWEEP_SANITIZED
#define SWEEP_SANITIZED 0
#endif

enum { ENGINE_THREAD, ENGINE_EXEC, ENGINE_FORK };
static const char *const engine_names[] = {"thread", "exec", "fork"};

/* Seconds one run may take before it counts as a hang (scaled). */
#define RUN_LIMIT 5.0
/* A sweep stops after this many bad points: the first ones say enough,
 * and hangs must not outlast the test's time limit. */
#define BAD_MAX 3
/* Most log lines a run may write: one per failure it could not return to
 * anyone, not one per retry. */
#define LOG_LINES_MAX 20

/* ---- the child: one scenario run ---------------------------------------- */

static _Atomic int child_log_lines;
static char child_bad[512];

static void child_log(void *arg, const char *msg)
{
    (void)arg;
    if (atomic_fetch_add(&child_log_lines, 1) < 3)
        fprintf(stderr, "  log: %s\n", msg);
}

/* Records the first unclean outcome. */
static void check(const char *what, int rc, bool ok_allowed)
{
    bool clean = (rc == CF_OK && ok_allowed) || rc == CF_ENOMEM || rc == CF_ESYS ||
                 rc == CF_EBROKEN || rc == CF_ETASK || rc == CF_ECANCELLED;
    if (!clean && !child_bad[0])
        snprintf(child_bad, sizeof child_bad, "%s returned %s (%s)", what, cf_err_name(rc),
                 cf_last_error_message());
}

static void check_value(const char *what, const cf_value *v, int64_t want)
{
    if (!child_bad[0] && (!v || v->kind != CF_I64 || v->as.i64 != want))
        snprintf(child_bad, sizeof child_bad, "%s: wrong value (want %lld)", what,
                 (long long)want);
}

/* Big enough for the process pool's shared-memory path (arguments and the
 * lent result buffer); static, so the scenario itself allocates nothing. */
static unsigned char big[(size_t)1 << 20];

static void scenario(int engine)
{
    cf_executor *ex = NULL;
    int rc;
    if (engine == ENGINE_THREAD) {
        cf_thread_pool_options o;
        cf_thread_pool_options_init(&o);
        o.max_workers = 2;
        rc = cf_thread_pool_new(&ex, &o);
    } else {
        cf_process_pool_options o;
        cf_process_pool_options_init(&o);
        o.max_workers = 2;
        o.start_method = engine == ENGINE_FORK ? CF_START_FORK : CF_START_EXEC;
        rc = cf_process_pool_new(&ex, &o);
    }
    if (rc != CF_OK) {
        check("pool_new", rc, false);
        return;
    }
    cf_future *fs[4] = {NULL};
    for (int i = 0; i < 3; i++) {
        cf_value a = cf_i64(i + 1);
        check("submit", cf_submit(ex, t_square, &a, 1, &fs[i]), true);
    }
    cf_value b = cf_bytes(big, sizeof big);
    check("submit big", cf_submit(ex, t_echo, &b, 1, &fs[3]), true);

    /* One chunk of more calls than the parent decodes on its stack. */
    enum { MAPN = 18 };
    cf_value in[MAPN];
    for (int i = 0; i < MAPN; i++)
        in[i] = cf_i64(10 + i);
    cf_map_input mi = cf_input_array(in, MAPN);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = MAPN;
    cf_map_iter *it = NULL;
    rc = cf_map(ex, t_square, &mi, 1, &mo, &it);
    check("map", rc, true);
    for (int i = 0; rc == CF_OK && i <= MAPN; i++) {
        const cf_value *v = NULL;
        int r = cf_map_next(it, &v, NULL);
        if (r == CF_EDONE) {
            if (i != MAPN && !child_bad[0])
                snprintf(child_bad, sizeof child_bad, "map ended after %d of %d", i, MAPN);
            break;
        }
        check("map_next", r, true);
        if (r == CF_OK)
            check_value("map_next", v, (int64_t)(10 + i) * (10 + i));
    }
    cf_map_close(it);

    for (int i = 0; i < 4; i++) {
        if (!fs[i])
            continue;
        const cf_value *v = NULL;
        rc = cf_future_result(fs[i], RUN_LIMIT * cf_test_scale() / 2, &v);
        check("result", rc, true);
        if (rc == CF_OK && i < 3)
            check_value("result", v, (int64_t)(i + 1) * (i + 1));
        if (rc == CF_OK && i == 3 &&
            (v->kind != CF_BYTES || v->size != sizeof big || memcmp(v->as.bytes, big, sizeof big)))
            check("result big: wrong value", CF_EINVAL, false);
        cf_future_release(fs[i]);
    }
    check("shutdown", cf_shutdown(ex, true, false), true);
    check("destroy", cf_executor_destroy(ex), true);
}

static int child_main(const char *engine_name)
{
    int engine = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(engine_name, engine_names[i]) == 0)
            engine = i;
    if (engine < 0)
        return 2;
    /* A hung run must not outlive the sweep that started it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        return 2;
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7u);
    cf_set_log_hook(child_log, NULL);
    bool armed = cf_fault_arm_from_env();
    scenario(engine);
    cf_fault_disarm();
    cf_set_log_hook(NULL, NULL);
    int lines = atomic_load(&child_log_lines);
    if (lines > LOG_LINES_MAX && !child_bad[0])
        snprintf(child_bad, sizeof child_bad, "%d log lines", lines);
    printf("calls=%ld failed=%ld\n", armed ? cf_fault_calls() : 0L,
           armed ? cf_fault_failed() : 0L);
    fflush(stdout);
    if (child_bad[0]) {
        fprintf(stderr, "  %s\n", child_bad);
        return 1;
    }
    return 0;
}

/* ---- the parent: runs the child once per injection point ---------------- */

typedef struct run {
    long n;          /* the injection point */
    int status;      /* waitpid status, or -1 for a hang (killed) */
    long calls;
    long failed;
    double seconds;
} run;

/* A child under way. */
typedef struct child_run {
    long n;
    pid_t pid;
    int pidfd;       /* turns readable when the child exits */
    int out;         /* its stdout */
    double t0;
} child_run;

static void child_start(child_run *c, int engine, long n, bool persistent)
{
    char spec[32];
    snprintf(spec, sizeof spec, "%ld%s", n, persistent ? "+" : "");
    setenv("CF_SWEEP_CHILD", engine_names[engine], 1);
    setenv("CF_FAULT", spec, 1);
    int out[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    char self[] = "/proc/self/exe";
    char *argv[] = {self, NULL};
    c->n = n;
    c->t0 = cf_test_now();
    int rc = posix_spawn(&c->pid, self, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    unsetenv("CF_SWEEP_CHILD");
    unsetenv("CF_FAULT");
    close(out[1]);
    assert_int_equal(rc, 0);
    c->out = out[0];
    c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    assert_true(c->pidfd >= 0);
}

/* Reaps the child (killing it first if it `hung`) and reads its report. */
static run child_finish(child_run *c, bool hung)
{
    run r = {c->n, 0, 0, 0, 0};
    if (hung)
        kill(c->pid, SIGKILL);
    int st = 0;
    while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR) {
    }
    r.status = hung ? -1 : st;
    r.seconds = cf_test_now() - c->t0;
    close(c->pidfd);
    /* The child wrote its line before exiting; its workers may still hold
     * the pipe open, so read what is there without waiting for EOF. */
    char buf[256] = "";
    fcntl(c->out, F_SETFL, O_NONBLOCK);
    ssize_t got = read(c->out, buf, sizeof buf - 1);
    buf[got > 0 ? got : 0] = '\0';
    close(c->out);
    const char *at = strstr(buf, "calls=");
    if (at)
        sscanf(at, "calls=%ld failed=%ld", &r.calls, &r.failed);
    return r;
}

/* Most runs per sweep: the points past the scenario's own calls only
 * check that the count was right. */
#define POINTS_MAX 400
/* Children run at once.  Most of a run's time is waiting (process
 * start-up, the pool's retries out of memory), not CPU. */
#define PARALLEL 4

static void report(int engine, bool persistent, const run *r)
{
    const char *mode = persistent ? "+" : "";
    if (r->status == -1)
        print_error("%s point %ld%s: hang (killed after %.1f s)\n", engine_names[engine], r->n,
                    mode, r->seconds);
    else if (WIFSIGNALED(r->status))
        print_error("%s point %ld%s: killed by signal %d\n", engine_names[engine], r->n, mode,
                    WTERMSIG(r->status));
    else
        print_error("%s point %ld%s: exit status %d\n", engine_names[engine], r->n, mode,
                    WEXITSTATUS(r->status));
}

static void sweep(int engine, bool persistent)
{
    if (engine == ENGINE_FORK && SWEEP_SANITIZED)
        skip();
    double limit = RUN_LIMIT * cf_test_scale();
    child_run c;
    child_start(&c, engine, 0, false);
    struct pollfd one = {c.pidfd, POLLIN, 0};
    run base = child_finish(&c, poll(&one, 1, (int)(limit * 1000)) != 1);
    if (base.status != 0)
        fail_msg("%s: the run without faults failed (status %d)", engine_names[engine],
                 base.status);
    assert_true(base.calls > 0);
    /* Calls from several threads interleave differently from run to run,
     * so the count varies a little: a margin covers the tail. */
    long points = base.calls + base.calls / 4 + 4;
    if (points > POINTS_MAX)
        points = POINTS_MAX;
    int bad = 0;
    long injected = 0, next = 1;
    double slowest = 0;
    child_run live[PARALLEL];
    int nlive = 0;
    while (nlive > 0 || (next <= points && bad < BAD_MAX)) {
        while (nlive < PARALLEL && next <= points && bad < BAD_MAX)
            child_start(&live[nlive++], engine, next++, persistent);
        /* The watchdog covers the runs under way, not the whole sweep
         * (whose length depends on the scenario). */
        alarm((unsigned)(limit * 2) + 1);
        struct pollfd pfd[PARALLEL];
        double now = cf_test_now(), wait = limit;
        for (int k = 0; k < nlive; k++) {
            pfd[k] = (struct pollfd){live[k].pidfd, POLLIN, 0};
            double left = live[k].t0 + limit - now;
            if (left < wait)
                wait = left > 0 ? left : 0;
        }
        /* A child's exit, or the earliest time limit, ends this wait. */
        poll(pfd, (nfds_t)nlive, (int)(wait * 1000) + 1);
        now = cf_test_now();
        for (int k = nlive - 1; k >= 0; k--) {
            bool exited = pfd[k].revents & POLLIN;
            if (!exited && now < live[k].t0 + limit)
                continue;
            run r = child_finish(&live[k], !exited);
            live[k] = live[--nlive];
            injected += r.failed > 0;
            if (r.seconds > slowest)
                slowest = r.seconds;
            if (r.status != 0) {
                bad++;
                report(engine, persistent, &r);
            }
        }
    }
    print_message("%s%s: %ld calls, %ld points, %ld injected, slowest run %.2f s\n",
                  engine_names[engine], persistent ? " (from n on)" : " (once)", base.calls,
                  points, injected, slowest);
    assert_int_equal(bad, 0);
    /* The sweep reached the calls it meant to: most points injected. */
    assert_true(injected >= base.calls / 2);
}

static void test_sweep_thread_once(void **state)
{
    (void)state;
    sweep(ENGINE_THREAD, false);
}

static void test_sweep_thread_from_n(void **state)
{
    (void)state;
    sweep(ENGINE_THREAD, true);
}

static void test_sweep_exec_once(void **state)
{
    (void)state;
    sweep(ENGINE_EXEC, false);
}

static void test_sweep_exec_from_n(void **state)
{
    (void)state;
    sweep(ENGINE_EXEC, true);
}

static void test_sweep_fork_once(void **state)
{
    (void)state;
    sweep(ENGINE_FORK, false);
}

static void test_sweep_fork_from_n(void **state)
{
    (void)state;
    sweep(ENGINE_FORK, true);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sweep_thread_once),
    cmocka_unit_test(test_sweep_thread_from_n),
    cmocka_unit_test(test_sweep_exec_once),
    cmocka_unit_test(test_sweep_exec_from_n),
    cmocka_unit_test(test_sweep_fork_once),
    cmocka_unit_test(test_sweep_fork_from_n),
};

/* The harness's main, renamed: a child run goes to child_main() instead
 * (after cf_process_init(), where this program's workers stop). */
#define main harness_main
CF_TEST_MAIN(tests)
#undef main

int main(int argc, char **argv)
{
    const char *child = getenv("CF_SWEEP_CHILD");
    if (child) {
        cf_process_init(argc, argv);
        return child_main(child);
    }
    return harness_main(argc, argv);
}
