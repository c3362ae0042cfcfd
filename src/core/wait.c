/* SPDX-License-Identifier: MIT */
/*
 * wait.c - cf_wait() and cf_as_completed(): waiting on many futures.
 *
 * Design notes
 * - As in CPython, one waiter is installed on every future still pending:
 *   a cf__wnode per future links the waiter into that future's list.  When
 *   a future completes it calls cf__waiter_notify() for each node *with the
 *   future's lock held*.  The waiting thread unlinks every node, each under
 *   its future's lock, before it leaves; so a waiter (and its nodes) on the
 *   waiting thread's stack cannot vanish while a completer still uses it.
 * - Lock order: future lock, then waiter lock.  The waiting thread never
 *   takes a future's lock while holding the waiter's, and never holds two
 *   futures' locks at once.
 * - The waiter's `seq` is a futex word bumped (under the waiter lock) on
 *   every event that may satisfy the condition; the waiting thread reads it
 *   under the same lock together with the counters, then sleeps on it, so
 *   an event between the check and the sleep is never lost.
 * - Cancelled futures count as done (cancel() notifies waiters at once).
 * - Duplicates are collapsed keeping first occurrences, so outputs follow
 *   the caller's order.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { MODE_AS_COMPLETED = 0 };

typedef struct cf__waiter {
    cf__lock lock;
    _Atomic uint32_t seq;
    int mode;           /* a cf_return_when, or MODE_AS_COMPLETED */
    /* Guarded by lock: */
    size_t pending;     /* linked futures not yet done */
    bool failed;        /* a linked future finished with a failure */
    cf_future **ready;  /* as_completed: completion order, capacity = n */
    size_t ready_head, ready_tail;
} cf__waiter;

void cf__waiter_notify(cf__waiter *w, cf_future *f)
{
    bool failed = cf__future_failed(f);
    cf__lock_acquire(&w->lock);
    w->pending--;
    if (failed)
        w->failed = true;
    if (w->ready)
        w->ready[w->ready_tail++] = f;
    bool relevant;
    switch (w->mode) {
    case CF_FIRST_EXCEPTION: relevant = failed || w->pending == 0; break;
    case CF_ALL_COMPLETED: relevant = w->pending == 0; break;
    default: relevant = true; break;
    }
    if (relevant)
        atomic_fetch_add_explicit(&w->seq, 1, memory_order_release);
    cf__lock_release(&w->lock);
    if (relevant)
        cf__futex_wake(&w->seq, 1);
}

static void waiter_init(cf__waiter *w, int mode, cf_future **ready)
{
    atomic_init(&w->lock.word, 0);
    atomic_init(&w->seq, 0);
    w->mode = mode;
    w->pending = 0;
    w->failed = false;
    w->ready = ready;
    w->ready_head = w->ready_tail = 0;
}

/* Links `node` into f's list unless f is already done; returns whether it
 * linked.  Counts the pending future in the waiter. */
static bool link_node(cf_future *f, cf__waiter *w, cf__wnode *node)
{
    cf__lock_acquire(&f->lock);
    if (cf__state_done(cf__future_hook_locked(f))) {
        cf__lock_release(&f->lock);
        node->waiter = NULL;
        return false;
    }
    cf__lock_acquire(&w->lock);
    w->pending++;
    cf__lock_release(&w->lock);
    node->waiter = w;
    node->notify = NULL;
    cf__wnode_link(f, node);
    cf__lock_release(&f->lock);
    return true;
}

static void unlink_node(cf_future *f, cf__wnode *node)
{
    if (!node->waiter)
        return;
    cf__lock_acquire(&f->lock);
    cf__wnode_unlink(f, node);
    cf__lock_release(&f->lock);
    node->waiter = NULL;
}

