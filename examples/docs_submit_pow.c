/* SPDX-License-Identifier: MIT */
/*
 * docs_submit_pow.c - Python documentation, concurrent.futures,
 * Executor.submit():
 *
 *     with ThreadPoolExecutor(max_workers=1) as executor:
 *         future = executor.submit(pow, 323, 1235)
 *         print(future.result())
 *
 * pow(323, 1235) has 3,099 digits, so the task computes it with GMP and
 * returns the decimal text; cf_return_str() copies it into the future.
 */
#include <gmp.h>

#include "example_util.h"

static int pow_task(cf_call *call)
{
    int64_t base = cf_arg_i64(call, 0);
    int64_t exp = cf_arg_i64(call, 1);
    if (base < 0 || exp < 0)
        return cf_raise(call, 1, "ValueError", "this pow takes non-negative "
                                               "integers");
    mpz_t r;
    mpz_init(r);
    mpz_ui_pow_ui(r, (unsigned long)base, (unsigned long)exp);
    char *text = mpz_get_str(NULL, 10, r);
    int rc = cf_return_str(call, text);

    /* GMP allocated the text with its allocator: free it with the same. */
    void (*gmp_free)(void *, size_t);
    mp_get_memory_functions(NULL, NULL, &gmp_free);
    gmp_free(text, strlen(text) + 1);
    mpz_clear(r);
    return rc;
}

int main(void)
{
    CF_WITH_EXECUTOR(executor);
    cf_thread_pool_options opts;
    cf_thread_pool_options_init(&opts);
    opts.max_workers = 1;
    ex_check(cf_thread_pool_new(&executor, &opts), "cf_thread_pool_new");

    cf_future *future;
    ex_check(cf_submit(executor, pow_task, CF_ARGS(cf_i64(323), cf_i64(1235)),
                       &future),
             "cf_submit");
    const cf_value *result;
    ex_check(cf_future_result(future, CF_FOREVER, &result), "result");
    printf("%s\n", result->as.str);

    cf_future_release(future);
    return 0;
}
