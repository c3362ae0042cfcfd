/* SPDX-License-Identifier: MIT */
/*
 * bench_thread.c - throughput and latency of the cfutures thread pool,
 * measured side by side with CPython's ThreadPoolExecutor and with a bare
 * condition-variable ping-pong between two threads (the floor for a
 * blocking hand-off).
 *
 * Workloads (the task returns its int64 argument + 1):
 *   submit+collect  N cf_submit() calls, then cf_future_result() on each
 *                   future in order and cf_future_release(); tasks/s.  All
 *                   N futures are in flight at once.  On a default-sized
 *                   pool (CF_AUTO) and on max_workers = 2.
 *   batched         the same N tasks on a default-sized pool, BATCH (4096)
 *                   at a time: submit a batch, collect and release it in
 *                   order, then the next batch; tasks/s.  At most BATCH
 *                   futures are alive at once, so their memory is reused
 *                   from one batch to the next.
 *   submit_many     the batched workload with each batch handed over in
 *                   one cf_submit_many() call; ns per task.
 *   map             cf_map() over an array of N CF_I64 values, then every
 *                   result through cf_map_next(); tasks/s.
 *   round trip      M times: submit one task, wait for its result, release
 *                   it; median / mean / p99 of one round trip in us.
 *   ping-pong       M round trips between two threads through one pthread
 *                   mutex and two condition variables; same statistics.
 *
 *   futex floor     M round trips between two threads through raw
 *                   FUTEX_WAIT/FUTEX_WAKE, nobody spinning.
 *   native peers    oneTBB (task_group), libuv (uv_queue_work) and GLib
 *                   (GThreadPool) on the all-in-flight, batched and round
 *                   trip workloads (native_peers.h); each is optional at
 *                   build time.  Per-task times and, per row, the ratio
 *                   cfutures / peer taken within each round.
 *   pinned          submit+collect all N in flight again, the submitting
 *                   thread on one CPU and the workers on the others.
 *   producers       4 threads submitting N/4 tasks each at once into one
 *                   default pool, each collecting its own; ns per task.
 *   fan-out         N/100 parents one after the other, each submitting
 *                   100 children to its own pool and waiting on them;
 *                   ns per child.
 *   CPU-bound       400 tasks of ~0.2 ms arithmetic on 1 worker, then on
 *                   one worker per CPU; the speed-up.
 *   priorities      the batched workload through cf_submit_with(), each
 *                   batch followed by one call the workers take last (of
 *                   the lowest priority when mixed), whose result is
 *                   awaited before the batch is collected (calls of mixed
 *                   priorities do not finish in submission order, so
 *                   collecting at once would not overlap with the workers
 *                   as it does for the FIFO), once with every call at the default
 *                   priority and once with half of them at priorities
 *                   -3..3 (seven priority lanes besides the default's, in
 *                   use throughout; the heap only takes calls when more
 *                   priorities are queued at once than there are lanes), back
 *                   to back in each round (the order alternating between
 *                   rounds); ns per task and the ratio mixed / all-default.
 *                   --priorities runs only this workload.
 *   chunked map     --map-chunked C runs only this: cf_map() with
 *                   chunksize C over N CF_I64 values on a 2-worker pool,
 *                   and the same calls through cf_submit_many() in
 *                   batches of C (the floor of a chunked map), back to
 *                   back in each round; ns per element and the ratio.
 *   memory          RSS growth per pending future with P (1,000,000)
 *                   futures queued behind a blocked worker; once, first,
 *                   in a child process with a fresh heap.
 *   idle CPU        CPU time of an idle default pool over S seconds (5),
 *                   and of a pool receiving one task every 1 ms; once per
 *                   run, before anything else starts threads.
 *
 * The CPython peer (peer_cpython.py) runs the same workloads with
 * concurrent.futures and reports through popen() as JSON lines.  The C
 * figures and the peer run alternately, round after round, so slow phases
 * of a noisy machine hit both; every figure printed is the median over the
 * rounds.  Results are checked; any wrong value or API error exits 1.
 *
 * Usage: bench_thread [--quick] [-n N] [-m M] [-r ROUNDS] [--py-n N]
 *                     [--py-m M] [--no-python] [--no-native] [--idle S]
 *                     [--no-future-cache] [--sweep FILE]
 *                     [--pending P] [--watchdog S] [-v]
 * A workload that makes no progress for --watchdog seconds (default 120)
 * ends the run with exit status 3 and the name of the stuck phase.
 * The interpreter is "python3" from PATH unless CF_BENCH_PYTHON names
 * another; CF_BENCH_PEER overrides the peer script's path.
 */
#ifndef CF_BENCH_PEER_SCRIPT
#define CF_BENCH_PEER_SCRIPT "bench/peer_cpython.py"
#endif
#define BENCH_NAME "bench_thread"
#include "bench_util.h"
#include "native_peers.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/resource.h>

/* Futures in flight per batch in the batched submit+collect workload (the
 * peer gets the same size through --batch). */
#define BATCH 4096
#define STR_(x) #x
#define STR(x) STR_(x)
#define BATCH_LABEL "submit+collect, batches of " STR(BATCH) ", default pool"

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

typedef struct lat_stats {
    double median_us, mean_us, p99_us;
} lat_stats;

/* Statistics of n samples in ns (sorts them).  Same definitions as the
 * peer: p99 is sorted[ceil(0.99 n) - 1]. */
static lat_stats lat_stats_of(double *ns, size_t n)
{
    lat_stats s;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += ns[i];
    s.median_us = median_of(ns, n) / 1e3;
    s.mean_us = sum / (double)n / 1e3;
    size_t k = (size_t)ceil(0.99 * (double)n);
    s.p99_us = ns[k > 0 ? k - 1 : 0] / 1e3;
    return s;
}

/* ------------------------------------------------------------------------
 * The task and the cfutures workloads
 * ---------------------------------------------------------------------- */

static int inc_task(cf_call *call)
{
    return cf_return_i64(call, cf_arg_i64(call, 0) + 1);
}

static cf_executor *new_pool(int max_workers)
{
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = max_workers;
    cf_executor *ex = NULL;
    CHECK(cf_thread_pool_new(&ex, &o));
    return ex;
}

/* Starts the pool's threads (one per submit that finds no idle thread)
 * before anything is timed; the peer does the same. */
static void warm_up(cf_executor *ex, cf_future **fs, size_t count)
{
    for (size_t i = 0; i < count; i++)
        CHECK(cf_submit(ex, inc_task, CF_ARGS(cf_i64((int64_t)i)), &fs[i]));
    for (size_t i = 0; i < count; i++) {
        int64_t r = 0;
        CHECK(cf_future_result_i64(fs[i], CF_FOREVER, &r));
        CHECK(cf_future_release(fs[i]));
    }
}

/* Minor page faults of the whole process (all threads) so far. */
static double minor_faults(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return NAN;
    return (double)ru.ru_minflt;
}

/* Waits for fs[0..count), checks that fs[j] returned start + j + 1 and
 * releases it. */
static void collect(const char *who, cf_future **fs, size_t count, size_t start)
{
    for (size_t j = 0; j < count; j++) {
        int64_t r = 0;
        CHECK(cf_future_result_i64(fs[j], CF_FOREVER, &r));
        if (r != (int64_t)(start + j) + 1)
            die("%s: task %zu returned %" PRId64, who, start + j, r);
        CHECK(cf_future_release(fs[j]));
    }
}

typedef struct tput {
    double rate;     /* tasks per second, whole workload */
    double submit_s; /* time spent in the submit phase (0 for map) */
    double total_s;
    double faults;   /* minor page faults per 1000 tasks, timed part */
} tput;

/* Warms `ex` up, then times n cf_submit() calls all in flight and their
 * collection. */
static tput submit_collect_on(cf_executor *ex, size_t n, size_t warm, cf_future **fs)
{
    warm_up(ex, fs, warm < n ? warm : n);

    double pf0 = minor_faults();
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++)
        CHECK(cf_submit(ex, inc_task, CF_ARGS(cf_i64((int64_t)i)), &fs[i]));
    uint64_t t1 = now_ns();
    collect("submit", fs, n, 0);
    uint64_t t2 = now_ns();
    double pf1 = minor_faults();

    tput t = {(double)n / ((double)(t2 - t0) / 1e9), (double)(t1 - t0) / 1e9,
              (double)(t2 - t0) / 1e9, (pf1 - pf0) * 1000.0 / (double)n};
    return t;
}

static tput bench_submit_collect(int max_workers, size_t n, size_t warm,
                                 cf_future **fs)
{
    cf_executor *ex = new_pool(max_workers);
    tput t = submit_collect_on(ex, n, warm, fs);
    CHECK(cf_executor_destroy(ex));
    return t;
}

/* submit+collect in batches of at most `batch` futures: submit a batch,
 * collect and release it in order, then the next one. */
