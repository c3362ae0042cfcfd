/* SPDX-License-Identifier: MIT */
/*
 * os_portable.c - the OS layer from POSIX.1-2008 alone (CF_PORTABLE=ON):
 * see os.h.  Built and tested on Linux; meant for macOS and the BSDs.
 *
 * Design notes
 * - cf__futex_wait/wake: a fixed table of buckets, each a mutex and a
 *   condition variable, picked by hashing the word's address (a "parking
 *   lot").  A waiter compares the word under its bucket's mutex and waits
 *   on the condition variable; a waker changes the word first, then takes
 *   the same mutex to broadcast.  So a waiter either sees the new value
 *   or is already waiting when the broadcast comes: no lost wake-up.
 *   Words that share a bucket wake each other spuriously, which callers
 *   allow for (they re-check).  Condition variables use CLOCK_MONOTONIC
 *   where the system lets them (Clock Selection), so a wall-clock jump
 *   neither stretches nor cuts a timeout there.
 * - fork(): the child makes every bucket afresh (pthread_atfork): its only
 *   thread waits on none of them, and a bucket another thread held at
 *   the fork (only ever for a few instructions) would stay locked there.
 *   Nothing is taken before the fork: holding all 256 mutexes across it
 *   would cost every fork of the program, and ThreadSanitizer cannot
 *   track that many held at once.
 * - Shared memory without seals: the process pool never lets a worker
 *   reach memory the parent reads as a whole except its claim words, and
 *   copies what a worker made before reading it (cf__os_map_frozen).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

/* ---- futexes: hashed condition variables --------------------------------- */

#define BUCKETS 256

static struct bucket {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned waiters; /* guarded by mu: threads in cf__futex_wait on this bucket */
} buckets[BUCKETS];

static pthread_once_t buckets_once = PTHREAD_ONCE_INIT;
static bool monotonic_cv; /* written once, in buckets_make() */

static void buckets_make(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
#if defined(_POSIX_CLOCK_SELECTION) && _POSIX_CLOCK_SELECTION >= 0
    monotonic_cv = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0;
#endif
    for (int i = 0; i < BUCKETS; i++) {
        pthread_mutex_init(&buckets[i].mu, NULL);
        pthread_cond_init(&buckets[i].cv, &ca);
        buckets[i].waiters = 0;
    }
    pthread_condattr_destroy(&ca);
}

static void buckets_child(void)
{
    /* Only this thread exists, and it waits on no bucket. */
    buckets_make();
}

static void buckets_init(void)
{
    buckets_make();
    pthread_atfork(NULL, NULL, buckets_child);
}

/* At library load, before the program can have threads (see cancel_fd.c:
 * no fork() finds the initialisation half done); the pthread_once in
 * bucket_of() covers code that runs before this constructor. */
__attribute__((constructor)) static void buckets_init_at_load(void)
{
    pthread_once(&buckets_once, buckets_init);
}

static struct bucket *bucket_of(const void *word)
{
    pthread_once(&buckets_once, buckets_init);
    uintptr_t a = (uintptr_t)word >> 2;
    a ^= a >> 9;
    return &buckets[(a * 2654435761u) % BUCKETS];
}

/* The absolute time, on the condition variables' clock, of the
 * monotonic deadline.  On the wall clock a deadline centuries away (a
 * timeout of up to 9e9 s is not CF_FOREVER) would pass INT64_MAX: it is
 * held there, as a wrapped one would lie in the past and turn the wait
 * into a spin. */
static struct timespec cv_deadline(int64_t deadline_ns)
{
    int64_t at = deadline_ns;
    if (!monotonic_cv) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t base = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
        int64_t left = deadline_ns - cf__now_ns();
        at = left <= 0 ? base : left > INT64_MAX - base ? INT64_MAX : base + left;
    }
    return (struct timespec){(time_t)(at / 1000000000), (long)(at % 1000000000)};
}

