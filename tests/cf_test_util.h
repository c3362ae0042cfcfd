/* SPDX-License-Identifier: MIT */
/*
 * cf_test_util.h - helpers shared by the test programs: a log-hook capture,
 * a "blocker" that tasks wait on (so a test decides when they finish), and a
 * few generic tasks.  Everything is static inline so a program that does not
 * use a helper gets no unused-function warning.
 */
#ifndef CF_TEST_UTIL_H
#define CF_TEST_UTIL_H

#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <sys/wait.h>

/* ---- log hook capture ------------------------------------------------- */

typedef struct cap_log {
    pthread_mutex_t mu;
    int count;
    int bad_arg;      /* the hook was called with an unexpected arg */
    char first[1024];
    char last[1024];
} cap_log;

static inline cap_log *cap(void)
{
    static cap_log c = {PTHREAD_MUTEX_INITIALIZER, 0, 0, "", ""};
    return &c;
}

static inline void cap_hook(void *arg, const char *msg)
{
    cap_log *c = cap();
    pthread_mutex_lock(&c->mu);
    if (arg != (void *)c)
        c->bad_arg++;
    if (c->count == 0)
        snprintf(c->first, sizeof c->first, "%s", msg ? msg : "(null)");
    snprintf(c->last, sizeof c->last, "%s", msg ? msg : "(null)");
    c->count++;
    pthread_mutex_unlock(&c->mu);
}

static inline void cap_install(void)
{
    cap_log *c = cap();
    pthread_mutex_lock(&c->mu);
    c->count = 0;
    c->bad_arg = 0;
    c->first[0] = c->last[0] = '\0';
    pthread_mutex_unlock(&c->mu);
    cf_set_log_hook(cap_hook, c);
}

static inline void cap_restore(void)
{
    cf_set_log_hook(NULL, NULL);
}

static inline int cap_count(void)
{
    cap_log *c = cap();
    pthread_mutex_lock(&c->mu);
    int n = c->count;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* Copies the first captured message into buf. */
static inline void cap_first(char *buf, size_t size)
{
    cap_log *c = cap();
    pthread_mutex_lock(&c->mu);
    snprintf(buf, size, "%s", c->first);
    pthread_mutex_unlock(&c->mu);
}

/* FNV-1a of n bytes (usable inside tasks: no cmocka). */
static inline uint64_t checksum(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Descriptors this process has open now (for leak checks). */
static inline int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Asserts that f finishes (within `timeout`, scaled) with a task failure
 * and returns the failure record, borrowed from f. */
static inline const cf_failure *expect_task_failure(cf_future *f, double timeout)
{
    assert_cf(CF_ETASK, cf_future_result(f, timeout * cf_test_scale(), NULL));
    const cf_failure *fail = NULL;
    assert_ok(cf_future_exception(f, 0, &fail));
    assert_non_null(fail);
    return fail;
}

/* ---- blocker: tasks wait until the test releases them ------------------ */

typedef struct blocker {
    cf_test_event go;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;     /* tasks that entered */
    int running;     /* tasks inside right now */
    int max_running; /* high-water mark of running */
    int finished;    /* tasks that left */
} blocker;

static inline void blocker_init(blocker *b)
{
    cf_test_event_init(&b->go);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->started = b->running = b->max_running = b->finished = 0;
}

static inline void blocker_release(blocker *b)
{
    cf_test_event_set(&b->go);
}

/* Waits until *counter (guarded by b->mu) reaches n; false on timeout
 * (scaled). */
static inline bool blocker_wait_count(blocker *b, const int *counter, int n, double timeout)
{
    double end = cf_test_now() + timeout * cf_test_scale();
    pthread_mutex_lock(&b->mu);
    while (*counter < n && cf_test_now() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&b->cv, &b->mu, &ts);
    }
    bool ok = *counter >= n;
    pthread_mutex_unlock(&b->mu);
    return ok;
}

/* Waits until at least n tasks have started; false on timeout (scaled). */
static inline bool blocker_wait_started(blocker *b, int n, double timeout)
{
    return blocker_wait_count(b, &b->started, n, timeout);
}

/* Waits until at least n tasks have finished; false on timeout (scaled). */
static inline bool blocker_wait_finished(blocker *b, int n, double timeout)
{
    return blocker_wait_count(b, &b->finished, n, timeout);
}

static inline int blocker_get(blocker *b, const int *field)
{
    pthread_mutex_lock(&b->mu);
    int v = *field;
    pthread_mutex_unlock(&b->mu);
    return v;
}

static inline void blocker_destroy(blocker *b)
{
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->go.mu);
    pthread_cond_destroy(&b->go.cv);
}

/* Task: arg 0 = blocker*, optional arg 1 = i64 returned.  Waits (at most
 * 10 s, scaled) for the blocker's release. */
