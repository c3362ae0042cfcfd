/* SPDX-License-Identifier: MIT */
/*
 * shm.c - shared-memory buffers of process pools and the cache that
 * recycles them.
 *
 * Design notes
 * - Why recycle: filling 64 MiB of memory that is already allocated and
 *   mapped costs a few milliseconds; a fresh memfd costs allocating and
 *   zeroing every page and then one fault per page in each process that
 *   maps it, several times the copy itself (and far more on a virtual
 *   machine with shadow page tables).  So buffers go round instead of
 *   being made per call; see process_pool.c for who takes and gives.
 * - Only buffers the parent made go round, and they are sealed against
 *   shrinking and growing: a worker (or a task in it) holding a
 *   descriptor of one cannot truncate it under the parent's mapping
 *   (which would be a SIGBUS in the parent).  Memory a worker made is
 *   never reused.  Without seals (the portable build, os.h) the sealing
 *   calls do nothing: the process pool then keeps these buffers away from
 *   workers and copies what a worker made (process_pool.c).
 * - The cache is small and flat: at most `slots` buffers and `max_bytes`
 *   bytes.  A take asks for a size range (the need up to twice that), and
 *   when a buffer comes back to a full cache the least recently given
 *   ones go first: after a workload moves from big calls to small ones
 *   the big buffers, which no take would match, age out instead of
 *   pinning memory and the slots.  Results keep
 *   their buffer's descriptor (so it can go round) only while fewer than
 *   `slots` results do: a program holding thousands of big results must
 *   not run out of descriptors.
 * - fork(): a child may read a result it inherited, so a result buffer
 *   adopted before a fork is not reused by the parent afterwards (it is
 *   unmapped when its future is freed).  A child never touches a cache it
 *   inherited (its lock may have been held by a parent thread): it only
 *   unmaps what it frees.
 *
 * Locks: `mu` guards the fields marked below; nothing is called out with
 * it held.  `refs` is atomic: the last reference frees the cache, and
 * dropping one needs acq_rel so that the freeing thread sees every earlier
 * holder's writes.  `generation` is written once at creation.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

#define CACHE_SLOTS_MAX 64

struct cf__bufcache {
    _Atomic int refs;
    int slots;
    size_t max_bytes;
    unsigned generation; /* cf__fork_generation at creation */
    pthread_mutex_t mu;
    /* Guarded by mu: */
    bool closed;
    int held_fds;   /* results keeping a descriptor */
    uint64_t gives; /* counts gives: the age of a cached buffer */
    int n;
    size_t bytes;
    struct slot {
        cf__buf b;
        uint64_t given;          /* `gives` when it came in */
    } bufs[CACHE_SLOTS_MAX + 1]; /* +1: a give may overfill by one */
};

_Atomic unsigned cf__fork_count;

void cf__buf_drop(cf__buf *b)
{
    if (b->map)
        munmap(b->map, b->cap);
    if (b->fd >= 0)
        close(b->fd);
    *b = (cf__buf){NULL, 0, -1};
}

static int buf_make(cf__buf *b, size_t size, bool populate, unsigned seals)
{
    *b = (cf__buf){NULL, 0, -1};
    int fd = cf__os_shm_new("cfutures-buf");
    void *map = MAP_FAILED;
    if (fd >= 0 && ftruncate(fd, (off_t)size) == 0 && cf__os_shm_seal(fd, seals) == 0)
        map = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | (populate ? cf__os_map_populate : 0), fd, 0);
    if (map == MAP_FAILED) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *b = (cf__buf){map, size, fd};
    return 0;
}

int cf__buf_new(cf__buf *b, size_t size, bool populate)
{
    return buf_make(b, size, populate, CF__SEAL_SHRINK | CF__SEAL_GROW | CF__SEAL_SEAL);
}

int cf__buf_new_result(cf__buf *b, size_t size)
{
    return buf_make(b, size, true, CF__SEAL_SHRINK | CF__SEAL_GROW);
}

int cf__buf_freeze(cf__buf *b)
{
    if (b->map)
        munmap(b->map, b->cap);
    b->map = NULL;
    /* F_SEAL_WRITE needs every writable shared mapping gone: ours was
     * the only one (the descriptor never left this process). */
    return cf__os_shm_seal(b->fd, CF__SEAL_WRITE | CF__SEAL_SEAL);
}

static bool inherited(const cf__bufcache *c)
{
    return c->generation != atomic_load_explicit(&cf__fork_generation, memory_order_relaxed);
}