static int cmp_ptr_index(const void *a, const void *b)
{
    const uintptr_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* Validates fs and writes its distinct futures, first occurrences in
 * order, to a new array.  Returns CF_OK, CF_EINVAL or CF_ENOMEM. */
static int distinct(cf_future *const *fs, size_t n, const char *who, cf_future ***out,
                    size_t *m)
{
    *out = NULL;
    *m = 0;
    if (n > 0 && !fs)
        return cf__fail(CF_EINVAL, "%s: fs is NULL but n is %zu", who, n);
    for (size_t i = 0; i < n; i++) {
        if (!fs[i])
            return cf__fail(CF_EINVAL, "%s: fs[%zu] is NULL", who, i);
        /* A released one, as far as that can be told (its block not yet
         * reused): caught here, before anything waits on it. */
        if (!cf__future_live(fs[i]))
            return cf__fail(CF_EINVAL, "%s: fs[%zu] is not a live future", who, i);
    }
    if (n == 0)
        return CF_OK;
    cf_future **uniq = malloc(n * sizeof *uniq);
    uintptr_t *pairs = malloc(n * 2 * sizeof *pairs);
    bool *keep = calloc(n, sizeof *keep);
    if (!uniq || !pairs || !keep) {
        free(uniq);
        free(pairs);
        free(keep);
        return cf__fail(CF_ENOMEM, "%s: out of memory", who);
    }
    for (size_t i = 0; i < n; i++) {
        pairs[2 * i] = (uintptr_t)fs[i];
        pairs[2 * i + 1] = i;
    }
    qsort(pairs, n, 2 * sizeof *pairs, cmp_ptr_index);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || pairs[2 * i] != pairs[2 * i - 2])
            keep[pairs[2 * i + 1]] = true;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (keep[i])
            uniq[k++] = fs[i];
    free(pairs);
    free(keep);
    *out = uniq;
    *m = k;
    return CF_OK;
}

/* Is the wait() condition met, given how many of m futures are done and
 * whether one failed? */
static bool condition_met(cf_return_when when, size_t done, size_t m, bool failed)
{
    switch (when) {
    case CF_FIRST_COMPLETED: return done > 0 || m == 0;
    case CF_FIRST_EXCEPTION: return failed || done == m;
    default: return done == m;
    }
}

CF__API int cf_wait(cf_future *const *fs, size_t n, double timeout, cf_return_when return_when,
                    cf_future **done, size_t *ndone, cf_future **not_done, size_t *nnot_done)
{
    if (ndone)
        *ndone = 0;
    if (nnot_done)
        *nnot_done = 0;
    if (return_when != CF_FIRST_COMPLETED && return_when != CF_FIRST_EXCEPTION &&
        return_when != CF_ALL_COMPLETED)
        return cf__fail(CF_EINVAL, "wait: invalid return_when %d", (int)return_when);
    int64_t deadline;
    int rc = cf__deadline(timeout, &deadline, "wait");
    if (rc != CF_OK)
        return rc;
    cf_future **uniq;
    size_t m;
    rc = distinct(fs, n, "wait", &uniq, &m);
    if (rc != CF_OK)
        return rc;

    /* Continuations queued on this thread complete nothing while it
     * waits: run them first. */
    cf__then_run_queued();
    /* Fast path, no waiter: is the condition already true? */
    size_t ndone_now = 0;
    bool failed = false;
    for (size_t i = 0; i < m; i++) {
        if (cf_future_done(uniq[i])) {
            ndone_now++;
            failed = failed || cf__future_failed(uniq[i]);
        }
    }
    bool met = condition_met(return_when, ndone_now, m, failed);
    if (!met && timeout > 0) {
        cf__wnode *nodes = malloc(m * sizeof *nodes);
        if (!nodes) {
            free(uniq);
            return cf__fail(CF_ENOMEM, "wait: out of memory");
        }
        cf__waiter w;
        waiter_init(&w, return_when, NULL);
        size_t linked = 0;
        for (size_t i = 0; i < m; i++)
            linked += link_node(uniq[i], &w, &nodes[i]);
        for (;;) {
            cf__lock_acquire(&w.lock);
            /* Futures done before linking plus linked ones since done. */
            size_t d = (m - linked) + (linked - w.pending);
            bool f_any = w.failed;
            uint32_t seq = atomic_load_explicit(&w.seq, memory_order_relaxed);
            cf__lock_release(&w.lock);
            if (!f_any && return_when == CF_FIRST_EXCEPTION) {
                for (size_t i = 0; i < m && !f_any; i++)
                    f_any = !nodes[i].waiter && cf__future_failed(uniq[i]);
            }
            met = condition_met(return_when, d, m, f_any);
            if (met || (deadline != CF__NS_FOREVER && cf__now_ns() >= deadline))
                break;
            cf__futex_wait(&w.seq, seq, deadline);
        }
        for (size_t i = 0; i < m; i++)
            unlink_node(uniq[i], &nodes[i]);
        free(nodes);
    }

    size_t nd = 0, nn = 0;
    for (size_t i = 0; i < m; i++) {
        if (cf_future_done(uniq[i])) {
            if (done)
                done[nd] = uniq[i];
            nd++;
        } else {
            if (not_done)
                not_done[nn] = uniq[i];
            nn++;
        }
    }
    free(uniq);
    if (ndone)
        *ndone = nd;
    if (nnot_done)
        *nnot_done = nn;
    /* The outputs are a later snapshot than the check: report what they
     * show, so a caller never sees CF_OK with the condition unmet. */
    failed = false;
    if (return_when == CF_FIRST_EXCEPTION && done)
        for (size_t i = 0; i < nd && !failed; i++)
            failed = cf__future_failed(done[i]);
    if (condition_met(return_when, nd, m, failed) || met)
        return CF_OK;
    return cf__fail(CF_ETIMEDOUT, "wait: %zu (of %zu) futures unfinished", nn, m);
}

