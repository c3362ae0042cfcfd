/* SPDX-License-Identifier: MIT */
/*
 * test_priority.c - per-call priorities and the bound on queued calls
 * (max_queued) on the thread and process pools: execution order behind a
 * blocked single worker (higher first, FIFO among equals), map's
 * priority, CF_EFULL at once with a zero queue_timeout, waiters for room
 * woken by a worker taking a call, by a cancel and by shutdown, the
 * all-or-none rule of cf_submit_many, a worker that never waits for its
 * own queue, a race of producers and cancels on a small bound, batches
 * (cf_submit_many and chunked maps: wake-ups, the heap, every call run
 * once, a chunk part-way in when the bound times out, the pool shuts down
 * or breaks, the map's ring), and bad input.
 *
 * Process tasks cannot use cmocka or shared memory: they record the order
 * they ran in by appending a line to a file, and the blocking task waits
 * on a FIFO the test writes to.
 */
#include "cf_test_util.h"
#include "cf_fault.h" /* the spawn hook */

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#define T_OK 10.0

#include "cf_test_prio.h" /* uses T_OK */

/* ---- thread tasks ---------------------------------------------------------- */

static void assert_order(const int *got, int ngot, const int *want, int nwant)
{
    char g[256] = "", w[256] = "";
    for (int i = 0; i < ngot; i++)
        snprintf(g + strlen(g), sizeof g - strlen(g), "%d ", got[i]);
    for (int i = 0; i < nwant; i++)
        snprintf(w + strlen(w), sizeof w - strlen(w), "%d ", want[i]);
    if (ngot != nwant || strcmp(g, w) != 0)
        fail_msg("ran in order [%s], expected [%s]", g, w);
}

/* Priorities of the calls queued behind the blocker, and the order they
 * must run in: highest first, submission order among equals. */
static const int PRIOS[] = {0, 5, 0, 5, -1, 10, -1, 0, CF_PRIORITY_MAX, CF_PRIORITY_MIN};
static const int WANT[] = {8, 5, 1, 3, 0, 2, 7, 4, 6, 9};
#define NPRIO ((int)(sizeof PRIOS / sizeof PRIOS[0]))

static cf_executor *tpool(int workers, size_t max_queued)
{
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = workers;
    o.max_queued = max_queued;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    return ex;
}

/* A pool's only worker held by a t_block call until busy_end(). */
typedef struct busy {
    cf_executor *ex;
    blocker b;
    cf_future *blk;
} busy;

static void busy_start(busy *w, cf_executor *ex)
{
    w->ex = ex;
    blocker_init(&w->b);
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&w->b)), &w->blk));
    assert_true(blocker_wait_started(&w->b, 1, T_OK));
}

static void busy_release(busy *w)
{
    blocker_release(&w->b);
}

static void busy_end(busy *w)
{
    blocker_release(&w->b);
    assert_ok(cf_future_result(w->blk, T_OK * cf_test_scale(), NULL));
    cf_future_release(w->blk);
    blocker_destroy(&w->b);
}

static void test_thread_priority_order(void **state)
{
    (void)state;
    busy w;
    busy_start(&w, tpool(1, 0));
    order_log log;
    order_init(&log);
    cf_future *fs[NPRIO];
    for (int i = 0; i < NPRIO; i++)
        fs[i] = submit_prio(w.ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(i)), PRIOS[i]);
    busy_release(&w);
    for (int i = 0; i < NPRIO; i++) {
        int64_t r;
        assert_ok(cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &r));
        assert_int_equal(r, i);
        cf_future_release(fs[i]);
    }
    assert_order(log.ids, log.n, WANT, NPRIO);
    busy_end(&w);
    assert_ok(cf_executor_destroy(w.ex));
}

/* The same 200 times with two producers racing: each call's priority is
 * its producer's, so whatever the interleaving the high producer's calls
 * all run before the low producer's, each producer's in its own order. */
typedef struct producer {
    cf_executor *ex;
    order_log *log;
    int base, priority;
    cf_future *fs[8];
} producer;

static void produce(void *arg)
{
    producer *pr = arg;
    for (int i = 0; i < 8; i++) {
        cf_submit_options o;
        cf_submit_options_init(&o);
        o.priority = pr->priority;
        if (cf_submit_with(pr->ex, &o, t_record, CF_ARGS(cf_ptr(pr->log), cf_i64(pr->base + i)),
                           &pr->fs[i]) != CF_OK)
            pr->fs[i] = NULL;
    }
}

static void test_thread_priority_race(void **state)
{
    (void)state;
    cf_executor *ex = tpool(1, 0);
    for (int round = 0; round < 200; round++) {
        busy w;
        busy_start(&w, ex);
        order_log log;
        order_init(&log);
        producer hi = {ex, &log, 100, 3, {0}}, lo = {ex, &log, 0, round % 2 ? 0 : -3, {0}};
        bg_thread th, tl;
        bg_start(&th, produce, &hi);
        bg_start(&tl, produce, &lo);
        bg_join(&th, T_OK);
        bg_join(&tl, T_OK);
        busy_release(&w);
        for (int i = 0; i < 8; i++) {
            assert_non_null(hi.fs[i]);
            assert_non_null(lo.fs[i]);
            assert_ok(cf_future_result(hi.fs[i], T_OK * cf_test_scale(), NULL));
            assert_ok(cf_future_result(lo.fs[i], T_OK * cf_test_scale(), NULL));
            cf_future_release(hi.fs[i]);
            cf_future_release(lo.fs[i]);
        }
        int want[16];
        for (int i = 0; i < 8; i++) {
            want[i] = 100 + i;
            want[8 + i] = i;
        }
        assert_order(log.ids, log.n, want, 16);
        busy_end(&w);
    }
    assert_ok(cf_executor_destroy(ex));
}

static void test_thread_map_priority(void **state)
{
    (void)state;
    busy w;
    busy_start(&w, tpool(1, 0));
    cf_executor *ex = w.ex;
    order_log log;
    order_init(&log);
    cf_future *plain = NULL;
    assert_ok(cf_submit(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(0)), &plain));
    cf_value logs[3] = {cf_ptr(&log), cf_ptr(&log), cf_ptr(&log)};
    cf_value ids[3] = {cf_i64(1), cf_i64(2), cf_i64(3)};
    cf_map_input in[2] = {cf_input_array(logs, 3), cf_input_array(ids, 3)};
    cf_map_options mo;
    cf_map_options_init(&mo);
    assert_int_equal(mo.priority, CF_PRIORITY_DEFAULT);
    mo.priority = 7;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_record, in, 2, &mo, &it));
    busy_release(&w);
    for (int i = 1; i <= 3; i++) {
        const cf_value *v;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_ok(cf_future_result(plain, T_OK, NULL));
    const int want[] = {1, 2, 3, 0};
    assert_order(log.ids, log.n, want, 4);
    cf_future_release(plain);
    busy_end(&w);
    assert_ok(cf_executor_destroy(ex));
}

/* More distinct priorities queued at once than the pool has lanes: the
 * calls that find no lane wait in its heap, and the order stays highest
 * first, FIFO among equals - also for a priority whose older calls are in
 * the heap and newer ones in a lane made once another lane emptied. */
static void test_thread_more_priorities_than_lanes(void **state)
{
    (void)state;
    enum { K = 40 };
    busy w;
    busy_start(&w, tpool(1, 0));
    cf_executor *ex = w.ex;
    order_log log;
    order_init(&log);
    blocker b2;
    blocker_init(&b2);
    cf_future *fs[K + 8];
    int nf = 0;
    /* Runs next, and holds the worker while the lane it leaves is empty. */
    fs[nf++] = submit_prio(ex, t_block, CF_ARGS(cf_ptr(&b2)), 1000);
    for (int i = 0; i < K; i++) {
        int pr = 100 + (i * 17) % K; /* 40 distinct, scrambled */
        fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(pr)), pr);
    }
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(-7)), -7);
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(0)), 0);
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(50)), 50);
    busy_release(&w);
    assert_true(blocker_wait_started(&b2, 1, T_OK));
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(51)), 50);
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(52)), 50);
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(CF_PRIORITY_MIN)),
                           CF_PRIORITY_MIN);
    blocker_release(&b2);
    for (int i = 0; i < nf; i++) {
        assert_ok(cf_future_result(fs[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(fs[i]);
    }
    int want[K + 6], n = 0;
    for (int i = 0; i < K; i++)
        want[n++] = 100 + K - 1 - i;
    want[n++] = 50;
    want[n++] = 51;
    want[n++] = 52;
    want[n++] = 0;
    want[n++] = -7;
    want[n++] = CF_PRIORITY_MIN;
    assert_order(log.ids, log.n, want, n);
    busy_end(&w);
    blocker_destroy(&b2);
    assert_ok(cf_executor_destroy(ex));
}

/* Producers of 31 priorities at once, on two workers, round after round
 * (lanes made, emptied and retired while workers take calls), every other
 * round ended by shutdown(cancel_futures): every call ends, run or
 * cancelled, none is lost in a lane or the heap. */
typedef struct mixed_producer {
    cf_executor *ex;
    int seed;
    cf_future *fs[300];
} mixed_producer;

static void produce_mixed(void *arg)
{
    mixed_producer *pr = arg;
    for (int i = 0; i < 300; i++) {
        cf_submit_options o;
        cf_submit_options_init(&o);
        o.priority = (pr->seed + i * 7) % 31 - 15;
        if (cf_submit_with(pr->ex, &o, t_square, CF_ARGS(cf_i64(i)), &pr->fs[i]) != CF_OK)
            pr->fs[i] = NULL; /* refused after the shutdown */
    }
}

static void test_thread_priority_lanes_race(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        cf_executor *ex = tpool(2, 0);
        mixed_producer pr[3];
        bg_thread t[3];
        for (int i = 0; i < 3; i++) {
            pr[i].ex = ex;
            pr[i].seed = round + 11 * i;
            bg_start(&t[i], produce_mixed, &pr[i]);
        }
        if (round % 2)
            assert_ok(cf_shutdown(ex, false, true));
        for (int i = 0; i < 3; i++)
            bg_join(&t[i], T_OK);
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 300; k++) {
                if (!pr[i].fs[k]) {
                    assert_true(round % 2);
                    continue;
                }
                int64_t r;
                int rc = cf_future_result_i64(pr[i].fs[k], T_OK * cf_test_scale(), &r);
                if (rc == CF_OK)
                    assert_int_equal(r, (int64_t)k * k);
                else
                    assert_true(round % 2 && rc == CF_ECANCELLED);
                cf_future_release(pr[i].fs[k]);
            }
        assert_ok(cf_executor_destroy(ex));
    }
}

