/* SPDX-License-Identifier: MIT */
/*
 * harness.h - shared scaffolding for the cmocka test programs.
 *
 * Each test program lists its tests with cmocka_unit_test() and ends with
 * CF_TEST_MAIN(tests).  ctest runs every test as its own process
 * (`prog <test-name>`), with a TIMEOUT; inside, a watchdog alarm fails a
 * test that deadlocks with a clear message before ctest's limit hits.
 * CF_TEST_TIMEOUT_SCALE (an integer, default 1) stretches the watchdog for
 * sanitizer builds.
 *
 * Synchronise with cf_test_event (a one-shot latch), not sleeps.
 */
#ifndef CF_TEST_HARNESS_H
#define CF_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfutures.h"

/* Skips the calling test in a library built with CF_PORTABLE (POSIX
 * interfaces only), saying why: for what only the Linux build has.  ctest
 * reports the case as skipped (tests/CMakeLists.txt), not passed. */
#ifdef CF_TEST_PORTABLE
#define CF_SKIP_IF_PORTABLE(why)                                              \
    do {                                                                      \
        print_message("portable build: %s\n", why);                          \
        skip();                                                               \
    } while (0)
#else
#define CF_SKIP_IF_PORTABLE(why) ((void)0)
#endif

/* Seconds a single test may run before the watchdog fails it (before
 * scaling).  ctest's own TIMEOUT is set above this. */
#ifndef CF_TEST_WATCHDOG_SECONDS
#define CF_TEST_WATCHDOG_SECONDS 20
#endif

#include "cf_test_scale.h" /* cf_test_scale() */

static const char *cf_test_current_name = "?";

/* From the watchdog: every thread's stack of this process on stderr, by
 * /usr/bin/gdb when the machine has it, so that a hang seen once (in CI)
 * says where it was.  Only async-signal-safe calls: vfork (no fork
 * handlers run; the child only execs or _exits), execv, waitpid. */
static void cf_test_dump_stacks(void)
{
    static char gdb[] = "/usr/bin/gdb";
    if (access(gdb, X_OK) != 0)
        return;
    char pid[24], rev[24];
    int n = 0;
    for (long p = (long)getpid(); n == 0 || p > 0; p /= 10)
        rev[n++] = (char)('0' + p % 10);
    for (int i = 0; i < n; i++)
        pid[i] = rev[n - 1 - i];
    pid[n] = '\0';
    static char a0[] = "gdb", a1[] = "-p", a3[] = "-batch", a4[] = "-nx", a5[] = "-ex",
                a6[] = "thread apply all bt 30";
    char *argv[] = {a0, a1, pid, a3, a4, a5, a6, NULL};
    pid_t c = vfork();
    if (c == 0) {
        dup2(2, 1);
        execv(gdb, argv);
        _exit(127);
    }
    if (c > 0) {
        int st;
        waitpid(c, &st, 0);
    }
}

static void cf_test_on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "watchdog: test exceeded its time limit (deadlock?): ";
    ssize_t r = write(2, msg, sizeof msg - 1);
    r = write(2, cf_test_current_name, strlen(cf_test_current_name));
    r = write(2, "\n", 1);
    (void)r;
    cf_test_dump_stacks();
    _exit(3);
}

/* Monotonic seconds. */
static inline double cf_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A one-shot latch: set() once, wait() returns when set or after `timeout`
 * seconds (returns false on timeout).  Static-initialisable. */
typedef struct cf_test_event {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int set;
} cf_test_event;
#define CF_TEST_EVENT_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

static inline void cf_test_event_init(cf_test_event *e)
{
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->set = 0;
}
static inline void cf_test_event_set(cf_test_event *e)
{
    pthread_mutex_lock(&e->mu);
    e->set = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}
