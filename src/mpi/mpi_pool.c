/* SPDX-License-Identifier: MIT */
/*
 * mpi_pool.c - the MPI engine: calls run on MPI ranks.
 *
 * Design notes
 *
 *   submit ─► pending jobs (mu) ─► manager thread ─► MPI_Isend ─► worker rank
 *                                       ▲  completes futures    │
 *                                       └── MPI_Improbe ◄───────┘ RESULT, HB
 *
 * - One manager thread per pool makes every MPI call of the pool: it
 *   spawns the workers (or takes the static world's), sends CALL frames
 *   with MPI_Isend, receives with MPI_Improbe + MPI_Imrecv (never a
 *   blocking receive: a dead sender would hang it), completes futures (so
 *   done-callbacks run on it), watches heartbeats, and at the end says
 *   EXIT and frees the communicator.  Submitters only touch `mu`.
 * - A job is one call, or one map chunk that a worker runs as a unit.  A
 *   worker answers its jobs in order, so its oldest unanswered job is the
 *   one it runs.  A job handed to a worker is started (its futures are
 *   RUNNING: MPI gives no way to take it back), so the manager keeps few
 *   there beyond the running one.  A worker gets a second job only while
 *   more jobs wait than there are workers, and a third or more only while
 *   the jobs waiting on it would take under AHEAD_NS at its recent pace
 *   for their task functions (may_queue(); up to DEPTH): a stream of tiny
 *   calls does not wait for a round trip each, and behind a long call
 *   waits one job at most (a function it has not answered yet counts as
 *   long; so does one whose recent calls were long), so
 *   that shutdown(cancel_futures), a map's timeout and cf_future_cancel()
 *   still reach nearly everything queued (as in Python's process pool,
 *   which hands out one call more than it has workers).
 * - Batches (mpi_engine.h, CF__MPI_BATCH_MAX): the small, all-inline CALL
 *   frames one dispatch round hands a worker leave as one CALLS message
 *   (at most BATCH_FRAMES), since each MPI message costs system calls on
 *   both sides; the worker answers quick calls likewise.  Each frame is
 *   still one job, numbered, answered and completed on its own.  A frame
 *   that cannot be batched is sent alone, after the batch before it; so
 *   is a timed call's, whose answer must not wait for the calls after it
 *   (the worker holds a quick call's answer until its message is done).
 * - One call at a time (a caller that submits, waits for the result and
 *   submits again) pays every hand-off between threads, and each MPI
 *   call that makes progress is a system call (Open MPI polls its
 *   sockets).  So: a small answer is received and its future completed
 *   in the round its probe found it; while calls are out, only workers
 *   with something out are probed every round (the others once per
 *   IDLE_LOOK_NS); and right after an answer left nothing out, the
 *   manager spins for the next request instead of sleeping, when the
 *   last one came soon after its answer (await_request; bounded).
 * - Dead workers: every message from a worker (its heartbeat thread sends
 *   one every heartbeat_timeout / 5) renews its `last_seen`; a worker
 *   silent for heartbeat_timeout while the manager looked for its
 *   messages is dead (a manager held up by a slow done-callback has not
 *   looked).  The pool then breaks: every
 *   call fails with CF_EBROKEN naming the worker at once; every worker
 *   that may live is told EXIT with "broken" (it stops its running call
 *   and leaves: in spawn mode its process ends, in static and
 *   communicator mode its rank returns), and the manager reads and drops
 *   what they send until each said BYE or fell silent, for at most
 *   heartbeat_timeout (wind_down).  Then the communicator is freed
 *   (MPI_Comm_free: MPI_Comm_disconnect would wait for the dead for
 *   ever) - or, when a worker may still send on it, kept until
 *   MPI_Finalize, so that its late messages never reach a later pool
 *   (see wind_down).  Sends still in flight are released with
 *   MPI_Request_free; their buffers are kept until MPI_Finalize, as MPI
 *   may still read them.
 * - A call's timeout (cf_submit_with) fails its future with CF_ETIMEDOUT
 *   when it expires; MPI cannot stop one rank of a spawned job, so the
 *   worker finishes the call and its late answer is dropped.
 * - Frames over cf__mpi_part_max() go as LONG + PARTs (mpi_engine.h):
 *   the inline bytes copied once, big arguments sent in place while the
 *   send holds their futures; a long RESULT is joined in the worker's
 *   rbuf part by part, between heartbeats.
 * - cf_terminate_workers() / cf_kill_workers(): spawned workers are told
 *   to end themselves (KILL) and the pool is let go as after a death; a
 *   static or communicator pool's ranks cannot end alone, so their calls
 *   are asked to stop instead (see handle_stop).
 *
 * Locks: `mu` guards the fields marked below.  The manager never holds it
 * while it calls MPI or completes futures.  Everything else (workers,
 * requests, the communicator) belongs to the manager thread alone.
 * - The manager thread starts every call it sends (cf__future_start_call)
 *   and completes every call it started (results, failures, timeouts, a
 *   broken pool: fail_job, on_result, check_time all run on it).
 *   Being the one completer lets it end a call without the future's lock
 *   (cf__future_complete_owned) unless a waiter or callback hooked it.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfutures_mpi.h"
#include "mpi_engine.h"

#define MAX_WORKERS 1024
#define DEPTH 64 /* most jobs queued on one worker (during a backlog) */
/* A worker running a job is handed more only while those waiting on it
 * would take less than this, by its recent time per job (see may_queue):
 * ten times a round trip here, so that short jobs keep it busy, and short
 * enough that few jobs are beyond the reach of a cancel.  The test knob
 * CFUTURES_TEST_MPI_AHEAD_NS (1000..10^10, read when a pool is made)
 * replaces it: a test that needs many jobs out on a worker cannot depend
 * on how loaded the machine is. */
#define AHEAD_NS 1000000
#define PACE_SLOTS 8 /* task functions whose pace a worker keeps */
/* Most CALL frames in one CALLS message: half the depth, so that a worker
 * with a backlog has the next message at hand when it answers one. */
#define BATCH_FRAMES (DEPTH / 2)
/* The most messages of one worker handled in one call of receive() (or
 * one round of wind_down()): a worker that keeps sending must not keep
 * the manager from the others, from dispatching and from its clock
 * (check_time). */
#define RECEIVE_TURN 64
/* How long beyond heartbeat_timeout a worker told EXIT with nothing left
 * to run may take to say BYE (leave()), and a spawned job to disconnect
 * (join_manager()), before the manager lets it go. */
#define LEAVE_GRACE_NS ((int64_t)5 * 1000000000)
/* How often the manager's loop looks for the messages of a worker that
 * has nothing out (see receive()). */
#define IDLE_LOOK_NS 1000000
/* The manager spins for the next request after an answer left nothing
 * out (await_request) for twice the last such gap, at least
 * REQUEST_SPIN_MIN_NS (the gap is often the submitter's wake-up alone,
 * which varies) and at most REQUEST_SPIN_MAX_NS. */
#define REQUEST_SPIN_MIN_NS 20000
#define REQUEST_SPIN_MAX_NS 100000

typedef struct mjob {
    struct mjob *next;
    uint32_t n;
    cf_task_fn *fn;      /* its calls' task (one per job) */
    /* What it should take on its worker, by the worker's pace for fn when
     * it was sent (see mworker.paces); -1: not known. */
    int64_t est_ns;
    bool started;        /* handed to a worker: its futures are RUNNING */
    bool abandoned;      /* its futures failed (timeout); drop the answer */
    int64_t timeout_ns;  /* CF__NS_FOREVER for none */
    int64_t deadline_ns; /* set when it starts on a worker */
    uint64_t frame;      /* its CALL frame's number on its worker */
    cf__chunk *chunk;    /* a map chunk (then n = its calls, no fs), or NULL;
                          * the engine's reference */
    cf_future *fs[];     /* the engine's references; NULL once dropped */
} mjob;

/* One frame on its way: one request, or a LONG header and its PARTs. */
typedef struct msend {
    struct msend *next;
    int nreq;
    MPI_Request *reqs;   /* &one, or an array of nreq */
    MPI_Request one;
    unsigned char *buf, *buf2; /* freed once every request completed */
    cf_future **hold;    /* a LONG frame's calls, whose values it sends */
    uint32_t nhold;
    cf__chunk *hold_chunk; /* or the map chunk whose values it sends */
    bool urgent;         /* a KILL, which must leave before the comm goes */
    struct mworker *to;  /* the worker it goes to */
    bool big;            /* over CF__MPI_BIG_MSG bytes in all (see moving()) */
    int done;            /* requests completed, in order (reap_sends) */
} msend;

typedef struct mworker {
    int rank;            /* in the pool's communicator */
    int shown_rank, shown_size; /* "worker R of N" */
    char host[64];
    bool hello, bye, exit_sent;
    /* Sent KILL (spawn mode): it ends, and says no BYE. */
    bool killed;
    /* Its EXIT said that the pool broke (CF__MPI_EXIT_BROKEN). */
    bool exit_broken;
    /* It said BYE unasked: its process is ending under a call, without
     * the disconnect a normal EXIT is answered with. */
    bool left_midway;
    /* leave() gave up waiting for its BYE: wind_down() does not wait for
     * it again. */
    bool let_go;
    /* When its last message came, and when the manager last looked for
     * its messages (both read from the clock as the manager turns to this
     * worker in receive()).  Its silence is the time between the two,
     * less the time the manager did not look: a manager kept away from
     * MPI (a slow done-callback runs on it, the machine is loaded) has
     * not heard the heartbeats waiting for it, and one probe after such a
     * gap may not see them yet (see look_at). */
    int64_t last_seen, last_look;
    uint64_t frames;     /* CALL frames sent to it */
    mjob *head, *tail;
    int njobs;
    /* Its pace, per task function: when its head job became the head
     * (sent to it idle, or the one before answered), and for the last
     * PACE_SLOTS functions it answered (a new one takes the slot answered
     * longest ago; `used` stamps each slot's last answer) decayed sums of the
     * time from then to a job's answer and of the calls answered (each
     * answer adds its time and its calls, after both sums lost an
     * eighth).  Their ratio is its recent time per call of that function;
     * answers that came in one message count the whole wait for the first
     * and ~0 for the rest, which averages out.  Per function, because a
     * burst of quick calls says nothing of a long call that follows it.
     * ahead_ns: the est_ns of its jobs after the head; ahead_unknown: how
     * many of those have none. */
    int64_t head_at;
    struct {
        cf_task_fn *fn;
        double ns, calls;
        uint64_t used;
    } paces[PACE_SLOTS];
    uint64_t answers;    /* jobs it answered: the clock of `used` */
    int64_t ahead_ns;
    int ahead_unknown;
    bool receiving;      /* an MPI_Imrecv is in flight */
    /* While a long frame comes in (rlong): when its LONG header or its
     * last PART came, moved like last_seen for the time the manager did
     * not look (look_at).  A worker that sends no next PART for
     * heartbeat_timeout has stopped midway (check_time): a worker sends
     * its parts back to back, while its heartbeats go on. */
    int64_t part_seen;
    MPI_Request rreq;
    unsigned char *rbuf; /* the frame coming in */
    size_t rlen;         /* its length */
    size_t rcap;         /* bytes of rbuf: rlen, or (rlong) what has room so
                          * far, grown by long_room() as PARTs come */
    int rtag;
    bool rlong;          /* it comes as PARTs (after a LONG) */
    size_t rgot;         /* bytes of it received (rlong) */
    int rpart;           /* the PART in flight (rlong) */
    /* A message being read only to be dropped (`draining`: dreq is in
     * flight into dbuf, tag dtag; see start_drain()), tested by
     * wind_down() each round.  `unread`: one was left unreceived (no
     * memory for it), so nothing more is read from this worker. */
    bool draining;
    bool unread;
    /* Messages that carry no answer (heartbeats, HELLO, BYE) received
     * from it since `chatter_since` (the pool's start): an honest worker
     * sends one heartbeat per interval at most, so more than
     * chatter_allowed() is a flood (see message_breach). */
    uint64_t chatter;
    int64_t chatter_since;
    MPI_Request dreq;
    unsigned char *dbuf;
    int dtag;
    /* Small CALL frames of the dispatch round under way, for one CALLS
     * message (flush_batch); their jobs are already on the worker's list,
     * after `bprev` (NULL: from its head).  Empty outside dispatch(). */
    unsigned char *batch;
    size_t blen, bcap;
    int bn;
    mjob *bprev;
} mworker;

typedef struct mpi_pool {
    cf_executor base; /* first */
    bool spawn;
    bool world;          /* static mode (the ranks of an mpirun launch) */
    bool oversubscribe;
    int nworkers;
    int64_t hb_timeout_ns;
    int64_t ahead_ns;    /* AHEAD_NS, or the test knob's */

    pthread_mutex_t mu;
    pthread_cond_t cv;   /* the manager sleeps on it; pool_new waits on it */
    /* Guarded by mu: */
    mjob *pending_head, *pending_tail;
    size_t npending;
    /* Bumped by submit, shutdown, interrupts and stops (under mu); read
     * without the lock too, by the manager's spin (await_request). */
    _Atomic uint64_t seq;
    bool shutdown;
    bool broken;
    char broken_msg[384];
    bool spawned;        /* MPI_Comm_spawn returned (set by launch()
                          * when there is none to make) */
    bool started;        /* start-up finished (start_rc says how) */
    int start_rc;
    char start_msg[384];
    bool abandoned;      /* the constructor gave up waiting for start-up:
                          * the manager frees the pool when it ends */
    struct mpi_pool *next_live; /* the list of live pools (pools_mu) */
    /* cf_executor_worker_count(): the workers thought alive - all of them
     * once start-up succeeded, one fewer for each BYE, none once the pool
     * broke or stopped.  Written by the manager thread; any thread reads
     * it (relaxed: a count, no data hangs on it). */
    _Atomic int live;
    cf_future **interrupts; /* cf_future_interrupt() of running calls */
    size_t ninterrupts, interrupts_cap;
    int stop_sig;        /* cf_terminate/kill_workers: 0, SIGTERM, SIGKILL */

    pthread_t manager;
    pthread_mutex_t join_mu;
    bool joined;         /* guarded by join_mu */
    /* The end of the manager thread, for join_manager(), which waits on
     * join_cv (with mu).  Guarded by mu: manager_done, set as the manager
     * thread ends; disconnect_at, when it entered MPI_Comm_disconnect
     * (0: it is not in one); left_stuck, join_manager() gave up on it
     * there (the pool is then never freed: the thread may still return
     * into it). */
    pthread_cond_t join_cv;
    bool manager_done;
    int64_t disconnect_at;
    bool left_stuck;

    /* Manager thread only: */
    bool stop_done;      /* stop_sig was acted on */
    MPI_Comm comm;
    /* The communicator of a pool that broke, from break_pool() until
     * wind_down() lets go of it (p->comm is then MPI_COMM_NULL, so that
     * nothing else uses it). */
    MPI_Comm dying;
    mworker *workers;
    msend *sends;
    wire_enc enc;
    /* When a big transfer last began or moved on (a big message or a part
     * posted, received or sent): the manager spins for one until
     * CF__MPI_MOVE_SPIN_NS pass without that (see moving()).  Heartbeats
     * and small answers do not count, or each would buy another spin. */
    int64_t moved_at;
} mpi_pool;

