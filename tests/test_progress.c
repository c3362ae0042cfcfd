/* SPDX-License-Identifier: MIT */
/*
 * test_progress.c - per-executor and per-map progress counts on the thread
 * and process pools, the progress callback and the progress bar.
 */
#include "cf_test_util.h"
#include "internal.h" /* cf__test_hook_after_submit */

#include <fcntl.h>

/* ---- tasks ---------------------------------------------------------------- */

/* Raises when its argument is a multiple of 3, else returns it. */
static int p_third_fails(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    if (x % 3 == 0)
        return cf_raise(call, 3, "ValueError", "%lld is a multiple of 3", (long long)x);
    return cf_return_i64(call, x);
}
CF_TASK(p_third_fails);

/* Sleeps up to 30 s (a process pool's call that a test interrupts). */
static int p_long(cf_call *call)
{
    for (int i = 0; i < 300 && !cf_cancel_requested(call); i++)
        sleep_ms(100);
    return cf_return_none(call);
}
CF_TASK(p_long);

static void assert_counts(const cf_progress *p, uint64_t submitted, uint64_t running,
                          uint64_t succeeded, uint64_t failed, uint64_t cancelled)
{
    if (p->submitted != submitted || p->running != running || p->succeeded != succeeded ||
        p->failed != failed || p->cancelled != cancelled)
        fail_msg("progress submitted=%llu running=%llu succeeded=%llu failed=%llu "
                 "cancelled=%llu, expected %llu %llu %llu %llu %llu",
                 (unsigned long long)p->submitted, (unsigned long long)p->running,
                 (unsigned long long)p->succeeded, (unsigned long long)p->failed,
                 (unsigned long long)p->cancelled, (unsigned long long)submitted,
                 (unsigned long long)running, (unsigned long long)succeeded,
                 (unsigned long long)failed, (unsigned long long)cancelled);
}

static void wait_all(cf_future **fs, size_t n)
{
    assert_ok(cf_wait(fs, n, 30.0 * cf_test_scale(), CF_ALL_COMPLETED, NULL, NULL, NULL, NULL));
}

static void release_all(cf_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cf_future_release(fs[i]);
}

/* ---- counts ---------------------------------------------------------------- */

static void test_progress_bad_input(void **state)
{
    (void)state;
    cf_progress p;
    memset(&p, 0xff, sizeof p);
    assert_cf(CF_EINVAL, cf_executor_progress(NULL, &p));
    assert_counts(&p, 0, 0, 0, 0, 0);
    assert_non_null(strstr(cf_last_error_message(), "executor_progress"));
    cf_executor *ex = pool_new(1);
    assert_cf(CF_EINVAL, cf_executor_progress(ex, NULL));
    memset(&p, 0xff, sizeof p);
    assert_cf(CF_EINVAL, cf_map_progress(NULL, &p));
    assert_counts(&p, 0, 0, 0, 0, 0);
    cf_value xs[] = {cf_i64(1)};
    cf_map_input in = cf_input_array(xs, 1);
    cf_map_iter *it;
    assert_ok(cf_map(ex, t_square, &in, 1, NULL, &it));
    assert_cf(CF_EINVAL, cf_map_progress(it, NULL));
    cf_map_close(it);
    /* A fresh executor counts nothing. */
    cf_executor *fresh = pool_new(1);
    assert_ok(cf_executor_progress(fresh, &p));
    assert_counts(&p, 0, 0, 0, 0, 0);
    assert_ok(cf_executor_destroy(fresh));
    assert_ok(cf_executor_destroy(ex));
}

/* Two workers held by blockers, N queued calls behind them of which every
 * third fails and every fourth is cancelled: the counts while held and
 * once everything has ended. */
static void test_progress_thread_pool_exact(void **state)
{
    (void)state;
    enum { N = 40 };
    cf_executor *ex = pool_new(2);
    blocker b;
    blocker_init(&b);
    cf_future *hold[2];
    for (int i = 0; i < 2; i++)
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &hold[i]));
    assert_true(blocker_wait_started(&b, 2, 10));
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, p_third_fails, CF_ARGS(cf_i64(i)), &fs[i]));
    uint64_t cancelled = 0, failed = 0;
    for (int i = 0; i < N; i++) {
        if (i % 4 == 1) {
            assert_true(cf_future_cancel(fs[i]));
            cancelled++;
        } else if (i % 3 == 0) {
            failed++;
        }
    }
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, N + 2, 2, 0, 0, cancelled);
    /* A submit that fails is not counted. */
    blocker_release(&b);
    wait_all(hold, 2);
    wait_all(fs, N);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, N + 2, 0, N + 2 - cancelled - failed, failed, cancelled);
    assert_int_equal(cf_progress_ended(&p), N + 2);
    assert_ok(cf_shutdown(ex, true, false));
    cf_future *late = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &late));
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, N + 2, 0, N + 2 - cancelled - failed, failed, cancelled);
    release_all(hold, 2);
    release_all(fs, N);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* cf_submit_many() and shutdown(cancel_futures) count like single submits. */
