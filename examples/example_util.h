/* SPDX-License-Identifier: MIT */
/*
 * example_util.h - small helpers shared by the examples.
 *
 * Not part of cfutures.  The examples mirror Python programs, so this
 * holds the few things Python gives for free: time.sleep(), a monotonic
 * clock, Python's way of printing a float, a threading.Event, and a
 * "stop with a message" check for API calls that must not fail.
 */
#ifndef CF_EXAMPLE_UTIL_H
#define CF_EXAMPLE_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfutures.h"

/* Stops the program when an API call that should succeed did not.  The
 * examples print only what their Python counterparts print, so anything
 * unexpected goes to stderr, which the test checker treats as a failure. */
static inline void ex_check(int rc, const char *what)
{
    if (rc != CF_OK) {
        fprintf(stderr, "%s failed: %s (%s)\n", what, cf_err_name(rc),
                cf_last_error_message());
        exit(1);
    }
}

/* time.sleep(seconds).
 *
 * The test suite sets CF_EXAMPLE_TIME_SCALE (a number from 1 to 20) for
 * examples whose printed order comes from their sleeps and which print no
 * measured time: every sleep is that many times longer, so the gaps that
 * order the lines (0.1 s in some) stay wide on a loaded machine or under a
 * sanitizer.  The output is the same; unset, the sleeps are as written. */
static inline double ex_time_scale(void)
{
    const char *s = getenv("CF_EXAMPLE_TIME_SCALE");
    double k = s ? strtod(s, NULL) : 1.0;
    return k >= 1.0 && k <= 20.0 ? k : 1.0;
}

static inline void ex_sleep(double seconds)
{
    seconds *= ex_time_scale();
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* time.perf_counter(): seconds on a monotonic clock. */
static inline double ex_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* repr(float): the shortest text that reads back as the same double, with
 * ".0" added to whole numbers, so 0.5 prints "0.5" and 2.0 prints "2.0"
 * just as Python shows them. */
static inline const char *ex_float_repr(double x, char *buf, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    if (strspn(buf, "-0123456789") == strlen(buf) && strlen(buf) + 3 <= size)
        strcat(buf, ".0");
    return buf;
}

/* threading.Event: a flag threads can wait for.  Examples use it where the
 * Python program relies on luck of timing, to make the printed order the
 * same on every run. */
typedef struct ex_event {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool set;
} ex_event;

#define EX_EVENT_INIT                                                         \
    {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false}

static inline void ex_event_set(ex_event *e)
{
    pthread_mutex_lock(&e->mu);
    e->set = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static inline void ex_event_wait(ex_event *e)
{
    pthread_mutex_lock(&e->mu);
    while (!e->set)
        pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

/* A counter threads can wait on: "wait until at least n tasks started". */
typedef struct ex_counter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long value;
} ex_counter;

#define EX_COUNTER_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

/* Adds one and returns the value before the increment. */
static inline long ex_counter_inc(ex_counter *c)
{
    pthread_mutex_lock(&c->mu);
    long before = c->value++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return before;
}

static inline void ex_counter_wait_for(ex_counter *c, long at_least)
{
    pthread_mutex_lock(&c->mu);
    while (c->value < at_least)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

static inline long ex_counter_get(ex_counter *c)
{
    pthread_mutex_lock(&c->mu);
    long v = c->value;
    pthread_mutex_unlock(&c->mu);
    return v;
}

#endif /* CF_EXAMPLE_UTIL_H */