static _Thread_local mpi_pool *tls_manager;

/* Live pools, for finalize_at_exit (mpi_worker.c). */
static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static mpi_pool *live_pools;

/* Send buffers MPI may still read after their request was freed (a dead
 * worker's); freed after MPI_Finalize.  Guarded by pools_mu. */
static msend *orphans;

/* Lets go of a receive that may never complete (its sender gave up or is
 * gone): MPI may still write into buf, so buf is kept with the orphaned
 * sends until MPI_Finalize (without memory for that, leaked for good). */
static void orphan_receive(MPI_Request *req, unsigned char *buf)
{
    MPI_Request_free(req);
    if (!buf)
        return; /* a message of no bytes: nothing to keep */
    msend *o = calloc(1, sizeof *o);
    if (!o)
        return;
    o->buf = buf;
    pthread_mutex_lock(&pools_mu);
    o->next = orphans;
    orphans = o;
    pthread_mutex_unlock(&pools_mu);
}

/* The most bytes of a message from a worker, per tag (the protocol in
 * mpi_engine.h), checked before anything is allocated for it: HB and BYE
 * are empty; HELLO is three numbers and a host name; a RESULT frame or a
 * PART of a long one is at most CF__MPI_ANSWER_PART_MAX bytes of payload
 * (the test knob only lowers it), RESULTS at most CF__MPI_BATCH_MAX;
 * a LONG header is 12 bytes.  The slack covers the frame's header.
 * SIZE_MAX: not a tag a worker sends. */
#define MSG_SLACK ((size_t)4096)
static size_t worker_msg_max(int tag)
{
    switch (tag) {
    case MTAG_HB:
    case MTAG_BYE:
        return 0;
    case MTAG_HELLO:
        return 12 + 4 + MPI_MAX_PROCESSOR_NAME + MSG_SLACK;
    case MTAG_RESULT:
    case MTAG_PART:
        return CF__MPI_ANSWER_PART_MAX + MSG_SLACK;
    case MTAG_RESULTS:
        return CF__MPI_BATCH_MAX + CF__MPI_ANSWER_PART_MAX + MSG_SLACK;
    case MTAG_LONG:
        return 12;
    default:
        return SIZE_MAX;
    }
}
/* The most bytes of a message the manager reads only to drop it (a
 * breach, or wind_down's hearing): beyond the largest honest message, so
 * that a worker that breaks the protocol with a few MiB is still read to
 * the end and can go on to read its EXIT, but not the 2 GiB a message
 * may carry, which a worker could make the parent take per message. */
#define DRAIN_MAX ((size_t)64 << 20)

/* Starts reading matched message `msg` of w (`count` bytes, tag `tag`)
 * only to drop it: a breach of the protocol (the pool breaks next), or
 * wind_down()'s draining.  Never waits for it - a long message whose
 * sender died never completes, and a blocking receive of it stopped the
 * manager for good - and never truncates it: Open MPI 4.1's TCP
 * transport writes the rest of a truncated long message at the buffer's
 * address (NULL included) and crashes.  So the message goes into a
 * buffer of its size, which wind_down() tests each round and lets go of
 * at its time bound (w->draining).  Without memory for that it stays
 * unreceived and w is read no more (w->unread); its communicator is then
 * kept until MPI_Finalize, as for any worker that did not say BYE. */
static void start_drain(mworker *w, MPI_Message *msg, int count, int tag)
{
    /* Over DRAIN_MAX: not worth the memory, so it stays unreceived, as
     * when memory is short. */
    if ((size_t)count > DRAIN_MAX) {
        w->unread = true;
        return;
    }
    unsigned char *buf = count > 0 ? malloc((size_t)count) : NULL;
    if (count > 0 && !buf) {
        w->unread = true;
        return;
    }
    if (MPI_Imrecv(buf, count, MPI_BYTE, msg, &w->dreq) != MPI_SUCCESS) {
        free(buf);
        w->unread = true;
        return;
    }
    w->dbuf = buf;
    w->dtag = tag;
    w->draining = true;
}

/* Communicators of broken pools that a worker may still send on (it was
 * not heard to say BYE): kept until MPI_Finalize, see wind_down().
 * Guarded by pools_mu. */
typedef struct kept_comm {
    struct kept_comm *next;
    MPI_Comm comm;
} kept_comm;
static kept_comm *kept_comms;

/* Pools whose constructor gave up on start-up while their manager is still
 * inside MPI (MPI_Comm_spawn); MPI_Finalize must not run under it. */
static _Atomic int stuck_managers;

bool cf__mpi_stuck(void)
{
    return atomic_load(&stuck_managers) > 0;
}

static mpi_pool *pool_of(cf_executor *ex)
{
    return (mpi_pool *)ex;
}

/* ---- completing futures (no lock held) ---------------------------------- */

static void fail_job(mjob *j, int status, const char *type, const char *msg)
{
    if (j->chunk) {
        cf__chunk_fail(j->chunk, status, type, msg);
        cf__chunk_release(j->chunk);
        free(j);
        return;
    }
    for (uint32_t i = 0; i < j->n; i++) {
        if (!j->fs[i])
            continue;
        if (!j->started)
            cf__future_start_call(j->fs[i]);
        cf__future_fail_running(j->fs[i], status, type, msg);
        cf_future_release(j->fs[i]);
    }
    free(j);
}

static void fail_jobs(mjob *j, int status, const char *type, const char *msg)
{
    while (j) {
        mjob *next = j->next;
        fail_job(j, status, type, msg);
        j = next;
    }
}

static void worker_name(const mworker *w, char *buf, size_t size)
{
    snprintf(buf, size, "worker %d of %d on %s", w->shown_rank, w->shown_size,
             w->host[0] ? w->host : "an unknown host");
}

/* The failure record of a task that raised on worker w: its message with
 * "worker R of N on HOST: " in front (`who`, of `size` bytes, caches the
 * name for the rest of an answer: empty until first needed).  Never
 * NULL: the static out-of-memory record when there is no memory. */
static cf_failure *task_failure(const mworker *w, char *who, size_t size, int code,
                                const char *type, const char *msg)
{
    if (!who[0])
        worker_name(w, who, size);
    size_t mlen = strlen(who) + strlen(msg) + 3;
    char *full = malloc(mlen);
    if (full)
        snprintf(full, mlen, "%s: %s", who, msg);
    cf_failure *fl = cf__failure_new(code, type, full ? full : msg);
    free(full);
    return fl ? fl : cf__failure_oom();
}

/* w's slot for fn, or PACE_SLOTS if it has none. */
static size_t pace_slot(const mworker *w, cf_task_fn *fn)
{
    size_t k = 0;
    while (k < PACE_SLOTS && w->paces[k].fn != fn)
        k++;
    return k;
}

/* What n calls of fn should take on w (ns), or -1 if w has answered no
 * call of fn lately. */
static int64_t pace_estimate(const mworker *w, cf_task_fn *fn, uint32_t n)
{
    size_t k = pace_slot(w, fn);
    if (k == PACE_SLOTS || w->paces[k].calls <= 0)
        return -1;
    double est = w->paces[k].ns / w->paces[k].calls * (double)n;
    return est < 9e18 ? (int64_t)est : INT64_MAX / 2;
}

/* A job joins (+1) or leaves (-1) the jobs waiting behind w's head. */
static void count_ahead(mworker *w, const mjob *j, int sign)
{
    if (j->est_ns < 0)
        w->ahead_unknown += sign;
    else
        w->ahead_ns += sign * j->est_ns;
}

/* Takes the answered job j off the head of w's list and counts its time
 * into w's pace for its function. */
static void pop_head(mworker *w, mjob *j)
{
    w->head = j->next;
    if (!w->head)
        w->tail = NULL;
    w->njobs--;
    if (w->head)
        count_ahead(w, w->head, -1); /* the new head runs */
    int64_t now = cf__now_ns();
    size_t k = pace_slot(w, j->fn);
    if (k == PACE_SLOTS) {
        k = 0; /* the slot answered longest ago (or never) */
        for (size_t i = 1; i < PACE_SLOTS; i++)
            if (w->paces[i].used < w->paces[k].used)
                k = i;
        w->paces[k].fn = j->fn;
        w->paces[k].ns = w->paces[k].calls = 0;
    }
    w->paces[k].used = ++w->answers;
    w->paces[k].ns = w->paces[k].ns * 0.875 + (double)(now - w->head_at);
    w->paces[k].calls = w->paces[k].calls * 0.875 + (double)(j->n ? j->n : 1);
    w->head_at = now;
    if (w->head && w->head->timeout_ns != CF__NS_FOREVER)
        w->head->deadline_ns = now + w->head->timeout_ns;
}

/* on_result() for a map chunk: the answer decoded straight into the
 * chunk's records, in one pass, and the chunk finished once.  A payload
 * that does not fit leaves the records unwritten (what was allocated for
 * them freed) and the chunk running: breaking the pool fails it. */
static bool on_result_chunk(mworker *w, mjob *j, const unsigned char *body, size_t len)
{
    cf__chunk *c = j->chunk;
    wire_dec d = {body, body + len, false};
    uint32_t n = wdec_u32(&d);
    if (n != j->n)
        return false;
    char who[128] = "";
    uint32_t i;
    for (i = 0; i < n && !d.bad; i++) {
        cf__chunk_rec *r = &c->recs[i];
        if (CF__LIKELY(wdec_u8(&d))) {
            cf_value v = wdec_value(&d);
            void *heap = NULL;
            if (CF__UNLIKELY(v.kind == CF_BYTES || v.kind == CF_STR) && !d.bad) {
                size_t extra = cf__value_extra(&v);
                heap = malloc(extra ? extra : 1);
                if (!heap) {
                    r->status = CF_ETASK;
                    r->result = cf_none();
                    r->heap = NULL;
                    r->failure = cf__failure_new(CF_ENOMEM, "MemoryError",
                                                 "out of memory for the result");
                    if (!r->failure)
                        r->failure = cf__failure_oom();
                    continue;
                }
                memcpy(heap, v.as.bytes, extra);
                v.as.bytes = heap;
            }
            r->status = CF_OK;
            r->result = v;
            r->heap = heap;
            r->failure = NULL;
        } else {
            int code = (int)wdec_u32(&d);
            const char *type = wdec_cstr(&d);
            const char *msg = wdec_cstr(&d);
            r->status = CF_ETASK;
            r->result = cf_none();
            r->heap = NULL;
            r->failure = NULL;
            if (d.bad)
                break;
            r->failure = task_failure(w, who, sizeof who, code, type, msg);
        }
    }
    if (d.bad || d.p != d.end) {
        for (uint32_t k = 0; k < i && k < n; k++) {
            free(c->recs[k].heap);
            if (c->recs[k].failure && !cf__failure_is_static(c->recs[k].failure))
                cf__failure_free(c->recs[k].failure);
        }
        return false;
    }
    pop_head(w, j);
    cf__chunk_finish(c);
    cf__chunk_release(c);
    free(j);
    return true;
}

/* Completes the head job of `w` from a RESULT payload.  Returns false if
 * the payload does not fit the job (a broken worker). */
static bool on_result(mworker *w, const unsigned char *body, size_t len)
{
    mjob *j = w->head;
    if (j && j->chunk)
        return on_result_chunk(w, j, body, len);
    wire_dec d = {body, body + len, false};
    uint32_t n = wdec_u32(&d);
    if (!j || n != j->n)
        return false;
    const unsigned char *start = d.p;
    /* Check the whole frame before completing anything. */
    for (uint32_t i = 0; i < n && !d.bad; i++) {
        if (wdec_u8(&d)) {
            (void)wdec_value(&d);
        } else {
            (void)wdec_u32(&d);
            (void)wdec_cstr(&d);
            (void)wdec_cstr(&d);
        }
    }
    if (d.bad || d.p != d.end)
        return false;
    pop_head(w, j);
    d = (wire_dec){start, body + len, false};
    char who[128] = "";
    for (uint32_t i = 0; i < n; i++) {
        cf_future *f = j->fs[i];
        if (wdec_u8(&d)) {
            cf_value v = wdec_value(&d);
            if (!f)
                continue;
            void *heap = NULL;
            size_t extra = cf__value_extra(&v);
            if (extra > CF__INLINE_RESULT) {
                heap = malloc(extra);
                if (!heap) {
                    cf__future_fail_running(f, CF_ETASK, "MemoryError",
                                            "out of memory for the result");
                    cf_future_release(f);
                    continue;
                }
                memcpy(heap, v.as.bytes, extra);
                v.as.bytes = heap;
            }
            if (cf__future_complete_owned(f, CF_OK, &v, heap, NULL) != CF_OK)
                free(heap); /* already done (a timeout) */
        } else {
            int code = (int)wdec_u32(&d);
            const char *type = wdec_cstr(&d);
            const char *msg = wdec_cstr(&d);
            if (!f)
                continue;
            cf_failure *fl = task_failure(w, who, sizeof who, code, type, msg);
            if (cf__future_complete_owned(f, CF_ETASK, NULL, NULL, fl) != CF_OK &&
                !cf__failure_is_static(fl))
                cf__failure_free(fl);
        }
        cf_future_release(f);
    }
    free(j);
    return true;
}

