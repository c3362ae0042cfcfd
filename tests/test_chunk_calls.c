/* SPDX-License-Identifier: MIT */
/*
 * test_chunk_calls.c - the per-call shortcuts of a process pool's map
 * chunk and of completion, under stress:
 * - a worker runs a chunk's calls one after another in one reused future:
 *   nothing of one call (result bytes, failure, arguments, the stop flag)
 *   shows in the next, across every pair of outcome kinds, within a frame
 *   and from one frame to the next;
 * - cancel() races a worker's claim, call by call and inside map chunks:
 *   exactly one wins, cancelled() agrees with the code the future reports,
 *   a cancelled call never ran, an honest worker is never judged to have
 *   sent a bad frame (the answer check reads a run call's state without
 *   its lock);
 * - a worker that puts back the claim word of a call the parent cancelled
 *   and runs it anyway only loses that call's answer;
 * - a future completed without done-callbacks takes no extra reference:
 *   the waiter's or a callback's release racing the completing thread
 *   never frees it under that thread.
 *
 * Tasks run in other processes, so they never use cmocka asserts: they
 * report through their result or failure, or through memory shared with
 * the parent (fork start only).
 */
#include "cf_test_util.h"
#include "internal.h" /* cf__test_hook_claim_cancelled */

#include <inttypes.h>
#include <sys/mman.h>

/* A generous bound for things that must happen (scaled by callers). */
#define T_OK 10.0

/* ---- tasks ------------------------------------------------------------------ */

CF_TASK(t_square);

/* What a chunk call does (arg 0), so that every kind of outcome follows
 * every other in one reused future; arg 1 is the call's number. */
enum {
    M_NOTHING,        /* returns 0 without setting a result: None */
    M_RAISE,          /* raises code 7 "E<k>" */
    M_REF_BYTES,      /* 20 KiB of byte k: the frame refers to it */
    M_SMALL_STR,      /* "s<k>", inline */
    M_HEAP_BYTES,     /* 100 bytes of k: heap, copied into the frame */
    M_ARGS,           /* i64: nargs * 1000 + stop flag * 100 + (arg past the end is NULL) */
    M_SET_THEN_RAISE, /* a result, then a failure: the failure wins */
    M_SET_THEN_NONE,  /* heap bytes, then None: None */
    M_RC_ONLY,        /* returns 5 without raising: TaskError 5 */
    M_BIG,            /* 1 MiB + 3 bytes of k: the worker's shared memory */
    M_COUNT
};

#define REF_SIZE  ((size_t)20 * 1024)
#define HEAP_SIZE 100
#define BIG_SIZE  (((size_t)1 << 20) + 3)

static int c_mode(cf_call *call)
{
    int64_t mode = cf_arg_i64(call, 0);
    int64_t k = cf_arg_i64(call, 1);
    unsigned char fill = (unsigned char)(k & 0xff);
    switch (mode) {
    case M_NOTHING:
        return 0;
    case M_RAISE:
        return cf_raise(call, 7, "E", "E%" PRId64, k);
    case M_REF_BYTES:
    case M_HEAP_BYTES:
    case M_BIG: {
        size_t n = mode == M_REF_BYTES ? REF_SIZE : mode == M_HEAP_BYTES ? HEAP_SIZE : BIG_SIZE;
        unsigned char *b = malloc(n);
        if (!b)
            return cf_raise(call, 1, "MemoryError", "task");
        memset(b, fill, n);
        int rc = cf_return_bytes(call, b, n);
        free(b);
        return rc;
    }
    case M_SMALL_STR: {
        char s[32];
        snprintf(s, sizeof s, "s%" PRId64, k);
        return cf_return_str(call, s);
    }
    case M_ARGS: {
        size_t n = cf_arg_count(call);
        int64_t r = (int64_t)n * 1000 + (cf_cancel_requested(call) ? 100 : 0) +
                    (cf_arg(call, n) == NULL ? 1 : 0);
        return cf_return_i64(call, r);
    }
    case M_SET_THEN_RAISE: {
        unsigned char b[HEAP_SIZE];
        memset(b, fill, sizeof b);
        cf_return_bytes(call, b, sizeof b);
        return cf_raise(call, 8, "F", "F%" PRId64, k);
    }
    case M_SET_THEN_NONE: {
        unsigned char b[HEAP_SIZE];
        memset(b, fill, sizeof b);
        cf_return_bytes(call, b, sizeof b);
        return cf_return_none(call);
    }
    case M_RC_ONLY:
        return 5;
    default:
        return cf_raise(call, 99, "BadMode", "mode %" PRId64, mode);
    }
}
CF_TASK(c_mode);

