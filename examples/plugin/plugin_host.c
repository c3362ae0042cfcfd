/* SPDX-License-Identifier: MIT */
/*
 * plugin_host.c - a program that has never heard of cfutures: no
 * cfutures.h, no cf_process_init() in main().  It uses libprimes, a
 * library that runs its work in a process pool of its own (see
 * primes.c): the pool's workers run the library's worker program, not
 * this one.
 */
#include <stdio.h>
#include <unistd.h>

#include "primes.h"

int main(void)
{
    const long limits[] = {10, 100, 1000, 10000, 100000, 1000000};
    enum { N = sizeof limits / sizeof limits[0] };
    long counts[N], pids[N];
    if (primes_count(limits, N, counts, pids) != 0) {
        fprintf(stderr, "primes_count: %s\n", primes_error());
        return 1;
    }
    int elsewhere = 0;
    for (int i = 0; i < N; i++) {
        printf("primes below %ld: %ld\n", limits[i], counts[i]);
        elsewhere += pids[i] != (long)getpid();
    }
    printf("counted in another process: %d of %d\n", elsewhere, N);
    primes_close();
    return 0;
}
