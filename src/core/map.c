/* SPDX-License-Identifier: MIT */
/*
 * map.c - cf_map(): fn over zipped inputs, outcomes in input order.
 *
 * Design notes
 * - Eager mode (buffersize 0), as CPython: every input is read and every
 *   call submitted inside cf_map(); the iterator then waits on the futures
 *   in order.  Lazy mode (buffersize N): N calls are submitted up front and
 *   each cf_map_next() submits one more before it waits, as Python 3.14
 *   does, so at most N+1 calls are outstanding and an endless generator
 *   runs in constant memory.
 * - The futures live in a ring (`ring`, `head`, `count`): submitted, not
 *   yet yielded, in input order.
 * - Per-element outcomes: a failed element is reported at its position
 *   and iteration goes on.  A timeout ends the iteration and cancels what
 *   has not started, like CPython's generator closing.
 * - The value/failure handed out by cf_map_next() is borrowed from the
 *   future of that element, which the iterator keeps (`current`) until the
 *   next call.
 * - A bounded executor (max_queued): each chunk waits for room in its
 *   queue until the map's deadline (cf__submit_prepared), so an eager map
 *   bigger than the bound fills the queue as workers drain it, inside
 *   cf_map(); CF_EFULL when the deadline passes first.
 * - Chunk mode: an eager map over arrays, at the default priority, on an
 *   unbounded executor whose engine runs a chunk as one unit
 *   (submit_chunk: MPI) makes each chunk one object (cf__chunk, internal.h)
 *   instead of n futures: the tuples copied into it, the outcomes written
 *   into its records by the engine and read in place by cf_map_next(),
 *   one state word for the chunk.  What a map promises per element holds:
 *   such an engine starts every call of a chunk when it sends the chunk,
 *   so "cancellable until it begins" is the chunk's PENDING state;
 *   failures stay at their position; the chunk counts its calls in the
 *   executor's and the map's counts as they start and end, and holds the
 *   map's count block like a call left running.  `chunks` replaces the
 *   ring; a chunk's records stay valid while the map holds it, so values
 *   handed out are borrowed until the next cf_map_next() as before.
 * - An iterator is used by one thread at a time; it has no lock.
 * - The map's progress counts (`mc`) are a block of their own: its calls
 *   count in them lock-free as they start and end (future.c), so the block
 *   must outlive every call that can still start or end.  cf_map_close()
 *   gives each call still running (`left`) a done-callback holding the
 *   block (`holds`), and the last of the iterator and those callbacks to
 *   let go frees it.  A call that never ends keeps the block (about 1.7
 *   KiB) for good: one running when the process forked, whose map the
 *   child closes, is the case where that happens.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Calls of an eager map over arrays handed to a thread pool at once (see
 * cf_map()). */
#define MAP_GROUP 64

struct cf_map_iter {
    cf_executor *ex;
    cf_task_fn *fn;
    cf_map_input *inputs;  /* copy of the caller's descriptors */
    size_t ninputs;
    size_t *pos;           /* next index into each array input */
    cf_value *tuple;       /* scratch: one value per input */
    /* A copy of each generator's latest CF_STR/CF_BYTES value, which
     * it->tuple points at: the generator may reuse or free its own
     * storage when called again, and the tuple (zip(g, g) calls one
     * generator for two inputs) is read whole before the values are
     * copied into the call.  One buffer per input, grown as needed and
     * kept for the map's life; unused for an array input, whose values
     * stay valid for the whole map and are read in place. */
    struct held_value {
        unsigned char *buf;
        size_t cap;
    } *held;
    int64_t deadline;
    size_t buffersize;     /* 0 = eager */
    int priority;          /* of every call */
    size_t chunksize;      /* calls per unit handed to the engine */
    cf_future **chunk;     /* scratch: the unit being submitted; grows with
                            * the tuples actually read, never beyond
                            * chunksize, so a huge chunksize over a short
                            * input costs nothing */
    size_t chunk_cap;
    cf_future **ring;
    size_t cap, head, count;
    bool exhausted;        /* no more input (or refilling stopped) */
    bool zip_ended;        /* an input said it had no more (next_tuple 0) */
    int refill_err;        /* why refilling stopped, reported at the end */
    bool finished;
    cf_future *current;    /* element last yielded, kept for its value */
    /* Calls the map gave up on (its timeout, a refused refill) that had
     * begun, so could not be cancelled: kept, with a reference, so they
     * count in the map until they end; cf_map_close() hands them the
     * counts (see the design notes). */
    cf_future **left;
    size_t nleft, left_cap;
    /* Set when a call left running could not be given the counts (out of
     * memory): they are then never freed, about 1.7 KiB. */
    bool counts_pinned;
    /* This map's calls (progress.c); written by the threads that submit
     * and complete them, read by cf_map_progress() from any thread. */
    struct map_counts *mc;
    /* Chunk mode (use_chunks(); cf__chunk in internal.h) instead of the
     * ring of futures: every chunk of the map, in input order, the map's
     * reference on those not yet read past; `chead` the one being read,
     * `cpos` its next element. */
    bool chunked;
    cf__chunk **chunks;
    size_t nchunks, chead, cpos;
};

