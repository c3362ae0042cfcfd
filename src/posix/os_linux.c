/* SPDX-License-Identifier: MIT */
/*
 * os_linux.c - the OS layer on Linux (the default build): see os.h.
 *
 * Design notes
 * - Futexes are process-private: cfutures objects are never shared
 *   between processes through memory.  A wait converts the absolute
 *   CLOCK_MONOTONIC deadline into the relative timeout FUTEX_WAIT takes,
 *   so wall-clock jumps never stretch or cut a timeout.
 * - Shared memory is memfd_create(MFD_ALLOW_SEALING): seals are what let
 *   the process pool trust memory a worker can reach (os.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

/* ---- futexes ----------------------------------------------------------- */

void cf__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    struct timespec rel, *timeout = NULL;
    if (deadline_ns != CF__NS_FOREVER) {
        int64_t left = deadline_ns - cf__now_ns();
        if (left <= 0)
            return;
        rel.tv_sec = (time_t)(left / 1000000000);
        rel.tv_nsec = (long)(left % 1000000000);
        timeout = &rel;
    }
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, timeout, NULL, 0);
}

void cf__futex_wake(_Atomic uint32_t *word, int count)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

/* ---- CPUs and thread names ---------------------------------------------- */

/* CPU limit from a cgroup quota, rounded up; 0 when there is none. */
static int cgroup_cpu_limit(void)
{
    char buf[128];
    FILE *fp = fopen("/sys/fs/cgroup/cpu.max", "re");
    if (fp) {
        char quota[64];
        long long period = 0;
        int limit = 0;
        if (fgets(buf, sizeof buf, fp) && sscanf(buf, "%63s %lld", quota, &period) == 2 &&
            strcmp(quota, "max") != 0 && period > 0) {
            long long q = atoll(quota);
            if (q > 0)
                limit = (int)((q + period - 1) / period);
        }
        fclose(fp);
        return limit;
    }
    long long q = -1, p = 0;
    fp = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "re");
    if (fp) {
        if (fscanf(fp, "%lld", &q) != 1)
            q = -1;
        fclose(fp);
    }
    fp = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "re");
    if (fp) {
        if (fscanf(fp, "%lld", &p) != 1)
            p = 0;
        fclose(fp);
    }
    if (q > 0 && p > 0)
        return (int)((q + p - 1) / p);
    return 0;
}

int cf__os_cpu_count(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? (int)online : 1;
    }
    int limit = cgroup_cpu_limit();
    if (limit > 0 && limit < n)
        n = limit;
    return n > 0 ? n : 1;
}

void cf__os_thread_name_set(const char *shortname)
{
    pthread_setname_np(pthread_self(), shortname);
}

bool cf__os_thread_name_get(char *buf, size_t size)
{
    if (pthread_getname_np(pthread_self(), buf, size) == 0)
        return true;
    buf[0] = '\0';
    return false;
}

/* ---- wake-up descriptors: one eventfd ----------------------------------- */

int cf__notifier_open(cf__notifier *n)
{
    n->rfd = n->wfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return n->rfd < 0 ? -1 : 0;
}

int cf__notifier_signal(const cf__notifier *n)
{
    uint64_t one = 1;
    return write(n->wfd, &one, sizeof one) == (ssize_t)sizeof one ? 0 : -1;
}

bool cf__notifier_drain(const cf__notifier *n)
{
    uint64_t v;
    return read(n->rfd, &v, sizeof v) == (ssize_t)sizeof v;
}

void cf__notifier_close(cf__notifier *n)
{
    if (n->rfd >= 0)
        close(n->rfd);
    n->rfd = n->wfd = -1;
}

/* ---- timer descriptors: timerfd ----------------------------------------- */

int cf__os_alarm_open(void)
{
    return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
}

void cf__os_alarm_fire(int fd)
{
    struct itimerspec t = {{0, 0}, {0, 1}};
    timerfd_settime(fd, 0, &t, NULL);
}

void cf__os_alarm_at(int fd, int64_t deadline_ns)
{
    struct itimerspec t = {{0, 0},
                           {(time_t)(deadline_ns / 1000000000), (long)(deadline_ns % 1000000000)}};
    if (deadline_ns <= 0)
        t.it_value = (struct timespec){0, 1}; /* 0 would disarm */
    timerfd_settime(fd, TFD_TIMER_ABSTIME, &t, NULL);
}

/* ---- shared memory: sealable memfds ------------------------------------- */

const bool cf__os_has_seals = true;
const int cf__os_map_populate = MAP_POPULATE;

