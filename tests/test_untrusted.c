/* SPDX-License-Identifier: MIT */
/*
 * test_untrusted.c - what a worker process, its shared memory, its values
 * and the environment may not do to the parent: results a worker cannot
 * send (CF_PTR) or values that lie about their size, result memory the
 * worker rewrites after answering, oversized shared memory, a forged
 * worker variable, the worker's socket leaking into programs a task
 * starts, a fake worker answering with random frames, a worker that dies
 * while a process it forked keeps its socket open, and a spin budget
 * from the environment that would turn waits into busy loops.
 *
 * Tasks run in other processes, so they never use cmocka asserts: they
 * report through their result or failure.
 */
#include "cf_test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef __linux__
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include "internal.h"
#include "process.h"

#define T_OK 10.0

/* Destroys the pool and checks every worker was reaped. */
static void udestroy(cf_executor *ex)
{
    assert_ok(cf_executor_destroy(ex));
    assert_no_children();
}

/* ---- tasks ----------------------------------------------------------------- */

CF_TASK(t_square);

static int u_return_ptr(cf_call *call)
{
    static int x;
    return cf_return_ptr(call, &x);
}
CF_TASK(u_return_ptr);

/* Returns i64 arg 0 squared, or a pointer when it is negative. */
static int u_square_or_ptr(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    if (x < 0)
        return u_return_ptr(call);
    return cf_return_i64(call, x * x);
}
CF_TASK(u_square_or_ptr);

/* Returns a string value whose size is not its length. */
static int u_return_bad_str(cf_call *call)
{
    cf_value v = cf_str("abc");
    v.size = 10;
    return cf_return_value(call, &v);
}
CF_TASK(u_return_bad_str);

/* Answers its call by writing a RESULT frame through shared memory
 * straight to the worker's socket (fd 3 in an exec'd worker), then exits
 * before the worker can answer: arg 0 says which memory -
 *   0: a valid result in a memfd sealed against shrinking, not writing;
 *   1: a sparse memfd, sealed, announced far bigger than a result can be. */
