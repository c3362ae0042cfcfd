/* SPDX-License-Identifier: MIT */
/*
 * cfutures_mpi.h - the MPI engine: the executor API on MPI ranks.
 *
 * A separate library (cfutures-mpi, linked with cfutures and an MPI
 * implementation; tested with Open MPI 4.1).  An MPI pool is a cf_executor
 * like the others: cf_submit, cf_submit_with, cf_map (with chunksize),
 * cf_wait, cf_as_completed, done-callbacks, cf_shutdown and
 * cf_executor_destroy work unchanged.  As with a process pool, tasks are
 * functions registered with CF_TASK and values are copied (no CF_PTR).
 *
 * Launch modes
 *   spawn   an ordinary program (no mpirun) creates a pool; the library
 *           starts the workers with MPI_Comm_spawn of the program's own
 *           file.  Each worker copy stops in cf_mpi_init() and serves.
 *   static  `mpirun -np N ./prog`: cf_mpi_init() keeps rank 0 and turns
 *           ranks 1..N-1 into workers; the pool created on rank 0 uses
 *           them, and when it is destroyed they finalize MPI and exit 0.
 *   comm    a program that uses MPI itself makes an executor over one of
 *           its communicators with cf_mpi_comm_pool_new() (all its ranks
 *           call it; the root gets the executor, the others serve).
 *
 * Usage (spawn and static modes):
 *
 *     CF_TASK(square);
 *     int main(int argc, char **argv)
 *     {
 *         cf_mpi_init(argc, argv);   // worker copies never return
 *         cf_executor *ex;
 *         cf_mpi_pool_new(&ex, NULL);
 *         ...
 *
 * Environment: spawned workers get the environment the process had when
 * it first initialised MPI (Open MPI's daemon starts then and passes its
 * own copy on): later changes, OMPI_MCA_* settings included, do not
 * reach the workers of later pools.
 *
 * Threads: MPI is initialised with MPI_THREAD_MULTIPLE.  Each pool has one
 * manager thread that makes every MPI call of that pool (sends, probes,
 * spawn, freeing its communicator) and completes its futures, so
 * done-callbacks run on it.  MPI_Init_thread and MPI_Finalize run on the
 * thread that called cf_mpi_init() (or the first cf_mpi_pool_new()) and
 * at exit.  A program that called MPI_Init_thread(MPI_THREAD_MULTIPLE)
 * itself keeps its MPI: cfutures then neither initialises nor finalizes it.
 *
 * Dead workers: Open MPI does not report a spawned worker that dies, so
 * every worker sends a heartbeat from a thread of its own; a worker not
 * heard from for `heartbeat_timeout` seconds is dead.  Its calls and the
 * pool then fail with CF_EBROKEN (failure type "BrokenMPIPool") naming the
 * rank and host, the break is said once through the log hook
 * (cf_set_log_hook), and later submits fail the same way.  Unlike a
 * process pool, which sees a worker die at once and by which signal, an
 * MPI pool sees only the silence: calls that end on other workers
 * meanwhile keep their results, and the message names no signal.  A
 * task that calls exit() is not silent: its worker says that it leaves
 * (the pool breaks at once) and its process ends with status 1 without
 * MPI_Finalize, which would wait for the parent.  A broken pool is not
 * repaired: create a new one.  The process's other pools go on: by default Open MPI's
 * daemon would end every job the process spawned when one spawned
 * worker dies or ends without MPI_Finalize (and, when that worker ran on
 * another host, the program itself), so cf_mpi_init() of a plain program
 * sets OMPI_MCA_orte_abort_on_non_zero_status=0 and
 * OMPI_MCA_orte_allowed_exit_without_sync=1, each unless the environment
 * has it (they stay in the environment, for the program's children too).
 * Under mpirun these settings are mpirun's own: without them a dead
 * spawned worker ends the whole job, the program included; with it
 * mpirun does not return after the program ends (Open MPI 4.1).  So run
 * a spawn-mode program as a plain program (see the README for placing
 * its workers on other hosts without mpirun).
 *
 * A broken pool's live workers leave (in every mode, whatever broke the
 * pool: a silent worker, a malformed message, an MPI error): each is told
 * that the pool is over, its running call is asked to stop as by
 * cf_future_interrupt() and its answer dropped, and it leaves - a spawned
 * worker's process ends (once the longest call still running in its
 * siblings has returned: MPI_Finalize waits for them), a static rank
 * finalizes as after a normal shutdown, a communicator rank returns from
 * cf_mpi_comm_pool_new().  cf_shutdown(wait) and
 * cf_executor_destroy() of a broken pool wait until its workers have
 * left, at most heartbeat_timeout.  A communicator a worker may still
 * send on (silent, or still in a call that ignores the request to stop)
 * is kept until MPI_Finalize, so that no later communicator of the
 * process - a new pool over the same ranks - receives its messages.
 *
 * Workers are not trusted.  A message a worker must not send breaks its
 * pool, naming the breach: an unknown tag, parts of a long answer out of
 * order, a message larger than its kind may be (checked before the
 * manager takes memory for it; one over 64 MiB is left unread, its
 * communicator then kept as above), or more heartbeats than a worker
 * sends (a flood), or a long answer begun and not continued for
 * heartbeat_timeout while its heartbeats go on (a worker sends the parts
 * of one back to back).  A worker that sends heartbeats but never says hello
 * fails start-up after heartbeat_timeout.  At the end, a worker told to
 * leave with nothing left to run that does not say so within
 * heartbeat_timeout + 5 s is let go (the pool counts as broken, with a
 * log line); and a spawned worker that never joins the final, collective
 * MPI_Comm_disconnect (MPI offers no way out of one) holds the manager
 * thread there: cf_shutdown(wait) and cf_executor_destroy() return after
 * heartbeat_timeout + 5 s all the same, leaving that thread and its pool
 * (a few KiB) behind with a log line, and MPI is not finalized at exit.
 * A static or communicator rank let go is still part of the job: static
 * mode's MPI_Finalize at exit waits for it to finalize too.
 * What Open MPI itself does with a worker's messages before cfutures
 * reads them is beyond the library's reach: it buffers what arrives, and
 * a flood its TCP transport cannot drain as fast as it comes holds the
 * manager inside one MPI call for as long as the flood lasts.
 *
 * Stopping calls: a call cannot be killed alone (that would end every
 * worker of the pool), so it is stopped as in a thread pool.
 * cf_future_interrupt() of a running call makes cf_cancel_requested() true
 * (and cf_cancel_fd() readable) for the task in its worker, within about
 * 10 ms; the future ends when the task does.  A cf_submit_with() timeout
 * fails the future with CF_ETIMEDOUT when it passes and asks the task to
 * stop the same way; its worker is busy until the task returns, and its
 * result is dropped.
 *
 * Handing out: MPI gives no way to take a call back from a worker, so a
 * call counts as running (cf_future_running(), progress `running`) from
 * when it is sent, and cf_future_cancel(), cf_shutdown(cancel_futures),
 * cf_map_close() and a map's timeout no longer reach it (interrupt
 * does).  So the pool sends few calls ahead: a busy worker gets one more
 * call (or map chunk) only while more wait than there are workers (and
 * never a call with a cf_submit_with() timeout, whose clock starts when
 * it is sent), and further ones only while those already waiting on it
 * would take less than about 1 ms by its recent time per call of their
 * task functions (at most 64; none of a function it has not answered a
 * call of lately).  Behind long calls at most one call per worker is
 * running without having begun - as in Python's process pool, which
 * hands its workers one call more than it has workers - while a stream
 * of tiny calls still travels many per message.  The pace is per
 * function, not per argument: right after quick calls of a function,
 * long calls of the same function go out as quick ones until the first
 * of them answers.
 *
 * cf_terminate_workers() / cf_kill_workers() shut the pool down
 * (cancelling the calls not handed out yet), then:
 *   spawn   every worker process ends itself with SIGTERM (SIGKILL a
 *           second later if it survives) or SIGKILL, on any host; the
 *           calls they had fail with CF_EBROKEN at once.  The
 *           process's other pools go on (see "Dead workers").
 *   static, comm  a rank cannot end alone (the launcher would end the
 *           whole job, the application's rank included), so every running
 *           call is asked to stop as by cf_future_interrupt(); the pool
 *           ends when they have returned, and the ranks leave as after a
 *           normal shutdown.
 *
 * Priorities and bounds: an MPI pool takes calls in submission order.  A
 * cf_submit_options or cf_map_options priority other than
 * CF_PRIORITY_DEFAULT is refused with CF_ENOTSUP (nothing is queued), and
 * its options have no max_queued: submit never waits for room.
 */