static inline bool cf_test_event_is_set(cf_test_event *e)
{
    pthread_mutex_lock(&e->mu);
    int s = e->set;
    pthread_mutex_unlock(&e->mu);
    return s != 0;
}
static inline bool cf_test_event_wait(cf_test_event *e, double timeout)
{
    double end = cf_test_now() + timeout * cf_test_scale();
    pthread_mutex_lock(&e->mu);
    while (!e->set) {
        double left = end - cf_test_now();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + (left > 0.05 ? 0.05 : left);
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&e->cv, &e->mu, &ts);
    }
    int s = e->set;
    pthread_mutex_unlock(&e->mu);
    return s != 0;
}

/* Asserts a cfutures call returned `expected`, printing both names and the
 * thread's last error message when it did not. */
#define assert_cf(expected, call)                                             \
    do {                                                                      \
        int cf__rc = (call);                                                  \
        if (cf__rc != (expected))                                             \
            fail_msg("%s returned %s (%s), expected %s; last error: %s",      \
                     #call, cf_err_name(cf__rc), cf_strerror(cf__rc),         \
                     cf_err_name(expected), cf_last_error_message());         \
    } while (0)

#define assert_ok(call) assert_cf(CF_OK, call)

/* What main() calls first, where worker copies of the program stop; a
 * test program of another engine defines it before including this. */
#ifndef CF_TEST_PROCESS_INIT
#define CF_TEST_PROCESS_INIT(argc, argv) cf_process_init(argc, argv)
#endif

#ifdef CF_TEST_RETRY_SIGNATURE
#include <errno.h>
#include <sys/prctl.h>

/* A known platform flake the project cannot fix: a test program defines
 * CF_TEST_RETRY_SIGNATURE (an initializer of a NULL-terminated list of
 * strings) and CF_TEST_RETRY_WHY before including this header.  A test run
 * by name (as ctest runs it) then runs in a child process; when the child
 * fails and its output - with the watchdog's stack dump - holds every
 * string of the signature, the test runs once more, and both the output
 * and the notice stay in the log.  Any other failure, and a second one of
 * any kind, is the test's result, so a hang of the project's own stays a
 * failure.  CF_TEST_RETRIES (default 1) is how many times a test may be
 * run again that way; ctest's TIMEOUT for such a program covers that
 * many watchdogs and one more.
 * Returns the exit status to end with, or -1 to run the test here (in the
 * child, or when the child cannot be started). */
/* Copies what the child wrote to `fd` past *len to stdout, and keeps it
 * in *out (NULL after a failed allocation: no retry then). */
static void cf_test_copy_output(int fd, char **out, size_t *len, size_t *cap)
{
    char buf[4096];
    ssize_t r;
    while ((r = pread(fd, buf, sizeof buf, (off_t)*len)) > 0 || (r < 0 && errno == EINTR)) {
        if (r < 0)
            continue;
        fwrite(buf, 1, (size_t)r, stdout);
        if (*out && *len + (size_t)r + 1 > *cap) {
            size_t ncap = (*len + (size_t)r + 1) * 2;
            char *n = realloc(*out, ncap);
            if (!n) {
                free(*out);
                *out = NULL;
            } else {
                *out = n;
                *cap = ncap;
            }
        }
        if (*out) {
            memcpy(*out + *len, buf, (size_t)r);
            (*out)[*len + (size_t)r] = '\0';
        }
        *len += (size_t)r;
    }
    fflush(stdout);
}

#ifndef CF_TEST_RETRIES
#define CF_TEST_RETRIES 1
#endif

