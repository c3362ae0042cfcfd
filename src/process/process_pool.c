/* SPDX-License-Identifier: MIT */
/*
 * process_pool.c - the process engine: calls run in worker processes.
 *
 * Design notes
 *
 *   submit ──► pending jobs (mu) ──► manager thread ──► socket ──► worker
 *                                      │  ▲ RESULT frames (id):   │
 *                                      │  └─ result ring (BELL ───┤
 *                                      │     only while we sleep) │
 *   cf_future_cancel ─┐                ▼ attach: word = PENDING   │
 *                     └─ CAS PENDING→CANCELLED ─► claim words ◄───┘ CAS PENDING→RUNNING
 *                        (any thread)             (memfd shared     before each call;
 *                                                  with one worker)  skipped if CANCELLED
 *
 * - One manager thread per pool owns every worker: it dispatches jobs,
 *   writes frames (non-blocking, buffered per worker), reads results,
 *   completes futures (so done-callbacks run on it, as on CPython's
 *   manager thread), watches each worker's pidfd, kills workers whose call
 *   overran its timeout or was interrupted, and reaps every child it
 *   started.  Submitters only touch `mu`.
 * - A job is one call, or one map chunk that a worker runs as a unit.
 *   A worker runs its jobs in order and answers each with one RESULT
 *   frame before it starts the next, so when a worker dies its oldest
 *   unanswered job is the one it was running; later jobs queued on it had
 *   not started and go back to the front of the pending queue.
 * - A call is RUNNING only once its worker has begun it.  Each worker
 *   shares NCLAIMS claim words with the parent (a memfd sent after INIT;
 *   wire.h).  Dispatch attaches every call of a job to the next word
 *   (PENDING) under `mu`; the worker moves a call's word PENDING→RUNNING
 *   just before it begins it, and cf_future_cancel() in any thread moves
 *   it PENDING→CANCELLED; one of the two compare-and-swaps wins.  So a
 *   call queued on a worker stays cancellable, at most one call per
 *   worker is RUNNING (a chunk's calls one by one), and the state seen in
 *   the parent catches up lazily (future.c: a PENDING future whose word
 *   was claimed reads as RUNNING).  The worker answers a call it found
 *   cancelled as "skipped".  Batching is kept: a worker still gets up to
 *   DEPTH jobs while a backlog exists (more pending jobs than workers),
 *   so the frames of many tiny calls travel in one write.
 * - Answers come back through a result ring in memory shared with each
 *   worker (process.h): the worker publishes its inline RESULT frames
 *   there and writes to its socket only when the manager has said it
 *   sleeps (a BELL), so a busy pool makes no system call per answer.  The
 *   ring is as untrusted as the words: its positions are checked, its
 *   bytes copied out before they are decoded, and its frames must answer
 *   the jobs in order, a SOCKET frame standing in for an answer that
 *   comes through the socket (ring_pump, read_some).
 * - Where a wake-up would cost as much as the wait - one tiny call in
 *   flight, or the next call of a caller that submits one at a time due -
 *   the manager spins, bounded and yielding, before it sleeps
 *   (spin_deadline, manager_spin): it then reads `seq` and the rings'
 *   heads itself, so neither the submitter's signal nor the worker's
 *   BELL is needed.  It follows recent activity only: an idle pool, or
 *   one with more than one job in flight, does not spin.  The worker side
 *   of the same case: a worker that answered a single call, sent while it
 *   was the only job in flight (the ring's `alone` word, stored at
 *   dispatch), and expects the next soon watches the ring's `sent` word,
 *   which the manager stores after every write to its socket
 *   (flush_out), for a bounded time before it sleeps in recvmsg()
 *   (process_worker.c, worker_spin).
 * - The words are written by an untrusted process.  The parent reads
 *   nothing into a word but "claimed or not", never trusts it for memory
 *   safety, and checks each RESULT against what it knows: a RESULT must
 *   carry the id of the oldest unanswered job, a call is "skipped" if and
 *   only if the parent cancelled it, the answered calls' words must say
 *   RUNNING or CANCELLED accordingly, a second HELLO or a frame of unknown
 *   type is refused on its header.  Anything else is that worker sending
 *   a bad frame: it is killed and handled as a crash, under the pool's
 *   policy.  A worker that claims calls it does not run only makes its
 *   own calls uncancellable.  A word stays mapped while a future points
 *   to it: every completion detaches it, and a dead worker's calls are
 *   detached before its words are unmapped.
 * - The pending queue is ordered by priority (cf_submit_options.priority;
 *   a job takes its first call's), FIFO among equals: while all have the
 *   default priority a job is appended; otherwise it goes behind the last
 *   job of its priority or higher, found in `marks` (one per distinct
 *   priority pending).  While jobs of another priority than the default
 *   are pending (`nprio`), only a worker whose last job was quick
 *   (FAST_JOB_NS) is sent jobs ahead, so a later call of higher priority
 *   waits for at most about DEPTH x FAST_JOB_NS of them (or none), while
 *   tiny calls still travel many per write.  Jobs
 *   put back after a worker died go to the front, whatever their priority
 *   (`requeued`), and stay there: the walk that replaces the marks after
 *   that passes them.
 * - Bound (max_queued, cf__bound in executor.c): a call holds a queue slot
 *   from submit until dispatch takes its job off the pending queue (or it
 *   is cancelled, or the pool drops it); shutdown and breakage close the
 *   bound, waking submitters that wait for room.
 * - shutdown(cancel_futures) cancels every call no worker has begun: the
 *   pending queue and the `sent` list (jobs on workers) are read under
 *   `mu`, the calls are cancelled outside it (cancel runs callbacks).
 * - A job with a timeout only goes to a started worker (HELLO said) with
 *   nothing else queued, so its clock starts when it starts.
 * - Crash policy, timeouts, interrupts and cf_terminate_workers() all end
 *   in worker_died(), which reads why the worker died (`reason`) and fails,
 *   requeues or breaks accordingly.  A worker that dies before it has said
 *   HELLO (start-up or initializer) breaks the pool under either policy:
 *   replacing it would only fail again.  An interrupted call ends
 *   cancelled (CANCELLED_AND_NOTIFIED, CF_ECANCELLED).
 *
 * Locks: `mu` guards the fields marked below.  The manager never holds it
 * while completing futures or writing to workers; submitters never block
 * on a worker.  Order: `mu`, then a future's lock (dispatch attaches
 * claim words under `mu`); nothing takes `mu` with a future's lock held.  Everything else in the pool (workers, buffers) belongs to
 * the manager thread alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "os.h"
#include "process.h"

extern char **environ;

#define DEPTH 64          /* most jobs queued on one worker */
/* While jobs of another priority than the default are pending, a worker
 * whose last job took at most FAST_JOB_NS still gets DEPTH jobs (a later
 * job of higher priority then waits at most about DEPTH x FAST_JOB_NS, and
 * tiny calls keep travelling many per write); any other gets none ahead
 * of the one it runs. */
#define FAST_JOB_NS 100000
/* Bounded spinning before the manager sleeps (manager_spin): it looks at
 * `seq` and the result rings instead of sleeping for at most twice the
 * recent job time (or twice the recent pause between an answer and the
 * next request), and never longer than SPIN_MAX_NS. */
#define SPIN_MAX_NS 50000
/* While spins keep finding work, poll() still runs (without waiting) this
 * often, for what only it reports: deaths, socket input, room to write. */
#define POLL_EVERY_NS 1000000
/* Claim words per worker: the most calls sent to one worker and not yet
 * answered (a bigger map chunk is split at submit). */
#define NCLAIMS 8192
#define MAX_WORKERS 1024
#define RFDS_MAX 16
/* Most bytes of idle shared buffers a pool keeps for reuse. */
#define CACHE_BYTES ((size_t)512 << 20)
/* Out of memory, the manager retries every OOM_RETRY_MS (or sooner, when
 * something else wakes it) for OOM_GIVE_UP_MS without reading anything,
 * then breaks the pool with CF_ENOMEM.  Counted in time, not rounds:
 * rounds are shorter while another wake-up is due (EOF_LOOK_MS). */
#define OOM_RETRY_MS 10
#define OOM_GIVE_UP_MS 1000
/* Without a pidfd a worker's death is seen as EOF on its socket, which
 * never comes while a process it forked still holds that socket; so the
 * manager also looks for the exit of such workers (waitid) this often. */
#define EXIT_LOOK_MS 1000
/* ...and, without a pidfd, for the exit of a worker at EOF this often
 * until it is reaped: one killed at EOF is gone within this; one leaving
 * on our EXIT takes as long as its finalizer, and the manager must serve
 * the other workers meanwhile, so it never blocks waiting for it. */
#define EOF_LOOK_MS 2
/* A worker asked to leave (EXIT sent) with no call left to answer, or one
 * that never started (no HELLO: an initializer, a worker program or
 * library that hangs) whose calls shutdown's cancel_futures took back, is
 * killed if it has not exited this long after: one that never started
 * cannot read the EXIT, another may ignore it.  Without this a waited
 * shutdown, cf_executor_destroy() and the pool's exit handler would wait
 * for it as long as it lives.  No call is lost: none was left to it. */
#define EXIT_GRACE_MS 5000

typedef struct pjob {
    struct pjob *next;
    /* On a worker: the `sent` list (guarded by mu), so that shutdown with
     * cancel_futures reaches calls a worker has not begun. */
    struct pjob *sprev, *snext;
    bool on_worker;      /* in `sent` (guarded by mu) */
    bool requeued;       /* put back at the front of the pending queue after
                          * its worker died (guarded by mu) */
    uint32_t n;
    int priority;        /* its calls' (a map chunk shares one) */
    /* Each call's timeout (CF__NS_FOREVER for none).  A worker runs a
     * job's calls one after the other; check_timeouts() times the one it
     * is on (see `run_mark`). */
    int64_t timeout_ns;
    /* Manager thread: */
    uint16_t id;         /* its CALL frame's id */
    uint8_t killed_for;  /* R_TIMEOUT/R_INTERRUPT: its worker was killed
                          * to stop this job (manager thread) */
    uint8_t orphaned;    /* workers that died with it sent but not begun
                          * (manager thread; see keep_unbegun) */
    cf_future *interrupted; /* R_INTERRUPT: the call it was killed for */
    /* R_TIMEOUT of a job of several calls: 1 + the index of the call that
     * overran, as check_timeouts() saw it (0: none begun then).  The
     * worker may have moved on to the next call before the signal landed;
     * that one fails as begun, not as timed out (manager thread). */
    uint32_t timed_mark;
    cf__buf lent;        /* lent to the worker for a big result (manager
                          * thread); back to the cache when answered,
                          * dropped if the worker dies with it */
    cf_future *fs[];     /* the engine's references */
} pjob;

/* Why the manager killed a worker.  R_STALE: killed (SIGKILL) for a
 * timeout or an interrupt of a call that, it turned out, had answered
 * just before the signal landed. */
enum { R_NONE, R_TIMEOUT, R_INTERRUPT, R_STOP, R_BROKEN, R_BADFRAME, R_STALE };

typedef struct pworker {
    pid_t pid;
    int fd;              /* -1 once closed */
    int pidfd;           /* -1 if pidfd_open is unavailable */
    bool hello;          /* start-up (and initializer) done */
    bool exit_sent;      /* EXIT queued: takes no more jobs */
    bool eof;            /* nothing more to read (EOF, or a bad frame) */
    bool killed_at_eof;  /* sent SIGKILL for EOF (manager_main), once */
    bool killed_late;    /* sent SIGKILL for EXIT_GRACE_MS, once */
    int64_t leaving_ns;  /* when it was first seen with EXIT sent and no
                          * job left (cf__now_ns), 0 before */
    bool wdead;          /* a write failed: send nothing more, but keep
                          * reading what it wrote before it went away */
    bool reaped;
    /* What the manager's last poll() said of it, noted before any of it is
     * acted on (manager thread): acting can start workers, which moves
     * the poll arrays, and must not read them after that. */
    bool ev_in, ev_out, ev_died;
    int reason;          /* why we killed it (R_*) */
    char detail[160];    /* for R_BADFRAME */
    pjob *head, *tail;
    int njobs;
    /* Claim words shared with the worker (see wire.h), and how many calls
     * it was sent and has answered: call k uses word k % NCLAIMS, and
     * sent - answered <= NCLAIMS, so no word is in use twice. */
    cf__buf claims;
    uint64_t calls_sent, calls_answered;
    /* Its result ring (process.h): the mapping (NULL only in the fuzz
     * harness), the bytes copied out so far (`ring_tail`), and copies not
     * handled yet: a frame that answers a later job than the oldest waits
     * in `rin` until the oldest job's answer has come through the socket. */
    cf__buf ring;
    uint64_t ring_tail;
    uint64_t bytes_sent; /* written to its socket; mirrored in the ring's
                          * `sent` word for the worker's spin (process.h) */
    unsigned char *rin;
    size_t rin_start, rin_end, rin_cap;
    bool refused;        /* sent a bad frame: nothing more is read from it */
    uint16_t next_id;
    int64_t head_since;  /* when the head job started running */
    /* A head job of several calls with a timeout (manager thread): 1 + the
     * index of the last of its calls whose claim word the manager has seen
     * RUNNING (0: none yet; it only grows), and when it last grew.  Reset
     * whenever a job becomes the head. */
    uint32_t run_mark;
    int64_t run_since;
    int64_t last_job_ns; /* how long its last answered job ran (from when
                          * it became the head); INT64_MAX before any */
    long tasks_sent;
    unsigned char *in;
    size_t in_start, in_end, in_cap;
    int rfds[RFDS_MAX]; /* received, oldest first; -1: one that found no
                         * room in our table (read_some) */
    int nrfds;
    unsigned char *out;
    size_t out_start, out_end, out_cap;
    struct mark {
        size_t at;
        int fd;
    } *marks;
    size_t nmarks, marks_cap;
} pworker;

typedef struct process_pool {
    cf_executor base; /* first */
    int max_workers;
    int max_tasks;
    int policy;
    int start_method;
    int64_t task_timeout_ns;
    wire_enc init_frame; /* flattened INIT frame, sent to every worker */
    /* What CF_START_EXEC workers run: worker_program, or (empty) the
     * running program with its own argv.  Read-only after creation. */
    char worker_program[4096];
    char worker_library[4096]; /* argv[1] of cfutures-worker, or empty */
    char *worker_argv[3];

    pthread_mutex_t mu;
    /* Guarded by mu: */
    pjob *pending_head, *pending_tail;
    size_t npending;
    size_t nprio;        /* pending jobs of another priority than the default */
    /* While nprio > 0: for each priority pending, the last pending job of
     * that priority, in ascending priority (see push_pending_locked; the
     * head's priority is the last mark).
     * Empty while nprio == 0, when the tail is the last (default) job.
     * `marks_ok` false: an allocation failed, insertion walks the list
     * until nprio is 0 again. */
    struct prio_mark {
        int priority;
        pjob *last;
    } *marks;
    size_t nmarks, marks_cap;
    bool marks_ok;
    pjob *sent;          /* jobs on workers (pjob.snext) */
    bool cancel_futures; /* shutdown(cancel_futures): requeued calls too */
    bool shutdown;
    bool broken;
    int broken_status;   /* CF_EBROKEN, or CF_ENOMEM when memory ran out */
    char broken_msg[320];
    /* Bumped (under mu) on every change the manager must see.  `sleeping`:
     * the manager is about to wait in poll() and wants `wake` signalled.
     * Both are seq_cst, a Dekker pair: the manager stores `sleeping` then
     * loads `seq`; a changer bumps `seq` then loads `sleeping` (after it
     * has let go of mu, so the manager it wakes does not find mu held).
     * One of the two sees the other's store. */
    _Atomic uint64_t seq;
    _Atomic bool sleeping;
    cf_future **interrupts;
    size_t ninterrupts, interrupts_cap;
    int stop_sig;        /* cf_terminate/kill_workers: 0, SIGTERM, SIGKILL */

    /* Shared buffers of big calls, recycled (shm.c; its own lock): taken
     * by submit for arguments and by dispatch to lend for a result, given
     * back when the call is answered or its future freed. */
    cf__bufcache *cache;

    cf__notifier wake;
    pthread_t manager;
    bool manager_started;
    /* CF_START_FORK: 0 until the manager's first ensure_workers() has
     * forked the first workers, then 1 (release store, futex wake), while
     * cf_process_pool_new() waits for it (acquire).  See there. */
    _Atomic uint32_t first_forks_done;
    pthread_mutex_t join_mu;
    bool joined;         /* guarded by join_mu */
    _Atomic int alive;   /* workers not yet reaped */

    /* Manager thread only: */
    pworker **workers;
    int nworkers, workers_cap;
    /* poll() set: room for the wake descriptor and two per worker slot,
     * grown with `workers` (spawn_worker), so waiting never allocates. */
    struct pollfd *pfds;
    pworker **pw;
    bool oom;            /* this round ran out of memory; retry soon */
    int64_t oom_since;   /* when rounds out of memory began (cf__now_ns), 0: none
                          * since input last made progress */
    bool stopping;       /* stop_sig was acted on */
    bool exits_sent;
    /* A retiring worker (max_tasks_per_child) answered its last call: its
     * place may go to a replacement (ensure_workers, at the next dispatch). */
    bool retired;
    /* For spin_deadline(): when an answer was last taken off a worker,
     * and how long after the last answer a request came when the manager
     * waited with nothing in flight (INT64_MAX: none seen yet). */
    int64_t last_answer_ns;
    int64_t request_gap_ns;
    int64_t polled_ns;   /* when poll() last returned */
    int64_t exit_look_ns; /* when the exits of workers without a pidfd
                           * were last looked for (EXIT_LOOK_MS) */
} process_pool;

static _Thread_local process_pool *tls_manager;

static process_pool *pool_of(cf_executor *ex)
{
    return (process_pool *)ex;
}

