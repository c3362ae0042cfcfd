/* SPDX-License-Identifier: MIT */
/*
 * primes.h - the public header of libprimes, a small library that counts
 * primes in worker processes.  Nothing here mentions cfutures: a program
 * using libprimes needs neither its header nor cf_process_init().
 */
#ifndef PRIMES_H
#define PRIMES_H

#include <stddef.h>

/* Counts the primes below limits[i] into counts[i], for i < n, each in a
 * worker process of the library's own pool (started on first use), and
 * stores that process's pid in pids[i] (pids may be NULL).  Returns 0, or
 * -1 with a reason in primes_error().  Any thread. */
int primes_count(const long *limits, size_t n, long *counts, long *pids);

/* Why the last primes_count() of this thread failed. */
const char *primes_error(void);

/* Stops the library's worker processes (a later primes_count() starts
 * them again).  Not while a primes_count() runs. */
void primes_close(void);

#endif
