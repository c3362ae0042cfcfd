/* SPDX-License-Identifier: MIT */
/*
 * demo.c - a short tour of cfutures (`make demo`), built from the seed
 * examples (PyMOTW "concurrent.futures" and the Python docs), shortened:
 *
 *   1. submit() and the future's repr   (futures_thread_pool_submit.py)
 *   2. map() keeps input order          (futures_thread_pool_map.py)
 *   3. as_completed() in finish order   (futures_as_completed.py)
 *   4. a done-callback                  (futures_future_callback.py)
 *   5. a task raising an exception      (futures_future_exception.py)
 *   6. the same calls on worker processes: only the constructor changes,
 *      and a call that crashes its worker fails alone
 *      (futures_process_pool_map.py, futures_process_pool_broken.py)
 *   7. speed: N tiny calls submitted then collected, cfutures against the
 *      same program on CPython's ThreadPoolExecutor (demo_speed.py), both
 *      measured now, on this machine.
 *
 * Sleeps are a tenth of PyMOTW's so the tour takes about two seconds plus
 * the CPython run.
 */
#include <sys/wait.h>
#include <unistd.h>

#include "example_util.h"

#ifndef CF_DEMO_SPEED_SCRIPT
#define CF_DEMO_SPEED_SCRIPT "demo_speed.py"
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEMO_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DEMO_SANITIZED 1
#endif
#endif
#ifndef DEMO_SANITIZED
#define DEMO_SANITIZED 0
#endif

static ex_event task_started = EX_EVENT_INIT;

/* PyMOTW's task(n), sleeping n/100 s. */
static int task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    printf("  %s: sleeping %lld\n", cf_thread_name(), (long long)n);
    ex_event_set(&task_started);
    ex_sleep((double)n / 100);
    printf("  %s: done with %lld\n", cf_thread_name(), (long long)n);
    return cf_return_f64(call, (double)n / 10);
}

static void section_submit(cf_executor *ex)
{
    printf("1. submit() returns a future at once (futures_thread_pool_submit)"
           "\n");
    cf_future *f;
    ex_check(cf_submit(ex, task, CF_ARGS(cf_i64(5)), &f), "cf_submit");
    ex_event_wait(&task_started); /* so the repr below says "running" */
    char repr[128], num[32];
    cf_future_format(f, repr, sizeof repr);
    printf("  main: future: %s\n", repr);
    double r;
    ex_check(cf_future_result_f64(f, CF_FOREVER, &r), "result");
    cf_future_format(f, repr, sizeof repr);
    printf("  main: result: %s\n", ex_float_repr(r, num, sizeof num));
    printf("  main: future after result: %s\n\n", repr);
    cf_future_release(f);
}

static void section_map(cf_executor *ex)
{
    printf("2. map() yields results in input order, whatever order they "
           "finish in\n   (futures_thread_pool_map)\n");
    cf_value in_values[5];
    for (int i = 0; i < 5; i++)
        in_values[i] = cf_i64(5 - i);
    cf_map_input in = cf_input_array(in_values, 5);
    cf_map_iter *it;
    ex_check(cf_map(ex, task, &in, 1, NULL, &it), "cf_map");
    char text[128] = "[", num[32];
    const cf_value *v;
    int rc;
    while ((rc = cf_map_next(it, &v, NULL)) == CF_OK) {
        if (text[1])
            strcat(text, ", ");
        strcat(text, ex_float_repr(v->as.f64, num, sizeof num));
    }
    if (rc != CF_EDONE)
        ex_check(rc, "cf_map_next");
    cf_map_close(it);
    printf("  main: results: %s]\n\n", text);
}

/* Sleeps longer for smaller n, so the calls finish in reverse order. */
static int pair_task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    ex_sleep(0.02 * (double)(6 - n));
    return cf_return_i64(call, n);
}

static void section_as_completed(void)
{
    printf("3. as_completed() yields futures as they finish "
           "(futures_as_completed)\n");
    /* As in PyMOTW, as many workers as calls, so all run at once. */
    CF_WITH_EXECUTOR(ex);
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 5;
    ex_check(cf_thread_pool_new(&ex, &opts), "cf_thread_pool_new");
    cf_future *fs[5];
    for (int i = 0; i < 5; i++)
        ex_check(cf_submit(ex, pair_task, CF_ARGS(cf_i64(i + 1)), &fs[i]),
                 "cf_submit");
    cf_as_completed_iter *it;
    ex_check(cf_as_completed(fs, 5, CF_FOREVER, &it), "cf_as_completed");
    cf_future *f;
    printf("  finished:");
    while (cf_as_completed_next(it, &f) == CF_OK) {
        int64_t n;
        ex_check(cf_future_result_i64(f, 0, &n), "result");
        printf(" %lld", (long long)n);
    }
    printf("   (submitted 1 2 3 4 5)\n\n");
    cf_as_completed_free(it);
    for (int i = 0; i < 5; i++)
        cf_future_release(fs[i]);
}

