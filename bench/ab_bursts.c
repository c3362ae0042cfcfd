/* SPDX-License-Identifier: MIT */
/*
 * ab_bursts.c - two or three builds of the library, side by side in one
 * process, on bursts of tiny calls.
 *
 *     ab_bursts [--quick] [-w N] [-p] [-k K] [-R] LIB0.so LIB1.so [LIB2.so]
 *
 * Each LIB is a libcfutures.so (an older build, a candidate change),
 * loaded with dlopen(RTLD_LOCAL) so that each keeps its own symbols.  For
 * k = 1, 4, 8, ... 16384 tasks in flight: a default thread pool of each
 * build runs 65,536 calls of a task that returns at once, submitted k at a
 * time with cf_submit() and collected in order, once to warm up and once
 * timed.  R rounds (default 7); the builds take turns in each round, the
 * order rotating from round to round, so that the machine's changes of
 * speed fall on all of them.  Prints, per k, LIB0's median ns per call
 * and each other build's median and its median per-round ratio to LIB0
 * (below 1.00x: faster than LIB0), with the range of that ratio.
 * --quick: 4,096 calls per run instead (a smoke test).
 * -w N: pools of max_workers = N instead of the default size.  The
 * options are filled by each build's cf_thread_pool_options_init() but
 * laid out as this tree's cfutures.h says, so the builds compared must
 * agree on that struct (builds of one release do).
 * -p: the submitting thread on one CPU and every worker on another (each
 * pool's initializer sets its affinity), so that calls always cross from
 * one CPU to the other; with -w 1 the figures hardly move with where the
 * kernel puts threads, and a change in what a call costs to hand over
 * shows through.
 * -k K: only bursts of K (one of the sizes above).
 *
 * Why: on a shared VM two runs a minute apart differ by 2x or more, far
 * more than most changes; ratios taken within a round do not.
 *
 * Three at most: each build's thread-locals use the initial-exec model
 * (CF_INITIAL_EXEC_TLS), and a fourth copy does not fit the static TLS
 * space glibc keeps for libraries loaded late.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfutures.h" /* types only: no build of the library is linked */

#define MAXLIBS 3
#define MAXROUNDS 64
#define CALLS 65536

static size_t calls = CALLS;
static int workers; /* -w; 0: the default pool */
static bool pinned;  /* -p */
static cpu_set_t worker_cpu; /* -p: the workers' CPU */

/* -p: each pool's initializer, in each worker thread.  Nonzero fails the
 * pool, and the run stops there. */
static int pin_worker(void *arg)
{
    (void)arg;
    return pthread_setaffinity_np(pthread_self(), sizeof worker_cpu, &worker_cpu) != 0;
}

/* The few entry points used, as each build exports them (cfutures.h). */
static struct build {
    const char *path;
    void (*options_init)(cf_thread_pool_options *);
    int (*pool_new)(cf_executor **, const cf_thread_pool_options *opts);
    int (*submit)(cf_executor *, cf_task_fn *, const cf_value *args, size_t nargs, cf_future **);
    int (*result_i64)(cf_future *, double timeout, int64_t *);
    int (*release)(cf_future *);
    int (*destroy)(cf_executor *);
    int (*return_i64)(cf_call *, int64_t);
} builds[MAXLIBS];

/* One task per build: it must return through its own build. */
static int task0(cf_call *c) { return builds[0].return_i64(c, 1); }
static int task1(cf_call *c) { return builds[1].return_i64(c, 1); }
static int task2(cf_call *c) { return builds[2].return_i64(c, 1); }
static cf_task_fn *const tasks[MAXLIBS] = {task0, task1, task2};

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "ab_bursts: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void *sym(void *h, const char *path, const char *name)
{
    void *p = dlsym(h, name);
    if (!p) {
        fprintf(stderr, "ab_bursts: %s has no %s\n", path, name);
        exit(1);
    }
    return p;
}

static void load(struct build *b, const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        die("cannot load", dlerror());
    b->path = path;
    *(void **)&b->options_init = sym(h, path, "cf_thread_pool_options_init");
    *(void **)&b->pool_new = sym(h, path, "cf_thread_pool_new");
    *(void **)&b->submit = sym(h, path, "cf_submit");
    *(void **)&b->result_i64 = sym(h, path, "cf_future_result_i64");
    *(void **)&b->release = sym(h, path, "cf_future_release");
    *(void **)&b->destroy = sym(h, path, "cf_executor_destroy");
    *(void **)&b->return_i64 = sym(h, path, "cf_return_i64");
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[MAXROUNDS];
    memcpy(s, v, (size_t)n * sizeof *v);
    qsort(s, (size_t)n, sizeof *s, cmp);
    return s[n / 2];
}

/* ns per call of CALLS calls, k at a time, on a new pool of build i (the
 * second of two passes). */