static inline int t_block(cf_call *call)
{
    blocker *b = (blocker *)cf_arg_ptr(call, 0);
    if (!b)
        return cf_raise(call, 1, "TestError", "no blocker");
    pthread_mutex_lock(&b->mu);
    b->started++;
    b->running++;
    if (b->running > b->max_running)
        b->max_running = b->running;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    bool ok = cf_test_event_wait(&b->go, 10.0);
    pthread_mutex_lock(&b->mu);
    b->running--;
    b->finished++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (!ok)
        return cf_raise(call, 99, "TimeoutError", "blocker never released");
    if (cf_arg_count(call) > 1)
        return cf_return_i64(call, cf_arg_i64(call, 1));
    return 0;
}

/* Submits n calls of t_block on `b` (on which nothing has started yet)
 * to `ex`, one at a time, each once the ones before it have started, so
 * that each holds a worker of its own; their futures go to fs[0..n). */
static inline void blocker_submit_held(cf_executor *ex, blocker *b, cf_future **fs, int n)
{
    for (int i = 0; i < n; i++) {
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(b)), &fs[i]));
        assert_true(blocker_wait_started(b, i + 1, 5));
    }
}

/* Task: returns its first argument unchanged (any kind). */
static inline int t_echo(cf_call *call)
{
    const cf_value *v = cf_arg(call, 0);
    if (!v)
        return cf_raise(call, 1, "TestError", "no argument");
    return cf_return_value(call, v);
}

/* Task: x*x of an i64. */
static inline int t_square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}

/* Task: sum of all i64 arguments. */
static inline int t_sum(cf_call *call)
{
    int64_t s = 0;
    for (size_t i = 0; i < cf_arg_count(call); i++)
        s += cf_arg_i64(call, i);
    return cf_return_i64(call, s);
}

/* Sleeps ms milliseconds (only for "give it a chance" delays, never for
 * correctness). */
static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A thread that runs fn(arg) and signals `done` when it returns. */
typedef struct bg_thread {
    pthread_t th;
    void (*fn)(void *);
    void *arg;
    cf_test_event done;
} bg_thread;

static inline void *bg_thread_main(void *p)
{
    bg_thread *t = (bg_thread *)p;
    t->fn(t->arg);
    cf_test_event_set(&t->done);
    return NULL;
}

static inline void bg_start(bg_thread *t, void (*fn)(void *), void *arg)
{
    t->fn = fn;
    t->arg = arg;
    cf_test_event_init(&t->done);
    int rc = pthread_create(&t->th, NULL, bg_thread_main, t);
    assert_int_equal(rc, 0);
}

/* Waits for the thread to finish (fails the test if it does not within
 * `timeout` seconds, scaled) and joins it. */
static inline void bg_join(bg_thread *t, double timeout)
{
    if (!cf_test_event_wait(&t->done, timeout))
        fail_msg("background thread did not finish within %.1f s", timeout);
    pthread_join(t->th, NULL);
    pthread_mutex_destroy(&t->done.mu);
    pthread_cond_destroy(&t->done.cv);
}

/* Pool with n workers (CF_AUTO for the default). */
static inline cf_executor *pool_new(int n)
{
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = n;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    assert_non_null(ex);
    return ex;
}

/* Process pool with `workers` workers under `policy`, started with `sm`. */
static inline cf_executor *ppool(int workers, cf_crash_policy policy, cf_start_method sm)
{
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = workers;
    o.on_crash = policy;
    o.start_method = sm;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    assert_non_null(ex);
    return ex;
}

/* Submits fn(args) and returns its i64 result (must succeed within 10 s,
 * scaled). */
static inline int64_t run_i64(cf_executor *ex, cf_task_fn *fn, const cf_value *args,
                              size_t nargs)
{
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, fn, args, nargs, &f));
    int64_t r = 0;
    assert_ok(cf_future_result_i64(f, 10.0 * cf_test_scale(), &r));
    assert_ok(cf_future_release(f));
    return r;
}

/* Every worker has been reaped: this process has no child left. */
static inline void assert_no_children(void)
{
    errno = 0;
    pid_t r = waitpid(-1, NULL, WNOHANG);
    if (r != -1 || errno != ECHILD)
        fail_msg("a child process is left (waitpid returned %d, errno %d)", (int)r, errno);
}

/* Waits (up to `secs`, polling each ms) until child `pid` has exited,
 * without reaping it (WNOWAIT: its pool still reaps it).  Returns 1 if it
 * had exited at the first look, 2 if it exited while we waited, 0 if it
 * still runs at the end, -1 if waitid() failed (no such child). */
