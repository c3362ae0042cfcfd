/* SPDX-License-Identifier: MIT */
/*
 * progress.c - counts of submitted, running and ended calls per executor
 * and per map, and cf_executor_progress() / cf_map_progress().
 *
 * Design notes
 * - Counting is engine-independent: the front end (executor.c, map.c)
 *   marks a call as counted right before the engine gets it and counts it
 *   as submitted once the engine accepted it, and future.c counts every
 *   state change of a counted future before the change shows (so whoever
 *   saw a future end also sees it counted): under the future's lock, or,
 *   when a call ends without the lock (future.c, "Lock-free completion"),
 *   in the thread that ran it, before its release CAS of the state.  An
 *   engine, MPI's included, does nothing.
 * - A future counts in its owner executor (`counted`; the owner outlives
 *   the future's calls, see struct cf_future) and, for a map's calls, in
 *   the iterator's counts too (`in_map`, `user_data` pointing at them).
 *   Those counts are a block that the iterator and, once it is closed,
 *   each of its calls still running hold (map.c), so a call never
 *   touches freed counts.
 * - The counts of begun and ended calls are sharded by thread (a reader
 *   sums the shards and derives `running`); the shards, the orderings, and
 *   what a reader can rely on, are written next to struct cf__counts
 *   (internal.h).
 * - The progress callback runs on a timer thread of its own ("ticker"),
 *   one per executor that has a callback, started by the first
 *   cf_executor_set_progress_callback() and joined by clearing it or by
 *   cf_executor_destroy().  Workers never touch it: the ticker only reads
 *   the counts.  Each tick it takes a snapshot and calls the callback if
 *   the snapshot changed since the last call (or the callback is new), so
 *   calls are at least `interval` apart, and the change that ends the last
 *   call is reported within one interval.  Destroy asks for one final look
 *   after the executor's calls have all ended.
 * - The progress bar is a plain formatter with a lock of its own (its
 *   updates may come from the timer thread and its end from another);
 *   it knows nothing of executors.
 * - Lock order: ex->ticker_mu (guards ex->ticker, taken only by set/clear/
 *   destroy from other threads) -> t->mu (guards the ticker's fields).
 *   Neither is held while the callback runs.  The callback's own thread
 *   never takes ticker_mu (another thread may hold it while waiting for
 *   that very call to return): a set or clear from inside the callback
 *   goes straight to its ticker under t->mu.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void cf__counts_init(cf__counts *c)
{
    memset(c, 0, sizeof *c);
    atomic_init(&c->reported, 0);
    for (int i = 0; i < CF__COUNT_SHARDS; i++) {
        atomic_init(&c->shard[i].started, 0);
        atomic_init(&c->shard[i].submitted, 0);
        for (int r = 0; r < 2; r++)
            for (int k = 0; k < 3; k++)
                atomic_init(&c->shard[i].ended[r][k], 0);
    }
}

/* Owned shards (see "Shards" in internal.h).  Bit i of `owned_shards`:
 * shard i has an owner thread.  A thread takes a bit with an acquire CAS
 * (it then sees the previous owner's last counts, released with the
 * bit) and gives it back from its key destructor, at exit.  `my_shard`
 * is the thread's shard + 1 (0 until it first counts).  A thread that
 * forks: the child keeps its own shard; the bits of the threads that did
 * not come along stay taken there, and the child's later threads use the
 * shared shards instead.  `next_shared` spreads the threads without an
 * owned shard over the shared ones (relaxed: only a spreading hint). */
static _Atomic uint32_t owned_shards;
static _Atomic unsigned next_shared;
static _Thread_local CF__TLS_HOT unsigned my_shard;
static pthread_key_t shard_key;
static pthread_once_t shard_once = PTHREAD_ONCE_INIT;
static bool shard_key_ok;

_Static_assert(CF__COUNT_OWNED <= 31 && CF__COUNT_OWNED < CF__COUNT_SHARDS,
               "owned shards fit the mask, and at least one is shared");

static unsigned shard_shared(void)
{
    return CF__COUNT_OWNED + atomic_fetch_add_explicit(&next_shared, 1, memory_order_relaxed) %
                                 (CF__COUNT_SHARDS - CF__COUNT_OWNED);
}

