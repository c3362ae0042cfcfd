#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""CPython peer of bench_process: concurrent.futures.ProcessPoolExecutor on
the same workloads as the C side, with the default start method of the
interpreter ('fork' on Linux up to 3.13; reported in the first line).

    tiny         submit N tasks returning x*x to a pool of --workers, then
                 result() on each future in order (tasks/s)
    map1         ex.map(sq, xs, chunksize=1) over N ints (elements/s)
    map1000      ex.map(sq, xs, chunksize=1000) over --n-map1000 ints
    rtt_median   M one-at-a-time round trips ex.submit(sq, j).result();
                 median in seconds
    start_first  ProcessPoolExecutor(--workers) + first result (seconds,
                 median of --starts trials)
    start_cd     ProcessPoolExecutor(--workers) + shutdown() (starts no
                 process: workers start on the first submit)
    big_first    a --big-byte bytes argument echoed back by the task: the
                 first such call on a new (warmed-up) pool (seconds)
    big_rtt      the same on that pool after 2 such calls (the first
                 included): median of 5 (seconds)
    cpu_1w/2w    --cpu-tasks tasks spinning an integer loop calibrated to
                 --cpu-ms on one core, on 1 and on --workers workers (s)
    cpu_speedup  cpu_1w / cpu_2w

Each pool is warmed up (its workers started and answering) before the
clock starts, as on the C side.  Output: one flat JSON object per line on
stdout ({"metric": name, "value": v}); the last line is {"done": true}.

Standalone use:  python3 bench/peer_cpython_process.py --n 5000 --m 1000
"""

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_common import emit, emit_header, fail, usable_cpus  # noqa: E402

MASK = (1 << 64) - 1


def sq(x):
    return x * x


def echo(b):
    return b


def spin(iters, x):
    # The same chain as bench_process.c's spin(), in 64-bit arithmetic.
    for _ in range(iters):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK
        x ^= x >> 29
    return x


def warm_up(ex, count):
    fs = [ex.submit(sq, i) for i in range(count)]
    for i, f in enumerate(fs):
        if f.result() != i * i:
            fail("warm-up: wrong result")


def tiny(workers, n, warm):
    with ProcessPoolExecutor(max_workers=workers) as ex:
        warm_up(ex, warm)
        t0 = time.perf_counter()
        fs = [ex.submit(sq, i) for i in range(n)]
        for i, f in enumerate(fs):
            if f.result() != i * i:
                fail("submit: wrong result for %d" % i)
        t1 = time.perf_counter()
    return n / (t1 - t0)


def map_rate(workers, n, chunksize, warm):
    xs = list(range(n))
    with ProcessPoolExecutor(max_workers=workers) as ex:
        warm_up(ex, warm)
        t0 = time.perf_counter()
        count = 0
        for i, r in enumerate(ex.map(sq, xs, chunksize=chunksize)):
            if r != i * i:
                fail("map: wrong result for %d" % i)
            count += 1
        t1 = time.perf_counter()
    if count != n:
        fail("map: %d results, expected %d" % (count, n))
    return n / (t1 - t0)


def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def round_trip(workers, m, warm):
    pc = time.perf_counter_ns
    samples = [0] * m
    with ProcessPoolExecutor(max_workers=workers) as ex:
        for j in range(warm):
            ex.submit(sq, j).result()
        for j in range(m):
            t0 = pc()
            r = ex.submit(sq, j).result()
            t1 = pc()
            samples[j] = t1 - t0
            if r != j * j:
                fail("rtt: wrong result for %d" % j)
    return median(samples) / 1e9


def startup(workers, trials):
    first, cd = [], []
    for _ in range(trials):
        t0 = time.perf_counter()
        ex = ProcessPoolExecutor(max_workers=workers)
        if ex.submit(sq, 7).result() != 49:
            fail("start-up: wrong result")
        first.append(time.perf_counter() - t0)
        ex.shutdown()
        t0 = time.perf_counter()
        ex = ProcessPoolExecutor(max_workers=workers)
        ex.shutdown()
        cd.append(time.perf_counter() - t0)
    return median(first), median(cd)


def big_rtt(workers, size, warm):
    """(first call on a new pool, median of 5 after 2 unmeasured)."""
    pattern = bytes((i * 131) & 255 for i in range(256))
    data = pattern * (size // 256) + pattern[: size % 256]
    times = []
    with ProcessPoolExecutor(max_workers=workers) as ex:
        warm_up(ex, warm)
        for _ in range(2 + 5):
            t0 = time.perf_counter()
            r = ex.submit(echo, data).result()
            times.append(time.perf_counter() - t0)
            if r != data:
                fail("bytes echo: wrong result")
            del r
    return times[0], median(times[2:])


def calibrate_spin(ms):
    iters = 1 << 10
    while True:
        t0 = time.perf_counter()
        spin(iters, 1)
        s = time.perf_counter() - t0
        if s >= 0.02:
            return int(iters * (ms / 1e3) / s) + 1
        iters *= 2


def cpu_batch(workers, tasks, iters, expect, warm):
    with ProcessPoolExecutor(max_workers=workers) as ex:
        warm_up(ex, warm)
        t0 = time.perf_counter()
        fs = [ex.submit(spin, iters, 1) for _ in range(tasks)]
        for f in fs:
            if f.result() != expect:
                fail("cpu: wrong result")
        t1 = time.perf_counter()
    return t1 - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000,
                    help="tiny tasks and chunksize=1 map elements")
    ap.add_argument("--n-map1000", type=int, default=100000,
                    help="chunksize=1000 map elements")
    ap.add_argument("--m", type=int, default=1000, help="round trips")
    ap.add_argument("--big", type=int, default=64 << 20, help="bytes echoed")
    ap.add_argument("--starts", type=int, default=5, help="start-up trials")
    ap.add_argument("--warmup", type=int, default=200, help="warm-up tasks per pool")
    ap.add_argument("--cpu-tasks", type=int, default=8)
    ap.add_argument("--cpu-ms", type=float, default=100.0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    if min(a.n, a.n_map1000, a.m, a.big, a.starts, a.cpu_tasks, a.workers) < 1 \
            or a.warmup < 0 or a.cpu_ms <= 0:
        fail("bad arguments")

    emit_header(start_method=multiprocessing.get_start_method(),
                cpus=usable_cpus())

    w, warm = a.workers, a.warmup
    emit({"metric": "tiny", "value": tiny(w, a.n, warm)})
    emit({"metric": "map1", "value": map_rate(w, a.n, 1, warm)})
    emit({"metric": "map1000", "value": map_rate(w, a.n_map1000, 1000, warm)})
    emit({"metric": "rtt_median", "value": round_trip(w, a.m, warm)})
    first, cd = startup(w, a.starts)
    emit({"metric": "start_first", "value": first})
    emit({"metric": "start_cd", "value": cd})
    first, rtt = big_rtt(w, a.big, warm)
    emit({"metric": "big_first", "value": first})
    emit({"metric": "big_rtt", "value": rtt})
    iters = calibrate_spin(a.cpu_ms)
    expect = spin(iters, 1)
    t1 = cpu_batch(1, a.cpu_tasks, iters, expect, warm)
    t2 = cpu_batch(w, a.cpu_tasks, iters, expect, warm)
    emit({"metric": "cpu_1w", "value": t1, "iters": iters})
    emit({"metric": "cpu_2w", "value": t2})
    emit({"metric": "cpu_speedup", "value": t1 / t2})
    emit({"done": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
