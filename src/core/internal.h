/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the library's files share and users never see.
 *
 * Naming: public names are cf_*, internal non-static names cf__*.
 *
 * Lock order (never take them the other way round):
 *     registry mutex  ->  executor queue lock  ->  future lock  ->  waiter lock
 * (a completion queue's lock, cq.c, takes the waiter lock's place).
 * No cfutures lock is held while user code runs (tasks, callbacks, log hook,
 * generators, initializers).
 */
#ifndef CF_INTERNAL_H
#define CF_INTERNAL_H

#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cfutures.h"
#include "queue.h"

#define CF__API __attribute__((visibility("default")))
#define CF__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define CF__LIKELY(x) __builtin_expect(!!(x), 1)
/* For thread-locals read on every call (the future cache, the progress
 * shard): the initial-exec model reads them at a fixed offset from the
 * thread pointer.  The default model for a shared library goes through a
 * call to the dynamic linker's TLS resolver on each access; a driver
 * submitting 200,000 tiny calls ran 10-25% faster without those calls
 * (bench/README.md, "Prefetching the next block").  The cost: one such
 * variable marks the whole library STATIC_TLS, so all its thread-locals
 * (about 500 bytes, 256 of them the last-error message) come from the
 * static TLS block, of which glibc keeps a little spare for libraries
 * loaded with dlopen(); a process that used it up cannot load the
 * library late.  -DCF_INITIAL_EXEC_TLS=OFF (CMake) turns it off. */
#ifdef CF_NO_INITIAL_EXEC_TLS
#define CF__TLS_HOT
#else
#define CF__TLS_HOT __attribute__((tls_model("initial-exec")))
#endif

/* ---- errors ------------------------------------------------------------ */

/* Records a message for cf_last_error_message() and returns `err`, so a
 * failing path reads `return cf__fail(CF_EINVAL, "submit: fn is NULL");`. */
int cf__fail(int err, const char *fmt, ...) CF__PRINTF(2, 3);
/* The size of the calling thread's last-error message, NUL included. */
#define CF__ERROR_MAX 256
/* Work the library does on a thread that did not ask for it (a
 * done-callback of its own, run by whichever thread completed a future)
 * may fail on purpose - completing an output its user already cancelled
 * - and must not change what cf_last_error_message() tells that thread
 * about its own last failed call: save into a CF__ERROR_MAX buffer first,
 * restore after. */
void cf__error_save(char *saved);
void cf__error_restore(const char *saved);

/* Sends one line to the log hook. */
void cf__log(const char *fmt, ...) CF__PRINTF(1, 2);

/* Takes (true) or releases (false) the log hook's lock around fork(),
 * in the parent. */
void cf__log_lock_for_fork(bool lock);
/* In the child of fork(), instead of the release: forgets the other
 * threads' hook calls, then releases the lock. */
void cf__log_fork_child(void);

/* ---- time -------------------------------------------------------------- */

#define CF__NS_FOREVER INT64_MAX

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t cf__now_ns(void);

/* Validates a timeout (seconds, CF_FOREVER allowed) and turns it into an
 * absolute monotonic deadline.  Returns CF_OK or CF_EINVAL (negative/NaN),
 * recording a message that names `who`. */
int cf__deadline(double timeout, int64_t *deadline, const char *who);

/* ---- futex-based primitives --------------------------------------------
 *
 * cf__lock is a three-state futex mutex (0 free, 1 held, 2 held with
 * waiters).  It is four bytes, so every future can own one.  Acquire on
 * lock and release on unlock make it visible to ThreadSanitizer through
 * the C11 atomics.  Not recursive. */

typedef struct cf__lock {
    _Atomic uint32_t word;
} cf__lock;

#define CF__LOCK_INIT {0}

void cf__lock_slow(cf__lock *l);
void cf__unlock_slow(cf__lock *l);

static inline void cf__lock_acquire(cf__lock *l)
{
    uint32_t expected = 0;
    if (!atomic_compare_exchange_strong_explicit(&l->word, &expected, 1,
                                                 memory_order_acquire,
                                                 memory_order_relaxed))
        cf__lock_slow(l);
}

static inline void cf__lock_release(cf__lock *l)
{
    if (atomic_exchange_explicit(&l->word, 0, memory_order_release) != 1)
        cf__unlock_slow(l);
}

/* Sleeps while *word == expected, until woken or the absolute monotonic
 * deadline (CF__NS_FOREVER for none).  May return spuriously: callers
 * re-check their condition. */
void cf__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns);
void cf__futex_wake(_Atomic uint32_t *word, int count);

/* A short pause inside spin loops. */
static inline void cf__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* How long (ns) waiters and idle workers spin before sleeping; 0 on a
 * single CPU.  CF_SPIN_NS in the environment overrides it.  Read once per
 * process and kept. */
int64_t cf__spin_ns(void);
/* Tests only: replaces the kept budget (-1: read it again, environment
 * included, at the next cf__spin_ns()) and returns the one it replaced
 * (-1 if none was kept yet).  Threads spinning at the time finish with
 * the budget they read. */
int64_t cf__test_set_spin_ns(int64_t ns);

/* Spins until pred(arg) holds, the spin budget is spent or `deadline`
 * (cf__now_ns() time; CF__NS_FOREVER for none) has passed; returns the
 * last pred value.  The deadline keeps a timed wait within its timeout
 * however big the budget (CF_SPIN_NS allows up to 1 s).  After the first
 * microsecond it yields the CPU between checks: when the thread we wait
 * for shares our CPU (a loaded machine), pure spinning would only delay
 * it. */
bool cf__spin_until(bool (*pred)(void *), void *arg, int64_t deadline);

/* ---- processes and threads -------------------------------------------- */

/* Bumped in the child after every fork(); objects remember the generation
 * they were made in, so the child can refuse to touch an executor whose
 * threads exist only in the parent (their locks may be held forever). */
extern _Atomic unsigned cf__fork_generation;

/* Installs the fork and exit handlers once (executors). */
void cf__runtime_init(void);
/* Installs the fork handlers alone, once: for objects that must know they
 * were inherited (completion queues) or that a fork must not find half
 * changed (the log hook), without registering the exit handler early,
 * which would run it after atexit() handlers the program registers later. */
void cf__fork_init(void);

/* pthread_create() of a thread that blocks asynchronous signals, so they
 * reach the application's threads (engine workers and managers).
 * Returns pthread_create()'s result. */
CF__API int cf__thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* Sets the calling thread's full name for cf_thread_name() (NULL clears;
 * the string must outlive the setting) and the kernel's truncated copy. */
void cf__set_thread_name(const char *full);

/* ---- values and failures ------------------------------------------------ */

struct cf_failure {
    int code;
    char *type;    /* points into the same allocation */
    char *message; /* likewise */
};

/* One allocation holding the record and both strings.  NULL on ENOMEM. */
cf_failure *cf__failure_new(int code, const char *type, const char *message);
cf_failure *cf__failure_vnew(int code, const char *type, const char *fmt, va_list ap);
void cf__failure_free(cf_failure *f);
/* A static "out of memory" record used when no record can be allocated;
 * cf__failure_is_static() tells it apart so nobody frees it. */
