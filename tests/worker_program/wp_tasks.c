/* SPDX-License-Identifier: MIT */
/*
 * wp_tasks.c - the tasks of wp_tasks.h, registered with CF_TASK.
 */
#include <limits.h>
#include <unistd.h>

#include "wp_tasks.h"

int wp_square(cf_call *call)
{
    int64_t x = cf_arg_i64(call, 0);
    return cf_return_i64(call, x * x);
}
CF_TASK(wp_square);

int wp_exe(cf_call *call)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n < 0)
        return cf_raise(call, CF_ESYS, "OSError", "readlink /proc/self/exe failed");
    path[n] = '\0';
    return cf_return_str(call, path);
}
CF_TASK(wp_exe);