static int u_send_shm_frame(cf_call *call)
{
    int64_t how = cf_arg_i64(call, 0);
    int mfd = memfd_create("u-frame", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    static const unsigned char body[] = {1, 0, 0, 0, 1, CF_STR, 6, 0, 0, 0, 0, 0, 0, 0,
                                         'h', 'e', 'l', 'l', 'o', 0};
    uint64_t size = how == 0 ? sizeof body : (uint64_t)CF_PAYLOAD_MAX + (64u << 20);
    if (mfd < 0 || ftruncate(mfd, (off_t)size) != 0 ||
        pwrite(mfd, body, sizeof body, 0) != (ssize_t)sizeof body)
        return cf_raise(call, 1, "SetupError", "memfd: %s", strerror(errno));
    int seals = F_SEAL_SHRINK | F_SEAL_GROW | (how == 0 ? 0 : F_SEAL_WRITE);
    if (fcntl(mfd, F_ADD_SEALS, seals) != 0)
        return cf_raise(call, 1, "SetupError", "seal: %s", strerror(errno));
    unsigned char hdr[WIRE_SHM_HDR];
    wire_shm_header(hdr, WIRE_RESULT, 0, size, cf__worker_call_id);
    if (cf__wire_send_fd(3, hdr, sizeof hdr, mfd, 0) != (ssize_t)sizeof hdr)
        return cf_raise(call, 1, "SetupError", "send: %s", strerror(errno));
    _exit(0);
}
CF_TASK(u_send_shm_frame);

/* Returns a string as big as its bytes argument (so it is made in the
 * buffer the parent lent for the result), then - once the parent has it
 * and opens the FIFO arg 1 - a thread of the worker overwrites the
 * string's NUL in that buffer and writes a byte to the FIFO arg 2. */
typedef struct rewrite {
    char *nul;
    int gate;
    char done[128];
} rewrite;

static void *rewrite_main(void *arg)
{
    rewrite *r = arg;
    struct pollfd pfd = {r->gate, POLLIN, 0};
    if (poll(&pfd, 1, 10000) == 1) {
        *r->nul = 'x';
        int fd = open(r->done, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0 && write(fd, "x", 1) == 1)
            close(fd);
    }
    return NULL;
}

static int u_lent_rewrite(cf_call *call)
{
    size_t n = 0;
    cf_arg_bytes(call, 0, &n);
    static rewrite r;
    r.gate = open(cf_arg_str(call, 1), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    snprintf(r.done, sizeof r.done, "%s", cf_arg_str(call, 2));
    char *s = malloc(n - 64);
    if (!s || r.gate < 0)
        return cf_raise(call, 1, "SetupError", "out of memory or no FIFO");
    memset(s, 'a', n - 65);
    s[n - 65] = '\0';
    cf_return_str(call, s);
    free(s);
    const cf_value *res = &cf__future_of_call(call)->result;
    r.nul = (char *)res->as.str + res->size;
    pthread_t th;
    if (pthread_create(&th, NULL, rewrite_main, &r) != 0)
        return cf_raise(call, 1, "SetupError", "no thread");
    pthread_detach(th);
    return 0;
}
CF_TASK(u_lent_rewrite);

/* What a shell started by the task sees on fd 3 (the worker's socket in
 * an exec'd worker, if it leaked), as a string ending in "end". */
static int u_child_fd3(cf_call *call)
{
    FILE *sh = popen("readlink /proc/$$/fd/3 2>/dev/null; echo end", "r");
    if (!sh)
        return cf_raise(call, 1, "SetupError", "popen: %s", strerror(errno));
    char out[256] = "";
    size_t n = fread(out, 1, sizeof out - 1, sh);
    out[n] = '\0';
    pclose(sh);
    return cf_return_str(call, out);
}
CF_TASK(u_child_fd3);

/* Returns a fresh result of arg 0 bytes (kind arg 1: 0 bytes, 1 string),
 * or an echo of its bytes argument when it has one.  Made in a worker with
 * no big argument, a big result goes in a memfd of the worker's own. */
static int u_make(cf_call *call)
{
    const cf_value *a = cf_arg(call, 0);
    if (a && a->kind == CF_BYTES)
        return cf_return_bytes(call, a->as.bytes, a->size);
    size_t n = (size_t)cf_arg_i64(call, 0);
    char *b = malloc(n + 1);
    if (!b)
        return cf_raise(call, 1, "MemoryError", "no memory");
    memset(b, 'z', n);
    b[n] = '\0';
    int rc = cf_arg_i64(call, 1) ? cf_return_str(call, b) : cf_return_bytes(call, b, n);
    free(b);
    return rc;
}
CF_TASK(u_make);

/* Forks a process that keeps the worker's socket (fd 3 in an exec'd
 * worker) open until the parent closes its end (at most 30 s), then
 * dies, as a crashing worker whose task had started a helper process. */
static int u_die_leaving_child(cf_call *call)
{
    (void)call;
    if (fork() == 0) {
        struct pollfd pfd = {3, 0, 0}; /* POLLHUP: the pool let go */
        poll(&pfd, 1, 30000);
        _exit(0);
    }
    _exit(7);
}
CF_TASK(u_die_leaving_child);

/* Shuts the worker's socket (fd 3 in an exec'd worker) and runs on for
 * up to 30 s: a worker that can answer nothing more but does not exit. */
static int u_hang_up(cf_call *call)
{
    shutdown(3, SHUT_RDWR);
    for (int i = 0; i < 3000 && !cf_cancel_requested(call); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return cf_return_i64(call, 1);
}
CF_TASK(u_hang_up);

/* Publishes `n` more bytes of the ring (whatever they hold) at *head and
 * rings the bell as a worker must when the parent says it sleeps. */
static void u_ring_publish(unsigned char *ring, uint64_t *head, uint64_t n)
{
    *head += n;
    atomic_store(cf__ring_word(ring, CF__RING_HEAD), *head);
    if (atomic_exchange(cf__ring_word(ring, CF__RING_SLEEPING), 0)) {
        unsigned char bell[WIRE_HDR] = {0, 0, 0, 0, WIRE_BELL, 0, 0, 0};
        if (write(3, bell, sizeof bell) != (ssize_t)sizeof bell)
            _exit(1);
    }
}

/* Says in its result ring that its answer comes through the socket (a
 * SOCKET frame, as a worker does before a big result), never sends that
 * answer, and instead publishes a whole ring's worth of bytes whenever the
 * parent has copied out all it published, up to 64 times, waiting up to
 * 2 s (scaled) each time.  Then exits with 10 + how many of those rings
 * the parent copied out; 9 if it never copied the SOCKET frame. */
static int u_ring_flood(cf_call *call)
{
    unsigned char *ring = cf__worker_ring_map();
    if (!ring)
        return cf_raise(call, 1, "SetupError", "no result ring");
    uint64_t head = atomic_load(cf__ring_word(ring, CF__RING_HEAD));
    unsigned char hdr[WIRE_HDR] = {0, 0, 0, 0, WIRE_SOCKET, 0, 0, 0};
    wire_set_id(hdr, cf__worker_call_id);
    for (size_t i = 0; i < WIRE_HDR; i++)
        ring[CF__RING_DATA + (head + i) % CF__RING_BYTES] = hdr[i];
    u_ring_publish(ring, &head, WIRE_HDR);
    int copied = -1;
    for (int k = 0; k <= 64; k++) {
        double end = cf_test_now() + 2 * cf_test_scale();
        while (atomic_load(cf__ring_word(ring, CF__RING_TAIL)) != head && cf_test_now() < end) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (atomic_load(cf__ring_word(ring, CF__RING_TAIL)) != head)
            break;
        copied++;
        if (k < 64)
            u_ring_publish(ring, &head, CF__RING_BYTES);
    }
    _exit(10 + copied);
}
CF_TASK(u_ring_flood);

/* ---- a fake worker ------------------------------------------------------------ */

/* With CF_TEST_FAKE_WORKER=<seed> in its environment, this program started
 * as a pool's worker plays the worker's side of the socket itself, before
 * main(): it answers the parent's frames with a random mix of valid
 * answers and garbage (see fake_answer), through its socket and its result
 * ring, claims its calls in the shared
 * claim words or scribbles on them (fake_claim), and never hangs - every
 * CALL gets something, or the fake exits. */
#define FAKE_ENV "CF_TEST_FAKE_WORKER"

static uint64_t fake_rng;

static uint64_t fake_next(void)
{
    fake_rng ^= fake_rng << 13;
    fake_rng ^= fake_rng >> 7;
    fake_rng ^= fake_rng << 17;
    return fake_rng;
}

static void fake_write(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            _exit(0); /* the parent is gone or killed us */
        b += w;
        n -= (size_t)w;
    }
}

/* A frame of `type` with `len` random bytes. */
static void fake_random_frame(int fd, uint8_t type, size_t len, uint8_t flags)
{
    unsigned char buf[WIRE_HDR + 64];
    len = len > 64 ? 64 : len;
    for (size_t i = 0; i < len; i++)
        buf[WIRE_HDR + i] = (unsigned char)fake_next();
    wire_enc e = {.buf = buf, .len = WIRE_HDR + len, .cap = sizeof buf};
    wenc_finish(&e, type, flags);
    fake_write(fd, buf, WIRE_HDR + len);
}

/* Answers a CALL of `n` calls. */
/* The claim words the parent shares (CLAIMS), and how many calls this
 * worker has been sent (call k's word is k % fake_nwords). */
static _Atomic uint32_t *fake_words;
static size_t fake_nwords;
static uint64_t fake_calls;

/* Claims the next call's word as a worker must (PENDING -> RUNNING), or
 * now and then scribbles on a random word instead.  Returns true when the
 * call was cancelled first (answered "skipped"). */
static bool fake_claim(void)
{
    uint64_t k = fake_calls++;
    if (!fake_words)
        return false;
    if (fake_next() % 16 == 0) {
        atomic_store(&fake_words[fake_next() % fake_nwords], (uint32_t)fake_next());
        return false;
    }
    uint32_t pending = CF__CLAIM_PENDING;
    return !atomic_compare_exchange_strong(&fake_words[k % fake_nwords], &pending,
                                           CF__CLAIM_RUNNING) &&
           pending == CF__CLAIM_CANCELLED;
}

/* The result ring the parent shares (RING), and how many bytes this fake
 * has published in it. */
static unsigned char *fake_ring;
static uint64_t fake_head;

/* Publishes `n` bytes in the ring (whatever they are) and rings the bell
 * as a worker must when the parent says it sleeps; false (nothing done)
 * when there is no ring or no room. */
static bool fake_ring_put(int fd, const unsigned char *p, size_t n)
{
    if (!fake_ring)
        return false;
    uint64_t tail = atomic_load(cf__ring_word(fake_ring, CF__RING_TAIL));
    if (fake_head - tail + n > CF__RING_BYTES)
        return false;
    for (size_t i = 0; i < n; i++)
        fake_ring[CF__RING_DATA + (fake_head + i) % CF__RING_BYTES] = p[i];
    fake_head += n;
    atomic_store(cf__ring_word(fake_ring, CF__RING_HEAD), fake_head);
    if (atomic_load(cf__ring_word(fake_ring, CF__RING_SLEEPING))) {
        unsigned char bell[WIRE_HDR] = {0, 0, 0, 0, WIRE_BELL, 0, 0, 0};
        fake_write(fd, bell, sizeof bell);
    }
    return true;
}

static void fake_answer(int fd, uint32_t n, uint16_t id)
{
    wire_enc e = {0};
    wenc_reset(&e);
    wenc_u32(&e, n);
    for (uint32_t i = 0; i < n; i++) {
        if (fake_claim()) {
            wenc_u8(&e, WIRE_SKIPPED);
        } else if (fake_next() % 8 == 0) {
            wenc_u8(&e, 0);
            wenc_failure(&e, 5, "FakeError", "made up");
        } else {
            wenc_u8(&e, 1);
            wenc_u8(&e, CF_I64);
            wenc_u64(&e, fake_next() % 1000);
        }
    }
    wenc_finish(&e, WIRE_RESULT, 0);
    wire_set_id(e.buf, id); /* the call it answers */
    switch (fake_next() % 16) {
    case 0: { /* flip a byte; in the length, the frame is cut short: leave */
        size_t at = fake_next() % e.len;
        e.buf[at] ^= (unsigned char)(1 + fake_next() % 255);
        fake_write(fd, e.buf, e.len);
        if (at < 4)
            _exit(0);
        break;
    }
    case 1: /* cut short, then leave */
        fake_write(fd, e.buf, fake_next() % e.len);
        _exit(0);
    case 2: /* random bytes as a result */
        fake_random_frame(fd, WIRE_RESULT, fake_next() % 40, 0);
        break;
    case 3: { /* an unknown frame type */
        /* Not one a worker may send: an empty BELL, for one, is a valid
         * frame that asks for nothing, and this fake would then never
         * answer - a call that runs forever, which is no fault. */
        uint8_t type;
        do
            type = (uint8_t)(fake_next() % 256);
        while (type == WIRE_RESULT || type == WIRE_HELLO || type == WIRE_BELL);
        fake_random_frame(fd, type, fake_next() % 40, 0);
        break;
    }
    case 4: { /* a huge announced length, then leave */
        unsigned char hdr[WIRE_HDR] = {0xff, 0xff, 0xff, 0x0f, WIRE_RESULT, 0, 0, 0};
        fake_write(fd, hdr, sizeof hdr);
        _exit(0);
    }
    case 5: /* a second HELLO, failed */
        fake_random_frame(fd, WIRE_HELLO, 5 + fake_next() % 30, 0);
        fake_write(fd, e.buf, e.len);
        break;
    case 6: /* a stray result before the real one */
        fake_write(fd, e.buf, e.len);
        fake_write(fd, e.buf, e.len);
        break;
    case 7: { /* "in shared memory": a sealed memfd of random bytes */
        int mfd = memfd_create("fake", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        size_t len = 1 + fake_next() % 512;
        unsigned char junk[512];
        for (size_t i = 0; i < len; i++)
            junk[i] = (unsigned char)fake_next();
        if (mfd >= 0 && write(mfd, junk, len) == (ssize_t)len &&
            fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) == 0) {
            unsigned char hdr[WIRE_SHM_HDR];
            wire_shm_header(hdr, WIRE_RESULT, 0, fake_next() % 2 ? len : fake_next(), id);
            cf__wire_send_fd(fd, hdr, sizeof hdr, mfd, 0);
        }
        if (mfd >= 0)
            close(mfd);
        break;
    }
    case 8: /* "in the lent buffer", which there is not */
        fake_random_frame(fd, WIRE_RESULT, 8, WIRE_SHM | WIRE_LENT);
        break;
    case 9:
        _exit((int)(fake_next() % 4));
    case 10: /* the right answer through the ring, as a worker sends it */
    case 11:
        if (!fake_ring_put(fd, e.buf, e.len))
            fake_write(fd, e.buf, e.len);
        break;
    case 12: { /* random bytes in the ring, or the answer with a byte flipped */
        unsigned char junk[64];
        size_t len = fake_next() % 2 ? 1 + fake_next() % sizeof junk : 0;
        for (size_t i = 0; i < len; i++)
            junk[i] = (unsigned char)fake_next();
        if (!len)
            e.buf[fake_next() % e.len] ^= (unsigned char)(1 + fake_next() % 255);
        if (!fake_ring_put(fd, len ? junk : e.buf, len ? len : e.len))
            fake_write(fd, e.buf, e.len);
        break;
    }
    case 13: /* a ring position beyond what the ring can hold, then the bell */
        if (fake_ring) {
            fake_head += CF__RING_BYTES + 1 + fake_next() % 4096;
            atomic_store(cf__ring_word(fake_ring, CF__RING_HEAD), fake_head);
            unsigned char bell[WIRE_HDR] = {0, 0, 0, 0, WIRE_BELL, 0, 0, 0};
            fake_write(fd, bell, sizeof bell);
        }
        fake_write(fd, e.buf, e.len);
        break;
    default:
        fake_write(fd, e.buf, e.len);
    }
    wenc_free(&e);
}

static _Noreturn void fake_worker(int fd, uint64_t seed)
{
    fake_rng = seed * 2654435761u + (uint64_t)getpid() * 40503u + 1;
    unsigned char key[CF__WORKER_KEY];
    if (recv(fd, key, sizeof key, MSG_WAITALL) != (ssize_t)sizeof key)
        _exit(0);
    unsigned char *buf = malloc(WIRE_HDR + WIRE_INLINE_MAX);
    for (;;) {
        int fds[16], nfds = 0;
        size_t have = 0;
        while (have < WIRE_HDR) {
            ssize_t r =
                cf__wire_recv(fd, buf + have, WIRE_HDR - have, 0, fds, &nfds, 16, NULL);
            if (r <= 0)
                _exit(0);
            have += (size_t)r;
        }
        uint32_t len;
        uint8_t type, flags;
        uint16_t id;
        wire_header(buf, &len, &type, &flags, &id);
        if (len > WIRE_INLINE_MAX)
            _exit(0);
        while (have < WIRE_HDR + len) {
            ssize_t r = cf__wire_recv(fd, buf + have, WIRE_HDR + len - have, 0, fds, &nfds,
                                      16, NULL);
            if (r <= 0)
                _exit(0);
            have += (size_t)r;
        }
        if (type == WIRE_CLAIMS && nfds == 1 && !fake_words) {
            struct stat st;
            void *m = fstat(fds[0], &st) == 0 && st.st_size >= 4
                          ? mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                                 fds[0], 0)
                          : MAP_FAILED;
            if (m != MAP_FAILED) {
                fake_words = m;
                fake_nwords = (size_t)st.st_size / 4;
            }
        }
        if (type == WIRE_RING && nfds == 1 && !fake_ring) {
            void *m = mmap(NULL, CF__RING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
            if (m != MAP_FAILED)
                fake_ring = m;
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (type == WIRE_EXIT)
            _exit(0);
        if (type == WIRE_INIT) {
            if (fake_next() % 8 == 0) {
                fake_random_frame(fd, WIRE_HELLO, fake_next() % 20, 0);
            } else {
                unsigned char hello[WIRE_HDR + 5];
                wire_enc e = {.buf = hello, .len = WIRE_HDR, .cap = sizeof hello};
                wenc_u32(&e, (uint32_t)getpid());
                wenc_u8(&e, 1);
                wenc_finish(&e, WIRE_HELLO, 0);
                fake_write(fd, hello, sizeof hello);
            }
            continue;
        }
        if (type == WIRE_CALL) {
            wire_dec d = {buf + WIRE_HDR, buf + WIRE_HDR + len, false};
            uint32_t n = (flags & WIRE_SHM) ? 1 : wdec_u32(&d);
            fake_answer(fd, n, id);
        }
    }
}

__attribute__((constructor)) static void fake_worker_maybe(void)
{
    const char *seed = getenv(FAKE_ENV);
    const char *spec = getenv(CF__WORKER_ENV);
    int fd;
    if (seed && spec && sscanf(spec, "%d:", &fd) == 1)
        fake_worker(fd, strtoull(seed, NULL, 10));
}

/* ---- values ------------------------------------------------------------------ */

static void test_ptr_result_fails_only_its_call(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, u_return_ptr, CF_NOARGS, &f));
    const cf_failure *fl = expect_task_failure(f, T_OK);
    assert_int_equal(cf_failure_code(fl), CF_ENOTCOPYABLE);
    assert_true(contains(cf_failure_message(fl), "\"u_return_ptr\""));
    assert_true(contains(cf_failure_message(fl), "pointer"));
    assert_ok(cf_future_release(f));
    /* In a map chunk: only that element fails; the pool carries on. */
    cf_value in[5] = {cf_i64(1), cf_i64(2), cf_i64(-1), cf_i64(4), cf_i64(5)};
    cf_map_input mi = cf_input_array(in, 5);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 5;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, u_square_or_ptr, &mi, 1, &mo, &it));
    for (int i = 0; i < 5; i++) {
        const cf_value *v = NULL;
        const cf_failure *mf = NULL;
        int rc = cf_map_next(it, &v, &mf);
        if (i == 2) {
            assert_cf(CF_ETASK, rc);
            assert_int_equal(cf_failure_code(mf), CF_ENOTCOPYABLE);
            assert_true(contains(cf_failure_message(mf), "u_square_or_ptr"));
        } else {
            assert_ok(rc);
            assert_int_equal(v->as.i64, (int64_t)(i + 1) * (i + 1));
        }
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(7))), 49);
    udestroy(ex);
}

