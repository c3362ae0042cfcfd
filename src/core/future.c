/* SPDX-License-Identifier: MIT */
/*
 * future.c - the future state machine, done-callbacks and blocking result().
 *
 * Design notes
 *
 * Transitions (CPython's, plus our cancel rule):
 *
 *   from \ call      cancel()     set_running_or_   set_result/      run end
 *                                 notify_cancel()   set_exception()
 *   PENDING          CANCELLED*   RUNNING (1)       FINISHED*        -
 *   RUNNING          false        EINVALSTATE       FINISHED*        FINISHED*
 *   CANCELLED        true         C_A_NOTIFIED (0)  EINVALSTATE      -
 *   C_A_NOTIFIED     true         EINVALSTATE       EINVALSTATE      -
 *   FINISHED         false        EINVALSTATE       EINVALSTATE      -
 *
 *   Besides, an engine that stops a running call for real (a process
 *   pool's cf_future_interrupt) moves it RUNNING -> C_A_NOTIFIED*
 *   (cf__future_cancel_running): cancelled() and CF_ECANCELLED agree.
 *
 *   A process pool's call sent to a worker stays PENDING until the worker
 *   claims it in shared memory (see "claim words" below); cancel() then
 *   loses the race and the future turns RUNNING.
 *
 *   * = the future is now done: sleepers in result() are woken, every
 *   installed waiter (wait/as_completed) is notified, and the callbacks run
 *   in the completing thread once the lock is dropped.  Unlike CPython,
 *   waiters are notified at cancel() time rather than when an executor
 *   later notices the cancellation, so a cancelled future never leaves a
 *   wait() hanging (CPython gh-92001, gh-109934).
 *
 * Invariants
 * - `state` changes only with `lock` held, except that a thread about to
 *   sleep in result() sets CF__SLEEPERS with a CAS and no lock, and the
 *   lock-free completion and start below; so every transition is an
 *   exchange or CAS that keeps or collects the flag bits, never a plain
 *   store.  It is read
 *   without the lock
 *   (done(), the result fast path) with acquire ordering; the outcome
 *   fields (status, result, failure) are written before the release store
 *   that makes the state final, and never change afterwards, so a reader
 *   that saw a final state may read them without the lock.
 * - Callbacks and waiter nodes are guarded by `lock`.  Completion detaches
 *   the callback list under the lock; the completing thread then owns it
 *   and runs it with no lock held, so a callback may use the future freely.
 *   A callback added after completion runs at once in the adding thread.
 * - Waiters are notified with the future's lock held (see wait.c: that is
 *   what keeps a waiter on another thread's stack alive).  A waiter node
 *   with a `notify` function (a completion queue's, cq.c) is notified the
 *   same way, through that function.
 * - Blocking in result(): a waiter spins briefly, then sets CF__SLEEPERS in
 *   `state` with a CAS and sleeps on the word (futex).  The completer
 *   swaps in the final state and wakes everyone if the bit was set.  The
 *   CAS/swap pair on one word means a wake can never be lost.
 * - Lock-free completion.  The thread that ran a submitted call
 *   (cf__future_run_call; nothing else ever completes a RUNNING future
 *   that has a call, see the transition table) ends it with one CAS of
 *   the state from RUNNING (with or without CF__SLEEPERS) to FINISHED,
 *   without the lock, as long as CF__HOOKED is clear: the outcome fields
 *   and the progress counts are written first, the CAS is a release, and
 *   sleepers are woken after it as in complete_locked().  Everything that
 *   the lock-free path would skip sets CF__HOOKED first, with the lock
 *   held and while the state is not final (cf__future_hook_locked(), a
 *   CAS on the same word): linking a waiter (wait.c, cq.c), adding a
 *   callback, a lock holder that must keep the call's engine alive
 *   (cf_future_interrupt).  (A map's calls count in the map's counts too,
 *   which outlive every call that can still count in them, map.c.)  Both
 *   sides CAS
 *   the one word, so exactly one of two orders happens: the hook first,
 *   and the completer's CAS fails and it completes under the lock (after
 *   the hooker released it, so it sees the node or callback); or the
 *   completion first, and the hook sees a final state and treats the
 *   future as done (runs the callback at once, links nothing).  A lock
 *   holder that did not hook may see a RUNNING future turn FINISHED under
 *   it; every such reader only reads the state (cancel() then returns
 *   false, set_result() refuses either way).  The completer holds its own
 *   reference across the futex wake, as complete_locked()'s callers do.
 *   The thread pool uses the lock-free path only once it counts no more
 *   ended calls (`ended` NULL): its count must come before the outcome
 *   shows and, with callbacks, after them, which needs the lock's view
 *   of the callback list.  An engine whose one thread completes every
 *   call it started, with an outcome from elsewhere (the MPI manager),
 *   takes the same path through cf__future_complete_owned().
 * - Lock-free start.  A thread pool worker starts the call it took from
 *   its queue with one CAS of the state from PENDING (with or without
 *   CF__SLEEPERS, without CF__HOOKED) to RUNNING, no lock
 *   (cf__future_start_call); anything else takes the locked path.  Every
 *   lock holder that may move a submitted call out of PENDING (cancel,
 *   set_result/set_exception and the engines' completions) first hooks a
 *   PENDING call (state_locked), a CAS on the same word: so either the
 *   start came first and the lock holder sees RUNNING, or the hook did
 *   and the start fails and waits for the lock.  The locked start
 *   (set_running_or_notify_cancel) does not hook, which would send the
 *   call's completion under the lock: it moves the state with a CAS that
 *   needs PENDING (start_cas), so of two starts one wins.  The other
 *   lock holders that move a call out of PENDING without hooking move
 *   only a process pool's calls (claim words), which are never started
 *   lock-free.  A start, either way, is counted in the progress counts
 *   just after it shows, before the task runs (a snapshot may miss a call
 *   that just moved).
 * - Reference counting: the count starts at 1 (the creator).  Engines take
 *   their own reference for as long as they hold the future.  Increments
 *   are relaxed (a reference can only be copied from one already held);
 *   the decrement is acq_rel so the last releaser sees every write.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define FUTURE_MAGIC 0x46555452u /* "FUTR" */
#define FUTURE_DEAD 0xDEADF00Du

/* ---- memory: cached future blocks ------------------------------------
 *
 * Submitting N calls allocates N futures that are freed again when their
 * results have been read.  With glibc's defaults the heap is trimmed after
 * each such burst and faulted in again on the next (about 65 minor faults
 * per 1000 futures), which costs more than the rest of a tiny task.  So
 * futures of the common size (a handful of small arguments) come in
 * fixed-size blocks that are kept for reuse instead of being freed:
 *
 * - Each thread keeps up to two magazines of MAG_BLOCKS freed blocks (at
 *   most 2 x 2048 x 264 bytes = 1056 KiB a thread), without locking; they
 *   go back to malloc when the thread exits.
 * - A thread that frees more hands full magazines to a process-wide depot
 *   (one mutex), and a thread whose magazines are empty takes one from
 *   there before calling malloc.  So blocks freed by one thread (a worker,
 *   or a collector) serve the next burst of submits of another.
 * - The depot keeps at most cf_set_future_cache_limit() bytes (default
 *   CF_FUTURE_CACHE_DEFAULT, 64 MiB: about 250,000 futures); a magazine that
 *   would go beyond it is freed to malloc at once.
 *
 * Larger futures use plain malloc.  Under AddressSanitizer every cache is
 * off, so use after free and double release stay detectable. */