/* ---- breaking ----------------------------------------------------------- */

/* Tells every worker of p that may be alive and has not been told to
 * leave that the pool is over (EXIT with CF__MPI_EXIT_BROKEN).  One byte
 * from static memory: no buffer to keep, so each request is let go at
 * once.  Manager thread, p->comm open. */
static void tell_exit_broken(mpi_pool *p)
{
    static const unsigned char broken = CF__MPI_EXIT_BROKEN;
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->workers[i];
        MPI_Request r;
        if (w->bye || w->exit_sent || w->killed)
            continue;
        if (MPI_Isend(&broken, 1, MPI_BYTE, w->rank, MTAG_EXIT, p->comm, &r) == MPI_SUCCESS)
            MPI_Request_free(&r);
        w->exit_sent = true;
        w->exit_broken = true;
    }
}

/* Fails everything with `msg`, refuses later submits and lets go of the
 * communicator without waiting for anyone. */
static void break_pool(mpi_pool *p, const char *msg)
{
    pthread_mutex_lock(&p->mu);
    /* The pool's owner hears of a break through the log hook once, as from
     * a process pool - unless it asked for the end (terminate/kill), or the
     * pool never reached it (a failed start is the constructor's error). */
    bool say = !p->broken && !p->stop_sig && p->started && p->start_rc == CF_OK &&
               !p->abandoned;
    if (!p->broken) {
        p->broken = true;
        snprintf(p->broken_msg, sizeof p->broken_msg, "%s", msg);
    }
    atomic_store_explicit(&p->live, 0, memory_order_relaxed);
    mjob *pending = p->pending_head;
    p->pending_head = p->pending_tail = NULL;
    p->npending = 0;
    pthread_mutex_unlock(&p->mu);
    /* Before any future fails, so whoever sees a failure can find the line. */
    if (say)
        cf__log("%s", msg);
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->workers[i];
        fail_jobs(w->head, CF_EBROKEN, "BrokenMPIPool", msg);
        w->head = w->tail = NULL;
        w->njobs = 0;
        w->ahead_ns = 0;
        w->ahead_unknown = 0;
        free(w->batch); /* its jobs were on the list just failed */
        w->batch = NULL;
        w->blen = w->bcap = 0;
        w->bn = 0;
        w->bprev = NULL;
        if (w->receiving) {
            /* Never completes (its sender is gone). */
            orphan_receive(&w->rreq, w->rbuf);
            w->rbuf = NULL;
            w->receiving = false;
        }
        if (w->rlong) {
            free(w->rbuf); /* MPI writes into it no more */
            w->rbuf = NULL;
            w->rlong = false;
        }
    }
    fail_jobs(pending, CF_EBROKEN, "BrokenMPIPool", msg);
    while (p->sends) {
        msend *s = p->sends;
        p->sends = s->next;
        for (int i = 0; i < s->nreq; i++)
            if (s->reqs[i] != MPI_REQUEST_NULL)
                MPI_Request_free(&s->reqs[i]);
        pthread_mutex_lock(&pools_mu);
        s->next = orphans;
        orphans = s;
        pthread_mutex_unlock(&pools_mu);
    }
    if (p->comm != MPI_COMM_NULL) {
        /* Every worker that may be alive is told that the pool is over
         * (EXIT with CF__MPI_EXIT_BROKEN): it stops its running call,
         * drops the rest, says BYE and leaves - in static and
         * communicator mode the rank returns to the job, in spawn mode the
         * process ends.  The communicator stays open until wind_down()
         * has heard them (see there). */
        tell_exit_broken(p);
        p->dying = p->comm;
        p->comm = MPI_COMM_NULL;
    }
}

static int64_t look_at(const mpi_pool *p, mworker *w);
static void disconnect(mpi_pool *p, MPI_Comm *comm);

/* The end of a pool that broke, on its manager thread, after break_pool():
 * hears its workers out, then lets go of the communicator.
 *
 * Why not free the communicator at once: a worker that is alive still
 * sends on it - heartbeats, answers, its BYE - until it reads EXIT.  Open
 * MPI 4.1 (ob1) keeps a message for a context id that no communicator of
 * this process has, and gives it to the next communicator that gets that
 * id; ids are reused (a new communicator takes the lowest id free on all
 * of its ranks).  So a new pool over the same ranks (communicator mode:
 * MPI_Comm_dup of the program's communicator; spawn mode: the next
 * spawn's intercommunicator) could take the freed id and then read the
 * old pool's stale messages as its own: a stale BYE or RESULT would break
 * it, a stale heartbeat could hide a dead worker.  And a worker that
 * sends a long message waits for it to be received: with nobody
 * receiving, it would wait for ever, and never read EXIT.
 *
 * So: every message of the workers is read and dropped until each has
 * said BYE (its last message on this communicator), has been silent for
 * heartbeat_timeout (dead or hung), or was sent KILL; all of it for at
 * most heartbeat_timeout (a call that ignores cf_cancel_requested() may
 * keep its worker busy for long; its worker gives up a long send when it
 * sees EXIT, see wait_or_exit in mpi_worker.c).  Then:
 * - every worker said BYE: nothing more can come; the communicator is
 *   freed (spawn mode too: workers told that the pool broke free it
 *   rather than disconnect, since the parent cannot know that all of
 *   them heard; a normal EXIT, sent before the break, is answered with a
 *   disconnect on both sides);
 * - otherwise it is kept (kept_comms), unread, until MPI_Finalize: its
 *   context id stays taken here, so whatever a late worker sends lands
 *   on it and never on another communicator.  Freed first thing in
 *   MPI_Finalize (cf__mpi_kept_comms_free), before Open MPI would try to
 *   disconnect a kept intercommunicator from its dead workers.
 * Liveness: the loop ends by the time bound; it probes and receives
 * without blocking (MPI_Imrecv, MPI_Test) and naps between looks (growing
 * to CF__MPI_NAP_MAX_NS), as MPI has no wait that does not spin. */
static void wind_down(mpi_pool *p)
{
    MPI_Comm comm = p->dying;
    if (comm == MPI_COMM_NULL)
        return;
    p->dying = MPI_COMM_NULL;
    int64_t start = cf__now_ns(), nap = 0;
    /* Spawn mode, and every worker got the normal EXIT (the pool broke in
     * leave()): each disconnects after its BYE. */
    bool normal_exit = p->spawn;
    for (;;) {
        bool waiting = false, got = false;
        for (int i = 0; i < p->nworkers; i++) {
            mworker *w = &p->workers[i];
            if (w->bye || w->killed || w->unread || w->let_go)
                continue;
            /* Its silence, as check_time counts it: a manager that was
             * away (done-callbacks of the failed calls) did not listen. */
            int64_t now = look_at(p, w);
            /* Each message is received without blocking: a long one from
             * a worker that gives up its send (it saw EXIT) or dies would
             * never complete, and a blocking MPI_Mrecv waited for it for
             * ever (seen once in 30 runs of test_death_during_big_transfer
             * at load).  One still coming when the time bound passes is
             * let go below.  At most RECEIVE_TURN messages a round, so
             * that a worker that floods cannot hold the loop past its
             * time bound. */
            for (int turn = 0; turn < RECEIVE_TURN; turn++) {
                if (!w->draining) {
                    int flag = 0;
                    MPI_Message msg;
                    MPI_Status st;
                    if (MPI_Improbe(w->rank, MPI_ANY_TAG, comm, &flag, &msg, &st) != MPI_SUCCESS ||
                        !flag)
                        break;
                    int count = 0;
                    MPI_Get_count(&st, MPI_BYTE, &count);
                    start_drain(w, &msg, count, st.MPI_TAG);
                    if (!w->draining)
                        break; /* left unreceived: w->unread */
                }
                int fin = 0;
                if (MPI_Test(&w->dreq, &fin, MPI_STATUS_IGNORE) != MPI_SUCCESS || !fin)
                    break; /* still coming: the next round looks again */
                w->draining = false;
                free(w->dbuf);
                w->dbuf = NULL;
                got = true;
                w->last_seen = now;
                if (w->dtag == MTAG_BYE) {
                    w->bye = true;
                    break;
                }
            }
            if (w->bye)
                continue;
            if (w->last_look - w->last_seen > p->hb_timeout_ns || now - start > p->hb_timeout_ns)
                continue; /* given up: see kept_comms */
            waiting = true;
        }
        if (!waiting)
            break;
        if (got) {
            nap = 0;
            continue;
        }
        nap = cf__mpi_next_nap(nap, CF__MPI_NAP_MAX_NS);
        struct timespec ts = {0, (long)nap};
        nanosleep(&ts, NULL);
    }
    /* Messages still coming are let go; MPI may still write into their
     * buffers, so those are kept like orphaned sends.  Their workers did
     * not say BYE, so the communicator is kept too (below). */
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->workers[i];
        if (!w->draining)
            continue;
        orphan_receive(&w->dreq, w->dbuf);
        w->draining = false;
        w->dbuf = NULL;
    }
    bool all_bye = true;
    for (int i = 0; i < p->nworkers; i++) {
        all_bye = all_bye && p->workers[i].bye;
        /* Neither a killed worker nor one told that the pool broke nor
         * one that left midway disconnects; a collective disconnect with
         * them would wait for ever (Open MPI even ended the whole program
         * there when the one worker of a pool had left midway). */
        if (p->workers[i].killed || p->workers[i].exit_broken || p->workers[i].left_midway)
            normal_exit = false;
    }
    if (all_bye && normal_exit) {
        disconnect(p, &comm);
        return;
    }
    if (all_bye) {
        MPI_Comm_free(&comm);
        return;
    }
    kept_comm *k = malloc(sizeof *k);
    if (!k) {
        MPI_Comm_free(&comm); /* the old behaviour, when memory is short */
        return;
    }
    k->comm = comm;
    pthread_mutex_lock(&pools_mu);
    k->next = kept_comms;
    kept_comms = k;
    pthread_mutex_unlock(&pools_mu);
}

/* ---- sending -------------------------------------------------------------- */

static void msend_free(msend *s)
{
    free(s->buf);
    free(s->buf2);
    for (uint32_t i = 0; i < s->nhold; i++)
        cf_future_release(s->hold[i]);
    free(s->hold);
    cf__chunk_release(s->hold_chunk);
    if (s->reqs != &s->one)
        free(s->reqs);
    free(s);
}

static bool post_send(mpi_pool *p, mworker *w, unsigned char *buf, int len, int tag)
{
    msend *s = buf ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        free(buf);
        return false;
    }
    s->buf = buf;
    s->urgent = tag == MTAG_KILL;
    s->to = w;
    s->big = len > 0 && (size_t)len > CF__MPI_BIG_MSG;
    s->nreq = 1;
    s->reqs = &s->one;
    if (MPI_Isend(buf, len, MPI_BYTE, w->rank, tag, p->comm, &s->one) != MPI_SUCCESS) {
        msend_free(s);
        return false;
    }
    if (s->big)
        p->moved_at = cf__now_ns();
    s->next = p->sends;
    p->sends = s;
    return true;
}

/* Sends the finished frame in p->enc as LONG + PARTs: the inline bytes
 * copied, the big values sent from where they are - the arguments of j's
 * calls, which the send holds until it completes.  Returns 1 when sent,
 * 0 when nothing was (no memory), -1 when MPI failed half-way. */
static int post_long(mpi_pool *p, mworker *w, const mjob *j, int tag)
{
    const wire_enc *e = &p->enc;
    size_t total = cf__mpi_frame_len(e), pm = cf__mpi_part_max();
    msend *s = calloc(1, sizeof *s);
    unsigned char *hdr = malloc(12), *inl = malloc(e->len - WIRE_HDR + 1);
    cf__mpi_piece pcs[CF__MPI_MAX_PIECES];
    size_t k = 0, nparts = 0;
    if (s && inl) {
        memcpy(inl, e->buf + WIRE_HDR, e->len - WIRE_HDR);
        k = cf__mpi_pieces(e, inl, pcs);
        for (size_t i = 0; i < k; i++)
            nparts += (pcs[i].n + pm - 1) / pm;
    }
    if (s) {
        s->buf = hdr;
        s->buf2 = inl;
        s->reqs = calloc(nparts + 1, sizeof *s->reqs);
        s->hold = j->chunk ? NULL : malloc(j->n * sizeof *s->hold);
    }
    if (!s || !hdr || !inl || !s->reqs || (!j->chunk && !s->hold) || nparts + 1 > INT_MAX) {
        if (s)
            msend_free(s);
        else {
            free(hdr);
            free(inl);
        }
        return 0;
    }
    if (j->chunk)
        s->hold_chunk = cf__chunk_retain(j->chunk);
    for (uint32_t i = 0; !j->chunk && i < j->n; i++)
        s->hold[s->nhold++] = cf_future_retain(j->fs[i]);
    s->to = w;
    s->big = true;
    for (size_t i = 0; i <= nparts; i++)
        s->reqs[i] = MPI_REQUEST_NULL;
    wire_enc h = {.buf = hdr, .len = 0, .cap = 12};
    wenc_u32(&h, (uint32_t)tag);
    wenc_u64(&h, total);
    bool ok = MPI_Isend(hdr, 12, MPI_BYTE, w->rank, MTAG_LONG, p->comm, &s->reqs[0]) ==
              MPI_SUCCESS;
    s->nreq = ok;
    for (size_t i = 0; i < k && ok; i++)
        for (size_t off = 0; off < pcs[i].n && ok; off += pm) {
            size_t n = pcs[i].n - off < pm ? pcs[i].n - off : pm;
            ok = MPI_Isend(pcs[i].p + off, (int)n, MPI_BYTE, w->rank, MTAG_PART, p->comm,
                           &s->reqs[s->nreq]) == MPI_SUCCESS;
            s->nreq += ok;
        }
    /* Even a half-posted frame stays listed: its requests must finish (or
     * be freed when the pool breaks) before its memory goes. */
    s->next = p->sends;
    p->sends = s;
    p->moved_at = cf__now_ns();
    return ok ? 1 : -1;
}

/* Completes finished sends; returns true if any did.  A LONG frame's
 * requests are tested in order (its parts leave in order on one
 * connection), each finished part counting as a big transfer moving on. */