static void test_progress_submit_many_and_shutdown_cancel(void **state)
{
    (void)state;
    enum { N = 16 };
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_future *hold;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &hold));
    assert_true(blocker_wait_started(&b, 1, 10));
    cf_value args[N];
    for (int i = 0; i < N; i++)
        args[i] = cf_i64(i + 1);
    cf_future *fs[N];
    assert_ok(cf_submit_many(ex, t_square, args, 1, N, fs));
    assert_ok(cf_shutdown(ex, false, true));
    blocker_release(&b);
    assert_ok(cf_shutdown(ex, true, false));
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, N + 1, 0, 1, 0, N);
    cf_future_release(hold);
    release_all(fs, N);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* A process pool: one worker busy with a long call, N calls queued behind
 * it (already sent to the worker, not yet begun), every fourth cancelled,
 * every third failing; then the long call is interrupted (its worker is
 * killed and replaced). */
static void test_progress_process_pool_exact(void **state)
{
    (void)state;
    enum { N = 30 };
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    cf_future *hold;
    assert_ok(cf_submit(ex, p_long, CF_NOARGS, &hold));
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        assert_ok(cf_submit(ex, p_third_fails, CF_ARGS(cf_i64(i)), &fs[i]));
    uint64_t cancelled = 0, failed = 0;
    for (int i = 0; i < N; i++) {
        if (i % 4 == 1) {
            assert_true(cf_future_cancel(fs[i]));
            cancelled++;
        } else if (i % 3 == 0) {
            failed++;
        }
    }
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.submitted, N + 1);
    assert_int_equal(p.cancelled, cancelled);
    assert_true(p.running <= 1);
    assert_int_equal(p.succeeded + p.failed, 0);
    assert_ok(cf_future_interrupt(hold));
    wait_all(&hold, 1);
    assert_true(cf_future_cancelled(hold));
    wait_all(fs, N);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, N + 1, 0, N - cancelled - failed, failed, cancelled + 1);
    cf_future_release(hold);
    release_all(fs, N);
    assert_ok(cf_executor_destroy(ex));
}

/* A process pool's map with chunks: the map's own counts and the
 * executor's agree once it has been iterated. */
static void test_progress_process_pool_map(void **state)
{
    (void)state;
    enum { N = 50 };
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 2;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    cf_value xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = cf_i64(i);
    cf_map_input in = cf_input_array(xs, N);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 7;
    cf_map_iter *it;
    assert_ok(cf_map(ex, p_third_fails, &in, 1, &mo, &it));
    int rc, nfail = 0, nok = 0;
    while ((rc = cf_map_next(it, NULL, NULL)) != CF_EDONE) {
        if (rc == CF_OK)
            nok++;
        else if (rc == CF_ETASK)
            nfail++;
        else
            fail_msg("map_next: %s", cf_err_name(rc));
    }
    assert_int_equal(nfail, (N + 2) / 3);
    cf_progress p;
    assert_ok(cf_map_progress(it, &p));
    assert_counts(&p, N, 0, (uint64_t)nok, (uint64_t)nfail, 0);
    cf_map_close(it);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, N, 0, (uint64_t)nok, (uint64_t)nfail, 0);
    assert_ok(cf_executor_destroy(ex));
}

/* A thread pool's map: its counts while a call is held, a lazy map's
 * growing `submitted`, and a second map on the same executor counted
 * apart. */
static void test_progress_map_counts(void **state)
{
    (void)state;
    enum { N = 12 };
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_value xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = cf_i64(i);
    /* Eager map of p_third_fails behind a held call. */
    cf_future *hold;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &hold));
    assert_true(blocker_wait_started(&b, 1, 10));
    cf_map_input in = cf_input_array(xs, N);
    cf_map_iter *it;
    assert_ok(cf_map(ex, p_third_fails, &in, 1, NULL, &it));
    cf_progress p;
    assert_ok(cf_map_progress(it, &p));
    assert_counts(&p, N, 0, 0, 0, 0);
    /* Lazy map: buffersize 2 submits 2 up front. */
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.buffersize = 2;
    cf_map_iter *lazy;
    assert_ok(cf_map(ex, t_square, &in, 1, &mo, &lazy));
    assert_ok(cf_map_progress(lazy, &p));
    assert_counts(&p, 2, 0, 0, 0, 0);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, 1 + N + 2, 1, 0, 0, 0);
    blocker_release(&b);
    /* Every element of the first map has ended once it has been iterated;
     * the counts do not wait for cf_map_next() to reach an element. */
    for (int i = 0; i < N; i++) {
        int rc = cf_map_next(it, NULL, NULL);
        assert_true(rc == CF_OK || rc == CF_ETASK);
    }
    assert_ok(cf_map_progress(it, &p));
    assert_counts(&p, N, 0, N - (N + 2) / 3, (N + 2) / 3, 0);
    int n = 0;
    while (cf_map_next(lazy, NULL, NULL) == CF_OK)
        n++;
    assert_int_equal(n, N);
    assert_ok(cf_map_progress(lazy, &p));
    assert_counts(&p, N, 0, N, 0, 0);
    cf_map_close(lazy);
    cf_map_close(it);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, 1 + 2 * N, 0, 1 + N + N - (N + 2) / 3, (N + 2) / 3, 0);
    cf_future_release(hold);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* Closing a map early cancels its queued calls (counted on the executor)
 * and detaches the one still running, which finishes afterwards without
 * touching the closed iterator (ASan would see it). */
