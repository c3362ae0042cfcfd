/* SPDX-License-Identifier: MIT */
/*
 * futures_process_pool_broken.c - PyMOTW "concurrent.futures", "Process
 * Pools" (futures_process_pool_broken.py):
 *
 *     with futures.ProcessPoolExecutor(max_workers=2) as ex:
 *         print('getting the pid for one worker')
 *         f1 = ex.submit(os.getpid)
 *         pid1 = f1.result()
 *
 *         print('killing process {}'.format(pid1))
 *         os.kill(pid1, signal.SIGHUP)
 *
 *         print('submitting another task')
 *         f2 = ex.submit(os.getpid)
 *         try:
 *             pid2 = f2.result()
 *         except futures.process.BrokenProcessPool as e:
 *             print('could not start new tasks: {}'.format(e))
 *
 * A worker that dies unexpectedly breaks the pool (the default crash
 * policy, as in CPython): every pending call fails with CF_EBROKEN and
 * later submits are refused with CF_EBROKEN.
 *
 * Whether the second task is refused at submit or fails on its future
 * depends on whether the pool has noticed the death yet.  In the Python
 * run it had not; but a call submitted in that window may also be handed
 * to the surviving worker and succeed.  So that every run prints the same
 * lines, main waits until the pool has noticed - a broken pool kills its
 * remaining workers, so its worker count drops to 0 - and the submit is
 * then refused.  Both outcomes print the same line: the pool's message,
 * which names the dead worker and the signal.
 */
#include <signal.h>
#include <unistd.h>

#include "example_util.h"

/* os.getpid */
static int get_pid(cf_call *call)
{
    return cf_return_i64(call, (int64_t)getpid());
}
CF_TASK(get_pid);

/* Waits up to `limit` seconds for the pool to have no live worker. */
static bool wait_no_workers(cf_executor *ex, double limit)
{
    double end = ex_now() + limit;
    while (cf_executor_worker_count(ex) > 0) {
        if (ex_now() > end)
            return false;
        ex_sleep(0.005);
    }
    return true;
}

/* The pool also reports the break through the log hook the moment it
 * happens (on stderr by default), for programs that would not hear of it
 * otherwise.  This one prints the same message where Python prints it, so
 * it keeps the hook's line to itself. */
static void quiet_log(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

int main(int argc, char **argv)
{
    ex_check(cf_process_init(argc, argv), "cf_process_init");
    cf_set_log_hook(quiet_log, NULL);

    cf_process_pool_options opts;
    cf_process_pool_options_init(&opts);
    opts.max_workers = 2;
    cf_executor *ex;
    ex_check(cf_process_pool_new(&ex, &opts), "cf_process_pool_new");
    int status = 0;

    printf("getting the pid for one worker\n");
    cf_future *f1;
    ex_check(cf_submit(ex, get_pid, CF_NOARGS, &f1), "cf_submit");
    int64_t pid1;
    ex_check(cf_future_result_i64(f1, CF_FOREVER, &pid1), "f1 result");
    ex_check(cf_future_release(f1), "cf_future_release");

    printf("killing process %lld\n", (long long)pid1);
    fflush(stdout);
    if (kill((pid_t)pid1, SIGHUP) != 0) {
        perror("kill");
        return 1;
    }
    if (!wait_no_workers(ex, 30.0)) {
        fprintf(stderr, "the pool still has %d workers 30 s after the kill\n",
                cf_executor_worker_count(ex));
        status = 1;
    }

    printf("submitting another task\n");
    cf_future *f2 = NULL;
    int rc = cf_submit(ex, get_pid, CF_NOARGS, &f2);
    if (rc == CF_EBROKEN) {
        /* Refused at once.  The message is the pool's, after the name of
         * the call that was refused ("submit: "). */
        const char *msg = cf_last_error_message();
        const char *prefix = "submit: ";
        if (strncmp(msg, prefix, strlen(prefix)) == 0)
            msg += strlen(prefix);
        printf("could not start new tasks: %s\n", msg);
    } else {
        ex_check(rc, "cf_submit");
        int64_t pid2;
        rc = cf_future_result_i64(f2, CF_FOREVER, &pid2);
        if (rc == CF_EBROKEN) {
            const cf_failure *e;
            ex_check(cf_future_exception(f2, 0, &e), "cf_future_exception");
            printf("could not start new tasks: %s\n", cf_failure_message(e));
        } else if (rc == CF_OK) {
            fprintf(stderr, "the broken pool ran the second task (pid %lld)\n",
                    (long long)pid2);
            status = 1;
        } else {
            ex_check(rc, "f2 result");
        }
        ex_check(cf_future_release(f2), "cf_future_release");
    }

    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    return status;
}