/* A CF_STR's size is its strlen: a value that says otherwise is refused
 * where it enters (submit, initargs, return), by every engine. */
static void test_str_size_must_match_text(void **state)
{
    (void)state;
    cf_executor *pools[2] = {ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC), pool_new(1)};
    for (int k = 0; k < 2; k++) {
        cf_executor *ex = pools[k];
        size_t sizes[3] = {10, 1, 0};
        for (int s = 0; s < 3; s++) {
            cf_value v = cf_str("abc");
            v.size = sizes[s];
            cf_future *f = (cf_future *)&v;
            assert_cf(CF_EINVAL, cf_submit(ex, t_square, &v, 1, &f));
            assert_null(f);
            assert_true(contains(cf_last_error_message(), "size"));
        }
        /* The same text with its right size is fine; a task that returns
         * a lying string fails alone. */
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, u_return_bad_str, CF_NOARGS, &f));
        const cf_failure *fl = expect_task_failure(f, T_OK);
        assert_int_equal(cf_failure_code(fl), CF_EINVAL);
        assert_true(contains(cf_failure_message(fl), "size"));
        assert_ok(cf_future_release(f));
        assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(9))), 81);
    }
    udestroy(pools[0]);
    assert_ok(cf_executor_destroy(pools[1]));
    /* initargs too. */
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.initializer = t_square;
    cf_value bad = cf_str("abc");
    bad.size = 2;
    o.initargs = &bad;
    o.ninitargs = 1;
    cf_executor *ex = NULL;
    assert_cf(CF_EINVAL, cf_process_pool_new(&ex, &o));
    assert_null(ex);
}

