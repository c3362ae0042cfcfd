/* SPDX-License-Identifier: MIT */
/*
 * bench_compose.c - what composition and event-loop integration cost,
 * each beside its floor measured in the same run:
 *
 *   continuation hop, inline        a cf_then_ok() chain run on one thread,
 *                                   per hop; peer: a chain of hand-written
 *                                   done-callbacks doing the same step
 *   continuation hop, on a pool     a cf_then_ok(.., ex, ..) chain on a
 *                                   one-worker pool, per hop; peer: the
 *                                   same chain written by hand, a
 *                                   done-callback submitting the next step
 *   10,000-step chain               building and running it, inline and on
 *                                   the pool
 *   completion queue, one way       a pool worker's task ends -> the loop
 *                                   thread, asleep in epoll_wait() on the
 *                                   queue's descriptor, has popped the
 *                                   future; peer: a thread writes an
 *                                   eventfd -> the loop thread wakes
 *   completion queue, round trip    submit -> popped; peer: eventfd
 *                                   ping-pong between two threads
 *
 * Figures are medians over samples, then the median over rounds; ratios
 * are taken per round and their median shown.  No figure is asserted.
 *
 *   bench_compose [--quick] [-m samples] [-r rounds]
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "cfutures.h"

#define CHAIN 10000
#define MAX_ROUNDS 99

static void die(const char *what)
{
    fprintf(stderr, "bench_compose: %s failed: %s\n", what, cf_last_error_message());
    exit(1);
}

#define CHECK(expr)                                                           \
    do {                                                                      \
        if ((expr) != CF_OK)                                                  \
            die(#expr);                                                       \
    } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int inc(cf_call *call)
{
    return cf_return_i64(call, cf_arg_i64(call, 0) + 1);
}

/* ---- continuation chains --------------------------------------------- */

/* Builds a CHAIN-step cf_then_ok() chain (on `ex`, or inline when NULL)
 * on a pending future, then sets it off.  *build_ns / *run_ns receive the
 * two times. */
static void then_chain(cf_executor *ex, double *build_ns, double *run_ns)
{
    uint64_t t0 = now_ns();
    cf_future *first, *f;
    CHECK(cf_future_new(&first));
    f = cf_future_retain(first);
    for (int i = 0; i < CHAIN; i++) {
        cf_future *next;
        CHECK(cf_then_ok(f, ex, inc, CF_NOARGS, &next));
        cf_future_release(f);
        f = next;
    }
    uint64_t t1 = now_ns();
    cf_value v = cf_i64(0);
    CHECK(cf_future_set_result(first, &v));
    int64_t x;
    CHECK(cf_future_result_i64(f, CF_FOREVER, &x));
    uint64_t t2 = now_ns();
    if (x != CHAIN)
        die("chain result");
    cf_future_release(f);
    cf_future_release(first);
    *build_ns = (double)(t1 - t0);
    *run_ns = (double)(t2 - t1);
}

/* The peer of an inline hop: a done-callback that does the step by hand,
 * setting the next standalone future's result. */
typedef struct cb_link {
    cf_future *next;
} cb_link;

static int cb_step(cf_future *f, void *arg)
{
    cb_link *l = arg;
    const cf_value *v;
    if (cf_future_result(f, 0, &v) != CF_OK)
        return 1;
    cf_value w = cf_i64(v->as.i64 + 1);
    return cf_future_set_result(l->next, &w);
}

/* Runs callback hops over CHAIN futures; returns the time per hop.  The
 * futures are linked in blocks of 100 and each block is set off on its
 * own: a callback chain nests one stack frame per hop (what continuations
 * avoid), so its blocks stay short. */
static double callback_hops(void)
{
    enum { BLOCK = 100 };
    cf_future **fs = malloc(CHAIN * sizeof *fs);
    cb_link *links = malloc(CHAIN * sizeof *links);
    if (!fs || !links)
        die("malloc");
    for (int i = 0; i < CHAIN; i++)
        CHECK(cf_future_new(&fs[i]));
    for (int i = 0; i < CHAIN; i++) {
        if (i % BLOCK == BLOCK - 1)
            continue;
        links[i].next = fs[i + 1];
        CHECK(cf_future_add_done_callback(fs[i], cb_step, &links[i]));
    }
    uint64_t t0 = now_ns();
    for (int start = 0; start < CHAIN; start += BLOCK) {
        cf_value v = cf_i64(start);
        CHECK(cf_future_set_result(fs[start], &v));
    }
    uint64_t t1 = now_ns();
    for (int start = 0; start < CHAIN; start += BLOCK) {
        int64_t x;
        CHECK(cf_future_result_i64(fs[start + BLOCK - 1], 0, &x));
        if (x != start + BLOCK - 1)
            die("callback chain result");
    }
    for (int i = 0; i < CHAIN; i++)
        cf_future_release(fs[i]);
    free(fs);
    free(links);
    return (double)(t1 - t0) / (CHAIN - CHAIN / BLOCK);
}

