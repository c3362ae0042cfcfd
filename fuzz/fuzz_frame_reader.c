/* SPDX-License-Identifier: MIT */
/*
 * fuzz_frame_reader.c - libFuzzer target for the parent's reader of worker
 * frames: read_worker() of process_pool.c, with the decoding, the
 * shared-memory and lent-buffer paths and the completion of futures
 * behind it.
 *
 * It includes process_pool.c itself, so it drives the very functions the
 * manager thread runs (static ones included) and follows them when they
 * change; the build links the rest of the library beside it.  kill() is
 * replaced (the fake worker is no process), nothing else.
 *
 * An input is a small setup followed by the bytes "the worker" sends:
 *   byte 0  bits 0-1: jobs queued on the worker - 1 (1..4);
 *           bits 2-3: calls per job - 1 (1..4);
 *           bit 4: the worker has said HELLO;
 *           bit 5: the head job has a lent buffer (its bytes come first);
 *           bit 6: a sealed memfd rides on the first write (its bytes
 *           come next);
 *           bit 7: the memfd is not sealed against writing;
 *   byte 1  write size (0: everything in one write);
 *   byte 2  bits 0-6: bytes of lent buffer / memfd content, times 8;
 *           bit 7: the worker has a result ring and claim words (below);
 *   rest    lent bytes, memfd bytes, [ring setup,] then the socket stream.
 * The ring setup (only with byte 2's bit 7) is what a worker may write into
 * the memory it shares with the parent:
 *   one byte per call, its claim word: 0 RUNNING (what an answered call's
 *           word says), 1 CANCELLED, 2 PENDING, any other value as it is;
 *   u16     n, bytes of ring data that follow (little endian);
 *   u8      where they start: 0 at the ring's beginning, else that many
 *           bytes before its end, so they wrap around;
 *   i8      added to n for the head the worker announces (a head beyond
 *           the bytes, behind the tail, or out of range);
 *   n bytes the ring's data: RESULT and SOCKET frames, or anything.
 * After each write the reader runs, as it would on POLLIN (it looks at the
 * ring first, as the manager does); at the end the socket is closed and
 * the reader sees EOF.  Then every future must be
 * done or still owned by a job of the worker (which the harness fails,
 * as worker_died() would), and nothing may leak (ASan).  CF_FUZZ_TRACE=1
 * prints each future's outcome (to check what a seed reaches):
 *     CF_FUZZ_TRACE=1 ./fuzz_frame_reader -runs=0 fuzz/corpus/frame_reader/lent-str
 */
#include <signal.h>
#include <sys/types.h>

static int fuzz_kill(pid_t pid, int sig)
{
    (void)pid;
    (void)sig;
    return 0;
}
#define kill(pid, sig) fuzz_kill(pid, sig)

#include "../src/process/process_pool.c"

#include <stdio.h>
#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_task(cf_call *call)
{
    (void)call;
    return 0;
}

static process_pool *pool_once(void)
{
    static process_pool *p;
    if (!p) {
        p = calloc(1, sizeof *p);
        p->cache = cf__bufcache_new(8, (size_t)64 << 20);
        pthread_mutex_init(&p->mu, NULL);
        p->policy = CF_CRASH_REPLACES_WORKER;
        cf_task_register("fuzz_task", fuzz_task);
    }
    pthread_mutex_lock(&p->mu);
    p->broken = false;
    pthread_mutex_unlock(&p->mu);
    return p;
}

/* A memfd holding `n` bytes of `b`, sealed as the parent requires (or
 * without F_SEAL_WRITE); -1 on failure. */