/* ---- as_completed ------------------------------------------------------ */

struct cf_as_completed_iter {
    size_t n;            /* distinct futures, each retained */
    cf_future **fs;
    cf__wnode *nodes;
    cf_future **ready;   /* completion order; capacity n */
    size_t yielded;
    int64_t deadline;
    cf__waiter w;
};

CF__API int cf_as_completed(cf_future *const *fs, size_t n, double timeout,
                            cf_as_completed_iter **out)
{
    if (!out)
        return cf__fail(CF_EINVAL, "as_completed: out is NULL");
    *out = NULL;
    int64_t deadline;
    int rc = cf__deadline(timeout, &deadline, "as_completed");
    if (rc != CF_OK)
        return rc;
    cf_as_completed_iter *it = calloc(1, sizeof *it);
    if (!it)
        return cf__fail(CF_ENOMEM, "as_completed: out of memory");
    rc = distinct(fs, n, "as_completed", &it->fs, &it->n);
    if (rc != CF_OK) {
        free(it);
        return rc;
    }
    size_t m = it->n;
    it->nodes = calloc(m ? m : 1, sizeof *it->nodes);
    it->ready = calloc(m ? m : 1, sizeof *it->ready);
    if (!it->nodes || !it->ready) {
        free(it->nodes);
        free(it->ready);
        free(it->fs);
        free(it);
        return cf__fail(CF_ENOMEM, "as_completed: out of memory");
    }
    it->deadline = deadline;
    waiter_init(&it->w, MODE_AS_COMPLETED, it->ready);
    for (size_t i = 0; i < m; i++)
        cf_future_retain(it->fs[i]);
    /* Those done now come first, in the caller's order ... */
    bool *early = calloc(m ? m : 1, sizeof *early);
    if (!early) {
        cf_as_completed_free(it);
        return cf__fail(CF_ENOMEM, "as_completed: out of memory");
    }
    for (size_t i = 0; i < m; i++) {
        if (cf_future_done(it->fs[i])) {
            early[i] = true;
            it->ready[it->w.ready_tail++] = it->fs[i];
        }
    }
    /* ... then the rest as they complete (or now, if they just did). */
    for (size_t i = 0; i < m; i++) {
        if (early[i])
            continue;
        if (!link_node(it->fs[i], &it->w, &it->nodes[i])) {
            cf__lock_acquire(&it->w.lock);
            it->ready[it->w.ready_tail++] = it->fs[i];
            cf__lock_release(&it->w.lock);
        }
    }
    free(early);
    *out = it;
    return CF_OK;
}

CF__API int cf_as_completed_next(cf_as_completed_iter *it, cf_future **out)
{
    if (out)
        *out = NULL;
    if (!it || !out)
        return cf__fail(CF_EINVAL, "as_completed_next: %s is NULL", it ? "out" : "iterator");
    if (it->yielded == it->n)
        return CF_EDONE;
    cf__then_run_queued(); /* as in cf_wait() */
    for (;;) {
        cf__lock_acquire(&it->w.lock);
        if (it->w.ready_head < it->w.ready_tail) {
            *out = it->ready[it->w.ready_head++];
            cf__lock_release(&it->w.lock);
            it->yielded++;
            return CF_OK;
        }
        uint32_t seq = atomic_load_explicit(&it->w.seq, memory_order_relaxed);
        cf__lock_release(&it->w.lock);
        if (it->deadline != CF__NS_FOREVER && cf__now_ns() >= it->deadline)
            return cf__fail(CF_ETIMEDOUT, "as_completed: %zu (of %zu) futures unfinished",
                            it->n - it->yielded, it->n);
        cf__futex_wait(&it->w.seq, seq, it->deadline);
    }
}

CF__API void cf_as_completed_free(cf_as_completed_iter *it)
{
    if (!it)
        return;
    for (size_t i = 0; i < it->n; i++) {
        unlink_node(it->fs[i], &it->nodes[i]);
        cf_future_release(it->fs[i]);
    }
    free(it->nodes);
    free(it->ready);
    free(it->fs);
    free(it);
}