/* A chunked map on a thread pool hands each chunk over in one go, but its
 * calls stay separate: queued by the map's priority among calls submitted
 * one by one (FIFO among equals, before and after the map), and spread
 * over chunks of different sizes. */
static void test_thread_chunked_map_priority_order(void **state)
{
    (void)state;
    busy w;
    busy_start(&w, tpool(1, 0));
    cf_executor *ex = w.ex;
    order_log log;
    order_init(&log);
    cf_future *before[3];
    before[0] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(100)), 9);
    before[1] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(200)), -1);
    before[2] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(300)), 5);
    enum { N = 10 };
    cf_value logs[N], ids[N];
    for (int i = 0; i < N; i++) {
        logs[i] = cf_ptr(&log);
        ids[i] = cf_i64(i + 1);
    }
    cf_map_input in[2] = {cf_input_array(logs, N), cf_input_array(ids, N)};
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.priority = 5;
    mo.chunksize = 4;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_record, in, 2, &mo, &it));
    cf_future *after = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(301)), 5);
    /* A map of the default priority behind them all but 200. */
    cf_value dlogs[3] = {cf_ptr(&log), cf_ptr(&log), cf_ptr(&log)};
    cf_value dids[3] = {cf_i64(11), cf_i64(12), cf_i64(13)};
    cf_map_input din[2] = {cf_input_array(dlogs, 3), cf_input_array(dids, 3)};
    mo.priority = CF_PRIORITY_DEFAULT;
    mo.chunksize = 2;
    cf_map_iter *dit = NULL;
    assert_ok(cf_map(ex, t_record, din, 2, &mo, &dit));
    assert_int_equal(atomic_load(&ex->bound.queued), 0); /* no bound: no slots */
    busy_release(&w);
    for (int i = 1; i <= N; i++) {
        const cf_value *v;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    for (int i = 11; i <= 13; i++) {
        const cf_value *v;
        assert_ok(cf_map_next(dit, &v, NULL));
        assert_int_equal(v->as.i64, i);
    }
    assert_cf(CF_EDONE, cf_map_next(dit, NULL, NULL));
    cf_map_close(dit);
    for (int i = 0; i < 3; i++) {
        assert_ok(cf_future_result(before[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(before[i]);
    }
    assert_ok(cf_future_result(after, T_OK * cf_test_scale(), NULL));
    cf_future_release(after);
    const int want[] = {100, 300, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 301, 11, 12, 13, 200};
    assert_order(log.ids, log.n, want, (int)(sizeof want / sizeof want[0]));
    busy_end(&w);
    assert_ok(cf_executor_destroy(ex));
}

/* arg 0: the executor, arg 1: _Atomic size_t* (most slots seen held),
 * arg 2: i64.  Returns arg 2 squared. */
static int t_note_queued(cf_call *call)
{
    cf_executor *ex = (cf_executor *)cf_arg_ptr(call, 0);
    _Atomic size_t *most = (_Atomic size_t *)cf_arg_ptr(call, 1);
    size_t q = atomic_load(&ex->bound.queued), m = atomic_load(most);
    while (q > m && !atomic_compare_exchange_weak(most, &m, q))
        ;
    int64_t x = cf_arg_i64(call, 2);
    return cf_return_i64(call, x * x);
}

/* A chunk bigger than the bound goes in as pieces that fit: the queue
 * never holds more than max_queued calls, and every element gets its own
 * result. */
static void test_thread_chunked_map_respects_bound(void **state)
{
    (void)state;
    enum { N = 200, MAX = 3 };
    cf_executor *ex = tpool(2, MAX);
    _Atomic size_t most = 0;
    cf_value exs[N], mosts[N], xs[N];
    for (int i = 0; i < N; i++) {
        exs[i] = cf_ptr(ex);
        mosts[i] = cf_ptr(&most);
        xs[i] = cf_i64(i);
    }
    cf_map_input in[3] = {cf_input_array(exs, N), cf_input_array(mosts, N),
                          cf_input_array(xs, N)};
    const int chunks[] = {2, 16, 1000};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = chunks[c];
        mo.priority = (int)c - 1;
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, t_note_queued, in, 3, &mo, &it));
        for (int i = 0; i < N; i++) {
            const cf_value *v;
            assert_ok(cf_map_next(it, &v, NULL));
            assert_int_equal(v->as.i64, (int64_t)i * i);
        }
        assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
        cf_map_close(it);
    }
    assert_true(atomic_load(&most) <= MAX);
    assert_int_equal(atomic_load(&ex->bound.queued), 0);
    assert_ok(cf_executor_destroy(ex));
}

/* A chunk that finds the queue full part-way (the only worker is held)
 * fails the map with CF_EFULL at its deadline; the piece already handed
 * over is cancelled call by call, gives its slots back, and none of it
 * runs. */
static void test_thread_chunked_map_full_part_way(void **state)
{
    (void)state;
    busy w;
    busy_start(&w, tpool(1, 3));
    cf_executor *ex = w.ex;
    order_log log;
    order_init(&log);
    enum { N = 8 };
    cf_value logs[N], ids[N];
    for (int i = 0; i < N; i++) {
        logs[i] = cf_ptr(&log);
        ids[i] = cf_i64(i);
    }
    cf_map_input in[2] = {cf_input_array(logs, N), cf_input_array(ids, N)};
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = N;
    mo.timeout = 0.05;
    mo.priority = 2;
    cf_map_iter *it = NULL;
    assert_cf(CF_EFULL, cf_map(ex, t_record, in, 2, &mo, &it));
    assert_null(it);
    assert_int_equal(atomic_load(&ex->bound.queued), 0);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.submitted, 1 + 3); /* the blocker and the first piece */
    assert_int_equal(p.cancelled, 3);
    /* One call after them: it runs, and only it. */
    cf_future *f = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(99)), 0);
    busy_release(&w);
    assert_ok(cf_future_result(f, T_OK * cf_test_scale(), NULL));
    cf_future_release(f);
    const int want[] = {99};
    assert_order(log.ids, log.n, want, 1);
    busy_end(&w);
    assert_ok(cf_executor_destroy(ex));
}

/* arg 0: blocker* or NULL, arg 1: order_log*, arg 2: id.  Waits for the
 * blocker if there is one, then records the id. */
static int t_maybe_block_record(cf_call *call)
{
    blocker *b = (blocker *)cf_arg_ptr(call, 0);
    if (b) {
        pthread_mutex_lock(&b->mu);
        b->started++;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        if (!cf_test_event_wait(&b->go, 10.0))
            return cf_raise(call, 99, "TimeoutError", "blocker never released");
    }
    order_log *o = (order_log *)cf_arg_ptr(call, 1);
    int id = (int)cf_arg_i64(call, 2);
    pthread_mutex_lock(&o->mu);
    if (o->n < 64)
        o->ids[o->n++] = id;
    pthread_mutex_unlock(&o->mu);
    return cf_return_i64(call, id);
}

/* A chunk's calls are cancelled one by one until a worker begins them:
 * closing the map while its third call runs cancels the seven queued
 * behind it, which never run; the three begun end normally. */
static void test_thread_chunked_map_closed_part_way(void **state)
{
    (void)state;
    enum { N = 10 };
    cf_executor *ex = tpool(1, 0);
    blocker b;
    blocker_init(&b);
    order_log log;
    order_init(&log);
    cf_value bs[N], logs[N], ids[N];
    for (int i = 0; i < N; i++) {
        bs[i] = cf_ptr(i == 2 ? &b : NULL);
        logs[i] = cf_ptr(&log);
        ids[i] = cf_i64(i);
    }
    cf_map_input in[3] = {cf_input_array(bs, N), cf_input_array(logs, N),
                          cf_input_array(ids, N)};
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = N;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_maybe_block_record, in, 3, &mo, &it));
    assert_true(blocker_wait_started(&b, 1, T_OK));
    for (int i = 0; i < 2; i++) {
        const cf_value *v;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, i);
    }
    cf_map_close(it);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.cancelled, N - 3);
    blocker_release(&b);
    assert_ok(cf_shutdown(ex, true, false));
    const int want[] = {0, 1, 2};
    assert_order(log.ids, log.n, want, 3);
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.succeeded, 3);
    assert_int_equal(p.cancelled, N - 3);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* ---- the bound --------------------------------------------------------------- */

static cf_future *submit_wait(cf_executor *ex, double queue_timeout, int *rc)
{
    cf_submit_options o;
    cf_submit_options_init(&o);
    o.queue_timeout = queue_timeout;
    cf_future *f = NULL;
    *rc = cf_submit_with(ex, &o, t_square, CF_ARGS(cf_i64(3)), &f);
    return f;
}

/* A full queue: one worker held by a blocker, `max` calls queued. */
typedef struct full_pool {
    cf_executor *ex;
    busy w;
    cf_future *queued[4];
    int max;
} full_pool;

static void full_pool_start(full_pool *fp, int max)
{
    fp->max = max;
    fp->ex = tpool(1, (size_t)max);
    busy_start(&fp->w, fp->ex);
    for (int i = 0; i < max; i++) {
        int rc;
        fp->queued[i] = submit_wait(fp->ex, 0, &rc);
        assert_ok(rc);
    }
    assert_int_equal(atomic_load(&fp->ex->bound.queued), (size_t)max);
}

static void full_pool_end(full_pool *fp)
{
    busy_end(&fp->w);
    for (int i = 0; i < fp->max; i++) {
        if (!cf_future_cancelled(fp->queued[i]))
            assert_ok(cf_future_result(fp->queued[i], T_OK, NULL));
        cf_future_release(fp->queued[i]);
    }
    assert_ok(cf_executor_destroy(fp->ex));
}

