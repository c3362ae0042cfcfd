/* SPDX-License-Identifier: MIT */
/*
 * outcome.c - encoding a finished call's outcome in a worker process, the
 * same for every engine whose workers are other processes (see remote.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remote.h"

void cf__remote_encode_outcome(wire_enc *e, const cf_future *f, const char *name,
                               size_t namelen)
{
    if (f->status == CF_OK && (f->result.kind < CF_NONE || f->result.kind > CF_STR)) {
        char msg[400];
        snprintf(msg, sizeof msg, "task \"%.*s\" returned a %s (kind %d), which cannot be "
                                  "copied from a worker process to its parent; return bytes or a "
                                  "string instead",
                 (int)namelen, name, cf_kind_name(f->result.kind), (int)f->result.kind);
        wenc_u8(e, 0);
        wenc_failure(e, CF_ENOTCOPYABLE, "TypeError", msg);
    } else if (f->status == CF_OK) {
        wenc_u8(e, 1);
        wenc_value(e, &f->result);
    } else {
        wenc_u8(e, 0);
        const cf_failure *fl = f->failure;
        wenc_failure(e, fl ? fl->code : f->status, fl ? fl->type : "TaskError",
                     fl ? fl->message : "");
    }
}

void cf__remote_encode_unregistered(wire_enc *e, const char *what, const char *name,
                                    size_t namelen, const char *where, const char *hint)
{
    char msg[400];
    snprintf(msg, sizeof msg, "%s \"%.*s\" is not registered %s (%s)", what, (int)namelen, name,
             where, hint);
    wenc_u8(e, 0);
    wenc_failure(e, CF_ENOTCOPYABLE, "NameError", msg);
}

cf_future *cf__remote_call_future(cf_future **spare, cf_task_fn *fn, const cf_value *args,
                                  size_t nargs)
{
    cf_future *f = *spare;
    if (f) {
        *spare = NULL;
        f->call.fn = fn;
        f->call.nargs = nargs;
        if (nargs)
            memcpy(cf__call_args(&f->call), args, nargs * sizeof *args);
        atomic_store_explicit(&f->stop, false, memory_order_relaxed);
    } else {
        cf_value room[CF_ARGS_MAX];
        memset(room, 0, sizeof room);
        if (nargs)
            memcpy(room, args, nargs * sizeof *args);
        f = cf__future_new_borrowed(fn, room, CF_ARGS_MAX);
        if (!f)
            return NULL;
        f->call.nargs = nargs;
    }
    /* Nobody else knows this future: no lock, no state machine. */
    atomic_store_explicit(&f->state, CF_RUNNING, memory_order_relaxed);
    return f;
}

bool cf__remote_recycle(cf_future **spare, cf_future *f, bool referenced)
{
    if (referenced || f->shm || *spare)
        return false;
    if (f->failure && !cf__failure_is_static(f->failure))
        cf__failure_free(f->failure);
    f->failure = NULL;
    free(f->result_heap);
    f->result_heap = NULL;
    f->result = cf_none();
    f->status = CF_OK;
    *spare = f;
    return true;
}
