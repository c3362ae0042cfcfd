/* SPDX-License-Identifier: MIT */
/*
 * remote.h - what every engine whose workers live in another process (the
 * process engine, the MPI engine) shares on the worker side: how a
 * finished call's outcome is encoded for the parent.  The task registry
 * (registry.c), the frame encoding of values and failures (wire.h) and the
 * shared-memory buffers (shm.c) live beside it in src/remote.
 */
#ifndef CF_REMOTE_H
#define CF_REMOTE_H

#include <stddef.h>

#include "internal.h"
#include "wire.h"

/* Appends the outcome of the finished call `f` of task `name`: u8 1 and
 * its value, or u8 0 and its failure.  A result that cannot leave the
 * process (a CF_PTR, which in-process engines accept) becomes that call's
 * CF_ENOTCOPYABLE failure instead of a value the parent must refuse.
 * Worker side, the thread that ran the call. */
CF__API void cf__remote_encode_outcome(wire_enc *e, const cf_future *f, const char *name,
                                       size_t namelen);

/* Appends the failure outcome of a call of `what` ("task", "initializer")
 * `name`, which this worker does not know: a NameError with code
 * CF_ENOTCOPYABLE whose message says it is not registered `where` (e.g.
 * "in the worker process") and how to fix it (`hint`). */
CF__API void cf__remote_encode_unregistered(wire_enc *e, const char *what, const char *name,
                                            size_t namelen, const char *where,
                                            const char *hint);

/* A worker runs its calls one after another in futures nobody else sees
 * (no lock, no state machine: cf__future_run_private), and a finished one
 * that nothing refers to any more is reset and kept as the worker's spare
 * for the next call: a map chunk's calls then cost no allocation each.
 *
 * cf__remote_call_future() returns a RUNNING future for fn(args), its
 * stop flag down: *spare if there is one (*spare becomes NULL), else a
 * new one with room for
 * CF_ARGS_MAX arguments; NULL without memory.  The arguments are borrowed
 * (copied as cf_values, not deep).  The caller runs it with
 * cf__future_run_private().
 *
 * cf__remote_recycle() takes back the finished `f` as *spare, unless the
 * frame being built refers into its outcome (`referenced`), it holds
 * shared memory, or there is a spare already; returns whether it did (if
 * not, the caller still owns f).  Worker thread only, for both. */
CF__API cf_future *cf__remote_call_future(cf_future **spare, cf_task_fn *fn,
                                          const cf_value *args, size_t nargs);
CF__API bool cf__remote_recycle(cf_future **spare, cf_future *f, bool referenced);

#endif
