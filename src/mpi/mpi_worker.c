/* SPDX-License-Identifier: MIT */
/*
 * mpi_worker.c - cf_mpi_init(), MPI start-up and shut-down, and the worker
 * side of an MPI pool.
 *
 * Design notes
 * - A worker has two threads.  The main thread waits for CALL frames from
 *   the manager, runs their calls through the same cf_call machinery as
 *   the other engines and answers each frame with one RESULT frame, in
 *   order; so the manager knows that a worker's oldest unanswered frame is
 *   the one it runs.  The heartbeat thread sends an empty HB message every
 *   interval, also while a long call runs: it is how the manager tells a
 *   busy worker from a dead one (Open MPI never reports a dead spawned
 *   worker to its parent).  Both threads call MPI, hence
 *   MPI_THREAD_MULTIPLE.
 * - A CALLS message holds several frames, each answered on its own: a
 *   quick call's small answer is held and leaves with the next ones in one
 *   RESULTS message, at the latest when the message's last frame is done;
 *   an answer that took CF__MPI_HOLD_NS or more, or is big, leaves at once
 *   after those held.  If a call runs long meanwhile, the heartbeat thread
 *   sends what is held once the first has waited CF__MPI_HOLD_MAX_NS, at
 *   its next STOP poll (every STOP_POLL_NS while the worker is busy).
 *   send_mu orders the two threads' answers.  Held answers that cannot
 *   be sent are lost, and the manager takes each answer for its oldest
 *   call: after that nothing more is answered, and the worker leaves.
 * - A call's future is released as soon as its outcome is encoded, unless
 *   the encoder references its result, so one block serves every call.
 * - Arguments are borrowed from the received message for the duration of
 *   the call.  A task that fails comes back as a failure record; the
 *   manager adds which worker it was.
 * - Never waiting for ever: every wait of a worker ends when the manager
 *   says EXIT, which a pool that breaks says too (with "broken"), however
 *   busy the worker is:
 *   - waiting for a message (wait_message): any tag, EXIT included;
 *   - a call running: the heartbeat thread probes for EXIT at each STOP
 *     poll and raises the call's stop flag (hb.exit_seen); no later call
 *     runs and nothing more is answered;
 *   - receiving a CALL, the PARTs of a long one (recv_long), sending an
 *     answer (a long message waits for its receiver, and a broken pool's
 *     manager stops receiving): nonblocking, waited for by wait_or_exit,
 *     which gives up when EXIT comes;
 *   - the heartbeat thread's own waits are timed; its sends, and HELLO
 *     and BYE, are small (MPI sends them eagerly, without waiting for
 *     the receiver).
 *   A worker told that its pool broke frees the communicator (spawn mode:
 *   without MPI_Comm_disconnect, which would wait for the parent).  The
 *   one wait left is MPI's own: a spawned worker's MPI_Finalize waits
 *   for the other workers of its job, so a worker leaves after the
 *   longest call still running in its siblings.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfutures_mpi.h"
#include "mpi_engine.h"

char cf__mpi_exe[4096];
bool cf__mpi_init_called;
bool cf__mpi_static_world;
MPI_Comm cf__mpi_static_comm = MPI_COMM_NULL;
int64_t cf__mpi_static_since;
static _Atomic bool in_mpi_worker;
/* Did cfutures call MPI_Init_thread (and so owes MPI_Finalize)?  Written
 * under init_mu. */
static bool we_initialised;
/* The process that initialised MPI here: a fork child runs the parent's
 * atexit handlers too, and must not finalize the parent's MPI (it hung
 * in MPI_Finalize, over the parent's sockets, and broke the parent's
 * pools).  Written once under init_mu before the handler is registered. */
static pid_t init_pid;
static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;

CF__API bool cf_in_mpi_worker(void)
{
    return atomic_load_explicit(&in_mpi_worker, memory_order_relaxed);
}

const char *cf__mpi_strerror(int code, char *buf, size_t size)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", code);
    snprintf(buf, size, "%s", text);
    return buf;
}

static size_t part_max = CF__MPI_PART_MAX;
static pthread_once_t part_once = PTHREAD_ONCE_INIT;

unsigned long long cf__mpi_test_knob(const char *name, unsigned long long lo,
                                     unsigned long long hi, unsigned long long dflt)
{
    const char *env = getenv(name);
    if (!env || *env < '0' || *env > '9') /* unset, or a sign or space */
        return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(env, &end, 10);
    return *end || errno || v < lo || v > hi ? dflt : v;
}

static void read_part_knob(void)
{
    part_max = (size_t)cf__mpi_test_knob("CFUTURES_TEST_MPI_PART", 1024, CF__MPI_PART_MAX,
                                         CF__MPI_PART_MAX);
}

size_t cf__mpi_part_max(void)
{
    pthread_once(&part_once, read_part_knob);
    return part_max;
}

size_t cf__mpi_answer_part_max(void)
{
    size_t pm = cf__mpi_part_max();
    return pm < CF__MPI_ANSWER_PART_MAX ? pm : CF__MPI_ANSWER_PART_MAX;
}

size_t cf__mpi_pieces(const wire_enc *e, const unsigned char *inline_copy, cf__mpi_piece *out)
{
    /* Inline bytes at frame offset `at` (>= WIRE_HDR). */
#define INLINE_AT(at) (inline_copy ? inline_copy + ((at) - WIRE_HDR) : e->buf + (at))
    size_t k = 0, from = WIRE_HDR;
    for (size_t i = 0; i < e->nrefs; i++) {
        if (e->ref_at[i] > from)
            out[k++] = (cf__mpi_piece){INLINE_AT(from), e->ref_at[i] - from};
        out[k++] = (cf__mpi_piece){e->ref_ptr[i], e->ref_len[i]};
        from = e->ref_at[i];
    }
    if (e->len > from)
        out[k++] = (cf__mpi_piece){INLINE_AT(from), e->len - from};
#undef INLINE_AT
    return k;
}

unsigned char *cf__mpi_flatten(const wire_enc *e, int *len)
{
    size_t total = cf__mpi_frame_len(e);
    if (!e->oom && total > cf__mpi_part_max()) {
        errno = EMSGSIZE;
        return NULL;
    }
    unsigned char *buf = e->oom ? NULL : malloc(total ? total : 1);
    if (!buf) {
        errno = ENOMEM;
        return NULL;
    }
    unsigned char *at = buf;
    size_t from = WIRE_HDR;
    for (size_t i = 0; i < e->nrefs; i++) {
        memcpy(at, e->buf + from, e->ref_at[i] - from);
        at += e->ref_at[i] - from;
        memcpy(at, e->ref_ptr[i], e->ref_len[i]);
        at += e->ref_len[i];
        from = e->ref_at[i];
    }
    memcpy(at, e->buf + from, e->len - from);
    *len = (int)total;
    return buf;
}

/* ---- MPI start-up and shut-down ----------------------------------------- */

/* Static mode: a second copy of the world for the job's last barrier, so
 * worker ranks wait for rank 0's MPI_Finalize without spinning in theirs. */
static MPI_Comm exit_comm = MPI_COMM_NULL;
static bool finalize_hooked; /* guarded by init_mu */

/* Joins a barrier on *comm, probing it with growing naps (MPI_Finalize
 * and blocking barriers spin), then frees *comm. */
