/* SPDX-License-Identifier: MIT */
/*
 * cfutures.h - run this in parallel and give me the result.
 *
 * The whole public API of cfutures: futures, executors (engines), submit,
 * map, wait and as_completed, modelled on Python's concurrent.futures.
 *
 * Conventions that hold for every function below unless its comment says
 * otherwise:
 *
 *   - Functions that can fail return an int: CF_OK (0) on success or a
 *     negative cf_error code.  When a call fails, a message with the details
 *     ("wait: 2 (of 4) futures unfinished") is kept for the calling thread
 *     and can be read with cf_last_error_message().
 *   - Timeouts are in seconds as a double.  0 means "do not block", a
 *     positive value is a limit measured from the start of the call, and
 *     CF_FOREVER means no limit.  A negative or NaN timeout is CF_EINVAL.
 *   - Handles (cf_future, cf_executor, iterators) are opaque.  Borrowed
 *     pointers stay valid for as long as the text says; owned ones are
 *     released with the function named in the text.
 *   - "Any thread" means the function is thread-safe on the same handle.
 *   - Options structs are filled with their _init() function first; fields
 *     may be added in later versions, so never initialise them by position.
 */
#ifndef CFUTURES_H
#define CFUTURES_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfutures_version.h"

#ifdef __cplusplus
#include <initializer_list>
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Version
 *
 * cfutures_version.h, generated from the build's project version, defines
 * CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH, CF_VERSION_STRING
 * ("0.1.0") and CF_VERSION_HEX (0x000100 for 0.1.0; compare it with
 * CF_VERSION_NUM(major, minor, patch)): the version of the headers a
 * program was compiled with.  The functions below give the version of the
 * library it runs with, which may be newer.  ABI policy: see README.
 * ---------------------------------------------------------------------- */

/* The version of the running library, as CF_VERSION_HEX: (major << 16) |
 * (minor << 8) | patch.  Any thread; cannot fail. */
unsigned int cf_version(void);

/* The version of the running library as "MAJOR.MINOR.PATCH", static.  Any
 * thread; never NULL. */
const char *cf_version_string(void);

#if defined(__GNUC__)
#define CF__PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define CF__WARN_UNUSED __attribute__((warn_unused_result))
#else
#define CF__PRINTF(fmt, args)
#define CF__WARN_UNUSED
#endif

/* The null pointer and the casts of the macros and inline functions below,
 * spelled in C++ so that they raise no warning there (-Wold-style-cast,
 * -Wzero-as-null-pointer-constant). */
#ifdef __cplusplus
#define CF__NULL nullptr
#define CF__CAST(type, value) (static_cast<type>(value))
#else
#define CF__NULL NULL
#define CF__CAST(type, value) ((type)(value))
#endif

/* ------------------------------------------------------------------------
 * Errors of the API itself
 *
 * API errors (bad argument, shut down, timed out, ...) are return codes.
 * A task's own failure - the counterpart of a Python exception raised in
 * the worker - is a cf_failure record stored on its future (see below);
 * asking such a future for its result returns CF_ETASK.
 * ---------------------------------------------------------------------- */

/* The error codes: CF_OK (0) and the negative CF_E* codes functions
 * return.  X(name, value, description): one table generates the enum,
 * cf_strerror() and cf_err_name(). */
#define CF_ERROR_TABLE(X)                                                     \
    X(OK, 0, "success")                                                       \
    X(EINVAL, -1, "invalid argument")                                         \
    X(ENOMEM, -2, "out of memory")                                            \
    X(ETIMEDOUT, -3, "timed out")                                             \
    X(ECANCELLED, -4, "cancelled")                                            \
    X(EINVALSTATE, -5, "invalid state")                                       \
    X(ESHUTDOWN, -6, "executor is shut down")                                 \
    X(EBROKEN, -7, "executor is broken")                                      \
    X(ETASK, -8, "task raised a failure")                                     \
    X(ENOTCOPYABLE, -9, "value cannot be copied to a worker")                 \
    X(ETOOBIG, -10, "payload too large")                                      \
    X(EDONE, -11, "no more items")                                            \
    X(EDEADLK, -12, "operation would deadlock")                               \
    X(ENOTSUP, -13, "not supported by this engine")                           \
    X(ESYS, -14, "system call failed")                                        \
    X(EFULL, -15, "executor queue is full")
typedef enum cf_error {
#define CF__ERROR_ENUM(name, value, text) CF_##name = (value),
    CF_ERROR_TABLE(CF__ERROR_ENUM)
#undef CF__ERROR_ENUM
} cf_error;

/* Static description of an error code ("timed out").  Never NULL; an
 * unknown code gives "unknown error".  Any thread. */
const char *cf_strerror(int err);

/* Symbolic name of an error code ("CF_ETIMEDOUT"), or "CF_UNKNOWN".  Any
 * thread. */
const char *cf_err_name(int err);

/* Details of the most recent failed cfutures call made by the calling
 * thread, for example "submit: executor is shut down".  Successful calls do
 * not clear it.  The string is thread-local and valid until this thread's
 * next failing cfutures call; never NULL (empty if nothing failed yet). */
const char *cf_last_error_message(void);

/* A sink for messages the library cannot return to anyone: a done-callback
 * that failed, an executor that broke in the background.  `msg` is one line
 * without a trailing newline and is only valid during the call: line breaks
 * in the text it quotes (a task's failure type or message, say) come as
 * the two characters \n (or \r), other control characters but tabs as '?'.
 * At most 511 bytes; longer messages are cut. */
typedef void cf_log_fn(void *arg, const char *msg);

/* Installs the log hook (NULL restores the default, which writes to
 * stderr).  The default writes "cfutures: ", the line and a newline.  Any
 * thread.  The hook may be called from any thread, with no cfutures lock
 * held; it must return (not longjmp out, nor end its thread) and must not
 * block for long.  When this returns, the hook it replaced is not running
 * on any thread and will not be called again, so its arg may be freed: it
 * waits for the calls in progress to return.  Called from inside a hook
 * call, it does not wait (that call is itself still running). */
void cf_set_log_hook(cf_log_fn *fn, void *arg);

/* ------------------------------------------------------------------------
 * Timeouts
 * ---------------------------------------------------------------------- */

/* "Wait as long as it takes": pass where a timeout is expected. */
#define CF_FOREVER HUGE_VAL

/* ------------------------------------------------------------------------
 * Values: arguments and results
 *
 * Every engine passes arguments and results as cf_value.  By default a
 * value is *copied*: numbers travel inline; bytes and strings are copied at
 * submit (the caller may free its buffer as soon as submit returns) and the
 * copy belongs to the call.  That is the C counterpart of Python's
 * "arguments must be picklable": a task written against copied values works
 * on every engine, so switching engine is a one-line change.
 *
 * CF_PTR passes a pointer by reference.  It is a convenience of in-process
 * engines (the thread pool); engines whose workers live in another address
 * space refuse it at submit with CF_ENOTCOPYABLE.  What the pointer points
 * to stays the caller's, and the caller synchronises access to it.
 * ---------------------------------------------------------------------- */

typedef enum cf_kind {
    CF_NONE = 0, /* no value (a task that returned nothing) */
    CF_I64,      /* int64_t, in .as.i64 */
    CF_F64,      /* double, in .as.f64 */
    CF_BYTES,    /* .size bytes at .as.bytes */
    CF_STR,      /* NUL-terminated text at .as.str; .size = strlen (a
                  * value whose .size is not its strlen is refused with
                  * CF_EINVAL wherever it enters: submit, initargs,
                  * set_result, the cf_return_* functions) */
    CF_PTR       /* a pointer shared by reference (in-process engines only) */
} cf_kind;

typedef struct cf_value {
    cf_kind kind;
    size_t size; /* CF_BYTES: length; CF_STR: strlen; otherwise 0 */
    union {
        int64_t i64;
        double f64;
        const void *bytes;
        const char *str;
        void *ptr;
    } as;
} cf_value;

/* The largest single CF_BYTES/CF_STR value, and the largest sum of a call's
 * arguments, that cfutures copies: 1 GiB.  Larger ones are CF_ETOOBIG. */
#define CF_PAYLOAD_MAX (CF__CAST(size_t, 1) << 30)

/* The most arguments a call may have. */
#define CF_ARGS_MAX 64

/* Value constructors.  They only describe the value; nothing is copied
 * until the value is handed to submit/map/set_result. */
static inline cf_value cf_none(void)
{
    cf_value v = {CF_NONE, 0, {0}};
    return v;
}
static inline cf_value cf_i64(int64_t x)
{
    cf_value v = {CF_I64, 0, {0}};
    v.as.i64 = x;
    return v;
}
static inline cf_value cf_f64(double x)
{
    cf_value v = {CF_F64, 0, {0}};
    v.as.f64 = x;
    return v;
}
static inline cf_value cf_bytes(const void *data, size_t size)
{
    cf_value v = {CF_BYTES, size, {0}};
    v.as.bytes = data;
    return v;
}
static inline cf_value cf_ptr(void *p)
{
    cf_value v = {CF_PTR, 0, {0}};
    v.as.ptr = p;
    return v;
}
/* `s` must be NUL-terminated; NULL is turned into an empty string. */
cf_value cf_str(const char *s);

/* A printable name for a kind, as Python would name the type: "int",
 * "float", "bytes", "str", "pointer", "NoneType". */
const char *cf_kind_name(cf_kind kind);

/* Argument list helpers for cf_submit():
 *     cf_submit(ex, task, CF_ARGS(cf_i64(323), cf_i64(1235)), &f);
 *     cf_submit(ex, task, CF_NOARGS, &f);
 * CF_ARGS expands to two function arguments: a pointer and a count.  The
 * array lives until the end of the full expression (the cf_submit() call),
 * and each argument is evaluated once, in C and in C++. */
#ifndef __cplusplus
#define CF_ARGS(...)                                                          \
    ((const cf_value[]){__VA_ARGS__}),                                        \
        (sizeof((const cf_value[]){__VA_ARGS__}) / sizeof(cf_value))
#define CF_NOARGS ((const cf_value *)NULL), ((size_t)0)
#else
/* C++ has no compound literals: the values go into a braced
 * std::initializer_list, and cf__cxx_count() counts them in an unevaluated
 * sizeof. */
extern "C++" {
template <typename... T>
char (&cf__cxx_count(const T &...))[sizeof...(T)];
}
#define CF_ARGS(...)                                                          \
    (::std::initializer_list<cf_value>{__VA_ARGS__}.begin()),                 \
        (sizeof(::cf__cxx_count(__VA_ARGS__)))