cf__bufcache *cf__bufcache_new(int slots, size_t max_bytes)
{
    cf__bufcache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    c->slots = slots < 1 ? 1 : slots > CACHE_SLOTS_MAX ? CACHE_SLOTS_MAX : slots;
    c->max_bytes = max_bytes;
    c->generation = atomic_load_explicit(&cf__fork_generation, memory_order_relaxed);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

bool cf__bufcache_take(cf__bufcache *c, size_t min, size_t max, cf__buf *out)
{
    pthread_mutex_lock(&c->mu);
    int best = -1;
    for (int i = 0; i < c->n; i++) {
        size_t cap = c->bufs[i].b.cap;
        if (cap >= min && cap <= max && (best < 0 || cap < c->bufs[best].b.cap))
            best = i;
    }
    if (best >= 0) {
        *out = c->bufs[best].b;
        c->bufs[best] = c->bufs[--c->n];
        c->bytes -= out->cap;
    }
    pthread_mutex_unlock(&c->mu);
    return best >= 0;
}

void cf__bufcache_give(cf__bufcache *c, cf__buf *b)
{
    if (!b->map)
        return;
    if (!c || b->fd < 0) {
        cf__buf_drop(b);
        return;
    }
    cf__buf drop[CACHE_SLOTS_MAX + 1];
    int ndrop = 0;
    pthread_mutex_lock(&c->mu);
    if (c->closed || b->cap > c->max_bytes) {
        drop[ndrop++] = *b;
    } else {
        /* Make room by letting the oldest go (never the new one: it
         * fits within max_bytes on its own). */
        c->bufs[c->n++] = (struct slot){*b, ++c->gives};
        c->bytes += b->cap;
        while (c->n > c->slots || c->bytes > c->max_bytes) {
            int old = 0;
            for (int i = 1; i < c->n; i++)
                if (c->bufs[i].given < c->bufs[old].given)
                    old = i;
            drop[ndrop++] = c->bufs[old].b;
            c->bytes -= c->bufs[old].b.cap;
            c->bufs[old] = c->bufs[--c->n];
        }
    }
    pthread_mutex_unlock(&c->mu);
    *b = (cf__buf){NULL, 0, -1};
    for (int i = 0; i < ndrop; i++)
        cf__buf_drop(&drop[i]); /* unmap outside the lock */
}

bool cf__bufcache_hold_fd(cf__bufcache *c)
{
    pthread_mutex_lock(&c->mu);
    bool ok = c->held_fds < c->slots;
    if (ok)
        c->held_fds++;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void cf__bufcache_unhold_fd(cf__bufcache *c)
{
    pthread_mutex_lock(&c->mu);
    c->held_fds--;
    pthread_mutex_unlock(&c->mu);
}

cf__bufcache *cf__bufcache_ref(cf__bufcache *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void cf__bufcache_unref(cf__bufcache *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (int i = 0; i < c->n; i++)
        cf__buf_drop(&c->bufs[i].b);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void cf__bufcache_close(cf__bufcache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    int n = c->n;
    cf__buf bufs[CACHE_SLOTS_MAX + 1];
    for (int i = 0; i < n; i++)
        bufs[i] = c->bufs[i].b;
    c->n = 0;
    c->bytes = 0;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++)
        cf__buf_drop(&bufs[i]);
    cf__bufcache_unref(c);
}

cf__shm *cf__shm_new(void)
{
    cf__shm *shm = calloc(1, sizeof *shm);
    if (shm)
        shm->result.fd = shm->args.fd = -1;
    return shm;
}

void cf__shm_free(cf__shm *shm)
{
    if (!shm)
        return;
    cf__bufcache *c = shm->cache;
    if (c && inherited(c)) {
        /* A child freeing what it inherited: unmap, leave the cache be. */
        cf__buf_drop(&shm->args);
        cf__buf_drop(&shm->result);
        free(shm);
        return;
    }
    if (shm->result_fd_held)
        cf__bufcache_unhold_fd(c);
    unsigned forks = atomic_load_explicit(&cf__fork_count, memory_order_acquire);
    if (shm->fork_stamp != forks || (forks & 1))
        cf__buf_drop(&shm->result); /* a child may still read it */
    cf__bufcache_give(c, &shm->args);
    cf__bufcache_give(c, &shm->result);
    cf__bufcache_unref(c);
    free(shm);
}
