#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""CPython peer of bench_thread: concurrent.futures.ThreadPoolExecutor on the
same workloads as the C side.

    submit_auto  submit N tiny tasks to a default-sized pool, then call
                 result() on each future in order (tasks/s); all N futures
                 are in flight at once
    batch_auto   the same N tasks on a default-sized pool, --batch (4096)
                 at a time: submit a batch, call result() on each of its
                 futures in order, then the next batch (tasks/s)
    submit_w2    the same as submit_auto with max_workers=2
    map_auto     list(ex.map(inc, xs)) over a prebuilt list of N ints (tasks/s)
    rtt          M one-at-a-time round trips: submit(inc, j).result()
                 (median / mean / p99 in microseconds)

Each pool is warmed up (its threads started) before the clock starts, as on
the C side.  Output: one flat JSON object per line on stdout, so that
bench_thread can read it through popen().  Every line is self-contained; the
last line is {"done": true}.  Runs one round per invocation (bench_thread
interleaves its own rounds with calls to this script); --rounds runs more.

Standalone use:  python3 bench/peer_cpython.py --n 20000 --m 5000 --batch 4096
"""

import argparse
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_common import emit, emit_header, fail, usable_cpus  # noqa: E402


def inc(x):
    return x + 1


def warm_up(ex, count):
    # Starts the pool's threads (one per submit that finds no idle thread)
    # so the timed part does not pay for thread creation.
    fs = [ex.submit(inc, i) for i in range(count)]
    for f in fs:
        f.result()


def submit_collect(max_workers, n, warm):
    with ThreadPoolExecutor(max_workers=max_workers) as ex:
        warm_up(ex, warm)
        t0 = time.perf_counter()
        fs = [ex.submit(inc, i) for i in range(n)]
        t1 = time.perf_counter()
        for i, f in enumerate(fs):
            if f.result() != i + 1:
                fail("submit: wrong result for %d" % i)
        del fs
        t2 = time.perf_counter()
    return t1 - t0, t2 - t0


def submit_collect_batched(max_workers, n, batch, warm):
    with ThreadPoolExecutor(max_workers=max_workers) as ex:
        warm_up(ex, warm)
        pc = time.perf_counter
        sub = 0.0
        t0 = pc()
        for start in range(0, n, batch):
            s0 = pc()
            fs = [ex.submit(inc, i) for i in range(start, min(n, start + batch))]
            sub += pc() - s0
            for i, f in enumerate(fs, start):
                if f.result() != i + 1:
                    fail("batched submit: wrong result for %d" % i)
            del fs
        t2 = pc()
    return sub, t2 - t0


def map_all(n, warm):
    xs = list(range(n))
    with ThreadPoolExecutor() as ex:
        warm_up(ex, warm)
        t0 = time.perf_counter()
        count = 0
        for i, r in enumerate(ex.map(inc, xs)):
            if r != i + 1:
                fail("map: wrong result for %d" % i)
            count += 1
        t1 = time.perf_counter()
    if count != n:
        fail("map: %d results, expected %d" % (count, n))
    return t1 - t0


def stats_us(samples_ns):
    # Same definitions as bench_thread.c: median of the sorted samples
    # (mean of the middle two for an even count), p99 = sorted[ceil(.99 n) - 1].
    s = sorted(samples_ns)
    n = len(s)
    if n % 2:
        med = s[n // 2]
    else:
        med = (s[n // 2 - 1] + s[n // 2]) / 2.0
    p99 = s[max(0, math.ceil(0.99 * n) - 1)]
    mean = sum(s) / n
    return med / 1e3, mean / 1e3, p99 / 1e3


def round_trip(m, warm):
    pc = time.perf_counter_ns
    samples = [0] * m
    with ThreadPoolExecutor() as ex:
        for _ in range(warm):
            ex.submit(inc, 0).result()
        for j in range(m):
            t0 = pc()
            r = ex.submit(inc, j).result()
            t1 = pc()
            samples[j] = t1 - t0
            if r != j + 1:
                fail("rtt: wrong result for %d" % j)
    return stats_us(samples)


def default_workers():
    ex = ThreadPoolExecutor()
    n = getattr(ex, "_max_workers", -1)
    ex.shutdown()
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="tasks per throughput run")
    ap.add_argument("--m", type=int, default=5000, help="round trips")
    ap.add_argument("--warmup", type=int, default=200, help="warm-up tasks per pool")
    ap.add_argument("--batch", type=int, default=4096,
                    help="futures in flight per batch (batch_auto)")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    if a.n < 1 or a.m < 1 or a.rounds < 1 or a.warmup < 0 or a.batch < 1:
        fail("bad arguments")

    emit_header(default_workers=default_workers(), cpus=usable_cpus(),
                switchinterval_s=sys.getswitchinterval())

    for rnd in range(a.rounds):
        warm = min(a.n, a.warmup)
        sub, tot = submit_collect(None, a.n, warm)
        emit({"metric": "submit_auto", "round": rnd, "n": a.n, "seconds": tot,
              "submit_seconds": sub, "rate": a.n / tot})
        sub, tot = submit_collect_batched(None, a.n, a.batch, warm)
        emit({"metric": "batch_auto", "round": rnd, "n": a.n,
              "batch": a.batch, "seconds": tot, "submit_seconds": sub,
              "rate": a.n / tot})
        sub, tot = submit_collect(2, a.n, warm)
        emit({"metric": "submit_w2", "round": rnd, "n": a.n, "seconds": tot,
              "submit_seconds": sub, "rate": a.n / tot})
        tot = map_all(a.n, min(a.n, a.warmup))
        emit({"metric": "map_auto", "round": rnd, "n": a.n, "seconds": tot,
              "rate": a.n / tot})
        med, mean, p99 = round_trip(a.m, min(a.m, a.warmup))
        emit({"metric": "rtt", "round": rnd, "m": a.m, "median_us": med,
              "mean_us": mean, "p99_us": p99})
    emit({"done": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
