/* SPDX-License-Identifier: MIT */
/*
 * process_worker.c - the worker side of a process pool, cf_process_init(),
 * and the blocking half of the frame transport.
 *
 * Design notes
 * - A worker is single-threaded: it reads frames from its socket (fd 3 in
 *   an exec'd worker), runs each call through the same cf_call machinery
 *   as the thread engine, and writes one RESULT frame per CALL frame, right
 *   after the frame's last call.  Because results are never held back, the
 *   parent knows exactly which call a dead worker was running: the oldest
 *   one without a result.
 * - Arguments are borrowed from the received frame (or the mapped memfd)
 *   for the duration of the call: no copy on the worker side.
 * - A call runs in a future nobody else sees (cf__future_run_private: no
 *   lock, no state machine), and the calls of a chunk run one after the
 *   other in the same one (`spare`), unless the frame being built refers
 *   to an outcome (a value of WIRE_REF_MIN bytes or more) or the outcome
 *   holds shared memory: that future is kept until the frame is sent.
 * - Waiting for the next call: after answering a single call, a worker
 *   whose next call came soon after its answer the last time spins,
 *   bounded and yielding, on the ring's `sent` word before it sleeps in
 *   recvmsg() (worker_spin), so a caller that submits one call at a time
 *   does not pay the worker's wake-up.
 * - The worker dies with its parent: PR_SET_PDEATHSIG (SIGKILL) for a
 *   worker busy in a task, EOF on the socket for an idle one (only the
 *   latter in the portable build, which has no death signal).
 * - Nothing here takes a lock that a parent thread could have held at
 *   fork() (CF_START_FORK): the worker only uses its own buffers, malloc
 *   (which glibc resets in the child) and the task registry's rwlock, which
 *   is only written during start-up registration.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
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

#include "os.h"
#include "process.h"
#include "remote.h"

bool cf__process_init_called;
char **cf__process_argv;
static _Atomic bool in_worker;

CF__API bool cf_in_worker_process(void)
{
    return atomic_load_explicit(&in_worker, memory_order_relaxed);
}

/* ---- transport --------------------------------------------------------- */

/* Moves past `done` bytes of iov[*i..n). */
static void iov_advance(struct iovec *iov, int n, int *i, size_t done)
{
    while (*i < n && done >= iov[*i].iov_len) {
        done -= iov[*i].iov_len;
        (*i)++;
    }
    if (*i < n) {
        iov[*i].iov_base = (char *)iov[*i].iov_base + done;
        iov[*i].iov_len -= done;
    }
}

ssize_t cf__wire_recv(int fd, void *buf, size_t len, int flags, int *fds, int *nfds, int max,
                      bool *lost)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(8 * sizeof(int))];
    } ctl;
    struct iovec iov = {buf, len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    ssize_t n;
    do
        n = recvmsg(fd, &m, flags | cf__os_recv_cloexec);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            cf__os_received_fd(got);
            if (*nfds < max)
                fds[(*nfds)++] = got;
            else
                close(got);
        }
    }
    if ((m.msg_flags & MSG_CTRUNC) && lost) {
        *lost = true;
    } else if (m.msg_flags & MSG_CTRUNC) {
        errno = EMSGSIZE;
        return -1;
    }
    return n;
}

/* The payload of `e` as iovecs (header excluded).  Returns the count. */
static int payload_iov(const wire_enc *e, struct iovec *iov)
{
    int n = 0;
    size_t at = WIRE_HDR;
    for (size_t i = 0; i < e->nrefs; i++) {
        if (e->ref_at[i] > at)
            iov[n++] = (struct iovec){e->buf + at, e->ref_at[i] - at};
        if (e->ref_len[i])
            iov[n++] = (struct iovec){(void *)e->ref_ptr[i], e->ref_len[i]};
        at = e->ref_at[i];
    }
    if (e->len > at)
        iov[n++] = (struct iovec){e->buf + at, e->len - at};
    return n;
}

int cf__wire_to_memfd(const wire_enc *e)
{
    int mfd = cf__os_shm_new("cfutures-frame");
    if (mfd < 0)
        return -1;
    struct iovec iov[2 * WIRE_MAX_REFS + 2];
    int n = payload_iov(e, iov);
    off_t off = 0;
    int i = 0;
    while (i < n) {
        ssize_t w = cf__os_pwritev(mfd, iov + i, n - i, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int saved = errno;
            close(mfd);
            errno = saved;
            return -1;
        }
        off += w;
        iov_advance(iov, n, &i, (size_t)w);
    }
    /* Final: the receiver may rely on it never changing under its map
     * (where there are seals; the parent copies otherwise). */
    if (cf__os_shm_seal(mfd, CF__SEAL_SHRINK | CF__SEAL_GROW | CF__SEAL_WRITE | CF__SEAL_SEAL) !=
        0) {
        int saved = errno;
        close(mfd);
        errno = saved;
        return -1;
    }
    return mfd;
}

void *cf__wire_map(int memfd, uint64_t size, uint64_t max)
{
    /* errno tells the caller why: EFBIG, EPERM, EINVAL or mmap's. */
    if (size == 0 || size > max || size > WIRE_SHM_MAX) {
        errno = EFBIG;
        return NULL;
    }
    /* Sealed memory mapped read-only, or a copy: no other process can
     * change it after it was checked (os.h).  Populated up to one call's
     * outcome: a bigger frame (a map chunk) is read page by page as it is
     * decoded, so one that is mostly holes costs only what its decoding
     * reaches. */
    return cf__os_map_frozen(memfd, (size_t)size, size <= WIRE_OUTCOME_MAX + 64);
}

/* Blocking write.  Liveness (worker side): the manager reads every
 * worker that has not reached EOF whenever it is readable; a worker it
 * stops reading (a bad frame) it also SIGKILLs. */
