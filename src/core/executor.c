/* SPDX-License-Identifier: MIT */
/*
 * executor.c - the engine-independent executor front: submit, shutdown,
 * destroy, the process-wide registry, and fork/exit handling.
 *
 * Design notes
 * - submit() validates and copies the arguments into one allocation with
 *   the future (one malloc per call), then hands the future to the engine
 *   through its operation table (internal.h).  Engines never see bad input.
 * - The registry is a list of live executors, guarded by `registry_mu`.
 *   It exists for the exit handler: as in Python, the program does not end
 *   until pending calls are done, so at exit every executor that was not
 *   destroyed is shut down with wait (skipping the executor whose worker
 *   called exit(), which cannot join itself).
 * - fork(): a child inherits executors whose threads exist only in the
 *   parent, and whose locks another parent thread may have held at the
 *   moment of fork.  The child handler bumps cf__fork_generation; the
 *   front refuses to touch an executor from an older generation (submit
 *   says CF_EBROKEN, shutdown and destroy only forget it), and the exit
 *   handler skips them, so a child never blocks on the parent's state.
 *   `registry_mu` itself is taken around fork() (pthread_atfork) so the
 *   child gets it in a consistent, unlocked state.
 * - Executor lifetime: `refs` counts the owner, the exit handler while it
 *   works on the executor, and every map iterator (which may still submit
 *   lazily after the owner destroyed it: it then gets CF_ESHUTDOWN).  The
 *   memory goes with the last reference.  `destroyed` marks the owner's
 *   reference as gone, which makes a second destroy a detected error.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

_Atomic unsigned cf__fork_generation;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static cf_executor *registry_head; /* guarded by registry_mu */
static pthread_once_t runtime_once = PTHREAD_ONCE_INIT;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/* The process-wide locks (the registry and the log hook) are taken
 * around fork(), so the child never inherits one held by a thread that
 * does not exist there.  Per-object locks (a future's, a pool's) are not:
 * a child must not use futures or executors that parent threads were
 * working on (see cf_submit's CF_EBROKEN for inherited executors). */
_Thread_local bool cf__forking_worker;

/* cf__fork_count is odd from just before fork() until the parent handler
 * runs: a result buffer freed in that window is not reused either (the
 * child's copy of memory may still be taken from it).  The pool's own
 * CF_START_FORK workers never read futures, so their forks do not count. */
static void bump_fork_count(void)
{
    if (!cf__forking_worker)
        atomic_fetch_add_explicit(&cf__fork_count, 1, memory_order_seq_cst);
}

static void atfork_prepare(void)
{
    bump_fork_count();
    pthread_mutex_lock(&registry_mu);
    cf__log_lock_for_fork(true);
}

static void atfork_parent(void)
{
    bump_fork_count();
    cf__log_lock_for_fork(false);
    pthread_mutex_unlock(&registry_mu);
}

static void atfork_child(void)
{
    /* Only this thread exists now; re-create the mutex rather than unlock
     * it, which keeps the child independent of how it was held. */
    cf__log_fork_child();
    pthread_mutex_init(&registry_mu, NULL);
    atomic_fetch_add_explicit(&cf__fork_generation, 1, memory_order_relaxed);
    bump_fork_count();
}

static void exit_handler(void)
{
    /* Collect the executors to finish under the lock, but wait for them
     * outside it: a task may still create or destroy executors. */
    pthread_mutex_lock(&registry_mu);
    size_t n = 0;
    for (cf_executor *ex = registry_head; ex; ex = ex->reg_next)
        n++;
    cf_executor **list = n ? malloc(n * sizeof *list) : NULL;
    if (n && !list)
        cf__log("exit: out of memory; not waiting for the calls of %zu executor(s)", n);
    size_t k = 0;
    for (cf_executor *ex = registry_head; ex && list; ex = ex->reg_next) {
        if (cf__executor_inherited(ex) || atomic_load(&ex->destroyed))
            continue;
        if (ex->engine->is_worker(ex))
            continue; /* exit() was called from this pool's task */
        /* Take a reference only while one still exists: the owner may be
         * dropping the last one right now (it then waits for registry_mu
         * to unlink the executor, and frees it after we let go). */
        uint32_t r = atomic_load(&ex->refs);
        while (r != 0 && !atomic_compare_exchange_weak(&ex->refs, &r, r + 1))
            ;
        if (r == 0)
            continue;
        list[k++] = ex;
    }
    pthread_mutex_unlock(&registry_mu);
    for (size_t i = 0; i < k; i++) {
        list[i]->engine->shutdown(list[i], true, false);
        /* The progress callback's last call, and no more while the
         * process ends (unless exit() was called from it). */
        if (!cf__progress_on_ticker(list[i]))
            cf__progress_end(list[i]);
        cf__executor_unref(list[i]);
    }
    free(list);
}