cf_failure *cf__failure_oom(void);
bool cf__failure_is_static(const cf_failure *f);

/* Deep-copies `src` into *dst, using `inline_buf` (CF__INLINE_RESULT bytes)
 * when the payload fits and a fresh heap buffer otherwise; the old *heap
 * is freed and replaced.  Returns CF_OK, CF_EINVAL, CF_ENOTCOPYABLE (CF_PTR
 * when `copying`), CF_ETOOBIG or CF_ENOMEM (then *dst and *heap are
 * unchanged). */
int cf__value_store(cf_value *dst, void **heap, unsigned char *inline_buf, const cf_value *src,
                    bool copying, const char *who);

/* Validates one argument/result value; returns CF_OK, CF_EINVAL (unknown
 * kind, NULL data with a size) or CF_ETOOBIG.  `copying` refuses CF_PTR. */
int cf__value_check(const cf_value *v, bool copying, const char *who, size_t index);

/* Bytes that a deep copy of `v` needs beyond the cf_value itself. */
static inline size_t cf__value_extra(const cf_value *v)
{
    if (v->kind == CF_BYTES)
        return v->size;
    if (v->kind == CF_STR)
        return v->size + 1;
    return 0;
}

/* ---- futures ------------------------------------------------------------
 *
 * See the design notes at the top of future.c for the state machine and
 * the rules; this is the layout the engines and wait.c share. */

#define CF__STATE_MASK 0x7u
#define CF__SLEEPERS 0x8u /* some thread sleeps on `state` (futex) */
/* Somebody needs the future's completion to take its lock: waiters or
 * callbacks are (or are being) attached, or a lock holder relies on the
 * future not ending while it holds the lock.
 * A lock holder about to move a submitted call out of PENDING sets it
 * too, which keeps a thread pool worker from starting the call without
 * the lock meanwhile (cf__future_start_call).  Set only while the state
 * is not final (cf__future_hook_locked), never cleared but by the final
 * transition.  See "Lock-free completion" and "Lock-free start" in
 * future.c. */
#define CF__HOOKED 0x10u
#define CF__INLINE_RESULT 32

typedef struct cf__cb {
    cf_done_fn *fn;
    void *arg;
    struct cf__cb *next;
} cf__cb;

struct cf__waiter;

/* Links one waiter into one future's waiter list.  Lives in the waiter's
 * memory (the waiting thread's stack, or an as_completed iterator). */
typedef struct cf__wnode {
    struct cf__waiter *waiter;
    /* NULL for wait.c's waiters; otherwise called instead of
     * cf__waiter_notify() when the future completes, with the future's
     * lock held (a completion queue's node, cq.c).  It must not unlink
     * the node: its owner does that later, under the future's lock. */
    void (*notify)(struct cf__wnode *node, cf_future *f);
    struct cf__wnode *prev, *next; /* guarded by the future's lock */
} cf__wnode;

/* The call a task sees.  Embedded in its future; the copied arguments
 * follow the future in the same allocation.  The task's result and failure
 * are written straight into the future's outcome fields: while the future
 * is RUNNING only the thread running the task writes them (set_result and
 * friends refuse a running submitted future), and nobody reads them before
 * the state turns FINISHED. */
struct cf_call {
    cf_task_fn *fn;
    size_t nargs;
};

struct cf_future {
    uint32_t magic;
    _Atomic uint32_t refs;
    /* cf_state in the low bits plus CF__SLEEPERS and CF__HOOKED.  Changed
     * with `lock` held, except: CF__SLEEPERS (a sleeper in result(), a
     * CAS), the lock-free start of an unhooked pending call by a thread
     * pool worker and the lock-free completion of an unhooked running call
     * by the thread that ran it (CASes, see future.c).  Read lock-free with
     * acquire ordering, which is what makes the outcome fields below
     * visible: they are written before the release store (or CAS) of a
     * final state and never change afterwards. */
    _Atomic uint32_t state;
    cf__lock lock;
    /* Outcome, set once before the state becomes FINISHED (for a running
     * call: by the task's thread, see struct cf_call): */
    int status;            /* CF_OK, CF_ETASK or a library cf_error */
    /* cf_submit_options.priority: written before the future is handed to
     * the engine, never changed. */
    int priority;
    cf_value result;
    void *result_heap;     /* owns result bytes when they did not fit inline */
    /* Shared memory of a process pool's big call (NULL otherwise): set
     * before the future is handed out (args) or with its outcome (result),
     * freed with the future. */
    struct cf__shm *shm;
    cf_failure *failure;   /* owned */
    /* Guarded by `lock`; detached (and then owned by the completing thread)
     * when the future completes: */
    cf__cb *cb_head, *cb_tail;
    cf__wnode *waiters;
    /* cf_future_set_data()'s pointer: never dereferenced by the library.
     * Release/acquire, so what it points to, written before the set, is
     * visible to a thread that reads the pointer. */
    _Atomic(void *) user_data;
    union {
        /* Owned by the engine that holds the future in a queue (threads): */
        cf__qnode qnode;
        /* When `claimable` (a process pool's call): the claim word of the
         * call in memory shared with the worker it was sent to, NULL while
         * it is not on a worker.  Set and cleared with `lock` held, by the
         * engine (cf__future_attach_claim/detach_claim) and by completion;
         * the memory stays mapped while it is set.  See CF__CLAIM_*. */
        _Atomic uint32_t *claim;
    };
    bool has_call;
    bool pooled;           /* allocated in future.c's block size */
    bool claimable;        /* set before the future is handed out; constant */
    /* Stopping a call (cf_future_interrupt, cf_submit_with's timeout):
     * `stop` is set by any thread and read by the task through
     * cf_cancel_requested(); relaxed is enough, it carries no data.
     * `timeout_ns` (CF__NS_FOREVER for none) and `owner` are written before
     * the future is handed to the engine and never change; `owner` may be
     * dereferenced only while the future is not done, with its lock held
     * (the executor cannot be freed before its calls are done).
     * `deadline_ns` belongs to the thread running the call. */
    _Atomic bool stop;
    /* The running task asked for cf_cancel_fd() (cancel_fd.c): its entry
     * must go when the call ends.  Only the thread running the call. */
    bool cancel_watched;
    /* Progress counting (progress.c): `counted`, the future counts in its
     * owner's cf__counts; `in_map`, it also counts in the map iterator's
     * counts that `user_data` points to (a map's futures are never handed
     * to the user, so the slot is free for this).  Written before the
     * future is handed to the engine, and cleared under `lock` only for a
     * call the engine refused (cf__progress_unmark), which no worker
     * holds; read by whoever counts a state change. */
    bool counted;
    bool in_map;
    /* The call holds one of its executor's queue slots (cf__bound): set
     * before the future is handed to the engine; cleared, exactly once,
     * by the atomic exchange in cf__slot_release(). */
    _Atomic bool slot;
    int64_t timeout_ns;
    int64_t deadline_ns;
    cf_executor *owner;
    cf_call call;
    unsigned char inline_result[CF__INLINE_RESULT];
    /* trailing: copied arguments (cf_value[nargs]) then their bytes */
};