static int write_all_iov(int fd, struct iovec *iov, int n)
{
    int i = 0;
    while (i < n) {
        ssize_t w = writev(fd, iov + i, n - i);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        iov_advance(iov, n, &i, (size_t)w);
    }
    return 0;
}

ssize_t cf__wire_send_fd(int fd, const void *buf, size_t len, int mfd, int flags)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {(void *)buf, len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &mfd, sizeof(int));
    ssize_t w;
    do
        w = sendmsg(fd, &m, flags | MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    return w;
}

/* Sends the header of a WIRE_SHM frame (see wire_shm_header) with `mfd`
 * attached, or with no descriptor when `mfd` is -1; blocking. */
static int send_shm_frame(int fd, uint8_t type, uint8_t flags, uint64_t size, int mfd,
                          uint16_t id)
{
    unsigned char hdr[WIRE_SHM_HDR];
    wire_shm_header(hdr, type, flags, size, id);
    ssize_t w = 0;
    if (mfd >= 0 && (w = cf__wire_send_fd(fd, hdr, sizeof hdr, mfd, 0)) < 0)
        return -1;
    if ((size_t)w == sizeof hdr)
        return 0;
    struct iovec rest = {hdr + w, sizeof hdr - (size_t)w};
    return write_all_iov(fd, &rest, 1);
}

int cf__wire_send_blocking(int fd, wire_enc *e, uint8_t type, uint16_t id)
{
    if (e->oom) {
        errno = ENOMEM;
        return -1;
    }
    size_t payload = wenc_finish(e, type, 0);
    wire_set_id(e->buf, id);
    if (payload <= WIRE_INLINE_MAX) {
        struct iovec iov[2 * WIRE_MAX_REFS + 3];
        iov[0] = (struct iovec){e->buf, WIRE_HDR};
        int n = 1 + payload_iov(e, iov + 1);
        return write_all_iov(fd, iov, n);
    }
    int mfd = cf__wire_to_memfd(e);
    if (mfd < 0)
        return -1;
    int rc = send_shm_frame(fd, type, 0, payload, mfd, id);
    close(mfd);
    return rc;
}

/* ---- the worker -------------------------------------------------------- */

/* Mappings of the pool's shared buffers, by memfd identity.  The parent
 * recycles its buffers, so the same ones come back call after call, and
 * mapping one afresh costs a fault per page.  Kept: the buffers the
 * latest big call used (at most its arguments and its lent buffer); the
 * others are unmapped when a big call ends.  Worker thread only. */
#define WMAPS 4
static struct wmap {
    dev_t dev;
    ino_t ino;
    unsigned char *map; /* NULL: free slot */
    size_t size;
    uint64_t gen;       /* the big call that last used it */
} wmaps[WMAPS];
static uint64_t wgen = 1; /* the current call's generation */

/* The mapping of the memfd `fd` (closed here), which must hold at least
 * `need` bytes; NULL if it cannot be mapped or is too small.  `populate`:
 * map its pages now (arguments, which will be read); a lent buffer's
 * pages are only allocated if the result is written there. */
static unsigned char *wmap_get(int fd, uint64_t need, bool populate)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size < need || need == 0 ||
        (uint64_t)st.st_size > WIRE_SHM_MAX) {
        close(fd);
        return NULL;
    }
    struct wmap *slot = NULL;
    for (int i = 0; i < WMAPS; i++) {
        struct wmap *m = &wmaps[i];
        if (m->map && m->dev == st.st_dev && m->ino == st.st_ino && m->size == (size_t)st.st_size) {
            m->gen = wgen;
            close(fd);
            return m->map;
        }
        /* A free slot, else the least recently used one. */
        if (!slot || (slot->map && (!m->map || m->gen < slot->gen)))
            slot = m;
    }
    /* A frame the parent wrote with cf__wire_to_memfd() is sealed against
     * writes: read-only (private: a shared mapping of it is refused by
     * kernels before 6.7). */
    bool frozen = cf__os_shm_sealed(fd, CF__SEAL_WRITE);
    void *p = mmap(NULL, (size_t)st.st_size, frozen ? PROT_READ : PROT_READ | PROT_WRITE,
                   (frozen ? MAP_PRIVATE : MAP_SHARED) | (populate ? cf__os_map_populate : 0), fd,
                   0);
    close(fd);
    if (p == MAP_FAILED)
        return NULL;
    if (slot->map)
        munmap(slot->map, slot->size);
    *slot = (struct wmap){st.st_dev, st.st_ino, p, (size_t)st.st_size, wgen};
    return p;
}

/* A big call ended: lets go of the buffers it did not use. */
static void wmap_trim(void)
{
    for (int i = 0; i < WMAPS; i++)
        if (wmaps[i].map && wmaps[i].gen != wgen) {
            munmap(wmaps[i].map, wmaps[i].size);
            wmaps[i].map = NULL;
        }
    wgen++;
}

/* The buffer lent for the current call's result (LEND), and the call
 * that may use it.  Thread-local: a task's own threads in the worker
 * (an inner thread pool) must not take it. */
static _Thread_local struct {
    unsigned char *map;
    size_t cap;
    cf_future *call;
} lent;

typedef struct reader {
    int fd;
    unsigned char *buf;
    size_t start, end, cap;
    int fds[16]; /* received memfds, oldest first */
    int nfds;
} reader;

static void worker_spin(void);
static void spin_noted_input(size_t n);

/* Reads more bytes; returns false at EOF or on error.  Blocks, after a
 * bounded spin when the next call is expected soon (worker_spin); liveness:
 * the parent's manager writes every frame it queues (it polls for
 * POLLOUT while output waits), and when the pool goes the socket reaches
 * EOF (the parent closes it, or dies: then PR_SET_PDEATHSIG too). */
