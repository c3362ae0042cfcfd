/* SPDX-License-Identifier: MIT */
/*
 * queue.h - an intrusive multi-producer queue (D. Vyukov's MPSC design).
 *
 * Design notes
 * - push() is wait-free: one atomic exchange of `tail` and one store, so
 *   submitting threads never wait for a lock a worker holds.
 * - pop() must be serialised by the caller (one consumer at a time; the
 *   thread pool uses a lock shared only by its workers).
 * - The queue is never physically empty: a `stub` node stays in it, so
 *   push never has to touch `head`.  "Logically empty" is head == &stub
 *   and tail == &stub.  tail alone is not enough: when a push races with
 *   the consumer re-inserting the stub behind the last node, the stub can
 *   end up *behind* the new node (tail == &stub with a node still queued);
 *   head then points at a real node until that node is popped.
 * - A push is visible in two steps (exchange, then link).  A consumer that
 *   sees the new tail but not yet the link reports CF__Q_BUSY; the caller
 *   retries (the producer is a few instructions from finishing).
 * - Strictly FIFO.  The thread pool keeps one per priority in use (its
 *   "lanes"; thread_pool.c explains how a worker chooses among them).
 * - Ordering: the exchange is seq_cst (not just acq_rel) because the
 *   thread pool pairs it with loads of its idle counters in a Dekker-style
 *   handshake (see thread_pool.c); it also makes a pushed node's contents
 *   visible to whoever acquires it.  `next` links are published with
 *   release and read with acquire; `head` is stored with release (see
 *   cf__queue_set_head for why that is enough for looks_empty()).
 */
#ifndef CF_QUEUE_H
#define CF_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct cf__qnode {
    _Atomic(struct cf__qnode *) next;
} cf__qnode;

typedef struct cf__queue {
    _Atomic(cf__qnode *) tail; /* producers */
    /* On the producers' line, not the consumer's: a push into an empty
     * queue writes `stub.next` right after `tail`, and the consumer that
     * then reads `stub.next` reads `tail` too (it finds the queue empty or
     * re-inserts the stub), so an empty queue's hand-over moves one line
     * between the two sides instead of two. */
    cf__qnode stub;
    char pad[64 - 2 * sizeof(void *)];
    /* Written by the consumer only; read by anyone (cf__queue_looks_empty). */
    _Atomic(cf__qnode *) head;
} cf__queue;

enum { CF__Q_EMPTY = 0, CF__Q_OK = 1, CF__Q_BUSY = 2 };

static inline void cf__queue_init(cf__queue *q)
{
    atomic_init(&q->stub.next, NULL);
    atomic_init(&q->tail, &q->stub);
    atomic_init(&q->head, &q->stub);
}

static inline void cf__queue_push(cf__queue *q, cf__qnode *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    cf__qnode *prev = atomic_exchange_explicit(&q->tail, n, memory_order_seq_cst);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* Pushes first..last, already linked through `next` by the caller, with
 * one exchange: the consumer sees them in link order, after everything
 * pushed before.  Until the final store links the chain in, a consumer
 * that sees the new tail reports CF__Q_BUSY, as for push(). */
static inline void cf__queue_push_chain(cf__queue *q, cf__qnode *first, cf__qnode *last)
{
    atomic_store_explicit(&last->next, NULL, memory_order_relaxed);
    cf__qnode *prev = atomic_exchange_explicit(&q->tail, last, memory_order_seq_cst);
    atomic_store_explicit(&prev->next, first, memory_order_release);
}

/* True when nothing is queued.  Any thread; seq_cst so it can take part in
 * the thread pool's Dekker-style handshake.  A consumer mid-pop may make it
 * answer "not empty" for a moment; never "empty" while a completed push is
 * still queued. */
static inline bool cf__queue_looks_empty(cf__queue *q)
{
    return atomic_load_explicit(&q->tail, memory_order_seq_cst) == &q->stub &&
           atomic_load_explicit(&q->head, memory_order_seq_cst) == &q->stub;
}

/* The consumer's look: the same answer, but `head` first and `tail` only
 * when head is the stub, so a consumer that keeps finding work does not
 * read the line every push writes (which the next push would then have to
 * take back).  Exact for the consumer (one at a time: pop_lock in the
 * thread pool).  Any other thread may use it only as a hint: an old value
 * of `head` can make it answer "empty" for a moment while a node is
 * queued behind a re-inserted stub; such a caller must decide to sleep on
 * looks_empty() only. */
static inline bool cf__queue_consumer_empty(cf__queue *q)
{
    return atomic_load_explicit(&q->head, memory_order_acquire) == &q->stub &&
           atomic_load_explicit(&q->tail, memory_order_acquire) == &q->stub;
}

/* Release, not seq_cst (which costs a locked instruction per pop on
 * x86): looks_empty() answers "empty" only if it read `tail` == &stub,
 * and a stub left behind queued nodes was put there by a consumer's
 * exchange of `tail`, which comes after that consumer's (or, through
 * pop_lock, an earlier consumer's) last store of `head` in program
 * order.  Reading that exchange (acquire) makes the store visible, so
 * the following load of `head` sees a real node while one is queued. */
static inline void cf__queue_set_head(cf__queue *q, cf__qnode *n)
{
    atomic_store_explicit(&q->head, n, memory_order_release);
}

/* Pops the oldest node into *out.  Consumer only. */
static inline int cf__queue_pop(cf__queue *q, cf__qnode **out)
{
    cf__qnode *head = atomic_load_explicit(&q->head, memory_order_relaxed);
    cf__qnode *next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (head == &q->stub) {
        if (!next)
            return atomic_load_explicit(&q->tail, memory_order_acquire) == &q->stub
                       ? CF__Q_EMPTY
                       : CF__Q_BUSY;
        cf__queue_set_head(q, next);
        head = next;
        next = atomic_load_explicit(&head->next, memory_order_acquire);
    }
    if (next) {
        cf__queue_set_head(q, next);
        *out = head;
        return CF__Q_OK;
    }
    if (atomic_load_explicit(&q->tail, memory_order_acquire) != head)
        return CF__Q_BUSY;
    /* `head` is the last node: put the stub behind it so it can leave. */
    cf__queue_push(q, &q->stub);
    next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (next) {
        cf__queue_set_head(q, next);
        *out = head;
        return CF__Q_OK;
    }
    return CF__Q_BUSY;
}

#endif
