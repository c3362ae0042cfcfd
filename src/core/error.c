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
 *   outside, and cf_set_log_hook() waits for the calls of the pair it
 *   replaced (see "log hook" below).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
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

/* ---- log hook --------------------------------------------------------
 *
 * A logging thread copies the (function, argument) pair under hook_lock and
 * calls it outside the lock, so a slow hook never holds up other loggers.
 * So that a program may free what the old argument points to as soon as
 * cf_set_log_hook() returns, each call in progress is noted in
 * `hook_calls` (a node on the caller's stack) with the generation of the
 * pair it read, and the setter waits until no call of an older generation
 * is left.  Calls that start after the set read the new pair and are not
 * waited for, so a stream of logging cannot keep a setter waiting.  A set
 * made from inside a hook call does not wait at all: its own call is still
 * running, and two hooks replacing themselves at once on two threads would
 * wait for each other. */

typedef struct hook_call {
    struct hook_call *prev, *next;
    uint64_t gen;     /* hook_gen when this call read the pair */
    pthread_t thread; /* the calling thread */
} hook_call;

static cf__lock hook_lock = CF__LOCK_INIT;
static cf_log_fn *hook_fn;    /* guarded by hook_lock; NULL = stderr */
static void *hook_arg;        /* guarded by hook_lock */
static uint64_t hook_gen;     /* guarded by hook_lock; bumped by each set */
static hook_call *hook_calls; /* guarded by hook_lock: calls in progress */
static unsigned hook_setters; /* guarded by hook_lock: setters waiting */
/* Bumped under hook_lock when a call ends while setters wait, who sleep
 * on it; read under hook_lock before they sleep, so no bump is missed.
 * The lock orders it, so relaxed would do; seq_cst costs nothing here. */
static _Atomic uint32_t hook_ended;
/* How many hook calls this thread is inside (nested when a hook logs). */
static _Thread_local unsigned hook_depth;

/* Takes `c` out of hook_calls.  hook_lock held. */
static void unlink_call(hook_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        hook_calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

CF__API void cf_set_log_hook(cf_log_fn *fn, void *arg)
{
    /* The fork handlers (executor.c) hold hook_lock across fork() and
     * forget, in the child, the calls of threads it does not have: they
     * must be in place before any call of a hook is noted. */
    cf__fork_init();
    cf__lock_acquire(&hook_lock);
    hook_fn = fn;
    hook_arg = fn ? arg : NULL;
    uint64_t gen = ++hook_gen;
    /* Liveness: every call in `hook_calls` ends when its hook returns
     * (hooks must not block for long), and its end bumps hook_ended and
     * wakes us, since hook_setters is set while we sleep.  None of them
     * waits for us: we are in no hook call (hook_depth), and a set made in
     * one does not wait. */
    for (;;) {
        bool older = false;
        for (hook_call *c = hook_calls; c && !older && hook_depth == 0; c = c->next)
            older = c->gen < gen;
        if (!older)
            break;
        uint32_t seen = atomic_load(&hook_ended);
        hook_setters++;
        cf__lock_release(&hook_lock);
        cf__futex_wait(&hook_ended, seen, CF__NS_FOREVER);
        cf__lock_acquire(&hook_lock);
        hook_setters--;
    }
    cf__lock_release(&hook_lock);
}

void cf__log_lock_for_fork(bool lock)
{
    if (lock)
        cf__lock_acquire(&hook_lock);
    else
        cf__lock_release(&hook_lock);
}

void cf__log_fork_child(void)
{
    /* Only this thread exists now: the calls of the others, and their
     * waiting setters, went with them (their nodes were on their stacks). */
    pthread_t me = pthread_self();
    hook_call **at = &hook_calls;
    while (*at) {
        if (pthread_equal((*at)->thread, me)) {
            at = &(*at)->next;
            continue;
        }
        unlink_call(*at);
    }
    hook_setters = 0;
    cf__lock_release(&hook_lock);
}

/* Copies `in` to `out` (size bytes, NUL-terminated, cut if need be) as one
 * line: a line break becomes the two characters \n (or \r), any other
 * control character but a tab a '?'.  Messages quote text from tasks and
 * workers (a failure's type and message), which may hold line breaks. */
static void one_line(char *out, size_t size, const char *in)
{
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)in; *c && o + 1 < size; c++) {
        if (*c == '\n' || *c == '\r') {
            if (o + 2 >= size)
                break;
            out[o++] = '\\';
            out[o++] = *c == '\n' ? 'n' : 'r';
        } else if ((*c < 0x20 && *c != '\t') || *c == 0x7f) {
            out[o++] = '?';
        } else {
            out[o++] = (char)*c;
        }
    }
    out[o] = '\0';
}

void cf__log(const char *fmt, ...)
{
    char raw[512], line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    one_line(line, sizeof line, raw);

    hook_call call = {NULL, NULL, 0, pthread_self()};
    cf__lock_acquire(&hook_lock);
    cf_log_fn *fn = hook_fn;
    void *arg = hook_arg;
    if (fn) {
        call.gen = hook_gen;
        call.next = hook_calls;
        if (hook_calls)
            hook_calls->prev = &call;
        hook_calls = &call;
    }
    cf__lock_release(&hook_lock);

    if (!fn) {
        fprintf(stderr, "cfutures: %s\n", line);
        return;
    }
    hook_depth++;
    fn(arg, line);
    hook_depth--;

    cf__lock_acquire(&hook_lock);
    unlink_call(&call);
    bool wake = hook_setters > 0;
    if (wake)
        atomic_fetch_add(&hook_ended, 1);
    cf__lock_release(&hook_lock);
    if (wake)
        cf__futex_wake(&hook_ended, INT32_MAX);
}
