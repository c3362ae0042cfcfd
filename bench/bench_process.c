/* SPDX-License-Identifier: MIT */
/*
 * bench_process.c - the cfutures process pool, measured side by side with
 * CPython's ProcessPoolExecutor (peer_cpython_process.py) and with floors
 * measured in the same run.
 *
 * Workloads (2 workers unless stated; default start method CF_START_EXEC):
 *   tiny submit+collect  N cf_submit() of a task returning x*x, then
 *                        cf_future_result() on each in order; tasks/s.
 *   map chunksize=1      cf_map() over N CF_I64 values, every result
 *                        through cf_map_next(); elements/s.
 *   map chunksize=1000   the same with chunksize 1000; also shown as the
 *                        time per element (1 / rate).
 *   round trip           M times: submit one task, wait for its result;
 *                        median in us.  Floor: a 1-byte echo over a pair
 *                        of pipes between this process and a forked child,
 *                        measured for every round after all the rounds
 *                        (as start-up is: see "What forks, last").
 *   start-up             cf_process_pool_new() with 2 workers + the first
 *                        result; and cf_process_pool_new() +
 *                        cf_executor_destroy(); CF_START_EXEC and
 *                        CF_START_FORK; ms.
 *   64 MiB round trip    a task that returns its CF_BYTES argument, with a
 *                        64 MiB argument; ms.  Two rows: the first such
 *                        call on a new (started) pool, and the median of
 *                        BIG_REPS calls on a warm pool (after BIG_WARM
 *                        unmeasured ones), when the pool's shared buffers
 *                        are recycled.  Floor: memcpy of 64 MiB into a
 *                        preallocated, already-touched buffer and back
 *                        (two memcpy's), which is the warm case too.
 *   CPU batch            8 tasks each spinning a fixed integer loop of
 *                        ~100 ms, on 1 worker and on 2 workers; seconds
 *                        and the speed-up.
 *   cancel the rest      CANCEL_K calls of ~1 ms submitted, cf_wait()
 *                        FIRST_COMPLETED, cf_future_cancel() on every one,
 *                        then wait until all are done; ms, and how many
 *                        were not cancelled (finished, or begun).
 *   map close            cf_map() over CANCEL_K calls of ~1 ms, the first
 *                        result, cf_map_close(), then one tiny call: ms
 *                        until its result (it waits for whatever of the
 *                        map still runs).
 *   priorities           tiny submit+collect through cf_submit_with() with
 *                        every other call at a priority of -3..3, and one
 *                        last call (the lowest priority) awaited before
 *                        the results are collected; us per task.  Its
 *                        floor is the same workload with every call at
 *                        the default priority, run beside it in the same
 *                        round (first in even rounds, second in odd
 *                        ones): cf/floor is the cost of mixing priorities
 *                        in.
 *
 * The CPython peer runs the same workloads and reports through popen() as
 * JSON lines.  The C workloads and one run of the peer alternate, round
 * after round, so a slow phase of a noisy machine hits both sides; every
 * figure is the median over the rounds and every ratio is computed within
 * a round, then the median is taken.  Results are checked; a wrong value
 * or an API error exits 1, and so does a crash of the pool in the
 * create+destroy trials (run in a child so the report is still printed).
 *
 * Usage: bench_process [--quick] [-n N] [-m M] [-r ROUNDS] [--py-n N]
 *                      [--py-m M] [--big-mib S] [--cpu-ms T] [--starts K]
 *                      [--no-python] [--watchdog S] [--only LIST] [-v]
 */
#ifndef CF_BENCH_PEER_SCRIPT
#define CF_BENCH_PEER_SCRIPT "bench/peer_cpython_process.py"
#endif
#define BENCH_NAME "bench_process"
#include "bench_util.h"

#include <inttypes.h>

#define WORKERS 2
#define CPU_TASKS 8
#define BIG_REPS 5
#define BIG_WARM 2 /* includes the first, measured on its own */
#define CANCEL_K 200
#define CANCEL_MS 1.0

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static double secs_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e9;
}