/* The map's counts, and who holds them: the iterator (1) until it is
 * closed, plus one per call left running at close, dropped by that
 * call's done-callback.  acq_rel: whoever frees the block sees every
 * count written into it. */
typedef struct map_counts {
    cf__counts counts;
    _Atomic size_t holds;
} map_counts;

static void counts_drop(map_counts *mc)
{
    if (atomic_fetch_sub_explicit(&mc->holds, 1, memory_order_acq_rel) == 1)
        free(mc);
}

/* A call left running at close has ended (its counts are written). */
static int counts_drop_cb(cf_future *f, void *arg)
{
    (void)f;
    counts_drop(arg);
    return 0;
}

CF__API void cf_map_options_init(cf_map_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->timeout = CF_FOREVER;
    opts->chunksize = 1;
    opts->buffersize = 0;
    opts->priority = CF_PRIORITY_DEFAULT;
}

/* Copies the bytes of *v, a value a generator just produced, into h and
 * points *v at the copy, so it outlives the generator's next call.  A
 * value the checks will refuse without reading its bytes (too big, NULL)
 * is left as it is.  A string's copy keeps what the check reads
 * (strnlen up to size + 1), so it is accepted or refused as the original
 * would have been. */
static int hold_value(struct held_value *h, cf_value *v)
{
    if ((v->kind != CF_STR && v->kind != CF_BYTES) || v->size > CF_PAYLOAD_MAX ||
        !v->as.bytes)
        return CF_OK;
    size_t len = v->kind == CF_STR ? strnlen(v->as.str, v->size + 1) : v->size;
    size_t need = len + 1;
    if (need > h->cap) {
        unsigned char *nb = realloc(h->buf, need);
        if (!nb)
            return cf__fail(CF_ENOMEM, "map: cannot allocate %zu bytes for a generator's value",
                            need);
        h->buf = nb;
        h->cap = need;
    }
    if (len)
        memcpy(h->buf, v->as.bytes, len);
    h->buf[len] = '\0';
    v->as.bytes = h->buf;
    return CF_OK;
}

/* Reads the next tuple.  Returns 1, 0 at the end, or a cf_error.  A
 * generator's value is held (hold_value) before any generator is called
 * again. */
static int next_tuple(cf_map_iter *it)
{
    for (size_t i = 0; i < it->ninputs; i++) {
        cf_map_input *in = &it->inputs[i];
        if (in->next) {
            int r = in->next(in->ctx, &it->tuple[i]);
            if (r == 0)
                return 0;
            if (r < 0)
                return cf__fail(CF_EINVAL, "map: generator of input %zu failed (%d)", i, r);
            if ((r = hold_value(&it->held[i], &it->tuple[i])) != CF_OK)
                return r;
        } else {
            if (it->pos[i] >= in->count)
                return 0;
            it->tuple[i] = in->values[it->pos[i]++];
        }
    }
    return 1;
}

/* The ring slot of the i-th future from `head` (i < cap), by a compare
 * rather than a division.  Measured, it made no difference: the samples
 * once put on the division were the stores into a freshly allocated ring,
 * which the ring sized once in cf_map() removed. */
static size_t slot_of(const cf_map_iter *it, size_t i)
{
    size_t k = it->head + i;
    return k < it->cap ? k : k - it->cap;
}

