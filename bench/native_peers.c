/* SPDX-License-Identifier: MIT */
/*
 * native_peers.c - libuv and GLib as peers of bench_thread, the raw futex
 * ping-pong floor, and the table of peers (see native_peers.h).
 */
#include "native_peers.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

uint64_t native_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#ifndef CF_BENCH_HAVE_TBB
const native_peer cf_bench_tbb_peer = {
    "oneTBB", "-", "libtbb-dev or a C++ compiler not found at configure time",
    NULL, NULL, NULL, NULL,
};
#endif

/* ------------------------------------------------------------------------
 * libuv: uv_queue_work on a private loop; its thread pool is libuv's global
 * one (UV_THREADPOOL_SIZE, 4 threads by default).  The loop thread submits,
 * then uv_run() returns once every after_work callback has run.
 * ---------------------------------------------------------------------- */
#ifdef CF_BENCH_HAVE_UV
#include <uv.h>

typedef struct uv_rt {
    uv_loop_t loop;
    uv_work_t *reqs; /* `cap` requests, reused from batch to batch */
    size_t cap;
    int64_t *out;
    int64_t slot; /* the round trip's result */
    size_t done;
} uv_rt;

static void uv_task(uv_work_t *req)
{
    uv_rt *rt = req->loop->data;
    size_t i = (size_t)(uintptr_t)req->data;
    rt->out[i] = (int64_t)i + 1;
}

static void uv_after(uv_work_t *req, int status)
{
    uv_rt *rt = req->loop->data;
    if (status == 0)
        rt->done++;
}

static void *uv_open(void)
{
    uv_rt *rt = calloc(1, sizeof *rt);
    if (!rt || uv_loop_init(&rt->loop) != 0) {
        free(rt);
        return NULL;
    }
    rt->loop.data = rt;
    return rt;
}

static void uv_close_rt(void *p)
{
    uv_rt *rt = p;
    uv_loop_close(&rt->loop);
    free(rt->reqs);
    free(rt);
}

/* Returns false when a task failed or went missing. */
static bool uv_batch(uv_rt *rt, size_t start, size_t count, uint64_t *submit_ns)
{
    uint64_t s0 = native_now_ns();
    rt->done = 0;
    for (size_t j = 0; j < count; j++) {
        rt->reqs[j].data = (void *)(uintptr_t)(start + j);
        if (uv_queue_work(&rt->loop, &rt->reqs[j], uv_task, uv_after) != 0)
            return false;
    }
    if (submit_ns)
        *submit_ns += native_now_ns() - s0;
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    return rt->done == count;
}

static uint64_t uv_run_tasks(void *p, size_t n, size_t batch, int64_t *out, uint64_t *submit_ns)
{
    uv_rt *rt = p;
    size_t want = batch < n ? batch : n;
    if (want > rt->cap) {
        free(rt->reqs);
        rt->reqs = malloc(want * sizeof *rt->reqs);
        if (!rt->reqs) {
            rt->cap = 0;
            return 0;
        }
        rt->cap = want;
    }
    rt->out = out;
    uint64_t t0 = native_now_ns();
    for (size_t start = 0; start < n; start += batch) {
        size_t count = n - start < batch ? n - start : batch;
        if (!uv_batch(rt, start, count, submit_ns))
            return 0;
    }
    return native_now_ns() - t0;
}

static void uv_round_trip(void *p, size_t m, double *ns)
{
    uv_rt *rt = p;
    if (rt->cap < 1) {
        free(rt->reqs);
        rt->reqs = malloc(sizeof *rt->reqs);
        rt->cap = rt->reqs ? 1 : 0;
    }
    rt->out = &rt->slot;
    for (size_t j = 0; j < m; j++) {
        uint64_t t0 = native_now_ns();
        bool ok = rt->cap && uv_batch(rt, 0, 1, NULL);
        ns[j] = ok ? (double)(native_now_ns() - t0) : 0.0 / 0.0;
    }
}

#define UV_STR_(x) #x
#define UV_STR(x) UV_STR_(x)
#define UV_VERSION_TEXT UV_STR(UV_VERSION_MAJOR) "." UV_STR(UV_VERSION_MINOR) "." UV_STR(UV_VERSION_PATCH)
static const native_peer uv_peer = {
    "libuv", UV_VERSION_TEXT, NULL, uv_open, uv_close_rt, uv_run_tasks, uv_round_trip,
};
#else
static const native_peer uv_peer = {
    "libuv", "-", "libuv1-dev not found at configure time", NULL, NULL, NULL, NULL,
};
#endif

/* ------------------------------------------------------------------------
 * GLib: an exclusive GThreadPool of one thread per CPU (started up front).
 * A task stores its result and counts itself done; the last one of a batch
 * signals the waiting thread through a GMutex/GCond.
 * ---------------------------------------------------------------------- */
#ifdef CF_BENCH_HAVE_GLIB
#include <glib.h>

typedef struct glib_rt {
    GThreadPool *pool;
    GMutex mu;
    GCond cond;
    int64_t *out;
    int64_t slot; /* the round trip's result */
    atomic_size_t done;
    size_t target; /* written before the batch's pushes, read by the tasks */
} glib_rt;