static tput bench_submit_collect_batched(int max_workers, size_t n,
                                         size_t batch, size_t warm,
                                         cf_future **fs)
{
    cf_executor *ex = new_pool(max_workers);
    warm_up(ex, fs, warm < n ? warm : n);

    uint64_t submit_ns = 0;
    double pf0 = minor_faults();
    uint64_t t0 = now_ns();
    for (size_t start = 0; start < n; start += batch) {
        size_t count = n - start < batch ? n - start : batch;
        uint64_t s0 = now_ns();
        for (size_t j = 0; j < count; j++)
            CHECK(cf_submit(ex, inc_task,
                            CF_ARGS(cf_i64((int64_t)(start + j))), &fs[j]));
        submit_ns += now_ns() - s0;
        collect("batched submit", fs, count, start);
    }
    uint64_t t1 = now_ns();
    double pf1 = minor_faults();

    CHECK(cf_executor_destroy(ex));
    tput t = {(double)n / ((double)(t1 - t0) / 1e9), (double)submit_ns / 1e9,
              (double)(t1 - t0) / 1e9, (pf1 - pf0) * 1000.0 / (double)n};
    return t;
}

/* The batched workload through cf_submit_with(): every call at the
 * default priority, or (mixed) every other call at a priority of -3..3.
 * ns per task. */
static double bench_priorities(size_t n, size_t batch, size_t warm, cf_future **fs,
                               bool mixed)
{
    cf_executor *ex = new_pool(CF_AUTO);
    warm_up(ex, fs, warm < n ? warm : n);
    cf_submit_options so;
    cf_submit_options_init(&so);
    uint64_t t0 = now_ns();
    for (size_t start = 0; start < n; start += batch) {
        size_t count = n - start < batch ? n - start : batch;
        for (size_t j = 0; j < count; j++) {
            size_t i = start + j;
            so.priority = mixed && (i & 1) ? (int)(i % 7) - 3 : CF_PRIORITY_DEFAULT;
            CHECK(cf_submit_with(ex, &so, inc_task, CF_ARGS(cf_i64((int64_t)i)), &fs[j]));
        }
        /* A last call that workers take after every other of the batch
         * (lowest priority when mixed): once it is done the batch nearly
         * is, whatever order the calls ran in, and is collected in
         * submission order.  Collecting in that order straight away would
         * overlap with the workers only when they run in that order. */
        so.priority = mixed ? CF_PRIORITY_MIN : CF_PRIORITY_DEFAULT;
        cf_future *last = NULL;
        CHECK(cf_submit_with(ex, &so, inc_task, CF_ARGS(cf_i64(0)), &last));
        CHECK(cf_future_result(last, CF_FOREVER, NULL));
        CHECK(cf_future_release(last));
        collect(mixed ? "mixed priorities" : "default priority", fs, count, start);
    }
    uint64_t t1 = now_ns();
    CHECK(cf_executor_destroy(ex));
    return (double)(t1 - t0) / (double)n;
}

/* Both priority workloads, in the order given by `round` (see above). */
static void run_priorities(size_t n, size_t warm, cf_future **fs, size_t round,
                           double *default_ns, double *mixed_ns)
{
    phase("priorities", 2);
    for (int k = 0; k < 2; k++) {
        bool mixed = (k == 0) == (round % 2 == 1);
        double ns = bench_priorities(n, BATCH, warm, fs, mixed);
        *(mixed ? mixed_ns : default_ns) = ns;
    }
}

/* Prints the priorities row: medians and the median per-round ratio. */
static void print_priorities(const double *def, const double *mix, size_t rounds)
{
    double x[MAX_ROUNDS];
    for (size_t r = 0; r < rounds; r++)
        x[r] = mix[r] / def[r];
    summary sx = summarize(x, rounds);
    printf("priorities, batches of " STR(BATCH) ", default pool: all default %.0f ns/task, "
           "half at -3..3 %.0f ns/task\n",
           summarize(def, rounds).med, summarize(mix, rounds).med);
    printf("  %s  %-46s %.3fx [%.3fx..%.3fx] (want <= 1.10x)\n",
           sx.med <= 1.10 ? "PASS" : "MISS", "mixed / all-default priority", sx.med, sx.lo,
           sx.hi);
}

/* cf_map() over in[0..n) with `chunksize` on a 2-worker pool, every
 * result through cf_map_next(); or (as_many) the same calls handed over
 * through cf_submit_many() in batches of `chunksize`, all in flight, then
 * collected in order: the floor of a chunked map on this engine.  ns per
 * element. */
static double bench_map_chunked(size_t n, size_t chunksize, size_t warm, cf_future **fs,
                                cf_value *in, bool as_many)
{
    cf_executor *ex = new_pool(2);
    warm_up(ex, fs, warm < n ? warm : n);
    for (size_t i = 0; i < n; i++)
        in[i] = cf_i64((int64_t)i);
    uint64_t t0 = now_ns();
    if (as_many) {
        for (size_t start = 0; start < n; start += chunksize) {
            size_t count = n - start < chunksize ? n - start : chunksize;
            CHECK(cf_submit_many(ex, inc_task, in + start, 1, count, fs + start));
        }
        collect("chunked submit_many", fs, n, 0);
    } else {
        cf_map_input input = cf_input_array(in, n);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = (int)chunksize;
        cf_map_iter *it = NULL;
        CHECK(cf_map(ex, inc_task, &input, 1, &mo, &it));
        for (size_t i = 0; i < n; i++) {
            const cf_value *v = NULL;
            CHECK(cf_map_next(it, &v, NULL));
            if (!v || v->kind != CF_I64 || v->as.i64 != (int64_t)i + 1)
                die("chunked map: element %zu has a wrong result", i);
        }
        map_close_done(it, n);
    }
    uint64_t t1 = now_ns();
    CHECK(cf_executor_destroy(ex));
    return (double)(t1 - t0) / (double)n;
}

/* --map-chunked: both, back to back in each round (order alternating),
 * then medians and the median per-round ratio map / submit_many. */
static void run_map_chunked(size_t n, size_t chunksize, size_t warm, cf_future **fs,
                            cf_value *in, size_t rounds, bool verbose)
{
    double map[MAX_ROUNDS], many[MAX_ROUNDS], x[MAX_ROUNDS];
    for (size_t r = 0; r < rounds; r++) {
        phase("chunked map", 2);
        for (int k = 0; k < 2; k++) {
            bool as_many = (k == 0) == (r % 2 == 1);
            double ns = bench_map_chunked(n, chunksize, warm, fs, in, as_many);
            *(as_many ? &many[r] : &map[r]) = ns;
        }
        x[r] = map[r] / many[r];
        if (verbose)
            printf("round %zu: map %.0f ns/element, submit_many %.0f ns/element\n", r, map[r],
                   many[r]);
    }
    summary sm = summarize(map, rounds), sn = summarize(many, rounds), sx = summarize(x, rounds);
    printf("map chunksize=%zu, 2 workers: %.0f ns/element [%.0f..%.0f]; same calls through "
           "cf_submit_many in batches of %zu: %.0f ns/element [%.0f..%.0f]\n",
           chunksize, sm.med, sm.lo, sm.hi, chunksize, sn.med, sn.lo, sn.hi);
    printf("  map / submit_many %.3fx [%.3fx..%.3fx]\n", sx.med, sx.lo, sx.hi);
}

/* The batched workload through cf_submit_many(): each batch of `batch`
 * calls in one call (one lock, one wake-up), then collected in order. */
static double bench_submit_many(size_t n, size_t batch, size_t warm, cf_future **fs,
                                cf_value *in)
{
    cf_executor *ex = new_pool(CF_AUTO);
    warm_up(ex, fs, warm < n ? warm : n);
    for (size_t i = 0; i < n; i++)
        in[i] = cf_i64((int64_t)i);
    uint64_t t0 = now_ns();
    for (size_t start = 0; start < n; start += batch) {
        size_t count = n - start < batch ? n - start : batch;
        CHECK(cf_submit_many(ex, inc_task, in + start, 1, count, fs));
        collect("submit_many", fs, count, start);
    }
    uint64_t t1 = now_ns();
    CHECK(cf_executor_destroy(ex));
    return (double)(t1 - t0) / (double)n;
}

static tput bench_map(size_t n, size_t warm, cf_future **fs, cf_value *in)
{
    cf_executor *ex = new_pool(CF_AUTO);
    warm_up(ex, fs, warm < n ? warm : n);
    for (size_t i = 0; i < n; i++)
        in[i] = cf_i64((int64_t)i);
    cf_map_input input = cf_input_array(in, n);

    double pf0 = minor_faults();
    uint64_t t0 = now_ns();
    cf_map_iter *it = NULL;
    CHECK(cf_map(ex, inc_task, &input, 1, NULL, &it));
    for (size_t i = 0; i < n; i++) {
        const cf_value *v = NULL;
        CHECK(cf_map_next(it, &v, NULL));
        if (!v || v->kind != CF_I64 || v->as.i64 != (int64_t)i + 1)
            die("map: element %zu has a wrong result", i);
    }
    map_close_done(it, n);
    uint64_t t1 = now_ns();
    double pf1 = minor_faults();

    CHECK(cf_executor_destroy(ex));
    tput t = {(double)n / ((double)(t1 - t0) / 1e9), 0,
              (double)(t1 - t0) / 1e9, (pf1 - pf0) * 1000.0 / (double)n};
    return t;
}