static void test_progress_map_close_early(void **state)
{
    (void)state;
    enum { N = 6 };
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_value xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = cf_i64(i);
    cf_map_input in[2] = {cf_input_array((cf_value[]){cf_ptr(&b), cf_ptr(&b), cf_ptr(&b),
                                                      cf_ptr(&b), cf_ptr(&b), cf_ptr(&b)},
                                         N),
                          cf_input_array(xs, N)};
    cf_map_iter *it;
    assert_ok(cf_map(ex, t_block, in, 2, NULL, &it));
    assert_true(blocker_wait_started(&b, 1, 10));
    cf_progress p;
    assert_ok(cf_map_progress(it, &p));
    assert_counts(&p, N, 1, 0, 0, 0);
    cf_map_close(it);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, N, 1, 0, 0, N - 1);
    blocker_release(&b);
    assert_ok(cf_shutdown(ex, true, false));
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, N, 0, 1, 0, N - 1);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* A lazy map whose refill is refused (the executor shut down) does not
 * count the calls of that chunk it never handed over: once its calls have
 * ended, submitted == ended.  chunksize 2 on a thread pool goes call by
 * call, so the refusal comes at the chunk's first call, with the second
 * never tried. */
static void test_progress_lazy_map_refused_refill(void **state)
{
    (void)state;
    enum { N = 8 };
    cf_executor *ex = pool_new(1);
    cf_value xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = cf_i64(i);
    cf_map_input in = cf_input_array(xs, N);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 2;
    mo.buffersize = 2;
    cf_map_iter *it;
    assert_ok(cf_map(ex, t_square, &in, 1, &mo, &it));
    cf_progress p;
    assert_ok(cf_map_progress(it, &p));
    assert_counts(&p, 2, p.running, p.succeeded, 0, 0);
    assert_ok(cf_shutdown(ex, true, false));
    int rc, n = 0;
    while ((rc = cf_map_next(it, NULL, NULL)) == CF_OK)
        n++;
    assert_int_equal(n, 2);
    assert_cf(CF_ESHUTDOWN, rc);
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    assert_ok(cf_map_progress(it, &p));
    assert_counts(&p, 2, 0, 2, 0, 0);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, 2, 0, 2, 0, 0);
    cf_map_close(it);
    assert_ok(cf_executor_destroy(ex));
}

/* A map whose timeout passed gives up on its calls: the queued one is
 * cancelled, the one already running cannot be, and it must keep counting
 * in the map (which is still open) until it ends - not stay "running" in
 * the map's counts for good. */
static void test_progress_map_timeout_counts_begun_call_to_its_end(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    blocker b;
    blocker_init(&b);
    cf_value ps[2] = {cf_ptr(&b), cf_ptr(&b)};
    cf_map_input in = cf_input_array(ps, 2);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.timeout = 0.05;
    cf_map_iter *it;
    assert_ok(cf_map(ex, t_block, &in, 1, &mo, &it));
    assert_true(blocker_wait_started(&b, 1, 10));
    assert_cf(CF_ETIMEDOUT, cf_map_next(it, NULL, NULL));
    cf_progress p;
    assert_ok(cf_map_progress(it, &p));
    assert_counts(&p, 2, 1, 0, 0, 1);
    blocker_release(&b);
    assert_ok(cf_shutdown(ex, true, false));
    assert_ok(cf_map_progress(it, &p));
    assert_counts(&p, 2, 0, 1, 0, 1);
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, 2, 0, 1, 0, 1);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* cf_submit_many() on a process pool, whose calls go to the engine one by
 * one: the pool shuts down after the first was handed over and a worker
 * began it, so the second is refused.  The first runs on (it cannot be
 * cancelled) and must stay counted: submitted, running, then ended. */
static cf_future *first_begun;

static void shut_down_once_begun(cf_executor *ex, cf_future *f)
{
    if (first_begun)
        return;
    first_begun = cf_future_retain(f);
    /* Liveness: the pool's only worker claims the call; bounded. */
    for (int i = 0; i < 20000 * cf_test_scale() && !cf_future_running(f); i++)
        sleep_ms(1);
    assert_ok(cf_shutdown(ex, false, false));
}

static void test_progress_submit_many_refused_after_one_began(void **state)
{
    (void)state;
    enum { N = 4 };
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    cf_future *fs[N];
    first_begun = NULL;
    atomic_store(&cf__test_hook_after_submit, shut_down_once_begun);
    int rc = cf_submit_many(ex, p_long, NULL, 0, N, fs);
    atomic_store(&cf__test_hook_after_submit, NULL);
    assert_cf(CF_ESHUTDOWN, rc);
    for (int i = 0; i < N; i++)
        assert_null(fs[i]);
    assert_non_null(first_begun);
    assert_true(cf_future_running(first_begun));
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, 1, 1, 0, 0, 0);
    assert_ok(cf_future_interrupt(first_begun));
    wait_all(&first_begun, 1);
    assert_ok(cf_shutdown(ex, true, false));
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, 1, 0, 0, 0, 1);
    cf_future_release(first_begun);
    first_begun = NULL;
    assert_ok(cf_executor_destroy(ex));
}

/* A submit refused because the executor shut down, while another thread
 * destroys the executor: once the engine has let go of its lock the
 * destroy may free the executor, so the front must not touch it any more
 * (ASan would see a use after free, TSan a race with the free). */
static void destroy_in_thread(void *arg)
{
    assert_ok(cf_executor_destroy((cf_executor *)arg));
}

static void destroy_while_refused(cf_executor *ex)
{
    bg_thread th;
    bg_start(&th, destroy_in_thread, ex);
    bg_join(&th, 30);
}

