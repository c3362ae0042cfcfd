/* SPDX-License-Identifier: MIT */
/*
 * blog_process_with_config.c - blog post "Simpler Parallelism with
 * concurrent.futures", "The Subtle Bits":
 *
 *     def process_with_config(item, config):
 *         # Use config dict to guide processing
 *         return item * config['multiplier']
 *
 *     config = {'multiplier': 3}
 *     data = [1, 2, 3, 4, 5]
 *
 *     # Wrong - lambdas aren't picklable
 *     # with ProcessPoolExecutor() as executor:
 *     #     results = executor.map(lambda x: process_with_config(x, config), data)
 *
 *     # Right - use partial to bind the config argument
 *     with ProcessPoolExecutor() as executor:
 *         process_func = partial(process_with_config, config=config)
 *         results = executor.map(process_func, data)
 *
 * and, from the same section, `ProcessPoolExecutor(max_workers=os.cpu_count())`
 * as the default for CPU-bound work.
 *
 * The post prints nothing; this program prints list(results) for each way
 * of binding the config:
 *   - "Wrong": a task that reads the config from main's memory, like the
 *     lambda's closure.  A worker cannot reach it, and the function is not
 *     registered, so map refuses it (CF_ENOTCOPYABLE) - the counterpart of
 *     the pickling error.
 *   - "Right", partial: the config travels with every call as a second map
 *     input that repeats it (map(fn, data, itertools.repeat(config)) - map
 *     stops at the shortest input).
 *   - The pool's initializer: the config is sent once to each worker, which
 *     keeps it for all its calls (ProcessPoolExecutor(initializer=...,
 *     initargs=(config,))).
 * The config dict is a small struct, copied as bytes.
 */
#include "example_util.h"

typedef struct config {
    int64_t multiplier;
} config;

/* Reads a config struct from argument `i`; false after raising. */
static bool arg_config(cf_call *call, size_t i, config *out)
{
    size_t size = 0;
    const void *b = cf_arg_bytes(call, i, &size);
    if (!b)
        return false; /* cf_arg_bytes raised a TypeError */
    if (size != sizeof *out) {
        cf_raise(call, 1, "ValueError", "config of %zu bytes, expected %zu", size,
                 sizeof *out);
        return false;
    }
    memcpy(out, b, sizeof *out);
    return true;
}

/* process_with_config(item, config) */
static int process_with_config(cf_call *call)
{
    int64_t item = cf_arg_i64(call, 0);
    config cfg;
    if (!arg_config(call, 1, &cfg))
        return CF_ETASK;
    return cf_return_i64(call, item * cfg.multiplier);
}
CF_TASK(process_with_config);

/* The lambda: it closes over main's config, so it only works in-process. */
static const config *main_config;
static int lambda_with_config(cf_call *call)
{
    return cf_return_i64(call, cf_arg_i64(call, 0) * main_config->multiplier);
}

/* The initializer variant: each worker keeps its own copy. */
static config worker_config;
static int init_config(cf_call *call)
{
    return arg_config(call, 0, &worker_config) ? 0 : CF_ETASK;
}
CF_TASK(init_config);

static int process_with_worker_config(cf_call *call)
{
    return cf_return_i64(call, cf_arg_i64(call, 0) * worker_config.multiplier);
}
CF_TASK(process_with_worker_config);

/* itertools.repeat(value): a generator that never ends. */
static int repeat(void *ctx, cf_value *out)
{
    *out = *(const cf_value *)ctx;
    return 1;
}

/* print(list(results)) with a label. */
static void print_results(const char *label, cf_map_iter *results)
{
    char text[256] = "[";
    const cf_value *v;
    const cf_failure *e;
    int rc;
    while ((rc = cf_map_next(results, &v, &e)) == CF_OK) {
        if (v->kind != CF_I64) {
            fprintf(stderr, "%s: a %s result\n", label, cf_kind_name(v->kind));
            exit(1);
        }
        char num[32];
        snprintf(num, sizeof num, "%s%lld", text[1] ? ", " : "",
                 (long long)v->as.i64);
        strcat(text, num);
    }
    if (rc != CF_EDONE) {
        fprintf(stderr, "%s: %s %s: %s\n", label, cf_err_name(rc),
                cf_failure_type(e), cf_failure_message(e));
        exit(1);
    }
    strcat(text, "]");
    printf("%s: %s\n", label, text);
}

int main(int argc, char **argv)
{
    ex_check(cf_process_init(argc, argv), "cf_process_init");

    config cfg = {.multiplier = 3}; /* config = {'multiplier': 3} */
    main_config = &cfg;
    cf_value data[5]; /* data = [1, 2, 3, 4, 5] */
    for (int i = 0; i < 5; i++)
        data[i] = cf_i64(i + 1);
    cf_value config_value = cf_bytes(&cfg, sizeof cfg);

    /* ProcessPoolExecutor(): the default worker count, os.cpu_count(). */
    {
        cf_executor *executor;
        ex_check(cf_process_pool_new(&executor, NULL), "cf_process_pool_new");

        /* Wrong - the lambda.  Refused before anything is submitted; the
         * pool stays usable. */
        cf_map_input in = cf_input_array(data, 5);
        cf_map_iter *results = NULL;
        int rc = cf_map(executor, lambda_with_config, &in, 1, NULL, &results);
        if (rc != CF_ENOTCOPYABLE) {
            fprintf(stderr, "map of an unregistered task: %s, expected "
                            "CF_ENOTCOPYABLE\n", cf_err_name(rc));
            return 1;
        }
        printf("wrong: %s\n", cf_last_error_message());

        /* Right - partial(process_with_config, config=config): the config
         * is a second input, repeated for every item. */
        cf_map_input in2[2] = {cf_input_array(data, 5),
                               cf_input_generator(repeat, &config_value)};
        ex_check(cf_map(executor, process_with_config, in2, 2, NULL, &results),
                 "cf_map");
        print_results("partial", results);
        cf_map_close(results);
        ex_check(cf_executor_destroy(executor), "cf_executor_destroy");
    }

    /* The initializer: the config reaches each worker once.  Here with
     * max_workers=os.cpu_count(), the post's default for CPU-bound work. */
    {
        cf_process_pool_options opts;
        cf_process_pool_options_init(&opts);
        opts.max_workers = cf_usable_cpus();
        opts.initializer = init_config;
        opts.initargs = &config_value;
        opts.ninitargs = 1;
        cf_executor *executor;
        ex_check(cf_process_pool_new(&executor, &opts), "cf_process_pool_new");
        cf_map_input in = cf_input_array(data, 5);
        cf_map_iter *results;
        ex_check(cf_map(executor, process_with_worker_config, &in, 1, NULL,
                        &results),
                 "cf_map");
        print_results("initializer", results);
        cf_map_close(results);
        ex_check(cf_executor_destroy(executor), "cf_executor_destroy");
    }
    return 0;
}