/* Makes room for `more` futures in the ring. */
static int reserve(cf_map_iter *it, size_t more)
{
    if (it->count + more <= it->cap)
        return CF_OK;
    size_t ncap = it->cap ? it->cap : 16;
    while (ncap < it->count + more)
        ncap *= 2;
    cf_future **nr = malloc(ncap * sizeof *nr);
    if (!nr)
        return cf__fail(CF_ENOMEM, "map: out of memory");
    for (size_t i = 0; i < it->count; i++)
        nr[i] = it->ring[slot_of(it, i)];
    free(it->ring);
    it->ring = nr;
    it->cap = ncap;
    it->head = 0;
    return CF_OK;
}

/* Appends a future; reserve() made room. */
static void push(cf_map_iter *it, cf_future *f)
{
    it->ring[slot_of(it, it->count)] = f;
    it->count++;
}

static cf_future *pop(cf_map_iter *it)
{
    cf_future *f = it->ring[it->head];
    it->head = slot_of(it, 1);
    it->count--;
    return f;
}

/* Doubles the chunk scratch, up to chunksize. */
static int grow_chunk(cf_map_iter *it)
{
    size_t ncap = it->chunk_cap ? it->chunk_cap * 2 : 64;
    if (ncap > it->chunksize)
        ncap = it->chunksize;
    cf_future **nc = realloc(it->chunk, ncap * sizeof *nc);
    if (!nc)
        return cf__fail(CF_ENOMEM, "map: out of memory");
    it->chunk = nc;
    it->chunk_cap = ncap;
    return CF_OK;
}

/* Gives up on f, a call of the map that has begun (see `left`). */
static void keep_running(cf_map_iter *it, cf_future *f)
{
    if (it->nleft == it->left_cap) {
        size_t cap = it->left_cap ? 2 * it->left_cap : 4;
        cf_future **l = realloc(it->left, cap * sizeof *l);
        if (!l) {
            /* No memory to remember it: the counts are kept for good, as
             * the call still writes them when it ends (see cf_map_close). */
            it->counts_pinned = true;
            cf_future_release(f);
            return;
        }
        it->left = l;
        it->left_cap = cap;
    }
    it->left[it->nleft++] = f;
}

/* An engine names its refusals after the call it serves ("submit: ...",
 * "submit_many: ..."), which cannot tell a map's calls from others: the
 * map's caller reads "map: ..." instead. */
static int as_map_error(int rc)
{
    const char *msg = cf_last_error_message();
    const char *colon = strstr(msg, ": ");
    if (strncmp(msg, "submit", 6) != 0 || !colon)
        return rc;
    char rest[512]; /* a copy: the message is rewritten from it */
    snprintf(rest, sizeof rest, "%s", colon + 2);
    return cf__fail(rc, "map: %s", rest);
}

/* Submits the next chunk (up to `chunksize` tuples) as one unit.  Returns
 * the number submitted, 0 (inputs exhausted) or a cf_error (nothing of
 * this chunk stays scheduled). */
static int submit_next(cf_map_iter *it)
{
    size_t n = 0;
    int r = 0;
    /* The inputs ended at a partial chunk, submitted by the last call:
     * zip() is over, as Python's map stops at the first StopIteration.
     * Reading again would call generators past their end (one that had
     * returned 0, or one ahead of the shortest input, whose error or
     * side effects then belong to no element). */
    if (it->zip_ended)
        return 0;
    while (n < it->chunksize) {
        r = next_tuple(it);
        if (r == 0)
            it->zip_ended = true;
        if (r <= 0)
            break;
        if (n == it->chunk_cap && (r = grow_chunk(it)) != CF_OK)
            break;
        /* What does not depend on the values is checked once a chunk. */
        if (n == 0 && (r = cf__check_calls(it->ex, it->fn, it->tuple, it->ninputs)) != CF_OK)
            break;
        r = cf__prepare_checked(it->ex, it->fn, it->tuple, it->ninputs, it->priority,
                                &it->chunk[n]);
        if (r != CF_OK)
            break;
        n++;
    }
    if (r < 0 || n == 0) {
        for (size_t i = 0; i < n; i++)
            cf_future_release(it->chunk[i]);
        return r;
    }
    r = reserve(it, n);
    if (r == CF_OK) {
        for (size_t i = 0; i < n; i++)
            cf__progress_map_mark(&it->mc->counts, it->chunk[i]);
        r = cf__submit_prepared(it->ex, it->chunk, n, true, it->deadline);
        if (r != CF_OK)
            r = as_map_error(r);
    }
    if (r != CF_OK) {
        /* One a worker had begun before the rest was refused runs on
         * unobserved, counted here until it ends (the others were
         * cancelled, or unmarked when refused: in_map is false). */
        for (size_t i = 0; i < n; i++) {
            cf_future *f = it->chunk[i];
            if (f->in_map && !cf_future_done(f))
                keep_running(it, f);
            else
                cf_future_release(f);
        }
        return r;
    }
    cf__progress_accepted(&it->mc->counts, n);
    for (size_t i = 0; i < n; i++)
        push(it, it->chunk[i]);
    return (int)n;
}