#define CF_NOARGS static_cast<const cf_value *>(nullptr), static_cast<size_t>(0)
#endif

/* ------------------------------------------------------------------------
 * Failures: what a task raises
 *
 * A cf_failure is the C counterpart of an exception: an integer code the
 * task chose, a type name ("ValueError") and a message.  It is created in
 * the worker, travels to the caller and sits on its future until read.
 * Each future owns its own record; pointers returned below are borrowed
 * from the future and valid while the caller holds a reference to it.
 * ---------------------------------------------------------------------- */

typedef struct cf_failure cf_failure;

/* The code the task raised with, or a cf_error code when the library
 * failed the future (for example CF_EBROKEN for a broken pool).  0 for
 * NULL. */
int cf_failure_code(const cf_failure *failure);
/* The type name, never NULL ("" for NULL). */
const char *cf_failure_type(const cf_failure *failure);
/* The message, never NULL ("" for NULL). */
const char *cf_failure_message(const cf_failure *failure);

/* ------------------------------------------------------------------------
 * Tasks
 *
 * One signature for every engine:
 *
 *     static int square(cf_call *call)
 *     {
 *         int64_t x = cf_arg_i64(call, 0);
 *         return cf_return_i64(call, x * x);
 *     }
 *
 * A task returns 0 for success (with the value set by a cf_return_*()
 * call, or CF_NONE) and anything else for failure.  cf_raise() records a
 * failure with a code, type and message and returns CF_ETASK, so a task
 * ends with `return cf_raise(...)`.  A non-zero return without cf_raise()
 * fails the future with type "TaskError" and the returned code.  Once a
 * failure has been raised, the call fails whatever the task returns.
 *
 * A task must not keep the cf_call pointer, or any argument pointer, after
 * it returns.  All cf_arg_*, cf_return_* and cf_raise functions may be
 * called only by the thread running the task, only during the call.
 * ---------------------------------------------------------------------- */

typedef struct cf_call cf_call;
typedef int cf_task_fn(cf_call *call);

/* Number of arguments of the call. */
size_t cf_arg_count(const cf_call *call);

/* Argument `i`, borrowed for the duration of the call, or NULL when `i`
 * is out of range. */
const cf_value *cf_arg(const cf_call *call, size_t i);

/* Typed argument accessors.  If argument `i` is missing or of another kind
 * they raise a "TypeError" failure on the call (code CF_EINVAL, so
 * cf_failure_code() reads -1; the future fails even if the task goes on
 * and returns 0) and return 0 / 0.0 / "" / NULL.
 * cf_arg_bytes() stores the length in *size when size is not NULL. */
int64_t cf_arg_i64(cf_call *call, size_t i);
double cf_arg_f64(cf_call *call, size_t i);
const char *cf_arg_str(cf_call *call, size_t i);
const void *cf_arg_bytes(cf_call *call, size_t i, size_t *size);
void *cf_arg_ptr(cf_call *call, size_t i);

/* Set the call's result; the last call wins.  Bytes and strings are copied
 * (the task keeps ownership of its buffer).  Return CF_OK, or CF_ENOMEM /
 * CF_ETOOBIG / CF_EINVAL (a CF_STR whose size is not its strlen) after
 * raising a "MemoryError" / "ValueError" failure on the call.
 * cf_return_value() takes any cf_value.  A CF_PTR result cannot leave a
 * process pool's worker: that call (alone) fails with a "TypeError"
 * failure of code CF_ENOTCOPYABLE naming the task. */
int cf_return_none(cf_call *call);
int cf_return_i64(cf_call *call, int64_t x);
int cf_return_f64(cf_call *call, double x);
int cf_return_str(cf_call *call, const char *s);
int cf_return_bytes(cf_call *call, const void *data, size_t size);
int cf_return_ptr(cf_call *call, void *p);
int cf_return_value(cf_call *call, const cf_value *v);

/* Raise a failure on the call: `code` is the task's own (any int),
 * `type` a short type name (NULL means "Exception"), the message is
 * printf-formatted.  A second raise replaces the first.  Always returns
 * CF_ETASK. */
int cf_raise(cf_call *call, int code, const char *type, const char *fmt, ...)
    CF__PRINTF(4, 5);

/* True once the call should stop: cf_future_interrupt() was called on its
 * future, its cf_submit_options timeout has passed, or
 * cf_terminate_workers()/cf_kill_workers() was called on its executor.
 * Tasks that run long in a thread pool poll it and return (for example
 * with cf_raise(call, CF_ECANCELLED, "CancelledError", ...)); a task
 * blocked on I/O can watch cf_cancel_fd() instead.  Only the thread
 * running the task, during the call.  NULL: false. */
bool cf_cancel_requested(const cf_call *call);

/* The full name of the calling thread: for a worker of a thread pool this
 * is "<prefix>_<index>", for example "ThreadPoolExecutor-0_1", kept whole
 * even though the kernel only stores 15 characters.  For other threads it
 * is the kernel's name of the thread ("" in a library built with
 * CF_PORTABLE, where POSIX gives threads no names).  The string is thread-local and
 * valid until the thread exits.  Any thread. */
const char *cf_thread_name(void);

/* ------------------------------------------------------------------------
 * Futures
 *
 * A cf_future is the eventual outcome of one call.  States, as in CPython:
 *
 *   PENDING -> RUNNING -> FINISHED            (ran; result or failure)
 *   PENDING -> CANCELLED -> CANCELLED_AND_NOTIFIED
 *   PENDING -> FINISHED                       (set without running)
 *
 * A future completes exactly once.  Futures are reference counted and
 * thread-safe: every function may be called from any thread.  submit()
 * hands the caller one reference, released with cf_future_release().
 *
 * Deliberate difference from CPython: cf_future_cancel() wakes every
 * waiter (cf_wait, cf_as_completed, result) at once - a cancelled future
 * counts as done immediately, whether or not an executor ever looks at it
 * again.
 * ---------------------------------------------------------------------- */

typedef struct cf_future cf_future;

typedef enum cf_state {
    CF_PENDING = 0,
    CF_RUNNING = 1,
    CF_CANCELLED = 2,
    CF_CANCELLED_AND_NOTIFIED = 3,
    CF_FINISHED = 4
} cf_state;

/* A callback run once when the future completes (finished or cancelled).
 * It runs in the thread that completed the future - a worker thread, or
 * the thread that called cancel()/set_result() - with no cfutures lock
 * held; or immediately in the registering thread when the future is
 * already done.  A non-zero return counts as the callback failing: it is
 * reported through the log hook and the remaining callbacks still run.
 * As in CPython, waiters are woken first: cf_future_result(), cf_wait()
 * and the other waits may return while the callbacks are still running,
 * so what a callback writes is not yet safe to read then; have the
 * callback signal it (an atomic flag, a semaphore) when that matters. */
typedef int cf_done_fn(cf_future *future, void *arg);

/* Name of a state, lowercase as Python prints it ("pending", "running",
 * "cancelled", "finished"). */
const char *cf_state_name(cf_state state);

/* Creates a standalone pending future, for building an engine or for
 * handing results between threads by hand.  *out receives one reference.
 * Returns CF_EINVAL (out NULL) or CF_ENOMEM. */
int cf_future_new(cf_future **out) CF__WARN_UNUSED;

/* Default of cf_set_future_cache_limit(): 64 MiB. */
#define CF_FUTURE_CACHE_DEFAULT (CF__CAST(size_t, 64) << 20)

/* Sets how many bytes of freed future blocks the process keeps for reuse,
 * and returns the previous limit.  Futures of the common size (up to three
 * small arguments) are not returned to malloc when released: each thread
 * keeps up to 1056 KiB of them (given back when the thread exits), and
 * beyond that they go to a process-wide cache of at most `max_bytes`
 * (default CF_FUTURE_CACHE_DEFAULT), from which any thread's next futures
 * are taken.  That memory stays allocated, and resident, until reused; it
 * spares a program that keeps many futures in flight the page faults of
 * a heap trimmed and grown again.  Lowering the limit frees what is kept
 * beyond it at once; 0 keeps nothing beyond the per-thread caches.  Any
 * thread may call it at any time; it never fails.  The same limit covers
 * the memory of an MPI map's chunks (see cf_map_options.chunksize), kept
 * likewise once read.  (Builds with AddressSanitizer keep no blocks at
 * all.) */
size_t cf_set_future_cache_limit(size_t max_bytes);

/* Adds a reference and returns `f` (NULL passes through). */
cf_future *cf_future_retain(cf_future *f);

/* Drops a reference; the last one frees the future, its result and its
 * failure.  Returns CF_OK, or CF_EINVAL for NULL or for a handle that is
 * detectably not a live future (a double release is caught while the
 * memory has not been reused; under AddressSanitizer always). */
int cf_future_release(cf_future *f);

/* Current state.  A snapshot: it may change as soon as it is read.  There
 * is no error value: NULL reads as CF_PENDING, so check pointers first. */
cf_state cf_future_state(const cf_future *f);

/* True if cancelled (CANCELLED or CANCELLED_AND_NOTIFIED).  NULL: false. */
bool cf_future_cancelled(const cf_future *f);
/* True if currently running.  A process pool's call is running once a
 * worker has begun it (not when it is sent to one), until its outcome
 * arrives: a worker runs one call at a time (the calls of a map chunk it
 * has finished read running until the chunk's answer arrives).  NULL:
 * false. */
bool cf_future_running(const cf_future *f);
/* True if finished (with a result or a failure) or cancelled.  NULL:
 * false. */
bool cf_future_done(const cf_future *f);

/* Attempts to cancel.  Returns true if the future is now cancelled (it was
 * pending, or already cancelled); false if it is running or finished.  A
 * process pool's call is pending until a worker begins it, so a call
 * queued on a busy worker can be cancelled; the worker then skips it.  On
 * success, waiters wake and done-callbacks run in the calling thread before
 * it returns.  Never blocks on the task.  NULL: false. */
bool cf_future_cancel(cf_future *f);