static void test_progress_refused_submit_races_destroy(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    assert_ok(cf_shutdown(ex, false, false));
    cf_future *f = NULL;
    atomic_store(&cf__test_hook_submit_refused, destroy_while_refused);
    int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &f);
    atomic_store(&cf__test_hook_submit_refused, NULL);
    assert_cf(CF_ESHUTDOWN, rc);
    assert_null(f);
}

/* A reader thread takes snapshots while calls are submitted, run and
 * cancelled: every snapshot keeps ended + running <= submitted, and no
 * count but running ever goes back.  200 rounds. */
typedef struct {
    cf_executor *ex;
    atomic_bool stop;
    atomic_int bad;
    atomic_long snapshots;
    char why[256];
} reader_ctx;

static void reader_loop(void *arg)
{
    reader_ctx *r = arg;
    cf_progress last = {0, 0, 0, 0, 0};
    while (!atomic_load(&r->stop)) {
        cf_progress p;
        if (cf_executor_progress(r->ex, &p) != CF_OK) {
            atomic_store(&r->bad, 1);
            snprintf(r->why, sizeof r->why, "read failed");
            return;
        }
        if (cf_progress_ended(&p) + p.running > p.submitted || p.submitted < last.submitted ||
            p.succeeded < last.succeeded || p.failed < last.failed ||
            p.cancelled < last.cancelled) {
            atomic_store(&r->bad, 1);
            snprintf(r->why, sizeof r->why,
                     "snapshot s=%llu r=%llu ok=%llu f=%llu c=%llu after s=%llu",
                     (unsigned long long)p.submitted, (unsigned long long)p.running,
                     (unsigned long long)p.succeeded, (unsigned long long)p.failed,
                     (unsigned long long)p.cancelled, (unsigned long long)last.submitted);
            return;
        }
        last = p;
        atomic_fetch_add(&r->snapshots, 1);
    }
}

static void test_progress_snapshot_invariant_race(void **state)
{
    (void)state;
    enum { ROUNDS = 200, PER = 20 };
    cf_executor *ex = pool_new(2);
    reader_ctx r = {.ex = ex};
    atomic_init(&r.stop, false);
    atomic_init(&r.bad, 0);
    atomic_init(&r.snapshots, 0);
    bg_thread th;
    bg_start(&th, reader_loop, &r);
    uint64_t total = 0;
    for (int round = 0; round < ROUNDS && !atomic_load(&r.bad); round++) {
        cf_future *fs[PER];
        for (int i = 0; i < PER; i++)
            assert_ok(cf_submit(ex, p_third_fails, CF_ARGS(cf_i64(round + i)), &fs[i]));
        cf_future_cancel(fs[PER - 1]);
        wait_all(fs, PER);
        release_all(fs, PER);
        total += PER;
    }
    /* Under load the reader may not have been scheduled yet: let it take
     * at least one snapshot (bounded) before it is stopped. */
    double end = cf_test_now() + 10.0 * cf_test_scale();
    while (atomic_load(&r.snapshots) == 0 && !atomic_load(&r.bad) && cf_test_now() < end)
        sleep_ms(1);
    atomic_store(&r.stop, true);
    bg_join(&th, 10);
    if (atomic_load(&r.bad))
        fail_msg("%s", r.why);
    assert_true(atomic_load(&r.snapshots) > 0);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.submitted, total);
    assert_int_equal(cf_progress_ended(&p), total);
    assert_int_equal(p.running, 0);
    assert_ok(cf_executor_destroy(ex));
}

/* Four workers (so several shards of the counts) end calls while this
 * thread waits for each in turn: a call this thread saw end is counted in
 * the snapshot it reads next, whichever worker's shard counted it, and
 * every snapshot keeps ended + running <= submitted. */
static void test_progress_seen_end_is_counted_race(void **state)
{
    (void)state;
    enum { ROUNDS = 250, PER = 16 };
    cf_executor *ex = pool_new(4);
    uint64_t total = 0;
    for (int round = 0; round < ROUNDS; round++) {
        cf_future *fs[PER];
        for (int i = 0; i < PER; i++)
            assert_ok(cf_submit(ex, p_third_fails, CF_ARGS(cf_i64(round * PER + i)), &fs[i]));
        for (int i = 0; i < PER; i++) {
            assert_ok(cf_future_exception(fs[i], 30.0 * cf_test_scale(), NULL));
            cf_progress p;
            assert_ok(cf_executor_progress(ex, &p));
            if (cf_progress_ended(&p) < total + (uint64_t)i + 1 ||
                cf_progress_ended(&p) + p.running > p.submitted ||
                p.submitted < total + PER)
                fail_msg("round %d, call %d seen ended: submitted=%llu running=%llu ended=%llu, "
                         "expected ended >= %llu and submitted >= %llu",
                         round, i, (unsigned long long)p.submitted,
                         (unsigned long long)p.running,
                         (unsigned long long)cf_progress_ended(&p),
                         (unsigned long long)(total + (uint64_t)i + 1),
                         (unsigned long long)(total + PER));
        }
        release_all(fs, PER);
        total += PER;
    }
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    uint64_t failed = 0;
    for (uint64_t x = 0; x < total; x++)
        failed += x % 3 == 0;
    assert_counts(&p, total, 0, total - failed, failed, 0);
    assert_ok(cf_executor_destroy(ex));
}