/* ---- map chunks ---------------------------------------------------------- */

static cf__counts *chunk_map_counts(const cf__chunk *c)
{
    return &((map_counts *)c->map)->counts;
}

/* Adds n to one counter of both count blocks of c, in the calling
 * thread's shard. */
static void chunk_count(cf__chunk *c, size_t field, uint64_t n)
{
    if (n == 0)
        return;
    unsigned sh = cf__count_shard_ix();
    cf__count_shard *a = &c->owner->counts.shard[sh], *b = &chunk_map_counts(c)->shard[sh];
    _Atomic uint64_t *fa = (_Atomic uint64_t *)((char *)a + field);
    _Atomic uint64_t *fb = (_Atomic uint64_t *)((char *)b + field);
    cf__count_bump(fa, sh, n);
    cf__count_bump(fb, sh, n);
}

#define COUNT_STARTED offsetof(cf__count_shard, started)
#define COUNT_ENDED(begun, outcome) offsetof(cf__count_shard, ended[begun][outcome])

/* PENDING -> `to` (RUNNING or CANCELLING), keeping a sleeper's bit; of a
 * start and a cancel exactly one wins.  False if the chunk had left
 * PENDING. */
static bool leave_pending(cf__chunk *c, uint32_t to)
{
    uint32_t s = atomic_load_explicit(&c->state, memory_order_relaxed);
    do {
        if ((s & CF__CHUNK_STATE) != CF__CHUNK_PENDING)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&c->state, &s, (s & CF__CHUNK_SLEEPER) | to,
                                                    memory_order_acquire, memory_order_relaxed));
    return true;
}

CF__API bool cf__chunk_start(cf__chunk *c)
{
    if (!leave_pending(c, CF__CHUNK_RUNNING))
        return false;
    /* Just after the start shows (progress: starts are counted so). */
    chunk_count(c, COUNT_STARTED, c->n);
    return true;
}

CF__API void cf__chunk_finish(cf__chunk *c)
{
    uint64_t nfail = 0;
    for (uint32_t i = 0; i < c->n; i++)
        nfail += c->recs[i].status != CF_OK;
    /* Before the end shows: a reader that saw it done sees it counted. */
    chunk_count(c, COUNT_ENDED(1, CF__COUNT_SUCCEEDED), c->n - nfail);
    chunk_count(c, COUNT_ENDED(1, CF__COUNT_FAILED), nfail);
    /* Release: the records (and counts) before DONE.  The engine still
     * holds its reference, so the word is alive for the wake. */
    uint32_t old = atomic_exchange_explicit(&c->state, CF__CHUNK_DONE, memory_order_acq_rel);
    if (old & CF__CHUNK_SLEEPER)
        cf__futex_wake(&c->state, INT32_MAX);
}

CF__API void cf__chunk_fail(cf__chunk *c, int status, const char *type, const char *msg)
{
    uint32_t s = atomic_load_explicit(&c->state, memory_order_acquire) & CF__CHUNK_STATE;
    if (s == CF__CHUNK_PENDING && !cf__chunk_start(c))
        return; /* cancelled meanwhile */
    if (s != CF__CHUNK_PENDING && s != CF__CHUNK_RUNNING)
        return;
    for (uint32_t i = 0; i < c->n; i++) {
        cf__chunk_rec *r = &c->recs[i];
        cf_failure *fl = cf__failure_new(status, type, msg);
        r->status = status;
        r->result = cf_none();
        r->heap = NULL;
        r->failure = fl ? fl : cf__failure_oom();
    }
    cf__chunk_finish(c);
}

CF__API bool cf__chunk_cancel(cf__chunk *c)
{
    if (!leave_pending(c, CF__CHUNK_CANCELLING))
        return false;
    /* Counted before the end shows, as every end is: the map's reader
     * waits until CANCELLED (it may set SLEEPER meanwhile). */
    chunk_count(c, COUNT_ENDED(0, CF__COUNT_CANCELLED), c->n);
    uint32_t old = atomic_exchange_explicit(&c->state, CF__CHUNK_CANCELLED, memory_order_acq_rel);
    if (old & CF__CHUNK_SLEEPER)
        cf__futex_wake(&c->state, INT32_MAX);
    return true;
}

