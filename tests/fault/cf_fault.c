/* SPDX-License-Identifier: MIT */
/*
 * cf_fault.c - the wrappers behind cf_fault.h.
 *
 * Linked with `-Wl,--wrap=malloc,...`: the linker sends every call the
 * other objects (the library's and the test's) make to `malloc` to
 * __wrap_malloc, and __real_malloc names the real one.
 *
 * State: all atomics.  `kinds` is written last by cf_fault_arm (release)
 * and read first by the wrappers (acquire), so a wrapper that sees a kind
 * armed also sees the target and mode set with it.
 */
#include "cf_fault.h"

#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

static _Atomic unsigned armed_kinds;
static _Atomic long target;
static _Atomic bool persistent_mode;
static _Atomic long calls;
static _Atomic long failed;
static _Atomic pid_t armed_pid;

void cf_fault_arm(unsigned kinds, long n, bool persistent)
{
    atomic_store(&armed_kinds, 0u);
    atomic_store(&calls, 0);
    atomic_store(&failed, 0);
    atomic_store(&target, n);
    atomic_store(&persistent_mode, persistent);
    atomic_store(&armed_pid, getpid());
    atomic_store_explicit(&armed_kinds, kinds, memory_order_release);
}

void cf_fault_disarm(void)
{
    atomic_store(&armed_kinds, 0u);
}

long cf_fault_calls(void)
{
    return atomic_load(&calls);
}

long cf_fault_failed(void)
{
    return atomic_load(&failed);
}

static const struct {
    const char *name;
    unsigned mask;
} kind_names[] = {
    {"malloc", CF_FAULT_MALLOC},
    {"calloc", CF_FAULT_CALLOC},
    {"realloc", CF_FAULT_REALLOC},
    {"alloc", CF_FAULT_ALLOC},
    {"pthread_create", CF_FAULT_PTHREAD_CREATE},
    {"posix_spawn", CF_FAULT_POSIX_SPAWN},
    {"socketpair", CF_FAULT_SOCKETPAIR},
    {"memfd_create", CF_FAULT_MEMFD_CREATE},
    {"mmap", CF_FAULT_MMAP},
    {"all", CF_FAULT_ALL},
};

bool cf_fault_arm_from_env(void)
{
    const char *spec = getenv("CF_FAULT");
    if (!spec || !*spec)
        return false;
    char *end;
    long n = strtol(spec, &end, 10);
    bool persistent = *end == '+';
    if (n < 0 || end == spec || (*end && strcmp(end, "+") != 0))
        return false;
    unsigned kinds = 0;
    const char *list = getenv("CF_FAULT_KINDS");
    if (!list || !*list)
        list = "all";
    for (const char *at = list; *at;) {
        size_t len = strcspn(at, ",");
        bool known = false;
        for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++) {
            if (strlen(kind_names[i].name) == len && memcmp(kind_names[i].name, at, len) == 0) {
                kinds |= kind_names[i].mask;
                known = true;
            }
        }
        if (!known)
            return false;
        at += len;
        if (*at == ',')
            at++;
    }
    cf_fault_arm(kinds, n, persistent);
    return true;
}

/* Counts a call of `kind`; true if it must fail. */
static bool hit(unsigned kind)
{
    if (!(atomic_load_explicit(&armed_kinds, memory_order_acquire) & kind))
        return false;
    if (getpid() != atomic_load(&armed_pid))
        return false;
    long c = atomic_fetch_add(&calls, 1) + 1;
    long n = atomic_load(&target);
    if (n <= 0 || c < n || (c > n && !atomic_load(&persistent_mode)))
        return false;
    atomic_fetch_add(&failed, 1);
    return true;
}

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);
int __real_posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);
int __real_socketpair(int domain, int type, int protocol, int sv[2]);
int __real_memfd_create(const char *name, unsigned int flags);
int __real_shm_open(const char *name, int oflag, mode_t mode);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);
int __wrap_posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);
int __wrap_socketpair(int domain, int type, int protocol, int sv[2]);
int __wrap_memfd_create(const char *name, unsigned int flags);
int __wrap_shm_open(const char *name, int oflag, mode_t mode);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);

void *__wrap_malloc(size_t size)
{
    if (hit(CF_FAULT_MALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (hit(CF_FAULT_CALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    if (hit(CF_FAULT_REALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_realloc(p, size);
}

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg)
{
    if (hit(CF_FAULT_PTHREAD_CREATE))
        return EAGAIN;
    return __real_pthread_create(t, attr, fn, arg);
}

/* The hook: set before the spawn it must see, by the thread that later
 * clears it; the release/acquire pair hands `spawn_hook_arg` over. */
static void (*_Atomic spawn_hook)(void *);
static void *spawn_hook_arg;

void cf_fault_set_spawn_hook(void (*fn)(void *), void *arg)
{
    spawn_hook_arg = arg;
    atomic_store_explicit(&spawn_hook, fn, memory_order_release);
}

int __wrap_posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    void (*fn)(void *) = atomic_load_explicit(&spawn_hook, memory_order_acquire);
    if (fn)
        fn(spawn_hook_arg);
    if (hit(CF_FAULT_POSIX_SPAWN))
        return ENOMEM;
    return __real_posix_spawn(pid, path, fa, attr, argv, envp);
}

int __wrap_socketpair(int domain, int type, int protocol, int sv[2])
{
    if (hit(CF_FAULT_SOCKETPAIR)) {
        errno = EMFILE;
        return -1;
    }
    return __real_socketpair(domain, type, protocol, sv);
}

int __wrap_memfd_create(const char *name, unsigned int flags)
{
    if (hit(CF_FAULT_MEMFD_CREATE)) {
        errno = EMFILE;
        return -1;
    }
    return __real_memfd_create(name, flags);
}

/* The portable build's memfd_create: the same kind of fault. */
int __wrap_shm_open(const char *name, int oflag, mode_t mode)
{
    if (hit(CF_FAULT_MEMFD_CREATE)) {
        errno = EMFILE;
        return -1;
    }
    return __real_shm_open(name, oflag, mode);
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (hit(CF_FAULT_MMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return __real_mmap(addr, len, prot, flags, fd, off);
}
