/* SPDX-License-Identifier: MIT */
/*
 * test_fault_batches.c - a chunked map on a thread pool whose priority
 * finds no lane, so its chunk goes to the pool's heap, when the heap
 * cannot grow (fault injection, fault/cf_fault.h): the piece that needs
 * the room is refused whole with CF_ENOMEM, the piece handed over before
 * it is cancelled call by call, every slot and count is put right, the
 * calls queued before keep their order, and the pool works on.
 */
#include "cf_test_util.h"
#include "cf_fault.h"

#define T_OK 10.0

#include "cf_test_prio.h" /* uses T_OK */

typedef struct map_run {
    cf_executor *ex;
    cf_map_input in[2];
    cf_map_options mo;
    int rc;
    char msg[256];
    cf_map_iter *it;
} map_run;

static void run_map(void *arg)
{
    map_run *m = arg;
    m->rc = cf_map(m->ex, t_record, m->in, 2, &m->mo, &m->it);
    snprintf(m->msg, sizeof m->msg, "%s", cf_last_error_message());
}

/* The only worker is held; 14 priorities queued singly fill every lane
 * but the default's, and 60 calls of priority 50 wait in the heap (room
 * for 64).  The bound leaves room for 4 more, so a chunk of 8 of priority
 * 50 goes in as a piece of 4 (the heap is then full) and waits for room.
 * A queued call is cancelled; its slot lets a piece of 1 in, for which
 * the heap must grow, and that allocation fails.  (Built on the pool's 15
 * lanes, the default's included, and its heap's first room for 64.) */
static void test_fault_chunk_heap_enomem_part_way(void **state)
{
    (void)state;
    enum { LANES = 14, HEAP = 60, FREE = 4, N = 8 };
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 1;
    o.max_queued = LANES + HEAP + FREE;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    blocker b;
    blocker_init(&b);
    cf_future *hold = NULL;
    assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &hold));
    assert_true(blocker_wait_started(&b, 1, T_OK));
    order_log log;
    order_init(&log);
    cf_future *fs[LANES + HEAP];
    for (int i = 0; i < LANES; i++)
        fs[i] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(100 + i)), 100 + i);
    for (int i = 0; i < HEAP; i++)
        fs[LANES + i] = submit_prio(ex, t_record, CF_ARGS(cf_ptr(&log), cf_i64(i)), 50);
    assert_int_equal(atomic_load(&ex->bound.queued), LANES + HEAP);

    cf_value logs[N], ids[N];
    for (int i = 0; i < N; i++) {
        logs[i] = cf_ptr(&log);
        ids[i] = cf_i64(1000 + i);
    }
    map_run m = {.ex = ex};
    m.in[0] = cf_input_array(logs, N);
    m.in[1] = cf_input_array(ids, N);
    cf_map_options_init(&m.mo);
    m.mo.chunksize = N;
    m.mo.priority = 50;
    bg_thread th;
    bg_start(&th, run_map, &m);
    await_waiters(ex, 1); /* the piece of 4 is in; the map waits for room */
    assert_int_equal(atomic_load(&ex->bound.queued), LANES + HEAP + FREE);
    /* Nothing else allocates now: the one worker is held, the test thread
     * only waits, so the next realloc is the heap's. */
    cf_fault_arm(CF_FAULT_REALLOC, 1, true);
    assert_true(cf_future_cancel(fs[LANES])); /* call 0: room for one */
    bg_join(&th, T_OK);
    long failed = cf_fault_failed();
    cf_fault_disarm();
    if (failed != 1)
        fail_msg("%ld allocations failed, expected the heap's one: the scenario is built on "
                 "the thread pool's 15 lanes and its heap's first room for 64 calls "
                 "(thread_pool.c); map: %s",
                 failed, m.msg);
    assert_cf(CF_ENOMEM, m.rc);
    if (!contains(m.msg, "priority queue"))
        fail_msg("map failed elsewhere: %s", m.msg);
    assert_null(m.it);
    /* The piece of 4 cancelled, the one refused never queued: only the
     * calls queued before hold slots. */
    assert_int_equal(atomic_load(&ex->bound.queued), LANES + HEAP - 1);
    assert_int_equal(atomic_load(&ex->bound.waiters), 0);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.submitted, 1 + LANES + HEAP + FREE);
    assert_int_equal(p.cancelled, 1 + FREE);
    assert_int_equal(p.running, 1);

    /* The pool works on: a chunk of the same priority (that fits in the
     * room left) now grows the heap, and queues behind the older calls of
     * its priority. */
    enum { N2 = FREE };
    for (int i = 0; i < N2; i++)
        ids[i] = cf_i64(2000 + i);
    m.in[0] = cf_input_array(logs, N2);
    m.in[1] = cf_input_array(ids, N2);
    cf_map_iter *it = NULL;
    assert_ok(cf_map(ex, t_record, m.in, 2, &m.mo, &it));
    blocker_release(&b);
    for (int i = 0; i < N2; i++) {
        const cf_value *v = NULL;
        assert_ok(cf_map_next(it, &v, NULL));
        assert_int_equal(v->as.i64, 2000 + i);
    }
    assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
    cf_map_close(it);
    for (int i = 0; i < LANES + HEAP; i++) {
        if (i != LANES)
            assert_ok(cf_future_result(fs[i], T_OK * cf_test_scale(), NULL));
        cf_future_release(fs[i]);
    }
    assert_ok(cf_future_result(hold, T_OK * cf_test_scale(), NULL));
    cf_future_release(hold);
    /* Highest first, FIFO among equals; nothing of the failed map. */
    int want[LANES + HEAP + N], n = 0;
    for (int i = LANES - 1; i >= 0; i--)
        want[n++] = 100 + i;
    for (int i = 1; i < HEAP; i++)
        want[n++] = i;
    for (int i = 0; i < N2; i++)
        want[n++] = 2000 + i;
    assert_int_equal(log.n, n);
    for (int i = 0; i < n; i++)
        if (log.ids[i] != want[i])
            fail_msg("call %d of the run order is %d, expected %d", i, log.ids[i], want[i]);
    assert_int_equal(atomic_load(&ex->bound.queued), 0);
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.succeeded, 1 + LANES + HEAP - 1 + N2);
    assert_int_equal(p.submitted, p.succeeded + p.cancelled);
    assert_ok(cf_executor_destroy(ex));
    blocker_destroy(&b);
}

