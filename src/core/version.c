/* SPDX-License-Identifier: MIT */
/*
 * version.c - the version of the running library.
 *
 * The numbers come from cfutures_version.h, generated from the project
 * version in CMakeLists.txt, so the library, its headers, its SONAME and
 * its pkg-config and CMake package versions all say the same.
 */
#include "internal.h"

CF__API unsigned int cf_version(void)
{
    return CF_VERSION_HEX;
}

CF__API const char *cf_version_string(void)
{
    return CF_VERSION_STRING;
}
