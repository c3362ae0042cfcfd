/* SPDX-License-Identifier: MIT */
// peer_tbb.cpp - oneTBB's task_group as a peer of bench_thread (see
// native_peers.h).  The tasks run in the default arena (one thread per CPU,
// the calling thread included).  task_group::wait() lets the waiting thread
// run queued tasks itself, so TBB's round trip may involve no hand-off
// between threads at all; that is how TBB is used, and the row says so.
#include "native_peers.h"

// Built only when CMake found oneTBB and a C++ compiler; otherwise
// native_peers.c defines cf_bench_tbb_peer as missing.
#ifdef CF_BENCH_HAVE_TBB
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/version.h>

#include <new>

namespace {

struct tbb_rt {
    tbb::task_group tg;
};

void *tbb_open()
{
    return new (std::nothrow) tbb_rt;
}

void tbb_close(void *rt)
{
    delete static_cast<tbb_rt *>(rt);
}

uint64_t tbb_run(void *rt, size_t n, size_t batch, int64_t *out, uint64_t *submit_ns)
{
    tbb::task_group &tg = static_cast<tbb_rt *>(rt)->tg;
    uint64_t t0 = native_now_ns();
    for (size_t start = 0; start < n; start += batch) {
        size_t end = n - start < batch ? n : start + batch;
        uint64_t s0 = native_now_ns();
        for (size_t i = start; i < end; i++)
            tg.run([out, i] { out[i] = static_cast<int64_t>(i) + 1; });
        *submit_ns += native_now_ns() - s0;
        tg.wait();
    }
    return native_now_ns() - t0;
}

void tbb_round_trip(void *rt, size_t m, double *ns)
{
    tbb::task_group &tg = static_cast<tbb_rt *>(rt)->tg;
    int64_t slot = 0;
    for (size_t j = 0; j < m; j++) {
        uint64_t t0 = native_now_ns();
        tg.run([&slot, j] { slot = static_cast<int64_t>(j) + 1; });
        tg.wait();
        ns[j] = static_cast<double>(native_now_ns() - t0);
    }
}

} // namespace

extern "C" const native_peer cf_bench_tbb_peer = {
    "oneTBB", TBB_VERSION_STRING, nullptr, tbb_open, tbb_close, tbb_run, tbb_round_trip,
};

#endif