static ex_event callback_ran = EX_EVENT_INIT;

static int done(cf_future *fn, void *arg)
{
    const cf_value *v;
    if (cf_future_result(fn, 0, &v) == CF_OK) {
        char num[32];
        printf("  %s: value returned: %s (the callback ran in %s)\n",
               (const char *)arg, ex_float_repr(v->as.f64, num, sizeof num),
               cf_thread_name());
    }
    ex_event_set(&callback_ran);
    return 0;
}

static void section_callback(cf_executor *ex)
{
    printf("4. add_done_callback() runs when the call completes "
           "(futures_future_callback)\n");
    cf_future *f;
    ex_check(cf_submit(ex, task, CF_ARGS(cf_i64(3)), &f), "cf_submit");
    ex_check(cf_future_add_done_callback(f, done, "3"), "add_done_callback");
    ex_check(cf_future_result(f, CF_FOREVER, NULL), "result");
    /* result() may return before the worker has run the callback; wait
     * for it so the tour's lines stay in order. */
    ex_event_wait(&callback_ran);
    printf("\n");
    cf_future_release(f);
}

static int failing_task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    return cf_raise(call, 1, "ValueError", "the value %lld is no good",
                    (long long)n);
}

static void section_exception(cf_executor *ex)
{
    printf("5. a task's failure travels to its future "
           "(futures_future_exception)\n");
    cf_future *f;
    ex_check(cf_submit(ex, failing_task, CF_ARGS(cf_i64(5)), &f), "cf_submit");
    int rc = cf_future_result(f, CF_FOREVER, NULL);
    const cf_failure *e = NULL;
    (void)cf_future_exception(f, 0, &e);
    char repr[128];
    cf_future_format(f, repr, sizeof repr);
    printf("  result() -> %s; %s: %s\n  %s\n\n", cf_err_name(rc),
           cf_failure_type(e), cf_failure_message(e), repr);
    cf_future_release(f);
}

/* ---- 6. speed ---------------------------------------------------------- */

static int square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}

/* Section 6: tasks sent to worker processes travel by name. */
static int pid_of_worker(cf_call *call)
{
    return cf_return_i64(call, (int64_t)getpid());
}
CF_TASK(pid_of_worker);

static int crash_on_three(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    if (n == 3)
        abort(); /* the worker dies; the program does not */
    return cf_return_i64(call, n * n);
}
CF_TASK(crash_on_three);

static void section_processes(void)
{
    printf("6. the same calls on worker processes: only the constructor "
           "changes\n");
    cf_process_pool_options opts;
    cf_process_pool_options_init(&opts);
    opts.max_workers = 2;
    opts.on_crash = CF_CRASH_REPLACES_WORKER; /* default: the pool breaks */
    CF_WITH_EXECUTOR(ex);
    ex_check(cf_process_pool_new(&ex, &opts), "cf_process_pool_new");
    cf_future *f;
    ex_check(cf_submit(ex, pid_of_worker, CF_NOARGS, &f), "cf_submit");
    int64_t pid = 0;
    ex_check(cf_future_result_i64(f, CF_FOREVER, &pid), "cf_future_result_i64");
    cf_future_release(f);
    printf("  main: pid %lld, a worker: pid %lld\n", (long long)getpid(),
           (long long)pid);
    cf_value in[5];
    for (int i = 0; i < 5; i++)
        in[i] = cf_i64(i + 1);
    cf_map_input input = cf_input_array(in, 5);
    cf_map_iter *it;
    ex_check(cf_map(ex, crash_on_three, &input, 1, NULL, &it), "cf_map");
    const cf_value *v;
    const cf_failure *fail;
    for (int i = 0; i < 5; i++) {
        int rc = cf_map_next(it, &v, &fail);
        if (rc == CF_OK)
            printf("  square(%d) = %lld\n", i + 1, (long long)v->as.i64);
        else
            printf("  square(%d) failed: %s: %s\n", i + 1, cf_failure_type(fail),
                   cf_failure_message(fail));
    }
    cf_map_close(it);
    ex_check(cf_submit(ex, crash_on_three, CF_ARGS(cf_i64(6)), &f), "cf_submit");
    ex_check(cf_future_result_i64(f, CF_FOREVER, &pid), "cf_future_result_i64");
    cf_future_release(f);
    printf("  main: a new worker took its place: square(6) = %lld\n\n", (long long)pid);
}