static const char *signal_name(int sig)
{
    const char *abbrev = cf__os_signal_abbrev(sig);
    return abbrev ? abbrev : "?";
}

/* ---- pending queue (mu held) ------------------------------------------- */

/* Notes `j` as the last pending job of its priority, a priority no mark
 * has yet, at index `i` of the marks (the first mark of a higher
 * priority, or nmarks).  Returns false on ENOMEM. */
static bool mark_locked(process_pool *p, size_t i, pjob *j)
{
    if (p->nmarks == p->marks_cap) {
        size_t cap = p->marks_cap ? 2 * p->marks_cap : 8;
        struct prio_mark *m = realloc(p->marks, cap * sizeof *m);
        if (!m)
            return false;
        p->marks = m;
        p->marks_cap = cap;
    }
    memmove(p->marks + i + 1, p->marks + i, (p->nmarks - i) * sizeof *p->marks);
    p->marks[i] = (struct prio_mark){j->priority, j};
    p->nmarks++;
    return true;
}

/* Queues `j` behind every pending job of its priority or higher.  While
 * all are of the default priority that is the tail; otherwise the last
 * job of the lowest priority pending that is not below j's, found in the
 * marks (as many as distinct priorities pending), not by a walk. */
static void push_pending_locked(process_pool *p, pjob *j)
{
    j->next = NULL;
    p->npending++;
    if (CF__LIKELY(p->nprio == 0 && j->priority == CF_PRIORITY_DEFAULT)) {
        if (p->pending_tail)
            p->pending_tail->next = j;
        else
            p->pending_head = j;
        p->pending_tail = j;
        return;
    }
    bool first = p->nprio == 0; /* then j is not of the default priority */
    if (j->priority != CF_PRIORITY_DEFAULT)
        p->nprio++;
    if (first) {
        /* Every pending job has the default priority: the tail is its
         * last.  Unless jobs put back after a crash are pending: they
         * stay at the front whatever j's priority, and a mark naming one
         * of them (the tail) would outlive its pop, so the queue is
         * walked until no job of another priority is pending. */
        p->nmarks = 0;
        p->marks_ok = !(p->pending_head && p->pending_head->requeued);
        if (p->marks_ok && p->pending_tail && !mark_locked(p, 0, p->pending_tail))
            p->marks_ok = false;
    }
    pjob *after = NULL; /* the job `j` goes behind; NULL: the head */
    if (p->marks_ok) {
        /* The first mark of j's priority or higher: its last job is the
         * one j follows (none: j goes first). */
        size_t i = 0;
        while (i < p->nmarks && p->marks[i].priority < j->priority)
            i++;
        if (i < p->nmarks) {
            after = p->marks[i].last;
            if (p->marks[i].priority == j->priority)
                p->marks[i].last = j;
            else if (!mark_locked(p, i, j))
                p->marks_ok = false;
        } else if (!mark_locked(p, i, j)) {
            p->marks_ok = false;
        }
    } else {
        /* Past the jobs put back at the front, which are in no order. */
        for (pjob *k = p->pending_head; k && (k->requeued || k->priority >= j->priority);
             k = k->next)
            after = k;
    }
    if (after) {
        j->next = after->next;
        after->next = j;
    } else {
        j->next = p->pending_head;
        p->pending_head = j;
    }
    if (!j->next)
        p->pending_tail = j;
}

/* Takes the pending queue's first job (there is one). */
static pjob *pop_pending_locked(process_pool *p)
{
    pjob *j = p->pending_head;
    p->pending_head = j->next;
    if (!p->pending_head)
        p->pending_tail = NULL;
    p->npending--;
    if (j->priority != CF_PRIORITY_DEFAULT)
        p->nprio--;
    if (p->nprio == 0) {
        p->nmarks = 0;
    } else if (p->marks_ok) {
        /* The head, unless put back after a crash (no mark names those),
         * is the first job of the highest priority pending, whose mark
         * is the last: j ends its priority if that mark names it. */
        if (p->nmarks > 0 && p->marks[p->nmarks - 1].last == j)
            p->nmarks--;
    }
    j->next = NULL;
    j->requeued = false;
    return j;
}

/* Empties the pending queue and returns it as a list. */
static pjob *take_pending_locked(process_pool *p)
{
    pjob *list = p->pending_head;
    p->pending_head = p->pending_tail = NULL;
    p->npending = 0;
    p->nprio = 0;
    p->nmarks = 0;
    return list;
}

/* Notes a change the manager must act on (mu held); wake_manager() then
 * wakes it, after mu is released. */
static void wake_locked(process_pool *p)
{
    atomic_fetch_add(&p->seq, 1);
}

static void wake_manager(process_pool *p)
{
    if (atomic_load(&p->sleeping) && atomic_exchange(&p->sleeping, false)) {
        cf__notifier_signal(&p->wake); /* fails only when readable already */
    }
}

/* ---- jobs on workers: the `sent` list (mu held) ----------------------- */

static void sent_link_locked(process_pool *p, pjob *j)
{
    j->sprev = NULL;
    j->snext = p->sent;
    if (p->sent)
        p->sent->sprev = j;
    p->sent = j;
    j->on_worker = true;
}

static void sent_unlink_locked(process_pool *p, pjob *j)
{
    if (!j->on_worker)
        return;
    if (j->sprev)
        j->sprev->snext = j->snext;
    else
        p->sent = j->snext;
    if (j->snext)
        j->snext->sprev = j->sprev;
    j->on_worker = false;
}

static void sent_unlink(process_pool *p, pjob *j)
{
    pthread_mutex_lock(&p->mu);
    sent_unlink_locked(p, j);
    pthread_mutex_unlock(&p->mu);
}

/* Puts jobs (a list, in order, taken off a dead worker: their claim words
 * are detached) back at the front. */
static void requeue_front(process_pool *p, pjob *first, pjob *last, size_t n)
{
    if (!first)
        return;
    pthread_mutex_lock(&p->mu);
    size_t nprio = p->nprio;
    for (pjob *j = first; j; j = j->next) {
        sent_unlink_locked(p, j);
        j->requeued = true;
        if (j->priority != CF_PRIORITY_DEFAULT)
            p->nprio++;
    }
    /* At the front whatever their priority: the marks still point at the
     * last job of each priority they name, but a priority only these jobs
     * have has no mark, so insertion walks the list until nprio is 0. */
    if (nprio == 0 && p->nprio > 0) {
        p->nmarks = 0;
        p->marks_ok = false;
    } else if (p->nprio > 0) {
        p->marks_ok = false;
    }
    last->next = p->pending_head;
    p->pending_head = first;
    if (!p->pending_tail)
        p->pending_tail = last;
    p->npending += n;
    atomic_fetch_add(&p->seq, 1);
    bool cancel = p->cancel_futures;
    pthread_mutex_unlock(&p->mu);
    /* Off a worker while shutdown cancelled every call not begun: these
     * were not begun either.  (Only this thread frees queued jobs, and
     * `last->next` is the only link a submitter may change.) */
    for (pjob *j = first; cancel; j = j->next) {
        for (uint32_t i = 0; i < j->n; i++)
            cf_future_cancel(j->fs[i]);
        if (j == last)
            break;
    }
}

/* A map chunk's futures were made by the submitting thread, often long
 * before the manager reaches them (an eager map makes them all first), so
 * each is a cache miss here, in every pass over the job: fetch the ones a
 * few calls ahead while the current one is handled. */
#define PREFETCH_AHEAD 4

static inline void prefetch_call(const pjob *j, uint32_t i)
{
    if (i < j->n) {
        const char *f = (const char *)j->fs[i];
        __builtin_prefetch(f, 1);
        __builtin_prefetch(f + 64, 1);
        __builtin_prefetch(f + 128, 0);
        __builtin_prefetch(f + 192, 0);
    }
}

/* ---- completing futures (no lock held) -------------------------------- */

/* Lets go of the engine's reference to a call that is not completed here
 * (cancelled, or already done): a cancelled one is marked notified. */
static void drop_call(cf_future *f)
{
    cf__slot_release(f);
    if (cf_future_cancelled(f))
        cf_future_set_running_or_notify_cancel(f); /* CANCELLED -> C_A_NOTIFIED */
    cf_future_release(f);
}

/* Fails every call of a job that is not on a worker's claim words any
 * more (never sent, or detached), except those cancelled meanwhile. */
static void fail_job(process_pool *p, pjob *j, int status, const char *type, const char *msg)
{
    if (j->on_worker)
        sent_unlink(p, j);
    for (uint32_t i = 0; i < j->n; i++) {
        if (!j->fs[i])
            continue;
        cf__slot_release(j->fs[i]);
        if (!cf_future_cancelled(j->fs[i]))
            cf__future_fail_running(j->fs[i], status, type, msg);
        drop_call(j->fs[i]);
    }
    cf__buf_drop(&j->lent);
    free(j);
}

/* Frees a queued job whose calls are all done (cancelled). */
static void drop_job(pjob *j)
{
    for (uint32_t i = 0; i < j->n; i++)
        drop_call(j->fs[i]);
    cf__buf_drop(&j->lent);
    free(j);
}

static void fail_jobs(process_pool *p, pjob *j, int status, const char *type, const char *msg)
{
    while (j) {
        pjob *next = j->next;
        fail_job(p, j, status, type, msg);
        j = next;
    }
}

/* Detaches the claim words of a worker's jobs (which go away with it);
 * returns, for the first job, how many of its calls had been claimed. */
/* Detaches the claim words of a dead worker's jobs (the words go away
 * with it).  Afterwards a call's state says whether the worker had begun
 * it: RUNNING if it had, PENDING if not (or cancelled/done). */
static void detach_claims(pjob *j)
{
    for (; j; j = j->next)
        for (uint32_t i = 0; i < j->n; i++)
            cf__future_detach_claim(j->fs[i]);
}

/* ---- workers: output ----------------------------------------------------- */

static bool out_reserve(pworker *w, size_t n)
{
    if (w->out_start == w->out_end && w->nmarks == 0)
        w->out_start = w->out_end = 0;
    if (w->out_end + n <= w->out_cap)
        return true;
    if (w->out_start) {
        memmove(w->out, w->out + w->out_start, w->out_end - w->out_start);
        for (size_t i = 0; i < w->nmarks; i++)
            w->marks[i].at -= w->out_start;
        w->out_end -= w->out_start;
        w->out_start = 0;
        if (w->out_end + n <= w->out_cap)
            return true;
    }
    size_t ncap = w->out_cap ? w->out_cap : 4096;
    while (ncap < w->out_end + n)
        ncap *= 2;
    unsigned char *nb = realloc(w->out, ncap);
    if (!nb)
        return false;
    w->out = nb;
    w->out_cap = ncap;
    return true;
}

/* Makes room for `k` more memfd frames, so that queueing them cannot
 * fail.  Returns false on ENOMEM. */
static bool memfd_room(pworker *w, size_t k)
{
    if (w->nmarks + k > w->marks_cap) {
        size_t ncap = w->marks_cap ? w->marks_cap * 2 : 8;
        while (ncap < w->nmarks + k)
            ncap *= 2;
        struct mark *nm = realloc(w->marks, ncap * sizeof *nm);
        if (!nm)
            return false;
        w->marks = nm;
        w->marks_cap = ncap;
    }
    return out_reserve(w, k * WIRE_SHM_HDR);
}

/* Queues the header of a frame whose `size` payload bytes are in `mfd`;
 * the descriptor is sent with it and closed afterwards (owned from here
 * on when this returns true). */
static bool queue_memfd(pworker *w, uint8_t type, uint64_t size, int mfd, uint16_t id)
{
    if (!memfd_room(w, 1))
        return false;
    wire_shm_header(w->out + w->out_end, type, 0, size, id);
    w->marks[w->nmarks++] = (struct mark){w->out_end, mfd};
    w->out_end += WIRE_SHM_HDR;
    return true;
}

/* Queues a finished frame for the worker.  Returns false on ENOMEM or
 * when a memfd could not be made. */
static bool queue_frame(pworker *w, wire_enc *e, uint8_t type, uint16_t id)
{
    if (e->oom)
        return false;
    size_t payload = wenc_finish(e, type, 0);
    wire_set_id(e->buf, id);
    if (payload <= WIRE_INLINE_MAX) {
        if (!out_reserve(w, WIRE_HDR + payload))
            return false;
        size_t at = WIRE_HDR;
        memcpy(w->out + w->out_end, e->buf, WIRE_HDR);
        w->out_end += WIRE_HDR;
        for (size_t i = 0; i < e->nrefs; i++) {
            memcpy(w->out + w->out_end, e->buf + at, e->ref_at[i] - at);
            w->out_end += e->ref_at[i] - at;
            memcpy(w->out + w->out_end, e->ref_ptr[i], e->ref_len[i]);
            w->out_end += e->ref_len[i];
            at = e->ref_at[i];
        }
        memcpy(w->out + w->out_end, e->buf + at, e->len - at);
        w->out_end += e->len - at;
        return true;
    }
    int mfd = cf__wire_to_memfd(e);
    if (mfd < 0)
        return false;
    if (!queue_memfd(w, type, payload, mfd, id)) {
        close(mfd);
        return false;
    }
    return true;
}

/* Writes what the socket takes now.  A write error means the worker is
 * going away; its pidfd/EOF path reports that. */
static void flush_out(pworker *w)
{
    while (w->fd >= 0 && !w->wdead && w->out_start < w->out_end) {
        size_t limit = w->nmarks ? w->marks[0].at : w->out_end;
        ssize_t n;
        if (w->out_start < limit) {
            n = send(w->fd, w->out + w->out_start, limit - w->out_start,
                     MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            /* A memfd frame header: the descriptor rides on its first byte. */
            n = cf__wire_send_fd(w->fd, w->out + w->out_start, WIRE_SHM_HDR, w->marks[0].fd,
                                 MSG_DONTWAIT);
            if (n > 0) {
                close(w->marks[0].fd);
                memmove(w->marks, w->marks + 1, (w->nmarks - 1) * sizeof *w->marks);
                w->nmarks--;
            }
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                w->wdead = true;
            return;
        }
        w->out_start += (size_t)n;
        if (w->ring.map) {
            /* For a worker that spins waiting for its next call; relaxed:
             * it only ends the spin, the bytes are read from the socket. */
            w->bytes_sent += (uint64_t)n;
            atomic_store_explicit(cf__ring_word(w->ring.map, CF__RING_SENT), w->bytes_sent,
                                  memory_order_relaxed);
        }
    }
}

/* ---- workers: start and stop -------------------------------------------- */

/* Starts the program again as a worker (CF_START_EXEC).  The worker is
 * told who it is by the environment and proves it by a random key the
 * parent writes into its socket first (see cf_process_init()). */
static int spawn_exec(process_pool *p, int child_fd, int parent_fd, pid_t *pid)
{
    unsigned char key[CF__WORKER_KEY];
    int err = cf__os_random(key, sizeof key);
    if (err)
        return err;
    if (send(parent_fd, key, sizeof key, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)sizeof key)
        return errno ? errno : EIO; /* an empty socket takes 16 bytes at once */
    char envvar[64 + 2 * CF__WORKER_KEY];
    int at = snprintf(envvar, sizeof envvar, CF__WORKER_ENV "=3:%ld:", (long)getpid());
    for (size_t i = 0; i < sizeof key; i++)
        at += snprintf(envvar + at, sizeof envvar - (size_t)at, "%02x", key[i]);
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **envp = malloc((n + 2) * sizeof *envp);
    if (!envp)
        return ENOMEM;
    size_t k = 0;
    size_t keylen = strlen(CF__WORKER_ENV "=");
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], CF__WORKER_ENV "=", keylen) != 0)
            envp[k++] = environ[i];
    envp[k++] = envvar;
    envp[k] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    /* dup2 onto itself clears close-on-exec (glibc >= 2.29). */
    posix_spawn_file_actions_adddup2(&fa, child_fd, 3);
    cf__os_spawn_closefrom(&fa, 4);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    bool own = p->worker_program[0] != '\0';
    /* The program's own file: /proc/self/exe, or argv[0] resolved (os.h). */
    const char *image = own ? p->worker_program : cf__os_exe();
    int rc = image ? posix_spawn(pid, image, &fa, &attr, own ? p->worker_argv : cf__process_argv,
                                 envp)
                   : ENOENT;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(envp);
    return rc;
}

/* How long cf_process_pool_new() waits for the manager to fork the first
 * CF_START_FORK workers (see there). */
#define FIRST_FORKS_WAIT_NS ((int64_t)10 * 1000 * 1000 * 1000)
_Atomic int64_t cf__test_first_forks_wait_ns;

/* Forks a worker (CF_START_FORK).  The child closes every descriptor of
 * the pool but its own socket and runs the worker loop. */
static int spawn_fork(process_pool *p, int child_fd, int parent_fd, pid_t *pid)
{
    pid_t parent = getpid();
    cf__forking_worker = true;
    cf__os_stdio_before_fork();
    pid_t c = fork();
    int err = errno;
    if (c != 0)
        cf__forking_worker = false;
    if (c < 0)
        return err;
    if (c == 0) {
        close(parent_fd);
        cf__notifier_close(&p->wake);
        for (int i = 0; i < p->nworkers; i++) {
            if (p->workers[i]->fd >= 0)
                close(p->workers[i]->fd);
            if (p->workers[i]->pidfd >= 0)
                close(p->workers[i]->pidfd);
        }
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        cf__os_die_with_parent();
        if (getppid() != parent)
            _exit(0);
        cf__worker_run(child_fd);
    }
    *pid = c;
    return 0;
}

/* Makes memory shared with one worker (its claim words, its result
 * ring), zero-filled, sealed against shrinking and growing: maps it into
 * `b` (no descriptor kept) and returns the memfd to send, or -1 (errno
 * set). */