/* A reader delayed in the middle of its snapshot while calls begin and
 * end (a preempted thread; the hook holds it there for sure) reports as
 * running only calls that were running: nothing runs before or after the
 * window, so `running` must be 0, not the calls that went through it.
 * With `running` derived from the ends read before the window, each of
 * them counted as running (on a 2-thread pool, snapshots said hundreds of
 * thousands were running). */
static cf_executor *window_ex;
static atomic_int window_calls; /* calls the hook runs, 0 once done */

static void run_calls_in_read_window(void)
{
    int n = atomic_exchange(&window_calls, 0);
    for (int i = 0; i < n; i++) {
        int64_t x = 3 * i + 1, v = 0; /* p_third_fails returns it */
        cf_future *f = NULL;
        if (cf_submit(window_ex, p_third_fails, CF_ARGS(cf_i64(x)), &f) != CF_OK ||
            cf_future_result_i64(f, 10.0 * cf_test_scale(), &v) != CF_OK || v != x)
            atomic_store(&window_calls, -1); /* reported by the test */
        if (f)
            cf_future_release(f);
    }
}

static void test_progress_running_ignores_calls_ended_during_read(void **state)
{
    (void)state;
    enum { CALLS = 5 };
    cf_executor *ex = pool_new(2);
    window_ex = ex;
    cf_future *warm = NULL;
    assert_ok(cf_submit(ex, p_third_fails, CF_ARGS(cf_i64(1)), &warm));
    assert_ok(cf_future_result(warm, 10.0 * cf_test_scale(), NULL));
    cf_future_release(warm);
    atomic_store(&window_calls, CALLS);
    atomic_store(&cf__test_hook_counts_read, run_calls_in_read_window);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    atomic_store(&cf__test_hook_counts_read, NULL);
    assert_int_equal(atomic_load(&window_calls), 0);
    /* The calls that went through the window count in neither. */
    assert_int_equal(p.running, 0);
    assert_true(cf_progress_ended(&p) + p.running <= p.submitted);
    assert_ok(cf_executor_progress(ex, &p));
    assert_counts(&p, CALLS + 1, 0, CALLS + 1, 0, 0);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- the progress callback ---------------------------------------------- */

typedef struct cb_rec {
    pthread_mutex_t mu;
    int calls;
    cf_progress last;
    atomic_int in_call;      /* inside the callback right now */
    atomic_int after_clear;  /* calls that began after a clear returned */
    atomic_int cleared;      /* set by the test once clear returned */
    cf_test_event first;     /* set by the first call */
    cf_executor *ex;         /* for the callbacks that act on it */
    atomic_int action_rc;
} cb_rec;

static void cb_rec_init(cb_rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    cf_test_event_init(&r->first);
    atomic_init(&r->in_call, 0);
    atomic_init(&r->after_clear, 0);
    atomic_init(&r->cleared, 0);
}

static int cb_calls(cb_rec *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->calls;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void record(void *arg, const cf_progress *p)
{
    cb_rec *r = arg;
    atomic_fetch_add(&r->in_call, 1);
    if (atomic_load(&r->cleared))
        atomic_fetch_add(&r->after_clear, 1);
    pthread_mutex_lock(&r->mu);
    r->calls++;
    r->last = *p;
    pthread_mutex_unlock(&r->mu);
    cf_test_event_set(&r->first);
    atomic_fetch_sub(&r->in_call, 1);
}

static cf_executor *new_engine(int which)
{
    if (which == 0)
        return pool_new(2);
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 2;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    return ex;
}

/* On both engines: the callback is called, and the last snapshot it got
 * before cf_executor_destroy() returned shows every call ended. */
static void test_progress_callback_called_and_final(void **state)
{
    (void)state;
    enum { N = 30 };
    for (int which = 0; which < 2; which++) {
        cb_rec r;
        cb_rec_init(&r);
        cf_executor *ex = new_engine(which);
        assert_ok(cf_executor_set_progress_callback(ex, record, &r, 5));
        cf_future *fs[N];
        for (int i = 0; i < N; i++)
            assert_ok(cf_submit(ex, p_third_fails, CF_ARGS(cf_i64(i)), &fs[i]));
        wait_all(fs, N);
        assert_true(cf_test_event_wait(&r.first, 10));
        assert_ok(cf_executor_destroy(ex));
        int calls = cb_calls(&r);
        assert_true(calls >= 1);
        assert_counts(&r.last, N, 0, N - N / 3, N / 3, 0);
        release_all(fs, N);
        /* Nothing more after destroy returned. */
        sleep_ms(20);
        assert_int_equal(cb_calls(&r), calls);
        pthread_mutex_destroy(&r.mu);
    }
}

/* A submitter keeps the counts moving while the callback (1 ms) is set and
 * cleared 200 times: when clear returns no call is in progress, and none
 * begins afterwards. */
typedef struct {
    cf_executor *ex;
    atomic_bool stop;
} churn_ctx;

static void churn(void *arg)
{
    churn_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        cf_future *f;
        if (cf_submit(c->ex, t_square, CF_ARGS(cf_i64(3)), &f) != CF_OK)
            return;
        cf_future_result(f, CF_FOREVER, NULL);
        cf_future_release(f);
    }
}

static void test_progress_callback_never_after_clear(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    churn_ctx c = {.ex = ex};
    atomic_init(&c.stop, false);
    bg_thread th;
    bg_start(&th, churn, &c);
    cb_rec r;
    cb_rec_init(&r);
    int total = 0;
    for (int round = 0; round < 200; round++) {
        atomic_store(&r.cleared, 0);
        assert_ok(cf_executor_set_progress_callback(ex, record, &r, 1));
        if (round % 20 == 0) {
            /* Now and then wait for a call, so clear races a live one. */
            int before = cb_calls(&r);
            double end = cf_test_now() + 10.0 * cf_test_scale();
            while (cb_calls(&r) == before && cf_test_now() < end)
                sleep_ms(1);
            assert_true(cb_calls(&r) > before);
        }
        assert_ok(cf_executor_set_progress_callback(ex, NULL, NULL, 0));
        assert_int_equal(atomic_load(&r.in_call), 0);
        atomic_store(&r.cleared, 1);
        total = cb_calls(&r);
    }
    sleep_ms(20); /* a chance for a stray call to show */
    assert_int_equal(atomic_load(&r.after_clear), 0);
    assert_int_equal(cb_calls(&r), total);
    assert_true(total >= 10);
    atomic_store(&c.stop, true);
    bg_join(&th, 30);
    assert_ok(cf_executor_destroy(ex));
    assert_int_equal(atomic_load(&r.after_clear), 0);
    pthread_mutex_destroy(&r.mu);
}

/* A callback that clears itself finishes its call and is not called
 * again; one that destroys its executor gets CF_EDEADLK. */
static void clear_self(void *arg, const cf_progress *p)
{
    cb_rec *r = arg;
    record(r, p);
    atomic_store(&r->action_rc, cf_executor_set_progress_callback(r->ex, NULL, NULL, 0));
    atomic_store(&r->cleared, 1);
}

static void destroy_self(void *arg, const cf_progress *p)
{
    cb_rec *r = arg;
    record(r, p);
    if (cb_calls(r) == 1)
        atomic_store(&r->action_rc, cf_executor_destroy(r->ex));
}

static void test_progress_callback_clears_or_destroys_itself(void **state)
{
    (void)state;
    cb_rec r;
    cb_rec_init(&r);
    r.ex = pool_new(1);
    assert_ok(cf_executor_set_progress_callback(r.ex, clear_self, &r, 1));
    assert_true(cf_test_event_wait(&r.first, 10));
    /* Keep the counts moving: a live callback would be called again. */
    for (int i = 0; i < 20; i++) {
        cf_future *f;
        assert_ok(cf_submit(r.ex, t_square, CF_ARGS(cf_i64(i)), &f));
        assert_ok(cf_future_result(f, 10, NULL));
        cf_future_release(f);
        sleep_ms(1);
    }
    assert_int_equal(cb_calls(&r), 1);
    assert_ok(atomic_load(&r.action_rc));
    assert_int_equal(atomic_load(&r.after_clear), 0);
    /* Set again after a self-clear: a fresh thread. */
    cb_rec r2;
    cb_rec_init(&r2);
    r2.ex = r.ex;
    assert_ok(cf_executor_set_progress_callback(r.ex, destroy_self, &r2, 1));
    assert_true(cf_test_event_wait(&r2.first, 10));
    assert_ok(cf_executor_set_progress_callback(r.ex, NULL, NULL, 0));
    assert_cf(CF_EDEADLK, atomic_load(&r2.action_rc));
    /* The destroy from the callback only signalled the shutdown. */
    cf_future *f = NULL;
    assert_cf(CF_ESHUTDOWN, cf_submit(r.ex, t_square, CF_ARGS(cf_i64(1)), &f));
    assert_ok(cf_executor_destroy(r.ex));
    pthread_mutex_destroy(&r.mu);
    pthread_mutex_destroy(&r2.mu);
}

/* A callback replacing one with a long interval is not held to what is
 * left of that interval: it is called at once, and while the counts move
 * within its own interval. */
static void test_progress_callback_replaced_not_held_by_old_interval(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(1);
    cb_rec slow, fast;
    cb_rec_init(&slow);
    cb_rec_init(&fast);
    assert_ok(cf_executor_set_progress_callback(ex, record, &slow, 60 * 1000));
    assert_true(cf_test_event_wait(&slow.first, 10));
    assert_ok(cf_executor_set_progress_callback(ex, record, &fast, 10));
    cf_future *f = NULL;
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &f));
    assert_ok(cf_future_result(f, 10, NULL));
    cf_future_release(f);
    /* Scaled, and far below the 60 s the old deadline would take. */
    bool called = cf_test_event_wait(&fast.first, 1);
    assert_ok(cf_executor_destroy(ex));
    if (!called)
        fail_msg("the replacing callback (10 ms) was not called within %d s", cf_test_scale());
    assert_int_equal(cb_calls(&slow), 1);
    pthread_mutex_destroy(&slow.mu);
    pthread_mutex_destroy(&fast.mu);
}

