/*
 * test_compose.c - user data on futures, continuations and combinators.
 */
#include "cf_test_util.h"

/* ---- user data ---------------------------------------------------------- */

static void test_data_set_get(void **state)
{
    (void)state;
    cf_future *f;
    assert_ok(cf_future_new(&f));
    assert_null(cf_future_data(f));
    int x = 7, y = 8;
    assert_ok(cf_future_set_data(f, &x));
    assert_ptr_equal(cf_future_data(f), &x);
    assert_ok(cf_future_set_data(f, &y));
    assert_ptr_equal(cf_future_data(f), &y);
    /* Completion does not touch it. */
    cf_value v = cf_i64(1);
    assert_ok(cf_future_set_result(f, &v));
    assert_ptr_equal(cf_future_data(f), &y);
    assert_ok(cf_future_set_data(f, NULL));
    assert_null(cf_future_data(f));
    assert_ok(cf_future_release(f));
}

static void test_data_bad_input(void **state)
{
    (void)state;
    assert_cf(CF_EINVAL, cf_future_set_data(NULL, &state));
    assert_true(contains(cf_last_error_message(), "NULL"));
    assert_null(cf_future_data(NULL));
}

typedef struct data_seen {
    cf_test_event done;
    void *seen;
} data_seen;

static int cb_read_data(cf_future *f, void *arg)
{
    data_seen *d = arg;
    d->seen = cf_future_data(f);
    cf_test_event_set(&d->done);
    return 0;
}

/* A pointer set on the submitting thread is what a done-callback on the
 * worker thread reads, and the memory behind it is visible there. */
static void test_data_seen_by_worker_callback(void **state)
{
    (void)state;
    cf_executor *ex = pool_new(2);
    for (int round = 0; round < 200; round++) {
        blocker b;
        blocker_init(&b);
        cf_future *f;
        assert_ok(cf_submit(ex, t_block, CF_ARGS(cf_ptr(&b)), &f));
        int *payload = malloc(sizeof *payload);
        assert_non_null(payload);
        *payload = round;
        assert_ok(cf_future_set_data(f, payload));
        data_seen d = {CF_TEST_EVENT_INIT, NULL};
        assert_ok(cf_future_add_done_callback(f, cb_read_data, &d));
        blocker_release(&b);
        assert_true(cf_test_event_wait(&d.done, 10));
        assert_ptr_equal(d.seen, payload);
        assert_int_equal(*(int *)d.seen, round);
        free(payload);
        assert_ok(cf_future_release(f));
        blocker_destroy(&b);
    }
    assert_ok(cf_executor_destroy(ex));
}


static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_data_set_get),
    cmocka_unit_test(test_data_bad_input),
    cmocka_unit_test(test_data_seen_by_worker_callback),
};

CF_TEST_MAIN(tests)
