/* SPDX-License-Identifier: MIT */
/*
 * wire.h - the frames a process pool and its workers exchange, and the
 * encoding of values and failures the MPI engine's messages reuse.
 *
 * Every frame is an 8-byte header followed by `len` payload bytes:
 *
 *     u32 len | u8 type | u8 flags | u16 id | payload
 *
 * `id` attributes a frame to a job: the parent numbers the CALL frames it
 * sends a worker (per worker, wrapping), and a RESULT carries the id of
 * the CALL it answers, so a result that does not belong to the oldest
 * unanswered job is caught rather than taken for its answer.  LEND
 * carries the id of its CALL; other frames carry 0.
 *
 * All integers are little-endian (parent and worker are the same program
 * on the same machine, but the format does not rely on it).  A payload
 * larger than WIRE_INLINE_MAX is not sent through the socket: the sender
 * writes it into a memfd and sends a header with WIRE_SHM set, a u64 size
 * as payload and the memfd attached (SCM_RIGHTS).  The receiver maps it;
 * the parent only takes memfds sealed against shrinking and writing.
 *
 * Buffers go round (see shm.c): the parent may send LEND (WIRE_SHM, u64
 * capacity, a memfd attached) just before a CALL with one call: the worker
 * may make that call's result in it, and then answers with a RESULT frame
 * flagged WIRE_SHM | WIRE_LENT whose u64 is the bytes used and which
 * carries no descriptor.  The worker keeps the mappings of the buffers its
 * latest big call used, since the parent sends the same ones again.
 *
 * Claim words: right after INIT the parent sends CLAIMS (WIRE_SHM, u64
 * size, the memfd attached): an array of u32 words in memory shared with
 * the worker.  The calls a worker is sent are numbered in order from 0,
 * by both sides without saying so (a CALL of n calls takes the next n
 * numbers), and call k's word is word k % (size / 4).  The worker moves
 * the word PENDING -> RUNNING (compare-and-swap) just before it begins
 * the call; if the parent got there first (PENDING -> CANCELLED) the call
 * is skipped and answered as such.  See CF__CLAIM_* in internal.h.
 *
 * Payloads (strings carry their NUL on the wire, so a receiver can borrow
 * them in place; the decoder checks it):
 *   CALL    u32 n, u8 namelen, name (no NUL), n x { u8 nargs, nargs x value }
 *   INIT    u32 ntasks, ntasks x { u8 namelen, name }, u8 has_init,
 *           [same as CALL with n = 1].  The names are the tasks the pool
 *           will run (cf_process_pool_options.tasks): a worker that lacks
 *           any answers HELLO with ok = 2 and a failure naming them.
 *   EXIT    (empty)
 *   LEND    u64 capacity (with WIRE_SHM; the memfd is the buffer)
 *   HELLO   u32 pid, u8 ok, [failure when ok is 0 (the initializer
 *           failed) or 2 (tasks missing: see INIT)]
 *   CLAIMS  u64 size (with WIRE_SHM; the memfd holds the words)
 *   RING    u64 size (with WIRE_SHM; the memfd is the process engine's
 *           result ring: src/process/process.h)
 *   BELL    (empty; from a worker: look at the ring)
 *   SOCKET  (empty, only in the ring; its id's RESULT comes through the
 *           socket: see process.h)
 *   RESULT  u32 n, n x { u8 outcome, then a value if 1 (ok), a failure
 *           if 0, nothing if 2 (skipped: cancelled before it began) }
 *   value   u8 kind, then i64/f64: 8 bytes; bytes: u64 size, bytes;
 *           str: u64 size (with NUL), bytes; none: nothing
 *   failure i32 code, u32 len, type+NUL, u32 len, message+NUL
 *
 * Decoding never trusts a length: every read is bounds-checked and a bad
 * frame only sets `bad`.
 */
#ifndef CF_WIRE_H
#define CF_WIRE_H

#include <stdint.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WIRE_HDR 8
#define WIRE_INLINE_MAX ((size_t)64 * 1024)
/* Largest payload we accept through shared memory: a chunk of a map may
 * carry several maximal values. */
#define WIRE_SHM_MAX ((uint64_t)16 << 30)
/* The longest failure type or message on the wire (longer ones are cut
 * by the encoder, refused by the decoder), so that one call's outcome,
 * value or failure, fits in WIRE_OUTCOME_MAX bytes and a frame's size can
 * be bounded by its number of calls before anything is mapped. */
#define WIRE_TEXT_MAX ((size_t)CF_PAYLOAD_MAX / 2)
#define WIRE_OUTCOME_MAX ((uint64_t)CF_PAYLOAD_MAX + 64)
/* Values this big are referenced, not copied, by the encoder. */
#define WIRE_REF_MIN ((size_t)16 * 1024)
#define WIRE_MAX_REFS 64