#ifndef CFUTURES_MPI_H
#define CFUTURES_MPI_H

/* In C++, mpi.h would also bring MPI's C++ bindings (removed from the
 * standard in MPI-3): Open MPI's fail -Wcast-function-type and need
 * -lmpi_cxx to link.  This header uses the C interface only, so it asks
 * for that alone, unless the program included mpi.h first. */
#if defined(__cplusplus) && !defined(OMPI_SKIP_MPICXX)
#define OMPI_SKIP_MPICXX 1
#endif
#if defined(__cplusplus) && !defined(MPICH_SKIP_MPICXX)
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include "cfutures.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the pool gets its workers. */
typedef enum cf_mpi_mode {
    /* Static when the process was started by mpirun with more than one
     * rank, spawn otherwise. */
    CF_MPI_AUTO = 0,
    CF_MPI_SPAWN = 1,
    CF_MPI_STATIC = 2,
} cf_mpi_mode;

typedef struct cf_mpi_pool_options {
    cf_mpi_mode mode;
    /* Spawn mode: workers to start.  CF_AUTO (the default): the
     * environment variable CFUTURES_MPI_WORKERS, else the MPI universe
     * size minus the ranks already running when it says more, else
     * cf_usable_cpus().  1..1024.  Static mode: must be CF_AUTO or the
     * number of other ranks. */
    int max_workers;
    /* Seconds without a message from a worker after which it counts as
     * dead (> 0; default 5).  Workers send a heartbeat every fifth of it
     * (static mode: every 0.2 s, and it must be >= 1). */
    double heartbeat_timeout;
    /* Spawn mode: let Open MPI start more workers than the host has slots
     * (info key map_by=:OVERSUBSCRIBE).  Default true, so a 2-core machine
     * can spawn 4 workers. */
    bool oversubscribe;
    /* Seconds the constructor waits for MPI_Comm_spawn to start the
     * workers (> 0; default 60).  MPI_Comm_spawn does not return when a
     * worker dies inside MPI_Init; after this long the constructor returns
     * CF_EBROKEN and leaves that pool (a thread and its memory) to MPI.
     * Once the spawn returned, each worker has heartbeat_timeout to say
     * hello, whatever this is. */
    double start_timeout;
} cf_mpi_pool_options;

