/* SPDX-License-Identifier: MIT */
/*
 * primes_worker.c - the worker program libprimes ships (a distribution
 * would install it under libexec/).  Its process pool starts this program
 * instead of the host program, so the host never calls cf_process_init();
 * this main() does, and the task comes from primes_tasks.c, linked in.
 */
#include <stdio.h>

#include "cfutures.h"

int main(int argc, char **argv)
{
    cf_process_init(argc, argv); /* a worker never returns from here */
    fprintf(stderr, "%s: libprimes's worker program; libprimes starts it\n", argv[0]);
    return 2;
}
