/* SPDX-License-Identifier: MIT */
/*
 * test_version.c - the run-time version agrees with the header's macros,
 * and both with the project version CMake generated them from.
 */
#include "harness.h"

#include <stdio.h>

static void test_version_functions_match_macros(void **state)
{
    (void)state;
    assert_int_equal(cf_version(), CF_VERSION_HEX);
    assert_string_equal(cf_version_string(), CF_VERSION_STRING);
}

static void test_version_macros_agree(void **state)
{
    (void)state;
    char text[32];
    snprintf(text, sizeof text, "%d.%d.%d", CF_VERSION_MAJOR, CF_VERSION_MINOR,
             CF_VERSION_PATCH);
    assert_string_equal(text, CF_VERSION_STRING);
    assert_int_equal(CF_VERSION_HEX, (CF_VERSION_MAJOR << 16) |
                                         (CF_VERSION_MINOR << 8) | CF_VERSION_PATCH);
    assert_true(CF_VERSION_NUM(0, 1, 0) < CF_VERSION_NUM(0, 1, 1));
    assert_true(CF_VERSION_NUM(0, 1, 255) < CF_VERSION_NUM(0, 2, 0));
    assert_true(CF_VERSION_NUM(0, 255, 0) < CF_VERSION_NUM(1, 0, 0));
}

static void test_version_is_the_project_version(void **state)
{
    (void)state;
    assert_string_equal(cf_version_string(), CF_TEST_PROJECT_VERSION);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_version_functions_match_macros),
    cmocka_unit_test(test_version_macros_agree),
    cmocka_unit_test(test_version_is_the_project_version),
};

CF_TEST_MAIN(tests)