static int shared_new(cf__buf *b, const char *name, size_t size)
{
    *b = (cf__buf){NULL, 0, -1};
    int fd = cf__os_shm_new(name);
    void *map = MAP_FAILED;
    if (fd >= 0 && ftruncate(fd, (off_t)size) == 0 &&
        cf__os_shm_seal(fd, CF__SEAL_SHRINK | CF__SEAL_GROW | CF__SEAL_SEAL) == 0)
        map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | cf__os_map_populate, fd, 0);
    if (map != MAP_FAILED && cf__os_mem_dontfork(map, size) != 0) {
        munmap(map, size);
        map = MAP_FAILED;
    }
    if (map == MAP_FAILED) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        return -1;
    }
    *b = (cf__buf){map, size, -1};
    return fd;
}

/* Starts one worker and queues its INIT frame.  Returns CF_OK or an
 * error with a message recorded. */
static int spawn_worker(process_pool *p)
{
    if (p->nworkers == p->workers_cap) {
        int ncap = p->workers_cap ? p->workers_cap * 2 : 8;
        size_t npoll = 1 + 2 * (size_t)ncap;
        struct pollfd *np = realloc(p->pfds, npoll * sizeof *np);
        if (np)
            p->pfds = np;
        pworker **npw = np ? realloc(p->pw, npoll * sizeof *npw) : NULL;
        if (npw)
            p->pw = npw;
        pworker **nw = npw ? realloc(p->workers, (size_t)ncap * sizeof *nw) : NULL;
        if (!nw)
            return cf__fail(CF_ENOMEM, "process pool: out of memory for a worker");
        p->workers = nw;
        p->workers_cap = ncap;
    }
    pworker *w = calloc(1, sizeof *w);
    if (!w)
        return cf__fail(CF_ENOMEM, "process pool: out of memory for a worker");
    int sv[2];
    if (cf__os_socketpair(sv) != 0) {
        int e = errno;
        free(w);
        return cf__fail(CF_ESYS, "process pool: socketpair: %s", strerror(e));
    }
    /* Its claim words, zero (PENDING), sent after INIT; we keep only the
     * mapping.  Not inherited by workers forked later: each worker reaches
     * its own words only. */
    int cfd = shared_new(&w->claims, "cfutures-claims", NCLAIMS * sizeof(uint32_t));
    int rfd = cfd < 0 ? -1 : shared_new(&w->ring, "cfutures-ring", CF__RING_SIZE);
    if (rfd < 0) {
        int e = errno;
        if (cfd >= 0)
            close(cfd);
        cf__buf_drop(&w->claims);
        close(sv[0]);
        close(sv[1]);
        free(w);
        return cf__fail(e == ENOMEM ? CF_ENOMEM : CF_ESYS,
                        "process pool: cannot make a worker's shared memory: %s", strerror(e));
    }
    pid_t pid = 0;
    int rc = p->start_method == CF_START_FORK ? spawn_fork(p, sv[1], sv[0], &pid)
                                              : spawn_exec(p, sv[1], sv[0], &pid);
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        close(cfd);
        close(rfd);
        cf__buf_drop(&w->claims);
        cf__buf_drop(&w->ring);
        free(w);
        return cf__fail(CF_ESYS, "process pool: cannot start a worker: %s", strerror(rc));
    }
    w->pid = pid;
    w->fd = sv[0];
    w->pidfd = cf__os_pidfd(pid);
    fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
    w->head_since = cf__now_ns();
    w->last_job_ns = INT64_MAX;
    p->workers[p->nworkers++] = w;
    atomic_fetch_add(&p->alive, 1);
    wire_enc copy = p->init_frame; /* flattened: no references */
    bool claims_queued = false;
    if (!queue_frame(w, &copy, WIRE_INIT, 0) ||
        !(claims_queued = queue_memfd(w, WIRE_CLAIMS, w->claims.cap, cfd, 0)) ||
        !queue_memfd(w, WIRE_RING, w->ring.cap, rfd, 0)) {
        /* Not queued: queue_memfd owns a descriptor only on success. */
        if (!claims_queued)
            close(cfd);
        close(rfd);
        kill(pid, SIGKILL);
        w->reason = R_BROKEN;
    }
    return CF_OK;
}

static void kill_worker(pworker *w, int reason, int sig)
{
    if (w->reaped)
        return;
    if (w->reason == R_NONE)
        w->reason = reason;
    /* The job it is killed for, even if it is dying already for another:
     * an interrupt of the next call must not be lost. */
    if ((reason == R_TIMEOUT || reason == R_INTERRUPT) && w->head && !w->head->killed_for)
        w->head->killed_for = (uint8_t)reason;
    kill(w->pid, sig);
}

/* ---- breaking ------------------------------------------------------------ */

static const char *broken_type(int status)
{
    return status == CF_ENOMEM ? "MemoryError" : "BrokenProcessPool";
}

/* Marks the pool broken: pending calls and every call on a worker fail
 * with `status` (CF_EBROKEN, or CF_ENOMEM when the pool gave up for lack
 * of memory) and `msg`; the workers are killed (and reaped later).  With
 * `spare_retiring`, workers told to leave after their calls (EXIT sent)
 * keep those calls and leave as planned. */
static void break_pool_sparing(process_pool *p, int status, const char *msg, bool spare_retiring)
{
    pthread_mutex_lock(&p->mu);
    bool first = !p->broken;
    if (first) {
        p->broken = true;
        p->broken_status = status;
        snprintf(p->broken_msg, sizeof p->broken_msg, "%s", msg);
    }
    pjob *pending = take_pending_locked(p);
    pthread_mutex_unlock(&p->mu);
    cf__bound_close(&p->base, CF_EBROKEN); /* after `broken`: waiters get CF_EBROKEN */
    /* Nobody may be waiting on a future to hear of it: say it once, before
     * any future fails, so whoever sees a failure can find the line. */
    if (first)
        cf__log("process pool broken: %s", msg);
    fail_jobs(p, pending, status, broken_type(status), msg);
    for (int i = 0; i < p->nworkers; i++) {
        pworker *w = p->workers[i];
        if (spare_retiring && w->exit_sent && w->reason == R_NONE)
            continue;
        fail_jobs(p, w->head, status, broken_type(status), msg);
        w->head = w->tail = NULL;
        w->njobs = 0;
        kill_worker(w, R_BROKEN, SIGKILL);
    }
}

static void break_pool(process_pool *p, int status, const char *msg)
{
    break_pool_sparing(p, status, msg, false);
}

static bool pool_broken(process_pool *p)
{
    pthread_mutex_lock(&p->mu);
    bool b = p->broken;
    pthread_mutex_unlock(&p->mu);
    return b;
}

/* ---- a worker died -------------------------------------------------------- */

static void describe_status(const siginfo_t *si, bool known, char *buf, size_t size)
{
    if (!known)
        snprintf(buf, size, "exit status unknown (SIGCHLD ignored?)");
    else if (si->si_code == CLD_EXITED)
        snprintf(buf, size, "exited with status %d", si->si_status);
    else
        snprintf(buf, size, "was killed by signal %d (SIG%s)%s", si->si_status,
                 signal_name(si->si_status), si->si_code == CLD_DUMPED ? ", core dumped" : "");
}

static int ensure_workers(process_pool *p);

static void remove_worker(process_pool *p, pworker *w)
{
    for (int i = 0; i < p->nworkers; i++) {
        if (p->workers[i] == w) {
            p->workers[i] = p->workers[--p->nworkers];
            break;
        }
    }
    if (w->fd >= 0)
        close(w->fd);
    if (w->pidfd >= 0)
        close(w->pidfd);
    if (w->claims.map) /* no call is attached to it any more */
        munmap(w->claims.map, w->claims.cap);
    if (w->ring.map)
        munmap(w->ring.map, w->ring.cap);
    free(w->rin);
    for (int i = 0; i < w->nrfds; i++)
        if (w->rfds[i] >= 0) /* -1: one lost on the way (read_some) */
            close(w->rfds[i]);
    for (size_t i = 0; i < w->nmarks; i++)
        close(w->marks[i].fd);
    free(w->marks);
    free(w->in);
    free(w->out);
    free(w);
    atomic_fetch_sub(&p->alive, 1);
}

/* Of a job taken off a dead worker (its claim words detached): the calls
 * the worker had begun lost their outcome with it and fail with `msg`;
 * those it had not begun did not run and may run elsewhere - a worker
 * killed while idle takes no call sent to it just then down with it.
 * Calls already dealt with are NULL.  Returns the job with the calls
 * kept, or NULL (freed) if none is left. */
static pjob *split_begun(process_pool *p, pjob *j, const char *msg)
{
    sent_unlink(p, j); /* its call list changes below */
    cf__buf_drop(&j->lent);
    uint32_t k = 0;
    for (uint32_t i = 0; i < j->n; i++) {
        cf_future *f = j->fs[i];
        if (!f)
            continue;
        cf_state s = cf_future_state(f);
        if (s == CF_PENDING) {
            j->fs[k++] = f;
            continue;
        }
        if (s == CF_RUNNING)
            cf__future_fail_running(f, CF_EBROKEN, "BrokenProcessPool", msg);
        drop_call(f);
    }
    j->n = k;
    j->killed_for = 0;
    j->timed_mark = 0;
    j->interrupted = NULL;
    if (k)
        return j;
    free(j);
    return NULL;
}

/* The head job of a worker killed to interrupt one of its calls (its
 * claim words detached): that call is cancelled (stopped for real);
 * calls of the same chunk that had begun lost their outcome with the
 * worker and fail; the others had not begun and are returned as a job
 * to run again (NULL if none). */
static pjob *interrupted(process_pool *p, pjob *j, pid_t pid)
{
    char msg[200];
    snprintf(msg, sizeof msg, "worker pid %d running this call was killed to interrupt another "
                              "call of the same chunk",
             (int)pid);
    /* Off `sent` before its call list changes, as split_begun() does:
     * shutdown(cancel_futures) takes a reference to every call of every
     * job there, under `mu`, and must not meet one released here.  The
     * calls that had not begun go back to the queue, where a shutdown
     * that came meanwhile cancels them (requeue_front). */
    sent_unlink(p, j);
    for (uint32_t i = 0; i < j->n; i++) {
        cf_future *f = j->fs[i];
        if (f == j->interrupted || (!j->interrupted && cf_future_state(f) == CF_RUNNING)) {
            cf__future_cancel_running(f);
            cf_future_release(f);
            j->fs[i] = NULL;
        }
    }
    return split_begun(p, j, msg);
}

/* The head job (several calls, a map chunk) of a worker killed because
 * one of its calls overran its timeout (claim words detached): that call
 * (`timed_mark`) fails with CF_ETIMEDOUT.  The others it had begun lost
 * their outcome with it and fail; those it had not begun are returned as
 * a job to run again (NULL if none).  If the manager had seen none begun
 * within the timeout, every call fails with CF_ETIMEDOUT, as a call of
 * its own would: a chunk that cannot even begin must not be retried for
 * ever. */
static pjob *timed_out(process_pool *p, pjob *j, pid_t pid, const char *msg)
{
    int running = -1;
    uint32_t t = j->timed_mark;
    if (t && t <= j->n && j->fs[t - 1] && cf_future_state(j->fs[t - 1]) == CF_RUNNING) {
        running = (int)t - 1; /* the call check_timeouts() timed */
    } else if (t) {
        /* A worker that rewrote its words: the last call it had begun. */
        for (uint32_t i = 0; i < j->n; i++)
            if (j->fs[i] && cf_future_state(j->fs[i]) == CF_RUNNING)
                running = (int)i;
    }
    /* t == 0: no call was seen begun within the timeout (one that began
     * just before the signal is not to blame for that). */
    if (running < 0) {
        fail_job(p, j, CF_ETIMEDOUT, "TimeoutError", msg);
        return NULL;
    }
    sent_unlink(p, j); /* before its call list changes: see interrupted() */
    cf__future_fail_running(j->fs[running], CF_ETIMEDOUT, "TimeoutError", msg);
    cf_future_release(j->fs[running]);
    j->fs[running] = NULL;
    char other[200];
    snprintf(other, sizeof other, "worker pid %d running this call was killed because another "
                                  "call of the same chunk exceeded its timeout",
             (int)pid);
    return split_begun(p, j, other);
}

/* Most deaths of workers a job may outlive unbegun: the job itself may
 * be what kills them before they can begin it (arguments a worker cannot
 * map); then it fails instead of killing worker after worker. */
#define ORPHANED_MAX 2

/* The head job of a worker that crashed, under CF_CRASH_REPLACES_WORKER:
 * see split_begun. */
static pjob *keep_unbegun(process_pool *p, pjob *j, const char *msg)
{
    if (++j->orphaned > ORPHANED_MAX) {
        fail_job(p, j, CF_EBROKEN, "BrokenProcessPool", msg);
        return NULL;
    }
    return split_begun(p, j, msg);
}

/* Puts a dead worker's jobs back at the front of the queue, in order:
 * `head` (NULL if nothing of it is left to run), then `rest` .. `last`
 * (`nrest` jobs, possibly none). */
static void requeue_jobs(process_pool *p, pjob *head, pjob *rest, pjob *last, size_t nrest)
{
    if (head) {
        head->next = rest;
        requeue_front(p, head, rest ? last : head, nrest + 1);
    } else {
        requeue_front(p, rest, last, nrest);
    }
}

static void worker_died(process_pool *p, pworker *w, const siginfo_t *si, bool known)
{
    char how[96], msg[320];
    describe_status(si, known, how, sizeof how);
    pjob *head = w->head, *rest = head ? head->next : NULL;
    pjob *last = rest;
    size_t nrest = 0;
    for (pjob *j = rest; j; j = j->next) {
        last = j;
        nrest++;
        /* Lent to the dead worker; dispatch lends afresh. */
        cf__buf_drop(&j->lent);
    }
    if (head)
        head->next = NULL;
    w->head = w->tail = NULL;
    w->njobs = 0;
    bool expected = w->exit_sent && !head && w->reason == R_NONE;
    int reason = w->reason;
    if (reason == R_TIMEOUT || reason == R_INTERRUPT) {
        /* Killed for a job: is it still the one running?  The manager
         * reads a worker's answers before it kills, but an answer can
         * still land between that and the signal; the worker may then
         * have started its next call, which did nothing wrong. */
        bool sigkilled = known && si->si_code == CLD_KILLED && si->si_status == SIGKILL;
        if (head && head->killed_for)
            reason = head->killed_for;
        else if (sigkilled)
            reason = R_STALE;
        else
            reason = R_NONE; /* it died of something else first: a crash */
    }
    bool hello = w->hello;
    pid_t pid = w->pid;
    char detail[160];
    snprintf(detail, sizeof detail, "%s", w->detail);
    detach_claims(head);
    detach_claims(rest);
    remove_worker(p, w);

    if (expected)
        return;
    switch (reason) {
    case R_TIMEOUT:
        snprintf(msg, sizeof msg, "the call exceeded its timeout; worker pid %d was killed",
                 (int)pid);
        if (head && head->n > 1) {
            head = timed_out(p, head, pid, msg);
            requeue_jobs(p, head, rest, last, nrest);
            break;
        }
        fail_jobs(p, head, CF_ETIMEDOUT, "TimeoutError", msg);
        requeue_front(p, rest, last, nrest);
        break;
    case R_INTERRUPT:
        head = interrupted(p, head, pid);
        requeue_jobs(p, head, rest, last, nrest);
        break;
    case R_STALE:
        /* The calls of the next job it had begun lose their outcome; those
         * it had not run again. */
        snprintf(msg, sizeof msg, "worker pid %d running this call was killed to stop another "
                                  "call (a timeout or an interrupt) that finished just before",
                 (int)pid);
        head = head ? split_begun(p, head, msg) : NULL;
        requeue_jobs(p, head, rest, last, nrest);
        break;
    case R_STOP:
        snprintf(msg, sizeof msg, "worker pid %d was stopped by terminate_workers/kill_workers "
                                  "and %s",
                 (int)pid, how);
        fail_jobs(p, head, CF_EBROKEN, "BrokenProcessPool", msg);
        fail_jobs(p, rest, CF_EBROKEN, "BrokenProcessPool", msg);
        return;
    case R_BROKEN: {
        pthread_mutex_lock(&p->mu);
        bool broken = p->broken;
        snprintf(msg, sizeof msg, "%s", p->broken_msg);
        int status = broken ? p->broken_status : CF_EBROKEN;
        pthread_mutex_unlock(&p->mu);
        if (broken) {
            fail_jobs(p, head, status, broken_type(status), msg);
            fail_jobs(p, rest, status, broken_type(status), msg);
            return;
        }
        /* Killed because its EXIT frame could not be queued (no memory)
         * while the pool goes on: as for a stale kill, only what it had
         * begun is lost. */
        snprintf(msg, sizeof msg, "worker pid %d was killed: no memory to queue its exit frame",
                 (int)pid);
        head = head ? split_begun(p, head, msg) : NULL;
        requeue_jobs(p, head, rest, last, nrest);
        break;
    }
    default:
        if (reason == R_BADFRAME)
            snprintf(msg, sizeof msg, "A process in the process pool sent a malformed frame "
                                      "(%s); worker pid %d was killed",
                     detail, (int)pid);
        else
            snprintf(msg, sizeof msg, "A process in the process pool was terminated abruptly "
                                      "while the future was running or pending: worker pid %d "
                                      "%s%s",
                     (int)pid, how, hello ? "" : " during start-up");
        if (p->policy == CF_CRASH_BREAKS_POOL || !hello) {
            /* Broken first, as CPython: whoever sees a future fail must
             * also see later submits refused. */
            break_pool(p, CF_EBROKEN, msg);
            fail_jobs(p, head, CF_EBROKEN, "BrokenProcessPool", msg);
            fail_jobs(p, rest, CF_EBROKEN, "BrokenProcessPool", msg);
            return;
        }
        head = head ? keep_unbegun(p, head, msg) : NULL;
        requeue_jobs(p, head, rest, last, nrest);
        break;
    }
    if (!pool_broken(p))
        ensure_workers(p);
}