/* sizeof(cf_future) (192) + three numeric arguments, or two and 24 bytes
 * of string/bytes payload. */
#define BLOCK_SIZE 264
#define MAG_BLOCKS 2048

#if defined(__SANITIZE_ADDRESS__)
#define BLOCK_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BLOCK_CACHE 0
#endif
#endif
#ifndef BLOCK_CACHE
#define BLOCK_CACHE 1
#endif

/* Overlays a freed future; `magic` stays FUTURE_DEAD so a double release
 * of a cached block is still caught.  The first block of a full magazine
 * links the next magazine of the depot through `next_mag`. */
typedef struct free_block {
    uint32_t magic;
    struct free_block *next;
    struct free_block *next_mag;
} free_block;

/* This thread's magazines: `cur` (cur_n blocks, being filled and emptied)
 * and `full` (NULL or exactly MAG_BLOCKS blocks). */
static _Thread_local CF__TLS_HOT free_block *cache_cur;
static _Thread_local CF__TLS_HOT unsigned cache_cur_n;
static _Thread_local CF__TLS_HOT free_block *cache_full;
/* Whether cache_key holds a value for this thread, so cache_drop() runs
 * when it exits.  Set before the thread's cache first holds a block, by
 * either path (a free, or a magazine taken from the depot by an
 * allocation); cleared by cache_drop(), so blocks freed by a later
 * destructor of the same thread register again. */
static _Thread_local CF__TLS_HOT bool cache_registered;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static void cache_key_init(void);

/* The depot.  depot_mu guards depot_head (full magazines linked through
 * next_mag) and depot_mags, and the kept map chunks below; it is a leaf lock (nothing else is taken under
 * it) and is held across fork() so a child never inherits it locked. */
static pthread_mutex_t depot_mu = PTHREAD_MUTEX_INITIALIZER;
static free_block *depot_head;
static size_t depot_mags;
/* The limit in bytes; relaxed: it carries no other data, and a flush that
 * reads an old value keeps or frees one magazine more or less. */
static _Atomic size_t depot_limit = CF_FUTURE_CACHE_DEFAULT;

/* Map chunks (map.c) kept for reuse: blocks of any size, linked through
 * their first bytes, each with its capacity, counted against the same
 * limit as the magazines (an MPI map of 500,000 calls re-faulted ~18
 * pages per 1,000 calls when its chunks went back to malloc, which trims
 * them).  Guarded by depot_mu. */
typedef struct kept_chunk {
    struct kept_chunk *next;
    size_t cap;
} kept_chunk;
static kept_chunk *kept_chunks;
static size_t kept_chunk_bytes;
/* How far cf__chunk_mem_get() looks for a block that fits. */
#define KEPT_CHUNK_LOOK 32

static size_t depot_bytes_locked(void)
{
    return depot_mags * MAG_BLOCKS * BLOCK_SIZE + kept_chunk_bytes;
}

static void free_list(free_block *b)
{
    while (b) {
        free_block *next = b->next;
        free(b);
        b = next;
    }
}

/* Hands a full magazine to the depot, or frees it beyond the limit. */
static void depot_put(free_block *mag)
{
    size_t limit = atomic_load_explicit(&depot_limit, memory_order_relaxed);
    pthread_once(&cache_once, cache_key_init);
    pthread_mutex_lock(&depot_mu);
    if (depot_bytes_locked() + MAG_BLOCKS * BLOCK_SIZE <= limit) {
        mag->next_mag = depot_head;
        depot_head = mag;
        depot_mags++;
        mag = NULL;
    }
    pthread_mutex_unlock(&depot_mu);
    free_list(mag);
}

/* A full magazine from the depot, or NULL. */
static free_block *depot_take(void)
{
    if (!atomic_load_explicit(&depot_limit, memory_order_relaxed))
        return NULL;
    pthread_once(&cache_once, cache_key_init);
    pthread_mutex_lock(&depot_mu);
    free_block *mag = depot_head;
    if (mag) {
        depot_head = mag->next_mag;
        depot_mags--;
    }
    pthread_mutex_unlock(&depot_mu);
    return mag;
}

static void cache_drop(void *unused)
{
    (void)unused;
    cache_registered = false;
    free_list(cache_cur);
    cache_cur = NULL;
    cache_cur_n = 0;
    if (cache_full)
        depot_put(cache_full);
    cache_full = NULL;
}

static void depot_lock(void)
{
    pthread_mutex_lock(&depot_mu);
}

static void depot_unlock(void)
{
    pthread_mutex_unlock(&depot_mu);
}

static void cache_key_init(void)
{
    pthread_key_create(&cache_key, cache_drop);
    pthread_atfork(depot_lock, depot_unlock, depot_unlock);
}

/* Done once when the library is loaded, before the program can have
 * started threads of its own, so no fork() can ever find this
 * initialisation half done: glibc's pthread_once would restart it in the
 * child, but ThreadSanitizer's waits for ever.  The pthread_once calls
 * below stay for code that runs before this constructor (other
 * constructors). */
__attribute__((constructor)) static void cache_init_at_load(void)
{
    pthread_once(&cache_once, cache_key_init);
}

/* Makes sure this thread's blocks are released when it exits; called
 * before its cache first holds a block. */
static void cache_register(void)
{
    if (CF__LIKELY(cache_registered))
        return;
    pthread_once(&cache_once, cache_key_init);
    cache_registered = pthread_setspecific(cache_key, (void *)1) == 0;
}

void *cf__chunk_mem_get(size_t size, size_t *cap)
{
    *cap = size;
    if (!BLOCK_CACHE || !atomic_load_explicit(&depot_limit, memory_order_relaxed))
        return malloc(size);
    pthread_once(&cache_once, cache_key_init);
    pthread_mutex_lock(&depot_mu);
    kept_chunk **at = &kept_chunks;
    for (int i = 0; *at && i < KEPT_CHUNK_LOOK; i++, at = &(*at)->next) {
        kept_chunk *k = *at;
        /* Big enough, and not wasting more than half of it. */
        if (k->cap >= size && k->cap - size <= size / 2) {
            *at = k->next;
            kept_chunk_bytes -= k->cap;
            pthread_mutex_unlock(&depot_mu);
            *cap = k->cap;
            return k;
        }
    }
    pthread_mutex_unlock(&depot_mu);
    return malloc(size);
}

void cf__chunk_mem_put(void *p, size_t cap)
{
    if (!p)
        return;
    size_t limit = atomic_load_explicit(&depot_limit, memory_order_relaxed);
    if (BLOCK_CACHE && cap >= sizeof(kept_chunk)) {
        pthread_once(&cache_once, cache_key_init);
        pthread_mutex_lock(&depot_mu);
        if (depot_bytes_locked() + cap <= limit) {
            kept_chunk *k = p;
            k->cap = cap;
            k->next = kept_chunks;
            kept_chunks = k;
            kept_chunk_bytes += cap;
            p = NULL;
        }
        pthread_mutex_unlock(&depot_mu);
    }
    free(p);
}