/* Waits up to `timeout` for the future and returns its outcome:
 *   CF_OK          *out (if not NULL) points at the result, borrowed from
 *                  the future, valid while the caller holds a reference;
 *   CF_ETASK       the task raised; read it with cf_future_exception();
 *   CF_EBROKEN     the executor broke before or while running the call
 *                  (the failure record says how);
 *   CF_ENOMEM      the executor found no memory to run the call or to
 *                  take its result, and gave up on it (type "MemoryError";
 *                  see cf_process_pool_new() for when a pool breaks so);
 *   CF_ECANCELLED  the future was cancelled;
 *   CF_ETIMEDOUT   not done within `timeout` (the future is unchanged);
 *                  or, with the future done, the call overran its own
 *                  time limit and was stopped (cf_submit_options.timeout
 *                  in a process or MPI pool: type "TimeoutError", read it
 *                  with cf_future_exception()).  cf_future_done() tells
 *                  the two apart: waiting again helps only in the first;
 *   CF_EINVAL      f NULL, or a negative/NaN timeout. */
int cf_future_result(cf_future *f, double timeout, const cf_value **out);

/* Like cf_future_result() for a CF_I64 / CF_F64 result: stores it in *out.
 * A result of another kind returns CF_EINVAL. */
int cf_future_result_i64(cf_future *f, double timeout, int64_t *out);
int cf_future_result_f64(cf_future *f, double timeout, double *out);

/* Waits up to `timeout` and reports the failure, if any, without treating
 * it as an error: returns CF_OK and sets *out to the failure (borrowed, as
 * for result) or to NULL if the call succeeded.  Returns CF_ECANCELLED,
 * CF_ETIMEDOUT or CF_EINVAL as cf_future_result() does. */
int cf_future_exception(cf_future *f, double timeout, const cf_failure **out);

/* Adds a done-callback (see cf_done_fn).  Callbacks run in registration
 * order.  If the future is already done the callback runs now, in this
 * thread, before this returns.  Returns CF_OK, CF_EINVAL (NULL f or fn) or
 * CF_ENOMEM (nothing registered). */
int cf_future_add_done_callback(cf_future *f, cf_done_fn *fn, void *arg);

/* Writes a debug description like Python's repr into buf, truncated to
 * `size` bytes and always NUL-terminated when size > 0:
 *     <Future at 0x55d0c3a0 state=running>
 *     <Future at 0x55d0c3a0 state=finished returned float>
 *     <Future at 0x55d0c3a0 state=finished raised ValueError>
 * Returns the length the full text would have (like snprintf), or CF_EINVAL
 * for a NULL future or a NULL buf with non-zero size. */
int cf_future_format(const cf_future *f, char *buf, size_t size);

/* --- For engine implementers (and hand-made futures) ------------------- */

/* Marks a pending future running and returns 1, or, if it was cancelled,
 * moves it to CANCELLED_AND_NOTIFIED and returns 0 (the caller must then
 * not run the call).  Call it exactly once, before running the call.
 * Returns CF_EINVALSTATE if the future is running or finished, or was
 * already notified, or is a call submitted to an executor that has not
 * begun it (that executor starts it); CF_EINVAL for NULL. */
int cf_future_set_running_or_notify_cancel(cf_future *f);

/* Completes the future with a copy of `v` (NULL means CF_NONE).  Waiters
 * wake and callbacks run in the calling thread.  Returns CF_OK,
 * CF_EINVALSTATE if it is already finished or cancelled, or if it is a
 * submitted future that an executor is running (the executor completes
 * it), CF_ENOMEM / CF_ETOOBIG if the copy could not be made; in every
 * error case nothing changes.  A submitted call that has not begun does
 * not run afterwards (a process pool's worker skips it, as for cancel),
 * and gives its max_queued slot back at once. */
int cf_future_set_result(cf_future *f, const cf_value *v);

/* Completes the future with a failure built from `code`, `type` (NULL
 * means "Exception") and `message` (NULL means "").  Same returns and
 * rules as cf_future_set_result(). */
int cf_future_set_exception(cf_future *f, int code, const char *type,
                            const char *message);

/* ------------------------------------------------------------------------
 * Executors
 *
 * An executor runs submitted calls on its workers.  All engines share the
 * functions in this section; only the constructor differs.  Executor
 * functions may be called from any thread, including from a task or a
 * callback running on the executor itself, except where noted.
 * ---------------------------------------------------------------------- */

typedef struct cf_executor cf_executor;

/* Use the engine's default number of workers. */
#define CF_AUTO (-1)

/* CPUs this process may run on: the affinity mask, further limited by a
 * cgroup CPU quota (v2 cpu.max or v1 cfs quota) rounded up; in a library
 * built with CF_PORTABLE, the CPUs online.  At least 1. */
int cf_usable_cpus(void);

/* The thread pool's default worker count: min(32, cf_usable_cpus() + 4). */
int cf_thread_pool_default_workers(void);

typedef int cf_init_fn(void *arg);

typedef struct cf_thread_pool_options {
    /* Most threads the pool starts: CF_AUTO (the default,
     * cf_thread_pool_default_workers(), sized for calls that block) or
     * >= 1.  Threads start lazily, one per submit that finds no idle
     * thread, and idle ones are reused.  A submit wakes a sleeping worker
     * unless one is already looking for work, and a worker that takes a
     * call while more are queued wakes another, so that calls that block
     * do not wait for each other.  Each wake-up costs microseconds, more
     * than a tiny call, so while the pool's calls are short (each awake
     * worker takes one per 10 us or faster) a submit of at most 16 calls
     * from a thread outside the pool while a worker is awake, or a worker
     * that takes a call with at most 16 more queued, leaves the wake-up
     * out (16 in a row at most), and one sleeping worker looks at the
     * queues every 0.5 ms instead: a call queued behind one that
     * unexpectedly blocks then starts up to about 1 ms late.  Calls that
     * block are not short and get every wake-up.  (On 2 CPUs, bursts of
     * 4-16 tiny calls took 2.5-33x less per call than with every wake-up;
     * bench/README.md, "Short calls: wake-ups left out".) */
    int max_workers;
    /* Thread names are "<prefix>_<index>".  NULL (the default) or ""
     * means "ThreadPoolExecutor-<n>", n counting the pools this process
     * made.
     * Copied; the caller keeps ownership of the string. */
    const char *thread_name_prefix;
    /* Run once in each new worker thread before it takes work.  A non-zero
     * return breaks the pool: every queued future fails with CF_EBROKEN
     * and later submits return CF_EBROKEN.  NULL for none. */
    cf_init_fn *initializer;
    void *initarg;
    /* The most calls queued (submitted, not yet taken by a worker nor
     * cancelled) at once; 0 (the default) for no bound.  A submit that
     * finds the queue full waits for room or returns CF_EFULL (see
     * cf_submit()); the queue never grows past it. */
    size_t max_queued;
} cf_thread_pool_options;

/* Fills `opts` with the defaults.  NULL is ignored. */
void cf_thread_pool_options_init(cf_thread_pool_options *opts);

/* Creates a thread pool.  `opts` NULL means defaults.  *out receives the
 * executor, owned by the caller, who must cf_executor_destroy() it.
 * Returns CF_EINVAL (out NULL, max_workers 0 or below -1, prefix longer
 * than 64 bytes) or CF_ENOMEM.  No thread starts until the first submit. */
int cf_thread_pool_new(cf_executor **out, const cf_thread_pool_options *opts)
    CF__WARN_UNUSED;

/* Schedules fn(args...) and returns its future in *out (one reference,
 * owned by the caller).  Arguments are copied before this returns (CF_PTR
 * values are passed through as pointers).  Errors create no future and
 * leave *out NULL:
 *   CF_EINVAL        ex/fn/out NULL, args NULL with nargs > 0, nargs >
 *                    CF_ARGS_MAX, an argument with an unknown kind, or a
 *                    CF_STR whose size is not its strlen;
 *   CF_ETOOBIG       an argument, or all together, exceed CF_PAYLOAD_MAX;
 *   CF_ENOTCOPYABLE  a CF_PTR argument on an engine that copies;
 *   CF_ESHUTDOWN     after cf_shutdown(), also when it happens while
 *                    submit waits for room in a full queue;
 *   CF_EBROKEN       the executor is broken (an initializer failed, or the
 *                    executor was inherited through fork());
 *   CF_EFULL         the executor's queue is full (see max_queued in the
 *                    pool's options) and no room came within the wait:
 *                    cf_submit() waits as long as it takes (see
 *                    cf_submit_options.queue_timeout).  A submit from one
 *                    of the executor's own workers, or from a process
 *                    pool's manager thread (its done-callbacks), never
 *                    waits - it may be the thread that would make room -
 *                    and gets CF_EFULL at once;
 *   CF_ENOMEM, CF_ESYS (a worker thread could not be started and no
 *                    thread exists to run the call). */
int cf_submit(cf_executor *ex, cf_task_fn *fn, const cf_value *args,
              size_t nargs, cf_future **out);

/* Schedules n calls of fn at once: call i gets the nargs arguments
 * args[i * nargs .. i * nargs + nargs) and its future goes to out[i] (one
 * reference each, owned by the caller).  The same as n cf_submit() calls
 * in order, but cheaper: a thread pool takes its lock once for the lot,
 * makes and queues the calls 256 at a time so that its workers begin the
 * first while the rest are made, and wakes one worker (the workers that
 * take calls while more are queued wake the next).  Other submits to that
 * pool, and its cf_shutdown(), wait until the whole batch is queued.  Any
 * thread may call it.  Either all n are scheduled and CF_OK
 * is returned, or none is: out[0..n) are all NULL and the error is the one
 * cf_submit() would return for the first call that fails (every call is
 * validated before any is scheduled; on engines other than the thread
 * pool, calls scheduled before a later one is refused are cancelled, and
 * one a worker has already begun runs to its end unobserved).  n == 0
 * schedules nothing and returns CF_OK once ex, fn and out are checked
 * (CF_EINVAL when out is NULL, for any n), even after cf_shutdown().
 * CF_EINVAL also when args is NULL with n > 0 and nargs > 0.  With a bounded queue (max_queued) it waits, as
 * cf_submit() does, until there is room for all n calls at once; n larger
 * than max_queued can never fit and returns CF_EFULL at once.  The calls
 * have the default priority. */
int cf_submit_many(cf_executor *ex, cf_task_fn *fn, const cf_value *args,
                   size_t nargs, size_t n, cf_future **out);

/* Signals the executor to free its resources once pending calls are done;
 * later submits fail with CF_ESHUTDOWN.  With cancel_futures, calls that
 * have not started are cancelled.  With wait, returns only when every
 * started call has finished and all workers have exited.  Idempotent: a
 * later call may still wait or cancel.  Returns CF_OK, CF_EINVAL (NULL),
 * or CF_EDEADLK when asked to wait from one of the executor's own workers
 * (the shutdown is still signalled; the wait is skipped). */