/* A call's claim word, in memory shared with an untrusted worker process.
 * The worker moves it PENDING -> RUNNING before it begins the call; the
 * parent moves it PENDING -> CANCELLED in cf_future_cancel().  Exactly one
 * of the two compare-and-swaps wins.  The parent reads nothing else into
 * it: any value but PENDING means "claimed" (a worker writing nonsense
 * has only begun its own calls). */
#define CF__CLAIM_PENDING 0u
#define CF__CLAIM_RUNNING 1u
#define CF__CLAIM_CANCELLED 2u

/* Engine side of claim words (future.c).  attach: the future goes out on
 * `word` (written PENDING here); returns true, or false if the future is
 * already done (a cancelled one is moved to CANCELLED_AND_NOTIFIED) and
 * must not be sent.  detach: the word is going away; returns true if the
 * call had been claimed (its state is then RUNNING).  Engine thread, no
 * engine lock needed (they take the future's). */
/* Tests only: called by cf_future_cancel() right after it won the claim
 * word of a call sent to a worker, before the cancel shows (future.c). */
typedef void cf__claim_hook(cf_future *f);
extern cf__claim_hook *_Atomic cf__test_hook_claim_cancelled;
/* Tests only: called by the lock-free completion of a running call
 * (future.c) after its outcome and counts are written and before the CAS
 * that publishes them (NULL in programs). */
extern void (*_Atomic cf__test_hook_before_finish)(cf_future *f);
bool cf__future_attach_claim(cf_future *f, _Atomic uint32_t *word);
bool cf__future_detach_claim(cf_future *f);
/* Whether a call that its worker skipped was rightly skipped: this
 * process took it back (cf_future_cancel(), or cf_future_set_result()/
 * set_exception() of a call not begun), so it is done.  Looks under the
 * future's lock, which those hold from the claim word's CAS until the
 * outcome shows.  Engine thread. */
bool cf__future_taken(const cf_future *f);

/* An engine stopped a call for real (cf_future_interrupt of a running
 * call): the future ends CANCELLED_AND_NOTIFIED, so cancelled() is true
 * and result() says CF_ECANCELLED.  Returns CF_OK or CF_EINVALSTATE
 * (already done). */
int cf__future_cancel_running(cf_future *f);

/* Allocates a pending future carrying a call of fn with deep copies of
 * args (validated by the caller).  One reference.  NULL on ENOMEM. */
cf_future *cf__future_new_call(cf_task_fn *fn, const cf_value *args, size_t nargs,
                               size_t extra_bytes);
/* cf__future_new_call() in two steps, so that a caller can get every
 * block of a batch before it makes any call (cf_submit_many: all or
 * none, then made while the first are already running).  `size` is
 * cf__future_call_size(nargs, extra_bytes).  cf__future_reserve: a block
 * for such a future, or NULL on ENOMEM; it is not a future yet, and goes
 * back through cf__future_unreserve (same size; NULL is ignored) or
 * becomes one through cf__future_make_call, which cannot fail and returns
 * the future (one reference).  Any thread. */
size_t cf__future_call_size(size_t nargs, size_t extra_bytes);
void *cf__future_reserve(size_t size);
void cf__future_unreserve(void *block, size_t size);
cf_future *cf__future_make_call(void *block, size_t size, cf_task_fn *fn, const cf_value *args,
                                size_t nargs);

/* Runs the call embedded in `f` (which must be RUNNING) and completes the
 * future with its outcome.  Used by in-process engines.  `ended` (may be
 * NULL) is the engine's count of calls done; it is incremented (release)
 * just before the outcome becomes visible, or, when the future has
 * done-callbacks, just after they have run on this thread. */
void cf__future_run_call(cf_future *f, _Atomic unsigned *ended);

/* cf_future_set_running_or_notify_cancel() for an engine's worker that
 * took f from its queue: 1 = RUNNING, 0 = it was cancelled (and is now
 * CANCELLED_AND_NOTIFIED), or the error.  An unhooked PENDING future
 * starts with one CAS and no lock ("Lock-free start", future.c). */
int cf__future_start_call(cf_future *f);

/* Runs the call embedded in `f`, which is RUNNING and which no other
 * thread knows of (a worker process's copy of a call): writes its outcome
 * and makes it FINISHED with a plain release store - no lock, no waiters,
 * no callbacks, no progress counts. */
void cf__future_run_private(cf_future *f);

/* A shared-memory buffer of a process pool: a memfd and this process's
 * read-write, shared mapping of its first `cap` bytes. */
typedef struct cf__buf {
    void *map;          /* NULL: no buffer */
    size_t cap;
    int fd;             /* -1 when only the mapping is held */
} cf__buf;

/* Unmaps and closes `b` (if any) and clears it. */
void cf__buf_drop(cf__buf *b);

/* Makes a buffer of `size` bytes: a memfd sealed against shrinking and
 * growing, mapped shared and writable (pages allocated now if
 * `populate`).  Returns 0, or -1 with errno set. */
int cf__buf_new(cf__buf *b, size_t size, bool populate);

/* For memory a worker hands to its parent: like cf__buf_new (populated),
 * but not sealed for good, so that once filled cf__buf_freeze() can seal
 * it against writes. */
int cf__buf_new_result(cf__buf *b, size_t size);

/* Unmaps `b` and seals its memfd against every write (F_SEAL_WRITE, then
 * F_SEAL_SEAL): from then on no process can change its bytes, which is
 * what lets the parent read a worker's result in place.  b keeps its fd;
 * its map is NULL.  Returns 0, or -1 with errno set. */
int cf__buf_freeze(cf__buf *b);

/* Bumped before fork() and again in the parent and in the child after it
 * (odd: a fork is in progress): a result buffer adopted before a fork is
 * never reused (a child may read it).  Not bumped for the pool's own
 * CF_START_FORK workers, which set cf__forking_worker around fork(). */
extern _Atomic unsigned cf__fork_count;
extern _Thread_local bool cf__forking_worker;

/* The buffers a process pool keeps for reuse (see process_pool.c).  A
 * fresh shared page costs more to allocate, zero and map than to fill, so
 * the argument and result memory of big calls goes round: submit takes a
 * buffer for the arguments, dispatch lends one to the worker for the
 * result, and both come back when the call is answered or its future
 * released.  Reference-counted: the pool holds one reference and every
 * future shm holding a buffer of it another, so buffers may come back
 * after the pool is gone (they are then freed).  Any thread. */
typedef struct cf__bufcache cf__bufcache;

/* A cache keeping at most `slots` buffers and `max_bytes` bytes; one
 * reference.  NULL on ENOMEM. */
cf__bufcache *cf__bufcache_new(int slots, size_t max_bytes);

/* Moves the smallest cached buffer of `min` to `max` bytes into *out.
 * Returns false if there is none. */