static bool reap_sends(mpi_pool *p)
{
    bool any = false;
    for (msend **sp = &p->sends; *sp;) {
        msend *s = *sp;
        while (s->done < s->nreq) {
            int fin = 0;
            MPI_Test(&s->reqs[s->done], &fin, MPI_STATUS_IGNORE);
            if (!fin)
                break;
            s->done++;
            if (s->big)
                p->moved_at = cf__now_ns();
        }
        if (s->done < s->nreq) {
            sp = &s->next;
            continue;
        }
        *sp = s->next;
        msend_free(s);
        any = true;
    }
    return any;
}

/* Puts j, just sent (or batched), at the end of w's jobs. */
static void add_job(mworker *w, mjob *j)
{
    j->next = NULL;
    j->frame = ++w->frames;
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    w->njobs++;
    if (w->head == j) {
        w->head_at = cf__now_ns();
        if (j->timeout_ns != CF__NS_FOREVER)
            j->deadline_ns = w->head_at + j->timeout_ns;
    } else {
        count_ahead(w, j, +1);
    }
}

/* Sends w's batched CALL frames: one alone as CALL, several as CALLS.
 * If that fails, the worker never sees them: their jobs fail and leave
 * its list (the last bn jobs on it), and the frame count goes back. */
static void flush_batch(mpi_pool *p, mworker *w)
{
    if (w->bn == 0)
        return;
    unsigned char *buf = w->batch;
    size_t len = w->blen;
    int n = w->bn;
    mjob *prev = w->bprev;
    w->batch = NULL;
    w->blen = w->bcap = 0;
    w->bn = 0;
    w->bprev = NULL;
    bool ok;
    if (n == 1) {
        memmove(buf, buf + 4, len - 4); /* the frame without its length */
        ok = post_send(p, w, buf, (int)(len - 4), MTAG_CALL);
    } else {
        ok = post_send(p, w, buf, (int)len, MTAG_CALLS);
    }
    if (ok)
        return;
    mjob *j = prev ? prev->next : w->head;
    for (mjob *k = prev ? j : j->next; k; k = k->next)
        count_ahead(w, k, -1); /* those that were behind the head */
    if (prev)
        prev->next = NULL;
    else
        w->head = NULL;
    w->tail = prev;
    w->njobs -= n;
    w->frames -= (uint64_t)n;
    fail_jobs(j, CF_ENOMEM, "MemoryError", "out of memory (or an MPI error) sending the call");
}

/* Appends the small, all-inline frame in p->enc to w's batch.  Returns
 * false (nothing changed) when memory is short. */
static bool batch_frame(mworker *w, const wire_enc *e)
{
    size_t flen = e->len - WIRE_HDR;
    if (w->blen + 4 + flen > w->bcap) {
        size_t ncap = w->bcap ? w->bcap : 1024;
        while (ncap < w->blen + 4 + flen)
            ncap *= 2;
        unsigned char *nb = realloc(w->batch, ncap);
        if (!nb)
            return false;
        w->batch = nb;
        w->bcap = ncap;
    }
    wire_enc h = {.buf = w->batch + w->blen, .len = 0, .cap = 4};
    wenc_u32(&h, (uint32_t)flen);
    memcpy(w->batch + w->blen + 4, e->buf + WIRE_HDR, flen);
    if (w->bn++ == 0)
        w->bprev = w->tail;
    w->blen += 4 + flen;
    return true;
}

/* Encodes job j's calls and sends them to w - or batches them, for
 * flush_batch() at the end of the dispatch round.  Futures cancelled
 * meanwhile are dropped first.  Returns false if nothing was sent (j
 * freed). */
static bool send_job(mpi_pool *p, mworker *w, mjob *j)
{
    wire_enc *e = &p->enc;
    if (j->chunk) {
        /* A map chunk starts as a whole (or was cancelled as a whole), and
         * its calls' arguments lie in one array. */
        cf__chunk *c = j->chunk;
        if (!cf__chunk_start(c)) {
            cf__chunk_release(c);
            free(j);
            return false;
        }
        j->started = true;
        const char *name = cf_task_name(c->fn);
        size_t namelen = strlen(name);
        wenc_reset(e);
        wenc_u32(e, c->n);
        wenc_u8(e, (uint8_t)namelen);
        wenc_put(e, name, namelen);
        const cf_value *a = c->args;
        for (uint32_t i = 0; i < c->n; i++) {
            wenc_u8(e, (uint8_t)c->nargs);
            for (uint32_t k = 0; k < c->nargs; k++)
                wenc_value(e, a++);
        }
    } else {
        uint32_t live = 0;
        for (uint32_t i = 0; i < j->n; i++) {
            if (cf__future_start_call(j->fs[i]) == 1)
                j->fs[live++] = j->fs[i];
            else
                cf_future_release(j->fs[i]);
        }
        j->n = live;
        j->started = true;
        if (live == 0) {
            free(j);
            return false;
        }
        const char *name = cf_task_name(j->fs[0]->call.fn);
        size_t namelen = strlen(name);
        wenc_reset(e);
        wenc_u32(e, live);
        wenc_u8(e, (uint8_t)namelen);
        wenc_put(e, name, namelen);
        for (uint32_t i = 0; i < live; i++) {
            const cf_call *c = &j->fs[i]->call;
            wenc_u8(e, (uint8_t)c->nargs);
            const cf_value *args = cf__call_args(c);
            for (size_t k = 0; k < c->nargs; k++)
                wenc_value(e, &args[k]);
        }
    }
    size_t flen = cf__mpi_frame_len(e);
    /* A timed call goes alone: as the last frame of its message its
     * answer leaves as soon as it is done, never held behind the calls
     * after it (its clock runs here, see check_time). */
    if (!e->oom && e->nrefs == 0 && flen + 4 <= CF__MPI_BATCH_MAX &&
        j->timeout_ns == CF__NS_FOREVER) {
        if (w->blen + 4 + flen > CF__MPI_BATCH_MAX || w->bn == BATCH_FRAMES)
            flush_batch(p, w);
        if (batch_frame(w, e)) {
            add_job(w, j);
            return true;
        }
    }
    /* Sent alone, after the frames batched before it. */
    flush_batch(p, w);
    int sent;
    if (!e->oom && flen > cf__mpi_part_max()) {
        sent = post_long(p, w, j, MTAG_CALL);
    } else {
        int len = 0;
        unsigned char *buf = cf__mpi_flatten(e, &len);
        sent = buf && post_send(p, w, buf, len, MTAG_CALL);
    }
    if (sent != 1) {
        /* Half a long frame sent: the pool breaks (its worker hears EXIT
         * instead of the rest) - before the call fails, so that whoever
         * sees the failure finds the pool broken. */
        if (sent < 0)
            break_pool(p, "MPI pool broken: MPI failed while sending a long frame");
        fail_job(j, CF_ENOMEM, "MemoryError", "out of memory (or an MPI error) sending "
                                              "the call");
        return false;
    }
    add_job(w, j);
    return true;
}

/* Asks w to raise the stop flag of call `index` of job j (see MTAG_STOP). */
static void send_stop(mpi_pool *p, mworker *w, const mjob *j, uint32_t index)
{
    unsigned char *buf = malloc(12);
    if (!buf)
        return; /* the call just runs to its end */
    wire_enc e = {.buf = buf, .len = 0, .cap = 12};
    wenc_u64(&e, j->frame);
    wenc_u32(&e, index);
    post_send(p, w, buf, 12, MTAG_STOP);
}

/* Passes cf_future_interrupt() of running calls on to their workers: the
 * task sees cf_cancel_requested() and decides when to stop, as in a thread
 * pool; its future ends when it does.  Returns true if it had any. */
static bool handle_interrupts(mpi_pool *p)
{
    pthread_mutex_lock(&p->mu);
    cf_future **fs = p->interrupts;
    size_t n = p->ninterrupts;
    p->interrupts = NULL;
    p->ninterrupts = p->interrupts_cap = 0;
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < p->nworkers; k++)
            for (mjob *j = p->workers[k].head; j; j = j->next)
                for (uint32_t c = 0; !j->chunk && c < j->n; c++)
                    if (j->fs[c] == fs[i] && !cf_future_done(fs[i]))
                        send_stop(p, &p->workers[k], j, c);
        cf_future_release(fs[i]);
    }
    free(fs);
    return n > 0;
}

static bool urgent_sends(const mpi_pool *p)
{
    for (const msend *s = p->sends; s; s = s->next)
        if (s->urgent)
            return true;
    return false;
}

/* Acts once on cf_terminate_workers() / cf_kill_workers(), which come
 * after a shutdown that cancelled every job not yet handed out.
 * - Spawn mode: every worker is told to end itself with the signal
 *   (KILL), its calls fail with CF_EBROKEN at once, and the communicator
 *   is let go as after a death (every worker ends).
 * - Static and communicator mode: one rank cannot end alone (the launcher
 *   would end the whole job, this rank included), so every call out is
 *   asked to stop (cf_cancel_requested(), as in a thread pool) and the
 *   pool ends normally when they have returned.
 * Returns true if it acted. */
static bool handle_stop(mpi_pool *p)
{
    if (p->stop_done)
        return false;
    pthread_mutex_lock(&p->mu);
    int sig = p->stop_sig;
    pthread_mutex_unlock(&p->mu);
    if (!sig)
        return false;
    p->stop_done = true;
    if (!p->spawn) {
        for (int i = 0; i < p->nworkers; i++)
            for (mjob *j = p->workers[i].head; j; j = j->next)
                send_stop(p, &p->workers[i], j, CF__MPI_STOP_ALL);
        return true;
    }
    /* A worker that dies while a big frame is being written to it can
     * deadlock Open MPI 4.1's TCP transport in this thread (README, "Limits
     * today"), and every worker is about to end: the sends under way
     * finish first, for a bounded time.  A send a busy worker has not
     * begun to receive writes nothing meanwhile and is harmless. */
    int64_t until = cf__now_ns() + CF__MPI_KILL_SEND_NS;
    while (p->sends && cf__now_ns() < until) {
        if (reap_sends(p))
            continue;
        struct timespec ts = {0, CF__MPI_NAP_MIN_NS}; /* ends by itself */
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < p->nworkers; i++) {
        unsigned char *buf = malloc(4);
        if (buf) {
            wire_enc e = {.buf = buf, .len = 0, .cap = 4};
            wenc_u32(&e, (uint32_t)sig);
        }
        /* Without memory for it the worker lives on until the job ends;
         * its calls fail below all the same. */
        p->workers[i].killed = post_send(p, &p->workers[i], buf, 4, MTAG_KILL);
    }
    /* A KILL is tiny: MPI sends it at once, unless the connection is
     * clogged (a big call on its way), hence the bound. */
    until = cf__now_ns() + CF__MPI_KILL_SEND_NS;
    while (urgent_sends(p) && cf__now_ns() < until) {
        reap_sends(p);
        sched_yield();
    }
    char msg[160];
    snprintf(msg, sizeof msg, "MPI pool: its workers were stopped by %s",
             sig == SIGKILL ? "kill_workers (SIGKILL)" : "terminate_workers (SIGTERM)");
    break_pool(p, msg);
    return true;
}

/* May busy worker w be handed job j (the pending ones outnumber the
 * workers)?  Yes for the first waiting behind its running job; more only
 * while those waiting would take under AHEAD_NS at w's pace for their
 * functions, and j's own is known: a job whose function w has not
 * answered lately could be long. */
static bool may_queue(const mpi_pool *p, const mworker *w, const mjob *j)
{
    if (w->njobs >= DEPTH)
        return false;
    if (w->njobs <= 1)
        return true;
    return w->ahead_unknown == 0 && w->ahead_ns < p->ahead_ns &&
           pace_estimate(w, j->fn, j->n) >= 0;
}

/* Hands pending jobs to workers, the small frames for one worker in one
 * message.  Returns true if it sent any. */
static bool dispatch(mpi_pool *p)
{
    bool any = false;
    while (p->comm != MPI_COMM_NULL) {
        /* Chosen and popped under one lock: shutdown may take the pending
         * jobs (and free them) at any moment. */
        pthread_mutex_lock(&p->mu);
        mjob *j = p->pending_head;
        /* An idle worker first; a busy one only to cover a backlog, as
         * far as may_queue() lets it, and never for a timed call (its
         * clock starts when it is sent). */
        bool backlog = j && p->npending > (size_t)p->nworkers &&
                       j->timeout_ns == CF__NS_FOREVER;
        mworker *best = NULL;
        for (int i = 0; j && i < p->nworkers; i++) {
            mworker *w = &p->workers[i];
            if (!w->hello || w->exit_sent || (w->njobs > 0 && (!backlog || !may_queue(p, w, j))))
                continue;
            if (!best || w->njobs < best->njobs)
                best = w;
        }
        if (!best) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        p->pending_head = j->next;
        if (!p->pending_head)
            p->pending_tail = NULL;
        p->npending--;
        pthread_mutex_unlock(&p->mu);
        j->est_ns = pace_estimate(best, j->fn, j->n);
        any |= send_job(p, best, j);
    }
    for (int i = 0; i < p->nworkers && p->comm != MPI_COMM_NULL; i++)
        flush_batch(p, &p->workers[i]);
    return any;
}

/* ---- receiving ------------------------------------------------------------ */

/* A worker said something that does not fit; the pool cannot trust it. */
static void bad_worker(mpi_pool *p, mworker *w, const char *what)
{
    char who[128], msg[384];
    worker_name(w, who, sizeof who);
    snprintf(msg, sizeof msg, "MPI pool broken: %s %s", who, what);
    break_pool(p, msg);
}