/* ---- a worker's death ---------------------------------------------------- */

#if defined(__linux__) && !defined(CF_TEST_PORTABLE)
/* Makes pidfd_open fail with ENOSYS in this process and its children, as
 * on kernels before 5.3 or under a seccomp profile that does not know it.
 * False if no filter can be installed. */
static bool deny_pidfd_open(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}
#endif

/* In a child of the test (so that a seccomp filter stays there): a pool
 * whose worker dies while a process it forked keeps its socket open.  The
 * call must fail with CF_EBROKEN within T_OK, and the pool be destroyed.
 * Exit status: 0 good, 1 setup, 2 the call did not fail so, 3 no filter. */
static _Noreturn void death_probe(bool without_pidfd)
{
    alarm((unsigned)(3 * T_OK) * (unsigned)cf_test_scale()); /* never left behind */
#if defined(__linux__) && !defined(CF_TEST_PORTABLE)
    if (without_pidfd && !deny_pidfd_open())
        _exit(3);
#else
    (void)without_pidfd; /* no pidfds anyway */
#endif
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    cf_future *f = NULL;
    if (cf_process_pool_new(&ex, &o) != CF_OK ||
        cf_submit(ex, u_die_leaving_child, CF_NOARGS, &f) != CF_OK)
        _exit(1);
    int rc = cf_future_result(f, T_OK * cf_test_scale(), NULL);
    if (rc != CF_EBROKEN) {
        fprintf(stderr, "the dead worker's call: %s (%s)\n", cf_err_name(rc),
                cf_last_error_message());
        _exit(2);
    }
    cf_future_release(f);
    cf_executor_destroy(ex);
    _exit(0);
}

