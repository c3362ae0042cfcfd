/* SPDX-License-Identifier: MIT */
/*
 * mpi_engine.h - what the MPI pool (mpi_pool.c) and its workers
 * (mpi_worker.c) share.
 *
 * Messages: one MPI message per frame, the frame type in the tag, the
 * payload in the bytes (no wire.h header: MPI carries the length).  CALL
 * and RESULT payloads are those of wire.h, written and read with its value
 * and failure codec:
 *   CALL    u32 n, u8 namelen, name, n x { u8 nargs, nargs x value }
 *   RESULT  u32 n, n x { u8 ok, value when ok, else failure }
 *   HELLO   u32 rank, u32 size, u32 pid, failure-style cstr host
 *   STOP    u64 frame, u32 index: raise the stop flag (cf_cancel_requested)
 *           of call `index` (CF__MPI_STOP_ALL: every call) of the worker's
 *           frame-th CALL frame (counted from 1), now or when it begins
 *   KILL    u32 signal: the worker sends itself that signal (SIGTERM, a
 *           second later SIGKILL; or SIGKILL at once) - spawn mode only,
 *           for cf_terminate_workers() / cf_kill_workers()
 *   CALLS   k x { u32 len, CALL payload of len bytes }: several small
 *           CALL frames in one message (each one CALL frame for the
 *           numbering and the answers), at most CF__MPI_BATCH_MAX bytes
 *   RESULTS k x { u32 len, RESULT payload of len bytes }: the answers of
 *           consecutive CALL frames in one message, likewise bounded
 *   EXIT    empty; or u8 CF__MPI_EXIT_BROKEN from a pool that broke: the
 *           worker stops its running call, drops the rest, says BYE and
 *           leaves (mpi_pool.c, wind_down)
 *   HB, BYE empty
 *   LONG    u32 tag, u64 length: a frame longer than its sender's part
 *           limit (a CALL over cf__mpi_part_max(), a RESULT over
 *           cf__mpi_answer_part_max()) follows as PART messages, in order,
 *           each at most that limit; their bytes joined are
 *           the frame.  One MPI message counts in int (Open MPI 4.1 has no
 *           MPI-4 large-count calls), so frames over 2 GiB cross this way;
 *           MPI keeps messages of one sender, tag and communicator in order.
 * The manager is one rank (0 of the parent group in spawn mode, world
 * rank 0 in static mode); workers only ever talk to it.
 */
#ifndef CF_MPI_ENGINE_H
#define CF_MPI_ENGINE_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "internal.h"
#include "remote.h"
#include "wire.h"

enum {
    MTAG_CALL = 101,  /* manager -> worker */
    MTAG_EXIT = 102,  /* manager -> worker: no more calls; say BYE, leave */
    MTAG_STOP = 103,  /* manager -> worker: u64 frame, u32 index (see below) */
    MTAG_KILL = 104,  /* manager -> worker: u32 signal */
    MTAG_CALLS = 105, /* manager -> worker: several CALL frames */
    MTAG_HELLO = 111, /* worker -> manager, first message */
    MTAG_RESULT = 112,
    MTAG_HB = 113,    /* worker -> manager heartbeat, from its own thread */
    MTAG_BYE = 114,   /* worker -> manager, answering EXIT */
    MTAG_RESULTS = 115, /* worker -> manager: several RESULT frames */
    MTAG_LONG = 120,  /* either way: u32 tag, u64 length; PARTs follow */
    MTAG_PART = 121,
};