static void on_message(mpi_pool *p, mworker *w, int tag, const unsigned char *body, size_t len)
{
    switch (tag) {
    case MTAG_HB:
        break;
    case MTAG_HELLO: {
        wire_dec d = {body, body + len, false};
        w->shown_rank = (int)wdec_u32(&d);
        int size = (int)wdec_u32(&d);
        (void)wdec_u32(&d); /* pid */
        const char *host = wdec_cstr(&d);
        if (d.bad) {
            bad_worker(p, w, "sent a malformed hello");
            return;
        }
        (void)size;
        snprintf(w->host, sizeof w->host, "%s", host);
        w->hello = true;
        break;
    }
    case MTAG_RESULT:
        if (!on_result(w, body, len))
            bad_worker(p, w, "sent a result that does not match its calls");
        break;
    case MTAG_RESULTS: {
        /* Each frame answers the worker's oldest job, in turn. */
        wire_dec d = {body, body + len, false};
        while (d.p < d.end) {
            uint32_t flen = wdec_u32(&d);
            const unsigned char *frame = wdec_take(&d, flen);
            if (d.bad || !on_result(w, frame, flen)) {
                bad_worker(p, w, "sent results that do not match its calls");
                return;
            }
        }
        break;
    }
    case MTAG_BYE:
        /* Unasked, a BYE says that the worker's process is ending under a
         * call (a task called exit(): see leave_midway in mpi_worker.c). */
        if (!w->bye && atomic_load_explicit(&p->live, memory_order_relaxed) > 0)
            atomic_fetch_sub_explicit(&p->live, 1, memory_order_relaxed);
        w->bye = true; /* it has left: wind_down() waits for it no more */
        if (!w->exit_sent) {
            w->left_midway = true;
            bad_worker(p, w, "left during a call: its process is ending (the task called "
                             "exit()?)");
        }
        break;
    default:
        bad_worker(p, w, "sent a message with an unknown tag");
    }
}

/* A LONG header from w: where its PARTs will go.  Returns false if the
 * worker cannot be trusted (or memory is short). */
static bool on_long(mpi_pool *p, mworker *w, const unsigned char *body, int len)
{
    wire_dec d = {body, body + len, false};
    uint32_t tag = wdec_u32(&d);
    uint64_t total = wdec_u64(&d);
    /* Only a RESULT comes long, for the job the worker runs; no outcome is
     * bigger than WIRE_OUTCOME_MAX. */
    const mjob *j = w->head;
    if (d.bad || d.p != d.end || tag != MTAG_RESULT || !j || total == 0 ||
        total > 4 + (uint64_t)j->n * WIRE_OUTCOME_MAX) {
        bad_worker(p, w, "sent a long frame that does not fit its calls");
        return false;
    }
    /* No room yet: it grows as the PARTs come (long_room), so a header
     * alone reserves nothing. */
    w->rbuf = NULL;
    w->rcap = 0;
    w->rlen = (size_t)total;
    w->rgot = 0;
    w->rtag = (int)tag;
    w->rlong = true;
    return true;
}

/* The manager turns to w's messages: returns the time (read here, not
 * once per pass, as completing a future runs its done-callbacks, which
 * may take any time).  It means to look at least every
 * heartbeat_timeout / 5 (its idle wait); a gap counts as w's silence for
 * at most that much, the rest is time the manager did not listen.  So a
 * dead worker is still found after about five looks, however late each
 * comes. */
static int64_t look_at(const mpi_pool *p, mworker *w)
{
    int64_t now = cf__now_ns(), gap = now - w->last_look, most = p->hb_timeout_ns / 5;
    if (gap > most) {
        w->last_seen += gap - most;
        w->part_seen += gap - most;
    }
    w->last_look = now;
    return now;
}

/* Finishes w's receive under way if MPI has all of it (a whole message
 * is then handled).  Returns true if it was done. */
static bool test_receive(mpi_pool *p, mworker *w, int64_t now)
{
    int done = 0;
    MPI_Test(&w->rreq, &done, MPI_STATUS_IGNORE);
    if (!done)
        return false;
    w->receiving = false;
    w->last_seen = w->part_seen = now;
    if ((w->rlong ? (size_t)w->rpart : w->rlen) > CF__MPI_BIG_MSG)
        p->moved_at = now;
    if (w->rlong)
        w->rgot += (size_t)w->rpart;
    if (!w->rlong || w->rgot == w->rlen) {
        w->rlong = false;
        on_message(p, w, w->rtag, w->rbuf, w->rlen);
        free(w->rbuf);
        w->rbuf = NULL;
    }
    return true;
}

/* The first room long_room() makes; the fuzz target sets a small one, so
 * that its short inputs reach the growth. */
#ifndef CF__MPI_LONG_ROOM_MIN
#define CF__MPI_LONG_ROOM_MIN CF__MPI_BIG_MSG
#endif

/* Makes room in w's long frame for a PART of `count` bytes that
 * long_order_ok() let through: rbuf doubles (from CF__MPI_LONG_ROOM_MIN) up to
 * the length the LONG header gave, so memory follows the bytes that came,
 * not what a worker claims.  Only between PARTs (no receive into rbuf is
 * in flight).  Returns false without memory (rbuf unchanged). */
static bool long_room(mworker *w, size_t count)
{
    size_t need = w->rgot + count;
    if (need <= w->rcap)
        return true;
    size_t cap = w->rcap ? w->rcap : CF__MPI_LONG_ROOM_MIN;
    while (cap < need)
        cap = cap > w->rlen / 2 ? w->rlen : cap * 2;
    if (cap > w->rlen)
        cap = w->rlen;
    unsigned char *b = realloc(w->rbuf, cap);
    if (!b)
        return false;
    w->rbuf = b;
    w->rcap = cap;
    return true;
}

/* Does a message with `tag` take part in the order of long frames: a LONG
 * header, a PART, or anything but a heartbeat while a long frame comes
 * in?  Then long_order_ok() says whether it may come now (`count` bytes):
 * between frames only a 12-byte LONG header, within one only a PART that
 * fits what is left.  (fuzz/fuzz_mpi_messages.c checks these too.) */
static bool in_long_order(const mworker *w, int tag)
{
    return tag == MTAG_LONG || tag == MTAG_PART || (w->rlong && tag != MTAG_HB);
}

static bool long_order_ok(const mworker *w, int tag, int count)
{
    return w->rlong ? tag == MTAG_PART && count > 0 && (size_t)count <= w->rlen - w->rgot
                    : tag == MTAG_LONG && count == 12;
}

/* The interval at which p's workers beat: a fifth of heartbeat_timeout
 * in communicator mode; the same in whole milliseconds, at least 1 and at
 * most CF__MPI_BEAT_MAX_MS (what a worker accepts on its command line),
 * in spawn mode; CF__MPI_STATIC_BEAT_NS in static mode. */
static int64_t worker_beat_ns(const mpi_pool *p)
{
    if (p->world)
        return CF__MPI_STATIC_BEAT_NS;
    int64_t beat = p->hb_timeout_ns / 5;
    if (!p->spawn)
        return beat;
    int64_t ms = beat / 1000000;
    if (ms < 1)
        ms = 1;
    if (ms > CF__MPI_BEAT_MAX_MS)
        ms = CF__MPI_BEAT_MAX_MS;
    return ms * 1000000;
}

/* How many messages without an answer (heartbeats, HELLO, BYE) w may
 * have sent by `now`: one per half of its heartbeat interval since it
 * began (chatter_since: the pool's start, or in static mode when the
 * ranks began to serve, cf__mpi_static_since), and CHATTER_SLACK more.
 * Far above what an honest worker sends, and far below a flood: a worker
 * sending empty messages as fast as it can over TCP took the manager's
 * every turn (no call was dispatched, no timeout seen) and grew Open
 * MPI's store of unread messages in the parent by gigabytes. */
#define CHATTER_SLACK 64
static uint64_t chatter_allowed(const mpi_pool *p, const mworker *w, int64_t now)
{
    int64_t half = worker_beat_ns(p) / 2;
    if (half < 1)
        half = 1;
    int64_t since = now > w->chatter_since ? now - w->chatter_since : 0;
    return CHATTER_SLACK + (uint64_t)(since / half);
}

/* What is wrong with a message of `count` bytes and tag `tag` that w
 * sent, before anything is allocated or received for it: NULL if
 * nothing; else the breach, for bad_worker() (in `buf` or static).
 * Counts it against w's budget of messages without an answer.  (Also
 * run by fuzz/fuzz_mpi_messages.c.) */
static const char *message_breach(const mpi_pool *p, mworker *w, int tag, int count,
                                  int64_t now, char *buf, size_t size)
{
    if (in_long_order(w, tag) && !long_order_ok(w, tag, count))
        return "broke the order of a long frame";
    if (tag == MTAG_HB && count != 0)
        return "sent a heartbeat with a body";
    size_t max = worker_msg_max(tag);
    if (max == SIZE_MAX)
        return "sent a message with an unknown tag";
    if (count < 0 || (size_t)count > max) {
        snprintf(buf, size, "sent a message of %d bytes with tag %d, more than the %zu its "
                            "protocol allows", count, tag, max);
        return buf;
    }
    if (tag == MTAG_HB || tag == MTAG_HELLO || tag == MTAG_BYE) {
        if (++w->chatter > chatter_allowed(p, w, now)) {
            snprintf(buf, size, "flooded the manager (%llu heartbeats or greetings in %.2f s)",
                     (unsigned long long)w->chatter, (double)(now - w->chatter_since) / 1e9);
            return buf;
        }
    }
    return NULL;
}

/* Moves messages along.  Returns true if anything arrived.  Unless `all`,
 * a worker with nothing out (no job, no message coming in) is looked at
 * only once per IDLE_LOOK_NS: each probe is a system call (Open MPI's
 * progress polls its sockets), and while one call is out the manager
 * probes in a loop, so probing idle workers too would make it notice the
 * answer later.  What they send (heartbeats) waits at most that long;
 * the time not looked is not counted as their silence (look_at). */
