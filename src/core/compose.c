/* SPDX-License-Identifier: MIT */
/*
 * compose.c - continuations (cf_then) and combinators (cf_when_*):
 * futures made from other futures.
 *
 * Design notes
 * - Both hook their inputs with ordinary done-callbacks, so they work on
 *   futures of every engine and run with no cfutures lock held (the task
 *   of an inline continuation is user code).
 * - A continuation is a record holding references to its antecedent, its
 *   derived future, its executor (if any) and a never-submitted call future
 *   that keeps the copied extra arguments.  The antecedent's callback turns
 *   the record into a *job*.
 * - Chains without recursion: completing a derived future runs its
 *   callbacks, which schedule the next job, whose task completes the next
 *   derived future...  Each thread has a trampoline: the first job
 *   scheduled on a thread runs there and then drains, in a loop, every job
 *   scheduled while it ran; a job scheduled while draining is only queued.
 *   So the stack depth stays constant whatever the chain's length.  The
 *   queue is the thread's own (_Thread_local): no lock.  Two exceptions
 *   keep a task that waits from deadlocking on its own thread's queue:
 *   cf_then() on an already-done future runs its job at once even while
 *   draining (nesting as deep as the caller's own calls), and a thread
 *   about to block in a wait first runs the jobs queued on it
 *   (cf__then_run_queued(); only this thread can queue there, so once
 *   before blocking is enough).
 * - Inline: the derived future is itself a call future (run by no
 *   executor) whose first argument slots are filled with the antecedent's
 *   outcome when the job runs; the job marks it RUNNING with
 *   cf_future_set_running_or_notify_cancel() - so a cancel that came first
 *   wins and the task never runs - and runs it with cf__future_run_call(),
 *   which completes it with the task's outcome: no second future, no copy
 *   of the result.  The outcome slots borrow from the antecedent, which the
 *   record keeps alive until the task has returned.  A job for an
 *   executor submits a fresh call (the engine copies the arguments) whose
 *   outcome is forwarded to the derived future; a cancel of the derived
 *   future is forwarded to that call by a callback on the derived future.
 *   That record then has three owners (the job, the call's callback, the
 *   derived future's callback), counted in `refs`.
 * - A combinator holds a reference to each input until that input's
 *   callback has run, and one to its result future until the last
 *   callback has run; `refs` counts the callbacks still due plus the
 *   set-up.  Which callback completes the result is decided by atomics
 *   (`remaining`, `decided`), never by a lock; statuses[i] is written only
 *   by input i's callback and read after the acq_rel decrement of
 *   `remaining` that follows every write.  The result is completed on the
 *   same trampoline as the jobs (comb_due()): a chain of combinators, each
 *   an input of the next, would otherwise recurse through the callbacks
 *   one frame group per link and overflow the stack; the exceptions are
 *   the same (a combinator set up on this thread completes at once, a
 *   wait runs what is queued).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- forwarding an outcome --------------------------------------------- */

/* Gives `dst` the outcome of the done future `src`: its result (copied),
 * the same failure, or cancellation.  `dst` may be pending or RUNNING (an
 * inline continuation).  A `dst` already done (cancelled by its owner) is
 * left as it is. */
static void forward_outcome(cf_future *src, cf_future *dst)
{
    if (cf__state_of(src) != CF_FINISHED) {
        if (!cf_future_cancel(dst) && !cf_future_done(dst))
            cf__future_fail_running(dst, CF_ECANCELLED, "CancelledError",
                                    "the continuation's task was cancelled");
        return;
    }
    if (src->status == CF_OK) {
        int rc = cf_future_set_result(dst, &src->result);
        if (rc == CF_ENOMEM || rc == CF_ETOOBIG)
            cf__future_fail_running(dst, rc, "MemoryError", cf_last_error_message());
        return;
    }
    const cf_failure *sf = src->failure;
    cf_failure *copy = cf__failure_new(sf->code, sf->type, sf->message);
    if (!copy)
        copy = cf__failure_oom();
    if (cf__future_complete_remote(dst, src->status, NULL, NULL, copy) != CF_OK &&
        !cf__failure_is_static(copy))
        cf__failure_free(copy);
}

