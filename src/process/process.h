/* SPDX-License-Identifier: MIT */
/*
 * process.h - what the two halves of the process engine share: the pool
 * (process_pool.c, in the parent) and the worker loop (process_worker.c,
 * in each worker process), plus the socket transport of the frames that
 * src/remote/wire.h lays out.  Nothing outside src/process includes it
 * except the tests and fuzzers that drive the engine from outside.
 */
#ifndef CF_PROCESS_H
#define CF_PROCESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"
#include "wire.h"

/* Big results (see CF__SHM_RESULT_MIN) are laid out as the RESULT frame the
 * parent maps: this prefix, then the bytes. */
#define CF__SHM_RESULT_PREFIX 14 /* u32 n, u8 ok, u8 kind, u64 size */
int cf__worker_store_big(cf_future *f, const cf_value *v);
/* An exec'd worker's environment holds CF__WORKER_ENV =
 * "<fd>:<parent pid>:<key in hex>", and the parent writes the same
 * CF__WORKER_KEY random bytes into the socket before anything else; see
 * cf_process_init() for what is checked before the program acts as a
 * worker. */
#define CF__WORKER_ENV "CFUTURES_WORKER"
#define CF__WORKER_KEY 16
extern bool cf__process_init_called; /* written once in main's thread */
extern char **cf__process_argv;
/* Runs the worker loop on socket `fd`; never returns. */
_Noreturn void cf__worker_run(int fd);

/* In a worker process: the id of the CALL frame being run (see wire.h). */
extern uint16_t cf__worker_call_id;

/* ---- transport (process_worker.c, used by both halves) ---------------- */

/* Writes the frame `e` (finished here as `type`, with `id`) to a blocking
 * socket, through a memfd when it is big.  Returns 0 or -1 (errno set). */
int cf__wire_send_blocking(int fd, wire_enc *e, uint8_t type, uint16_t id);

/* recvmsg() into buf, appending received descriptors to fds[*nfds..max)
 * (extras are closed).  Retries EINTR.  Returns the byte count, 0 at EOF,
 * or -1 with errno (EMSGSIZE: descriptors were lost). */
ssize_t cf__wire_recv(int fd, void *buf, size_t len, int flags, int *fds, int *nfds, int max);

/* One sendmsg() of buf with descriptor `mfd` attached to its first byte
 * (retrying EINTR; no SIGPIPE).  Returns bytes sent or -1 with errno. */
ssize_t cf__wire_send_fd(int fd, const void *buf, size_t len, int mfd, int flags);

/* Puts a finished big frame's payload into a new memfd; returns the fd or
 * -1.  The caller sends the SHM header with it. */
int cf__wire_to_memfd(const wire_enc *e);

/* Maps the first `size` bytes of a received memfd read-only (the parent
 * reads what a worker made, and never reuses it); NULL when `size` is 0 or
 * above `max` (checked before anything is mapped), when the memfd is not
 * sealed against shrinking and writing (so its bytes cannot change after
 * they are checked), or smaller than announced (errno EFBIG, EPERM,
 * EINVAL respectively, else mmap's).  Unmap with munmap(p, size). */
void *cf__wire_map(int memfd, uint64_t size, uint64_t max);

#endif