static void test_progress_callback_bad_input(void **state)
{
    (void)state;
    cb_rec r;
    cb_rec_init(&r);
    assert_cf(CF_EINVAL, cf_executor_set_progress_callback(NULL, record, &r, 10));
    cf_executor *ex = pool_new(1);
    assert_cf(CF_EINVAL, cf_executor_set_progress_callback(ex, record, &r, 0));
    assert_cf(CF_EINVAL, cf_executor_set_progress_callback(ex, record, &r, -5));
    assert_non_null(strstr(cf_last_error_message(), "interval_ms"));
    /* Clearing when nothing is set is fine, and so is interval 0 then. */
    assert_ok(cf_executor_set_progress_callback(ex, NULL, NULL, 0));
    /* Replacing one callback by another, then destroy with it set. */
    assert_ok(cf_executor_set_progress_callback(ex, record, &r, 1000));
    assert_ok(cf_executor_set_progress_callback(ex, record, &r, 1));
    assert_true(cf_test_event_wait(&r.first, 10));
    assert_ok(cf_executor_destroy(ex));
    pthread_mutex_destroy(&r.mu);
}

/* An executor never destroyed: the exit handler waits for its calls, then
 * gives the callback its last call (in a child process that exits). */
static int exit_fd = -1;

static void write_ended(void *arg, const cf_progress *p)
{
    (void)arg;
    char line[64];
    int n = snprintf(line, sizeof line, "ended=%llu\n", (unsigned long long)cf_progress_ended(p));
    if (write(exit_fd, line, (size_t)n) != n)
        _exit(5);
}