void cf__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    if (deadline_ns != CF__NS_FOREVER && deadline_ns <= cf__now_ns())
        return;
    struct bucket *b = bucket_of(word);
    pthread_mutex_lock(&b->mu);
    /* Liveness: the thread that changes *word calls cf__futex_wake(),
     * which broadcasts under this mutex; or the deadline passes.  One
     * wait only: callers loop and re-check. */
    if (atomic_load(word) == expected) {
        b->waiters++;
        if (deadline_ns == CF__NS_FOREVER) {
            pthread_cond_wait(&b->cv, &b->mu);
        } else {
            struct timespec ts = cv_deadline(deadline_ns);
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
        b->waiters--;
    }
    pthread_mutex_unlock(&b->mu);
}

void cf__futex_wake(_Atomic uint32_t *word, int count)
{
    (void)count; /* the bucket may hold other words' waiters: wake all */
    struct bucket *b = bucket_of(word);
    pthread_mutex_lock(&b->mu);
    if (b->waiters)
        pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* ---- CPUs and thread names ---------------------------------------------- */

int cf__os_cpu_count(void)
{
    long online = -1;
#ifdef _SC_NPROCESSORS_ONLN
    online = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return online > 0 ? (online < INT_MAX ? (int)online : INT_MAX) : 1;
}

void cf__os_thread_name_set(const char *shortname)
{
    (void)shortname; /* POSIX has no thread names */
}

bool cf__os_thread_name_get(char *buf, size_t size)
{
    if (size)
        buf[0] = '\0';
    return false;
}

/* ---- descriptors --------------------------------------------------------- */

static int set_fd_flags(int fd, bool nonblock)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) != 0)
        return -1;
    if (nonblock) {
        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
            return -1;
    }
    return 0;
}

/* ---- wake-up descriptors: a pipe ---------------------------------------- */

int cf__notifier_open(cf__notifier *n)
{
    int p[2];
    n->rfd = n->wfd = -1;
    if (pipe(p) != 0)
        return -1;
    if (set_fd_flags(p[0], true) != 0 || set_fd_flags(p[1], true) != 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        errno = e;
        return -1;
    }
    n->rfd = p[0];
    n->wfd = p[1];
    return 0;
}

