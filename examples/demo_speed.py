# SPDX-License-Identifier: MIT
"""CPython side of the demo's speed line (examples/demo.c runs this).

Submits N tiny calls - square(x) - to a default ThreadPoolExecutor, then
collects every result, and prints "<calls per second> <sum of results>".
The C side does the same with cfutures; the sum lets it check that both
computed the same thing.  Usage: python3 demo_speed.py N
"""
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def square(x):
    return x * x


def main():
    n = int(sys.argv[1])
    with ThreadPoolExecutor() as ex:
        start = time.perf_counter()
        futures = [ex.submit(square, i) for i in range(n)]
        total = sum(f.result() for f in futures)
        elapsed = time.perf_counter() - start
    print(f"{n / elapsed:.1f} {total}")


if __name__ == "__main__":
    main()
