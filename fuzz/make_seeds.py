#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpus of fuzz_frame_reader (fuzz/corpus/frame_reader).

Each seed is the harness's 3-byte setup (see fuzz_frame_reader.c) and
frames in the layout of src/remote/wire.h.  Run it again after the frame format
changes; the fuzzer reads the seeds, it never writes them.
"""
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "frame_reader")
RESULT, HELLO = 17, 16
SHM, LENT = 1, 2
NONE, I64, F64, BYTES, STR = 0, 1, 2, 3, 4


def frame(typ, payload, flags=0, call_id=0):
    """A frame; a RESULT carries the id of the job it answers (the
    harness numbers its jobs 0, 1, ...)."""
    return struct.pack("<IBBH", len(payload), typ, flags, call_id) + payload


def cstr(s):
    b = s.encode() + b"\0"
    return struct.pack("<I", len(b)) + b


def ok(kind, value=b""):
    if kind == I64:
        return b"\1" + bytes([kind]) + struct.pack("<q", value)
    if kind == F64:
        return b"\1" + bytes([kind]) + struct.pack("<d", value)
    if kind == BYTES:
        return b"\1" + bytes([kind]) + struct.pack("<Q", len(value)) + value
    if kind == STR:
        return b"\1" + bytes([kind]) + struct.pack("<Q", len(value) + 1) + value + b"\0"
    return b"\1" + bytes([kind])


def failure(code, typ, msg):
    return b"\0" + struct.pack("<i", code) + cstr(typ) + cstr(msg)


def result(*outcomes, call_id=0):
    return frame(RESULT, struct.pack("<I", len(outcomes)) + b"".join(outcomes), 0, call_id)


def setup(jobs=1, calls=1, hello=True, lent=False, memfd=False, unsealed=False, chunk=0, side=0,
          ring=False):
    cfg = (jobs - 1) | (calls - 1) << 2 | hello << 4 | lent << 5 | memfd << 6 | unsealed << 7
    return bytes([cfg, chunk, side // 8 | ring << 7])


SOCKET = 19


def ring_setup(claims, data, back=0, delta=0):
    """The worker's claim words (0 RUNNING, 1 CANCELLED, 2 PENDING, one
    byte per call) and its result ring holding `data`, `back` bytes before
    the ring's end, with a head `delta` bytes off."""
    return bytes(claims) + struct.pack("<HBb", len(data), back, delta) + data


def pad8(b):
    return b + b"\0" * (-len(b) % 8)


seeds = {
    "i64": setup() + result(ok(I64, 42)),
    "f64": setup() + result(ok(F64, 2.5)),
    "none": setup() + result(ok(NONE)),
    "str": setup() + result(ok(STR, b"hello")),
    "bytes": setup() + result(ok(BYTES, bytes(range(40)))),
    "failure": setup() + result(failure(7, "ValueError", "bad input 5")),
    "chunk": setup(calls=3) + result(ok(I64, 1), failure(2, "E", "m"), ok(STR, b"x")),
    "two-jobs-split": setup(jobs=2, chunk=3) + result(ok(I64, 1)) + result(ok(I64, 2), call_id=1),
    "skipped": setup(calls=2) + result(b"\2", ok(I64, 2)),
    "hello-then-result": setup(hello=False) + frame(HELLO, struct.pack("<IB", 1234, 1))
    + result(ok(I64, 3)),
    "hello-failed": setup(hello=False) + frame(HELLO, struct.pack("<IB", 1234, 0)
                                               + failure(1, "InitError", "no")),
    "partial": setup() + result(ok(STR, b"cut here"))[:-4],
    "unknown-type": setup() + frame(99, b"abcd") + result(ok(I64, 1)),
    "stray-result": setup() + result(ok(I64, 1)) + result(ok(I64, 2)),
}

lent_bytes = pad8(struct.pack("<IBBQ", 1, 1, BYTES, 26) + b"L" * 26)
seeds["lent-bytes"] = (setup(lent=True, side=len(lent_bytes)) + lent_bytes
                       + frame(RESULT, struct.pack("<Q", 40), SHM | LENT))
lent_str = pad8(struct.pack("<IBBQ", 1, 1, STR, 6) + b"lent!\0")
seeds["lent-str"] = (setup(lent=True, side=len(lent_str)) + lent_str
                     + frame(RESULT, struct.pack("<Q", 20), SHM | LENT))
payload = result(ok(STR, b"in a memfd"), ok(I64, 5))[8:]
mem = pad8(payload)
seeds["memfd"] = (setup(calls=2, memfd=True, side=len(mem)) + mem
                  + frame(RESULT, struct.pack("<Q", len(payload)), SHM))
seeds["memfd-unsealed"] = (setup(calls=2, memfd=True, unsealed=True, side=len(mem)) + mem
                           + frame(RESULT, struct.pack("<Q", len(payload)), SHM))