/* The peer of a hop on the pool: the continuation written by hand, a
 * done-callback that submits the next step to the pool.  Returns the run
 * time of CHAIN steps. */
typedef struct resubmit {
    cf_executor *ex;
    int left;           /* only the thread completing the steps */
    cf_future *done;
} resubmit;

static int cb_resubmit(cf_future *f, void *arg)
{
    resubmit *c = arg;
    const cf_value *v;
    if (cf_future_result(f, 0, &v) != CF_OK)
        return 1;
    if (--c->left == 0)
        return cf_future_set_result(c->done, v);
    cf_future *g;
    if (cf_submit(c->ex, inc, v, 1, &g) != CF_OK)
        return 1;
    int rc = cf_future_add_done_callback(g, cb_resubmit, c);
    cf_future_release(g);
    return rc;
}

static double resubmit_chain(cf_executor *ex)
{
    resubmit c = {ex, CHAIN, NULL};
    CHECK(cf_future_new(&c.done));
    uint64_t t0 = now_ns();
    cf_future *g;
    CHECK(cf_submit(ex, inc, CF_ARGS(cf_i64(0)), &g));
    CHECK(cf_future_add_done_callback(g, cb_resubmit, &c));
    cf_future_release(g);
    int64_t x;
    CHECK(cf_future_result_i64(c.done, CF_FOREVER, &x));
    uint64_t t1 = now_ns();
    if (x != CHAIN)
        die("resubmit chain result");
    cf_future_release(c.done);
    return (double)(t1 - t0);
}

/* ---- completion queue vs eventfd -------------------------------------- */

/* Task: records when it ends in *arg 0. */
static int stamp(cf_call *call)
{
    _Atomic uint64_t *t = cf_arg_ptr(call, 0);
    atomic_store_explicit(t, now_ns(), memory_order_release);
    return 0;
}

/* Sleeps in epoll_wait() on ep until its one descriptor is readable. */
static void wait_readable(int ep)
{
    struct epoll_event ev;
    int n;
    do
        n = epoll_wait(ep, &ev, 1, 10000); /* woken by the descriptor; 10 s guards a bug */
    while (n < 0 && errno == EINTR);
    if (n != 1)
        die("epoll_wait (nothing within 10 s)");
}

static int epoll_on(int fd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll");
    return ep;
}

/* m samples through a completion queue; medians of one-way and round
 * trip into *oneway / *rtt (ns). */
static void cq_latency(cf_executor *ex, size_t m, double *a, double *b, double *oneway,
                       double *rtt)
{
    cf_completion_queue *q;
    CHECK(cf_cq_new(&q));
    int ep = epoll_on(cf_cq_fd(q));
    _Atomic uint64_t ended;
    for (size_t i = 0; i < m; i++) {
        atomic_store(&ended, 0);
        uint64_t t0 = now_ns();
        cf_future *f;
        CHECK(cf_submit(ex, stamp, CF_ARGS(cf_ptr(&ended)), &f));
        CHECK(cf_cq_add(q, f));
        cf_future_release(f);
        wait_readable(ep);
        cf_future *done;
        if (cf_cq_pop(q, &done, 1) != 1)
            die("cq_pop");
        uint64_t t1 = now_ns();
        cf_future_release(done);
        a[i] = (double)(t1 - atomic_load_explicit(&ended, memory_order_acquire));
        b[i] = (double)(t1 - t0);
    }
    close(ep);
    cf_cq_destroy(q);
    *oneway = median(a, m);
    *rtt = median(b, m);
}

typedef struct pong {
    int go, back;              /* eventfds */
    _Atomic uint64_t sent;     /* when the server wrote `back` */
    size_t m;
} pong;

static void *pong_server(void *arg)
{
    pong *p = arg;
    for (size_t i = 0; i < p->m; i++) {
        uint64_t v;
        if (read(p->go, &v, sizeof v) != sizeof v) /* blocking: woken by the client */
            return NULL;
        atomic_store_explicit(&p->sent, now_ns(), memory_order_release);
        v = 1;
        if (write(p->back, &v, sizeof v) != sizeof v)
            return NULL;
    }
    return NULL;
}

/* The floor: the same shape with raw eventfds and a plain thread. */
static void eventfd_latency(size_t m, double *a, double *b, double *oneway, double *rtt)
{
    pong p = {eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), 0, m};
    if (p.go < 0 || p.back < 0)
        die("eventfd");
    int ep = epoll_on(p.back);
    pthread_t t;
    if (pthread_create(&t, NULL, pong_server, &p) != 0)
        die("pthread_create");
    for (size_t i = 0; i < m; i++) {
        uint64_t v = 1, t0 = now_ns();
        if (write(p.go, &v, sizeof v) != sizeof v)
            die("write");
        wait_readable(ep);
        if (read(p.back, &v, sizeof v) != sizeof v)
            die("read");
        uint64_t t1 = now_ns();
        a[i] = (double)(t1 - atomic_load_explicit(&p.sent, memory_order_acquire));
        b[i] = (double)(t1 - t0);
    }
    pthread_join(t, NULL);
    close(ep);
    close(p.go);
    close(p.back);
    *oneway = median(a, m);
    *rtt = median(b, m);
}

