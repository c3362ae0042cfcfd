/* SPDX-License-Identifier: MIT */
/*
 * os.h - the operating-system layer: every interface that is not plain
 * C11 + POSIX threads goes through these functions.
 *
 * Two implementations, chosen when the library is configured:
 *   os_linux.c     the default: futexes, eventfd, memfd with seals, pidfd,
 *                  timerfd, /proc/self/exe, PR_SET_PDEATHSIG, getrandom,
 *                  SO_PEERCRED;
 *   os_portable.c  CF_PORTABLE=ON: POSIX.1-2008 only (condition variables,
 *                  pipes, shm_open, argv[0], /dev/urandom), for systems
 *                  other than Linux.
 * Callers never test which one they got, except through the few
 * constants and return values documented here (no seals, no timer
 * descriptor).  docs/design.md "The OS layer" lists what the portable
 * build loses.
 */
#ifndef CF_POSIX_OS_H
#define CF_POSIX_OS_H

#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define CF__API_OS __attribute__((visibility("default")))

/* ---- waiting on a word: cf__futex_wait() / cf__futex_wake() -------------
 * Declared in internal.h.  Linux: FUTEX_WAIT/WAKE_PRIVATE.  Portable: a
 * fixed table of mutex + condition variable buckets hashed by address. */

/* ---- CPUs and thread names ---------------------------------------------- */

/* CPUs this process may run on: the affinity mask and cgroup quota on
 * Linux, the online CPUs elsewhere.  At least 1. */
int cf__os_cpu_count(void);

/* Gives the calling thread a short name (at most 15 bytes) where the
 * system shows one (ps, gdb); does nothing where it has none. */
void cf__os_thread_name_set(const char *shortname);

/* The calling thread's system name into buf; false (buf empty) when the
 * system keeps none. */
bool cf__os_thread_name_get(char *buf, size_t size);

/* ---- wake-up descriptors -------------------------------------------------
 * A descriptor that poll() reports readable once signalled, until
 * drained.  Linux: one eventfd (rfd == wfd).  Portable: a pipe.  Both
 * ends are non-blocking and close-on-exec. */
typedef struct cf__notifier {
    int rfd; /* poll this; -1 when closed */
    int wfd; /* signal through this */
} cf__notifier;

/* 0, or -1 with errno set (n->rfd = n->wfd = -1). */
int cf__notifier_open(cf__notifier *n);
/* Makes it readable.  0, or -1 with errno set; already readable is 0. */
int cf__notifier_signal(const cf__notifier *n);
/* Makes it unreadable again (reads everything pending); true if it was
 * readable. */
bool cf__notifier_drain(const cf__notifier *n);
void cf__notifier_close(cf__notifier *n);

/* ---- timer descriptors (cf_cancel_fd) ------------------------------------
 * Linux: a timerfd on CLOCK_MONOTONIC that stays readable once expired.
 * Portable: none - cf__os_alarm_open() fails with ENOTSUP. */
int cf__os_alarm_open(void);
/* Expires it now. */
void cf__os_alarm_fire(int fd);
/* Expires it at the absolute CLOCK_MONOTONIC time `deadline_ns`. */
void cf__os_alarm_at(int fd, int64_t deadline_ns);

/* ---- shared memory -------------------------------------------------------
 * Anonymous shared-memory files passed between a pool and its workers.
 * Linux: memfd_create, sealable.  Portable: shm_open with a unique name
 * that is unlinked at once, or an unlinked file in $TMPDIR; no seals, so
 * the holder of a descriptor can always shrink, grow or write it. */

#define CF__SEAL_SHRINK 1u
#define CF__SEAL_GROW 2u
#define CF__SEAL_WRITE 4u
#define CF__SEAL_SEAL 8u

/* True where seals exist (Linux).  Without them the process pool keeps
 * big arguments out of memory it shares with a worker, and copies what a
 * worker made before reading it (see cf__os_map_frozen). */
extern const bool cf__os_has_seals;

/* mmap flag that faults every page in at once, where there is one. */
extern const int cf__os_map_populate;

/* A new shared-memory file of size 0, close-on-exec, named `tag` where
 * the system shows names.  Returns the descriptor, or -1 (errno set). */
int cf__os_shm_new(const char *tag);

/* Adds CF__SEAL_* seals.  0, or -1 with errno set; a no-op returning 0
 * where there are no seals. */
int cf__os_shm_seal(int fd, unsigned seals);