static void quiet_barrier(MPI_Comm *comm)
{
    MPI_Request req;
    if (MPI_Ibarrier(*comm, &req) == MPI_SUCCESS) {
        int64_t nap = 0;
        for (;;) {
            int done = 0;
            if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done)
                break;
            /* Nothing can wake this: it ends when the last rank joins (rank
             * 0 joins in its MPI_Finalize, or the launcher ends the job). */
            nap = cf__mpi_next_nap(nap, CF__MPI_DOZE_NAP_NS);
            struct timespec ts = {0, (long)nap};
            nanosleep(&ts, NULL);
        }
    }
    MPI_Comm_free(comm);
}

/* Runs first thing in MPI_Finalize - whoever calls it, cfutures at exit or
 * the program - while MPI still works (MPI deletes MPI_COMM_SELF's
 * attributes before anything else): live pools end, and in static mode
 * the worker ranks are released. */
static int at_finalize(MPI_Comm comm, int key, void *val, void *extra)
{
    (void)comm;
    (void)key;
    (void)val;
    (void)extra;
    cf__mpi_pools_shutdown_all();
    if (cf__mpi_stuck())
        cf__log("mpi: MPI_Finalize while a pool's manager thread is stuck inside MPI (a spawn "
                "that never returned, or a disconnect a worker never joined); it may not "
                "return");
    cf__mpi_kept_comms_free();
    cf__mpi_static_release();
    if (exit_comm != MPI_COMM_NULL)
        quiet_barrier(&exit_comm);
    return MPI_SUCCESS;
}

void cf__mpi_hook_finalize(void)
{
    pthread_mutex_lock(&init_mu);
    int key;
    if (!finalize_hooked &&
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, at_finalize, &key, NULL) == MPI_SUCCESS &&
        MPI_Comm_set_attr(MPI_COMM_SELF, key, NULL) == MPI_SUCCESS)
        finalize_hooked = true;
    pthread_mutex_unlock(&init_mu);
}

static void finalize_at_exit(void)
{
    if (getpid() != init_pid)
        return; /* a fork child: MPI is its parent's */
    int done = 0;
    MPI_Finalized(&done);
    if (done)
        return;
    /* Pools still alive (not destroyed by the program) end first: their
     * manager threads make MPI calls. */
    cf__mpi_pools_shutdown_all();
    if (cf__mpi_stuck()) {
        /* MPI_Finalize would wait for that thread's MPI_Comm_spawn. */
        cf__log("mpi: not finalizing MPI: a pool's manager thread is still inside MPI (a "
                "spawn that never returned, or a disconnect a worker never joined)");
        return;
    }
    MPI_Finalize();
    cf__mpi_orphans_free();
}

int cf__mpi_ensure_init(const char *who)
{
    pthread_mutex_lock(&init_mu);
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    int rc = CF_OK;
    if (finalized) {
        rc = cf__fail(CF_EINVALSTATE, "%s: MPI was already finalized", who);
    } else if (!inited) {
        int provided = 0;
        int err = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (err != MPI_SUCCESS) {
            char text[MPI_MAX_ERROR_STRING];
            rc = cf__fail(CF_ESYS, "%s: MPI_Init_thread failed: %s", who,
                          cf__mpi_strerror(err, text, sizeof text));
        } else {
            we_initialised = true;
            init_pid = getpid();
            atexit(finalize_at_exit);
            if (provided < MPI_THREAD_MULTIPLE)
                rc = cf__fail(CF_ESYS, "%s: the MPI library offers thread level %d, the MPI "
                                       "engine needs MPI_THREAD_MULTIPLE", who, provided);
        }
    } else {
        int provided = 0;
        MPI_Query_thread(&provided);
        if (provided < MPI_THREAD_MULTIPLE)
            rc = cf__fail(CF_EINVALSTATE, "%s: MPI was initialised with thread level %d; the "
                                          "MPI engine needs MPI_Init_thread(..., "
                                          "MPI_THREAD_MULTIPLE, ...)", who, provided);
    }
    pthread_mutex_unlock(&init_mu);
    if (rc == CF_OK)
        cf__mpi_hook_finalize();
    return rc;
}

/* Was this process started by a launcher (mpirun / srun) rather than run
 * as a plain program?  Open MPI and PMIx set these for every rank. */
static bool launched_by_mpirun(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

static bool heartbeat_end(int64_t limit_ns);
/* Test faults read by code before load_fault() (see there). */
static bool fault_hb_flood, fault_no_disconnect;
#define FAULT_STALL_S 30
#define FAULT_FLOOD_N 20000

/* How long a worker that leaves waits for its heartbeat thread to end.
 * Its MPI calls are probes and small sends that the manager's side takes
 * at once (eager), so it ends within microseconds of being asked unless
 * MPI itself is stuck. */
#define LEAVE_WAIT_NS (2 * 1000000000LL)

/* Ends the worker process (main thread: after an MPI error, or when it
 * served its pool).  MPI_Finalize must not run while the heartbeat
 * thread is inside MPI (Open MPI then crashes in that thread's call), so
 * that thread is stopped and joined first, for at most LEAVE_WAIT_NS; if
 * it does not end in time (or this is that thread), the process leaves
 * without MPI_Finalize, with status 1: the manager notices the silence,
 * as it would any worker's death.  (Status 0 without MPI_Finalize is what
 * Open MPI 4.1 treats as leaving "without sync", and by default that ends
 * every job of the launch whatever orte_abort_on_non_zero_status says;
 * cf_mpi_init() also sets orte_allowed_exit_without_sync for tasks that
 * _exit(0) themselves.) */
static _Noreturn void worker_leave(void)
{
    fflush(stdout);
    fflush(stderr);
    bool finalize = heartbeat_end(LEAVE_WAIT_NS);
    int done = 0;
    MPI_Finalized(&done);
    if (!done && finalize) {
        MPI_Finalize();
        _exit(0);
    }
    _exit(done ? 0 : 1);
}

CF__API int cf_mpi_init(int argc, char **argv)
{
    if (argc < 1 || !argv)
        return cf__fail(CF_EINVAL, "mpi_init: argc must be >= 1 and argv not NULL");
    if (argc >= 3 && strcmp(argv[1], CF__MPI_WORKER_ARG) == 0) {
        /* A copy that a pool spawned: serve it, then leave.  The test
         * fault "mpi-init-exit" dies before MPI_Init, as a broken
         * worker would. */
        const char *fault = getenv(CF__FAULT_ENV);
        if (fault && strcmp(fault, "mpi-init-exit") == 0)
            _exit(3);
        char *end;
        long ms = strtol(argv[2], &end, 10);
        if (*end || ms < 1 || ms > CF__MPI_BEAT_MAX_MS)
            _exit(64);
        if (cf__mpi_ensure_init("mpi_init") != CF_OK)
            _exit(65);
        MPI_Comm parent = MPI_COMM_NULL;
        MPI_Comm_get_parent(&parent);
        if (parent == MPI_COMM_NULL)
            _exit(66);
        MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
        /* After a normal EXIT the parent disconnects too, so the
         * collective MPI_Comm_disconnect ends at once.  After EXIT from a
         * pool that broke it does not (it may not know whether every
         * worker heard it, and would wait for one that never does): the
         * intercommunicator is only freed, and MPI_Finalize then waits
         * for this job's other workers alone. */
        if (cf__mpi_serve(parent, 0, (int64_t)ms * 1000000)) {
            MPI_Comm_free(&parent);
        } else {
            if (fault_no_disconnect) {
                sleep(FAULT_STALL_S);
                _exit(0);
            }
            MPI_Comm_disconnect(&parent);
        }
        worker_leave();
    }
    ssize_t n = readlink("/proc/self/exe", cf__mpi_exe, sizeof cf__mpi_exe - 1);
    cf__mpi_exe[n > 0 ? n : 0] = '\0';
    cf__mpi_init_called = true;
    if (!launched_by_mpirun()) {
        /* A plain program (spawn mode): MPI_Init will fork Open MPI's
         * daemon for this process, which reads its settings from the
         * environment.  By default that daemon aborts every job of the
         * process when one spawned worker dies (killed, or a non-zero
         * status) or ends without MPI_Finalize (status 0, "without sync")
         * - the workers of the other pools, and, when the dead worker ran
         * on another host, this process itself (from Open MPI's event
         * thread, with _exit).  The heartbeats already find a dead worker
         * and break its pool alone, and a broken pool's live workers
         * leave, so the daemon is asked not to (each setting unless the
         * environment has it).  Here, at the top of main(), no other
         * thread reads the environment yet. */
        setenv(CF__MPI_ABORT_ENV, "0", 0);
        setenv(CF__MPI_NOSYNC_ENV, "1", 0);
        return CF_OK;
    }
    int rc = cf__mpi_ensure_init("mpi_init");
    if (rc != CF_OK)
        return rc;
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size < 2)
        return CF_OK;
    /* The static pool talks on its own copy of the world, so the
     * program's messages on MPI_COMM_WORLD never meet its own. */
    if (MPI_Comm_dup(MPI_COMM_WORLD, &cf__mpi_static_comm) != MPI_SUCCESS ||
        MPI_Comm_dup(MPI_COMM_WORLD, &exit_comm) != MPI_SUCCESS)
        return cf__fail(CF_ESYS, "mpi_init: MPI_Comm_dup of the world failed");
    MPI_Comm_set_errhandler(cf__mpi_static_comm, MPI_ERRORS_RETURN);
    /* The worker ranks start beating about now (after the collective
     * dups), however late rank 0 makes its pool. */
    cf__mpi_static_since = cf__now_ns();
    if (rank != 0) {
        /* Ranks 1..N-1 serve rank 0's pool.  The launcher ends the job if
         * any rank dies, so their heartbeat only guards against a hung
         * rank; its interval is fixed because rank 0's options are not
         * known yet (rank 0 accepts no heartbeat_timeout below 1 s). */
        (void)cf__mpi_serve(cf__mpi_static_comm, 0, CF__MPI_STATIC_BEAT_NS);
        MPI_Comm_free(&cf__mpi_static_comm);
        quiet_barrier(&exit_comm); /* until rank 0 finalizes */
        worker_leave();
    }
    cf__mpi_static_world = true;
    return CF_OK;
}

