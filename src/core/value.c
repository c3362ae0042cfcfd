/* SPDX-License-Identifier: MIT */
/*
 * value.c - cf_value helpers, failure records, and the task-side API
 * (arguments, results, raise).
 *
 * Design notes
 * - A failure record is one allocation: the struct, then the type name,
 *   then the message.  Freeing it is one free(); copying it across a
 *   process boundary later is one contiguous encode.
 * - Results that fit CF__INLINE_RESULT bytes are stored inside the future,
 *   so the common small result costs no allocation; larger ones get their
 *   own buffer owned by the future (result_heap).
 * - The task-side functions run only in the thread executing the task and
 *   write the result and failure straight into the future's outcome fields,
 *   with no lock: nothing else writes them while the call runs, and nothing
 *   reads them before the executor publishes the final state (release
 *   ordering; see struct cf_call in internal.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

CF__API cf_value cf_str(const char *s)
{
    cf_value v = {CF_STR, 0, {0}};
    v.as.str = s ? s : "";
    v.size = strlen(v.as.str);
    return v;
}

CF__API const char *cf_kind_name(cf_kind kind)
{
    switch (kind) {
    case CF_NONE: return "NoneType";
    case CF_I64: return "int";
    case CF_F64: return "float";
    case CF_BYTES: return "bytes";
    case CF_STR: return "str";
    case CF_PTR: return "pointer";
    }
    return "unknown";
}

int cf__value_check(const cf_value *v, bool copying, const char *who, size_t index)
{
    switch (v->kind) {
    case CF_NONE:
    case CF_I64:
    case CF_F64:
        return CF_OK;
    case CF_PTR:
        if (copying)
            return cf__fail(CF_ENOTCOPYABLE,
                            "%s: value %zu is a pointer (CF_PTR), which this engine cannot "
                            "copy to its workers; pass CF_BYTES instead",
                            who, index);
        return CF_OK;
    case CF_BYTES:
    case CF_STR:
        if (v->size > CF_PAYLOAD_MAX)
            return cf__fail(CF_ETOOBIG, "%s: value %zu is %zu bytes, more than CF_PAYLOAD_MAX (%zu)",
                            who, index, v->size, (size_t)CF_PAYLOAD_MAX);
        if (v->size > 0 && v->as.bytes == NULL)
            return cf__fail(CF_EINVAL, "%s: value %zu has size %zu but a NULL pointer", who,
                            index, v->size);
        if (v->kind == CF_STR && v->as.str == NULL)
            return cf__fail(CF_EINVAL, "%s: value %zu is a NULL string", who, index);
        if (v->kind == CF_STR) {
            /* .size must be strlen: a copy takes .size bytes and the NUL
             * after them, and a worker's peer checks exactly that.  Reads
             * stop at the first NUL, so a too-big size reads no further. */
            size_t len = strnlen(v->as.str, v->size + 1);
            if (len != v->size)
                return cf__fail(CF_EINVAL, "%s: value %zu is a string whose size (%zu) is not "
                                           "its length (%s%zu); build it with cf_str()",
                                who, index, v->size, len > v->size ? "more than " : "",
                                len > v->size ? v->size : len);
        }
        return CF_OK;
    }
    return cf__fail(CF_EINVAL, "%s: value %zu has unknown kind %d", who, index, (int)v->kind);
}

/* ---- failures -------------------------------------------------------- */

cf_failure *cf__failure_new(int code, const char *type, const char *message)
{
    if (!type)
        type = "Exception";
    if (!message)
        message = "";
    size_t tl = strlen(type) + 1, ml = strlen(message) + 1;
    cf_failure *f = malloc(sizeof *f + tl + ml);
    if (!f)
        return NULL;
    f->code = code;
    f->type = (char *)(f + 1);
    f->message = f->type + tl;
    memcpy(f->type, type, tl);
    memcpy(f->message, message, ml);
    return f;
}

cf_failure *cf__failure_vnew(int code, const char *type, const char *fmt, va_list ap)
{
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt ? fmt : "", ap);
    cf_failure *f;
    if (n < 0) {
        f = cf__failure_new(code, type, "");
    } else if ((size_t)n < sizeof small) {
        f = cf__failure_new(code, type, small);
    } else {
        char *big = malloc((size_t)n + 1);
        if (big)
            vsnprintf(big, (size_t)n + 1, fmt, ap2);
        f = cf__failure_new(code, type, big ? big : small);
        free(big);
    }
    va_end(ap2);
    return f;
}

void cf__failure_free(cf_failure *f)
{
    free(f);
}

CF__API int cf_failure_code(const cf_failure *f)
{
    return f ? f->code : 0;
}

CF__API const char *cf_failure_type(const cf_failure *f)
{
    return f ? f->type : "";
}

CF__API const char *cf_failure_message(const cf_failure *f)
{
    return f ? f->message : "";
}

/* ---- task side ------------------------------------------------------- */

/* A failure raised when memory ran out while raising: static, never freed. */
static cf_failure oom_failure = {CF_ENOMEM, "MemoryError", "out of memory while recording a failure"};

static void call_set_failure(cf_call *call, cf_failure *f)
{
    cf_future *fut = cf__future_of_call(call);
    if (fut->failure && fut->failure != &oom_failure)
        cf__failure_free(fut->failure);
    fut->failure = f ? f : &oom_failure;
}

cf_failure *cf__failure_oom(void)
{
    return &oom_failure;
}

bool cf__failure_is_static(const cf_failure *f)
{
    return f == &oom_failure;
}

CF__API int cf_raise(cf_call *call, int code, const char *type, const char *fmt, ...)
{
    if (!call)
        return CF_ETASK;
    va_list ap;
    va_start(ap, fmt);
    call_set_failure(call, cf__failure_vnew(code, type, fmt, ap));
    va_end(ap);
    return CF_ETASK;
}

