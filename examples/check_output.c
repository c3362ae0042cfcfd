/* SPDX-License-Identifier: MIT */
/*
 * check_output.c - runs one example and compares what it prints with an
 * expected file (examples/expected/<name>.txt).  Used by ctest.
 *
 *     check_output EXPECTED PROGRAM [ARGS...]
 *
 * The test passes when the program exits with status 0, writes nothing to
 * stderr (sanitizer reports, library log lines and the examples' own error
 * messages all go there) and its stdout matches EXPECTED line by line.
 * An example whose point is what it writes to stderr (a progress bar) puts
 * a line {STDERR} in EXPECTED: the lines before it are matched against
 * stdout, the lines after it against stderr (so stray output there still
 * fails).
 *
 * A program still running after CHECK_OUTPUT_TIMEOUT seconds (default 50,
 * below ctest's limit) is taken to hang: its threads' stacks are printed
 * with gdb when gdb is installed, then it is killed and the test fails.
 *
 * Expected-file syntax: every line must match one whole output line, as
 * literal text, except for these markers:
 *
 *   # text        a comment, ignored (explains why a check is loose)
 *   {ADDR}        a pointer as printed by %p: 0x and hex digits
 *   {INT}         an integer
 *   {NUM}         a number as Python prints a float (0.5, 1.2e-05, 3)
 *   {ANY}         any text, possibly empty
 *   {@X}          a name made of letters, digits, '_', '.', '-' (a thread
 *                 index, an address); the first line that matches binds X
 *                 and later {@X} must be the same text.  One {@X} per line.
 *   {RE}regex     (at the start of a line) the rest is a POSIX extended
 *                 regular expression for the whole line
 *   {UNORDERED}   the lines up to {END} match the same number of output
 *   ...           lines in any order - only for lines whose order really
 *   {END}         depends on thread timing
 *   {SKIP}        any number of output lines, up to the first one that
 *                 matches the next expected line (or the rest of output)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_VARS 32

typedef struct {
    char name[32];
    char value[128];
} binding;

static binding vars[MAX_VARS];
static size_t nvars;

static const char *var_value(const char *name)
{
    for (size_t i = 0; i < nvars; i++)
        if (strcmp(vars[i].name, name) == 0)
            return vars[i].value;
    return NULL;
}

/* Growable string. */
typedef struct {
    char *s;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s) {
            perror("realloc");
            exit(2);
        }
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void buf_adds(buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void add_escaped(buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", s[i]))
            buf_add(b, "\\", 1);
        buf_add(b, &s[i], 1);
    }
}

/* Matches one output line against one expected line.  On success, a
 * {@X} seen for the first time is bound. */
