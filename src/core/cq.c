/* SPDX-License-Identifier: MIT */
/*
 * cq.c - completion queues: completed futures behind a file descriptor,
 * for event loops.
 *
 * Design notes
 * - Each added future gets an entry whose waiter node (cf__wnode with a
 *   `notify` function) sits in the future's waiter list, like a wait()
 *   waiter's.  complete_locked() (future.c) calls cq_notify() with the
 *   future's lock held; it only moves the entry to the ready list and
 *   arranges the descriptor's poke: library code, no user code, no
 *   blocking.
 * - Lock order: future lock, then queue lock (the "waiter lock" slot of
 *   internal.h).  add() takes both in that order; pop() takes the queue
 *   lock alone, and the future's lock only after dropping it; destroy()
 *   never holds the queue lock while taking a future's.
 * - An entry's node stays linked in its future's list after the
 *   notification: the future's other waiters may unlink themselves and
 *   touch their neighbours at any time, so our node must stay valid until
 *   we unlink it under the future's lock (in pop or destroy) - only then
 *   is the entry freed.
 * - The descriptor is a wake-up descriptor of the OS layer (os.h): an
 *   eventfd, or in the portable build a pipe's read end.  `signalled`
 *   (guarded by the queue lock) says it was or is about to be signalled:
 *   the first entry made ready sets it, and pop() drains the descriptor
 *   when it empties the ready list.
 * - Waking the loop: the write ("poke") happens after the completing
 *   thread has dropped both the queue lock and the future's lock
 *   (cq_notify() leaves it to cf__cq_flush_pokes(), which complete_locked()
 *   calls right after unlocking).  Writing under those locks woke the loop
 *   thread straight into them: it slept on each in turn, and the two
 *   hand-backs cost about 7 us of the loop's wake-up in bench_compose
 *   (now within 1.2x of a bare eventfd).  A deferred poke holds a
 *   reference to the queue (`refs`), so a queue destroyed meanwhile keeps
 *   its descriptor open until the poke is written.  The price: a pop()
 *   that takes the entry before its poke lands reads nothing (EAGAIN) and
 *   leaves `signalled` set, so the loop sees the descriptor readable once
 *   more and its next pop() returns 0 and reads it back.  Only one poke is
 *   ever outstanding (none is made while `signalled`), so the counter
 *   stays 0 or 1, and the descriptor is readable while a completed future
 *   waits and at most once more after the last pop.
 * - Destroy racing a completion: destroy detaches each pending entry under
 *   its future's lock.  A completion either ran before (the entry is then
 *   ready, and dropped as such) or will find the node gone; there is no
 *   third case, because both sides hold the future's lock.
 * - References: the entry owns one reference to its future from add()
 *   until pop() hands it to the caller or destroy() drops it; so `f` is
 *   alive whenever an entry points to it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

#define CQ_MAGIC 0x43465151u /* "CFQQ" */

typedef struct cq_entry {
    cf__wnode node;                /* in f's waiter list while `linked` */
    cf_future *f;                  /* the queue's reference */
    struct cf_completion_queue *q;
    /* Guarded by the queue lock: */
    struct cq_entry *prev, *next;  /* pending: doubly linked; ready: next */
    bool ready;
    /* Guarded by f's lock: */
    bool linked;
} cq_entry;

struct cf_completion_queue {
    uint32_t magic;
    /* cf__fork_generation at creation: in a child of fork() the queue is
     * the parent's (its descriptor is shared with the parent, its locks
     * may be held by threads the child does not have): see cq_inherited. */
    unsigned generation;
    cf__notifier note;             /* drained under lock, poked without */
    /* The owner's reference (until cf_cq_destroy) plus one per poke taken
     * and not yet written; the last one closes `fd` and frees the queue.
     * acq_rel on the decrement, so the freeing thread sees every earlier
     * holder's writes. */
    _Atomic uint32_t refs;
    cf__lock lock;
    /* Guarded by lock: */
    bool signalled;
    cq_entry *pending;             /* futures not completed yet */
    cq_entry *ready_head, *ready_tail;
    /* Added and not yet popped.  Only a snapshot for cf_cq_count(), so
     * relaxed. */
    _Atomic size_t count;
};

static bool cq_live(const cf_completion_queue *q)
{
    return q && q->magic == CQ_MAGIC;
}

/* The queue came through fork() from the parent.  Its descriptor is the
 * parent's too (an eventfd, or a pipe, shared across fork): a pop here
 * would drain the parent's wake-up, a poke would wake the parent's loop
 * for nothing.  So the child neither pops, adds nor pokes (CF_EBROKEN),
 * and cf_cq_destroy() only closes its own copy of the descriptor. */
static bool cq_inherited(const cf_completion_queue *q)
{
    return q->generation != atomic_load_explicit(&cf__fork_generation, memory_order_relaxed);
}

static int cq_broken(const char *who)
{
    return cf__fail(CF_EBROKEN, "%s: queue was inherited through fork(); it belongs to the "
                                "parent", who);
}