static void test_full_returns_at_once(void **state)
{
    (void)state;
    full_pool fp;
    full_pool_start(&fp, 2);
    int rc;
    double t0 = cf_test_now();
    cf_future *f = submit_wait(fp.ex, 0, &rc);
    assert_cf(CF_EFULL, rc);
    assert_null(f);
    assert_true(contains(cf_last_error_message(), "full"));
    /* A short wait that nothing ends times out with the same code. */
    f = submit_wait(fp.ex, 0.05, &rc);
    assert_cf(CF_EFULL, rc);
    assert_null(f);
    assert_true(cf_test_now() - t0 >= 0.05);
    /* submit_many: all or none, and n above the bound never fits. */
    cf_future *many[3] = {NULL, NULL, NULL};
    assert_cf(CF_EFULL, cf_submit_many(fp.ex, t_square, CF_ARGS(cf_i64(1), cf_i64(2),
                                                                 cf_i64(3)) - 2, 3, many));
    assert_null(many[0]);
    assert_true(contains(cf_last_error_message(), "max_queued"));
    assert_int_equal(atomic_load(&fp.ex->bound.queued), 2);
    assert_string_equal(cf_err_name(CF_EFULL), "CF_EFULL");
    assert_string_equal(cf_strerror(CF_EFULL), "executor queue is full");
    full_pool_end(&fp);
}

typedef struct waiter_arg {
    cf_executor *ex;
    int rc;
    cf_future *f;
} waiter_arg;

static void wait_for_room(void *arg)
{
    waiter_arg *w = arg;
    w->f = submit_wait(w->ex, CF_FOREVER, &w->rc);
}

static void test_waiter_woken_by_take(void **state)
{
    (void)state;
    full_pool fp;
    full_pool_start(&fp, 1);
    waiter_arg w = {fp.ex, -100, NULL};
    bg_thread t;
    bg_start(&t, wait_for_room, &w);
    await_waiters(fp.ex, 1);
    assert_false(cf_test_event_is_set(&t.done));
    /* The worker finishes the blocker and takes the queued call: room. */
    busy_release(&fp.w);
    bg_join(&t, T_OK);
    assert_ok(w.rc);
    int64_t r;
    assert_ok(cf_future_result_i64(w.f, T_OK, &r));
    assert_int_equal(r, 9);
    cf_future_release(w.f);
    full_pool_end(&fp);
}

static void test_waiter_woken_by_cancel(void **state)
{
    (void)state;
    full_pool fp;
    full_pool_start(&fp, 2);
    waiter_arg w = {fp.ex, -100, NULL};
    bg_thread t;
    bg_start(&t, wait_for_room, &w);
    await_waiters(fp.ex, 1);
    assert_true(cf_future_cancel(fp.queued[1]));
    bg_join(&t, T_OK);
    assert_ok(w.rc);
    assert_int_equal(atomic_load(&fp.ex->bound.queued), 2);
    /* A cancel frees room for a submit that does not wait, too. */
    int rc;
    assert_true(cf_future_cancel(fp.queued[0]));
    cf_future *f = submit_wait(fp.ex, 0, &rc);
    assert_ok(rc);
    assert_int_equal(atomic_load(&fp.ex->bound.queued), 2);
    busy_release(&fp.w);
    assert_ok(cf_future_result(f, T_OK, NULL));
    assert_ok(cf_future_result(w.f, T_OK, NULL));
    cf_future_release(f);
    cf_future_release(w.f);
    full_pool_end(&fp);
}

static void test_waiter_woken_by_shutdown(void **state)
{
    (void)state;
    full_pool fp;
    full_pool_start(&fp, 1);
    waiter_arg w[2] = {{fp.ex, -100, NULL}, {fp.ex, -100, NULL}};
    bg_thread t[2];
    bg_start(&t[0], wait_for_room, &w[0]);
    bg_start(&t[1], wait_for_room, &w[1]);
    await_waiters(fp.ex, 2);
    assert_ok(cf_shutdown(fp.ex, false, false));
    for (int i = 0; i < 2; i++) {
        bg_join(&t[i], T_OK);
        assert_cf(CF_ESHUTDOWN, w[i].rc);
        assert_null(w[i].f);
    }
    full_pool_end(&fp);
}

/* The owner destroys the pool while a submit waits for room, 200 rounds:
 * the waiter either got room first (its call then runs before destroy
 * returns) or is woken by the shutdown; either way it never touches the
 * freed pool (AddressSanitizer would say). */
static void test_waiter_races_destroy(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        cf_executor *ex = tpool(1, 1);
        busy w;
        busy_start(&w, ex);
        int rc;
        cf_future *q = submit_wait(ex, 0, &rc);
        assert_ok(rc);
        waiter_arg wa = {ex, -100, NULL};
        bg_thread t;
        bg_start(&t, wait_for_room, &wa);
        await_waiters(ex, 1);
        busy_release(&w);
        assert_ok(cf_executor_destroy(ex));
        bg_join(&t, T_OK);
        if (wa.rc == CF_OK) {
            int64_t r;
            assert_ok(cf_future_result_i64(wa.f, 0, &r));
            assert_int_equal(r, 9);
            cf_future_release(wa.f);
        } else {
            assert_cf(CF_ESHUTDOWN, wa.rc);
        }
        assert_ok(cf_future_result(q, 0, NULL));
        cf_future_release(q);
        assert_ok(cf_future_result(w.blk, 0, NULL));
        cf_future_release(w.blk);
        blocker_destroy(&w.b);
    }
}

/* A task that submits to its own full pool gets CF_EFULL at once: the
 * one worker waiting for room would never make any.  arg 0: the pool,
 * arg 1: a blocker it waits on first (so the test can fill the queue). */
static int t_submit_own(cf_call *call)
{
    cf_executor *ex = (cf_executor *)cf_arg_ptr(call, 0);
    blocker *b = (blocker *)cf_arg_ptr(call, 1);
    pthread_mutex_lock(&b->mu);
    b->started++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (!cf_test_event_wait(&b->go, 10.0))
        return cf_raise(call, 99, "TimeoutError", "blocker never released");
    cf_future *f = NULL;
    int rc = cf_submit(ex, t_square, CF_ARGS(cf_i64(2)), &f);
    cf_future_release(f);
    return cf_return_i64(call, rc);
}

static void test_worker_does_not_wait(void **state)
{
    (void)state;
    cf_executor *ex = tpool(1, 1);
    blocker b;
    blocker_init(&b);
    cf_future *self = NULL, *queued = NULL;
    assert_ok(cf_submit(ex, t_submit_own, CF_ARGS(cf_ptr(ex), cf_ptr(&b)), &self));
    assert_true(blocker_wait_started(&b, 1, T_OK));
    assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(4)), &queued)); /* full now */
    blocker_release(&b);
    int64_t r;
    assert_ok(cf_future_result_i64(self, T_OK, &r));
    assert_int_equal(r, CF_EFULL);
    assert_ok(cf_future_result_i64(queued, T_OK, &r));
    assert_int_equal(r, 16);
    cf_future_release(self);
    cf_future_release(queued);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

/* Producers and cancels race on a bound of 2, 200 rounds: every call ends
 * and every slot comes back exactly once (a slot given back twice would
 * wrap `queued`, one never given back would leave it above 0). */
typedef struct racer {
    cf_executor *ex;
    cf_future *fs[16];
} racer;

static void race_submit(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < 16; i++) {
        int rc;
        r->fs[i] = submit_wait(r->ex, CF_FOREVER, &rc);
        if (rc != CF_OK)
            r->fs[i] = NULL;
        else if (i % 3 == 0)
            cf_future_cancel(r->fs[i]);
        size_t q = atomic_load(&r->ex->bound.queued);
        if (q > 2)
            r->fs[i] = NULL; /* reported below */
    }
}

static void test_bound_race(void **state)
{
    (void)state;
    cf_executor *ex = tpool(2, 2);
    for (int round = 0; round < 200; round++) {
        racer r[3];
        bg_thread t[3];
        for (int i = 0; i < 3; i++) {
            r[i].ex = ex;
            bg_start(&t[i], race_submit, &r[i]);
        }
        for (int i = 0; i < 3; i++)
            bg_join(&t[i], T_OK);
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 16; k++) {
                assert_non_null(r[i].fs[k]);
                int rc = cf_future_result(r[i].fs[k], T_OK * cf_test_scale(), NULL);
                assert_true(rc == CF_OK || rc == CF_ECANCELLED);
                cf_future_release(r[i].fs[k]);
            }
    }
    /* Every call is done: the workers took them all or they were
     * cancelled, so every slot is back. */
    assert_int_equal(atomic_load(&ex->bound.queued), 0);
    assert_ok(cf_executor_destroy(ex));
}