bool cf__bufcache_take(cf__bufcache *c, size_t min, size_t max, cf__buf *out);

/* Gives `b` back (ownership moves; *b is cleared): kept when there is room
 * and the cache is open, freed otherwise.  A buffer without a descriptor
 * cannot be lent again and is freed.  `c` may be NULL (then freed). */
void cf__bufcache_give(cf__bufcache *c, cf__buf *b);

/* A future adopting a buffer as its result may keep the descriptor (so
 * the buffer can go round) while fewer than the cache's `slots` results
 * do: returns true and counts it, or false (then close the descriptor).
 * cf__bufcache_unhold_fd() uncounts it. */
bool cf__bufcache_hold_fd(cf__bufcache *c);
void cf__bufcache_unhold_fd(cf__bufcache *c);

/* Takes one more reference. */
cf__bufcache *cf__bufcache_ref(cf__bufcache *c);

/* Drops a reference; the last frees the cache and its buffers. */
void cf__bufcache_unref(cf__bufcache *c);

/* The owner is done with the cache: frees what it holds and keeps no
 * buffer given back later; drops the owner's reference. */
void cf__bufcache_close(cf__bufcache *c);

/* Shared-memory buffers of one future (process pools, big payloads). */
typedef struct cf__shm {
    cf__buf result;     /* holds the result's bytes; its memfd: worker
                         * side, sent to the parent; parent side, kept for
                         * reuse through `cache` (-1 for none) */
    cf__buf args;       /* the whole CALL frame payload (the future's
                         * argument values point into it); its memfd is
                         * sent to the worker (dup'ed) */
    size_t args_len;    /* the frame's bytes, <= args.cap */
    cf__bufcache *cache; /* parent side: where both buffers go back when
                          * the future is freed (a reference); or NULL */
    bool result_fd_held; /* result.fd counted by cf__bufcache_hold_fd() */
    unsigned fork_stamp; /* cf__fork_count when the result was adopted */
} cf__shm;

/* A shm holding no buffer yet; NULL on ENOMEM. */
cf__shm *cf__shm_new(void);

/* Frees a future's shared memory.  NULL is ignored. */
void cf__shm_free(cf__shm *shm);

/* Allocates a future for running a call inside a worker process: the
 * cf_value array is copied but bytes/strings are borrowed from `args`,
 * which must outlive the call.  NULL on ENOMEM. */
cf_future *cf__future_new_borrowed(cf_task_fn *fn, const cf_value *args, size_t nargs);

/* Completes a submitted future that an engine marked RUNNING and runs
 * elsewhere (another process): takes ownership of `heap` (the result's
 * bytes when they did not fit inline, copied into place here otherwise)
 * and `failure`.  Returns CF_OK or CF_EINVALSTATE (already done; nothing
 * taken). */
int cf__future_complete_remote(cf_future *f, int status, const cf_value *result, void *heap,
                               cf_failure *failure);
/* The same for an engine in which one thread starts (cf__future_start_call)
 * and completes every call, and nothing else completes them (the MPI
 * manager): f's lock is taken only if f is hooked ("Lock-free
 * completion", future.c).  Same ownership and returns. */
int cf__future_complete_owned(cf_future *f, int status, const cf_value *result, void *heap,
                              cf_failure *failure);
/* Like cf__future_complete_remote() with a result whose bytes live in the
 * shared buffer *buf, which the future adopts (*buf is cleared; it goes
 * back to `cache`, which may be NULL, when the future is freed; `fd_held`
 * says its descriptor was counted by cf__bufcache_hold_fd()).  On
 * CF_EINVALSTATE (already done) or CF_ENOMEM the caller keeps the buffer
 * and the count. */
int cf__future_complete_mapped(cf_future *f, const cf_value *result, cf__buf *buf,
                               cf__bufcache *cache, bool fd_held);

/* Like cf__future_fail() but also completes a RUNNING submitted future
 * (the engine that runs it gives up on it: a crashed worker). */
int cf__future_fail_running(cf_future *f, int status, const char *type, const char *message);

/* Completes `f` with a failure made by the library (for example a broken
 * pool).  `status` is what cf_future_result() will return.  Returns CF_OK
 * or CF_EINVALSTATE if already done.  On ENOMEM for the record, the future
 * still completes with a static fallback record. */
int cf__future_fail(cf_future *f, int status, const char *type, const char *message);

static inline cf_future *cf__future_of_call(const cf_call *c)
{
    return (cf_future *)((char *)c - offsetof(cf_future, call));
}

/* The copied arguments, stored right after the future. */
static inline cf_value *cf__call_args(const cf_call *c)
{
    return (cf_value *)(cf__future_of_call(c) + 1);
}

static inline cf_future *cf__future_of_qnode(cf__qnode *n)
{
    return (cf_future *)((char *)n - offsetof(cf_future, qnode));
}

static inline uint32_t cf__state_of(const cf_future *f)
{
    return atomic_load_explicit(&((cf_future *)f)->state, memory_order_acquire) &
           CF__STATE_MASK;
}

static inline bool cf__state_done(uint32_t s)
{
    return s >= CF_CANCELLED;
}

/* Sets CF__HOOKED in f's state unless f is done, and returns the state
 * (CF__STATE_MASK bits; acquire).  f's lock held.  If the result is not
 * final, f cannot become done before that lock is released: whoever links
 * a waiter, adds a callback, or needs f's engine alive while it holds the
 * lock calls this first, and treats f as done when it says so. */
uint32_t cf__future_hook_locked(cf_future *f);

/* Links `node` at the head of f's waiter list / unlinks it.  f's lock
 * held, and cf__future_hook_locked() said f is not done. */
static inline void cf__wnode_link(cf_future *f, cf__wnode *node)
{
    node->prev = NULL;
    node->next = f->waiters;
    if (f->waiters)
        f->waiters->prev = node;
    f->waiters = node;
}

static inline void cf__wnode_unlink(cf_future *f, cf__wnode *node)
{
    if (node->prev)
        node->prev->next = node->next;
    else
        f->waiters = node->next;
    if (node->next)
        node->next->prev = node->prev;
}

/* Cancellation descriptors (cancel_fd.c).  cf__cancel_fd_fire() makes
 * the descriptor of f's running call readable, if it has one (after `stop`
 * was set); cf__cancel_fd_fire_pool() those of every call whose pool flag
 * is `pool_stop` (after the flag was raised); cf__cancel_fd_end() closes
 * f's when its call returns (the thread that ran it). */
void cf__cancel_fd_fire(cf_future *f);
void cf__cancel_fd_fire_pool(const _Atomic bool *pool_stop);
void cf__cancel_fd_end(cf_future *f);

/* Continuations (compose.c).  Runs the inline continuation jobs queued on
 * this thread's trampoline, if this thread is inside one; returns whether
 * it ran any.  Called by every wait before it blocks: those jobs could
 * otherwise only run after the wait, which may be waiting for them. */
bool cf__then_run_queued(void);
/* Tests only: called by a continuation's job on an executor right after
 * it submitted the call and before it publishes it to the derived
 * future's callbacks (NULL in programs). */
