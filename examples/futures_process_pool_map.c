/* SPDX-License-Identifier: MIT */
/*
 * futures_process_pool_map.c - PyMOTW "concurrent.futures", "Process Pools"
 * (futures_process_pool_map.py):
 *
 *     def task(n):
 *         return (n, os.getpid())
 *
 *     ex = futures.ProcessPoolExecutor(max_workers=2)
 *     results = ex.map(task, range(5, 0, -1))
 *     for n, pid in results:
 *         print('ran task {} in process {}'.format(n, pid))
 *
 * The same map as futures_thread_pool_map.c with the process engine: only
 * the constructor changes, plus the two rules of a process pool - the task
 * is registered with CF_TASK so a worker can find it by name, and main()
 * starts with cf_process_init() so a worker can start as this program.
 *
 * The task's (n, pid) tuple comes back as a small bytes value holding two
 * int64_t.  Which of the two workers runs which task depends on timing, so
 * the pids are not checked against the page; the program itself checks
 * what the page says about them: each task ran in another process than
 * main, and the two workers are reused for all five tasks.
 *
 * Built a second time with CF_EXAMPLE_MPI as mpi_futures_process_pool_map:
 * the same program on the MPI engine, where the workers are MPI ranks that
 * Open MPI spawns from this program (the lines under CF_EXAMPLE_MPI).
 */
#include <unistd.h>

#include "example_util.h"
#ifdef CF_EXAMPLE_MPI
#include "cfutures_mpi.h"
#endif

static int task(cf_call *call)
{
    int64_t n = cf_arg_i64(call, 0);
    int64_t pair[2] = {n, (int64_t)getpid()}; /* (n, os.getpid()) */
    return cf_return_bytes(call, pair, sizeof pair);
}
CF_TASK(task);

int main(int argc, char **argv)
{
#ifdef CF_EXAMPLE_MPI
    ex_check(cf_mpi_init(argc, argv), "cf_mpi_init");

    cf_mpi_pool_options opts;
    cf_mpi_pool_options_init(&opts);
    opts.max_workers = 2;
    cf_executor *ex;
    ex_check(cf_mpi_pool_new(&ex, &opts), "cf_mpi_pool_new");
#else
    ex_check(cf_process_init(argc, argv), "cf_process_init");

    cf_process_pool_options opts;
    cf_process_pool_options_init(&opts);
    opts.max_workers = 2;
    cf_executor *ex;
    ex_check(cf_process_pool_new(&ex, &opts), "cf_process_pool_new");
#endif

    /* range(5, 0, -1) */
    cf_value inputs[5];
    for (int i = 0; i < 5; i++)
        inputs[i] = cf_i64(5 - i);
    cf_map_input in = cf_input_array(inputs, 5);
    cf_map_iter *results;
    ex_check(cf_map(ex, task, &in, 1, NULL, &results), "cf_map");

    int status = 0;
    int64_t pids[5];
    size_t npids = 0;
    const cf_value *v;
    const cf_failure *e;
    int rc;
    while ((rc = cf_map_next(results, &v, &e)) == CF_OK) {
        int64_t pair[2];
        if (v->kind != CF_BYTES || v->size != sizeof pair) {
            fprintf(stderr, "unexpected result: a %s of %zu bytes\n",
                    cf_kind_name(v->kind), v->size);
            status = 1;
            break;
        }
        memcpy(pair, v->as.bytes, sizeof pair);
        printf("ran task %lld in process %lld\n", (long long)pair[0],
               (long long)pair[1]);

        if (pair[1] == (int64_t)getpid()) {
            fprintf(stderr, "task %lld ran in the main process\n",
                    (long long)pair[0]);
            status = 1;
        }
        bool seen = false;
        for (size_t i = 0; i < npids; i++)
            seen = seen || pids[i] == pair[1];
        if (!seen && npids < 5)
            pids[npids++] = pair[1];
    }
    if (rc != CF_OK && rc != CF_EDONE) {
        fprintf(stderr, "cf_map_next failed: %s (%s %s)\n", cf_err_name(rc),
                cf_failure_type(e), cf_failure_message(e));
        status = 1;
    }
    if (npids > 2) {
        fprintf(stderr, "the tasks ran in %zu processes, not the pool's 2\n",
                npids);
        status = 1;
    }
    cf_map_close(results);
    ex_check(cf_executor_destroy(ex), "cf_executor_destroy");
    return status;
}
