/* SPDX-License-Identifier: MIT */
/*
 * bench_mpi.c - the MPI engine's costs, beside a raw MPI floor measured in
 * the same run (spawn mode, this machine only).
 *
 *   start-up      cf_mpi_pool_new() until every worker said hello: the
 *                 first pool (MPI_Init of the singleton included) and a
 *                 second one
 *   idle CPU      CPU time used by the pool's processes (this process with
 *                 its manager thread, and every worker) while the pool sits
 *                 idle, as % of one core
 *   round trip    one call at a time: submit + result of a no-op task
 *                 (the mean, after 100 such calls), beside a blocking
 *                 MPI_Send/MPI_Recv ping-pong of 8 bytes with a spawned
 *                 echo rank (the floor, after 100 warm-up rounds; it
 *                 spins), and the first call after the idle period alone
 *   tiny tasks    many no-op calls submitted at once, then waited for
 *   chunked map   cf_map over i64 inputs with chunksize 1000, twice: the
 *                 first map of the process (its futures take fresh memory,
 *                 whose page faults are slow on some machines) and again
 *
 * The peer: the same rows with mpi4py.futures.MPIPoolExecutor
 * (peer_mpi4py.py, run with --python, default /usr/bin/python3, Debian's
 * python3-mpi4py) in the same run, and the ratios.
 *
 * Usage: bench_mpi [--quick] [--no-peer] [--python PATH] [--workers N]
 *                  [--idle SECONDS] [--map-cpu ROUNDS] [--tiny-cpu ROUNDS]
 *                  [--peer-timeout SECONDS]
 * The peer runs under timeout(1) (default 240 s): its spawn can wait in
 * Open MPI's PMIx name lookup for minutes before it fails, and the bench
 * then reports the peer's rows as not run instead of hanging.
 * --map-cpu runs only the chunked map, ROUNDS times, and splits its cost
 * per element: wall time of cf_map() (which submits every chunk) and of
 * collecting, CPU time of this process (and of its manager thread) and of
 * the workers, minor page faults and context switches of this process.
 * --tiny-cpu does the same for the tiny tasks (per call); with both, the
 * tiny tasks run first.
 * Needs the Open MPI variables of README.md when run as root or on fewer
 * cores than ranks.
 */
#include <dirent.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfutures_mpi.h"

static int noop(cf_call *c)
{
    return cf_return_i64(c, cf_arg_i64(c, 0));
}
CF_TASK(noop);

#define CHECK(expr)                                                           \
    do {                                                                      \
        int rc_ = (expr);                                                     \
        if (rc_ != CF_OK) {                                                   \
            fprintf(stderr, "bench_mpi: %s -> %s (%s)\n", #expr,              \
                    cf_err_name(rc_), cf_last_error_message());               \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The raw floor's echo rank: answers tag 1 with the same bytes; tag 2
 * ends it. */
static void raw_echo(void)
{
    int provided;
    MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &provided);
    MPI_Comm parent;
    MPI_Comm_get_parent(&parent);
    char buf[8];
    for (;;) {
        MPI_Status st;
        MPI_Recv(buf, sizeof buf, MPI_BYTE, 0, MPI_ANY_TAG, parent, &st);
        if (st.MPI_TAG != 1)
            break;
        MPI_Send(buf, sizeof buf, MPI_BYTE, 0, 1, parent);
    }
    MPI_Comm_disconnect(&parent);
    MPI_Finalize();
    exit(0);
}

static double raw_round_trip_measure(int rounds)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *argv[] = {"--raw-echo", NULL};
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "map_by", ":OVERSUBSCRIBE");
    MPI_Comm child;
    int code;
    if (MPI_Comm_spawn(exe, argv, 1, info, 0, MPI_COMM_SELF, &child, &code) != MPI_SUCCESS)
        return -1;
    MPI_Info_free(&info);
    char buf[8] = {0};
    for (int i = 0; i < 100; i++) { /* connection set-up, warm-up */
        MPI_Send(buf, sizeof buf, MPI_BYTE, 0, 1, child);
        MPI_Recv(buf, sizeof buf, MPI_BYTE, 0, 1, child, MPI_STATUS_IGNORE);
    }
    double t0 = now();
    for (int i = 0; i < rounds; i++) {
        MPI_Send(buf, sizeof buf, MPI_BYTE, 0, 1, child);
        MPI_Recv(buf, sizeof buf, MPI_BYTE, 0, 1, child, MPI_STATUS_IGNORE);
    }
    double us = (now() - t0) / rounds * 1e6;
    MPI_Send(buf, 0, MPI_BYTE, 0, 2, child);
    MPI_Comm_disconnect(&child);
    return us;
}