/* Like c_mode's M_ARGS with one or three arguments (arg 0 ignored). */
static int c_args(cf_call *call)
{
    size_t n = cf_arg_count(call);
    return cf_return_i64(call, (int64_t)n * 1000 + (cf_cancel_requested(call) ? 100 : 0) +
                                   (cf_arg(call, n) == NULL ? 1 : 0));
}
CF_TASK(c_args);

/* Counters shared with fork-started workers: how often call k ran. */
#define MARKS 16384
static _Atomic int *marks;

/* Counts a run of call arg 0 and returns it. */
static int c_mark(cf_call *call)
{
    int64_t k = cf_arg_i64(call, 0);
    if (!marks || k < 0 || k >= MARKS)
        return cf_raise(call, 1, "SetupError", "no marks for %" PRId64, k);
    atomic_fetch_add(&marks[k], 1);
    return cf_return_i64(call, k);
}
CF_TASK(c_mark);

/* Finds this worker's claim words (the parent's memfd, mapped by the
 * worker) in /proc/self/maps; NULL if not found. */
static _Atomic uint32_t *find_claim_words(void)
{
    FILE *m = fopen("/proc/self/maps", "re");
    if (!m)
        return NULL;
    char line[512];
    unsigned long lo = 0;
    bool found = false;
    while (!found && fgets(line, sizeof line, m))
        found = strstr(line, "cfutures-claims") && sscanf(line, "%lx-", &lo) == 1;
    fclose(m);
    return found ? (_Atomic uint32_t *)(uintptr_t)lo : NULL;
}

/* A misbehaving worker, from inside: waits (at most 5 s) until the parent
 * has cancelled the call on claim word arg 0, puts that word back to
 * PENDING, and returns 1 (0 if the cancel never came, -1 without words).
 * The worker then claims and runs that cancelled call. */