CF__API size_t cf_arg_count(const cf_call *call)
{
    return call ? call->nargs : 0;
}

CF__API const cf_value *cf_arg(const cf_call *call, size_t i)
{
    if (!call || i >= call->nargs)
        return NULL;
    return &cf__call_args(call)[i];
}

static const cf_value *typed_arg(cf_call *call, size_t i, cf_kind want)
{
    if (!call)
        return NULL;
    if (i >= call->nargs) {
        cf_raise(call, CF_EINVAL, "TypeError", "argument %zu missing: the call has %zu argument%s",
                 i, call->nargs, call->nargs == 1 ? "" : "s");
        return NULL;
    }
    const cf_value *v = &cf__call_args(call)[i];
    if (v->kind != want) {
        cf_raise(call, CF_EINVAL, "TypeError", "argument %zu is %s, expected %s", i,
                 cf_kind_name(v->kind), cf_kind_name(want));
        return NULL;
    }
    return v;
}

CF__API int64_t cf_arg_i64(cf_call *call, size_t i)
{
    const cf_value *v = typed_arg(call, i, CF_I64);
    return v ? v->as.i64 : 0;
}

CF__API double cf_arg_f64(cf_call *call, size_t i)
{
    const cf_value *v = typed_arg(call, i, CF_F64);
    return v ? v->as.f64 : 0.0;
}

CF__API const char *cf_arg_str(cf_call *call, size_t i)
{
    const cf_value *v = typed_arg(call, i, CF_STR);
    return v ? v->as.str : "";
}

CF__API const void *cf_arg_bytes(cf_call *call, size_t i, size_t *size)
{
    const cf_value *v = typed_arg(call, i, CF_BYTES);
    if (size)
        *size = v ? v->size : 0;
    return v ? v->as.bytes : NULL;
}

CF__API void *cf_arg_ptr(cf_call *call, size_t i)
{
    const cf_value *v = typed_arg(call, i, CF_PTR);
    return v ? v->as.ptr : NULL;
}

int cf__value_store(cf_value *dst, void **heap, unsigned char *inline_buf, const cf_value *src,
                    bool copying, const char *who)
{
    int rc = cf__value_check(src, copying, who, 0);
    if (rc != CF_OK)
        return rc;
    size_t extra = cf__value_extra(src);
    if (extra == 0) {
        free(*heap);
        *heap = NULL;
        *dst = *src;
        return CF_OK;
    }
    unsigned char *buf;
    void *newheap = NULL;
    if (extra <= CF__INLINE_RESULT && *heap == NULL && src->as.bytes != (const void *)inline_buf) {
        buf = inline_buf;
    } else {
        newheap = malloc(extra);
        if (!newheap)
            return cf__fail(CF_ENOMEM, "%s: cannot allocate %zu bytes for the value", who, extra);
        buf = newheap;
    }
    if (src->size)
        memcpy(buf, src->as.bytes, src->size);
    if (src->kind == CF_STR)
        buf[src->size] = '\0';
    free(*heap);
    *heap = newheap;
    dst->kind = src->kind;
    dst->size = src->size;
    dst->as.bytes = buf;
    return CF_OK;
}

int (*cf__big_result_store)(cf_future *f, const cf_value *v);

CF__API int cf_return_value(cf_call *call, const cf_value *v)
{
    if (!call)
        return CF_EINVAL;
    cf_value none = cf_none();
    if (!v)
        v = &none;
    cf_future *f = cf__future_of_call(call);
    int rc;
    if (CF__UNLIKELY(cf__value_extra(v) >= CF__SHM_RESULT_MIN) && cf__big_result_store &&
        cf__value_check(v, true, "return", 0) == CF_OK)
        rc = cf__big_result_store(f, v);
    else
        rc = cf__value_store(&f->result, &f->result_heap, f->inline_result, v, false, "return");
    if (rc == CF_ENOMEM)
        cf_raise(call, CF_ENOMEM, "MemoryError", "%s", cf_last_error_message());
    else if (rc != CF_OK)
        cf_raise(call, rc, "ValueError", "%s", cf_last_error_message());
    return rc;
}

CF__API int cf_return_none(cf_call *call)
{
    cf_value v = cf_none();
    return cf_return_value(call, &v);
}

CF__API int cf_return_i64(cf_call *call, int64_t x)
{
    cf_value v = cf_i64(x);
    return cf_return_value(call, &v);
}

CF__API int cf_return_f64(cf_call *call, double x)
{
    cf_value v = cf_f64(x);
    return cf_return_value(call, &v);
}

CF__API int cf_return_str(cf_call *call, const char *s)
{
    cf_value v = cf_str(s);
    return cf_return_value(call, &v);
}

CF__API int cf_return_bytes(cf_call *call, const void *data, size_t size)
{
    cf_value v = cf_bytes(data, size);
    return cf_return_value(call, &v);
}

CF__API int cf_return_ptr(cf_call *call, void *p)
{
    cf_value v = cf_ptr(p);
    return cf_return_value(call, &v);
}

_Thread_local const _Atomic bool *cf__current_pool_stop;

CF__API bool cf_cancel_requested(const cf_call *call)
{
    if (!call)
        return false;
    const cf_future *f = cf__future_of_call(call);
    if (atomic_load_explicit(&((cf_future *)f)->stop, memory_order_relaxed))
        return true;
    const _Atomic bool *pool_stop = cf__current_pool_stop;
    if (pool_stop && atomic_load_explicit(pool_stop, memory_order_relaxed))
        return true;
    return f->deadline_ns != CF__NS_FOREVER && cf__now_ns() >= f->deadline_ns;
}
