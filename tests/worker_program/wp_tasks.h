/* SPDX-License-Identifier: MIT */
/*
 * wp_tasks.h - tasks shared by test_worker_program and its worker program
 * (both link wp_tasks.c, as a library would link its task sources into the
 * worker program it ships).
 */
#ifndef WP_TASKS_H
#define WP_TASKS_H

#include "cfutures.h"

/* Returns its i64 argument squared. */
int wp_square(cf_call *call);
/* Returns the path of the running executable (/proc/self/exe). */
int wp_exe(cf_call *call);

#endif