/* The status cf_future_result() gives for a done future. */
static int done_status(const cf_future *f)
{
    return cf__state_of(f) == CF_FINISHED ? f->status : CF_ECANCELLED;
}

/* ---- continuations ------------------------------------------------------ */

typedef struct then_rec {
    _Atomic int refs;          /* the job, plus the callbacks of an executor call */
    bool ok_only;              /* cf_then_ok() */
    cf_future *ante;           /* reference until the job has run */
    cf_future *derived;        /* reference until the record is freed */
    cf_executor *ex;           /* reference until the job has submitted, or NULL */
    cf_task_fn *task;
    cf_future *extra;          /* a call future holding the copied extra args */
    /* Executor path: the submitted call (a reference, released with the
     * record), published by the job once submitted.  It and
     * `derived_cancelled` (set by derived_done) are a Dekker pair, both
     * seq_cst: the job stores `inner` then loads the flag, derived_done
     * stores the flag then loads `inner`, so at least one of them sees
     * the other and cancels the call (twice is harmless). */
    _Atomic(cf_future *) inner;
    _Atomic bool derived_cancelled;
    /* The derived future was cancelled by cf_future_interrupt() before the
     * call existed (cf__then_interrupt): whichever side of the pair above
     * reaches the call interrupts it rather than cancelling it, so a call
     * a worker has already begun is stopped too.  Stored (seq_cst) before
     * that cancel, so whoever reads `derived_cancelled` true sees it. */
    _Atomic bool interrupt_asked;
    double timeout;            /* executor path: cf_submit_options.timeout */
    int priority;              /* executor path: cf_submit_options.priority */
    struct then_rec *next;     /* in this thread's trampoline queue */
} then_rec;

static void then_unref(then_rec *r)
{
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (r->ante)
        cf_future_release(r->ante);
    cf_future *inner = atomic_load_explicit(&r->inner, memory_order_relaxed);
    if (inner)
        cf_future_release(inner); /* the last reference to r: nobody stores it now */
    if (r->extra)
        cf_future_release(r->extra);
    if (r->ex)
        cf__executor_unref(r->ex);
    cf_future_release(r->derived);
    free(r);
}

/* Executor path: the submitted call is done. */
static int inner_done(cf_future *inner, void *arg)
{
    then_rec *r = arg;
    char saved[CF__ERROR_MAX]; /* see cf__error_save */
    cf__error_save(saved);
    forward_outcome(inner, r->derived);
    then_unref(r);
    cf__error_restore(saved);
    return 0;
}

/* Executor path: the derived future is done; if by a cancel, the call
 * need not run. */
static int derived_done(cf_future *derived, void *arg)
{
    then_rec *r = arg;
    char saved[CF__ERROR_MAX];
    cf__error_save(saved);
    if (cf_future_cancelled(derived)) {
        atomic_store(&r->derived_cancelled, true); /* seq_cst: see `inner` */
        cf_future *inner = atomic_load(&r->inner);
        if (inner && atomic_load(&r->interrupt_asked))
            cf_future_interrupt(inner);
        else if (inner)
            cf_future_cancel(inner);
    }
    then_unref(r);
    cf__error_restore(saved);
    return 0;
}

/* Writes the antecedent's outcome into out[0..fixed); returns `fixed`.
 * Values borrow from the antecedent. */
static size_t outcome_args(const then_rec *r, cf_value *out)
{
    cf_future *a = r->ante;
    int status = done_status(a);
    size_t n = 0;
    cf_value value = status == CF_OK ? a->result : cf_none();
    if (r->ok_only) {
        out[n++] = value;
    } else {
        const cf_failure *fl = status != CF_OK && status != CF_ECANCELLED ? a->failure : NULL;
        out[n++] = cf_i64(status);
        out[n++] = value;
        out[n++] = cf_i64(fl ? fl->code : 0);
        out[n++] = cf_str(fl ? fl->type : "");
        out[n++] = cf_str(fl ? fl->message : "");
    }
    return n;
}

/* Runs the task on this thread.  The derived future is itself the call
 * (made by then_common() with the extra arguments after `fixed` free
 * slots), so the task's outcome lands in it directly. */
