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

#endif