static bool line_matches(const char *exp, const char *actual)
{
    buf re = {0};
    char unbound[32] = "";
    buf_adds(&re, "^");
    if (strncmp(exp, "{RE}", 4) == 0) {
        const char *r = exp + 4;
        if (*r == '^')
            r++;
        buf_adds(&re, r);
        if (re.len > 1 && re.s[re.len - 1] == '$')
            re.s[--re.len] = '\0';
    } else {
        const char *p = exp;
        while (*p) {
            const char *brace = strchr(p, '{');
            if (!brace) {
                add_escaped(&re, p, strlen(p));
                break;
            }
            add_escaped(&re, p, (size_t)(brace - p));
            const char *close = strchr(brace, '}');
            size_t toklen = close ? (size_t)(close - brace + 1) : 0;
            if (close && strncmp(brace, "{ADDR}", toklen) == 0 && toklen == 6)
                buf_adds(&re, "0x[0-9a-fA-F]+");
            else if (close && toklen == 5 && strncmp(brace, "{INT}", 5) == 0)
                buf_adds(&re, "-?[0-9]+");
            else if (close && toklen == 5 && strncmp(brace, "{NUM}", 5) == 0)
                buf_adds(&re, "-?[0-9]+(\\.[0-9]*)?([eE][-+]?[0-9]+)?");
            else if (close && toklen == 5 && strncmp(brace, "{ANY}", 5) == 0)
                buf_adds(&re, ".*");
            else if (close && brace[1] == '@' && toklen > 3 && toklen < 34) {
                char name[32];
                memcpy(name, brace + 2, toklen - 3);
                name[toklen - 3] = '\0';
                const char *v = var_value(name);
                if (v) {
                    add_escaped(&re, v, strlen(v));
                } else {
                    if (unbound[0]) {
                        fprintf(stderr, "check_output: two new variables in "
                                        "one line: %s\n", exp);
                        exit(2);
                    }
                    snprintf(unbound, sizeof unbound, "%s", name);
                    buf_adds(&re, "([A-Za-z0-9_.-]+)");
                }
            } else {
                /* Not a marker: a literal brace. */
                add_escaped(&re, brace, 1);
                p = brace + 1;
                continue;
            }
            p = brace + toklen;
        }
    }
    buf_adds(&re, "$");

    regex_t rx;
    int rc = regcomp(&rx, re.s, REG_EXTENDED);
    if (rc != 0) {
        fprintf(stderr, "check_output: bad pattern from line: %s\n", exp);
        exit(2);
    }
    regmatch_t m[2];
    /* The variable group is the only group for literal lines; a {RE} line
     * has no variables, so its groups are ignored. */
    bool ok = regexec(&rx, actual, 2, m, 0) == 0;
    if (ok && unbound[0] && m[1].rm_so >= 0) {
        if (nvars == MAX_VARS) {
            fprintf(stderr, "check_output: too many variables\n");
            exit(2);
        }
        size_t n = (size_t)(m[1].rm_eo - m[1].rm_so);
        if (n >= sizeof vars[0].value)
            n = sizeof vars[0].value - 1;
        snprintf(vars[nvars].name, sizeof vars[nvars].name, "%s", unbound);
        memcpy(vars[nvars].value, actual + m[1].rm_so, n);
        vars[nvars].value[n] = '\0';
        nvars++;
    }
    regfree(&rx);
    free(re.s);
    return ok;
}

/* Splits text into lines (the trailing newline does not make an empty
 * last line).  The strings point into `text`, which is modified. */
static char **split_lines(char *text, size_t *count)
{
    size_t cap = 16, n = 0;
    char **lines = malloc(cap * sizeof *lines);
    char *p = text;
    while (lines && *p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (n == cap) {
            cap *= 2;
            lines = realloc(lines, cap * sizeof *lines);
            if (!lines)
                break;
        }
        lines[n++] = p;
        if (!nl)
            break;
        p = nl + 1;
    }
    if (!lines) {
        perror("malloc");
        exit(2);
    }
    *count = n;
    return lines;
}

static char *read_all(FILE *f)
{
    buf b = {0};
    char chunk[4096];
    size_t n;
    buf_add(&b, "", 0);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_add(&b, chunk, n);
    return b.s;
}