int cf__os_shm_new(const char *tag)
{
    return memfd_create(tag, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

static int linux_seals(unsigned seals)
{
    return ((seals & CF__SEAL_SHRINK) ? F_SEAL_SHRINK : 0) |
           ((seals & CF__SEAL_GROW) ? F_SEAL_GROW : 0) |
           ((seals & CF__SEAL_WRITE) ? F_SEAL_WRITE : 0) |
           ((seals & CF__SEAL_SEAL) ? F_SEAL_SEAL : 0);
}

int cf__os_shm_seal(int fd, unsigned seals)
{
    return fcntl(fd, F_ADD_SEALS, linux_seals(seals));
}

bool cf__os_shm_sealed(int fd, unsigned seals)
{
    int need = linux_seals(seals);
    int have = fcntl(fd, F_GET_SEALS); /* fails: not a memfd, no seals */
    return have >= 0 && (have & need) == need;
}

void *cf__os_map_frozen(int fd, size_t size, bool populate)
{
    if (!cf__os_shm_sealed(fd, CF__SEAL_SHRINK | CF__SEAL_WRITE)) {
        errno = EPERM; /* not a memfd (no seals), or not sealed */
        return NULL;
    }
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0 || (uint64_t)end < size) {
        errno = EINVAL;
        return NULL;
    }
    /* Private and read-only: the seals make it as good as shared, and
     * mapping a write-sealed memfd shared is refused by kernels before
     * 6.7. */
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE | (populate ? MAP_POPULATE : 0), fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

int cf__os_mem_dontfork(void *p, size_t n)
{
    return madvise(p, n, MADV_DONTFORK);
}

int cf__os_tmpfile(void)
{
    return open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

ssize_t cf__os_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    return pwritev(fd, iov, n, off);
}

/* ---- sockets ------------------------------------------------------------- */

int cf__os_socketpair(int sv[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
}

const int cf__os_recv_cloexec = MSG_CMSG_CLOEXEC;

void cf__os_received_fd(int fd)
{
    (void)fd; /* close-on-exec already */
}

bool cf__os_socket_from(int fd, pid_t pid)
{
    int type = 0, domain = 0;
    struct ucred cred;
    socklen_t tl = sizeof type, dl = sizeof domain, cl = sizeof cred;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM &&
           getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) == 0 && domain == AF_UNIX &&
           getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0 && cred.pid == pid &&
           cred.uid == geteuid();
}

/* ---- processes ----------------------------------------------------------- */

int cf__os_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
#else
    (void)pid;
    return -1;
#endif
}

/* The program's own file, noted by cf_process_init().  Workers normally
 * start from /proc/self/exe, which is always the running image.  Under a
 * loader that runs the program for it - valgrind, whose tool is what
 * /proc/self/exe names while readlink() of it still reports the program -
 * that would start the loader without its arguments, so the worker starts
 * from the program's path instead, as long as that path still holds the
 * file noted at start-up (an upgrade may have replaced it since). */
static struct {
    char path[4096];
    dev_t dev;
    ino_t ino;
    bool differs; /* the path is not the file /proc/self/exe names */
} exe;

void cf__os_note_exe(const char *argv0)
{
    (void)argv0;
    struct stat at_path, running;
    ssize_t n = readlink("/proc/self/exe", exe.path, sizeof exe.path - 1);
    if (n <= 0 || (size_t)n >= sizeof exe.path - 1 || exe.path[0] != '/')
        return;
    exe.path[n] = '\0';
    if (stat(exe.path, &at_path) != 0 || stat("/proc/self/exe", &running) != 0)
        return;
    exe.dev = at_path.st_dev;
    exe.ino = at_path.st_ino;
    exe.differs = at_path.st_dev != running.st_dev || at_path.st_ino != running.st_ino;
}

const char *cf__os_exe(void)
{
    struct stat st;
    if (exe.differs && stat(exe.path, &st) == 0 && st.st_dev == exe.dev && st.st_ino == exe.ino)
        return exe.path;
    return "/proc/self/exe";
}

void cf__os_die_with_parent(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

void cf__os_spawn_closefrom(posix_spawn_file_actions_t *fa, int lowfd)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(fa, lowfd);
#else
    (void)fa;
    (void)lowfd;
#endif
}

void cf__os_stdio_before_fork(void)
{
}

void cf__os_stdio_drop_inherited(void)
{
    __fpurge(stdout);
    __fpurge(stderr);
}

const char *cf__os_signal_abbrev(int sig)
{
    return sigabbrev_np(sig);
}

int cf__os_random(void *buf, size_t n)
{
    ssize_t got = getrandom(buf, n, GRND_NONBLOCK);
    if (got == (ssize_t)n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    got = fd >= 0 ? read(fd, buf, n) : -1;
    int err = errno;
    if (fd >= 0)
        close(fd);
    return got == (ssize_t)n ? 0 : got < 0 ? err : EIO;
}

bool cf__os_secure_mode(void)
{
    return getauxval(AT_SECURE) != 0;
}

const char *cf__os_secure_getenv(const char *name)
{
    return secure_getenv(name);
}