static void test_eager_map_waits_for_room(void **state)
{
    (void)state;
    cf_executor *ex = tpool(2, 3);
    cf_value xs[50];
    for (int i = 0; i < 50; i++)
        xs[i] = cf_i64(i);
    cf_map_input in = cf_input_array(xs, 50);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_square, &in, 1, NULL, &it));
    for (int i = 0; i < 50; i++) {
        const cf_value *v;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, (int64_t)i * i);
    }
    cf_map_close(it);
    /* A thread pool queues a chunk's calls separately, in pieces that fit
     * the bound, so a chunk bigger than the bound is no problem. */
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 4;
    assert_ok(cf_map(ex, t_square, &in, 1, &mo, &it));
    for (int i = 0; i < 50; i++)
        assert_ok(cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    assert_int_equal(atomic_load(&ex->bound.queued), 0);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- batches: cf_submit_many() and chunked maps -------------------------------
 *
 * A thread pool takes the calls of a cf_submit_many() and each chunk of a
 * chunked map in one go (pieces that fit the bound, one exchange per lane,
 * one wake-up), yet they stay separate calls. */

/* Every counted call of `ex` has ended: none running, and the ended ones
 * add up to the submitted ones.  Returns the number that succeeded. */
static uint64_t assert_all_ended(cf_executor *ex)
{
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    if (p.running != 0 || p.submitted != p.succeeded + p.failed + p.cancelled)
        fail_msg("progress: submitted %llu, running %llu, succeeded %llu, failed %llu, "
                 "cancelled %llu",
                 (unsigned long long)p.submitted, (unsigned long long)p.running,
                 (unsigned long long)p.succeeded, (unsigned long long)p.failed,
                 (unsigned long long)p.cancelled);
    return p.succeeded;
}

/* ---- batches: one wake-up reaches every parked worker ------------------- */

/* arg 0: blocker*, arg 1: how many calls must meet.  Counts itself in
 * `started`, then waits (at most 10 s, scaled) until that many calls are
 * inside at once, which needs that many workers running them.  Returns 1,
 * or raises when they never met. */
static int t_meet(cf_call *call)
{
    blocker *b = (blocker *)cf_arg_ptr(call, 0);
    int want = (int)cf_arg_i64(call, 1);
    pthread_mutex_lock(&b->mu);
    b->started++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (!blocker_wait_started(b, want, 10.0))
        return cf_raise(call, 1, "TimeoutError", "the calls of one batch never ran at once");
    return cf_return_i64(call, 1);
}

/* A batch of W calls that can only finish together, over W workers that
 * are parked (or searching) between rounds: the batch makes one wake-up,
 * and each worker that takes a call while more is queued must wake the
 * next.  A wake-up lost anywhere in that relay leaves a call queued while
 * the others wait for it, and the batch fails.  200 rounds, alternating
 * cf_submit_many() (the default lane) and chunked maps of the default and
 * of other priorities (lanes made on the way). */
static void test_batch_wakes_every_parked_worker(void **state)
{
    (void)state;
    enum { W = 4, ROUNDS = 200 };
    cf_executor *ex = tpool(W, 0);
    for (int r = 0; r < ROUNDS; r++) {
        blocker rv;
        blocker_init(&rv);
        cf_value args[2 * W], bs[W], wants[W];
        for (int i = 0; i < W; i++) {
            args[2 * i] = bs[i] = cf_ptr(&rv);
            args[2 * i + 1] = wants[i] = cf_i64(W);
        }
        if (r % 3 == 0) {
            cf_future *fs[W];
            assert_ok(cf_submit_many(ex, t_meet, args, 2, W, fs));
            for (int i = 0; i < W; i++) {
                int64_t v = 0;
                assert_ok(cf_future_result_i64(fs[i], 2 * T_OK * cf_test_scale(), &v));
                assert_int_equal(v, 1);
                cf_future_release(fs[i]);
            }
        } else {
            cf_map_input in[2] = {cf_input_array(bs, W), cf_input_array(wants, W)};
            cf_map_options mo;
            cf_map_options_init(&mo);
            mo.chunksize = W;
            mo.priority = r % 3 == 1 ? CF_PRIORITY_DEFAULT : 1 + r % 7;
            cf_map_iter *it = NULL;
            assert_ok(cf_map(ex, t_meet, in, 2, &mo, &it));
            for (int i = 0; i < W; i++) {
                const cf_value *v = NULL;
                assert_ok(cf_map_next(it, &v, NULL));
                assert_int_equal(v->as.i64, 1);
            }
            assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
            cf_map_close(it);
        }
        blocker_destroy(&rv);
        if (r % 2)
            sleep_ms(1); /* lets the workers park (not needed for correctness) */
    }
    assert_true(cf_executor_worker_count(ex) <= W);
    assert_int_equal(assert_all_ended(ex), (uint64_t)ROUNDS * W);
    assert_ok(cf_executor_destroy(ex));
}

/* ---- batches: a chunk that finds no lane --------------------------------- */

/* An eager chunked map of t_record over ids [first, first + n). */
static cf_map_iter *map_ids(cf_executor *ex, order_log *log, int first, int n, int chunksize,
                            int priority)
{
    cf_value logs[16], ids[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        logs[i] = cf_ptr(log);
        ids[i] = cf_i64(first + i);
    }
    cf_map_input in[2] = {cf_input_array(logs, (size_t)n), cf_input_array(ids, (size_t)n)};
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = chunksize;
    mo.priority = priority;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_record, in, 2, &mo, &it));
    return it;
}