int cf__notifier_signal(const cf__notifier *n)
{
    char one = 1;
    ssize_t w;
    do
        w = write(n->wfd, &one, 1);
    while (w < 0 && errno == EINTR);
    /* A full pipe is readable already. */
    return w == 1 || (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ? 0 : -1;
}

bool cf__notifier_drain(const cf__notifier *n)
{
    char buf[64];
    bool any = false;
    for (;;) {
        ssize_t r = read(n->rfd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return any;
        any = true;
        if ((size_t)r < sizeof buf)
            return true;
    }
}

void cf__notifier_close(cf__notifier *n)
{
    if (n->rfd >= 0)
        close(n->rfd);
    if (n->wfd >= 0 && n->wfd != n->rfd)
        close(n->wfd);
    n->rfd = n->wfd = -1;
}

/* ---- timer descriptors: none --------------------------------------------- */

int cf__os_alarm_open(void)
{
    errno = ENOTSUP;
    return -1;
}

void cf__os_alarm_fire(int fd)
{
    (void)fd;
}

void cf__os_alarm_at(int fd, int64_t deadline_ns)
{
    (void)fd;
    (void)deadline_ns;
}

/* ---- shared memory: unlinked shm_open objects ---------------------------- */

const bool cf__os_has_seals = false;
const int cf__os_map_populate = 0;

static _Atomic unsigned shm_seq;

int cf__os_tmpfile(void)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || dir[0] != '/')
        dir = "/tmp";
    char path[4096];
    if (snprintf(path, sizeof path, "%s/cfutures-XXXXXX", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    unlink(path);
    if (set_fd_flags(fd, false) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int cf__os_shm_new(const char *tag)
{
    (void)tag; /* names are gone at once: short ones fit every system */
#ifdef __APPLE__
    /* macOS shared-memory objects take no read()/write() (only mmap) and
     * one ftruncate: the pool needs pwrite and pread (a copy made with
     * pread cannot fault when the writer shrinks the file). */
    return cf__os_tmpfile();
#endif
    for (int attempt = 0; attempt < 16; attempt++) {
        char name[40];
        unsigned seq = atomic_fetch_add_explicit(&shm_seq, 1, memory_order_relaxed);
        unsigned mix = (unsigned)cf__now_ns() ^ (unsigned)(uintptr_t)&seq;
        snprintf(name, sizeof name, "/cf-%lx-%x-%x", (unsigned long)getpid(), seq, mix);
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) {
            shm_unlink(name);
            if (set_fd_flags(fd, false) == 0)
                return fd;
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
            return -1; /* a file would fail the same way */
        if (errno != EEXIST)
            break;
    }
    /* No POSIX shared memory here (or names keep colliding): a file. */
    return cf__os_tmpfile();
}

int cf__os_shm_seal(int fd, unsigned seals)
{
    (void)fd;
    (void)seals;
    return 0;
}

bool cf__os_shm_sealed(int fd, unsigned seals)
{
    (void)fd;
    (void)seals;
    return false;
}

void *cf__os_map_frozen(int fd, size_t size, bool populate)
{
    (void)populate; /* the copy touches every page */
    struct stat st;
    if (fstat(fd, &st) != 0)
        return NULL;
    if (!S_ISREG(st.st_mode)) {
        errno = EPERM; /* a pipe, socket or device: not shared memory */
        return NULL;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size < size) {
        errno = EINVAL;
        return NULL;
    }
    /* The copy lives in a file only we hold, so no other process can
     * shrink or change it once copied: what the caller checks stays. */
    int own = cf__os_shm_new("cfutures-copy");
    if (own < 0)
        return NULL;
    void *p = MAP_FAILED;
    if (ftruncate(own, (off_t)size) == 0)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, own, 0);
    int e = errno;
    close(own);
    if (p == MAP_FAILED) {
        errno = e;
        return NULL;
    }
    size_t done = 0;
    while (done < size) {
        ssize_t r = pread(fd, (char *)p + done, size - done, (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            e = r == 0 ? EINVAL : errno; /* shrunk meanwhile */
            munmap(p, size);
            errno = e;
            return NULL;
        }
        done += (size_t)r;
    }
    mprotect(p, size, PROT_READ);
    return p;
}

int cf__os_mem_dontfork(void *p, size_t n)
{
    (void)p;
    (void)n;
    return 0;
}

ssize_t cf__os_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    /* The first non-empty buffer; the caller loops for the rest. */
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len)
            return pwrite(fd, iov[i].iov_base, iov[i].iov_len, off);
    return 0;
}

/* ---- sockets ------------------------------------------------------------- */

int cf__os_socketpair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        int ok = set_fd_flags(sv[i], false);
#ifdef SO_NOSIGPIPE
        int on = 1;
        if (ok == 0)
            ok = setsockopt(sv[i], SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on);
#endif
        if (ok != 0) {
            int e = errno;
            close(sv[0]);
            close(sv[1]);
            errno = e;
            return -1;
        }
    }
    return 0;
}

const int cf__os_recv_cloexec = 0;

void cf__os_received_fd(int fd)
{
    set_fd_flags(fd, false);
}

bool cf__os_socket_from(int fd, pid_t pid)
{
    (void)pid; /* no portable way to learn the peer's pid */
    int type = 0;
    socklen_t tl = sizeof type;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    memset(&sa, 0, sizeof sa);
    /* An unnamed socket (a socketpair's) may report no family at all. */
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0 ||
        (sa.ss_family != AF_UNIX && sa.ss_family != AF_UNSPEC))
        return false;
#ifdef CF_HAVE_GETPEEREID
    uid_t uid;
    gid_t gid;
    if (getpeereid(fd, &uid, &gid) != 0 || uid != geteuid())
        return false;
#endif
    return true;
}