static double min_of(const double *v, size_t n)
{
    double m = INFINITY;
    for (size_t i = 0; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return n ? m : NAN;
}

/* ------------------------------------------------------------------------
 * Tasks (they travel by name: registered with CF_TASK)
 * ---------------------------------------------------------------------- */

static int sq_task(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}
CF_TASK(sq_task);

static int echo_task(cf_call *call)
{
    size_t size = 0;
    const void *p = cf_arg_bytes(call, 0, &size);
    return cf_return_bytes(call, p, size);
}
CF_TASK(echo_task);

/* A dependent chain of multiply, add, shift and xor: no closed form the
 * compiler could use, so the loop really runs `iters` times. */
static uint64_t spin(uint64_t iters, uint64_t x)
{
    for (uint64_t i = 0; i < iters; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        x ^= x >> 29;
    }
    return x;
}

static int spin_task(cf_call *call)
{
    int64_t iters = cf_arg_i64(call, 0);
    int64_t seed = cf_arg_i64(call, 1);
    return cf_return_i64(call, (int64_t)spin((uint64_t)iters, (uint64_t)seed));
}
CF_TASK(spin_task);

/* ------------------------------------------------------------------------
 * The cfutures workloads
 * ---------------------------------------------------------------------- */

static cf_executor *new_pool(int workers, cf_start_method method)
{
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = workers;
    o.start_method = method;
    cf_executor *ex = NULL;
    CHECK(cf_process_pool_new(&ex, &o));
    return ex;
}

/* Submits sq_task(i) for i in [0, count) into fs, then takes every result
 * in order, checks it and releases the future; `what` names the workload
 * in the message for a wrong result. */
static void sq_batch(cf_executor *ex, cf_future **fs, size_t count,
                     const char *what)
{
    for (size_t i = 0; i < count; i++)
        CHECK(cf_submit(ex, sq_task, CF_ARGS(cf_i64((int64_t)i)), &fs[i]));
    for (size_t i = 0; i < count; i++) {
        int64_t r = 0;
        CHECK(cf_future_result_i64(fs[i], CF_FOREVER, &r));
        if (r != (int64_t)i * (int64_t)i)
            die("%s: task %zu returned %" PRId64, what, i, r);
        CHECK(cf_future_release(fs[i]));
    }
}

/* Runs `count` tiny tasks so every worker is up (has said hello and run a
 * call) before anything is timed; the peer does the same. */
static void warm_up(cf_executor *ex, cf_future **fs, size_t count)
{
    sq_batch(ex, fs, count, "warm-up");
}

/* Tasks per second: N submits in a row, then every result in order. */
static double bench_tiny(size_t n, size_t warm, cf_future **fs)
{
    cf_executor *ex = new_pool(WORKERS, CF_START_EXEC);
    warm_up(ex, fs, warm);
    uint64_t t0 = now_ns();
    sq_batch(ex, fs, n, "submit+collect");
    double s = secs_since(t0);
    CHECK(cf_executor_destroy(ex));
    return (double)n / s;
}

/* Seconds per task of N tiny calls through cf_submit_with(), every other one
 * at a priority of -3..3 when `mixed`, then every result in order. */
static double bench_prio(size_t n, size_t warm, cf_future **fs, bool mixed)
{
    cf_executor *ex = new_pool(WORKERS, CF_START_EXEC);
    warm_up(ex, fs, warm);
    cf_submit_options so;
    cf_submit_options_init(&so);
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        so.priority = mixed && (i & 1) ? (int)(i % 7) - 3 : CF_PRIORITY_DEFAULT;
        CHECK(cf_submit_with(ex, &so, sq_task, CF_ARGS(cf_i64((int64_t)i)), &fs[i]));
    }
    /* A last call the workers take after all the others (the lowest
     * priority when mixed), awaited first: collecting in submission order
     * at once would overlap with the workers only when they run in that
     * order. */
    so.priority = mixed ? CF_PRIORITY_MIN : CF_PRIORITY_DEFAULT;
    cf_future *last = NULL;
    CHECK(cf_submit_with(ex, &so, sq_task, CF_ARGS(cf_i64(0)), &last));
    CHECK(cf_future_result(last, CF_FOREVER, NULL));
    CHECK(cf_future_release(last));
    for (size_t i = 0; i < n; i++) {
        int64_t r = 0;
        CHECK(cf_future_result_i64(fs[i], CF_FOREVER, &r));
        if (r != (int64_t)i * (int64_t)i)
            die("priorities: task %zu returned %" PRId64, i, r);
        CHECK(cf_future_release(fs[i]));
    }
    double s = secs_since(t0);
    CHECK(cf_executor_destroy(ex));
    return s / (double)n;
}

/* Elements per second of cf_map() with the given chunksize. */
static double bench_map(size_t n, int chunksize, size_t warm, cf_future **fs,
                        cf_value *in)
{
    cf_executor *ex = new_pool(WORKERS, CF_START_EXEC);
    warm_up(ex, fs, warm);
    for (size_t i = 0; i < n; i++)
        in[i] = cf_i64((int64_t)i);
    cf_map_input input = cf_input_array(in, n);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = chunksize;

    uint64_t t0 = now_ns();
    cf_map_iter *it = NULL;
    CHECK(cf_map(ex, sq_task, &input, 1, &mo, &it));
    for (size_t i = 0; i < n; i++) {
        const cf_value *v = NULL;
        CHECK(cf_map_next(it, &v, NULL));
        if (!v || v->kind != CF_I64 || v->as.i64 != (int64_t)i * (int64_t)i)
            die("map chunksize=%d: element %zu has a wrong result", chunksize,
                i);
    }
    map_close_done(it, n);
    double s = secs_since(t0);
    CHECK(cf_executor_destroy(ex));
    return (double)n / s;
}

/* Median of M one-at-a-time round trips, in seconds. */
static double bench_round_trip(size_t m, size_t warm, double *samples)
{
    cf_executor *ex = new_pool(WORKERS, CF_START_EXEC);
    for (size_t j = 0; j < warm + m; j++) {
        cf_future *f = NULL;
        int64_t r = 0;
        uint64_t t0 = now_ns();
        CHECK(cf_submit(ex, sq_task, CF_ARGS(cf_i64((int64_t)j)), &f));
        CHECK(cf_future_result_i64(f, CF_FOREVER, &r));
        CHECK(cf_future_release(f));
        uint64_t t1 = now_ns();
        if (r != (int64_t)j * (int64_t)j)
            die("round trip: task %zu returned %" PRId64, j, r);
        if (j >= warm)
            samples[j - warm] = (double)(t1 - t0) / 1e9;
    }
    CHECK(cf_executor_destroy(ex));
    return median_of(samples, m);
}

/* fork() after flushing stdio (so nothing buffered is written twice). */
static pid_t fork_or_die(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    return pid;
}

/* The floor of a round trip to another process: this process writes one
 * byte into a pipe, a forked child reads it and writes it back through a
 * second pipe, this process reads it.  Median of M, in seconds. */
static double bench_pipe_echo(size_t m, size_t warm, double *samples)
{
    int to_child[2], to_parent[2];
    if (pipe(to_child) != 0 || pipe(to_parent) != 0)
        die("pipe: %s", strerror(errno));
    pid_t pid = fork_or_die();
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        unsigned char c;
        while (read(to_child[0], &c, 1) == 1)
            if (write(to_parent[1], &c, 1) != 1)
                _exit(1);
        _exit(0);
    }
    close(to_child[0]);
    close(to_parent[1]);
    for (size_t j = 0; j < warm + m; j++) {
        unsigned char out = (unsigned char)j, back = 0;
        uint64_t t0 = now_ns();
        if (write(to_child[1], &out, 1) != 1 || read(to_parent[0], &back, 1) != 1)
            die("pipe echo: %s", strerror(errno));
        uint64_t t1 = now_ns();
        if (back != out)
            die("pipe echo: got %u for %u", back, out);
        if (j >= warm)
            samples[j - warm] = (double)(t1 - t0) / 1e9;
    }
    close(to_child[1]);
    int st = 0;
    waitpid(pid, &st, 0);
    close(to_parent[0]);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("pipe echo child failed");
    return median_of(samples, m);
}