static void run_inline(then_rec *r)
{
    int rc = cf_future_set_running_or_notify_cancel(r->derived);
    if (rc == 0)
        return; /* cancelled first: the task does not run */
    if (rc < 0) {
        /* Someone marked it running through the engine API (a misuse):
         * nobody else will complete it, so fail it rather than hang its
         * waiters.  (Or its user completed it first, with
         * cf_future_set_result(): then the failure changes nothing.) */
        cf__future_fail_running(r->derived, CF_EINVALSTATE, "InvalidStateError",
                                "the continuation's future was marked running by its user");
        return;
    }
    outcome_args(r, cf__call_args(&r->derived->call));
    cf__future_run_call(r->derived, NULL);
}

void (*_Atomic cf__test_hook_then_submitted)(cf_future *derived, cf_future *inner);

/* Submits the task to r->ex; its outcome reaches the derived future
 * through inner_done(). */
static void run_on_executor(then_rec *r)
{
    if (cf_future_done(r->derived))
        return; /* cancelled first */
    cf_value all[CF_ARGS_MAX];
    size_t n = outcome_args(r, all);
    size_t extra = r->extra->call.nargs;
    if (extra)
        memcpy(all + n, cf__call_args(&r->extra->call), extra * sizeof *all);
    n += extra;
    /* Never wait for room in a full bounded queue: this is the thread that
     * completed the antecedent (another pool's worker, a process pool's
     * manager, an event loop), and the full executor's workers may be
     * waiting for that very thread.  The derived future fails with
     * CF_EFULL instead. */
    cf_submit_options opts;
    cf_submit_options_init(&opts);
    opts.timeout = r->timeout;
    opts.priority = r->priority;
    opts.queue_timeout = 0;
    cf_future *inner = NULL;
    int rc = cf_submit_with(r->ex, &opts, r->task, all, n, &inner);
    if (rc != CF_OK) {
        cf__future_fail_running(r->derived, rc, "SubmitError", cf_last_error_message());
        return;
    }
    void (*hook)(cf_future *, cf_future *) =
        atomic_load_explicit(&cf__test_hook_then_submitted, memory_order_relaxed);
    if (hook)
        hook(r->derived, inner);
    /* r owns the reference from here; a cancel of the derived future that
     * derived_done() forwarded before this store is seen below. */
    atomic_store(&r->inner, inner);
    if (atomic_load(&r->derived_cancelled)) {
        if (atomic_load(&r->interrupt_asked))
            cf_future_interrupt(inner);
        else
            cf_future_cancel(inner);
    }
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    if (cf_future_add_done_callback(inner, inner_done, r) != CF_OK) {
        /* Nobody would forward the outcome: give up on the call. */
        atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
        cf_future_cancel(inner);
        cf__future_fail_running(r->derived, CF_ENOMEM, "MemoryError",
                                "then: out of memory for the callback");
    }
}

static void grab_inner(void *arg, void *ctx)
{
    then_rec *r = arg; /* alive: its derived_done() has not run */
    cf_future *inner = atomic_load(&r->inner);
    if (!inner)
        atomic_store(&r->interrupt_asked, true); /* before the cancel: see the field */
    *(cf_future **)ctx = inner ? cf_future_retain(inner) : NULL;
}

int cf__then_interrupt(cf_future *f)
{
    cf_future *inner = NULL;
    if (!cf__future_visit_callback(f, derived_done, grab_inner, &inner))
        return cf_future_done(f) && cf__future_live(f) ? CF_EDONE : 1;
    if (!inner) {
        /* Not submitted, or being submitted: the job may already have
         * looked at the derived future and be handing the call over.
         * The cancel reaches that call through derived_done()/the job,
         * as an interrupt (`interrupt_asked`). */
        return cf_future_cancel(f) ? CF_OK : CF_EDONE;
    }
    int rc = cf_future_interrupt(inner);
    cf_future_release(inner);
    return rc;
}

static void run_job(then_rec *r)
{
    int status = done_status(r->ante);
    if (r->ok_only && status != CF_OK) {
        forward_outcome(r->ante, r->derived);
    } else if (r->ex) {
        run_on_executor(r);
    } else {
        run_inline(r);
    }
    /* The antecedent and the executor are no longer needed. */
    cf_future_release(r->ante);
    r->ante = NULL;
    if (r->ex) {
        cf__executor_unref(r->ex);
        r->ex = NULL;
    }
    then_unref(r);
}

