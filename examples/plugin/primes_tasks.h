/* SPDX-License-Identifier: MIT */
/*
 * primes_tasks.h - libprimes's tasks, shared by the library and its
 * worker program (internal: not installed with primes.h).
 */
#ifndef PRIMES_TASKS_H
#define PRIMES_TASKS_H

#include "cfutures.h"

int primes_count_below(cf_call *call);

#endif
