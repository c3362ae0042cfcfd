/* SPDX-License-Identifier: MIT */
/*
 * cf_test_scale.h - CF_TEST_TIMEOUT_SCALE, the factor by which the tests
 * stretch their time limits (3 in the sanitizer builds: see the
 * Makefile).  Needs nothing but libc, so the MPI programs that run
 * outside the cmocka harness use it too.
 */
#ifndef CF_TEST_SCALE_H
#define CF_TEST_SCALE_H

#include <stdlib.h>

/* The factor, or 1 when the variable is unset or not a positive
 * integer. */
static inline int cf_test_scale(void)
{
    const char *s = getenv("CF_TEST_TIMEOUT_SCALE");
    int v = s ? atoi(s) : 1;
    return v > 0 ? v : 1;
}

#endif