/* Does `fd` carry every seal in `seals`?  Always false without seals. */
bool cf__os_shm_sealed(int fd, unsigned seals);

/* Maps the first `size` bytes of a shared-memory file another process
 * made, read-only, so that nobody can change them afterwards: with seals
 * the file must be sealed against shrinking and writing (EPERM if not)
 * and is mapped private; without, its bytes are copied into memory of
 * our own.  EINVAL when the file is shorter than `size`.  `populate`:
 * fault the pages in now.  Returns the mapping (munmap(size) frees it)
 * or NULL (errno set). */
void *cf__os_map_frozen(int fd, size_t size, bool populate);

/* Keeps [p, p+n) out of fork() children (MADV_DONTFORK); a no-op
 * returning 0 where that does not exist. */
int cf__os_mem_dontfork(void *p, size_t n);

/* An unnamed temporary file of our own, read-write: -1 (errno) if none. */
int cf__os_tmpfile(void);

/* pwritev(): writes from iov[0..n) at `off`; returns what it wrote (the
 * portable build may stop after the first buffer) or -1 (errno). */
ssize_t cf__os_pwritev(int fd, const struct iovec *iov, int n, off_t off);

/* ---- sockets ------------------------------------------------------------- */

#ifndef MSG_NOSIGNAL
/* Systems without it (macOS) get SO_NOSIGPIPE set by cf__os_socketpair. */
#define MSG_NOSIGNAL 0
#endif

/* socketpair(AF_UNIX, SOCK_STREAM), both ends close-on-exec.  Portable:
 * FD_CLOEXEC is set just after, so a program that execs from another
 * thread at that moment may pass the two descriptors on. */
int cf__os_socketpair(int sv[2]);

/* Descriptors received with recvmsg() are close-on-exec: at once with the
 * flag cf__os_recv_cloexec (MSG_CMSG_CLOEXEC on Linux, 0 elsewhere), and
 * elsewhere by cf__os_received_fd() on each just after. */
extern const int cf__os_recv_cloexec;
void cf__os_received_fd(int fd);

/* Is `fd` a Unix stream socket whose other end `pid` made under our
 * effective uid?  Linux checks both (SO_PEERCRED); elsewhere the uid is
 * checked where getpeereid() exists and the pid never. */
bool cf__os_socket_from(int fd, pid_t pid);

/* ---- processes ----------------------------------------------------------- */

/* A pidfd of child `pid` (readable once it exits), close-on-exec; -1 when
 * the system has none (the caller then watches the socket for EOF). */
int cf__os_pidfd(pid_t pid);

/* Notes the program's own file from argv[0] (cf_process_init). */
void cf__os_note_exe(const char *argv0);

/* What a worker started as a copy of this program executes: Linux
 * /proc/self/exe (or the noted path, under a loader such as valgrind);
 * portable the path argv[0] resolved to at cf__os_note_exe() (absolute,
 * or found on PATH), NULL if it could not be resolved. */
const char *cf__os_exe(void);

/* Arms SIGKILL for the calling process when its parent dies, where the
 * system can (PR_SET_PDEATHSIG); elsewhere a worker notices its parent's
 * end only at EOF on its socket, between calls. */
void cf__os_die_with_parent(void);

/* posix_spawn action closing every descriptor >= lowfd in the child,
 * where the C library has one (glibc 2.34); elsewhere descriptors the
 * program opened without close-on-exec reach the worker. */
void cf__os_spawn_closefrom(posix_spawn_file_actions_t *fa, int lowfd);

/* Before fork() of a worker (parent) and first thing in the forked
 * worker: stdio buffers the parent had not written yet must not be
 * written twice.  Linux drops the child's copies (__fpurge); portable
 * flushes them in the parent just before the fork. */
void cf__os_stdio_before_fork(void);
void cf__os_stdio_drop_inherited(void);

/* The signal's name without "SIG" ("KILL"), NULL if unknown.  Portable:
 * the signals POSIX names. */
const char *cf__os_signal_abbrev(int sig);

/* n random bytes; 0 or an errno. */
int cf__os_random(void *buf, size_t n);

/* Secure-execution mode: set-user-ID, set-group-ID or raised
 * capabilities (Linux AT_SECURE; elsewhere real != effective ids). */
bool cf__os_secure_mode(void);

/* getenv(), but NULL in secure-execution mode. */
CF__API_OS const char *cf__os_secure_getenv(const char *name);

#endif