static void map_expect_ids(cf_map_iter *it, int first, int n)
{
    for (int i = 0; i < n; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, first + i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
}

/* More distinct priorities queued than the pool has lanes, then chunked
 * maps of a priority that has none: their chunks go to the heap whole
 * (room made for all of a chunk's calls at once), among single calls of
 * the same priority before and after them.  Once the worker empties a
 * lane, the next chunk of that priority gets a lane; the heap's older
 * calls of it still run first.  A chunk of a new priority between them
 * finds every lane busy again.  The order stays highest first, FIFO among
 * equals, across the heap and the lane. */
static void test_batch_chunk_without_lane_keeps_order(void **state)
{
    (void)state;
    enum { K = 20 }; /* distinct priorities queued singly: more than lanes */
    cf_executor *ex = tpool(1, 0);
    blocker b1, b2;
    blocker_init(&b1);
    blocker_init(&b2);
    cf_future *hold = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b1)), &hold));
    assert_true(blocker_wait_started(&b1, 1, T_OK));
    order_log log;
    order_init(&log);
    cf_future *fs[K + 8];
    int nf = 0;
    /* Runs next, and holds the worker while the lane it leaves is empty. */
    fs[nf++] = submit_prio(ex, t_block, CF_ARGS(cf_ptr(&b2)), 1000);
    for (int i = 0; i < K; i++)
        fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(100 + i)), 100 + i);
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(499)), 50);
    cf_map_iter *m1 = map_ids(ex, &log, 500, 6, 4, 50);
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(506)), 50);
    blocker_release(&b1);
    assert_true(blocker_wait_started(&b2, 1, T_OK));
    cf_map_iter *m2 = map_ids(ex, &log, 510, 6, 3, 50);
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(516)), 50);
    cf_map_iter *m3 = map_ids(ex, &log, 600, 3, 3, 60);
    cf_map_iter *m4 = map_ids(ex, &log, 700, 5, 2, -3);
    fs[nf++] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(705)), -3);
    blocker_release(&b2);
    map_expect_ids(m1, 500, 6);
    map_expect_ids(m2, 510, 6);
    map_expect_ids(m3, 600, 3);
    map_expect_ids(m4, 700, 5);
    for (int i = 0; i < nf; i++) {
        assert_ok(cf_future_result(fs[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(fs[i]);
    }
    assert_ok(cf_future_result(hold, T_OK * cf_test_scale(), NULL));
    cf_future_release(hold);
    int want[K + 32], n = 0;
    for (int i = K - 1; i >= 0; i--)
        want[n++] = 100 + i;
    for (int i = 0; i < 3; i++)
        want[n++] = 600 + i;
    want[n++] = 499;
    for (int i = 0; i < 7; i++)
        want[n++] = 500 + i;
    for (int i = 0; i < 7; i++)
        want[n++] = 510 + i;
    for (int i = 0; i < 6; i++)
        want[n++] = 700 + i;
    assert_order(log.ids, log.n, want, n);
    assert_int_equal(assert_all_ended(ex), (uint64_t)(2 + K + 3 + 6 + 6 + 3 + 5 + 1));
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b1);
    blocker_destroy(&b2);
}

/* ---- batches: racing producers, every call exactly once ------------------ */

enum { PROD_N = 16, PRODUCERS = 3, BOUND = 3 };

typedef struct batch_producer {
    cf_executor *ex;
    int kind, priority;
    _Atomic size_t *most;
    _Atomic int runs[PROD_N];
    int bad;          /* unexpected return codes or results */
    char why[160];
} batch_producer;

/* arg 0: _Atomic int* (runs of this call), arg 1: the executor, arg 2:
 * _Atomic size_t* (most slots seen held), arg 3: i64.  Returns arg 3
 * squared. */
static int t_once(cf_call *call)
{
    _Atomic int *runs = (_Atomic int *)cf_arg_ptr(call, 0);
    cf_executor *ex = (cf_executor *)cf_arg_ptr(call, 1);
    _Atomic size_t *most = (_Atomic size_t *)cf_arg_ptr(call, 2);
    size_t q = atomic_load(&ex->bound.queued), m = atomic_load(most);
    while (q > m && !atomic_compare_exchange_weak(most, &m, q))
        ;
    atomic_fetch_add(runs, 1);
    int64_t x = cf_arg_i64(call, 3);
    return cf_return_i64(call, x * x);
}

static void batch_note(batch_producer *pr, const char *what, int i, int rc)
{
    if (pr->bad++ == 0)
        snprintf(pr->why, sizeof pr->why, "kind %d: %s at %d: %s (%s)", pr->kind, what, i,
                 cf_err_name(rc), cf_last_error_message());
}

/* Runs its PROD_N calls as batches of cf_submit_many() (kind 0) or as a
 * chunked map (kinds 1 and 2), and checks every result. */
static void produce_batches(void *arg)
{
    batch_producer *pr = arg;
    cf_value args[PROD_N * 4];
    for (int i = 0; i < PROD_N; i++) {
        atomic_store(&pr->runs[i], 0);
        args[4 * i] = cf_ptr(&pr->runs[i]);
        args[4 * i + 1] = cf_ptr(pr->ex);
        args[4 * i + 2] = cf_ptr(pr->most);
        args[4 * i + 3] = cf_i64(i);
    }
    if (pr->kind == 0) {
        /* Batches of two: each fits the bound (all or none). */
        for (int i = 0; i < PROD_N; i += 2) {
            cf_future *fs[2] = {NULL, NULL};
            int rc = cf_submit_many(pr->ex, t_once, args + 4 * i, 4, 2, fs);
            if (rc != CF_OK) {
                batch_note(pr, "submit_many", i, rc);
                continue;
            }
            for (int k = 0; k < 2; k++) {
                int64_t v = -1;
                rc = cf_future_result_i64(fs[k], T_OK * cf_test_scale(), &v);
                if (rc != CF_OK || v != (int64_t)(i + k) * (i + k))
                    batch_note(pr, "result", i + k, rc);
                cf_future_release(fs[k]);
            }
        }
        return;
    }
    cf_value col[4][PROD_N];
    for (int i = 0; i < PROD_N; i++)
        for (int c = 0; c < 4; c++)
            col[c][i] = args[4 * i + c];
    cf_map_input in[4];
    cf_map_options mo;
    cf_map_options_init(&mo);
    if (pr->kind == 3) {
        /* Eight maps of two calls, each of its own priority, all queued
         * before any is read. */
        enum { MAPS = PROD_N / 2 };
        cf_map_iter *its[MAPS] = {NULL};
        mo.chunksize = 2;
        for (int m = 0; m < MAPS; m++) {
            for (int c = 0; c < 4; c++)
                in[c] = cf_input_array(col[c] + 2 * m, 2);
            mo.priority = pr->priority + 3 * m;
            int rc = cf_map(pr->ex, t_once, in, 4, &mo, &its[m]);
            if (rc != CF_OK)
                batch_note(pr, "map", 2 * m, rc);
        }
        for (int m = 0; m < MAPS; m++) {
            for (int i = 2 * m; its[m] && i < 2 * m + 2; i++) {
                const cf_value *v = NULL;
                int rc = cf_map_next(its[m], &v, NULL);
                if (rc != CF_OK || v->as.i64 != (int64_t)i * i)
                    batch_note(pr, "map_next", i, rc);
            }
            cf_map_close(its[m]);
        }
        return;
    }
    for (int c = 0; c < 4; c++)
        in[c] = cf_input_array(col[c], PROD_N);
    mo.chunksize = pr->kind == 1 ? 5 : PROD_N;
    mo.priority = pr->priority;
    cf_map_iter *it = NULL;
    int rc = cf_map(pr->ex, t_once, in, 4, &mo, &it);
    if (rc != CF_OK) {
        batch_note(pr, "map", 0, rc);
        return;
    }
    for (int i = 0; i < PROD_N; i++) {
        const cf_value *v = NULL;
        rc = cf_map_next(it, &v, NULL);
        if (rc != CF_OK || v->as.i64 != (int64_t)i * i)
            batch_note(pr, "map_next", i, rc);
    }
    rc = cf_map_next(it, NULL, NULL);
    if (rc != CF_EDONE)
        batch_note(pr, "map end", PROD_N, rc);
    cf_map_close(it);
}

/* `nprod` producers at once, 200 rounds, on two workers, with a bound of
 * 3 on every other round; producer i of round r is of kind kind_of(i, r)
 * with the base priority prio_of(i, r).  Every call runs exactly once with
 * its own result, the queue never holds more than the bound, every slot
 * comes back, and the progress counts add up. */
static void producers_race(int nprod, int (*kind_of)(int, int), int (*prio_of)(int, int))
{
    enum { ROUNDS = 200 };
    _Atomic size_t most = 0;
    uint64_t calls = 0;
    cf_executor *bounded = tpool(2, BOUND), *free_ex = tpool(2, 0);
    for (int r = 0; r < ROUNDS; r++) {
        cf_executor *ex = r % 2 ? bounded : free_ex;
        batch_producer *pr = calloc((size_t)nprod, sizeof *pr);
        bg_thread *th = calloc((size_t)nprod, sizeof *th);
        assert_non_null(pr);
        assert_non_null(th);
        for (int i = 0; i < nprod; i++) {
            pr[i].ex = ex;
            pr[i].kind = kind_of(i, r);
            pr[i].priority = prio_of(i, r);
            pr[i].most = &most;
            bg_start(&th[i], produce_batches, &pr[i]);
        }
        for (int i = 0; i < nprod; i++)
            bg_join(&th[i], 2 * T_OK);
        for (int i = 0; i < nprod; i++) {
            if (pr[i].bad)
                fail_msg("round %d: %d unexpected outcomes, first: %s", r, pr[i].bad, pr[i].why);
            for (int k = 0; k < PROD_N; k++)
                if (atomic_load(&pr[i].runs[k]) != 1)
                    fail_msg("round %d, producer of kind %d: call %d ran %d times", r,
                             pr[i].kind, k, atomic_load(&pr[i].runs[k]));
        }
        calls += (uint64_t)nprod * PROD_N;
        free(pr);
        free(th);
    }
    assert_true(atomic_load(&most) <= BOUND);
    assert_int_equal(atomic_load(&bounded->bound.queued), 0);
    assert_int_equal(atomic_load(&bounded->bound.waiters), 0);
    assert_int_equal(assert_all_ended(bounded) + assert_all_ended(free_ex), calls);
    assert_ok(cf_executor_destroy(bounded));
    assert_ok(cf_executor_destroy(free_ex));
}

static int kind_mixed(int i, int r)
{
    return (i + r) % 3;
}

static int prio_few(int i, int r)
{
    return (r + i) % 4 == 0 ? CF_PRIORITY_DEFAULT : (r + i) % 4 - 2;
}

/* Three producers: batches of cf_submit_many() and chunked maps (chunks
 * of 5 and of all 16, so pieces cut to what the bound has room for) of a
 * few priorities. */
static void test_batch_producers_race_exactly_once(void **state)
{
    (void)state;
    producers_race(PRODUCERS, kind_mixed, prio_few);
}

static int kind_many_maps(int i, int r)
{
    (void)i;
    (void)r;
    return 3;
}

static int prio_spread(int i, int r)
{
    return (r * 5 + i * 17) % 40 - 20;
}

/* Four producers of eight small chunked maps each, every map of its own
 * priority (up to 32 at once, from a range that moves every round): more
 * priorities queued than the pool has lanes, so chunks go to lanes made,
 * retired and made again while the workers take calls, and to the heap. */
static void test_batch_chunks_of_many_priorities_race(void **state)
{
    (void)state;
    producers_race(4, kind_many_maps, prio_spread);
}

/* ---- batches: a chunk part-way in ---------------------------------------- */

typedef struct map_run {
    cf_executor *ex;
    cf_task_fn *fn;
    cf_map_input in[2];
    size_t ninputs;
    cf_map_options mo;
    int rc;
    cf_map_iter *it;
} map_run;

static void run_map(void *arg)
{
    map_run *m = arg;
    m->rc = cf_map(m->ex, m->fn, m->in, m->ninputs, &m->mo, &m->it);
}

/* A chunk that goes in as two pieces before the bound runs out for good:
 * the queue (max 3) holds one single call when the map starts, so its
 * first piece is 2 calls; cancelling the single call makes room for a
 * second piece of 1; then nothing frees a slot and the map's deadline
 * ends it with CF_EFULL.  Both pieces are cancelled call by call, give
 * their slots back, count as submitted and cancelled, and none of them
 * ever runs. */
static void test_batch_map_full_after_two_pieces(void **state)
{
    (void)state;
    enum { N = 8 };
    cf_executor *ex = tpool(1, 3);
    blocker b;
    blocker_init(&b);
    cf_future *hold = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &hold));
    assert_true(blocker_wait_started(&b, 1, T_OK));
    order_log log;
    order_init(&log);
    cf_future *single = NULL;
    assert_ok(cf_submit(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(1)), &single));
    assert_int_equal(atomic_load(&ex->bound.queued), 1);
    cf_value logs[N], ids[N];
    for (int i = 0; i < N; i++) {
        logs[i] = cf_ptr(&log);
        ids[i] = cf_i64(10 + i);
    }
    map_run m = {.ex = ex, .fn = t_record, .ninputs = 2};
    m.in[0] = cf_input_array(logs, N);
    m.in[1] = cf_input_array(ids, N);
    cf_map_options_init(&m.mo);
    m.mo.chunksize = N;
    m.mo.priority = 3;
    m.mo.timeout = 1.0 * cf_test_scale(); /* the wait below must fit in it */
    bg_thread th;
    bg_start(&th, run_map, &m);
    await_waiters(ex, 1); /* first piece in (2 calls), waiting for more */
    assert_int_equal(atomic_load(&ex->bound.queued), 3);
    assert_true(cf_future_cancel(single));
    await_queued(ex, 3); /* the slot went to a second piece */
    bg_join(&th, 3 * T_OK);
    assert_cf(CF_EFULL, m.rc);
    assert_null(m.it);
    assert_int_equal(atomic_load(&ex->bound.queued), 0);
    assert_int_equal(atomic_load(&ex->bound.waiters), 0);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.submitted, 1 + 1 + 2 + 1);
    assert_int_equal(p.cancelled, 1 + 2 + 1);
    assert_int_equal(p.running, 1);
    cf_future *after = NULL;
    assert_ok(cf_submit(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(99)), &after));
    blocker_release(&b);
    assert_ok(cf_future_result(after, T_OK * cf_test_scale(), NULL));
    assert_ok(cf_future_result(hold, T_OK * cf_test_scale(), NULL));
    const int want[] = {99};
    assert_order(log.ids, log.n, want, 1);
    cf_future_release(after);
    cf_future_release(hold);
    cf_future_release(single);
    assert_int_equal(assert_all_ended(ex), 2);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static _Atomic int race_ran, race_trigger;
static cf_test_event race_hit;

/* Counts its runs and sets race_hit at the race_trigger-th; returns x*x. */
static int t_count_square(cf_call *call)
{
    if (atomic_fetch_add(&race_ran, 1) + 1 == atomic_load(&race_trigger))
        cf_test_event_set(&race_hit);
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}

/* A chunked map racing shutdown, 200 rounds: shut down at once, after a
 * yield, or once some of its calls ran; with or without cancel_futures;
 * with or without a bound (then the map also waits for room, and the
 * close ends that wait).  The map either succeeds - every element then
 * has its own result, or was cancelled by cancel_futures - or fails with
 * CF_ESHUTDOWN having cancelled what it had handed over.  Either way every
 * call that was accepted ends, every slot comes back, and the calls that
 * ran are exactly the ones counted as succeeded. */