CF__API size_t cf_set_future_cache_limit(size_t max_bytes)
{
    size_t old = atomic_exchange_explicit(&depot_limit, max_bytes, memory_order_relaxed);
    free_block *drop = NULL;
    kept_chunk *drop_chunks = NULL;
    pthread_once(&cache_once, cache_key_init);
    pthread_mutex_lock(&depot_mu);
    while (kept_chunks && depot_bytes_locked() > max_bytes) {
        kept_chunk *k = kept_chunks;
        kept_chunks = k->next;
        kept_chunk_bytes -= k->cap;
        k->next = drop_chunks;
        drop_chunks = k;
    }
    while (depot_head && depot_bytes_locked() > max_bytes) {
        free_block *mag = depot_head;
        depot_head = mag->next_mag;
        depot_mags--;
        mag->next_mag = drop;
        drop = mag;
    }
    pthread_mutex_unlock(&depot_mu);
    while (drop) {
        free_block *next = drop->next_mag;
        free_list(drop);
        drop = next;
    }
    while (drop_chunks) {
        kept_chunk *next = drop_chunks->next;
        free(drop_chunks);
        drop_chunks = next;
    }
    return old;
}

/* Whether a future of `size` bytes comes in the cached block size. */
static bool pooled_size(size_t size)
{
    return BLOCK_CACHE && size <= BLOCK_SIZE;
}

/* Returns a block of at least `size` bytes; *pooled says whether it came
 * in the cached block size.  `ahead`: prefetch the next cached block for
 * the stores that will make it a future (a reservation, which makes its
 * blocks later, fetches only the line the next pop reads). */
static void *block_alloc(size_t size, bool *pooled, bool ahead)
{
    if (pooled_size(size)) {
        *pooled = true;
        if (CF__UNLIKELY(cache_cur_n == 0)) {
            if (cache_full) {
                cache_cur = cache_full;
                cache_full = NULL;
            } else {
                cache_register();
                cache_cur = cache_registered ? depot_take() : NULL;
            }
            cache_cur_n = cache_cur ? MAG_BLOCKS : 0;
            if (!cache_cur)
                return malloc(BLOCK_SIZE);
        }
        free_block *b = cache_cur;
        cache_cur = b->next;
        cache_cur_n--;
        if (cache_cur) {
            /* The next block has usually left the caches (a burst of
             * calls in flight cycles through more blocks than L2 holds),
             * and the next future's stores would wait for each of its
             * lines in turn, in front of the submit's first locked
             * instruction.  Fetched now, they arrive while this future is
             * written and queued.  Four lines hold all but the tail of a
             * future with one argument (216 bytes); fetching a fifth
             * measured no better. */
            const char *next = (const char *)cache_cur;
            __builtin_prefetch(next, 1, 3);
            if (ahead) {
                __builtin_prefetch(next + 64, 1, 3);
                __builtin_prefetch(next + 128, 1, 3);
                __builtin_prefetch(next + 192, 1, 3);
            }
        }
        return b;
    }
    *pooled = false;
    return malloc(size);
}

static void *future_alloc(size_t size, bool *pooled)
{
    return block_alloc(size, pooled, true);
}

static void future_free(cf_future *f)
{
    if (!BLOCK_CACHE || !f->pooled) {
        free(f);
        return;
    }
    if (CF__UNLIKELY(cache_cur_n == MAG_BLOCKS)) {
        if (cache_full)
            depot_put(cache_full);
        cache_full = cache_cur;
        cache_cur = NULL;
        cache_cur_n = 0;
    }
    cache_register();
    if (CF__UNLIKELY(!cache_registered)) {
        free(f); /* nothing would give the block back at thread exit */
        return;
    }
    free_block *b = (free_block *)f;
    b->next = cache_cur;
    cache_cur = b;
    cache_cur_n++;
}

static void init_future(cf_future *f)
{
    memset(f, 0, sizeof *f);
    f->magic = FUTURE_MAGIC;
    atomic_init(&f->refs, 1);
    atomic_init(&f->state, CF_PENDING);
    atomic_init(&f->user_data, NULL);
    atomic_init(&f->lock.word, 0);
    f->status = CF_OK;
    f->result = cf_none();
    f->timeout_ns = CF__NS_FOREVER;
    f->deadline_ns = CF__NS_FOREVER;
}

static bool live(const cf_future *f)
{
    return f && f->magic == FUTURE_MAGIC;
}

CF__API int cf_future_new(cf_future **out)
{
    if (!out)
        return cf__fail(CF_EINVAL, "future_new: out is NULL");
    *out = NULL;
    bool pooled;
    cf_future *f = future_alloc(sizeof *f, &pooled);
    if (!f)
        return cf__fail(CF_ENOMEM, "future_new: out of memory");
    init_future(f);
    f->pooled = pooled;
    *out = f;
    return CF_OK;
}

/* Makes `block` (of `size` bytes, from block_alloc) a pending future
 * carrying a call of fn with nargs (uninitialised) argument slots. */
static cf_future *make_call_future(void *block, size_t size, cf_task_fn *fn, size_t nargs)
{
    cf_future *f = block;
    init_future(f);
    f->pooled = pooled_size(size);
    f->has_call = true;
    f->call.fn = fn;
    f->call.nargs = nargs;
    return f;
}

/* A pending future of `size` bytes carrying a call of fn with nargs
 * (uninitialised) argument slots. */
static cf_future *call_future(cf_task_fn *fn, size_t nargs, size_t size)
{
    bool pooled;
    void *block = future_alloc(size, &pooled);
    return block ? make_call_future(block, size, fn, nargs) : NULL;
}

size_t cf__future_call_size(size_t nargs, size_t extra_bytes)
{
    return sizeof(cf_future) + nargs * sizeof(cf_value) + extra_bytes;
}

void *cf__future_reserve(size_t size)
{
    bool pooled;
    return block_alloc(size, &pooled, false);
}

void cf__future_unreserve(void *block, size_t size)
{
    if (!block)
        return;
    cf_future *f = block;
    f->magic = FUTURE_DEAD;
    f->pooled = pooled_size(size);
    future_free(f);
}

cf_future *cf__future_make_call(void *block, size_t size, cf_task_fn *fn, const cf_value *args,
                                size_t nargs)
{
    cf_future *f = make_call_future(block, size, fn, nargs);
    cf_value *copies = cf__call_args(&f->call);
    unsigned char *bytes = (unsigned char *)(copies + nargs);
    for (size_t i = 0; i < nargs; i++) {
        cf_value v = args[i];
        if (v.kind == CF_BYTES || v.kind == CF_STR) {
            if (v.size)
                memcpy(bytes, v.as.bytes, v.size);
            if (v.kind == CF_STR)
                bytes[v.size] = '\0';
            v.as.bytes = bytes;
            bytes += cf__value_extra(&args[i]);
        }
        copies[i] = v;
    }
    return f;
}

cf_future *cf__future_new_call(cf_task_fn *fn, const cf_value *args, size_t nargs,
                               size_t extra_bytes)
{
    size_t size = cf__future_call_size(nargs, extra_bytes);
    bool pooled;
    /* Made at once: the next block's lines are fetched for the next call
     * (future_alloc), unlike a reservation's. */
    void *block = future_alloc(size, &pooled);
    return block ? cf__future_make_call(block, size, fn, args, nargs) : NULL;
}

cf_future *cf__future_new_borrowed(cf_task_fn *fn, const cf_value *args, size_t nargs)
{
    cf_future *f = call_future(fn, nargs, sizeof(cf_future) + nargs * sizeof(cf_value));
    if (f && nargs)
        memcpy(cf__call_args(&f->call), args, nargs * sizeof(cf_value));
    return f;
}