enum {
    WIRE_CALL = 1,
    WIRE_INIT = 2,
    WIRE_EXIT = 3,
    WIRE_LEND = 4,
    WIRE_CLAIMS = 5,
    WIRE_RING = 6,
    WIRE_HELLO = 16,
    WIRE_RESULT = 17,
    WIRE_BELL = 18,
    WIRE_SOCKET = 19,
};
#define WIRE_SHM 0x1
#define WIRE_LENT 0x2 /* with WIRE_SHM: payload in the buffer lent with the call */
#define WIRE_FLAGS (WIRE_SHM | WIRE_LENT)

/* RESULT outcomes. */
enum { WIRE_FAILED = 0, WIRE_OK = 1, WIRE_SKIPPED = 2 };
/* HELLO's ok byte. */
enum { WIRE_HELLO_INIT_FAILED = 0, WIRE_HELLO_OK = 1, WIRE_HELLO_MISSING = 2 };
/* The most task names an INIT frame lists. */
#define WIRE_TASKS_MAX 4096

/* ---- encoding ---------------------------------------------------------- */

/* A frame under construction: small fields are copied into `buf`, big
 * values are referenced (refs[i] goes after buf[0..at[i])), so a 64 MiB
 * argument is copied once, by the kernel, into the socket or memfd. */
typedef struct wire_enc {
    unsigned char *buf;
    size_t len, cap;
    size_t nrefs;
    size_t ref_at[WIRE_MAX_REFS];
    const void *ref_ptr[WIRE_MAX_REFS];
    size_t ref_len[WIRE_MAX_REFS];
    size_t total; /* payload bytes: len + every ref */
    bool oom;
} wire_enc;

static inline void wenc_put(wire_enc *e, const void *p, size_t n);

/* Starts a frame: room for the header, nothing else (allocating the
 * buffer the first time, so even an empty frame has a header to write). */
static inline void wenc_reset(wire_enc *e)
{
    e->len = 0;
    e->nrefs = 0;
    e->total = 0;
    e->oom = false;
    static const unsigned char zero[WIRE_HDR];
    wenc_put(e, zero, WIRE_HDR);
}

static inline void wenc_free(wire_enc *e)
{
    free(e->buf);
    e->buf = NULL;
    e->cap = 0;
}

static inline void wenc_put(wire_enc *e, const void *p, size_t n)
{
    if (e->oom)
        return;
    if (e->len + n > e->cap) {
        size_t ncap = e->cap ? e->cap : 256;
        while (ncap < e->len + n)
            ncap *= 2;
        unsigned char *nb = realloc(e->buf, ncap);
        if (!nb) {
            e->oom = true;
            return;
        }
        e->buf = nb;
        e->cap = ncap;
    }
    if (n)
        memcpy(e->buf + e->len, p, n);
    e->len += n;
}

static inline void wenc_u8(wire_enc *e, uint8_t v)
{
    wenc_put(e, &v, 1);
}

static inline void wenc_u32(wire_enc *e, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    wenc_put(e, b, 4);
}

static inline void wenc_u64(wire_enc *e, uint64_t v)
{
    wenc_u32(e, (uint32_t)v);
    wenc_u32(e, (uint32_t)(v >> 32));
}

/* Big blobs are referenced while there is room in refs[]. */
static inline void wenc_blob(wire_enc *e, const void *p, size_t n)
{
    if (n >= WIRE_REF_MIN && e->nrefs < WIRE_MAX_REFS && !e->oom) {
        e->ref_at[e->nrefs] = e->len;
        e->ref_ptr[e->nrefs] = p;
        e->ref_len[e->nrefs] = n;
        e->nrefs++;
        e->total += n;
        return;
    }
    wenc_put(e, p, n);
}

static inline void wenc_value(wire_enc *e, const cf_value *v)
{
    wenc_u8(e, (uint8_t)v->kind);
    switch (v->kind) {
    case CF_I64:
        wenc_u64(e, (uint64_t)v->as.i64);
        break;
    case CF_F64: {
        uint64_t bits;
        memcpy(&bits, &v->as.f64, 8);
        wenc_u64(e, bits);
        break;
    }
    case CF_BYTES:
        wenc_u64(e, v->size);
        wenc_blob(e, v->as.bytes, v->size);
        break;
    case CF_STR:
        wenc_u64(e, v->size + 1);
        wenc_blob(e, v->as.str, v->size + 1);
        break;
    default:
        break;
    }
}

static inline void wenc_cstr(wire_enc *e, const char *s)
{
    size_t n = strnlen(s, WIRE_TEXT_MAX);
    wenc_u32(e, (uint32_t)(n + 1));
    wenc_put(e, s, n);
    wenc_u8(e, 0);
}

static inline void wenc_failure(wire_enc *e, int code, const char *type, const char *msg)
{
    wenc_u32(e, (uint32_t)code);
    wenc_cstr(e, type ? type : "Exception");
    wenc_cstr(e, msg ? msg : "");
}

static inline size_t wenc_finish(wire_enc *e, uint8_t type, uint8_t flags);

/* The header of a frame whose payload travels out of band (WIRE_SHM): the
 * 8-byte header and the u64 `size`, written into hdr[WIRE_SHM_HDR]. */