/* A worker that dies is noticed even while a process it forked keeps its
 * socket open (no EOF), with or without pidfds: its call fails, and the
 * pool can be destroyed (its shutdown waits for the worker to be reaped). */
static void test_death_seen_while_a_child_keeps_the_socket(void **state)
{
    (void)state;
    for (int without_pidfd = 0; without_pidfd < 2; without_pidfd++) {
#ifdef CF_TEST_PORTABLE
        if (without_pidfd)
            break; /* none there: the first round is without */
#endif
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            death_probe(without_pidfd);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
            print_message("no seccomp filter: the round without pidfds is skipped\n");
            continue;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("%s pidfds: the probe ended with status 0x%x (exit 2: the call did not "
                     "fail with CF_EBROKEN in time; killed by SIGALRM: destroy hung)",
                     without_pidfd ? "without" : "with", status);
    }
}

/* A worker that shuts its socket and runs on can answer nothing more: it
 * is killed at once (with or without a pidfd), so its call fails as a
 * crash's does, within the time limit rather than when the worker chooses
 * to exit, and the call queued behind it runs on a replacement. */
static void test_worker_closing_its_socket_is_stopped(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_REPLACES_WORKER, CF_START_EXEC);
    cf_future *f = NULL, *g = NULL;
    assert_ok(cf_submit(ex, u_hang_up, CF_NOARGS, &f));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &g));
    double t0 = cf_test_now();
    int rc = cf_future_result(f, T_OK * cf_test_scale(), NULL);
    if (rc != CF_EBROKEN)
        fail_msg("the call of the worker that shut its socket: %s after %.1f s (%s)",
                 cf_err_name(rc), cf_test_now() - t0, cf_last_error_message());
    int64_t v = 0;
    assert_ok(cf_future_result_i64(g, T_OK * cf_test_scale(), &v));
    assert_int_equal(v, 9);
    cf_future_release(f);
    cf_future_release(g);
    assert_ok(cf_executor_destroy(ex));
}

/* A worker that announces in its result ring that an answer comes through
 * the socket, never sends it, and keeps filling the ring: the parent
 * copies nothing after the SOCKET frame until that answer has come, so it
 * holds at most one ring's worth of the worker's bytes, where it used to
 * copy out ring after ring (a gigabyte in seconds).  The worker reports,
 * through its exit status, how many rings the parent took. */
static void test_ring_flood_after_socket_frame_is_not_copied(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(3))), 9); /* the ring is set up */
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, u_ring_flood, CF_NOARGS, &f));
    int rc = cf_future_result(f, 3 * T_OK * cf_test_scale(), NULL);
    const char *msg = cf_last_error_message();
    if (rc != CF_EBROKEN || !contains(msg, "exited with status 10"))
        fail_msg("%s: %s (status 9: the SOCKET frame was never copied; 10 + n: the "
                 "parent copied n rings after it)",
                 cf_err_name(rc), msg);
    cf_future_release(f);
    udestroy(ex);
}

/* ---- shared memory -------------------------------------------------------- */

/* A FIFO in /tmp, opened for reading without blocking. */
typedef struct fifo {
    char path[96];
    int fd;
} fifo;

static void fifo_open(fifo *f, const char *tag)
{
    snprintf(f->path, sizeof f->path, "/tmp/cf-untrusted-%ld-%s", (long)getpid(), tag);
    unlink(f->path);
    assert_int_equal(mkfifo(f->path, 0600), 0);
    f->fd = open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(f->fd >= 0);
}

static void fifo_close(fifo *f)
{
    close(f->fd);
    unlink(f->path);
}

/* A string result made in a lent buffer must stay a string after the
 * worker rewrites that buffer: the parent checked it in memory the worker
 * can no longer reach. */
static void test_lent_result_rewritten_after_answer(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE("no lent buffers without seals: a result comes in the worker's own "
                        "memory and is copied (test_big_results_in_place_only_where_safe)");
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    fifo gate, done;
    fifo_open(&gate, "gate");
    fifo_open(&done, "done");
    size_t n = (size_t)2 << 20;
    unsigned char *arg = calloc(1, n);
    assert_non_null(arg);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, u_lent_rewrite,
                        CF_ARGS(cf_bytes(arg, n), cf_str(gate.path), cf_str(done.path)), &f));
    free(arg);
    const cf_value *v = NULL;
    assert_ok(cf_future_result(f, T_OK * cf_test_scale(), &v));
    assert_int_equal(v->kind, CF_STR);
    assert_int_equal(v->size, n - 65);
    /* Now let the worker rewrite its buffer, and wait until it has. */
    int w = open(gate.path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(w >= 0);
    assert_int_equal(write(w, "g", 1), 1);
    close(w);
    struct pollfd pfd = {done.fd, POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, (int)(T_OK * 1000) * cf_test_scale()), 1);
    assert_int_equal(v->as.str[v->size], '\0');
    assert_int_equal(strnlen(v->as.str, v->size + 1), v->size);
    assert_ok(cf_future_release(f));
    fifo_close(&gate);
    fifo_close(&done);
    udestroy(ex);
}

/* Shared memory a worker sends must be sealed against writing, and no
 * bigger than the call can answer - checked before it is mapped. */
static void test_worker_memory_must_be_sealed_and_bounded(void **state)
{
    (void)state;
    static const char *const want[2] = {"not sealed against shrinking and writing",
                                        "larger than its calls can answer"};
    for (int how = 0; how < 2; how++) {
        cf_executor *ex = ppool(1, CF_CRASH_REPLACES_WORKER, CF_START_EXEC);
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, u_send_shm_frame, CF_ARGS(cf_i64(how)), &f));
#ifdef CF_TEST_PORTABLE
        if (how == 0) {
            /* No seals to ask for: the parent reads a copy, which no
             * worker can change, so the valid result is taken. */
            assert_ok(cf_future_result(f, T_OK * cf_test_scale(), NULL));
            assert_ok(cf_future_release(f));
            udestroy(ex);
            continue;
        }