static lat_stats bench_round_trip(size_t m, size_t warm, double *samples)
{
    cf_executor *ex = new_pool(CF_AUTO);
    for (size_t j = 0; j < warm; j++) {
        cf_future *f = NULL;
        int64_t r = 0;
        CHECK(cf_submit(ex, inc_task, CF_ARGS(cf_i64(0)), &f));
        CHECK(cf_future_result_i64(f, CF_FOREVER, &r));
        CHECK(cf_future_release(f));
    }
    for (size_t j = 0; j < m; j++) {
        cf_future *f = NULL;
        int64_t r = 0;
        uint64_t t0 = now_ns();
        CHECK(cf_submit(ex, inc_task, CF_ARGS(cf_i64((int64_t)j)), &f));
        CHECK(cf_future_result_i64(f, CF_FOREVER, &r));
        CHECK(cf_future_release(f));
        uint64_t t1 = now_ns();
        samples[j] = (double)(t1 - t0);
        if (r != (int64_t)j + 1)
            die("round trip: task %zu returned %" PRId64, j, r);
    }
    CHECK(cf_executor_destroy(ex));
    return lat_stats_of(samples, m);
}

/* ------------------------------------------------------------------------
 * The floor: condition-variable ping-pong between two threads
 * ---------------------------------------------------------------------- */

typedef struct pingpong {
    pthread_mutex_t mu;
    pthread_cond_t to_server, to_client;
    uint64_t req, resp;
    bool stop;
} pingpong;

static void *pingpong_server(void *arg)
{
    pingpong *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->req == p->resp && !p->stop)
            pthread_cond_wait(&p->to_server, &p->mu);
        if (p->stop)
            break;
        p->resp = p->req;
        pthread_cond_signal(&p->to_client);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void pingpong_once(pingpong *p)
{
    pthread_mutex_lock(&p->mu);
    p->req++;
    pthread_cond_signal(&p->to_server);
    while (p->resp != p->req)
        pthread_cond_wait(&p->to_client, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static lat_stats bench_pingpong(size_t m, size_t warm, double *samples)
{
    pingpong p;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.to_server, NULL);
    pthread_cond_init(&p.to_client, NULL);
    p.req = p.resp = 0;
    p.stop = false;
    pthread_t th;
    int err = pthread_create(&th, NULL, pingpong_server, &p);
    if (err)
        die("pthread_create: %s", strerror(err));

    for (size_t j = 0; j < warm; j++)
        pingpong_once(&p);
    for (size_t j = 0; j < m; j++) {
        uint64_t t0 = now_ns();
        pingpong_once(&p);
        samples[j] = (double)(now_ns() - t0);
    }

    pthread_mutex_lock(&p.mu);
    p.stop = true;
    pthread_cond_signal(&p.to_server);
    pthread_mutex_unlock(&p.mu);
    pthread_join(th, NULL);
    pthread_cond_destroy(&p.to_client);
    pthread_cond_destroy(&p.to_server);
    pthread_mutex_destroy(&p.mu);
    return lat_stats_of(samples, m);
}

/* For reference only: the same ping-pong through two atomic counters with
 * both threads spinning (yielding after a while, in case the two threads
 * share one CPU).  The cost of a hand-off when nobody sleeps. */
typedef struct spinpong {
    _Atomic uint64_t req, resp;
    atomic_bool stop;
} spinpong;

static void spin_pause(unsigned *spins)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if (++*spins >= 200) {
        *spins = 0;
        sched_yield();
    }
}

static void *spinpong_server(void *arg)
{
    spinpong *p = arg;
    uint64_t last = 0;
    unsigned spins = 0;
    while (!atomic_load_explicit(&p->stop, memory_order_relaxed)) {
        uint64_t r = atomic_load_explicit(&p->req, memory_order_acquire);
        if (r != last) {
            last = r;
            atomic_store_explicit(&p->resp, r, memory_order_release);
            spins = 0;
        } else {
            spin_pause(&spins);
        }
    }
    return NULL;
}

static void spinpong_once(spinpong *p)
{
    uint64_t r = atomic_fetch_add_explicit(&p->req, 1, memory_order_acq_rel) + 1;
    unsigned spins = 0;
    while (atomic_load_explicit(&p->resp, memory_order_acquire) != r)
        spin_pause(&spins);
}

static lat_stats bench_spinpong(size_t m, size_t warm, double *samples)
{
    spinpong p;
    atomic_init(&p.req, 0);
    atomic_init(&p.resp, 0);
    atomic_init(&p.stop, false);
    pthread_t th;
    int err = pthread_create(&th, NULL, spinpong_server, &p);
    if (err)
        die("pthread_create: %s", strerror(err));
    for (size_t j = 0; j < warm; j++)
        spinpong_once(&p);
    for (size_t j = 0; j < m; j++) {
        uint64_t t0 = now_ns();
        spinpong_once(&p);
        samples[j] = (double)(now_ns() - t0);
    }
    atomic_store(&p.stop, true);
    pthread_join(th, NULL);
    return lat_stats_of(samples, m);
}

static lat_stats bench_futex(size_t m, size_t warm, double *samples)
{
    futex_pingpong(m, warm, samples);
    for (size_t j = 0; j < m; j++)
        if (isnan(samples[j]))
            die("futex ping-pong: cannot start its thread");
    return lat_stats_of(samples, m);
}

/* ------------------------------------------------------------------------
 * Native peers: oneTBB, libuv, GLib (native_peers.h)
 * ---------------------------------------------------------------------- */

enum { NP_MAX = 4 };

typedef struct native_round {
    double all_ns, batch_ns; /* per task */
    double all_submit;       /* share of the all-in-flight time spent submitting */
    lat_stats rtt;
    bool have;
} native_round;

static void check_out(const char *who, const int64_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (out[i] != (int64_t)i + 1)
            die("%s: task %zu stored %" PRId64, who, i, out[i]);
}

/* The peers of one round.  Each runtime is created and warmed up like the
 * pool at the start of the round, and each of its figures is taken right
 * beside cfutures' figure of the same row (see the round loop): this host
 * goes through phases in which cross-core hand-offs cost three to four
 * times as much, sometimes within a minute, so only figures taken moments
 * apart make a fair ratio. */
typedef struct peer_set {
    const native_peer *peers;
    size_t count;   /* entries in peers[] and rt[] used */
    void *rt[NP_MAX];
    native_round *res; /* the round's results, one per peer */
    size_t n, m, warm;
    int64_t *out;
    double *samples;
} peer_set;

/* After a peer's run: a runtime's threads may still spin looking for
 * work for a while after it finished; give them time to go to sleep, so
 * they do not run beside the next workload timed.  Nothing to wake: a
 * plain timed sleep. */
static void sleep_until_ns(uint64_t t);

static void settle(void)
{
    sleep_until_ns(now_ns() + 20 * 1000 * 1000);
}

static void peers_open(peer_set *ps)
{
    bool opened = false;
    for (size_t k = 0; k < ps->count; k++) {
        memset(&ps->res[k], 0, sizeof ps->res[k]);
        ps->rt[k] = NULL;
        if (ps->peers[k].missing)
            continue;
        const native_peer *np = &ps->peers[k];
        void *rt = np->open();
        if (!rt)
            die("%s: cannot create the runtime", np->name);
        ps->rt[k] = rt;
        ps->res[k].have = true;
        opened = true;
    }
    if (opened)
        settle();
}

static void peer_warm_up(peer_set *ps, size_t k)
{
    uint64_t sub = 0;
    memset(ps->out, 0, ps->n * sizeof *ps->out);
    if (ps->peers[k].run(ps->rt[k], ps->warm < ps->n ? ps->warm : ps->n, ps->n, ps->out,
                         &sub) == 0)
        die("%s: warm-up failed", ps->peers[k].name);
}

static void peers_close(peer_set *ps)
{
    for (size_t k = 0; k < ps->count; k++)
        if (ps->rt[k])
            ps->peers[k].close(ps->rt[k]);
}

/* Every peer's all-in-flight run (batch = n) or batched run, each
 * followed by settle(). */
static void peers_run(peer_set *ps, bool batched)
{
    for (size_t k = 0; k < ps->count; k++) {
        if (!ps->rt[k])
            continue;
        const native_peer *np = &ps->peers[k];
        uint64_t sub = 0;
        /* Warmed up right before, like the pool (whose threads start in
         * its warm-up): the runtime's threads are awake when timing
         * starts, whatever settle() let them do since. */
        peer_warm_up(ps, k);
        memset(ps->out, 0, ps->n * sizeof *ps->out);
        uint64_t ns = np->run(ps->rt[k], ps->n, batched ? BATCH : ps->n, ps->out, &sub);
        if (ns == 0)
            die("%s: %s run failed", np->name, batched ? "batched" : "all-in-flight");
        check_out(np->name, ps->out, ps->n);
        if (batched) {
            ps->res[k].batch_ns = (double)ns / (double)ps->n;
        } else {
            ps->res[k].all_ns = (double)ns / (double)ps->n;
            ps->res[k].all_submit = (double)sub / (double)ns;
        }
        settle();
    }
}

