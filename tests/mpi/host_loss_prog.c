/* SPDX-License-Identifier: MIT */
/*
 * host_loss_prog.c - a spawn-mode pool whose workers' host goes away,
 * run by two_hosts.sh (the workers on its second host).
 *
 *   host_loss_prog HOST 'CUT-COMMAND'
 *
 * Warms a pool of two workers on HOST (checked through the host name a
 * task returns), starts a call that takes 8 s, and runs CUT-COMMAND,
 * which cuts this host off from HOST (the script takes the link down).
 * Nothing fails at either end: the messages just stop.  Then:
 *   - the call fails with CF_EBROKEN naming HOST within the heartbeat
 *     timeout (3 s) and a margin, and destroying the pool returns at once
 *     (within 1 s; the margins times CF_TEST_TIMEOUT_SCALE);
 *   - a new pool, whose workers Open MPI can only place on HOST, gives up
 *     after its start_timeout (5 s) with CF_EBROKEN;
 *   - main returns 0 (at exit MPI is not finalized, since that spawn is
 *     still waiting inside MPI).
 * Prints "host loss OK" when all of that held; exits 1 at the first check
 * that failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cf_test_scale.h"
#include "cfutures_mpi.h"

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            printf("host_loss_prog: check failed at line %d: %s (last error: %s)\n",     \
                   __LINE__, #cond, cf_last_error_message());                           \
            return 1;                                                                    \
        }                                                                                \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps argument 0 ms, then returns this host's name. */
static int nap_host(cf_call *c)
{
    int64_t ms = cf_arg_i64(c, 0);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    return cf_return_str(c, host);
}
CF_TASK(nap_host);


int main(int argc, char **argv)
{
    CHECK(cf_mpi_init(argc, argv) == CF_OK);
    CHECK(argc == 3);
    const char *host = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    o.max_workers = 2;
    o.heartbeat_timeout = 3;
    o.start_timeout = 5;
    cf_executor *ex = NULL;
    CHECK(cf_mpi_pool_new(&ex, &o) == CF_OK);
    cf_future *f[2];
    for (int i = 0; i < 2; i++)
        CHECK(cf_submit(ex, nap_host, CF_ARGS(cf_i64(10)), &f[i]) == CF_OK);
    for (int i = 0; i < 2; i++) {
        const cf_value *v;
        CHECK(cf_future_result(f[i], 60, &v) == CF_OK);
        CHECK(strcmp(v->as.str, host) == 0);
        cf_future_release(f[i]);
    }

    cf_future *slow;
    CHECK(cf_submit(ex, nap_host, CF_ARGS(cf_i64(8000)), &slow) == CF_OK);
    double t0 = now_s();
    CHECK(system(argv[2]) == 0);
    /* Bounded: the timeout, the manager's look every fifth of it, and a
     * loaded machine's margin; without heartbeats it would wait for the
     * call's 8 s and then for ever. */
    CHECK(cf_future_result(slow, 60, NULL) == CF_EBROKEN);
    double took = now_s() - t0;
    /* CF_TEST_TIMEOUT_SCALE (passed on by two_hosts.sh) stretches the
     * margins, not the timeouts they bound. */
    const double scale = cf_test_scale();
    CHECK(took < 3 + 0.6 + 3 * scale);
    const cf_failure *fl = NULL;
    CHECK(cf_future_exception(slow, 0, &fl) == CF_OK && fl);
    char on[300];
    snprintf(on, sizeof on, " on %s sent nothing for", host);
    CHECK(strstr(cf_failure_message(fl), on) != NULL);
    cf_future_release(slow);
    t0 = now_s();
    CHECK(cf_executor_destroy(ex) == CF_OK);
    CHECK(now_s() - t0 < 1 * scale);

    t0 = now_s();
    CHECK(cf_mpi_pool_new(&ex, &o) == CF_EBROKEN);
    CHECK(ex == NULL);
    took = now_s() - t0;
    CHECK(took >= 4.9 && took < 5 + 5 * scale);
    CHECK(strstr(cf_last_error_message(), "within 5 s") != NULL);
    printf("host_loss_prog: broken after the cut, new pool gave up after %.1f s: host loss OK\n",
           took);
    return 0;
}