/* The most bytes one PART carries: 16 MiB from the manager, 1 MiB from a
 * worker (an answer), or the test knob CFUTURES_TEST_MPI_PART where
 * smaller (bytes, >= 1024, so that a HELLO, which goes whole, fits; read
 * once per process, before MPI starts), which lets tests split small
 * frames.  A frame longer than its sender's limit goes as LONG + PARTs.
 * A worker takes parts of any size; the manager refuses a message from a
 * worker over what its tag may carry (worker_msg_max in mpi_pool.c: a
 * PART at most CF__MPI_ANSWER_PART_MAX and a little header), before it
 * takes memory for it.
 *
 * Why answers go in smaller parts: a message proves its sender alive only
 * once all of it has come, and a heartbeat sent while one is being written
 * leaves after it (one TCP stream), so what the manager's heartbeat check
 * can wait for is one part of an answer.  With 1 GiB parts a 2.5 GiB
 * result at about 12 MB/s (2 cores at load 16) went 5 s without a sign of
 * life; with 16 MiB parts a 16 MiB result did over a link limited to 25
 * Mbit/s (3 runs in 3, 2 s heartbeat timeout), breaking a pool whose
 * worker was alive.  1 MiB parts keep that wait under the default 5 s
 * down to about 0.2 MB/s (1.7 Mbit/s), and cost nothing measurable at
 * memory or veth speed (a 64 MiB echo took the same time with 16 MiB, 1
 * MiB and 256 KiB parts).  A worker sends one part at a time.  The
 * manager posts all the parts of a call at once, and Open MPI sends each
 * one's first 64 KiB ahead, which the worker holds until it takes that
 * part: so calls keep 16 MiB parts (the worker does not watch the
 * manager's silence).  What no part size helps is TCP itself stalling: at
 * 10 % packet loss each way the stream stopped for 5 s in 2 runs of 10. */
#define CF__MPI_PART_MAX ((size_t)16 << 20)
#define CF__MPI_ANSWER_PART_MAX ((size_t)1 << 20)
size_t cf__mpi_part_max(void);
size_t cf__mpi_answer_part_max(void);

/* A test knob from the environment: the decimal number in `name` if it
 * is in [lo, hi], else (unset, not a plain number, out of range) dflt. */
unsigned long long cf__mpi_test_knob(const char *name, unsigned long long lo,
                                     unsigned long long hi, unsigned long long dflt);

/* A message longer than this is "big": Open MPI 4.1 sends it by
 * rendezvous over TCP (its eager limit there is 64 KiB), so it moves only
 * while both ranks call into MPI (see moving() in mpi_pool.c). */
#define CF__MPI_BIG_MSG ((size_t)64 << 10)

/* A finished frame's payload (header excluded) as at most
 * CF__MPI_MAX_PIECES contiguous pieces, in order: the encoder's inline
 * bytes between the big values it references, and those values.  Returns
 * how many. */
typedef struct cf__mpi_piece {
    const unsigned char *p;
    size_t n;
} cf__mpi_piece;
#define CF__MPI_MAX_PIECES (2 * WIRE_MAX_REFS + 1)
size_t cf__mpi_pieces(const wire_enc *e, const unsigned char *inline_copy, cf__mpi_piece *out);

/* The payload length of a finished frame. */
static inline size_t cf__mpi_frame_len(const wire_enc *e)
{
    return e->len - WIRE_HDR + e->total;
}

#define CF__MPI_STOP_ALL UINT32_MAX
/* EXIT's one byte when the pool broke (a normal EXIT is empty). */
#define CF__MPI_EXIT_BROKEN 1

/* Batching: every MPI message costs a system call or more on each side
 * (a few microseconds where system calls are slow), so small frames going
 * the same way travel together.  The manager puts the small CALL frames
 * it hands one worker in one dispatch round into one CALLS message; a
 * worker holds the RESULT frames of quick calls and sends them as one
 * RESULTS message when the CALLS message is done, when a call took
 * CF__MPI_HOLD_NS or longer (a slow call's answer leaves at once), or,
 * while a later call of the message runs long, from its heartbeat thread
 * once the first has waited CF__MPI_HOLD_MAX_NS (at that thread's next
 * look, at most 10 ms later).  Only frames whose values
 * are all inline (no WIRE_REF_MIN-sized value) are batched, never a timed
 * call's (its answer would wait for the calls after it), and a batch
 * stays within CF__MPI_BATCH_MAX bytes. */
#define CF__MPI_BATCH_MAX ((size_t)32 * 1024)
#define CF__MPI_HOLD_NS 50000
#define CF__MPI_HOLD_MAX_NS 1000000

/* The argument that marks a spawned worker copy (argv[1]); argv[2] is the
 * heartbeat interval in milliseconds. */
#define CF__MPI_WORKER_ARG "--cfutures-mpi-worker"

/* Open MPI 4.1's settings (read by the daemon a plain program's MPI_Init
 * forks) that make one spawned process's death (ABORT: killed, or a
 * non-zero status) or its exit without MPI_Finalize (NOSYNC) abort every
 * job of the program; cf_mpi_init() turns both off unless the
 * environment has them. */