/* ---- report ------------------------------------------------------------ */

enum {
    HOP_INLINE, HOP_CB, HOP_POOL, HOP_RT,
    CHAIN_INLINE_BUILD, CHAIN_INLINE_RUN, CHAIN_POOL_BUILD, CHAIN_POOL_RUN,
    CQ_ONEWAY, FD_ONEWAY, CQ_RTT, FD_RTT,
    NFIG
};

int main(int argc, char **argv)
{
    size_t m = 20000, rounds = 5;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "-m") && i + 1 < argc)
            m = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            rounds = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_compose [--quick] [-m samples] [-r rounds]\n");
            return 2;
        }
    }
    if (quick) {
        m = 200;
        rounds = 1;
    }
    if (m < 1 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "bench_compose: need -m >= 1 and 1 <= -r <= %d\n", MAX_ROUNDS);
        return 2;
    }
    double *a = malloc(m * sizeof *a), *b = malloc(m * sizeof *b);
    double fig[NFIG][MAX_ROUNDS];
    if (!a || !b)
        die("malloc");
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex;
    CHECK(cf_thread_pool_new(&ex, &o));
    resubmit_chain(ex); /* start the worker */
    for (size_t r = 0; r < rounds; r++) {
        double build, run;
        then_chain(NULL, &build, &run);
        fig[CHAIN_INLINE_BUILD][r] = build;
        fig[CHAIN_INLINE_RUN][r] = run;
        fig[HOP_INLINE][r] = run / CHAIN;
        fig[HOP_CB][r] = callback_hops();
        then_chain(ex, &build, &run);
        fig[CHAIN_POOL_BUILD][r] = build;
        fig[CHAIN_POOL_RUN][r] = run;
        fig[HOP_POOL][r] = run / CHAIN;
        fig[HOP_RT][r] = resubmit_chain(ex) / CHAIN;
        cq_latency(ex, m, a, b, &fig[CQ_ONEWAY][r], &fig[CQ_RTT][r]);
        eventfd_latency(m, a, b, &fig[FD_ONEWAY][r], &fig[FD_RTT][r]);
    }
    CHECK(cf_executor_destroy(ex));

    double med[NFIG];
    for (int k = 0; k < NFIG; k++) {
        double tmp[MAX_ROUNDS];
        memcpy(tmp, fig[k], rounds * sizeof *tmp);
        med[k] = median(tmp, rounds);
    }
    /* Per-round ratios, then their median. */
    static const int pairs[][2] = {{HOP_INLINE, HOP_CB}, {HOP_POOL, HOP_RT},
                                   {CQ_ONEWAY, FD_ONEWAY}, {CQ_RTT, FD_RTT}};
    double ratio[4];
    for (int k = 0; k < 4; k++) {
        double tmp[MAX_ROUNDS];
        for (size_t r = 0; r < rounds; r++)
            tmp[r] = fig[pairs[k][0]][r] / fig[pairs[k][1]][r];
        ratio[k] = median(tmp, rounds);
    }
    printf("bench_compose: %zu samples per latency row, %zu round%s, chains of %d steps, "
           "a one-worker thread pool\n\n",
           m, rounds, rounds == 1 ? "" : "s", CHAIN);
    printf("%-44s %10s   %-36s %10s %7s\n", "", "cfutures", "floor / peer", "", "ratio");
    printf("%-44s %7.3f us   %-36s %7.3f us %6.2fx\n", "continuation hop, inline",
           med[HOP_INLINE] / 1e3, "done-callback hop by hand", med[HOP_CB] / 1e3, ratio[0]);
    printf("%-44s %7.3f us   %-36s %7.3f us %6.2fx\n", "continuation hop, on the pool",
           med[HOP_POOL] / 1e3, "done-callback submitting the next", med[HOP_RT] / 1e3, ratio[1]);
    printf("%-44s %7.3f us   %-36s %7.3f us %6.2fx\n",
           "completion queue: task end -> loop popped", med[CQ_ONEWAY] / 1e3,
           "raw eventfd: write -> loop woken", med[FD_ONEWAY] / 1e3, ratio[2]);
    printf("%-44s %7.3f us   %-36s %7.3f us %6.2fx\n",
           "completion queue: submit -> loop popped", med[CQ_RTT] / 1e3,
           "raw eventfd ping-pong round trip", med[FD_RTT] / 1e3, ratio[3]);
    printf("\n%d-step chain: inline build %.2f ms + run %.2f ms; on the pool build %.2f ms + "
           "run %.2f ms\n",
           CHAIN, med[CHAIN_INLINE_BUILD] / 1e6, med[CHAIN_INLINE_RUN] / 1e6,
           med[CHAIN_POOL_BUILD] / 1e6, med[CHAIN_POOL_RUN] / 1e6);
    printf("target: completion queue within 2x of the raw eventfd floor (one way): %s\n",
           ratio[2] <= 2.0 ? "met" : "NOT met");
    free(a);
    free(b);
    return 0;
}