/* EOF on `w`'s socket: it can answer nothing more.  One that was not
 * leaving (asked to, with nothing left to answer) and is not known dead
 * is killed, once, so that its calls end as a crash's do, not when it
 * chooses to exit: it may have closed its socket and gone on running.
 * Unreaped, its pid cannot have been reused.  Runs for every worker
 * before the manager next waits (where the poll set is built) and after
 * the reads just before a reap, so that the wait for the worker's exit
 * lasts as long as a kill takes, not as the worker likes. */
static void kill_at_eof(pworker *w)
{
    if (w->eof && w->reason == R_NONE && !(w->exit_sent && !w->head) && !w->killed_at_eof) {
        w->killed_at_eof = true;
        kill(w->pid, SIGKILL);
    }
}

static bool job_done(const pjob *j);

/* Whether `w` only has to exit: asked to leave (EXIT sent) with no call
 * left to answer, or - once the pool is shut down with no call pending
 * (`drained`) - never started (no HELLO) and every call it was sent, if
 * any, is done without it (cancelled by shutdown's cancel_futures): it
 * cannot read its EXIT before it starts. */
static bool only_exit_left(const pworker *w, bool drained)
{
    if (w->exit_sent && !w->head)
        return true;
    if (!drained || w->hello)
        return false;
    for (const pjob *j = w->head; j; j = j->next)
        if (!job_done(j))
            return false;
    return true;
}

/* Kills `w` once if only_exit_left() has held for EXIT_GRACE_MS (see
 * there) and it has not exited.  Liveness: the caller bounds its wait by
 * *wait_ms (lowered to the time left, -1: none yet) while such a worker is
 * alive, and its death then shows as usual (pidfd, EOF or the exit
 * look). */
static void kill_if_late(pworker *w, bool drained, int64_t now, int *wait_ms)
{
    if (w->reaped || w->killed_late || w->reason != R_NONE || !only_exit_left(w, drained)) {
        w->leaving_ns = 0;
        return;
    }
    if (w->leaving_ns == 0)
        w->leaving_ns = now;
    int64_t left = w->leaving_ns + (int64_t)EXIT_GRACE_MS * 1000000 - now;
    if (left <= 0) {
        w->killed_late = true;
        cf__log("process pool: worker pid %d %s %d ms ago; killed", (int)w->pid,
                w->hello || w->exit_sent ? "was asked to exit" : "never started and was left nothing to run",
                EXIT_GRACE_MS);
        if (!w->exit_sent)
            w->reason = R_STOP; /* nothing was left to it: its death is no crash */
        kill(w->pid, SIGKILL);
        return;
    }
    int ms = (int)((left + 999999) / 1000000);
    if (*wait_ms < 0 || *wait_ms > ms)
        *wait_ms = ms;
}

void (*_Atomic cf__test_hook_before_reap)(pid_t pid, bool unanswered);
void (*_Atomic cf__test_hook_after_reap_read)(pid_t pid, bool starved);

static void read_worker(process_pool *p, pworker *w);

/* Reaps `w` if it has exited, without waiting.  Returns true if it was
 * reaped.
 *
 * The exit is looked at first without reaping (WNOWAIT), and the worker's
 * socket and ring read once more before it is reaped: the look for the
 * exit of a worker without a pidfd reads its socket and then asks whether
 * it exited, and in between the worker can write its HELLO and answers
 * and exit.  Judged on the first read, its calls were lost and the pool
 * broke ("exited with status 0 during start-up": in about 3 % of the runs
 * of 50 calls recycled every 2, portable build).  Once it has exited, all
 * it wrote is there to read, but for what a process it forked and that
 * still holds its socket may write later.  A kill that this read makes (a
 * bad frame) reaches its zombie, nobody else: the pid is not free until
 * the reap below.  Where the kernel reaps children itself (SIGCHLD
 * ignored, SA_NOCLDWAIT) the look finds no child (ECHILD) and the socket
 * is read once more too; a kill then risks a reused pid, as every kill
 * in that configuration does. */
static bool try_reap(process_pool *p, pworker *w)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r;
    do
        r = waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    while (r < 0 && errno == EINTR);
    if (r == 0 && si.si_pid == 0)
        return false; /* still running */
    /* Out of memory in this read, answers may be left unread (in the
     * socket or the ring): then the worker is not reaped yet, unless it
     * owes no answer.  Liveness: its exit is looked at again when the
     * manager next reads: with a pidfd, at the first round not out of
     * memory (the pidfd stays readable); without, when its socket shows
     * input or EOF, or the ring is pumped, at each such round.  Bounded:
     * after OOM_GIVE_UP_MS of failing reads the pool breaks, which fails
     * the worker's calls (w->head is then NULL) and the reap goes on. */
    bool oom_before = p->oom;
    p->oom = false;
    read_worker(p, w);
    bool starved = p->oom;
    p->oom = oom_before || starved;
    void (*hook)(pid_t, bool) =
        atomic_load_explicit(&cf__test_hook_after_reap_read, memory_order_relaxed);
    if (CF__UNLIKELY(hook != NULL))
        hook(w->pid, starved);
    if (starved && w->head && !w->refused)
        return false;
    if (r == 0) {
        /* Reaped by another of the program's threads in between: the
         * status seen above stands. */
        siginfo_t again;
        memset(&again, 0, sizeof again);
        int r2;
        do
            r2 = waitid(P_PID, (id_t)w->pid, &again, WEXITED | WNOHANG);
        while (r2 < 0 && errno == EINTR);
        if (r2 == 0 && again.si_pid != 0)
            si = again;
    }
    w->reaped = true;
    worker_died(p, w, &si, r == 0);
    return true;
}

/* ---- workers: input -------------------------------------------------------- */

static void bad_frame(pworker *w, const char *what)
{
    if (w->reason == R_NONE) {
        snprintf(w->detail, sizeof w->detail, "%s", what);
        w->reason = R_BADFRAME;
    }
    kill(w->pid, SIGKILL);
    w->eof = true; /* read nothing more from it */
    w->refused = true;
}

typedef struct outcome {
    uint8_t tag;         /* WIRE_OK, WIRE_FAILED, WIRE_SKIPPED */
    cf_value v;
    int code;
    const char *type, *msg;
} outcome;

/* Gives a finished call's argument memory back for reuse (the worker has
 * answered, so it reads it no more; nobody reads a finished call's
 * arguments). */
static void give_back_args(process_pool *p, cf__shm *shm)
{
    cf__bufcache_give(p->cache, &shm->args);
}

/* A single big result stays where it is: the future adopts the frame's
 * buffer, unless the result fills less than half of it (a small result in
 * a big lent buffer), which is copied out so the buffer goes round.  The
 * descriptor is kept, so the buffer can be reused, within the cache's
 * budget.  Returns true if `f` is done with (completed, or already done). */
static bool adopt_result(process_pool *p, cf_future *f, const cf_value *v, cf__buf *frame)
{
    size_t used = CF__SHM_RESULT_PREFIX + cf__value_extra(v);
    if (!frame->map || cf__value_extra(v) < WIRE_REF_MIN || used < frame->cap / 2)
        return false;
    bool held = frame->fd >= 0 && cf__bufcache_hold_fd(p->cache);
    if (frame->fd >= 0 && !held) {
        close(frame->fd);
        frame->fd = -1; /* unmapped, not reused, when the future goes */
    }
    int rc = cf__future_complete_mapped(f, v, frame, p->cache, held);
    if (rc != CF_OK && held)
        cf__bufcache_unhold_fd(p->cache);
    /* CF_EINVALSTATE: interrupted meanwhile, already failed.  CF_ENOMEM:
     * the copying path still works. */
    return rc != CF_ENOMEM;
}

/* Takes the head job off `w`, which has answered its `n` calls. */
static pjob *pop_answered(process_pool *p, pworker *w, uint32_t n)
{
    pjob *j = w->head;
    w->head = j->next;
    if (!w->head)
        w->tail = NULL;
    w->njobs--;
    w->calls_answered += n;
    sent_unlink(p, j);
    int64_t now = cf__now_ns();
    w->last_job_ns = now - w->head_since;
    w->head_since = now;
    w->run_mark = 0;
    p->last_answer_ns = now;
    if (w->exit_sent && !w->head)
        p->retired = true;
    if (n == 1 && j->fs[0]->shm && j->fs[0]->shm->args.map)
        give_back_args(p, j->fs[0]->shm);
    cf__bufcache_give(p->cache, &j->lent); /* answered without it */
    return j;
}

/* The head job's answer came, but the parent has no memory to take it:
 * its calls fail with CF_ENOMEM; the worker did nothing wrong and
 * carries on. */
static void answer_lost(process_pool *p, pworker *w, uint32_t n, const char *msg)
{
    pjob *j = pop_answered(p, w, n);
    fail_job(p, j, CF_ENOMEM, "MemoryError", msg);
}

/* Whether `f` is cancelled, as far as its state shows without its lock
 * (see on_result). */
static bool seen_cancelled(const cf_future *f)
{
    uint32_t s = cf__state_of(f);
    return s == CF_CANCELLED || s == CF_CANCELLED_AND_NOTIFIED;
}

/* Completes the head job from a RESULT frame.  `*frame` is the frame's
 * shared buffer (map NULL for an inline frame); a single big result
 * adopts it, and it is then cleared; the caller gives back what is left.
 * `in_place`: the frame's one outcome, already decoded (see lent_bytes);
 * else it is decoded from `d`. */
static void on_result(process_pool *p, pworker *w, wire_dec *d, cf__buf *frame,
                      const cf_value *in_place)
{
    pjob *j = w->head;
    uint32_t n = in_place ? 1 : wdec_u32(d);
    if (!j || n != j->n) {
        bad_frame(w, j ? "result count does not match the job" : "result without a job");
        return;
    }
    outcome stack[16];
    outcome *oc = n <= 16 ? stack : malloc(n * sizeof *oc);
    if (!oc) {
        answer_lost(p, w, n, "parent out of memory decoding the results");
        return;
    }
    const char *bad = NULL;
    if (in_place)
        oc[0] = (outcome){.tag = WIRE_OK, .v = *in_place};
    for (uint32_t i = 0; i < n && !in_place && !d->bad && !bad; i++) {
        if (d->p < d->end && d->p[0] == WIRE_OK) {
            /* An integer (the common tiny result), as wdec_value() reads it. */
            wire_dec at = {d->p + 1, d->end, false};
            if (cf__get_int(&at, &oc[i].v)) {
                oc[i].tag = WIRE_OK;
                d->p = at.p;
                continue;
            }
        }
        oc[i].tag = wdec_u8(d);
        if (oc[i].tag == WIRE_OK) {
            oc[i].v = wdec_value(d);
        } else if (oc[i].tag == WIRE_FAILED) {
            oc[i].code = (int)wdec_u32(d);
            oc[i].type = wdec_cstr(d);
            oc[i].msg = wdec_cstr(d);
        } else if (oc[i].tag != WIRE_SKIPPED) {
            bad = "result frame has an unknown outcome";
        }
    }
    if (!bad && !in_place && (d->bad || d->p != d->end))
        bad = "result frame does not decode";
    /* Skipped if and only if we took it back: our cancel (or a
     * set_result/set_exception of the call) and its claim are two
     * compare-and-swaps on one word, and only one succeeds.  (A call
     * cancelled after it was claimed stays uncancelled.)  A skipped call
     * is checked with cf__future_taken(), which waits for a cancel or a
     * completion that has won the word but not yet shown (the worker may
     * answer in between).  A call answered as run is checked without the future's
     * lock, one per call less: its word must also say RUNNING (below),
     * and a cancel that is still showing when we look at the state means
     * the word said CANCELLED when the worker claimed it, so only a
     * worker that rewrote its word passes both; the completion then
     * finds the call cancelled and drops the answer. */
    for (uint32_t i = 0; i < n && !bad; i++) {
        prefetch_call(j, i + PREFETCH_AHEAD);
        bool cancelled = oc[i].tag == WIRE_SKIPPED ? cf__future_taken(j->fs[i])
                                                   : seen_cancelled(j->fs[i]);
        if ((oc[i].tag == WIRE_SKIPPED) != cancelled)
            bad = oc[i].tag == WIRE_SKIPPED ? "a call that was not cancelled was skipped"
                                            : "a cancelled call was run";
    }
    /* Its claim words must say the same (RUNNING: claimed and answered;
     * CANCELLED: skipped); a worker that wrote anything else is crashing.
     * Each word is read once and compared, nothing more. */
    const _Atomic uint32_t *words = w->claims.map; /* NULL only in the fuzz harness */
    for (uint32_t i = 0; i < n && !bad && words; i++)
        if (atomic_load_explicit(&words[(w->calls_answered + i) % NCLAIMS],
                                 memory_order_relaxed) !=
            (oc[i].tag == WIRE_SKIPPED ? CF__CLAIM_CANCELLED : CF__CLAIM_RUNNING))
            bad = "a claim word disagrees with the result";
    if (bad) {
        if (oc != stack)
            free(oc);
        bad_frame(w, bad);
        return;
    }
    pop_answered(p, w, n);
    for (uint32_t i = 0; i < n; i++) {
        cf_future *f = j->fs[i];
        if (oc[i].tag == WIRE_SKIPPED) {
            drop_call(f);
            continue;
        }
        if (oc[i].tag == WIRE_OK) {
            cf_value v = oc[i].v;
            void *heap = NULL;
            size_t extra = cf__value_extra(&v);
            if (n == 1 && adopt_result(p, f, &v, frame)) {
                cf_future_release(f);
                continue;
            }
            if (extra > CF__INLINE_RESULT) {
                heap = malloc(extra);
                if (!heap) {
                    cf__future_fail_running(f, CF_ENOMEM, "MemoryError",
                                            "parent out of memory for the result");
                    cf_future_release(f);
                    continue;
                }
                memcpy(heap, v.as.bytes, extra);
                v.as.bytes = heap;
            }
            if (cf__future_complete_remote(f, CF_OK, &v, heap, NULL) != CF_OK)
                free(heap); /* interrupted meanwhile: already failed */
        } else {
            cf_failure *fl = cf__failure_new(oc[i].code, oc[i].type, oc[i].msg);
            if (cf__future_complete_remote(f, CF_ETASK, NULL, NULL,
                                           fl ? fl : cf__failure_oom()) != CF_OK &&
                fl)
                cf__failure_free(fl);
        }
        cf_future_release(f);
    }
    free(j);
    if (oc != stack)
        free(oc);
}

static void on_hello(process_pool *p, pworker *w, wire_dec *d)
{
    (void)wdec_u32(d); /* pid, as the worker sees it */
    uint8_t said = wdec_u8(d);
    bool ok = said != WIRE_HELLO_INIT_FAILED && said != WIRE_HELLO_MISSING;
    if (ok) {
        if (d->bad) {
            bad_frame(w, "hello frame does not decode");
            return;
        }
        w->hello = true;
        return;
    }
    char msg[320];
    bool has = wdec_u8(d) == 0; /* the initializer's outcome: a failure */
    int code = has ? (int)wdec_u32(d) : 0;
    const char *type = has ? wdec_cstr(d) : "";
    const char *text = has ? wdec_cstr(d) : "";
    (void)code;
    if (said == WIRE_HELLO_MISSING)
        snprintf(msg, sizeof msg, "worker pid %d (%.80s) lacks tasks this pool runs: %.160s",
                 (int)w->pid,
                 p->worker_library[0]   ? p->worker_library
                 : p->worker_program[0] ? p->worker_program
                                        : "this program",
                 d->bad ? "?" : text);
    else
        snprintf(msg, sizeof msg, "the initializer failed in worker pid %d: %s: %s",
                 (int)w->pid, d->bad ? "?" : type, d->bad ? "?" : text);
    w->reason = R_BROKEN;
    break_pool(p, CF_EBROKEN, msg);
}

/* The most bytes a shared-memory frame of `type` from `w` may hold: what
 * the calls it answers can legitimately make (a RESULT answers the head
 * job).  Checked before the memory is mapped or populated. */
static uint64_t frame_max(const pworker *w, uint8_t type)
{
    uint64_t calls = type == WIRE_HELLO ? 1 : type == WIRE_RESULT && w->head ? w->head->n : 0;
    uint64_t max = 64 + calls * WIRE_OUTCOME_MAX;
    return max < WIRE_SHM_MAX ? max : WIRE_SHM_MAX;
}

/* A result in a lent buffer, which the worker keeps mapped writable: its
 * fields are read once, from a private copy, and only one case is read in
 * place - a single CF_BYTES value filling the frame, whose size and kind
 * then live in the parent's memory and whose bytes the parent never
 * interprets.  Anything else is copied out before it is decoded (a string
 * checked in place could lose its NUL afterwards).  Returns true and sets
 * *v for the in-place case. */
static bool lent_bytes(const cf__buf *frame, size_t used, cf_value *v)
{
    unsigned char pre[CF__SHM_RESULT_PREFIX];
    if (used < sizeof pre)
        return false;
    memcpy(pre, frame->map, sizeof pre);
    wire_dec d = {pre, pre + sizeof pre, false};
    uint32_t n = wdec_u32(&d);
    uint8_t ok = wdec_u8(&d), kind = wdec_u8(&d);
    uint64_t size = wdec_u64(&d);
    if (n != 1 || ok != 1 || kind != CF_BYTES || size != used - sizeof pre)
        return false;
    *v = (cf_value){CF_BYTES, (size_t)size, {0}};
    v->as.bytes = (const unsigned char *)frame->map + sizeof pre;
    return true;
}

