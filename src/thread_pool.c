/*
 * thread_pool.c - the thread engine.
 *
 * Design notes
 *
 *   submit ──► [ FIFO of futures, qlock ] ──► worker threads (lazy, ≤ max)
 *                                                │ set_running_or_notify_cancel
 *                                                │ run the call, complete
 *                                                ▼ the future (callbacks run here)
 *
 * - One intrusive FIFO (futures linked through queue_next) under `qlock`.
 *   The queue owns one reference to each queued future; the worker that
 *   pops it takes that reference over and drops it when done.
 * - Lazy threads: a submit starts a thread when the calls outstanding
 *   (queued + running) outnumber the threads and the pool is below
 *   max_workers.  `busy` is decremented before the future is completed, so
 *   a caller who saw a result and submits again finds the thread idle and
 *   reuses it (3 blocked calls on a 5-thread pool make 3 threads; a chain
 *   of submit/result makes one).
 * - Idle workers first spin briefly (watching `nqueued` without the lock),
 *   then sleep on the futex word `wake_seq`.  A worker registers as a
 *   sleeper and reads `wake_seq` under `qlock`; a submit that sees more
 *   sleepers than wakes already pending bumps `wake_seq` under the same
 *   lock and wakes one.  So either the sleeper sees the new item before
 *   sleeping, or the futex sees the changed word: no lost wake-up.  Only
 *   submits that find a sleeper make a system call.
 * - Shutdown sets `shutdown` under qlock (no thread can start after that),
 *   optionally detaches the queue and cancels those futures, wakes every
 *   sleeper, and joins.  Workers leave once the queue is empty and the pool
 *   is shut down or broken.  Joining is serialised by `join_mu` so several
 *   threads may call shutdown(wait=true) at once.
 * - A failing initializer marks the pool broken and fails every queued
 *   future with CF_EBROKEN ("BrokenThreadPool"); a task's own failure never
 *   does.
 * - Worker threads block asynchronous signals, so a process-directed signal
 *   (SIGINT, SIGTERM, ...) is delivered to an application thread.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PREFIX_MAX 64

typedef struct thread_pool thread_pool;

typedef struct tp_worker {
    pthread_t tid;
    thread_pool *pool;
    int index;
    char name[PREFIX_MAX + 16]; /* "<prefix>_<index>", read by cf_thread_name() */
} tp_worker;

struct thread_pool {
    cf_executor base; /* first: the front end casts between them */
    int max_workers;
    char prefix[PREFIX_MAX + 1];
    cf_init_fn *initializer;
    void *initarg;

    cf__lock qlock;
    /* Guarded by qlock: */
    cf_future *head, *tail;
    int nthreads;          /* threads started (their slots in `workers`) */
    int alive;             /* threads that have not exited yet */
    int sleepers;          /* workers asleep or about to sleep on wake_seq */
    int wakes_pending;     /* wakes sent that no sleeper has consumed yet */
    bool broken;
    char broken_msg[160];
    tp_worker **workers;   /* max_workers slots */
    /* Written under qlock, read without it by spinning workers (relaxed:
     * a stale value only costs a spin or a trip through the lock). */
    _Atomic size_t nqueued;
    _Atomic bool shutdown;
    /* Futex word idle workers sleep on; bumped under qlock. */
    _Atomic uint32_t wake_seq;
    /* Calls popped and not yet completed.  Incremented under qlock,
     * decremented by the worker before it completes the future (release),
     * which the caller observes through the future's acquire. */
    _Atomic int busy;

    pthread_mutex_t join_mu;
    int joined;            /* guarded by join_mu: workers[0..joined) joined */
};

static _Thread_local tp_worker *tls_worker;
static _Atomic unsigned pool_counter;

static thread_pool *pool_of(cf_executor *ex)
{
    return (thread_pool *)ex;
}

/* Detaches the whole queue.  qlock held. */
static cf_future *take_queue(thread_pool *p)
{
    cf_future *list = p->head;
    p->head = p->tail = NULL;
    atomic_store_explicit(&p->nqueued, 0, memory_order_relaxed);
    return list;
}

/* Wakes every sleeper.  qlock held; returns whether a futex wake is due
 * after unlocking. */
static bool wake_all_locked(thread_pool *p)
{
    if (p->sleepers == 0)
        return false;
    p->wakes_pending = p->sleepers;
    atomic_fetch_add_explicit(&p->wake_seq, 1, memory_order_release);
    return true;
}

static void fail_all(cf_future *list, const char *msg)
{
    while (list) {
        cf_future *next = list->queue_next;
        cf__future_fail(list, CF_EBROKEN, "BrokenThreadPool", msg);
        cf_future_release(list);
        list = next;
    }
}