static void test_batch_map_races_shutdown(void **state)
{
    (void)state;
    enum { N = 24, ROUNDS = 200 };
    cf_value xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = cf_i64(i);
    int nok = 0, nshut = 0;
    for (int r = 0; r < ROUNDS; r++) {
        bool cancel = r % 4 >= 2;
        cf_executor *ex = tpool(2, r % 2 ? 3 : 0);
        atomic_store(&race_ran, 0);
        atomic_store(&race_trigger, 1 + r % 7);
        cf_test_event_init(&race_hit);
        map_run m = {.ex = ex, .fn = t_count_square, .ninputs = 1};
        m.in[0] = cf_input_array(xs, N);
        cf_map_options_init(&m.mo);
        m.mo.chunksize = r % 5 == 0 ? N : 3 + r % 5;
        m.mo.priority = r % 3 == 0 ? CF_PRIORITY_DEFAULT : r % 3;
        bg_thread th;
        bg_start(&th, run_map, &m);
        if (r % 3 == 1)
            assert_true(cf_test_event_wait(&race_hit, T_OK));
        else if (r % 3 == 2)
            sched_yield();
        assert_ok(cf_shutdown(ex, false, cancel));
        bg_join(&th, 2 * T_OK);
        if (m.rc == CF_OK) {
            nok++;
            for (int i = 0; i < N; i++) {
                const cf_value *v = NULL;
                int rc = cf_map_next(m.it, &v, NULL);
                if (rc == CF_ECANCELLED && cancel)
                    continue;
                if (rc != CF_OK)
                    fail_msg("round %d: element %d: %s", r, i, cf_err_name(rc));
                assert_int_equal(v->as.i64, (int64_t)i * i);
            }
            assert_cf(CF_EDONE, cf_map_next(m.it, NULL, NULL));
            cf_map_close(m.it);
        } else {
            if (m.rc != CF_ESHUTDOWN)
                fail_msg("round %d: map returned %s: %s", r, cf_err_name(m.rc),
                         cf_last_error_message());
            assert_null(m.it);
            nshut++;
        }
        assert_ok(cf_shutdown(ex, true, false));
        assert_int_equal(atomic_load(&ex->bound.queued), 0);
        assert_int_equal(atomic_load(&ex->bound.waiters), 0);
        assert_int_equal(assert_all_ended(ex), (uint64_t)atomic_load(&race_ran));
        assert_ok(cf_executor_destroy(ex));
        pthread_mutex_destroy(&race_hit.mu);
        pthread_cond_destroy(&race_hit.cv);
    }
    assert_int_equal(nok + nshut, ROUNDS);
    assert_true(nok > 0); /* rounds shut down after calls ran succeed */
}

static int fail_init(void *arg)
{
    (void)arg;
    return 7;
}

/* A chunked map on a pool whose initializer fails, 200 rounds: the pool
 * breaks under the map while its pieces go in (the first piece starts the
 * worker that breaks it).  The map either succeeds, every element then
 * failed with CF_EBROKEN, or fails with CF_EBROKEN itself (a piece refused,
 * or the wait for room ended by the close).  No call ever runs, every
 * slot comes back and every accepted call ends. */
static void test_batch_map_races_breakage(void **state)
{
    (void)state;
    enum { N = 24, ROUNDS = 200 };
    cf_value xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = cf_i64(i);
    cf_map_input in = cf_input_array(xs, N);
    cap_install(); /* the break is logged; keep stderr quiet */
    for (int r = 0; r < ROUNDS; r++) {
        cf_thread_pool_options o;
        cf_thread_pool_options_init(&o);
        o.max_workers = 2;
        o.max_queued = r % 2 ? 3 : 0;
        o.initializer = fail_init;
        cf_executor *ex = NULL;
        assert_ok(cf_thread_pool_new(&ex, &o));
        atomic_store(&race_ran, 0);
        atomic_store(&race_trigger, 0);
        cf_map_options mo;
        cf_map_options_init(&mo);
        mo.chunksize = r % 3 == 0 ? N : 2 + r % 5;
        mo.priority = r % 4 == 0 ? CF_PRIORITY_DEFAULT : r % 4;
        cf_map_iter *it = NULL;
        int rc = cf_map(ex, t_count_square, &in, 1, &mo, &it);
        if (rc == CF_OK) {
            for (int i = 0; i < N; i++)
                assert_cf(CF_EBROKEN, cf_map_next(it, NULL, NULL));
            assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
            cf_map_close(it);
        } else {
            if (rc != CF_EBROKEN)
                fail_msg("round %d: map returned %s: %s", r, cf_err_name(rc),
                         cf_last_error_message());
            assert_null(it);
        }
        assert_ok(cf_shutdown(ex, true, false));
        assert_int_equal(atomic_load(&race_ran), 0);
        assert_int_equal(atomic_load(&ex->bound.queued), 0);
        assert_int_equal(atomic_load(&ex->bound.waiters), 0);
        assert_int_equal(assert_all_ended(ex), 0);
        assert_ok(cf_executor_destroy(ex));
    }
    cap_restore();
}

/* ---- batches: the map's ring --------------------------------------------- */

/* Lazy maps of every buffersize up to 33 and chunksize up to 8 (and eager
 * ones): the ring of submitted futures wraps around and grows at many
 * different offsets, and every element still comes out in input order with
 * its own result. */
static void test_batch_map_ring_offsets(void **state)
{
    (void)state;
    enum { N = 40 };
    cf_executor *ex = tpool(2, 0);
    cf_value xs[N];
    for (int i = 0; i < N; i++)
        xs[i] = cf_i64(i);
    cf_map_input in = cf_input_array(xs, N);
    int maps = 0;
    for (size_t bs = 0; bs <= 33; bs++) {
        for (int cs = 1; cs <= 8; cs++) {
            cf_map_options mo;
            cf_map_options_init(&mo);
            mo.buffersize = bs;
            mo.chunksize = cs;
            cf_map_iter *it = NULL;
            assert_ok(cf_map(ex, t_square, &in, 1, &mo, &it));
            for (int i = 0; i < N; i++) {
                const cf_value *v = NULL;
                int rc = cf_map_next(it, &v, NULL);
                if (rc != CF_OK || v->as.i64 != (int64_t)i * i)
                    fail_msg("buffersize %zu, chunksize %d: element %d: %s, %lld", bs, cs, i,
                             cf_err_name(rc), rc == CF_OK ? (long long)v->as.i64 : -1LL);
            }
            assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
            cf_map_close(it);
            maps++;
        }
    }
    assert_int_equal(assert_all_ended(ex), (uint64_t)maps * N);
    assert_ok(cf_executor_destroy(ex));
}

static void test_bad_input(void **state)
{
    (void)state;
    cf_executor *ex = tpool(1, 0);
    cf_submit_options o;
    cf_submit_options_init(&o);
    assert_int_equal(o.priority, CF_PRIORITY_DEFAULT);
    assert_true(isinf(o.queue_timeout));
    cf_future *f = NULL;
    const int bad_prio[] = {CF_PRIORITY_MAX + 1, CF_PRIORITY_MIN - 1, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof bad_prio / sizeof bad_prio[0]; i++) {
        o.priority = bad_prio[i];
        assert_cf(CF_EINVAL, cf_submit_with(ex, &o, t_square, CF_ARGS(cf_i64(1)), &f));
        assert_null(f);
        assert_true(contains(cf_last_error_message(), "priority"));
    }
    o.priority = 0;
    const double bad_wait[] = {-1.0, NAN};
    for (size_t i = 0; i < 2; i++) {
        o.queue_timeout = bad_wait[i];
        assert_cf(CF_EINVAL, cf_submit_with(ex, &o, t_square, CF_ARGS(cf_i64(1)), &f));
        assert_null(f);
    }
    cf_value xs[2] = {cf_i64(1), cf_i64(2)};
    cf_map_input in = cf_input_array(xs, 2);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.priority = CF_PRIORITY_MAX + 1;
    cf_map_iter *it = NULL;
    assert_cf(CF_EINVAL, cf_map(ex, t_square, &in, 1, &mo, &it));
    assert_null(it);
    /* Nothing was queued by the failures; the pool still works. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(5))), 25);
    cf_submit_options_init(NULL); /* ignored */
    assert_ok(cf_executor_destroy(ex));
}

/* ---- process pools ------------------------------------------------------------ */

/* arg 0: path of the order file, arg 1: id.  Appends "<id>\n". */
static int p_record(cf_call *call)
{
    const char *path = cf_arg_str(call, 0);
    int64_t id = cf_arg_i64(call, 1);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return cf_raise(call, 1, "OSError", "open %s", path);
    char line[32];
    int n = snprintf(line, sizeof line, "%lld\n", (long long)id);
    ssize_t w = write(fd, line, (size_t)n);
    close(fd);
    if (w != n)
        return cf_raise(call, 1, "OSError", "write");
    return cf_return_i64(call, id);
}
CF_TASK(p_record);

/* arg 0: FIFO to say "started" on, arg 1: FIFO to wait on (10 s at most). */
static int p_gate(cf_call *call)
{
    int fd = open(cf_arg_str(call, 0), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t w = write(fd, "x", 1);
        (void)w;
        close(fd);
    }
    fd = open(cf_arg_str(call, 1), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cf_raise(call, 1, "OSError", "open gate");
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, 10000);
    close(fd);
    return r == 1 ? cf_return_none(call) : cf_raise(call, 99, "TimeoutError", "gate shut");
}
CF_TASK(p_gate);
CF_TASK(t_square);

typedef struct fifo {
    char path[96];
    int fd;
} fifo;

static void fifo_open(fifo *f, const char *what)
{
    snprintf(f->path, sizeof f->path, "/tmp/cf_test_prio_%d_%s", (int)getpid(), what);
    unlink(f->path);
    assert_int_equal(mkfifo(f->path, 0600), 0);
    f->fd = open(f->path, O_RDWR | O_NONBLOCK | O_CLOEXEC); /* never EOF */
    assert_true(f->fd >= 0);
}

static void fifo_close(fifo *f)
{
    close(f->fd);
    unlink(f->path);
}

/* A process pool of one worker, busy with a p_gate call.  With `timed`
 * the call has a timeout, and a worker running a timed call is sent
 * nothing ahead, so everything submitted meanwhile stays in the pool's
 * queue. */
typedef struct gated_pool {
    cf_executor *ex;
    fifo started, gate;
    cf_future *blk;
} gated_pool;