/* The exiting thread's key destructor: gives its shard back.  It may still
 * count afterwards (another destructor releasing a future): in a shared
 * shard then. */
static void shard_give_back(void *arg)
{
    unsigned s = (unsigned)(uintptr_t)arg - 1;
    my_shard = shard_shared() + 1;
    atomic_fetch_and_explicit(&owned_shards, ~(UINT32_C(1) << s), memory_order_release);
}

static void shard_key_make(void)
{
    shard_key_ok = pthread_key_create(&shard_key, shard_give_back) == 0;
}

static unsigned shard_claim(void)
{
    if (pthread_once(&shard_once, shard_key_make) != 0 || !shard_key_ok)
        return shard_shared();
    uint32_t all = (UINT32_C(1) << CF__COUNT_OWNED) - 1;
    uint32_t m = atomic_load_explicit(&owned_shards, memory_order_relaxed);
    while ((m & all) != all) {
        unsigned i = (unsigned)__builtin_ctz(~m & all);
        uint32_t bit = UINT32_C(1) << i;
        if (!atomic_compare_exchange_weak_explicit(&owned_shards, &m, m | bit,
                                                   memory_order_acquire, memory_order_relaxed))
            continue;
        if (pthread_setspecific(shard_key, (void *)(uintptr_t)(i + 1)) != 0) {
            /* No destructor would give it back: do not keep it. */
            atomic_fetch_and_explicit(&owned_shards, ~bit, memory_order_release);
            return shard_shared();
        }
        return i;
    }
    return shard_shared();
}

unsigned cf__count_shard_ix(void)
{
    unsigned s = my_shard;
    if (CF__UNLIKELY(s == 0)) {
        s = shard_claim() + 1;
        my_shard = s;
    }
    return s - 1;
}

void (*_Atomic cf__test_hook_counts_read)(void);