CF__API void cf__chunk_release(cf__chunk *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if ((atomic_load_explicit(&c->state, memory_order_relaxed) & CF__CHUNK_STATE) ==
        CF__CHUNK_DONE)
        for (uint32_t i = 0; i < c->n; i++) {
            free(c->recs[i].heap);
            if (c->recs[i].failure && !cf__failure_is_static(c->recs[i].failure))
                cf__failure_free(c->recs[i].failure);
        }
    counts_drop(c->map);
    cf__chunk_mem_put(c, c->mem);
}

/* Does this map go in chunks?  An engine that takes them, an eager map
 * over arrays alone, the default priority and no queue bound (a bounded
 * executor counts calls one by one); anything else goes as futures. */
static bool use_chunks(const cf_map_iter *it, size_t known)
{
    return it->ex->engine->submit_chunk && !it->buffersize && known > 0 &&
           known != SIZE_MAX && it->priority == CF_PRIORITY_DEFAULT && it->ex->bound.max == 0;
}

/* Builds the next chunk from the arrays (all inputs advance together) and
 * hands it to the engine: the values are checked as cf_submit() checks
 * them and copied into the chunk.  Returns 1, 0 (no more input) or a
 * cf_error (nothing of this chunk was handed over). */
static int submit_next_chunk(cf_map_iter *it, size_t known)
{
    size_t base = it->pos[0];
    if (base >= known)
        return 0;
    size_t n = known - base < it->chunksize ? known - base : it->chunksize;
    size_t na = it->ninputs;
    for (size_t i = 0; i < na; i++)
        it->tuple[i] = it->inputs[i].values[base];
    int rc = cf__check_calls(it->ex, it->fn, it->tuple, na);
    if (rc != CF_OK)
        return rc;
    bool copying = it->ex->engine->copies_args;
    size_t extra = 0;
    for (size_t k = 0; k < n; k++) {
        size_t payload = 0;
        for (size_t i = 0; i < na; i++) {
            const cf_value *v = &it->inputs[i].values[base + k];
            if (CF__LIKELY(v->kind == CF_I64 || v->kind == CF_F64 || v->kind == CF_NONE))
                continue;
            if ((rc = cf__value_check(v, copying, "map", i)) != CF_OK)
                return rc;
            if (v->kind == CF_BYTES || v->kind == CF_STR)
                payload += v->size;
            extra += cf__value_extra(v);
            if (payload > CF_PAYLOAD_MAX)
                return cf__fail(CF_ETOOBIG, "map: arguments total %zu bytes, more than "
                                            "CF_PAYLOAD_MAX (%zu)",
                                payload, (size_t)CF_PAYLOAD_MAX);
        }
    }
    size_t head = (sizeof(cf__chunk) + 15) & ~(size_t)15;
    size_t per = sizeof(cf__chunk_rec) + na * sizeof(cf_value);
    if (n > (SIZE_MAX - head - extra) / per)
        return cf__fail(CF_ENOMEM, "map: a chunk of %zu calls is too big", n);
    size_t mem;
    cf__chunk *c = cf__chunk_mem_get(head + n * per + extra, &mem);
    if (!c)
        return cf__fail(CF_ENOMEM, "map: out of memory for a chunk of %zu calls", n);
    c->mem = mem;
    atomic_init(&c->state, CF__CHUNK_PENDING);
    atomic_init(&c->refs, 2); /* the map's and the engine's */
    c->owner = it->ex;
    atomic_fetch_add_explicit(&it->mc->holds, 1, memory_order_relaxed);
    c->map = it->mc;
    c->fn = it->fn;
    c->n = (uint32_t)n;
    c->nargs = (uint32_t)na;
    c->recs = (cf__chunk_rec *)((char *)c + head);
    c->args = (cf_value *)(c->recs + n);
    unsigned char *bytes = (unsigned char *)(c->args + n * na);
    cf_value *a = c->args;
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < na; i++) {
            *a = it->inputs[i].values[base + k];
            if (a->kind == CF_BYTES || a->kind == CF_STR) {
                size_t x = cf__value_extra(a);
                if (a->size)
                    memcpy(bytes, a->as.bytes, a->size);
                if (a->kind == CF_STR)
                    bytes[a->size] = 0;
                a->as.bytes = bytes;
                bytes += x;
            }
            a++;
        }
    rc = it->ex->engine->submit_chunk(it->ex, c);
    if (rc != CF_OK) {
        cf__chunk_release(c); /* the map's; the engine let go of its own */
        return as_map_error(rc);
    }
    for (size_t i = 0; i < na; i++)
        it->pos[i] += n;
    /* After the hand-off, as for futures (progress: `submitted`). */
    cf__progress_accepted(&it->ex->counts, n);
    cf__progress_accepted(&it->mc->counts, n);
    it->chunks[it->nchunks++] = c;
    return 1;
}