/* ---- processes ----------------------------------------------------------- */

int cf__os_pidfd(pid_t pid)
{
    (void)pid;
    return -1;
}

/* The program's file, resolved from argv[0] at cf_process_init() (the
 * working directory may change later).  Written once, before any pool
 * exists. */
static char exe_path[4096];
static bool exe_known;

static bool note_path(const char *candidate)
{
    struct stat st;
    if (access(candidate, X_OK) != 0 || stat(candidate, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    char *real = realpath(candidate, NULL);
    if (!real)
        return false;
    bool fits = strlen(real) < sizeof exe_path;
    if (fits)
        strcpy(exe_path, real);
    free(real);
    return fits;
}

void cf__os_note_exe(const char *argv0)
{
    exe_known = false;
    if (!argv0 || !argv0[0])
        return;
    if (strchr(argv0, '/')) {
        exe_known = note_path(argv0);
        return;
    }
    /* A bare name was found on PATH, as execvp() does. */
    const char *path = getenv("PATH");
    if (!path)
        return;
    size_t namelen = strlen(argv0);
    for (const char *at = path;;) {
        const char *end = strchr(at, ':');
        size_t dirlen = end ? (size_t)(end - at) : strlen(at);
        char cand[4096];
        if (dirlen + namelen + 2 <= sizeof cand) {
            if (dirlen == 0)
                snprintf(cand, sizeof cand, "./%s", argv0); /* empty entry: "." */
            else
                snprintf(cand, sizeof cand, "%.*s/%s", (int)dirlen, at, argv0);
            if (note_path(cand)) {
                exe_known = true;
                return;
            }
        }
        if (!end)
            return;
        at = end + 1;
    }
}

const char *cf__os_exe(void)
{
    return exe_known ? exe_path : NULL;
}

void cf__os_die_with_parent(void)
{
}

void cf__os_spawn_closefrom(posix_spawn_file_actions_t *fa, int lowfd)
{
    (void)fa;
    (void)lowfd;
}

void cf__os_stdio_before_fork(void)
{
    /* Written now, so the child's copies of the buffers are empty (the
     * child cannot drop them portably).  Output another thread buffers
     * between this and the fork may still be written twice. */
    fflush(stdout);
    fflush(stderr);
}

void cf__os_stdio_drop_inherited(void)
{
}

const char *cf__os_signal_abbrev(int sig)
{
    static const struct {
        int sig;
        const char *name;
    } names[] = {
        {SIGABRT, "ABRT"}, {SIGALRM, "ALRM"}, {SIGBUS, "BUS"},   {SIGCHLD, "CHLD"},
        {SIGCONT, "CONT"}, {SIGFPE, "FPE"},   {SIGHUP, "HUP"},   {SIGILL, "ILL"},
        {SIGINT, "INT"},   {SIGKILL, "KILL"}, {SIGPIPE, "PIPE"}, {SIGQUIT, "QUIT"},
        {SIGSEGV, "SEGV"}, {SIGSTOP, "STOP"}, {SIGTERM, "TERM"}, {SIGTSTP, "TSTP"},
        {SIGTTIN, "TTIN"}, {SIGTTOU, "TTOU"}, {SIGUSR1, "USR1"}, {SIGUSR2, "USR2"},
        {SIGTRAP, "TRAP"}, {SIGSYS, "SYS"},   {SIGXCPU, "XCPU"}, {SIGXFSZ, "XFSZ"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].sig == sig)
            return names[i].name;
    return NULL;
}

int cf__os_random(void *buf, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    size_t done = 0;
    int err = 0;
    while (done < n) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            err = r < 0 ? errno : EIO;
            break;
        }
        done += (size_t)r;
    }
    close(fd);
    return err;
}

bool cf__os_secure_mode(void)
{
    return getuid() != geteuid() || getgid() != getegid();
}

const char *cf__os_secure_getenv(const char *name)
{
    return cf__os_secure_mode() ? NULL : getenv(name);
}
