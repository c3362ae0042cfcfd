/* SPDX-License-Identifier: MIT */
/*
 * wp_worker.c - the worker program test_worker_program names in
 * cf_process_pool_options.worker_program: main() is cf_process_init() and
 * nothing else; the tasks come from wp_tasks.c.  Run by hand it is not a
 * worker, says so and fails.
 */
#include <stdio.h>

#include "cfutures.h"

int main(int argc, char **argv)
{
    cf_process_init(argc, argv); /* a worker never returns from here */
    fprintf(stderr, "%s: a cfutures worker program; a process pool starts it\n", argv[0]);
    return 2;
}