seeds["memfd-oversized"] = (setup(calls=2, memfd=True, side=len(mem)) + mem
                            + frame(RESULT, struct.pack("<Q", 1 << 34), SHM))

os.makedirs(HERE, exist_ok=True)
# The result ring: answers there, across the ring's end, one announced by a
# SOCKET frame and sent through the socket, and what a worker may get wrong.
seeds["ring-i64"] = setup(ring=True) + ring_setup([0], result(ok(I64, 42)))
seeds["ring-two-jobs-wrap"] = (setup(jobs=2, ring=True)
                               + ring_setup([0, 0], result(ok(I64, 1)) + result(ok(I64, 2), call_id=1),
                                            back=13))
seeds["ring-socket"] = (setup(jobs=2, ring=True)
                        + ring_setup([0, 0], result(ok(I64, 1)) + frame(SOCKET, b"", 0, 1))
                        + result(ok(STR, b"through the socket"), call_id=1))
seeds["ring-skipped-not-cancelled"] = setup(calls=2, ring=True) + ring_setup([1, 0], result(b"\2", ok(I64, 2)))
seeds["ring-claim-disagrees"] = setup(calls=2, ring=True) + ring_setup([2, 0], result(ok(I64, 1), ok(I64, 2)))
seeds["ring-head-short"] = setup(ring=True) + ring_setup([0], result(ok(STR, b"cut")), delta=-3)
seeds["ring-head-behind-tail"] = setup(ring=True) + ring_setup([0], result(ok(I64, 7)), delta=-128)

for name, data in seeds.items():
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
print("wrote %d seeds to %s" % (len(seeds), HERE))

# fuzz_mpi_messages (fuzz/corpus/mpi_messages): the harness's setup byte,
# then messages (u8 selector, u16 length, body) as an MPI worker sends
# them; the bodies are the same payloads as above, without the 8-byte
# frame header (MPI carries the length).
MPI_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "mpi_messages")
M_HB, M_HELLO, M_RESULT, M_RESULTS, M_BYE, M_LONG, M_PART = range(7)
M_RESULT_TAG = 112


def mpi_setup(jobs=1, calls=1, hello=True, timed_out=False):
    return bytes([(jobs - 1) | (calls - 1) << 2 | hello << 4 | timed_out << 5])


def msg(sel, body=b""):
    return struct.pack("<BH", sel, len(body)) + body


def payload(*outcomes):
    return struct.pack("<I", len(outcomes)) + b"".join(outcomes)


def results(*payloads):
    return b"".join(struct.pack("<I", len(p)) + p for p in payloads)


def hello(rank=1, size=2, pid=4242, host="nodeb"):
    return struct.pack("<III", rank, size, pid) + cstr(host)


long_body = payload(ok(BYTES, b"x" * 300), ok(STR, b"joined from parts"))
mseeds = {
    "hello-result": (mpi_setup(hello=False) + msg(M_HELLO, hello())
                     + msg(M_RESULT, payload(ok(I64, 42)))),
    "results-two-jobs": (mpi_setup(jobs=2, calls=2)
                         + msg(M_RESULTS, results(payload(ok(I64, 1), failure(7, "ValueError", "bad")),
                                                  payload(ok(STR, b"two"), ok(F64, 2.5))))),
    "heartbeats-bye": mpi_setup() + msg(M_HB) + msg(M_RESULT, payload(ok(NONE))) + msg(M_HB) + msg(M_BYE),
    "long-in-parts": (mpi_setup(calls=2)
                      + msg(M_LONG, struct.pack("<IQ", M_RESULT_TAG, len(long_body)))
                      + msg(M_PART, long_body[:100]) + msg(M_HB) + msg(M_PART, long_body[100:])),
    "timed-out-then-answer": mpi_setup(jobs=2, timed_out=True) + msg(M_RESULT, payload(ok(I64, 1)))
    + msg(M_RESULT, payload(ok(I64, 2))),
    "part-out-of-order": mpi_setup() + msg(M_PART, b"stray"),
    "heartbeat-with-body": mpi_setup() + msg(M_HB, b"body"),
    "result-too-many": mpi_setup() + msg(M_RESULT, payload(ok(I64, 1), ok(I64, 2))),
    "unknown-tag": mpi_setup() + msg(7 + 8 * 30, b"?"),
    "result-empty": mpi_setup() + msg(M_RESULT),  # once undefined behaviour (NULL + 0)
}
os.makedirs(MPI_HERE, exist_ok=True)
for name, data in mseeds.items():
    with open(os.path.join(MPI_HERE, name), "wb") as f:
        f.write(data)
print("wrote %d seeds to %s" % (len(mseeds), MPI_HERE))