CF__API cf_future *cf_future_retain(cf_future *f)
{
    if (f)
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

static void free_future(cf_future *f)
{
    if (f->failure && !cf__failure_is_static(f->failure))
        cf__failure_free(f->failure);
    free(f->result_heap);
    cf__shm_free(f->shm);
    /* Callbacks never run (the future never completed) are dropped. */
    cf__cb *cb = f->cb_head;
    while (cb) {
        cf__cb *next = cb->next;
        free(cb);
        cb = next;
    }
    f->magic = FUTURE_DEAD;
    future_free(f);
}

CF__API int cf_future_release(cf_future *f)
{
    if (!f)
        return cf__fail(CF_EINVAL, "future_release: future is NULL");
    if (!live(f))
        return cf__fail(CF_EINVAL, "future_release: %p is not a live future (double release?)",
                        (void *)f);
    /* Always the locked decrement, even when a load would show that ours
     * is the last reference: of two racing releases of the same reference
     * (a double release) one then finds 0 below and is refused, as far as
     * any double release is caught (while the block is not reused or
     * given back to malloc), where a free on a load of 1 by both would
     * put the block in two caches.  Skipping it saved 1-2 ns of a 20-25 ns
     * collect. */
    uint32_t old = atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel);
    if (old == 1)
        free_future(f);
    else if (CF__UNLIKELY(old == 0)) {
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
        return cf__fail(CF_EINVAL, "future_release: reference count underflow (double release)");
    }
    return CF_OK;
}

/* ---- state queries -------------------------------------------------- */

CF__API const char *cf_state_name(cf_state s)
{
    switch (s) {
    case CF_PENDING: return "pending";
    case CF_RUNNING: return "running";
    case CF_CANCELLED:
    case CF_CANCELLED_AND_NOTIFIED: return "cancelled";
    case CF_FINISHED: return "finished";
    }
    return "unknown";
}

static uint32_t state_now(const cf_future *f);

CF__API cf_state cf_future_state(const cf_future *f)
{
    return f ? (cf_state)state_now(f) : CF_PENDING;
}

CF__API bool cf_future_cancelled(const cf_future *f)
{
    if (!f)
        return false;
    uint32_t s = cf__state_of(f);
    if (s == CF_PENDING && f->claimable) {
        /* cancel() of a call sent to a worker turns its claim word
         * CANCELLED and publishes the state in one locked section: the
         * worker can see (and answer) the first before the second shows.
         * Whoever learnt of the word must see the state too, so look
         * again once that section is over. */
        cf_future *m = (cf_future *)f; /* the lock is internal state */
        cf__lock_acquire(&m->lock);
        s = cf__state_of(m);
        cf__lock_release(&m->lock);
    }
    return s == CF_CANCELLED || s == CF_CANCELLED_AND_NOTIFIED;
}

CF__API bool cf_future_running(const cf_future *f)
{
    return f && state_now(f) == CF_RUNNING;
}

CF__API bool cf_future_done(const cf_future *f)
{
    return f && cf__state_done(cf__state_of(f));
}

/* ---- completion ------------------------------------------------------ */

/* Moves the state to `to`, keeping nothing of the sleepers bit, and returns
 * whether somebody was sleeping.  Lock held. */
static bool swap_state(cf_future *f, uint32_t to)
{
    uint32_t old = atomic_exchange_explicit(&f->state, to, memory_order_acq_rel);
    return (old & CF__SLEEPERS) != 0;
}

/* Runs one callback, reporting a failure through the log hook. */
static void run_callback(cf_future *f, cf_done_fn *fn, void *arg)
{
    int rc = fn(f, arg);
    if (rc != 0) {
        char desc[128];
        cf_future_format(f, desc, sizeof desc);
        cf__log("exception calling callback for %s: callback returned %d", desc, rc);
    }
}

/* Runs detached callbacks in order, reporting failures through the log
 * hook.  No lock held; the caller holds a reference to `f` throughout, so
 * a callback may drop the last reference of its own. */
static void run_callbacks(cf_future *f, cf__cb *cb)
{
    while (cb) {
        cf__cb *next = cb->next;
        run_callback(f, cb->fn, cb->arg);
        free(cb);
        cb = next;
    }
}

/* Progress counting (progress.c; shards and orderings next to struct
 * cf__counts).  Adds 1 to the counter at `field` of this thread's shard
 * in the owner's counts and, for a map's call, in the map's.  Lock held
 * and the future not yet done, which keeps its owner alive (or the
 * lock-free completion, by the thread that ran the call). */
static void count_add(cf_future *f, size_t field)
{
    unsigned shard = cf__count_shard_ix();
    if (f->counted)
        cf__count_bump((_Atomic uint64_t *)((char *)&f->owner->counts.shard[shard] + field),
                       shard, 1);
    if (f->in_map) {
        cf__counts *c = atomic_load_explicit(&f->user_data, memory_order_relaxed);
        cf__count_bump((_Atomic uint64_t *)((char *)&c->shard[shard] + field), shard, 1);
    }
}

/* f is about to become `final` (its outcome written): counts its end,
 * as begun or not (which takes it out of `running`), before it shows. */
static void count_end(cf_future *f, uint32_t final)
{
    if (CF__LIKELY(!f->counted && !f->in_map))
        return;
    size_t begun = cf__state_of(f) == CF_RUNNING;
    size_t kind = final != CF_FINISHED ? CF__COUNT_CANCELLED
                  : f->status == CF_OK ? CF__COUNT_SUCCEEDED
                                       : CF__COUNT_FAILED;
    count_add(f, offsetof(cf__count_shard, ended) + (begun * 3 + kind) * sizeof(uint64_t));
}

/* The common tail of every completion: with the lock held and the outcome
 * written, publish `final`, notify waiters, detach callbacks; then, with
 * the lock dropped, wake sleepers and run callbacks. */
static void complete_locked_counted(cf_future *f, uint32_t final);

static void complete_locked(cf_future *f, uint32_t final)
{
    count_end(f, final);
    complete_locked_counted(f, final);
}

/* complete_locked() once the progress counts are done. */
static void complete_locked_counted(cf_future *f, uint32_t final)
{
    if (f->claimable)
        f->claim = NULL; /* the engine may unmap the word once done */
    bool sleepers = swap_state(f, final);
    for (cf__wnode *n = f->waiters; n; n = n->next) {
        if (n->notify)
            n->notify(n, f);
        else
            cf__waiter_notify(n->waiter, f);
    }
    cf__cb *cbs = f->cb_head;
    if (cbs) /* no store otherwise: the line stays clean for the collector */
        f->cb_head = f->cb_tail = NULL;
    /* Keep the future alive through the callbacks even if a callback drops
     * the caller's last reference.  Without callbacks no extra reference is
     * needed, because every caller of complete_locked() holds a reference of
     * its own for the whole call (the engine's, or one it took first - the
     * user's cancel() and set_result() take one, since the caller's
     * reference may be the one a waiter drops as soon as it sees the final
     * state, while this thread still holds the lock):
     * the lines after the unlock still touch f (the futex wake), and a
     * lock-free reader that saw the final state may release its reference
     * meanwhile.  Holding the lock alone would not keep f alive. */
    if (cbs)
        cf_future_retain(f);
    cf__lock_release(&f->lock);
    if (cf__cq_ndeferred)
        cf__cq_flush_pokes();
    if (sleepers)
        cf__futex_wake(&f->state, INT_MAX);
    if (cbs) {
        run_callbacks(f, cbs);
        cf_future_release(f);
    }
}

/* Moves a non-final state to `to`, keeping CF__SLEEPERS and CF__HOOKED: a
 * waiter may set the first at any moment without the lock, so a plain
 * store could erase it and its wake-up would be lost.  Lock held. */