static bool reader_fill(reader *r, size_t need)
{
    if (r->start > 0 && r->start == r->end)
        r->start = r->end = 0;
    if (r->end + need > r->cap) {
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        }
        size_t ncap = r->cap ? r->cap : 64 * 1024;
        while (ncap < r->end + need)
            ncap *= 2;
        if (ncap != r->cap) {
            unsigned char *nb = realloc(r->buf, ncap);
            if (!nb)
                return false;
            r->buf = nb;
            r->cap = ncap;
        }
    }
    worker_spin();
    ssize_t n = cf__wire_recv(r->fd, r->buf + r->end, r->cap - r->end, 0, r->fds, &r->nfds, 16,
                              NULL);
    if (n <= 0)
        return false;
    spin_noted_input((size_t)n);
    r->end += (size_t)n;
    return true;
}

static int reader_take_fd(reader *r)
{
    if (r->nfds == 0)
        return -1;
    int fd = r->fds[0];
    memmove(r->fds, r->fds + 1, (size_t)(r->nfds - 1) * sizeof(int));
    r->nfds--;
    return fd;
}

static struct {
    char point[32];
    char task[256];
} fault;

static bool fault_match(const char *point, const char *task, size_t task_len)
{
    return strcmp(fault.point, point) == 0 && strlen(fault.task) == task_len &&
           memcmp(fault.task, task, task_len) == 0;
}

/* Asked at several points of every call: one load when no fault is set. */
static inline bool fault_at(const char *point, const char *task, size_t task_len)
{
    return CF__UNLIKELY(fault.point[0] != '\0') && fault_match(point, task, task_len);
}

static void fault_act(const char *point)
{
    if (strstr(point, "segv"))
        raise(SIGSEGV);
    _exit(3);
}

static void load_fault(void)
{
    const char *spec = getenv(CF__FAULT_ENV);
    const char *colon = spec ? strchr(spec, ':') : NULL;
    if (!colon || (size_t)(colon - spec) >= sizeof fault.point)
        return;
    memcpy(fault.point, spec, (size_t)(colon - spec));
    fault.point[colon - spec] = '\0';
    snprintf(fault.task, sizeof fault.task, "%s", colon + 1);
}

/* Flushes what tasks printed, and nothing else: a forked worker also
 * holds copies of the parent's unflushed stdio buffers (see
 * cf__worker_run), which must not be written twice. */
static _Noreturn void worker_exit(int code)
{
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}

/* Copies v's bytes into `dst` (after room for the RESULT fields) and
 * makes them the call's result; then lets go of the shared memory that
 * held the previous result, if it is not `keep` (a task may return bytes
 * of its own earlier result, so that goes last). */
static void put_big_result(cf_future *f, unsigned char *dst, const cf_value *v,
                           const cf__buf *keep)
{
    unsigned char *bytes = dst + CF__SHM_RESULT_PREFIX;
    if (v->size)
        memmove(bytes, v->as.bytes, v->size);
    if (v->kind == CF_STR)
        bytes[v->size] = '\0';
    free(f->result_heap);
    f->result_heap = NULL;
    f->result.kind = v->kind;
    f->result.size = v->size;
    f->result.as.bytes = bytes;
    if (f->shm) {
        if (f->shm->result.map != keep->map)
            cf__buf_drop(&f->shm->result);
        f->shm->result = *keep;
    }
}

int cf__worker_store_big(cf_future *f, const cf_value *v)
{
    size_t extra = cf__value_extra(v);
    size_t len = CF__SHM_RESULT_PREFIX + extra;
    if (f == lent.call && lent.map && len <= lent.cap) {
        /* Straight into the buffer the parent lent, which stays the
         * worker's own mapping (not the future's). */
        const cf__buf none = {NULL, 0, -1};
        put_big_result(f, lent.map, v, &none);
        return CF_OK;
    }
    cf__buf fresh;
    bool made = cf__buf_new_result(&fresh, len) == 0;
    if (made && !f->shm)
        f->shm = cf__shm_new();
    if (!made || !f->shm) {
        cf__buf_drop(&fresh);
        /* The heap path still works, with one copy more. */
        return cf__value_store(&f->result, &f->result_heap, f->inline_result, v, false,
                               "return");
    }
    put_big_result(f, fresh.map, v, &fresh);
    return CF_OK;
}

/* Sends a single call's big result from the shared memory it was made
 * in, when it is there: the frame's first bytes were left free for the
 * RESULT fields.  Returns 1 if sent, 0 if not applicable, -1 on error. */
static int ring_mark(int fd, uint16_t id);

static int send_shm_result(int fd, cf_future *f, uint16_t id)
{
    if (f->status != CF_OK)
        return 0;
    size_t extra = cf__value_extra(&f->result);
    cf__buf *own = f->shm ? &f->shm->result : NULL;
    unsigned char *base;
    uint64_t size;
    int mfd;
    uint8_t flags;
    if (lent.map && f == lent.call && f->result.as.bytes == lent.map + CF__SHM_RESULT_PREFIX) {
        /* In the parent's lent buffer: it only needs the bytes used. */
        base = lent.map;
        size = CF__SHM_RESULT_PREFIX + extra;
        mfd = -1;
        flags = WIRE_LENT;
    } else if (own && own->map &&
               f->result.as.bytes == (unsigned char *)own->map + CF__SHM_RESULT_PREFIX) {
        base = own->map;
        size = own->cap;
        mfd = own->fd;
        flags = 0;
    } else {
        return 0;
    }
    wire_enc pre = {.buf = base, .len = 0, .cap = CF__SHM_RESULT_PREFIX};
    wenc_u32(&pre, 1);
    wenc_u8(&pre, 1);
    wenc_u8(&pre, (uint8_t)f->result.kind);
    wenc_u64(&pre, extra);
    /* Memory of our own goes to the parent write-sealed: it reads the
     * result in place, so nobody may change it after it has checked it.
     * (The result's bytes are not read here after this.) */
    if (mfd >= 0 && cf__buf_freeze(own) != 0)
        return -1;
    if (ring_mark(fd, id) != 0)
        return -1;
    return send_shm_frame(fd, WIRE_RESULT, flags, size, mfd, id) == 0 ? 1 : -1;
}