/* This thread's trampoline (see the design notes).  `now` is the record
 * whose cf_then() is adding its callback on this thread right now: when
 * the antecedent is already done, that job runs at once, even inside
 * another job, as the header promises. */
struct comb;
static _Thread_local struct {
    then_rec *head, *tail;
    then_rec *now;
    /* Combinators whose result is due (comb_due()), and the one whose
     * set-up runs on this thread right now (its result is completed at
     * once, as `now`'s job is run at once). */
    struct comb *chead, *ctail;
    struct comb *cnow;
    bool draining;
} tramp;

static void comb_complete(struct comb *c);
static struct comb *comb_pop(void);

/* Runs the queued jobs and combinator completions, and those they queue,
 * until none is left. */
static void tramp_drain(void)
{
    while (tramp.head || tramp.chead) {
        if (!tramp.head) {
            comb_complete(comb_pop());
            continue;
        }
        then_rec *next = tramp.head;
        tramp.head = next->next;
        if (!tramp.head)
            tramp.tail = NULL;
        run_job(next);
    }
}

static int then_on_done(cf_future *ante, void *arg)
{
    (void)ante;
    then_rec *r = arg;
    r->next = NULL;
    char saved[CF__ERROR_MAX]; /* see cf__error_save */
    cf__error_save(saved);
    if (tramp.draining && r == tramp.now) {
        /* cf_then() on a done future from inside a job: the caller may
         * wait for the derived future next.  One level of nesting per
         * such call, made by the caller's own code. */
        run_job(r);
    } else if (tramp.draining) {
        if (tramp.tail)
            tramp.tail->next = r;
        else
            tramp.head = r;
        tramp.tail = r;
    } else {
        tramp.draining = true;
        run_job(r);
        tramp_drain();
        tramp.draining = false;
    }
    cf__error_restore(saved);
    return 0;
}

bool cf__then_run_queued(void)
{
    if (!tramp.draining || (!tramp.head && !tramp.chead))
        return false;
    /* Run for a task that is about to wait, inside its own library call:
     * what those jobs fail at is not that call's failure. */
    char saved[CF__ERROR_MAX];
    cf__error_save(saved);
    tramp_drain();
    cf__error_restore(saved);
    return true;
}

/* The derived future of an inline continuation: a call of `task` (run by
 * no executor) with `fixed` empty slots for the outcome, then copies of
 * the extra arguments, which are validated here. */
static int new_inline_call(cf_task_fn *task, size_t fixed, const cf_value *args, size_t nargs,
                           cf_future **out, const char *who)
{
    cf_value all[CF_ARGS_MAX];
    size_t payload = 0, extra = 0;
    for (size_t i = 0; i < fixed; i++)
        all[i] = cf_none();
    for (size_t i = 0; i < nargs; i++) {
        int rc = cf__value_check(&args[i], false, who, i);
        if (rc != CF_OK)
            return rc;
        payload += args[i].kind == CF_BYTES || args[i].kind == CF_STR ? args[i].size : 0;
        extra += cf__value_extra(&args[i]);
        if (payload > CF_PAYLOAD_MAX)
            return cf__fail(CF_ETOOBIG, "%s: arguments total more than CF_PAYLOAD_MAX", who);
        all[fixed + i] = args[i];
    }
    *out = cf__future_new_call(task, all, fixed + nargs, extra);
    return *out ? CF_OK : cf__fail(CF_ENOMEM, "%s: out of memory", who);
}

/* Checks cf_then_with()'s options: the defaults, or with an executor a
 * valid timeout and a priority it orders by. */
static int check_then_options(cf_executor *ex, const cf_submit_options *opts, const char *who)
{
    if (!opts)
        return CF_OK;
    bool defaults = opts->timeout == CF_FOREVER && opts->priority == CF_PRIORITY_DEFAULT;
    if (!ex)
        return defaults ? CF_OK
                        : cf__fail(CF_EINVAL, "%s: a timeout or priority needs an executor (an "
                                              "inline task is neither queued nor stopped)", who);
    if (opts->timeout != CF_FOREVER) {
        int64_t deadline;
        int rc = cf__deadline(opts->timeout, &deadline, who);
        if (rc != CF_OK)
            return rc;
    }
    return cf__check_priority(ex, opts->priority, who);
}

