/* SPDX-License-Identifier: MIT */
/* Loads the shared library with dlopen() after the program started, as a
 * plugin host or a language binding does, and runs calls through it.  The
 * library's thread-locals may be in the initial-exec model
 * (CF_INITIAL_EXEC_TLS), which takes them from glibc's spare static TLS.
 * Usage: dlopen_probe <path of libcfutures.so>; exits 0 and prints "ok". */
#include <cfutures.h>
#include <dlfcn.h>
#include <stdio.h>

static int64_t (*arg_i64)(cf_call *, size_t);
static int (*return_i64)(cf_call *, int64_t);

static int square(cf_call *call)
{
    int64_t x = arg_i64(call, 0);
    return return_i64(call, x * x);
}

#define LOAD(var, name)                                                       \
    do {                                                                      \
        *(void **)(&var) = dlsym(lib, name);                                  \
        if (!var) {                                                           \
            fprintf(stderr, "dlsym %s: %s\n", name, dlerror());               \
            return 1;                                                         \
        }                                                                     \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    int (*pool_new)(cf_executor **, const cf_thread_pool_options *);
    int (*submit)(cf_executor *, cf_task_fn *, const cf_value *, size_t, cf_future **);
    int (*result_i64)(cf_future *, double, int64_t *);
    int (*release)(cf_future *);
    int (*destroy)(cf_executor *);
    LOAD(pool_new, "cf_thread_pool_new");
    LOAD(submit, "cf_submit");
    LOAD(result_i64, "cf_future_result_i64");
    LOAD(release, "cf_future_release");
    LOAD(destroy, "cf_executor_destroy");
    LOAD(arg_i64, "cf_arg_i64");
    LOAD(return_i64, "cf_return_i64");

    cf_executor *ex;
    if (pool_new(&ex, NULL) != CF_OK)
        return 3;
    enum { N = 2000 };
    static cf_future *fs[N];
    for (int i = 0; i < N; i++)
        if (submit(ex, square, CF_ARGS(cf_i64(i)), &fs[i]) != CF_OK)
            return 4;
    for (int i = 0; i < N; i++) {
        int64_t r = -1;
        if (result_i64(fs[i], 20.0, &r) != CF_OK || r != (int64_t)i * i)
            return 5;
        release(fs[i]);
    }
    if (destroy(ex) != CF_OK)
        return 6;
    printf("ok\n");
    return 0;
}
