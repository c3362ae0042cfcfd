/* SPDX-License-Identifier: MIT */
/*
 * thread_pool.c - the thread engine.
 *
 * Design notes
 *
 *   submit ──► lane of its priority ──push──► [ lane 7: MPSC FIFO ] ─┐
 *     │  (submit_lock)                      [ lane 0: MPSC FIFO ] ─┼─pop (pop_lock)─► workers
 *     │  no lane free: (prio_lock) ──────►  [ heap by priority  ] ─┘  start (one CAS,
 *     └─ wakes a parked worker if nobody is searching           cf__future_start_call),
 *                                                               run, complete (callbacks)
 *
 * Lanes: one lock-free FIFO (queue.h) per priority in use, at most NLANES
 * at once; lanes[0] belongs to the default priority (0) and always exists.
 * `order` lists the active lanes by priority, highest first, in one word,
 * so a worker reads the whole list with one load.  A submit finds its
 * priority's lane in `order` (a few compares) and pushes with one
 * exchange; a new priority takes a free slot, and when none is free the
 * empty lanes are retired first (under pop_lock, so no worker is popping
 * from one).  A worker takes from the first non-empty lane in `order`:
 * the highest priority queued, FIFO among equals.  A program that sets no
 * priority has only lanes[0], and its workers read `order` once more than
 * a single FIFO would need.
 *
 * The heap: when every lane holds calls, a call of a priority without a
 * lane goes to a binary heap ordered by (priority desc, submission number
 * asc) under prio_lock; `nprio` counts its calls, so workers look at it
 * only while it is not 0.  A worker takes the heap's top instead of the
 * best lane's call if its priority is at least as high: a priority that
 * has calls in both has its older ones in the heap (its calls went there
 * only while it had no lane, and a lane is retired only when empty), so
 * FIFO among equals holds across the two.
 *
 * Batches (cf_submit_many, and each chunk of a chunked map, which the
 * front hands over in pieces that fit the bound): one submit_lock, one
 * exchange per run of calls of one lane, one wake-up.  The calls stay
 * separate: any worker takes any of them, each can be cancelled until a
 * worker begins it, each gives back its own slot.  cf_submit_many hands
 * over blocks rather than futures (tp_submit_made): under the one
 * submit_lock the calls are made and pushed MADE_PIECE at a time, so the
 * workers run the first piece while the submitter makes the next; made
 * all before any was queued, a batch of 4096 left the workers idle for
 * most of its making (about 3x the time per call).
 *
 * Bound (max_queued, cf__bound in executor.c): the front takes a slot
 * before it hands a call over; a worker gives it back as it takes the
 * call (cf__slot_release after the pop), cancel() gives it back at once,
 * and the drains of shutdown(cancel_futures)/breakage through the futures
 * they cancel or fail.  shutdown and breakage close the bound, waking
 * every submitter waiting for room.
 *
 * Locks and what they guard (order: submit_lock -> pop_lock -> prio_lock,
 * submit_lock -> prio_lock and submit_lock -> pop_lock; idle_lock is
 * never held with another):
 * - submit_lock: `nthreads`, `admitted`, `workers`, `broken_msg`, every
 *   write of `shutdown`/`broken`/`all_started`, and the lanes' set
 *   (`lanes_used`, each write of `order` and of a lane's `priority`).  Taken by submitters and shutdown
 *   only, never by a worker on its hot path, so submitters do not wait on
 *   preempted workers.  Every push happens under it with `shutdown`
 *   false, so a worker that reads `shutdown` true (acquire) and then finds
 *   the queues empty knows nothing more will ever arrive.
 * - pop_lock: the consumer side of every lane (queue.h allows one consumer
 *   at a time): workers, the drains of shutdown(cancel) and breakage, and
 *   the retiring of empty lanes.
 * - idle_lock: the stack of parked workers (`idle_head`, each worker's
 *   `idle_next`/`in_idle`).
 * - prio_lock: the heap (`heap`, `nheap`, `heap_cap`, `prio_seq`).  Heap
 *   pushes happen under submit_lock too, holding prio_lock across the
 *   admission of the calls (which may start a thread); pops under pop_lock
 *   and prio_lock.
 *
 * Lazy threads: the calls submitted and not yet finished ("unfinished")
 * are `admitted` - `ended`, two counters so that submitters and workers
 * each write their own (a submit of a pool that has all its threads does
 * not read `ended` at all, and once every thread is started, `all_started`,
 * the workers stop counting it).  A submit starts a thread when unfinished >
 * nthreads and the pool is below max_workers.  The worker counts a call
 * in `ended` just before completing its future, so a caller that saw a
 * result and submits again finds the thread free (3 blocked calls on a
 * 5-thread pool make 3 threads; a chain of submit/result makes one).
 *
 * Idle workers and wake-ups (the scheme of Go's scheduler):
 * - `spinning` is a token held by at most one worker that searches for
 *   work: it spins a few microseconds on the queue, then gives the token
 *   back and parks.  Parking = push itself on the idle stack, bump
 *   `nidle`, re-check the queue, then sleep on its own futex word `park`.
 * - A submit that finds no searcher (spinning == 0) but a parked worker
 *   claims the token, pops a parked worker and hands the token to it
 *   (park = 1, futex wake).  The hand-off is explicit, so a wake can never
 *   go to nobody.  A searcher keeps the token until it has popped; any
 *   worker that pops while more work is queued wakes the next worker the
 *   same way.  So a call that a submitter left to the searcher is always
 *   either taken or handed on.
 * - No lost wake-up: the submitter's push (seq_cst exchange, after the
 *   seq_cst store of `order` that made its lane, or for the heap the
 *   seq_cst increment of `nprio`) precedes its seq_cst loads of
 *   `spinning`/`nidle`; a parking worker's seq_cst increment of `nidle`
 *   (or store of `spinning` = 0) precedes its seq_cst re-check of
 *   `order`, every lane in it and `nprio` (has_work).  In the single total
 *   order one of the two sees the other: either the worker sees the item,
 *   or the submitter sees the worker and wakes it.
 *
 * Short calls: the wake-ups above insure against a call that blocks:
 * whatever is queued behind it must not wait for it.  For calls of a few
 * hundred nanoseconds they are the main cost: a woken worker arrives
 * (microseconds later) to find the queue drained by the worker that woke
 * it, and a submitter that queues 4 tiny calls and waits for them paid
 * about 3 context switches per burst (5-7 us per call on 2 CPUs, against
 * 0.6 us with a single worker).  So, while calls are short, a wake-up is
 * left out and the calls are left to a worker already awake, with a
 * sentry as the insurance instead:
 * - The sentry is one parked worker (the role `sentry`, taken by CAS; the
 *   first worker to park after a wake-up could have been left out,
 *   `want_watch`) that sleeps with a timeout.  At each look it sets
 *   `quick` for the next period: true when wake-ups were left out or
 *   wanted in the last one, and the pool took at least one call per
 *   QUICK_NS (10 us) per awake worker over the time that passed (`taken`,
 *   `alive` - `nidle`).  While `quick` is true its period is WATCH_MIN_NS
 *   (500 us); otherwise it doubles up to WATCH_MAX_NS.  It gives the role
 *   up after COLD_LOOKS looks in a row with nothing left out or wanted
 *   and nothing queued, and wakers take it last (`watcher`).  Its measure
 *   (when the period began, `taken` and the wake-ups left out then, the
 *   period; `watch_*`) passes to the next sentry: in a pool of two
 *   workers each burst wakes both, the sentry too, long before its first
 *   look, and a measure begun again by each sentry never reached one (4
 *   tiny calls per burst paid 5.5 us each instead of 0.8).  So the next
 *   sentry looks when the old period ends, at once if it has; a measure
 *   older than that, or left by a sentry that gave up, begins again.
 * - A wake-up may be left out only while `quick` is true: by a submitter
 *   of at most DEFER_MAX calls that is not a worker of the pool, while a
 *   thread of the pool other than the parked ones is awake (nidle <
 *   alive); or by a worker that took a call while more, but no more than
 *   DEFER_MAX, are queued (admitted - taken).  One thread leaves out at
 *   most DEFER_MAX in a row (`streak`), then wakes a worker after all.
 * - Liveness: a call left queued without a wake-up has an awake thread
 *   of the pool that comes back to the queues when its call returns (a
 *   parking worker re-checks them, as above).  If that call blocks, the
 *   next look of the sentry that ends a period which began with `quick`
 *   true, or a second look in a row that finds calls queued, finds them
 *   queued and none taken in the period, and the sentry takes itself off
 *   the idle stack to run them (a rescue): so the call waits at most about
 *   two periods (1 ms) plus a wake-up behind a call that blocks.  While
 *   calls are being taken they are taken in order (FIFO within a
 *   priority), so the one left queued comes up, unless calls of higher
 *   priority keep coming; then the forced wake-up of each streak brings
 *   more workers.
 * - The handshake: the thread that leaves a wake-up out loads `quick`
 *   (seq_cst) after its push or its has_work(); the sentry stores `quick`
 *   (seq_cst) at every look, and false when it leaves (woken, rescue,
 *   giving up), before it looks at the queues (has_work) and before it
 *   frees the role.  So if the thread read true, the sentry's next look
 *   sees its call (or sees it taken): while watching, that look either
 *   rescues it or keeps the period at WATCH_MIN_NS for the next; when
 *   leaving, the sentry runs the calls it finds queued itself.
 * - Calls that block (I/O) are few per period and per awake worker, so
 *   `quick` stays false and every wake-up happens as above; a sentry then
 *   looks at most every WATCH_MAX_NS (10 ms), and stops after COLD_LOOKS
 *   looks once no wake-up is wanted.
 * - Shutdown wakes every parked worker; workers leave once the queues are
 *   empty and the pool is shut down or broken.  Joining is serialised by
 *   `join_mu`, so several threads may call shutdown(wait=true) at once.
 * - A failing initializer marks the pool broken and fails every queued
 *   future with CF_EBROKEN ("BrokenThreadPool"); a task's own failure never
 *   does.
 * - Worker threads block asynchronous signals, so a process-directed signal
 *   (SIGINT, SIGTERM, ...) is delivered to an application thread.
 *
 * Trailing a submitter (the "temporal slipping" of Giacomoni et al.'s
 * FastForward queue): a worker on another CPU that takes each call as soon
 * as it is pushed makes every call's lines (the future block, the lane's
 * last node and `tail`) cross between the two CPUs while the submitter is
 * still writing them; in batches of 4096 tiny calls on 2 CPUs that made a
 * submit 3-10x slower than one nobody trailed (bench/README.md, "The
 * batches row").  So a worker that keeps catching up pauses once, briefly,
 * to let the submitter get ahead:
 * - It is trailing when, back from a call, its first look took the one
 *   call queued (the pop put the stub back, `emptied`), which somebody
 *   else pushed (a call that submits its successor, `pushed`, is a chain
 *   on one CPU, where there is nothing to gain), and it has taken at least
 *   `slip_run` (SLIP_RUN at first) calls since it last found the queues
 *   empty (`run`): a burst of a few calls, which the submitter then waits
 *   for, never pays.
 * - Only while the default priority's lane is the only one active and the
 *   heap is empty: with other lanes, knowing that the last call was taken
 *   means reading their `tail`s, and a batch of mixed priorities lost more
 *   that way than it gained.  Lanes are retired only when a new priority
 *   needs a slot, so a pool that was given a call of another priority
 *   stops pausing until then.
 * - Then, before its next look, it spins SLIP_NS (or the spin budget,
 *   cf__spin_ns(), if smaller; none on one CPU or with CF_SPIN_NS=0)
 *   reading only its clock, and takes the calls queued meanwhile in a row.
 * - A pause helped if at least SLIP_GAIN calls were queued after it.  If
 *   the worker empties the queue sooner (`slipped`, `since_slip`), the
 *   submitter could not get ahead: it waits for each result (a lazy map
 *   with buffersize 1, a submit-next-then-wait-previous loop), and every
 *   pause only delayed it, by up to 1.76x per call in such loops.  Then
 *   `run` starts again and `slip_run` doubles, up to SLIP_RUN_MAX; a pause
 *   that helped puts it back to SLIP_RUN.  Such a loop pauses about
 *   log2(SLIP_RUN_MAX / SLIP_RUN) times and then once per SLIP_RUN_MAX
 *   calls.
 * - Liveness: the pause is bounded and takes no lock, so nothing waits for
 *   it but the calls queued behind; a call waits at most SLIP_NS more per
 *   pause.
 */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PREFIX_MAX 64