/* Cancels what has not begun and lets go of every chunk not yet read;
 * those running go on, held by their engine (and counting in the map's
 * counts, which they hold). */
static void drop_chunks(cf_map_iter *it)
{
    for (size_t i = it->chead; i < it->nchunks; i++) {
        cf__chunk_cancel(it->chunks[i]);
        cf__chunk_release(it->chunks[i]);
        it->chunks[i] = NULL;
    }
    it->chead = it->nchunks;
}

/* cf_map_next() in chunk mode. */
static int chunk_next(cf_map_iter *it, const cf_value **value, const cf_failure **failure)
{
    if (it->chead < it->nchunks && it->cpos == it->chunks[it->chead]->n) {
        cf__chunk_release(it->chunks[it->chead]);
        it->chunks[it->chead++] = NULL;
        it->cpos = 0;
    }
    if (it->chead == it->nchunks) {
        it->finished = true;
        return CF_EDONE;
    }
    cf__chunk *c = it->chunks[it->chead];
    uint32_t s = atomic_load_explicit(&c->state, memory_order_acquire);
    /* Liveness: the engine finishes (or fails) every chunk it started, and
     * cancels or fails every one it holds when it shuts down or breaks,
     * waking this sleep (SLEEPER); the map's deadline ends it otherwise. */
    while ((s & CF__CHUNK_STATE) < CF__CHUNK_DONE) {
        if (it->deadline != CF__NS_FOREVER && cf__now_ns() >= it->deadline) {
            drop_chunks(it);
            it->finished = true;
            return cf__fail(CF_ETIMEDOUT, "map: result not available within the map's timeout");
        }
        if (!(s & CF__CHUNK_SLEEPER)) {
            if (!atomic_compare_exchange_weak_explicit(&c->state, &s, s | CF__CHUNK_SLEEPER,
                                                       memory_order_acquire,
                                                       memory_order_acquire))
                continue;
            s |= CF__CHUNK_SLEEPER;
        }
        cf__futex_wait(&c->state, s, it->deadline);
        s = atomic_load_explicit(&c->state, memory_order_acquire);
    }
    if ((s & CF__CHUNK_STATE) == CF__CHUNK_CANCELLED) {
        it->cpos++;
        return cf__fail(CF_ECANCELLED, "map: the call was cancelled");
    }
    const cf__chunk_rec *r = &c->recs[it->cpos++];
    if (CF__LIKELY(r->status == CF_OK)) {
        if (value)
            *value = &r->result;
        return CF_OK;
    }
    if (failure)
        *failure = r->failure;
    return cf__fail(r->status, "map: %s: %s", cf_failure_type(r->failure),
                    cf_failure_message(r->failure));
}

/* Cancels and drops every future not yet yielded. */
static void cancel_rest(cf_map_iter *it)
{
    while (it->count) {
        cf_future *f = pop(it);
        if (cf_future_cancel(f) || cf_future_done(f))
            cf_future_release(f); /* counted in full already */
        else
            keep_running(it, f);
    }
}

CF__API void cf_map_close(cf_map_iter *it)
{
    if (!it)
        return;
    cancel_rest(it);
    if (it->chunks) {
        drop_chunks(it);
        free(it->chunks);
    }
    /* Running on: each holds the counts until it ends.  Out of memory for
     * the callback, the counts are kept for good instead. */
    for (size_t i = 0; i < it->nleft; i++) {
        atomic_fetch_add_explicit(&it->mc->holds, 1, memory_order_relaxed);
        if (cf_future_add_done_callback(it->left[i], counts_drop_cb, it->mc) != CF_OK) {
            atomic_fetch_sub_explicit(&it->mc->holds, 1, memory_order_relaxed);
            it->counts_pinned = true;
        }
        cf_future_release(it->left[i]);
    }
    free(it->left);
    if (!it->counts_pinned)
        counts_drop(it->mc);
    if (it->current)
        cf_future_release(it->current);
    if (it->ex)
        cf__executor_unref(it->ex);
    free(it->ring);
    free(it->inputs);
    free(it->pos);
    free(it->tuple);
    if (it->held)
        for (size_t i = 0; i < it->ninputs; i++)
            free(it->held[i].buf);
    free(it->held);
    free(it->chunk);
    free(it);
}