static void initializer_failed(thread_pool *p, int rc)
{
    cf__lock_acquire(&p->qlock);
    p->broken = true;
    snprintf(p->broken_msg, sizeof p->broken_msg,
             "A thread initializer failed (returned %d), the thread pool is not usable anymore", rc);
    cf_future *list = take_queue(p);
    bool wake = wake_all_locked(p);
    cf__lock_release(&p->qlock);
    if (wake)
        cf__futex_wake(&p->wake_seq, INT_MAX);
    cf__log("%s: %s", tls_worker->name, p->broken_msg);
    fail_all(list, p->broken_msg);
}

/* Pops the next future, or returns NULL when the worker should exit. */
static cf_future *next_call(thread_pool *p)
{
    int spins = cf__spin_limit();
    cf__lock_acquire(&p->qlock);
    for (;;) {
        cf_future *f = p->head;
        if (f) {
            p->head = f->queue_next;
            if (!p->head)
                p->tail = NULL;
            atomic_store_explicit(&p->nqueued,
                                  atomic_load_explicit(&p->nqueued, memory_order_relaxed) - 1,
                                  memory_order_relaxed);
            atomic_fetch_add_explicit(&p->busy, 1, memory_order_relaxed);
            cf__lock_release(&p->qlock);
            return f;
        }
        if (atomic_load_explicit(&p->shutdown, memory_order_relaxed) || p->broken) {
            cf__lock_release(&p->qlock);
            return NULL;
        }
        if (spins > 0) {
            cf__lock_release(&p->qlock);
            for (int i = 0; i < spins; i++) {
                if (atomic_load_explicit(&p->nqueued, memory_order_relaxed) ||
                    atomic_load_explicit(&p->shutdown, memory_order_relaxed))
                    break;
                cf__cpu_relax();
            }
            spins = 0;
            cf__lock_acquire(&p->qlock);
            continue;
        }
        p->sleepers++;
        uint32_t seq = atomic_load_explicit(&p->wake_seq, memory_order_relaxed);
        cf__lock_release(&p->qlock);
        cf__futex_wait(&p->wake_seq, seq, CF__NS_FOREVER);
        cf__lock_acquire(&p->qlock);
        p->sleepers--;
        if (p->wakes_pending > 0)
            p->wakes_pending--;
        spins = cf__spin_limit();
    }
}

static void *worker_main(void *arg)
{
    tp_worker *w = arg;
    thread_pool *p = w->pool;
    tls_worker = w;
    cf__set_thread_name(w->name);

    if (p->initializer) {
        int rc = p->initializer(p->initarg);
        if (rc != 0) {
            initializer_failed(p, rc);
            goto out;
        }
    }
    cf_future *f;
    while ((f = next_call(p)) != NULL) {
        if (cf_future_set_running_or_notify_cancel(f) == 1)
            cf__future_run_call(f, &p->busy);
        else
            atomic_fetch_sub_explicit(&p->busy, 1, memory_order_release);
        cf_future_release(f);
    }
out:
    cf__lock_acquire(&p->qlock);
    p->alive--;
    cf__lock_release(&p->qlock);
    cf__set_thread_name(NULL);
    tls_worker = NULL;
    return NULL;
}

/* Starts one more worker.  qlock held.  Returns CF_OK or CF_ENOMEM/ESYS. */
static int spawn_locked(thread_pool *p)
{
    tp_worker *w = malloc(sizeof *w);
    if (!w)
        return CF_ENOMEM;
    w->pool = p;
    w->index = p->nthreads;
    snprintf(w->name, sizeof w->name, "%s_%d", p->prefix, w->index);

    /* Workers block asynchronous signals; they inherit the mask. */
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->tid, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        free(w);
        return CF_ESYS;
    }
    p->workers[p->nthreads++] = w;
    p->alive++;
    return CF_OK;
}

static int tp_submit(cf_executor *ex, cf_future *f)
{
    thread_pool *p = pool_of(ex);
    cf__lock_acquire(&p->qlock);
    if (CF__UNLIKELY(atomic_load_explicit(&p->shutdown, memory_order_relaxed))) {
        cf__lock_release(&p->qlock);
        cf_future_release(f);
        return cf__fail(CF_ESHUTDOWN, "submit: cannot schedule new futures after shutdown");
    }
    if (CF__UNLIKELY(p->broken)) {
        cf__lock_release(&p->qlock);
        cf_future_release(f);
        return cf__fail(CF_EBROKEN, "submit: %s", p->broken_msg);
    }
    f->queue_next = NULL;
    if (p->tail)
        p->tail->queue_next = f;
    else
        p->head = f;
    p->tail = f;
    size_t queued = atomic_load_explicit(&p->nqueued, memory_order_relaxed) + 1;
    atomic_store_explicit(&p->nqueued, queued, memory_order_relaxed);

    bool wake = false;
    if (p->sleepers > p->wakes_pending) {
        p->wakes_pending++;
        atomic_fetch_add_explicit(&p->wake_seq, 1, memory_order_release);
        wake = true;
    }
    int busy = atomic_load_explicit(&p->busy, memory_order_relaxed);
    if ((size_t)busy + queued > (size_t)p->nthreads && p->nthreads < p->max_workers) {
        int rc = spawn_locked(p);
        if (rc != CF_OK && p->alive == 0) {
            /* Nobody could ever run it: take it back out. */
            p->head = p->tail = NULL;
            atomic_store_explicit(&p->nqueued, 0, memory_order_relaxed);
            cf__lock_release(&p->qlock);
            cf_future_release(f);
            return cf__fail(rc, "submit: cannot start a worker thread");
        }
        if (rc != CF_OK)
            cf__log("thread pool %s: cannot start another worker thread; continuing with %d",
                    p->prefix, p->alive);
    }
    cf__lock_release(&p->qlock);
    if (wake)
        cf__futex_wake(&p->wake_seq, 1);
    return CF_OK;
}