/* ---- the worker loop ------------------------------------------------------ */

/* The heartbeat thread, and what it shares with the main thread.  While
 * the main thread is busy with a CALL frame (running its calls, sending
 * the answer) the heartbeat thread also takes the manager's STOP and KILL
 * messages: it raises the running call's stop flag, which
 * cf_cancel_requested() reads, or ends the process. */
static struct {
    MPI_Comm comm;
    int manager;
    int64_t interval_ns;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Guarded by mu: */
    bool stop;         /* the worker leaves */
    bool busy;         /* the main thread is not waiting for a message */
    bool dozing;       /* the heartbeat thread sleeps until its next beat */
    uint64_t frames;   /* CALL frames begun (set_busy) */
    /* The future the main thread runs calls in (NULL: none), and the call
     * it runs or ran last: number cur_index of CALL frame cur_frame.  Set
     * when a call begins, with the future's stop flag (run_calls); it may
     * point to the last call's finished future until the next begins or
     * the frame is over, so a STOP for a call that has ended raises a flag
     * nobody reads, and the next call's start clears it. */
    cf_future *cur;
    uint64_t cur_frame;
    uint32_t cur_index;
    /* STOPs seen for calls that may not have begun yet: every one until
     * its frame is over (frames begin in order, so one older than
     * cur_frame is; see remember_stop_locked).  A terminate asks every
     * job queued here to stop, up to the manager's depth of 64 frames,
     * and interrupts name calls one by one: a fixed number would forget
     * the oldest, the very calls that begin next. */
    struct stop_ent {
        uint64_t frame;
        uint32_t index;
    } *stops;
    size_t nstops, stops_cap;
    /* RESULT frames held for one RESULTS message (see CF__MPI_HOLD_NS):
     * k x { u32 len, frame }.  The main thread appends; whoever sends
     * them (send_held) takes the whole buffer. */
    unsigned char *held;
    size_t held_len, held_cap;
    int held_n;
    int64_t held_since; /* when the first of them was held */
    /* Held results could not be sent: they are lost, and the manager
     * would take any later answer for the first of them, so nothing more
     * is answered (the worker leaves).  Set by send_held() with send_mu
     * held, before anyone else can send. */
    bool send_failed;
    /* The manager said EXIT while this worker still had work: seen by a
     * probe (the heartbeat thread's STOP poll, or a wait of the main
     * thread's, see wait_or_exit) before the main thread reads it.  The
     * pool is over (it broke, or every answer is in): the running call is
     * asked to stop, no later call runs, nothing more is answered.
     * Set under mu (with the running call's stop flag); read without it
     * too, relaxed: it only tells the main thread to stop working and
     * publishes no data (the hot path, a map chunk's every call, looks). */
    _Atomic bool exit_seen;
    /* The thread runs (main thread only: set before it is created, cleared
     * once joined). */
    bool running;
    bool exited;       /* heartbeat_main returned (guarded by mu) */
    pthread_t thread;
} hb = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Is this thread the heartbeat thread? */
static _Thread_local bool on_heartbeat;

/* Serialises the answers the two threads send (held results, from either;
 * a result sent alone, from the main thread), so that they reach the
 * manager in the order of their calls.  Taken before hb.mu. */
static pthread_mutex_t send_mu = PTHREAD_MUTEX_INITIALIZER;

static void note_exit(void);

static bool exit_was_seen(void)
{
    return atomic_load_explicit(&hb.exit_seen, memory_order_relaxed);
}