/* Watchdog.  The floor's MPI_Comm_spawn has no timeout of its own, and
 * Open MPI's PMIx lookup under it was seen to wait for ever about once in
 * twenty runs; and under --quick (ctest's smoke run, 120 s limit) the
 * whole bench is watched, so that a run with no progress says where it
 * stopped instead of being killed silently.  `phase` names the step in
 * progress (string literals only); `phase_floor` is set while the floor
 * runs, whose hang is Open MPI's: the bench then exits 77 (ctest: skipped,
 * with the message), any other phase 1. */
static const char *volatile phase = "starting";
static volatile sig_atomic_t phase_floor;
static int watch_limit;

static void watchdog(int sig)
{
    (void)sig;
    static const char a[] = "bench_mpi: no progress for ";
    char num[16];
    int n = 0;
    for (int v = watch_limit; n == 0 || v > 0; v /= 10)
        num[n++] = (char)('0' + v % 10);
    ssize_t w = write(2, a, sizeof a - 1);
    for (int i = n - 1; i >= 0; i--)
        w = write(2, &num[i], 1);
    static const char b[] = " s, still in: ";
    w = write(2, b, sizeof b - 1);
    const char *ph = phase;
    w = write(2, ph, strlen(ph));
    if (phase_floor) {
        static const char c[] = " (Open MPI's own spawn, not the engine); giving up\n";
        w = write(2, c, sizeof c - 1);
    } else {
        w = write(2, "\n", 1);
    }
    (void)w;
    _exit(phase_floor ? 77 : 1);
}

/* Arms the watchdog for `seconds` (0: off) and names the phase. */
static void watch(const char *what, int seconds)
{
    phase = what;
    watch_limit = seconds;
    signal(SIGALRM, watchdog);
    alarm((unsigned)seconds);
}

static double raw_round_trip_us(int rounds, int limit)
{
    phase_floor = 1;
    watch("the raw ping-pong floor (MPI_Comm_spawn and MPI_Send/MPI_Recv)", limit);
    double us = raw_round_trip_measure(rounds);
    phase_floor = 0;
    return us;
}

/* CPU seconds (user + system) of process `pid`, from /proc. */
static double proc_cpu(long pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    double s = 0;
    if (fgets(line, sizeof line, f)) {
        char *p = strrchr(line, ')');
        unsigned long ut = 0, st = 0;
        /* Fields after the command: state is 3, utime 14, stime 15. */
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    fclose(f);
    return s;
}

/* The pids of this program's MPI workers (their argv[1] marks them). */
static int worker_pids(long *pids, int max)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 0;
    self[n] = '\0';
    DIR *d = opendir("/proc");
    int k = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && k < max) {
        char path[300], exe[4096], cmd[256];
        long pid = strtol(e->d_name, NULL, 10);
        if (pid <= 0)
            continue;
        snprintf(path, sizeof path, "/proc/%ld/exe", pid);
        ssize_t m = readlink(path, exe, sizeof exe - 1);
        if (m <= 0)
            continue;
        exe[m] = '\0';
        if (strcmp(exe, self) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        FILE *f = fopen(path, "r");
        size_t got = f ? fread(cmd, 1, sizeof cmd - 1, f) : 0;
        if (f)
            fclose(f);
        cmd[got] = '\0';
        size_t first = strlen(cmd) + 1;
        if (first < got && strcmp(cmd + first, "--cfutures-mpi-worker") == 0)
            pids[k++] = pid;
    }
    if (d)
        closedir(d);
    return k;
}

/* CPU seconds of this process's threads named `name` (the pool's manager
 * thread is "cf-mpi-manager"), from /proc/self/task. */
static double threads_cpu(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    double s = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], comm[64] = "";
        long tid = strtol(e->d_name, NULL, 10);
        if (tid <= 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%ld/comm", tid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        if (strcmp(comm, name) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
        f = fopen(path, "r");
        char line[1024];
        if (f && fgets(line, sizeof line, f)) {
            char *p = strrchr(line, ')');
            unsigned long ut = 0, st = 0;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st) == 2)
                s += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        }
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return s;
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Runs the mpi4py peer, for at most `limit` seconds (then killed); fills
 * its five figures (negative: not run). */