/* Lock held.  Marks the queue signalled; returns true when the caller must
 * then make the descriptor readable with poke(), after dropping the queue
 * lock (see "Waking the loop" above). */
static bool signal_locked(cf_completion_queue *q)
{
    if (q->signalled)
        return false;
    q->signalled = true;
    return true;
}

static void cq_unref(cf_completion_queue *q)
{
    if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) == 1) {
        cf__notifier_close(&q->note);
        free(q);
    }
}

/* Makes the descriptor readable.  No lock needed: the caller holds a
 * reference or owns the queue. */
static void poke(cf_completion_queue *q)
{
    /* Cannot fail short of a corrupted descriptor: at most one poke is
     * outstanding (pop drains it). */
    if (cf__notifier_signal(&q->note) != 0)
        cf__log("completion queue: cannot signal the descriptor: %s", strerror(errno));
}

/* Pokes a completion defers until its future's lock is dropped (see
 * "Waking the loop"): this thread's queues, each holding a reference.
 * Filled by cq_notify() and emptied by cf__cq_flush_pokes() in the same
 * complete_locked() call, so it never holds more than one future's queues;
 * a future in more than CQ_DEFERRED queues pokes the rest at once. */
#define CQ_DEFERRED 8
static _Thread_local cf_completion_queue *deferred[CQ_DEFERRED];
_Thread_local int cf__cq_ndeferred;

void (*_Atomic cf__test_hook_before_poke)(void);

void cf__cq_flush_pokes(void)
{
    while (cf__cq_ndeferred > 0) {
        cf_completion_queue *q = deferred[--cf__cq_ndeferred];
        void (*hook)(void) = atomic_load_explicit(&cf__test_hook_before_poke,
                                                  memory_order_relaxed);
        if (CF__UNLIKELY(hook != NULL))
            hook();
        poke(q);
        cq_unref(q);
    }
}

/* Lock held.  Appends e to the ready list; returns signal_locked(). */
static bool push_ready_locked(cf_completion_queue *q, cq_entry *e)
{
    e->ready = true;
    e->next = NULL;
    e->prev = NULL;
    if (q->ready_tail)
        q->ready_tail->next = e;
    else
        q->ready_head = e;
    q->ready_tail = e;
    return signal_locked(q);
}