CF__API int cf_map(cf_executor *ex, cf_task_fn *fn, const cf_map_input *inputs, size_t ninputs,
                   const cf_map_options *opts, cf_map_iter **out)
{
    if (!out)
        return cf__fail(CF_EINVAL, "map: out is NULL");
    *out = NULL;
    if (!cf__executor_live(ex) || !fn)
        return cf__fail(CF_EINVAL, "map: %s", !ex ? "executor is NULL" : !fn ? "fn is NULL"
                                                                           : "executor is not live");
    if (ninputs == 0 || !inputs)
        return cf__fail(CF_EINVAL, "map: at least one input is required");
    if (ninputs > CF_ARGS_MAX)
        return cf__fail(CF_EINVAL, "map: %zu inputs, more than CF_ARGS_MAX (%d)", ninputs,
                        CF_ARGS_MAX);
    for (size_t i = 0; i < ninputs; i++)
        if (!inputs[i].next && !inputs[i].values && inputs[i].count > 0)
            return cf__fail(CF_EINVAL, "map: input %zu has neither values nor a generator", i);
    cf_map_options defaults;
    if (!opts) {
        cf_map_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->chunksize < 1)
        return cf__fail(CF_EINVAL, "map: chunksize must be >= 1, got %d", opts->chunksize);
    int64_t deadline;
    int rc = cf__deadline(opts->timeout, &deadline, "map");
    if (rc == CF_OK)
        rc = cf__check_priority(ex, opts->priority, "map");
    if (rc != CF_OK)
        return rc;

    cf_map_iter *it = calloc(1, sizeof *it);
    if (!it)
        return cf__fail(CF_ENOMEM, "map: out of memory");
    it->mc = malloc(sizeof *it->mc);
    if (!it->mc) {
        free(it);
        return cf__fail(CF_ENOMEM, "map: out of memory");
    }
    cf__counts_init(&it->mc->counts);
    atomic_init(&it->mc->holds, 1);
    it->inputs = malloc(ninputs * sizeof *it->inputs);
    it->pos = calloc(ninputs, sizeof *it->pos);
    it->tuple = calloc(ninputs, sizeof *it->tuple);
    it->held = calloc(ninputs, sizeof *it->held);
    it->chunksize = (size_t)opts->chunksize;
    if (!it->inputs || !it->pos || !it->tuple || !it->held) {
        cf_map_close(it);
        return cf__fail(CF_ENOMEM, "map: out of memory");
    }
    memcpy(it->inputs, inputs, ninputs * sizeof *inputs);
    /* Keep the executor's memory: a lazy map submits from cf_map_next(),
     * possibly after the owner destroyed the executor. */
    cf__executor_ref(ex);
    it->ex = ex;
    it->fn = fn;
    it->ninputs = ninputs;
    it->deadline = deadline;
    it->buffersize = opts->buffersize;
    it->priority = opts->priority;

    size_t limit = it->buffersize ? it->buffersize : SIZE_MAX;
    /* An eager map over arrays alone knows how many calls it will hold:
     * one ring of that size, instead of doubling it with a copy each time
     * (with the copies, glibc gave the memory back and faulted it in
     * again on every map: about 30 % of the CPU time of a chunked map of
     * 200,000 tiny calls on a thread pool). */
    size_t known = SIZE_MAX;
    for (size_t i = 0; i < ninputs; i++)
        known = inputs[i].next ? 0 : inputs[i].count < known ? inputs[i].count : known;
    if (use_chunks(it, known)) {
        it->chunked = true;
        size_t nch = known / it->chunksize + (known % it->chunksize != 0);
        it->chunks = calloc(nch, sizeof *it->chunks);
        if (!it->chunks) {
            cf_map_close(it);
            return cf__fail(CF_ENOMEM, "map: out of memory");
        }
        while ((rc = submit_next_chunk(it, known)) > 0)
            ;
        if (rc < 0) {
            cf_map_close(it);
            return rc;
        }
        it->exhausted = true;
        *out = it;
        return CF_OK;
    }
    if (!it->buffersize && known > 0 && known <= SIZE_MAX / 4 / sizeof(cf_future *) &&
        (rc = reserve(it, known)) != CF_OK) {
        cf_map_close(it);
        return rc;
    }
    /* On an engine that queues a chunk's calls one by one (the thread
     * pool: submit_many, no submit_batch), an eager map over arrays alone
     * hands its calls over in groups of at least MAP_GROUP: one lock and
     * one wake-up a group instead of a call (a map of 200,000 tiny calls
     * took 165-400 ns a call in ones, 105-165 ns in groups of 64, on 2
     * cores).  Nothing else changes: each call is still its own, taken
     * by any worker and cancellable until it begins; arrays cannot fail
     * halfway through a group, and no generator is waited for while the
     * workers could already run what it gave. */
    if (!it->buffersize && known > 0 && known != SIZE_MAX && ex->engine->submit_many &&
        !ex->engine->submit_batch && it->chunksize < MAP_GROUP)
        it->chunksize = MAP_GROUP;
    while (it->count < limit) {
        rc = submit_next(it);
        if (rc == 0) {
            it->exhausted = true;
            break;
        }
        if (rc < 0) {
            /* Nothing may be left running on behalf of a failed map. */
            cf_map_close(it);
            return rc;
        }
    }
    *out = it;
    return CF_OK;
}

