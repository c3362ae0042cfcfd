/* SPDX-License-Identifier: MIT */
/*
 * test_cq.c - completion queues: the descriptor, pop, references, races
 * with completion and destroy, and futures of both pools.
 */
#include "cf_test_util.h"
#include "internal.h" /* cf__test_hook_before_poke */

#include <poll.h>
#include <sched.h>

CF_TASK(t_square);

/* Is the queue's descriptor readable within `timeout` seconds (scaled)? */
static bool fd_readable(cf_completion_queue *q, double timeout)
{
    struct pollfd p = {.fd = cf_cq_fd(q), .events = POLLIN};
    int ms = (int)(timeout * 1000 * cf_test_scale());
    int rc;
    do
        rc = poll(&p, 1, ms);
    while (rc < 0 && errno == EINTR);
    return rc == 1 && (p.revents & POLLIN);
}

static void test_cq_done_future_is_ready_at_once(void **state)
{
    (void)state;
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    assert_true(cf_cq_fd(q) >= 0);
    assert_false(fd_readable(q, 0));
    cf_future *f;
    assert_ok(cf_future_new(&f));
    cf_value v = cf_i64(42);
    assert_ok(cf_future_set_result(f, &v));
    assert_ok(cf_cq_add(q, f));
    assert_int_equal(cf_cq_count(q), 1);
    assert_true(fd_readable(q, 0));
    cf_future *out[4] = {NULL};
    assert_int_equal(cf_cq_pop(q, out, 4), 1);
    assert_ptr_equal(out[0], f);
    assert_int_equal(cf_cq_count(q), 0);
    assert_false(fd_readable(q, 0));
    assert_int_equal(cf_cq_pop(q, out, 4), 0);
    /* The popped reference is ours: two releases free it. */
    assert_ok(cf_future_release(out[0]));
    assert_ok(cf_future_release(f));
    cf_cq_destroy(q);
}

/* The descriptor stays readable while anything waits and turns quiet
 * only when the last one is popped; pop keeps completion order. */
static void test_cq_level_and_order(void **state)
{
    (void)state;
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    enum { N = 5 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        assert_ok(cf_future_new(&fs[i]));
        assert_ok(cf_cq_add(q, fs[i]));
    }
    assert_false(fd_readable(q, 0));
    int order[N] = {3, 1, 4, 0, 2};
    for (int i = 0; i < N; i++) {
        cf_value v = cf_i64(order[i]);
        assert_ok(cf_future_set_result(fs[order[i]], &v));
    }
    assert_true(fd_readable(q, 0));
    for (int i = 0; i < N; i++) {
        assert_true(fd_readable(q, 0));
        cf_future *out;
        assert_int_equal(cf_cq_pop(q, &out, 1), 1);
        assert_ptr_equal(out, fs[order[i]]);
        assert_ok(cf_future_release(out));
    }
    assert_false(fd_readable(q, 0));
    /* A cancelled future completes too. */
    cf_future *c;
    assert_ok(cf_future_new(&c));
    assert_ok(cf_cq_add(q, c));
    assert_true(cf_future_cancel(c));
    assert_true(fd_readable(q, 0));
    cf_future *out;
    assert_int_equal(cf_cq_pop(q, &out, 1), 1);
    assert_true(cf_future_cancelled(out));
    assert_ok(cf_future_release(out));
    assert_ok(cf_future_release(c));
    for (int i = 0; i < N; i++)
        assert_ok(cf_future_release(fs[i]));
    cf_cq_destroy(q);
}

static void test_cq_bad_input(void **state)
{
    (void)state;
    assert_cf(CF_EINVAL, cf_cq_new(NULL));
    assert_cf(CF_EINVAL, cf_cq_fd(NULL));
    assert_int_equal(cf_cq_count(NULL), 0);
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    cf_future *f;
    assert_ok(cf_future_new(&f));
    assert_cf(CF_EINVAL, cf_cq_add(NULL, f));
    assert_cf(CF_EINVAL, cf_cq_add(q, NULL));
    assert_true(contains(cf_last_error_message(), "future is NULL"));
    assert_cf(CF_EINVAL, cf_cq_pop(NULL, &f, 1));
    assert_cf(CF_EINVAL, cf_cq_pop(q, NULL, 1));
    assert_int_equal(cf_cq_pop(q, NULL, 0), 0);
    assert_int_equal(cf_cq_count(q), 0);
    /* Nothing was added by the failed calls: one release frees f. */
    assert_ok(cf_future_release(f));
    cf_cq_destroy(q);
    cf_cq_destroy(NULL);
}