typedef struct startup {
    double first, create_destroy; /* seconds, median over the trials */
    int cd_signal;                /* create+destroy crashed with it, or 0 */
} startup;

/* cf_process_pool_new() + cf_executor_destroy(), `trials` times, in a
 * forked child (this process runs no other thread here: every pool so far
 * was destroyed), so that a crash in that path is reported as such
 * instead of ending the benchmark.  Median in seconds, or NAN with
 * *sig set when the child died of a signal. */
static double create_destroy_isolated(cf_start_method method, size_t trials,
                                      int *sig)
{
    double cd[64];
    int fds[2];
    *sig = 0;
    if (pipe(fds) != 0)
        die("pipe: %s", strerror(errno));
    pid_t pid = fork_or_die();
    if (pid == 0) {
        close(fds[0]);
        for (size_t t = 0; t < trials; t++) {
            uint64_t t0 = now_ns();
            cf_executor *ex = new_pool(WORKERS, method);
            CHECK(cf_executor_destroy(ex));
            cd[t] = secs_since(t0);
        }
        size_t len = trials * sizeof cd[0];
        _exit(write(fds[1], cd, len) == (ssize_t)len ? 0 : 1);
    }
    close(fds[1]);
    size_t got = 0, want = trials * sizeof cd[0];
    while (got < want) {
        ssize_t r = read(fds[0], (char *)cd + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fds[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(st)) {
        *sig = WTERMSIG(st);
        return NAN;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || got != want)
        die("create+destroy child failed (status %d)", st);
    return median_of(cd, trials);
}

/* cf_process_pool_new() + first result, and cf_process_pool_new() +
 * cf_executor_destroy() (see above), `trials` times each; medians in
 * seconds. */
static startup bench_startup(cf_start_method method, size_t trials)
{
    double first[64];
    if (trials > 64)
        trials = 64;
    for (size_t t = 0; t < trials; t++) {
        uint64_t t0 = now_ns();
        cf_executor *ex = new_pool(WORKERS, method);
        cf_future *f = NULL;
        int64_t r = 0;
        CHECK(cf_submit(ex, sq_task, CF_ARGS(cf_i64(7)), &f));
        CHECK(cf_future_result_i64(f, CF_FOREVER, &r));
        first[t] = secs_since(t0);
        if (r != 49)
            die("start-up: task returned %" PRId64, r);
        CHECK(cf_future_release(f));
        CHECK(cf_executor_destroy(ex));
    }
    startup s;
    s.first = median_of(first, trials);
    s.create_destroy = create_destroy_isolated(method, trials, &s.cd_signal);
    return s;
}

typedef struct big {
    double first, rtt, floor; /* seconds */
} big;

/* A `size`-byte CF_BYTES argument echoed back by a worker: the first
 * round trip on a new pool, then the median of BIG_REPS after BIG_WARM
 * unmeasured ones (the first included).  Floor: memcpy(dst, src) then memcpy(src, dst),
 * both buffers allocated and written before; best of BIG_REPS.  The
 * buffers live only during this workload, so that the other workloads
 * (fork start-up in particular) run in a small process. */
static big bench_big(size_t size, cf_future **fs)
{
    double rtt[BIG_REPS], fl[BIG_REPS];
    unsigned char *src = xmalloc(size), *dst = xmalloc(size);
    for (size_t i = 0; i < size; i++) /* touches every page of both */
        src[i] = (unsigned char)(i * 131u);
    memset(dst, 0, size);

    cf_executor *ex = new_pool(WORKERS, CF_START_EXEC);
    warm_up(ex, fs, 8);
    double first = NAN;
    for (int k = -BIG_WARM; k < BIG_REPS; k++) {
        cf_future *f = NULL;
        const cf_value *v = NULL;
        uint64_t t0 = now_ns();
        CHECK(cf_submit(ex, echo_task, CF_ARGS(cf_bytes(src, size)), &f));
        CHECK(cf_future_result(f, CF_FOREVER, &v));
        double s = secs_since(t0);
        if (k == -BIG_WARM)
            first = s;
        else if (k >= 0)
            rtt[k] = s;
        if (!v || v->kind != CF_BYTES || v->size != size ||
            memcmp(v->as.bytes, src, size) != 0)
            die("%zu-byte echo: wrong result", size);
        CHECK(cf_future_release(f));
    }
    CHECK(cf_executor_destroy(ex));

    for (int k = 0; k < BIG_REPS; k++) {
        uint64_t t0 = now_ns();
        memcpy(dst, src, size);
        memcpy(src, dst, size);
        __asm__ volatile("" ::"r"(src), "r"(dst) : "memory");
        fl[k] = secs_since(t0);
    }
    if (src[size - 1] != (unsigned char)((size - 1) * 131u))
        die("memcpy floor: buffer changed");
    free(dst);
    free(src);
    big b = {first, median_of(rtt, BIG_REPS), min_of(fl, BIG_REPS)};
    return b;
}

/* Iterations of spin() that take about `ms` milliseconds here. */
static uint64_t calibrate_spin(double ms)
{
    uint64_t iters = 1u << 16;
    for (;;) {
        uint64_t t0 = now_ns();
        uint64_t x = spin(iters, 1);
        double s = secs_since(t0);
        __asm__ volatile("" ::"r"(x));
        if (s >= 0.02 || iters >= (1ull << 40))
            return (uint64_t)((double)iters * (ms / 1e3) / s) + 1;
        iters *= 2;
    }
}

/* CPU_TASKS spin tasks on a pool of `workers`; seconds. */
static double bench_cpu(int workers, uint64_t iters, int64_t expect,
                        cf_future **fs)
{
    cf_executor *ex = new_pool(workers, CF_START_EXEC);
    warm_up(ex, fs, 8);
    uint64_t t0 = now_ns();
    for (int i = 0; i < CPU_TASKS; i++)
        CHECK(cf_submit(ex, spin_task,
                        CF_ARGS(cf_i64((int64_t)iters), cf_i64(1)), &fs[i]));
    for (int i = 0; i < CPU_TASKS; i++) {
        int64_t r = 0;
        CHECK(cf_future_result_i64(fs[i], CF_FOREVER, &r));
        if (r != expect)
            die("cpu: task %d returned %" PRId64 ", expected %" PRId64, i, r,
                expect);
        CHECK(cf_future_release(fs[i]));
    }
    double s = secs_since(t0);
    CHECK(cf_executor_destroy(ex));
    return s;
}

/* Cancel the rest after FIRST_COMPLETED (see the top); seconds, and the
 * number of calls that could not be cancelled in *ran. */
static double bench_cancel_rest(uint64_t iters, int64_t expect, cf_future **fs, double *ran)
{
    cf_executor *ex = new_pool(WORKERS, CF_START_EXEC);
    warm_up(ex, fs, 8);
    uint64_t t0 = now_ns();
    for (int i = 0; i < CANCEL_K; i++)
        CHECK(cf_submit(ex, spin_task, CF_ARGS(cf_i64((int64_t)iters), cf_i64(1)), &fs[i]));
    CHECK(cf_wait(fs, CANCEL_K, CF_FOREVER, CF_FIRST_COMPLETED, NULL, NULL, NULL, NULL));
    int running = 0;
    for (int i = 0; i < CANCEL_K; i++)
        running += !cf_future_cancel(fs[i]);
    CHECK(cf_wait(fs, CANCEL_K, CF_FOREVER, CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
    double s = secs_since(t0);
    for (int i = 0; i < CANCEL_K; i++) {
        int64_t r = 0;
        if (!cf_future_cancelled(fs[i]) &&
            (cf_future_result_i64(fs[i], 0, &r) != CF_OK || r != expect))
            die("cancel the rest: call %d did not finish right", i);
        CHECK(cf_future_release(fs[i]));
    }
    CHECK(cf_executor_destroy(ex));
    *ran = running;
    return s;
}

/* Map close after the first result (see the top); seconds. */
static double bench_map_close(uint64_t iters, int64_t expect, cf_future **fs, cf_value *in)
{
    cf_executor *ex = new_pool(WORKERS, CF_START_EXEC);
    warm_up(ex, fs, 8);
    cf_value args[2] = {cf_i64((int64_t)iters), cf_i64(1)};
    for (int i = 0; i < CANCEL_K; i++)
        in[i] = args[0];
    cf_value seeds[CANCEL_K];
    for (int i = 0; i < CANCEL_K; i++)
        seeds[i] = args[1];
    cf_map_input inputs[2] = {cf_input_array(in, CANCEL_K), cf_input_array(seeds, CANCEL_K)};
    uint64_t t0 = now_ns();
    cf_map_iter *it = NULL;
    CHECK(cf_map(ex, spin_task, inputs, 2, NULL, &it));
    const cf_value *v = NULL;
    CHECK(cf_map_next(it, &v, NULL));
    if (!v || v->kind != CF_I64 || v->as.i64 != expect)
        die("map close: wrong first result");
    cf_map_close(it);
    cf_future *f = NULL;
    int64_t r = 0;
    CHECK(cf_submit(ex, sq_task, CF_ARGS(cf_i64(3)), &f));
    CHECK(cf_future_result_i64(f, CF_FOREVER, &r));
    double s = secs_since(t0);
    if (r != 9)
        die("map close: the probe returned %" PRId64, r);
    CHECK(cf_future_release(f));
    CHECK(cf_executor_destroy(ex));
    return s;
}

/* ------------------------------------------------------------------------
 * Metrics, rows and targets
 * ---------------------------------------------------------------------- */

enum {
    M_TINY,
    M_MAP1,
    M_MAP1000,
    M_MAP1000_PER,
    M_RTT,
    M_START_EXEC_FIRST,
    M_START_EXEC_CD,
    M_START_FORK_FIRST,
    M_START_FORK_CD,
    M_BIG_FIRST,
    M_BIG,
    M_CPU1,
    M_CPU2,
    M_CPU_SPEEDUP,
    M_CANCEL_REST,
    M_CANCEL_RAN,
    M_MAP_CLOSE,
    M_PRIO,
    M_COUNT
};

/* Keys of the peer's JSON lines ("metric": key, "value": v). */
static const char *const metric_key[M_COUNT] = {
    "tiny",        "map1",       "map1000",        NULL,         "rtt_median",
    "start_first", "start_cd",   NULL,             NULL,
    "big_first",   "big_rtt",     "cpu_1w",     "cpu_2w",         "cpu_speedup",
    NULL,          NULL,          NULL,             NULL};

typedef enum unit { U_RATE, U_NS, U_US, U_MS, U_S, U_X, U_N } unit;

typedef enum target_kind {
    T_NONE,
    T_VS_PY_MIN,   /* speed-up over CPython >= x */
    T_FLOOR_MAX,   /* cf / floor (time) <= x */
    T_ABS_MAX,     /* cf value (seconds) <= x */
    T_ABS_MIN      /* cf value >= x */
} target_kind;

typedef struct row {
    const char *label;
    unit u;
    target_kind tk;
    double want;
    const char *want_text;
} row;

static const row rows[M_COUNT] = {
    {"tiny submit+collect (tasks/s)", U_RATE, T_VS_PY_MIN, 100.0,
     ">= 100x CPython"},
    {"map chunksize=1 (elements/s)", U_RATE, T_NONE, 0, "-"},
    {"map chunksize=1000 (elements/s)", U_RATE, T_VS_PY_MIN, 5.0,
     ">= 5x CPython"},
    {"map chunksize=1000, per element", U_NS, T_ABS_MAX, 0.2e-6, "< 200 ns"},
    {"round trip, one at a time, median", U_US, T_FLOOR_MAX, 1.5,
     "<= 1.5x pipe echo"},
    {"start-up exec: new + first result", U_MS, T_ABS_MAX, 0.010, "< 10 ms"},
    {"start-up exec: new + destroy", U_MS, T_ABS_MAX, 0.010, "< 10 ms"},
    {"start-up fork: new + first result", U_MS, T_NONE, 0, "-"},
    {"start-up fork: new + destroy", U_MS, T_NONE, 0, "-"},
    {"%zu MiB echo, first on a new pool", U_MS, T_NONE, 0, "-"},
    {"%zu MiB echo round trip, warm pool", U_MS, T_FLOOR_MAX, 3.0,
     "<= 3x 2 memcpy"},
    {"CPU batch, %d x ~%zu ms, 1 worker", U_S, T_NONE, 0, "-"},
    {"CPU batch, %d x ~%zu ms, 2 workers", U_S, T_NONE, 0, "-"},
    {"CPU speed-up, 2 workers over 1", U_X, T_ABS_MIN, 1.8,
     ">= 1.8x (~2x)"},
    {"cancel rest after 1st, %d x ~1 ms", U_MS, T_NONE, 0, "-"},
    {"  calls not cancelled (of %d)", U_N, T_NONE, 0, "-"},
    {"map close after 1st, %d x ~1 ms", U_MS, T_NONE, 0, "-"},
    {"tiny, half at priorities -3..3", U_US, T_FLOOR_MAX, 1.10, "<= 1.1x all-default"},
};

/* --only: the workloads to run (all when NULL), a comma-separated list of
 * tiny, map1, map1000, rtt, start, big, cpu, cancel, prio. */
static const char *g_only;

static bool runs(const char *name)
{
    if (!g_only)
        return true;
    size_t len = strlen(name);
    for (const char *at = g_only; *at;) {
        const char *end = strchr(at, ',');
        size_t n = end ? (size_t)(end - at) : strlen(at);
        if (n == len && !strncmp(at, name, n))
            return true;
        if (!end)
            break;
        at = end + 1;
    }
    return false;
}

/* Row labels with the sizes of this run filled in. */
static char g_label[M_COUNT][64];

static void make_labels(size_t big_mib, size_t cpu_ms)
{
    for (int k = 0; k < M_COUNT; k++) {
        if (k == M_BIG || k == M_BIG_FIRST)
            snprintf(g_label[k], sizeof g_label[k], rows[k].label, big_mib);
        else if (k == M_CPU1 || k == M_CPU2)
            snprintf(g_label[k], sizeof g_label[k], rows[k].label, CPU_TASKS,
                     cpu_ms);
        else if (k >= M_CANCEL_REST && k <= M_MAP_CLOSE)
            snprintf(g_label[k], sizeof g_label[k], rows[k].label, CANCEL_K);
        else
            snprintf(g_label[k], sizeof g_label[k], "%s", rows[k].label);
    }
}

typedef struct round_figs {
    double v[M_COUNT];
} round_figs;

/* ------------------------------------------------------------------------
 * The CPython peer
 * ---------------------------------------------------------------------- */

typedef struct peer_info {
    char version[32];
    char start_method[32];
    int cpus;
} peer_info;

typedef struct peer_args {
    size_t n, n_map1000, m, big, starts, warm;
    double cpu_ms;
} peer_args;

static void on_peer_header(const char *line, void *ctx)
{
    peer_info *info = ctx;
    if (!json_str(line, "start_method", info->start_method,
                  sizeof info->start_method))
        snprintf(info->start_method, sizeof info->start_method, "?");
    info->cpus = (int)json_num(line, "cpus");
}

static void on_peer_metric(const char *name, const char *line, void *ctx)
{
    round_figs *out = ctx;
    for (int k = 0; k < M_COUNT; k++)
        if (metric_key[k] && strcmp(name, metric_key[k]) == 0)
            out->v[k] = json_num(line, "value");
}

/* Runs one round of the peer (see peer_run()). */
static peer_status run_peer(const peer_args *a, peer_info *info,
                            round_figs *out, char *why, size_t why_size)
{
    char args[256];
    snprintf(args, sizeof args,
             " --n %zu --n-map1000 %zu --m %zu --big %zu --starts %zu "
             "--warmup %zu --cpu-tasks %d --cpu-ms %g --workers %d",
             a->n, a->n_map1000, a->m, a->big, a->starts, a->warm, CPU_TASKS,
             a->cpu_ms, WORKERS);
    for (int k = 0; k < M_COUNT; k++)
        out->v[k] = NAN;
    peer_status st =
        peer_run(args, info->version, sizeof info->version, on_peer_header,
                 info, on_peer_metric, out, why, why_size);
    if (st != PEER_OK)
        return st;
    for (int k = 0; k < M_COUNT; k++)
        if (metric_key[k] && !(out->v[k] > 0))
            return peer_incomplete(why, why_size);
    return PEER_OK;
}

/* ------------------------------------------------------------------------
 * Report
 * ---------------------------------------------------------------------- */

static const char *fmt_val(char *buf, size_t size, double v, unit u)
{
    if (isnan(v)) {
        snprintf(buf, size, "-");
        return buf;
    }
    switch (u) {
    case U_RATE:
        return fmt_rate(buf, size, v);
    case U_NS:
        snprintf(buf, size, "%.0f ns", v * 1e9);
        break;
    case U_US:
        snprintf(buf, size, "%.1f us", v * 1e6);
        break;
    case U_MS:
        snprintf(buf, size, "%.2f ms", v * 1e3);
        break;
    case U_S:
        snprintf(buf, size, "%.3f s", v);
        break;
    case U_X:
        snprintf(buf, size, "%.2fx", v);
        break;
    case U_N:
        snprintf(buf, size, "%.0f", v);
        break;
    }
    return buf;
}

/* ------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: bench_process [--quick] [-n N] [-m M] [-r ROUNDS]\n"
            "                     [--py-n N] [--py-m M] [--big-mib S]\n"
            "                     [--cpu-ms T] [--starts K] [--no-python]\n"
            "                     [--watchdog S] [--only LIST] [-v]\n"
            "  -n N         tiny tasks / map elements per run (default 100000)\n"
            "  -m M         round trips per latency run (default 5000)\n"
            "  -r ROUNDS    rounds; each figure is the median (default 5)\n"
            "  --py-n N     CPython tiny tasks and chunksize=1 map elements\n"
            "               (default N/20; its chunksize=1000 map uses N)\n"
            "  --py-m M     CPython round trips (default M/5)\n"
            "  --big-mib S  size of the bytes round trip in MiB (default 64)\n"
            "  --cpu-ms T   length of one CPU task in ms (default 100)\n"
            "  --starts K   start-up trials per round and mode (default 5)\n"
            "  --no-python  skip the CPython peer\n"
            "  --quick      tiny sizes, one round (smoke test)\n"
            "  --watchdog S exit 3 if one workload takes more than S seconds\n"
            "               (default 120; the CPython peer gets 5x that)\n"
            "  --only LIST  run only these workloads (comma-separated: tiny,\n"
            "               map1, map1000, rtt, start, big, cpu, cancel, prio)\n"
            "  -v           print every round\n"
            "env: CF_BENCH_PYTHON (interpreter, default python3),\n"
            "     CF_BENCH_PEER (peer script, default %s)\n",
            CF_BENCH_PEER_SCRIPT);
}

int main(int argc, char **argv)
{
    cf_process_init(argc, argv);

    bench_opts o = bench_opts_default(100000, 5000, 5);
    size_t big_mib = 64, starts = 5, cpu_ms = 100;
    bool big_set = false, cpu_set = false, starts_set = false;
    for (int i = 1; i < argc; i++) {
        if (bench_opt(&o, argc, argv, &i) ||
            opt_size("--big-mib", argc, argv, &i, &big_mib, &big_set) ||
            opt_size("--cpu-ms", argc, argv, &i, &cpu_ms, &cpu_set) ||
            opt_size("--starts", argc, argv, &i, &starts, &starts_set))
            continue;
        if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            g_only = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return 2;
    }
    bench_opts_finish(&o, 2000, 100, 30, 20, 5);
    size_t n = o.n, m = o.m, rounds = o.rounds, py_n = o.py_n, py_m = o.py_m;
    bool quick = o.quick, use_python = o.use_python, verbose = o.verbose;
    if (quick) { /* explicit options still win */
        big_mib = big_set ? big_mib : 1;
        cpu_ms = cpu_set ? cpu_ms : 5;
        starts = starts_set ? starts : 1;
    }
    if (starts > 64)
        die("--starts: at most 64");
    if (big_mib > 1000)
        die("--big-mib: at most 1000 (one value is at most 1 GiB)");
    size_t warm = quick ? 20 : 200;
    size_t big_size = big_mib << 20;

    size_t nfs = n > warm ? n : warm;
    if (nfs < CANCEL_K)
        nfs = CANCEL_K;
    cf_future **fs = xmalloc(nfs * sizeof *fs);
    cf_value *in = xmalloc((n > CANCEL_K ? n : CANCEL_K) * sizeof *in);
    double *samples = xmalloc(m * sizeof *samples);
    round_figs *cr = xmalloc(rounds * sizeof *cr);
    round_figs *cf = xmalloc(rounds * sizeof *cf); /* floors */
    round_figs *pr = xmalloc(rounds * sizeof *pr);

    peer_info info = {"?", "?", -1};
    peer_status pst = use_python ? PEER_OK : PEER_MISSING;
    char why[512] = "--no-python";
    size_t peer_rounds = 0;
    peer_args pa = {py_n, n, py_m, big_size, starts, quick ? 20 : 200,
                    (double)cpu_ms};

    printf("cfutures %d.%d.%d bench_process: %d usable CPUs, %d workers "
           "unless stated, start method exec unless stated\n",
           CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH,
           cf_usable_cpus(), WORKERS);
    printf("N=%zu tiny tasks / map elements, M=%zu round trips (CPython: "
           "N=%zu, chunksize=1000 map N=%zu, M=%zu), %zu MiB echo, %d x "
           "%zu ms CPU tasks, %zu start-up trials; %zu round%s%s%s\n",
           n, m, py_n, n, py_m, big_mib, CPU_TASKS, cpu_ms, starts, rounds,
           rounds == 1 ? "" : "s",
           use_python ? ", C and CPython alternating" : "",
           quick ? " (--quick: sizes too small to mean anything)" : "");
    fflush(stdout);

    make_labels(big_mib, cpu_ms);
    int cd_crash[2] = {0, 0}; /* exec, fork: signal of a crashed run */
    signal(SIGALRM, on_watchdog);
    phase("calibrating the CPU task", 1);
    uint64_t iters = calibrate_spin((double)cpu_ms);
    int64_t expect = (int64_t)spin(iters, 1);

    for (size_t r = 0; r < rounds; r++) {
        double *c = cr[r].v, *f = cf[r].v;
        for (int k = 0; k < M_COUNT; k++)
            c[k] = f[k] = NAN;
        if (runs("tiny")) {
            phase("tiny submit+collect", 1);
            c[M_TINY] = bench_tiny(n, warm, fs);
        }
        if (runs("map1")) {
            phase("map chunksize=1", 1);
            c[M_MAP1] = bench_map(n, 1, warm, fs, in);
        }
        if (runs("map1000")) {
            phase("map chunksize=1000", 1);
            c[M_MAP1000] = bench_map(n, 1000, warm, fs, in);
            c[M_MAP1000_PER] = 1.0 / c[M_MAP1000];
        }
        if (runs("rtt")) {
            phase("round trip", 1);
            c[M_RTT] = bench_round_trip(m, warm, samples);
        }
        if (runs("big")) {
            phase("bytes round trip", 1);
            big b = bench_big(big_size, fs);
            c[M_BIG_FIRST] = b.first;
            c[M_BIG] = b.rtt;
            f[M_BIG] = b.floor;
        }
        if (runs("cpu")) {
            phase("CPU batch, 1 worker", 1);
            c[M_CPU1] = bench_cpu(1, iters, expect, fs);
            phase("CPU batch, 2 workers", 1);
            c[M_CPU2] = bench_cpu(2, iters, expect, fs);
            c[M_CPU_SPEEDUP] = c[M_CPU1] / c[M_CPU2];
        }
        if (runs("cancel")) {
            phase("cancel the rest after FIRST_COMPLETED", 1);
            uint64_t iters1 = (uint64_t)((double)iters * CANCEL_MS / (double)cpu_ms) + 1;
            int64_t expect1 = (int64_t)spin(iters1, 1);
            c[M_CANCEL_REST] = bench_cancel_rest(iters1, expect1, fs, &c[M_CANCEL_RAN]);
            phase("map close after the first result", 1);
            c[M_MAP_CLOSE] = bench_map_close(iters1, expect1, fs, in);
        }
        if (runs("prio")) {
            phase("priorities", 2);
            /* Order alternating by round: with both runs all-default, the
             * second was about 5 % faster (median of 16 runs, load 3-5). */
            if (r % 2 == 0) {
                f[M_PRIO] = bench_prio(n, warm, fs, false);
                c[M_PRIO] = bench_prio(n, warm, fs, true);
            } else {
                c[M_PRIO] = bench_prio(n, warm, fs, true);
                f[M_PRIO] = bench_prio(n, warm, fs, false);
            }
        }

        if (pst == PEER_OK) {
            phase("CPython peer", 5);
            pst = run_peer(&pa, &info, &pr[peer_rounds], why, sizeof why);
            if (pst == PEER_OK) {
                /* CPython has one start method here (its default, fork):
                 * its start-up figures go on both the exec and fork rows. */
                double *pv = pr[peer_rounds].v;
                pv[M_MAP1000_PER] = 1.0 / pv[M_MAP1000];
                pv[M_START_FORK_FIRST] = pv[M_START_EXEC_FIRST];
                pv[M_START_FORK_CD] = pv[M_START_EXEC_CD];
                peer_rounds++;
            }
        }
        if (verbose) {
            char b1[32], b2[32], b3[32];
            printf("round %zu:\n", r + 1);
            for (int k = 0; k < M_COUNT; k++)
                printf("  %-40s cf %-12s CPython %-12s floor %s\n",
                       g_label[k], fmt_val(b1, 32, c[k], rows[k].u),
                       fmt_val(b2, 32,
                               pst == PEER_OK && peer_rounds
                                   ? pr[peer_rounds - 1].v[k]
                                   : NAN,
                               rows[k].u),
                       fmt_val(b3, 32, f[k], rows[k].u));
            fflush(stdout);
        }
    }
    /* What forks, last, after every round of the rest: a fork (the pipe
     * echo's child, the fork start method, bench_startup's child)
     * write-protects this process's heap, and each page then faults
     * again on its next write.  Run between the others, it made every
     * later map fault in all its memory afresh (chunksize=1000: ~1.8 us
     * per element against ~0.17 us; 31,000 page faults against 8,700 in
     * 4 rounds).  Round r's floor is still compared with round r's round
     * trip. */
    for (size_t r = 0; r < rounds && runs("rtt"); r++) {
        phase("pipe echo floor", 1);
        cf[r].v[M_RTT] = bench_pipe_echo(m, warm, samples);
    }
    for (size_t r = 0; r < rounds && runs("start"); r++) {
        double *c = cr[r].v;
        phase("start-up, exec", 1);
        startup s = bench_startup(CF_START_EXEC, starts);
        c[M_START_EXEC_FIRST] = s.first;
        c[M_START_EXEC_CD] = s.create_destroy;
        if (s.cd_signal)
            cd_crash[0] = s.cd_signal;
        phase("start-up, fork", 1);
        s = bench_startup(CF_START_FORK, starts);
        c[M_START_FORK_FIRST] = s.first;
        c[M_START_FORK_CD] = s.create_destroy;
        if (s.cd_signal)
            cd_crash[1] = s.cd_signal;
        if (verbose)
            printf("start-up, round %zu: exec %.2f / %.2f ms, fork %.2f / %.2f ms "
                   "(new + first result / new + destroy)\n",
                   r + 1, c[M_START_EXEC_FIRST] * 1e3, c[M_START_EXEC_CD] * 1e3,
                   c[M_START_FORK_FIRST] * 1e3, c[M_START_FORK_CD] * 1e3);
    }
    alarm(0);

    /* --- summaries: medians over rounds; ratios within each round ------ */
    summary sc[M_COUNT], sp[M_COUNT], sf[M_COUNT], xpy[M_COUNT], xfl[M_COUNT];
    double v[MAX_ROUNDS];
    for (int k = 0; k < M_COUNT; k++) {
        bool is_time = rows[k].u != U_RATE && rows[k].u != U_X && rows[k].u != U_N;
        for (size_t r = 0; r < rounds; r++)
            v[r] = cr[r].v[k];
        sc[k] = summarize(v, rounds);
        for (size_t r = 0; r < peer_rounds; r++)
            v[r] = pr[r].v[k];
        sp[k] = summarize(v, peer_rounds);
        for (size_t r = 0; r < rounds; r++)
            v[r] = cf[r].v[k];
        sf[k] = summarize(v, rounds);
        /* speed-up over CPython: higher is better for cfutures */
        bool no_py_ratio = rows[k].u == U_X || rows[k].u == U_N || k == M_CPU1 ||
                           k == M_CPU2;
        for (size_t r = 0; r < peer_rounds; r++)
            v[r] = no_py_ratio      ? NAN
                   : is_time        ? pr[r].v[k] / cr[r].v[k]
                                    : cr[r].v[k] / pr[r].v[k];
        xpy[k] = summarize(v, peer_rounds);
        for (size_t r = 0; r < rounds; r++)
            v[r] = cr[r].v[k] / cf[r].v[k];
        xfl[k] = summarize(v, rounds);
    }

    /* --- table -------------------------------------------------------- */
    printf("\n");
    if (peer_rounds)
        printf("CPython peer: %s %s, ProcessPoolExecutor(max_workers=%d), "
               "start method '%s' (the default there), %zu round%s\n",
               peer_python(), info.version, WORKERS, info.start_method,
               peer_rounds, peer_rounds == 1 ? "" : "s");
    else if (pst == PEER_MISSING)
        printf("CPython peer skipped (%s): C figures and floors only\n", why);
    else
        printf("CPython peer FAILED (%s)\n", why);
    printf("Figures: median over rounds; [min..max] = spread of the cfutures "
           "rounds.\n"
           "Ratios: computed within each round, then the median over rounds."
           "\n  vs CPython = how many times faster cfutures is (rate ratio, or "
           "CPython time / cfutures time)\n  cf/floor   = cfutures time / "
           "floor time of the same round\n"
           "Floors: round trip = 1-byte echo through a pipe pair to a forked "
           "child (median of M);\n        %zu MiB = memcpy into a "
           "preallocated, already-touched buffer and back (best of %d);\n"
           "        priorities = the same tiny calls, all at the default priority.\n\n",
           big_mib, BIG_REPS);

    char b[8][48], range[100];
    printf("%-36s %10s %-21s %10s %10s %9s %8s %-17s %s\n", "workload",
           "cfutures", "  [min..max]", "CPython", "floor", "vs CPython",
           "cf/floor", "target", "verdict");
    int misses = 0, passes = 0;
    for (int k = 0; k < M_COUNT; k++) {
        const row *rw = &rows[k];
        snprintf(range, sizeof range, "  [%s..%s]",
                 fmt_val(b[1], 48, sc[k].lo, rw->u),
                 fmt_val(b[2], 48, sc[k].hi, rw->u));
        double have = NAN;
        bool ok = false;
        switch (rw->tk) {
        case T_NONE:
            break;
        case T_VS_PY_MIN:
            have = xpy[k].med, ok = have >= rw->want;
            break;
        case T_FLOOR_MAX:
            have = xfl[k].med, ok = have <= rw->want;
            break;
        case T_ABS_MAX:
            have = sc[k].med, ok = have < rw->want;
            break;
        case T_ABS_MIN:
            have = sc[k].med, ok = have >= rw->want;
            break;
        }
        int crash = k == M_START_EXEC_CD   ? cd_crash[0]
                    : k == M_START_FORK_CD ? cd_crash[1]
                                           : 0;
        const char *verdict = crash            ? "CRASH"
                              : rw->tk == T_NONE ? ""
                              : isnan(have)    ? "n/a"
                              : ok             ? "PASS"
                                               : "MISS";
        if (crash && rw->tk != T_NONE)
            misses++;
        else if (rw->tk != T_NONE && !isnan(have))
            ok ? passes++ : misses++;
        printf("%-36s %10s %-21s %10s %10s %9s %8s %-17s %s\n", g_label[k],
               fmt_val(b[0], 48, sc[k].med, rw->u), range,
               fmt_val(b[3], 48, sp[k].med, rw->u),
               fmt_val(b[4], 48, sf[k].med, rw->u),
               fmt_x(b[5], 48, xpy[k].med, ""),
               fmt_x(b[6], 48, xfl[k].med, ""),
               rw->want_text, verdict);
    }
    printf("\nnotes:\n"
           "  - CPython's 'new + destroy' is ProcessPoolExecutor(2) then "
           "shutdown(): it starts no\n    process until the first submit, "
           "so it is not comparable with cfutures' row.\n"
           "  - CPython's start-up figures (its default start method, %s) "
           "are shown on both the exec and\n    the fork rows.\n"
           "  - The CPU task is calibrated separately in each language to "
           "take about %zu ms on one core\n    (C: %" PRIu64
           " iterations); compare the speed-ups, not the times.\n",
           peer_rounds ? info.start_method : "fork", cpu_ms, iters);
    for (int i = 0; i < 2; i++)
        if (cd_crash[i])
            printf("  - CRASH: cf_process_pool_new() + cf_executor_destroy() "
                   "with no call submitted\n    (start method %s) killed the "
                   "process with SIG%s in at least one round\n    (measured "
                   "in a forked child, so the benchmark went on).\n",
                   i == 0 ? "exec" : "fork", sigabbrev_np(cd_crash[i]));
    printf("\n%d PASS, %d MISS (a crash counts as a MISS)%s\n", passes, misses,
           quick ? " (--quick: verdicts are meaningless at these sizes)" : "");

    free(pr);
    free(cf);
    free(cr);
    free(samples);
    free(in);
    free(fs);
    if (cd_crash[0] || cd_crash[1])
        fprintf(stderr, "bench_process: the process pool crashed in "
                        "create+destroy (see the notes above)\n");
    return pst == PEER_FAILED || cd_crash[0] || cd_crash[1] ? 1 : 0;
}