static int make_memfd(const uint8_t *b, size_t n, bool write_sealed)
{
    int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    if ((n && write(fd, b, n) != (ssize_t)n) ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | (write_sealed ? F_SEAL_WRITE : 0)) !=
            0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Gives `w` claim words and a result ring filled from the input (see the
 * layout above), consuming what it uses; false if the shared memory could
 * not be made or the input ends first. */
static bool ring_setup(pworker *w, size_t ncalls, const uint8_t **data, size_t *size)
{
    const uint8_t *d = *data;
    size_t left = *size;
    if (left < ncalls + 4)
        return false;
    int cfd = shared_new(&w->claims, "fuzz-claims", NCLAIMS * sizeof(uint32_t));
    int rfd = cfd < 0 ? -1 : shared_new(&w->ring, "fuzz-ring", CF__RING_SIZE);
    if (cfd >= 0)
        close(cfd);
    if (rfd < 0)
        return false;
    close(rfd);
    _Atomic uint32_t *words = w->claims.map;
    for (size_t i = 0; i < ncalls; i++) {
        uint32_t v = d[i] == 0   ? CF__CLAIM_RUNNING
                     : d[i] == 1 ? CF__CLAIM_CANCELLED
                     : d[i] == 2 ? CF__CLAIM_PENDING
                                 : d[i];
        atomic_store(&words[i], v);
    }
    d += ncalls;
    left -= ncalls;
    size_t n = (size_t)d[0] | (size_t)d[1] << 8;
    size_t back = d[2];
    int delta = (int8_t)d[3];
    d += 4;
    left -= 4;
    if (n > left)
        n = left;
    uint64_t start = back ? CF__RING_BYTES - back : 0;
    unsigned char *bytes = (unsigned char *)w->ring.map + CF__RING_DATA;
    for (size_t k = 0; k < n; k++)
        bytes[(start + k) % CF__RING_BYTES] = d[k];
    w->ring_tail = start;
    atomic_store(cf__ring_word(w->ring.map, CF__RING_TAIL), start);
    atomic_store(cf__ring_word(w->ring.map, CF__RING_HEAD), start + n + (int64_t)delta);
    *data = d + n;
    *size = left - n;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint8_t cfg = data[0];
    size_t chunk = data[1] ? data[1] : size;
    size_t side = (size_t)(data[2] & 0x7f) * 8;
    bool ring = data[2] & 0x80;
    data += 3;
    size -= 3;
    process_pool *p = pool_once();

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    pworker *w = calloc(1, sizeof *w);
    w->pid = 1; /* never signalled: kill() is fuzz_kill() */
    w->fd = sv[0];
    w->pidfd = -1;
    w->hello = cfg & 0x10;
    fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
    p->workers = &w;
    p->nworkers = 1;
    atomic_store(&p->alive, 1);

    /* The jobs queued on the worker, and our own reference to every
     * future in them. */
    enum { MAXF = 16 };
    cf_future *mine[MAXF];
    size_t nmine = 0;
    int njobs = 1 + (cfg & 3), per = 1 + ((cfg >> 2) & 3);
    for (int k = 0; k < njobs; k++) {
        cf_future *fs[4];
        for (int i = 0; i < per; i++) {
            fs[i] = cf__future_new_borrowed(fuzz_task, NULL, 0);
            cf_future_set_running_or_notify_cancel(fs[i]);
            mine[nmine++] = cf_future_retain(fs[i]);
        }
        pjob *j = new_job(p, fs, (size_t)per);
        j->id = w->next_id++; /* RESULT frames must carry it */
        if (w->tail)
            w->tail->next = j;
        else
            w->head = j;
        w->tail = j;
        w->njobs++;
    }

    /* Side data: the lent buffer's content, then the memfd's. */
    if ((cfg & 0x20) && cf__buf_new(&w->head->lent, side ? side : 64, false) == 0) {
        size_t n = side < size ? side : size;
        memcpy(w->head->lent.map, data, n);
        data += n;
        size -= n;
    }
    int mfd = -1;
    if (cfg & 0x40) {
        size_t n = side < size ? side : size;
        mfd = make_memfd(data, n, !(cfg & 0x80));
        data += n;
        size -= n;
    }

    /* The result ring and the claim words, as the worker left them. */
    if (ring && !ring_setup(w, nmine, &data, &size)) {
        if (mfd >= 0)
            close(mfd);
        close(sv[1]);
        fail_jobs(p, w->head, CF_EBROKEN, "BrokenProcessPool", "fuzz setup failed");
        w->head = w->tail = NULL;
        remove_worker(p, w);
        p->workers = NULL;
        for (size_t i = 0; i < nmine; i++)
            cf_future_release(mine[i]);
        return 0;
    }

    /* The stream, in writes of `chunk` bytes, the reader after each. */
    size_t at = 0;
    while (at < size && !w->eof) {
        size_t n = size - at < chunk ? size - at : chunk;
        ssize_t sent = mfd >= 0 ? cf__wire_send_fd(sv[1], data + at, n, mfd, MSG_DONTWAIT)
                                : send(sv[1], data + at, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (mfd >= 0) {
            close(mfd);
            mfd = -1;
        }
        if (sent <= 0)
            break; /* the socket is full: the reader has stopped taking */
        at += (size_t)sent;
        read_worker(p, w);
    }
    if (mfd >= 0)
        close(mfd);
    close(sv[1]);
    read_worker(p, w); /* EOF */

    static int trace = -1;
    if (trace < 0)
        trace = getenv("CF_FUZZ_TRACE") != NULL;
    if (trace && w->reason == R_BADFRAME)
        fprintf(stderr, "bad frame: %s\n", w->detail);
    /* What worker_died() does with the jobs left, then the worker goes. */
    fail_jobs(p, w->head, CF_EBROKEN, "BrokenProcessPool", "fuzz worker gone");
    w->head = w->tail = NULL;
    remove_worker(p, w);
    p->workers = NULL;
    for (size_t i = 0; i < nmine; i++) {
        if (trace) {
            int rc = cf_future_result(mine[i], 0, NULL);
            fprintf(stderr, "future %zu: %s %s\n", i, cf_err_name(rc),
                    rc == CF_OK ? "" : cf_last_error_message());
        }
        if (!cf_future_done(mine[i])) {
            fprintf(stderr, "future %zu is not done after its worker is gone\n", i);
            abort();
        }
        cf_future_release(mine[i]);
    }
    return 0;
}
