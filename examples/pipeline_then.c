/* SPDX-License-Identifier: MIT */
/*
 * pipeline_then.c - futures that compose.  Each request is a chain
 *
 *     fetch (I/O pool) -> parse (CPU pool) -> check (inline)
 *
 * built with cf_then_ok() up front, and cf_when_all() gives one future for
 * the whole batch.  Nothing waits until the batch is done; a failure in
 * one step skips the rest of that chain and shows in its outcome.
 */
#include "example_util.h"

enum { REQUESTS = 5 };

/* "Fetches" record `id`: a line of text. */
static int fetch(cf_call *call)
{
    int64_t id = cf_arg_i64(call, 0);
    char line[64];
    snprintf(line, sizeof line, "id=%lld;name=%s", (long long)id,
             id == 3 ? "a-name-far-too-long" : "ok");
    return cf_return_str(call, line);
}

/* Parses the line: the length of its name. */
static int parse(cf_call *call)
{
    const char *name = strstr(cf_arg_str(call, 0), "name=");
    if (!name)
        return cf_raise(call, 1, "ValueError", "no name in the record");
    return cf_return_i64(call, (int64_t)strlen(name + 5));
}

/* Checks the parsed value (inline: cheap). */
static int check(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    if (n > 10)
        return cf_raise(call, 2, "ValueError", "name of %lld bytes, at most 10 allowed",
                        (long long)n);
    return cf_return_i64(call, n);
}

int main(void)
{
    cf_executor *io, *cpu;
    ex_check(cf_thread_pool_new(&io, NULL), "thread_pool_new");
    ex_check(cf_thread_pool_new(&cpu, NULL), "thread_pool_new");
    cf_future *done[REQUESTS];
    for (int i = 0; i < REQUESTS; i++) {
        cf_future *fetched, *parsed;
        ex_check(cf_submit(io, fetch, CF_ARGS(cf_i64(i)), &fetched), "submit");
        ex_check(cf_then_ok(fetched, cpu, parse, CF_NOARGS, &parsed), "then_ok");
        ex_check(cf_then_ok(parsed, NULL, check, CF_NOARGS, &done[i]), "then_ok");
        cf_future_release(fetched); /* the chain holds what it needs */
        cf_future_release(parsed);
    }
    cf_future *all;
    ex_check(cf_when_all(done, REQUESTS, &all), "when_all");
    const cf_value *statuses;
    ex_check(cf_future_result(all, CF_FOREVER, &statuses), "result");
    int ok = 0;
    for (int i = 0; i < REQUESTS; i++) {
        if (cf_when_all_status(statuses, (size_t)i) == CF_OK) {
            int64_t n;
            ex_check(cf_future_result_i64(done[i], 0, &n), "result_i64");
            printf("request %d: name of %lld bytes\n", i, (long long)n);
            ok++;
        } else {
            const cf_failure *why;
            ex_check(cf_future_exception(done[i], 0, &why), "exception");
            printf("request %d: %s: %s\n", i, cf_failure_type(why), cf_failure_message(why));
        }
        cf_future_release(done[i]);
    }
    printf("%d of %d requests succeeded\n", ok, REQUESTS);
    cf_future_release(all);
    ex_check(cf_executor_destroy(io), "executor_destroy");
    ex_check(cf_executor_destroy(cpu), "executor_destroy");
    return 0;
}