static double run(int i, size_t k, cf_future **fs)
{
    struct build *b = &builds[i];
    cf_executor *ex;
    cf_thread_pool_options o, *opts = NULL;
    if (workers || pinned) {
        b->options_init(&o);
        if (workers)
            o.max_workers = workers;
        if (pinned)
            o.initializer = pin_worker;
        opts = &o;
    }
    if (b->pool_new(&ex, opts) != 0)
        die("cf_thread_pool_new failed in", b->path);
    double ns = 0;
    for (int pass = 0; pass < 2; pass++) {
        uint64_t t0 = now_ns();
        for (size_t s = 0; s < calls; s += k) {
            for (size_t j = 0; j < k; j++)
                if (b->submit(ex, tasks[i], NULL, 0, &fs[j]) != 0)
                    die("cf_submit failed in", b->path);
            for (size_t j = 0; j < k; j++) {
                int64_t v = 0;
                if (b->result_i64(fs[j], 60, &v) != 0 || v != 1)
                    die("a call failed in", b->path);
                b->release(fs[j]);
            }
        }
        ns = (double)(now_ns() - t0) / (double)calls;
    }
    if (b->destroy(ex) != 0)
        die("cf_executor_destroy failed in", b->path);
    return ns;
}

int main(int argc, char **argv)
{
    int nb = 0, rounds = 7;
    size_t only_k = 0;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--quick")) {
            calls = 4096;
        } else if (!strcmp(argv[a], "-w")) {
            if (a + 1 == argc)
                die("-w needs a number of workers", NULL);
            workers = atoi(argv[++a]);
            if (workers < 1 || workers > 1024)
                die("workers must be 1-1024", argv[a]);
        } else if (!strcmp(argv[a], "-p")) {
            pinned = true;
        } else if (!strcmp(argv[a], "-k")) {
            if (a + 1 == argc)
                die("-k needs a burst size", NULL);
            only_k = strtoul(argv[++a], NULL, 10);
        } else if (argv[a][0] == '-') {
            rounds = atoi(argv[a] + 1);
            if (rounds < 1 || rounds > MAXROUNDS)
                die("rounds must be 1-64", argv[a]);
        } else if (nb < MAXLIBS) {
            load(&builds[nb++], argv[a]);
        } else {
            die("at most 3 builds", NULL);
        }
    }
    if (nb < 2) {
        fprintf(stderr,
                "usage: ab_bursts [--quick] [-w N] [-p] [-k K] [-ROUNDS] LIB0.so LIB1.so [LIB2.so]\n");
        return 2;
    }
    static const size_t ks[] = {1, 4, 8, 16, 32, 64, 256, 1024, 4096, 16384};
    bool k_known = only_k == 0;
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
        k_known = k_known || ks[ki] == only_k;
    if (!k_known)
        die("-k must be one of 1, 4, 8, 16, 32, 64, 256, 1024, 4096, 16384", NULL);
    if (pinned) {
        cpu_set_t mine;
        int first = -1, second = -1;
        if (sched_getaffinity(0, sizeof mine, &mine) != 0)
            die("-p: cannot read this thread's CPUs", NULL);
        for (int c = 0; c < CPU_SETSIZE && second < 0; c++)
            if (CPU_ISSET(c, &mine)) {
                if (first < 0)
                    first = c;
                else
                    second = c;
            }
        if (second < 0) {
            fprintf(stderr, "ab_bursts: -p needs two CPUs; skipped\n");
            return 77; /* ctest's SKIP_RETURN_CODE */
        }
        CPU_ZERO(&mine);
        CPU_SET(first, &mine);
        CPU_ZERO(&worker_cpu);
        CPU_SET(second, &worker_cpu);
        if (pthread_setaffinity_np(pthread_self(), sizeof mine, &mine) != 0)
            die("-p: cannot pin the submitting thread", NULL);
    }
    cf_future **fs = malloc(16384 * sizeof *fs);
    if (!fs)
        die("out of memory", NULL);
    for (int i = 0; i < nb; i++)
        printf("lib%d: %s\n", i, builds[i].path);
    if (workers)
        printf("pools of max_workers = %d\n", workers);
    if (pinned)
        printf("submitting thread on one CPU, workers on another\n");
    printf("ns per call, median of %d rounds; ratio: median per-round ratio to lib0 [range]\n",
           rounds);
    printf("%6s %9s", "k", "lib0");
    for (int i = 1; i < nb; i++)
        printf(" %9s%d %-22s", "lib", i, "ratio");
    printf("\n");
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0] && ks[ki] <= calls; ki++) {
        if (only_k && ks[ki] != only_k)
            continue;
        double t[MAXLIBS][MAXROUNDS];
        for (int r = 0; r < rounds; r++)
            for (int j = 0; j < nb; j++) {
                int i = (j + r) % nb;
                t[i][r] = run(i, ks[ki], fs);
            }
        printf("%6zu %9.0f", ks[ki], median(t[0], rounds));
        for (int i = 1; i < nb; i++) {
            double ratio[MAXROUNDS];
            for (int r = 0; r < rounds; r++)
                ratio[r] = t[i][r] / t[0][r];
            qsort(ratio, (size_t)rounds, sizeof *ratio, cmp);
            printf(" %10.0f %5.2fx [%.2f..%.2f]     ", median(t[i], rounds), ratio[rounds / 2],
                   ratio[0], ratio[rounds - 1]);
        }
        printf("\n");
    }
    free(fs);
    return 0;
}