/* Lock held.  Removes a pending entry from the pending list. */
static void unlink_pending_locked(cf_completion_queue *q, cq_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        q->pending = e->next;
    if (e->next)
        e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

/* Called by complete_locked() with f's lock held. */
static void cq_notify(cf__wnode *node, cf_future *f)
{
    (void)f;
    cq_entry *e = (cq_entry *)((char *)node - offsetof(cq_entry, node));
    cf_completion_queue *q = e->q;
    cf__lock_acquire(&q->lock);
    unlink_pending_locked(q, e);
    bool wake = push_ready_locked(q, e) && !cq_inherited(q);
    if (wake && cf__cq_ndeferred < CQ_DEFERRED)
        atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
    cf__lock_release(&q->lock);
    if (!wake)
        return;
    if (cf__cq_ndeferred < CQ_DEFERRED) {
        deferred[cf__cq_ndeferred++] = q;
    } else {
        poke(q); /* now: f's lock keeps q alive (destroy and pop take it) */
    }
}

CF__API int cf_cq_new(cf_completion_queue **out)
{
    if (!out)
        return cf__fail(CF_EINVAL, "cq_new: out is NULL");
    *out = NULL;
    cf_completion_queue *q = calloc(1, sizeof *q);
    if (!q)
        return cf__fail(CF_ENOMEM, "cq_new: out of memory");
    if (cf__notifier_open(&q->note) != 0) {
        int err = errno;
        free(q);
        return cf__fail(CF_ESYS, "cq_new: no wake-up descriptor: %s", strerror(err));
    }
    q->magic = CQ_MAGIC;
    cf__fork_init(); /* the fork handler that bumps cf__fork_generation */
    q->generation = atomic_load_explicit(&cf__fork_generation, memory_order_relaxed);
    atomic_init(&q->lock.word, 0);
    atomic_init(&q->count, 0);
    atomic_init(&q->refs, 1);
    *out = q;
    return CF_OK;
}

CF__API int cf_cq_fd(const cf_completion_queue *q)
{
    if (!cq_live(q))
        return cf__fail(CF_EINVAL, "cq_fd: %s", q ? "not a live queue" : "queue is NULL");
    if (cq_inherited(q))
        return cq_broken("cq_fd");
    return q->note.rfd;
}

CF__API size_t cf_cq_count(const cf_completion_queue *q)
{
    if (!cq_live(q))
        return 0;
    return atomic_load_explicit(&((cf_completion_queue *)q)->count, memory_order_relaxed);
}

CF__API int cf_cq_add(cf_completion_queue *q, cf_future *f)
{
    if (!cq_live(q) || !cf__future_live(f))
        return cf__fail(CF_EINVAL, "cq_add: %s", !q ? "queue is NULL"
                                                 : !f ? "future is NULL"
                                                 : !cq_live(q) ? "not a live queue"
                                                               : "not a live future");
    if (cq_inherited(q))
        return cq_broken("cq_add");
    cq_entry *e = malloc(sizeof *e);
    if (!e)
        return cf__fail(CF_ENOMEM, "cq_add: out of memory");
    e->node.waiter = NULL;
    e->node.notify = cq_notify;
    e->f = cf_future_retain(f);
    e->q = q;
    e->prev = e->next = NULL;
    e->ready = false;
    atomic_fetch_add_explicit(&q->count, 1, memory_order_relaxed);
    cf__lock_acquire(&f->lock);
    bool done = cf__state_done(cf__future_hook_locked(f));
    e->linked = !done;
    if (!done)
        cf__wnode_link(f, &e->node);
    /* Into a list before f's lock is dropped: from then on the completion
     * may notify the entry. */
    cf__lock_acquire(&q->lock);
    bool wake = false;
    if (done) {
        wake = push_ready_locked(q, e);
    } else {
        e->next = q->pending;
        if (q->pending)
            q->pending->prev = e;
        q->pending = e;
    }
    cf__lock_release(&q->lock);
    cf__lock_release(&f->lock);
    if (wake)
        poke(q); /* the caller owns q */
    return CF_OK;
}

/* Unlinks e's node from its future if still linked, then frees e and
 * returns the future with e's reference. */
static cf_future *entry_take(cq_entry *e)
{
    cf_future *f = e->f;
    cf__lock_acquire(&f->lock);
    if (e->linked) {
        cf__wnode_unlink(f, &e->node);
        e->linked = false;
    }
    cf__lock_release(&f->lock);
    free(e);
    return f;
}

CF__API int cf_cq_pop(cf_completion_queue *q, cf_future **out, size_t max)
{
    if (!cq_live(q) || (!out && max > 0))
        return cf__fail(CF_EINVAL, "cq_pop: %s", !q ? "queue is NULL"
                                                 : !cq_live(q) ? "not a live queue"
                                                               : "out is NULL");
    if (cq_inherited(q))
        return cq_broken("cq_pop");
    if (max > INT_MAX)
        max = INT_MAX;
    cq_entry *taken = NULL;
    size_t n = 0;
    cf__lock_acquire(&q->lock);
    while (n < max && q->ready_head) {
        cq_entry *e = q->ready_head;
        q->ready_head = e->next;
        e->next = taken; /* reversed here, put back in order below */
        taken = e;
        n++;
    }
    if (!q->ready_head) {
        q->ready_tail = NULL;
        if (q->signalled) {
            /* Drained: nothing waits any more.  Nothing to read means
             * the poke of the entry we just took has not been written
             * yet: stay signalled, and the next pop drains it (the one
             * stale wake-up, see "Waking the loop"). */
            if (cf__notifier_drain(&q->note))
                q->signalled = false;
        }
    }
    cf__lock_release(&q->lock);
    atomic_fetch_sub_explicit(&q->count, n, memory_order_relaxed);
    for (size_t i = n; i-- > 0;) {
        cq_entry *e = taken;
        taken = e->next;
        out[i] = entry_take(e);
    }
    return (int)n;
}

CF__API void cf_cq_destroy(cf_completion_queue *q)
{
    if (!cq_live(q))
        return;
    if (cq_inherited(q)) {
        /* Its locks, and those of its futures, may be held by threads the
         * child does not have: its memory is left alone (completions here
         * may still reach it, and never poke: cq_notify).  Only this
         * process's copy of the descriptor is closed. */
        q->magic = 0;
        cf__notifier_close(&q->note);
        return;
    }
    /* Detach the pending entries one by one, each under its future's lock
     * (taken without the queue lock, see the lock order).  Only this thread
     * frees entries, so `e` stays valid between the two lock sections even
     * if its future completes meanwhile. */
    for (;;) {
        cf__lock_acquire(&q->lock);
        cq_entry *e = q->pending;
        cf__lock_release(&q->lock);
        if (!e)
            break;
        cf_future *f = e->f;
        cf__lock_acquire(&f->lock);
        cf__lock_acquire(&q->lock);
        bool detached = !e->ready;
        if (detached)
            unlink_pending_locked(q, e);
        cf__lock_release(&q->lock);
        if (detached) {
            cf__wnode_unlink(f, &e->node);
            e->linked = false;
        }
        cf__lock_release(&f->lock);
        if (detached) {
            free(e);
            cf_future_release(f);
        }
    }
    /* Nothing can notify any more: drop the completed ones. */
    cq_entry *e = q->ready_head;
    while (e) {
        cq_entry *next = e->next;
        cf_future_release(entry_take(e));
        e = next;
    }
    q->magic = 0;
    cq_unref(q); /* a completion may still hold one for its poke */
}