static void format_rate(double r, char *buf, size_t size)
{
    if (r >= 1e6)
        snprintf(buf, size, "%.1fM", r / 1e6);
    else if (r >= 1e3)
        snprintf(buf, size, "%.0fk", r / 1e3);
    else
        snprintf(buf, size, "%.0f", r);
}

/* Submits n calls of square() to a default thread pool, then collects
 * every result, like demo_speed.py; returns calls per second. */
static double cfutures_rate(long n, int64_t *total)
{
    cf_executor *ex;
    ex_check(cf_thread_pool_new(&ex, NULL), "cf_thread_pool_new");
    cf_future **fs = malloc((size_t)n * sizeof *fs);
    if (!fs) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    double start = ex_now();
    for (long i = 0; i < n; i++)
        ex_check(cf_submit(ex, square, CF_ARGS(cf_i64(i)), &fs[i]),
                 "cf_submit");
    int64_t sum = 0;
    for (long i = 0; i < n; i++) {
        int64_t r;
        ex_check(cf_future_result_i64(fs[i], CF_FOREVER, &r), "result");
        sum += r;
    }
    double elapsed = ex_now() - start;
    for (long i = 0; i < n; i++)
        cf_future_release(fs[i]);
    free(fs);
    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    *total = sum;
    return (double)n / elapsed;
}

static void section_speed(void)
{
    /* Sanitizer builds are many times slower; a smaller run keeps the
     * tour short there, and the line says the numbers mean little. */
    const long n = DEMO_SANITIZED ? 20000 : 100000;
    const char *note = DEMO_SANITIZED ? " [sanitizer build: not representative]"
                                      : "";
    printf("7. %ld tiny calls (square(x)) submitted, then collected, on a "
           "default thread pool (%d workers)\n",
           n, cf_thread_pool_default_workers());

    int64_t c_total;
    double c_rate = cfutures_rate(n, &c_total);
    char c_text[32];
    format_rate(c_rate, c_text, sizeof c_text);

    const char *script = CF_DEMO_SPEED_SCRIPT;
    if (access(script, R_OK) != 0) {
        printf("speed: cfutures %s tasks/s; CPython comparison skipped (%s "
               "not found)%s\n",
               c_text, script, note);
        return;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "python3 '%s' %ld 2>&1", script, n);
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    char line[512] = "";
    if (p) {
        if (!fgets(line, sizeof line, p))
            line[0] = '\0';
        char rest[512];
        while (fgets(rest, sizeof rest, p)) {
        } /* drain, so python3 is not killed by SIGPIPE */
    }
    int status = p ? pclose(p) : -1;
    line[strcspn(line, "\n")] = '\0';

    double py_rate;
    long long py_total;
    if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        printf("speed: cfutures %s tasks/s; CPython comparison skipped "
               "(python3 not found)%s\n",
               c_text, note);
    } else if (status != 0 ||
               sscanf(line, "%lf %lld", &py_rate, &py_total) != 2 ||
               py_rate <= 0) {
        printf("speed: cfutures %s tasks/s; CPython comparison skipped "
               "(python3 failed: %s)%s\n",
               c_text, line, note);
    } else if (py_total != c_total) {
        printf("speed: cfutures %s tasks/s; CPython comparison skipped "
               "(sums differ: %lld vs %lld)%s\n",
               c_text, py_total, (long long)c_total, note);
    } else {
        char py_text[32];
        format_rate(py_rate, py_text, sizeof py_text);
        double ratio = c_rate / py_rate;
        printf("speed: cfutures %s tasks/s vs CPython %s tasks/s on this "
               "machine (%.*fx)%s\n",
               c_text, py_text, ratio < 10 ? 1 : 0, ratio, note);
    }
}

int main(int argc, char **argv)
{
    cf_process_init(argc, argv); /* process-pool workers start here */
    printf("cfutures %d.%d.%d: Python's concurrent.futures in C - a short "
           "tour\n\n",
           CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH);
    {
        CF_WITH_EXECUTOR(ex);
        cf_thread_pool_options opts;
        cf_thread_pool_options_init(&opts);
        opts.max_workers = 2;
        ex_check(cf_thread_pool_new(&ex, &opts), "cf_thread_pool_new");
        section_submit(ex);
        section_map(ex);
        section_as_completed();
        section_callback(ex);
        section_exception(ex);
    }
    section_processes();
    section_speed();
    return 0;
}