static bool receive(mpi_pool *p, bool all)
{
    bool any = false;
    for (int i = 0; i < p->nworkers && p->comm != MPI_COMM_NULL; i++) {
        mworker *w = &p->workers[i];
        if (!all && w->njobs == 0 && !w->receiving && !w->rlong &&
            cf__now_ns() - w->last_look < IDLE_LOOK_NS)
            continue;
        int64_t now = look_at(p, w);
        if (w->receiving && test_receive(p, w, now)) {
            any = true;
            if (p->comm == MPI_COMM_NULL)
                return true;
            if (!w->rlong)
                continue;
        }
        /* While a big message comes in, heartbeats (another tag) still
         * arrive and prove the sender alive; between the PARTs of a long
         * frame only they and the next PART may come. */
        for (int turn = 0; turn < RECEIVE_TURN; turn++) {
            int flag = 0;
            MPI_Message msg;
            MPI_Status st;
            if (MPI_Improbe(w->rank, w->receiving ? MTAG_HB : MPI_ANY_TAG, p->comm, &flag, &msg,
                            &st) != MPI_SUCCESS ||
                !flag)
                break;
            any = true;
            w->last_seen = now;
            int count = 0;
            MPI_Get_count(&st, MPI_BYTE, &count);
            char why_buf[160];
            const char *why =
                message_breach(p, w, st.MPI_TAG, count, now, why_buf, sizeof why_buf);
            if (why) {
                start_drain(w, &msg, count, st.MPI_TAG); /* or left unread */
                bad_worker(p, w, why);
                return true;
            }
            if (in_long_order(w, st.MPI_TAG)) {
                if (st.MPI_TAG == MTAG_LONG) {
                    unsigned char hdr[12];
                    MPI_Mrecv(hdr, 12, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
                    if (!on_long(p, w, hdr, 12))
                        return true;
                    w->part_seen = now;
                    continue;
                }
                if (!long_room(w, (size_t)count)) {
                    start_drain(w, &msg, count, st.MPI_TAG); /* no memory: likely unread */
                    bad_worker(p, w, "sent a result the manager has no memory for");
                    return true;
                }
                if (MPI_Imrecv(w->rbuf + w->rgot, count, MPI_BYTE, &msg, &w->rreq) !=
                    MPI_SUCCESS) {
                    bad_worker(p, w, "sent a part MPI failed to receive");
                    return true;
                }
                w->rpart = count;
                w->receiving = true;
                if ((size_t)count > CF__MPI_BIG_MSG)
                    p->moved_at = now;
                break; /* tested on the next round */
            }
            if (count == 0) { /* complete on arrival: nothing more comes */
                MPI_Mrecv(NULL, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
                /* An empty body, not NULL: the decoders add the length to
                 * the pointer (found by fuzz_mpi_messages). */
                static const unsigned char empty[1];
                on_message(p, w, st.MPI_TAG, empty, 0);
                if (p->comm == MPI_COMM_NULL)
                    return true;
                continue;
            }
            w->rbuf = malloc((size_t)count);
            if (!w->rbuf) {
                start_drain(w, &msg, count, st.MPI_TAG); /* no memory: likely unread */
                bad_worker(p, w, "sent a message the manager has no memory for");
                return true;
            }
            w->rlen = w->rcap = (size_t)count;
            w->rtag = st.MPI_TAG;
            if (MPI_Imrecv(w->rbuf, count, MPI_BYTE, &msg, &w->rreq) != MPI_SUCCESS) {
                free(w->rbuf);
                w->rbuf = NULL;
                bad_worker(p, w, "sent a message MPI failed to receive");
                return true;
            }
            w->receiving = true;
            if ((size_t)count > CF__MPI_BIG_MSG)
                p->moved_at = now;
            /* A small message came eagerly and is complete at once: it is
             * handled now (a test of a finished request makes no progress
             * call, hence no system call), a big one on the next round.
             * Either way w's next message waits for the next round: the
             * future just completed may have a caller that submits the
             * next call at once, and one more probe here (a system call)
             * would only delay its dispatch. */
            if ((size_t)count <= CF__MPI_BIG_MSG)
                (void)test_receive(p, w, now);
            if (p->comm == MPI_COMM_NULL)
                return true;
            break;
        }
    }
    return any;
}

/* ---- time ------------------------------------------------------------------ */

/* Breaks the pool if a worker has been silent too long (heartbeat_timeout
 * between its last message and the manager's last look for one, see
 * last_look); fails calls whose timeout expired.  Returns false if the
 * pool broke. */
static bool check_time(mpi_pool *p, int64_t now)
{
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->workers[i];
        if (w->rlong && !w->receiving && w->last_look - w->part_seen > p->hb_timeout_ns) {
            char why[160];
            snprintf(why, sizeof why, "stopped in the middle of a long answer (no part for "
                                      "%.1f s, its heartbeats going on)",
                     (double)(w->last_look - w->part_seen) / 1e9);
            bad_worker(p, w, why);
            return false;
        }
        if (w->bye || w->last_look - w->last_seen <= p->hb_timeout_ns)
            continue;
        char who[128], msg[384];
        worker_name(w, who, sizeof who);
        snprintf(msg, sizeof msg, "MPI pool broken: %s sent nothing for %.1f s (%s); the pool's "
                                  "workers are lost",
                 who, (double)(w->last_look - w->last_seen) / 1e9,
                 w->hello ? "it died or hangs" : "it did not start");
        break_pool(p, msg);
        return false;
    }
    for (int i = 0; i < p->nworkers; i++) {
        mjob *j = p->workers[i].head;
        if (!j || j->abandoned || j->timeout_ns == CF__NS_FOREVER || now < j->deadline_ns)
            continue;
        char who[128], msg[320];
        worker_name(&p->workers[i], who, sizeof who);
        snprintf(msg, sizeof msg, "the call exceeded its timeout on %s (which was asked to stop "
                                  "it; its result is dropped)", who);
        for (uint32_t k = 0; k < j->n; k++) {
            if (!j->fs[k])
                continue;
            cf__future_fail_running(j->fs[k], CF_ETIMEDOUT, "TimeoutError", msg);
            cf_future_release(j->fs[k]);
            j->fs[k] = NULL;
        }
        j->abandoned = true;
        /* The task sees cf_cancel_requested() and may end early. */
        send_stop(p, &p->workers[i], j, CF__MPI_STOP_ALL);
    }
    return true;
}

/* ---- start-up --------------------------------------------------------------- */

static int start_spawn(mpi_pool *p, char *msg, size_t msize)
{
    if (!cf__mpi_exe[0]) {
        snprintf(msg, msize, "the program's own file is unknown (readlink of "
                             "/proc/self/exe failed)");
        return CF_ESYS;
    }
    /* Open MPI's daemon reports a file it cannot run only to itself, and
     * MPI_Comm_spawn then waits for ever (to start_timeout here). */
    if (access(cf__mpi_exe, X_OK) != 0) {
        snprintf(msg, msize, "the program's own file %.200s cannot be run (%s): was it "
                             "deleted or replaced since the program started?",
                 cf__mpi_exe, strerror(errno));
        return CF_ESYS;
    }
    /* The worker's heartbeat interval in whole ms (worker_beat_ns):
     * beating more often than a fifth of the timeout costs nothing. */
    char interval[32];
    snprintf(interval, sizeof interval, "%lld", (long long)(worker_beat_ns(p) / 1000000));
    char *argv[] = {(char *)CF__MPI_WORKER_ARG, interval, NULL};
    MPI_Info info = MPI_INFO_NULL;
    if (p->oversubscribe) {
        MPI_Info_create(&info);
        MPI_Info_set(info, "map_by", ":OVERSUBSCRIBE");
    }
    MPI_Comm self;
    MPI_Comm_dup(MPI_COMM_SELF, &self);
    MPI_Comm_set_errhandler(self, MPI_ERRORS_RETURN);
    int *codes = calloc((size_t)p->nworkers, sizeof *codes);
    int err = codes ? MPI_Comm_spawn(cf__mpi_exe, argv, p->nworkers, info, 0, self, &p->comm,
                                     codes)
                    : MPI_ERR_NO_MEM;
    MPI_Comm_free(&self);
    if (info != MPI_INFO_NULL)
        MPI_Info_free(&info);
    int bad = MPI_SUCCESS;
    for (int i = 0; codes && err == MPI_SUCCESS && i < p->nworkers; i++)
        if (codes[i] != MPI_SUCCESS)
            bad = codes[i];
    free(codes);
    if (err != MPI_SUCCESS || bad != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        snprintf(msg, msize, "MPI_Comm_spawn of %d workers (%.120s) failed: %.200s",
                 p->nworkers, cf__mpi_exe,
                 cf__mpi_strerror(err != MPI_SUCCESS ? err : bad, text, sizeof text));
        if (err == MPI_SUCCESS)
            MPI_Comm_free(&p->comm);
        p->comm = MPI_COMM_NULL;
        return CF_ESYS;
    }
    MPI_Comm_set_errhandler(p->comm, MPI_ERRORS_RETURN);
    for (int i = 0; i < p->nworkers; i++)
        p->workers[i].rank = i;
    return CF_OK;
}

/* Waits until every worker said hello, or one is silent too long, or
 * heartbeat_timeout passed without a hello from each (a worker that only
 * sends heartbeats would otherwise hold start-up for ever: they prove it
 * alive, not started). */
static int await_hello(mpi_pool *p, char *msg, size_t msize)
{
    int64_t nap = 0, last = cf__now_ns();
    /* Time spent waiting for hellos, counted as look_at() counts silence:
     * a gap between two turns of this loop counts for at most a fifth of
     * heartbeat_timeout, the rest being time this thread did not run
     * (a loaded machine), when a hello may have waited unread. */
    int64_t waited = 0, turn = last, most = p->hb_timeout_ns / 5;
    bool napped = false;
    for (;;) {
        bool all = true;
        for (int i = 0; i < p->nworkers; i++)
            all = all && p->workers[i].hello;
        if (all)
            return CF_OK;
        bool got = receive(p, true);
        /* After a nap, a second look, as in manager_main(): the probe that
         * found nothing may have read the hello in. */
        if (napped && !got && p->comm != MPI_COMM_NULL)
            got = receive(p, true);
        napped = false;
        /* A worker that broke the protocol broke the pool: receive() does
         * nothing more (no communicator), and neither does check_time()
         * (no silence builds up without looks), so it is seen here. */
        if (p->comm == MPI_COMM_NULL) {
            pthread_mutex_lock(&p->mu);
            snprintf(msg, msize, "%.360s", p->broken_msg);
            pthread_mutex_unlock(&p->mu);
            return CF_EBROKEN;
        }
        if (got) {
            nap = 0;
            last = cf__now_ns();
            continue;
        }
        int64_t now = cf__now_ns();
        waited += now - turn < most ? now - turn : most;
        turn = now;
        if (waited > p->hb_timeout_ns) {
            for (int i = 0; i < p->nworkers; i++) {
                if (p->workers[i].hello)
                    continue;
                char who[128], why[384];
                worker_name(&p->workers[i], who, sizeof who);
                snprintf(why, sizeof why, "MPI pool broken: %s did not say hello within %.1f s "
                                          "of its start", who, (double)p->hb_timeout_ns / 1e9);
                break_pool(p, why);
                break;
            }
        }
        if (p->comm == MPI_COMM_NULL || !check_time(p, now)) {
            pthread_mutex_lock(&p->mu);
            snprintf(msg, msize, "%.360s", p->broken_msg);
            pthread_mutex_unlock(&p->mu);
            return CF_EBROKEN;
        }
        if (now - last < CF__MPI_SPIN_NS)
            continue;
        /* Nothing can wake this: it ends by itself, once `waited` passes
         * heartbeat_timeout at the latest (MPI has no waiting that does
         * not spin; each nap is at most CF__MPI_NAP_MAX_NS). */
        nap = cf__mpi_next_nap(nap, CF__MPI_NAP_MAX_NS);
        struct timespec ts = {0, (long)nap};
        nanosleep(&ts, NULL);
        napped = true;
    }
}

/* ---- the manager ------------------------------------------------------------ */

/* Is a big message moving between the manager and a worker?  Open MPI
 * moves a message over its TCP transport only while the sending and the
 * receiving rank call into MPI, and the worker's side blocks in MPI for
 * it; so while one moves, the manager polls without napping (until it
 * has not moved on for CF__MPI_MOVE_SPIN_NS, p->moved_at), else each
 * nap (up to CF__MPI_NAP_MAX_NS) lets a socket buffer's worth through: a
 * 64 MiB echo took 3.5-13 s at load 10 on 2 cores that way.  Moving: a
 * message being received (the worker is sending it, in a blocking
 * MPI_Send), or a big send to a worker whose only job it is (so it is
 * waiting for it); a big send queued behind a call the worker still runs
 * waits with the usual naps.  A worker that dies meanwhile ends the
 * spinning through the heartbeat check. */
static bool moving(const mpi_pool *p)
{
    for (int i = 0; i < p->nworkers; i++) {
        const mworker *w = &p->workers[i];
        if (w->receiving && (w->rlong ? (size_t)w->rpart : w->rlen) > CF__MPI_BIG_MSG)
            return true;
    }
    for (const msend *s = p->sends; s; s = s->next)
        if (s->big && s->to->njobs <= 1)
            return true;
    return false;
}

static bool busy(const mpi_pool *p)
{
    if (p->sends)
        return true;
    for (int i = 0; i < p->nworkers; i++)
        if (p->workers[i].njobs || p->workers[i].receiving)
            return true;
    return false;
}

/* A spawned job's MPI_Comm_disconnect: collective, so a worker that said
 * BYE but never disconnects holds it for ever, and MPI gives no way out.
 * The time it began is noted for join_manager(), which gives up on the
 * manager after LEAVE_GRACE_NS more than heartbeat_timeout. */
static void disconnect(mpi_pool *p, MPI_Comm *comm)
{
    pthread_mutex_lock(&p->mu);
    p->disconnect_at = cf__now_ns();
    pthread_mutex_unlock(&p->mu);
    MPI_Comm_disconnect(comm);
    pthread_mutex_lock(&p->mu);
    p->disconnect_at = 0;
    pthread_mutex_unlock(&p->mu);
}

/* Shut down with nothing left to do: EXIT to every worker, wait for their
 * BYE (a worker silent too long breaks the pool instead, and so does one
 * that keeps beating without a BYE for LEAVE_GRACE_NS more than
 * heartbeat_timeout: it has nothing left to run), then let go of the
 * communicator. */
static void leave(mpi_pool *p)
{
    for (int i = 0; i < p->nworkers; i++) {
        mworker *w = &p->workers[i];
        if (!post_send(p, w, malloc(1), 0, MTAG_EXIT)) {
            /* A worker that never hears EXIT would serve for ever. */
            break_pool(p, "MPI pool: could not tell the workers to leave (out of memory or "
                          "an MPI error); the communicator was freed");
            return;
        }
        w->exit_sent = true;
    }
    int64_t nap = 0, last = cf__now_ns();
    int64_t bye_by = last + p->hb_timeout_ns + LEAVE_GRACE_NS;
    for (;;) {
        bool all = true;
        for (int i = 0; i < p->nworkers; i++)
            all = all && p->workers[i].bye;
        if (all)
            break;
        if (receive(p, true) || reap_sends(p)) {
            nap = 0;
            last = cf__now_ns();
        }
        if (p->comm == MPI_COMM_NULL || !check_time(p, cf__now_ns()))
            return; /* broken meanwhile: the communicator is freed */
        if (cf__now_ns() > bye_by) {
            for (int i = 0; i < p->nworkers; i++)
                p->workers[i].let_go = !p->workers[i].bye;
            for (int i = 0; i < p->nworkers; i++) {
                if (p->workers[i].bye)
                    continue;
                char who[128], msg[384];
                worker_name(&p->workers[i], who, sizeof who);
                snprintf(msg, sizeof msg, "MPI pool: %s did not say BYE within %.1f s of "
                                          "EXIT; it is let go", who,
                         (double)(p->hb_timeout_ns + LEAVE_GRACE_NS) / 1e9);
                break_pool(p, msg); /* which logs it */
                return; /* wind_down() waits for no let_go worker */
            }
        }
        if (cf__now_ns() - last < CF__MPI_SPIN_NS)
            continue;
        /* Ends by itself, by bye_by at the latest: nothing else can wake
         * it. */
        nap = cf__mpi_next_nap(nap, CF__MPI_NAP_MAX_NS);
        struct timespec ts = {0, (long)nap};
        nanosleep(&ts, NULL);
    }
    while (p->sends)
        reap_sends(p); /* the EXITs, received since every BYE came: at once */
    /* Everyone said BYE: nothing is in flight, so the collective
     * disconnect of a spawned job's intercommunicator cannot hang. */
    if (p->spawn)
        disconnect(p, &p->comm);
    else
        MPI_Comm_free(&p->comm);
    p->comm = MPI_COMM_NULL;
}

static void free_pool(mpi_pool *p);

/* Spins until a request (submit, shutdown, an interrupt or a stop) bumps
 * p->seq past `seen`, or `until` passes.  Returns true if one came.
 * Why: with nothing out the manager would sleep on its condition
 * variable, and a caller that submits one call at a time would pay a
 * wake-up (a system call on each side and a thread switch, ~10 us on a
 * VM) for each call.  So right after an answer left nothing out, the
 * manager waits for the next request spinning - only if the last request
 * after such an answer came within REQUEST_SPIN_MAX_NS / 2, and for
 * twice that gap (at least REQUEST_SPIN_MIN_NS): an idle pool, or one
 * whose callers pause, never spins.
 * Liveness: the loop ends by `until` (at most REQUEST_SPIN_MAX_NS after
 * the answer), and the caller then takes the usual path (MPI probes, and
 * the wait on `cv` with `seq` read under mu), which misses nothing: a
 * request bumps `seq` under mu and signals `cv`.  MPI is not probed
 * meanwhile: nothing is out, and heartbeats wait a moment.  The load is
 * relaxed: what a request changed is read under mu in the next round.  It
 * yields the CPU first and then every 64 turns, so that the thread it
 * waits for (the submitter, just woken by the answer) is not kept off a
 * CPU by the spin. */
static bool await_request(mpi_pool *p, uint64_t seen, int64_t until)
{
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&p->seq, memory_order_relaxed) != seen)
            return true;
        if (i % 16 == 0 && cf__now_ns() >= until)
            return false;
        if (i == 1 || i % 64 == 0)
            sched_yield();
        cf__cpu_relax();
    }
}

static void *manager_main(void *arg);

/* The manager thread: manager_main(), then its end noted for
 * join_manager() - unless the start-up was given up, when manager_main()
 * freed the pool itself (it returns the pool then). */