extern void (*_Atomic cf__test_hook_then_submitted)(cf_future *derived, cf_future *inner);
/* cf_future_interrupt() of a future with no call of its own: if it is the
 * derived future of a continuation on an executor (cf_then() with an
 * executor), the interrupt goes to the call that continuation submitted,
 * or, before it has submitted one, cancels the derived future.  Returns
 * CF_OK, CF_EDONE, or 1 when f is no such future (compose.c). */
int cf__then_interrupt(cf_future *f);
/* Calls visit(arg, ctx) under f's lock for the first of f's pending
 * done-callbacks whose function is fn; returns whether there was one.
 * `visit` must not call into f. */
bool cf__future_visit_callback(cf_future *f, cf_done_fn *fn, void (*visit)(void *arg, void *ctx),
                               void *ctx);

/* ---- progress counts (progress.c) ---------------------------------------
 *
 * One block per executor and one per map iterator.  Writers are the
 * threads that submit and complete futures (future.c counts every end of
 * a counted future before the end shows, and a start just after it shows,
 * before the task runs); readers copy them with cf__counts_read() from
 * any thread.
 *
 * Shards: the counts of submitted, begun and ended calls are kept in
 * CF__COUNT_SHARDS shards, each on cache lines of its own, and a reader
 * sums them.  A thread counts in the shard of its own index
 * (cf__count_shard_ix()), so the threads of one pool, which count for
 * every call, do not pass one line back and forth (profiled with all
 * calls of a bench in flight: about an eighth of the samples sat on that
 * line's increments).  Shards 0 .. CF__COUNT_OWNED-1 have one owner
 * thread at a time: a thread claims a free one the first time it counts
 * (a bit in a process-wide mask, taken with an acquire CAS) and gives it
 * back as it exits (a release: the next owner sees its last counts), so
 * only the owner ever writes that shard's counters, and it adds with a
 * plain load and a release store, no read-modify-write (cf__count_bump).
 * Threads that find every owned shard taken (more than CF__COUNT_OWNED
 * threads counting at once: workers of several pools, submitters,
 * managers) are spread round-robin over the shared shards that follow,
 * where they add with release read-modify-writes.
 *
 * What is counted: `started`, calls that turned RUNNING, and `ended`, by
 * outcome and by whether the call had begun ([1]) or not ([0]) when it
 * ended.  So a call is counted once as it begins and once as it ends - a
 * single increment each, in the shard of whichever thread makes the
 * change - and the reader derives
 *     running = sum(started) - sum(ended[1][*]).
 *
 * Orderings: every change is a release store (by the shard's owner, so
 * the value a reader loads includes every earlier change of that counter)
 * or a release read-modify-write (the shared shard), and a reader
 * loads `ended` of every shard, then `started` of every shard, then
 * `ended[1]` of every shard again, all with acquire; it reports the ends
 * of the first read and
 *     running = sum(started) - sum(ended[1][*] of the second read)
 * (0 if negative).  A call's start happens before its end (the end is
 * counted by the thread that ran it, or under the future's lock after
 * the start was counted under it), so a call whose end the first read saw
 * has its start in `started` and its end in the second read: no call
 * counts both as running and as ended.  The second read is what keeps
 * `running` to calls that were running: with the first alone, every call
 * that began and ended while the reader was between its loops (a
 * preempted reader: 368,952 "running" on a 2-thread pool) counted as
 * running.  With it, `running` counts only calls begun before the
 * second read started and not ended when it read their shard, so calls
 * running at that moment; one that began after `started` was read and
 * ended before the second read counts in neither (the difference is
 * then smaller, at worst negative, hence the 0).  Each shard's counts
 * only grow, so the sums, as read by one thread, never go back either.
 * `submitted` is bumped (in the submitter's shard) once the engine has
 * accepted the call - after the hand-off, because the front must not
 * touch the executor again when the engine refuses (a destroy may be
 * freeing it by then) - so a fast worker may end a call before its submit
 * is counted.  (A batch that an engine makes piece by piece, submit_made,
 * is counted a piece at a time as it is made: accepted already, the
 * executor kept alive by the engine's lock.)  The reader loads it
 * relaxed (it orders nothing), and
 * reports max(submitted, ended + running, `reported`): every call running or ended was accepted, so each is a
 * count of calls accepted by then, and `reported` (the largest value any
 * reader reported, raised with a CAS by readers only) keeps the result
 * from going back from one reader to the next (ended + running is at
 * most sum(ended[0]) + sum(started), which only grows, but two readers
 * may see it at different points).  So any snapshot satisfies
 *     succeeded + failed + cancelled + running <= submitted,
 * and no count but `running` ever goes back.
 * The blocks live inside structures allocated with
 * plain malloc (16-byte aligned), so nothing here is _Alignas(64):
 * instead each part is 128 bytes long and its counters fill at most its
 * first 64, which keeps the counters of two parts off any common line
 * whatever the alignment. */
#define CF__COUNT_OWNED 8
#define CF__COUNT_SHARDS 12

/* The outcomes, second index of cf__count_shard.ended. */
enum { CF__COUNT_SUCCEEDED, CF__COUNT_FAILED, CF__COUNT_CANCELLED };

typedef struct cf__count_shard {
    _Atomic uint64_t started;
    _Atomic uint64_t ended[2][3]; /* [had begun][CF__COUNT_*] */
    _Atomic uint64_t submitted;
    char pad_[128 - 8 * sizeof(uint64_t)];
} cf__count_shard;

typedef struct cf__counts {
    _Atomic uint64_t reported;
    char pad_[128 - sizeof(uint64_t)];
    cf__count_shard shard[CF__COUNT_SHARDS];
} cf__counts;

/* Tests only: called by cf__counts_read() between its first read of
 * the ended counts and its read of the started ones (NULL in programs). */
extern void (*_Atomic cf__test_hook_counts_read)(void);

/* The calling thread's shard (0 .. CF__COUNT_SHARDS-1): one it owns
 * (below CF__COUNT_OWNED), or a shared one. */
unsigned cf__count_shard_ix(void);

/* Adds n to counter `c` of shard `shard`, which must be
 * cf__count_shard_ix() of the calling thread: in a shard it owns, a plain
 * load and a release store (nobody else writes it); in a shared one, a
 * release read-modify-write. */
static inline void cf__count_bump(_Atomic uint64_t *c, unsigned shard, uint64_t n)
{
    if (CF__LIKELY(shard < CF__COUNT_OWNED))
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                              memory_order_release);
    else
        atomic_fetch_add_explicit(c, n, memory_order_release);
}

void cf__counts_init(cf__counts *c);
void cf__counts_read(cf__counts *c, cf_progress *out);

/* A call made for its owner is about to go to the engine: its state
 * changes count from now on (f->counted).  Before the engine sees f, no
 * lock needed. */
void cf__progress_mark(cf_future *f);
/* The same for a map's counts too (f->in_map, user_data = c). */
void cf__progress_map_mark(cf__counts *c, cf_future *f);
/* The engine accepted n calls (the caller still holds the executor, or
 * the map, alive). */
