/* SPDX-License-Identifier: MIT */
/* Tasks in a shared object of their own, for a process pool's
 * worker_library (consumer_plugin.c). */
#define _GNU_SOURCE
#include <cfutures.h>
#include <unistd.h>

int plugin_square(cf_call *call);
int plugin_exe(cf_call *call);

int plugin_square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}
CF_TASK(plugin_square);

/* The program the worker runs. */
int plugin_exe(cf_call *call)
{
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n < 0)
        return cf_raise(call, 1, "OSError", "readlink /proc/self/exe failed");
    path[n] = '\0';
    return cf_return_str(call, path);
}
CF_TASK(plugin_exe);
