/* SPDX-License-Identifier: MIT */
/*
 * bench_util.h - what bench_thread.c and bench_process.c have in common:
 * fatal errors, the watchdog, the clock, medians and summaries over rounds,
 * number formats, the options both programs take, and running the CPython
 * peer script and reading its JSON lines.
 *
 * Every function here is static and used by both programs.  Before the
 * #include, a program defines BENCH_NAME (its name, the prefix of its
 * messages) and CF_BENCH_PEER_SCRIPT (the default path of its peer).
 */
#ifndef CF_BENCH_UTIL_H
#define CF_BENCH_UTIL_H

#include "cfutures.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_util.h"
#endif
#ifndef CF_BENCH_PEER_SCRIPT
#error "define CF_BENCH_PEER_SCRIPT before including bench_util.h"
#endif

#define MAX_ROUNDS 99

/* ------------------------------------------------------------------------
 * Errors, watchdog, clock, memory
 * ---------------------------------------------------------------------- */

static void die(const char *fmt, ...) CF__PRINTF(1, 2);
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(BENCH_NAME ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Fails the run on any cfutures error, with the library's message. */
#define CHECK(expr)                                                           \
    do {                                                                      \
        int check_rc_ = (expr);                                               \
        if (check_rc_ != CF_OK)                                               \
            die("%s:%d: %s -> %s (%s)", __FILE__, __LINE__, #expr,           \
                cf_err_name(check_rc_), cf_last_error_message());             \
    } while (0)

/* Watchdog: every phase re-arms an alarm; a phase that does not finish in
 * time (a lost wake-up, a task that never runs) ends the program with a
 * message naming the phase instead of hanging. */
static volatile sig_atomic_t g_watchdog_s = 120;
static const char *volatile g_phase = "start";

static void on_watchdog(int sig)
{
    (void)sig;
    static const char a[] = BENCH_NAME ": watchdog: no progress in phase '";
    static const char b[] = "' (a task was lost or a wait never returned)\n";
    ssize_t r = write(2, a, sizeof a - 1);
    r = write(2, g_phase, strlen(g_phase));
    r = write(2, b, sizeof b - 1);
    (void)r;
    _exit(3);
}

static void phase(const char *name, unsigned scale)
{
    g_phase = name;
    alarm((unsigned)g_watchdog_s * scale);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        die("out of memory (%zu bytes)", size);
    return p;
}

/* After the n results of a cf_map(): checks that the iterator is at its
 * end (CF_EDONE), then closes it. */
static void map_close_done(cf_map_iter *it, size_t n)
{
    int rc = cf_map_next(it, NULL, NULL);
    if (rc != CF_EDONE)
        die("map: expected CF_EDONE after %zu results, got %s", n,
            cf_err_name(rc));
    cf_map_close(it);
}

/* ------------------------------------------------------------------------
 * Medians and summaries over rounds
 * ---------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (mean of the middle two for an even n); sorts v. */
static double median_of(double *v, size_t n)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* Summary over rounds of one figure: median, min and max. */
typedef struct summary {
    double med, lo, hi;
} summary;

/* Summary of v[0..n), n <= MAX_ROUNDS, leaving out NANs (a figure missing
 * in a round); all NAN when nothing is left. */
static summary summarize(const double *v, size_t n)
{
    summary r = {NAN, NAN, NAN};
    double tmp[MAX_ROUNDS];
    size_t k = 0;
    r.lo = INFINITY;
    r.hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (isnan(v[i]))
            continue;
        tmp[k++] = v[i];
        r.lo = v[i] < r.lo ? v[i] : r.lo;
        r.hi = v[i] > r.hi ? v[i] : r.hi;
    }
    if (k == 0) {
        r.lo = r.hi = NAN;
        return r;
    }
    r.med = median_of(tmp, k);
    return r;
}

/* ------------------------------------------------------------------------
 * Number formats ("-" for NAN)
 * ---------------------------------------------------------------------- */