static int cf_test_supervise(char **argv)
{
    static const char *const signature[] = CF_TEST_RETRY_SIGNATURE;
    if (getenv("CF_TEST_SUPERVISED"))
        return -1;
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0)
        return -1;
    exe[k] = '\0';
    /* An inherited SIG_IGN would make the kernel reap the child itself,
     * and waitpid() below fail. */
    signal(SIGCHLD, SIG_DFL);
    pid_t self = getpid();
    for (int attempt = 1;; attempt++) {
        /* The child's CF_TEST_SUPERVISED is its attempt, from 1.  This
         * process has no other thread (main's first steps). */
        char nth[16];
        snprintf(nth, sizeof nth, "%d", attempt);
        if (setenv("CF_TEST_SUPERVISED", nth, 1) != 0)
            return -1;
        char path[] = "/tmp/cf-test-output-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0)
            return -1;
        unlink(path);
        fflush(stdout);
        fflush(stderr);
        pid_t c = fork();
        if (c < 0) {
            close(fd);
            return -1;
        }
        if (c == 0) {
            /* Ends with us if ctest kills us at its TIMEOUT (and we may
             * have gone already). */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != self)
                _exit(125);
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
            execv(exe, argv);
            fprintf(stderr, "harness: cannot run %s: %s\n", exe, strerror(errno));
            _exit(127);
        }
        /* Copy the child's output as it comes (so that a case ctest
         * kills still leaves its log), keeping it to look for the
         * signature.  Liveness: the child's watchdog (alarm, as in main()
         * below) ends it after CF_TEST_WATCHDOG_SECONDS scaled, or the
         * case's own; we look every 20 ms. */
        size_t len = 0, cap = 1 << 16;
        char *out = malloc(cap);
        if (out)
            out[0] = '\0';
        int st = 0;
        for (;;) {
            pid_t r = waitpid(c, &st, WNOHANG);
            cf_test_copy_output(fd, &out, &len, &cap);
            if (r == c)
                break;
            if (r < 0 && errno != EINTR) {
                fprintf(stderr, "harness: waitpid: %s\n", strerror(errno));
                free(out);
                close(fd);
                return 1;
            }
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        close(fd);
        int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        size_t nsig = 0, found = 0;
        for (; signature[nsig]; nsig++)
            if (out && strstr(out, signature[nsig]))
                found++;
        free(out);
        if (rc == 0 || attempt > CF_TEST_RETRIES || nsig == 0 || found != nsig)
            return rc;
        fprintf(stderr, "\nharness: %s failed on a known platform flake (%s); running it "
                        "once more (run %d of at most %d)\n\n",
                argv[1], CF_TEST_RETRY_WHY, attempt + 1, CF_TEST_RETRIES + 1);
        fflush(stderr);
    }
}
#define CF_TEST_SUPERVISE(argv) cf_test_supervise(argv)
#else
#define CF_TEST_SUPERVISE(argv) (-1)
#endif

/* main(): with no argument runs every test; with one argument runs only the
 * test of that name (how ctest calls it); `--list` prints the names. */
#define CF_TEST_MAIN(tests)                                                   \
    int main(int argc, char **argv)                                           \
    {                                                                         \
        CF_TEST_PROCESS_INIT(argc, argv); /* workers stop here */            \
        size_t n = sizeof(tests) / sizeof((tests)[0]);                        \
        if (argc > 1 && strcmp(argv[1], "--list") == 0) {                     \
            for (size_t i = 0; i < n; i++)                                    \
                printf("%s\n", (tests)[i].name);                              \
            return 0;                                                         \
        }                                                                     \
        signal(SIGALRM, cf_test_on_alarm);                                    \
        signal(SIGPIPE, SIG_IGN);                                             \
        if (argc > 1) {                                                       \
            int cf__sup = CF_TEST_SUPERVISE(argv);                            \
            if (cf__sup >= 0)                                                 \
                return cf__sup;                                               \
            cf_test_current_name = argv[1];                                   \
            for (size_t i = 0; i < n; i++) {                                  \
                if (strcmp((tests)[i].name, argv[1]) == 0) {                  \
                    alarm((unsigned)(CF_TEST_WATCHDOG_SECONDS * cf_test_scale())); \
                    return _cmocka_run_group_tests(argv[0], &(tests)[i], 1,   \
                                                   NULL, NULL);               \
                }                                                             \
            }                                                                 \
            fprintf(stderr, "no test named %s\n", argv[1]);                   \
            return 2;                                                         \
        }                                                                     \
        alarm((unsigned)(CF_TEST_WATCHDOG_SECONDS * cf_test_scale() * (unsigned)n)); \
        return cmocka_run_group_tests(tests, NULL, NULL);                     \
    }

#endif