static void test_progress_callback_last_call_at_exit(void **state)
{
    (void)state;
    enum { N = 25 };
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        exit_fd = fds[1];
        cf_executor *ex;
        if (cf_thread_pool_new(&ex, NULL) != CF_OK ||
            cf_executor_set_progress_callback(ex, write_ended, NULL, 10000) != CF_OK)
            _exit(2);
        for (int i = 0; i < N; i++) {
            cf_future *f;
            if (cf_submit(ex, t_square, CF_ARGS(cf_i64(i)), &f) != CF_OK)
                _exit(3);
            cf_future_release(f);
        }
        exit(0); /* no destroy, no wait: the exit handler does both */
    }
    close(fds[1]);
    char out[4096];
    size_t n = 0;
    ssize_t r;
    while (n + 1 < sizeof out && (r = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char want[32];
    snprintf(want, sizeof want, "ended=%d\n", N);
    size_t len = strlen(want);
    if (n < len || strcmp(out + n - len, want) != 0)
        fail_msg("callback lines: \"%s\"", out);
}

/* ---- the progress bar ------------------------------------------------------ */

/* Points fd 2 at `fd` and returns a copy of the old fd 2 for restore_stderr(). */
static int redirect_stderr(int fd)
{
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fd, 2) == 2);
    return saved;
}

static void restore_stderr(int saved)
{
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
}

/* Everything readable from fd now (non-blocking), NUL-terminated. */
static size_t read_all(int fd, char *buf, size_t size)
{
    size_t n = 0;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (n + 1 < size) {
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static cf_progress snap(uint64_t submitted, uint64_t running, uint64_t ok, uint64_t failed,
                        uint64_t cancelled)
{
    cf_progress p = {submitted, running, ok, failed, cancelled};
    return p;
}

/* Runs a bar "work" of 10 calls with stderr on a pipe (not a terminal):
 * `nups` updates, then a finish at `fin`.  Returns the last line written
 * (in `out`, without its newline), after checking the output is plain
 * lines ending with one. */
static const char *bar_plain_last_line(const cf_progress *ups, size_t nups,
                                       const cf_progress *fin, char *out, size_t size)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = redirect_stderr(fds[1]);
    cf_progress_bar *bar = NULL;
    int rc = cf_progress_bar_new(&bar, "work", 10);
    for (size_t i = 0; i < nups && rc == CF_OK; i++)
        cf_progress_bar_update(bar, &ups[i]);
    if (rc == CF_OK)
        cf_progress_bar_finish(bar, fin);
    restore_stderr(saved);
    close(fds[1]);
    assert_ok(rc);
    read_all(fds[0], out, size);
    close(fds[0]);
    assert_null(strchr(out, '\r'));
    assert_null(strchr(out, '\033'));
    size_t len = strlen(out);
    assert_true(len > 0 && out[len - 1] == '\n');
    out[len - 1] = '\0';
    const char *last = strrchr(out, '\n');
    return last ? last + 1 : out;
}

/* stderr not a terminal: plain lines, none before the end within 5 s,
 * then one with the final counts. */
static void test_progress_bar_plain_lines(void **state)
{
    (void)state;
    cf_progress ups[9];
    for (uint64_t i = 0; i < 9; i++)
        ups[i] = snap(10, 1, i, 0, 0);
    cf_progress fin = snap(10, 0, 8, 1, 1);
    char out[4096];
    const char *last = bar_plain_last_line(ups, 9, &fin, out, sizeof out);
    if (strncmp(last, "work: 10/10 (100%) in ", 22) != 0 ||
        !strstr(last, "/s, ETA 00:00, 1 failed, 1 cancelled"))
        fail_msg("last line: \"%s\"", last);
}

/* The failed and the cancelled count each show only when not zero. */
static void test_progress_bar_shows_nonzero_counts_only(void **state)
{
    (void)state;
    char out[4096];
    cf_progress fin = snap(10, 0, 4, 0, 6);
    const char *last = bar_plain_last_line(NULL, 0, &fin, out, sizeof out);
    if (!strstr(last, "ETA 00:00, 6 cancelled") || strstr(last, "failed"))
        fail_msg("cancelled only: \"%s\"", last);
    fin = snap(10, 0, 7, 3, 0);
    last = bar_plain_last_line(NULL, 0, &fin, out, sizeof out);
    if (!strstr(last, "ETA 00:00, 3 failed") || strstr(last, "cancelled"))
        fail_msg("failed only: \"%s\"", last);
    fin = snap(10, 0, 10, 0, 0);
    last = bar_plain_last_line(NULL, 0, &fin, out, sizeof out);
    if (strstr(last, "failed") || strstr(last, "cancelled"))
        fail_msg("none: \"%s\"", last);
}

/* stderr a terminal (a pseudo-terminal here): redrawn in place. */
static void test_progress_bar_terminal_redraw(void **state)
{
    (void)state;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0) {
        skip(); /* no pseudo-terminals in this environment */
        return;
    }
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    assert_true(slave >= 0);
    int saved = redirect_stderr(slave);
    cf_progress_bar *bar = NULL;
    int rc = cf_progress_bar_new(&bar, NULL, 0);
    cf_progress p = snap(4, 2, 1, 0, 0);
    if (rc == CF_OK) {
        cf_progress_bar_update(bar, &p); /* the first update draws */
        cf_progress_bar_update(NULL, &p);
        cf_progress_bar_update(bar, NULL);
        cf_progress_bar_finish(bar, NULL);
    }
    restore_stderr(saved);
    close(slave);
    assert_ok(rc);
    char out[4096];
    read_all(master, out, sizeof out);
    close(master);
    /* Two draws (first update, finish) of the same snapshot: 1 of 4. */
    int draws = 0;
    for (const char *q = out; (q = strstr(q, "\r 25% [######..................] 1/4 ")); q++)
        draws++;
    if (draws != 2 || !strstr(out, "\033[K") || !strchr(out, '\n'))
        fail_msg("terminal output (%d draws): \"%s\"", draws, out);
}