/* Is EXIT from the manager waiting (either thread)?  Notes it if so. */
static bool exit_waiting(void)
{
    int flag = 0;
    if (MPI_Iprobe(hb.manager, MTAG_EXIT, hb.comm, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS ||
        !flag)
        return false;
    note_exit();
    return true;
}

/* Memory that MPI may still read or write after its request was let go
 * (wait_or_exit): kept, reachable, for the rest of the process.  At most
 * a few blocks: after EXIT nothing more is sent or received.  Both
 * threads keep blocks; kept_mu guards the list. */
static pthread_mutex_t kept_mu = PTHREAD_MUTEX_INITIALIZER;
static struct kept {
    struct kept *next;
    void *p;
} *kept;

static void keep(void *p)
{
    struct kept *k = malloc(sizeof *k);
    pthread_mutex_lock(&kept_mu);
    if (k) {
        k->p = p;
        k->next = kept;
        kept = k;
    } /* else leaked for good: MPI may still use it */
    pthread_mutex_unlock(&kept_mu);
}

/* How often a wait for a transfer under way looks for EXIT. */
#define EXIT_LOOK_NS 1000000

/* Looks for EXIT when it is time (*next_look, CLOCK_MONOTONIC ns, 0 at
 * first; every EXIT_LOOK_NS), else yields the CPU, or naps once the wait
 * is older than CF__MPI_MOVE_SPIN_NS (below).  Returns true when EXIT
 * is there.  The waits that use it are transfers under way - a message the
 * manager is sending or taking - and MPI moves the bytes only while it is
 * called: they spin (yielding), as the blocking MPI call they replace
 * did, since napping from the start made a 64 MiB transfer several times
 * slower - for CF__MPI_MOVE_SPIN_NS after `since` (when the wait began),
 * then nap: the transfer is slow for reasons of its own. */
static bool exit_or_yield(int64_t *next_look, int64_t since)
{
    int64_t now = cf__now_ns();
    if (now >= *next_look) {
        *next_look = now + EXIT_LOOK_NS;
        if (exit_waiting())
            return true;
    }
    int64_t slow = now - since - CF__MPI_MOVE_SPIN_NS;
    if (slow > 0) {
        struct timespec ts = {0, (long)cf__mpi_nap_for(slow, CF__MPI_NAP_MAX_NS)};
        nanosleep(&ts, NULL);
    } else {
        sched_yield();
    }
    return false;
}

/* The result of wait_or_exit() when EXIT came first. */
#define WAIT_EXIT (-1)

/* Waits for *req (a send to the manager, or a receive of one of its
 * messages) - or for EXIT.  Returns MPI's code when the request is done,
 * or WAIT_EXIT when EXIT came first: the request is then let go
 * (MPI_Request_free; Open MPI cannot cancel a send) and the caller must
 * keep() its buffer, which MPI may still use.
 * Liveness: the manager reads every message of a worker until that worker
 * says BYE, or until it stops listening to the pool (it broke), and then
 * it has sent EXIT first; a message it is sending keeps coming until it
 * sends EXIT.  So the request completes, or EXIT comes; meanwhile
 * exit_or_yield() between looks. */
static int wait_or_exit(MPI_Request *req)
{
    int64_t next_look = 0, since = cf__now_ns();
    for (;;) {
        int done = 0;
        int err = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (err != MPI_SUCCESS || done)
            return err;
        if (exit_or_yield(&next_look, since)) {
            MPI_Request_free(req);
            return WAIT_EXIT;
        }
    }
}

/* MPI_Send to the manager that gives up when EXIT comes (wait_or_exit):
 * an answer the manager no longer reads would otherwise block the worker
 * for ever (a long message waits for its receiver).  On WAIT_EXIT the
 * caller keeps buf. */
static int send_or_exit(const void *buf, int len, int tag)
{
    MPI_Request req;
    int err = MPI_Isend(buf, len, MPI_BYTE, hb.manager, tag, hb.comm, &req);
    return err != MPI_SUCCESS ? err : wait_or_exit(&req);
}

/* Sends the held results, if any: one alone as RESULT, several as
 * RESULTS.  send_mu held.  Fails, sending nothing, once held results were
 * lost (`send_failed`): an answer sent after them would be taken for
 * theirs. */
static int send_held(void)
{
    pthread_mutex_lock(&hb.mu);
    if (hb.send_failed) {
        pthread_mutex_unlock(&hb.mu);
        return MPI_ERR_OTHER;
    }
    unsigned char *buf = hb.held;
    size_t len = hb.held_len;
    int n = hb.held_n;
    bool drop = hb.exit_seen; /* nobody reads them any more */
    hb.held = NULL;
    hb.held_len = hb.held_cap = 0;
    hb.held_n = 0;
    pthread_mutex_unlock(&hb.mu);
    int err = MPI_SUCCESS;
    if (n == 1 && !drop)
        err = send_or_exit(buf + 4, (int)(len - 4), MTAG_RESULT);
    else if (n > 1 && !drop)
        err = send_or_exit(buf, (int)len, MTAG_RESULTS);
    if (err == WAIT_EXIT) {
        keep(buf);
        return MPI_SUCCESS; /* not a failure: the pool is over */
    }
    free(buf);
    if (err != MPI_SUCCESS) {
        pthread_mutex_lock(&hb.mu);
        hb.send_failed = true;
        pthread_mutex_unlock(&hb.mu);
    }
    return err;
}

/* How often the heartbeat thread looks for STOP and KILL while the main
 * thread is busy. */
#define STOP_POLL_NS 10000000

/* Does a STOP seen match call `index` of frame `frame`?  hb.mu held. */
static bool stop_seen_locked(uint64_t frame, uint32_t index)
{
    for (size_t i = 0; i < hb.nstops; i++)
        if (hb.stops[i].frame == frame &&
            (hb.stops[i].index == index || hb.stops[i].index == CF__MPI_STOP_ALL))
            return true;
    return false;
}

/* Notes a STOP for call `index` of frame `frame` (hb.mu held).  Those of
 * frames older than the one begun last are dropped first: their calls
 * have all ended.  Without memory for more, the oldest is forgotten (its
 * call, if it has not begun, then runs without the request). */
static void remember_stop_locked(uint64_t frame, uint32_t index)
{
    size_t k = 0;
    for (size_t i = 0; i < hb.nstops; i++)
        if (hb.stops[i].frame >= hb.cur_frame)
            hb.stops[k++] = hb.stops[i];
    hb.nstops = k;
    if (hb.nstops == hb.stops_cap) {
        size_t cap = hb.stops_cap ? 2 * hb.stops_cap : 16;
        struct stop_ent *m = realloc(hb.stops, cap * sizeof *m);
        if (m) {
            hb.stops = m;
            hb.stops_cap = cap;
        } else if (hb.nstops > 0) {
            memmove(hb.stops, hb.stops + 1, (hb.nstops - 1) * sizeof *hb.stops);
            hb.nstops--;
        } else {
            return;
        }
    }
    hb.stops[hb.nstops].frame = frame;
    hb.stops[hb.nstops].index = index;
    hb.nstops++;
}

/* Raises the stop flag of the running call (hb.mu held), the way
 * cf_future_interrupt() does in the process that runs it. */
static void stop_call_locked(cf_future *f)
{
    atomic_store_explicit(&f->stop, true, memory_order_relaxed);
    cf__cancel_fd_fire(f);
}

/* EXIT was seen before the main thread reads it: the pool is over (see
 * hb.exit_seen), so the running call is asked to stop. */
static void note_exit(void)
{
    pthread_mutex_lock(&hb.mu);
    hb.exit_seen = true;
    if (hb.cur)
        stop_call_locked(hb.cur);
    pthread_mutex_unlock(&hb.mu);
}

/* A STOP message: the call it names stops now if it runs, or when it
 * begins. */
static void on_stop(const unsigned char *body, int len)
{
    wire_dec d = {body, body + len, false};
    uint64_t frame = wdec_u64(&d);
    uint32_t index = wdec_u32(&d);
    if (d.bad)
        return;
    pthread_mutex_lock(&hb.mu);
    remember_stop_locked(frame, index);
    if (hb.cur && stop_seen_locked(hb.cur_frame, hb.cur_index))
        stop_call_locked(hb.cur);
    pthread_mutex_unlock(&hb.mu);
}

/* KILL (cf_terminate_workers / cf_kill_workers of a spawn-mode pool):
 * the process ends now, by the signal the manager chose, as a killed
 * process pool worker would; its pool breaks, the process's other pools
 * go on (see cf_mpi_init).  SIGTERM may be caught or blocked by the
 * program; SIGKILL follows a second later. */
static _Noreturn void kill_self(const unsigned char *body, int len)
{
    wire_dec d = {body, body + len, false};
    int sig = (int)wdec_u32(&d);
    if (d.bad || sig != SIGTERM)
        sig = SIGKILL;
    fflush(stdout);
    fflush(stderr);
    kill(getpid(), sig);
    struct timespec grace = {1, 0};
    nanosleep(&grace, NULL); /* ended by the signal, or by its own end */
    kill(getpid(), SIGKILL);
    _exit(128 + SIGKILL); /* not reached */
}

/* Takes the STOP and KILL messages waiting, and looks for EXIT
 * (heartbeat thread, while the main thread is busy): a pool that broke
 * says EXIT while its workers still run calls, which then stop (see
 * hb.exit_seen). */
static void take_stops(void)
{
    if (!exit_was_seen())
        (void)exit_waiting();
    for (;;) {
        int flag = 0;
        MPI_Message msg;
        MPI_Status st;
        if (MPI_Improbe(hb.manager, MTAG_KILL, hb.comm, &flag, &msg, &st) == MPI_SUCCESS &&
            flag) {
            unsigned char body[4];
            MPI_Mrecv(body, sizeof body, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
            kill_self(body, sizeof body);
        }
        if (MPI_Improbe(hb.manager, MTAG_STOP, hb.comm, &flag, &msg, &st) != MPI_SUCCESS || !flag)
            return;
        unsigned char body[16];
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        if (count > (int)sizeof body)
            count = (int)sizeof body; /* a longer one is cut (and ignored) */
        MPI_Mrecv(body, count, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        on_stop(body, count);
    }
}

static void *heartbeat_main(void *arg)
{
    (void)arg;
    on_heartbeat = true;
    cf__set_thread_name("cf-mpi-heartbeat");
    int64_t next_beat = 0;
    uint64_t frames_seen = 0;
    unsigned flooded = 0;
    pthread_mutex_lock(&hb.mu);
    while (!hb.stop) {
        int64_t now = cf__now_ns();
        bool running = hb.busy;
        pthread_mutex_unlock(&hb.mu);
        if (now >= next_beat) {
            MPI_Send(NULL, 0, MPI_BYTE, hb.manager, MTAG_HB, hb.comm);
            if (fault_hb_flood && ++flooded == FAULT_FLOOD_N)
                fault_hb_flood = false;
            next_beat = fault_hb_flood ? now : now + hb.interval_ns;
        }
        if (running)
            take_stops();
        pthread_mutex_lock(&hb.mu);
        bool flush = hb.held_n > 0 && now - hb.held_since >= CF__MPI_HOLD_MAX_NS;
        pthread_mutex_unlock(&hb.mu);
        if (flush) {
            /* A call of the same CALLS message runs long: the answers
             * held before it leave now. */
            pthread_mutex_lock(&send_mu);
            (void)send_held(); /* a failure is seen by the main thread */
            pthread_mutex_unlock(&send_mu);
        }
        pthread_mutex_lock(&hb.mu);
        /* It polls while frames come (and dozes once none began for a
         * poll interval), so a stream of short frames does not wake it
         * once each. */
        int64_t until = next_beat;
        hb.dozing = !hb.busy && hb.frames == frames_seen;
        frames_seen = hb.frames;
        if (!hb.dozing && now + STOP_POLL_NS < until)
            until = now + STOP_POLL_NS;
        if (hb.held_n > 0 && hb.held_since + CF__MPI_HOLD_MAX_NS < until)
            until = hb.held_since + CF__MPI_HOLD_MAX_NS;
        struct timespec ts = cf__mpi_mono_after(until - now);
        /* Woken by the main thread when it leaves (stop), turns busy while
         * this thread dozes or holds a first result, or when the next
         * heartbeat, STOP poll or flush of held results is due. */
        if (!hb.stop && !fault_hb_flood)
            pthread_cond_timedwait(&hb.cv, &hb.mu, &ts);
    }
    hb.exited = true;
    pthread_cond_broadcast(&hb.cv); /* heartbeat_end() may wait for it */
    pthread_mutex_unlock(&hb.mu);
    return NULL;
}

/* Asks the heartbeat thread to stop and joins it, waiting at most
 * limit_ns (main thread).  Returns true when no heartbeat thread runs
 * any more - so MPI may be finalized; false if it did not end in time,
 * or the caller is that thread itself (it is then left running). */
static bool heartbeat_end(int64_t limit_ns)
{
    if (on_heartbeat)
        return false;
    if (!hb.running)
        return true;
    struct timespec until = cf__mpi_mono_after(limit_ns);
    pthread_mutex_lock(&hb.mu);
    hb.stop = true;
    pthread_cond_broadcast(&hb.cv);
    /* Woken by heartbeat_main as it returns (it sees stop at its next
     * look, at once unless it is inside MPI), or by the time limit. */
    while (!hb.exited && pthread_cond_timedwait(&hb.cv, &hb.mu, &until) != ETIMEDOUT)
        ;
    bool exited = hb.exited;
    pthread_mutex_unlock(&hb.mu);
    if (!exited)
        return false;
    pthread_join(hb.thread, NULL);
    hb.running = false;
    return true;
}

/* The main thread turns busy (with a CALL frame) or waits again.  A
 * dozing heartbeat thread is woken, to poll for STOP and KILL while the
 * frame lasts. */
static void set_busy(bool busy)
{
    pthread_mutex_lock(&hb.mu);
    hb.busy = busy;
    hb.frames += busy;
    if (busy && hb.dozing) {
        hb.dozing = false;
        pthread_cond_signal(&hb.cv);
    }
    pthread_mutex_unlock(&hb.mu);
}

/* Waits for the next message from the manager with `tag` (MPI_ANY_TAG:
 * any); fills *msg and *st (a matched probe: the heartbeat thread may take
 * STOP messages meanwhile). */
static void wait_message(MPI_Comm comm, int manager, int tag, MPI_Message *msg, MPI_Status *st)
{
    static int64_t avg_wait; /* this thread only */
    int64_t idle_since = cf__now_ns();
    int64_t spin = cf__mpi_spin_for(avg_wait);
    bool napped = false;
    for (;;) {
        int flag = 0;
        if (MPI_Improbe(manager, tag, comm, &flag, msg, st) != MPI_SUCCESS)
            worker_leave(); /* the manager is gone */
        if (flag) {
            cf__mpi_average(&avg_wait, cf__now_ns() - idle_since);
            return;
        }
        /* A probe matches what MPI has taken in, and only then, finding
         * nothing, makes progress - which may be what reads the message
         * from its socket.  So right after a nap, a second look before the
         * next nap: without it a call that came during a nap waited for a
         * second one (the first call after a quiet spell took 20-33 ms
         * with 16 ms naps). */
        if (napped) {
            napped = false;
            continue;
        }
        if (cf__now_ns() - idle_since < spin) {
            sched_yield();
            continue;
        }
        /* Nobody can wake this sleep: MPI has no wait that does not spin.
         * It ends by itself, at most CF__MPI_DOZE_NAP_NS later (an eighth
         * of the wait so far, see CF__MPI_DOZE_NAP_NS). */
        int64_t idle = cf__now_ns() - idle_since;
        int64_t nap = cf__mpi_nap_for(idle, CF__MPI_DOZE_NAP_NS);
        struct timespec ts = {0, (long)nap};
        nanosleep(&ts, NULL);
        napped = true;
    }
}

/* The futures of the calls being answered whose big results `out`
 * references until it is flattened (the others are reused or released at
 * once). */
static cf_future **done_fs;
static size_t ndone, done_cap;

/* Test faults (CF__FAULT_ENV, read once when the worker starts serving):
 * "mpi-results-oom:TASK" builds the answers of TASK's frames as if memory
 * ran out, so the out-of-memory answer (answer()) runs (fault_oom_task,
 * empty: no fault); "mpi-bad-hello" sends an empty HELLO, which breaks
 * the pool while it starts.  Workers that misbehave without breaking the
 * protocol's form: "mpi-no-hello" sends heartbeats but no HELLO;
 * "mpi-hb-flood" sends FAULT_FLOOD_N heartbeats as fast as it can, then
 * beats as usual (a flood Open MPI's TCP transport cannot drain as fast as
 * it comes holds the manager inside one MPI call until it stops, out of
 * the library's reach); "mpi-no-bye", told
 * EXIT, goes on beating for FAULT_STALL_S and leaves without BYE;
 * "mpi-no-disconnect" (spawn mode) says BYE, then neither disconnects nor
 * ends for FAULT_STALL_S.  Set in the main thread before the heartbeat
 * thread starts, which reads them. */
static char fault_oom_task[64];
static bool fault_bad_hello, fault_no_hello, fault_no_bye;

static bool fault_is(const char *spec, const char *name)
{
    return spec && strcmp(spec, name) == 0;
}

static void load_fault(void)
{
    static const char point[] = "mpi-results-oom:";
    const char *spec = getenv(CF__FAULT_ENV);
    fault_oom_task[0] = '\0';
    fault_bad_hello = fault_is(spec, "mpi-bad-hello");
    fault_no_hello = fault_is(spec, "mpi-no-hello");
    fault_hb_flood = fault_is(spec, "mpi-hb-flood");
    fault_no_bye = fault_is(spec, "mpi-no-bye");
    fault_no_disconnect = fault_is(spec, "mpi-no-disconnect");
    if (spec && strncmp(spec, point, sizeof point - 1) == 0)
        snprintf(fault_oom_task, sizeof fault_oom_task, "%s", spec + sizeof point - 1);
}

/* The future the next call runs in (cf__remote_call_future): a map
 * chunk's calls run one after another in it.  Main thread only. */
static cf_future *spare;

/* The main thread lets go of hb.cur (and of the future, unless it is the
 * spare or referenced): no STOP can reach it after this. */
static void forget_cur(void)
{
    pthread_mutex_lock(&hb.mu);
    hb.cur = NULL;
    pthread_mutex_unlock(&hb.mu);
}

static void release_done(void)
{
    for (size_t i = 0; i < ndone; i++)
        cf_future_release(done_fs[i]);
    ndone = 0;
}

/* Runs the calls of one CALL payload and fills `out` with the RESULT;
 * the finished futures go to done_fs. */
static void run_calls(const unsigned char *body, size_t len, uint64_t frame, wire_enc *out)
{
    wire_dec d = {body, body + len, false};
    uint32_t n = wdec_u32(&d);
    uint8_t namelen = wdec_u8(&d);
    const char *name = (const char *)wdec_take(&d, namelen);
    wenc_reset(out);
    wenc_u32(out, n);
    cf_task_fn *fn = d.bad ? NULL : cf__task_lookup(name, namelen);
    for (uint32_t i = 0; i < n && !d.bad; i++) {
        uint8_t nargs = wdec_u8(&d);
        cf_value args[CF_ARGS_MAX];
        if (nargs > CF_ARGS_MAX)
            d.bad = true;
        for (uint8_t k = 0; k < nargs && !d.bad; k++)
            args[k] = wdec_value(&d);
        if (d.bad)
            break;
        if (exit_was_seen())
            break; /* the pool is over: the rest of a map chunk does not run */
        if (!fn) {
            cf__remote_encode_unregistered(out, "task", name, namelen, "in the MPI worker",
                                           "register it with CF_TASK in the program the "
                                           "workers run");
            continue;
        }
        cf_future *f = NULL;
        if (ndone == done_cap) {
            size_t ncap = done_cap ? 2 * done_cap : 16;
            cf_future **nf = realloc(done_fs, ncap * sizeof *nf);
            if (nf) {
                done_fs = nf;
                done_cap = ncap;
            }
        }
        if (ndone < done_cap)
            f = cf__remote_call_future(&spare, fn, args, nargs);
        if (!f) {
            wenc_u8(out, 0);
            wenc_failure(out, CF_ENOMEM, "MemoryError", "worker: out of memory for the call");
            continue;
        }
        /* One lock per call.  The previous call's future (often f
         * itself) stays hb.cur until here, so the heartbeat thread may
         * have raised f's stop flag for that call: it is cleared under
         * the lock, and raised again if this call was asked to stop
         * already. */
        pthread_mutex_lock(&hb.mu);
        hb.cur = f;
        hb.cur_frame = frame;
        hb.cur_index = i;
        atomic_store_explicit(&f->stop, false, memory_order_relaxed);
        if (hb.exit_seen || stop_seen_locked(frame, i))
            stop_call_locked(f);
        pthread_mutex_unlock(&hb.mu);
        cf__future_run_private(f);
        size_t refs = out->nrefs;
        cf__remote_encode_outcome(out, f, name, namelen);
        bool referenced = out->nrefs != refs;
        if (referenced) {
            done_fs[ndone++] = f; /* kept until the answer is out */
        } else if (!cf__remote_recycle(&spare, f, false)) {
            forget_cur();
            cf_future_release(f);
        }
    }
    forget_cur();
    if (fault_oom_task[0] && strlen(fault_oom_task) == namelen &&
        memcmp(fault_oom_task, name, namelen) == 0)
        out->oom = true;
    if (d.bad) {
        /* The manager sent something we cannot read: answer with one
         * failure per announced call, so its bookkeeping stays right. */
        wenc_reset(out);
        wenc_u32(out, n);
        for (uint32_t i = 0; i < n; i++) {
            wenc_u8(out, 0);
            wenc_failure(out, CF_EINVAL, "ValueError", "worker: the call frame does not decode");
        }
    }
}

/* A LONG frame from the manager (header `hdr`): its PARTs joined, in a
 * malloc'ed buffer of *len bytes; NULL if it does not decode or memory is
 * short, or (*exiting set) when EXIT came first.
 * Liveness: the manager posts every PART right after the header.  If it
 * cannot (MPI failed half-way), or its pool breaks meanwhile, it says
 * EXIT, which comes after the parts it did post (MPI keeps one sender's
 * messages on one communicator in order): so each wait ends with a PART,
 * or with EXIT (wait_or_exit, and the probe loop here, exit_or_yield()
 * between looks). */
static unsigned char *recv_long(const unsigned char *hdr, int hlen, size_t *len, bool *exiting)
{
    wire_dec d = {hdr, hdr + hlen, false};
    uint32_t tag = wdec_u32(&d);
    uint64_t total = wdec_u64(&d);
    if (d.bad || tag != MTAG_CALL || total == 0 || total > SIZE_MAX / 2)
        return NULL;
    unsigned char *buf = malloc((size_t)total);
    if (!buf)
        return NULL;
    size_t got = 0;
    while (got < total) {
        MPI_Message msg;
        MPI_Status st;
        int flag = 0, count = 0;
        for (int64_t next_look = 0, since = cf__now_ns();;) {
            if (MPI_Improbe(hb.manager, MTAG_PART, hb.comm, &flag, &msg, &st) != MPI_SUCCESS) {
                free(buf);
                return NULL;
            }
            if (flag)
                break;
            if (exit_or_yield(&next_look, since)) {
                free(buf);
                *exiting = true;
                return NULL;
            }
        }
        MPI_Request req;
        int err = MPI_Get_count(&st, MPI_BYTE, &count);
        if (err == MPI_SUCCESS && (count <= 0 || (size_t)count > total - got))
            err = MPI_ERR_COUNT;
        if (err == MPI_SUCCESS)
            err = MPI_Imrecv(buf + got, count, MPI_BYTE, &msg, &req);
        if (err == MPI_SUCCESS)
            err = wait_or_exit(&req);
        if (err == WAIT_EXIT) {
            keep(buf);
            *exiting = true;
            return NULL;
        }
        if (err != MPI_SUCCESS) {
            free(buf); /* the worker leaves: the manager finds it gone */
            return NULL;
        }
        got += (size_t)count;
    }
    *len = (size_t)total;
    return buf;
}

/* Sends a finished frame as LONG + PARTs, straight from the encoder's
 * pieces (the big values are not copied).  On WAIT_EXIT the caller keeps
 * the encoder's memory and the values it references (keep_answer). */
static int send_long(const wire_enc *e, int tag)
{
    unsigned char *hdr = malloc(12);
    if (!hdr)
        return MPI_ERR_NO_MEM;
    wire_enc h = {.buf = hdr, .len = 0, .cap = 12};
    wenc_u32(&h, (uint32_t)tag);
    wenc_u64(&h, cf__mpi_frame_len(e));
    int err = send_or_exit(hdr, 12, MTAG_LONG);
    if (err == WAIT_EXIT)
        keep(hdr);
    else
        free(hdr);
    cf__mpi_piece pcs[CF__MPI_MAX_PIECES];
    size_t k = cf__mpi_pieces(e, NULL, pcs), pm = cf__mpi_answer_part_max();
    for (size_t i = 0; i < k && err == MPI_SUCCESS; i++)
        for (size_t off = 0; off < pcs[i].n && err == MPI_SUCCESS; off += pm) {
            size_t n = pcs[i].n - off < pm ? pcs[i].n - off : pm;
            err = send_or_exit(pcs[i].p + off, (int)n, MTAG_PART);
        }
    return err;
}

/* Holds the small, all-inline RESULT frame in `out` (flen bytes) for a
 * RESULTS message, sending the held ones first if it would not fit.
 * Returns false (nothing held) when memory is short, or MPI failed. */
static bool hold(const wire_enc *out, size_t flen)
{
    pthread_mutex_lock(&hb.mu);
    if (hb.held_len + 4 + flen > CF__MPI_BATCH_MAX) {
        pthread_mutex_unlock(&hb.mu);
        pthread_mutex_lock(&send_mu);
        int err = send_held();
        pthread_mutex_unlock(&send_mu);
        if (err != MPI_SUCCESS)
            return false;
        pthread_mutex_lock(&hb.mu);
    }
    if (hb.held_len + 4 + flen > hb.held_cap) {
        size_t ncap = hb.held_cap ? hb.held_cap : 1024;
        while (ncap < hb.held_len + 4 + flen)
            ncap *= 2;
        unsigned char *nb = realloc(hb.held, ncap);
        if (!nb) {
            pthread_mutex_unlock(&hb.mu);
            return false;
        }
        hb.held = nb;
        hb.held_cap = ncap;
    }
    wire_enc h = {.buf = hb.held + hb.held_len, .len = 0, .cap = 4};
    wenc_u32(&h, (uint32_t)flen);
    memcpy(hb.held + hb.held_len + 4, out->buf + WIRE_HDR, flen);
    hb.held_len += 4 + flen;
    /* The heartbeat thread sends them if a later call runs long: it is not
     * woken for that (a wake-up per message would cost more than the
     * batching saves), it looks at its next STOP poll. */
    if (hb.held_n++ == 0)
        hb.held_since = cf__now_ns();
    pthread_mutex_unlock(&hb.mu);
    return true;
}

/* A long answer was let go half-sent (WAIT_EXIT): MPI may still read the
 * encoder's buffer and the results it references, so both are kept (the
 * futures in done_fs stay referenced), and the worker starts afresh. */
static void keep_answer(wire_enc *out)
{
    keep(out->buf);
    *out = (wire_enc){0};
    wenc_reset(out);
    if (done_fs)
        keep(done_fs);
    done_fs = NULL;
    ndone = done_cap = 0;
}

/* Runs CALL frame number `frame` (payload in[0..inlen)) and answers it:
 * a quick call's small answer is held (CF__MPI_HOLD_NS), and joins those
 * held before when `last` (the message has no further frame) or it was
 * not quick; anything else leaves at once, after the held ones, as does
 * a lone frame's answer.  Leaves the process when MPI fails. */
static void answer(const unsigned char *in, size_t inlen, uint64_t frame, wire_enc *out,
                   bool last)
{
    if (exit_was_seen())
        return; /* the pool is over: no call runs, nothing is answered */
    int64_t t0 = cf__now_ns();
    run_calls(in, inlen, frame, out);
    if (exit_was_seen()) {
        release_done();
        return;
    }
    bool quick = cf__now_ns() - t0 < CF__MPI_HOLD_NS;
    size_t flen = cf__mpi_frame_len(out);
    pthread_mutex_lock(&hb.mu);
    bool alone = last && hb.held_n == 0;
    pthread_mutex_unlock(&hb.mu);
    if (!alone && !out->oom && out->nrefs == 0 && flen + 4 <= CF__MPI_BATCH_MAX &&
        hold(out, flen)) {
        release_done();
        int err = MPI_SUCCESS;
        if (last || !quick) {
            pthread_mutex_lock(&send_mu);
            err = send_held();
            pthread_mutex_unlock(&send_mu);
        }
        pthread_mutex_lock(&hb.mu);
        bool failed = hb.send_failed;
        pthread_mutex_unlock(&hb.mu);
        if (err != MPI_SUCCESS || failed)
            worker_leave();
        return;
    }
    pthread_mutex_lock(&send_mu);
    int err = send_held();
    if (err == MPI_SUCCESS) {
        /* Long (LONG + PARTs, from the encoder) or flat in one message. */
        bool is_long = !out->oom && flen > cf__mpi_answer_part_max();
        int len = 0;
        unsigned char *buf = is_long ? NULL : cf__mpi_flatten(out, &len);
        if (!is_long && !buf) {
            /* No memory: the calls fail.  A big chunk's failures (about
             * 60 bytes a call) go long like any long answer. */
            release_done();
            wire_dec d = {in, in + inlen, false};
            uint32_t n = wdec_u32(&d);
            wenc_reset(out);
            wenc_u32(out, n);
            for (uint32_t i = 0; i < n; i++) {
                wenc_u8(out, 0);
                wenc_failure(out, CF_ENOMEM, "MemoryError",
                             "worker: out of memory for the results");
            }
            is_long = !out->oom && cf__mpi_frame_len(out) > cf__mpi_answer_part_max();
            if (!is_long)
                buf = cf__mpi_flatten(out, &len);
        }
        if (is_long) {
            err = send_long(out, MTAG_RESULT);
            if (err == WAIT_EXIT)
                keep_answer(out);
            else
                release_done();
        } else {
            release_done();
            err = buf ? send_or_exit(buf, len, MTAG_RESULT) : MPI_ERR_NO_MEM;
            if (err == WAIT_EXIT)
                keep(buf);
            else
                free(buf);
        }
    }
    pthread_mutex_unlock(&send_mu);
    if (err != MPI_SUCCESS && err != WAIT_EXIT)
        worker_leave();
}

/* Is the main thread serving a pool, with the heartbeat thread running
 * (from its start until the serve loop ends)?  Written by the main
 * thread; read by whichever thread calls exit(). */
static _Atomic bool serving;

/* exit() while serving - a task that calls it, typically.  The process
 * would go on to MPI_Finalize (cfutures' own exit handler, or the
 * program's), which in a spawned worker waits for the parent, while the
 * heartbeat thread kept the worker looking alive: the pool waited for
 * ever.  Instead the heartbeat thread is stopped (bounded, as in
 * worker_leave), the manager hears an unasked BYE - it breaks the pool at
 * once, naming this worker - and the process ends without MPI_Finalize,
 * with status 1 (a static job's launcher then ends the job, as for any
 * rank that dies).  Registered with atexit() when a worker first serves,
 * so it runs before the exit handlers registered earlier (MPI_Finalize's
 * among them).  The exit status the task chose is not known here. */
static void leave_midway(void)
{
    if (!atomic_load(&serving))
        return;
    fflush(stdout);
    fflush(stderr);
    /* Not from the heartbeat thread itself (heartbeat_end says false):
     * then the manager finds the silence. */
    if (heartbeat_end(LEAVE_WAIT_NS))
        MPI_Send(NULL, 0, MPI_BYTE, hb.manager, MTAG_BYE, hb.comm);
    _exit(1);
}

bool cf__mpi_serve(MPI_Comm comm, int manager, int64_t hb_interval_ns)
{
    static bool midway_hooked; /* main thread only */
    if (!midway_hooked)
        midway_hooked = atexit(leave_midway) == 0;
    atomic_store(&in_mpi_worker, true);
    load_fault();
    int rank = 0, size = 0, len = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char host[MPI_MAX_PROCESSOR_NAME];
    if (MPI_Get_processor_name(host, &len) != MPI_SUCCESS)
        snprintf(host, sizeof host, "?");
    wire_enc out = {0};
    wenc_reset(&out);
    wenc_u32(&out, (uint32_t)rank);
    wenc_u32(&out, (uint32_t)size);
    wenc_u32(&out, (uint32_t)getpid());
    wenc_cstr(&out, host);
    int flen = 0;
    unsigned char *frame = cf__mpi_flatten(&out, &flen);
    if (fault_bad_hello)
        flen = 0;
    if (!frame || (!fault_no_hello &&
                   MPI_Send(frame, flen, MPI_BYTE, manager, MTAG_HELLO, comm) != MPI_SUCCESS))
        worker_leave();
    free(frame);

    hb.comm = comm;
    hb.manager = manager;
    hb.interval_ns = hb_interval_ns;
    hb.stop = false;
    hb.busy = hb.dozing = false;
    hb.frames = 0;
    hb.cur = NULL;
    hb.nstops = 0;
    hb.send_failed = false;
    hb.exit_seen = false;
    hb.exited = false;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&hb.cv, &ca);
    pthread_condattr_destroy(&ca);
    hb.running = true;
    if (pthread_create(&hb.thread, NULL, heartbeat_main, NULL) != 0) {
        hb.running = false;
        worker_leave(); /* the manager sees no heartbeat: a dead worker */
    }
    atomic_store(&serving, true);

    unsigned char *in = NULL;
    uint64_t frames = 0; /* CALL frames received, as the manager counts them */
    bool broken = false;
    for (;;) {
        MPI_Status st;
        MPI_Message msg;
        /* Once EXIT was seen, only EXIT is read: what came before it is
         * work for a pool that is over. */
        wait_message(comm, manager, exit_was_seen() ? MTAG_EXIT : MPI_ANY_TAG, &msg, &st);
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        free(in);
        in = malloc(count > 0 ? (size_t)count : 1);
        if (!in)
            worker_leave();
        /* A big CALL comes while the manager sends it - or, should its
         * pool break meanwhile, EXIT does (wait_or_exit). */
        MPI_Request req;
        int err = MPI_Imrecv(in, count, MPI_BYTE, &msg, &req);
        if (err == MPI_SUCCESS)
            err = wait_or_exit(&req);
        if (err == WAIT_EXIT) {
            keep(in);
            in = NULL;
            continue;
        }
        if (err != MPI_SUCCESS)
            worker_leave();
        if (st.MPI_TAG == MTAG_EXIT) {
            broken = count >= 1 && in[0] == CF__MPI_EXIT_BROKEN;
            break;
        }
        if (st.MPI_TAG == MTAG_KILL)
            kill_self(in, count);
        if (st.MPI_TAG == MTAG_STOP)
            on_stop(in, count);
        if (st.MPI_TAG != MTAG_CALL && st.MPI_TAG != MTAG_LONG && st.MPI_TAG != MTAG_CALLS)
            continue;
        set_busy(true);
        if (st.MPI_TAG == MTAG_CALLS) {
            wire_dec d = {in, in + count, false};
            while (d.p < d.end) {
                uint32_t blen = wdec_u32(&d);
                const unsigned char *body = wdec_take(&d, blen);
                if (d.bad)
                    worker_leave(); /* the manager finds it gone */
                answer(body, blen, ++frames, &out, d.p == d.end);
            }
        } else {
            size_t inlen = (size_t)count;
            if (st.MPI_TAG == MTAG_LONG) {
                bool exiting = false;
                unsigned char *joined = recv_long(in, count, &inlen, &exiting);
                if (!joined && !exiting)
                    worker_leave(); /* the manager finds it gone */
                free(in);
                in = joined;
            }
            if (in)
                answer(in, inlen, ++frames, &out, true);
        }
        set_busy(false);
    }
    if (fault_no_bye && !broken) {
        sleep(FAULT_STALL_S); /* the heartbeat thread goes on */
        _exit(0);
    }
    free(in);
    free(done_fs);
    done_fs = NULL; /* a rank of a communicator pool may serve again */
    done_cap = 0;
    wenc_free(&out);
    atomic_store(&serving, false);
    /* The manager said EXIT, so it takes whatever the heartbeat thread
     * sends; should that thread be stuck inside MPI all the same, the
     * process leaves without finalizing (worker_leave). */
    if (!heartbeat_end(LEAVE_WAIT_NS))
        worker_leave();
    /* Empty (every message's last answer sent them) unless the pool
     * broke: then they were never handed to MPI. */
    free(hb.held);
    hb.held = NULL;
    hb.held_len = hb.held_cap = 0;
    hb.held_n = 0;
    pthread_cond_destroy(&hb.cv);
    MPI_Send(NULL, 0, MPI_BYTE, manager, MTAG_BYE, comm);
    fflush(stdout);
    atomic_store(&in_mpi_worker, false);
    return broken;
}
