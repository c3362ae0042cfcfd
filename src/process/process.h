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
#include <string.h>
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
/* Tests only, in a worker process (its worker thread): the result ring's
 * mapping, or NULL before the RING frame (see "the result ring" below). */
unsigned char *cf__worker_ring_map(void);
/* Tests only: called by the manager between its read of a worker's
 * socket and its look at whether that worker exited (the death checks of
 * manager_main), with the worker's pid and whether calls sent to it are
 * still unanswered; NULL in programs. */
extern void (*_Atomic cf__test_hook_before_reap)(pid_t pid, bool unanswered);
/* Tests only: called by the manager right after its last read of a worker
 * it has seen exit, before it decides whether to reap it (try_reap), with
 * the worker's pid and whether that read ran out of memory; NULL in
 * programs. */
extern void (*_Atomic cf__test_hook_after_reap_read)(pid_t pid, bool starved);

/* ---- transport (process_worker.c, used by both halves) ---------------- */

/* Writes the frame `e` (finished here as `type`, with `id`) to a blocking
 * socket, through a memfd when it is big.  Returns 0 or -1 (errno set). */
int cf__wire_send_blocking(int fd, wire_enc *e, uint8_t type, uint16_t id);

/* recvmsg() into buf, appending received descriptors to fds[*nfds..max)
 * (extras are closed).  Retries EINTR.  Returns the byte count, 0 at EOF,
 * or -1 with errno (EMSGSIZE: descriptors were lost).  With `lost` not
 * NULL, descriptors the kernel could not hand over (MSG_CTRUNC: too many,
 * or no room in this process's table) set *lost instead, and the bytes
 * received are returned all the same. */
ssize_t cf__wire_recv(int fd, void *buf, size_t len, int flags, int *fds, int *nfds, int max,
                      bool *lost);

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

/* ---- the result ring ---------------------------------------------------
 *
 * Right after CLAIMS the parent sends RING (WIRE_SHM, u64 size, a memfd of
 * CF__RING_SIZE bytes it made and sealed against shrinking and growing).
 * The worker writes its inline RESULT frames there, byte for byte as on
 * the socket, instead of sending them: no system call per answer while
 * the parent's manager is awake.  Four cache lines of counters (the
 * last holds two words), then CF__RING_BYTES of data (byte k at CF__RING_DATA + k %
 * CF__RING_BYTES):
 *   head      bytes the worker has published (whole frames only), written
 *             by the worker after the bytes;
 *   tail      bytes the parent has copied out, written by the parent: the
 *             worker never overwrites [tail, head);
 *   sleeping  1 while the parent's manager may wait in poll() without
 *             looking at the ring;
 *   sent      bytes the parent has written to the worker's socket so far,
 *             stored (relaxed) by the parent after each write and never
 *             read by it: a worker that expects its next call soon watches
 *             it for a bounded time instead of sleeping in recvmsg() at
 *             once (worker_spin in process_worker.c).  A worker that
 *             writes it only delays its own calls;
 *   alone     (same line, next word) 1 if the job the parent last sent
 *             this worker was then the only one in flight in the pool,
 *             else 0: a one-at-a-time caller, whose next call is worth
 *             spinning for; stored by the parent (relaxed), never read
 *             by it.
 * `head` and `sleeping` are a seq_cst Dekker pair: the worker stores head,
 * then takes sleeping back (exchange with 0), and if it was set writes a
 * BELL frame (a header, no payload) to its socket; the manager stores
 * sleeping, then loads head, and does not wait if there is something new.
 * So an answer is never left in the ring while the manager sleeps - but
 * behind a SOCKET frame (below), whose RESULT is already on its way through
 * the socket and wakes it - and a sleep costs one bell however many
 * answers come meanwhile.
 * Once it has the ring, a worker answers every call there, in order: an
 * inline RESULT frame in full, or, for a RESULT that must go through the
 * socket (a descriptor rides on it, or it is too big to be inline), a
 * SOCKET frame (a header with that id, no payload) just before it sends
 * the RESULT.  It waits for room when the ring is full (after a BELL).
 * So the parent reads the ring strictly in order - every frame there must
 * answer the oldest job, and at a SOCKET frame it stops until that answer
 * has come through the socket, copying nothing more out of the ring
 * meanwhile (what follows answers later jobs; the worker, finding the ring
 * full, waits), so the parent never holds more than one ring's worth of a
 * worker's answers - and takes a RESULT from the socket only
 * when the ring, once looked at, is empty or starts with the SOCKET frame
 * of that answer.  (Empty: a worker that does not use the ring, such as a
 * fault-injected one.)  The parent copies the bytes out before it reads
 * any of them (the worker can still write the ring), checks head against
 * tail and the ring's size, and refuses anything else there, a part of a
 * frame included, as a bad frame. */
#define CF__RING_HEAD 0
#define CF__RING_TAIL 64
#define CF__RING_SLEEPING 128
#define CF__RING_SENT 192
#define CF__RING_ALONE 200
#define CF__RING_DATA 256
#define CF__RING_BYTES ((size_t)256 << 10)
#define CF__RING_SIZE (CF__RING_DATA + CF__RING_BYTES)

static inline _Atomic uint64_t *cf__ring_word(void *map, size_t off)
{
    return (_Atomic uint64_t *)((unsigned char *)map + off);
}

/* Numbers on the wire without a room check per byte group: the 8 bytes
 * of `v`, least significant first (wenc_u64's layout, which wdec_u64
 * reads), and back.  For the fast paths of the parent's and the worker's
 * encoders and decoders, which write and read exactly what wenc_value()
 * and wdec_value() do for numbers. */
static inline unsigned char *cf__put_le64(unsigned char *o, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(o, &v, 8);
#else
    for (int b = 0; b < 8; b++)
        o[b] = (unsigned char)(v >> (8 * b));
#endif
    return o + 8;
}

static inline uint64_t cf__get_le64(const unsigned char *p)
{
    uint64_t x = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&x, p, 8);
#else
    for (int b = 7; b >= 0; b--)
        x = x << 8 | p[b];
#endif
    return x;
}

/* A value as wenc_value() writes it, straight into the frame, if it is a
 * number (or none) and `room` bytes are there for it; returns the end, or
 * NULL (nothing written that counts: use wenc_value()). */
static inline unsigned char *cf__put_number(unsigned char *o, size_t room, const cf_value *v)
{
    if (v->kind == CF_I64 && room >= 9) {
        *o = CF_I64;
        return cf__put_le64(o + 1, (uint64_t)v->as.i64);
    }
    if (v->kind == CF_F64 && room >= 9) {
        uint64_t bits;
        memcpy(&bits, &v->as.f64, 8);
        *o = CF_F64;
        return cf__put_le64(o + 1, bits);
    }
    if (v->kind == CF_NONE && room >= 1) {
        *o = CF_NONE;
        return o + 1;
    }
    return NULL;
}

/* A value as wdec_value() reads it, if it is an integer and all of it is
 * there; false leaves `d` as it was (use wdec_value()). */
static inline bool cf__get_int(wire_dec *d, cf_value *v)
{
    if (d->bad || d->end - d->p < 9 || d->p[0] != CF_I64)
        return false;
    *v = cf_i64((int64_t)cf__get_le64(d->p + 1));
    d->p += 9;
    return true;
}

#endif