void cf__counts_read(cf__counts *c, cf_progress *out)
{
    /* Ended calls of every shard first, then started ones, then the ended
     * calls that had begun once more, then submitted: each acquire makes
     * visible the increments that came before the one it read (see struct
     * cf__counts, "Orderings", for why `running` needs the second look). */
    uint64_t ended[2][3] = {{0, 0, 0}, {0, 0, 0}}, started = 0, begun_ended = 0;
    for (int i = 0; i < CF__COUNT_SHARDS; i++)
        for (int r = 0; r < 2; r++)
            for (int k = 0; k < 3; k++)
                ended[r][k] +=
                    atomic_load_explicit(&c->shard[i].ended[r][k], memory_order_acquire);
    void (*hook)(void) = atomic_load_explicit(&cf__test_hook_counts_read, memory_order_relaxed);
    if (CF__UNLIKELY(hook != NULL))
        hook();
    for (int i = 0; i < CF__COUNT_SHARDS; i++)
        started += atomic_load_explicit(&c->shard[i].started, memory_order_acquire);
    for (int i = 0; i < CF__COUNT_SHARDS; i++)
        for (int k = 0; k < 3; k++)
            begun_ended += atomic_load_explicit(&c->shard[i].ended[1][k], memory_order_acquire);
    out->succeeded = ended[0][CF__COUNT_SUCCEEDED] + ended[1][CF__COUNT_SUCCEEDED];
    out->failed = ended[0][CF__COUNT_FAILED] + ended[1][CF__COUNT_FAILED];
    out->cancelled = ended[0][CF__COUNT_CANCELLED] + ended[1][CF__COUNT_CANCELLED];
    /* Begun by the read of `started` and not ended by the second read of
     * the ends: calls that were running between the two.  A call that
     * began after the first and ended before the second may make the
     * difference negative: it is then 0. */
    out->running = started > begun_ended ? started - begun_ended : 0;
    out->submitted = 0;
    for (int i = 0; i < CF__COUNT_SHARDS; i++)
        out->submitted += atomic_load_explicit(&c->shard[i].submitted, memory_order_relaxed);
    /* A call may end before its submit is counted (see struct cf__counts). */
    uint64_t seen = cf_progress_ended(out) + out->running;
    if (out->submitted < seen)
        out->submitted = seen;
    uint64_t hw = atomic_load_explicit(&c->reported, memory_order_relaxed);
    while (hw < out->submitted &&
           !atomic_compare_exchange_weak_explicit(&c->reported, &hw, out->submitted,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    if (hw > out->submitted)
        out->submitted = hw;
}

void cf__progress_mark(cf_future *f)
{
    f->counted = true;
}

void cf__progress_map_mark(cf__counts *c, cf_future *f)
{
    /* The counts outlive every call that can still count in them (map.c),
     * so the call may start and end lock-free. */
    f->in_map = true;
    atomic_store_explicit(&f->user_data, c, memory_order_relaxed);
}

void cf__progress_unmark(cf_future *f)
{
    cf__lock_acquire(&f->lock);
    /* Refused, so it never ran and never will; one the engine ended
     * before refusing it keeps its ending counted. */
    if (!cf__state_done(cf__state_of(f)))
        f->counted = f->in_map = false;
    cf__lock_release(&f->lock);
}

CF__API int cf_executor_progress(const cf_executor *ex, cf_progress *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!cf__executor_live(ex) || !out)
        return cf__fail(CF_EINVAL, "executor_progress: %s",
                        !ex ? "executor is NULL" : !out ? "out is NULL" : "not a live executor");
    cf__counts_read((cf__counts *)&ex->counts, out);
    return CF_OK;
}

/* ---- the progress callback's timer thread -------------------------------- */

struct cf__ticker {
    pthread_mutex_t mu;
    /* Bumped (with `mu` held, then woken) by every change a sleeper here
     * waits for: set/clear/destroy, and the end of each call.  A futex word
     * (posix/: the portable build emulates it), so the sleeps take an
     * absolute monotonic deadline everywhere. */
    _Atomic uint32_t seq;
    pthread_t thread;          /* constant once started */
    cf_executor *ex;           /* outlives the ticker (destroy joins it) */
    /* Guarded by `mu`: */
    cf_progress_fn *fn;
    void *arg;
    int64_t interval_ns;
    unsigned gen;              /* bumped by every set: a new callback */
    unsigned calling_gen;      /* gen of the call in progress, if `calling` */
    bool calling;              /* the thread is inside fn (mu dropped) */
    bool stop;                 /* leave the loop */
    bool closing;              /* another thread is joining it: a set from
                                * inside the callback can no longer undo
                                * `stop` */
    bool final_look;           /* before leaving, report a last change */
    bool exited;               /* the thread has left the loop */
};

static bool progress_equal(const cf_progress *a, const cf_progress *b)
{
    return a->submitted == b->submitted && a->running == b->running &&
           a->succeeded == b->succeeded && a->failed == b->failed &&
           a->cancelled == b->cancelled;
}

/* Wakes every sleeper on t->seq after a change made under `mu` (held). */
static void bump(struct cf__ticker *t)
{
    atomic_fetch_add_explicit(&t->seq, 1, memory_order_release);
    cf__futex_wake(&t->seq, INT_MAX);
}

/* Sleeps until t->seq moves or the deadline; mu held on entry and exit.
 * The caller re-checks its condition (spurious returns are allowed). */
static void sleep_on(struct cf__ticker *t, int64_t deadline_ns)
{
    uint32_t seen = atomic_load_explicit(&t->seq, memory_order_acquire);
    pthread_mutex_unlock(&t->mu);
    cf__futex_wait(&t->seq, seen, deadline_ns);
    pthread_mutex_lock(&t->mu);
}

/* Calls the callback with `mu` dropped if the counts changed since the
 * last call or the callback is new.  mu held on entry and exit. */
static void tick(struct cf__ticker *t, cf_progress *last, unsigned *last_gen)
{
    cf_progress p;
    cf__counts_read(&t->ex->counts, &p);
    if (t->gen == *last_gen && progress_equal(&p, last))
        return;
    cf_progress_fn *fn = t->fn;
    void *arg = t->arg;
    unsigned gen = t->gen;
    t->calling = true;
    t->calling_gen = gen;
    pthread_mutex_unlock(&t->mu);
    fn(arg, &p);
    pthread_mutex_lock(&t->mu);
    t->calling = false;
    bump(t); /* set/clear may wait for this call */
    *last = p;
    *last_gen = gen;
}

/* The ticker whose thread this is (NULL on every other thread). */
static _Thread_local struct cf__ticker *this_ticker;

static void *ticker_main(void *arg)
{
    struct cf__ticker *t = arg;
    this_ticker = t;
    cf__set_thread_name("cfutures-progress");
    cf_progress last;
    memset(&last, 0, sizeof last);
    unsigned last_gen = 0;
    pthread_mutex_lock(&t->mu);
    int64_t next = cf__now_ns();
    /* Liveness: the thread sleeps on `seq` until the next tick's deadline
     * or until a set/clear/destroy, which changes gen/stop under `mu` and
     * then bumps `seq` and wakes it; `seq` is read under `mu` before the
     * sleep, so a change made after the check makes the sleep return at
     * once.  A stop is seen at once and a tick is never late.  Nothing
     * else is waited for here: a worker never wakes it.  A callback set
     * since the last call (gen moved) is due at once, whatever is left of
     * the interval of the one it replaced; its own interval counts from
     * that call. */
    while (!t->stop) {
        int64_t now = cf__now_ns();
        if (now < next && t->gen == last_gen) {
            sleep_on(t, next);
            continue;
        }
        tick(t, &last, &last_gen);
        next = now + t->interval_ns;
    }
    if (t->final_look && t->fn)
        tick(t, &last, &last_gen);
    t->exited = true;
    pthread_mutex_unlock(&t->mu);
    cf__set_thread_name(NULL);
    return NULL;
}

static struct cf__ticker *ticker_new(cf_executor *ex)
{
    struct cf__ticker *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    atomic_init(&t->seq, 0);
    t->ex = ex;
    return t;
}

static void ticker_free(struct cf__ticker *t)
{
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* Waits until the callback is not running a call of a callback older than
 * `gen`.  t->mu held; not on the ticker's thread. */
static void wait_calls_before(struct cf__ticker *t, unsigned gen)
{
    /* Liveness: the ticker bumps `seq` when each call returns. */
    while (t->calling && t->calling_gen != gen)
        sleep_on(t, CF__NS_FOREVER);
}

/* Stops the ticker of `ex`, joins and frees it.  ticker_mu held; not on
 * the ticker's own thread. */
static void ticker_stop_locked(cf_executor *ex, bool final_look)
{
    struct cf__ticker *t = ex->ticker;
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    t->closing = true;
    t->final_look = final_look;
    bump(t);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    ticker_free(t);
    ex->ticker = NULL;
}

CF__API int cf_executor_set_progress_callback(cf_executor *ex, cf_progress_fn *fn, void *arg,
                                              int interval_ms)
{
    static const char who[] = "executor_set_progress_callback";
    if (!cf__executor_live(ex))
        return cf__fail(CF_EINVAL, "%s: %s", who,
                        !ex ? "executor is NULL" : "not a live executor");
    if (fn && interval_ms < 1)
        return cf__fail(CF_EINVAL, "%s: interval_ms must be >= 1, got %d", who, interval_ms);
    if (cf__executor_inherited(ex))
        return cf__fail(CF_EBROKEN, "%s: executor was inherited through fork()", who);
    struct cf__ticker *self = this_ticker;
    if (self && self->ex == ex) {
        /* From inside the callback: its ticker exists and stays while this
         * call lasts.  A clear leaves after this call; a set takes effect
         * for the next one - unless another thread is stopping the
         * ticker, which then wins. */
        pthread_mutex_lock(&self->mu);
        if (!self->closing) {
            if (!fn) {
                self->stop = true;
                self->fn = NULL; /* no final look either */
            } else {
                self->fn = fn;
                self->arg = arg;
                self->interval_ns = (int64_t)interval_ms * 1000000;
                self->gen++;
                self->stop = false;
            }
        }
        pthread_mutex_unlock(&self->mu);
        return CF_OK;
    }
    pthread_mutex_lock(&ex->ticker_mu);
    if (atomic_load(&ex->destroyed)) {
        /* destroy stops the ticker after setting `destroyed`, under this
         * lock: none may start behind it. */
        pthread_mutex_unlock(&ex->ticker_mu);
        return cf__fail(CF_EINVAL, "%s: executor was destroyed", who);
    }
    struct cf__ticker *t = ex->ticker;
    if (!fn) {
        ticker_stop_locked(ex, false);
        pthread_mutex_unlock(&ex->ticker_mu);
        return CF_OK;
    }
    if (t) {
        pthread_mutex_lock(&t->mu);
        bool stopped = t->stop;
        pthread_mutex_unlock(&t->mu);
        if (stopped) {
            /* Cleared from inside its callback earlier: collect it. */
            ticker_stop_locked(ex, false);
            t = NULL;
        }
    }
    if (t) {
        pthread_mutex_lock(&t->mu);
        t->fn = fn;
        t->arg = arg;
        t->interval_ns = (int64_t)interval_ms * 1000000;
        t->gen++;
        bump(t);
        wait_calls_before(t, t->gen);
        pthread_mutex_unlock(&t->mu);
        pthread_mutex_unlock(&ex->ticker_mu);
        return CF_OK;
    }
    t = ticker_new(ex);
    if (!t) {
        pthread_mutex_unlock(&ex->ticker_mu);
        return cf__fail(CF_ENOMEM, "%s: out of memory", who);
    }
    t->fn = fn;
    t->arg = arg;
    t->interval_ns = (int64_t)interval_ms * 1000000;
    t->gen = 1;
    int rc = cf__thread_start(&t->thread, ticker_main, t);
    if (rc != 0) {
        ticker_free(t);
        pthread_mutex_unlock(&ex->ticker_mu);
        return cf__fail(rc == EAGAIN || rc == ENOMEM ? CF_ENOMEM : CF_ESYS,
                        "%s: cannot start the timer thread: %s", who, strerror(rc));
    }
    ex->ticker = t;
    pthread_mutex_unlock(&ex->ticker_mu);
    return CF_OK;
}

bool cf__progress_on_ticker(cf_executor *ex)
{
    return this_ticker && this_ticker->ex == ex;
}

void cf__progress_end(cf_executor *ex)
{
    pthread_mutex_lock(&ex->ticker_mu);
    ticker_stop_locked(ex, true);
    pthread_mutex_unlock(&ex->ticker_mu);
}

/* ---- the progress bar ------------------------------------------------------ */

#define BAR_WIDTH 24
#define BAR_TTY_NS (100 * 1000000LL)      /* redraws on a terminal */
#define BAR_LINE_NS (5 * 1000000000LL)    /* plain lines otherwise */

struct cf_progress_bar {
    pthread_mutex_t mu;          /* guards everything below */
    char *label;                 /* owned; "" for none */
    uint64_t total;              /* 0: the snapshot's `submitted` */
    bool tty;                    /* stderr was a terminal at creation */
    int64_t start_ns;
    int64_t last_draw_ns;        /* 0: never drawn */
    cf_progress last;            /* the latest snapshot given */
    bool have_last;
};

CF__API int cf_progress_bar_new(cf_progress_bar **out, const char *label, uint64_t total)
{
    if (!out)
        return cf__fail(CF_EINVAL, "progress_bar_new: out is NULL");
    *out = NULL;
    if (label && strlen(label) > 256)
        return cf__fail(CF_EINVAL, "progress_bar_new: label longer than 256 bytes");
    cf_progress_bar *b = calloc(1, sizeof *b);
    char *copy = strdup(label ? label : "");
    if (!b || !copy) {
        free(b);
        free(copy);
        return cf__fail(CF_ENOMEM, "progress_bar_new: out of memory");
    }
    pthread_mutex_init(&b->mu, NULL);
    b->label = copy;
    b->total = total;
    b->tty = isatty(STDERR_FILENO) == 1;
    b->start_ns = cf__now_ns();
    *out = b;
    return CF_OK;
}

/* "1:02:03", "02:03" or "--:--". */
static void fmt_duration(char *buf, size_t size, double s)
{
    if (!(s >= 0) || s > 359999) {
        snprintf(buf, size, "--:--");
        return;
    }
    unsigned long t = (unsigned long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, size, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, size, "%02lu:%02lu", t / 60, t % 60);
}

/* floor(part * scale / whole), for part < whole, without the overflow of
 * part * scale (counts up to 2^64 - 1 are accepted). */
static uint64_t share_of(uint64_t part, uint64_t whole, uint64_t scale)
{
#ifdef __SIZEOF_INT128__
    __extension__ typedef unsigned __int128 wide;
    return (uint64_t)((wide)part * scale / whole);
#else
    if (part <= UINT64_MAX / scale)
        return part * scale / whole;
    /* Rounded: below scale, since part < whole, even where long double
     * is a double. */
    uint64_t r = (uint64_t)((long double)part / (long double)whole * (long double)scale);
    return r < scale ? r : scale - 1;
#endif
}

/* Writes the bar for b->last; bar lock held. */
static void bar_draw(cf_progress_bar *b, int64_t now, bool final)
{
    const cf_progress *p = &b->last;
    uint64_t total = b->total ? b->total : p->submitted;
    uint64_t ended = cf_progress_ended(p);
    double elapsed = (double)(now - b->start_ns) / 1e9;
    double rate = elapsed > 0 ? (double)ended / elapsed : 0;
    char eta[32], took[32], fails[64] = "";
    fmt_duration(took, sizeof took, elapsed);
    fmt_duration(eta, sizeof eta,
                 ended >= total ? 0 : rate > 0 ? (double)(total - ended) / rate : -1);
    /* Each count only when there are any: ", 2 failed", ", 6 cancelled". */
    int nf = 0;
    if (p->failed)
        nf = snprintf(fails, sizeof fails, ", %llu failed", (unsigned long long)p->failed);
    if (p->cancelled)
        snprintf(fails + nf, sizeof fails - (size_t)nf, ", %llu cancelled",
                 (unsigned long long)p->cancelled);
    unsigned pct = total ? (unsigned)(ended >= total ? 100 : share_of(ended, total, 100)) : 0;
    const char *sep = b->label[0] ? ": " : "";
    char line[512];
    if (b->tty) {
        char bar[BAR_WIDTH + 1];
        size_t fill =
            total ? (size_t)(ended >= total ? BAR_WIDTH : share_of(ended, total, BAR_WIDTH)) : 0;
        for (size_t i = 0; i < BAR_WIDTH; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[BAR_WIDTH] = '\0';
        /* \r back to the start, \033[K clears what a longer line left. */
        snprintf(line, sizeof line, "\r%s%s%3u%% [%s] %llu/%llu %s<%s %.1f/s%s\033[K%s",
                 b->label, sep, pct, bar, (unsigned long long)ended,
                 (unsigned long long)total, took, eta, rate, fails, final ? "\n" : "");
    } else {
        snprintf(line, sizeof line, "%s%s%llu/%llu (%u%%) in %s, %.1f/s, ETA %s%s\n", b->label,
                 sep, (unsigned long long)ended, (unsigned long long)total, pct, took, rate,
                 eta, fails);
    }
    fputs(line, stderr);
    fflush(stderr);
    b->last_draw_ns = now;
}

CF__API void cf_progress_bar_update(cf_progress_bar *bar, const cf_progress *p)
{
    if (!bar || !p)
        return;
    int64_t now = cf__now_ns();
    pthread_mutex_lock(&bar->mu);
    bar->last = *p;
    bar->have_last = true;
    int64_t since = now - (bar->last_draw_ns ? bar->last_draw_ns : bar->start_ns);
    if (bar->tty ? (!bar->last_draw_ns || since >= BAR_TTY_NS) : since >= BAR_LINE_NS)
        bar_draw(bar, now, false);
    pthread_mutex_unlock(&bar->mu);
}

CF__API void cf_progress_bar_callback(void *bar, const cf_progress *p)
{
    cf_progress_bar_update(bar, p);
}

CF__API void cf_progress_bar_finish(cf_progress_bar *bar, const cf_progress *p)
{
    if (!bar)
        return;
    pthread_mutex_lock(&bar->mu);
    if (p) {
        bar->last = *p;
        bar->have_last = true;
    }
    if (bar->have_last)
        bar_draw(bar, cf__now_ns(), true);
    pthread_mutex_unlock(&bar->mu);
    pthread_mutex_destroy(&bar->mu);
    free(bar->label);
    free(bar);
}
