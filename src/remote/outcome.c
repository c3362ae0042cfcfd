/* SPDX-License-Identifier: MIT */
/*
 * outcome.c - encoding a finished call's outcome in a worker process, the
 * same for every engine whose workers are other processes (see remote.h).
 */
#include <stdio.h>

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