/* Trailing a submitter (design notes): the pause; the calls a worker
 * takes without finding the queues empty before it may pause, at first
 * and at most (the run doubles after each pause that did not help); the
 * calls that must have queued during a pause for it to count as a help. */
#define SLIP_NS 1000
#define SLIP_RUN CF__SLIP_RUN
#define SLIP_GAIN 4
#define SLIP_RUN_MAX (SLIP_RUN << 6)

typedef struct thread_pool thread_pool;

/* Lanes for this many distinct priorities at once, the default's
 * included: a slot number + 1 fits a nibble of `order`. */
#define NLANES 15
#define ORDER_DEFAULT_ONLY ((uint64_t)1) /* lanes[0] alone */
_Static_assert(NLANES <= 15, "a slot number + 1 must fit a nibble of `order`");

/* One FIFO of calls of one priority.  Aligned so that producers pushing
 * to one lane and a consumer popping from the next share no line.  Its
 * priority is kept apart (`lane_prio`), in the submitters' lines: the
 * line after `tail` holds `head`, which every pop writes, and a submit
 * that looked up its lane there would miss in the cache once per lane
 * it passes. */
typedef struct lane {
    _Alignas(64) cf__queue q;
} lane;

typedef struct tp_worker {
    pthread_t tid;
    thread_pool *pool;
    int index;
    /* Parking: 0 = parked (or about to), 1 = woken.  Set to 1 by the waker
     * with release after `token`, read with acquire by the worker. */
    _Atomic uint32_t park;
    bool token;                 /* woken holding the `spinning` token */
    unsigned streak;            /* own thread only: wake-ups left out in a row */
    /* Own thread only (see "Trailing a submitter"): calls taken since the
     * queues were last found empty; the last call taken was the only one
     * queued, found at the first look after a call; the call being run
     * submitted to this pool. */
    unsigned run;
    bool trailing;
    bool pushed;
    bool slipped;        /* paused, and not yet known whether it helped */
    unsigned since_slip; /* calls taken since the pause */
    unsigned slip_run;   /* the run it takes to pause: SLIP_RUN..SLIP_RUN_MAX */
    struct tp_worker *idle_next; /* guarded by idle_lock */
    bool in_idle;                /* guarded by idle_lock */
    char name[PREFIX_MAX + 16];  /* "<prefix>_<index>", read by cf_thread_name() */
} tp_worker;

struct thread_pool {
    cf_executor base; /* first: the front end casts between them */
    int max_workers;
    char prefix[PREFIX_MAX + 1];
    cf_init_fn *initializer;
    void *initarg;

    /* The lanes (see the design notes); lanes[0] is the default
     * priority's and always active. */
    lane lanes[NLANES];
    /* The fields below come in groups, each starting a cache line of its
     * own, so that what one side writes for every call does not evict
     * what the other side touches for every call (profiled before they
     * were split, with all calls of a bench in flight: about 40% of the
     * samples of submit_calls sat on loads and increments of fields in
     * lines the workers had just written):
     * - read-mostly: read by submitters and workers for every call,
     *   written rarely (lanes made and retired, the heap used, shutdown);
     * - the submitters': submit_lock and what it guards;
     * - the workers': pop_lock, and `ended`, counted as each call ends;
     * - the idle workers': written as workers search and park, read by
     *   every submit;
     * - the rest: cold. */

    /* ---- read-mostly ---- */
    /* The active lanes, highest priority first: nibble i (from the low
     * end) holds the slot + 1 of the i-th, 0 ends the list.  Written under
     * submit_lock (and pop_lock too when lanes are retired), seq_cst: a
     * lane is published before the first push into it, and has_work()'s
     * seq_cst load of it takes part in the wake-up handshake. */
    _Alignas(64) _Atomic uint64_t order;
    /* == nheap; changed under prio_lock, seq_cst (the wake-up handshake),
     * read without it by the workers' fast path. */
    _Atomic size_t nprio;
    _Atomic bool shutdown;       /* written under submit_lock */
    _Atomic bool broken;         /* written under submit_lock */
    /* cf_terminate_workers(): read by running tasks through
     * cf_cancel_requested() (cf__current_pool_stop); relaxed, no data. */
    _Atomic bool stop;
    /* Set (relaxed, under submit_lock) once nthreads reaches max_workers,
     * never cleared: from then on no submit reads `ended`, so workers
     * stop counting it.  A worker that reads it false a little late
     * counts once more, which nobody reads either. */
    _Atomic bool all_started;

