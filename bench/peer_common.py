# SPDX-License-Identifier: MIT
"""What the CPython peers of the benchmarks (peer_cpython.py,
peer_cpython_process.py) have in common: their output, one flat JSON
object per line on stdout, and their failure message."""

import json
import os
import platform
import sys


def emit(obj):
    """One line of output, flushed at once (the C side reads it through a
    pipe)."""
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def fail(msg):
    prog = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    sys.stderr.write(prog + ": " + msg + "\n")
    sys.exit(1)


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def emit_header(**fields):
    """The first line: {"peer": "cpython", "version", "implementation",
    then `fields` in the order given}."""
    emit(dict({"peer": "cpython", "version": platform.python_version(),
               "implementation": platform.python_implementation()}, **fields))
