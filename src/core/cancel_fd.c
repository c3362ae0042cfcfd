/* SPDX-License-Identifier: MIT */
/*
 * cancel_fd.c - cf_cancel_fd(): a descriptor that a running task can
 * poll() together with its own I/O, readable once the call should stop.
 *
 * Design notes
 * - The descriptor is a timerfd (the OS layer's alarm descriptor; the
 *   portable build has none and returns CF_ENOTSUP).  That one descriptor
 *   covers the three
 *   reasons a call should stop: its deadline (cf_submit_with's timeout:
 *   the timer is armed at the deadline, an absolute CLOCK_MONOTONIC time,
 *   the clock of cf__now_ns()), and cf_future_interrupt() /
 *   cf_terminate_workers() (the requesting thread arms it to expire at
 *   once).  An expired timerfd stays readable until read, and nobody
 *   reads it, so the state is sticky like cf_cancel_requested() - as
 *   long as nobody sets it again, which would clear the expiry: the timer
 *   is made to expire now at most once, and not after its deadline.
 * - Descriptors exist only for calls whose task asked for one, so they
 *   live in one process-wide list (`watch_mu`), not in every future: a
 *   requester looks its call up there.  The list is short (the calls
 *   running right now that asked) and each lookup is a scan.
 * - No lost wake-up: a requester sets its flag (the future's `stop`, the
 *   pool's `stop`) and then takes `watch_mu` to arm the entry; the task
 *   makes its entry and then, under the same mutex, reads both flags and
 *   arms the timer itself when one is already set.  Whichever comes second
 *   sees what the first did.
 * - `watch_mu` is a leaf lock: nothing else is taken while it is held.  It
 *   is taken around fork(), so a child never inherits it held: every path
 *   that locks it goes through watch_lock(), which registers the fork
 *   handlers first (an interrupt may take the lock before any task has
 *   asked for a descriptor).
 * - The entry and its descriptor end with the call: cf__future_run_call()
 *   calls cf__cancel_fd_end() as soon as the task returns, on the thread
 *   that ran it (the only writer of `cancel_watched`).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

typedef struct watch {
    cf_future *f;                   /* the running call's future */
    const _Atomic bool *pool_stop;  /* its pool's terminate flag, or NULL */
    int fd;
    /* Guarded by watch_mu: */
    bool fired;                     /* arm_now() was done */
    int64_t deadline_ns;            /* armed at this deadline, or FOREVER */
    struct watch *next;
} watch;

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static watch *watch_head; /* guarded by watch_mu */
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void)
{
    pthread_mutex_lock(&watch_mu);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&watch_mu);
}

static void atfork_child(void)
{
    /* Only this thread exists: the calls in the list ran on others. */
    pthread_mutex_init(&watch_mu, NULL);
    watch_head = NULL;
}

static void watch_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Also done at library load, before the program can have threads, so no
 * fork() finds the initialisation half done (ThreadSanitizer's
 * pthread_once would wait for ever in the child); watch_lock() keeps the
 * pthread_once for code that runs before this constructor. */
__attribute__((constructor)) static void watch_init_at_load(void)
{
    pthread_once(&watch_once, watch_init);
}

/* The only way to take watch_mu: the fork handlers are in place before
 * the lock can be held. */
static void watch_lock(void)
{
    pthread_once(&watch_once, watch_init);
    pthread_mutex_lock(&watch_mu);
}

/* Makes the timer expire now, once.  Setting a timerfd again clears the
 * expiry it already counted, so a descriptor that is (or is about to be)
 * readable is left alone: a second request, or one after the deadline,
 * would make it unreadable until the new expiry.  watch_mu held. */
static void arm_now(watch *w)
{
    if (w->fired)
        return;
    w->fired = true;
    if (w->deadline_ns != CF__NS_FOREVER && cf__now_ns() >= w->deadline_ns)
        return; /* the deadline's expiry makes it readable */
    cf__os_alarm_fire(w->fd);
}

static watch *find_locked(const cf_future *f)
{
    for (watch *w = watch_head; w; w = w->next)
        if (w->f == f)
            return w;
    return NULL;
}

CF__API int cf_cancel_fd(cf_call *call)
{
    if (!call)
        return cf__fail(CF_EINVAL, "cancel_fd: call is NULL");
    cf_future *f = cf__future_of_call(call);
    if (cf__state_of(f) != CF_RUNNING)
        return cf__fail(CF_EINVAL, "cancel_fd: the call is not running");
    watch_lock();
    watch *w = find_locked(f);
    if (w) {
        pthread_mutex_unlock(&watch_mu);
        return w->fd;
    }
    w = malloc(sizeof *w);
    int fd = w ? cf__os_alarm_open() : -1;
    if (fd < 0) {
        int err = errno;
        pthread_mutex_unlock(&watch_mu);
        free(w);
        if (!w)
            return cf__fail(CF_ENOMEM, "cancel_fd: out of memory");
        if (err == ENOTSUP)
            return cf__fail(CF_ENOTSUP, "cancel_fd: this build (CF_PORTABLE) has no timer "
                                        "descriptor; poll cf_cancel_requested() instead");
        return cf__fail(CF_ESYS, "cancel_fd: timerfd_create: %s", strerror(err));
    }
    w->f = f;
    w->pool_stop = cf__current_pool_stop;
    w->fd = fd;
    w->fired = false;
    w->deadline_ns = CF__NS_FOREVER;
    w->next = watch_head;
    watch_head = w;
    f->cancel_watched = true;
    if (atomic_load_explicit(&f->stop, memory_order_relaxed) ||
        (w->pool_stop && atomic_load_explicit(w->pool_stop, memory_order_relaxed))) {
        arm_now(w);
    } else if (f->deadline_ns != CF__NS_FOREVER) {
        w->deadline_ns = f->deadline_ns;
        cf__os_alarm_at(fd, f->deadline_ns);
    }
    pthread_mutex_unlock(&watch_mu);
    return fd;
}

void cf__cancel_fd_fire(cf_future *f)
{
    watch_lock();
    watch *w = find_locked(f);
    if (w)
        arm_now(w);
    pthread_mutex_unlock(&watch_mu);
}

void cf__cancel_fd_fire_pool(const _Atomic bool *pool_stop)
{
    watch_lock();
    for (watch *w = watch_head; w; w = w->next)
        if (w->pool_stop == pool_stop)
            arm_now(w);
    pthread_mutex_unlock(&watch_mu);
}

void cf__cancel_fd_end(cf_future *f)
{
    watch_lock();
    watch **pp = &watch_head;
    while (*pp && (*pp)->f != f)
        pp = &(*pp)->next;
    watch *w = *pp;
    if (w)
        *pp = w->next;
    pthread_mutex_unlock(&watch_mu);
    f->cancel_watched = false;
    if (w) {
        close(w->fd);
        free(w);
    }
}