int cf_shutdown(cf_executor *ex, bool wait, bool cancel_futures);

/* The end of Python's `with` block: cf_shutdown(ex, true, false), then
 * frees the executor.  Futures stay valid (they are reference counted).
 * NULL is a no-op returning CF_OK.  Returns CF_EDEADLK, freeing nothing,
 * when called from one of the executor's own workers (the shutdown is
 * still signalled).  A second destroy of the same executor is detected and
 * returns CF_EINVAL while its memory has not been reused (a map iterator
 * still open keeps it).  The handle must not be used afterwards. */
int cf_executor_destroy(cf_executor *ex);

/* Scoped executor, the counterpart of `with ThreadPoolExecutor() as ex:`
 * (GCC and Clang).  The executor is destroyed when the variable goes out
 * of scope:
 *     {
 *         CF_WITH_EXECUTOR(ex);
 *         if (cf_thread_pool_new(&ex, NULL) != CF_OK) return 1;
 *         ...
 *     }   // waits for pending calls, then frees
 */
void cf__executor_scope_exit(cf_executor **ex);
#define CF_WITH_EXECUTOR(name)                                                \
    __attribute__((cleanup(cf__executor_scope_exit))) cf_executor *name = CF__NULL

/* Number of worker threads/processes currently alive.  -1 for NULL.  A
 * process pool's count includes a worker that is exiting (one recycled by
 * max_tasks_per_child, say) until it is reaped, so it can briefly exceed
 * max_workers.  An MPI pool counts the workers it believes alive: none
 * before start-up ends or once the pool broke or was stopped, one fewer
 * for each that said goodbye. */
int cf_executor_worker_count(const cf_executor *ex);

/* The priority of a call that asks for none, and the range accepted. */
#define CF_PRIORITY_DEFAULT 0
#define CF_PRIORITY_MIN (-(1 << 30))
#define CF_PRIORITY_MAX (1 << 30)

/* Per-call options for cf_submit_with(). */
typedef struct cf_submit_options {
    /* Seconds the call may run once a worker has started it; CF_FOREVER
     * (the default) for no limit.  A process pool kills the worker running
     * a call that overruns, fails the future with CF_ETIMEDOUT (type
     * "TimeoutError") and starts a replacement worker.  A thread cannot be
     * killed: in a thread pool the limit is cooperative - cf_cancel_requested()
     * turns true for the task, which should stop and return. */
    double timeout;
    /* CF_PRIORITY_MIN..CF_PRIORITY_MAX, default CF_PRIORITY_DEFAULT (0).
     * Among the calls queued in the executor, a worker takes one of the
     * highest priority first; calls of equal priority are taken in the
     * order they were submitted.  It orders only what is still queued: it
     * never stops a call that has begun.  Thread and process pools.  A
     * process pool sends calls ahead to a busy worker, which runs them in
     * the order sent: up to 64 jobs (a map chunk is one job) while every
     * queued call has the default priority; while any has another, only
     * to a worker whose last job took at most 100 us, so a call of high
     * priority waits for at most about 6.4 ms of calls sent ahead per
     * worker (or, if it arrives while all queued calls have the default
     * priority, for those sent ahead before it).  Engines that do not order calls (MPI) refuse
     * a priority other than the default with CF_ENOTSUP. */
    int priority;
    /* Seconds submit may wait for room when the executor's queue is full
     * (max_queued of the pool's options): CF_FOREVER (the default) waits
     * until a worker takes a queued call, one is cancelled, or the
     * executor shuts down; 0 returns CF_EFULL at once.  Unused while the
     * queue has room, and by executors without a bound. */
    double queue_timeout;
} cf_submit_options;

/* Fills `opts` with the defaults.  NULL is ignored. */
void cf_submit_options_init(cf_submit_options *opts);

/* cf_submit() with per-call options (`opts` NULL means defaults).  Same
 * returns, plus CF_EINVAL for a negative or NaN timeout or queue_timeout
 * or a priority out of range, and CF_ENOTSUP for a priority other than
 * the default on an engine that does not order calls (MPI). */
int cf_submit_with(cf_executor *ex, const cf_submit_options *opts, cf_task_fn *fn,
                   const cf_value *args, size_t nargs, cf_future **out);

/* Stops a call for real, where the engine can:
 *   - pending: the future is cancelled, as cf_future_cancel() (in a process
 *     pool also a call sent to a worker that has not begun it);
 *   - running in a process pool: the worker running it is killed, the
 *     future ends cancelled - CANCELLED_AND_NOTIFIED, cf_future_cancelled()
 *     true, cf_future_result() CF_ECANCELLED, no failure record - and a
 *     replacement worker starts (under either crash policy: this is not a
 *     crash).  Calls of the same map chunk that the worker had begun fail
 *     with CF_EBROKEN; those it had not begun run on another worker;
 *   - running in a thread pool, or inline as a continuation (cf_then()):
 *     cf_cancel_requested() turns true for the task, which decides when to
 *     stop; its future ends as the task ends;
 *   - the derived future of a continuation on an executor (cf_then() with
 *     an executor): the interrupt goes to the call the continuation
 *     submitted, as above for its engine, and the derived future ends as
 *     that call does; before the antecedent is done (no call yet), the
 *     derived future is cancelled and the task never runs.  In between,
 *     while the continuation is handing its call to the executor, the
 *     derived future is cancelled and the call is interrupted: a task
 *     that has already begun is told to stop (cf_cancel_requested()), and
 *     its outcome is dropped.
 * Returns immediately: CF_OK (requested; also when the call ends at once
 * because of the request, before this returns), CF_EDONE (done before the
 * request was made), or CF_EINVAL (NULL, or a pending future that no
 * executor runs, such as one made by cf_future_new()).  Any thread. */
int cf_future_interrupt(cf_future *f);

/* Python 3.14's terminate_workers() / kill_workers(): shut the executor
 * down without waiting and with cancel_futures, then stop every worker now
 * - SIGTERM or SIGKILL for a process pool; for a thread pool, the
 * cooperative flag (cf_cancel_requested()) of every running task.  Calls
 * that were running in a killed process fail with CF_EBROKEN.  The
 * executor is finished afterwards (submit returns CF_ESHUTDOWN); it must
 * still be destroyed.  Returns CF_OK or CF_EINVAL (NULL). */
int cf_terminate_workers(cf_executor *ex);
int cf_kill_workers(cf_executor *ex);

/* ------------------------------------------------------------------------
 * Progress
 *
 * Every executor counts its calls, whatever its engine: submitted, running
 * and how they ended.  So does every map iterator, for its own calls.  The
 * counts are atomics that the threads submitting and completing calls
 * bump as the futures change state; reading them takes no lock and never
 * makes a worker wait.
 * ---------------------------------------------------------------------- */

/* A snapshot of the counts.  All five only grow, except `running`.
 *   submitted  calls accepted by cf_submit(), cf_submit_with(),
 *              cf_submit_many(), cf_map() and the continuations of
 *              cf_then() that run on this executor (a call whose submit
 *              failed is not counted; calls that a failing cf_submit_many()
 *              or cf_map() had scheduled and then cancelled count as
 *              submitted and cancelled);
 *   running    calls seen to have begun and not yet ended: those whose
 *              future is RUNNING.  A process pool learns that a worker
 *              began a call when it answers or someone asks the future
 *              (cf_future_running()), so there a short call may go from
 *              queued straight to succeeded without being counted here;
 *   succeeded  calls that returned normally (cf_future_result() CF_OK);
 *   failed     calls that ended with a failure: the task raised
 *              (CF_ETASK), the pool broke (CF_EBROKEN), a per-call timeout
 *              (CF_ETIMEDOUT);
 *   cancelled  calls cancelled before they ran (cf_future_cancel(),
 *              shutdown with cancel_futures, a map closed early) or
 *              stopped by cf_future_interrupt() in a process pool.
 * What a snapshot guarantees, even while calls run on other threads:
 * succeeded + failed + cancelled + running <= submitted, and each count but
 * `running` is at least what this thread read before.  The fields are
 * read one by one, so a snapshot may miss a call that moved between two of
 * them (it then counts in neither), and a call a worker began before its
 * cf_submit() returned may count as submitted a moment before that submit
 * does.  Once the calls have ended and their ending was seen by the
 * reading thread (a cf_future_result() or cf_wait() returned, a shutdown
 * with wait returned) the counts are exact. */
typedef struct cf_progress {
    uint64_t submitted;
    uint64_t running;
    uint64_t succeeded;
    uint64_t failed;
    uint64_t cancelled;
} cf_progress;

/* Calls that have ended, one way or another: succeeded + failed +
 * cancelled.  `p` must not be NULL. */
static inline uint64_t cf_progress_ended(const cf_progress *p)
{
    return p->succeeded + p->failed + p->cancelled;
}

/* Copies the executor's counts into *out.  Never blocks; any thread,
 * including a task or a callback, also after cf_shutdown() (until
 * cf_executor_destroy()).  Returns CF_OK, or CF_EINVAL (ex or out NULL, or
 * ex not a live executor; *out is then zeroed if out is not NULL). */
int cf_executor_progress(const cf_executor *ex, cf_progress *out);

/* A progress callback: `p` is a snapshot of the executor's counts, valid
 * during the call only; `arg` is what was passed with the callback. */
typedef void cf_progress_fn(void *arg, const cf_progress *p);

/* Calls fn(arg, &snapshot) at most every interval_ms milliseconds while
 * the counts change.  The calls come from a timer thread that the first
 * callback starts for this executor (none exists while no callback is
 * set); the thread only reads the counts, so a slow callback never holds
 * up a worker, it only delays its own next call.  No cfutures lock is held
 * during a call.  When:
 *   - at most one call per interval, and only when the snapshot differs
 *     from the one last passed (or the callback is new), so an idle
 *     executor costs no calls; a change is reported within one interval,
 *     in particular the one that ends the last call.  A callback is called
 *     at once when set, the first on an executor as one replacing another
 *     (whatever was left of the replaced one's interval), and its own
 *     interval counts from that call;
 *   - cf_executor_destroy() makes one last call, after every call of the
 *     executor has ended, if the counts changed since the previous one;
 *     so does the exit handler for an executor never destroyed, after
 *     waiting for its calls, and the callback is not called after that.
 * fn NULL clears the callback (arg and interval_ms are ignored) and stops
 * the thread.  Setting a callback replaces the previous one.  When this
 * returns, neither a cleared nor a replaced callback is running or will be
 * called again, except that a callback that clears or replaces itself from
 * inside its call finishes that call.  After cf_executor_destroy() returns
 * the callback is never called again.
 * Any thread, including the callback itself (which must not call
 * cf_executor_destroy(): that returns CF_EDEADLK, as from a worker, and
 * only signals the shutdown).  Returns CF_OK, CF_EINVAL (ex NULL, not live
 * or destroyed, or fn given with interval_ms < 1), CF_EBROKEN (executor
 * inherited through fork()), CF_ENOMEM or CF_ESYS (the timer thread could
 * not be started; nothing changed). */
