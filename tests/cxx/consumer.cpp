/* SPDX-License-Identifier: MIT */
// A C++17 program using every macro the README shows (CF_ARGS, CF_NOARGS,
// CF_TASK, CF_WITH_EXECUTOR, CF_FOREVER, CF_AUTO, the CF_THEN_* argument
// indices) and the README's code around them: the header must compile warning-free and work from C++.
// check_cxx.sh builds it with g++ and clang++ and compares its output
// with expected.txt.
#include <cfutures.h>

#include <cstdio>
#include <cstring>

static int square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}
CF_TASK(square);

static int might_fail(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    if (x < 0)
        return cf_raise(call, 1, "ValueError", "Negative values not allowed: %lld",
                        (long long)x);
    return cf_return_i64(call, x * 2);
}

static int answer(cf_call *call) { return cf_return_i64(call, 42); }

static int process_with_config(cf_call *call)
{
    int64_t item = cf_arg_i64(call, 0);
    int64_t multiplier = cf_arg_i64(call, 1);
    return cf_return_i64(call, item * multiplier);
}

static int repeat(void *ctx, cf_value *out)
{
    *out = *static_cast<const cf_value *>(ctx);
    return 1;
}

// A continuation: the antecedent's outcome, then the extra argument.
static int describe(cf_call *call)
{
    int64_t status = cf_arg_i64(call, CF_THEN_STATUS);
    const char *label = cf_arg_str(call, CF_THEN_NARGS);
    if (status == CF_OK)
        std::printf("%s: returned %lld\n", label,
                    (long long)cf_arg(call, CF_THEN_VALUE)->as.i64);
    else
        std::printf("%s: %s %s: %s (code %lld)\n", label, cf_err_name((int)status),
                    cf_arg_str(call, CF_THEN_TYPE), cf_arg_str(call, CF_THEN_MESSAGE),
                    (long long)cf_arg_i64(call, CF_THEN_CODE));
    return cf_return_none(call);
}

static void show(cf_future *f)
{
    int64_t v;
    const cf_failure *e;
    switch (cf_future_result_i64(f, 5.0, &v)) {
    case CF_OK:        std::printf("%lld\n", (long long)v); break;
    case CF_ETASK:     cf_future_exception(f, 0, &e);
                       std::printf("Error: %s: %s\n", cf_failure_type(e), cf_failure_message(e));
                       break;
    case CF_ETIMEDOUT: std::printf("took too long\n"); cf_future_cancel(f); break;
    default:           std::printf("%s\n", cf_last_error_message()); break;
    }
}

static int thread_pool_part(void)
{
    CF_WITH_EXECUTOR(ex);
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = CF_AUTO;
    if (cf_thread_pool_new(&ex, &opts) != CF_OK)
        return 1;

    cf_future *f;
    int64_t r;
    if (cf_submit(ex, square, CF_ARGS(cf_i64(7)), &f) != CF_OK ||
        cf_future_result_i64(f, CF_FOREVER, &r) != CF_OK)
        return 1;
    std::printf("7 * 7 = %lld\n", (long long)r);
    cf_future_release(f);

    // Several arguments of different kinds, each evaluated once.
    int calls = 0;
    cf_future *g;
    if (cf_submit(ex, process_with_config, CF_ARGS((++calls, cf_i64(6)), cf_i64(7)), &g) !=
            CF_OK ||
        cf_future_result_i64(g, CF_FOREVER, &r) != CF_OK)
        return 1;
    std::printf("6 * 7 = %lld, arguments evaluated %d time(s)\n", (long long)r, calls);
    cf_future_release(g);

    if (cf_submit(ex, answer, CF_NOARGS, &f) != CF_OK)
        return 1;
    show(f);
    cf_future_release(f);

    cf_value xs[] = {cf_i64(1), cf_i64(2), cf_i64(3), cf_i64(4)};
    cf_map_input in = cf_input_array(xs, 4);
    cf_map_iter *it;
    const cf_value *v;
    if (cf_map(ex, square, &in, 1, NULL, &it) != CF_OK)
        return 1;
    while (cf_map_next(it, &v, NULL) == CF_OK)
        std::printf("%lld ", (long long)v->as.i64);
    cf_map_close(it);
    std::printf("\n");

    cf_future *a, *b;
    if (cf_submit(ex, might_fail, CF_ARGS(cf_i64(-5)), &a) != CF_OK ||
        cf_submit(ex, might_fail, CF_ARGS(cf_i64(21)), &b) != CF_OK)
        return 1;
    show(a);
    show(b);

    cf_future *then_a, *then_b;
    if (cf_then(a, NULL, describe, CF_ARGS(cf_str("then a")), &then_a) != CF_OK ||
        cf_then(b, NULL, describe, CF_ARGS(cf_str("then b")), &then_b) != CF_OK ||
        cf_future_result(then_a, CF_FOREVER, NULL) != CF_OK ||
        cf_future_result(then_b, CF_FOREVER, NULL) != CF_OK)
        return 1;
    cf_future_release(then_a);
    cf_future_release(then_b);

    cf_future *fs[] = {a, b}, *done[2], *pending[2];
    size_t ndone, npending;
    if (cf_wait(fs, 2, CF_FOREVER, CF_ALL_COMPLETED, done, &ndone, pending, &npending) !=
        CF_OK)
        return 1;
    std::printf("wait: %zu done, %zu pending\n", ndone, npending);
    cf_future_release(a);
    cf_future_release(b);

    cf_value data[] = {cf_i64(1), cf_i64(2), cf_i64(3), cf_i64(4), cf_i64(5)};
    cf_value config = cf_i64(3);
    cf_map_input ins[] = {cf_input_array(data, 5), cf_input_generator(repeat, &config)};
    if (cf_map(ex, process_with_config, ins, 2, NULL, &it) != CF_OK)
        return 1;
    while (cf_map_next(it, &v, NULL) == CF_OK)
        std::printf("%lld ", (long long)v->as.i64);
    cf_map_close(it);
    std::printf("\n");
    return 0; // CF_WITH_EXECUTOR destroys the pool here
}

static int process_pool_part(void)
{
    cf_process_pool_options opts;
    cf_process_pool_options_init(&opts);
    opts.max_workers = 2;
    opts.start_method = CF_START_EXEC;
    opts.on_crash = CF_CRASH_REPLACES_WORKER;
    cf_executor *ex;
    if (cf_process_pool_new(&ex, &opts) != CF_OK) {
        std::printf("process pool: %s\n", cf_last_error_message());
        return 1;
    }
    cf_future *f;
    int64_t r = 0;
    if (cf_submit(ex, square, CF_ARGS(cf_i64(12)), &f) != CF_OK ||
        cf_future_result_i64(f, CF_FOREVER, &r) != CF_OK)
        return 1;
    std::printf("in a worker process: 12 * 12 = %lld (task \"%s\")\n", (long long)r,
                cf_task_name(square));
    cf_future_release(f);
    return cf_executor_destroy(ex) == CF_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (cf_process_init(argc, argv) != CF_OK)
        return 1;
    if (thread_pool_part() != 0 || process_pool_part() != 0) {
        std::printf("failed: %s\n", cf_last_error_message());
        return 1;
    }
    std::printf("%s\n", std::strcmp(cf_err_name(CF_ETIMEDOUT), "CF_ETIMEDOUT") == 0 ? "ok" : "bad");
    return 0;
}
