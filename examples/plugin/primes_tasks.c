/* SPDX-License-Identifier: MIT */
/*
 * primes_tasks.c - the task of libprimes.  Compiled into the library and
 * into its worker program (primes_worker.c), so both register the same
 * task under the same name; the pool checks that at start-up.
 */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "cfutures.h"
#include "primes_tasks.h"

/* (limit) -> bytes {count, pid}: the number of primes below limit, by a
 * sieve, and the pid of the process that counted them. */
int primes_count_below(cf_call *call)
{
    int64_t limit = cf_arg_i64(call, 0);
    if (limit < 0 || limit > (int64_t)1 << 32)
        return cf_raise(call, CF_EINVAL, "ValueError", "limit %lld out of range",
                        (long long)limit);
    unsigned char *composite = calloc((size_t)limit + 1, 1);
    if (!composite)
        return cf_raise(call, CF_ENOMEM, "MemoryError", "no memory for a sieve of %lld",
                        (long long)limit);
    int64_t count = 0;
    for (int64_t i = 2; i < limit; i++) {
        if (composite[i])
            continue;
        count++;
        for (int64_t j = i * i; j < limit; j += i)
            composite[j] = 1;
    }
    free(composite);
    int64_t out[2] = {count, (int64_t)getpid()};
    return cf_return_bytes(call, out, sizeof out);
}
CF_TASK(primes_count_below);