static void gated_start(gated_pool *g, size_t max_queued, bool timed)
{
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.max_queued = max_queued;
    assert_ok(cf_process_pool_new(&g->ex, &o));
    fifo_open(&g->started, "started");
    fifo_open(&g->gate, "gate");
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = timed ? 60 : CF_FOREVER;
    assert_ok(cf_submit_with(g->ex, &so, p_gate,
                             CF_ARGS(cf_str(g->started.path), cf_str(g->gate.path)), &g->blk));
    struct pollfd pfd = {g->started.fd, POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, (int)(T_OK * 1000 * cf_test_scale())), 1);
}

static void gated_open(gated_pool *g)
{
    ssize_t w = write(g->gate.fd, "x", 1);
    assert_int_equal(w, 1);
    assert_ok(cf_future_result(g->blk, T_OK * cf_test_scale(), NULL));
}

static void gated_end(gated_pool *g)
{
    cf_future_release(g->blk);
    assert_ok(cf_executor_destroy(g->ex));
    fifo_close(&g->started);
    fifo_close(&g->gate);
}

/* Reads the ids p_record wrote to `path` (and removes the file). */
static int read_order(const char *path, int *got, int max)
{
    FILE *in = fopen(path, "r");
    assert_non_null(in);
    int n = 0;
    while (n < max && fscanf(in, "%d", &got[n]) == 1)
        n++;
    fclose(in);
    unlink(path);
    return n;
}

/* A fresh order file's path for p_record, named after the test. */
static void order_file(char *path, size_t size, const char *what)
{
    snprintf(path, size, "/tmp/cf_test_prio_%d_%s", (int)getpid(), what);
    unlink(path);
}