static inline int wait_exit_unreaped(pid_t pid, double secs)
{
    double end = cf_test_now() + secs;
    for (bool first = true;; first = false) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
            return -1;
        if (si.si_pid != 0)
            return first ? 1 : 2;
        if (cf_test_now() >= end)
            return 0;
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* One round of a recycling-pool test: submits t_square of round*k ...
 * round*k+k-1 (k <= 64), and checks every result (within T 10 s, scaled),
 * failing with the round, the call and the error otherwise. */
static inline void square_round(cf_executor *ex, int round, int k)
{
    cf_future *fs[64];
    assert_true(k > 0 && k <= 64);
    for (int i = 0; i < k; i++)
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64((int64_t)round * k + i)), &fs[i]));
    for (int i = 0; i < k; i++) {
        int64_t r = 0;
        int rc = cf_future_result_i64(fs[i], 10.0 * cf_test_scale(), &r);
        if (rc != CF_OK)
            fail_msg("round %d, call %d: %s (%s)", round, i, cf_err_name(rc),
                     cf_last_error_message());
        int64_t x = (int64_t)round * k + i;
        assert_int_equal(r, x * x);
        assert_ok(cf_future_release(fs[i]));
    }
}

static inline bool contains(const char *hay, const char *needle)
{
    return hay && needle && strstr(hay, needle) != NULL;
}


/* ---- racing a completion ------------------------------------------------- */

/* For a thread that waits at `bar` (a two-party barrier), then sets `f`'s
 * result to `value` and returns set_result's code: start it, meet it at
 * the barrier, and do the operation that should race the completion. */
typedef struct race_arg {
    pthread_barrier_t *bar;
    cf_future *f;
    int64_t value;
} race_arg;

static inline void *complete_after_barrier(void *p)
{
    race_arg *a = (race_arg *)p;
    pthread_barrier_wait(a->bar);
    cf_value v = cf_i64(a->value);
    int rc = cf_future_set_result(a->f, &v);
    return (void *)(intptr_t)rc;
}

/* ---- generators that keep no value past their next call ------------------ */

/* Yields "s0", "s1", ... up to n values, each valid only until the next
 * call: in the one buffer it overwrites (`fresh` false), or in a buffer
 * it frees on the next call and allocates anew (`fresh` true: ASan sees
 * a read of a stale value). */
typedef struct stale_gen {
    int i, n;
    bool fresh;
    char fixed[16];
    char *heap;
} stale_gen;

static inline int stale_gen_next(void *ctx, cf_value *out)
{
    stale_gen *g = (stale_gen *)ctx;
    free(g->heap);
    g->heap = NULL;
    if (g->i >= g->n)
        return 0;
    char *buf = g->fixed;
    if (g->fresh && !(buf = g->heap = (char *)malloc(16)))
        return -1;
    snprintf(buf, 16, "s%d", g->i++);
    *out = cf_str(buf);
    return 1;
}

/* "a+b" of its two string arguments. */
static inline int t_join2(cf_call *call)
{
    char out[64];
    snprintf(out, sizeof out, "%s+%s", cf_arg_str(call, 0), cf_arg_str(call, 1));
    return cf_return_str(call, out);
}

/* Maps `join` (t_join2, registered where the engine needs it) over one
 * stale_gen used for both inputs, Python's zip(g, g), for each kind of
 * stale_gen, chunksize 1 and 3, buffersize 0 and 2: each call must see
 * two consecutive values, "s0+s1", "s2+s3", ... */
static inline void check_map_zip_one_generator(cf_executor *ex, cf_task_fn *join)
{
    enum { N = 14 };
    for (int fresh = 0; fresh < 2; fresh++)
        for (int cs = 1; cs <= 3; cs += 2)
            for (int bs = 0; bs <= 2; bs += 2) {
                stale_gen g = {0, N, fresh != 0, "", NULL};
                cf_map_input two[2] = {cf_input_generator(stale_gen_next, &g),
                                       cf_input_generator(stale_gen_next, &g)};
                cf_map_options mo;
                cf_map_options_init(&mo);
                mo.chunksize = cs;
                mo.buffersize = (size_t)bs;
                mo.timeout = 30.0 * cf_test_scale();
                cf_map_iter *it = NULL;
                assert_ok(cf_map(ex, join, two, 2, &mo, &it));
                for (int i = 0; i < N / 2; i++) {
                    const cf_value *v = NULL;
                    const cf_failure *fl = NULL;
                    int rc = cf_map_next(it, &v, &fl);
                    if (rc != CF_OK)
                        fail_msg("fresh %d chunksize %d buffersize %d, element %d: %s (%s)",
                                 fresh, cs, bs, i, cf_err_name(rc),
                                 fl ? cf_failure_message(fl) : cf_last_error_message());
                    char want[32];
                    snprintf(want, sizeof want, "s%d+s%d", 2 * i, 2 * i + 1);
                    if (strcmp(v->as.str, want) != 0)
                        fail_msg("fresh %d chunksize %d buffersize %d, element %d: \"%s\", "
                                 "expected \"%s\"",
                                 fresh, cs, bs, i, v->as.str, want);
                }
                assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
                cf_map_close(it);
                free(g.heap);
            }
}

#endif