int cf_executor_set_progress_callback(cf_executor *ex, cf_progress_fn *fn, void *arg,
                                      int interval_ms);

/* A progress bar on stderr, the counterpart of Python's tqdm for a
 * cfutures program:
 *
 *     cf_progress_bar *bar;
 *     if (cf_progress_bar_new(&bar, "hashing", n) != CF_OK)
 *         return 1;
 *     cf_executor_set_progress_callback(ex, cf_progress_bar_callback, bar, 100);
 *     ... submit n calls, collect them ...
 *     cf_executor_set_progress_callback(ex, NULL, NULL, 0);
 *     cf_progress p;
 *     cf_executor_progress(ex, &p);
 *     cf_progress_bar_finish(bar, &p);
 *
 * It shows calls ended (succeeded + failed + cancelled) out of the total,
 * the rate (calls ended per second since the bar was made), the time taken
 * and the time left at that rate, and the failed and cancelled counts
 * when there are any.  When stderr is a terminal the bar is redrawn in
 * place ("\r", at most every 100 ms):
 *     hashing:  42% [##########..............] 420/1000 00:03<00:04 140.0/s
 * otherwise it writes a plain line at most every 5 s, and at the end:
 *     hashing: 1000/1000 (100%) in 00:07, 142.3/s, ETA 00:00
 * The bar is independent of executors: it draws whatever snapshots it is
 * given (a map's, several executors' added up). */
typedef struct cf_progress_bar cf_progress_bar;

/* Creates a bar for `total` calls (0: take the total from each snapshot's
 * `submitted`) named `label` (copied; NULL for none).  Whether stderr is a
 * terminal is decided here.  Draws nothing yet.  *out is owned by the
 * caller, who ends it with cf_progress_bar_finish().  Returns CF_OK,
 * CF_EINVAL (out NULL, label longer than 256 bytes) or CF_ENOMEM. */
int cf_progress_bar_new(cf_progress_bar **out, const char *label, uint64_t total)
    CF__WARN_UNUSED;

/* Gives the bar a new snapshot, drawn if a redraw is due (see above).
 * Any thread; calls on one bar are serialised by a lock of its own, held
 * while it writes to stderr.  NULL bar or p is ignored. */
void cf_progress_bar_update(cf_progress_bar *bar, const cf_progress *p);

/* cf_progress_bar_update() as a cf_progress_fn: pass the bar as `arg` of
 * cf_executor_set_progress_callback(). */
void cf_progress_bar_callback(void *bar, const cf_progress *p);

/* Draws the bar a last time with `p` (NULL: the last snapshot given; if
 * none was, nothing is drawn), ends its line, and frees the bar.  Clear
 * the callback that feeds it first: no update may run during or after
 * this.  NULL is a no-op. */
void cf_progress_bar_finish(cf_progress_bar *bar, const cf_progress *p);

/* ------------------------------------------------------------------------
 * Process pools
 *
 * The process engine runs calls in worker processes: CPU-bound work runs
 * on every core, and a task that crashes takes down a worker, not the
 * program.  Switching from threads is one line - the constructor - as
 * long as the program follows the two rules that Python's "must be
 * picklable" and `if __name__ == "__main__":` stand for:
 *
 *   1. Tasks travel by name.  Register each task function with
 *      CF_TASK(fn) at file scope (or cf_task_register() before
 *      cf_process_init()).  Submitting an unregistered function to a
 *      process pool fails with CF_ENOTCOPYABLE.  Arguments and results
 *      are copied (a CF_PTR argument is refused with CF_ENOTCOPYABLE;
 *      a CF_PTR result fails its call with that code).
 *   2. main() starts with cf_process_init(argc, argv).  A worker is this
 *      same program started again (the default start method, CF_START_EXEC);
 *      cf_process_init() is where it becomes a worker and never returns.
 *      A library or plugin, which cannot ask its host's main() for this,
 *      names a worker program of its own instead (see worker_program in
 *      cf_process_pool_options).
 *
 *     static int square(cf_call *call) { ... }
 *     CF_TASK(square);
 *
 *     int main(int argc, char **argv)
 *     {
 *         cf_process_init(argc, argv);
 *         cf_executor *ex;
 *         if (cf_process_pool_new(&ex, NULL) != CF_OK)
 *             return 1;
 *         ...
 *     }
 * ---------------------------------------------------------------------- */

/* Registers `fn` under `name` (copied) for every engine that sends tasks
 * by name.  Registering the same pair twice is harmless.  Returns CF_OK,
 * CF_EINVAL (NULL, empty or longer than 255 bytes, or `name` already
 * registered for another function - the name is then unusable, so the
 * clash is reported rather than resolved by chance), or CF_ENOMEM.  Any
 * thread; normally called through CF_TASK from a constructor. */
int cf_task_register(const char *name, cf_task_fn *fn);

/* The name `fn` was registered under, or NULL.  Any thread. */
const char *cf_task_name(cf_task_fn *fn);

/* Registers `fn` under its own name before main() runs.  Use at file
 * scope after the function's definition or declaration.  A clash is
 * reported through the log hook (or stderr) at start-up. */