static void *manager_thread(void *arg)
{
    mpi_pool *p = arg;
    if (manager_main(p) == p)
        return NULL;
    pthread_mutex_lock(&p->mu);
    p->manager_done = true;
    if (p->left_stuck)
        atomic_fetch_sub(&stuck_managers, 1); /* out of MPI after all */
    pthread_cond_broadcast(&p->join_cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void *manager_main(void *arg)
{
    mpi_pool *p = arg;
    tls_manager = p;
    cf__set_thread_name("cf-mpi-manager");
    char msg[384] = "";
    int rc = p->spawn ? start_spawn(p, msg, sizeof msg) : CF_OK;
    pthread_mutex_lock(&p->mu);
    p->spawned = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    int64_t now = cf__now_ns();
    for (int i = 0; i < p->nworkers; i++)
        p->workers[i].last_seen = p->workers[i].last_look = p->workers[i].chatter_since = now;
    if (p->world)
        for (int i = 0; i < p->nworkers; i++)
            p->workers[i].chatter_since = cf__mpi_static_since;
    if (rc == CF_OK)
        rc = await_hello(p, msg, sizeof msg);
    if (rc == CF_OK)
        atomic_store_explicit(&p->live, p->nworkers, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    p->started = true;
    p->start_rc = rc;
    snprintf(p->start_msg, sizeof p->start_msg, "%s", msg);
    bool abandoned = p->abandoned;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (rc != CF_OK || abandoned) {
        /* Workers that started (all of them, when start-up ended after
         * the constructor gave up) are told to leave, as from any broken
         * pool; await_hello() told them already if one fell silent. */
        if (p->comm != MPI_COMM_NULL)
            break_pool(p, "MPI pool: its start-up was given up");
        wind_down(p);
        if (abandoned) {
            /* Nobody else holds the pool (it was never registered). */
            pthread_detach(pthread_self());
            free_pool(p);
            atomic_fetch_sub(&stuck_managers, 1);
            return p; /* freed: manager_thread() must not touch it */
        }
        return NULL;
    }

    /* avg_wait: how long the manager recently waited for MPI traffic
     * while calls were out (see cf__mpi_spin_for).  last_answer: when an
     * answer last left nothing out (0: never); request_gap: how long
     * after it the next request came, the last time one came while
     * nothing was out (see await_request). */
    int64_t last_progress = cf__now_ns(), avg_wait = 0;
    int64_t last_answer = 0, request_gap = INT64_MAX;
    bool was_busy = false, napped = false;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        uint64_t seq = p->seq;
        pthread_mutex_unlock(&p->mu);
        bool progress = dispatch(p);
        progress |= handle_interrupts(p);
        progress |= handle_stop(p);
        progress |= receive(p, false);
        /* After a nap, a second look: a probe makes progress only when it
         * found nothing, and that progress may be what read the answer in
         * (see wait_message in mpi_worker.c); without it the answer waited
         * for the next nap. */
        if (napped && !progress && p->comm != MPI_COMM_NULL)
            progress |= receive(p, false);
        napped = false;
        progress |= p->comm != MPI_COMM_NULL && reap_sends(p);
        now = cf__now_ns();
        if (p->comm == MPI_COMM_NULL || !check_time(p, now)) {
            wind_down(p); /* broken: everything failed, nothing to serve */
            return NULL;
        }
        if (progress) {
            if (was_busy)
                cf__mpi_average(&avg_wait, now - last_progress);
            last_progress = now;
            bool out = busy(p);
            if (was_busy && !out) {
                /* A caller that submits one call at a time sends the next
                 * one right after this answer: wait for it here, spinning
                 * rather than sleeping, when the last one came soon (see
                 * await_request), and dispatch it at once. */
                last_answer = now;
                /* request_gap starts at INT64_MAX: test the bound before
                 * doubling it. */
                if (request_gap <= REQUEST_SPIN_MAX_NS / 2) {
                    int64_t spin = 2 * request_gap < REQUEST_SPIN_MIN_NS ? REQUEST_SPIN_MIN_NS
                                                                         : 2 * request_gap;
                    if (await_request(p, seq, now + spin))
                        request_gap = cf__now_ns() - last_answer;
                }
            }
            was_busy = out;
            continue;
        }
        /* A big transfer moves only while the manager calls into MPI:
         * it spins for it, unless it has not moved on for
         * CF__MPI_MOVE_SPIN_NS (then the link sets the pace, and the naps
         * below let the socket buffers carry the bytes). */
        bool work = busy(p);
        if (work && (now - last_progress < cf__mpi_spin_for(avg_wait) ||
                     (now - p->moved_at < CF__MPI_MOVE_SPIN_NS && moving(p)))) {
            sched_yield();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        if (p->shutdown && !p->pending_head && !work) {
            pthread_mutex_unlock(&p->mu);
            leave(p);
            wind_down(p); /* if it broke meanwhile */
            return NULL;
        }
        /* Woken by submit and shutdown (seq, the condition variable) - or
         * by the timeout, the only way to notice MPI traffic: an eighth of
         * the time waited so far while calls are out (an answer is seen
         * at most that late), a fifth of the heartbeat timeout when idle
         * (to drain heartbeats and notice a dead worker within the
         * bound). */
        int64_t wait_ns = p->hb_timeout_ns / 5;
        if (work)
            wait_ns = cf__mpi_nap_for(now - last_progress, CF__MPI_NAP_MAX_NS);
        if (p->seq == seq) {
            struct timespec ts = cf__mpi_mono_after(wait_ns);
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            napped = true;
        }
        /* A request after the pool's last answer: how soon it came. */
        if (!work && last_answer && p->seq != seq)
            request_gap = cf__now_ns() - last_answer;
        pthread_mutex_unlock(&p->mu);
    }
}

/* ---- the engine ------------------------------------------------------------- */

static int enqueue(mpi_pool *p, mjob *j)
{
    pthread_mutex_lock(&p->mu);
    if (p->shutdown || p->broken) {
        /* After cf_terminate_workers() the pool is shut down, not broken. */
        int rc = p->broken && !p->stop_sig ? cf__fail(CF_EBROKEN, "submit: %s", p->broken_msg)
                           : cf__fail(CF_ESHUTDOWN, "submit: cannot schedule new futures after "
                                                    "shutdown");
        pthread_mutex_unlock(&p->mu);
        if (j->chunk)
            cf__chunk_release(j->chunk);
        for (uint32_t i = 0; !j->chunk && i < j->n; i++)
            cf_future_release(j->fs[i]);
        free(j);
        return rc;
    }
    j->next = NULL;
    if (p->pending_tail)
        p->pending_tail->next = j;
    else
        p->pending_head = j;
    p->pending_tail = j;
    p->npending++;
    p->seq++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return CF_OK;
}

static int mp_submit_batch(cf_executor *ex, cf_future **fs, size_t n)
{
    mjob *j = malloc(sizeof *j + n * sizeof(cf_future *));
    if (!j) {
        for (size_t i = 0; i < n; i++)
            cf_future_release(fs[i]);
        return cf__fail(CF_ENOMEM, "submit: out of memory");
    }
    j->n = (uint32_t)n;
    j->chunk = NULL;
    j->fn = fs[0]->call.fn;
    j->est_ns = -1;
    j->started = false;
    j->abandoned = false;
    j->timeout_ns = fs[0]->timeout_ns;
    if (j->timeout_ns != CF__NS_FOREVER && n > 1)
        j->timeout_ns = j->timeout_ns > INT64_MAX / (int64_t)n ? CF__NS_FOREVER
                                                                : j->timeout_ns * (int64_t)n;
    j->deadline_ns = CF__NS_FOREVER;
    memcpy(j->fs, fs, n * sizeof *fs);
    return enqueue(pool_of(ex), j);
}

/* A map chunk as one job: the calls travel in one CALL frame, as a
 * chunk of futures would, and start together. */
static int mp_submit_chunk(cf_executor *ex, cf__chunk *c)
{
    mjob *j = malloc(sizeof *j);
    if (!j) {
        cf__chunk_release(c);
        return cf__fail(CF_ENOMEM, "submit: out of memory");
    }
    j->n = c->n;
    j->chunk = c;
    j->fn = c->fn;
    j->est_ns = -1;
    j->started = false;
    j->abandoned = false;
    j->timeout_ns = CF__NS_FOREVER;
    j->deadline_ns = CF__NS_FOREVER;
    return enqueue(pool_of(ex), j);
}

static int mp_submit(cf_executor *ex, cf_future *f)
{
    return mp_submit_batch(ex, &f, 1);
}

static void mp_interrupt(cf_executor *ex, cf_future *f)
{
    mpi_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->mu);
    if (p->ninterrupts == p->interrupts_cap) {
        size_t ncap = p->interrupts_cap ? 2 * p->interrupts_cap : 4;
        cf_future **nf = realloc(p->interrupts, ncap * sizeof *nf);
        if (!nf) {
            pthread_mutex_unlock(&p->mu);
            cf__log("mpi pool: out of memory passing on an interrupt");
            return;
        }
        p->interrupts = nf;
        p->interrupts_cap = ncap;
    }
    p->interrupts[p->ninterrupts++] = cf_future_retain(f);
    p->seq++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static bool mp_is_worker(const cf_executor *ex)
{
    return tls_manager == (const mpi_pool *)ex;
}

static int mp_worker_count(const cf_executor *ex)
{
    const mpi_pool *p = (const mpi_pool *)ex;
    return atomic_load_explicit(&p->live, memory_order_relaxed);
}

static void mp_stop_workers(cf_executor *ex, bool kill)
{
    mpi_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->mu);
    if (!p->stop_sig)
        p->stop_sig = kill ? SIGKILL : SIGTERM;
    p->seq++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Waits for the manager thread to end and joins it - or, when it has
 * been inside MPI_Comm_disconnect for LEAVE_GRACE_NS more than
 * heartbeat_timeout (a spawned worker said BYE and never disconnected;
 * MPI has no way out of that), leaves it there: the thread is detached,
 * counted as stuck (so that MPI is not finalized at exit under it), and
 * the pool is never freed.  Liveness: the manager thread broadcasts
 * join_cv as it ends (manager_thread); the wait is otherwise timed, and
 * ends by the bound while the manager is in a disconnect.  Other stages
 * of the end (a call still running, wind_down's bounded hearing) are
 * waited for as long as they take, as a destroy waits for its calls. */
static void join_manager(mpi_pool *p)
{
    pthread_mutex_lock(&p->join_mu);
    if (!p->joined) {
        pthread_mutex_lock(&p->mu);
        while (!p->manager_done) {
            int64_t now = cf__now_ns(), wait_ns = 1000000000;
            if (p->disconnect_at) {
                int64_t end = p->disconnect_at + p->hb_timeout_ns + LEAVE_GRACE_NS;
                if (now >= end) {
                    p->left_stuck = true;
                    atomic_fetch_add(&stuck_managers, 1);
                    break;
                }
                if (end - now < wait_ns)
                    wait_ns = end - now;
            }
            struct timespec ts = cf__mpi_mono_after(wait_ns);
            pthread_cond_timedwait(&p->join_cv, &p->mu, &ts);
        }
        bool left = p->left_stuck;
        pthread_mutex_unlock(&p->mu);
        if (left) {
            cf__log("mpi: a spawned worker said BYE but does not disconnect; the pool's "
                    "manager thread is left inside MPI_Comm_disconnect, and unless it returns "
                    "MPI will not be finalized at exit");
            pthread_detach(p->manager);
        } else {
            pthread_join(p->manager, NULL);
        }
        p->joined = true;
    }
    pthread_mutex_unlock(&p->join_mu);
}

static int mp_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    mpi_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->mu);
    p->shutdown = true;
    p->seq++;
    mjob *cancel = NULL;
    if (cancel_futures) {
        /* Pending jobs were never handed to a worker. */
        cancel = p->pending_head;
        p->pending_head = p->pending_tail = NULL;
        p->npending = 0;
    }
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    while (cancel) {
        mjob *next = cancel->next;
        if (cancel->chunk) {
            cf__chunk_cancel(cancel->chunk);
            cf__chunk_release(cancel->chunk);
        }
        for (uint32_t i = 0; !cancel->chunk && i < cancel->n; i++) {
            cf_future_cancel(cancel->fs[i]);
            cf_future_release(cancel->fs[i]);
        }
        free(cancel);
        cancel = next;
    }
    if (!wait)
        return CF_OK;
    if (mp_is_worker(ex))
        return cf__fail(CF_EDEADLK, "shutdown: wait requested from the pool's own manager "
                                    "thread (a done-callback), which cannot wait for itself");
    join_manager(p);
    return CF_OK;
}

static void unlink_live(mpi_pool *p)
{
    pthread_mutex_lock(&pools_mu);
    for (mpi_pool **pp = &live_pools; *pp; pp = &(*pp)->next_live)
        if (*pp == p) {
            *pp = p->next_live;
            break;
        }
    pthread_mutex_unlock(&pools_mu);
}

static void free_pool(mpi_pool *p)
{
    for (size_t i = 0; i < p->ninterrupts; i++)
        cf_future_release(p->interrupts[i]);
    free(p->interrupts);
    for (int i = 0; i < p->nworkers; i++) {
        free(p->workers[i].rbuf);
        free(p->workers[i].batch);
    }
    free(p->workers);
    wenc_free(&p->enc);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->join_mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->join_cv);
    free(p);
}

static void mp_destroy(cf_executor *ex)
{
    mpi_pool *p = pool_of(ex);
    unlink_live(p);
    pthread_mutex_lock(&p->mu);
    bool left = p->left_stuck; /* set by join_manager(), which ran before */
    pthread_mutex_unlock(&p->mu);
    if (!left)
        free_pool(p); /* else its manager thread may still return into it */
}

static const cf__engine mpi_engine = {
    .name = "mpi",
    .copies_args = true,
    .submit = mp_submit,
    .shutdown = mp_shutdown,
    .is_worker = mp_is_worker,
    .worker_count = mp_worker_count,
    .submit_batch = mp_submit_batch,
    .submit_chunk = mp_submit_chunk,
    .interrupt = mp_interrupt,
    .stop_workers = mp_stop_workers,
    .destroy = mp_destroy,
};

/* Ends every live pool (at exit, or first thing in MPI_Finalize).  Each
 * is held by a reference of its executor while it is shut down, taken
 * under pools_mu while the pool is still listed: a cf_executor_destroy()
 * of it in another thread could otherwise free it meanwhile.  One whose
 * last reference is already gone is being destroyed (its mp_destroy()
 * waits for pools_mu to unlist it) and is left to that. */
void cf__mpi_pools_shutdown_all(void)
{
    for (;;) {
        pthread_mutex_lock(&pools_mu);
        mpi_pool *p = live_pools;
        bool held = false;
        if (p) {
            live_pools = p->next_live;
            uint32_t refs = atomic_load(&p->base.refs);
            while (refs && !atomic_compare_exchange_weak(&p->base.refs, &refs, refs + 1))
                ;
            held = refs != 0;
        }
        pthread_mutex_unlock(&pools_mu);
        if (!p)
            break;
        if (!held)
            continue;
        if (tls_manager == p) {
            /* exit() (or MPI_Finalize) from one of this pool's
             * done-callbacks, on its manager thread, which cannot wait for
             * itself and will not return to its loop: its workers are
             * told here that the pool is over, or static ranks would
             * serve on and never reach the barrier MPI_Finalize ends
             * with (it hung there). */
            mp_shutdown(&p->base, false, false);
            if (p->comm != MPI_COMM_NULL)
                tell_exit_broken(p);
            continue; /* the reference stays: this thread runs in it */
        }
        mp_shutdown(&p->base, true, false);
        cf__executor_unref(&p->base); /* may be the last: destroys it */
    }
}

void cf__mpi_static_release(void)
{
    pthread_mutex_lock(&pools_mu);
    MPI_Comm comm = cf__mpi_static_comm;
    cf__mpi_static_comm = MPI_COMM_NULL;
    pthread_mutex_unlock(&pools_mu);
    if (comm == MPI_COMM_NULL)
        return;
    int size = 1;
    MPI_Comm_size(comm, &size);
    for (int r = 1; r < size; r++)
        MPI_Send(NULL, 0, MPI_BYTE, r, MTAG_EXIT, comm);
    MPI_Comm_free(&comm); /* their HELLO, heartbeats and BYE go unread */
}

void cf__mpi_kept_comms_free(void)
{
    pthread_mutex_lock(&pools_mu);
    kept_comm *k = kept_comms;
    kept_comms = NULL;
    pthread_mutex_unlock(&pools_mu);
    while (k) {
        kept_comm *next = k->next;
        MPI_Comm_free(&k->comm);
        free(k);
        k = next;
    }
}

void cf__mpi_orphans_free(void)
{
    pthread_mutex_lock(&pools_mu);
    while (orphans) {
        msend *o = orphans;
        orphans = o->next;
        msend_free(o);
    }
    pthread_mutex_unlock(&pools_mu);
}

CF__API void cf_mpi_pool_options_init(cf_mpi_pool_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->mode = CF_MPI_AUTO;
    opts->max_workers = CF_AUTO;
    opts->heartbeat_timeout = 5.0;
    opts->oversubscribe = true;
    opts->start_timeout = 60.0;
}

/* Workers for CF_AUTO in spawn mode. */
static int auto_workers(void)
{
    const char *env = getenv("CFUTURES_MPI_WORKERS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        return *end || v < 1 || v > MAX_WORKERS ? -1 : (int)v;
    }
    int *usize = NULL, flag = 0, wsize = 1;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_UNIVERSE_SIZE, &usize, &flag);
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    if (flag && usize && *usize > wsize)
        return *usize - wsize > MAX_WORKERS ? MAX_WORKERS : *usize - wsize;
    return cf_usable_cpus();
}

