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
 *   HB, EXIT, BYE  empty
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
#include "wire.h"

enum {
    MTAG_CALL = 101,  /* manager -> worker */
    MTAG_EXIT = 102,  /* manager -> worker: no more calls; say BYE, leave */
    MTAG_HELLO = 111, /* worker -> manager, first message */
    MTAG_RESULT = 112,
    MTAG_HB = 113,    /* worker -> manager heartbeat, from its own thread */
    MTAG_BYE = 114,   /* worker -> manager, answering EXIT */
};

/* The argument that marks a spawned worker copy (argv[1]); argv[2] is the
 * heartbeat interval in milliseconds. */
#define CF__MPI_WORKER_ARG "--cfutures-mpi-worker"

/* How long an idle loop keeps probing before it starts to sleep, and the
 * longest sleep between probes.  MPI offers no way to sleep until a
 * message comes (a blocking MPI_Probe spins at 100 % CPU), so waiting is
 * MPI_Iprobe, then nanosleep with a doubling pause: a busy exchange keeps
 * microsecond latency, an idle one costs about a thousand cheap probes per
 * second. */
#define CF__MPI_SPIN_NS 100000
#define CF__MPI_NAP_MIN_NS 50000
#define CF__MPI_NAP_MAX_NS 1000000

/* The pause after the previous one `nap` (0 at first). */
static inline int64_t cf__mpi_next_nap(int64_t nap)
{
    if (nap < CF__MPI_NAP_MIN_NS)
        return CF__MPI_NAP_MIN_NS;
    return nap * 2 > CF__MPI_NAP_MAX_NS ? CF__MPI_NAP_MAX_NS : nap * 2;
}

/* The payload of a finished frame (header excluded) as one malloc'ed
 * buffer, the referenced big values copied in; NULL on ENOMEM or when the
 * frame is over INT_MAX bytes (one MPI message counts in int). */
unsigned char *cf__mpi_flatten(const wire_enc *e, int *len);

/* MPI's text for an error code, into buf. */
const char *cf__mpi_strerror(int code, char *buf, size_t size);

/* Initialises MPI once for the process (MPI_THREAD_MULTIPLE) unless the
 * program did; arranges MPI_Finalize at exit when we initialised it.
 * Returns CF_OK or CF_ESYS (message recorded). */
int cf__mpi_ensure_init(const char *who);

/* Static mode: is this process rank 0 of an mpirun launch with workers,
 * and have they not served a pool yet?  Set by cf_mpi_init(). */
extern bool cf__mpi_static_world;
extern bool cf__mpi_static_used;
/* The program's own file (absolute), for spawning; "" if unknown. */
extern char cf__mpi_exe[4096];
extern bool cf__mpi_init_called;

/* Runs the worker loop on `comm` serving `manager` until EXIT; returns
 * after saying BYE. */
void cf__mpi_serve(MPI_Comm comm, int manager, int64_t hb_interval_ns);

/* Shuts down (waiting) every live MPI pool; called before MPI_Finalize. */
void cf__mpi_pools_shutdown_all(void);

/* Frees the buffers of requests released after a worker died; called
 * after MPI_Finalize, when MPI no longer touches them. */
void cf__mpi_orphans_free(void);

#endif