static int c_unclaim(cf_call *call)
{
    int64_t k = cf_arg_i64(call, 0);
    _Atomic uint32_t *words = find_claim_words();
    if (!words)
        return cf_return_i64(call, -1);
    double end = cf_test_now() + 5.0;
    while (cf_test_now() < end) {
        uint32_t want = CF__CLAIM_CANCELLED;
        if (atomic_compare_exchange_strong(&words[k], &want, CF__CLAIM_PENDING))
            return cf_return_i64(call, 1);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return cf_return_i64(call, 0);
}
CF_TASK(c_unclaim);

/* ---- helpers ------------------------------------------------------------------ */

/* Checks the outcome of c_mode(mode, k) as cf_map_next() gave it. */
static void expect_mode(int rc, const cf_value *v, const cf_failure *fl, int64_t mode, int64_t k)
{
    unsigned char fill = (unsigned char)(k & 0xff);
    char want[32];
    switch (mode) {
    case M_RAISE:
    case M_SET_THEN_RAISE:
        if (rc != CF_ETASK || !fl)
            fail_msg("call %" PRId64 " (mode %" PRId64 "): %s, expected a failure", k, mode,
                     cf_err_name(rc));
        snprintf(want, sizeof want, "%s%" PRId64, mode == M_RAISE ? "E" : "F", k);
        assert_int_equal(cf_failure_code(fl), mode == M_RAISE ? 7 : 8);
        assert_string_equal(cf_failure_message(fl), want);
        return;
    case M_RC_ONLY:
        if (rc != CF_ETASK || !fl)
            fail_msg("call %" PRId64 " (mode %" PRId64 "): %s, expected a failure", k, mode,
                     cf_err_name(rc));
        assert_int_equal(cf_failure_code(fl), 5);
        assert_string_equal(cf_failure_type(fl), "TaskError");
        return;
    default:
        break;
    }
    if (rc != CF_OK)
        fail_msg("call %" PRId64 " (mode %" PRId64 "): %s (%s)", k, mode, cf_err_name(rc),
                 fl ? cf_failure_message(fl) : "no failure record");
    assert_non_null(v);
    switch (mode) {
    case M_NOTHING:
    case M_SET_THEN_NONE:
        if (v->kind != CF_NONE)
            fail_msg("call %" PRId64 " (mode %" PRId64 "): kind %d, expected None", k, mode,
                     (int)v->kind);
        return;
    case M_SMALL_STR:
        snprintf(want, sizeof want, "s%" PRId64, k);
        assert_int_equal(v->kind, CF_STR);
        assert_string_equal(v->as.str, want);
        return;
    case M_ARGS:
        assert_int_equal(v->kind, CF_I64);
        assert_int_equal(v->as.i64, 2001);
        return;
    default: {
        size_t n = mode == M_REF_BYTES ? REF_SIZE : mode == M_HEAP_BYTES ? HEAP_SIZE : BIG_SIZE;
        assert_int_equal(v->kind, CF_BYTES);
        assert_int_equal(v->size, n);
        static unsigned char *ref; /* BIG_SIZE bytes of ref_fill */
        static int ref_fill = -1;
        if (!ref)
            ref = malloc(BIG_SIZE);
        assert_non_null(ref);
        if (ref_fill != fill) {
            memset(ref, fill, BIG_SIZE);
            ref_fill = fill;
        }
        if (memcmp(v->as.bytes, ref, n) != 0)
            fail_msg("call %" PRId64 " (mode %" PRId64 "): bytes other than %u", k, mode, fill);
        return;
    }
    }
}

/* True once the pool has sent `f` to a worker (it may not have begun). */
static bool sent_to_worker(cf_future *f)
{
    cf__lock_acquire(&f->lock);
    bool sent = f->claimable && f->claim != NULL;
    cf__lock_release(&f->lock);
    return sent || cf_future_running(f) || cf_future_done(f);
}

/* ---- one reused future per chunk ---------------------------------------------- */

/* Every ordered pair of outcome kinds follows one another in a chunk (one
 * frame, and split over frames of 7 and 1 calls), on one worker, so the
 * reused future carries each kind into each other: every call reports
 * exactly its own outcome. */
static void test_chunk_calls_keep_nothing_of_the_previous(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    enum { N = 2 * M_COUNT * M_COUNT + 1 };
    cf_value modes[N], ks[N];
    size_t n = 0;
    for (int a = 0; a < M_COUNT; a++)
        for (int b = 0; b < M_COUNT; b++) {
            modes[n] = cf_i64(a);
            ks[n] = cf_i64((int64_t)n);
            n++;
            modes[n] = cf_i64(b);
            ks[n] = cf_i64((int64_t)n);
            n++;
        }
    modes[n] = cf_i64(M_NOTHING);
    ks[n] = cf_i64((int64_t)n);
    n++;
    static const int chunks[] = {N, 7, 1};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        cf_map_options o;
        cf_map_options_init(&o);
        o.chunksize = chunks[c];
        o.timeout = 60.0 * cf_test_scale();
        cf_map_input in[2] = {cf_input_array(modes, n), cf_input_array(ks, n)};
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, c_mode, in, 2, &o, &it));
        for (size_t i = 0; i < n; i++) {
            const cf_value *v = NULL;
            const cf_failure *fl = NULL;
            int rc = cf_map_next(it, &v, &fl);
            expect_mode(rc, v, fl, modes[i].as.i64, (int64_t)i);
        }
        assert_cf(CF_EDONE, cf_map_next(it, NULL, NULL));
        cf_map_close(it);
    }
    assert_ok(cf_executor_destroy(ex));
    assert_no_children();
}

/* Chunks of three-argument calls, then of one-argument calls, on the same
 * worker (its reused future had room for three): a call sees its own
 * argument count and nothing past it. */
static void test_chunk_calls_see_only_their_arguments(void **state)
{
    (void)state;
    cf_executor *ex = ppool(1, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    enum { N = 40 };
    cf_value a[N], b[N], c[N];
    for (int i = 0; i < N; i++) {
        a[i] = cf_i64(i);
        b[i] = cf_str("second argument");
        c[i] = cf_f64(i * 0.5);
    }
    for (int round = 0; round < 6; round++) {
        size_t nin = round % 2 == 0 ? 3 : 1;
        cf_map_input in[3] = {cf_input_array(a, N), cf_input_array(b, N), cf_input_array(c, N)};
        cf_map_options o;
        cf_map_options_init(&o);
        o.chunksize = round < 2 ? N : 5;
        o.timeout = 30.0 * cf_test_scale();
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, c_args, in, nin, &o, &it));
        for (int i = 0; i < N; i++) {
            const cf_value *v = NULL;
            assert_ok(cf_map_next(it, &v, NULL));
            assert_int_equal(v->kind, CF_I64);
            assert_int_equal(v->as.i64, (int64_t)nin * 1000 + 1);
        }
        cf_map_close(it);
    }
    assert_ok(cf_executor_destroy(ex));
    assert_no_children();
}

/* ---- cancel racing the claim ---------------------------------------------------- */

static _Atomic int *marks_new(void)
{
    void *p =
        mmap(NULL, MARKS * sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

/* Spins about `n` rounds: a varying head start for the workers. */
static void spin(unsigned n)
{
    for (volatile unsigned i = 0; i < n; i++) {
    }
}

/* 300 rounds: a batch of calls goes to two busy workers, and cancel()
 * runs over all of them (last first) while the workers claim them.  Each
 * call is either cancelled - cancel() said so, cancelled() says so, its
 * code is CF_ECANCELLED, and it never ran - or it ran once and carries its
 * own result.  A worker that skipped exactly what we cancelled is never
 * taken for a bad one: the pool (which breaks on a crash) keeps working. */
static void test_cancel_races_claim_call_by_call(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE("fork start shares the counters");
    marks = marks_new();
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_FORK);
    enum { ROUNDS = 300, N = 24 };
    int cancelled_total = 0, ran_total = 0;
    for (int round = 0; round < ROUNDS; round++) {
        cf_value args[N];
        for (int i = 0; i < N; i++)
            args[i] = cf_i64((int64_t)(round * N + i) % MARKS);
        cf_future *fs[N];
        assert_ok(cf_submit_many(ex, c_mark, args, 1, N, fs));
        /* The workers are at the batch: the cancels meet their claims. */
        double end = cf_test_now() + T_OK * cf_test_scale();
        while (!cf_future_running(fs[0]) && !cf_future_done(fs[0]) && cf_test_now() < end) {
        }
        spin((unsigned)(round % 32) * 2000u);
        bool said[N];
        for (int i = N - 1; i >= 0; i--)
            said[i] = cf_future_cancel(fs[i]);
        for (int i = 0; i < N; i++) {
            int64_t k = args[i].as.i64;
            int64_t r = -1;
            int rc = cf_future_result_i64(fs[i], T_OK * cf_test_scale(), &r);
            bool c = cf_future_cancelled(fs[i]);
            if (said[i] != c || (rc == CF_ECANCELLED) != c)
                fail_msg("round %d call %d: cancel() said %d, cancelled() %d, result %s", round, i,
                         said[i], c, cf_err_name(rc));
            if (c) {
                assert_int_equal(atomic_load(&marks[k]), 0);
                cancelled_total++;
            } else {
                assert_ok(rc);
                assert_int_equal(r, k);
                assert_int_equal(atomic_load(&marks[k]), 1);
                ran_total++;
            }
            assert_ok(cf_future_release(fs[i]));
        }
    }
    /* Both sides of the race were seen. */
    print_message("cancelled %d, ran %d\n", cancelled_total, ran_total);
    assert_true(cancelled_total > 0);
    assert_true(ran_total > 0);
    /* A call cancelled is never run later by a worker catching up. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(6))), 36);
    for (int k = 0; k < ROUNDS * N && k < MARKS; k++)
        assert_true(atomic_load(&marks[k]) <= 1);
    assert_ok(cf_executor_destroy(ex));
    assert_no_children();
    munmap((void *)marks, MARKS * sizeof(int));
    marks = NULL;
}

/* 200 rounds of map chunks closed early while their worker goes through
 * them call by call: no call runs twice, the calls read before the close
 * are right, and the pool never takes an honest worker for a bad one. */
static void test_cancel_races_claim_in_chunks(void **state)
{
    (void)state;
    CF_SKIP_IF_PORTABLE("fork start shares the counters");
    marks = marks_new();
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_FORK);
    enum { ROUNDS = 200, N = 64 };
    for (int round = 0; round < ROUNDS; round++) {
        cf_value in[N];
        for (int i = 0; i < N; i++)
            in[i] = cf_i64((int64_t)(round * N + i) % MARKS);
        cf_map_options o;
        cf_map_options_init(&o);
        o.chunksize = 8 + round % 9;
        o.timeout = T_OK * cf_test_scale();
        cf_map_input mi = cf_input_array(in, N);
        cf_map_iter *it = NULL;
        assert_ok(cf_map(ex, c_mark, &mi, 1, &o, &it));
        int read = round % 5 == 0 ? N : round % 7;
        for (int i = 0; i < read; i++) {
            const cf_value *v = NULL;
            const cf_failure *fl = NULL;
            int rc = cf_map_next(it, &v, &fl);
            if (rc != CF_OK)
                fail_msg("round %d call %d: %s (%s)", round, i, cf_err_name(rc),
                         fl ? cf_failure_message(fl) : cf_last_error_message());
            assert_int_equal(v->as.i64, in[i].as.i64);
        }
        spin((unsigned)(round % 11) * 3000u);
        cf_map_close(it);
    }
    /* Every chunk has been answered or skipped once the pool is idle. */
    assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(7))), 49);
    assert_ok(cf_shutdown(ex, true, false));
    for (int k = 0; k < ROUNDS * N && k < MARKS; k++)
        if (atomic_load(&marks[k]) > 1)
            fail_msg("call %d ran %d times", k, atomic_load(&marks[k]));
    for (int round = 0; round < ROUNDS; round += 5)
        for (int i = 0; i < N; i++)
            assert_int_equal(atomic_load(&marks[(round * N + i) % MARKS]), 1);
    assert_ok(cf_executor_destroy(ex));
    assert_no_children();
    munmap((void *)marks, MARKS * sizeof(int));
    marks = NULL;
}

/* Stalls cancel() after it has taken the claim word and before the cancel
 * shows, long enough for the worker to answer. */
static void stall_after_claim_cancel(cf_future *f)
{
    (void)f;
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* A worker puts back the word of a call the parent has just cancelled
 * (from inside the call before it) and runs it; its answer arrives while
 * the cancel is not yet showing, so the answer check without the lock
 * lets it pass.  That costs only the worker's own call: it stays
 * cancelled, reports CF_ECANCELLED, its result is dropped, and the pool
 * goes on. */
static void test_worker_that_unclaims_a_cancelled_call(void **state)
{
    (void)state;
    /* The worker finds its claim words by their memfd's name, which the
     * portable build's shared memory (an unlinked file) does not carry. */
    CF_SKIP_IF_PORTABLE("the claim words have no memfd name to find them by");
    for (int round = 0; round < 3; round++) {
        cf_executor *ex = ppool(1, CF_CRASH_REPLACES_WORKER, CF_START_EXEC);
        /* A fresh worker: its first call uses word 0, the second word 1. */
        cf_future *a = NULL, *b = NULL;
        assert_ok(cf_submit(ex, c_unclaim, CF_ARGS(cf_i64(1)), &a));
        assert_ok(cf_submit(ex, t_square, CF_ARGS(cf_i64(3)), &b));
        double end = cf_test_now() + T_OK * cf_test_scale();
        while (!cf_future_running(a) && !cf_future_done(a) && cf_test_now() < end)
            sleep_ms(1);
        assert_true(cf_future_running(a));
        while (!sent_to_worker(b) && cf_test_now() < end)
            sleep_ms(1);
        assert_true(sent_to_worker(b));
        assert_false(cf_future_done(b));
        atomic_store(&cf__test_hook_claim_cancelled, stall_after_claim_cancel);
        bool said = cf_future_cancel(b);
        atomic_store(&cf__test_hook_claim_cancelled, NULL);
        int64_t r = 0;
        assert_ok(cf_future_result_i64(a, T_OK * cf_test_scale(), &r));
        assert_int_equal(r, 1); /* the word was put back */
        assert_true(said);
        assert_true(cf_future_cancelled(b));
        assert_cf(CF_ECANCELLED, cf_future_result(b, T_OK * cf_test_scale(), NULL));
        assert_int_equal(run_i64(ex, t_square, CF_ARGS(cf_i64(4))), 16);
        print_message("round %d: cancelled call ends %s\n", round,
                      cf_state_name(cf_future_state(b)));
        assert_true(cf_future_cancelled(b));
        assert_ok(cf_future_release(a));
        assert_ok(cf_future_release(b));
        assert_ok(cf_executor_destroy(ex));
        assert_no_children();
    }
}

/* ---- completion without callbacks: the last reference elsewhere ------------ */

typedef struct hand {
    pthread_barrier_t bar;
    cf_future *f;
    int mode;
    _Atomic int cb_runs;
} hand;

static int drop_ref_cb(cf_future *f, void *arg)
{
    hand *h = arg;
    atomic_fetch_add(&h->cb_runs, 1);
    return cf_future_release(f) == CF_OK ? 0 : 1;
}

/* The completing side: its own reference, completed then dropped. */
static void *complete_and_drop(void *p)
{
    hand *h = p;
    cf_future *f = h->f;
    pthread_barrier_wait(&h->bar);
    int rc;
    if (h->mode == 2) {
        rc = cf_future_cancel(f) ? CF_OK : CF_EINVALSTATE;
    } else {
        cf_value v = cf_i64(11);
        rc = cf_future_set_result(f, &v);
    }
    cf_future_release(f);
    return (void *)(intptr_t)rc;
}

/* 2000 rounds of a future with two references, completed on one thread
 * (set_result, or cancel) while the other thread either waits in result()
 * and drops its reference as soon as it returns, or hands its reference
 * to a done-callback added at the same moment.  Whoever drops the last
 * reference, the future is freed once, after both sides are done with it
 * (AddressSanitizer, which disables the block cache, sees any access
 * after that), and the callback runs exactly once. */
static void test_completion_races_the_last_release(void **state)
{
    (void)state;
    for (int round = 0; round < 2000; round++) {
        hand h;
        pthread_barrier_init(&h.bar, NULL, 2);
        atomic_init(&h.cb_runs, 0);
        h.mode = round % 3; /* 0: waiter, 1: callback, 2: cancel + waiter */
        cf_future *f = NULL;
        assert_ok(cf_future_new(&f));
        h.f = cf_future_retain(f); /* the completer's */
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, complete_and_drop, &h), 0);
        pthread_barrier_wait(&h.bar);
        if (h.mode == 1) {
            assert_ok(cf_future_add_done_callback(f, drop_ref_cb, &h));
        } else {
            int rc = cf_future_result(f, T_OK * cf_test_scale(), NULL);
            assert_int_equal(rc, h.mode == 2 ? CF_ECANCELLED : CF_OK);
            assert_ok(cf_future_release(f));
        }
        void *ret = NULL;
        pthread_join(th, &ret);
        assert_int_equal((int)(intptr_t)ret, CF_OK);
        if (h.mode == 1)
            assert_int_equal(atomic_load(&h.cb_runs), 1);
        pthread_barrier_destroy(&h.bar);
    }
}