static void fork_init_once(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void runtime_init_once(void)
{
    cf__fork_init();
    atexit(exit_handler);
}

void cf__fork_init(void)
{
    pthread_once(&fork_once, fork_init_once);
}

void cf__runtime_init(void)
{
    pthread_once(&runtime_once, runtime_init_once);
}

void cf__executor_register(cf_executor *ex, const cf__engine *engine)
{
    cf__runtime_init();
    ex->magic = CF__EXECUTOR_MAGIC;
    ex->engine = engine;
    ex->generation = atomic_load_explicit(&cf__fork_generation, memory_order_relaxed);
    atomic_init(&ex->refs, 1);
    atomic_init(&ex->destroyed, false);
    cf__counts_init(&ex->counts);
    pthread_mutex_init(&ex->ticker_mu, NULL);
    ex->ticker = NULL;
    ex->bound.max = 0;
    atomic_init(&ex->bound.queued, 0);
    atomic_init(&ex->bound.seq, 0);
    atomic_init(&ex->bound.waiters, 0);
    atomic_init(&ex->bound.closed, false);
    atomic_init(&ex->bound.close_status, 0);
    pthread_mutex_lock(&registry_mu);
    ex->reg_prev = NULL;
    ex->reg_next = registry_head;
    if (registry_head)
        registry_head->reg_prev = ex;
    registry_head = ex;
    pthread_mutex_unlock(&registry_mu);
}

void cf__executor_ref(cf_executor *ex)
{
    atomic_fetch_add_explicit(&ex->refs, 1, memory_order_relaxed);
}

void cf__executor_unref(cf_executor *ex)
{
    if (atomic_fetch_sub_explicit(&ex->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&registry_mu);
    if (ex->reg_prev)
        ex->reg_prev->reg_next = ex->reg_next;
    else
        registry_head = ex->reg_next;
    if (ex->reg_next)
        ex->reg_next->reg_prev = ex->reg_prev;
    pthread_mutex_unlock(&registry_mu);
    ex->magic = 0;
    pthread_mutex_destroy(&ex->ticker_mu); /* cf__progress_end() left no ticker */
    ex->engine->destroy(ex);
}

/* ---- backpressure: the bound on queued calls --------------------------- */

int cf__bound_acquire(cf_executor *ex, size_t n, int64_t deadline_ns, const char *who,
                      bool *took, bool *ref)
{
    cf__bound *b = &ex->bound;
    *took = *ref = false;
    if (b->max == 0)
        return CF_OK;
    if (n > b->max)
        return cf__fail(CF_EFULL, "%s: %zu calls at once can never fit in the executor's queue "
                                  "(max_queued %zu)", who, n, b->max);
    bool worker = ex->engine->is_worker(ex);
    for (;;) {
        /* seq before the checks below: a release or close after them
         * bumps it, so the futex wait below returns at once. */
        uint32_t seen = atomic_load(&b->seq);
        if (atomic_load(&b->closed)) {
            if (!*ref)
                return CF_OK; /* the engine refuses: shut down or broken */
            /* Closed while we waited: the owner may be destroying the
             * executor, so say it here and let go of it. */
            int status = b->close_status;
            int rc = cf__fail(status, "%s: the executor %s while the call waited for room "
                                      "in its queue",
                              who, status == CF_ESHUTDOWN ? "shut down" : "broke");
            *ref = false;
            cf__executor_unref(ex);
            return rc;
        }
        size_t q = atomic_load(&b->queued);
        while (q + n <= b->max) {
            if (atomic_compare_exchange_weak(&b->queued, &q, q + n)) {
                *took = true;
                return CF_OK;
            }
        }
        if (worker)
            return cf__fail(CF_EFULL, "%s: the executor's queue is full (max_queued %zu), and "
                                      "a worker of the executor does not wait for room",
                            who, b->max);
        if (deadline_ns != CF__NS_FOREVER && cf__now_ns() >= deadline_ns) {
            int rc = cf__fail(CF_EFULL, "%s: the executor's queue is full (max_queued %zu)",
                              who, b->max);
            if (*ref) {
                *ref = false;
                cf__executor_unref(ex);
            }
            return rc;
        }
        /* A waiter keeps the executor's memory (the owner may destroy it
         * meanwhile: the close then wakes us) until its call is handed to
         * the engine or given up. */
        if (!*ref) {
            cf__executor_ref(ex);
            *ref = true;
        }
        /* Liveness: room comes from cf__bound_release() (a worker took a
         * call, a queued call was cancelled, the engine dropped calls), and
         * the end of waiting from cf__bound_close() (shutdown, breakage);
         * both bump `seq` and wake every waiter.  A release reads
         * `waiters` after it has lowered `queued` (both seq_cst), and we
         * raise `waiters` before we look at `queued` again, so either we
         * see the room or the release sees us and bumps `seq` after we
         * read it.  The deadline bounds the wait otherwise. */
        atomic_fetch_add(&b->waiters, 1);
        if (!atomic_load(&b->closed) && atomic_load(&b->queued) + n > b->max)
            cf__futex_wait(&b->seq, seen, deadline_ns);
        atomic_fetch_sub(&b->waiters, 1);
    }
}

void cf__bound_release(cf_executor *ex, size_t n)
{
    cf__bound *b = &ex->bound;
    atomic_fetch_sub(&b->queued, n); /* seq_cst: before the load of waiters */
    if (atomic_load(&b->waiters) != 0) {
        atomic_fetch_add(&b->seq, 1);
        cf__futex_wake(&b->seq, INT_MAX);
    }
}

void cf__bound_close(cf_executor *ex, int status)
{
    cf__bound *b = &ex->bound;
    if (b->max == 0 || atomic_load(&b->closed))
        return;
    /* Written once, before `closed` (seq_cst) publishes it: the first
     * close wins (callers hold the engine's lock or follow its shutdown
     * or broken flag, which is set once). */
    int expected = 0;
    atomic_compare_exchange_strong(&b->close_status, &expected, status);
    atomic_store(&b->closed, true);
    atomic_fetch_add(&b->seq, 1);
    cf__futex_wake(&b->seq, INT_MAX);
}

/* Takes slots for fs[0..n) (see cf__bound_acquire) and marks each call as
 * holding one.  *ref: see cf__bound_acquire. */
static int take_slots(cf_executor *ex, cf_future **fs, size_t n, int64_t deadline_ns,
                      const char *who, bool *ref)
{
    if (ex->bound.max == 0) { /* no bound: what cf__bound_acquire says, without the call */
        *ref = false;
        return CF_OK;
    }
    bool took;
    int rc = cf__bound_acquire(ex, n, deadline_ns, who, &took, ref);
    if (rc == CF_OK && took)
        for (size_t i = 0; i < n; i++)
            atomic_store_explicit(&fs[i]->slot, true, memory_order_relaxed);
    return rc;
}

/* Takes slots for between 1 and *n of fs[0..*n): waits for the first as
 * cf__bound_acquire does, then takes as many more as are free without
 * waiting, and sets *n to the number taken.  Leaves *n alone when there
 * is no bound or it is closed (the engine then refuses the calls).  *ref:
 * see cf__bound_acquire. */
static int take_some_slots(cf_executor *ex, cf_future **fs, size_t *n, int64_t deadline_ns,
                           const char *who, bool *ref)
{
    cf__bound *b = &ex->bound;
    bool took;
    int rc = cf__bound_acquire(ex, 1, deadline_ns, who, &took, ref);
    if (rc != CF_OK || !took)
        return rc;
    size_t got = 1;
    size_t q = atomic_load(&b->queued);
    while (got < *n && q < b->max) {
        size_t more = *n - got < b->max - q ? *n - got : b->max - q;
        if (atomic_compare_exchange_weak(&b->queued, &q, q + more))
            got += more;
    }
    *n = got;
    for (size_t i = 0; i < got; i++)
        atomic_store_explicit(&fs[i]->slot, true, memory_order_relaxed);
    return CF_OK;
}

int cf__check_priority(const cf_executor *ex, int priority, const char *who)
{
    if (priority == CF_PRIORITY_DEFAULT)
        return CF_OK;
    if (priority < CF_PRIORITY_MIN || priority > CF_PRIORITY_MAX)
        return cf__fail(CF_EINVAL, "%s: priority %d is out of range (%d to %d)", who, priority,
                        CF_PRIORITY_MIN, CF_PRIORITY_MAX);
    if (!ex->engine->orders_by_priority)
        return cf__fail(CF_ENOTSUP, "%s: the %s engine does not order calls by priority", who,
                        ex->engine->name);
    return CF_OK;
}

/* ---- submit -------------------------------------------------------------- */

/* What prepare_call() checks of a call apart from its argument values:
 * the same for every call of a map, so a map checks it once per chunk
 * (cf__check_calls). */
static int check_call(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                      const char *who)
{
    if (nargs > 0 && !args)
        return cf__fail(CF_EINVAL, "%s: args is NULL but nargs is %zu", who, nargs);
    if (nargs > CF_ARGS_MAX)
        return cf__fail(CF_EINVAL, "%s: %zu arguments, more than CF_ARGS_MAX (%d)", who, nargs,
                        CF_ARGS_MAX);
    if (cf__executor_inherited(ex))
        return cf__fail(CF_EBROKEN, "%s: executor was inherited through fork(); its workers "
                                    "do not exist in this process", who);
    if (ex->engine->copies_args && !cf_task_name(fn))
        return cf__fail(CF_ENOTCOPYABLE, "%s: the task function is not registered, so a %s "
                                         "pool cannot name it to its workers: %s",
                        who, ex->engine->name, cf__task_unregistered_hint(fn));
    return CF_OK;
}

/* Checks a call's argument values for `ex`.  `payload` is what the
 * caller sends (the limit applies to it); `extra` is what the copy needs,
 * including string terminators.  Each value is at most CF_PAYLOAD_MAX, so
 * neither sum can overflow. */
static int measure_call(const cf_executor *ex, const cf_value *args, size_t nargs,
                        const char *who, size_t *payload_out, size_t *extra_out)
{
    bool copying = ex->engine->copies_args;
    size_t payload = 0, extra = 0;
    for (size_t i = 0; i < nargs; i++) {
        int rc = cf__value_check(&args[i], copying, who, i);
        if (rc != CF_OK)
            return rc;
        if (args[i].kind == CF_BYTES || args[i].kind == CF_STR)
            payload += args[i].size;
        extra += cf__value_extra(&args[i]);
        if (payload > CF_PAYLOAD_MAX)
            return cf__fail(CF_ETOOBIG, "%s: arguments total %zu bytes, more than "
                                        "CF_PAYLOAD_MAX (%zu)",
                            who, payload, (size_t)CF_PAYLOAD_MAX);
    }
    *payload_out = payload;
    *extra_out = extra;
    return CF_OK;
}

/* prepare_call() once check_call() has passed for (ex, fn, nargs). */
static int prepare_checked(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                           int64_t timeout_ns, int priority, cf_future **out, const char *who)
{
    size_t payload, extra;
    int rc = measure_call(ex, args, nargs, who, &payload, &extra);
    if (rc != CF_OK)
        return rc;
    cf_future *f = NULL;
    if (ex->engine->new_call)
        f = ex->engine->new_call(ex, fn, args, nargs, payload);
    if (!f)
        f = cf__future_new_call(fn, args, nargs, extra);
    if (!f)
        return cf__fail(CF_ENOMEM, "%s: out of memory for the call", who);
    f->owner = ex;
    f->timeout_ns = timeout_ns;
    f->priority = priority;
    *out = f;
    return CF_OK;
}

/* Validates a call and copies it into a new future (one reference, not
 * yet handed to the engine).  `who` names the public function. */
static int prepare_call(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                        int64_t timeout_ns, int priority, cf_future **out, const char *who)
{
    int rc = check_call(ex, fn, args, nargs, who);
    return rc == CF_OK ? prepare_checked(ex, fn, args, nargs, timeout_ns, priority, out, who) : rc;
}

CF__API void cf_submit_options_init(cf_submit_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->timeout = CF_FOREVER;
    opts->priority = CF_PRIORITY_DEFAULT;
    opts->queue_timeout = CF_FOREVER;
}

void (*_Atomic cf__test_hook_submit_refused)(cf_executor *ex);

static int submit_common(cf_executor *ex, const cf_submit_options *opts, cf_task_fn *fn,
                         const cf_value *args, size_t nargs, cf_future **out, const char *who)
{
    if (out)
        *out = NULL;
    if (!cf__executor_live(ex) || !fn || !out)
        return cf__fail(CF_EINVAL, "%s: %s is NULL", who,
                        !ex ? "executor" : !fn ? "fn" : !out ? "out" : "executor (not live)");
    int64_t timeout_ns = CF__NS_FOREVER;
    int64_t space_deadline = CF__NS_FOREVER;
    int priority = CF_PRIORITY_DEFAULT;
    if (opts) {
        if (opts->timeout != CF_FOREVER) {
            int64_t deadline;
            int rc = cf__deadline(opts->timeout, &deadline, who);
            if (rc != CF_OK)
                return rc;
            timeout_ns = opts->timeout >= 9e9 ? CF__NS_FOREVER : (int64_t)(opts->timeout * 1e9);
        }
        int rc = cf__deadline(opts->queue_timeout, &space_deadline, who);
        if (rc == CF_OK)
            rc = cf__check_priority(ex, opts->priority, who);
        if (rc != CF_OK)
            return rc;
        priority = opts->priority;
    }
    cf_future *f;
    bool ref = false;
    int rc = prepare_call(ex, fn, args, nargs, timeout_ns, priority, &f, who);
    if (rc == CF_OK) {
        rc = take_slots(ex, &f, 1, space_deadline, who, &ref);
        if (rc != CF_OK)
            cf_future_release(f);
    }
    if (rc != CF_OK)
        return rc;
    /* The engine keeps its own reference; the caller gets the first.  No
     * other thread knows of f yet (prepare_call made it), so a plain store
     * does what an atomic increment would, without the locked
     * instruction; the engine's handing over publishes it. */
    atomic_store_explicit(&f->refs, 2, memory_order_relaxed);
    cf__progress_mark(f);
    rc = ex->engine->submit(ex, f);
    if (rc != CF_OK) {
        void (*hook)(cf_executor *) =
            atomic_load_explicit(&cf__test_hook_submit_refused, memory_order_relaxed);
        if (CF__UNLIKELY(hook != NULL))
            hook(ex);
        /* The engine released its reference; drop ours too, and the slot
         * it never queued (engines give it back themselves when they
         * refuse a call after shutdown, while their lock keeps the
         * executor alive; this catches the other failures).  The counts
         * are the future's business only: a destroy may be freeing `ex`. */
        cf__progress_unmark(f);
        cf__slot_release(f);
        if (ref)
            cf__executor_unref(ex);
        cf_future_release(f);
        return rc;
    }
    cf__progress_accepted(&ex->counts, 1);
    if (ref)
        cf__executor_unref(ex);
    *out = f;
    return CF_OK;
}

CF__API int cf_submit(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                      cf_future **out)
{
    return submit_common(ex, NULL, fn, args, nargs, out, "submit");
}

CF__API int cf_submit_with(cf_executor *ex, const cf_submit_options *opts, cf_task_fn *fn,
                           const cf_value *args, size_t nargs, cf_future **out)
{
    return submit_common(ex, opts, fn, args, nargs, out, "submit_with");
}

static int submit_prepared(cf_executor *ex, cf_future **fs, size_t n, bool as_chunk,
                           int64_t space_deadline_ns, bool slots_taken, const char *who);

/* The calls of a cf_submit_many() that an engine makes piece by piece
 * (engine->submit_made). */
typedef struct made_calls {
    cf_executor *ex;
    cf_task_fn *fn;
    const cf_value *args;
    size_t nargs;
    bool slots;
} made_calls;

static size_t made_size(const made_calls *mc, size_t i)
{
    size_t extra = 0;
    for (size_t j = 0; j < mc->nargs; j++)
        extra += cf__value_extra(&mc->args[i * mc->nargs + j]);
    return cf__future_call_size(mc->nargs, extra);
}

/* engine->submit_made's `make`: fs[k..k+m) from reserved blocks to
 * futures, each with the engine's reference (a plain store: no other
 * thread knows of it yet, see submit_common) and its slot, counted as
 * submitted.  The engine has accepted the whole batch and holds what
 * keeps the executor alive, so the piece is counted here, before it is
 * queued: counted after the batch, the calls queued while the rest were
 * made would be in no count, and cf_executor_progress() would show none
 * pending for as long as a large batch takes to make. */
static void make_calls(void *ctx, cf_future **fs, size_t k, size_t m)
{
    const made_calls *mc = ctx;
    for (size_t i = k; i < k + m; i++) {
        const cf_value *a = mc->nargs ? mc->args + i * mc->nargs : NULL;
        cf_future *f = cf__future_make_call(fs[i], made_size(mc, i), mc->fn, a, mc->nargs);
        f->owner = mc->ex;
        atomic_store_explicit(&f->refs, 2, memory_order_relaxed);
        if (mc->slots)
            atomic_store_explicit(&f->slot, true, memory_order_relaxed);
        cf__progress_mark(f);
        fs[i] = f;
    }
    cf__progress_accepted(&mc->ex->counts, m);
}

/* cf_submit_many() on an engine with submit_made: every call checked and
 * its block reserved first (so that nothing can fail once the first call
 * is handed over), room taken for all n, then the engine makes and hands
 * over the calls piece by piece, so its workers begin the first while the
 * submitting thread makes the rest.  ex, fn and out are checked. */
static int submit_many_made(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                            size_t n, cf_future **out, const char *who)
{
    made_calls mc = {ex, fn, args, nargs, false};
    int rc = check_call(ex, fn, args, nargs, who);
    size_t i = 0;
    for (; rc == CF_OK && i < n; i++) {
        size_t payload, extra;
        rc = measure_call(ex, nargs ? args + i * nargs : NULL, nargs, who, &payload, &extra);
        if (rc == CF_OK) {
            out[i] = cf__future_reserve(cf__future_call_size(nargs, extra));
            if (!out[i])
                rc = cf__fail(CF_ENOMEM, "%s: out of memory for the call", who);
        }
    }
    bool ref = false;
    if (rc == CF_OK)
        rc = cf__bound_acquire(ex, n, CF__NS_FOREVER, who, &mc.slots, &ref);
    if (rc == CF_OK)
        rc = ex->engine->submit_made(ex, out, n, mc.slots, make_calls, &mc);
    if (rc != CF_OK) {
        /* Nothing was made: the non-NULL of out[0..i) are the blocks
         * reserved (out was cleared first). */
        for (size_t j = 0; j < i; j++) {
            if (out[j])
                cf__future_unreserve(out[j], made_size(&mc, j));
            out[j] = NULL;
        }
    }
    if (ref)
        cf__executor_unref(ex); /* last: the lines above may still reach it */
    return rc;
}

CF__API int cf_submit_many(cf_executor *ex, cf_task_fn *fn, const cf_value *args,
                           size_t nargs, size_t n, cf_future **out)
{
    static const char who[] = "submit_many";
    if (!cf__executor_live(ex) || !fn || !out)
        return cf__fail(CF_EINVAL, "%s: %s is NULL", who,
                        !ex ? "executor" : !fn ? "fn" : !out ? "out" : "executor (not live)");
    if (n == 0)
        return CF_OK;
    memset(out, 0, n * sizeof *out);
    if (nargs > 0 && !args)
        return cf__fail(CF_EINVAL, "%s: args is NULL but nargs is %zu", who, nargs);
    if (nargs > CF_ARGS_MAX)
        return cf__fail(CF_EINVAL, "%s: %zu arguments, more than CF_ARGS_MAX (%d)", who, nargs,
                        CF_ARGS_MAX);
    if (ex->engine->submit_made && !ex->engine->new_call)
        return submit_many_made(ex, fn, args, nargs, n, out, who);
    for (size_t i = 0; i < n; i++) {
        int rc = prepare_call(ex, fn, nargs ? args + i * nargs : NULL, nargs,
                              CF__NS_FOREVER, CF_PRIORITY_DEFAULT, &out[i], who);
        if (rc != CF_OK) {
            for (size_t j = 0; j < i; j++) {
                cf_future_release(out[j]);
                out[j] = NULL;
            }
            return rc;
        }
    }
    /* Room for all n at once, then all n go in. */
    bool ref = false;
    int rc = take_slots(ex, out, n, CF__NS_FOREVER, who, &ref);
    if (rc == CF_OK && ex->engine->submit_many) {
        for (size_t i = 0; i < n; i++) {
            /* The engine's references; made above, known to no other
             * thread yet (see submit_common). */
            atomic_store_explicit(&out[i]->refs, 2, memory_order_relaxed);
            cf__progress_mark(out[i]);
        }
        rc = ex->engine->submit_many(ex, out, n);
        if (rc != CF_OK)
            for (size_t i = 0; i < n; i++) {
                cf__progress_unmark(out[i]);
                cf__slot_release(out[i]);
            }
        else
            cf__progress_accepted(&ex->counts, n);
    } else if (rc == CF_OK) {
        /* On failure it has put right what it handed over: a call a worker
         * already began runs on and stays counted. */
        rc = submit_prepared(ex, out, n, false, CF__NS_FOREVER, true, who);
    }
    if (rc != CF_OK) {
        for (size_t i = 0; i < n; i++) {
            cf_future_release(out[i]);
            out[i] = NULL;
        }
    }
    if (ref)
        cf__executor_unref(ex); /* last: the lines above may still reach it */
    return rc;
}

int cf__prepare_call(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                     int priority, cf_future **out, const char *who)
{
    return prepare_call(ex, fn, args, nargs, CF__NS_FOREVER, priority, out, who);
}

int cf__check_calls(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs)
{
    return check_call(ex, fn, args, nargs, "map");
}

int cf__prepare_checked(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                        int priority, cf_future **out)
{
    return prepare_checked(ex, fn, args, nargs, CF__NS_FOREVER, priority, out, "map");
}

void (*_Atomic cf__test_hook_after_submit)(cf_executor *ex, cf_future *f);

/* fs[i..n) of a submit_prepared() were refused or never tried: they stop
 * counting (all were marked for counting, fs[i+1..n) too) and give back
 * any slot; fs[0..i), handed over, give their slots back as they are
 * cancelled (or were taken already). */
static void give_up_from(cf_future **fs, size_t n, size_t i)
{
    for (size_t j = i; j < n; j++) {
        cf__progress_unmark(fs[j]);
        cf__slot_release(fs[j]);
    }
    for (size_t j = 0; j < i; j++)
        cf_future_cancel(fs[j]);
}

/* cf__submit_prepared(); `slots_taken`: the caller took the n slots. */
static int submit_prepared(cf_executor *ex, cf_future **fs, size_t n, bool as_chunk,
                           int64_t space_deadline_ns, bool slots_taken, const char *who)
{
    int rc;
    bool ref = false;
    if (as_chunk && ex->engine->submit_batch && n > 1) {
        /* One job: its slots at once.  Without room none of the n left:
         * they stop counting (a map counts them as submitted only once
         * they are accepted). */
        if (!slots_taken &&
            (rc = take_slots(ex, fs, n, space_deadline_ns, who, &ref)) != CF_OK) {
            for (size_t i = 0; i < n; i++)
                cf__progress_unmark(fs[i]);
            return rc;
        }
        for (size_t i = 0; i < n; i++) {
            /* The engine's references.  A map's futures were made by
             * cf__prepare_checked() in this thread and no other thread
             * knows of them yet (see submit_common): a plain store, not a
             * locked increment per call; handing the job over publishes
             * it. */
            atomic_store_explicit(&fs[i]->refs, 2, memory_order_relaxed);
            cf__progress_mark(fs[i]);
        }
        rc = ex->engine->submit_batch(ex, fs, n);
        if (rc != CF_OK)
            for (size_t i = 0; i < n; i++) {
                cf__progress_unmark(fs[i]);
                cf__slot_release(fs[i]);
            }
        else
            cf__progress_accepted(&ex->counts, n);
        if (ref)
            cf__executor_unref(ex);
        return rc;
    }
    if (as_chunk && n > 1 && ex->engine->submit_many) {
        /* Separate calls, handed over in pieces of as many as the bound
         * has room for (all n without one): one engine call - one lock,
         * one wake-up - per piece instead of per call. */
        for (size_t done = 0; done < n;) {
            size_t k = n - done;
            rc = slots_taken ? CF_OK
                             : take_some_slots(ex, fs + done, &k, space_deadline_ns, who, &ref);
            if (rc == CF_OK) {
                for (size_t i = done; i < done + k; i++) {
                    cf_future_retain(fs[i]); /* the engine's references */
                    cf__progress_mark(fs[i]);
                }
                rc = ex->engine->submit_many(ex, fs + done, k);
                if (rc == CF_OK)
                    cf__progress_accepted(&ex->counts, k);
            }
            if (ref) {
                ref = false;
                cf__executor_unref(ex);
            }
            if (rc != CF_OK) {
                give_up_from(fs, n, done);
                return rc;
            }
            done += k;
        }
        return CF_OK;
    }
    for (size_t i = 0; i < n; i++) {
        rc = slots_taken ? CF_OK : take_slots(ex, fs + i, 1, space_deadline_ns, who, &ref);
        if (rc == CF_OK) {
            cf_future_retain(fs[i]); /* the engine's reference */
            cf__progress_mark(fs[i]);
            rc = ex->engine->submit(ex, fs[i]);
            if (rc == CF_OK)
                cf__progress_accepted(&ex->counts, 1);
            if (ref)
                cf__executor_unref(ex);
            void (*hook)(cf_executor *, cf_future *) =
                atomic_load_explicit(&cf__test_hook_after_submit, memory_order_relaxed);
            if (CF__UNLIKELY(hook != NULL) && rc == CF_OK)
                hook(ex, fs[i]);
        }
        if (rc != CF_OK) {
            give_up_from(fs, n, i);
            return rc;
        }
    }
    return CF_OK;
}

int cf__submit_prepared(cf_executor *ex, cf_future **fs, size_t n, bool as_chunk,
                        int64_t space_deadline_ns)
{
    return submit_prepared(ex, fs, n, as_chunk, space_deadline_ns, false, "map");
}

CF__API int cf_future_interrupt(cf_future *f)
{
    if (f && !f->has_call && cf__future_live(f)) {
        /* A continuation's derived future: the call it submitted. */
        int rc = cf__then_interrupt(f);
        if (rc != 1)
            return rc;
    }
    if (!f || !f->has_call)
        return cf__fail(CF_EINVAL, "future_interrupt: %s", !f ? "future is NULL"
                                                              : "no executor runs this future");
    if (cf_future_done(f))
        return CF_EDONE;
    if (cf_future_cancel(f))
        return CF_OK;
    cf__lock_acquire(&f->lock);
    if (cf__state_done(cf__future_hook_locked(f))) {
        cf__lock_release(&f->lock);
        return CF_EDONE; /* done before the request was made */
    }
    /* Not done, and hooked so that it cannot end before the lock is
     * dropped (future.c): the executor still holds the call, so it is
     * alive.  The request is made only now: made before the hook, a task
     * that polls cf_cancel_requested() could see it and end (lock-free)
     * before the check above, which then answered CF_EDONE for a call
     * this very request had stopped.  Once hooked, whatever ends the call
     * ends it after the request, and the answer is CF_OK.  NULL owner
     * for an inline continuation (compose.c), which has only the flag and
     * the descriptor. */
    atomic_store_explicit(&f->stop, true, memory_order_relaxed);
    cf_executor *ex = f->owner;
    if (ex)
        cf__executor_ref(ex);
    cf__lock_release(&f->lock);
    /* After the check above, so that a task woken by its descriptor cannot
     * end before we have answered CF_OK. */
    cf__cancel_fd_fire(f);
    if (!ex)
        return CF_OK;
    if (ex->engine->interrupt && !cf__executor_inherited(ex))
        ex->engine->interrupt(ex, f);
    cf__executor_unref(ex);
    return CF_OK;
}

static int stop_workers(cf_executor *ex, bool kill, const char *who)
{
    if (!cf__executor_live(ex))
        return cf__fail(CF_EINVAL, "%s: executor is NULL", who);
    if (cf__executor_inherited(ex))
        return CF_OK;
    ex->engine->shutdown(ex, false, true);
    if (ex->engine->stop_workers)
        ex->engine->stop_workers(ex, kill);
    return CF_OK;
}

CF__API int cf_terminate_workers(cf_executor *ex)
{
    return stop_workers(ex, false, "terminate_workers");
}

CF__API int cf_kill_workers(cf_executor *ex)
{
    return stop_workers(ex, true, "kill_workers");
}

CF__API int cf_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    if (!cf__executor_live(ex))
        return cf__fail(CF_EINVAL, "shutdown: executor is NULL");
    if (cf__executor_inherited(ex))
        return CF_OK; /* nothing of it runs in this process */
    return ex->engine->shutdown(ex, wait, cancel_futures);
}

CF__API int cf_executor_destroy(cf_executor *ex)
{
    if (!ex)
        return CF_OK;
    if (!cf__executor_live(ex))
        return cf__fail(CF_EINVAL, "executor_destroy: not a live executor (destroyed twice?)");
    if (cf__executor_inherited(ex)) {
        /* Its locks may be held by threads that do not exist here; leave
         * its memory alone (it stays reachable from the registry). */
        atomic_store(&ex->destroyed, true);
        ex->magic = 0;
        return CF_OK;
    }
    if (ex->engine->is_worker(ex)) {
        ex->engine->shutdown(ex, false, false);
        return cf__fail(CF_EDEADLK, "executor_destroy: called from one of the executor's own "
                                    "workers, which cannot wait for itself");
    }
    if (cf__progress_on_ticker(ex)) {
        ex->engine->shutdown(ex, false, false);
        return cf__fail(CF_EDEADLK, "executor_destroy: called from the executor's progress "
                                    "callback, which cannot wait for itself");
    }
    if (atomic_exchange(&ex->destroyed, true))
        return cf__fail(CF_EINVAL, "executor_destroy: executor was already destroyed");
    int rc = ex->engine->shutdown(ex, true, false);
    if (rc != CF_OK)
        return rc;
    cf__progress_end(ex);
    cf__executor_unref(ex);
    return CF_OK;
}

CF__API void cf__executor_scope_exit(cf_executor **ex)
{
    if (ex && *ex) {
        cf_executor_destroy(*ex);
        *ex = NULL;
    }
}

CF__API int cf_executor_worker_count(const cf_executor *ex)
{
    if (!cf__executor_live(ex))
        return -1;
    if (cf__executor_inherited(ex))
        return 0;
    return ex->engine->worker_count(ex);
}