static void peers_round_trip(peer_set *ps)
{
    for (size_t k = 0; k < ps->count; k++) {
        if (!ps->rt[k])
            continue;
        const native_peer *np = &ps->peers[k];
        size_t m = ps->m;
        np->round_trip(ps->rt[k], ps->warm < m ? ps->warm : m, ps->samples);
        np->round_trip(ps->rt[k], m, ps->samples);
        for (size_t j = 0; j < m; j++)
            if (isnan(ps->samples[j]))
                die("%s: round trip failed", np->name);
        ps->res[k].rtt = lat_stats_of(ps->samples, m);
        settle();
    }
}

/* ------------------------------------------------------------------------
 * Sweep: per-task cost against tasks in flight, every runtime
 * ---------------------------------------------------------------------- */

/* For in-flight sizes k from 1 to n: `total` tasks (at least k) submitted
 * k at a time and collected, on cfutures' default pool, on a pool of one
 * worker fewer than the CPUs (at least one: as many threads as CPUs with
 * the submitting thread, oneTBB's count) and on each peer, one after the
 * other for each k; median ns per task over `rounds`.  Writes one line
 * per k to `path` ("k cfutures cfutures_lean oneTBB libuv GLib", "NaN"
 * for a peer that is skipped) for plot_sweep.gp, and prints them. */
static void run_sweep(const char *path, size_t n, size_t rounds, bool use_native,
                      const native_peer *peers, size_t npeers, cf_future **fs, int64_t *out)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die("%s: %s", path, strerror(errno));
    int lean = cf_usable_cpus() > 1 ? cf_usable_cpus() - 1 : 1;
    fprintf(f, "# in_flight cfutures cfutures_lean");
    printf("\nsweep: ns per task against tasks in flight (median of %zu rounds);\n"
           "cf lean: a pool of %d worker%s (CPUs - 1, at least 1)\n%10s %10s %10s",
           rounds, lean, lean == 1 ? "" : "s", "in flight", "cfutures", "cf lean");
    for (size_t k = 0; k < npeers; k++) {
        fprintf(f, " %s", peers[k].name);
        printf(" %10s", peers[k].name);
    }
    fprintf(f, "\n");
    printf("\n");
    static const size_t sizes[] = {1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t k = sizes[si] < n ? sizes[si] : n;
        size_t total = k > 65536 ? k : 65536;
        if (total > n)
            total = n - n % k;
        double cf[2][MAX_ROUNDS], pv[NP_MAX][MAX_ROUNDS];
        for (size_t r = 0; r < rounds; r++) {
            phase("sweep", 2);
            for (int c = 0; c < 2; c++) {
                cf_executor *ex = new_pool(c == 0 ? CF_AUTO : lean);
                warm_up(ex, fs, 1000 < n ? 1000 : n);
                uint64_t t0 = now_ns();
                for (size_t start = 0; start < total; start += k) {
                    for (size_t j = 0; j < k; j++)
                        CHECK(cf_submit(ex, inc_task, CF_ARGS(cf_i64((int64_t)(start + j))),
                                        &fs[j]));
                    collect("sweep", fs, k, start);
                }
                cf[c][r] = (double)(now_ns() - t0) / (double)total;
                CHECK(cf_executor_destroy(ex));
            }
            for (size_t p = 0; p < npeers && p < NP_MAX; p++) {
                pv[p][r] = NAN;
                if (!use_native || peers[p].missing)
                    continue;
                void *rt = peers[p].open();
                if (!rt)
                    die("%s: cannot create the runtime", peers[p].name);
                uint64_t sub = 0;
                peers[p].run(rt, 1000 < n ? 1000 : n, n, out, &sub);
                uint64_t ns = peers[p].run(rt, total, k, out, &sub);
                if (ns == 0)
                    die("%s: sweep run failed", peers[p].name);
                check_out(peers[p].name, out, total);
                pv[p][r] = (double)ns / (double)total;
                peers[p].close(rt);
            }
        }
        fprintf(f, "%zu %.1f %.1f", k, summarize(cf[0], rounds).med,
                summarize(cf[1], rounds).med);
        printf("%10zu %10.1f %10.1f", k, summarize(cf[0], rounds).med,
               summarize(cf[1], rounds).med);
        for (size_t p = 0; p < npeers && p < NP_MAX; p++) {
            double m = summarize(pv[p], rounds).med;
            fprintf(f, isnan(m) ? " NaN" : " %.1f", m);
            printf(" %10.1f", m);
        }
        fprintf(f, "\n");
        printf("\n");
        fflush(stdout);
        if (k == n)
            break;
    }
    fclose(f);
    printf("sweep written to %s\n", path);
}

/* ------------------------------------------------------------------------
 * Scaling: producers, fan-out, CPU-bound speed-up
 * ---------------------------------------------------------------------- */

enum { PRODUCERS = 4, FANOUT = 100 };

typedef struct producer {
    cf_executor *ex;
    pthread_barrier_t *bar;
    size_t start, count;
    cf_future **fs;
} producer;

static void *producer_main(void *arg)
{
    producer *pr = arg;
    pthread_barrier_wait(pr->bar);
    for (size_t j = 0; j < pr->count; j++)
        CHECK(cf_submit(pr->ex, inc_task, CF_ARGS(cf_i64((int64_t)(pr->start + j))),
                        &pr->fs[j]));
    collect("producers", pr->fs, pr->count, pr->start);
    return NULL;
}

/* The all-in-flight row with the submitting thread on the first CPU it
 * may use and every worker on the others (set by the pool's initializer):
 * what the row costs when no worker shares the submitter's CPU (see
 * bench/README.md, "Where the spread of the all-in-flight row comes
 * from").  The library sets no affinity itself.  Returns ns per task, or
 * NAN when the process may use fewer than 2 CPUs or an affinity call
 * fails; the calling thread's affinity is restored. */
static cpu_set_t pin_workers_set;

static int pin_worker(void *arg)
{
    (void)arg;
    return pthread_setaffinity_np(pthread_self(), sizeof pin_workers_set, &pin_workers_set);
}

static double bench_pinned(size_t n, size_t warm, cf_future **fs)
{
    cpu_set_t old, mine;
    if (pthread_getaffinity_np(pthread_self(), sizeof old, &old) != 0 || CPU_COUNT(&old) < 2)
        return NAN;
    CPU_ZERO(&mine);
    CPU_ZERO(&pin_workers_set);
    bool first = true;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &old))
            continue;
        if (first)
            CPU_SET(c, &mine);
        else
            CPU_SET(c, &pin_workers_set);
        first = false;
    }
    if (pthread_setaffinity_np(pthread_self(), sizeof mine, &mine) != 0)
        return NAN;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.initializer = pin_worker;
    cf_executor *ex = NULL;
    double ns = NAN;
    if (cf_thread_pool_new(&ex, &o) == CF_OK) {
        ns = 1e9 / submit_collect_on(ex, n, warm, fs).rate;
        CHECK(cf_executor_destroy(ex));
    }
    CHECK(pthread_setaffinity_np(pthread_self(), sizeof old, &old) == 0 ? CF_OK : CF_ESYS);
    return ns;
}

/* PRODUCERS threads submit n/PRODUCERS tasks each at once into one default
 * pool, each then collecting its own; ns per task. */
static double bench_producers(size_t n, size_t warm, cf_future **fs)
{
    cf_executor *ex = new_pool(CF_AUTO);
    warm_up(ex, fs, warm < n ? warm : n);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, PRODUCERS + 1);
    producer prs[PRODUCERS];
    pthread_t th[PRODUCERS];
    size_t each = n / PRODUCERS;
    for (int k = 0; k < PRODUCERS; k++) {
        prs[k] = (producer){ex, &bar, (size_t)k * each, each, fs + (size_t)k * each};
        if (pthread_create(&th[k], NULL, producer_main, &prs[k]) != 0)
            die("pthread_create failed");
    }
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&bar);
    for (int k = 0; k < PRODUCERS; k++)
        pthread_join(th[k], NULL);
    uint64_t t1 = now_ns();
    pthread_barrier_destroy(&bar);
    CHECK(cf_executor_destroy(ex));
    return (double)(t1 - t0) / (double)(each * PRODUCERS);
}

/* A task that submits FANOUT children to its own pool (argument 0) and
 * returns the sum of their results. */
static int fanout_task(cf_call *call)
{
    cf_executor *ex = cf_arg_ptr(call, 0);
    int64_t base = cf_arg_i64(call, 1), sum = 0;
    cf_future *kids[FANOUT];
    for (int i = 0; i < FANOUT; i++)
        if (cf_submit(ex, inc_task, CF_ARGS(cf_i64(base + i)), &kids[i]) != CF_OK)
            return cf_raise(call, 1, "FanOutError", cf_last_error_message());
    for (int i = 0; i < FANOUT; i++) {
        int64_t v = 0;
        if (cf_future_result_i64(kids[i], CF_FOREVER, &v) != CF_OK)
            return cf_raise(call, 1, "FanOutError", cf_last_error_message());
        sum += v;
        cf_future_release(kids[i]);
    }
    return cf_return_i64(call, sum);
}

/* n/FANOUT parents one after the other, each fanning out to FANOUT children
 * through the default pool's own futures (one parent at a time, so the
 * children always find free workers); ns per child. */
