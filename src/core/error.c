/* SPDX-License-Identifier: MIT */
/*
 * error.c - error codes, the per-thread "last error" message, the log hook.
 *
 * Design notes
 * - One table (CF_ERROR_TABLE in cfutures.h) generates the enum, the names
 *   and the descriptions, so they cannot drift apart.
 * - The last-error message is thread-local: a failing call on one thread
 *   never overwrites what another thread is about to read.
 * - The log hook is a pair (function, argument) that may be replaced while
 *   other threads log.  Both live in one heap-free static slot guarded by a
 *   tiny lock; a logging thread copies the pair under the lock and calls it
 *   outside, so a slow hook never blocks cf_set_log_hook().
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

CF__API const char *cf_strerror(int err)
{
    switch (err) {
#define CF__ERROR_TEXT(name, value, text)                                     \
    case value:                                                               \
        return text;
        CF_ERROR_TABLE(CF__ERROR_TEXT)
#undef CF__ERROR_TEXT
    }
    return "unknown error";
}

CF__API const char *cf_err_name(int err)
{
    switch (err) {
#define CF__ERROR_NAME(name, value, text)                                     \
    case value:                                                               \
        return "CF_" #name;
        CF_ERROR_TABLE(CF__ERROR_NAME)
#undef CF__ERROR_NAME
    }
    return "CF_UNKNOWN";
}

static _Thread_local char last_error[CF__ERROR_MAX];

CF__API const char *cf_last_error_message(void)
{
    return last_error;
}

int cf__fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return err;
}

void cf__error_save(char *saved)
{
    size_t n = strnlen(last_error, sizeof last_error - 1);
    memcpy(saved, last_error, n);
    saved[n] = '\0';
}

void cf__error_restore(const char *saved)
{
    size_t n = strnlen(saved, sizeof last_error - 1);
    memcpy(last_error, saved, n);
    last_error[n] = '\0';
}

/* ---- log hook -------------------------------------------------------- */

static cf__lock hook_lock = CF__LOCK_INIT;
static cf_log_fn *hook_fn;    /* guarded by hook_lock; NULL = stderr */
static void *hook_arg;        /* guarded by hook_lock */

CF__API void cf_set_log_hook(cf_log_fn *fn, void *arg)
{
    cf__lock_acquire(&hook_lock);
    hook_fn = fn;
    hook_arg = fn ? arg : NULL;
    cf__lock_release(&hook_lock);
}

void cf__log_lock_for_fork(bool lock)
{
    if (lock)
        cf__lock_acquire(&hook_lock);
    else
        cf__lock_release(&hook_lock);
}

void cf__log(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);

    cf__lock_acquire(&hook_lock);
    cf_log_fn *fn = hook_fn;
    void *arg = hook_arg;
    cf__lock_release(&hook_lock);

    if (fn)
        fn(arg, line);
    else
        fprintf(stderr, "cfutures: %s\n", line);
}