/* The claim words the parent shares with this worker (CLAIMS frame), and
 * the number of the next call it will be sent (see wire.h).  Worker
 * thread only. */
uint16_t cf__worker_call_id;

static struct {
    _Atomic uint32_t *words;
    uint64_t n;
    uint64_t next;
} claims;

/* Maps `size` bytes of memory the parent shares (a memfd, closed here)
 * read-write; NULL unless `size_ok` and the memfd holds that much.  Its
 * pages are mapped at once (the parent allocated them): the claim words
 * and the ring are written call after call, and a fault per page would
 * fall on a new worker's first calls. */
static void *map_shared(int mfd, uint64_t size, bool size_ok)
{
    struct stat st;
    bool ok = mfd >= 0 && size_ok && fstat(mfd, &st) == 0 && (uint64_t)st.st_size >= size;
    void *p = ok ? mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
                        MAP_SHARED | cf__os_map_populate, mfd, 0)
                 : MAP_FAILED;
    if (mfd >= 0)
        close(mfd);
    return p == MAP_FAILED ? NULL : p;
}

/* Maps the CLAIMS frame's memfd (closed here).  False if it will not do. */
static bool claims_map(int mfd, uint64_t size)
{
    void *p = map_shared(mfd, size,
                         !claims.words && size >= sizeof(uint32_t) && size <= (1u << 24));
    if (!p)
        return false;
    claims.words = p;
    claims.n = size / sizeof(uint32_t);
    return true;
}

/* The result ring the parent shares with this worker (RING frame; see
 * process.h), and how many bytes this worker has published in it.  Worker
 * thread only. */
static struct {
    unsigned char *map;
    uint64_t head;
    bool use; /* the current CALL's answer goes through it */
} ring;

unsigned char *cf__worker_ring_map(void)
{
    return ring.map;
}

/* Maps the RING frame's memfd (closed here).  False if it will not do. */
static bool ring_map(int mfd, uint64_t size)
{
    void *p = map_shared(mfd, size, !ring.map && size == CF__RING_SIZE);
    if (!p)
        return false;
    ring.map = p;
    ring.head = atomic_load(cf__ring_word(p, CF__RING_HEAD));
    return true;
}

/* ---- waiting for the next call -------------------------------------------
 *
 * A worker that answered its last call and has nothing more to read would
 * sleep in recvmsg(), and the parent's next write would have to wake it:
 * on a VM that wake-up (of the process, and often of an idle virtual CPU)
 * costs more than a tiny call.  So where the next call came soon after an
 * answer the last time, the worker first watches the ring's `sent` word
 * (process.h) for a bounded time, and goes to recvmsg() as soon as the
 * parent has written, when the bytes are already there.
 *  - It follows recent activity only: it spins only after a read that
 *    brought a single call, sent while it was the only one in flight in
 *    the pool (the ring's `alone` word), and only if its previous wait
 *    for a call after an answer (`gap_ns`) was at most WSPIN_MAX_NS / 2,
 *    and for at most twice that, counted from its latest answer.  An idle
 *    pool's workers do not spin: at most WSPIN_MAX_NS after their last
 *    answer, then they sleep as before.  A worker with calls queued never
 *    waits, so never spins.
 *  - The spin ends as soon as `sent` differs from the bytes this worker
 *    has read (both count every byte the manager wrote after start-up).
 *  - It yields the CPU on the first turn and every 64 turns after, as the
 *    manager's spin does (process_pool.c, manager_spin): on a machine with
 *    few CPUs the thread that will send the call is often queued on this
 *    very CPU.
 *  - Liveness: the spin ends by its deadline at the latest, and recvmsg()
 *    blocking as before follows it in every case, so nothing written is
 *    missed: the word only shortens the wait, and a stale or bogus value
 *    only ends the spin early. */
#define WSPIN_MAX_NS 50000
static struct {
    int64_t answered_ns; /* when the last call was answered with nothing
                          * more to read; 0: no answer since the last input */
    int64_t gap_ns;      /* from an answer to the next input, the last time
                          * (INT64_MAX before any) */
    unsigned calls;      /* calls received since the last read */
    uint64_t received;   /* bytes read from the socket by reader_fill(),
                          * which are all the parent's manager wrote there
                          * (the start-up key is read apart) */
} wspin = {0, INT64_MAX, 0, 0};

/* The CALL just answered was the last input: note when, so the wait for
 * the next can be measured (and spun), if that input was a single call
 * and the parent said it was the only one in flight in the pool (the
 * ring's `alone`): a caller waiting for each answer before the next call.
 * Throughput (more calls in flight, several a read, map chunks) is left
 * to the BELL and the CPUs to the threads that feed us. */
static void spin_note_answer(void)
{
    wspin.answered_ns =
        ring.use && wspin.calls == 1 &&
                atomic_load_explicit(cf__ring_word(ring.map, CF__RING_ALONE),
                                     memory_order_relaxed) == 1
            ? cf__now_ns()
            : 0;
}

static void spin_noted_input(size_t n)
{
    wspin.received += n;
    wspin.calls = 0;
    if (wspin.answered_ns) {
        wspin.gap_ns = cf__now_ns() - wspin.answered_ns;
        wspin.answered_ns = 0;
    }
}

static void worker_spin(void)
{
    if (ring.map && wspin.answered_ns && wspin.gap_ns <= WSPIN_MAX_NS / 2) {
        int64_t until = wspin.answered_ns + 2 * wspin.gap_ns;
        _Atomic uint64_t *sent = cf__ring_word(ring.map, CF__RING_SENT);
        for (unsigned i = 1;; i++) {
            if (atomic_load_explicit(sent, memory_order_relaxed) != wspin.received)
                break; /* written: the bytes are in the socket */
            if (i % 16 == 0 && cf__now_ns() >= until)
                break;
            if (i == 1 || i % 64 == 0)
                sched_yield();
            cf__cpu_relax();
        }
    }
}

