/* SPDX-License-Identifier: MIT */
/*
 * cf_fault.h - fault injection for the test programs.
 *
 * A test program linked with cf_fault.c and the linker options
 * CF_FAULT_WRAP_OPTIONS (tests/CMakeLists.txt) reaches the functions below
 * through wrappers (`ld --wrap`): every call the library makes to them
 * goes through a counter first.  Nothing in the library changes; the
 * static library is linked as it is shipped.
 *
 * Armed, the wrappers fail the nth counted call (counting from 1), or the
 * nth and every later one ("persistent"), as the real function fails when
 * the system is out of the resource: malloc/calloc/realloc return NULL
 * with ENOMEM (realloc leaves the block alone), pthread_create returns
 * EAGAIN, posix_spawn ENOMEM, socketpair/memfd_create -1 with EMFILE (and
 * shm_open, the portable build's memfd_create, counted as that), mmap
 * MAP_FAILED with ENOMEM.  Only calls made by the process that armed the
 * counter count: a forked child runs unharmed.
 *
 * Calls from libc itself or from other shared libraries (cmocka) do not
 * go through the wrappers.  Any thread may call these functions; the
 * counter is one atomic, so which thread's call is the nth depends on
 * scheduling when several threads allocate at once.
 */
#ifndef CF_FAULT_H
#define CF_FAULT_H

#include <stdbool.h>

/* Which functions count (a mask). */
enum {
    CF_FAULT_MALLOC = 1u << 0,
    CF_FAULT_CALLOC = 1u << 1,
    CF_FAULT_REALLOC = 1u << 2,
    CF_FAULT_PTHREAD_CREATE = 1u << 3,
    CF_FAULT_POSIX_SPAWN = 1u << 4,
    CF_FAULT_SOCKETPAIR = 1u << 5,
    CF_FAULT_MEMFD_CREATE = 1u << 6,
    CF_FAULT_MMAP = 1u << 7,
    CF_FAULT_ALLOC = CF_FAULT_MALLOC | CF_FAULT_CALLOC | CF_FAULT_REALLOC,
    CF_FAULT_ALL = (1u << 8) - 1
};

/* Starts counting calls of the functions in `kinds` from zero; the nth
 * fails (n >= 1), and with `persistent` every later one too.  n 0 only
 * counts (to learn how many calls a scenario makes). */
void cf_fault_arm(unsigned kinds, long n, bool persistent);

/* Arms from the environment: CF_FAULT="<n>" (the nth call fails) or
 * "<n>+" (from the nth on), CF_FAULT_KINDS a comma list of "malloc",
 * "calloc", "realloc", "alloc", "pthread_create", "posix_spawn",
 * "socketpair", "memfd_create", "mmap", "all" (the default).  Returns
 * false (and arms nothing) when CF_FAULT is unset or malformed. */
bool cf_fault_arm_from_env(void);

/* Stops failing and counting.  The counts stay readable. */
void cf_fault_disarm(void);

/* Calls counted since the last arm, and how many of them were failed. */
long cf_fault_calls(void);

/* Calls fn(arg) on the thread that calls posix_spawn, just before the
 * real call, in every process that calls it (armed or not; a forked child
 * sees the hook its parent had): a test holds a pool's manager there, at
 * a known point of replacing a worker.  NULL removes the hook.  Set and
 * removed by one thread, while no spawn is under way. */
void cf_fault_set_spawn_hook(void (*fn)(void *), void *arg);
long cf_fault_failed(void);

#endif