static bool tp_is_worker(const cf_executor *ex)
{
    return tls_worker && &tls_worker->pool->base == ex;
}

static int tp_worker_count(const cf_executor *ex)
{
    thread_pool *p = pool_of((cf_executor *)ex);
    cf__lock_acquire(&p->qlock);
    int n = p->alive;
    cf__lock_release(&p->qlock);
    return n;
}

static int tp_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    thread_pool *p = pool_of(ex);
    cf__lock_acquire(&p->qlock);
    atomic_store_explicit(&p->shutdown, true, memory_order_relaxed);
    cf_future *cancelled = cancel_futures ? take_queue(p) : NULL;
    bool wake = wake_all_locked(p);
    cf__lock_release(&p->qlock);
    if (wake)
        cf__futex_wake(&p->wake_seq, INT_MAX);
    while (cancelled) {
        cf_future *next = cancelled->queue_next;
        cf_future_cancel(cancelled);
        cf_future_release(cancelled);
        cancelled = next;
    }
    if (!wait)
        return CF_OK;
    if (tp_is_worker(ex))
        return cf__fail(CF_EDEADLK, "shutdown: wait requested from one of the pool's own "
                                    "workers, which cannot wait for itself");
    pthread_mutex_lock(&p->join_mu);
    cf__lock_acquire(&p->qlock);
    int n = p->nthreads; /* final: no thread starts after shutdown */
    cf__lock_release(&p->qlock);
    for (; p->joined < n; p->joined++)
        pthread_join(p->workers[p->joined]->tid, NULL);
    pthread_mutex_unlock(&p->join_mu);
    return CF_OK;
}

static void tp_destroy(cf_executor *ex)
{
    thread_pool *p = pool_of(ex);
    for (int i = 0; i < p->nthreads; i++)
        free(p->workers[i]);
    free(p->workers);
    pthread_mutex_destroy(&p->join_mu);
    free(p);
}

static const cf__engine thread_engine = {
    .name = "thread",
    .copies_args = false,
    .submit = tp_submit,
    .shutdown = tp_shutdown,
    .is_worker = tp_is_worker,
    .worker_count = tp_worker_count,
    .destroy = tp_destroy,
};

CF__API void cf_thread_pool_options_init(cf_thread_pool_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->max_workers = CF_AUTO;
}

CF__API int cf_thread_pool_new(cf_executor **out, const cf_thread_pool_options *opts)
{
    if (!out)
        return cf__fail(CF_EINVAL, "thread_pool_new: out is NULL");
    *out = NULL;
    cf_thread_pool_options defaults;
    if (!opts) {
        cf_thread_pool_options_init(&defaults);
        opts = &defaults;
    }
    int max = opts->max_workers;
    if (max == CF_AUTO)
        max = cf_thread_pool_default_workers();
    else if (max <= 0)
        return cf__fail(CF_EINVAL, "thread_pool_new: max_workers must be greater than 0 "
                                   "(or CF_AUTO), got %d", max);
    if (opts->thread_name_prefix && strlen(opts->thread_name_prefix) > PREFIX_MAX)
        return cf__fail(CF_EINVAL, "thread_pool_new: thread_name_prefix is longer than %d bytes",
                        PREFIX_MAX);

    thread_pool *p = calloc(1, sizeof *p);
    tp_worker **slots = p ? calloc((size_t)max, sizeof *slots) : NULL;
    if (!slots) {
        free(p);
        return cf__fail(CF_ENOMEM, "thread_pool_new: out of memory");
    }
    p->workers = slots;
    p->max_workers = max;
    if (opts->thread_name_prefix)
        snprintf(p->prefix, sizeof p->prefix, "%s", opts->thread_name_prefix);
    else
        snprintf(p->prefix, sizeof p->prefix, "ThreadPoolExecutor-%u",
                 atomic_fetch_add(&pool_counter, 1));
    p->initializer = opts->initializer;
    p->initarg = opts->initarg;
    atomic_init(&p->qlock.word, 0);
    atomic_init(&p->nqueued, 0);
    atomic_init(&p->shutdown, false);
    atomic_init(&p->wake_seq, 0);
    atomic_init(&p->busy, 0);
    pthread_mutex_init(&p->join_mu, NULL);
    cf__executor_register(&p->base, &thread_engine);
    *out = &p->base;
    return CF_OK;
}
