# SPDX-License-Identifier: MIT
"""bench_mpi's peer: the same rows with mpi4py.futures.MPIPoolExecutor.

Run by bench_mpi (or by hand):  python3 peer_mpi4py.py WORKERS ROUNDS TINY MAP_N
Prints one JSON object: start-up (s), round trip (us), tiny tasks (calls/s),
chunked map (ns per element, chunksize 1000; run twice, map_ns then
map_again_ns).
"""
import json
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def noop(x):
    return x


def main():
    workers, rounds, tiny, map_n = (int(a) for a in sys.argv[1:5])
    out = {}
    t0 = time.perf_counter()
    with MPIPoolExecutor(max_workers=workers) as ex:
        ex.bootup(wait=True)
        out["startup_s"] = time.perf_counter() - t0
        for i in range(64):  # warm every connection, as bench_mpi does
            ex.submit(noop, i).result()

        t = time.perf_counter()
        for i in range(rounds):
            ex.submit(noop, i).result()
        out["round_trip_us"] = (time.perf_counter() - t) / rounds * 1e6

        t = time.perf_counter()
        fs = [ex.submit(noop, i) for i in range(tiny)]
        for f in fs:
            f.result()
        out["tiny_per_s"] = tiny / (time.perf_counter() - t)

        for key in ("map_ns", "map_again_ns"):  # twice, as bench_mpi does
            t = time.perf_counter()
            for i, v in enumerate(ex.map(noop, range(map_n), chunksize=1000)):
                if v != i:
                    raise SystemExit("map element %d is wrong" % i)
            out[key] = (time.perf_counter() - t) / map_n * 1e9
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