/* Counts so big that count x 100 overflows 64 bits: the percentage is
 * still the share (it read 3 % for half of 2e18). */
static void test_progress_bar_huge_counts(void **state)
{
    (void)state;
    const uint64_t total = 2000000000000000000ull;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = redirect_stderr(fds[1]);
    cf_progress_bar *bar = NULL;
    int rc = cf_progress_bar_new(&bar, "big", total);
    cf_progress fin = snap(total, 0, total / 2, 0, 0);
    if (rc == CF_OK)
        cf_progress_bar_finish(bar, &fin);
    restore_stderr(saved);
    close(fds[1]);
    assert_ok(rc);
    char out[4096];
    read_all(fds[0], out, sizeof out);
    close(fds[0]);
    if (!strstr(out, "big: 1000000000000000000/2000000000000000000 (50%)"))
        fail_msg("output: \"%s\"", out);
}

static void test_progress_bar_bad_input(void **state)
{
    (void)state;
    assert_cf(CF_EINVAL, cf_progress_bar_new(NULL, "x", 1));
    char label[300];
    memset(label, 'a', sizeof label - 1);
    label[sizeof label - 1] = '\0';
    cf_progress_bar *bar = (cf_progress_bar *)&label;
    assert_cf(CF_EINVAL, cf_progress_bar_new(&bar, label, 1));
    assert_null(bar);
    cf_progress_bar_update(NULL, NULL);
    cf_progress_bar_finish(NULL, NULL);
    /* Finished without any snapshot: draws nothing. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = redirect_stderr(fds[1]);
    int rc = cf_progress_bar_new(&bar, "quiet", 3);
    if (rc == CF_OK)
        cf_progress_bar_finish(bar, NULL);
    restore_stderr(saved);
    close(fds[1]);
    assert_ok(rc);
    char out[64];
    assert_int_equal(read_all(fds[0], out, sizeof out), 0);
    close(fds[0]);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_progress_bad_input),
    cmocka_unit_test(test_progress_thread_pool_exact),
    cmocka_unit_test(test_progress_submit_many_and_shutdown_cancel),
    cmocka_unit_test(test_progress_process_pool_exact),
    cmocka_unit_test(test_progress_process_pool_map),
    cmocka_unit_test(test_progress_map_counts),
    cmocka_unit_test(test_progress_map_close_early),
    cmocka_unit_test(test_progress_lazy_map_refused_refill),
    cmocka_unit_test(test_progress_map_timeout_counts_begun_call_to_its_end),
    cmocka_unit_test(test_progress_submit_many_refused_after_one_began),
    cmocka_unit_test(test_progress_refused_submit_races_destroy),
    cmocka_unit_test(test_progress_snapshot_invariant_race),
    cmocka_unit_test(test_progress_seen_end_is_counted_race),
    cmocka_unit_test(test_progress_running_ignores_calls_ended_during_read),
    cmocka_unit_test(test_progress_callback_called_and_final),
    cmocka_unit_test(test_progress_callback_never_after_clear),
    cmocka_unit_test(test_progress_callback_clears_or_destroys_itself),
    cmocka_unit_test(test_progress_callback_replaced_not_held_by_old_interval),
    cmocka_unit_test(test_progress_callback_bad_input),
    cmocka_unit_test(test_progress_callback_last_call_at_exit),
    cmocka_unit_test(test_progress_bar_plain_lines),
    cmocka_unit_test(test_progress_bar_shows_nonzero_counts_only),
    cmocka_unit_test(test_progress_bar_terminal_redraw),
    cmocka_unit_test(test_progress_bar_huge_counts),
    cmocka_unit_test(test_progress_bar_bad_input),
};

CF_TEST_MAIN(tests)