#define CF__MPI_ABORT_ENV "OMPI_MCA_orte_abort_on_non_zero_status"
#define CF__MPI_NOSYNC_ENV "OMPI_MCA_orte_allowed_exit_without_sync"

/* How long an idle loop keeps probing before it starts to sleep, and the
 * longest sleep between probes.  MPI offers no way to sleep until a
 * message comes (a blocking MPI_Probe spins at 100 % CPU), so waiting is
 * MPI_Iprobe, then nanosleep with a doubling pause: a busy exchange keeps
 * microsecond latency, an idle one costs about a thousand cheap probes per
 * second. */
#define CF__MPI_SPIN_NS 100000
#define CF__MPI_SPIN_MAX_NS 1000000
#define CF__MPI_NAP_MIN_NS 50000
#define CF__MPI_NAP_MAX_NS 1000000
/* A transfer under way (a big message, or a part of one) moves only while
 * both ranks call into MPI, so the loops that wait for one probe without
 * sleeping - but only for this long without the transfer moving on.  A
 * part of an answer (1 MiB) that has not crossed by then goes at under
 * 50 MB/s, one of a call (16 MiB) under 800 MB/s: the link, not the
 * polling, sets the pace,
 * and the loops nap between looks (an eighth of the time past this, at
 * most CF__MPI_NAP_MAX_NS, in the worker; the manager's naps are an eighth
 * of the time since anything came, so 1 ms at once); the socket buffers
 * carry the bytes meanwhile.
 * Spinning throughout, a 64 MiB echo over a 25 Mbit/s link kept the
 * worker at 90 % and the manager at 40 % of a core for 46 s; napping after
 * this long, 11 % and 5 %, in the same 46 s.  At memory and veth speed a
 * 64 MiB echo took the same time either way (0.9-1.1 s, 6 pairs each; 1.4-2.7
 * s beside two busy loops, 9 pairs). */
#define CF__MPI_MOVE_SPIN_NS 20000000
/* cf_kill_workers(): the longest the manager lets the sends under way
 * finish before it sends KILL, and waits for its KILL messages to leave
 * before it lets go of the communicator. */
#define CF__MPI_KILL_SEND_NS 1000000000

/* A waiting worker's pause grows with the time it has waited (an eighth
 * of it, cf__mpi_nap_for) up to CF__MPI_DOZE_NAP_NS: a call that comes
 * after a quiet spell is seen at most an eighth of that spell late, and
 * at most CF__MPI_DOZE_NAP_NS; a busy pool never dozes.  The number of
 * wake-ups is what idling costs: a bare nanosleep() loop uses ~0.1 ms of
 * CPU per wake-up on a loaded paravirtualised machine (1.4 % of a core
 * with 8 ms pauses, 0.7 % with 16 ms, 4.5 % with 1 ms). */
#define CF__MPI_DOZE_NAP_NS 16000000

/* Adaptive spinning: a loop keeps an average (EWMA) of how long its
 * recent waits for a message took, and probes without sleeping for about
 * twice that: a steady exchange (one call at a time over TCP takes tens of
 * microseconds) is then caught without a sleep's latency.  Waits longer
 * than CF__MPI_SPIN_MAX_NS mean a slow peer: spinning for it would only
 * burn CPU, so the window falls back to CF__MPI_SPIN_NS.  Spinning loops
 * yield the CPU between probes, for peers on a loaded machine. */
static inline int64_t cf__mpi_spin_for(int64_t avg)
{
    if (avg > CF__MPI_SPIN_MAX_NS)
        return CF__MPI_SPIN_NS;
    return 2 * avg < CF__MPI_SPIN_NS ? CF__MPI_SPIN_NS : 2 * avg;
}

static inline void cf__mpi_average(int64_t *avg, int64_t sample)
{
    if (sample > 4 * CF__MPI_SPIN_MAX_NS)
        sample = 4 * CF__MPI_SPIN_MAX_NS;
    *avg += (sample - *avg) / 4;
}

/* The pause after having waited `waited` already, at most `max`: an
 * eighth of it, so a message that comes during a pause is noticed at most
 * an eighth late (doubling pauses could double the wait), while a long
 * wait still settles at `max`. */