static int then_common(cf_future *f, cf_executor *ex, const cf_submit_options *opts,
                       cf_task_fn *task, const cf_value *args, size_t nargs, cf_future **out,
                       bool ok_only, const char *who)
{
    if (out)
        *out = NULL;
    if (!cf__future_live(f) || !task || !out || (ex && !cf__executor_live(ex)))
        return cf__fail(CF_EINVAL, "%s: %s", who,
                        !f ? "future is NULL" : !task ? "task is NULL" : !out ? "out is NULL"
                        : !cf__future_live(f) ? "not a live future" : "executor is not live");
    int orc = check_then_options(ex, opts, who);
    if (orc != CF_OK)
        return orc;
    int priority = opts ? opts->priority : CF_PRIORITY_DEFAULT;
    size_t fixed = ok_only ? 1 : CF_THEN_NARGS;
    if (nargs > 0 && !args)
        return cf__fail(CF_EINVAL, "%s: args is NULL but nargs is %zu", who, nargs);
    if (nargs > CF_ARGS_MAX - fixed)
        return cf__fail(CF_EINVAL, "%s: %zu arguments, more than the %zu a continuation may "
                                   "add to its %zu", who, nargs, CF_ARGS_MAX - fixed, fixed);
    /* Inline: the derived future is the call itself.  On an executor: a
     * standalone future, and a never-submitted call holding the copied
     * extra arguments (prepared as cf_submit() would, which validates them
     * for that engine). */
    cf_future *extra = NULL, *derived = NULL;
    int rc = ex ? cf__prepare_call(ex, task, args, nargs, priority, &extra, who)
                : new_inline_call(task, fixed, args, nargs, &derived, who);
    if (rc != CF_OK)
        return rc;
    then_rec *r = calloc(1, sizeof *r);
    if (!r || (!derived && cf_future_new(&derived) != CF_OK)) {
        free(r);
        if (extra)
            cf_future_release(extra);
        if (derived)
            cf_future_release(derived);
        return cf__fail(CF_ENOMEM, "%s: out of memory", who);
    }
    atomic_init(&r->refs, 1);
    atomic_init(&r->inner, NULL);
    atomic_init(&r->derived_cancelled, false);
    atomic_init(&r->interrupt_asked, false);
    r->ok_only = ok_only;
    r->ante = cf_future_retain(f);
    r->derived = cf_future_retain(derived);
    r->task = task;
    r->extra = extra;
    r->timeout = opts ? opts->timeout : CF_FOREVER;
    r->priority = priority;
    if (ex) {
        cf__executor_ref(ex);
        r->ex = ex;
        /* From the start, so that a cancel or an interrupt of the derived
         * future finds the record (cf__then_interrupt) before the job has
         * submitted, and reaches the call after. */
        atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
        if (cf_future_add_done_callback(derived, derived_done, r) != CF_OK) {
            atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
            then_unref(r);
            cf_future_release(derived);
            return cf__fail(CF_ENOMEM, "%s: out of memory", who);
        }
    }
    then_rec *outer = tramp.now;
    tramp.now = r;
    rc = cf_future_add_done_callback(f, then_on_done, r);
    tramp.now = outer;
    if (rc != CF_OK) {
        /* derived_done() holds r, which holds the derived future: cancel
         * it to let both go. */
        if (ex)
            cf_future_cancel(derived);
        then_unref(r);
        cf_future_release(derived);
        return rc;
    }
    *out = derived;
    return CF_OK;
}

CF__API int cf_then(cf_future *f, cf_executor *ex, cf_task_fn *task, const cf_value *args,
                    size_t nargs, cf_future **out)
{
    return then_common(f, ex, NULL, task, args, nargs, out, false, "then");
}

CF__API int cf_then_ok(cf_future *f, cf_executor *ex, cf_task_fn *task, const cf_value *args,
                       size_t nargs, cf_future **out)
{
    return then_common(f, ex, NULL, task, args, nargs, out, true, "then_ok");
}

CF__API int cf_then_with(cf_future *f, cf_executor *ex, const cf_submit_options *opts,
                         cf_task_fn *task, const cf_value *args, size_t nargs, cf_future **out)
{
    return then_common(f, ex, opts, task, args, nargs, out, false, "then_with");
}