static void move_state_keep_sleepers(cf_future *f, uint32_t to)
{
    uint32_t raw = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (to == CF_RUNNING && (f->counted || f->in_map))
        count_add(f, offsetof(cf__count_shard, started));
    while (!atomic_compare_exchange_weak_explicit(&f->state, &raw,
                                                  to | (raw & (CF__SLEEPERS | CF__HOOKED)),
                                                  memory_order_acq_rel, memory_order_relaxed))
        ;
}

uint32_t cf__future_hook_locked(cf_future *f)
{
    uint32_t raw = atomic_load_explicit(&f->state, memory_order_acquire);
    for (;;) {
        uint32_t s = raw & CF__STATE_MASK;
        if (cf__state_done(s) || (raw & CF__HOOKED))
            return s;
        /* acq_rel/acquire: a final state seen here was stored with
         * release by a lock-free completion, and its outcome is read next. */
        if (atomic_compare_exchange_weak_explicit(&f->state, &raw, raw | CF__HOOKED,
                                                  memory_order_acq_rel, memory_order_acquire))
            return s;
    }
}

/* The state, for a lock holder that may move f out of PENDING: a submitted
 * call still PENDING is hooked first, which stops a lock-free start
 * (cf__future_start_call needs PENDING without CF__HOOKED), so from here
 * on its state leaves PENDING only under the lock.  If a worker started
 * it first, the answer is RUNNING.  Lock held. */
static uint32_t state_locked(cf_future *f)
{
    uint32_t s = cf__state_of(f);
    if (s == CF_PENDING && f->has_call)
        s = cf__future_hook_locked(f);
    return s;
}

/* PENDING -> RUNNING by a CAS that needs PENDING (keeping the flag bits),
 * so that of two starts of one call - a worker's lock-free one and a
 * locked one - exactly one wins; the start is counted once it shows.
 * `hooked_ok`: also from a hooked PENDING, which only a lock holder may
 * do (a hook means a lock holder is about to move the call).  Returns
 * false when the state was not such a PENDING. */
static bool start_cas(cf_future *f, bool hooked_ok)
{
    uint32_t keep = CF__SLEEPERS | (hooked_ok ? CF__HOOKED : 0);
    uint32_t raw = atomic_load_explicit(&f->state, memory_order_relaxed);
    while ((raw & ~keep) == CF_PENDING) {
        if (atomic_compare_exchange_weak_explicit(&f->state, &raw, CF_RUNNING | (raw & keep),
                                                  memory_order_acq_rel, memory_order_relaxed)) {
            /* The owner's counts and a map's live while the call runs. */
            if (f->counted || f->in_map)
                count_add(f, offsetof(cf__count_shard, started));
            return true;
        }
    }
    return false;
}

static int set_running(cf_future *f, bool engine);

int cf__future_start_call(cf_future *f)
{
    return start_cas(f, false) ? 1 : set_running(f, true);
}

/* Tests only: widens the window between a cancel's claim-word CAS and the
 * state it publishes (NULL in programs). */
cf__claim_hook *_Atomic cf__test_hook_claim_cancelled;

/* ---- claim words (calls sent to a worker process) ----------------------
 *
 * A process pool's call stays PENDING in this process until its worker
 * begins it, even after it was sent: the worker claims it in shared
 * memory (CF__CLAIM_*, internal.h).  The state seen here catches up when
 * someone looks: a PENDING future whose word was claimed turns RUNNING
 * for good.  cancel() races the worker on the same word with a CAS. */

/* Whether f's claim word may be used here: it is attached, and this is
 * the process that made it (a child of fork() does not have the words;
 * there the call is the parent's and is left alone).  Lock held. */
static bool claim_here(const cf_future *f)
{
    return f->claimable && f->claim && !(f->owner && cf__executor_inherited(f->owner));
}

/* The state, with a claim taken into account.  Lock held. */
static uint32_t settle_claim_locked(cf_future *f)
{
    uint32_t s = cf__state_of(f);
    if (s == CF_PENDING && claim_here(f) &&
        atomic_load_explicit(f->claim, memory_order_acquire) != CF__CLAIM_PENDING) {
        move_state_keep_sleepers(f, CF_RUNNING);
        s = CF_RUNNING;
    }
    return s;
}

/* The state for a reader: lock-free unless a claim may have to settle. */
static uint32_t state_now(const cf_future *cf)
{
    uint32_t s = cf__state_of(cf);
    if (s != CF_PENDING || !cf->claimable)
        return s;
    cf_future *f = (cf_future *)cf; /* the lock is internal state */
    cf__lock_acquire(&f->lock);
    s = settle_claim_locked(f);
    cf__lock_release(&f->lock);
    return s;
}

/* For cf_future_set_result()/set_exception() of a submitted call that is
 * still PENDING: a call sent to a worker process is taken back from it
 * the way cancel() takes it (the worker then skips it), or found RUNNING
 * if the worker claimed it first.  A call inherited through fork() is
 * not this process's to complete: RUNNING as well.  Lock held; the lock
 * stays held until the outcome shows, so the manager, which checks a
 * skipped call under the lock (cf__future_taken), sees it done. */
static uint32_t take_from_worker_locked(cf_future *f, uint32_t s)
{
    if (s != CF_PENDING || !f->claimable || !f->claim)
        return s;
    if (!claim_here(f))
        return CF_RUNNING;
    uint32_t want = CF__CLAIM_PENDING;
    if (atomic_compare_exchange_strong_explicit(f->claim, &want, CF__CLAIM_CANCELLED,
                                                memory_order_acq_rel, memory_order_acquire))
        return CF_PENDING;
    move_state_keep_sleepers(f, CF_RUNNING);
    return CF_RUNNING;
}

bool cf__future_taken(const cf_future *cf)
{
    cf_future *f = (cf_future *)cf; /* the lock is internal state */
    cf__lock_acquire(&f->lock);
    bool done = cf__state_done(cf__state_of(f));
    cf__lock_release(&f->lock);
    return done;
}

bool cf__future_attach_claim(cf_future *f, _Atomic uint32_t *word)
{
    cf__lock_acquire(&f->lock);
    uint32_t s = cf__state_of(f);
    if (cf__state_done(s)) {
        if (s == CF_CANCELLED)
            move_state_keep_sleepers(f, CF_CANCELLED_AND_NOTIFIED);
        cf__lock_release(&f->lock);
        return false;
    }
    atomic_store_explicit(word, CF__CLAIM_PENDING, memory_order_relaxed);
    f->claim = word;
    cf__lock_release(&f->lock);
    return true;
}

bool cf__future_detach_claim(cf_future *f)
{
    cf__lock_acquire(&f->lock);
    uint32_t s = settle_claim_locked(f);
    f->claim = NULL;
    cf__lock_release(&f->lock);
    return s == CF_RUNNING;
}

int cf__future_cancel_running(cf_future *f)
{
    cf__lock_acquire(&f->lock);
    uint32_t s = state_locked(f);
    if (cf__state_done(s)) {
        cf__lock_release(&f->lock);
        return CF_EINVALSTATE;
    }
    complete_locked(f, CF_CANCELLED_AND_NOTIFIED);
    return CF_OK;
}