static _Atomic int ran;

static int t_len(cf_call *call)
{
    atomic_fetch_add(&ran, 1);
    return cf_return_i64(call, (int64_t)strlen(cf_arg_str(call, 0)));
}

/* cf_submit_many() of 1000 calls on a bounded pool, whose 700th call's
 * memory cannot be had (strings of 100 bytes: every call's future is a
 * malloc of its own): the batch is refused whole with CF_ENOMEM before
 * any call is handed over - no call runs, every out[] is NULL, no slot
 * or count is left taken - and the next batch, which fills the bound,
 * goes in and runs. */
static void test_fault_submit_many_enomem_part_way(void **state)
{
    (void)state;
    enum { N = 1000, FAIL_AT = 700 };
    static char text[101];
    memset(text, 'x', 100);
    static cf_value args[N];
    static cf_future *fs[N];
    for (int i = 0; i < N; i++)
        args[i] = cf_str(text);
    cf_thread_pool_options o;
    cf_thread_pool_options_init(&o);
    o.max_workers = 2;
    o.max_queued = N;
    cf_executor *ex = NULL;
    assert_ok(cf_thread_pool_new(&ex, &o));
    /* One call first: the pool's first thread is started (which allocates). */
    assert_int_equal(run_i64(ex, t_len, CF_ARGS(cf_str("ab"))), 2);
    atomic_store(&ran, 0);
    for (int i = 0; i < N; i++)
        fs[i] = (cf_future *)args; /* overwritten */
    cf_fault_arm(CF_FAULT_MALLOC, FAIL_AT, false);
    int rc = cf_submit_many(ex, t_len, args, 1, N, fs);
    long failed = cf_fault_failed();
    cf_fault_disarm();
    assert_int_equal(failed, 1);
    assert_cf(CF_ENOMEM, rc);
    assert_true(contains(cf_last_error_message(), "submit_many"));
    for (int i = 0; i < N; i++)
        assert_null(fs[i]);
    assert_int_equal(atomic_load(&ex->bound.queued), 0);
    cf_progress p;
    assert_ok(cf_executor_progress(ex, &p));
    assert_int_equal(p.submitted, 1);
    assert_int_equal(atomic_load(&ran), 0);

    assert_ok(cf_submit_many(ex, t_len, args, 1, N, fs));
    for (int i = 0; i < N; i++) {
        int64_t v = -1;
        assert_ok(cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &v));
        assert_int_equal(v, 100);
        cf_future_release(fs[i]);
    }
    assert_int_equal(atomic_load(&ran), N);
    assert_ok(cf_executor_destroy(ex));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fault_chunk_heap_enomem_part_way),
    cmocka_unit_test(test_fault_submit_many_enomem_part_way),
};

CF_TEST_MAIN(tests)