/* Completion racing add: whichever wins, the future is popped exactly
 * once, with its value, and the descriptor goes quiet afterwards. */
static void test_cq_race_complete_vs_add(void **state)
{
    (void)state;
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    for (int round = 0; round < 1000; round++) {
        cf_future *f;
        assert_ok(cf_future_new(&f));
        race_arg a = {&bar, f, round};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, complete_after_barrier, &a), 0);
        pthread_barrier_wait(&bar);
        assert_ok(cf_cq_add(q, f));
        assert_true(fd_readable(q, 10));
        cf_future *out[2] = {NULL, NULL};
        assert_int_equal(cf_cq_pop(q, out, 2), 1);
        assert_ptr_equal(out[0], f);
        int64_t x = -1;
        assert_ok(cf_future_result_i64(out[0], 0, &x));
        assert_int_equal(x, round);
        void *rc;
        pthread_join(t, &rc);
        assert_int_equal((intptr_t)rc, CF_OK);
        assert_false(fd_readable(q, 0));
        assert_ok(cf_future_release(out[0]));
        assert_ok(cf_future_release(f));
    }
    pthread_barrier_destroy(&bar);
    cf_cq_destroy(q);
}

/* Destroy with futures still pending and some completed, not popped: the
 * queue's references are dropped (ASan's leak check and the release
 * counts below see it), the futures complete normally afterwards, and no
 * descriptor is left open. */
static void test_cq_destroy_with_pending(void **state)
{
    (void)state;
    int fds_before = count_fds();
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    enum { N = 16 };
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_future_new(&fs[i]));
    /* A plain waiter on the same futures, on both sides of the queue's
     * node in each waiter list: destroy must unlink only its own. */
    cf_as_completed_iter *before, *after;
    assert_ok(cf_as_completed(fs, N, CF_FOREVER, &before));
    for (int i = 0; i < N; i++)
        assert_ok(cf_cq_add(q, fs[i]));
    assert_ok(cf_as_completed(fs, N, CF_FOREVER, &after));
    for (int i = 0; i < N; i += 2) {
        cf_value v = cf_i64(i);
        assert_ok(cf_future_set_result(fs[i], &v));
    }
    cf_cq_destroy(q);
    assert_int_equal(count_fds(), fds_before);
    for (int i = 0; i < N; i++) {
        if (i % 2) {
            cf_value v = cf_i64(i);
            assert_ok(cf_future_set_result(fs[i], &v));
        }
        int64_t x;
        assert_ok(cf_future_result_i64(fs[i], 0, &x));
        assert_int_equal(x, i);
    }
    for (int i = 0; i < N; i++) {
        cf_future *got;
        assert_ok(cf_as_completed_next(before, &got));
        assert_ok(cf_as_completed_next(after, &got));
    }
    cf_as_completed_free(before);
    cf_as_completed_free(after);
    for (int i = 0; i < N; i++)
        assert_ok(cf_future_release(fs[i]));
}

typedef struct destroy_race {
    pthread_barrier_t bar;
    cf_future **fs;
    int n;
} destroy_race;

static void *complete_all(void *p)
{
    destroy_race *d = p;
    pthread_barrier_wait(&d->bar);
    for (int i = 0; i < d->n; i++) {
        cf_value v = cf_i64(i);
        if (cf_future_set_result(d->fs[i], &v) != CF_OK)
            return (void *)1;
    }
    return NULL;
}

/* Destroy racing completions on another thread, 300 rounds. */
/* Set by the test below once it has destroyed its queue; the hook holds
 * the completing thread's poke back until then. */
static _Atomic bool queue_gone;

static void hold_poke_until_destroyed(void)
{
    /* Liveness: the test thread sets queue_gone right after its pop
     * (which does not wait for this poke) and destroy. */
    while (!atomic_load(&queue_gone))
        sched_yield();
}

/* The wake-up write of a completion happens after the completing thread
 * drops its locks: a loop that pops the future without waiting for the
 * descriptor, and destroys the queue at once, must not race that write
 * into a freed queue or a closed descriptor (ASan and TSan see it; the
 * hook makes the poke land after the destroy every round). */