#endif
        assert_cf(CF_EBROKEN, cf_future_result(f, T_OK * cf_test_scale(), NULL));
        const cf_failure *fl = NULL;
        assert_ok(cf_future_exception(f, 0, &fl));
        if (!contains(cf_failure_message(fl), want[how]))
            fail_msg("case %d: \"%s\" does not say \"%s\"", how, cf_failure_message(fl),
                     want[how]);
        assert_ok(cf_future_release(f));
        /* Only that worker is replaced. */
        assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(4))), 16);
        udestroy(ex);
    }
}

/* The parent's descriptor table is full when a worker sends a big result
 * (a memfd rides on its frame): the kernel drops the descriptor.  That is
 * the parent's shortage, not a malformed frame: the call fails with
 * CF_ENOMEM (as a call whose arguments find no descriptor), and the
 * worker, which did nothing wrong, carries on - even in a pool that a
 * crash would break. */
static void test_parent_out_of_descriptors_blames_no_worker(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(4))), 16);
    struct rlimit saved, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    low = saved;
    low.rlim_cur = (rlim_t)count_fds() + 16;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int filler[64], nfill = 0;
    while (nfill < 64 && (filler[nfill] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        nfill++;
    int full = errno;
    cf_future *f = NULL;
    int rc = cf_submit(ex, u_make, CF_ARGS(cf_i64((int64_t)3 << 20), cf_i64(0)), &f);
    int result = rc == CF_OK ? cf_future_result(f, T_OK * cf_test_scale(), NULL) : rc;
    const cf_failure *fl = NULL;
    if (rc == CF_OK)
        cf_future_exception(f, 0, &fl);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", fl ? cf_failure_message(fl) : cf_last_error_message());
    while (nfill > 0)
        close(filler[--nfill]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    assert_int_equal(full, EMFILE); /* the table was full */
    assert_ok(rc);
    if (result != CF_ENOMEM || !contains(msg, "descriptors"))
        fail_msg("a result the parent had no descriptor for: %s (%s), expected CF_ENOMEM",
                 cf_err_name(result), msg);
    assert_ok(cf_future_release(f));
    /* Not taken for the worker's crash: the pool goes on. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(5))), 25);
    udestroy(ex);
}

/* ---- the environment --------------------------------------------------------- */

/* Starts this program with CF__WORKER_ENV = `var`, `fd3` as its fd 3 (or
 * none when -1) and one argument that names no test, so that main() -
 * when it runs - prints "no test named" and exits 2.  Returns the wait
 * status. */
static int run_with_worker_var(const char *var, int fd3)
{
    char env[256];
    snprintf(env, sizeof env, "%s=%s", CF__WORKER_ENV, var);
    char *envp[] = {env, NULL};
    char *argv[] = {"test_untrusted", "no-such-test", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (fd3 >= 0)
        posix_spawn_file_actions_adddup2(&fa, fd3, 3);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

/* A forged CFUTURES_WORKER does not turn the program into a worker: main()
 * runs and its exit status is the program's.  Only the right key, in a
 * socket this process made, does. */
static void test_forged_worker_variable_runs_main(void **state)
{
    (void)state;
    static const char key[] = "00112233445566778899aabbccddeeff";
    static const unsigned char raw[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                          0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    char var[128];
    struct {
        const char *what;
        const char *fmt; /* %ld: our pid; %s: the key */
        int kind;        /* 0 socketpair, 1 socketpair with the key in it, 2 pipe with it */
        bool worker;
    } cases[] = {
        {"old format, our socket", "3:%ld", 0, false},
        {"no key in the socket", "3:%ld:%s", 0, false},
        {"a key that is not the socket's", "3:%ld:ffeeddccbbaa99887766554433221100", 1, false},
        {"not a socket", "3:%ld:%s", 2, false},
        {"a pid that is not the socket's maker", "3:1%ld:%s", 1, false},
        {"stdin named instead", "0:%ld:%s", 1, false},
        {"garbage", "3:%ld:%s:more", 1, false},
        {"the real thing", "3:%ld:%s", 1, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(var, sizeof var, cases[i].fmt, (long)getpid(), key);
        int sv[2];
        if (cases[i].kind == 2)
            assert_int_equal(pipe2(sv, O_CLOEXEC), 0);
        else
            assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        int wr = cases[i].kind == 2 ? sv[1] : sv[0], child = cases[i].kind == 2 ? sv[0] : sv[1];
        if (cases[i].kind >= 1)
            assert_int_equal(write(wr, raw, sizeof raw), (ssize_t)sizeof raw);
        close(wr); /* a real worker sees EOF and exits 0 */
        int status = run_with_worker_var(var, child);
        close(child);
        assert_true(WIFEXITED(status));
        int expect = cases[i].worker ? 0 : 2;
#ifdef CF_TEST_PORTABLE
        /* A socket cannot be asked for its maker's pid there: the key is
         * taken, then the pid is found not to be our parent's, and the
         * program ends (0) without running main or becoming a worker. */
        if (strstr(cases[i].what, "not the socket's maker"))
            expect = 0;
#endif
        if (WEXITSTATUS(status) != expect)
            fail_msg("%s (%s): exit status %d, expected %d (%s)", cases[i].what, var,
                     WEXITSTATUS(status), expect, cases[i].worker ? "a worker" : "main");
    }
}

/* The worker's socket is not inherited by the programs a task starts. */
static void test_worker_socket_not_inherited(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, u_child_fd3, CF_NOARGS, &f));
    const cf_value *v = NULL;
    assert_ok(cf_future_result(f, T_OK * cf_test_scale(), &v));
    assert_true(contains(v->as.str, "end"));
    if (contains(v->as.str, "socket:"))
        fail_msg("a task's child inherited the worker's socket: %s", v->as.str);
    assert_ok(cf_future_release(f));
    udestroy(ex);
}

/* Pools whose workers are fakes answering with random and mutated frames
 * and scribbling on their claim words, while the test cancels some calls:
 * the parent never crashes, every future resolves (a result, a task
 * failure, CF_EBROKEN, or CF_ECANCELLED - always, once a cancel
 * succeeded), and no descriptor or child is left. */
static void test_fake_workers_cannot_hurt_the_parent(void **state)
{
    (void)state;
    enum { CALLS = 24, ROUNDS = 200 };
    int fds0 = count_fds();
    double end = cf_test_now() + 4.0 * cf_test_scale();
    int rounds = 0, outcomes[4] = {0, 0, 0, 0};
    for (; rounds < ROUNDS && cf_test_now() < end; rounds++) {
        char seed[24];
        snprintf(seed, sizeof seed, "%d", rounds);
        setenv(FAKE_ENV, seed, 1);
        cf_executor *ex = ppool(2, rounds % 2 ? CF_CRASH_REPLACES_WORKER : CF_CRASH_BREAKS_POOL,
                                CF_START_EXEC);
        cf_future *fs[CALLS];
        bool cancelled[CALLS];
        int nfs = 0;
        for (int i = 0; i < CALLS; i++) {
            int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &fs[nfs]);
            if (rc == CF_OK)
                nfs++;
            else
                assert_cf(CF_EBROKEN, rc);
        }
        /* Some cancels race the fakes' claims: one that succeeds must
         * stick, whatever the worker does with the call. */
        for (int i = 0; i < nfs; i++)
            cancelled[i] = i % 4 == 3 && cf_future_cancel(fs[i]);
        cf_value in[8];
        for (int i = 0; i < 8; i++)
            in[i] = cf_i64(i);
        cf_map_input mi = cf_input_array(in, 8);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = 3;
        cf_map_iter *it = NULL;
        int rc = cf_map(ex, t_square, &mi, 1, &mo, &it);
        if (rc == CF_OK) {
            while ((rc = cf_map_next(it, NULL, NULL)) != CF_EDONE)
                if (rc != CF_OK && rc != CF_ETASK && rc != CF_EBROKEN && rc != CF_ECANCELLED)
                    fail_msg("round %d: map element: %s", rounds, cf_err_name(rc));
            cf_map_close(it);
        } else {
            assert_cf(CF_EBROKEN, rc);
        }
        for (int i = 0; i < nfs; i++) {
            rc = cf_future_result(fs[i], T_OK * cf_test_scale(), NULL);
            if (cancelled[i] && rc != CF_ECANCELLED)
                fail_msg("round %d, call %d: cancelled, then %s", rounds, i, cf_err_name(rc));
            if (rc == CF_ECANCELLED)
                outcomes[3]++;
            else if (rc == CF_OK)
                outcomes[0]++;
            else if (rc == CF_ETASK)
                outcomes[1]++;
            else if (rc == CF_EBROKEN)
                outcomes[2]++;
            else
                fail_msg("round %d, call %d: %s (%s)", rounds, i, cf_err_name(rc),
                         cf_last_error_message());
            assert_ok(cf_future_release(fs[i]));
        }
        udestroy(ex);
        unsetenv(FAKE_ENV); /* workers are spawned until the pool is gone */
    }
    assert_int_equal(count_fds(), fds0);
    print_message("%d rounds: %d results, %d task failures, %d broken, %d cancelled\n", rounds,
                  outcomes[0], outcomes[1], outcomes[2], outcomes[3]);
    assert_true(rounds >= 5);
    assert_true(outcomes[0] > 0 && outcomes[2] > 0);
}

/* The line of /proc/self/maps that holds `p` ("" if none), in `line`. */
static void mapping_of(const void *p, char *line, size_t size)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    uintptr_t at = (uintptr_t)p;
    line[0] = '\0';
    char buf[512];
    while (fgets(buf, sizeof buf, f)) {
        unsigned long lo, hi;
        if (sscanf(buf, "%lx-%lx", &lo, &hi) == 2 && at >= lo && at < hi) {
            snprintf(line, size, "%s", buf);
            break;
        }
    }
    fclose(f);
}

/* Where big results live once the parent has them: in place (zero copy)
 * only where no worker can change them - a worker's own write-sealed memfd
 * (mapped private, read-only) or, for bytes, the lent buffer - and a
 * string made in a lent buffer is the parent's own copy. */
static void test_big_results_in_place_only_where_safe(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    size_t n = (size_t)3 << 20;
    unsigned char *in = calloc(1, n);
    assert_non_null(in);
    struct {
        const char *what;
        cf_value args[2];
        size_t nargs;
        const char *want; /* in the line of its mapping; NULL: not shared memory */
    } cases[] = {
#ifdef CF_TEST_PORTABLE
        /* No seals, so no lending and nothing read in place: every big
         * result is the parent's own read-only copy, in no memfd. */
        {"bytes in a worker's memfd", {cf_i64((int64_t)n), cf_i64(0)}, 2, "r--s"},
        {"string in a worker's memfd", {cf_i64((int64_t)n), cf_i64(1)}, 2, "r--s"},
        {"bytes echoed", {cf_bytes(in, n)}, 1, "r--s"},
#else
        {"bytes in a worker's memfd", {cf_i64((int64_t)n), cf_i64(0)}, 2, "r--p"},
        {"string in a worker's memfd", {cf_i64((int64_t)n), cf_i64(1)}, 2, "r--p"},
        {"bytes echoed in the lent buffer", {cf_bytes(in, n)}, 1, "rw-s"},
#endif
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cf_future *f = NULL;
        assert_ok(cf_submit(ex, u_make, cases[i].args, cases[i].nargs, &f));
        const cf_value *v = NULL;
        assert_ok(cf_future_result(f, T_OK * cf_test_scale(), &v));
        assert_int_equal(v->size, n);
        char line[512];
        mapping_of(v->as.bytes, line, sizeof line);
#ifdef CF_TEST_PORTABLE
        if (contains(line, "memfd:") || !contains(line, cases[i].want))
#else
        if (!contains(line, "memfd:cfutures") || !contains(line, cases[i].want))
#endif
            fail_msg("%s: not in place as expected (%s): %s", cases[i].what, cases[i].want,
                     line);
        assert_ok(cf_future_release(f));
    }
    /* A string made in the lent buffer: copied out, not in shared memory. */
    cf_future *f = NULL;
    fifo gate, done;
    fifo_open(&gate, "gate2");
    fifo_open(&done, "done2");
    assert_ok(cf_submit(ex, u_lent_rewrite,
                        CF_ARGS(cf_bytes(in, n), cf_str(gate.path), cf_str(done.path)), &f));
    const cf_value *v = NULL;
    assert_ok(cf_future_result(f, T_OK * cf_test_scale(), &v));
    char line[512];
    mapping_of(v->as.str, line, sizeof line);
    if (contains(line, "memfd:"))
        fail_msg("a string made in a lent buffer is read in place: %s", line);
    assert_ok(cf_future_release(f));
    fifo_close(&gate);
    fifo_close(&done);
    free(in);
    udestroy(ex);
}

/* With CF_TEST_SECURE_PROBE set, this program (run set-user-ID by
 * test_secure_execution_refuses_exec_start) checks before main() that an
 * exec-started pool is refused and a fork-started one is not; its exit
 * status says which check failed. */
__attribute__((constructor)) static void secure_probe_maybe(void)
{
    if (!getenv("CF_TEST_SECURE_PROBE"))
        return;
    char *argv[] = {"probe", NULL};
    if (!getauxval(AT_SECURE))
        _exit(10);
    if (cf_process_init(1, argv) != CF_OK)
        _exit(11);
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    if (cf_process_pool_new(&ex, &o) != CF_EINVALSTATE ||
        !strstr(cf_last_error_message(), "CF_START_FORK"))
        _exit(12);
    o.start_method = CF_START_FORK;
    if (cf_process_pool_new(&ex, &o) != CF_OK)
        _exit(13);
    cf_executor_destroy(ex);
    _exit(0);
}

/* A set-user-ID program cannot trust its environment to make it a worker
 * (secure_getenv never yields the variable there), so an exec-started
 * pool, whose workers would run main() again, is refused. */
static void test_secure_execution_refuses_exec_start(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* making a set-user-ID program and another user needs root */
    char dir[] = "/tmp/cf-untrusted-suid-XXXXXX", prog[64], cmd[256];
    assert_non_null(mkdtemp(dir));
    snprintf(prog, sizeof prog, "%s/probe", dir);
    snprintf(cmd, sizeof cmd, "cp /proc/%ld/exe %s && chmod 4755 %s && chmod 755 %s",
             (long)getpid(), prog, prog, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "CF_TEST_SECURE_PROBE=1 setpriv --reuid=65534 --regid=65534 --clear-groups %s",
             prog);
    int status = system(cmd);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("set-user-ID probe failed check %d (10: not secure execution, 11: "
                 "process_init, 12: exec start not refused, 13: fork start refused)",
                 WEXITSTATUS(status));
}

/* With CF_TEST_SPIN_PROBE set, this program prints the spin budget it
 * took from CF_SPIN_NS (after a thread pool ran a call, as a program
 * would) and exits 0; the library's log goes to stderr. */
__attribute__((constructor)) static void spin_probe_maybe(void)
{
    if (!getenv("CF_TEST_SPIN_PROBE"))
        return;
    cf_executor *ex = NULL;
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 1;
    if (cf_thread_pool_new(&ex, &o) != CF_OK)
        _exit(10);
    cf_future *f = NULL;
    if (cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &f) != CF_OK ||
        cf_future_result(f, 10, NULL) != CF_OK)
        _exit(11);
    cf_future_release(f);
    cf_executor_destroy(ex);
    printf("%lld\n", (long long)cf__spin_ns());
    fflush(stdout);
    _exit(0);
}

/* Runs this program as the spin probe with CF_SPIN_NS = `value` (unset
 * when NULL); returns the budget it printed, and in `log` what it wrote
 * to stderr. */
static long long spin_probe(const char *value, char *log, size_t logsize)
{
    char var[128];
    snprintf(var, sizeof var, "CF_SPIN_NS=%s", value ? value : "");
    char *envp[] = {"CF_TEST_SPIN_PROBE=1", value ? var : NULL, NULL};
    char *argv[] = {"test_untrusted", NULL};
    int out[2], err[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    assert_int_equal(pipe2(err, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    close(err[1]);
    /* Both pipes end when the probe exits (it has a 10 s limit of its own
     * on the one call it waits for; the test's alarm covers the rest). */
    char buf[64] = "";
    size_t got = 0, lgot = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(out[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    while (lgot < logsize - 1 && (r = read(err[0], log + lgot, logsize - 1 - lgot)) > 0)
        lgot += (size_t)r;
    log[lgot] = '\0';
    close(out[0]);
    close(err[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("CF_SPIN_NS=%s: the probe ended with status 0x%x", value ? value : "(unset)",
                 status);
    char *end;
    long long v = strtoll(buf, &end, 10);
    if (end == buf || *end != '\n')
        fail_msg("CF_SPIN_NS=%s: the probe printed \"%s\"", value ? value : "(unset)", buf);
    return v;
}

/* CF_SPIN_NS sets how long a waiter spins before it sleeps.  A value that
 * is not a plain number of nanoseconds up to one second is refused with a
 * line in the log, and the default is kept: a budget of hours would make
 * every wait a busy loop. */
static void test_spin_budget_from_environment(void **state)
{
    (void)state;
    char log[512];
    long long def = spin_probe(NULL, log, sizeof log);
    assert_string_equal(log, "");
    assert_true(def == 5000 || (def == 0 && cf_usable_cpus() == 1));
    static const struct {
        const char *value;
        long long want; /* -1: the default, with a log line */
    } cases[] = {
        {"0", 0},
        {"20000", 20000},
        {"1000000000", 1000000000},
        {"", -2}, /* empty: the default, silently */
        {"1000000001", -1},
        {"99999999999999999999", -1}, /* beyond long long */
        {"-5", -1},
        {"abc", -1},
        {"12x", -1},
        {" 5", -1},
        {"+5", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long long got = spin_probe(cases[i].value, log, sizeof log);
        long long want = cases[i].want < 0 ? def : cases[i].want;
        if (got != want)
            fail_msg("CF_SPIN_NS=\"%s\": budget %lld, expected %lld", cases[i].value, got,
                     want);
        bool logged = strstr(log, "CF_SPIN_NS") != NULL;
        if (logged != (cases[i].want == -1))
            fail_msg("CF_SPIN_NS=\"%s\": %s (stderr: \"%s\")", cases[i].value,
                     logged ? "logged, but the value is good" : "not logged", log);
    }
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_secure_execution_refuses_exec_start),
    cmocka_unit_test(test_big_results_in_place_only_where_safe),
    cmocka_unit_test(test_fake_workers_cannot_hurt_the_parent),
    cmocka_unit_test(test_forged_worker_variable_runs_main),
    cmocka_unit_test(test_worker_socket_not_inherited),
    cmocka_unit_test(test_lent_result_rewritten_after_answer),
    cmocka_unit_test(test_worker_memory_must_be_sealed_and_bounded),
    cmocka_unit_test(test_ptr_result_fails_only_its_call),
    cmocka_unit_test(test_str_size_must_match_text),
    cmocka_unit_test(test_death_seen_while_a_child_keeps_the_socket),
    cmocka_unit_test(test_worker_closing_its_socket_is_stopped),
    cmocka_unit_test(test_ring_flood_after_socket_frame_is_not_copied),
    cmocka_unit_test(test_parent_out_of_descriptors_blames_no_worker),
    cmocka_unit_test(test_spin_budget_from_environment),
};

CF_TEST_MAIN(tests)