/* Whether a frame with this header may come from `w` now: every frame
 * must be one the worker owes us.  A HELLO only first (once), a RESULT
 * only after it and only for the oldest unanswered job, by its id. */
static bool frame_fits(const pworker *w, uint8_t type, uint8_t flags, uint16_t id, char *why,
                       size_t size)
{
    if ((flags & ~WIRE_FLAGS) || ((flags & WIRE_LENT) && !(flags & WIRE_SHM)))
        snprintf(why, size, "frame flags 0x%x", flags);
    else if (type == WIRE_HELLO && (w->hello || flags || id))
        snprintf(why, size, w->hello ? "a second hello" : "hello frame with flags or an id");
    else if (type == WIRE_RESULT && !w->hello)
        snprintf(why, size, "result before hello");
    else if (type == WIRE_RESULT && !w->head)
        snprintf(why, size, "result without a job");
    else if (type == WIRE_RESULT && id != w->head->id)
        snprintf(why, size, "result for call id %u, expected %u", id, w->head->id);
    else if (type == WIRE_BELL && (!w->hello || flags || id))
        snprintf(why, size, "bell frame before hello, or with flags or an id");
    else if (type != WIRE_RESULT && type != WIRE_HELLO && type != WIRE_BELL)
        snprintf(why, size, "unknown frame type %u", type);
    else
        return true;
    return false;
}

/* Whether the first frame copied out of `w`'s ring is the SOCKET frame of
 * answer `id` (see process.h). */
static bool ring_says_socket(const pworker *w, uint16_t id)
{
    if (w->rin_end - w->rin_start < WIRE_HDR)
        return false;
    uint32_t len;
    uint8_t type, flags;
    uint16_t rid;
    wire_header(w->rin + w->rin_start, &len, &type, &flags, &rid);
    return type == WIRE_SOCKET && rid == id;
}

/* Handles the frames copied out of `w`'s ring, in order, up to a SOCKET
 * frame, which stays first in `rin` until its RESULT has come through the
 * socket.  Returns true if `rin` is left holding frames (stopped at a
 * SOCKET frame) or `w` was refused; false when `rin` is empty. */
static bool ring_parse(process_pool *p, pworker *w)
{
    while (!w->refused && w->rin_end - w->rin_start >= WIRE_HDR) {
        uint32_t len;
        uint8_t type, flags;
        uint16_t id;
        wire_header(w->rin + w->rin_start, &len, &type, &flags, &id);
        char why[96];
        if ((type != WIRE_RESULT && type != WIRE_SOCKET) || flags ||
            (type == WIRE_SOCKET && len != 0)) {
            snprintf(why, sizeof why, "frame type %u, flags 0x%x in the result ring", type,
                     flags);
            bad_frame(w, why);
            return true;
        }
        if (len > WIRE_INLINE_MAX || w->rin_end - w->rin_start - WIRE_HDR < len) {
            bad_frame(w, "part of a frame in the result ring");
            return true;
        }
        if (!frame_fits(w, WIRE_RESULT, flags, id, why, sizeof why)) {
            bad_frame(w, why);
            return true;
        }
        if (type == WIRE_SOCKET)
            return true; /* the answer comes through the socket: read_some */
        const unsigned char *body = w->rin + w->rin_start + WIRE_HDR;
        wire_dec d = {body, body + len, false};
        w->rin_start += WIRE_HDR + (size_t)len;
        on_result(p, w, &d, &(cf__buf){NULL, 0, -1}, NULL);
    }
    if (w->refused)
        return true;
    if (w->rin_start != w->rin_end) {
        bad_frame(w, "part of a frame in the result ring");
        return true;
    }
    w->rin_start = w->rin_end = 0;
    return false;
}

/* Whether `w`'s ring may hold answers we can take now: the worker has
 * published more than we copied out, and we are not held at a SOCKET frame
 * (ring_pump copies nothing then, so looking again would only spin). */
static bool ring_news(const pworker *w, memory_order order)
{
    return w->ring.map && !w->refused && w->hello && w->rin_start == w->rin_end &&
           atomic_load_explicit(cf__ring_word(w->ring.map, CF__RING_HEAD), order) !=
               w->ring_tail;
}

/* Copies what the worker has published in its result ring since last time
 * and handles its frames in order, up to a SOCKET frame (process.h).  The
 * worker can still write the ring, so nothing is read in place: the head
 * it announces is checked against what we consumed and the ring's size,
 * the bytes are copied, and only the copies are decoded.  Every frame
 * there must be whole (the worker publishes whole frames only) and answer
 * the oldest job: an inline RESULT, or the SOCKET frame saying its RESULT
 * comes through the socket (it stays first until that RESULT is taken).
 *
 * While a SOCKET frame waits in `rin`, nothing more is copied out: what
 * follows in the ring answers later jobs, and the worker, finding the
 * ring full, waits.  So `rin` never holds more than one ring's worth;
 * copying on would let a worker that never sends that answer fill our
 * memory a ring at a time. */
static void ring_pump(process_pool *p, pworker *w)
{
    /* Before HELLO nothing is owed; HELLO comes through the socket. */
    if (!w->ring.map || w->refused || !w->hello)
        return;
    /* Frames copied with a SOCKET frame whose answer has come since. */
    if (w->rin_start != w->rin_end && ring_parse(p, w))
        return;
    w->rin_start = w->rin_end = 0; /* empty: the copy below starts it */
    /* seq_cst: pairs with `sleeping` (see manager_main and process.h). */
    uint64_t head = atomic_load(cf__ring_word(w->ring.map, CF__RING_HEAD));
    uint64_t avail = head - w->ring_tail;
    if (avail > CF__RING_BYTES) {
        bad_frame(w, "result ring position out of range");
        return;
    }
    if (!avail)
        return;
    if (w->rin_cap < avail) {
        unsigned char *nb = realloc(w->rin, CF__RING_BYTES);
        if (!nb) {
            p->oom = true; /* left in the ring; tried again soon */
            return;
        }
        w->rin = nb;
        w->rin_cap = CF__RING_BYTES;
    }
    size_t off = (size_t)(w->ring_tail % CF__RING_BYTES);
    size_t first = avail < CF__RING_BYTES - off ? (size_t)avail : CF__RING_BYTES - off;
    const unsigned char *data = (const unsigned char *)w->ring.map + CF__RING_DATA;
    memcpy(w->rin, data + off, first);
    memcpy(w->rin + first, data, (size_t)avail - first);
    w->rin_end = (size_t)avail;
    w->ring_tail = head;
    p->oom_since = 0; /* memory was found: a new count if it runs out */
    atomic_store_explicit(cf__ring_word(w->ring.map, CF__RING_TAIL), head,
                          memory_order_release);
    ring_parse(p, w);
}

/* Whether this process's descriptor table is full (RLIMIT_NOFILE): then
 * the kernel drops the descriptors a worker sends us, through no fault of
 * the worker.  (A descriptor closed meanwhile by another thread makes it
 * look like the worker's fault; the worker is then killed as for any bad
 * frame.) */
static bool table_full(int fd)
{
    int probe = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (probe >= 0) {
        close(probe);
        return false;
    }
    return errno == EMFILE;
}

/* Reads and handles what the worker sent.  `drain`: until the socket is
 * empty (EAGAIN) or at EOF.  Else it stops after a read that found less
 * than it had room for and no descriptor: the socket was empty then, and
 * poll() (level-triggered) reports whatever comes next; that saves a
 * system call per wake-up. */
static void read_some(process_pool *p, pworker *w, bool drain)
{
    ring_pump(p, w);
    while (!w->eof && w->fd >= 0) {
        if (w->in_start == w->in_end)
            w->in_start = w->in_end = 0;
        if (w->in_cap - w->in_end < 4096) {
            if (w->in_start) {
                memmove(w->in, w->in + w->in_start, w->in_end - w->in_start);
                w->in_end -= w->in_start;
                w->in_start = 0;
            }
            if (w->in_cap - w->in_end < 4096) {
                size_t ncap = w->in_cap ? w->in_cap * 2 : 64 * 1024;
                unsigned char *nb = realloc(w->in, ncap);
                if (!nb) {
                    /* What the worker sent waits in the socket; the
                     * manager tries again soon (a bounded number of
                     * times: see manager_main). */
                    p->oom = true;
                    return;
                }
                w->in = nb;
                w->in_cap = ncap;
            }
        }
        size_t room = w->in_cap - w->in_end;
        int nrfds = w->nrfds;
        bool lost = false;
        ssize_t n = cf__wire_recv(w->fd, w->in + w->in_end, room, MSG_DONTWAIT, w->rfds,
                                  &w->nrfds, RFDS_MAX, &lost);
        if (lost && (!table_full(w->fd) || w->nrfds == RFDS_MAX)) {
            bad_frame(w, "too many descriptors");
            return;
        }
        if (lost) {
            /* The memfd of a frame in these bytes (a worker sends one per
             * frame) found no room in our descriptor table: not the
             * worker's doing.  Its place is kept (-1), so that the frame
             * it rode on is answered as lost, and the worker carries on. */
            w->rfds[w->nrfds++] = -1;
        }
        bool short_read = n >= 0 && (size_t)n < room && w->nrfds == nrfds;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            w->eof = true;
            break;
        }
        p->oom_since = 0; /* memory was found: a new count if it runs out */
        w->in_end += (size_t)n;
        /* Handle every complete frame. */
        while (!w->eof && w->in_end - w->in_start >= WIRE_HDR) {
            uint32_t len;
            uint8_t type, flags;
            uint16_t id;
            wire_header(w->in + w->in_start, &len, &type, &flags, &id);
            /* Answers the worker put in its ring before this frame come
             * first; then the ring must be empty or say that this answer
             * comes through the socket. */
            bool marked = false;
            if (type == WIRE_RESULT) {
                ring_pump(p, w);
                if (w->refused)
                    return;
                marked = ring_says_socket(w, id);
                if (!marked && w->rin_end != w->rin_start) {
                    bad_frame(w, "an answer through the socket the ring does not announce");
                    return;
                }
            }
            /* Judged on its header, before waiting for the rest. */
            char why[96];
            if (!frame_fits(w, type, flags, id, why, sizeof why)) {
                bad_frame(w, why);
                return;
            }
            if ((flags & WIRE_SHM) ? len != 8 : len > WIRE_INLINE_MAX) {
                bad_frame(w, "frame length out of range");
                return;
            }
            if (type == WIRE_BELL) {
                if (len != 0) {
                    bad_frame(w, "bell frame with a payload");
                    return;
                }
                w->in_start += WIRE_HDR; /* the ring is looked at below */
                continue;
            }
            if (w->in_end - w->in_start < WIRE_HDR + (size_t)len)
                break; /* incomplete; read more */
            if (marked)
                w->rin_start += WIRE_HDR; /* the SOCKET frame: answered now */
            const unsigned char *body = w->in + w->in_start + WIRE_HDR;
            wire_dec d = {body, body + len, false};
            cf__buf frame = {NULL, 0, -1};
            cf_value bytes_in_place, *in_place = NULL;
            unsigned char *copy = NULL;
            if (flags & WIRE_LENT) {
                /* The result is in the buffer lent with the job, which
                 * the worker can still write: see lent_result(). */
                uint64_t used = wdec_u64(&d);
                pjob *j = w->head;
                if (type != WIRE_RESULT || !j || !j->lent.map || used == 0 ||
                    used > j->lent.cap) {
                    bad_frame(w, "result in a lent buffer that does not fit");
                    return;
                }
                frame = j->lent;
                j->lent = (cf__buf){NULL, 0, -1};
                if (lent_bytes(&frame, (size_t)used, &bytes_in_place)) {
                    in_place = &bytes_in_place;
                } else if ((copy = malloc((size_t)used)) != NULL) {
                    memcpy(copy, frame.map, (size_t)used);
                    d = (wire_dec){copy, copy + used, false};
                } else {
                    cf__buf_drop(&frame);
                    w->in_start += WIRE_HDR + (size_t)len;
                    answer_lost(p, w, j->n, "parent out of memory copying the result");
                    continue;
                }
            } else if (flags & WIRE_SHM) {
                uint64_t maplen = wdec_u64(&d);
                bool fd_lost = false;
                if (w->nrfds > 0) {
                    frame.fd = w->rfds[0];
                    fd_lost = frame.fd < 0;
                    memmove(w->rfds, w->rfds + 1, (size_t)(w->nrfds - 1) * sizeof(int));
                    w->nrfds--;
                }
                if (fd_lost && type == WIRE_RESULT) {
                    w->in_start += WIRE_HDR + (size_t)len;
                    answer_lost(p, w, w->head->n,
                                "parent out of descriptors (RLIMIT_NOFILE) to receive the "
                                "result");
                    continue;
                }
                /* Memory the worker made is read in place and never
                 * reused: cf__wire_map() takes it only sealed against
                 * shrinking (a SIGBUS here) and writing (bytes changing
                 * after they were checked), and only up to what the frame
                 * can legitimately hold. */
                frame.map = frame.fd >= 0 ? cf__wire_map(frame.fd, maplen, frame_max(w, type))
                                          : NULL;
                int err = errno;
                if (frame.fd >= 0)
                    close(frame.fd);
                frame.fd = -1;
                if (!frame.map) {
                    bad_frame(w, err == EPERM    ? "shared-memory frame not sealed against "
                                                   "shrinking and writing"
                                 : err == EFBIG  ? "shared-memory frame larger than its calls "
                                                   "can answer"
                                                 : "shared-memory frame cannot be mapped");
                    return;
                }
                frame.cap = (size_t)maplen;
                d = (wire_dec){frame.map, (unsigned char *)frame.map + maplen, false};
            }
            w->in_start += WIRE_HDR + (size_t)len;
            if (type == WIRE_RESULT)
                on_result(p, w, &d, copy ? &(cf__buf){NULL, 0, -1} : &frame, in_place);
            else
                on_hello(p, w, &d);
            free(copy);
            /* Not adopted by a future: kept for reuse.  (After a bad
             * frame it is dropped: the worker is being killed and may
             * still write to it.) */
            if (w->eof)
                cf__buf_drop(&frame);
            else
                cf__bufcache_give(p->cache, &frame);
        }
        if (!drain && short_read)
            break;
    }
    ring_pump(p, w);
}

static void read_worker(process_pool *p, pworker *w)
{
    read_some(p, w, true);
}

/* ---- dispatch -------------------------------------------------------------- */

static bool takes_jobs(const pworker *w)
{
    return !w->exit_sent && !w->eof && !w->wdead && w->reason == R_NONE;
}

static int live_workers(process_pool *p)
{
    int n = 0;
    for (int i = 0; i < p->nworkers; i++)
        n += takes_jobs(p->workers[i]);
    return n;
}

/* A worker leaving (max_tasks_per_child: EXIT sent after its last job)
 * that still has calls to run or answer. */
static bool retiring_busy(const pworker *w)
{
    return w->exit_sent && w->head && !w->eof && !w->wdead && w->reason == R_NONE;
}

/* Workers that run calls or will: at most max_workers, as in CPython,
 * where a worker that reached max_tasks_per_child is replaced once it has
 * exited.  One that is leaving counts until it has answered its last call
 * (then p->retired asks for its replacement), so a backlog cannot start a
 * process per recycle, each running the calls sent ahead to it. */
static int busy_workers(process_pool *p)
{
    int n = 0;
    for (int i = 0; i < p->nworkers; i++)
        n += takes_jobs(p->workers[i]) || retiring_busy(p->workers[i]);
    return n;
}

/* Starts workers until max_workers run calls (busy_workers).  Returns
 * CF_OK or the error of the last failed start (then the pool breaks if
 * nobody is left to take calls). */
static int ensure_workers(process_pool *p)
{
    if (p->stopping)
        return CF_OK;
    int rc = CF_OK;
    while (busy_workers(p) < p->max_workers) {
        rc = spawn_worker(p);
        if (rc != CF_OK)
            break;
    }
    if (rc != CF_OK && live_workers(p) == 0) {
        char msg[320];
        snprintf(msg, sizeof msg, "no worker process could be started: %s",
                 cf_last_error_message());
        /* A retiring worker (max_tasks_per_child) still finishes the calls
         * it was given; only the calls nobody can run fail. */
        break_pool_sparing(p, rc == CF_ENOMEM ? CF_ENOMEM : CF_EBROKEN, msg, true);
    }
    return rc;
}

/* A call's argument count and values, as wenc_u8() and wenc_value() write
 * them.  Numbers (the common tiny call) go straight into the buffer with
 * one room check per call; anything else takes the general path. */
static void put_call_args(wire_enc *e, const cf_value *args, size_t nargs)
{
    if (!e->oom && e->len + 1 + 9 * nargs <= e->cap) {
        unsigned char *o = e->buf + e->len, *end = e->buf + e->cap;
        *o++ = (unsigned char)nargs;
        size_t k = 0;
        for (; k < nargs && (o = cf__put_number(o, (size_t)(end - o), &args[k])); k++)
            ;
        if (k == nargs) {
            e->len = (size_t)(o - e->buf);
            return;
        }
        /* Not all numbers: written again below from e->len. */
    }
    wenc_u8(e, (uint8_t)nargs);
    for (size_t k = 0; k < nargs; k++)
        wenc_value(e, &args[k]);
}