static void test_process_priority_order(void **state)
{
    (void)state;
    gated_pool g;
    gated_start(&g, 0, true);
    char path[96];
    order_file(path, sizeof path, "order");
    cf_future *fs[NPRIO];
    for (int i = 0; i < NPRIO; i++)
        fs[i] = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(i)), PRIOS[i]);
    gated_open(&g);
    for (int i = 0; i < NPRIO; i++) {
        assert_ok(cf_future_result(fs[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(fs[i]);
    }
    int got[64];
    int n = read_order(path, got, 64);
    assert_order(got, n, WANT, NPRIO);
    gated_end(&g);
}

/* Sixty calls of eleven priorities in a scrambled order, behind a busy
 * worker: they run sorted by priority, FIFO among equals (the pool finds
 * where each goes by the last call of each priority queued). */
static void test_process_priority_many(void **state)
{
    (void)state;
    enum { K = 60 };
    gated_pool g;
    gated_start(&g, 0, true);
    char path[96];
    order_file(path, sizeof path, "many");
    cf_future *fs[K];
    int prio[K], want[K], n = 0;
    for (int i = 0; i < K; i++) {
        prio[i] = (i * 7) % 11 - 5;
        fs[i] = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(i)), prio[i]);
    }
    for (int p = 5; p >= -5; p--)
        for (int i = 0; i < K; i++)
            if (prio[i] == p)
                want[n++] = i;
    gated_open(&g);
    for (int i = 0; i < K; i++) {
        assert_ok(cf_future_result(fs[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(fs[i]);
    }
    int got[K];
    int ngot = read_order(path, got, K);
    assert_order(got, ngot, want, K);
    gated_end(&g);
}

/* The pending queue while the manager takes calls off it as they come:
 * calls of eight priorities (the default among them) with a timeout, so
 * the one worker is sent one at a time and each answer takes one call off
 * the queue, pushed in bursts that keep a few dozen queued, so the marks
 * of the priorities pending come and go between one push and the next;
 * and the queue empties (every priority gone) between rounds.  No call is
 * lost or run twice (each arrives in time, once, with its result), and a
 * burst queued behind a busy worker afterwards still runs sorted: what
 * the churn left of the marks misplaces nothing. */
static void test_process_priority_churn(void **state)
{
    (void)state;
    enum { ROUNDS = 3, BURST = 25, NBURSTS = 40, N = BURST * NBURSTS, AHEAD = 3, K = 40 };
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    cf_executor *ex = NULL;
    assert_ok(cf_process_pool_new(&ex, &o));
    char path[96];
    snprintf(path, sizeof path, "/tmp/cf_test_prio_%d_churn", (int)getpid());
    static cf_future *fs[N];
    unsigned seed = 12345;
    cf_submit_options so;
    cf_submit_options_init(&so);
    so.timeout = 60;
    for (int r = 0; r < ROUNDS; r++) {
        for (int b = 0; b < NBURSTS + AHEAD; b++) {
            for (int i = b * BURST; b < NBURSTS && i < (b + 1) * BURST; i++) {
                seed = seed * 1103515245u + 12345u;
                so.priority = (i & 1) ? (int)((seed >> 16) % 7) - 3 : CF_PRIORITY_DEFAULT;
                assert_ok(cf_submit_with(ex, &so, t_square, CF_ARGS(cf_i64(i)), &fs[i]));
            }
            /* The burst AHEAD before this one has had its turn at the
             * front often enough: collect it (whatever its priorities). */
            int old = b - AHEAD;
            for (int i = old * BURST; old >= 0 && i < (old + 1) * BURST; i++) {
                int64_t v = -1;
                assert_ok(cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &v));
                assert_int_equal(v, (int64_t)i * i);
                cf_future_release(fs[i]);
            }
        }

        /* Behind a busy worker (a timed call: nothing is sent ahead of
         * it), then let go: sorted by priority, FIFO among equals.  Fresh
         * FIFOs each round: p_gate leaves the byte that let it go. */
        fifo started, gate;
        fifo_open(&started, "churn_started");
        fifo_open(&gate, "churn_gate");
        so.priority = CF_PRIORITY_DEFAULT;
        cf_future *blk = NULL;
        assert_ok(cf_submit_with(ex, &so, p_gate, CF_ARGS(cf_str(started.path), cf_str(gate.path)),
                                 &blk));
        struct pollfd pfd = {started.fd, POLLIN, 0};
        assert_int_equal(poll(&pfd, 1, (int)(T_OK * 1000 * cf_test_scale())), 1);
        unlink(path);
        cf_future *ks[K];
        int prio[K], want[K], n = 0;
        for (int i = 0; i < K; i++) {
            seed = seed * 1103515245u + 12345u;
            prio[i] = (int)((seed >> 16) % 9) - 4;
            ks[i] = submit_prio(ex, p_record, CF_ARGS(cf_str(path), cf_i64(i)), prio[i]);
        }
        for (int q = 4; q >= -4; q--)
            for (int i = 0; i < K; i++)
                if (prio[i] == q)
                    want[n++] = i;
        assert_int_equal(write(gate.fd, "x", 1), 1);
        assert_ok(cf_future_result(blk, T_OK * cf_test_scale(), NULL));
        cf_future_release(blk);
        for (int i = 0; i < K; i++) {
            assert_ok(cf_future_result(ks[i], T_OK * cf_test_scale(), NULL));
            cf_future_release(ks[i]);
        }
        int got[K];
        int ngot = read_order(path, got, K);
        assert_order(got, ngot, want, K);
        fifo_close(&started);
        fifo_close(&gate);
    }
    assert_ok(cf_executor_destroy(ex));
}

/* A busy worker is normally sent up to 64 jobs ahead (run in the order
 * sent), but while a call of another priority than the default is queued
 * only if its last job was quick: this one's first job (the gate) is not
 * done, so nothing goes ahead and the later call of higher priority
 * overtakes every low one. */
static void test_process_prio_not_sent_ahead(void **state)
{
    (void)state;
    gated_pool g;
    gated_start(&g, 0, false);
    char path[96];
    order_file(path, sizeof path, "ahead");
    enum { NLOW = 10, HIGH = 100 };
    cf_future *low[NLOW];
    for (int i = 0; i < NLOW; i++)
        low[i] = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(i)), 1);
    sleep_ms(50); /* gives the manager the chance to send them all ahead (it must not) */
    cf_future *high = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(HIGH)), 5);
    gated_open(&g);
    for (int i = 0; i < NLOW; i++) {
        assert_ok(cf_future_result(low[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(low[i]);
    }
    assert_ok(cf_future_result(high, T_OK * cf_test_scale(), NULL));
    cf_future_release(high);
    int got[16];
    int n = read_order(path, got, 16);
    int want[NLOW + 1] = {HIGH};
    for (int i = 0; i < NLOW; i++)
        want[i + 1] = i;
    assert_order(got, n, want, NLOW + 1);
    gated_end(&g);
}

/* Jobs put back after their worker died go to the front of the queue
 * whatever their priority, so the queue is no longer sorted; a later call
 * must still queue behind the calls of its priority already there.
 * The blocker's worker has ten calls sent ahead (all of the default
 * priority, so up to 64 may go): y1, a gate, then y2..y10; then A
 * (priority 5) and B (0) queue: with priorities pending, nothing more goes
 * to a worker whose last job was slow (or that has run none).  The worker
 * is killed: y1..y10 go back to the front, y1 to the replacement (none
 * ahead of it), and y2..y10 wait at the front while y1 holds the worker:
 * [y2..y10 A B].  C (5) must go behind A. */
static void test_process_requeued_keep_fifo_among_equals(void **state)
{
    (void)state;
    gated_pool g;
    gated_start(&g, 16, false);
    fifo started2, gate2;
    fifo_open(&started2, "started2");
    fifo_open(&gate2, "gate2");
    char path[96];
    order_file(path, sizeof path, "requeue");
    cf_future *y1 = submit_prio(g.ex, p_gate, CF_ARGS(cf_str(started2.path), cf_str(gate2.path)),
                                0);
    enum { NY = 9 }; /* y2..y10 */
    cf_future *ys[NY];
    for (int i = 0; i < NY; i++)
        ys[i] = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(i)), 0);
    await_queued(g.ex, 0); /* all sent ahead: they gave back their queue slots */
    cf_future *a = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(20)), 5);
    cf_future *b = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(21)), 0);
    assert_int_equal(atomic_load(&g.ex->bound.queued), 2);
    assert_ok(cf_future_interrupt(g.blk));
    struct pollfd pfd = {started2.fd, POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, (int)(T_OK * 1000 * cf_test_scale())), 1);
    cf_future *c = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(22)), 5);
    ssize_t w = write(gate2.fd, "x", 1);
    assert_int_equal(w, 1);
    cf_future *all[] = {y1, a, b, c};
    for (size_t i = 0; i < 4; i++) {
        assert_ok(cf_future_result(all[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(all[i]);
    }
    for (int i = 0; i < NY; i++) {
        assert_ok(cf_future_result(ys[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(ys[i]);
    }
    int got[16];
    int n = read_order(path, got, 16);
    const int want[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 20, 22, 21};
    assert_order(got, n, want, NY + 3);
    assert_true(cf_future_cancelled(g.blk));
    gated_end(&g);
    fifo_close(&started2);
    fifo_close(&gate2);
}

/* Holds the thread that calls posix_spawn (a pool's manager replacing a
 * worker) until the test lets it go, T_OK at most. */
typedef struct spawn_hold {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, released;
} spawn_hold;

static void hold_spawn(void *arg)
{
    spawn_hold *h = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(T_OK * cf_test_scale());
    pthread_mutex_lock(&h->mu);
    h->entered = true;
    pthread_cond_broadcast(&h->cv);
    while (!h->released && pthread_cond_timedwait(&h->cv, &h->mu, &until) == 0)
        ;
    pthread_mutex_unlock(&h->mu);
}

/* Jobs put back at the front after their worker died stay ahead of a
 * later call of higher priority, also when every job pending then had
 * the default priority (the first call of another priority then sets up
 * the queue's marks).  y1..y9 (priority 0) are sent ahead to the only
 * worker, busy with a gated call; the gated call is interrupted, so the
 * worker is killed and y1..y9 go back to the front; the manager is held
 * in the replacement's spawn while C (priority 5) is queued.  C must run
 * after y1..y9. */
static void test_process_requeued_ahead_of_first_priority(void **state)
{
    (void)state;
    gated_pool g;
    gated_start(&g, 16, false);
    char path[96];
    order_file(path, sizeof path, "requeue_first");
    enum { NY = 9 };
    cf_future *ys[NY];
    for (int i = 0; i < NY; i++)
        ys[i] = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(i)), 0);
    await_queued(g.ex, 0); /* all sent ahead: they gave back their queue slots */
    spawn_hold h = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};
    cf_fault_set_spawn_hook(hold_spawn, &h);
    assert_ok(cf_future_interrupt(g.blk));
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(T_OK * cf_test_scale());
    pthread_mutex_lock(&h.mu);
    while (!h.entered && pthread_cond_timedwait(&h.cv, &h.mu, &until) == 0)
        ;
    bool entered = h.entered;
    pthread_mutex_unlock(&h.mu);
    assert_true(entered);
    /* y1..y9 are pending again, at the front (they hold no slots). */
    cf_future *c = submit_prio(g.ex, p_record, CF_ARGS(cf_str(path), cf_i64(22)), 5);
    pthread_mutex_lock(&h.mu);
    h.released = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    assert_ok(cf_future_result(c, T_OK * cf_test_scale(), NULL));
    cf_fault_set_spawn_hook(NULL, NULL);
    cf_future_release(c);
    for (int i = 0; i < NY; i++) {
        assert_ok(cf_future_result(ys[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(ys[i]);
    }
    int got[16];
    int n = read_order(path, got, 16);
    const int want[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 22};
    assert_order(got, n, want, NY + 1);
    assert_true(cf_future_cancelled(g.blk));
    gated_end(&g);
}

/* A lazy map on a process pool whose queue is full: the refill's chunk
 * (one job, its slots at once) finds no room before the map's timeout.
 * The map's counts must not keep that chunk as submitted: it never left
 * the map.  The blocker is timed, so nothing is sent ahead to its worker
 * and the first chunk holds both slots. */
static void test_process_lazy_map_full_refill_not_counted(void **state)
{
    (void)state;
    gated_pool g;
    gated_start(&g, 2, true);
    cf_value xs[6];
    for (int i = 0; i < 6; i++)
        xs[i] = cf_i64(i);
    cf_map_input in = cf_input_array(xs, 6);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 2;
    mo.buffersize = 2;
    mo.timeout = 0.2;
    cf_map_iter *it = NULL;
    assert_ok(cf_map(g.ex, t_square, &in, 1, &mo, &it));
    assert_int_equal(atomic_load(&g.ex->bound.queued), 2);
    /* The refill waits for room until the deadline; then the first
     * result is not there either. */
    assert_cf(CF_ETIMEDOUT, cf_map_next(it, NULL, NULL));
    cf_progress p;
    assert_ok(cf_map_progress(it, &p));
    assert_int_equal(p.submitted, 2);
    assert_int_equal(p.cancelled, 2);
    assert_int_equal(p.running, 0);
    assert_ok(cf_executor_progress(g.ex, &p));
    assert_int_equal(p.submitted, 3);
    cf_map_close(it);
    assert_int_equal(atomic_load(&g.ex->bound.queued), 0);
    gated_open(&g);
    gated_end(&g);
}

static void test_process_full_and_cancel(void **state)
{
    (void)state;
    gated_pool g;
    gated_start(&g, 2, true);
    int rc;
    cf_future *q1 = submit_wait(g.ex, 0, &rc);
    assert_ok(rc);
    cf_future *q2 = submit_wait(g.ex, 0, &rc);
    assert_ok(rc);
    cf_future *f = submit_wait(g.ex, 0, &rc);
    assert_cf(CF_EFULL, rc);
    assert_null(f);
    /* A map chunk (one job for a process pool) bigger than the bound
     * never fits. */
    cf_value xs[3] = {cf_i64(1), cf_i64(2), cf_i64(3)};
    cf_map_input in = cf_input_array(xs, 3);
    cf_map_options mo;
    cf_map_options_init(&mo);
    mo.chunksize = 3;
    cf_map_iter *it = NULL;
    assert_cf(CF_EFULL, cf_map(g.ex, t_square, &in, 1, &mo, &it));
    assert_null(it);
    /* A waiter, woken by a cancel. */
    waiter_arg w = {g.ex, -100, NULL};
    bg_thread t;
    bg_start(&t, wait_for_room, &w);
    await_waiters(g.ex, 1);
    assert_true(cf_future_cancel(q1));
    bg_join(&t, T_OK);
    assert_ok(w.rc);
    /* Another, woken as the worker takes calls. */
    waiter_arg w2 = {g.ex, -100, NULL};
    bg_start(&t, wait_for_room, &w2);
    await_waiters(g.ex, 1);
    gated_open(&g);
    bg_join(&t, T_OK);
    assert_ok(w2.rc);
    int64_t r;
    assert_ok(cf_future_result_i64(q2, T_OK * cf_test_scale(), &r));
    assert_ok(cf_future_result_i64(w.f, T_OK * cf_test_scale(), &r));
    assert_ok(cf_future_result_i64(w2.f, T_OK * cf_test_scale(), &r));
    assert_int_equal(r, 9);
    assert_int_equal(atomic_load(&g.ex->bound.queued), 0);
    cf_future_release(q1);
    cf_future_release(q2);
    cf_future_release(w.f);
    cf_future_release(w2.f);
    gated_end(&g);
}

static void test_process_waiter_woken_by_shutdown(void **state)
{
    (void)state;
    gated_pool g;
    gated_start(&g, 1, true);
    int rc;
    cf_future *q = submit_wait(g.ex, 0, &rc);
    assert_ok(rc);
    waiter_arg w = {g.ex, -100, NULL};
    bg_thread t;
    bg_start(&t, wait_for_room, &w);
    await_waiters(g.ex, 1);
    assert_ok(cf_shutdown(g.ex, false, false));
    bg_join(&t, T_OK);
    assert_cf(CF_ESHUTDOWN, w.rc);
    gated_open(&g);
    assert_ok(cf_future_result(q, T_OK * cf_test_scale(), NULL));
    cf_future_release(q);
    gated_end(&g);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_thread_priority_order),
    cmocka_unit_test(test_thread_priority_race),
    cmocka_unit_test(test_thread_map_priority),
    cmocka_unit_test(test_thread_more_priorities_than_lanes),
    cmocka_unit_test(test_thread_priority_lanes_race),
    cmocka_unit_test(test_thread_chunked_map_priority_order),
    cmocka_unit_test(test_thread_chunked_map_respects_bound),
    cmocka_unit_test(test_thread_chunked_map_full_part_way),
    cmocka_unit_test(test_thread_chunked_map_closed_part_way),
    cmocka_unit_test(test_full_returns_at_once),
    cmocka_unit_test(test_waiter_woken_by_take),
    cmocka_unit_test(test_waiter_woken_by_cancel),
    cmocka_unit_test(test_waiter_woken_by_shutdown),
    cmocka_unit_test(test_waiter_races_destroy),
    cmocka_unit_test(test_worker_does_not_wait),
    cmocka_unit_test(test_bound_race),
    cmocka_unit_test(test_eager_map_waits_for_room),
    cmocka_unit_test(test_batch_wakes_every_parked_worker),
    cmocka_unit_test(test_batch_chunk_without_lane_keeps_order),
    cmocka_unit_test(test_batch_producers_race_exactly_once),
    cmocka_unit_test(test_batch_chunks_of_many_priorities_race),
    cmocka_unit_test(test_batch_map_full_after_two_pieces),
    cmocka_unit_test(test_batch_map_races_shutdown),
    cmocka_unit_test(test_batch_map_races_breakage),
    cmocka_unit_test(test_batch_map_ring_offsets),
    cmocka_unit_test(test_bad_input),
    cmocka_unit_test(test_process_priority_order),
    cmocka_unit_test(test_process_priority_many),
    cmocka_unit_test(test_process_priority_churn),
    cmocka_unit_test(test_process_prio_not_sent_ahead),
    cmocka_unit_test(test_process_requeued_keep_fifo_among_equals),
    cmocka_unit_test(test_process_requeued_ahead_of_first_priority),
    cmocka_unit_test(test_process_lazy_map_full_refill_not_counted),
    cmocka_unit_test(test_process_full_and_cancel),
    cmocka_unit_test(test_process_waiter_woken_by_shutdown),
};

CF_TEST_MAIN(tests)