static double bench_fanout(size_t n, size_t warm, cf_future **fs)
{
    cf_executor *ex = new_pool(CF_AUTO);
    warm_up(ex, fs, warm < n ? warm : n);
    size_t parents = n / FANOUT ? n / FANOUT : 1;
    uint64_t t0 = now_ns();
    for (size_t k = 0; k < parents; k++) {
        cf_future *f = NULL;
        int64_t base = (int64_t)(k * FANOUT), v = 0;
        CHECK(cf_submit(ex, fanout_task, CF_ARGS(cf_ptr(ex), cf_i64(base)), &f));
        CHECK(cf_future_result_i64(f, CF_FOREVER, &v));
        if (v != FANOUT * base + FANOUT * (FANOUT + 1) / 2)
            die("fan-out: parent %zu returned %" PRId64, k, v);
        CHECK(cf_future_release(f));
    }
    uint64_t t1 = now_ns();
    CHECK(cf_executor_destroy(ex));
    return (double)(t1 - t0) / (double)(parents * FANOUT);
}

/* About `iters` rounds of integer arithmetic, no memory traffic. */
static int spin_task(cf_call *call)
{
    uint64_t x = (uint64_t)cf_arg_i64(call, 0), iters = (uint64_t)cf_arg_i64(call, 1);
    for (uint64_t i = 0; i < iters; i++)
        x = x * 6364136223846793005u + 1442695040888963407u;
    return cf_return_i64(call, (int64_t)(x & 0x7fffffff));
}

/* Seconds to run `tasks` CPU-bound tasks on a pool of `workers`. */
static double bench_cpu(int workers, size_t tasks, int64_t iters, cf_future **fs)
{
    cf_executor *ex = new_pool(workers);
    warm_up(ex, fs, (size_t)workers * 4);
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < tasks; i++)
        CHECK(cf_submit(ex, spin_task, CF_ARGS(cf_i64((int64_t)i), cf_i64(iters)), &fs[i]));
    for (size_t i = 0; i < tasks; i++) {
        int64_t v = 0;
        CHECK(cf_future_result_i64(fs[i], CF_FOREVER, &v));
        CHECK(cf_future_release(fs[i]));
    }
    uint64_t t1 = now_ns();
    CHECK(cf_executor_destroy(ex));
    return (double)(t1 - t0) / 1e9;
}

/* ------------------------------------------------------------------------
 * Memory per pending future, idle CPU
 * ---------------------------------------------------------------------- */

static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f)
        return NAN;
    int got = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return got == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : NAN;
}

/* A gate the first task of the memory workload waits on, so every later
 * call stays queued (pending) until the gate opens. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
} gate;
static gate g_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};

static int gate_task(cf_call *call)
{
    pthread_mutex_lock(&g_gate.mu);
    /* Woken by the main thread's broadcast in bench_memory(). */
    while (!g_gate.open)
        pthread_cond_wait(&g_gate.cv, &g_gate.mu);
    pthread_mutex_unlock(&g_gate.mu);
    return cf_return_i64(call, 0);
}

/* Bytes of resident memory each of p pending futures costs: a one-worker
 * pool blocked on a gate, then p submits. */
static double bench_memory(size_t p)
{
    cf_future **fs = xmalloc(p * sizeof *fs);
    memset(fs, 0, p * sizeof *fs); /* fault the array in before measuring */
    cf_executor *ex = new_pool(1);
    cf_future *blocker = NULL;
    g_gate.open = false;
    CHECK(cf_submit(ex, gate_task, NULL, 0, &blocker));
    double r0 = rss_bytes();
    for (size_t i = 0; i < p; i++)
        CHECK(cf_submit(ex, inc_task, CF_ARGS(cf_i64((int64_t)i)), &fs[i]));
    double r1 = rss_bytes();
    for (size_t i = 0; i < p; i++)
        if (cf_future_state(fs[i]) != CF_PENDING)
            die("memory: future %zu is not pending", i);
    pthread_mutex_lock(&g_gate.mu);
    g_gate.open = true;
    pthread_cond_broadcast(&g_gate.cv);
    pthread_mutex_unlock(&g_gate.mu);
    collect("memory", fs, p, 0);
    CHECK(cf_future_release(blocker));
    CHECK(cf_executor_destroy(ex));
    free(fs);
    return (r1 - r0) / (double)p;
}

static double memory_in_child(size_t p)
{
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        double v = bench_memory(p);
        _exit(write(fds[1], &v, sizeof v) == (ssize_t)sizeof v ? 0 : 1);
    }
    close(fds[1]);
    double v = NAN;
    ssize_t got = read(fds[0], &v, sizeof v);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof v || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("memory per pending future: the measuring child failed");
    return v;
}

static double cpu_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

typedef struct idle_cpu {
    double idle_pct, tick_pct; /* % of one core */
    size_t ticks;
} idle_cpu;

/* CPU time of the pool's threads (the process's minus this thread's) while
 * this thread sleeps `secs` next to an idle default pool, then while it
 * submits one task every 1 ms for `secs`.  Run before any other pool or
 * runtime exists in the process. */
static idle_cpu bench_idle(double secs, cf_future **fs)
{
    idle_cpu r;
    cf_executor *ex = new_pool(CF_AUTO);
    warm_up(ex, fs, 1000); /* starts all its workers */
    double p0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID), s0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    uint64_t t0 = now_ns();
    sleep_until_ns(t0 + (uint64_t)(secs * 1e9));
    double wall = (double)(now_ns() - t0) / 1e9;
    double p1 = cpu_s(CLOCK_PROCESS_CPUTIME_ID), s1 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    r.idle_pct = fmax(0.0, 100.0 * ((p1 - p0) - (s1 - s0)) / wall);

    p0 = p1;
    s0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    t0 = now_ns();
    uint64_t end = t0 + (uint64_t)(secs * 1e9), next = t0;
    cf_future *prev = NULL;
    r.ticks = 0;
    while (next < end) {
        cf_future *f = NULL;
        CHECK(cf_submit(ex, inc_task, CF_ARGS(cf_i64((int64_t)r.ticks)), &f));
        if (prev) {
            int64_t v = 0;
            CHECK(cf_future_result_i64(prev, CF_FOREVER, &v));
            CHECK(cf_future_release(prev));
        }
        prev = f;
        r.ticks++;
        next += 1000000u;
        sleep_until_ns(next);
    }
    int64_t v = 0;
    CHECK(cf_future_result_i64(prev, CF_FOREVER, &v));
    CHECK(cf_future_release(prev));
    wall = (double)(now_ns() - t0) / 1e9;
    p1 = cpu_s(CLOCK_PROCESS_CPUTIME_ID);
    s1 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    r.tick_pct = fmax(0.0, 100.0 * ((p1 - p0) - (s1 - s0)) / wall);
    CHECK(cf_executor_destroy(ex));
    return r;
}

/* ------------------------------------------------------------------------
 * The CPython peer
 * ---------------------------------------------------------------------- */

enum { T_SUBMIT_AUTO, T_BATCH_AUTO, T_SUBMIT_W2, T_MAP_AUTO, T_COUNT };
static const char *const tput_key[T_COUNT] = {"submit_auto", "batch_auto",
                                              "submit_w2", "map_auto"};

typedef struct peer_round {
    tput t[T_COUNT];
    lat_stats rtt;
    bool have_t[T_COUNT], have_rtt;
} peer_round;

typedef struct peer_info {
    char version[32];
    int default_workers, cpus;
} peer_info;

static void on_peer_header(const char *line, void *ctx)
{
    peer_info *info = ctx;
    info->default_workers = (int)json_num(line, "default_workers");
    info->cpus = (int)json_num(line, "cpus");
}

static void on_peer_metric(const char *name, const char *line, void *ctx)
{
    peer_round *out = ctx;
    if (strcmp(name, "rtt") == 0) {
        out->rtt.median_us = json_num(line, "median_us");
        out->rtt.mean_us = json_num(line, "mean_us");
        out->rtt.p99_us = json_num(line, "p99_us");
        out->have_rtt = !isnan(out->rtt.median_us) &&
                        !isnan(out->rtt.mean_us) && !isnan(out->rtt.p99_us);
    }
    for (int k = 0; k < T_COUNT; k++) {
        if (strcmp(name, tput_key[k]) != 0)
            continue;
        out->t[k].rate = json_num(line, "rate");
        out->t[k].total_s = json_num(line, "seconds");
        out->t[k].submit_s = json_num(line, "submit_seconds");
        out->have_t[k] = out->t[k].rate > 0;
    }
}

/* Runs one round of the peer (see peer_run()). */
static peer_status run_peer(size_t n, size_t m, size_t warm, peer_info *info,
                            peer_round *out, char *why, size_t why_size)
{
    char args[128];
    snprintf(args, sizeof args, " --n %zu --m %zu --warmup %zu --batch %d", n,
             m, warm, BATCH);
    memset(out, 0, sizeof *out);
    peer_status st =
        peer_run(args, info->version, sizeof info->version, on_peer_header,
                 info, on_peer_metric, out, why, why_size);
    if (st != PEER_OK)
        return st;
    bool complete = out->have_rtt;
    for (int k = 0; k < T_COUNT; k++)
        complete = complete && out->have_t[k];
    return complete ? PEER_OK : peer_incomplete(why, why_size);
}