/* Copies n bytes into the ring at byte position `at` (wrapping). */
static void ring_put(uint64_t at, const void *src, size_t n)
{
    size_t off = (size_t)(at % CF__RING_BYTES);
    size_t first = n < CF__RING_BYTES - off ? n : CF__RING_BYTES - off;
    memcpy(ring.map + CF__RING_DATA + off, src, first);
    memcpy(ring.map + CF__RING_DATA, (const unsigned char *)src + first, n - first);
}

static int ring_bell(int fd)
{
    unsigned char bell[WIRE_HDR] = {0, 0, 0, 0, WIRE_BELL, 0, 0, 0};
    struct iovec b = {bell, sizeof bell};
    return write_all_iov(fd, &b, 1);
}

/* Waits until the ring has room for `n` more bytes.  Liveness: the
 * parent's manager copies the ring out in every round it is awake, and
 * the BELL written first wakes it if it sleeps (held at a SOCKET frame of
 * ours, it copies nothing until that RESULT, which we sent before, is
 * read, and then does); a parent that is gone
 * kills us (PR_SET_PDEATHSIG), one that is out of memory breaks its pool,
 * which kills us too.  Returns -1 if the bell cannot be written. */
static int ring_room(int fd, size_t n)
{
    for (unsigned i = 0;; i++) {
        uint64_t tail = atomic_load_explicit(cf__ring_word(ring.map, CF__RING_TAIL),
                                             memory_order_acquire);
        uint64_t used = ring.head - tail;
        if (used <= CF__RING_BYTES && n <= CF__RING_BYTES - used)
            return 0;
        if (i == 0 && ring_bell(fd) != 0)
            return -1;
        if (i < 64) {
            sched_yield();
        } else {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
    }
}

/* Publishes the bytes of iov[0..n) (`total` bytes) as one frame. */
static int ring_publish(int fd, const struct iovec *iov, int n, size_t total)
{
    if (ring_room(fd, total) != 0)
        return -1;
    uint64_t at = ring.head;
    for (int i = 0; i < n; i++) {
        ring_put(at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    ring.head = at;
    /* seq_cst, with the exchange of `sleeping` after it: see process.h.
     * Taking the flag back makes one bell per sleep of the manager, not
     * one per answer published while it is being woken. */
    atomic_store(cf__ring_word(ring.map, CF__RING_HEAD), at);
    if (atomic_load(cf__ring_word(ring.map, CF__RING_SLEEPING)) &&
        atomic_exchange(cf__ring_word(ring.map, CF__RING_SLEEPING), 0) && ring_bell(fd) != 0)
        return -1;
    return 0;
}

/* Says in the ring that the answer `id` comes through the socket (a
 * SOCKET frame), when this CALL answers through the ring. */
static int ring_mark(int fd, uint16_t id)
{
    if (!ring.use)
        return 0;
    unsigned char hdr[WIRE_HDR] = {0, 0, 0, 0, WIRE_SOCKET, 0, 0, 0};
    wire_set_id(hdr, id);
    struct iovec iov = {hdr, sizeof hdr};
    return ring_publish(fd, &iov, 1, sizeof hdr);
}

/* Publishes the frame `e` (finished here as `type`, with `id`) in the
 * ring.  Returns 0 when it is there, 1 when it must go through the socket
 * (this CALL does not use the ring, or the frame is too big to be
 * inline), -1 when the parent is gone. */
static int ring_send(int fd, wire_enc *e, uint8_t type, uint16_t id)
{
    if (!ring.use || e->oom)
        return 1;
    size_t payload = wenc_finish(e, type, 0);
    if (payload > WIRE_INLINE_MAX)
        return 1;
    wire_set_id(e->buf, id);
    struct iovec iov[2 * WIRE_MAX_REFS + 3];
    iov[0] = (struct iovec){e->buf, WIRE_HDR};
    int n = 1 + payload_iov(e, iov + 1);
    return ring_publish(fd, iov, n, WIRE_HDR + payload) == 0 ? 0 : -1;
}

/* Claims call number `k` before beginning it: false if the parent
 * cancelled it first. */
static bool claim(uint64_t k)
{
    uint32_t want = CF__CLAIM_PENDING;
    return atomic_compare_exchange_strong_explicit(&claims.words[k % claims.n], &want,
                                                   CF__CLAIM_RUNNING, memory_order_acq_rel,
                                                   memory_order_acquire);
}

/* The outcome of a call to a name this process does not know. */
static void encode_unregistered(wire_enc *e, const char *what, const char *name, size_t namelen)
{
    cf__remote_encode_unregistered(e, what, name, namelen, "in the worker process",
                                   "use CF_TASK, or register before cf_process_init");
}

/* Reads the INIT frame's list of the tasks the pool runs and checks that
 * each is registered here.  If any is missing, answers HELLO with
 * WIRE_HELLO_MISSING and a failure naming them (as many as fit) and
 * returns false: the parent breaks the pool.  A list that does not decode
 * is a parent that is not ours: exit. */
static bool check_tasks(int fd, wire_dec *d, wire_enc *out)
{
    uint32_t n = wdec_u32(d);
    if (d->bad || n > WIRE_TASKS_MAX)
        worker_exit(70);
    char msg[400];
    size_t at = 0;
    uint32_t missing = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t len = wdec_u8(d);
        const char *name = (const char *)wdec_take(d, len);
        if (d->bad || len == 0)
            worker_exit(70);
        if (cf__task_lookup(name, len))
            continue;
        if (missing++ < 8 && at < sizeof msg) {
            int w = snprintf(msg + at, sizeof msg - at, "%s\"%.*s\"", at ? ", " : "", (int)len,
                             name);
            at += w > 0 ? (size_t)w : 0;
        }
    }
    if (!missing)
        return true;
    char text[600];
    snprintf(text, sizeof text, "%s%s%s not registered there (%u missing of %u; the worker "
                                "program must register every task the pool runs, for example "
                                "by linking the same sources with CF_TASK)",
             msg, missing > 8 ? ", ..." : "", missing == 1 ? " is" : " are", (unsigned)missing,
             (unsigned)n);
    wenc_reset(out);
    wenc_u32(out, (uint32_t)getpid());
    wenc_u8(out, WIRE_HELLO_MISSING);
    wenc_u8(out, 0);
    wenc_failure(out, CF_ENOTCOPYABLE, "NameError", text);
    cf__wire_send_blocking(fd, out, WIRE_HELLO, 0);
    return false;
}

/* The worker's spare future (cf__remote_call_future): a map chunk's calls
 * run one after another in it.  Only a future nothing refers to any more
 * comes back here (recycle()): the frame being built holds no reference
 * into its outcome, and it has no shared memory.  Worker thread only;
 * nobody else ever sees these futures. */
static cf_future *spare;

/* Runs one decoded call; returns its finished future (NULL on ENOMEM). */
static cf_future *run_one(cf_task_fn *fn, const cf_value *args, size_t nargs)
{
    cf_future *f = cf__remote_call_future(&spare, fn, args, nargs);
    if (!f)
        return NULL;
    lent.call = f;
    cf__future_run_private(f);
    return f;
}

/* Takes back the future of a call whose outcome has been encoded into a
 * frame that refers to nothing of it (no reference was added while it
 * was encoded), when it holds no shared memory: it becomes the spare.
 * Returns whether it did. */
static bool recycle(cf_future *f, bool referenced)
{
    return cf__remote_recycle(&spare, f, referenced);
}

/* A succeeded call's number, as cf__remote_encode_outcome() writes it
 * (WIRE_OK, then the value), with one room check; false if it is not a
 * number or there is no room (nothing written). */
static bool put_ok_number(wire_enc *e, const cf_future *f)
{
    if (f->status != CF_OK || e->oom || e->cap - e->len < 10)
        return false;
    unsigned char *o = e->buf + e->len;
    unsigned char *end = cf__put_number(o + 1, e->cap - e->len - 1, &f->result);
    if (!end)
        return false;
    *o = WIRE_OK;
    e->len = (size_t)(end - e->buf);
    return true;
}

/* Handles a CALL or INIT frame's body; writes the RESULT/HELLO frame.
 * Returns false when the worker must exit (initializer failed). */
static bool handle_calls(int fd, wire_dec *d, bool init, uint16_t id, wire_enc *out,
                         cf_future ***fsp, size_t *fcap)
{
    if (init && !check_tasks(fd, d, out))
        return false;
    if (init && !wdec_u8(d)) {
        wenc_reset(out);
        wenc_u32(out, (uint32_t)getpid());
        wenc_u8(out, 1);
        if (cf__wire_send_blocking(fd, out, WIRE_HELLO, 0) != 0)
            worker_exit(0);
        return true;
    }
    uint32_t n = wdec_u32(d);
    uint8_t namelen = wdec_u8(d);
    const char *name = (const char *)wdec_take(d, namelen);
    if (d->bad || n == 0 || (init && n != 1) || (!init && !claims.words))
        worker_exit(70);
    uint64_t first = claims.next;
    if (!init) {
        wspin.calls += n;
        claims.next += n;
        cf__worker_call_id = id;
    }
    cf_task_fn *fn = cf__task_lookup(name, namelen);
    if (*fcap < n) {
        cf_future **nf = realloc(*fsp, n * sizeof *nf);
        if (!nf)
            worker_exit(71);
        *fsp = nf;
        *fcap = n;
    }
    cf_future **fs = *fsp;
    wenc_reset(out);
    if (init)
        wenc_u32(out, (uint32_t)getpid());
    else
        wenc_u32(out, n);
    bool ok_all = true;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t nargs = wdec_u8(d);
        cf_value args[CF_ARGS_MAX];
        if (nargs > CF_ARGS_MAX)
            worker_exit(70);
        for (uint8_t k = 0; k < nargs; k++)
            if (!cf__get_int(d, &args[k]))
                args[k] = wdec_value(d);
        if (d->bad)
            worker_exit(70);
        if (fault_at("unclaimed-exit", name, namelen))
            fault_act(fault.point);
        if (!init && !claim(first + i)) {
            fs[i] = NULL;
            wenc_u8(out, WIRE_SKIPPED);
            continue;
        }
        /* After the claim: a worker that dies before it claims a call
         * has not begun it, and the call runs elsewhere. */
        if (fault_at("decode-segv", name, namelen) || fault_at("decode-exit", name, namelen))
            fault_act(fault.point);
        if (!init && fault_at("claim-nonsense", name, namelen))
            atomic_store(&claims.words[(first + i) % claims.n], 7u);
        if (!fn) {
            fs[i] = NULL;
            encode_unregistered(out, "task", name, namelen);
            ok_all = false;
            continue;
        }
        fs[i] = run_one(fn, args, nargs);
        if (!fs[i]) {
            wenc_u8(out, 0);
            wenc_failure(out, CF_ENOMEM, "MemoryError", "worker: out of memory for the call");
            ok_all = false;
            continue;
        }
        if (fault_at("encode-segv", name, namelen) || fault_at("encode-exit", name, namelen))
            fault_act(fault.point);
        ok_all = ok_all && fs[i]->status == CF_OK;
        size_t refs = out->nrefs;
        if (!put_ok_number(out, fs[i]))
            cf__remote_encode_outcome(out, fs[i], name, namelen);
        /* A single call's future stays: its result may go out from its
         * own shared memory (send_shm_result). */
        if (!init && n > 1 && recycle(fs[i], out->nrefs != refs))
            fs[i] = NULL;
    }
    if (fault_at("bad-frame", name, namelen)) {
        wenc_reset(out);
        wenc_u32(out, 0xFFFFFFFFu); /* a count that cannot be right */
    } else if (fault_at("stray-result", name, namelen)) {
        /* The right answer, preceded by a copy carrying another id. */
        wire_enc stray = {0};
        wenc_reset(&stray);
        wenc_put(&stray, out->buf + WIRE_HDR, out->len - WIRE_HDR);
        cf__wire_send_blocking(fd, &stray, WIRE_RESULT, (uint16_t)(id + 1));
        wenc_free(&stray);
    } else if (fault_at("second-hello", name, namelen)) {
        /* A running worker says HELLO (failed) again, then answers. */
        wire_enc hello = {0};
        wenc_reset(&hello);
        wenc_u32(&hello, (uint32_t)getpid());
        wenc_u8(&hello, 0);
        wenc_u8(&hello, 0);
        wenc_failure(&hello, 1, "InitError", "second hello");
        cf__wire_send_blocking(fd, &hello, WIRE_HELLO, 0);
        wenc_free(&hello);
    } else if (fault_at("unknown-frame", name, namelen)) {
        /* A header of an unknown type announcing more than ever comes;
         * then the worker stays (bounded) without a word. */
        unsigned char hdr[WIRE_HDR] = {0x00, 0x10, 0, 0, 99, 0, 0, 0};
        struct iovec iov = {hdr, sizeof hdr};
        write_all_iov(fd, &iov, 1);
        struct timespec ts = {30, 0};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        worker_exit(0);
    } else if ((fault_at("ring-overrun", name, namelen) ||
                fault_at("ring-partial", name, namelen)) &&
               ring.map) {
        /* A ring position beyond what the ring can hold, or only the
         * first bytes of the answer there; then the worker stays (bounded)
         * without a word, so the parent's check is what ends it. */
        wenc_finish(out, WIRE_RESULT, 0);
        wire_set_id(out->buf, id);
        if (fault.point[5] == 'o') {
            atomic_store(cf__ring_word(ring.map, CF__RING_HEAD), ring.head + CF__RING_BYTES + 1);
        } else {
            struct iovec iov = {out->buf, WIRE_HDR + 2};
            ring_publish(fd, &iov, 1, WIRE_HDR + 2);
        }
        ring_bell(fd);
        struct timespec ts = {30, 0};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        worker_exit(0);
    } else if (fault_at("huge-frame", name, namelen)) {
        unsigned char hdr[WIRE_HDR] = {0xff, 0xff, 0xff, 0x7f, WIRE_RESULT, 0, 0, 0};
        struct iovec iov = {hdr, sizeof hdr};
        write_all_iov(fd, &iov, 1);
        worker_exit(0);
    } else if (fault_at("file-frame", name, namelen)) {
        /* A result "in shared memory" that is a plain file, not a sealed
         * memfd (unnamed: nothing is left behind). */
        int tf = cf__os_tmpfile();
        if (tf >= 0 && ftruncate(tf, 1 << 20) == 0)
            send_shm_frame(fd, WIRE_RESULT, 0, 1 << 20, tf, id);
        worker_exit(0);
    } else if (fault_at("bad-lent", name, namelen)) {
        /* A result said to be in a lent buffer, bigger than any buffer. */
        send_shm_frame(fd, WIRE_RESULT, WIRE_LENT, WIRE_SHM_MAX, -1, id);
        worker_exit(0);
    } else if (fault_at("short-frame", name, namelen)) {
        wenc_finish(out, WIRE_RESULT, 0);
        wire_set_id(out->buf, id);
        struct iovec iov = {out->buf, out->len > WIRE_HDR + 2 ? out->len - 2 : WIRE_HDR};
        write_all_iov(fd, &iov, 1);
        worker_exit(0);
    }
    if (init && !ok_all) {
        /* HELLO carries the initializer's failure in place of "ok". */
        wenc_reset(out);
        wenc_u32(out, (uint32_t)getpid());
        wenc_u8(out, 0);
        if (fs[0])
            cf__remote_encode_outcome(out, fs[0], name, namelen);
        else
            encode_unregistered(out, "initializer", name, namelen);
    } else if (init) {
        wenc_reset(out);
        wenc_u32(out, (uint32_t)getpid());
        wenc_u8(out, 1);
    }
    /* What the tasks printed goes out before their answer: once the
     * parent has the answer it may kill this worker at any moment. */
    fflush(stdout);
    int rc = 0;
    /* The answer goes through the ring unless a fault is injected: those
     * test the socket (the ring-* ones excepted). */
    ring.use = ring.map && !init && (!fault.point[0] || strncmp(fault.point, "ring-", 5) == 0);
    int sent = !init && n == 1 && fs[0] && !fault.point[0] ? send_shm_result(fd, fs[0], id) : 0;
    if (sent == 0) {
        int r = ring_send(fd, out, WIRE_RESULT, id);
        if (r == 1 && !init && ring_mark(fd, id) != 0)
            r = -1;
        rc = r < 0    ? -1
             : r == 0 ? 0
                      : cf__wire_send_blocking(fd, out, init ? WIRE_HELLO : WIRE_RESULT,
                                               init ? 0 : id);
    } else if (sent < 0) {
        rc = -1;
    }
    /* The frame is out: nothing refers to the outcomes any more. */
    for (uint32_t i = 0; i < n; i++)
        if (fs[i] && (init || !recycle(fs[i], false)))
            cf_future_release(fs[i]);
    if (rc != 0)
        worker_exit(0); /* the parent is gone */
    return !(init && !ok_all);
}

_Noreturn void cf__worker_run(int fd)
{
    /* A forked worker inherits the parent's unwritten stdout/stderr
     * buffers; the parent writes them, so drop our copies. */
    cf__os_stdio_drop_inherited();
    atomic_store(&in_worker, true);
    cf__big_result_store = cf__worker_store_big;
    load_fault();
    reader r = {.fd = fd};
    wire_enc out = {0};
    cf_future **fs = NULL;
    size_t fcap = 0;
    for (;;) {
        while (r.end - r.start < WIRE_HDR)
            if (!reader_fill(&r, WIRE_HDR))
                worker_exit(0);
        uint32_t len;
        uint8_t type, flags;
        uint16_t id;
        wire_header(r.buf + r.start, &len, &type, &flags, &id);
        if (!(flags & WIRE_SHM) && len > WIRE_INLINE_MAX)
            worker_exit(70);
        while (r.end - r.start < WIRE_HDR + (size_t)len)
            if (!reader_fill(&r, WIRE_HDR + (size_t)len - (r.end - r.start)))
                worker_exit(0);
        const unsigned char *body = r.buf + r.start + WIRE_HDR;
        const unsigned char *map = NULL;
        uint64_t maplen = 0;
        wire_dec d = {body, body + len, false};
        if ((flags & WIRE_SHM) && (type == WIRE_CLAIMS || type == WIRE_RING)) {
            maplen = wdec_u64(&d);
            int mfd = reader_take_fd(&r);
            if (d.bad || !(type == WIRE_CLAIMS ? claims_map(mfd, maplen) : ring_map(mfd, maplen)))
                worker_exit(70);
            r.start += WIRE_HDR + (size_t)len;
            continue;
        }
        if (flags & WIRE_SHM) {
            maplen = wdec_u64(&d);
            int mfd = reader_take_fd(&r);
            map = mfd >= 0 && !d.bad ? wmap_get(mfd, maplen, type != WIRE_LEND) : NULL;
            if (!map)
                worker_exit(70);
            d = (wire_dec){map, map + maplen, false};
        }
        r.start += WIRE_HDR + (size_t)len;
        if (type == WIRE_LEND) {
            if (!map)
                worker_exit(70);
            lent.map = (unsigned char *)map;
            lent.cap = (size_t)maplen;
            continue; /* for the CALL that follows */
        }
        bool go_on = true;
        if (type == WIRE_EXIT)
            worker_exit(0);
        else if (type == WIRE_CALL || type == WIRE_INIT)
            go_on = handle_calls(fd, &d, type == WIRE_INIT, id, &out, &fs, &fcap);
        else
            worker_exit(70);
        if (type == WIRE_CALL && r.start == r.end)
            spin_note_answer();
        if (map || lent.map)
            wmap_trim();
        lent.map = NULL;
        lent.call = NULL;
        if (!go_on)
            worker_exit(0);
    }
}

/* The worker's socket named by CF__WORKER_ENV ("<fd>:<parent pid>:<key>"),
 * once it has shown that a process pool started us: a Unix stream socket,
 * made by that parent pid (SO_PEERCRED: a socketpair() reports its
 * creator) under our uid, which holds the key of the variable as its first
 * bytes (peeked: a socket that is not ours loses nothing).  Someone who
 * controls only our environment cannot put the key into a socket our
 * parent made; someone who controls our descriptors (stdin a socket of
 * theirs) has a peer pid that is not the one the variable must name (see
 * the getppid() check of the caller).  The portable build cannot learn
 * the peer's pid (os.h): there the key and the getppid() check carry it,
 * with the peer's uid checked where getpeereid() exists.  Returns the fd,
 * or -1: not a worker. */
static int worker_socket(const char *spec, pid_t *parent)
{
    int fd = -1, end = 0;
    long ppid = 0;
    char hex[2 * CF__WORKER_KEY + 1];
    if (sscanf(spec, "%d:%ld:%32[0-9a-f]%n", &fd, &ppid, hex, &end) != 3 || spec[end] ||
        strlen(hex) != 2 * CF__WORKER_KEY || fd < 0 || ppid <= 1)
        return -1;
    if (!cf__os_socket_from(fd, (pid_t)ppid))
        return -1;
    unsigned char want[CF__WORKER_KEY], got[CF__WORKER_KEY];
    for (size_t i = 0; i < sizeof want; i++)
        sscanf(hex + 2 * i, "%2hhx", &want[i]);
    ssize_t n;
    do
        n = recv(fd, got, sizeof got, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof got || memcmp(got, want, sizeof got) != 0)
        return -1;
    if (recv(fd, got, sizeof got, MSG_DONTWAIT) != (ssize_t)sizeof got)
        return -1;
    *parent = (pid_t)ppid;
    return fd;
}

CF__API int cf_process_init(int argc, char **argv)
{
    if (argc < 1 || !argv)
        return cf__fail(CF_EINVAL, "process_init: argc must be >= 1 and argv not NULL");
    /* secure_getenv: a set-user-ID program never takes the variable. */
    const char *spec = cf__os_secure_getenv(CF__WORKER_ENV);
    pid_t parent = 0;
    int fd = spec ? worker_socket(spec, &parent) : -1;
    /* Programs a task starts are not workers; a program that was not
     * started by a pool runs main() as if the variable was not there. */
    unsetenv(CF__WORKER_ENV);
    if (fd >= 0) {
        /* Nor do they inherit the socket (dup2 in the parent's spawn
         * cleared close-on-exec). */
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        cf__os_die_with_parent();
        /* The verified creator of the socket must be our parent.  If it
         * is not, it died before the death signal was armed (a worker
         * of a dead pool must not run the program), or it made a socket
         * and set our environment without being our parent - which only
         * a process that already decides what we run can do. */
        if (getppid() != parent)
            _exit(0);
        cf__worker_run(fd);
    }
    cf__os_note_exe(argv[0]);
    cf__process_argv = argv;
    cf__process_init_called = true;
    return CF_OK;
}