    /* ---- the submitters' ---- */
    _Alignas(64) cf__lock submit_lock;
    int nthreads;                /* guarded by submit_lock */
    /* Calls admitted so far (admit_locked), wrapping; written under
     * submit_lock (relaxed load and store, no read-modify-write).
     * admitted - ended = the calls submitted and not yet finished (see
     * "Lazy threads"); admitted - taken, read by workers (relaxed), is
     * about the calls queued (see "Short calls"): a hint, off by the
     * calls admitted and not yet pushed. */
    _Atomic unsigned admitted;
    /* Wake-ups left out by submits (relaxed; read by the sentry). */
    _Atomic unsigned submit_skips;
    uint32_t lanes_used;         /* guarded by submit_lock: slots in `order` */
    /* The priority of each lane slot.  Written under submit_lock while
     * the slot is in no `order` a worker can hold (just made, after it was
     * retired under pop_lock); read by submitters under submit_lock, and
     * by workers under pop_lock, for a lane of the `order` they loaded,
     * only while the heap holds calls (heap_take). */
    int lane_prio[NLANES];
    tp_worker **workers;         /* guarded by submit_lock; grows as threads start */
    int workers_cap;             /* guarded by submit_lock */

    /* ---- the workers' ---- */
    _Alignas(64) cf__lock pop_lock;
    /* Calls finished or dropped, wrapping: incremented (release) by the
     * worker just before it completes a call (cf__future_run_call), or
     * for a cancelled call as it meets it, and by the drains of
     * shutdown(cancel_futures) and breakage.  Read (relaxed) by
     * submitters only while the pool may still start threads: a caller
     * that saw a call's outcome (acquire) sees its increment by
     * coherence. */
    _Atomic unsigned ended;
    /* Calls taken off the queues, wrapping: written under pop_lock
     * (relaxed load and store), read (relaxed) by the sentry (see "Short
     * calls"). */
    _Atomic unsigned taken;
    /* Wake-ups left out by workers (relaxed; read by the sentry). */
    _Atomic unsigned worker_skips;
    /* Pauses of trailing workers (relaxed; tests read it). */
    _Atomic unsigned slips;

    /* ---- the idle workers' ---- */
    _Alignas(64) cf__lock idle_lock;
    tp_worker *idle_head;        /* guarded by idle_lock */
    tp_worker *watcher;          /* guarded by idle_lock: the sentry, or NULL */
    _Atomic int nidle;           /* parked workers; changed under idle_lock */
    _Atomic int spinning;        /* the search token: 0 or 1 */
    /* Short calls (see the design notes).  `quick` is written by the
     * sentry only, and seq_cst: it is the handshake between a wake-up left
     * out and the sentry's looks.  `sentry` is the role, taken by CAS and
     * given back by a seq_cst store.  `want_watch` is only a request
     * (relaxed). */
    _Atomic int sentry;          /* 1 while a parked worker watches */
    _Atomic bool quick;          /* true only while the sentry looks every WATCH_MIN_NS */
    _Atomic bool want_watch;     /* a wake-up could have been left out */
    _Atomic unsigned rescues;    /* calls the sentry took up (relaxed; tests read it) */

    /* ---- cold ---- */
    /* Calls whose priority found no lane (more distinct priorities queued
     * at once than there are lanes; see the design notes). */
    _Alignas(64) cf__lock prio_lock;
    struct prio_entry {
        int priority;
        uint64_t seq;            /* submission number: FIFO among equals */
        cf_future *f;
    } *heap;                     /* guarded by prio_lock */
    size_t nheap, heap_cap;      /* guarded by prio_lock */
    uint64_t prio_seq;           /* guarded by prio_lock */

    /* The sentry's measure, carried from one watch to the next (see
     * watch()): the start of the period being measured (0: none yet), its
     * length, and `taken` and skips() at its start.  Only the holder of
     * the role reads or writes them; the role passes from one holder to
     * the next through the seq_cst store of `sentry` = 0 and the CAS that
     * takes it. */
    int64_t watch_then, watch_period;
    unsigned watch_taken, watch_skips;

    char broken_msg[160];        /* guarded by submit_lock; final once broken */
    _Atomic int alive;           /* threads that have not exited */

    pthread_mutex_t join_mu;
    int joined;                  /* guarded by join_mu: workers[0..joined) joined */
};

static _Thread_local tp_worker *tls_worker;
static _Atomic unsigned pool_counter;

static thread_pool *pool_of(cf_executor *ex)
{
    return (thread_pool *)ex;
}

/* Pops one future from lane l; waits out a half-finished push.  Sets
 * *emptied (if not NULL) when it took the last node queued: the pop put
 * the stub back (a hint: a push may have come right after).  pop_lock
 * held. */
static cf_future *lane_pop(lane *l, bool *emptied)
{
    for (int tries = 0;; tries++) {
        cf__qnode *n;
        int r = cf__queue_pop(&l->q, &n);
        if (r == CF__Q_OK) {
            if (emptied) /* `head`: the consumer's own line */
                *emptied = atomic_load_explicit(&l->q.head, memory_order_relaxed) == &l->q.stub;
            return cf__future_of_qnode(n);
        }
        if (r == CF__Q_EMPTY)
            return NULL;
        if (tries < 64)
            cf__cpu_relax();
        else
            sched_yield(); /* the pushing thread was preempted mid-push */
    }
}

static lane *lane_of(thread_pool *p, uint64_t ord)
{
    return &p->lanes[(ord & 15) - 1];
}

/* The slot of the active lane of `priority`, or -1.  submit_lock held. */
static int lane_find(thread_pool *p, int priority)
{
    if (priority == CF_PRIORITY_DEFAULT)
        return 0;
    for (uint64_t ord = atomic_load_explicit(&p->order, memory_order_relaxed); ord; ord >>= 4)
        if (p->lane_prio[(ord & 15) - 1] == priority)
            return (int)(ord & 15) - 1;
    return -1;
}

/* Takes the empty lanes out of `order`, but the default's and those in
 * `pinned`.  submit_lock held, so no push is under way and the emptiness
 * seen is exact; pop_lock taken, so no worker pops from a lane it found in
 * an older `order` (after this, workers load the new one under it). */
static void lanes_retire_empty(thread_pool *p, uint32_t pinned)
{
    cf__lock_acquire(&p->pop_lock);
    uint64_t keep = 0;
    int k = 0;
    for (uint64_t ord = atomic_load_explicit(&p->order, memory_order_relaxed); ord; ord >>= 4) {
        int slot = (int)(ord & 15) - 1;
        if (slot == 0 || (pinned & (1u << slot)) || !cf__queue_looks_empty(&p->lanes[slot].q))
            keep |= (ord & 15) << (4 * k++);
        else
            p->lanes_used &= ~(1u << slot);
    }
    atomic_store(&p->order, keep);
    cf__lock_release(&p->pop_lock);
}

/* Makes a lane for `priority` (not the default) in a free slot, retiring
 * empty lanes (but those in `pinned`) when none is free.  Returns its slot,
 * or -1 when every lane holds calls.  submit_lock held. */
static int lane_make(thread_pool *p, int priority, uint32_t pinned)
{
    const uint32_t all = (1u << NLANES) - 1;
    if (p->lanes_used == all)
        lanes_retire_empty(p, pinned);
    if (p->lanes_used == all)
        return -1;
    int slot = 1;
    while (p->lanes_used & (1u << slot))
        slot++;
    p->lane_prio[slot] = priority; /* in no `order` yet: see `lane_prio` */
    p->lanes_used |= 1u << slot;
    uint64_t ord = atomic_load_explicit(&p->order, memory_order_relaxed), out = 0;
    int k = 0;
    bool placed = false;
    for (; ord; ord >>= 4) {
        if (!placed && priority > p->lane_prio[(ord & 15) - 1]) {
            out |= (uint64_t)(slot + 1) << (4 * k++);
            placed = true;
        }
        out |= (ord & 15) << (4 * k++);
    }
    if (!placed)
        out |= (uint64_t)(slot + 1) << (4 * k);
    atomic_store(&p->order, out); /* seq_cst: before the first push into it */
    return slot;
}

/* ---- the heap for priorities without a lane (prio_lock held) ------------- */