#define CF_TASK(fn)                                                           \
    __attribute__((constructor)) static void cf__task_ctor_##fn(void)         \
    {                                                                         \
        cf__task_register_ctor(#fn, fn);                                      \
    }                                                                         \
    struct cf__task_tag_##fn
void cf__task_register_ctor(const char *name, cf_task_fn *fn);

/* Call first thing in main().  In a worker process started by a process
 * pool it runs the worker and never returns.  A process becomes a worker
 * only when the pool's variable (read with secure_getenv) names a socket
 * that the parent process made and that carries the variable's random
 * key; the variable is removed in every case, so a forged or inherited
 * one just lets main() run.  A CF_START_EXEC worker knows the tasks
 * registered when it reaches this call (CF_TASK registers before main): a
 * task registered later, at run time, is unknown there, and only calls to
 * it fail (CF_ETASK, type "NameError"; an initializer so registered breaks
 * the pool, naming it).  In any other process it records argv[0] and
 * returns CF_OK; without this call, cf_process_pool_new() refuses
 * CF_START_EXEC with CF_EINVALSTATE unless the pool names a worker
 * program (cf_process_pool_options.worker_program), whose main() makes
 * this call instead.
 * Returns CF_EINVAL for argc < 1 or argv NULL.  Main thread, before
 * starting threads. */
int cf_process_init(int argc, char **argv);

/* True in a worker process of a process pool (from cf_process_init() on,
 * or after a CF_START_FORK fork).  Any thread. */
bool cf_in_worker_process(void);

typedef enum cf_start_method {
    /* Default.  A worker is a fresh copy of the program (posix_spawn of
     * /proc/self/exe, the same argv) that cf_process_init() turns into a
     * worker before main() does anything else: no thread, lock or heap
     * state of the parent is inherited, so it is safe however many threads
     * the parent runs.  A library built with CF_PORTABLE runs the file
     * argv[0] named when cf_process_init() ran (made absolute, or found on
     * PATH); if it names none, or the file is gone, workers fail to start
     * and the pool breaks. */
    CF_START_EXEC = 0,
    /* fork() without exec: faster start, and cf_process_init() is not
     * needed - but only safe while no other thread of the parent holds a
     * lock the worker will need (the application's, or another library's).
     * The first workers are forked before cf_process_pool_new() returns,
     * by the pool's manager thread while the calling thread waits in that
     * call; so in a parent that runs no other threads they copy a process
     * whose only thread is blocked there, holding no lock but those it
     * holds around the call.  Replacement workers (after a crash under
     * CF_CRASH_REPLACES_WORKER, a call's timeout or an interrupt) are
     * forked later, by the manager, while the program runs.
     * Choose it only for a parent that runs no other threads. */
    CF_START_FORK = 1
} cf_start_method;

typedef enum cf_crash_policy {
    /* Default, as CPython: a worker that dies breaks the pool.  Every
     * pending and running future fails with CF_EBROKEN ("BrokenProcessPool",
     * naming the worker's pid and its exit status or signal) and later
     * submits return CF_EBROKEN. */
    CF_CRASH_BREAKS_POOL = 0,
    /* Only the call running on the dead worker fails (CF_EBROKEN, same
     * message); calls sent to that worker that it had not begun go back
     * to the queue, a replacement worker starts and the pool carries on.
     * A map chunk (cf_map() chunksize > 1) is answered at its end, so
     * every call of it the worker had begun (and not yet answered) fails
     * with CF_EBROKEN, those that had finished too; those it had not
     * begun run on another worker. */
    CF_CRASH_REPLACES_WORKER = 1
} cf_crash_policy;

typedef struct cf_process_pool_options {
    /* Worker processes: CF_AUTO (the default: cf_usable_cpus()) or 1..1024. */
    int max_workers;
    /* A registered task run once in each worker before it takes calls,
     * with copies of initargs[0..ninitargs).  Failure (non-zero return,
     * a raise or a crash) breaks the pool under either crash policy, with
     * the initializer's failure in the message.  NULL for none. */
    cf_task_fn *initializer;
    const cf_value *initargs;
    size_t ninitargs;
    /* Replace a worker after it has run this many calls; 0 (the default)
     * keeps workers for the pool's lifetime.  Needs CF_START_EXEC (with
     * CF_START_FORK, replacements would be forked from the running,
     * threaded program: refused with CF_EINVAL, as CPython does).  The
     * replacement starts once the worker it replaces has answered its last
     * call, so at most max_workers workers run calls at once (the one
     * leaving may still be exiting).  A map chunk goes whole to one worker:
     * a fresh worker takes any chunk, even one bigger than this; when no
     * worker has enough left for the next chunk, idle ones leave early. */
    int max_tasks_per_child;
    cf_crash_policy on_crash;
    cf_start_method start_method;
    /* Default cf_submit_options.timeout for every call of this pool;
     * CF_FOREVER (the default) for none.  It applies to each call of a
     * map chunk (cf_map_options.chunksize) on its own, from when the
     * worker begins that call; the manager looks at a chunk in progress
     * four times per timeout, so such a call may overrun by up to a
     * quarter of it before it is stopped.  The worker is then killed:
     * that call fails with CF_ETIMEDOUT, and the rest of the chunk is
     * handled as for cf_future_interrupt() - calls the worker had begun
     * (and not yet answered: a chunk is answered at its end) fail with
     * CF_EBROKEN, those it had not begun run on another worker.  If it
     * had begun none of them, they all fail with CF_ETIMEDOUT. */
    double task_timeout;
    /* The program workers run, for a pool made inside a library or plugin
     * whose host program never calls cf_process_init(): an absolute path
     * to an executable that calls cf_process_init(argc, argv) first thing
     * in main() and registers the pool's tasks (for example by linking the
     * same task sources).  It is started with argv {worker_program, NULL}
     * and proves it was started by this pool as the default worker does
     * (the environment variable, the socket, the random key).  The path is
     * copied.  Needs CF_START_EXEC and `tasks`.  NULL (the default): the
     * running program, which needs cf_process_init() in main(). */
    const char *worker_program;
    /* A shared object that holds the pool's tasks, for a plugin that ships
     * no program: an absolute path to a readable regular file, linked
     * with libcfutures.so (the shared library: tasks registered in a
     * static copy of cfutures are not seen) and registering its tasks with
     * CF_TASK.  Workers then run worker_program, or, when that is NULL,
     * cfutures-worker, the generic worker program installed with the
     * library (<libexecdir>/cfutures/cfutures-worker: beside the shared
     * library as installed, else under the configured prefix), with argv
     * {program, worker_library, NULL}; it loads the object (dlopen: its
     * constructors run in each worker) and calls cf_process_init().  An
     * object that will not load ends that worker during start-up, which
     * breaks the pool.  The path is copied.  Needs CF_START_EXEC and
     * `tasks`.  NULL (the default): none. */
    const char *worker_library;
    /* The tasks this pool will run: a NULL-terminated array of registered
     * functions (not copied past cf_process_pool_new()), or NULL.  Every
     * worker checks at start-up, by name, that it has each of them; one
     * that lacks any breaks the pool under either crash policy, with a
     * message naming the missing tasks and the worker program, so the
     * first call to the pool fails with CF_EBROKEN (and the reason goes
     * once through the log hook).  A call to a task not listed here that
     * a worker does not know fails alone (CF_ETASK, "NameError").
     * Required with worker_program or worker_library; with the running
     * program (which has the same CF_TASK registrations) it catches tasks
     * registered at run time only. */
    cf_task_fn *const *tasks;
    /* The most calls queued in the pool (submitted, not yet sent to a
     * worker nor cancelled) at once; 0 (the default) for no bound.  As
     * for the thread pool (cf_thread_pool_options.max_queued); calls sent
     * ahead to busy workers (at most 64 jobs per worker) are not counted,
     * nor calls put back in the queue when a worker died before it began
     * them. */
    size_t max_queued;
} cf_process_pool_options;

/* Fills `opts` with the defaults.  NULL is ignored. */
void cf_process_pool_options_init(cf_process_pool_options *opts);

/* Creates a process pool and starts its workers in the background.
 * `opts` NULL means defaults.  *out receives the executor, owned by the
 * caller, who must cf_executor_destroy() it; destroy waits for pending
 * calls and reaps every worker.  A worker with nothing left to run is
 * killed (with a log line, no call lost) if it has not exited 5 s after it
 * was asked to - or, after a shutdown that left no call pending, 5 s after
 * that if it never started (a hanging initializer, worker program or
 * library cannot read the request) - so a shutdown or destroy does not
 * wait for it as long as it lives.  Returns:
 *   CF_EINVAL        out NULL, max_workers out of range, negative
 *                    max_tasks_per_child (or any with CF_START_FORK),
 *                    bad task_timeout, unknown policy
 *                    or start method, an unregistered initializer, bad
 *                    initargs; worker_program not an absolute path to
 *                    an executable regular file (checked here, so a
 *                    wrong path fails now, not in the background), or
 *                    given with CF_START_FORK or without `tasks`;
 *                    worker_library not an absolute path to a readable
 *                    regular file, or without `tasks`, or (without
 *                    worker_program) cfutures-worker not installed; `tasks`
 *                    with an unregistered function or more than 4096
 *                    entries;
 *   CF_ENOTCOPYABLE  a CF_PTR initarg;
 *   CF_ETOOBIG       an initarg, or all together, exceed CF_PAYLOAD_MAX;
 *   CF_EINVALSTATE   CF_START_EXEC without cf_process_init() in main and
 *                    without worker_program, or in a set-user-ID or
 *                    capability-raising program (secure execution: use
 *                    CF_START_FORK), or called inside a worker process;
 *   CF_ENOMEM, CF_ESYS (descriptors or the manager thread).
 * Any thread.  A pool that breaks later, in the background (a worker
 * crashed, an initializer failed, no worker could be started, the manager
 * ran out of memory), says why once through the log hook.
 * Out of memory: a worker that cannot be started when no other is left,
 * or a manager that still finds no memory to read results after about a
 * second of retries, breaks the pool with CF_ENOMEM: its pending and
 * running futures fail with CF_ENOMEM ("MemoryError"), later submits
 * return CF_EBROKEN with the reason.  Workers exit when the pool is destroyed or the parent dies
 * (they never outlive it as orphans), and the pool reaps them.
 * Memory: arguments and results of 1 MiB or more travel in shared memory
 * that the pool recycles (fresh pages cost more than the copy); it keeps
 * up to 2 x max_workers idle buffers, at most 512 MiB, until destroyed,
 * and each worker keeps the buffers of its latest big call mapped.  A big
 * result stays valid while its future is held, also after destroy. */
int cf_process_pool_new(cf_executor **out, const cf_process_pool_options *opts)
    CF__WARN_UNUSED;

/* Done-callbacks of a process pool's futures run on the pool's manager
 * thread, the one thread that completes them (as on CPython's): a callback
 * may submit to the pool, but must not wait for another future of the
 * same pool, which only that thread could complete. */

/* The process pool's default worker count: cf_usable_cpus(). */
int cf_process_pool_default_workers(void);

/* ------------------------------------------------------------------------
 * map
 *
 * Calls fn over inputs zipped together - fn(a[0], b[0]), fn(a[1], b[1]) ...
 * stopping at the shortest input - and yields the outcomes in input order.
 * ---------------------------------------------------------------------- */

/* A generator: stores the next value in *out and returns 1, returns 0 when
 * exhausted, or a negative value for an error (map stops and reports
 * CF_EINVAL).  The value only needs to stay valid until the next call: it
 * is copied before the generator is called again. */
typedef int cf_next_fn(void *ctx, cf_value *out);

typedef struct cf_map_input {
    const cf_value *values; /* an array of `count` values ...        */
    size_t count;
    cf_next_fn *next;       /* ... or, if next is not NULL, a generator */
    void *ctx;
} cf_map_input;

/* Input helpers. */
static inline cf_map_input cf_input_array(const cf_value *values, size_t count)
{
    cf_map_input in = {values, count, CF__NULL, CF__NULL};
    return in;
}
static inline cf_map_input cf_input_generator(cf_next_fn *next, void *ctx)
{
    cf_map_input in = {CF__NULL, 0, next, ctx};
    return in;
}

typedef struct cf_map_options {
    /* Limit for each cf_map_next(), measured from the cf_map() call.
     * CF_FOREVER (default) means no limit. */
    double timeout;
    /* >= 1 (default 1).  Process engines send this many inputs per message.
     * An MPI pool starts the calls of a chunk together, when it sends the
     * chunk (each is cancellable until then); an eager map over arrays at
     * the default priority keeps such a chunk as one object, a few dozen
     * bytes per call, instead of a future per call.  The thread pool queues this many calls in one go (one lock, one
     * wake-up), each still a call of its own that any worker may take and
     * that can be cancelled until it begins, and at least 64 at a time in
     * an eager map (buffersize 0) whose inputs are all arrays; CPython's
     * thread pool ignores it. */
    int chunksize;
    /* 0 (default): read every input now, as CPython does, and submit all
     * calls.  N > 0: read inputs lazily (Python 3.14's buffersize): N calls
     * are submitted up front and each cf_map_next() submits one more before
     * it waits, so at most N + 1 calls are outstanding and an endless or
     * huge generator runs in constant memory.  With a chunksize C > 1 the
     * inputs are read and submitted a whole chunk at a time: up front
     * until N calls are outstanding, and by each cf_map_next() while N or
     * fewer are, so at most N + C are. */
    size_t buffersize;
    /* The priority of every call of the map (see cf_submit_options). */
    int priority;
} cf_map_options;

/* Fills `opts` with the defaults.  NULL is ignored. */
void cf_map_options_init(cf_map_options *opts);

typedef struct cf_map_iter cf_map_iter;

/* Starts a map.  `opts` NULL means defaults.  *out receives the iterator,
 * owned by the caller (cf_map_close()).  Returns the errors of cf_submit()
 * (nothing is left running: calls already submitted are cancelled), and
 * CF_EINVAL for ninputs 0, a NULL input array, chunksize < 1, a bad
 * timeout, a priority out of range or a generator that failed (CF_ENOTSUP
 * for a priority other than the default on an engine that does not order
 * calls, MPI).
 * On an executor with a bounded queue (max_queued) the map waits for room
 * as it submits, up to its timeout (a lazy map in cf_map_next() too), and
 * fails with CF_EFULL when none came by then, or at once from one of the
 * executor's own workers, or for a chunk bigger than max_queued on an
 * engine that queues a chunk as one unit (a process pool; a thread pool
 * queues a chunk's calls one by one, each waiting for room); use
 * buffersize to keep a map from filling the queue. */
int cf_map(cf_executor *ex, cf_task_fn *fn, const cf_map_input *inputs,
           size_t ninputs, const cf_map_options *opts, cf_map_iter **out);

/* Waits for the next outcome, in input order:
 *   CF_OK          *value (if not NULL) = result, borrowed until the next
 *                  cf_map_next()/cf_map_close() on this iterator;
 *   CF_ETASK / CF_EBROKEN / CF_ECANCELLED
 *                  this element failed; *failure (if not NULL) = its
 *                  failure record (NULL when cancelled), borrowed likewise.
 *                  Iteration continues with the next element;
 *   CF_EDONE       no more elements;
 *   CF_ETIMEDOUT   the map's timeout passed; calls that have not started
 *                  are cancelled and the iterator is finished (later calls
 *                  return CF_EDONE).  *failure stays NULL.  An element
 *                  whose call overran its own timeout (a process pool's
 *                  task_timeout) also returns CF_ETIMEDOUT, but as a
 *                  failed element: *failure is its "TimeoutError" record
 *                  and iteration continues;
 *   CF_ESHUTDOWN / CF_EBROKEN / CF_EFULL / CF_EINVAL
 *                  a lazy map could not submit further calls (see below
 *                  and cf_map());
 *                  CF_EINVAL also for a NULL iterator.
 * One thread at a time per iterator. */
int cf_map_next(cf_map_iter *it, const cf_value **value,
                const cf_failure **failure);

/* An iterator may outlive cf_executor_destroy() of its executor: it keeps
 * the executor's memory until closed.  Calls already submitted still yield
 * their outcomes; a lazy map (buffersize > 0) cannot submit more and, after
 * the submitted ones, returns CF_ESHUTDOWN once, then CF_EDONE.  Likewise
 * a generator error while refilling is returned (as CF_EINVAL) after the
 * calls already submitted. */

/* Copies the counts of this map's own calls into *out (see cf_progress):
 * submitted grows as the map submits (all at once in cf_map() unless
 * buffersize is set), and the rest as its calls change state, whether or
 * not cf_map_next() has reached them yet.  Never blocks; any thread, while
 * the iterator is open (concurrently with cf_map_next() on another
 * thread).  Calls still running when the map is closed stop counting here.
 * Returns CF_OK or CF_EINVAL (it or out NULL; *out is then zeroed if out
 * is not NULL). */
int cf_map_progress(const cf_map_iter *it, cf_progress *out);

/* Closes the iterator early or at the end: calls that have not started
 * are cancelled, everything is freed.  Running calls finish on their own.
 * NULL is a no-op. */
void cf_map_close(cf_map_iter *it);

/* ------------------------------------------------------------------------
 * wait and as_completed
 *
 * Both accept futures from any mix of executors and standalone futures.
 * Duplicates are collapsed.  Timeouts run from the call.
 * ---------------------------------------------------------------------- */

typedef enum cf_return_when {
    CF_FIRST_COMPLETED = 1,
    CF_FIRST_EXCEPTION = 2, /* first failure; like ALL_COMPLETED if none */
    CF_ALL_COMPLETED = 3
} cf_return_when;

/* Waits until the `return_when` condition holds or `timeout` passes, then
 * sorts the distinct futures into `done` and `not_done`.  Either output
 * array may be NULL; if given it must have room for `n` pointers.  The
 * pointers are borrowed (no reference is added).  ndone/nnot_done (may be
 * NULL) receive the counts.  Returns CF_OK when the condition holds,
 * CF_ETIMEDOUT when the timeout passed first (the outputs are still
 * filled), CF_EINVAL for a NULL fs with n > 0, a NULL element, an
 * element already released (where that can be told), a bad return_when or
 * timeout, CF_ENOMEM. */
int cf_wait(cf_future *const *fs, size_t n, double timeout,
            cf_return_when return_when, cf_future **done, size_t *ndone,
            cf_future **not_done, size_t *nnot_done);

typedef struct cf_as_completed_iter cf_as_completed_iter;

/* Starts iterating over the distinct futures in `fs` in the order they
 * complete; those already done come first.  The iterator holds a reference
 * to each future until cf_as_completed_free().  Returns CF_EINVAL (NULL fs
 * with n > 0, a NULL element, an element already released where that can
 * be told, out NULL, bad timeout) or CF_ENOMEM. */
int cf_as_completed(cf_future *const *fs, size_t n, double timeout,
                    cf_as_completed_iter **out);

/* Yields the next completed future (borrowed, valid until the iterator is
 * freed):
 *   CF_OK         *out = a done future;
 *   CF_EDONE      every future has been yielded;
 *   CF_ETIMEDOUT  the timeout passed and no completed future is waiting
 *                 to be yielded; the message says "N (of M) futures
 *                 unfinished".  Unlike Python's generator, which ends at
 *                 the timeout, later calls still yield futures that have
 *                 completed since (without waiting), and return
 *                 CF_ETIMEDOUT again when none is ready;
 *   CF_EINVAL     NULL arguments.
 * One thread at a time per iterator. */
int cf_as_completed_next(cf_as_completed_iter *it, cf_future **out);

/* Frees the iterator and drops its references.  NULL is a no-op. */
void cf_as_completed_free(cf_as_completed_iter *it);

/* ========================================================================
 * Composition and event loops
 *
 * User data on a future, a completion queue with a file descriptor for
 * event loops, continuations and combinators.  All of them work on
 * futures of any engine (and on standalone futures) and hook the future's
 * completion the way done-callbacks and waiters do: nothing here polls,
 * and no cfutures lock is held while user code runs.
 * ===================================================================== */

/* ------------------------------------------------------------------------
 * User data
 * ---------------------------------------------------------------------- */

/* Attaches an application pointer to the future (libuv's `->data`), so a
 * future popped from a completion queue or passed to a callback leads
 * back to its request without a search.  The library never reads what it
 * points to and never frees it: its lifetime is the caller's business
 * (free it after the last use, not with the future).  A later call
 * replaces the pointer.  Any thread; the store is a release and
 * cf_future_data() an acquire, so what the pointer points to, written
 * before the set, is visible to a thread that reads the pointer.  Returns
 * CF_OK or CF_EINVAL (NULL or not a live future). */
int cf_future_set_data(cf_future *f, void *data);

/* The pointer last set with cf_future_set_data(), NULL if none (or for a
 * NULL future).  Any thread. */
void *cf_future_data(const cf_future *f);

/* ------------------------------------------------------------------------
 * Completion queues: futures in an event loop
 *
 * A completion queue collects futures as they complete and shows it on a
 * file descriptor (an eventfd; in the portable build, CF_PORTABLE, the
 * read end of a pipe) that an event loop (epoll, poll, libuv's
 * uv_poll_t, a GLib source) watches for readability:
 *
 *     cf_completion_queue *q;
 *     if (cf_cq_new(&q) != CF_OK)
 *         return 1;
 *     cf_cq_add(q, f);                       // for each submitted future
 *     ... epoll_wait() reports cf_cq_fd(q) readable ...
 *     cf_future *done[64];
 *     int n = cf_cq_pop(q, done, 64);        // never blocks
 *     for (int i = 0; i < n; i++) {
 *         handle(cf_future_data(done[i]), done[i]);
 *         cf_future_release(done[i]);
 *     }
 *
 * The descriptor is level-triggered in effect: it is readable while a
 * completed future waits in the queue, and stops being readable once
 * cf_cq_pop() has taken the last one - except that, when a pop races the
 * completing thread's wake-up, it may report readable once more and that
 * pop returns 0 (a loop simply finds nothing to do).  Never read or write
 * it yourself, and do not close it.
 * References: the queue holds one reference to each added future from
 * cf_cq_add() until cf_cq_pop() hands it (the same reference) to the
 * caller, or cf_cq_destroy() drops it.
 * fork(): a queue belongs to the process that made it.  Its descriptor is
 * shared with a child of fork(), so in the child cf_cq_pop(), cf_cq_add()
 * and cf_cq_fd() return CF_EBROKEN, completions never signal it, and
 * cf_cq_destroy() closes only the child's copy of the descriptor: the
 * parent's queue goes on unharmed.  Make a new queue in the child.
 * ---------------------------------------------------------------------- */

typedef struct cf_completion_queue cf_completion_queue;

/* Creates an empty queue; *out is owned by the caller (cf_cq_destroy()).
 * Returns CF_OK, CF_EINVAL (out NULL), CF_ENOMEM or CF_ESYS (no eventfd
 * or pipe, for example at the descriptor limit).  Any thread. */
int cf_cq_new(cf_completion_queue **out) CF__WARN_UNUSED;

/* The queue's descriptor (O_CLOEXEC, non-blocking), valid until
 * cf_cq_destroy(), or CF_EINVAL for NULL, CF_EBROKEN in a child of fork()
 * (see above).  Any thread. */
int cf_cq_fd(const cf_completion_queue *q);

/* Adds `f`: the queue takes its own reference, and `f` shows up in
 * cf_cq_pop() once it completes (finished or cancelled) - at once if it
 * already has.  A future added twice is popped twice (with two
 * references).  Returns CF_OK, CF_EINVAL (NULL or not a live future),
 * CF_EBROKEN (a queue inherited through fork()) or CF_ENOMEM (nothing
 * added).  Any thread, concurrently with cf_cq_pop() and with
 * completions. */
int cf_cq_add(cf_completion_queue *q, cf_future *f);

/* Takes up to `max` completed futures, in completion order, into out[]
 * and returns how many (0 when none is ready; it never blocks).  Each one
 * comes with the reference the queue held: the caller now owns it and
 * releases it with cf_future_release().  Returns CF_EINVAL for q NULL, or
 * out NULL with max > 0, and CF_EBROKEN for a queue inherited through
 * fork().  Any thread. */
int cf_cq_pop(cf_completion_queue *q, cf_future **out, size_t max);

/* Futures added and not yet popped (completed or not).  A snapshot; 0 for
 * NULL.  Any thread. */
size_t cf_cq_count(const cf_completion_queue *q);

/* Frees the queue and closes its descriptor.  The queue's references are
 * dropped: to completed futures not yet popped, and to futures still
 * pending, which are detached first and otherwise go on as before (a
 * completion that races the destroy either finds the queue still
 * attached, under the future's lock, or not at all).  Call it once, when
 * no other thread uses the queue any more; completions may still run
 * concurrently on other threads.  NULL is a no-op. */
void cf_cq_destroy(cf_completion_queue *q);

/* ------------------------------------------------------------------------
 * Continuations
 *
 * cf_then() attaches a task to a future: when the antecedent completes
 * the task runs and the *derived* future it returns completes with the
 * task's outcome.  The task is an ordinary cf_task_fn; it is called with
 * the antecedent's outcome in its first five arguments, followed by
 * copies of the arguments given to cf_then():
 *
 *   CF_THEN_STATUS   CF_I64: CF_OK, CF_ECANCELLED, or the status the
 *                    antecedent failed with (CF_ETASK, CF_EBROKEN, ...);
 *   CF_THEN_VALUE    on CF_OK the antecedent's result (any kind);
 *                    otherwise CF_NONE;
 *   CF_THEN_CODE     CF_I64: the failure's code (0 unless failed);
 *   CF_THEN_TYPE     CF_STR: the failure's type name ("" unless failed);
 *   CF_THEN_MESSAGE  CF_STR: the failure's message ("" unless failed).
 *
 * cf_then_ok() is the convenience form: the task runs only when the
 * antecedent succeeded, with its result as argument 0 followed by the
 * given arguments; otherwise the derived future takes the antecedent's
 * outcome unchanged (cancelled, or the same failure: status, code, type
 * and message) without running anything.
 *
 * Where the task runs:
 *   - ex NULL (the default): inline, on the thread that completed the
 *     antecedent (a pool's worker thread, a process pool's manager thread,
 *     the thread calling set_result/cancel), or at once in the calling
 *     thread if the antecedent is already done.  This is the default
 *     because a hop then costs no queueing, no thread switch and no copy
 *     of the value, and it works whatever engine completed the
 *     antecedent; so keep inline tasks short and non-blocking, as you
 *     would a done-callback.  In particular, an inline task of a process
 *     or MPI pool's future runs on that pool's manager thread, which is
 *     what completes the pool's futures: waiting there for another future
 *     of the same pool never ends (only its timeout does) - give `ex`
 *     for such a task.  The task sees the antecedent's value by
 *     reference (CF_PTR results too).
 *   - ex given: the task is submitted to `ex` when the antecedent
 *     completes, with the arguments above *copied* as cf_submit() copies
 *     them: on a process pool the task must be registered (CF_TASK) and
 *     the antecedent's value travels to the worker like any argument (a
 *     CF_PTR result makes the derived future fail with CF_ENOTCOPYABLE).
 *     The derived future holds a reference to `ex`, which may be
 *     destroyed meanwhile: the derived future then fails with
 *     CF_ESHUTDOWN, as it does when the submit fails for any other reason
 *     (its status is the submit's error, type "SubmitError").  The submit
 *     never waits for room in a bounded queue (max_queued): it runs on
 *     the thread that completed the antecedent, which the full executor's
 *     own tasks may be waiting for, so a full queue fails the derived
 *     future with CF_EFULL at once.
 *
 * Chains: a continuation completing its derived future may start the next
 * one; they run one after another in a loop on that thread, never nested,
 * so the stack does not grow with the length of the chain.  Inside an
 * inline task two things still happen before the task returns, so that it
 * may wait for what it starts: cf_then() on an already-done future runs
 * the new task at once (nested: the stack grows with such calls only), and
 * a wait (cf_future_result() and the like, cf_wait(), cf_as_completed_next())
 * first runs the continuations queued on this thread.
 *
 * Lifetime: a continuation lives until its antecedent completes.  Futures
 * of an executor always complete (shutdown runs or cancels them); a
 * standalone future that is never completed keeps its continuations, and
 * itself, allocated - cancel it when giving up on it.  The same holds for
 * the combinators below.
 *
 * Cancellation: cf_future_cancel() on a derived future whose task has not
 * started cancels it alone - the task will not run (a task already queued
 * on `ex` is cancelled there too) and continuations of the derived future
 * see CF_ECANCELLED.  It never propagates upstream to the antecedent: an
 * antecedent may have other continuations, waiters and owners, and a
 * consumer losing interest says nothing about them.  Cancel the
 * antecedent yourself when you own it.  An inline task marks its derived
 * future RUNNING (it can no longer be cancelled, and set_result() on it is
 * refused: the task writes its outcome); cf_future_interrupt() then raises
 * the task's cf_cancel_requested() and cf_cancel_fd().  A derived future
 * whose task went to `ex` stays PENDING until that task has finished, so
 * cancelling it succeeds even while the task runs there - the task then
 * runs to its end and its outcome is discarded.
 * ---------------------------------------------------------------------- */

#define CF_THEN_STATUS 0
#define CF_THEN_VALUE 1
#define CF_THEN_CODE 2
#define CF_THEN_TYPE 3
#define CF_THEN_MESSAGE 4
#define CF_THEN_NARGS 5 /* index of the first argument given to cf_then() */

/* Attaches `task` to `f` and returns the derived future in *out (one
 * reference, owned by the caller).  The continuation holds its own
 * references to `f` and `ex` until it has run, so the caller may release
 * `f` at once.  `args` are validated and copied now (as cf_submit() would
 * for `ex`).  Returns CF_OK, or, creating nothing:
 *   CF_EINVAL        f/task/out NULL or f not live, ex not live, args NULL
 *                    with nargs > 0, more than CF_ARGS_MAX - CF_THEN_NARGS
 *                    arguments, an argument of unknown kind;
 *   CF_ENOTCOPYABLE  ex copies arguments and task is not registered, or a
 *                    CF_PTR argument;
 *   CF_ETOOBIG, CF_ENOMEM.
 * Any thread, including a task or callback. */
int cf_then(cf_future *f, cf_executor *ex, cf_task_fn *task, const cf_value *args,
            size_t nargs, cf_future **out);

/* cf_then() for the success path only (see above); the task gets the
 * antecedent's result as argument 0, then `args`.  Same returns, with
 * CF_ARGS_MAX - 1 arguments at most. */
int cf_then_ok(cf_future *f, cf_executor *ex, cf_task_fn *task, const cf_value *args,
               size_t nargs, cf_future **out);

/* cf_then() / cf_then_ok() whose task is submitted to `ex` with per-call
 * options, as cf_submit_with() would submit it: `opts->priority` orders
 * it among the calls queued on `ex` when it gets there, `opts->timeout`
 * limits it once a worker has begun it (a process pool kills the worker,
 * a thread pool raises cf_cancel_requested(); the derived future then
 * ends as that call does, CF_ETIMEDOUT in a process pool).
 * `opts->queue_timeout` is not used: a continuation's submit never waits
 * for room (CF_EFULL, see above).  `opts` NULL means the defaults, the
 * same as cf_then() / cf_then_ok().  Same returns as those, plus, creating
 * nothing:
 *   CF_EINVAL   a negative or NaN timeout, a priority out of range, or
 *               options other than the defaults with `ex` NULL (an inline
 *               task is neither queued nor stoppable by a timeout);
 *   CF_ENOTSUP  a priority other than the default on an engine that does
 *               not order calls (MPI).
 * The options are checked now, against `ex` as it is now.  Any thread,
 * including a task or callback. */
int cf_then_with(cf_future *f, cf_executor *ex, const cf_submit_options *opts,
                 cf_task_fn *task, const cf_value *args, size_t nargs, cf_future **out);
int cf_then_ok_with(cf_future *f, cf_executor *ex, const cf_submit_options *opts,
                    cf_task_fn *task, const cf_value *args, size_t nargs, cf_future **out);

/* ------------------------------------------------------------------------
 * Combinators
 *
 * Each returns a new standalone future (one reference, owned by the
 * caller) that completes when its condition holds, on the thread that
 * completed the input which made it hold (or at once in the calling
 * thread).  Like continuations, combinators fed one into the next
 * complete one after another in a loop on that thread, never nested, so
 * the stack does not grow with the length of the chain.  The combinator
 * holds a reference to every input until that
 * input completes, so the caller may release the inputs, or the result,
 * in any order.  Inputs may come from any mix of engines; duplicates are
 * allowed.  Cancelling the combinator's future cancels it alone, never
 * its inputs (as for continuations).  Errors create nothing:
 * CF_EINVAL (fs NULL with n > 0, a NULL or dead element, out NULL, or
 * n == 0 for cf_when_any()) or CF_ENOMEM.  Any thread.
 * ---------------------------------------------------------------------- */

/* Completes when every input has.  Its result is CF_BYTES holding n
 * int32_t, the outcome of each input in input order: what
 * cf_future_result() returns for it (CF_OK, CF_ETASK, CF_EBROKEN,
 * CF_ECANCELLED, ...).  Read them with cf_when_all_status().  n == 0
 * completes at once. */
int cf_when_all(cf_future *const *fs, size_t n, cf_future **out);

/* Completes as soon as one input has, with CF_I64 result: the index of
 * that input (the lowest index when several are already done). */
int cf_when_any(cf_future *const *fs, size_t n, cf_future **out);

/* Like cf_when_all(), but fails as soon as one input fails (finishes with
 * a status other than CF_OK), taking that input's failure: status, code,
 * type and message.  A cancelled input is not a failure (as CPython's
 * FIRST_EXCEPTION).  If none fails the result is cf_when_all()'s. */
int cf_when_all_or_fail(cf_future *const *fs, size_t n, cf_future **out);

/* Outcome `i` of a cf_when_all() / cf_when_all_or_fail() result, or
 * CF_EINVAL when `result` is not such a result or `i` is out of range. */
static inline int cf_when_all_status(const cf_value *result, size_t i)
{
    int32_t s;
    if (!result || result->kind != CF_BYTES || i >= result->size / sizeof s)
        return CF_EINVAL;
    __builtin_memcpy(&s, CF__CAST(const char *, result->as.bytes) + i * sizeof s, sizeof s);
    return s;
}

/* How many outcomes a cf_when_all() / cf_when_all_or_fail() result holds
 * (the n it was made with); 0 for NULL or a value of another kind. */
static inline size_t cf_when_all_count(const cf_value *result)
{
    if (!result || result->kind != CF_BYTES)
        return 0;
    return result->size / sizeof(int32_t);
}

/* ------------------------------------------------------------------------
 * Cancellation descriptor
 * ---------------------------------------------------------------------- */

/* A descriptor that turns readable once cf_cancel_requested(call) would
 * return true, so a task blocked in poll()/epoll_wait() on its own I/O can
 * watch it too and stop promptly, instead of waking up to poll a flag:
 * it turns readable on cf_future_interrupt() of the call, when the call's
 * cf_submit_with() timeout passes, and on cf_terminate_workers() /
 * cf_kill_workers() of its thread pool, and then stays readable.  The same
 * call gets the same descriptor each time.  It belongs to the call: do not
 * read, write or close it; it is closed when the task returns.  In a
 * process pool's worker it is valid but never turns readable (there an
 * interrupt or timeout kills the worker).  Only the thread running the
 * task, during the call.  Returns the descriptor (>= 0), CF_EINVAL (call
 * NULL or not running), CF_ENOMEM, CF_ESYS (no timerfd) or CF_ENOTSUP:
 * the descriptor is a Linux timerfd, so a library built with CF_PORTABLE
 * (POSIX interfaces only) has none - poll cf_cancel_requested() there. */
int cf_cancel_fd(cf_call *call);

#ifdef __cplusplus
}
#endif

#endif /* CFUTURES_H */