static void run_peer(const char *python, int workers, int rounds, int tiny, int map_n,
                     int limit, double fig[5])
{
    fig[0] = fig[1] = fig[2] = fig[3] = fig[4] = -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "timeout -k 10 %d %s %s %d %d %d %d", limit, python,
             CF_BENCH_MPI_PEER, workers, rounds, tiny, map_n);
    FILE *f = popen(cmd, "r");
    char line[1024] = "";
    if (!f || !fgets(line, sizeof line, f)) {
        int st = f ? pclose(f) : -1;
        if (st != -1 && WIFEXITED(st) && (WEXITSTATUS(st) == 124 || WEXITSTATUS(st) == 137))
            fprintf(stderr, "bench_mpi: the mpi4py peer ran past %d s and was killed (%s)\n",
                    limit, cmd);
        else
            fprintf(stderr, "bench_mpi: the mpi4py peer did not run (%s)\n", cmd);
        return;
    }
    pclose(f);
    const char *keys[5] = {"\"startup_s\": ", "\"round_trip_us\": ", "\"tiny_per_s\": ",
                           "\"map_ns\": ", "\"map_again_ns\": "};
    for (int i = 0; i < 5; i++) {
        const char *at = strstr(line, keys[i]);
        if (at)
            fig[i] = strtod(at + strlen(keys[i]), NULL);
    }
}

/* Minor page faults and context switches (voluntary + involuntary) of
 * this process so far. */
static void self_counts(long *faults, long *switches)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *faults = ru.ru_minflt;
    *switches = ru.ru_nvcsw + ru.ru_nivcsw;
}

static double workers_cpu(void)
{
    long pids[64];
    int np = worker_pids(pids, 64);
    double s = 0;
    for (int i = 0; i < np; i++)
        s += proc_cpu(pids[i]);
    return s;
}

/* --map-cpu: where the chunked map's time goes. */
static void map_cpu(cf_executor *ex, int map_n, int rounds)
{
    cf_value *in = malloc((size_t)map_n * sizeof *in);
    for (int i = 0; i < map_n; i++)
        in[i] = cf_i64(i);
    for (int r = 0; r < rounds; r++) {
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = 1000;
        cf_map_input input = cf_input_array(in, (size_t)map_n);
        cf_map_iter *it;
        long f0, s0, f2, s2;
        self_counts(&f0, &s0);
        double c0 = self_cpu(), m0 = threads_cpu("cf-mpi-manager"), w0 = workers_cpu();
        double t0 = now();
        CHECK(cf_map(ex, noop, &input, 1, &mo, &it));
        double t1 = now();
        for (int i = 0; i < map_n; i++) {
            const cf_value *v;
            CHECK(cf_map_next(it, &v, NULL));
        }
        double t2 = now(), c2 = self_cpu(), m2 = threads_cpu("cf-mpi-manager");
        double w2 = workers_cpu();
        self_counts(&f2, &s2);
        cf_map_close(it);
        printf("chunked map, ns per element: cf_map() %.0f + collect %.0f = %.0f wall; CPU "
               "of this process %.0f (its manager thread %.0f), of the workers %.0f; per 1000 "
               "elements %.1f minor faults, %.1f context switches of this process\n",
               (t1 - t0) / map_n * 1e9, (t2 - t1) / map_n * 1e9, (t2 - t0) / map_n * 1e9,
               (c2 - c0) / map_n * 1e9, (m2 - m0) / map_n * 1e9, (w2 - w0) / map_n * 1e9,
               (double)(f2 - f0) * 1000 / map_n, (double)(s2 - s0) * 1000 / map_n);
    }
    free(in);
}

/* --tiny-cpu: where the tiny tasks' time goes. */
static void tiny_cpu(cf_executor *ex, int tiny, int rounds)
{
    cf_future **many = malloc((size_t)tiny * sizeof *many);
    for (int r = 0; r < rounds; r++) {
        long f0, s0, f2, s2;
        self_counts(&f0, &s0);
        double c0 = self_cpu(), m0 = threads_cpu("cf-mpi-manager"), w0 = workers_cpu();
        double t0 = now();
        for (int i = 0; i < tiny; i++)
            CHECK(cf_submit(ex, noop, CF_ARGS(cf_i64(i)), &many[i]));
        double t1 = now();
        for (int i = 0; i < tiny; i++) {
            CHECK(cf_future_result(many[i], CF_FOREVER, NULL));
            cf_future_release(many[i]);
        }
        double t2 = now(), c2 = self_cpu(), m2 = threads_cpu("cf-mpi-manager");
        double w2 = workers_cpu();
        self_counts(&f2, &s2);
        printf("tiny tasks, ns per call: submit %.0f + collect %.0f = %.0f wall (%.0f calls/s); "
               "CPU of this process %.0f (its manager thread %.0f), of the workers %.0f; per "
               "1000 calls %.1f context switches of this process\n",
               (t1 - t0) / tiny * 1e9, (t2 - t1) / tiny * 1e9, (t2 - t0) / tiny * 1e9,
               tiny / (t2 - t0), (c2 - c0) / tiny * 1e9, (m2 - m0) / tiny * 1e9,
               (w2 - w0) / tiny * 1e9, (double)(s2 - s0) * 1000 / tiny);
    }
    free(many);
}