CF__API bool cf_future_cancel(cf_future *f)
{
    if (!live(f))
        return false;
    cf__lock_acquire(&f->lock);
    uint32_t s = state_locked(f);
    if (s == CF_CANCELLED || s == CF_CANCELLED_AND_NOTIFIED) {
        cf__lock_release(&f->lock);
        return true;
    }
    if (s == CF_PENDING && f->claimable && f->claim && !claim_here(f)) {
        cf__lock_release(&f->lock);
        return false; /* inherited through fork(): not ours to cancel */
    }
    if (s == CF_PENDING && claim_here(f)) {
        /* Sent to a worker: cancelled only if it has not claimed it. */
        uint32_t want = CF__CLAIM_PENDING;
        if (!atomic_compare_exchange_strong_explicit(f->claim, &want, CF__CLAIM_CANCELLED,
                                                     memory_order_acq_rel,
                                                     memory_order_acquire)) {
            move_state_keep_sleepers(f, CF_RUNNING);
            s = CF_RUNNING;
        } else {
            cf__claim_hook *hook =
                atomic_load_explicit(&cf__test_hook_claim_cancelled, memory_order_relaxed);
            if (hook)
                hook(f);
        }
    }
    if (s != CF_PENDING) {
        cf__lock_release(&f->lock);
        return false;
    }
    /* Still queued in its executor (alive while the call is pending): the
     * queue slot goes back now, not when a worker meets the call. */
    cf__slot_release(f);
    /* Our own reference for complete_locked(): the caller's pointer may be
     * borrowed from a waiter that frees f as soon as it sees the state. */
    cf_future_retain(f);
    complete_locked(f, CF_CANCELLED);
    cf_future_release(f);
    return true;
}

/* cf_future_set_running_or_notify_cancel(); `engine`: for the engine
 * that runs the call (cf__future_start_call), which alone may start a
 * call submitted to it (`owner`).  A user's start of one would leave it
 * RUNNING with nobody to complete it (the engine's own start then fails
 * and it skips the call), so that is refused; a cancelled one may still
 * be notified. */
static int set_running(cf_future *f, bool engine)
{
    cf__lock_acquire(&f->lock);
    /* Not state_locked(): a hook would send the call's completion under
     * the lock; start_cas() decides against a lock-free start. */
    uint32_t s = cf__state_of(f);
    int rc;
    if (s == CF_PENDING && f->has_call && f->owner && !engine) {
        rc = cf__fail(CF_EINVALSTATE, "set_running_or_notify_cancel: a submitted call is "
                                      "started by the executor that runs it");
    } else if (s == CF_PENDING && start_cas(f, true)) {
        rc = 1;
    } else if (s == CF_PENDING) {
        /* A worker's lock-free start came first. */
        rc = cf__fail(CF_EINVALSTATE, "set_running_or_notify_cancel: future was started by its "
                                      "executor's worker");
    } else if (s == CF_CANCELLED) {
        /* Waiters were already notified by cancel(); CANCELLED is final for
         * them, so no wake-up is due. */
        move_state_keep_sleepers(f, CF_CANCELLED_AND_NOTIFIED);
        rc = 0;
    } else {
        rc = cf__fail(CF_EINVALSTATE, "set_running_or_notify_cancel: future is %s",
                      s == CF_CANCELLED_AND_NOTIFIED ? "cancelled and already notified"
                                                     : cf_state_name((cf_state)s));
    }
    cf__lock_release(&f->lock);
    return rc;
}

CF__API int cf_future_set_running_or_notify_cancel(cf_future *f)
{
    if (!live(f))
        return cf__fail(CF_EINVAL, "set_running_or_notify_cancel: not a live future");
    return set_running(f, false);
}

/* Writes an outcome from elsewhere into f's fields (taking `heap` and
 * `failure`): small bytes/strings are copied inline, as cf__value_store()
 * does, unless their bytes live in `heap` or (`mapped`) in shared memory.
 * By the one thread that completes f, before the state shows it. */
static void put_outcome(cf_future *f, int status, const cf_value *result, void *heap,
                        cf_failure *failure, bool mapped)
{
    f->status = status;
    if (result) {
        f->result = *result;
        if (!heap && !mapped && (result->kind == CF_BYTES || result->kind == CF_STR)) {
            memcpy(f->inline_result, result->as.bytes, cf__value_extra(result));
            f->result.as.bytes = f->inline_result;
        }
    }
    f->result_heap = heap;
    f->failure = failure;
}

/* Completes f as FINISHED with an outcome the caller already built.  Takes
 * ownership of `failure` and `heap` on success; returns CF_EINVALSTATE
 * (owning nothing) when already done. */
static int finish_mapped(cf_future *f, int status, const cf_value *result, void *heap,
                         cf_failure *failure, const char *who, bool engine, cf__buf *buf,
                         cf__bufcache *cache, bool fd_held)
{
    cf__lock_acquire(&f->lock);
    uint32_t s = state_locked(f);
    if (cf__state_done(s)) {
        cf__lock_release(&f->lock);
        return cf__fail(CF_EINVALSTATE, "%s: future is already %s", who,
                        cf_state_name((cf_state)s));
    }
    if (!engine)
        s = take_from_worker_locked(f, s); /* nothing fails after it: no `buf` here */
    if (s == CF_RUNNING && f->has_call && !engine) {
        cf__lock_release(&f->lock);
        return cf__fail(CF_EINVALSTATE, "%s: the future is running on an executor, which "
                                        "completes it", who);
    }
    /* A queued call completed by its user gives its queue slot back now,
     * as a cancelled one does: no worker will take it. */
    if (s == CF_PENDING && !engine)
        cf__slot_release(f);
    void *map = buf ? buf->map : NULL;
    if (map) {
        if (!f->shm && !(f->shm = cf__shm_new())) {
            cf__lock_release(&f->lock);
            return cf__fail(CF_ENOMEM, "%s: out of memory", who);
        }
        /* The shm has no result buffer yet: a parent-side future gets its
         * outcome once. */
        f->shm->result = *buf;
        f->shm->result_fd_held = fd_held;
        f->shm->fork_stamp = atomic_load_explicit(&cf__fork_count, memory_order_acquire);
        if (cache && !f->shm->cache)
            f->shm->cache = cf__bufcache_ref(cache);
        *buf = (cf__buf){NULL, 0, -1};
    }
    put_outcome(f, status, result, heap, failure, map != NULL);
    /* An engine holds a reference of its own; a user's completion takes
     * one (as cf_future_cancel() does). */
    if (!engine)
        cf_future_retain(f);
    complete_locked(f, CF_FINISHED);
    if (!engine)
        cf_future_release(f);
    return CF_OK;
}

static int finish(cf_future *f, int status, const cf_value *result, void *heap,
                  cf_failure *failure, const char *who, bool engine)
{
    return finish_mapped(f, status, result, heap, failure, who, engine, NULL, NULL, false);
}

int cf__future_complete_mapped(cf_future *f, const cf_value *result, cf__buf *buf,
                               cf__bufcache *cache, bool fd_held)
{
    return finish_mapped(f, CF_OK, result, NULL, NULL, "complete", true, buf, cache, fd_held);
}