static inline void cf__progress_accepted(cf__counts *c, size_t n)
{
    unsigned shard = cf__count_shard_ix();
    cf__count_bump(&c->shard[shard].submitted, shard, n);
}
/* The engine refused a marked future: unless it is already done, it
 * stops counting.  Touches only the future.  Any thread. */
void cf__progress_unmark(cf_future *f);
/* Is the calling thread the progress callback's timer thread of `ex`? */
bool cf__progress_on_ticker(cf_executor *ex);
/* cf_executor_destroy() and the exit handler, once every call has ended:
 * gives the progress callback a last look and stops its thread (not
 * called from it). */
void cf__progress_end(cf_executor *ex);

/* Is `f` a live future handle (not NULL, magic intact)? */
bool cf__future_live(const cf_future *f);

/* Did the future end with a failure (not cancelled, not success)?  Valid
 * once it is done. */
static inline bool cf__future_failed(const cf_future *f)
{
    return cf__state_of(f) == CF_FINISHED && f->status != CF_OK;
}

/* ---- waiters (wait.c) -----------------------------------------------------
 *
 * A waiter is installed on many futures at once; a future completing calls
 * cf__waiter_notify() with its own lock held, which is what keeps the
 * waiter's memory alive (the waiting thread must take every future's lock
 * to unlink itself before it can leave). */
void cf__waiter_notify(struct cf__waiter *w, cf_future *f);

/* Completion queues (cq.c) defer the write that wakes an event loop until
 * the completing thread has dropped the future's lock, so the loop thread
 * does not wake straight into that lock: a notify counts the poke in
 * cf__cq_ndeferred (this thread's pokes not yet written), and
 * complete_locked() calls cf__cq_flush_pokes() right after it drops the
 * lock whenever that is not 0.  Thread-local, no ordering. */
extern _Thread_local int cf__cq_ndeferred;
void cf__cq_flush_pokes(void);
/* Tests only: called before each deferred poke, to widen the window in
 * which the queue may be popped and destroyed (NULL in programs). */
extern void (*_Atomic cf__test_hook_before_poke)(void);

/* Tests only: how long cf_process_pool_new() waits for the first
 * CF_START_FORK workers to be forked, in ns; 0 (programs) keeps the
 * default (process_pool.c, FIRST_FORKS_WAIT_NS).  Relaxed. */
extern _Atomic int64_t cf__test_first_forks_wait_ns;

/* ---- executors ------------------------------------------------------------ */

/* ---- map chunks (map.c) ---------------------------------------------------
 *
 * An eager map over arrays, on an engine that runs a chunk's calls as one
 * unit (submit_chunk: the MPI engine, which sends a chunk as one frame and
 * starts all its calls together), hands each chunk over as one object
 * instead of n futures: one allocation holding the n copied argument
 * tuples and n outcome records, one state word and a reference count.
 * (Every map element as a future cost the parent ~250 ns of CPU per
 * element - each of 500,000 futures of 264 bytes cold in each pass - where
 * a chunk costs a few ns per element: docs/design.md, "Cost per element".)
 *
 * Life: PENDING -> RUNNING (cf__chunk_start, by the engine, a CAS that
 * loses to a cancel) -> DONE (cf__chunk_finish, once every record is
 * written); or PENDING -> CANCELLING -> CANCELLED (cf__chunk_cancel, any
 * thread: the count is written in between, so whoever sees the chunk
 * final sees it counted).  The
 * state word is the only shared field that changes: the records are
 * written by the one thread that starts and finishes the chunk (the
 * engine's manager) before its release exchange to DONE, and read by the
 * map's thread after an acquire load that saw DONE.  CF__CHUNK_SLEEPER is
 * set (CAS) by the map's thread before it sleeps on the word (futex);
 * finish and cancel wake it if they replaced a word with the bit.
 * Counting (see progress): a chunk counts its n calls as started just
 * after its start shows, and as ended (by outcome) just before its end
 * shows, in its executor's and its map's counts; the map's count block is
 * held by every chunk until it is freed, so a chunk left running when its
 * map closed still counts.
 * References: the map's (until it reads past the chunk or closes), the
 * engine's (until the chunk is done or cancelled), and one per frame in
 * flight that borrows its argument bytes (cf__chunk_retain). */
#define CF__CHUNK_PENDING 0u
#define CF__CHUNK_RUNNING 1u
#define CF__CHUNK_CANCELLING 2u /* a cancel won, its count not yet written */
#define CF__CHUNK_DONE 3u        /* final states from here on */
#define CF__CHUNK_CANCELLED 4u
#define CF__CHUNK_STATE 0x7u
#define CF__CHUNK_SLEEPER 0x8u

typedef struct cf__chunk_rec {
    int status;            /* CF_OK, CF_ETASK or a library error */
    cf_value result;       /* CF_OK: the value; bytes in `heap` */
    void *heap;            /* owns the result's bytes, if any */
    cf_failure *failure;   /* owned (unless static), else NULL */
} cf__chunk_rec;

typedef struct cf__chunk {
    _Atomic uint32_t state; /* CF__CHUNK_* (see above) */
    _Atomic uint32_t refs;  /* acq_rel decrements: the last frees */
    cf_executor *owner;     /* its counts; alive while the chunk is held */
    void *map;              /* the map's count block (map.c), held */
    cf_task_fn *fn;
    uint32_t n, nargs;
    cf__chunk_rec *recs;    /* [n], written before DONE */
    cf_value *args;         /* [n * nargs], their bytes after them */
    size_t mem;             /* bytes of the block (cf__chunk_mem_get) */
} cf__chunk;

/* PENDING -> RUNNING; true if it won (false: cancelled).  Counts the n
 * calls as started.  The engine's thread. */
CF__API bool cf__chunk_start(cf__chunk *c);
/* Every record written: the ends counted, DONE, the map woken.  The
 * thread that started it. */
CF__API void cf__chunk_finish(cf__chunk *c);
/* Writes the same failure into every record (a broken pool, a frame that
 * could not be sent) and finishes; a pending chunk is started first (a
 * cancelled one is left alone).  The engine's thread. */
CF__API void cf__chunk_fail(cf__chunk *c, int status, const char *type, const char *msg);
/* PENDING -> CANCELLED, counted, the map woken; true if it won.  Any
 * thread. */
CF__API bool cf__chunk_cancel(cf__chunk *c);
static inline cf__chunk *cf__chunk_retain(cf__chunk *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}
/* Drops a reference; NULL is ignored. */
CF__API void cf__chunk_release(cf__chunk *c);
/* Memory for a chunk of `size` bytes (future.c): a block kept from an
 * earlier chunk if one fits (*cap its real size), else malloc; NULL when
 * out of memory.  cf__chunk_mem_put() keeps the block (within
 * cf_set_future_cache_limit(), with the future blocks) or frees it. */
void *cf__chunk_mem_get(size_t size, size_t *cap);
void cf__chunk_mem_put(void *p, size_t cap);