CF__API int cf_then_ok_with(cf_future *f, cf_executor *ex, const cf_submit_options *opts,
                            cf_task_fn *task, const cf_value *args, size_t nargs,
                            cf_future **out)
{
    return then_common(f, ex, opts, task, args, nargs, out, true, "then_ok_with");
}

/* ---- combinators -------------------------------------------------------- */

enum { WHEN_ALL, WHEN_ANY, WHEN_ALL_OR_FAIL };

struct comb;

typedef struct comb_slot {
    struct comb *c;
    size_t index;
    cf_future *input;          /* reference until this slot's callback ran */
} comb_slot;

typedef struct comb {
    int kind;
    size_t n;
    _Atomic size_t refs;       /* callbacks still due, plus the set-up */
    _Atomic size_t remaining;  /* inputs not done yet */
    _Atomic bool decided;      /* the result future has been completed */
    cf_future *result;         /* reference until the record is freed */
    int32_t *statuses;         /* n, after the slots */
    /* Written by the one callback that set `decided` (or the set-up),
     * read by comb_complete() after it: the input whose index
     * (WHEN_ANY) or failure (WHEN_ALL_OR_FAIL, a reference) the result
     * takes; `src` NULL means the statuses. */
    size_t win;
    cf_future *src;
    struct comb *next; /* in this thread's trampoline queue */
    comb_slot slots[];
} comb;

static void comb_unref(comb *c, size_t k)
{
    if (atomic_fetch_sub_explicit(&c->refs, k, memory_order_acq_rel) != k)
        return;
    cf_future_release(c->result);
    free(c);
}

/* Completes the result as decided (see `win`, `src`), then drops the
 * reference of the callback that decided it. */
static void comb_complete(comb *c)
{
    if (c->kind == WHEN_ANY) {
        cf_value v = cf_i64((int64_t)c->win);
        cf_future_set_result(c->result, &v);
    } else if (c->src) {
        forward_outcome(c->src, c->result);
        cf_future_release(c->src);
    } else {
        cf_value v = cf_bytes(c->statuses, c->n * sizeof *c->statuses);
        if (cf_future_set_result(c->result, &v) == CF_ENOMEM)
            cf__future_fail(c->result, CF_ENOMEM, "MemoryError", cf_last_error_message());
    }
    comb_unref(c, 1);
}

static comb *comb_pop(void)
{
    comb *c = tramp.chead;
    tramp.chead = c->next;
    if (!tramp.chead)
        tramp.ctail = NULL;
    return c;
}

/* The result of c is decided: completes it on this thread's trampoline,
 * as a continuation's job, so that a chain of combinators (each the input
 * of the next) completes in a loop and not by nested callbacks, whatever
 * its length.  At once unless this thread is draining; then queued, but
 * for the combinator whose set-up runs here (cf_when_*() from inside a
 * callback or task: its result is done when the call returns). */
static void comb_due(comb *c)
{
    if (tramp.draining && c == tramp.cnow) {
        comb_complete(c);
    } else if (tramp.draining) {
        c->next = NULL;
        if (tramp.ctail)
            tramp.ctail->next = c;
        else
            tramp.chead = c;
        tramp.ctail = c;
    } else {
        tramp.draining = true;
        comb_complete(c);
        tramp_drain();
        tramp.draining = false;
    }
}

/* Input s's callback.  The one that decides the result keeps its
 * reference on c for comb_complete(). */
static int comb_on_done(cf_future *f, void *arg)
{
    comb_slot *s = arg;
    comb *c = s->c;
    char saved[CF__ERROR_MAX]; /* see cf__error_save */
    cf__error_save(saved);
    int status = done_status(f);
    c->statuses[s->index] = status;
    bool decides = false;
    if (c->kind == WHEN_ANY) {
        if (!atomic_exchange_explicit(&c->decided, true, memory_order_acq_rel)) {
            c->win = s->index;
            decides = true;
        }
    } else if (c->kind == WHEN_ALL_OR_FAIL && status != CF_OK && status != CF_ECANCELLED) {
        if (!atomic_exchange_explicit(&c->decided, true, memory_order_acq_rel)) {
            c->src = cf_future_retain(f);
            decides = true;
        }
    }
    /* acq_rel: the last one sees every other slot's status. */
    if (atomic_fetch_sub_explicit(&c->remaining, 1, memory_order_acq_rel) == 1 &&
        c->kind != WHEN_ANY && !decides &&
        !atomic_exchange_explicit(&c->decided, true, memory_order_acq_rel))
        decides = true;
    cf_future_release(s->input);
    if (decides)
        comb_due(c);
    else
        comb_unref(c, 1);
    cf__error_restore(saved);
    return 0;
}

