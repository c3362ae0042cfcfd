/* SPDX-License-Identifier: MIT */
/* A process pool whose tasks are in a shared object (worker_library) and
 * whose workers run cfutures-worker, the generic worker program installed
 * with the library.  Prints 144 and the worker's program.
 * Usage: consumer_plugin <absolute path of the tasks' shared object> */
#include <cfutures.h>
#include <stdio.h>

int plugin_square(cf_call *call);
int plugin_exe(cf_call *call);

int main(int argc, char **argv)
{
    if (argc != 2)
        return 4;
    cf_task_fn *const tasks[] = {plugin_square, plugin_exe, NULL};
    cf_process_pool_options o;
    cf_process_pool_options_init(&o);
    o.max_workers = 1;
    o.worker_library = argv[1];
    o.tasks = tasks;
    cf_executor *ex;
    if (cf_process_pool_new(&ex, &o) != CF_OK) {
        fprintf(stderr, "process_pool_new: %s\n", cf_last_error_message());
        return 1;
    }
    cf_future *f, *g;
    int64_t r = 0;
    const cf_value *exe = NULL;
    if (cf_submit(ex, plugin_square, CF_ARGS(cf_i64(12)), &f) != CF_OK ||
        cf_future_result_i64(f, 30.0, &r) != CF_OK ||
        cf_submit(ex, plugin_exe, CF_NOARGS, &g) != CF_OK ||
        cf_future_result(g, 30.0, &exe) != CF_OK || exe->kind != CF_STR) {
        fprintf(stderr, "call: %s\n", cf_last_error_message());
        return 2;
    }
    printf("%lld %s\n", (long long)r, exe->as.str);
    cf_future_release(f);
    cf_future_release(g);
    cf_executor_destroy(ex);
    return r == 144 ? 0 : 3;
}