static void test_cq_destroy_right_after_pop(void **state)
{
    (void)state;
    atomic_store(&cf__test_hook_before_poke, hold_poke_until_destroyed);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    for (int round = 0; round < 1000; round++) {
        cf_completion_queue *q;
        assert_ok(cf_cq_new(&q));
        cf_future *f;
        assert_ok(cf_future_new(&f));
        assert_ok(cf_cq_add(q, f));
        atomic_store(&queue_gone, false);
        race_arg a = {&bar, f, round};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, complete_after_barrier, &a), 0);
        pthread_barrier_wait(&bar);
        cf_future *out = NULL;
        /* Woken by the completing thread's cq_notify (the entry turns
         * ready under the queue lock); bounded by its finishing. */
        while (cf_cq_pop(q, &out, 1) == 0)
            sched_yield();
        cf_cq_destroy(q);
        atomic_store(&queue_gone, true);
        assert_ptr_equal(out, f);
        int64_t x = -1;
        assert_ok(cf_future_result_i64(out, 0, &x));
        assert_int_equal(x, round);
        void *rc;
        pthread_join(t, &rc);
        assert_int_equal((intptr_t)rc, CF_OK);
        assert_ok(cf_future_release(out));
        assert_ok(cf_future_release(f));
    }
    atomic_store(&cf__test_hook_before_poke, NULL);
    pthread_barrier_destroy(&bar);
}

static void test_cq_race_destroy_vs_complete(void **state)
{
    (void)state;
    enum { N = 8 };
    destroy_race d;
    pthread_barrier_init(&d.bar, NULL, 2);
    cf_future *fs[N];
    d.fs = fs;
    d.n = N;
    for (int round = 0; round < 300; round++) {
        cf_completion_queue *q;
        assert_ok(cf_cq_new(&q));
        for (int i = 0; i < N; i++) {
            assert_ok(cf_future_new(&fs[i]));
            assert_ok(cf_cq_add(q, fs[i]));
        }
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, complete_all, &d), 0);
        pthread_barrier_wait(&d.bar);
        if (round % 3 == 0) {
            /* Pop what is there first, then destroy the rest. */
            cf_future *out[N];
            int k = cf_cq_pop(q, out, N);
            assert_true(k >= 0);
            for (int i = 0; i < k; i++)
                assert_ok(cf_future_release(out[i]));
        }
        cf_cq_destroy(q);
        void *rc;
        pthread_join(t, &rc);
        assert_null(rc);
        for (int i = 0; i < N; i++) {
            assert_true(cf_future_done(fs[i]));
            assert_ok(cf_future_release(fs[i]));
        }
    }
    pthread_barrier_destroy(&d.bar);
}

/* The queue's node shares the waiter list with cf_wait()'s and
 * as_completed's; each side unlinks its own without disturbing the
 * other. */
static void test_cq_beside_as_completed(void **state)
{
    (void)state;
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    cf_future *f;
    assert_ok(cf_future_new(&f));
    cf_as_completed_iter *it;
    assert_ok(cf_as_completed(&f, 1, CF_FOREVER, &it));
    assert_ok(cf_cq_add(q, f));
    cf_as_completed_iter *it2;
    assert_ok(cf_as_completed(&f, 1, CF_FOREVER, &it2));
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(f, &v));
    cf_future *got;
    assert_ok(cf_as_completed_next(it, &got));
    assert_ptr_equal(got, f);
    cf_future *out;
    assert_int_equal(cf_cq_pop(q, &out, 1), 1);
    assert_ok(cf_future_release(out));
    cf_as_completed_free(it);
    assert_ok(cf_as_completed_next(it2, &got));
    cf_as_completed_free(it2);
    cf_cq_destroy(q);
    assert_ok(cf_future_release(f));
}