static bool entry_before(const struct prio_entry *a, const struct prio_entry *b)
{
    return a->priority > b->priority || (a->priority == b->priority && a->seq < b->seq);
}

/* Makes room for `more` entries.  Returns false on ENOMEM. */
static bool heap_reserve_locked(thread_pool *p, size_t more)
{
    if (more <= p->heap_cap - p->nheap)
        return true;
    size_t cap = p->heap_cap ? p->heap_cap : 64;
    while (cap - p->nheap < more)
        cap *= 2;
    struct prio_entry *h = realloc(p->heap, cap * sizeof *h);
    if (!h)
        return false;
    p->heap = h;
    p->heap_cap = cap;
    return true;
}

/* Adds f; heap_reserve_locked() made room. */
static void heap_push_locked(thread_pool *p, cf_future *f)
{
    struct prio_entry e = {f->priority, p->prio_seq++, f};
    size_t i = p->nheap++;
    while (i > 0 && entry_before(&e, &p->heap[(i - 1) / 2])) {
        p->heap[i] = p->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    p->heap[i] = e;
    atomic_fetch_add(&p->nprio, 1); /* seq_cst: see the design notes */
}

/* Removes and returns the top (nheap > 0). */
static cf_future *heap_pop_locked(thread_pool *p)
{
    cf_future *top = p->heap[0].f;
    struct prio_entry last = p->heap[--p->nheap];
    size_t i = 0, n = p->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && entry_before(&p->heap[c + 1], &p->heap[c]))
            c++;
        if (!entry_before(&p->heap[c], &last))
            break;
        p->heap[i] = p->heap[c];
        i = c;
    }
    if (n)
        p->heap[i] = last;
    atomic_fetch_sub(&p->nprio, 1);
    return top;
}

/* The heap's top if there is one and its priority is at least that of
 * lane `best` (NULL: none).  Equal priorities go to the heap first: its
 * calls of a priority that has a lane are older than the lane's (see the
 * design notes).  pop_lock held; takes prio_lock. */
static cf_future *heap_take(thread_pool *p, const lane *best)
{
    cf_future *f = NULL;
    cf__lock_acquire(&p->prio_lock);
    if (p->nheap && (!best || p->heap[0].priority >= p->lane_prio[best - p->lanes]))
        f = heap_pop_locked(p);
    cf__lock_release(&p->prio_lock);
    return f;
}

/* ---- taking calls ----------------------------------------------------------- */

/* Anything queued in a lane or the heap?  seq_cst: part of the wake-up
 * handshake. */
static bool has_work(thread_pool *p)
{
    for (uint64_t ord = atomic_load(&p->order); ord; ord >>= 4)
        if (!cf__queue_looks_empty(&lane_of(p, ord)->q))
            return true;
    return atomic_load(&p->nprio) != 0;
}

/* has_work() as a hint, from the consumer's side (cf__queue_consumer_empty):
 * a lane whose `head` is a real node answers without its `tail`, the line
 * every push to it writes.  A wrong "empty" sends the worker to
 * next_call's search, whose has_work() looks again. */
static bool work_hint(thread_pool *p)
{
    for (uint64_t ord = atomic_load_explicit(&p->order, memory_order_acquire); ord; ord >>= 4)
        if (!cf__queue_consumer_empty(&lane_of(p, ord)->q))
            return true;
    return atomic_load_explicit(&p->nprio, memory_order_relaxed) != 0;
}

/* Takes the queued call of highest priority, FIFO among equals: the first
 * non-empty lane in `order`, unless the heap's top comes first.  *emptied
 * as for lane_pop() (left alone for a call from the heap).  pop_lock
 * held. */
static cf_future *pop_locked(thread_pool *p, bool *emptied)
{
    lane *best = NULL;
    for (uint64_t ord = atomic_load_explicit(&p->order, memory_order_acquire); ord; ord >>= 4) {
        if (!cf__queue_consumer_empty(&lane_of(p, ord)->q)) {
            best = lane_of(p, ord);
            break;
        }
    }
    if (CF__UNLIKELY(atomic_load_explicit(&p->nprio, memory_order_relaxed) != 0)) {
        cf_future *f = heap_take(p, best);
        if (f)
            return f;
    }
    return best ? lane_pop(best, emptied) : NULL;
}