/* Encodes a job as a CALL frame and queues it on `w`. */
static bool send_job(process_pool *p, pworker *w, pjob *j, wire_enc *e)
{
    const cf__shm *shm = j->n == 1 ? j->fs[0]->shm : NULL;
    if (shm && shm->args.map) {
        /* pp_new_call() wrote the whole frame at submit.  A call with big
         * arguments often has a big result (a transform of its input), so
         * the worker is lent a buffer the size of the arguments to make it
         * in (a recycled one, else a new one: its pages are only allocated
         * if the worker writes them), announced just ahead of the call.
         * Both frames are queued or neither: a LEND without its CALL would
         * apply to the next call. */
        int fd = fcntl(shm->args.fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            return false;
        int lfd = -1;
        size_t want = shm->args_len;
        if ((cf__bufcache_take(p->cache, want, 2 * want, &j->lent) ||
             cf__buf_new(&j->lent, want, false) == 0) &&
            (lfd = fcntl(j->lent.fd, F_DUPFD_CLOEXEC, 0)) < 0)
            cf__bufcache_give(p->cache, &j->lent);
        if (!memfd_room(w, lfd >= 0 ? 2 : 1)) {
            close(fd);
            if (lfd >= 0)
                close(lfd);
            cf__bufcache_give(p->cache, &j->lent);
            return false;
        }
        if (lfd >= 0)
            queue_memfd(w, WIRE_LEND, j->lent.cap, lfd, j->id);
        queue_memfd(w, WIRE_CALL, shm->args_len, fd, j->id);
        return true;
    }
    wenc_reset(e);
    wenc_u32(e, j->n);
    const char *name = cf_task_name(j->fs[0]->call.fn);
    size_t namelen = name ? strlen(name) : 0;
    wenc_u8(e, (uint8_t)namelen);
    wenc_put(e, name, namelen);
    for (uint32_t i = 0; i < j->n; i++) {
        cf_call *c = &j->fs[i]->call;
        put_call_args(e, cf__call_args(c), c->nargs);
    }
    return queue_frame(w, e, WIRE_CALL, j->id);
}

/* Puts the job's calls on `w`'s next claim words (mu held, so shutdown
 * sees each call either in the queue or on a worker): drops calls that
 * were cancelled (or completed) meanwhile, gives the job its id and links
 * it in `sent`.  Returns false if nothing is left (the job is freed). */
static bool attach_job_locked(process_pool *p, pworker *w, pjob *j)
{
    _Atomic uint32_t *words = w->claims.map;
    uint32_t k = 0;
    for (uint32_t i = 0; i < j->n; i++) {
        cf_future *f = j->fs[i];
        prefetch_call(j, i + PREFETCH_AHEAD);
        cf__slot_release(f); /* off the queue: room for a submit */
        if (cf__future_attach_claim(f, &words[(w->calls_sent + k) % NCLAIMS]))
            j->fs[k++] = f;
        else
            cf_future_release(f);
    }
    j->n = k;
    if (k == 0) {
        free(j);
        return false;
    }
    j->id = w->next_id++;
    w->calls_sent += k;
    sent_link_locked(p, j);
    return true;
}

/* Whether every call of a queued job is done (cancelled): then it is
 * dropped without waiting for a worker.  Stops at the first live call. */
static bool job_done(const pjob *j)
{
    for (uint32_t i = 0; i < j->n; i++)
        if (!cf_future_done(j->fs[i]))
            return false;
    return true;
}

static pworker *pick_worker(process_pool *p, pjob *j, size_t backlog)
{
    pworker *best = NULL;
    for (int i = 0; i < p->nworkers; i++) {
        pworker *w = p->workers[i];
        if (!takes_jobs(w))
            continue;
        if (p->max_tasks && w->tasks_sent > 0 && w->tasks_sent + (long)j->n > p->max_tasks)
            continue;
        if (w->calls_sent - w->calls_answered + j->n > NCLAIMS)
            continue; /* its claim words are all in use */
        if (w->head && (w->head->timeout_ns != CF__NS_FOREVER || j->timeout_ns != CF__NS_FOREVER))
            continue;
        /* A timed call's clock starts when it is handed over: only to a
         * worker that has started (and run its initializer). */
        if (j->timeout_ns != CF__NS_FOREVER && !w->hello)
            continue;
        if (!best || w->njobs < best->njobs)
            best = w;
    }
    if (!best)
        return NULL;
    if (best->njobs > 0 &&
        (backlog < (size_t)p->max_workers || best->njobs >= DEPTH ||
         (p->nprio && best->last_job_ns > FAST_JOB_NS)))
        return NULL;
    return best;
}

/* Sends EXIT to `w`, which then leaves once it has answered what it was
 * sent; killed if the frame cannot be queued. */
static void retire_worker(pworker *w, wire_enc *e)
{
    wenc_reset(e);
    w->exit_sent = queue_frame(w, e, WIRE_EXIT, 0);
    if (!w->exit_sent)
        kill_worker(w, R_BROKEN, SIGKILL);
}

/* The oldest pending job, of `n` calls, went to no worker.  If that is
 * because no worker that takes jobs has enough of its max_tasks_per_child
 * budget left for it (a map chunk bigger than what is left), none ever
 * will: workers recycle only once they have run their budget.  Then the
 * idle ones retire now (the busy ones, once they are idle: this runs at
 * every dispatch), and fresh workers, which may take any job, replace
 * them. */
static void retire_unfit(process_pool *p, uint32_t n, wire_enc *e)
{
    bool retired = false;
    for (int i = 0; i < p->nworkers; i++) {
        pworker *w = p->workers[i];
        if (takes_jobs(w) && (w->tasks_sent == 0 || w->tasks_sent + (long)n <= p->max_tasks))
            return; /* it can take the job when it has room */
    }
    if (pool_broken(p))
        return; /* its calls fail; nobody is replaced */
    for (int i = 0; i < p->nworkers; i++) {
        pworker *w = p->workers[i];
        if (takes_jobs(w) && w->njobs == 0) {
            retire_worker(w, e);
            retired = true;
        }
    }
    if (retired)
        ensure_workers(p);
}

static void dispatch(process_pool *p, wire_enc *e)
{
    if (p->retired) {
        p->retired = false;
        if (!pool_broken(p)) /* a replacement may not start; see worker_died() */
            ensure_workers(p);
    }
    for (;;) {
        pthread_mutex_lock(&p->mu);
        pjob *j = p->pending_head;
        size_t backlog = p->npending;
        bool drop = j && job_done(j);
        pworker *w = j && !drop ? pick_worker(p, j, backlog) : NULL;
        if (!w && !drop) {
            uint32_t n = j ? j->n : 0;
            pthread_mutex_unlock(&p->mu);
            if (n && p->max_tasks && !p->stopping)
                retire_unfit(p, n, e);
            return;
        }
        pop_pending_locked(p);
        if (drop)
            for (uint32_t i = 0; i < j->n; i++)
                cf__slot_release(j->fs[i]); /* off the queue: room for a submit */
        bool attached = !drop && attach_job_locked(p, w, j);
        pthread_mutex_unlock(&p->mu);
        if (drop)
            drop_job(j);
        if (!attached)
            continue;
        if (!send_job(p, w, j, e)) {
            /* Nothing of it went out: its numbers and id are free again. */
            w->calls_sent -= j->n;
            w->next_id--;
            fail_job(p, j, CF_ENOMEM, "MemoryError",
                     "process pool: out of memory sending the call");
            continue;
        }
        if (w->tail)
            w->tail->next = j;
        else
            w->head = j;
        w->tail = j;
        if (w->njobs++ == 0) {
            w->head_since = cf__now_ns();
            w->run_mark = 0;
        }
        if (w->ring.map) {
            /* Whether its worker may spin for the next call (process.h):
             * only while the pool serves one call at a time. */
            int inflight = 0;
            for (int i = 0; i < p->nworkers; i++)
                inflight += p->workers[i]->njobs;
            atomic_store_explicit(cf__ring_word(w->ring.map, CF__RING_ALONE),
                                  inflight == 1 && j->n == 1, memory_order_relaxed);
        }
        w->tasks_sent += j->n;
        if (p->max_tasks && w->tasks_sent >= p->max_tasks) {
            /* Recycle: it leaves after this job.  Its replacement starts
             * once it has answered it (busy_workers), or at once if its
             * queue to it could not be written (killed). */
            retire_worker(w, e);
            ensure_workers(p);
        }
    }
}

/* ---- the manager thread --------------------------------------------------- */

static bool job_has(const pjob *j, const cf_future *f)
{
    for (uint32_t i = 0; j && i < j->n; i++)
        if (j->fs[i] == f)
            return true;
    return false;
}

/* Interrupts of calls that cf_future_cancel() could not cancel: a worker
 * had begun them.  A worker runs only its oldest job, so that is where
 * the call is, unless it has answered meanwhile (then nothing is left to
 * stop). */
static void handle_interrupts(process_pool *p, cf_future **fs, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        cf_future *f = fs[k];
        for (int i = 0; i < p->nworkers; i++) {
            pworker *w = p->workers[i];
            if (!job_has(w->head, f))
                continue;
            read_worker(p, w); /* its answer may be waiting */
            if (job_has(w->head, f)) {
                if (!w->head->interrupted && !w->head->killed_for)
                    w->head->interrupted = f;
                kill_worker(w, R_INTERRUPT, SIGKILL);
            }
            break;
        }
        cf_future_release(f);
    }
}

/* 1 + the index of the last call of w's head job j whose claim word says
 * RUNNING, looking from index `from` on (the mark seen before: it only
 * grows), or `from` if none there.  Only RUNNING counts: the worker alone
 * writes it, where CANCELLED is written by this process too, for calls
 * the worker has not reached.  The words are the worker's to write: a
 * wrong one only misleads the timing of its own calls, and as the mark
 * only grows, a chunk still ends within about n x 1.25 timeouts. */
static uint32_t begun_mark(const pworker *w, const pjob *j, uint32_t from)
{
    const _Atomic uint32_t *words = w->claims.map;
    if (!words)
        return from;
    uint32_t mark = from;
    for (uint32_t i = from; i < j->n; i++)
        if (atomic_load_explicit(&words[(w->calls_answered + i) % NCLAIMS],
                                 memory_order_relaxed) == CF__CLAIM_RUNNING)
            mark = i + 1;
    return mark;
}

/* Each call's timeout runs from when its worker began it.  A job of one
 * call: from when it became the head (the worker begins it right away).
 * A map chunk's calls run one after the other, answered together: the
 * manager looks at the chunk's claim words at least four times per
 * timeout and times the call it finds the worker on from when it first
 * saw it begun, so a call may overrun by up to a quarter of its timeout
 * (plus the time poll() takes to come back) before it is stopped.
 * Liveness: `poll_ms` is the longest the manager then sleeps. */
static void check_timeouts(process_pool *p, int64_t now, int *poll_ms)
{
    for (int i = 0; i < p->nworkers; i++) {
        pworker *w = p->workers[i];
        if (!w->head || w->head->timeout_ns == CF__NS_FOREVER || w->reason != R_NONE)
            continue;
        pjob *j = w->head;
        int64_t due = w->head_since + j->timeout_ns, look = INT64_MAX;
        if (j->n > 1) {
            uint32_t mark = begun_mark(w, j, w->run_mark);
            if (mark > w->run_mark) {
                w->run_mark = mark;
                w->run_since = now;
            }
            if (mark)
                due = w->run_since + j->timeout_ns;
            int64_t quarter = j->timeout_ns / 4;
            look = now + (quarter > 1000000 ? quarter : 1000000);
        }
        if (due <= now) {
            read_worker(p, w); /* it may have answered in time */
            if (w->head == j && w->reason == R_NONE) {
                j->timed_mark = j->n > 1 ? w->run_mark : 0;
                kill_worker(w, R_TIMEOUT, SIGKILL);
            }
            continue;
        }
        if (look < due)
            due = look;
        int64_t ms = (due - now + 999999) / 1000000;
        if (*poll_ms < 0 || ms < *poll_ms)
            *poll_ms = (int)(ms > 60000 ? 60000 : ms);
    }
}

static bool all_idle(process_pool *p)
{
    for (int i = 0; i < p->nworkers; i++)
        if (p->workers[i]->njobs)
            return false;
    return true;
}

/* Until when the manager may spin instead of sleeping, or 0 for not at
 * all.  A wake-up costs about as much as a tiny call here (a system call
 * on each side and a switch, several microseconds on a VM): the worker's
 * BELL and our return from poll() for its answer, the submitter's signal
 * of `wake` for the next call.  Spinning saves those only where the pool
 * waits for one thing at a time, so it follows recent activity only:
 *  - one job in flight, the only one on its worker, whose last job took at
 *    most SPIN_MAX_NS / 2: we spin until twice that time after the job
 *    began.  More jobs in flight is throughput, not latency: their
 *    answers come with a BELL as before and the CPUs are left to the
 *    workers and the submitters;
 *  - nothing in flight: the last time we waited like this, a request came
 *    at most SPIN_MAX_NS / 2 after the latest answer; we spin until twice
 *    that pause after the latest answer.
 * So an idle pool does not spin: the deadline is at most SPIN_MAX_NS after
 * its latest answer. */
static int64_t spin_deadline(process_pool *p)
{
    const pworker *busy = NULL;
    for (int i = 0; i < p->nworkers; i++) {
        const pworker *w = p->workers[i];
        if (!w->head)
            continue;
        if (busy || w->njobs > 1 || w->last_job_ns > SPIN_MAX_NS / 2 || !w->hello ||
            !w->ring.map || w->refused || w->reason != R_NONE || w->rin_start != w->rin_end)
            return 0; /* (rin: its answer comes through the socket) */
        busy = w;
    }
    if (busy)
        return busy->head_since + 2 * busy->last_job_ns;
    if (p->last_answer_ns && p->request_gap_ns <= SPIN_MAX_NS / 2)
        return p->last_answer_ns + 2 * p->request_gap_ns;
    return 0;
}

/* Spins until a request comes (`seq` moves from `seen`), a worker
 * publishes something in its result ring, or `until` passes.  Returns
 * true if something came.  Liveness: the loop ends by `until` at the
 * latest (spin_deadline() puts it at most SPIN_MAX_NS after the activity
 * that justified it), and the caller then sleeps with the usual protocol
 * (`sleeping`, the rings' flags, poll()), which misses nothing: while we
 * spin, `sleeping` and the rings' flags are clear, so a request or an
 * answer is seen only here, through `seq` and the rings' heads, and both
 * are read on every turn.  Events that only poll() reports (a death, a
 * RESULT through the socket, room to write) wait until `until`, or, while
 * spins keep finding work, at most POLL_EVERY_NS (the caller polls).
 * The loads are relaxed: what is found is read again properly (under mu,
 * in ring_pump) once we are back in the loop.  We yield the CPU first
 * and then every 64 turns (about a microsecond): on a machine with few
 * CPUs the thread we wait for (the worker, or the submitter we have just
 * woken) is often queued on this very CPU, and a spinner that does not
 * yield keeps it off until the scheduler preempts us.  (bench_process's
 * round trip on a 2-CPU VM, against the pipe floor: yielding first and
 * every 64 turns, 1.37-1.59x; every 16 turns only, 1.42-1.49x; every 256,
 * 1.80-2.18x; never, 1.95-3.46x, worse than not spinning.) */
static bool manager_spin(process_pool *p, uint64_t seen, int64_t until)
{
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&p->seq, memory_order_relaxed) != seen)
            return true;
        for (int k = 0; k < p->nworkers; k++) {
            pworker *w = p->workers[k];
            if (ring_news(w, memory_order_relaxed))
                return true;
        }
        if (i % 16 == 0 && cf__now_ns() >= until)
            return false;
        if (i == 1 || i % 64 == 0)
            sched_yield();
        cf__cpu_relax();
    }
}