static const char *fmt_rate(char *buf, size_t size, double r)
{
    if (isnan(r))
        snprintf(buf, size, "-");
    else if (r >= 1e6)
        snprintf(buf, size, "%.2f M/s", r / 1e6);
    else if (r >= 1e3)
        snprintf(buf, size, "%.1f k/s", r / 1e3);
    else
        snprintf(buf, size, "%.0f /s", r);
    return buf;
}

/* A ratio, "2.50x", followed by `what`. */
static const char *fmt_x(char *buf, size_t size, double x, const char *what)
{
    if (isnan(x))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.2fx%s", x, what);
    return buf;
}

/* ------------------------------------------------------------------------
 * Options both programs take
 * ---------------------------------------------------------------------- */

static size_t parse_size(const char *flag, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = s ? strtoull(s, &end, 10) : 0;
    if (!s || errno || *end || v == 0 || v > (1ull << 32))
        die("%s needs a positive integer", flag);
    return (size_t)v;
}

/* When argv[*i] is `flag`: parses the value after it into *out, steps *i
 * over the value, sets *set (if given) and returns true. */
static bool opt_size(const char *flag, int argc, char **argv, int *i,
                     size_t *out, bool *set)
{
    if (strcmp(argv[*i], flag) != 0)
        return false;
    *out = parse_size(flag, *i + 1 < argc ? argv[*i + 1] : NULL);
    ++*i;
    if (set)
        *set = true;
    return true;
}

typedef struct bench_opts {
    size_t n, m, rounds, py_n, py_m, watchdog;
    bool quick, use_python, verbose;
    bool n_set, m_set, r_set, watchdog_set;
} bench_opts;

static bench_opts bench_opts_default(size_t n, size_t m, size_t rounds)
{
    bench_opts o = {0};
    o.n = n;
    o.m = m;
    o.rounds = rounds;
    o.use_python = true;
    return o;
}

/* Takes argv[*i] (and the value after it) when it is one of the options
 * both programs have: --quick, --no-python, -v, -n, -m, -r, --watchdog,
 * --py-n, --py-m.  False for any other. */
static bool bench_opt(bench_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--quick"))
        o->quick = true;
    else if (!strcmp(a, "--no-python"))
        o->use_python = false;
    else if (!strcmp(a, "-v"))
        o->verbose = true;
    else
        return opt_size("-n", argc, argv, i, &o->n, &o->n_set) ||
               opt_size("-m", argc, argv, i, &o->m, &o->m_set) ||
               opt_size("-r", argc, argv, i, &o->rounds, &o->r_set) ||
               opt_size("--watchdog", argc, argv, i, &o->watchdog,
                        &o->watchdog_set) ||
               opt_size("--py-n", argc, argv, i, &o->py_n, NULL) ||
               opt_size("--py-m", argc, argv, i, &o->py_m, NULL);
    return true;
}

/* After the options: with --quick, quick_n / quick_m / one round / a
 * quick_watchdog-second watchdog for what was not given; at most
 * MAX_ROUNDS rounds; the CPython sizes n / py_n_div and m / py_m_div (at
 * least 1) unless given. */
static void bench_opts_finish(bench_opts *o, size_t quick_n, size_t quick_m,
                              size_t quick_watchdog, size_t py_n_div,
                              size_t py_m_div)
{
    if (o->quick) { /* explicit options still win */
        o->n = o->n_set ? o->n : quick_n;
        o->m = o->m_set ? o->m : quick_m;
        o->rounds = o->r_set ? o->rounds : 1;
    }
    if (o->watchdog_set)
        g_watchdog_s = (sig_atomic_t)o->watchdog;
    else if (o->quick)
        g_watchdog_s = (sig_atomic_t)quick_watchdog;
    if (o->rounds > MAX_ROUNDS)
        die("-r: at most %d rounds", MAX_ROUNDS);
    if (!o->py_n)
        o->py_n = o->n / py_n_div > 0 ? o->n / py_n_div : 1;
    if (!o->py_m)
        o->py_m = o->m / py_m_div > 0 ? o->m / py_m_div : 1;
}

/* ------------------------------------------------------------------------
 * The CPython peer: a script run through popen() that prints one flat JSON
 * object per line, the last one {"done": true}
 * ---------------------------------------------------------------------- */

typedef enum peer_status { PEER_OK, PEER_MISSING, PEER_FAILED } peer_status;