/* Counts a call taken off the queues.  pop_lock held. */
static void count_taken(thread_pool *p)
{
    atomic_store_explicit(&p->taken, atomic_load_explicit(&p->taken, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Takes the next call, or NULL when nothing is queued.  While only the
 * default lane is active and the heap is empty (a program that sets no
 * priority) that is one look at lanes[0] before the lock, as before lanes
 * existed; only then is *emptied set (see "Trailing a submitter"). */
static cf_future *pop(thread_pool *p, bool *emptied)
{
    if (CF__LIKELY(atomic_load_explicit(&p->order, memory_order_relaxed) == ORDER_DEFAULT_ONLY &&
                   atomic_load_explicit(&p->nprio, memory_order_relaxed) == 0)) {
        /* A hint (no lock yet), as work_hint(). */
        if (cf__queue_consumer_empty(&p->lanes[0].q))
            return NULL;
    } else if (!work_hint(p)) {
        return NULL;
    } else {
        /* With other lanes, or the heap, in use, emptying one lane says
         * nothing of the rest, and finding out reads lines the submitters
         * write (each lane's `tail`, or `admitted`): either way cost a
         * batch of mixed priorities more than pausing gained it
         * (bench/README.md), so no pop counts as emptying the queues. */
        emptied = NULL;
    }
    cf__lock_acquire(&p->pop_lock);
    cf_future *f = pop_locked(p, emptied);
    if (f)
        count_taken(p);
    cf__lock_release(&p->pop_lock);
    return f;
}

/* Detaches everything queued into a list linked through qnode.next. */
static cf__qnode *drain(thread_pool *p)
{
    cf__qnode *list = NULL, **tail = &list;
    cf__lock_acquire(&p->pop_lock);
    cf_future *f;
    while ((f = pop_locked(p, NULL)) != NULL) {
        count_taken(p);
        atomic_store_explicit(&f->qnode.next, NULL, memory_order_relaxed);
        *tail = &f->qnode;
        tail = (cf__qnode **)&f->qnode.next;
    }
    cf__lock_release(&p->pop_lock);
    return list;
}

static cf_future *list_next(cf_future *f)
{
    cf__qnode *n = atomic_load_explicit(&f->qnode.next, memory_order_relaxed);
    return n ? cf__future_of_qnode(n) : NULL;
}

/* Wakes one parked worker and hands it the search token, unless somebody
 * is already searching or nobody is parked. */
static void wake_one(thread_pool *p)
{
    for (;;) {
        if (atomic_load(&p->nidle) == 0)
            return;
        /* Look before the exchange: a searcher usually holds the token,
         * and a failing CAS costs as much as one that succeeds. */
        int expected = 0;
        if (atomic_load(&p->spinning) != 0 ||
            !atomic_compare_exchange_strong(&p->spinning, &expected, 1))
            return;
        cf__lock_acquire(&p->idle_lock);
        tp_worker **pp = &p->idle_head;
        /* The sentry last: woken, it stops watching. */
        if (*pp && *pp == p->watcher && (*pp)->idle_next)
            pp = &(*pp)->idle_next;
        tp_worker *w = *pp;
        if (w) {
            *pp = w->idle_next;
            w->in_idle = false;
            atomic_fetch_sub(&p->nidle, 1);
        }
        cf__lock_release(&p->idle_lock);
        if (w) {
            w->token = true;
            atomic_store_explicit(&w->park, 1, memory_order_release);
            cf__futex_wake(&w->park, 1);
            return;
        }
        /* The worker we counted left the stack by itself.  While we held
         * the token a submitter may have pushed, seen spinning == 1 and
         * woken nobody, and another worker may have parked since: give the
         * token back (seq_cst) and look again, or that item would wait. */
        atomic_store(&p->spinning, 0);
        if (!has_work(p))
            return;
    }
}

/* Wakes every parked worker (shutdown, breakage), without the token. */
static void wake_all(thread_pool *p)
{
    cf__lock_acquire(&p->idle_lock);
    tp_worker *w = p->idle_head;
    p->idle_head = NULL;
    for (tp_worker *x = w; x; x = x->idle_next) {
        x->in_idle = false;
        atomic_fetch_sub(&p->nidle, 1);
    }
    cf__lock_release(&p->idle_lock);
    while (w) {
        tp_worker *next = w->idle_next;
        w->token = false;
        atomic_store_explicit(&w->park, 1, memory_order_release);
        cf__futex_wake(&w->park, 1);
        w = next;
    }
}

/* Takes everything still queued and settles it outside the locks (its
 * callbacks run here): fails each future with CF_EBROKEN and `broken_msg`,
 * or, when that is NULL, cancels it.  Drops the queue's references. */
static void settle_queued(thread_pool *p, const char *broken_msg)
{
    cf__qnode *list = drain(p);
    cf_future *f = list ? cf__future_of_qnode(list) : NULL;
    while (f) {
        cf_future *next = list_next(f);
        atomic_fetch_add(&p->ended, 1);
        cf__slot_release(f);
        if (broken_msg)
            cf__future_fail(f, CF_EBROKEN, "BrokenThreadPool", broken_msg);
        else
            cf_future_cancel(f);
        cf_future_release(f);
        f = next;
    }
}

static void initializer_failed(thread_pool *p, int rc)
{
    char msg[sizeof p->broken_msg];
    cf__lock_acquire(&p->submit_lock);
    if (!atomic_load(&p->broken)) {
        snprintf(p->broken_msg, sizeof p->broken_msg,
                 "A thread initializer failed (returned %d), the thread pool is not usable "
                 "anymore",
                 rc);
        atomic_store(&p->broken, true);
    }
    memcpy(msg, p->broken_msg, sizeof msg);
    cf__lock_release(&p->submit_lock);
    cf__bound_close(&p->base, CF_EBROKEN); /* after `broken`: waiters get CF_EBROKEN */
    cf__log("%s: %s", tls_worker->name, msg);
    settle_queued(p, msg);
    wake_all(p);
}

static bool work_or_stop(void *arg)
{
    thread_pool *p = arg;
    return has_work(p) || atomic_load_explicit(&p->shutdown, memory_order_relaxed);
}

/* Takes `me` off the idle stack if it is still there.  Returns false when a
 * waker already took it (and so will set `park`). */
static bool unpark_self(thread_pool *p, tp_worker *me)
{
    bool removed = false;
    cf__lock_acquire(&p->idle_lock);
    if (me->in_idle) {
        for (tp_worker **pp = &p->idle_head; *pp; pp = &(*pp)->idle_next) {
            if (*pp == me) {
                *pp = me->idle_next;
                break;
            }
        }
        me->in_idle = false;
        atomic_fetch_sub(&p->nidle, 1);
        removed = true;
    }
    cf__lock_release(&p->idle_lock);
    return removed;
}

/* ---- short calls (see the design notes) ------------------------------------ */

/* At most this many wake-ups in a row are left out by one thread. */
#define DEFER_MAX 16u
/* The sentry's period while calls are short: about half the longest a
 * call left queued without a wake-up waits behind a call that blocks,
 * before the sentry takes it.  Each look is a wake-up: at 200 us they
 * cost bursts of 256-4096 calls 10-30 %, at 500 us about half that. */
#define WATCH_MIN_NS 500000
/* Its first period, and its longest, reached by doubling while calls
 * are not short. */
#define WATCH_FIRST_NS 1000000
#define WATCH_MAX_NS 10000000
/* Calls are short when the pool takes at least one per this many ns per
 * awake worker: a few wake-ups' worth. */
#define QUICK_NS 10000u
/* Looks in a row without a wake-up left out or wanted left out (and
 * with nothing queued) before the sentry gives the role up: with the
 * doubling, about 55 ms. */
#define COLD_LOOKS 8

_Atomic bool cf__test_hook_short_calls;

/* Whether the wake-up for calls just queued may be left out.  The caller
 * has pushed them (seq_cst) or seen them (has_work), and knows that a
 * worker other than the sentry is awake and will look at the queues
 * again before it parks.  `streak` counts the wake-ups this thread left
 * out in a row (reset when it finds the queues drained): after DEFER_MAX
 * it wakes a worker after all, so a long run of calls still spreads over
 * the workers.  `quick` is the caller's seq_cst load of p->quick, after
 * its push or has_work(): against the sentry's store of quick = false
 * before a look (watch()), either it read false, or that look sees these
 * calls.  When calls are not known to be short, asks for a sentry and
 * returns false. */
static bool may_skip_wake(thread_pool *p, unsigned *streak, bool quick)
{
    if (!quick) {
        if (!atomic_load_explicit(&p->want_watch, memory_order_relaxed))
            atomic_store_explicit(&p->want_watch, true, memory_order_relaxed);
        *streak = 0;
        return false;
    }
    if (++*streak > DEFER_MAX) {
        *streak = 0;
        return false;
    }
    return true;
}

/* Wake-ups left out so far (wrapping): read by the sentry. */
static unsigned skips(const thread_pool *p)
{
    return atomic_load_explicit(&p->submit_skips, memory_order_relaxed) +
           atomic_load_explicit(&p->worker_skips, memory_order_relaxed);
}

/* The sentry: parked like the others, on the idle stack where any waker
 * may take it, but it wakes every period to look at the queues and sets
 * `quick` for the next period.  Returns true when it took itself off the
 * idle stack to take calls (queued calls nobody took during a whole
 * period, or calls queued as it gave the role up); false when a waker
 * handed it off (park = 1) or it gave the role up with nothing queued:
 * the caller then sleeps as any parked worker.  Holds the role (sentry ==
 * 1) on entry and gives it back on every return. */
static bool watch(thread_pool *p, tp_worker *me)
{
    cf__lock_acquire(&p->idle_lock);
    p->watcher = me;
    cf__lock_release(&p->idle_lock);
    /* The measure goes on from the last watch: a sentry woken by every
     * burst (a pool of two workers, both woken by each) would otherwise
     * never reach its first look, and calls would never count as short.
     * Its period may have ended meanwhile: then the first look comes at
     * once, over all the time since.  But a measure whose period ended
     * more than a period ago is old (no sentry for a while): it would
     * spread the calls of a new burst over the idle time, so a new one
     * begins. */
    int64_t start = cf__now_ns();
    int64_t period = p->watch_period, then = p->watch_then;
    unsigned last = p->watch_taken, last_skips = p->watch_skips;
    if (then == 0 || start - then > 2 * period) {
        period = WATCH_FIRST_NS;
        then = start;
        last = atomic_load_explicit(&p->taken, memory_order_relaxed);
        last_skips = skips(p);
    }
    int idle = 0;
    bool was_quick = false, was_queued = false, take = false;
    /* Liveness: each sleep ends at its deadline or at a waker's hand-off
     * (park = 1, futex wake); the loop ends at a hand-off, at a rescue, or
     * after COLD_LOOKS looks in a row that found nothing queued and no
     * wake-up left out or wanted left out. */
    for (;;) {
        int64_t deadline = then + period;
        while (atomic_load_explicit(&me->park, memory_order_acquire) == 0 &&
               cf__now_ns() < deadline)
            cf__futex_wait(&me->park, 0, deadline);
        if (atomic_load_explicit(&me->park, memory_order_acquire) != 0)
            break;
        /* The time that passed, which a late wake-up makes longer than
         * the period. */
        int64_t t = cf__now_ns(), elapsed = t - then;
        then = t;
        unsigned now = atomic_load_explicit(&p->taken, memory_order_relaxed);
        bool moved = now != last;
        /* Wake-ups left out in this period, or wanted left out (while
         * `quick` was false): without either there is nothing to watch
         * for, and the looks slow down. */
        unsigned now_skips = skips(p);
        bool wanted = now_skips != last_skips ||
                      atomic_exchange_explicit(&p->want_watch, false, memory_order_relaxed);
        last_skips = now_skips;
        /* Short: at least one call per QUICK_NS per worker awake (sampled
         * now, at least 1), over the time that passed: many workers each
         * taking a slow call now and then are not short. */
        int busy = atomic_load_explicit(&p->alive, memory_order_relaxed) -
                   atomic_load_explicit(&p->nidle, memory_order_relaxed);
        bool q = wanted && ((uint64_t)(now - last) * QUICK_NS >=
                                (uint64_t)elapsed * (uint64_t)(busy > 1 ? busy : 1) ||
                            atomic_load_explicit(&cf__test_hook_short_calls, memory_order_relaxed));
        last = now;
        /* seq_cst: before has_work(), against may_skip_wake(). */
        atomic_store(&p->quick, q);
        bool queued = has_work(p);
        /* Calls queued and none taken for a whole period: take them.  A
         * wake-up may have been left out only in a period that began with
         * `quick` true; otherwise every queued call has a worker on its
         * way, and only calls queued at two looks in a row are taken
         * (a wake-up the VM is slow to deliver is not a stall). */
        if (queued && !moved && (was_quick || was_queued)) {
            take = true;
            break;
        }
        idle = wanted || queued ? 0 : idle + 1;
        if (idle >= COLD_LOOKS)
            break;
        /* `quick` true holds only for a period of WATCH_MIN_NS. */
        period = q || queued ? WATCH_MIN_NS
                             : (period < WATCH_MAX_NS / 2 ? period * 2 : WATCH_MAX_NS);
        was_quick = q;
        was_queued = queued;
    }
    /* seq_cst, in this order: no wake-up is left out from here on, then
     * the role is free, then the last look, which sees every call left
     * queued while `quick` was true (or sees it taken). */
    atomic_store(&p->quick, false);
    /* A sentry that gave up (idle) leaves no measure: its period has
     * grown to WATCH_MAX_NS, and the next burst would wait that long for
     * its first look instead of WATCH_FIRST_NS. */
    p->watch_then = idle >= COLD_LOOKS ? 0 : then;
    p->watch_period = period;
    p->watch_taken = last;
    p->watch_skips = last_skips;
    cf__lock_acquire(&p->idle_lock);
    p->watcher = NULL;
    cf__lock_release(&p->idle_lock);
    atomic_store(&p->sentry, 0);
    if (atomic_load_explicit(&me->park, memory_order_acquire) != 0)
        return false;
    if (take || has_work(p) || atomic_load(&p->shutdown) || atomic_load(&p->broken)) {
        if (!unpark_self(p, me))
            return false; /* a waker took it: the caller waits for the hand-off */
        if (take)
            atomic_fetch_add_explicit(&p->rescues, 1, memory_order_relaxed);
        return true;
    }
    return false;
}

/* Whether a worker that took a call while more are queued may leave the
 * wake-up out (may_skip_wake): it is awake and comes back to the queues
 * after the call.  Not while more than DEFER_MAX calls are queued, as
 * when a call submits many at once (a fan-out): they are not one
 * thread's to run. */
static bool skip_worker_wake(thread_pool *p, tp_worker *me)
{
    bool quick = atomic_load(&p->quick); /* seq_cst, after has_work(): see may_skip_wake */
    if (quick) {
        /* Relaxed, and `taken` (ours) first: a hint. */
        unsigned taken = atomic_load_explicit(&p->taken, memory_order_relaxed);
        if (atomic_load_explicit(&p->admitted, memory_order_relaxed) - taken > DEFER_MAX) {
            me->streak = 0;
            return false;
        }
    }
    return may_skip_wake(p, &me->streak, quick);
}

/* own thread only: wake-ups this thread's submits to `streak_pool` left
 * out in a row */
static _Thread_local unsigned submit_streak;
static _Thread_local const thread_pool *streak_pool;

/* Whether a submit may leave its wake-up out (may_skip_wake): only when a
 * thread of the pool is awake besides the parked ones (it looks at the
 * queues before it parks: see "No lost wake-up"), and only when the
 * submitting thread is not one of the pool's workers, which may go on to
 * wait for the call it queued; not for more than DEFER_MAX calls at once
 * (cf_submit_many), which are not one worker's to run. */
static bool skip_submit_wake(thread_pool *p, size_t n)
{
    if (n > DEFER_MAX || (tls_worker && tls_worker->pool == p))
        return false;
    if (streak_pool != p) {
        streak_pool = p;
        submit_streak = 0;
    }
    /* seq_cst, after the push: as the loads of `spinning`/`nidle`, and
     * `quick` (see may_skip_wake). */
    if (atomic_load(&p->nidle) >= atomic_load(&p->alive) ||
        !may_skip_wake(p, &submit_streak, atomic_load(&p->quick)))
        return false;
    atomic_fetch_add_explicit(&p->submit_skips, 1, memory_order_relaxed);
    return true;
}

/* A trailing worker's pause (see "Trailing a submitter"): it reads only
 * its clock, so the submitter has the lines of its next calls to itself.
 * Returns whether it paused. */
static bool slip(thread_pool *p)
{
    int64_t ns = cf__spin_ns();
    if (ns <= 0)
        return false; /* one CPU, or CF_SPIN_NS=0: nobody to trail */
    if (ns > SLIP_NS)
        ns = SLIP_NS;
    /* Liveness: ends at `until` whatever happens. */
    int64_t until = cf__now_ns() + ns;
    while (cf__now_ns() < until)
        cf__cpu_relax();
    atomic_fetch_add_explicit(&p->slips, 1, memory_order_relaxed);
    return true;
}

/* Returns the next future to run, or NULL when the worker should exit. */
static cf_future *next_call(thread_pool *p, tp_worker *me, bool *token)
{
    if (me->trailing && me->run >= me->slip_run) {
        me->trailing = false;
        me->slipped = slip(p);
        me->since_slip = 0;
    }
    bool first = true; /* the first look since the last call returned */
    for (;;) {
        bool stopping = atomic_load_explicit(&p->shutdown, memory_order_acquire);
        bool emptied = false;
        cf_future *f = pop(p, &emptied);
        if (f) {
            me->run++;
            me->trailing = first && emptied && !me->pushed;
            me->pushed = false;
            if (me->slipped) {
                /* Fewer than SLIP_GAIN calls were queued after the pause: the
                 * submitter did not get ahead (it waits for the results,
                 * say), so pausing only delays it; count anew. */
                if (emptied) {
                    me->run = 0;
                    me->slipped = false;
                    if (me->slip_run < SLIP_RUN_MAX)
                        me->slip_run *= 2;
                } else if (++me->since_slip >= SLIP_GAIN) {
                    me->slipped = false;
                    me->slip_run = SLIP_RUN;
                }
            }
            if (*token) {
                /* The searcher found work: give the token back (Go's
                 * "resetspinning"). */
                *token = false;
                atomic_store(&p->spinning, 0);
            }
            /* Whoever takes work while more is queued brings the next
             * worker (wake_one does nothing while somebody searches or
             * nobody is parked).  Not only the searcher: a worker whose
             * search just expired may find the work in its park re-check,
             * without the token, while submitters that saw the token woke
             * nobody.  wake_one's own first looks (nobody parked, somebody
             * searching) come first here: they read the idle workers'
             * line, has_work() reads the lane the submitters write.  A
             * worker that parks after we saw nidle == 0 re-checks the
             * lanes itself after its seq_cst increment, so skipping the
             * wake then loses nothing. */
            if (atomic_load(&p->nidle) != 0 && atomic_load(&p->spinning) == 0) {
                if (!has_work(p))
                    me->streak = 0;
                else if (skip_worker_wake(p, me))
                    atomic_fetch_add_explicit(&p->worker_skips, 1, memory_order_relaxed);
                else
                    wake_one(p);
            }
            return f;
        }
        me->streak = 0; /* the queues are drained */
        me->run = 0;
        me->trailing = false;
        me->slipped = false;
        first = false;
        if (stopping || atomic_load(&p->broken)) {
            if (*token) {
                *token = false;
                atomic_store(&p->spinning, 0);
            }
            return NULL;
        }
        if (!*token) {
            int expected = 0;
            *token = atomic_compare_exchange_strong(&p->spinning, &expected, 1);
        }
        if (*token) {
            /* Found work: keep the token into the pop above, which gives it
             * back and wakes the next worker if more is queued.  Dropping
             * it here would lose that wake-up: submitters that saw
             * spinning == 1 woke nobody, so every item queued behind the
             * one we take would wait for a running worker. */
            if (cf__spin_until(work_or_stop, p, CF__NS_FOREVER))
                continue;
            *token = false;
            atomic_store(&p->spinning, 0); /* seq_cst: before the re-check below */
        }
        /* Park. */
        atomic_store_explicit(&me->park, 0, memory_order_relaxed);
        me->token = false;
        cf__lock_acquire(&p->idle_lock);
        me->idle_next = p->idle_head;
        p->idle_head = me;
        me->in_idle = true;
        atomic_fetch_add(&p->nidle, 1); /* seq_cst: before the re-check */
        cf__lock_release(&p->idle_lock);
        if (has_work(p) || atomic_load(&p->shutdown) || atomic_load(&p->broken)) {
            if (unpark_self(p, me))
                continue;
            /* A waker took us off the stack; wait for its hand-off. */
        } else if (atomic_load_explicit(&p->want_watch, memory_order_relaxed) &&
                   atomic_load_explicit(&p->sentry, memory_order_relaxed) == 0) {
            int expected = 0;
            if (atomic_compare_exchange_strong(&p->sentry, &expected, 1) && watch(p, me))
                continue;
        }
        while (atomic_load_explicit(&me->park, memory_order_acquire) == 0)
            cf__futex_wait(&me->park, 0, CF__NS_FOREVER);
        *token = me->token;
    }
}

static void *worker_main(void *arg)
{
    tp_worker *w = arg;
    thread_pool *p = w->pool;
    tls_worker = w;
    cf__current_pool_stop = &p->stop;
    cf__set_thread_name(w->name);

    if (p->initializer) {
        int rc = p->initializer(p->initarg);
        if (rc != 0) {
            initializer_failed(p, rc);
            goto out;
        }
    }
    bool token = false;
    cf_future *f;
    while ((f = next_call(p, w, &token)) != NULL) {
        cf__slot_release(f); /* taken: room for the next submit */
        _Atomic unsigned *ended =
            atomic_load_explicit(&p->all_started, memory_order_relaxed) ? NULL : &p->ended;
        if (cf__future_start_call(f) == 1)
            cf__future_run_call(f, ended);
        else if (ended)
            atomic_fetch_add_explicit(ended, 1, memory_order_release);
        cf_future_release(f);
    }
out:
    atomic_fetch_sub(&p->alive, 1);
    cf__set_thread_name(NULL);
    cf__current_pool_stop = NULL;
    tls_worker = NULL;
    return NULL;
}

/* Starts one more worker.  submit_lock held.  Returns CF_OK or
 * CF_ENOMEM/CF_ESYS. */
static int spawn_locked(thread_pool *p)
{
    if (p->nthreads == p->workers_cap) {
        int cap = p->workers_cap ? p->workers_cap * 2 : 8;
        tp_worker **slots = realloc(p->workers, (size_t)cap * sizeof *slots);
        if (!slots)
            return CF_ENOMEM;
        p->workers = slots;
        p->workers_cap = cap;
    }
    tp_worker *w = calloc(1, sizeof *w);
    if (!w)
        return CF_ENOMEM;
    w->pool = p;
    w->index = p->nthreads;
    w->slip_run = SLIP_RUN;
    atomic_init(&w->park, 0);
    snprintf(w->name, sizeof w->name, "%s_%d", p->prefix, w->index);

    /* Workers block asynchronous signals. */
    atomic_fetch_add(&p->alive, 1);
    int rc = cf__thread_start(&w->tid, worker_main, w);
    if (rc != 0) {
        atomic_fetch_sub(&p->alive, 1);
        free(w);
        return CF_ESYS;
    }
    p->workers[p->nthreads++] = w;
    if (p->nthreads == p->max_workers)
        atomic_store_explicit(&p->all_started, true, memory_order_relaxed);
    return CF_OK;
}

/* Admits n calls: refuses them after shutdown or breakage, counts them in
 * `admitted` and starts up to n more workers while calls outnumber
 * threads.  submit_lock held.  Returns CF_OK, or an error (recorded, with
 * `who` in the message) having changed nothing. */
static int admit_locked(thread_pool *p, int n, const char *who)
{
    if (CF__UNLIKELY(atomic_load_explicit(&p->shutdown, memory_order_relaxed)))
        return cf__fail(CF_ESHUTDOWN, "%s: cannot schedule new futures after shutdown", who);
    if (CF__UNLIKELY(atomic_load_explicit(&p->broken, memory_order_relaxed)))
        return cf__fail(CF_EBROKEN, "%s: %s", who, p->broken_msg);
    unsigned admitted = atomic_load_explicit(&p->admitted, memory_order_relaxed) + (unsigned)n;
    atomic_store_explicit(&p->admitted, admitted, memory_order_relaxed);
    if (p->nthreads >= p->max_workers)
        return CF_OK;
    /* Never negative: every call counted in `ended` was admitted before
     * (under this lock) and pushed after. */
    unsigned unfinished = admitted - atomic_load_explicit(&p->ended, memory_order_relaxed);
    for (int started = 0; started < n && unfinished > (unsigned)p->nthreads &&
                          p->nthreads < p->max_workers;
         started++) {
        int rc = spawn_locked(p);
        if (rc != CF_OK && atomic_load(&p->alive) == 0) {
            /* Nobody could ever run them. */
            atomic_store_explicit(&p->admitted, admitted - (unsigned)n, memory_order_relaxed);
            return cf__fail(rc, "%s: cannot start a worker thread", who);
        }
        if (rc != CF_OK) {
            cf__log("thread pool %s: cannot start another worker thread; continuing with %d",
                    p->prefix, atomic_load(&p->alive));
            break;
        }
    }
    return CF_OK;
}

/* Queues n calls (tp_submit, tp_submit_many): one submit_lock, all or
 * none.  Each call goes to its priority's lane, made if need be (an empty
 * lane made for calls then refused costs nothing), or to the heap when
 * every lane holds calls; room in the heap is made before the calls are
 * admitted, so nothing needs undoing.  Consecutive calls of one lane (a
 * map's chunk, a cf_submit_many) go in as one chain: one exchange.  On
 * failure the calls' slots and the engine's references are released.
 * Returns as admit_locked, or CF_ENOMEM. */
static int submit_calls(thread_pool *p, cf_future **fs, size_t n, const char *who)
{
    int rc = CF_OK;
    cf__lock_acquire(&p->submit_lock);
    /* Lanes found or made here stay (pinned) until the pushes below; a
     * priority that finds none here finds none below either, so it goes
     * to the heap, for which room is made. */
    uint32_t pinned = 1;
    size_t to_heap = 0;
    int prio = CF_PRIORITY_DEFAULT, slot = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || fs[i]->priority != prio) {
            prio = fs[i]->priority;
            slot = lane_find(p, prio);
            if (slot < 0)
                slot = lane_make(p, prio, pinned);
        }
        if (slot < 0)
            to_heap++;
        else
            pinned |= 1u << slot;
    }
    if (to_heap) {
        cf__lock_acquire(&p->prio_lock); /* submit_lock -> prio_lock */
        if (!heap_reserve_locked(p, to_heap))
            rc = cf__fail(CF_ENOMEM, "%s: out of memory for the priority queue", who);
    }
    if (rc == CF_OK)
        rc = admit_locked(p, (int)n, who);
    if (rc == CF_OK) {
        lane *cur = NULL;
        cf__qnode *first = NULL, *last = NULL;
        /* `prio`/`slot` hold the last run's lane from the loop above
         * (pinned since, or -1 for the heap): a single call, or a batch
         * of one priority, looks it up once. */
        for (size_t i = 0; i < n; i++) {
            if (fs[i]->priority != prio) {
                prio = fs[i]->priority;
                slot = lane_find(p, prio);
            }
            cf__qnode *node = &fs[i]->qnode;
            if (slot < 0) {
                heap_push_locked(p, fs[i]);
            } else if (&p->lanes[slot] == cur) {
                atomic_store_explicit(&last->next, node, memory_order_relaxed);
                last = node;
            } else {
                if (cur)
                    cf__queue_push_chain(&cur->q, first, last);
                cur = &p->lanes[slot];
                first = last = node;
            }
        }
        if (cur)
            cf__queue_push_chain(&cur->q, first, last);
    } else {
        for (size_t i = 0; i < n; i++)
            cf__slot_release(fs[i]); /* under the lock, which keeps the pool
                                      * alive: once it is let go, a destroy
                                      * may free the pool before we return */
    }
    if (to_heap)
        cf__lock_release(&p->prio_lock);
    cf__lock_release(&p->submit_lock);
    if (CF__UNLIKELY(rc != CF_OK)) {
        for (size_t i = 0; i < n; i++)
            cf_future_release(fs[i]);
        return rc;
    }
    if (tls_worker && tls_worker->pool == p)
        tls_worker->pushed = true; /* a chain: see "Trailing a submitter" */
    /* seq_cst loads after the seq_cst pushes: see the design notes. */
    if (atomic_load(&p->spinning) == 0 && atomic_load(&p->nidle) > 0) {
        if (!skip_submit_wake(p, n))
            wake_one(p);
    } else {
        submit_streak = 0; /* a worker is searching: the queues were drained */
    }
    return CF_OK;
}

static int tp_submit(cf_executor *ex, cf_future *f)
{
    return submit_calls(pool_of(ex), &f, 1, "submit");
}

/* cf_submit_many, and a map's chunk.  The worker woken by submit_calls,
 * or the searcher, wakes the next while more is queued (next_call), so the
 * whole batch spreads over the parked workers. */
static int tp_submit_many(cf_executor *ex, cf_future **fs, size_t n)
{
    if (n > (size_t)INT_MAX / 2) {
        int rc = cf__fail(CF_ENOMEM, "submit_many: %zu calls at once is more than a pool can "
                                     "count",
                          n);
        for (size_t i = 0; i < n; i++)
            cf_future_release(fs[i]);
        return rc;
    }
    return submit_calls(pool_of(ex), fs, n, "submit_many");
}

/* Calls of a cf_submit_many() made and queued per piece of this many
 * (tp_submit_made): small enough that a worker begins soon after the
 * first, large enough that the exchange and the wake-up check of each
 * piece cost little per call. */
#define MADE_PIECE 256

/* cf_submit_many: all n admitted at once, then made and pushed to the
 * default lane (which always exists) piece by piece, the first piece
 * waking a worker, so the workers run the first calls while this thread
 * makes the rest.  submit_lock is held throughout, so every push happens
 * with `shutdown` false, as the design notes require (a shutdown, and
 * other submitters of this pool, wait until the batch is in); make only
 * writes the new futures, and the wake-ups take idle_lock, which nothing
 * else is ever taken under. */
static int tp_submit_made(cf_executor *ex, cf_future **fs, size_t n, bool slots,
                          void (*make)(void *ctx, cf_future **fs, size_t k, size_t m), void *ctx)
{
    thread_pool *p = pool_of(ex);
    int rc;
    cf__lock_acquire(&p->submit_lock);
    if (n > (size_t)INT_MAX / 2)
        rc = cf__fail(CF_ENOMEM, "submit_many: %zu calls at once is more than a pool can count",
                      n);
    else
        rc = admit_locked(p, (int)n, "submit_many");
    if (CF__UNLIKELY(rc != CF_OK)) {
        if (slots)
            cf__bound_release(ex, n); /* under the lock: see submit_calls */
        cf__lock_release(&p->submit_lock);
        return rc;
    }
    cf__queue *q = &p->lanes[0].q;
    for (size_t k = 0; k < n; k += MADE_PIECE) {
        size_t m = n - k < MADE_PIECE ? n - k : MADE_PIECE;
        make(ctx, fs, k, m);
        for (size_t i = k; i + 1 < k + m; i++)
            atomic_store_explicit(&fs[i]->qnode.next, &fs[i + 1]->qnode, memory_order_relaxed);
        cf__queue_push_chain(q, &fs[k]->qnode, &fs[k + m - 1]->qnode);
        /* seq_cst loads after the seq_cst push: see the design notes. */
        if (atomic_load(&p->spinning) == 0 && atomic_load(&p->nidle) > 0)
            wake_one(p);
    }
    cf__lock_release(&p->submit_lock);
    if (tls_worker && tls_worker->pool == p)
        tls_worker->pushed = true; /* a chain: see "Trailing a submitter" */
    return CF_OK;
}

static bool tp_is_worker(const cf_executor *ex)
{
    return tls_worker && &tls_worker->pool->base == ex;
}

static int tp_worker_count(const cf_executor *ex)
{
    return atomic_load(&pool_of((cf_executor *)ex)->alive);
}

static int tp_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    thread_pool *p = pool_of(ex);
    cf__lock_acquire(&p->submit_lock);
    atomic_store(&p->shutdown, true);
    cf__lock_release(&p->submit_lock);
    cf__bound_close(ex, CF_ESHUTDOWN); /* after `shutdown`: waiters get CF_ESHUTDOWN */
    if (cancel_futures)
        settle_queued(p, NULL);
    wake_all(p);
    if (!wait)
        return CF_OK;
    if (tp_is_worker(ex))
        return cf__fail(CF_EDEADLK, "shutdown: wait requested from one of the pool's own "
                                    "workers, which cannot wait for itself");
    pthread_mutex_lock(&p->join_mu);
    cf__lock_acquire(&p->submit_lock);
    int n = p->nthreads; /* final: no thread starts after shutdown */
    cf__lock_release(&p->submit_lock);
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
    free(p->heap);
    pthread_mutex_destroy(&p->join_mu);
    free(p);
}