CF__API int cf_map_next(cf_map_iter *it, const cf_value **value, const cf_failure **failure)
{
    if (value)
        *value = NULL;
    if (failure)
        *failure = NULL;
    if (!it)
        return cf__fail(CF_EINVAL, "map_next: iterator is NULL");
    if (it->current)
        cf_future_release(it->current);
    it->current = NULL;
    if (it->finished)
        return CF_EDONE;
    if (it->chunked)
        return chunk_next(it, value, failure);
    if (it->buffersize && !it->exhausted && it->count <= it->buffersize) {
        int rc = submit_next(it);
        if (rc <= 0) {
            it->exhausted = true;
            it->refill_err = rc;
        }
    }
    if (it->count == 0) {
        it->finished = true;
        if (it->refill_err < 0)
            return cf__fail(it->refill_err, "map: could not submit further calls: %s",
                            cf_strerror(it->refill_err));
        return CF_EDONE;
    }
    cf_future *f = pop(it);
    if (CF__LIKELY(cf__state_of(f) == CF_FINISHED && f->status == CF_OK)) {
        /* Done and succeeded (final; the acquire load makes the outcome
         * visible): what cf_future_result() would give, without its
         * timeout arithmetic. */
        it->current = f;
        if (value)
            *value = &f->result;
        return CF_OK;
    }
    double left;
    if (it->deadline == CF__NS_FOREVER) {
        left = CF_FOREVER;
    } else {
        int64_t ns = it->deadline - cf__now_ns();
        left = ns > 0 ? (double)ns / 1e9 : 0.0;
    }
    const cf_value *v;
    int rc = cf_future_result(f, left, &v);
    /* CF_ETIMEDOUT is also the outcome of a call that overran its own
     * timeout (a process pool's task_timeout): f is then done, and that is
     * this element's failure, not the end of the map.  (One done just
     * after the wait gave up: its outcome, read again, is as good.) */
    bool map_timeout = false;
    if (rc == CF_ETIMEDOUT) {
        if (cf_future_done(f))
            rc = cf_future_result(f, 0, &v);
        else
            map_timeout = true;
    }
    if (map_timeout) {
        if (cf_future_cancel(f))
            cf_future_release(f);
        else
            keep_running(it, f);
        cancel_rest(it);
        it->finished = true;
        return cf__fail(CF_ETIMEDOUT, "map: result not available within the map's timeout");
    }
    it->current = f;
    if (rc == CF_OK) {
        if (value)
            *value = v;
    } else if (failure && rc != CF_ECANCELLED) {
        *failure = f->failure;
    }
    return rc;
}

CF__API int cf_map_progress(const cf_map_iter *it, cf_progress *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!it || !out)
        return cf__fail(CF_EINVAL, "map_progress: %s is NULL", !it ? "iterator" : "out");
    cf__counts_read(&it->mc->counts, out);
    return CF_OK;
}