static void *manager_main(void *arg)
{
    process_pool *p = arg;
    tls_manager = p;
    cf__set_thread_name("cfutures-procmgr");
    wire_enc enc = {0};
    uint64_t seen = (uint64_t)-1;
    ensure_workers(p);
    if (p->start_method == CF_START_FORK) {
        atomic_store_explicit(&p->first_forks_done, 1, memory_order_release);
        cf__futex_wake(&p->first_forks_done, INT_MAX);
    }
    for (;;) {
        /* Requests from other threads. */
        pthread_mutex_lock(&p->mu);
        seen = atomic_load(&p->seq);
        bool shutdown = p->shutdown;
        int stop_sig = p->stop_sig;
        cf_future **ints = p->interrupts;
        size_t nints = p->ninterrupts;
        p->interrupts = NULL;
        p->ninterrupts = p->interrupts_cap = 0;
        size_t npending = p->npending;
        pthread_mutex_unlock(&p->mu);

        if (nints)
            handle_interrupts(p, ints, nints);
        free(ints);
        if (stop_sig && !p->stopping) {
            p->stopping = true;
            for (int i = 0; i < p->nworkers; i++)
                kill_worker(p->workers[i], R_STOP, stop_sig);
        }
        if (stop_sig && npending) {
            /* shutdown(cancel_futures) left the calls a worker had begun
             * (requeued after a crash); nobody will run them now. */
            pthread_mutex_lock(&p->mu);
            pjob *left = take_pending_locked(p);
            pthread_mutex_unlock(&p->mu);
            fail_jobs(p, left, CF_EBROKEN, "BrokenProcessPool",
                      "the pool's workers were stopped by terminate_workers/kill_workers");
        }
        dispatch(p, &enc);
        /* Whether we may finish is decided on the queue as dispatch left
         * it: dispatch drops cancelled calls and fails calls it could not
         * send, and no wake-up follows either, so a count read before it
         * would put us to sleep for good with nothing left to wait for. */
        pthread_mutex_lock(&p->mu);
        npending = p->npending;
        pthread_mutex_unlock(&p->mu);
        if (shutdown && npending == 0 && all_idle(p) && !p->exits_sent) {
            p->exits_sent = true;
            p->stopping = true; /* no replacements from here on */
            for (int i = 0; i < p->nworkers; i++) {
                pworker *w = p->workers[i];
                if (!w->exit_sent)
                    retire_worker(w, &enc);
            }
        }
        if (shutdown && npending == 0 && p->nworkers == 0 &&
            (p->exits_sent || pool_broken(p) || p->stopping))
            break;
        for (int i = 0; i < p->nworkers; i++)
            flush_out(p->workers[i]);

        /* Out of memory this round (reading results): try again soon, a
         * bounded number of times, then give up on the pool. */
        bool oom = p->oom;
        p->oom = false;
        if (oom && p->oom_since == 0) {
            p->oom_since = cf__now_ns();
            cf__log("process pool: out of memory in the manager; retrying for up to %d ms",
                    OOM_GIVE_UP_MS);
        } else if (oom && cf__now_ns() - p->oom_since > (int64_t)OOM_GIVE_UP_MS * 1000000) {
            break_pool(p, CF_ENOMEM, "the pool's manager ran out of memory reading results "
                                     "and gave up");
        }

        /* Wait for something to happen.  Liveness: this sleep ends when
         *  - another thread changed something we must act on: every such
         *    change (submit, shutdown, interrupt, stop_workers, a requeue)
         *    bumps `seq` under `mu`, and signals `wake` if we already said
         *    `sleeping`; a bump after our read of `seq` above makes this
         *    poll not block at all;
         *  - a worker wrote (POLLIN), took more output (POLLOUT, asked
         *    only while some is queued) or died (pidfd, or EOF);
         *  - a worker published an answer in its result ring: it writes a
         *    BELL to its socket when it finds `sleeping` set in the ring
         *    after publishing, and we set that flag before we look at
         *    the ring's head a last time below (a seq_cst pair, as for
         *    `seq`: process.h), so an answer published after that look
         *    rings the bell and one published before it stops this wait
         *    (ring_news) - unless we are held at a SOCKET frame, whose
         *    RESULT the worker sent before anything after it: its
         *    arrival (POLLIN) wakes us, and read_some() then pumps the
         *    ring;
         *  - the earliest call deadline passes (check_timeouts' bound);
         *  - a leaving worker's EXIT_GRACE_MS ends (kill_if_late's bound);
         *  - after a round out of memory, the retry's pause (OOM_RETRY_MS).
         * Changes made by this thread itself (results read, calls dropped
         * or failed by dispatch, workers reaped) are acted on before we
         * get here again: everything above re-reads the state after them.
         * Without a pidfd, a worker at EOF is looked for every
         * EOF_LOOK_MS until it is reaped.  Room for every descriptor was made by
         * spawn_worker: waiting never allocates. */
        struct pollfd wake_only[1];
        pworker *no_worker[1];
        struct pollfd *pfds = p->pfds ? p->pfds : wake_only; /* none started yet */
        pworker **pw = p->pw ? p->pw : no_worker;
        size_t np = 0;
        pfds[np] = (struct pollfd){p->wake.rfd, POLLIN, 0};
        pw[np++] = NULL;
        for (int i = 0; i < p->nworkers; i++) {
            pworker *w = p->workers[i];
            /* A read since the last sweep (handle_interrupts' included)
             * may have met EOF: its socket is not polled below, so the
             * worker must be on its way out before we sleep. */
            kill_at_eof(w);
            if (!w->eof) {
                short ev = POLLIN;
                if (w->out_start < w->out_end && !w->wdead)
                    ev |= POLLOUT;
                pfds[np] = (struct pollfd){w->fd, ev, 0};
                pw[np++] = w;
            }
            if (w->pidfd >= 0) {
                pfds[np] = (struct pollfd){w->pidfd, POLLIN, 0};
                pw[np++] = w;
            }
        }
        int poll_ms = -1;
        int64_t now = cf__now_ns();
        check_timeouts(p, now, &poll_ms);
        /* Liveness of EXIT_GRACE_MS: the wait ends by the time a leaving
         * worker is due to be killed. */
        for (int i = 0; i < p->nworkers; i++)
            kill_if_late(p->workers[i], shutdown && npending == 0, now, &poll_ms);
        if (oom) {
            /* Readable workers would only wake us at once: wait on the
             * wake descriptor alone; the timeout ends the retry's pause. */
            np = 1;
            if (poll_ms < 0 || poll_ms > OOM_RETRY_MS)
                poll_ms = OOM_RETRY_MS;
        }
        bool no_pidfd_eof = false, no_pidfd = false;
        for (int i = 0; i < p->nworkers; i++) {
            if (p->workers[i]->pidfd < 0 && p->workers[i]->eof)
                no_pidfd_eof = true;
            else if (p->workers[i]->pidfd < 0)
                no_pidfd = true;
        }
        /* Liveness of the looks for exits without a pidfd (the loop
         * after the wait): the wait lasts at most EOF_LOOK_MS while such
         * a worker is at EOF, EXIT_LOOK_MS while one is alive. */
        if (no_pidfd_eof && (poll_ms < 0 || poll_ms > EOF_LOOK_MS))
            poll_ms = EOF_LOOK_MS;
        else if (no_pidfd && (poll_ms < 0 || poll_ms > EXIT_LOOK_MS))
            poll_ms = EXIT_LOOK_MS; /* the exits are looked for below */
        /* Spin first when a wake-up would cost about as much as the
         * wait (spin_deadline; bounded), then sleep as below. */
        bool idle = all_idle(p);
        bool spun = false;
        if (!oom && poll_ms != 0) {
            int64_t until = spin_deadline(p);
            if (poll_ms > 0 && until > now + (int64_t)poll_ms * 1000000)
                until = now + (int64_t)poll_ms * 1000000;
            if (until > now)
                spun = manager_spin(p, seen, until);
        }
        /* A spin that found something skips poll(), but poll() alone
         * reports deaths, socket input and room to write: while spins keep
         * finding work it still runs, without waiting, every POLL_EVERY_NS. */
        if (spun && cf__now_ns() - p->polled_ns >= POLL_EVERY_NS) {
            spun = false;
            poll_ms = 0;
        }
        int r = 0;
        if (!spun) {
            atomic_store(&p->sleeping, true);
            if (atomic_load(&p->seq) != seen)
                poll_ms = 0;
            /* Workers write a BELL to their socket for an answer they put
             * in their ring only while we say we sleep (the Dekker pair of
             * process.h): say so, then look once more. */
            for (int i = 0; i < p->nworkers; i++) {
                pworker *w = p->workers[i];
                if (!w->ring.map || w->refused)
                    continue;
                atomic_store(cf__ring_word(w->ring.map, CF__RING_SLEEPING), 1);
                if (!oom && ring_news(w, memory_order_seq_cst))
                    poll_ms = 0;
            }
            r = poll(pfds, np, poll_ms);
            p->polled_ns = cf__now_ns();
            atomic_store(&p->sleeping, false);
            for (int i = 0; i < p->nworkers; i++)
                if (p->workers[i]->ring.map)
                    atomic_store_explicit(cf__ring_word(p->workers[i]->ring.map,
                                                        CF__RING_SLEEPING),
                                          0, memory_order_relaxed);
        }
        /* How soon after the last answer a request came, for
         * spin_deadline(): only when nothing was in flight. */
        if (idle && p->last_answer_ns && atomic_load_explicit(&p->seq, memory_order_relaxed) != seen)
            p->request_gap_ns = cf__now_ns() - p->last_answer_ns;
        if (r < 0 && errno != EINTR) {
            cf__log("process pool: poll: %s", strerror(errno));
            continue;
        }
        if (r > 0 && (pfds[0].revents & POLLIN))
            cf__notifier_drain(&p->wake);
        /* Note what poll() reported, then act on it by worker: handling a
         * death can start workers (ensure_workers), which reallocates
         * pfds and pw, so they are not read past this point. */
        for (int i = 0; i < p->nworkers; i++) {
            pworker *w = p->workers[i];
            w->ev_in = w->ev_out = w->ev_died = false;
        }
        for (size_t i = 1; i < np && r > 0; i++) {
            pworker *w = pw[i];
            short re = pfds[i].revents;
            if (pfds[i].fd == w->fd) {
                w->ev_in = (re & (POLLIN | POLLHUP | POLLERR)) != 0;
                w->ev_out = (re & POLLOUT) != 0;
            } else if (re & POLLIN) {
                w->ev_died = true; /* its pidfd */
            }
        }
        /* Input first, then deaths: a worker's last results arrive before
         * its exit is handled.  Workers started meanwhile are appended to
         * `workers` with no events noted. */
        for (int i = 0; i < p->nworkers; i++) {
            pworker *w = p->workers[i];
            if (w->ev_in)
                read_some(p, w, false);
            else if (w->ev_out)
                flush_out(w);
            /* Answers in its ring need no wake-up.  Not in a round out of
             * memory: like a readable socket, a full ring waits for the
             * next full poll(), which also notices deaths. */
            if (!oom)
                ring_pump(p, w);
        }
        /* Liveness of the look for exits without a pidfd: the wait above
         * lasts at most EXIT_LOOK_MS while such a worker is alive. */
        int64_t after = cf__now_ns();
        bool look = after - p->exit_look_ns >= (int64_t)EXIT_LOOK_MS * 1000000;
        if (look)
            p->exit_look_ns = after;
        for (int i = 0; i < p->nworkers;) {
            pworker *w = p->workers[i];
            bool check = w->ev_died;
            /* EOF: kill_at_eof().  With a pidfd the death shows through
             * it; without, it is looked for now. */
            kill_at_eof(w);
            if (w->pidfd < 0 && w->eof)
                check = true;
            /* Without a pidfd, a worker whose output waits unread for want
             * of memory never reaches EOF here, nor one dead while a
             * process it forked keeps its socket open: look for their exit
             * too (every EXIT_LOOK_MS), or the pool would wait for them
             * for ever (with their calls, and a waited shutdown). */
            if (w->pidfd < 0 && !w->eof && (p->oom || look))
                check = true;
            if (check) {
                /* A live worker's EOF shows here (a look for the exit of
                 * a worker without a pidfd), for kill_at_eof(); what a
                 * dead one sent last is read by try_reap(), after it has
                 * seen the exit. */
                read_worker(p, w);
                kill_at_eof(w);
                void (*hook)(pid_t, bool) =
                    atomic_load_explicit(&cf__test_hook_before_reap, memory_order_relaxed);
                if (CF__UNLIKELY(hook != NULL))
                    hook(w->pid, w->head != NULL);
                if (try_reap(p, w))
                    continue; /* removed: slot i now holds another worker */
            }
            i++;
        }
    }
    free(p->pfds);
    free(p->pw);
    p->pfds = NULL;
    p->pw = NULL;
    wenc_free(&enc);
    cf__set_thread_name(NULL);
    tls_manager = NULL;
    return NULL;
}

/* ---- the engine ------------------------------------------------------------ */

/* Queues a list of jobs (all or none). */
static int enqueue(process_pool *p, pjob *j, const char *who)
{
    pthread_mutex_lock(&p->mu);
    if (p->shutdown || p->broken) {
        int rc = p->broken ? cf__fail(CF_EBROKEN, "%s: %s", who, p->broken_msg)
                           : cf__fail(CF_ESHUTDOWN, "%s: cannot schedule new futures after "
                                                    "shutdown", who);
        /* Their slots go back while `mu` keeps the pool alive: once it is
         * let go, a destroy may free the pool before submit returns. */
        for (pjob *k = j; k; k = k->next)
            for (uint32_t i = 0; i < k->n; i++)
                cf__slot_release(k->fs[i]);
        pthread_mutex_unlock(&p->mu);
        while (j) {
            pjob *next = j->next;
            for (uint32_t i = 0; i < j->n; i++)
                cf_future_release(j->fs[i]);
            free(j);
            j = next;
        }
        return rc;
    }
    while (j) {
        pjob *next = j->next;
        push_pending_locked(p, j);
        j = next;
    }
    wake_locked(p);
    pthread_mutex_unlock(&p->mu);
    wake_manager(p);
    return CF_OK;
}

static pjob *new_job(process_pool *p, cf_future **fs, size_t n)
{
    pjob *j = malloc(sizeof *j + n * sizeof(cf_future *));
    if (!j)
        return NULL;
    j->next = NULL;
    j->on_worker = false;
    j->requeued = false;
    j->n = (uint32_t)n;
    j->priority = fs[0]->priority;
    j->id = 0;
    j->interrupted = NULL;
    memcpy(j->fs, fs, n * sizeof *fs);
    for (size_t i = 0; i < n; i++)
        fs[i]->claimable = true; /* not yet seen by another thread */
    int64_t t = fs[0]->timeout_ns;
    if (t == CF__NS_FOREVER)
        t = p->task_timeout_ns;
    j->timeout_ns = t;
    j->killed_for = 0;
    j->timed_mark = 0;
    j->orphaned = 0;
    j->lent = (cf__buf){NULL, 0, -1};
    return j;
}

/* A chunk bigger than a worker's claim words goes as several jobs. */
static int pp_submit_batch(cf_executor *ex, cf_future **fs, size_t n)
{
    process_pool *p = pool_of(ex);
    pjob *first = NULL, **tail = &first;
    for (size_t at = 0; at < n; at += NCLAIMS) {
        pjob *j = new_job(p, fs + at, n - at < NCLAIMS ? n - at : NCLAIMS);
        if (!j) {
            while (first) {
                pjob *next = first->next;
                free(first);
                first = next;
            }
            for (size_t i = 0; i < n; i++)
                cf_future_release(fs[i]);
            return cf__fail(CF_ENOMEM, "submit: out of memory");
        }
        *tail = j;
        tail = &j->next;
    }
    return enqueue(p, first, "submit");
}

static int pp_submit(cf_executor *ex, cf_future *f)
{
    return pp_submit_batch(ex, &f, 1);
}

/* Calls with this much argument payload are written at submit straight
 * into shared memory, as the CALL frame the worker will map: the one copy
 * of the bytes that submit makes anyway is the only one. */
#define SHM_ARGS_MIN ((size_t)1 << 20)

static void put_bytes(unsigned char **at, const void *p, size_t n)
{
    memcpy(*at, p, n);
    *at += n;
}

static void put_u64(unsigned char **at, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *(*at)++ = (unsigned char)(v >> (8 * i));
}

static cf_future *pp_new_call(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                              size_t payload)
{
    /* Without seals (os.h) a worker could shrink the buffer under the
     * parent's mapping: big arguments then travel as a frame file the
     * parent writes and never maps. */
    if (payload < SHM_ARGS_MIN || !cf__os_has_seals)
        return NULL;
    const char *name = cf_task_name(fn);
    size_t namelen = strlen(name);
    size_t size = 4 + 1 + namelen + 1;
    for (size_t i = 0; i < nargs; i++)
        size += 1 + (args[i].kind == CF_I64 || args[i].kind == CF_F64 ? 8 : 0) +
                (args[i].kind == CF_BYTES || args[i].kind == CF_STR ? 8 + cf__value_extra(&args[i])
                                                                     : 0);
    process_pool *p = pool_of(ex);
    cf__shm *shm = cf__shm_new();
    if (!shm)
        return NULL;
    shm->cache = cf__bufcache_ref(p->cache);
    cf_future *f = NULL;
    if (cf__bufcache_take(p->cache, size, 2 * size, &shm->args) ||
        cf__buf_new(&shm->args, size, true) == 0)
        f = cf__future_new_borrowed(fn, args, nargs);
    if (!f) {
        cf__shm_free(shm); /* gives back a buffer it took */
        return NULL;       /* the heap path reports what is wrong */
    }
    unsigned char *at = shm->args.map;
    const unsigned char one[4] = {1, 0, 0, 0};
    put_bytes(&at, one, 4);
    *at++ = (unsigned char)namelen;
    put_bytes(&at, name, namelen);
    *at++ = (unsigned char)nargs;
    cf_value *copies = cf__call_args(&f->call);
    for (size_t i = 0; i < nargs; i++) {
        const cf_value *v = &args[i];
        *at++ = (unsigned char)v->kind;
        if (v->kind == CF_I64) {
            put_u64(&at, (uint64_t)v->as.i64);
        } else if (v->kind == CF_F64) {
            uint64_t bits;
            memcpy(&bits, &v->as.f64, 8);
            put_u64(&at, bits);
        } else if (v->kind == CF_BYTES || v->kind == CF_STR) {
            size_t n = cf__value_extra(v);
            put_u64(&at, n);
            copies[i].as.bytes = at;
            if (v->size)
                memcpy(at, v->as.bytes, v->size);
            if (v->kind == CF_STR)
                at[v->size] = '\0';
            at += n;
        }
    }
    shm->args_len = size;
    f->shm = shm;
    return f;
}

static bool pp_is_worker(const cf_executor *ex)
{
    return tls_manager == (const process_pool *)ex;
}

static int pp_worker_count(const cf_executor *ex)
{
    return atomic_load(&((process_pool *)ex)->alive);
}

static int pp_shutdown(cf_executor *ex, bool wait, bool cancel_futures)
{
    process_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->mu);
    p->shutdown = true;
    cf_future **cancel = NULL;
    size_t ncancel = 0;
    if (cancel_futures) {
        /* Every call no worker has begun: queued here or sent to a worker
         * (cf_future_cancel() loses to a worker's claim).  Collected under
         * `mu`, which keeps the jobs' call lists still, and cancelled
         * outside it: cancel() runs done-callbacks. */
        p->cancel_futures = true;
        size_t total = 0;
        for (pjob *j = p->pending_head; j; j = j->next)
            total += j->n;
        for (pjob *j = p->sent; j; j = j->snext)
            total += j->n;
        cancel = total ? malloc(total * sizeof *cancel) : NULL;
        for (pjob *j = p->pending_head; j && cancel; j = j->next)
            for (uint32_t i = 0; i < j->n; i++)
                cancel[ncancel++] = cf_future_retain(j->fs[i]);
        for (pjob *j = p->sent; j && cancel; j = j->snext)
            for (uint32_t i = 0; i < j->n; i++)
                cancel[ncancel++] = cf_future_retain(j->fs[i]);
        if (total && !cancel)
            cf__log("shutdown: out of memory; %zu calls not begun were not cancelled", total);
    }
    wake_locked(p);
    pthread_mutex_unlock(&p->mu);
    wake_manager(p);
    cf__bound_close(ex, CF_ESHUTDOWN); /* after `shutdown`: waiters get CF_ESHUTDOWN */
    for (size_t i = 0; i < ncancel; i++) {
        cf_future_cancel(cancel[i]);
        cf_future_release(cancel[i]);
    }
    free(cancel);
    if (!wait)
        return CF_OK;
    if (pp_is_worker(ex))
        return cf__fail(CF_EDEADLK, "shutdown: wait requested from the pool's own manager "
                                    "thread (a done-callback), which cannot wait for itself");
    /* Liveness: the manager leaves once `shutdown` is set, nothing is
     * pending and every worker is reaped (see the end of its loop); the
     * wake_locked() above makes it look, and each call still queued or
     * running ends by finishing, failing, its worker dying or its timeout,
     * which the manager handles in its next round. */
    pthread_mutex_lock(&p->join_mu);
    if (!p->joined && p->manager_started) {
        pthread_join(p->manager, NULL);
        p->joined = true;
    }
    pthread_mutex_unlock(&p->join_mu);
    return CF_OK;
}

