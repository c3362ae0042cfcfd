/* SPDX-License-Identifier: MIT */
/*
 * sys.c - what the library builds on the OS layer (os.h): the lock,
 * clocks, spinning, CPU count, thread names.  Plain POSIX; the system
 * calls that differ between Linux and the portable build live in
 * os_linux.c / os_portable.c.
 *
 * Design notes
 * - cf__lock is Drepper's three-state futex mutex ("Futexes Are Tricky"):
 *   0 free, 1 held, 2 held and somebody may sleep.  Unlock only enters the
 *   kernel when the word was 2.  The sleeping is cf__futex_wait/wake: a
 *   futex on Linux, hashed condition variables in the portable build.
 * - Deadlines are absolute CLOCK_MONOTONIC nanoseconds, so wall-clock
 *   jumps never stretch or cut a timeout.
 */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"
#include "os.h"

int64_t cf__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int cf__deadline(double timeout, int64_t *deadline, const char *who)
{
    if (isnan(timeout) || timeout < 0)
        return cf__fail(CF_EINVAL, "%s: timeout must be >= 0 or CF_FOREVER, got %g",
                        who, timeout);
    /* Anything past ~290 years is forever. */
    if (isinf(timeout) || timeout > 9.0e9) {
        *deadline = CF__NS_FOREVER;
        return CF_OK;
    }
    *deadline = cf__now_ns() + (int64_t)(timeout * 1e9);
    return CF_OK;
}

void cf__lock_slow(cf__lock *l)
{
    /* Spin a little first: critical sections here are a few instructions.
     * Look before each compare-and-swap: a failing one takes the line
     * from the holder as a successful one does, and with a thread pool's
     * workers all after pop_lock that slowed the holder down (a driver
     * timing bursts of calls in flight: see bench/README.md, "Spinning
     * on a lock by looking"). */
    for (int i = 0; i < 100; i++) {
        uint32_t expected = 0;
        if (atomic_load_explicit(&l->word, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->word, &expected, 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        cf__cpu_relax();
    }
    /* Mark contended; sleep until we are the one who turns 0 into 2. */
    while (atomic_exchange_explicit(&l->word, 2, memory_order_acquire) != 0)
        cf__futex_wait(&l->word, 2, CF__NS_FOREVER);
}

void cf__unlock_slow(cf__lock *l)
{
    cf__futex_wake(&l->word, 1);
}

static _Atomic int64_t spin_ns = -1;

/* The largest CF_SPIN_NS taken: one second.  The environment is input
 * like any other: a budget of hours would turn every wait into a busy
 * loop for that long. */
#define SPIN_NS_MAX 1000000000LL

int64_t cf__spin_ns(void)
{
    /* Relaxed: the budget carries no data.  Threads that race here parse
     * the same variable and store the same value (a bad one is logged by
     * each of them, once per process in practice). */
    int64_t s = atomic_load_explicit(&spin_ns, memory_order_relaxed);
    if (s < 0) {
        /* Spinning only helps when another CPU can make progress meanwhile;
         * a few microseconds covers a wake-up we would otherwise pay for
         * with two system calls. */
        s = cf_usable_cpus() > 1 ? 5000 : 0;
        const char *env = getenv("CF_SPIN_NS");
        if (env && *env) {
            char *end;
            errno = 0;
            long long v = strtoll(env, &end, 10);
            if (*end || errno || v < 0 || v > SPIN_NS_MAX || !(*env >= '0' && *env <= '9'))
                cf__log("CF_SPIN_NS=\"%.40s\" is not a number of nanoseconds in [0, %lld]; "
                        "spinning for the default %lld ns",
                        env, SPIN_NS_MAX, (long long)s);
            else
                s = v;
        }
        atomic_store_explicit(&spin_ns, s, memory_order_relaxed);
    }
    return s;
}

int64_t cf__test_set_spin_ns(int64_t ns)
{
    return atomic_exchange_explicit(&spin_ns, ns < 0 ? -1 : ns, memory_order_relaxed);
}

bool cf__spin_until(bool (*pred)(void *), void *arg, int64_t deadline)
{
    int64_t budget = cf__spin_ns();
    if (budget <= 0)
        return pred(arg);
    int64_t start = 0;
    for (unsigned i = 0;; i++) {
        if (pred(arg))
            return true;
        if ((i & 15) == 0) {
            int64_t now = cf__now_ns();
            if (now >= deadline)
                return false;
            if (start == 0)
                start = now;
            else if (now - start >= budget)
                return false;
            else if (now - start >= 1000)
                sched_yield();
        }
        cf__cpu_relax();
    }
}

/* ---- CPU count ------------------------------------------------------- */

CF__API int cf_usable_cpus(void)
{
    return cf__os_cpu_count();
}

CF__API int cf_thread_pool_default_workers(void)
{
    int n = cf_usable_cpus() + 4;
    return n < 32 ? n : 32;
}

/* ---- thread names ---------------------------------------------------- */

static _Thread_local const char *tls_full_name;
static _Thread_local char tls_kernel_name[16];

void cf__set_thread_name(const char *full)
{
    tls_full_name = full;
    if (full) {
        char shortname[16];
        snprintf(shortname, sizeof shortname, "%s", full);
        cf__os_thread_name_set(shortname);
    }
}

CF__API const char *cf_thread_name(void)
{
    if (tls_full_name)
        return tls_full_name;
    cf__os_thread_name_get(tls_kernel_name, sizeof tls_kernel_name);
    return tls_kernel_name;
}

int cf__thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    /* The new thread inherits this mask: everything blocked except the
     * signals a fault raises in the thread itself. */
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