CF__API int cf_future_set_result(cf_future *f, const cf_value *v)
{
    if (!live(f))
        return cf__fail(CF_EINVAL, "set_result: not a live future");
    cf_value none = cf_none();
    if (!v)
        v = &none;
    int rc = cf__value_check(v, false, "set_result", 0);
    if (rc != CF_OK)
        return rc;
    cf__lock_acquire(&f->lock);
    uint32_t s = state_locked(f);
    if (cf__state_done(s)) {
        cf__lock_release(&f->lock);
        return cf__fail(CF_EINVALSTATE, "set_result: future is already %s",
                        cf_state_name((cf_state)s));
    }
    if (s == CF_RUNNING && f->has_call) {
        cf__lock_release(&f->lock);
        return cf__fail(CF_EINVALSTATE, "set_result: the future is running on an executor, "
                                        "which completes it");
    }
    /* We win the completion, so the future's result slots are ours to
     * fill; on ENOMEM nothing has changed and the future stays as it was. */
    rc = cf__value_store(&f->result, &f->result_heap, f->inline_result, v, false, "set_result");
    if (rc != CF_OK) {
        cf__lock_release(&f->lock);
        return rc;
    }
    /* Last, as nothing can fail after it: a call on a worker's claim
     * words is taken from the worker, unless it has begun. */
    if (s == CF_PENDING && take_from_worker_locked(f, s) == CF_RUNNING) {
        free(f->result_heap);
        f->result_heap = NULL;
        f->result = cf_none();
        cf__lock_release(&f->lock);
        return cf__fail(CF_EINVALSTATE, "set_result: the future is running on an executor, "
                                        "which completes it");
    }
    if (s == CF_PENDING)
        cf__slot_release(f); /* as in finish_mapped() */
    f->status = CF_OK;
    cf_future_retain(f); /* as in cf_future_cancel() */
    complete_locked(f, CF_FINISHED);
    cf_future_release(f);
    return CF_OK;
}

CF__API int cf_future_set_exception(cf_future *f, int code, const char *type,
                                    const char *message)
{
    if (!live(f))
        return cf__fail(CF_EINVAL, "set_exception: not a live future");
    cf_failure *fail = cf__failure_new(code, type, message);
    if (!fail)
        return cf__fail(CF_ENOMEM, "set_exception: out of memory");
    int rc = finish(f, CF_ETASK, NULL, NULL, fail, "set_exception", false);
    if (rc != CF_OK)
        cf__failure_free(fail);
    return rc;
}

static int fail_future(cf_future *f, int status, const char *type, const char *message,
                       bool engine)
{
    cf_failure *fail = cf__failure_new(status, type, message);
    int rc = finish(f, status, NULL, NULL, fail ? fail : cf__failure_oom(), "fail", engine);
    if (rc != CF_OK && fail)
        cf__failure_free(fail);
    return rc;
}

int cf__future_fail(cf_future *f, int status, const char *type, const char *message)
{
    return fail_future(f, status, type, message, false);
}

int cf__future_fail_running(cf_future *f, int status, const char *type, const char *message)
{
    return fail_future(f, status, type, message, true);
}

int cf__future_complete_remote(cf_future *f, int status, const cf_value *result, void *heap,
                               cf_failure *failure)
{
    return finish(f, status, result, heap, failure, "complete", true);
}

static bool finish_unhooked(cf_future *f, bool settle);

int cf__future_complete_owned(cf_future *f, int status, const cf_value *result, void *heap,
                              cf_failure *failure)
{
    uint32_t raw = atomic_load_explicit(&f->state, memory_order_relaxed);
    if ((raw & ~CF__SLEEPERS) != CF_RUNNING || f->claimable)
        return finish(f, status, result, heap, failure, "complete", true);
    /* RUNNING and unhooked: only this thread writes the outcome (the one
     * completer, see internal.h); finish_unhooked() publishes it with
     * its release CAS, or under the lock if f was hooked meanwhile. */
    put_outcome(f, status, result, heap, failure, false);
    if (!finish_unhooked(f, false)) {
        /* Hooked between the look above and finish_unhooked's own: the
         * locked path, with the outcome already in place. */
        f->result_heap = NULL;
        f->failure = NULL;
        f->result = cf_none();
        return finish(f, status, result, heap, failure, "complete", true);
    }
    return CF_OK;
}

/* Runs the task of f, which is RUNNING; its outcome fields are written
 * by this thread alone (see struct cf_call). */
static void run_task(cf_future *f)
{
    cf_call *call = &f->call;
    if (f->timeout_ns != CF__NS_FOREVER)
        f->deadline_ns = cf__now_ns() + f->timeout_ns;
    int rc = call->fn(call);
    if (CF__UNLIKELY(f->cancel_watched))
        cf__cancel_fd_end(f);
    if (!f->failure && rc != 0)
        cf_raise(call, rc, "TaskError", "task returned %d without raising", rc);
}

/* A raised failure wins over any result the task also set. */
static void settle_outcome(cf_future *f)
{
    if (f->failure) {
        f->status = CF_ETASK;
        free(f->result_heap);
        f->result_heap = NULL;
        f->result = cf_none();
    } else {
        f->status = CF_OK;
    }
}

void cf__future_run_private(cf_future *f)
{
    run_task(f);
    settle_outcome(f);
    atomic_store_explicit(&f->state, CF_FINISHED, memory_order_release);
}

/* Tests only: called by the lock-free completion between the progress
 * counts and its CAS of the state, to widen the window in which a waiter
 * or callback can hook the future (NULL in programs). */
void (*_Atomic cf__test_hook_before_finish)(cf_future *f);

/* Completes f, a RUNNING call that this thread ran (or, with `settle`
 * false, whose outcome this thread wrote as its one completer), without
 * its lock ("Lock-free completion" in the design notes).  Returns false,
 * having changed nothing (but the outcome, settled), when the state is
 * not RUNNING without CF__HOOKED (the caller takes the lock). */
static bool finish_unhooked(cf_future *f, bool settle)
{
    uint32_t raw = atomic_load_explicit(&f->state, memory_order_relaxed);
    if ((raw & ~CF__SLEEPERS) != CF_RUNNING || f->claimable)
        return false;
    if (settle)
        settle_outcome(f);
    /* The owner's counts and a map's live as long as the call runs. */
    count_end(f, CF_FINISHED);
    void (*hook)(cf_future *) =
        atomic_load_explicit(&cf__test_hook_before_finish, memory_order_relaxed);
    if (CF__UNLIKELY(hook != NULL))
        hook(f);
    while (!atomic_compare_exchange_weak_explicit(&f->state, &raw, CF_FINISHED,
                                                  memory_order_release, memory_order_relaxed)) {
        if (raw & CF__HOOKED) {
            /* Hooked since: under the lock (taken after the hooker dropped
             * it), with the outcome and the counts already in place. */
            cf__lock_acquire(&f->lock);
            complete_locked_counted(f, CF_FINISHED);
            return true;
        }
    }
    if (raw & CF__SLEEPERS)
        cf__futex_wake(&f->state, INT_MAX);
    return true;
}

void cf__future_run_call(cf_future *f, _Atomic unsigned *ended)
{
    run_task(f);
    if (!ended && finish_unhooked(f, true))
        return;
    cf__lock_acquire(&f->lock);
    if (CF__UNLIKELY(cf__state_of(f) != CF_RUNNING)) {
        /* Unreachable through the API: nothing else completes a running
         * submitted future.  Never complete a future twice. */
        cf__lock_release(&f->lock);
        if (ended)
            atomic_fetch_add_explicit(ended, 1, memory_order_release);
        cf__log("a task finished on a future that was not running; outcome dropped");
        return;
    }
    /* Only this thread could have written the outcome (see struct cf_call). */
    settle_outcome(f);
    /* The engine's idle accounting (`ended`) must be right before anyone can
     * see the outcome, so a caller who saw it and submits again finds this
     * worker free (see thread_pool.c) - unless callbacks will still run on
     * this thread: one of them may submit to the same pool and wait, and
     * then the pool must start another thread, as CPython's does.  The
     * callback list cannot grow once we hold the lock and complete. */
    bool callbacks = f->cb_head != NULL;
    if (ended && !callbacks)
        atomic_fetch_add_explicit(ended, 1, memory_order_release);
    complete_locked(f, CF_FINISHED);
    if (ended && callbacks)
        atomic_fetch_add_explicit(ended, 1, memory_order_release);
}