static int when_common(cf_future *const *fs, size_t n, cf_future **out, int kind,
                       const char *who)
{
    if (out)
        *out = NULL;
    if (!out || (n > 0 && !fs) || (kind == WHEN_ANY && n == 0))
        return cf__fail(CF_EINVAL, "%s: %s", who,
                        !out ? "out is NULL" : n ? "fs is NULL" : "no futures to wait for");
    for (size_t i = 0; i < n; i++)
        if (!cf__future_live(fs[i]))
            return cf__fail(CF_EINVAL, "%s: fs[%zu] is %s", who, i,
                            fs[i] ? "not a live future" : "NULL");
    if (n > (SIZE_MAX - sizeof(comb)) / (sizeof(comb_slot) + sizeof(int32_t)))
        return cf__fail(CF_ENOMEM, "%s: %zu futures are too many", who, n);
    comb *c = malloc(sizeof *c + n * (sizeof(comb_slot) + sizeof(int32_t)));
    cf_future *result = NULL;
    if (!c || cf_future_new(&result) != CF_OK) {
        free(c);
        return cf__fail(CF_ENOMEM, "%s: out of memory", who);
    }
    c->kind = kind;
    c->n = n;
    atomic_init(&c->refs, n + 1);
    atomic_init(&c->remaining, n + 1); /* + the set-up, so nothing finishes early */
    atomic_init(&c->decided, false);
    c->win = 0;
    c->src = NULL;
    c->next = NULL;
    c->result = cf_future_retain(result);
    c->statuses = (int32_t *)(c->slots + n);
    for (size_t i = 0; i < n; i++) {
        c->slots[i] = (comb_slot){c, i, cf_future_retain(fs[i])};
        c->statuses[i] = CF_EINVALSTATE; /* not done yet (only seen on ENOMEM) */
    }
    int rc = CF_OK;
    size_t added = 0;
    comb *outer = tramp.cnow; /* a set-up inside a completion's callback */
    tramp.cnow = c;
    for (; added < n; added++) {
        rc = cf_future_add_done_callback(fs[added], comb_on_done, &c->slots[added]);
        if (rc != CF_OK)
            break;
    }
    if (rc != CF_OK) {
        /* The callbacks already added still run and release what they
         * hold; the result future fails and goes unused. */
        atomic_store_explicit(&c->decided, true, memory_order_release);
        cf__future_fail(result, CF_ENOMEM, "MemoryError", "out of memory");
        for (size_t i = added; i < n; i++)
            cf_future_release(c->slots[i].input);
        comb_unref(c, n - added + 1);
        tramp.cnow = outer;
        cf_future_release(result);
        return rc;
    }
    /* The set-up's own count: with n == 0 this is what finishes. */
    if (atomic_fetch_sub_explicit(&c->remaining, 1, memory_order_acq_rel) == 1 &&
        kind != WHEN_ANY && !atomic_exchange_explicit(&c->decided, true, memory_order_acq_rel))
        comb_due(c);
    else
        comb_unref(c, 1);
    tramp.cnow = outer;
    *out = result;
    return CF_OK;
}

CF__API int cf_when_all(cf_future *const *fs, size_t n, cf_future **out)
{
    return when_common(fs, n, out, WHEN_ALL, "when_all");
}

CF__API int cf_when_any(cf_future *const *fs, size_t n, cf_future **out)
{
    return when_common(fs, n, out, WHEN_ANY, "when_any");
}

CF__API int cf_when_all_or_fail(cf_future *const *fs, size_t n, cf_future **out)
{
    return when_common(fs, n, out, WHEN_ALL_OR_FAIL, "when_all_or_fail");
}