/* Threads cannot be killed: raise the flag every running task can poll. */
static void tp_stop_workers(cf_executor *ex, bool kill)
{
    (void)kill;
    atomic_store_explicit(&pool_of(ex)->stop, true, memory_order_relaxed);
    cf__cancel_fd_fire_pool(&pool_of(ex)->stop);
}

static const cf__engine thread_engine;

cf__short_calls cf__thread_pool_short_calls(const cf_executor *ex)
{
    cf__short_calls s = {0};
    if (ex && ex->engine == &thread_engine) {
        const thread_pool *p = (const thread_pool *)ex;
        s.submit_skips = atomic_load_explicit(&p->submit_skips, memory_order_relaxed);
        s.worker_skips = atomic_load_explicit(&p->worker_skips, memory_order_relaxed);
        s.rescues = atomic_load_explicit(&p->rescues, memory_order_relaxed);
        s.slips = atomic_load_explicit(&p->slips, memory_order_relaxed);
        s.quick = atomic_load(&p->quick);
        s.watching = atomic_load(&p->sentry) != 0;
    }
    return s;
}

static const cf__engine thread_engine = {
    .name = "thread",
    .copies_args = false,
    .submit = tp_submit,
    .submit_many = tp_submit_many,
    .submit_made = tp_submit_made,
    .shutdown = tp_shutdown,
    .is_worker = tp_is_worker,
    .worker_count = tp_worker_count,
    .stop_workers = tp_stop_workers,
    .destroy = tp_destroy,
    .orders_by_priority = true,
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

    /* The spin budget is read from the environment on first use, which
     * logs a bad CF_SPIN_NS: here, in the caller's thread, rather than in a
     * worker holding the search token. */
    (void)cf__spin_ns();

    thread_pool *p = NULL; /* aligned for its lanes */
    if (posix_memalign((void **)&p, _Alignof(thread_pool), sizeof *p) != 0)
        p = NULL;
    if (p)
        memset(p, 0, sizeof *p);
    if (!p)
        return cf__fail(CF_ENOMEM, "thread_pool_new: out of memory");
    p->max_workers = max;
    if (opts->thread_name_prefix && opts->thread_name_prefix[0])
        snprintf(p->prefix, sizeof p->prefix, "%s", opts->thread_name_prefix);
    else
        snprintf(p->prefix, sizeof p->prefix, "ThreadPoolExecutor-%u",
                 atomic_fetch_add(&pool_counter, 1));
    p->initializer = opts->initializer;
    p->initarg = opts->initarg;
    for (int i = 0; i < NLANES; i++)
        cf__queue_init(&p->lanes[i].q);
    p->lane_prio[0] = CF_PRIORITY_DEFAULT;
    atomic_init(&p->order, ORDER_DEFAULT_ONLY);
    p->lanes_used = 1;
    atomic_init(&p->pop_lock.word, 0);
    atomic_init(&p->prio_lock.word, 0);
    atomic_init(&p->nprio, 0);
    atomic_init(&p->submit_lock.word, 0);
    atomic_init(&p->idle_lock.word, 0);
    p->idle_head = NULL;
    p->watcher = NULL;
    atomic_init(&p->shutdown, false);
    atomic_init(&p->broken, false);
    atomic_init(&p->stop, false);
    atomic_init(&p->alive, 0);
    atomic_init(&p->admitted, 0);
    atomic_init(&p->ended, 0);
    atomic_init(&p->all_started, false);
    atomic_init(&p->nidle, 0);
    atomic_init(&p->spinning, 0);
    atomic_init(&p->taken, 0);
    atomic_init(&p->sentry, 0);
    atomic_init(&p->quick, false);
    atomic_init(&p->want_watch, false);
    atomic_init(&p->submit_skips, 0);
    atomic_init(&p->worker_skips, 0);
    atomic_init(&p->rescues, 0);
    pthread_mutex_init(&p->join_mu, NULL);
    cf__executor_register(&p->base, &thread_engine);
    p->base.bound.max = opts->max_queued;
    *out = &p->base;
    return CF_OK;
}
