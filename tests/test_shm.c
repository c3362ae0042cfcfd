/* SPDX-License-Identifier: MIT */
/*
 * test_shm.c - the process pools' shared-buffer cache (src/remote/shm.c) on its
 * own: limits, which buffer is taken, which go when it is full, sealing,
 * the descriptor budget, and buffers coming back after the owner closed
 * the cache.
 */
#include "cf_test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include "internal.h"

static cf__buf new_buf(size_t size)
{
    cf__buf b;
    assert_int_equal(cf__buf_new(&b, size, false), 0);
    assert_non_null(b.map);
    assert_true(b.fd >= 0);
    assert_int_equal(b.cap, size);
    return b;
}

/* A cache at its most slots takes one more buffer and lets the oldest
 * go: never more than `slots` kept, the most recently given kept. */
static void test_full_cache_keeps_the_newest(void **state)
{
    (void)state;
    enum { SLOTS = 64, GIVEN = 70 };
    int fds = count_fds();
    cf__bufcache *c = cf__bufcache_new(SLOTS, (size_t)1 << 30);
    assert_non_null(c);
    size_t sizes[GIVEN];
    for (int i = 0; i < GIVEN; i++) {
        /* Sizes out of order, all different: 4 KiB x (1..70). */
        sizes[i] = ((size_t)((i * 37) % GIVEN) + 1) * 4096;
        cf__buf b = new_buf(sizes[i]);
        cf__bufcache_give(c, &b);
        assert_null(b.map); /* taken over */
    }
    assert_int_equal(count_fds() - fds, SLOTS);
    cf__buf b;
    for (int i = 0; i < GIVEN - SLOTS; i++) /* the first given went */
        assert_false(cf__bufcache_take(c, sizes[i], sizes[i], &b));
    for (int i = GIVEN - SLOTS; i < GIVEN; i++) {
        assert_true(cf__bufcache_take(c, sizes[i], sizes[i], &b));
        assert_int_equal(b.cap, sizes[i]);
        cf__buf_drop(&b);
    }
    assert_false(cf__bufcache_take(c, 0, SIZE_MAX, &b));
    cf__bufcache_close(c);
    assert_int_equal(count_fds(), fds);
}

/* After big calls, a workload of small ones must not leave the big
 * buffers pinning the cache (no take matches them): they age out, and
 * the small buffers go round from the second round on. */
static void test_big_buffers_age_out(void **state)
{
    (void)state;
    int fds = count_fds();
    cf__bufcache *c = cf__bufcache_new(2, (size_t)1 << 30);
    cf__buf big1 = new_buf(64 * 4096), big2 = new_buf(64 * 4096);
    cf__bufcache_give(c, &big1);
    cf__bufcache_give(c, &big2);
    for (int round = 0; round < 3; round++) {
        /* A small call: its arguments' buffer and its lent buffer. */
        cf__buf args = {NULL, 0, -1}, lent = {NULL, 0, -1};
        bool hit = cf__bufcache_take(c, 2 * 4096, 4 * 4096, &args) &&
                   cf__bufcache_take(c, 2 * 4096, 4 * 4096, &lent);
        assert_int_equal(hit, round > 0);
        if (!hit) {
            cf__buf_drop(&args); /* after a partial hit */
            args = new_buf(2 * 4096);
            lent = new_buf(2 * 4096);
        }
        cf__bufcache_give(c, &args);
        cf__bufcache_give(c, &lent);
    }
    cf__buf b;
    assert_false(cf__bufcache_take(c, 64 * 4096, SIZE_MAX, &b));
    assert_int_equal(count_fds() - fds, 2);
    cf__bufcache_close(c);
    assert_int_equal(count_fds(), fds);
}

/* take() gives the smallest buffer within [min, max], and nothing when no
 * buffer is in range. */
static void test_take_smallest_in_range(void **state)
{
    (void)state;
    cf__bufcache *c = cf__bufcache_new(8, (size_t)1 << 30);
    size_t sizes[] = {40960, 8192, 16384, 65536};
    for (size_t i = 0; i < 4; i++) {
        cf__buf b = new_buf(sizes[i]);
        cf__bufcache_give(c, &b);
    }
    cf__buf b;
    assert_false(cf__bufcache_take(c, 70000, 140000, &b));
    assert_false(cf__bufcache_take(c, 20000, 30000, &b));
    assert_true(cf__bufcache_take(c, 10000, 100000, &b));
    assert_int_equal(b.cap, 16384);
    cf__buf_drop(&b);
    assert_true(cf__bufcache_take(c, 10000, 100000, &b));
    assert_int_equal(b.cap, 40960);
    cf__buf_drop(&b);
    cf__bufcache_close(c);
}