/* The number after "key": in a flat JSON line, or NAN. */
static double json_num(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return NAN;
    p += strlen(pat);
    char *end;
    errno = 0;
    double v = strtod(p, &end);
    return (end == p || errno) ? NAN : v;
}

/* The string after "key": in a flat JSON line (no escapes), or false. */
static bool json_str(const char *line, const char *key, char *buf, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    const char *p = strstr(line, pat);
    if (!p || size == 0)
        return false;
    p += strlen(pat);
    const char *q = strchr(p, '"');
    if (!q)
        return false;
    size_t len = (size_t)(q - p) < size - 1 ? (size_t)(q - p) : size - 1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return true;
}

/* Appends s to the command in single quotes, for /bin/sh. */
static void shell_quote(char *cmd, size_t size, const char *s)
{
    size_t len = strlen(cmd);
    if (len + 1 < size)
        cmd[len++] = '\'';
    for (; *s && len + 5 < size; s++) {
        if (*s == '\'') {
            memcpy(cmd + len, "'\\''", 4);
            len += 4;
        } else {
            cmd[len++] = *s;
        }
    }
    if (len + 1 < size)
        cmd[len++] = '\'';
    cmd[len] = '\0';
}

static const char *peer_python(void)
{
    const char *py = getenv("CF_BENCH_PYTHON");
    return py && *py ? py : "python3";
}

static const char *peer_script(void)
{
    const char *s = getenv("CF_BENCH_PEER");
    return s && *s ? s : CF_BENCH_PEER_SCRIPT;
}

static peer_status peer_incomplete(char *why, size_t why_size)
{
    snprintf(why, why_size, "incomplete output from %s", peer_script());
    return PEER_FAILED;
}

/* Runs the peer once with the arguments `args` (already quoted for the
 * shell).  Its first line, {"peer": ...}, goes to on_header(line,
 * header_ctx) after its "version" is copied into version (size
 * version_size; "?" when missing); each {"metric": name, ...} line goes to
 * on_metric(name, line, metric_ctx).
 * PEER_MISSING when the interpreter is not on PATH (exit status 127 from
 * the shell); PEER_FAILED with the reason in `why` when the peer cannot
 * be started, fails or stops before its last line.  The caller checks
 * that every figure it needs came. */
static peer_status peer_run(const char *args, char *version,
                            size_t version_size,
                            void (*on_header)(const char *line, void *ctx),
                            void *header_ctx,
                            void (*on_metric)(const char *name,
                                              const char *line, void *ctx),
                            void *metric_ctx, char *why, size_t why_size)
{
    char cmd[4096] = "command -v ";
    shell_quote(cmd, sizeof cmd, peer_python());
    strncat(cmd, " >/dev/null 2>&1 || exit 127; exec ", sizeof cmd - strlen(cmd) - 1);
    shell_quote(cmd, sizeof cmd, peer_python());
    strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
    shell_quote(cmd, sizeof cmd, peer_script());
    strncat(cmd, args, sizeof cmd - strlen(cmd) - 1);

    bool done = false;
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, why_size, "popen failed: %s", strerror(errno));
        return PEER_FAILED;
    }
    char line[1024];
    while (fgets(line, sizeof line, p)) {
        char name[32];
        if (strstr(line, "\"peer\":")) {
            if (!json_str(line, "version", version, version_size))
                snprintf(version, version_size, "?");
            on_header(line, header_ctx);
        } else if (strstr(line, "\"done\": true")) {
            done = true;
        } else if (json_str(line, "metric", name, sizeof name)) {
            on_metric(name, line, metric_ctx);
        }
    }
    int st = pclose(p);
    if (st == -1) {
        snprintf(why, why_size, "pclose failed: %s", strerror(errno));
        return PEER_FAILED;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
        snprintf(why, why_size, "%s not found", peer_python());
        return PEER_MISSING;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(why, why_size, "%s %s exited with status %d", peer_python(),
                 peer_script(), WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        return PEER_FAILED;
    }
    return done ? PEER_OK : peer_incomplete(why, why_size);
}

#endif /* CF_BENCH_UTIL_H */