/* ------------------------------------------------------------------------
 * Report
 * ---------------------------------------------------------------------- */

static const char *fmt_us(char *buf, size_t size, double us)
{
    if (isnan(us))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.2f us", us);
    return buf;
}

static double lat_field(const lat_stats *s, int k)
{
    return k == 0 ? s->median_us : k == 1 ? s->mean_us : s->p99_us;
}

typedef struct c_round {
    tput t[T_COUNT];
    lat_stats rtt, floor, spin, futex;
    double many_ns; /* per task, batches through cf_submit_many */
    double producers_ns, fanout_ns; /* per task */
    double pinned_ns; /* per task, bench_pinned (NAN: not run) */
    double prio_default_ns, prio_mixed_ns; /* per task, the priorities rows */
    double speedup; /* CPU-bound: time on 1 worker / time on `cpus` workers */
    native_round np[NP_MAX];
} c_round;

static const char *verdict(double have, double want, bool higher_is_better)
{
    if (isnan(have))
        return "n/a ";
    return (higher_is_better ? have >= want : have <= want) ? "PASS" : "MISS";
}

/* ------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: bench_thread [--quick] [-n N] [-m M] [-r ROUNDS]\n"
            "                    [--py-n N] [--py-m M] [--no-python] [--no-native]\n"
            "                    [--idle S] [--pending P]\n"
            "                    [--watchdog S] [-v]\n"
            "  -n N         tasks per throughput run (default 200000)\n"
            "  -m M         round trips per latency run (default 20000)\n"
            "  -r ROUNDS    rounds; each figure is the median (default 5)\n"
            "  --py-n N     CPython tasks per run (default N/10)\n"
            "  --py-m M     CPython round trips per run (default M/4)\n"
            "  --no-python  skip the CPython peer\n"
            "  --no-native  skip oneTBB, libuv and GLib\n"
            "  --no-future-cache  cf_set_future_cache_limit(0) first\n"
            "  --priorities run only the priorities workload\n"
            "  --map-chunked C  run only the chunked map workload, chunksize C\n"
            "  --sweep FILE per-task cost against tasks in flight for every\n"
            "               runtime, written to FILE (for plot_sweep.gp);\n"
            "               nothing else is run\n"
            "  --idle S     seconds of each idle-CPU measurement (default 5)\n"
            "  --pending P  futures pending in the memory measurement\n"
            "               (default 1000000)\n"
            "  --quick      N=2000, M=200, one round (smoke test)\n"
            "  --watchdog S exit 3 if one workload takes more than S seconds\n"
            "               (default 120; the CPython peer gets 5x that)\n"
            "  -v           print every round\n"
            "env: CF_BENCH_PYTHON (interpreter, default python3),\n"
            "     CF_BENCH_PEER (peer script, default %s)\n",
            CF_BENCH_PEER_SCRIPT);
}

int main(int argc, char **argv)
{
    bench_opts o = bench_opts_default(200000, 20000, 5);
    bool use_native = true;
    const char *sweep_path = NULL;
    double idle_s = 5;
    size_t pending = 1000000;
    bool idle_set = false, pending_set = false, only_prio = false;
    size_t map_chunk = 0; /* --map-chunked */
    for (int i = 1; i < argc; i++) {
        if (bench_opt(&o, argc, argv, &i))
            continue;
        if (!strcmp(argv[i], "--no-native")) {
            use_native = false;
            continue;
        }
        if (!strcmp(argv[i], "--sweep") && i + 1 < argc) {
            sweep_path = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "--priorities")) {
            only_prio = true;
            continue;
        }
        if (!strcmp(argv[i], "--map-chunked") && i + 1 < argc) {
            map_chunk = parse_size("--map-chunked", argv[++i]);
            if (map_chunk == 0 || map_chunk > INT_MAX)
                die("--map-chunked: chunksize must be 1..%d", INT_MAX);
            continue;
        }
        if (!strcmp(argv[i], "--no-future-cache")) {
            cf_set_future_cache_limit(0);
            continue;
        }
        if (!strcmp(argv[i], "--idle") && i + 1 < argc) {
            idle_s = (double)parse_size("--idle", argv[++i]);
            idle_set = true;
            continue;
        }
        if (!strcmp(argv[i], "--pending") && i + 1 < argc) {
            pending = parse_size("--pending", argv[++i]);
            pending_set = true;
            continue;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return 2;
    }
    bench_opts_finish(&o, 2000, 200, 15, 10, 4);
    size_t n = o.n, m = o.m, rounds = o.rounds, py_n = o.py_n, py_m = o.py_m;
    bool quick = o.quick, use_python = o.use_python, verbose = o.verbose;
    size_t warm = quick ? 50 : 1000;
    if (quick && !idle_set)
        idle_s = 0.2;
    if (quick && !pending_set)
        pending = 10000;
    size_t npeers = 0;
    const native_peer *peers = native_peers(&npeers);
    int64_t *out = xmalloc(n * sizeof *out);

    cf_future **fs = xmalloc(n * sizeof *fs);
    cf_value *in = xmalloc(n * sizeof *in);
    double *samples = xmalloc(m * sizeof *samples);
    c_round *cr = xmalloc(rounds * sizeof *cr);
    peer_round *pr = xmalloc(rounds * sizeof *pr);
    peer_info info = {"?", -1, -1};
    peer_status pst = use_python ? PEER_OK : PEER_MISSING;
    char why[512] = "--no-python";
    size_t peer_rounds = 0;

    printf("cfutures %d.%d.%d bench_thread: %zu usable CPUs, default pool %d "
           "workers\n",
           CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH,
           (size_t)cf_usable_cpus(), cf_thread_pool_default_workers());
    printf("N=%zu tasks, M=%zu round trips (CPython: N=%zu, M=%zu); %zu "
           "round%s%s%s\n",
           n, m, py_n, py_m, rounds, rounds == 1 ? "" : "s",
           use_python ? ", C and CPython alternating" : "",
           quick ? " (--quick: sizes too small to mean anything)" : "");
    fflush(stdout);

    signal(SIGALRM, on_watchdog);
    int status = 0;
    if (sweep_path) {
        run_sweep(sweep_path, n, rounds, use_native, peers, npeers, fs, out);
        alarm(0);
        goto done;
    }
    if (map_chunk) {
        run_map_chunked(n, map_chunk, warm, fs, in, rounds, verbose);
        alarm(0);
        goto done;
    }
    if (only_prio) {
        for (size_t r = 0; r < rounds; r++)
            run_priorities(n, warm, fs, r, &cr[r].prio_default_ns, &cr[r].prio_mixed_ns);
        alarm(0);
        double def[MAX_ROUNDS], mix[MAX_ROUNDS];
        for (size_t r = 0; r < rounds; r++) {
            def[r] = cr[r].prio_default_ns;
            mix[r] = cr[r].prio_mixed_ns;
        }
        print_priorities(def, mix, rounds);
        goto done;
    }
    /* In a child of its own, forked before this process has any thread: a
     * fresh heap, whose growth is all the futures' own, and whose million
     * futures leave no trace in the allocator state the rounds see. */
    phase("memory per pending future", 2);
    double mem_per = memory_in_child(pending);
    /* First, while no other pool or runtime has threads in the process. */
    phase("idle CPU", 1 + (unsigned)(2 * idle_s / 60));
    idle_cpu idle = bench_idle(idle_s, fs);
    /* The first burst of the process: its futures take memory the process
     * never touched (one page fault per 15 futures, and a fault costs
     * 12-20 us on this VM), which every later burst takes from the future
     * cache instead.  Timed and printed on a line of its own, so that the
     * rounds compare the steady state of both sides. */
    phase("first burst of the process", 2);
    tput first = bench_submit_collect(CF_AUTO, n, warm, fs);

    for (size_t r = 0; r < rounds; r++) {
        c_round *c = &cr[r];
        /* Each row's peers run right after cfutures in rounds 1, 3, ...
         * (as -v numbers them) and right before it in rounds 2, 4, ..., so
         * that neither side always meets
         * what the other left behind (warm caches, threads going to
         * sleep). */
        bool peers_first = r % 2 == 1;
        peer_set ps = {peers, use_native ? (npeers < NP_MAX ? npeers : NP_MAX) : 0,
                       {NULL}, c->np, n, m, warm, out, samples};
        memset(c->np, 0, sizeof c->np);
        if (ps.count)
            phase("native peers: start", 1);
        peers_open(&ps);

        if (peers_first && ps.count) {
            phase("native peers, all N in flight", 1);
            peers_run(&ps, false);
        }
        phase("submit+collect, default pool, all N in flight", 1);
        c->t[T_SUBMIT_AUTO] = bench_submit_collect(CF_AUTO, n, warm, fs);
        phase("map, default pool", 1);
        c->t[T_MAP_AUTO] = bench_map(n, warm, fs, in);
        if (!peers_first && ps.count) {
            phase("native peers, all N in flight", 1);
            peers_run(&ps, false);
        }

        if (peers_first && ps.count) {
            phase("native peers, batches", 1);
            peers_run(&ps, true);
        }
        phase(BATCH_LABEL, 1);
        c->t[T_BATCH_AUTO] =
            bench_submit_collect_batched(CF_AUTO, n, BATCH, warm, fs);
        phase("cf_submit_many, batches", 1);
        c->many_ns = bench_submit_many(n, BATCH, warm, fs, in);
        if (!peers_first && ps.count) {
            phase("native peers, batches", 1);
            peers_run(&ps, true);
        }

        phase("submit+collect, 2 workers, all N in flight", 1);
        c->t[T_SUBMIT_W2] = bench_submit_collect(2, n, warm, fs);
        phase("all N in flight, workers pinned", 1);
        c->pinned_ns = bench_pinned(n, warm, fs);
        phase("4 producers", 1);
        c->producers_ns = bench_producers(n, warm, fs);
        phase("fan-out", 1);
        c->fanout_ns = bench_fanout(n, warm, fs);
        phase("CPU-bound scaling", 2);
        {
            int cpus = cf_usable_cpus();
            size_t tasks = quick ? 40 : 400;
            double one = bench_cpu(1, tasks, 200000, fs);
            double all = bench_cpu(cpus, tasks, 200000, fs);
            c->speedup = one / all;
        }
        run_priorities(n, warm, fs, r, &c->prio_default_ns, &c->prio_mixed_ns);

        if (peers_first && ps.count) {
            phase("native peers, round trip", 1);
            peers_round_trip(&ps);
        }
        phase("round trip", 1);
        c->rtt = bench_round_trip(m, warm < m ? warm : m, samples);
        if (!peers_first && ps.count) {
            phase("native peers, round trip", 1);
            peers_round_trip(&ps);
        }
        peers_close(&ps);
        phase("ping-pong", 1);
        c->floor = bench_pingpong(m, warm < m ? warm : m, samples);
        phase("spin ping-pong", 1);
        c->spin = bench_spinpong(m, warm < m ? warm : m, samples);
        phase("futex ping-pong", 1);
        c->futex = bench_futex(m, warm < m ? warm : m, samples);

        if (pst == PEER_OK) {
            phase("CPython peer", 5);
            pst = run_peer(py_n, py_m, quick ? 50 : 200, &info,
                           &pr[peer_rounds], why, sizeof why);
            if (pst == PEER_OK)
                peer_rounds++;
        }
        if (verbose) {
            char b[6][32];
            printf("round %zu: cfutures submit %s / batched %s / w2 %s / map "
                   "%s, rtt median %s, floor median %s\n",
                   r + 1, fmt_rate(b[0], 32, c->t[T_SUBMIT_AUTO].rate),
                   fmt_rate(b[1], 32, c->t[T_BATCH_AUTO].rate),
                   fmt_rate(b[2], 32, c->t[T_SUBMIT_W2].rate),
                   fmt_rate(b[3], 32, c->t[T_MAP_AUTO].rate),
                   fmt_us(b[4], 32, c->rtt.median_us),
                   fmt_us(b[5], 32, c->floor.median_us));
            if (pst == PEER_OK) {
                peer_round *p = &pr[peer_rounds - 1];
                printf("         CPython  submit %s / batched %s / w2 %s / "
                       "map %s, rtt median %s\n",
                       fmt_rate(b[0], 32, p->t[T_SUBMIT_AUTO].rate),
                       fmt_rate(b[1], 32, p->t[T_BATCH_AUTO].rate),
                       fmt_rate(b[2], 32, p->t[T_SUBMIT_W2].rate),
                       fmt_rate(b[3], 32, p->t[T_MAP_AUTO].rate),
                       fmt_us(b[4], 32, p->rtt.median_us));
            }
            for (size_t k = 0; k < npeers && k < NP_MAX; k++)
                if (c->np[k].have)
                    printf("         %-8s all in flight %.1f ns/task / batched %.1f ns/task "
                           "(cfutures %.1f / %.1f)\n",
                           peers[k].name, c->np[k].all_ns, c->np[k].batch_ns,
                           1e9 / c->t[T_SUBMIT_AUTO].rate, 1e9 / c->t[T_BATCH_AUTO].rate);
            fflush(stdout);
        }
    }

    alarm(0);

    /* --- summaries over rounds ---------------------------------------
     * Values are medians over the rounds.  Ratios are taken within each
     * round (the two figures were measured moments apart, under the same
     * load) and then the median over the rounds is shown. */
    double v[MAX_ROUNDS], w[MAX_ROUNDS];
    summary c_rate[T_COUNT], p_rate[T_COUNT], x_rate[T_COUNT];
    double c_sub[T_COUNT], p_sub[T_COUNT], c_pf[T_COUNT];
    for (int k = 0; k < T_COUNT; k++) {
        for (size_t r = 0; r < rounds; r++) {
            v[r] = cr[r].t[k].rate;
            w[r] = cr[r].t[k].submit_s / cr[r].t[k].total_s;
        }
        c_rate[k] = summarize(v, rounds);
        c_sub[k] = summarize(w, rounds).med;
        for (size_t r = 0; r < rounds; r++)
            w[r] = cr[r].t[k].faults;
        c_pf[k] = summarize(w, rounds).med;
        for (size_t r = 0; r < peer_rounds; r++) {
            v[r] = pr[r].t[k].rate;
            w[r] = pr[r].t[k].submit_s / pr[r].t[k].total_s;
        }
        p_rate[k] = summarize(v, peer_rounds);
        p_sub[k] = summarize(w, peer_rounds).med;
        for (size_t r = 0; r < peer_rounds; r++)
            v[r] = cr[r].t[k].rate / pr[r].t[k].rate;
        x_rate[k] = summarize(v, peer_rounds);
    }
    summary c_rtt[3], c_floor[3], c_spin[3], p_rtt[3], x_py[3], x_floor[3];
    for (int k = 0; k < 3; k++) {
        for (size_t r = 0; r < rounds; r++)
            v[r] = lat_field(&cr[r].rtt, k);
        c_rtt[k] = summarize(v, rounds);
        for (size_t r = 0; r < rounds; r++)
            v[r] = lat_field(&cr[r].floor, k);
        c_floor[k] = summarize(v, rounds);
        for (size_t r = 0; r < rounds; r++)
            v[r] = lat_field(&cr[r].spin, k);
        c_spin[k] = summarize(v, rounds);
        for (size_t r = 0; r < rounds; r++)
            v[r] = lat_field(&cr[r].rtt, k) / lat_field(&cr[r].floor, k);
        x_floor[k] = summarize(v, rounds);
        for (size_t r = 0; r < peer_rounds; r++)
            v[r] = lat_field(&pr[r].rtt, k);
        p_rtt[k] = summarize(v, peer_rounds);
        for (size_t r = 0; r < peer_rounds; r++)
            v[r] = lat_field(&pr[r].rtt, k) / lat_field(&cr[r].rtt, k);
        x_py[k] = summarize(v, peer_rounds);
    }

    /* --- table -------------------------------------------------------- */
    char b[6][48], range[128];
    printf("\n");
    if (peer_rounds)
        printf("CPython peer: %s %s, default pool %d workers, %zu round%s\n",
               peer_python(), info.version, info.default_workers, peer_rounds,
               peer_rounds == 1 ? "" : "s");
    else if (pst == PEER_MISSING)
        printf("CPython peer skipped (%s)\n", why);
    else
        printf("CPython peer FAILED (%s)\n", why);
    printf("Figures: median over %zu round%s, [min..max] = spread of the "
           "cfutures rounds.\nRatios: computed within each round, then the "
           "median over rounds.\n\n",
           rounds, rounds == 1 ? "" : "s");

    static const char *const tput_label[T_COUNT] = {
        "submit+collect, default pool, all N in flight",
        BATCH_LABEL,
        "submit+collect, 2 workers, all N in flight", "map, default pool"};
    printf("%-46s %11s %-25s %11s %10s\n", "throughput (tasks/s)", "cfutures",
           "  [min..max]", "CPython", "cf/CPython");
    for (int k = 0; k < T_COUNT; k++) {
        snprintf(range, sizeof range, "  [%s..%s]",
                 fmt_rate(b[1], 48, c_rate[k].lo), fmt_rate(b[2], 48, c_rate[k].hi));
        printf("%-46s %11s %-25s %11s %10s\n", tput_label[k],
               fmt_rate(b[0], 48, c_rate[k].med), range,
               fmt_rate(b[3], 48, p_rate[k].med),
               fmt_x(b[4], 48, x_rate[k].med, ""));
    }
    printf("\n%-46s %11s %-25s %11s %10s %9s\n", "latency (one task)",
           "cfutures", "  [min..max]", "CPython", "CPython/cf", "cf/floor");
    static const char *const lat_label[3] = {"median", "mean", "p99"};
    for (int k = 0; k < 3; k++) {
        char label[64];
        snprintf(label, sizeof label, "round trip %s", lat_label[k]);
        snprintf(range, sizeof range, "  [%s..%s]",
                 fmt_us(b[1], 48, c_rtt[k].lo), fmt_us(b[2], 48, c_rtt[k].hi));
        printf("%-46s %11s %-25s %11s %10s %9s\n", label,
               fmt_us(b[0], 48, c_rtt[k].med), range,
               fmt_us(b[3], 48, p_rtt[k].med), fmt_x(b[4], 48, x_py[k].med, ""),
               fmt_x(b[5], 48, x_floor[k].med, ""));
    }
    for (int k = 0; k < 3; k++) {
        char label[64];
        snprintf(label, sizeof label, "ping-pong floor %s", lat_label[k]);
        snprintf(range, sizeof range, "  [%s..%s]",
                 fmt_us(b[1], 48, c_floor[k].lo), fmt_us(b[2], 48, c_floor[k].hi));
        printf("%-46s %11s %s\n", label, fmt_us(b[0], 48, c_floor[k].med), range);
    }
    snprintf(range, sizeof range, "  [%s..%s]",
             fmt_us(b[1], 48, c_spin[0].lo), fmt_us(b[2], 48, c_spin[0].hi));
    printf("%-46s %11s %-25s (reference: spinning, nobody sleeps)\n",
           "spin ping-pong median", fmt_us(b[0], 48, c_spin[0].med), range);
    snprintf(range, sizeof range, "  [%s..%s]",
             fmt_x(b[1], 48, x_floor[0].lo, ""), fmt_x(b[2], 48, x_floor[0].hi, ""));
    printf("%-46s %11s %s\n", "cf/floor per round, median",
           fmt_x(b[0], 48, x_floor[0].med, ""), range);

    /* --- native peers ------------------------------------------------ */
    printf("\nnative peers, same run (per-task time; ratio = cfutures / peer "
           "within each round,\nmedian over rounds: below 1.00x cfutures is "
           "faster):\n");
    for (size_t k = 0; k < npeers && k < NP_MAX; k++) {
        if (!use_native)
            printf("  %s skipped (--no-native)\n", peers[k].name);
        else if (peers[k].missing)
            printf("  %s skipped (%s)\n", peers[k].name, peers[k].missing);
        else
            printf("  %s %s\n", peers[k].name, peers[k].version);
    }
    /* The map row: cf_map() of N calls (all in flight, in order) against
     * each peer's all-in-flight figure, the closest thing they have. */
    static const char *const np_label[6] = {
        "all N in flight (ns/task)", "batches of " STR(BATCH) " (ns/task)",
        "same, cf_submit_many (ns/task)", "map, vs peer all in flight",
        "round trip median (us)", "round trip p99 (us)"};
    printf("%-30s %10s", "", "cfutures");
    for (size_t k = 0; k < npeers && k < NP_MAX; k++)
        printf(" %10s %7s", peers[k].name, "cf/x");
    printf("\n");
    for (int row = 0; row < 6; row++) {
        /* cfutures' figure of this row in round r. */
        double cfv[MAX_ROUNDS];
        for (size_t r = 0; r < rounds; r++)
            cfv[r] = row == 0   ? 1e9 / cr[r].t[T_SUBMIT_AUTO].rate
                     : row == 1 ? 1e9 / cr[r].t[T_BATCH_AUTO].rate
                     : row == 2 ? cr[r].many_ns
                     : row == 3 ? 1e9 / cr[r].t[T_MAP_AUTO].rate
                     : row == 4 ? cr[r].rtt.median_us
                                : cr[r].rtt.p99_us;
        printf("%-30s %10.2f", np_label[row], summarize(cfv, rounds).med);
        for (size_t k = 0; k < npeers && k < NP_MAX; k++) {
            size_t have = 0;
            for (size_t r = 0; r < rounds; r++) {
                const native_round *x = &cr[r].np[k];
                if (!x->have)
                    continue;
                double pv = row == 0 || row == 3 ? x->all_ns
                            : row <= 2               ? x->batch_ns
                            : row == 4               ? x->rtt.median_us
                                                     : x->rtt.p99_us;
                v[have] = pv;
                w[have] = cfv[r] / pv;
                have++;
            }
            printf(" %10.2f %7s", summarize(v, have).med,
                   fmt_x(b[0], 48, summarize(w, have).med, ""));
        }
        printf("\n");
    }
    {
        double fx[MAX_ROUNDS], rx[MAX_ROUNDS];
        for (size_t r = 0; r < rounds; r++) {
            fx[r] = cr[r].futex.median_us;
            rx[r] = cr[r].rtt.median_us / cr[r].futex.median_us;
        }
        printf("%-30s %10.2f  (cfutures round trip / futex: %s)\n",
               "futex ping-pong median (us)", summarize(fx, rounds).med,
               fmt_x(b[0], 48, summarize(rx, rounds).med, ""));
    }

    printf("\nsubmit phase share of submit+collect time (default pool all N "
           "in flight / batches of " STR(BATCH) " / 2 workers all N in flight):\n"
           "  cfutures %.0f%% / %.0f%% / %.0f%%",
           100 * c_sub[T_SUBMIT_AUTO], 100 * c_sub[T_BATCH_AUTO],
           100 * c_sub[T_SUBMIT_W2]);
    if (peer_rounds)
        printf(", CPython %.0f%% / %.0f%% / %.0f%%",
               100 * p_sub[T_SUBMIT_AUTO], 100 * p_sub[T_BATCH_AUTO],
               100 * p_sub[T_SUBMIT_W2]);
    printf("\n");
    printf("minor page faults per 1000 tasks, cfutures (same four rows): "
           "%.1f / %.1f / %.1f / %.1f\n",
           c_pf[T_SUBMIT_AUTO], c_pf[T_BATCH_AUTO], c_pf[T_SUBMIT_W2],
           c_pf[T_MAP_AUTO]);
    printf("first all-in-flight burst of the process (before the rounds, not in them): "
           "%.1f ns/task, %.1f minor page faults per 1000 tasks\n",
           1e9 / first.rate, first.faults);
    {
        double a[MAX_ROUNDS], f2[MAX_ROUNDS], sp[MAX_ROUNDS];
        for (size_t r = 0; r < rounds; r++) {
            a[r] = cr[r].producers_ns;
            f2[r] = cr[r].fanout_ns;
            sp[r] = cr[r].speedup;
        }
        summary ss = summarize(sp, rounds);
        double pin[MAX_ROUNDS], unpin[MAX_ROUNDS];
        size_t npin = 0;
        for (size_t r = 0; r < rounds; r++) {
            if (isnan(cr[r].pinned_ns))
                continue;
            pin[npin] = cr[r].pinned_ns;
            unpin[npin++] = 1e9 / cr[r].t[T_SUBMIT_AUTO].rate;
        }
        if (npin)
            printf("all N in flight, default pool, submitting thread on one CPU and the "
                   "workers on the others: %.0f ns/task (same rounds unpinned: %.0f)\n",
                   summarize(pin, npin).med, summarize(unpin, npin).med);
        else
            printf("all N in flight with pinned workers: skipped (fewer than 2 CPUs, or "
                   "affinity refused)\n");
        printf("%d producers at once, all in flight, default pool: %.0f ns/task\n",
               PRODUCERS, summarize(a, rounds).med);
        printf("fan-out (a task submits %d children and waits on them): %.0f ns/child\n",
               FANOUT, summarize(f2, rounds).med);
        double def[MAX_ROUNDS], mix[MAX_ROUNDS];
        for (size_t r = 0; r < rounds; r++) {
            def[r] = cr[r].prio_default_ns;
            mix[r] = cr[r].prio_mixed_ns;
        }
        print_priorities(def, mix, rounds);
        printf("CPU-bound speed-up, %d workers vs 1 on %d CPUs: %.2fx [%.2fx..%.2fx] "
               "(want >= %.2fx)\n",
               cf_usable_cpus(), cf_usable_cpus(), ss.med, ss.lo, ss.hi,
               0.97 * cf_usable_cpus());
    }
    printf("memory per pending future (%zu pending, RSS growth): %.0f bytes\n",
           pending, mem_per);
    printf("idle CPU of the default pool over %.1f s: %.2f%% of a core "
           "(want < 1%%)\n", idle_s, idle.idle_pct);
    printf("CPU of the default pool receiving one task per ms (%zu tasks in "
           "%.1f s): %.2f%% of a core (want < 5%%)\n",
           idle.ticks, idle_s, idle.tick_pct);

    /* --- targets ------------------------------------------------------ */
    printf("\ntargets (median over rounds of the per-round ratio):\n");
    for (int k = 0; k < T_COUNT; k++)
        printf("  %s  %-46s %s\n", verdict(x_rate[k].med, 50.0, true),
               tput_label[k],
               fmt_x(b[0], 48, x_rate[k].med, " CPython (want >= 50x)"));
    printf("  %s  %-46s %s\n", verdict(x_py[0].med, 3.0, true),
           "round trip median vs CPython",
           fmt_x(b[0], 48, x_py[0].med, " faster (want >= 3x)"));
    printf("  %s  %-46s %s\n", verdict(x_floor[0].med, 1.5, false),
           "round trip median vs ping-pong floor",
           fmt_x(b[0], 48, x_floor[0].med, " the floor (want <= 1.5x)"));
    if (quick)
        printf("(--quick: verdicts are meaningless at these sizes)\n");
    status = pst == PEER_FAILED ? 1 : 0;

done:
    free(out);
    free(pr);
    free(cr);
    free(samples);
    free(in);
    free(fs);
    return status;
}