static inline int64_t cf__mpi_nap_for(int64_t waited, int64_t max)
{
    int64_t nap = waited / 8;
    if (nap < CF__MPI_NAP_MIN_NS)
        nap = CF__MPI_NAP_MIN_NS;
    return nap > max ? max : nap;
}

/* The pause after the previous one `nap` (0 at first), at most `max`. */
static inline int64_t cf__mpi_next_nap(int64_t nap, int64_t max)
{
    if (nap < CF__MPI_NAP_MIN_NS)
        return CF__MPI_NAP_MIN_NS;
    return nap * 2 > max ? max : nap * 2;
}

/* The CLOCK_MONOTONIC time `ns` from now, as pthread_cond_timedwait()
 * takes it (the engine's condition variables use that clock). */
static inline struct timespec cf__mpi_mono_after(int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
    ts.tv_sec = (time_t)(t / 1000000000);
    ts.tv_nsec = (long)(t % 1000000000);
    return ts;
}

/* The payload of a finished frame (header excluded) as one malloc'ed
 * buffer, the referenced big values copied in; NULL with errno ENOMEM, or
 * EMSGSIZE when the frame is over cf__mpi_part_max() bytes (it goes as
 * LONG + PARTs instead). */
unsigned char *cf__mpi_flatten(const wire_enc *e, int *len);

/* MPI's text for an error code, into buf. */
const char *cf__mpi_strerror(int code, char *buf, size_t size);

/* Initialises MPI once for the process (MPI_THREAD_MULTIPLE) unless the
 * program did; arranges MPI_Finalize at exit when we initialised it.
 * Returns CF_OK or CF_ESYS (message recorded). */
int cf__mpi_ensure_init(const char *who);

/* Static mode: is this process rank 0 of an mpirun launch with workers?
 * Set by cf_mpi_init(), like the pool's copy of MPI_COMM_WORLD, which the
 * one static pool takes (then MPI_COMM_NULL; guarded by the pools' lock
 * in mpi_pool.c). */
extern bool cf__mpi_static_world;
extern MPI_Comm cf__mpi_static_comm;
/* When the static world's worker ranks began to serve (rank 0's clock,
 * cf__now_ns(), taken in cf_mpi_init()): where a static pool's budget of
 * heartbeats starts (message_breach in mpi_pool.c). */
extern int64_t cf__mpi_static_since;
/* Static mode: the workers' heartbeat interval. */
#define CF__MPI_STATIC_BEAT_NS (200 * 1000000LL)
/* The longest heartbeat interval a spawned worker takes on its command
 * line (ms): an hour.  The manager passes a fifth of heartbeat_timeout,
 * capped at this (up to 86400 s are accepted). */
#define CF__MPI_BEAT_MAX_MS 3600000LL
/* The program's own file (absolute), for spawning; "" if unknown. */
extern char cf__mpi_exe[4096];
extern bool cf__mpi_init_called;

/* Runs the worker loop on `comm` serving `manager` until EXIT; returns
 * after saying BYE: true if the EXIT said the pool broke
 * (CF__MPI_EXIT_BROKEN). */
bool cf__mpi_serve(MPI_Comm comm, int manager, int64_t hb_interval_ns);

/* Shuts down (waiting) every live MPI pool; called before MPI_Finalize. */
void cf__mpi_pools_shutdown_all(void);

/* Arranges for cf__mpi_pools_shutdown_all() and the static-mode release to
 * run at the start of MPI_Finalize, whoever calls it.  Once per process;
 * MPI must be initialised. */
void cf__mpi_hook_finalize(void);

/* Static mode, rank 0, at MPI_Finalize: when no pool took the workers,
 * tells them to leave (they then wait for the job's last barrier). */
void cf__mpi_static_release(void);

/* Is a manager thread stuck inside MPI after its constructor gave up? */
bool cf__mpi_stuck(void);

/* Frees the communicators of broken pools kept since (wind_down in
 * mpi_pool.c); called at the start of MPI_Finalize, after the pools have
 * ended. */
void cf__mpi_kept_comms_free(void);

/* Frees the buffers of requests released after a worker died; called
 * after MPI_Finalize, when MPI no longer touches them. */
void cf__mpi_orphans_free(void);

#endif