/* ---- waiting for the outcome ----------------------------------------- */

static bool future_is_done(void *f)
{
    return cf__state_done(cf__state_of(f));
}

/* Waits until done or the deadline; returns the final state or
 * CF__STATE_MASK+1 on timeout. */
static uint32_t wait_done(cf_future *f, int64_t deadline)
{
    uint32_t raw = atomic_load_explicit(&f->state, memory_order_acquire);
    if (cf__state_done(raw & CF__STATE_MASK))
        return raw & CF__STATE_MASK;
    if (cf__then_run_queued()) {
        raw = atomic_load_explicit(&f->state, memory_order_acquire);
        if (cf__state_done(raw & CF__STATE_MASK))
            return raw & CF__STATE_MASK;
    }
    if (deadline != CF__NS_FOREVER && deadline <= cf__now_ns())
        return CF__STATE_MASK + 1;
    if (cf__spin_until(future_is_done, f, deadline))
        return cf__state_of(f);
    for (;;) {
        raw = atomic_load_explicit(&f->state, memory_order_acquire);
        if (cf__state_done(raw & CF__STATE_MASK))
            return raw & CF__STATE_MASK;
        if (deadline != CF__NS_FOREVER && deadline <= cf__now_ns())
            return CF__STATE_MASK + 1;
        if (!(raw & CF__SLEEPERS)) {
            if (!atomic_compare_exchange_weak_explicit(&f->state, &raw, raw | CF__SLEEPERS,
                                                       memory_order_acq_rel,
                                                       memory_order_acquire))
                continue;
            raw |= CF__SLEEPERS;
        }
        cf__futex_wait(&f->state, raw, deadline);
    }
}

/* Shared front of result() and exception(): validates, waits, and returns
 * CF_OK once the future is FINISHED. */
static int await_finished(cf_future *f, double timeout, const char *who)
{
    if (!live(f))
        return cf__fail(CF_EINVAL, "%s: not a live future", who);
    int64_t deadline;
    int rc = cf__deadline(timeout, &deadline, who);
    if (rc != CF_OK)
        return rc;
    uint32_t s = wait_done(f, deadline);
    if (s > CF__STATE_MASK)
        return cf__fail(CF_ETIMEDOUT, "%s: future not done after %g s", who, timeout);
    if (s == CF_CANCELLED || s == CF_CANCELLED_AND_NOTIFIED)
        return cf__fail(CF_ECANCELLED, "%s: future was cancelled", who);
    return CF_OK;
}

CF__API int cf_future_result(cf_future *f, double timeout, const cf_value **out)
{
    if (out)
        *out = NULL;
    int rc = await_finished(f, timeout, "result");
    if (rc != CF_OK)
        return rc;
    if (f->status != CF_OK)
        return cf__fail(f->status, "result: %s: %s", f->failure->type, f->failure->message);
    if (out)
        *out = &f->result;
    return CF_OK;
}

CF__API int cf_future_result_i64(cf_future *f, double timeout, int64_t *out)
{
    const cf_value *v;
    int rc = cf_future_result(f, timeout, &v);
    if (rc != CF_OK)
        return rc;
    if (v->kind != CF_I64)
        return cf__fail(CF_EINVAL, "result_i64: result is %s, not int", cf_kind_name(v->kind));
    if (out)
        *out = v->as.i64;
    return CF_OK;
}

CF__API int cf_future_result_f64(cf_future *f, double timeout, double *out)
{
    const cf_value *v;
    int rc = cf_future_result(f, timeout, &v);
    if (rc != CF_OK)
        return rc;
    if (v->kind != CF_F64)
        return cf__fail(CF_EINVAL, "result_f64: result is %s, not float", cf_kind_name(v->kind));
    if (out)
        *out = v->as.f64;
    return CF_OK;
}

CF__API int cf_future_exception(cf_future *f, double timeout, const cf_failure **out)
{
    if (out)
        *out = NULL;
    int rc = await_finished(f, timeout, "exception");
    if (rc != CF_OK)
        return rc;
    if (out)
        *out = f->failure;
    return CF_OK;
}

CF__API int cf_future_add_done_callback(cf_future *f, cf_done_fn *fn, void *arg)
{
    if (!live(f) || !fn)
        return cf__fail(CF_EINVAL, "add_done_callback: %s is NULL", fn ? "future" : "fn");
    cf__lock_acquire(&f->lock);
    if (cf__state_done(cf__future_hook_locked(f))) {
        /* Our own reference: the callback may release the caller's last
         * one, and the failure report still reads the future. */
        cf_future_retain(f);
        cf__lock_release(&f->lock);
        run_callback(f, fn, arg);
        cf_future_release(f);
        return CF_OK;
    }
    cf__cb *cb = malloc(sizeof *cb);
    if (!cb) {
        cf__lock_release(&f->lock);
        return cf__fail(CF_ENOMEM, "add_done_callback: out of memory");
    }
    cb->fn = fn;
    cb->arg = arg;
    cb->next = NULL;
    if (f->cb_tail)
        f->cb_tail->next = cb;
    else
        f->cb_head = cb;
    f->cb_tail = cb;
    cf__lock_release(&f->lock);
    return CF_OK;
}

bool cf__future_visit_callback(cf_future *f, cf_done_fn *fn, void (*visit)(void *arg, void *ctx),
                               void *ctx)
{
    bool found = false;
    cf__lock_acquire(&f->lock);
    /* Completion detaches the list under this lock before it runs it. */
    for (cf__cb *cb = f->cb_head; cb && !found; cb = cb->next) {
        if (cb->fn == fn) {
            visit(cb->arg, ctx);
            found = true;
        }
    }
    cf__lock_release(&f->lock);
    return found;
}

CF__API int cf_future_format(const cf_future *f, char *buf, size_t size)
{
    if (!live(f) || (!buf && size > 0))
        return cf__fail(CF_EINVAL, "future_format: %s is NULL", buf ? "future" : "buf");
    uint32_t s = state_now(f);
    if (s == CF_FINISHED) {
        if (f->status == CF_OK)
            return snprintf(buf, size, "<Future at %p state=finished returned %s>", (void *)f,
                            cf_kind_name(f->result.kind));
        return snprintf(buf, size, "<Future at %p state=finished raised %s>", (void *)f,
                        f->failure->type);
    }
    return snprintf(buf, size, "<Future at %p state=%s>", (void *)f,
                    cf_state_name((cf_state)s));
}

/* ---- user data -------------------------------------------------------- */

bool cf__future_live(const cf_future *f)
{
    return live(f);
}

CF__API int cf_future_set_data(cf_future *f, void *data)
{
    if (!live(f))
        return cf__fail(CF_EINVAL, "future_set_data: %s", f ? "not a live future" : "future is NULL");
    atomic_store_explicit(&f->user_data, data, memory_order_release);
    return CF_OK;
}

CF__API void *cf_future_data(const cf_future *f)
{
    if (!live(f))
        return NULL;
    return atomic_load_explicit(&((cf_future *)f)->user_data, memory_order_acquire);
}
