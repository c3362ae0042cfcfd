/* SPDX-License-Identifier: MIT */
/*
 * cfutures_worker.c - cfutures-worker, the generic worker program,
 * installed as <libexecdir>/cfutures/cfutures-worker.  A process pool
 * whose options name a worker_library starts it as
 *
 *     cfutures-worker /absolute/path/of/LIBRARY.so
 *
 * It loads the library, whose CF_TASK constructors register its tasks in
 * the libcfutures.so both are linked with, then becomes a worker in
 * cf_process_init(), which makes every check of the default start (the
 * environment variable, the socket, the random key).  It loads nothing
 * unless the pool's variable is set, so run by hand it only says what it
 * is.  Exit status: 2 not started by a pool, 127 the library would not
 * load (the reason on stderr; the pool reports a worker that died during
 * start-up).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "cfutures.h"
#include "os.h"      /* cf__os_secure_getenv */
#include "process.h" /* CF__WORKER_ENV */

int main(int argc, char **argv)
{
    const char *me = argc > 0 && argv[0] ? argv[0] : "cfutures-worker";
    if (argc != 2 || argv[1][0] != '/' || !cf__os_secure_getenv(CF__WORKER_ENV)) {
        fprintf(stderr, "%s: a cfutures process pool starts this program as "
                        "\"%s /path/of/LIBRARY.so\" (cf_process_pool_options.worker_library); "
                        "it is not run by hand\n", me, me);
        return 2;
    }
    /* RTLD_NOW: a missing symbol is an error here, at start-up, not a
     * crash in the middle of a call. */
    if (!dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) {
        fprintf(stderr, "%s: %s\n", me, dlerror());
        return 127;
    }
    cf_process_init(argc, argv); /* a worker never returns from here */
    fprintf(stderr, "%s: not started by a cfutures process pool\n", me);
    return 2;
}