/* The table of operations an engine implements.  The front end
 * (executor.c) validates arguments, copies them into a future and calls the
 * engine; new engines (processes, MPI) plug in here without touching
 * future.c, wait.c or map.c. */
typedef struct cf__engine {
    const char *name;
    /* Engines whose workers live in another address space refuse CF_PTR. */
    bool copies_args;
    /* Takes a new reference-counted future (the engine owns one reference
     * from here on, even on failure) and schedules it.  Returns CF_OK or
     * CF_ESHUTDOWN / CF_EBROKEN / CF_ENOMEM / CF_ESYS, having recorded a
     * message; on failure the future was not scheduled. */
    int (*submit)(cf_executor *ex, cf_future *f);
    /* Stops accepting work; cancels queued work if asked; waits if asked.
     * Returns CF_OK or CF_EDEADLK (wait requested from a worker). */
    int (*shutdown)(cf_executor *ex, bool wait, bool cancel_futures);
    /* Is the calling thread one of this executor's workers? */
    bool (*is_worker)(const cf_executor *ex);
    int (*worker_count)(const cf_executor *ex);
    /* Optional (NULL: not supported).  Submits n futures as one unit that
     * a worker runs together (map's chunksize); same contract as submit
     * for each future. */
    int (*submit_batch)(cf_executor *ex, cf_future **fs, size_t n);
    /* Optional.  Schedules n futures as n separate calls, all or none
     * (cf_submit_many, and a map's chunks when there is no submit_batch),
     * each by its own priority; on failure the engine released all n of its
     * references and none was scheduled. */
    int (*submit_many)(cf_executor *ex, cf_future **fs, size_t n);
    /* Optional, preferred by cf_submit_many (for engines without
     * new_call).  The same as submit_many, but the calls are made while
     * the first are already running: fs[0..n) are blocks the front
     * reserved (cf__future_reserve).  The engine admits all n at once, all
     * or none (submit_many's errors), then for each piece fs[k..k+m) in
     * order calls make(ctx, fs, k, m), which turns those blocks into
     * futures (default priority, the engine's reference and, when `slots`,
     * each a queue slot, taken already), counts them as submitted and
     * cannot fail, and schedules the piece.  On failure make was never
     * called, nothing was scheduled, and the engine gave the n slots
     * back (when `slots`) before it let go of what keeps the executor
     * alive. */
    int (*submit_made)(cf_executor *ex, cf_future **fs, size_t n, bool slots,
                       void (*make)(void *ctx, cf_future **fs, size_t k, size_t m), void *ctx);
    /* Optional.  Takes a map chunk (see cf__chunk; the engine owns one
     * reference from here on, and has let go of it on failure) and runs
     * its calls as one unit: all start together, when it starts.  Same
     * errors as submit_batch. */
    int (*submit_chunk)(cf_executor *ex, cf__chunk *c);
    /* Optional.  Stops the running call of `f` (cf_future_interrupt). */
    void (*interrupt)(cf_executor *ex, cf_future *f);
    /* Optional.  terminate_workers (kill false) / kill_workers (true);
     * called after shutdown(false, true). */
    void (*stop_workers)(cf_executor *ex, bool kill);
    /* Optional.  Makes the future for a validated call when the engine has
     * a better place for big arguments than the heap (a process pool
     * writes them straight into shared memory).  Returns NULL to use the
     * usual allocation. */
    cf_future *(*new_call)(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                           size_t payload);
    /* Frees the engine's memory; called once, after a waited shutdown. */
    void (*destroy)(cf_executor *ex);
    /* Takes queued calls in cf__future.priority order.  When false the
     * front refuses a priority other than the default (CF_ENOTSUP). */
    bool orders_by_priority;
} cf__engine;

#define CF__EXECUTOR_MAGIC 0x43464558u /* "CFEX" */

/* Backpressure: the bound on an executor's queued calls (max_queued).
 * The front (executor.c) takes a slot per call before it hands the call to
 * the engine (cf__bound_acquire); the slot goes back exactly once, through
 * cf__slot_release(), when a worker takes the call, when it is cancelled
 * while queued (future.c), when the engine drops it (shutdown, breakage)
 * or when the engine refuses it.  Lock-free: `queued` is only changed by
 * compare-and-swap (acquire) and subtraction (release).  Waiters for room
 * sleep on the futex word `seq`, which every release seen with waiters
 * present, and cf__bound_close(), bump (see cf__bound_acquire for the
 * liveness argument). */
typedef struct cf__bound {
    size_t max;                /* 0: no bound; set by the engine's
                                * constructor before the executor is
                                * handed out, constant afterwards */
    _Atomic size_t queued;     /* slots held */
    _Atomic uint32_t seq;      /* futex word of the waiters */
    _Atomic uint32_t waiters;  /* threads in cf__bound_acquire's wait */
    _Atomic bool closed;       /* shutdown or broken: nobody waits any more */
    _Atomic int close_status;  /* CF_ESHUTDOWN or CF_EBROKEN; set before
                                * `closed` */
} cf__bound;

/* Thread pool, tests only (see "Short calls" in thread_pool.c): the
 * wake-ups its submits and its workers left out so far, the calls its
 * sentry took up, whether calls count as short now and whether a sentry
 * is watching.  All 0 and false for another engine.  And, when
 * cf__test_hook_short_calls is true, every look of a sentry counts calls
 * as short, however few it saw taken (false in programs). */
typedef struct cf__short_calls {
    unsigned submit_skips;
    unsigned worker_skips;
    unsigned rescues;
    unsigned slips; /* pauses of trailing workers ("Trailing a submitter") */
    bool quick;
    bool watching;
} cf__short_calls;
cf__short_calls cf__thread_pool_short_calls(const cf_executor *ex);
/* A worker may pause as trailing only after taking this many calls
 * without finding the queues empty (thread_pool.c, "Trailing a
 * submitter"). */
#define CF__SLIP_RUN 64
extern _Atomic bool cf__test_hook_short_calls;

struct cf_executor {
    uint32_t magic;
    const cf__engine *engine;
    unsigned generation;          /* cf__fork_generation at creation */
    _Atomic uint32_t refs;        /* owner, exit handler, map iterators */
    _Atomic bool destroyed;
    /* Progress (progress.c): the counts, and the progress callback's
     * timer, which `ticker_mu` guards (NULL: no callback thread). */
    cf__counts counts;
    pthread_mutex_t ticker_mu;
    struct cf__ticker *ticker;
    /* Guarded by the registry mutex (executor.c): */
    cf_executor *reg_prev, *reg_next;
    cf__bound bound;
};

/* Takes `n` slots of ex's bound for calls about to be handed to the
 * engine, waiting for room until `deadline_ns` (absolute monotonic,
 * CF__NS_FOREVER for none; a past one does not wait).  *took says whether
 * slots were taken: not when the executor has no bound, nor when it was
 * closed before any wait (the engine then refuses the calls with the
 * right error).  *ref says the call waited and holds a reference to `ex`,
 * which the caller drops (cf__executor_unref) once the engine has the
 * calls, or has refused them.  Returns CF_OK, CF_EFULL (n > max, no room
 * by the deadline, or no room and the caller is one of the executor's
 * workers) or the close status (closed while waiting: then `ex` must not
 * be touched any more), with `who` in the message. */