#define WIRE_SHM_HDR (WIRE_HDR + 8)
static inline void wire_set_id(unsigned char *hdr, uint16_t id)
{
    hdr[6] = (unsigned char)id;
    hdr[7] = (unsigned char)(id >> 8);
}

static inline void wire_shm_header(unsigned char *hdr, uint8_t type, uint8_t flags,
                                   uint64_t size, uint16_t id)
{
    wire_enc e = {.buf = hdr, .len = WIRE_HDR, .cap = WIRE_SHM_HDR};
    wenc_u64(&e, size);
    wenc_finish(&e, type, (uint8_t)(WIRE_SHM | flags));
    wire_set_id(hdr, id);
}

/* Writes the header (id 0: see wire_set_id); returns the payload size. */
static inline size_t wenc_finish(wire_enc *e, uint8_t type, uint8_t flags)
{
    size_t payload = e->len - WIRE_HDR + e->total;
    uint32_t len32 = (uint32_t)payload;
    e->buf[0] = (unsigned char)len32;
    e->buf[1] = (unsigned char)(len32 >> 8);
    e->buf[2] = (unsigned char)(len32 >> 16);
    e->buf[3] = (unsigned char)(len32 >> 24);
    e->buf[4] = type;
    e->buf[5] = flags;
    e->buf[6] = e->buf[7] = 0;
    return payload;
}

/* ---- decoding ---------------------------------------------------------- */

typedef struct wire_dec {
    const unsigned char *p, *end;
    bool bad;
} wire_dec;

static inline const unsigned char *wdec_take(wire_dec *d, uint64_t n)
{
    if (d->bad || (uint64_t)(d->end - d->p) < n) {
        d->bad = true;
        return NULL;
    }
    const unsigned char *r = d->p;
    d->p += n;
    return r;
}

static inline uint8_t wdec_u8(wire_dec *d)
{
    const unsigned char *b = wdec_take(d, 1);
    return b ? b[0] : 0;
}

static inline uint32_t wdec_u32(wire_dec *d)
{
    const unsigned char *b = wdec_take(d, 4);
    return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                   (uint32_t)b[3] << 24
             : 0;
}

static inline uint64_t wdec_u64(wire_dec *d)
{
    uint64_t lo = wdec_u32(d);
    return lo | (uint64_t)wdec_u32(d) << 32;
}

/* A value borrowed from the frame (bytes/strings point into it). */
static inline cf_value wdec_value(wire_dec *d)
{
    cf_value v = cf_none();
    uint8_t kind = wdec_u8(d);
    switch (kind) {
    case CF_NONE:
        break;
    case CF_I64:
        v = cf_i64((int64_t)wdec_u64(d));
        break;
    case CF_F64: {
        uint64_t bits = wdec_u64(d);
        double x;
        memcpy(&x, &bits, 8);
        v = cf_f64(x);
        break;
    }
    case CF_BYTES: {
        uint64_t n = wdec_u64(d);
        if (n > CF_PAYLOAD_MAX) {
            d->bad = true;
            break;
        }
        const unsigned char *b = wdec_take(d, n);
        v.kind = CF_BYTES;
        v.size = (size_t)n;
        v.as.bytes = b;
        break;
    }
    case CF_STR: {
        uint64_t n = wdec_u64(d);
        if (n == 0 || n > (uint64_t)CF_PAYLOAD_MAX + 1) {
            d->bad = true;
            break;
        }
        const unsigned char *b = wdec_take(d, n);
        if (b && (b[n - 1] != '\0' || memchr(b, '\0', n - 1))) {
            d->bad = true;
            break;
        }
        v.kind = CF_STR;
        v.size = (size_t)(n - 1);
        v.as.str = (const char *)b;
        break;
    }
    default:
        d->bad = true;
    }
    if (d->bad)
        v = cf_none();
    return v;
}

/* A NUL-terminated string borrowed from the frame, or "" when bad. */
static inline const char *wdec_cstr(wire_dec *d)
{
    uint32_t n = wdec_u32(d);
    const unsigned char *b = n && n <= WIRE_TEXT_MAX + 1 ? wdec_take(d, n) : NULL;
    if (!b || b[n - 1] != '\0') {
        d->bad = true;
        return "";
    }
    return (const char *)b;
}

/* Reads the header at p (WIRE_HDR bytes available). */
static inline void wire_header(const unsigned char *p, uint32_t *len, uint8_t *type,
                               uint8_t *flags, uint16_t *id)
{
    *len = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    *type = p[4];
    *flags = p[5];
    *id = (uint16_t)(p[6] | p[7] << 8);
}

/* The worker's fault-injection points, for the crash tests: CFUTURES_FAULT
 * = "<point>:<task name>" makes a worker fail at that point of a call of
 * that task.  Points: decode-segv, decode-exit, encode-segv, encode-exit,
 * bad-frame, huge-frame, short-frame, bad-lent, file-frame, stray-result,
 * second-hello, unknown-frame, claim-nonsense. */
#define CF__FAULT_ENV "CFUTURES_FAULT"

#endif