static int launch(cf_executor **out, bool spawn, bool world, MPI_Comm comm, int n, int root,
                  const cf_mpi_pool_options *o, const char *who);

/* Checks the options every constructor takes. */
static int check_options(const cf_mpi_pool_options *o, const char *who)
{
    if (cf_in_mpi_worker())
        return cf__fail(CF_EINVALSTATE, "%s: called inside an MPI worker", who);
    if (o->mode != CF_MPI_AUTO && o->mode != CF_MPI_SPAWN && o->mode != CF_MPI_STATIC)
        return cf__fail(CF_EINVAL, "%s: unknown mode %d", who, (int)o->mode);
    if (!(o->heartbeat_timeout > 0 && o->heartbeat_timeout <= 86400))
        return cf__fail(CF_EINVAL, "%s: heartbeat_timeout must be in (0, 86400] seconds, got %g",
                        who, o->heartbeat_timeout);
    if (!(o->start_timeout > 0 && o->start_timeout <= 86400))
        return cf__fail(CF_EINVAL, "%s: start_timeout must be in (0, 86400] seconds, got %g", who,
                        o->start_timeout);
    if (o->max_workers != CF_AUTO && (o->max_workers < 1 || o->max_workers > MAX_WORKERS))
        return cf__fail(CF_EINVAL, "%s: max_workers must be CF_AUTO or 1..%d, got %d", who,
                        MAX_WORKERS, o->max_workers);
    return CF_OK;
}

CF__API int cf_mpi_pool_new(cf_executor **out, const cf_mpi_pool_options *opts)
{
    if (!out)
        return cf__fail(CF_EINVAL, "mpi_pool_new: out is NULL");
    *out = NULL;
    cf_mpi_pool_options o;
    if (opts)
        o = *opts;
    else
        cf_mpi_pool_options_init(&o);
    int rc = check_options(&o, "mpi_pool_new");
    if (rc != CF_OK)
        return rc;
    if (!cf__mpi_init_called)
        return cf__fail(CF_EINVALSTATE, "mpi_pool_new: call cf_mpi_init(argc, argv) at the top "
                                         "of main(); the workers are copies of this program "
                                         "that stop there");
    bool spawn = o.mode == CF_MPI_SPAWN || (o.mode == CF_MPI_AUTO && !cf__mpi_static_world);
    if (!spawn && !cf__mpi_static_world)
        return cf__fail(CF_EINVALSTATE, "mpi_pool_new: static mode needs a launch with several "
                                        "ranks (mpirun -np N with N >= 2)");
    rc = cf__mpi_ensure_init("mpi_pool_new");
    if (rc != CF_OK)
        return rc;
    int n;
    if (spawn) {
        n = o.max_workers == CF_AUTO ? auto_workers() : o.max_workers;
        if (n < 1)
            return cf__fail(CF_EINVAL, "mpi_pool_new: CFUTURES_MPI_WORKERS must be 1..%d",
                            MAX_WORKERS);
    } else {
        if (o.heartbeat_timeout < 1)
            return cf__fail(CF_EINVAL, "mpi_pool_new: static mode needs heartbeat_timeout >= 1 "
                                       "s (its workers beat every %.1f s)",
                            (double)CF__MPI_STATIC_BEAT_NS / 1e9);
        /* The ranks serve one pool, which takes the communicator. */
        pthread_mutex_lock(&pools_mu);
        MPI_Comm comm = cf__mpi_static_comm;
        int wsize = 1;
        if (comm != MPI_COMM_NULL)
            MPI_Comm_size(comm, &wsize);
        n = wsize - 1;
        bool take = comm != MPI_COMM_NULL && (o.max_workers == CF_AUTO || o.max_workers == n);
        if (take)
            cf__mpi_static_comm = MPI_COMM_NULL;
        pthread_mutex_unlock(&pools_mu);
        if (comm == MPI_COMM_NULL)
            return cf__fail(CF_EINVALSTATE, "mpi_pool_new: the ranks of this mpirun launch "
                                            "served a pool already and have exited");
        if (!take)
            return cf__fail(CF_EINVAL, "mpi_pool_new: static mode has %d worker ranks, "
                                       "max_workers asks for %d", n, o.max_workers);
        return launch(out, false, true, comm, n, 0, &o, "mpi_pool_new");
    }
    return launch(out, true, false, MPI_COMM_NULL, n, -1, &o, "mpi_pool_new");
}

/* Makes the pool: `n` workers, on `comm` (spawn: made by the manager)
 * where they are every rank but `root`; the pool owns `comm` from here
 * on.  Waits until they all said hello. */
static int launch(cf_executor **out, bool spawn, bool world, MPI_Comm comm, int n, int root,
                  const cf_mpi_pool_options *o, const char *who)
{
    mpi_pool *p = calloc(1, sizeof *p);
    mworker *ws = calloc((size_t)n, sizeof *ws);
    if (!p || !ws) {
        free(p);
        free(ws);
        if (comm != MPI_COMM_NULL)
            MPI_Comm_free(&comm);
        return cf__fail(CF_ENOMEM, "%s: out of memory", who);
    }
    p->spawn = spawn;
    p->spawned = !spawn; /* nothing to spawn: only await_hello's bound */
    p->world = world;
    p->oversubscribe = o->oversubscribe;
    p->nworkers = n;
    p->workers = ws;
    p->hb_timeout_ns = (int64_t)(o->heartbeat_timeout * 1e9);
    p->ahead_ns = (int64_t)cf__mpi_test_knob("CFUTURES_TEST_MPI_AHEAD_NS", 1000,
                                             10000000000ULL, AHEAD_NS);
    p->comm = comm;
    p->dying = MPI_COMM_NULL; /* not 0 in Open MPI */
    for (int i = 0; i < n; i++) {
        ws[i].rank = spawn || i < root ? i : i + 1;
        ws[i].shown_rank = ws[i].rank;
        ws[i].shown_size = spawn ? n : n + 1;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->join_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_cond_init(&p->join_cv, &ca);
    pthread_condattr_destroy(&ca);
    /* The manager blocks asynchronous signals, so they reach the
     * application's threads. */
    int rc = cf__thread_start(&p->manager, manager_thread, p);
    if (rc != 0) {
        if (p->comm != MPI_COMM_NULL)
            MPI_Comm_free(&p->comm);
        free_pool(p);
        return cf__fail(CF_ESYS, "%s: cannot start the manager thread: %s", who, strerror(rc));
    }
    /* start_timeout bounds MPI_Comm_spawn alone, which cannot be
     * interrupted; after it the manager ends start-up by itself within
     * heartbeat_timeout (await_hello) and a round, so that part is waited
     * for with a wide bound that only a manager stuck inside MPI reaches.
     * A pool is given up (abandoned) only then: while its manager is still
     * inside MPI, and never while it loops in await_hello, which an
     * MPI_Finalize of the program's would pull MPI away from (it crashed
     * there).  Woken by the manager (spawned, started) or the bound. */
    struct timespec until = cf__mpi_mono_after((int64_t)(o->start_timeout * 1e9));
    bool after_spawn = false;
    pthread_mutex_lock(&p->mu);
    while (!p->started) {
        if (p->spawned && !after_spawn) {
            after_spawn = true;
            until = cf__mpi_mono_after(p->hb_timeout_ns + (int64_t)30 * 1000000000);
        }
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT &&
            (p->spawned == after_spawn))
            break;
    }
    if (!p->started) {
        p->abandoned = true;
        atomic_fetch_add(&stuck_managers, 1);
        pthread_mutex_unlock(&p->mu);
        if (after_spawn)
            return cf__fail(CF_EBROKEN, "%s: the start-up of %d workers is stuck inside MPI "
                                        "after their spawn; the pool is abandoned", who, n);
        return cf__fail(CF_EBROKEN, "%s: MPI did not start the %d workers within %g s (do "
                                    "they die inside MPI_Init?); the pool is abandoned",
                        who, n, o->start_timeout);
    }
    rc = p->start_rc;
    char msg[384];
    snprintf(msg, sizeof msg, "%s", p->start_msg);
    pthread_mutex_unlock(&p->mu);
    if (rc != CF_OK) {
        join_manager(p);
        free_pool(p);
        return cf__fail(rc, "%s: %s", who, msg);
    }
    cf__executor_register(&p->base, &mpi_engine);
    pthread_mutex_lock(&pools_mu);
    p->next_live = live_pools;
    live_pools = p;
    pthread_mutex_unlock(&pools_mu);
    *out = &p->base;
    return CF_OK;
}

CF__API int cf_mpi_comm_pool_new(cf_executor **out, MPI_Comm comm, int root,
                                 const cf_mpi_pool_options *opts)
{
    if (!out)
        return cf__fail(CF_EINVAL, "mpi_comm_pool_new: out is NULL");
    *out = NULL;
    cf_mpi_pool_options o;
    if (opts)
        o = *opts;
    else
        cf_mpi_pool_options_init(&o);
    int rc = check_options(&o, "mpi_comm_pool_new");
    if (rc != CF_OK)
        return rc;
    int inited = 0, finalized = 0, provided = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized)
        return cf__fail(CF_EINVALSTATE, "mpi_comm_pool_new: MPI is not initialised (or already "
                                        "finalized); the program owns MPI here");
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE)
        return cf__fail(CF_EINVALSTATE, "mpi_comm_pool_new: MPI was initialised with thread "
                                        "level %d; the MPI engine needs MPI_THREAD_MULTIPLE",
                        provided);
    int inter = 0, size = 0, rank = 0;
    if (comm == MPI_COMM_NULL || MPI_Comm_test_inter(comm, &inter) != MPI_SUCCESS || inter)
        return cf__fail(CF_EINVAL, "mpi_comm_pool_new: comm must be an intracommunicator");
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    if (root < 0 || root >= size)
        return cf__fail(CF_EINVAL, "mpi_comm_pool_new: root %d is not a rank of comm (size %d)",
                        root, size);
    if (size < 2)
        return cf__fail(CF_EINVAL, "mpi_comm_pool_new: comm has no rank besides the root");
    if (o.max_workers != CF_AUTO && o.max_workers != size - 1)
        return cf__fail(CF_EINVAL, "mpi_comm_pool_new: comm has %d worker ranks, max_workers "
                                   "asks for %d", size - 1, o.max_workers);
    /* Collective: every rank gets its own context for this pool. */
    MPI_Comm dup;
    if (MPI_Comm_dup(comm, &dup) != MPI_SUCCESS)
        return cf__fail(CF_ESYS, "mpi_comm_pool_new: MPI_Comm_dup failed");
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    cf__mpi_hook_finalize();
    if (rank != root) {
        cf__mpi_serve(dup, root, (int64_t)(o.heartbeat_timeout * 1e9) / 5);
        MPI_Comm_free(&dup);
        return CF_OK;
    }
    return launch(out, false, false, dup, size - 1, root, &o, "mpi_comm_pool_new");
}
