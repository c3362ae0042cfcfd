// SPDX-License-Identifier: MIT
// consumer_mpi.c in C++: the MPI engine's header, linked and loaded, then
// consumer.c's thread pool program, compiled as C++.
#include <cfutures_mpi.h>

#define main consumer_main
#include "../consumer.c"
#undef main

int main()
{
    cf_mpi_pool_options o;
    cf_mpi_pool_options_init(&o);
    if (o.mode != CF_MPI_AUTO || o.max_workers != CF_AUTO || cf_in_mpi_worker())
        return 4;
    return consumer_main();
}
