/* SPDX-License-Identifier: MIT */
/*
 * native_peers.h - the C and C++ task runtimes bench_thread measures beside
 * the thread pool in the same run: oneTBB (task_group, through the C++
 * shim peer_tbb.cpp), libuv (uv_queue_work), GLib (GThreadPool), and a raw
 * futex ping-pong between two threads (the floor of a sleeping hand-off).
 *
 * Each runtime is built in only when its development package was found at
 * configure time; otherwise its `missing` says why and the bench prints a
 * notice instead of its columns.  None of them returns a future: a task
 * writes its result into an array slot and the runtime's own completion
 * signal says when all are done.
 */
#ifndef CF_BENCH_NATIVE_PEERS_H
#define CF_BENCH_NATIVE_PEERS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct native_peer {
    const char *name;    /* e.g. "oneTBB" */
    const char *version; /* of the library built against */
    const char *missing; /* NULL when built in, else why it is not */
    /* Creates the runtime and starts its threads; NULL on failure. */
    void *(*open)(void);
    void (*close)(void *rt);
    /* Runs n tasks, task i storing i + 1 in out[i], submitting at most
     * `batch` before waiting for them all (batch >= n: all in flight at
     * once).  Returns the elapsed ns and adds the submit phases' ns to
     * *submit_ns. */
    uint64_t (*run)(void *rt, size_t n, size_t batch, int64_t *out, uint64_t *submit_ns);
    /* m times: one task, then wait for it; each round trip's ns in ns[j]. */
    void (*round_trip)(void *rt, size_t m, double *ns);
} native_peer;

/* Table of the runtimes, in print order; *count gets its length. */
const native_peer *native_peers(size_t *count);

/* The oneTBB entry (peer_tbb.cpp, or a stub when oneTBB is missing). */
extern const native_peer cf_bench_tbb_peer;

/* The raw futex ping-pong: m round trips between two threads that sleep in
 * FUTEX_WAIT and wake each other with FUTEX_WAKE, never spinning. */
void futex_pingpong(size_t m, size_t warm, double *ns);

uint64_t native_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif
