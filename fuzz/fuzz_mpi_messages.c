/* SPDX-License-Identifier: MIT
 *
 * fuzz_mpi_messages.c - libFuzzer target for what the MPI manager does
 * with the messages of a worker: on_message() (HELLO, RESULT, RESULTS,
 * BYE, heartbeats, unknown tags), on_long() and the order of a long
 * frame's PARTs (in_long_order / long_order_ok), the completion of the
 * calls behind them, call timeouts (check_time) and the breaking of the
 * pool they may cause.
 *
 * It includes mpi_pool.c itself, so it drives the very functions the
 * manager thread runs (static ones included).  No MPI call is made: the
 * pool has no communicator (MPI_COMM_NULL), MPI_Isend is replaced by a
 * send that fails (below), and the harness hands each
 * message over as receive() and test_receive() would once MPI has read
 * it: each message is checked by the same message_breach() (order of
 * a long frame, size per tag, a flood of heartbeats), PARTs are joined
 * into the worker's rbuf, and a message the manager has no memory for is
 * a breach.
 *
 * An input is a setup byte and then messages:
 *   byte 0  bits 0-1: jobs sent to the worker - 1 (1..4);
 *           bits 2-3: calls per job - 1 (1..4);
 *           bit 4: the worker has said HELLO;
 *           bit 5: the first job's calls time out before any message
 *           (check_time fails them; the job waits for its answer);
 *   then each message: u8 selector, u16 length (little endian), that many
 *   bytes (fewer at the end of the input).  Selector % 8: 0 HB, 1 HELLO,
 *   2 RESULT, 3 RESULTS, 4 BYE, 5 LONG, 6 PART, 7 the tag selector / 8
 *   (an unknown tag, or one of the others).
 * After the messages (or once the pool broke) every call must be done or
 * still in a job of the worker; breaking the pool then must end them all,
 * and nothing may leak (ASan).  CF_FUZZ_TRACE=1 prints each call's end.
 */
#include <mpi.h>

/* The one MPI call a worker's messages can lead to here: a STOP for a
 * call that timed out (check_time).  It fails, as a send may; the call
 * then just runs on (send_stop). */
static int fuzz_isend(const void *buf, int count, MPI_Datatype type, int dest, int tag,
                      MPI_Comm comm, MPI_Request *req)
{
    (void)buf, (void)count, (void)type, (void)dest, (void)tag, (void)comm;
    *req = MPI_REQUEST_NULL;
    return MPI_ERR_OTHER;
}
#define MPI_Isend fuzz_isend

#include "../src/mpi/mpi_pool.c"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int never_runs(cf_call *c)
{
    return cf_return_i64(c, 0);
}

/* What the manager does with one message of w (receive / test_receive
 * once MPI has read it).  Returns false when the pool broke. */
static bool deliver(mpi_pool *p, mworker *w, int tag, const unsigned char *body, int count)
{
    char why_buf[160];
    /* The clock of the setup (chatter_since), so that a replay breaks at
     * the same heartbeat however slowly it runs. */
    const char *why = message_breach(p, w, tag, count, w->chatter_since, why_buf, sizeof why_buf);
    if (why) {
        bad_worker(p, w, why);
        return false;
    }
    if (in_long_order(w, tag)) {
        if (tag == MTAG_LONG)
            return on_long(p, w, body, count);
        if (!long_room(w, (size_t)count)) {
            bad_worker(p, w, "sent a result the manager has no memory for");
            return false;
        }
        memcpy(w->rbuf + w->rgot, body, (size_t)count);
        w->rgot += (size_t)count;
        if (w->rgot == w->rlen) {
            w->rlong = false;
            on_message(p, w, w->rtag, w->rbuf, w->rlen);
            free(w->rbuf);
            w->rbuf = NULL;
        }
        return !p->broken;
    }
    if (count == 0) {
        static const unsigned char empty[1];
        on_message(p, w, tag, empty, 0);
        return !p->broken;
    }
    /* receive() copies it into a buffer of its own first. */
    unsigned char *copy = malloc((size_t)count);
    if (!copy) {
        bad_worker(p, w, "sent a message the manager has no memory for");
        return false;
    }
    memcpy(copy, body, (size_t)count);
    on_message(p, w, tag, copy, (size_t)count);
    free(copy);
    return !p->broken;
}

static const int tags[7] = {MTAG_HB,  MTAG_HELLO, MTAG_RESULT, MTAG_RESULTS,
                            MTAG_BYE, MTAG_LONG,  MTAG_PART};

/* Is f still referenced by one of w's jobs? */
static bool in_a_job(const mworker *w, const cf_future *f)
{
    for (const mjob *j = w->head; j; j = j->next)
        for (uint32_t i = 0; i < j->n; i++)
            if (j->fs[i] == f)
                return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool trace = getenv("CF_FUZZ_TRACE") != NULL;
    uint8_t cfg = data[0];
    int njobs = (cfg & 3) + 1, ncalls = (cfg >> 2 & 3) + 1;

    mpi_pool *p = calloc(1, sizeof *p);
    mworker *w = calloc(1, sizeof *w);
    if (!p || !w)
        abort();
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->comm = MPI_COMM_NULL;
    p->dying = MPI_COMM_NULL;
    p->hb_timeout_ns = (int64_t)3600 * 1000000000;
    p->nworkers = 1;
    p->workers = w;
    w->shown_rank = 1;
    w->shown_size = 2;
    w->hello = cfg & 16;
    w->chatter_since = cf__now_ns(); /* deliver()'s clock: 65 heartbeats are a flood */
    snprintf(w->host, sizeof w->host, "fuzzhost");

    /* The calls, each also held here to check at the end. */
    cf_future *all[16];
    int nall = 0;
    for (int k = 0; k < njobs; k++) {
        mjob *j = calloc(1, sizeof *j + (size_t)ncalls * sizeof(cf_future *));
        if (!j)
            abort();
        j->n = (uint32_t)ncalls;
        j->started = true;
        j->timeout_ns = k == 0 && (cfg & 32) ? 0 : CF__NS_FOREVER;
        for (int i = 0; i < ncalls; i++) {
            cf_future *f = cf__future_new_borrowed(never_runs, NULL, 0);
            if (!f || cf__future_start_call(f) != 1)
                abort();
            j->fs[i] = f;
            all[nall++] = cf_future_retain(f);
        }
        add_job(w, j); /* as send_job does */
    }
    int64_t now = cf__now_ns();
    w->last_seen = w->last_look = w->part_seen = now;
    bool alive = check_time(p, now); /* the timed-out job, if any */

    const uint8_t *at = data + 1, *end = data + size;
    while (alive && end - at >= 3) {
        uint8_t sel = at[0];
        int len = at[1] | at[2] << 8;
        at += 3;
        if (len > end - at)
            len = (int)(end - at);
        int tag = sel % 8 < 7 ? tags[sel % 8] : sel / 8;
        alive = deliver(p, w, tag, at, len);
        at += len;
    }

    for (int i = 0; i < nall; i++)
        if (!cf__state_done(cf__state_of(all[i])) && !in_a_job(w, all[i]))
            abort(); /* a call nobody will ever end */
    if (!p->broken)
        break_pool(p, "fuzz: the end");
    for (int i = 0; i < nall; i++) {
        if (!cf__state_done(cf__state_of(all[i])))
            abort(); /* breaking the pool must end every call */
        if (trace) {
            const cf_value *v = NULL;
            int rc = cf_future_result(all[i], 0, &v);
            fprintf(stderr, "call %d: %s", i, cf_err_name(rc));
            if (rc == CF_OK)
                fprintf(stderr, " kind %d", (int)v->kind);
            else
                fprintf(stderr, " (%s)", cf_last_error_message());
            fprintf(stderr, "\n");
        }
        cf_future_release(all[i]);
    }
    free(w->rbuf);
    free(w->dbuf);
    free(w->batch);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(w);
    free(p);
    return 0;
}
