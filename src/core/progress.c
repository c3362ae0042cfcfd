/* SPDX-License-Identifier: MIT */
/*
 * progress.c - counts of submitted, running and ended calls per executor
 * and per map, and cf_executor_progress() / cf_map_progress().
 *
 * Design notes
 * - Counting is engine-independent: the front end (executor.c, map.c)
 *   counts a call as submitted right before the engine gets it, and
 *   future.c counts every later state change of a counted future under
 *   the future's lock, before the change shows (so whoever saw a future
 *   end also sees it counted).  An engine, MPI's included, does nothing.
 * - A future counts in its owner executor (`counted`; the owner outlives
 *   the future's calls, see struct cf_future) and, for a map's calls, in
 *   the iterator's counts too (`in_map`, `user_data` pointing at them).
 *   The iterator detaches its calls still running when it closes, under
 *   each future's lock, so no future touches its counts afterwards.
 * - The orderings, and what a reader can rely on, are written next to
 *   struct cf__counts (internal.h).
 */
#include <string.h>

#include "internal.h"

void cf__counts_init(cf__counts *c)
{
    memset(c, 0, sizeof *c);
    atomic_init(&c->submitted, 0);
    atomic_init(&c->running, 0);
    atomic_init(&c->succeeded, 0);
    atomic_init(&c->failed, 0);
    atomic_init(&c->cancelled, 0);
}

void cf__counts_read(cf__counts *c, cf_progress *out)
{
    /* Terminal counts first, then running, then submitted: each acquire
     * makes visible the increments that came before the one it read (see
     * struct cf__counts). */
    out->cancelled = atomic_load_explicit(&c->cancelled, memory_order_acquire);
    out->failed = atomic_load_explicit(&c->failed, memory_order_acquire);
    out->succeeded = atomic_load_explicit(&c->succeeded, memory_order_acquire);
    out->running = atomic_load_explicit(&c->running, memory_order_acquire);
    out->submitted = atomic_load_explicit(&c->submitted, memory_order_acquire);
}

void cf__progress_submit(cf_executor *ex, cf_future *f)
{
    f->counted = true;
    atomic_fetch_add_explicit(&ex->counts.submitted, 1, memory_order_relaxed);
}

void cf__progress_map_submit(cf__counts *c, cf_future *f)
{
    f->in_map = true;
    atomic_store_explicit(&f->user_data, c, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->submitted, 1, memory_order_relaxed);
}

void cf__progress_unsubmit(cf_future *f)
{
    cf__lock_acquire(&f->lock);
    if (!cf__state_done(cf__state_of(f))) {
        /* Never reached the engine, so never ran and never will: nothing
         * but `submitted` was counted. */
        if (f->counted)
            atomic_fetch_sub_explicit(&f->owner->counts.submitted, 1, memory_order_relaxed);
        if (f->in_map) {
            cf__counts *c = atomic_load_explicit(&f->user_data, memory_order_relaxed);
            atomic_fetch_sub_explicit(&c->submitted, 1, memory_order_relaxed);
        }
        f->counted = f->in_map = false;
    }
    cf__lock_release(&f->lock);
}

void cf__progress_map_detach(cf_future *f)
{
    cf__lock_acquire(&f->lock);
    f->in_map = false;
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