int cf__bound_acquire(cf_executor *ex, size_t n, int64_t deadline_ns, const char *who,
                      bool *took, bool *ref);

/* Gives back `n` slots and wakes the waiters for room. */
void cf__bound_release(cf_executor *ex, size_t n);

/* The executor shut down (`status` CF_ESHUTDOWN) or broke (CF_EBROKEN):
 * wakes every waiter for room, which returns `status`, and no submit
 * waits any more.  Engines call it after making submits refuse. */
void cf__bound_close(cf_executor *ex, int status);

/* Gives back f's slot if it still holds one (at most once, whoever calls
 * it first).  Cheap when the executor has no bound: one relaxed load.
 * The caller guarantees f->owner is alive: a worker or the engine holding
 * the call, or cancel() with f's lock held while it is still pending. */
static inline void cf__slot_release(cf_future *f)
{
    if (atomic_load_explicit(&f->slot, memory_order_relaxed) &&
        atomic_exchange_explicit(&f->slot, false, memory_order_relaxed))
        cf__bound_release(f->owner, 1);
}

/* Set by a thread-pool worker around each call: the flag that
 * cf_terminate_workers() raises for that pool (NULL elsewhere). */
extern _Thread_local const _Atomic bool *cf__current_pool_stop;

/* Task registry (registry.c).  The name's storage lives as long as the
 * process.  cf__task_lookup returns NULL when unknown. */
cf_task_fn *cf__task_lookup(const char *name, size_t len);
/* What to do about fn, for which cf_task_name() returned NULL: register
 * it, or rename one of the two functions whose name clashed.  A string in
 * this thread's storage, valid until the next call. */
const char *cf__task_unregistered_hint(cf_task_fn *fn);

/* map's chunking.  cf__prepare_call validates fn(args...) as cf_submit()
 * does and copies it into a new future (one reference, owned by the
 * caller) without scheduling it; its error messages name `who`.  cf__submit_prepared then hands n such
 * futures to the engine - as one unit (a chunk that one worker runs) when
 * as_chunk is set and the engine has submit_batch; else, when as_chunk is
 * set and it has submit_many, as separate calls in pieces of as many as
 * its bound has room for; else one by one - adding the engine's own
 * references.  On
 * error nothing of the n stays scheduled (some may have been cancelled);
 * the caller still owns its references. */
int cf__prepare_call(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                     int priority, cf_future **out, const char *who);
/* cf__prepare_call() in two parts, for the calls of a map, which share
 * ex, fn and nargs: cf__check_calls checks what does not depend on the
 * argument values (once per chunk: the executor's state is checked there
 * too), cf__prepare_checked the values, and makes the future. */
int cf__check_calls(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs);
int cf__prepare_checked(cf_executor *ex, cf_task_fn *fn, const cf_value *args, size_t nargs,
                        int priority, cf_future **out);
/* `space_deadline_ns`: how long to wait for room in a bounded queue (see
 * cf__bound_acquire); CF_EFULL when none came.  The n futures must be as
 * the prepare functions made them: one reference, known to no other
 * thread (the engine's references are then set with a plain store). */
int cf__submit_prepared(cf_executor *ex, cf_future **fs, size_t n, bool as_chunk,
                        int64_t space_deadline_ns);
/* Tests only: called when the calls of a cf_submit_many() or a map go to
 * the engine one by one, after each call the engine took, to open the
 * window before the next (NULL in programs). */
extern void (*_Atomic cf__test_hook_after_submit)(cf_executor *ex, cf_future *f);
/* Tests only: called by cf_submit() right after the engine refused the
 * call, before the front lets go of it (NULL in programs). */
extern void (*_Atomic cf__test_hook_submit_refused)(cf_executor *ex);

/* Checks a priority (cf_submit_options, cf_map_options) for `ex`: CF_OK,
 * CF_EINVAL (out of range) or CF_ENOTSUP (the engine does not order
 * calls), with `who` in the message. */
int cf__check_priority(const cf_executor *ex, int priority, const char *who);

/* Results at least this big that a task returns inside a worker process
 * go through cf__big_result_store: the engine that runs the worker loop
 * puts them straight into memory the parent will map, instead of a heap
 * copy that would then be copied again into a frame. */
#define CF__SHM_RESULT_MIN ((size_t)1 << 20)
/* NULL except in a worker process of an engine that has such memory,
 * whose worker loop sets it once before it runs any call (and so before
 * any thread that could read it exists).  Same contract as
 * cf_return_value() for the future of the running call `f`. */
extern int (*cf__big_result_store)(cf_future *f, const cf_value *v);

/* Engines call these from their constructor / destructor. */
void cf__executor_register(cf_executor *ex, const cf__engine *engine);
void cf__executor_ref(cf_executor *ex);
void cf__executor_unref(cf_executor *ex);

/* Exported from the shared library (but not public API) for the engines
 * built as libraries of their own (cfutures-mpi): these declarations add
 * default visibility to the definitions above. */
CF__API int cf__fail(int err, const char *fmt, ...);
CF__API void cf__log(const char *fmt, ...);
CF__API int64_t cf__now_ns(void);
CF__API void cf__set_thread_name(const char *full);
CF__API cf_failure *cf__failure_new(int code, const char *type, const char *message);
CF__API void cf__failure_free(cf_failure *f);
CF__API cf_failure *cf__failure_oom(void);
CF__API bool cf__failure_is_static(const cf_failure *f);
CF__API cf_future *cf__future_new_borrowed(cf_task_fn *fn, const cf_value *args, size_t nargs);
CF__API void cf__future_run_call(cf_future *f, _Atomic unsigned *ended);
CF__API void cf__future_run_private(cf_future *f);
CF__API int cf__future_start_call(cf_future *f);
CF__API int cf__future_complete_owned(cf_future *f, int status, const cf_value *result,
                                      void *heap, cf_failure *failure);
CF__API int cf__future_complete_remote(cf_future *f, int status, const cf_value *result,
                                       void *heap, cf_failure *failure);
CF__API int cf__future_fail_running(cf_future *f, int status, const char *type,
                                    const char *message);
CF__API cf_task_fn *cf__task_lookup(const char *name, size_t len);
CF__API void cf__executor_register(cf_executor *ex, const cf__engine *engine);
CF__API void cf__executor_unref(cf_executor *ex);
CF__API void cf__cancel_fd_fire(cf_future *f);

/* Is `ex` a live executor handle (not NULL, not destroyed and freed)? */
static inline bool cf__executor_live(const cf_executor *ex)
{
    return ex && ex->magic == CF__EXECUTOR_MAGIC;
}

/* Was `ex` made in an ancestor process (and so has no workers here)? */
static inline bool cf__executor_inherited(const cf_executor *ex)
{
    return ex->generation != atomic_load_explicit(&cf__fork_generation,
                                                  memory_order_relaxed);
}

#endif