/* Fills `opts` with the defaults above.  NULL is ignored.  Any thread. */
void cf_mpi_pool_options_init(cf_mpi_pool_options *opts);

/* Call at the top of main(), before anything else (after the CF_TASK
 * registrations, which run before main).  In a copy of the program that
 * an MPI pool spawned, and on ranks 1..N-1 of an mpirun launch, it runs
 * the worker loop, finalizes MPI and exits the process with 0: it never
 * returns there.  Elsewhere it notes the program's file for spawning and
 * returns; under mpirun (rank 0) it also initialises MPI.  Main thread
 * only, once.
 * Returns CF_OK; CF_EINVAL (argc < 1 or argv NULL); CF_ESYS (MPI could
 * not be initialised, or offers less than MPI_THREAD_MULTIPLE). */
int cf_mpi_init(int argc, char **argv);

/* Creates an MPI pool (see the modes above) and stores it in *out; the
 * caller owns it and ends it with cf_executor_destroy().  Initialises MPI
 * if nobody did.  Spawn mode blocks while MPI starts the workers (on a
 * 2-core machine, 0.35-0.45 s for 1-2 local workers, 0.55-0.65 s for 4,
 * and 0.7 s for the process's first pool, which also starts Open MPI's
 * daemon).  Any application thread.
 * Returns CF_OK, or with *out = NULL:
 *   CF_EINVAL       out NULL, bad options
 *   CF_EINVALSTATE  called inside a worker; spawn mode without
 *                   cf_mpi_init() in main; static mode when the ranks
 *                   already served a pool (they exit after it) or the
 *                   process was not launched with several ranks
 *   CF_ESYS         MPI could not be initialised, the spawn failed (the
 *                   message carries MPI's error string), the program's
 *                   own file cannot be run (deleted or replaced since it
 *                   started), or no thread
 *   CF_EBROKEN      a worker did not say hello within heartbeat_timeout,
 *                   or broke the protocol while starting, or MPI did not
 *                   start the workers within start_timeout
 *   CF_ENOMEM */
int cf_mpi_pool_new(cf_executor **out, const cf_mpi_pool_options *opts);

/* An executor over the ranks of `comm`, an intracommunicator of a program
 * that initialised MPI itself with MPI_THREAD_MULTIPLE (the counterpart
 * of mpi4py's MPICommExecutor(comm, root)).  Collective: every rank of
 * `comm` calls it with the same root and heartbeat_timeout.  On `root` it
 * stores a pool whose workers are the other ranks (mode and oversubscribe
 * are ignored; max_workers must be CF_AUTO or size - 1) and returns once
 * they are ready.  On the other ranks it runs their calls and returns
 * CF_OK with *out = NULL when the root's executor is shut down, or breaks
 * (then after the call running there returns; see "Dead workers").  The pool
 * talks on its own duplicate of `comm`, so neither the program's messages
 * on `comm` nor other executors' ever mix with it.  cfutures does not
 * finalize MPI here.  Not on a worker of another MPI pool.
 * Returns CF_OK, or with *out = NULL: CF_EINVAL (out NULL, bad options,
 * comm NULL or an intercommunicator, root out of range, a comm of one
 * rank), CF_EINVALSTATE (MPI not initialised, finalized, or below
 * MPI_THREAD_MULTIPLE), CF_ESYS (MPI_Comm_dup failed), CF_EBROKEN (a
 * worker did not say hello in time), CF_ENOMEM. */
int cf_mpi_comm_pool_new(cf_executor **out, MPI_Comm comm, int root,
                         const cf_mpi_pool_options *opts);

/* True inside an MPI pool's worker (while it runs calls).  Any thread. */
bool cf_in_mpi_worker(void);

#ifdef __cplusplus
}
#endif

#endif
