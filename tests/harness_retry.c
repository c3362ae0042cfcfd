/* SPDX-License-Identifier: MIT */
/* The test harness's retry of a known platform flake (harness.h,
 * cf_test_supervise): a test whose failure carries the whole signature
 * runs once more; any other failure, and a second one, stands.
 * tests/CMakeLists.txt runs each and says how it must end. */
#define CF_TEST_RETRY_SIGNATURE {"harness-flake-marker-A", "harness-flake-marker-B", NULL}
#define CF_TEST_RETRY_WHY "the harness's own test of its retry"
#include "harness.h"

/* From 1 under the supervisor; 0 run by hand without it. */
static int attempt(void)
{
    const char *s = getenv("CF_TEST_SUPERVISED");
    return s ? atoi(s) : 0;
}

/* Fails on the first attempt with `msg`; passes on a second. */
static void fail_first(const char *msg)
{
    int a = attempt();
    assert_true(a == 1 || a == 2);
    if (a == 1)
        fail_msg("%s", msg);
}

/* Fails with the signature on the first two attempts, passes on a third:
 * passes as a whole only where two retries are allowed (the program
 * built with CF_TEST_RETRIES=2, as test_mpi is), and there only if the
 * harness ran it twice more. */
static void test_flake_twice_is_retried(void **state)
{
    (void)state;
    int a = attempt();
    assert_true(a >= 1 && a <= 3);
    if (a <= 2)
        fail_msg("harness-flake-marker-A then harness-flake-marker-B, attempt %d", a);
}

/* Fails with the signature on the first attempt, passes on the second:
 * passes as a whole only if the harness ran it again. */
static void test_flake_is_retried(void **state)
{
    (void)state;
    fail_first("harness-flake-marker-A then harness-flake-marker-B");
}

/* Fails with only part of the signature on the first attempt and would
 * pass on a second: must end failed, without a retry. */
static void test_other_failure_stands(void **state)
{
    (void)state;
    fail_first("harness-flake-marker-A alone");
}

/* Fails with the signature every time: must end failed after
 * CF_TEST_RETRIES retries, not more. */
static void test_second_flake_stands(void **state)
{
    (void)state;
    assert_true(attempt() >= 1);
    fail_msg("harness-flake-marker-A then harness-flake-marker-B, attempt %d", attempt());
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_flake_is_retried),
    cmocka_unit_test(test_other_failure_stands),
    cmocka_unit_test(test_second_flake_stands),
    cmocka_unit_test(test_flake_twice_is_retried),
};

CF_TEST_MAIN(tests)