/* Drives n submissions of t_square through the queue on this thread. */
static void drive_pool(cf_executor *ex, int n)
{
    cf_completion_queue *q;
    assert_ok(cf_cq_new(&q));
    for (int i = 0; i < n; i++) {
        cf_future *f;
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &f));
        assert_ok(cf_future_set_data(f, (void *)(intptr_t)(i + 1)));
        assert_ok(cf_cq_add(q, f));
        assert_ok(cf_future_release(f));
    }
    char *seen = calloc((size_t)n, 1);
    assert_non_null(seen);
    int got = 0;
    while (got < n) {
        assert_true(fd_readable(q, 10));
        cf_future *out[32];
        int k = cf_cq_pop(q, out, 32);
        assert_true(k > 0);
        for (int j = 0; j < k; j++) {
            intptr_t i = (intptr_t)cf_future_data(out[j]) - 1;
            assert_true(i >= 0 && i < n);
            assert_false(seen[i]);
            seen[i] = 1;
            int64_t x;
            assert_ok(cf_future_result_i64(out[j], 0, &x));
            assert_int_equal(x, (int64_t)i * i);
            assert_ok(cf_future_release(out[j]));
        }
        got += k;
    }
    assert_int_equal(cf_cq_count(q), 0);
    free(seen);
    cf_cq_destroy(q);
}

static void test_cq_thread_pool(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    drive_pool(ex, 2000);
    assert_ok(cf_executor_destroy(ex));
}

static void test_cq_process_pool(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    drive_pool(ex, 300);
    assert_ok(cf_executor_destroy(ex));
}

/* Whether descriptor `fd` is readable now. */
static bool raw_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* A queue inherited through fork() belongs to the parent: its descriptor
 * is shared with the parent's, so a pop in the child drained the parent's
 * wake-up (the parent's loop then never woke, with a future waiting).
 * The child gets CF_EBROKEN from pop, add and fd, a completion there does
 * not signal the descriptor, and destroy leaves the parent's queue as it
 * was.  Child exit codes: 2 pop, 3 add, 4 fd, 5 the completion signalled,
 * 6 not readable to begin with. */
static void test_cq_inherited_through_fork(void **state)
{
    (void)state;
    cf_completion_queue *q = NULL;
    assert_ok(cf_cq_new(&q));
    cf_future *done = NULL, *pending = NULL;
    assert_ok(cf_future_new(&done));
    assert_ok(cf_future_new(&pending));
    assert_ok(cf_cq_add(q, done));
    assert_ok(cf_cq_add(q, pending));
    assert_ok(cf_future_set_result(done, NULL));
    int fd = cf_cq_fd(q);
    assert_true(fd_readable(q, 5));
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        cf_future *out[4];
        if (!raw_readable(fd))
            _exit(6);
        if (cf_cq_pop(q, out, 4) != CF_EBROKEN)
            _exit(2);
        cf_future *extra = NULL;
        if (cf_future_new(&extra) != CF_OK || cf_cq_add(q, extra) != CF_EBROKEN)
            _exit(3);
        if (cf_cq_fd(q) != CF_EBROKEN)
            _exit(4);
        /* Drained by the parent's rules, the descriptor would be quiet
         * now; in the child nothing may read or write it. */
        if (cf_future_set_result(pending, NULL) != CF_OK)
            _exit(7);
        cf_cq_destroy(q);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("child status 0x%x", status);
    /* The parent's queue: still readable, both futures as they were. */
    assert_true(fd_readable(q, 0));
    cf_future *out[4];
    assert_int_equal(cf_cq_pop(q, out, 4), 1);
    assert_ptr_equal(out[0], done);
    assert_ok(cf_future_release(out[0]));
    assert_false(fd_readable(q, 0));
    assert_ok(cf_future_set_result(pending, NULL));
    assert_true(fd_readable(q, 5));
    assert_int_equal(cf_cq_pop(q, out, 4), 1);
    assert_ptr_equal(out[0], pending);
    assert_ok(cf_future_release(out[0]));
    assert_ok(cf_future_release(done));
    assert_ok(cf_future_release(pending));
    cf_cq_destroy(q);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_cq_done_future_is_ready_at_once),
    cmocka_unit_test(test_cq_level_and_order),
    cmocka_unit_test(test_cq_bad_input),
    cmocka_unit_test(test_cq_race_complete_vs_add),
    cmocka_unit_test(test_cq_destroy_with_pending),
    cmocka_unit_test(test_cq_race_destroy_vs_complete),
    cmocka_unit_test(test_cq_destroy_right_after_pop),
    cmocka_unit_test(test_cq_beside_as_completed),
    cmocka_unit_test(test_cq_thread_pool),
    cmocka_unit_test(test_cq_process_pool),
    cmocka_unit_test(test_cq_inherited_through_fork),
};

CF_TEST_MAIN(tests)