static int compare(char **exp, size_t nexp, char **act, size_t nact)
{
    size_t a = 0;
    for (size_t e = 0; e < nexp; e++) {
        const char *x = exp[e];
        if (x[0] == '#')
            continue;
        if (strcmp(x, "{SKIP}") == 0) {
            /* Find the next real expected line. */
            size_t next = e + 1;
            while (next < nexp && exp[next][0] == '#')
                next++;
            if (next == nexp)
                return 0; /* the rest of the output is free */
            while (a < nact && !line_matches(exp[next], act[a]))
                a++;
            continue;
        }
        if (strcmp(x, "{UNORDERED}") == 0) {
            size_t end = e + 1;
            while (end < nexp && strcmp(exp[end], "{END}") != 0)
                end++;
            if (end == nexp) {
                fprintf(stderr, "check_output: {UNORDERED} without {END}\n");
                return 2;
            }
            size_t k = 0;
            bool used[64] = {false};
            for (size_t i = e + 1; i < end; i++)
                if (exp[i][0] != '#')
                    k++;
            if (k > 64) {
                fprintf(stderr, "check_output: block too long\n");
                return 2;
            }
            /* Each of the next k output lines takes the first unused
             * expected line of the block that it matches. */
            for (size_t j = 0; j < k; j++, a++) {
                if (a >= nact) {
                    fprintf(stderr, "output ended inside an {UNORDERED} "
                                    "block (expected line %zu)\n", e + 1);
                    return 1;
                }
                bool found = false;
                size_t slot = 0;
                for (size_t i = e + 1; i < end; i++) {
                    if (exp[i][0] == '#')
                        continue;
                    if (!used[slot] && line_matches(exp[i], act[a])) {
                        used[slot] = found = true;
                        break;
                    }
                    slot++;
                }
                if (!found) {
                    fprintf(stderr, "output line %zu matches no line of the "
                                    "{UNORDERED} block at expected line "
                                    "%zu:\n  got: %s\n", a + 1, e + 1, act[a]);
                    return 1;
                }
            }
            e = end;
            continue;
        }
        if (a >= nact) {
            fprintf(stderr, "output ended early; expected line %zu: %s\n",
                    e + 1, x);
            return 1;
        }
        if (!line_matches(x, act[a])) {
            fprintf(stderr, "mismatch at output line %zu (expected line %zu)"
                            ":\n  expected: %s\n  got:      %s\n",
                    a + 1, e + 1, x, act[a]);
            return 1;
        }
        a++;
    }
    if (a < nact) {
        fprintf(stderr, "unexpected extra output at line %zu: %s\n", a + 1,
                act[a]);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s EXPECTED PROGRAM [ARGS...]\n", argv[0]);
        return 2;
    }
    FILE *ef = fopen(argv[1], "r");
    if (!ef) {
        perror(argv[1]);
        return 2;
    }
    char *exp_text = read_all(ef);
    fclose(ef);

    /* The program writes into two temporary files: no pipe to keep
     * drained, and stdout and stderr stay apart. */
    FILE *out = tmpfile(), *err = tmpfile();
    if (!out || !err) {
        perror("tmpfile");
        return 2;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        dup2(fileno(out), 1);
        dup2(fileno(err), 2);
        execv(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    double limit = 50;
    const char *env = getenv("CHECK_OUTPUT_TIMEOUT");
    if (env && atof(env) > 0)
        limit = atof(env);
    struct timespec t0, now, tick = {0, 10 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int status = 0;
    bool hung = false;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (double)(now.tv_sec - t0.tv_sec) +
                         (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if (r < 0 || elapsed > limit) {
            hung = r == 0;
            break;
        }
        nanosleep(&tick, NULL);
    }
    if (hung) {
        printf("---- %s still running after %g s: stacks ----\n", argv[2],
               limit);
        fflush(stdout);
        char cmd[128];
        snprintf(cmd, sizeof cmd,
                 "command -v gdb >/dev/null && gdb -p %d -batch -ex "
                 "'thread apply all bt' 2>&1 | grep -E '^(Thread|#)'",
                 (int)pid);
        if (system(cmd) != 0)
            printf("(no gdb to show them)\n");
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    rewind(out);
    rewind(err);
    char *out_text = read_all(out);
    char *err_text = read_all(err);
    fclose(out);
    fclose(err);

    printf("---- stdout of %s ----\n%s", argv[2], out_text);
    if (err_text[0])
        printf("---- stderr ----\n%s", err_text);
    printf("----\n");
    fflush(stdout);

    int result = 0;
    if (hung) {
        fprintf(stderr, "program hung (killed after %g s)\n", limit);
        result = 1;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFSIGNALED(status))
            fprintf(stderr, "program killed by signal %d\n", WTERMSIG(status));
        else
            fprintf(stderr, "program exited with status %d\n",
                    WEXITSTATUS(status));
        result = 1;
    }
    size_t nexp, nact;
    char **exp = split_lines(exp_text, &nexp);
    char **act = split_lines(out_text, &nact);
    size_t nout = 0;
    while (nout < nexp && strcmp(exp[nout], "{STDERR}") != 0)
        nout++;
    if (nout == nexp && err_text[0]) {
        fprintf(stderr, "program wrote to stderr\n");
        result = 1;
    }
    int cmp = compare(exp, nout, act, nact);
    if (cmp != 0)
        result = cmp;
    if (nout < nexp) {
        size_t nerr;
        char **errs = split_lines(err_text, &nerr);
        cmp = compare(exp + nout + 1, nexp - nout - 1, errs, nerr);
        if (cmp != 0) {
            fprintf(stderr, "(in stderr)\n");
            result = cmp;
        }
        free(errs);
    }
    if (result == 0)
        printf("output matches %s\n", argv[1]);
    free(exp);
    free(act);
    free(exp_text);
    free(out_text);
    free(err_text);
    return result;
}
