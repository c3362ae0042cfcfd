/* SPDX-License-Identifier: MIT */
/* A program built against an installed cfutures-mpi, the way a user
 * would: it compiles with the MPI header, links the MPI engine and MPI,
 * and loads them, then runs consumer.c's thread pool program.  It starts
 * no MPI pool (that needs a launcher); the MPI tests run pools from the
 * build tree. */
#include <cfutures_mpi.h>

#define main consumer_main
#include "consumer.c"
#undef main

int main(void)
{
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    if (o.mode != CF_MPI_AUTO || o.max_workers != CF_AUTO || cf_in_mpi_worker())
        return 4;
    return consumer_main();
}