/* The byte limit: a buffer bigger than the limit is never kept, and
 * older ones make room for a new one. */
static void test_byte_limit(void **state)
{
    (void)state;
    int fds = count_fds();
    cf__bufcache *c = cf__bufcache_new(8, 3 * 4096);
    cf__buf b = new_buf(4 * 4096);
    cf__bufcache_give(c, &b);
    assert_int_equal(count_fds(), fds); /* too big: freed */
    cf__buf small = new_buf(4096), mid = new_buf(2 * 4096), big = new_buf(3 * 4096);
    cf__bufcache_give(c, &small);
    cf__bufcache_give(c, &mid);
    assert_int_equal(count_fds() - fds, 3); /* both kept, and `big` */
    cf__bufcache_give(c, &big); /* 6 pages > 3: both older ones go */
    assert_int_equal(count_fds() - fds, 1);
    assert_true(cf__bufcache_take(c, 0, SIZE_MAX, &b));
    assert_int_equal(b.cap, 3 * 4096);
    cf__buf_drop(&b);
    cf__bufcache_close(c);
    assert_int_equal(count_fds(), fds);
}

/* Buffers are sealed: nobody holding the descriptor can shrink or grow
 * them under a mapping.  Writes still work. */
static void test_buffers_are_sealed(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE("no seals there; the process pool keeps these buffers from workers");
    cf__buf b = new_buf(8192);
    ((unsigned char *)b.map)[8191] = 7;
    assert_int_not_equal(ftruncate(b.fd, 0), 0);
    assert_int_not_equal(ftruncate(b.fd, 16384), 0);
    int seals = fcntl(b.fd, F_GET_SEALS);
    assert_true((seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ==
                (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
    assert_int_equal(((unsigned char *)b.map)[8191], 7);
    cf__buf_drop(&b);
    assert_null(b.map);
    assert_int_equal(b.fd, -1);
}

/* At most `slots` results keep a descriptor. */
static void test_descriptor_budget(void **state)
{
    (void)state;
    cf__bufcache *c = cf__bufcache_new(2, (size_t)1 << 20);
    assert_true(cf__bufcache_hold_fd(c));
    assert_true(cf__bufcache_hold_fd(c));
    assert_false(cf__bufcache_hold_fd(c));
    cf__bufcache_unhold_fd(c);
    assert_true(cf__bufcache_hold_fd(c));
    assert_false(cf__bufcache_hold_fd(c));
    cf__bufcache_unhold_fd(c);
    cf__bufcache_unhold_fd(c);
    cf__bufcache_close(c);
}

/* A future's shm may outlive the pool: its buffers come back to a closed
 * cache, which frees them, and the last reference frees the cache.  A
 * buffer without a descriptor is never kept. */
static void test_give_after_close(void **state)
{
    (void)state;
    int fds = count_fds();
    cf__bufcache *c = cf__bufcache_new(4, (size_t)1 << 20);
    cf__shm *shm = cf__shm_new();
    assert_non_null(shm);
    shm->args = new_buf(8192);
    shm->result = new_buf(4096);
    shm->fork_stamp = atomic_load(&cf__fork_count);
    shm->cache = cf__bufcache_ref(c);
    cf__bufcache_close(c); /* the pool is gone */
    assert_int_equal(count_fds() - fds, 2);
    cf__shm_free(shm); /* gives both back to a closed cache; last ref */
    assert_int_equal(count_fds(), fds);

    c = cf__bufcache_new(4, (size_t)1 << 20);
    cf__buf b = new_buf(4096);
    close(b.fd);
    b.fd = -1;
    cf__bufcache_give(c, &b);
    assert_false(cf__bufcache_take(c, 0, SIZE_MAX, &b));
    cf__bufcache_close(c);
    assert_int_equal(count_fds(), fds);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_full_cache_keeps_the_newest),
    cmocka_unit_test(test_big_buffers_age_out),
    cmocka_unit_test(test_take_smallest_in_range),
    cmocka_unit_test(test_byte_limit),
    cmocka_unit_test(test_buffers_are_sealed),
    cmocka_unit_test(test_descriptor_budget),
    cmocka_unit_test(test_give_after_close),
};

CF_TEST_MAIN(tests)