static void pp_interrupt(cf_executor *ex, cf_future *f)
{
    process_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->mu);
    if (p->ninterrupts == p->interrupts_cap) {
        size_t ncap = p->interrupts_cap ? p->interrupts_cap * 2 : 4;
        cf_future **nf = realloc(p->interrupts, ncap * sizeof *nf);
        if (!nf) {
            pthread_mutex_unlock(&p->mu);
            cf__log("process pool: out of memory queueing an interrupt");
            return;
        }
        p->interrupts = nf;
        p->interrupts_cap = ncap;
    }
    p->interrupts[p->ninterrupts++] = cf_future_retain(f);
    wake_locked(p);
    pthread_mutex_unlock(&p->mu);
    wake_manager(p);
}

static void pp_stop_workers(cf_executor *ex, bool kill)
{
    process_pool *p = pool_of(ex);
    pthread_mutex_lock(&p->mu);
    p->stop_sig = kill ? SIGKILL : SIGTERM;
    wake_locked(p);
    pthread_mutex_unlock(&p->mu);
    wake_manager(p);
}

static void pp_destroy(cf_executor *ex)
{
    process_pool *p = pool_of(ex);
    /* After a waited shutdown: the manager has reaped every worker. */
    for (size_t i = 0; i < p->ninterrupts; i++)
        cf_future_release(p->interrupts[i]);
    free(p->interrupts);
    free(p->marks);
    free(p->workers);
    wenc_free(&p->init_frame);
    cf__bufcache_close(p->cache);
    cf__notifier_close(&p->wake);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->join_mu);
    free(p);
}

static const cf__engine process_engine = {
    .name = "process",
    .copies_args = true,
    .submit = pp_submit,
    .shutdown = pp_shutdown,
    .is_worker = pp_is_worker,
    .worker_count = pp_worker_count,
    .submit_batch = pp_submit_batch,
    .interrupt = pp_interrupt,
    .stop_workers = pp_stop_workers,
    .new_call = pp_new_call,
    .destroy = pp_destroy,
    .orders_by_priority = true,
};

CF__API int cf_process_pool_default_workers(void)
{
    return cf_usable_cpus();
}

CF__API void cf_process_pool_options_init(cf_process_pool_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->max_workers = CF_AUTO;
    opts->on_crash = CF_CRASH_BREAKS_POOL;
    opts->start_method = CF_START_EXEC;
    opts->task_timeout = CF_FOREVER;
}

#ifndef CF_WORKER_DEFAULT /* set by the build: <libexecdir>/cfutures/cfutures-worker */
#define CF_WORKER_DEFAULT "/usr/local/libexec/cfutures/cfutures-worker"
#endif

/* cfutures-worker as installed beside this shared library: the build sets
 * CF_WORKER_FROM_LIBDIR to its path relative to <libdir>, so a tree
 * installed under another prefix than the configured one (`cmake --install
 * --prefix`, a package unpacked elsewhere) starts its own copy.  Only the
 * shared library looks (glibc 2.34 and later have dladdr() in libc): a
 * static copy sits in a program, whose directory says nothing about where
 * cfutures is installed.  Otherwise, or when no executable file is there,
 * the configured path.  `buf` holds the path found. */
#if defined(CF_WORKER_FROM_LIBDIR) && defined(__GLIBC__) && defined(_GNU_SOURCE) &&             \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#include <dlfcn.h>
#define CF_WORKER_BESIDE 1
#endif

static const char *generic_worker(char *buf, size_t size)
{
#ifdef CF_WORKER_BESIDE
    static const char anchor = 0; /* an address inside this object */
    Dl_info info;
    if (dladdr(&anchor, &info) && info.dli_fname && info.dli_fname[0] == '/') {
        const char *base = strrchr(info.dli_fname, '/') + 1;
        if (strncmp(base, "libcfutures.so", 14) == 0) {
            int n = snprintf(buf, size, "%.*s/%s", (int)(base - 1 - info.dli_fname),
                             info.dli_fname, CF_WORKER_FROM_LIBDIR);
            struct stat st;
            if (n > 0 && (size_t)n < size && stat(buf, &st) == 0 && S_ISREG(st.st_mode) &&
                access(buf, X_OK) == 0)
                return buf;
        }
    }
#else
    (void)buf;
    (void)size;
#endif
    return CF_WORKER_DEFAULT;
}

/* Checks that `path` (`what`) is an absolute path, short enough to keep,
 * to a regular file this process may access with `mode`; CF_OK or
 * CF_EINVAL with a message. */
static int check_file(const char *what, const char *path, int mode)
{
    size_t len = strlen(path);
    if (path[0] != '/' || len >= sizeof ((process_pool *)0)->worker_program)
        return cf__fail(CF_EINVAL, "process_pool_new: %s must be an absolute path shorter than "
                                   "4096 bytes, got \"%.200s\"", what, path);
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        return cf__fail(CF_EINVAL, "process_pool_new: %s \"%.200s\": %s", what, path,
                        strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        return cf__fail(CF_EINVAL, "process_pool_new: %s \"%.200s\" is not a regular file",
                        what, path);
    if (access(path, mode) != 0) {
        int e = errno;
        return cf__fail(CF_EINVAL, "process_pool_new: %s \"%.200s\" is not %s: %s", what, path,
                        mode == X_OK ? "executable" : "readable", strerror(e));
    }
    return CF_OK;
}

/* Checks worker_program, worker_library and tasks; CF_OK or CF_EINVAL
 * with a message.
 * The program is checked now so that a wrong path is the caller's error,
 * not a pool that breaks later in the background. */
static int check_worker_program(const cf_process_pool_options *o)
{
    size_t ntasks = 0;
    while (o->tasks && o->tasks[ntasks]) {
        if (ntasks == WIRE_TASKS_MAX)
            return cf__fail(CF_EINVAL, "process_pool_new: more than %d tasks", WIRE_TASKS_MAX);
        if (!cf_task_name(o->tasks[ntasks]))
            return cf__fail(CF_EINVAL, "process_pool_new: tasks[%zu] is not registered: %s",
                            ntasks, cf__task_unregistered_hint(o->tasks[ntasks]));
        ntasks++;
    }
    if (!o->worker_program && !o->worker_library)
        return CF_OK;
    const char *what = o->worker_library ? "worker_library" : "worker_program";
    if (o->start_method != CF_START_EXEC)
        return cf__fail(CF_EINVAL, "process_pool_new: %s needs CF_START_EXEC", what);
    if (!o->tasks)
        return cf__fail(CF_EINVAL, "process_pool_new: %s needs `tasks`, the tasks the pool "
                                   "runs, which each worker checks it has", what);
    if (o->worker_library) {
        int rc = check_file("worker_library", o->worker_library, R_OK);
        if (rc != CF_OK)
            return rc;
    }
    if (o->worker_program)
        return check_file("worker_program", o->worker_program, X_OK);
    char found[sizeof ((process_pool *)0)->worker_program];
    int rc = check_file("the generic worker program", generic_worker(found, sizeof found), X_OK);
    if (rc != CF_OK) {
        char why[320];
        snprintf(why, sizeof why, "%s", cf_last_error_message());
        return cf__fail(rc, "%s (worker_library without worker_program needs cfutures-worker, "
                            "installed with cfutures)", why);
    }
    return CF_OK;
}

CF__API int cf_process_pool_new(cf_executor **out, const cf_process_pool_options *opts)
{
    if (!out)
        return cf__fail(CF_EINVAL, "process_pool_new: out is NULL");
    *out = NULL;
    cf_process_pool_options o;
    if (opts)
        o = *opts;
    else
        cf_process_pool_options_init(&o);
    if (cf_in_worker_process())
        return cf__fail(CF_EINVALSTATE, "process_pool_new: called inside a worker process");
    if (o.max_workers == CF_AUTO)
        o.max_workers = cf_process_pool_default_workers();
    if (o.max_workers < 1 || o.max_workers > MAX_WORKERS)
        return cf__fail(CF_EINVAL, "process_pool_new: max_workers must be CF_AUTO or 1..%d, "
                                   "got %d", MAX_WORKERS, o.max_workers);
    if (o.max_tasks_per_child < 0)
        return cf__fail(CF_EINVAL, "process_pool_new: max_tasks_per_child must be >= 0, got %d",
                        o.max_tasks_per_child);
    if (o.on_crash != CF_CRASH_BREAKS_POOL && o.on_crash != CF_CRASH_REPLACES_WORKER)
        return cf__fail(CF_EINVAL, "process_pool_new: unknown crash policy %d", (int)o.on_crash);
    if (o.start_method != CF_START_EXEC && o.start_method != CF_START_FORK)
        return cf__fail(CF_EINVAL, "process_pool_new: unknown start method %d",
                        (int)o.start_method);
    if (o.start_method == CF_START_FORK && o.max_tasks_per_child)
        return cf__fail(CF_EINVAL, "process_pool_new: max_tasks_per_child needs CF_START_EXEC: "
                                   "with CF_START_FORK its replacement workers would be forked "
                                   "from the running, threaded program");
    int64_t deadline;
    int rc = cf__deadline(o.task_timeout, &deadline, "process_pool_new: task_timeout");
    if (rc != CF_OK)
        return rc;
    rc = check_worker_program(&o);
    if (rc != CF_OK)
        return rc;
    if (o.start_method == CF_START_EXEC && !o.worker_program && !o.worker_library &&
        !cf__process_init_called)
        return cf__fail(CF_EINVALSTATE, "process_pool_new: CF_START_EXEC starts this program "
                                        "again as a worker, which needs cf_process_init(argc, "
                                        "argv) at the top of main()");
    /* A set-user-ID (or capability-raising) program cannot tell its own
     * workers from a caller who chose its environment and descriptors,
     * so cf_process_init() never acts as a worker there (secure_getenv):
     * a started copy would run main() again (and a worker_program, which
     * inherits the raised privileges, would not become a worker either). */
    if (o.start_method == CF_START_EXEC && cf__os_secure_mode())
        return cf__fail(CF_EINVALSTATE, "process_pool_new: this program runs in secure-execution "
                                        "mode (set-user-ID or raised capabilities), where a "
                                        "started copy cannot trust its environment to become a "
                                        "worker; use CF_START_FORK");
    if (o.initializer && !cf_task_name(o.initializer))
        return cf__fail(CF_EINVAL, "process_pool_new: the initializer is not registered: %s",
                        cf__task_unregistered_hint(o.initializer));
    if (o.ninitargs > CF_ARGS_MAX || (o.ninitargs && !o.initargs))
        return cf__fail(CF_EINVAL, "process_pool_new: bad initargs (%zu, %s)", o.ninitargs,
                        o.initargs ? "array" : "NULL");
    size_t initbytes = 0;
    for (size_t i = 0; i < o.ninitargs; i++) {
        rc = cf__value_check(&o.initargs[i], true, "process_pool_new: initargs", i);
        if (rc != CF_OK)
            return rc;
        initbytes += cf__value_extra(&o.initargs[i]);
    }
    if (initbytes > CF_PAYLOAD_MAX)
        return cf__fail(CF_ETOOBIG, "process_pool_new: initargs total %zu bytes, more than "
                                    "CF_PAYLOAD_MAX (%zu)",
                        initbytes, (size_t)CF_PAYLOAD_MAX);

    process_pool *p = calloc(1, sizeof *p);
    if (!p)
        return cf__fail(CF_ENOMEM, "process_pool_new: out of memory");
    p->max_workers = o.max_workers;
    p->max_tasks = o.max_tasks_per_child;
    p->policy = o.on_crash;
    p->start_method = o.start_method;
    p->request_gap_ns = INT64_MAX;
    p->task_timeout_ns = o.task_timeout >= 9e9 ? CF__NS_FOREVER
                                               : (int64_t)(o.task_timeout * 1e9);
    if (o.worker_program || o.worker_library) {
        char found[sizeof ((process_pool *)0)->worker_program];
        snprintf(p->worker_program, sizeof p->worker_program, "%s",
                 o.worker_program ? o.worker_program : generic_worker(found, sizeof found));
        p->worker_argv[0] = p->worker_program;
    }
    if (o.worker_library) {
        snprintf(p->worker_library, sizeof p->worker_library, "%s", o.worker_library);
        p->worker_argv[1] = p->worker_library;
    }
    /* The INIT frame: the tasks every worker must have, then the
     * initializer call with copies of its arguments. */
    wire_enc *e = &p->init_frame;
    wenc_reset(e);
    size_t ntasks = 0;
    while (o.tasks && o.tasks[ntasks])
        ntasks++;
    wenc_u32(e, (uint32_t)ntasks);
    for (size_t i = 0; i < ntasks; i++) {
        const char *name = cf_task_name(o.tasks[i]);
        wenc_u8(e, (uint8_t)strlen(name));
        wenc_put(e, name, strlen(name));
    }
    if (!o.initializer) {
        wenc_u8(e, 0);
    } else {
        const char *name = cf_task_name(o.initializer);
        wenc_u8(e, 1);
        wenc_u32(e, 1);
        wenc_u8(e, (uint8_t)strlen(name));
        wenc_put(e, name, strlen(name));
        wenc_u8(e, (uint8_t)o.ninitargs);
        for (size_t i = 0; i < o.ninitargs; i++) {
            const cf_value *v = &o.initargs[i];
            wenc_u8(e, (uint8_t)v->kind);
            if (v->kind == CF_I64)
                wenc_u64(e, (uint64_t)v->as.i64);
            else if (v->kind == CF_F64) {
                uint64_t bits;
                memcpy(&bits, &v->as.f64, 8);
                wenc_u64(e, bits);
            } else if (v->kind == CF_BYTES) {
                wenc_u64(e, v->size);
                wenc_put(e, v->as.bytes, v->size);
            } else if (v->kind == CF_STR) {
                wenc_u64(e, v->size + 1);
                wenc_put(e, v->as.str, v->size + 1);
            }
        }
    }
    /* A frame above WIRE_INLINE_MAX travels in a memfd made for each
     * worker (queue_frame). */
    if (e->oom) {
        wenc_free(e);
        free(p);
        return cf__fail(CF_ENOMEM, "process_pool_new: out of memory");
    }
    /* Enough buffers for every worker's arguments and result in flight. */
    p->cache = cf__bufcache_new(2 * p->max_workers, CACHE_BYTES);
    if (!p->cache) {
        wenc_free(e);
        free(p);
        return cf__fail(CF_ENOMEM, "process_pool_new: out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->join_mu, NULL);
    atomic_init(&p->alive, 0);
    atomic_init(&p->first_forks_done, 0);
    if (cf__notifier_open(&p->wake) != 0) {
        int err = errno;
        cf__bufcache_close(p->cache);
        wenc_free(e);
        free(p);
        return cf__fail(CF_ESYS, "process_pool_new: no wake-up descriptor: %s", strerror(err));
    }
    cf__executor_register(&p->base, &process_engine);
    p->base.bound.max = o.max_queued;
    /* The manager blocks asynchronous signals, so they reach application
     * threads; the workers reset their mask. */
    rc = cf__thread_start(&p->manager, manager_main, p);
    if (rc != 0) {
        atomic_store(&p->base.destroyed, true);
        cf__executor_unref(&p->base);
        return cf__fail(CF_ESYS, "process_pool_new: cannot start the manager thread: %s",
                        strerror(rc));
    }
    p->manager_started = true;
    /* CF_START_FORK: return only once the manager has forked the first
     * workers.  Forked while the caller went on, they would copy the
     * process at a moment the application does not choose: its thread
     * might be inside malloc (whose lock, under the AddressSanitizer
     * runtime of Debian 12, no fork handler takes) or hold a lock of its
     * own, which the worker would then wait for forever.  Waiting here, a
     * program with no other thread has its only thread blocked in this
     * call while they are forked.  (They are forked by the manager, not
     * by this thread, because a worker's death signal, PR_SET_PDEATHSIG,
     * follows the thread that forked it, and this one may exit first.)
     * Liveness: the manager sets the word right after its first
     * ensure_workers(), which forks at most max_workers times; the futex
     * wake follows the store.  It waits for nobody, except that a start
     * that fails is logged, through the application's log hook, which
     * might wait for a lock this thread holds: so the wait gives up after
     * FIRST_FORKS_WAIT_NS and the pool is returned anyway (it works the
     * same; only the moment of the forks is no longer this call). */
    if (p->start_method == CF_START_FORK) {
        int64_t wait_ns =
            atomic_load_explicit(&cf__test_first_forks_wait_ns, memory_order_relaxed);
        int64_t until = cf__now_ns() + (wait_ns > 0 ? wait_ns : FIRST_FORKS_WAIT_NS);
        while (atomic_load_explicit(&p->first_forks_done, memory_order_acquire) == 0 &&
               cf__now_ns() < until)
            cf__futex_wait(&p->first_forks_done, 0, until);
    }
    *out = &p->base;
    return CF_OK;
}