static void row(const char *name, const char *unit, double ours, double peer, bool higher_better)
{
    if (peer > 0)
        printf("%-34s %12.1f %12.1f  %-8s %6.1fx\n", name, ours, peer, unit,
               higher_better ? ours / peer : peer / ours);
    else
        printf("%-34s %12.1f %12s  %-8s\n", name, ours, "-", unit);
}

static cf_executor *new_pool(int workers, double *secs)
{
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.max_workers = workers;
    cf_executor *ex;
    double t0 = now();
    CHECK(cf_mpi_pool_new(&ex, &o));
    *secs = now() - t0;
    return ex;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--raw-echo") == 0)
        raw_echo();
    CHECK(cf_mpi_init(argc, argv));
    bool quick = false, peer = true;
    const char *python = "/usr/bin/python3";
    int workers = 2;
    double idle = 5;
    int map_rounds = 0, tiny_rounds = 0, peer_limit = 240;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--no-peer") == 0)
            peer = false;
        else if (strcmp(argv[i], "--python") == 0 && i + 1 < argc)
            python = argv[++i];
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
            workers = atoi(argv[++i]);
        else if (strcmp(argv[i], "--idle") == 0 && i + 1 < argc)
            idle = atof(argv[++i]);
        else if (strcmp(argv[i], "--map-cpu") == 0 && i + 1 < argc)
            map_rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--tiny-cpu") == 0 && i + 1 < argc)
            tiny_rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--peer-timeout") == 0 && i + 1 < argc)
            peer_limit = atoi(argv[++i]);
    }
    if (peer_limit < 1)
        peer_limit = 1;
    if (quick)
        idle = 0.5;
    int rt_rounds = quick ? 200 : 5000;
    int tiny = quick ? 2000 : 50000;
    int map_n = quick ? 10000 : 500000;

    /* --quick: every phase within 90 s (ctest allows 120). */
    int limit = quick ? 90 : 0;
    double first, second;
    if (map_rounds > 0 || tiny_rounds > 0) {
        cf_executor *mex = new_pool(workers, &first);
        if (tiny_rounds > 0)
            tiny_cpu(mex, tiny, tiny_rounds);
        if (map_rounds > 0)
            map_cpu(mex, map_n, map_rounds);
        CHECK(cf_executor_destroy(mex));
        return 0;
    }
    watch("start-up of the first pool", limit);
    cf_executor *ex = new_pool(workers, &first);
    CHECK(cf_executor_destroy(ex));
    watch("start-up of the second pool", limit);
    ex = new_pool(workers, &second);
    printf("start-up, %d workers: first pool %.3f s (MPI_Init included), second %.3f s\n",
           workers, first, second);
    fflush(stdout);

    watch("warm-up and idle CPU", limit);
    /* Warm every connection, then let the pool fall idle. */
    cf_future *fs[64];
    for (int i = 0; i < 64; i++)
        CHECK(cf_submit(ex, noop, CF_ARGS(cf_i64(i)), &fs[i]));
    for (int i = 0; i < 64; i++) {
        CHECK(cf_future_result(fs[i], CF_FOREVER, NULL));
        cf_future_release(fs[i]);
    }
    struct timespec settle = {0, 200000000};
    nanosleep(&settle, NULL);
    long pids[64];
    int np = worker_pids(pids, 64);
    double c0 = self_cpu(), w0 = 0;
    for (int i = 0; i < np; i++)
        w0 += proc_cpu(pids[i]);
    double t0 = now();
    struct timespec rest = {(time_t)idle, (long)((idle - (double)(time_t)idle) * 1e9)};
    nanosleep(&rest, NULL);
    double span = now() - t0;
    double c1 = self_cpu(), w1 = 0;
    for (int i = 0; i < np; i++)
        w1 += proc_cpu(pids[i]);
    printf("idle CPU over %.1f s: manager process %.2f %%, %d workers %.2f %% (of one core; "
           "clock ticks of %.0f ms)\n",
           span, (c1 - c0) / span * 100, np, (w1 - w0) / span * 100,
           1000.0 / (double)sysconf(_SC_CLK_TCK));
    fflush(stdout);

    /* The first call after the idle period wakes a manager and workers
     * that nap (up to 8 ms, see CF__MPI_DOZE_NAP_NS): its own row.  Then
     * 100 calls one at a time before the clock starts, as the floor and
     * the peer get warm-up round trips before theirs; without them the
     * mean took in the engine's return from idle. */
    watch("round trip", limit);
    double tw = now();
    {
        cf_future *f;
        CHECK(cf_submit(ex, noop, CF_ARGS(cf_i64(0)), &f));
        CHECK(cf_future_result(f, CF_FOREVER, NULL));
        cf_future_release(f);
    }
    double first_call = (now() - tw) * 1e6;
    for (int i = 0; i < 100; i++) {
        cf_future *f;
        CHECK(cf_submit(ex, noop, CF_ARGS(cf_i64(i)), &f));
        CHECK(cf_future_result(f, CF_FOREVER, NULL));
        cf_future_release(f);
    }
    double tr = now();
    for (int i = 0; i < rt_rounds; i++) {
        cf_future *f;
        CHECK(cf_submit(ex, noop, CF_ARGS(cf_i64(i)), &f));
        CHECK(cf_future_result(f, CF_FOREVER, NULL));
        cf_future_release(f);
    }
    double rt = (now() - tr) / rt_rounds * 1e6;

    watch("tiny tasks", limit);
    cf_future **many = malloc((size_t)tiny * sizeof *many);
    double tt = now();
    for (int i = 0; i < tiny; i++)
        CHECK(cf_submit(ex, noop, CF_ARGS(cf_i64(i)), &many[i]));
    for (int i = 0; i < tiny; i++) {
        CHECK(cf_future_result(many[i], CF_FOREVER, NULL));
        cf_future_release(many[i]);
    }
    double tiny_rate = tiny / (now() - tt);
    free(many);

    cf_value *in = malloc((size_t)map_n * sizeof *in);
    for (int i = 0; i < map_n; i++)
        in[i] = cf_i64(i);
    /* Twice: the first map of a process pays for fresh memory (its
     * futures), the second reuses what the first freed. */
    double per_elem[2];
    watch("chunked maps", limit);
    for (int r = 0; r < 2; r++) {
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = 1000;
        cf_map_input input = cf_input_array(in, (size_t)map_n);
        cf_map_iter *it;
        double tm = now();
        CHECK(cf_map(ex, noop, &input, 1, &mo, &it));
        for (int i = 0; i < map_n; i++) {
            const cf_value *v;
            CHECK(cf_map_next(it, &v, NULL));
            if (v->as.i64 != i) {
                fprintf(stderr, "bench_mpi: map element %d is wrong\n", i);
                return 1;
            }
        }
        per_elem[r] = (now() - tm) / map_n * 1e9;
        cf_map_close(it);
    }
    free(in);
    watch("destroying the pool", limit);
    CHECK(cf_executor_destroy(ex));

    /* The floor is watched in every run (120 s without --quick). */
    double raw = raw_round_trip_us(rt_rounds, quick ? limit : 120);
    watch("done", 0);
    double fig[5] = {-1, -1, -1, -1, -1};
    fflush(stdout); /* what was measured shows even if the peer is slow */
    if (peer)
        run_peer(python, workers, quick ? 50 : 1000, quick ? 200 : 5000, map_n, peer_limit,
                 fig);
    printf("%-34s %12s %12s  %-8s %7s\n", "row", "cfutures", "mpi4py", "unit", "ratio");
    row("start-up (second pool / peer's)", "s", second, fig[0], false);
    row("round trip, one call at a time", "us", rt, fig[1], false);
    printf("%-34s %12.1f %12s  %-8s\n", "first call after the idle period", first_call, "-", "us");
    /* The floor: the same exchange with nothing but MPI, both ranks
     * spinning in blocking calls; its ratio is round trip / floor. */
    if (raw > 0)
        printf("%-34s %12.1f %12s  %-8s %6.1fx (round trip / floor)\n",
               "raw MPI ping-pong (floor)", raw, "-", "us", rt / raw);
    row("tiny tasks (all submitted at once)", "calls/s", tiny_rate, fig[2], true);
    row("chunked map, chunksize 1000", "ns/elem", per_elem[0], fig[3], false);
    row("chunked map again (same process)", "ns/elem", per_elem[1], fig[4], false);
    return 0;
}