static void glib_task(gpointer data, gpointer user)
{
    glib_rt *rt = user;
    size_t i = (size_t)GPOINTER_TO_SIZE(data) - 1; /* items cannot be NULL */
    rt->out[i] = (int64_t)i + 1;
    if (atomic_fetch_add_explicit(&rt->done, 1, memory_order_acq_rel) + 1 == rt->target) {
        /* The waiter sleeps on `cond` under `mu` until done == target. */
        g_mutex_lock(&rt->mu);
        g_cond_signal(&rt->cond);
        g_mutex_unlock(&rt->mu);
    }
}

static void *glib_open(void)
{
    glib_rt *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    g_mutex_init(&rt->mu);
    g_cond_init(&rt->cond);
    rt->pool = g_thread_pool_new(glib_task, rt, (gint)g_get_num_processors(), TRUE, NULL);
    if (!rt->pool) {
        free(rt);
        return NULL;
    }
    return rt;
}

static void glib_close(void *p)
{
    glib_rt *rt = p;
    g_thread_pool_free(rt->pool, FALSE, TRUE);
    g_cond_clear(&rt->cond);
    g_mutex_clear(&rt->mu);
    free(rt);
}

static void glib_batch(glib_rt *rt, size_t start, size_t count, uint64_t *submit_ns)
{
    uint64_t s0 = native_now_ns();
    atomic_store_explicit(&rt->done, 0, memory_order_relaxed);
    rt->target = count;
    for (size_t j = 0; j < count; j++)
        g_thread_pool_push(rt->pool, GSIZE_TO_POINTER(start + j + 1), NULL);
    if (submit_ns)
        *submit_ns += native_now_ns() - s0;
    g_mutex_lock(&rt->mu);
    while (atomic_load_explicit(&rt->done, memory_order_acquire) < count)
        g_cond_wait(&rt->cond, &rt->mu);
    g_mutex_unlock(&rt->mu);
}

static uint64_t glib_run(void *p, size_t n, size_t batch, int64_t *out, uint64_t *submit_ns)
{
    glib_rt *rt = p;
    rt->out = out;
    uint64_t t0 = native_now_ns();
    for (size_t start = 0; start < n; start += batch)
        glib_batch(rt, start, n - start < batch ? n - start : batch, submit_ns);
    return native_now_ns() - t0;
}

static void glib_round_trip(void *p, size_t m, double *ns)
{
    glib_rt *rt = p;
    rt->out = &rt->slot;
    for (size_t j = 0; j < m; j++) {
        uint64_t t0 = native_now_ns();
        glib_batch(rt, 0, 1, NULL);
        ns[j] = (double)(native_now_ns() - t0);
    }
}

#define GLIB_VERSION_TEXT G_STRINGIFY(GLIB_MAJOR_VERSION) "." G_STRINGIFY(GLIB_MINOR_VERSION) "." G_STRINGIFY(GLIB_MICRO_VERSION)
static const native_peer glib_peer = {
    "GLib", GLIB_VERSION_TEXT, NULL, glib_open, glib_close, glib_run, glib_round_trip,
};
#else
static const native_peer glib_peer = {
    "GLib", "-", "libglib2.0-dev not found at configure time", NULL, NULL, NULL, NULL,
};
#endif

const native_peer *native_peers(size_t *count)
{
    static native_peer table[3];
    table[0] = cf_bench_tbb_peer;
    table[1] = uv_peer;
    table[2] = glib_peer;
    *count = 3;
    return table;
}

/* ------------------------------------------------------------------------
 * Raw futex ping-pong
 * ---------------------------------------------------------------------- */

typedef struct fpong {
    _Atomic uint32_t req, resp; /* each a futex word; release/acquire pairs */
    _Atomic bool stop;
} fpong;

static void fwait(_Atomic uint32_t *w, uint32_t seen)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}

static void fwake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *fpong_server(void *arg)
{
    fpong *p = arg;
    uint32_t last = 0;
    for (;;) {
        uint32_t r;
        /* Woken by the client's FUTEX_WAKE after each new request, or by the
         * final one after `stop`. */
        while ((r = atomic_load_explicit(&p->req, memory_order_acquire)) == last &&
               !atomic_load_explicit(&p->stop, memory_order_acquire))
            fwait(&p->req, last);
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        last = r;
        atomic_store_explicit(&p->resp, r, memory_order_release);
        fwake(&p->resp);
    }
}

static void fpong_once(fpong *p, uint32_t k)
{
    atomic_store_explicit(&p->req, k, memory_order_release);
    fwake(&p->req);
    uint32_t r;
    /* Woken by the server's FUTEX_WAKE once it has answered k. */
    while ((r = atomic_load_explicit(&p->resp, memory_order_acquire)) != k)
        fwait(&p->resp, r);
}

void futex_pingpong(size_t m, size_t warm, double *ns)
{
    fpong p;
    atomic_init(&p.req, 0);
    atomic_init(&p.resp, 0);
    atomic_init(&p.stop, false);
    pthread_t th;
    if (pthread_create(&th, NULL, fpong_server, &p) != 0) {
        for (size_t j = 0; j < m; j++)
            ns[j] = 0.0 / 0.0;
        return;
    }
    uint32_t k = 0;
    for (size_t j = 0; j < warm; j++)
        fpong_once(&p, ++k);
    for (size_t j = 0; j < m; j++) {
        uint64_t t0 = native_now_ns();
        fpong_once(&p, ++k);
        ns[j] = (double)(native_now_ns() - t0);
    }
    atomic_store_explicit(&p.stop, true, memory_order_release);
    atomic_fetch_add_explicit(&p.req, 1, memory_order_release);
    fwake(&p.req);
    pthread_join(th, NULL);
}