typedef struct cb_count {
    _Atomic int runs, wrong;
} cb_count;

/* Checks its future finished with the square of its argument, counts
 * itself and drops the reference it was handed (often the last one but
 * the engine's). */
static int square_done_cb(cf_future *f, void *arg)
{
    cb_count *c = arg;
    int64_t r = -1;
    if (cf_future_result_i64(f, 0, &r) != CF_OK || r != 9)
        atomic_fetch_add(&c->wrong, 1);
    atomic_fetch_add(&c->runs, 1);
    return cf_future_release(f) == CF_OK ? 0 : 1;
}

typedef struct adder {
    pthread_barrier_t bar;
    cf_future **fs;
    int n;
    cb_count *count;
} adder;

/* Hands each future's reference to a done-callback, from first to last. */
static void *add_callbacks(void *p)
{
    adder *a = p;
    pthread_barrier_wait(&a->bar);
    int bad = 0;
    for (int i = 0; i < a->n; i++)
        bad += cf_future_add_done_callback(a->fs[i], square_done_cb, a->count) != CF_OK;
    return (void *)(intptr_t)bad;
}

/* 200 rounds: the manager completes a batch of calls (no callback, or a
 * callback added that very moment by another thread, which hands it the
 * caller's only reference).  Each callback runs once, on a done future
 * with its own result; whichever thread drops the last reference, the
 * future is freed once (AddressSanitizer). */
static void test_callbacks_added_while_answers_arrive(void **state)
{
    (void)state;
    cf_executor *ex = ppool(2, CF_CRASH_BREAKS_POOL, CF_START_EXEC);
    enum { ROUNDS = 200, N = 16 };
    cb_count count;
    atomic_init(&count.runs, 0);
    atomic_init(&count.wrong, 0);
    for (int round = 0; round < ROUNDS; round++) {
        cf_value args[N];
        for (int i = 0; i < N; i++)
            args[i] = cf_i64(3);
        cf_future *fs[N];
        adder a = {.fs = fs, .n = N, .count = &count};
        pthread_barrier_init(&a.bar, NULL, 2);
        pthread_t th;
        assert_ok(cf_submit_many(ex, t_square, args, 1, N, fs));
        assert_int_equal(pthread_create(&th, NULL, add_callbacks, &a), 0);
        pthread_barrier_wait(&a.bar);
        void *bad = NULL;
        pthread_join(th, &bad);
        assert_int_equal((int)(intptr_t)bad, 0);
        pthread_barrier_destroy(&a.bar);
    }
    /* Every call has answered once the pool is idle. */
    assert_ok(cf_shutdown(ex, true, false));
    assert_int_equal(atomic_load(&count.runs), ROUNDS * N);
    assert_int_equal(atomic_load(&count.wrong), 0);
    assert_ok(cf_executor_destroy(ex));
    assert_no_children();
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_chunk_calls_keep_nothing_of_the_previous),
    cmocka_unit_test(test_chunk_calls_see_only_their_arguments),
    cmocka_unit_test(test_cancel_races_claim_call_by_call),
    cmocka_unit_test(test_cancel_races_claim_in_chunks),
    cmocka_unit_test(test_worker_that_unclaims_a_cancelled_call),
    cmocka_unit_test(test_completion_races_the_last_release),
    cmocka_unit_test(test_callbacks_added_while_answers_arrive),
};

CF_TEST_MAIN(tests)
