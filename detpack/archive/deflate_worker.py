"""A deflate worker process: blocks of the scheme in, compressed blocks out (``archive.procs``).

Run as a script by ``archive.procs`` (``python -I -S deflate_worker.py ZLIB_NG_DIR LEVEL MEMLEVEL``),
it imports nothing of detpack and only ``zlib_ng`` of the site: it starts in a few
milliseconds and never waits for the parent's GIL. It answers first with the ``zlib_ng``
file it loaded, so the parent can refuse a worker that deflates with another build.

Framing on stdin: ``<IIB`` (dictionary length, block length, last) then the dictionary and the
block; on stdout: ``<I`` length then the compressed block. End of stdin ends the worker.
``deflate_block`` is ``archive.codec.deflate_block`` to the byte (``tests/test_arch_speed.py``
compares them): the canonical bytes depend on zlib-ng's calls, so the calls are the same.
"""

from __future__ import annotations

import os
import struct
import sys

_JOB = struct.Struct("<IIB")
_LEN = struct.Struct("<I")


def deflate_block(zlib_ng: object, block: bytes, dictionary: bytes, last: bool, level: int, mem_level: int) -> bytes:
    """``codec.deflate_block``: raw deflate primed with ``dictionary``, sync-flushed or final."""
    z = zlib_ng
    if dictionary:
        c = z.compressobj(level, z.DEFLATED, -15, mem_level, 0, dictionary)  # type: ignore[attr-defined]
    else:
        c = z.compressobj(level, z.DEFLATED, -15, mem_level, 0)  # type: ignore[attr-defined]
    flush = z.Z_FINISH if last else z.Z_SYNC_FLUSH  # type: ignore[attr-defined]
    return c.compress(block) + c.flush(flush)  # type: ignore[no-any-return]


def _read(inp: object, size: int) -> bytes:
    data: bytes = inp.read(size)  # type: ignore[attr-defined]
    if len(data) != size:
        raise SystemExit(3)  # the parent went away mid-frame
    return data


def main(argv: list[str]) -> int:
    sys.path.insert(0, argv[1])
    from zlib_ng import zlib_ng

    level, mem_level = int(argv[2]), int(argv[3])
    inp = os.fdopen(0, "rb", buffering=1 << 20)
    out = os.fdopen(1, "wb", buffering=0)
    hello = f"{zlib_ng.__file__}\n{zlib_ng.ZLIBNG_RUNTIME_VERSION}".encode()
    out.write(_LEN.pack(len(hello)) + hello)
    while head := inp.read(_JOB.size):
        if len(head) != _JOB.size:
            return 3
        dict_len, block_len, last = _JOB.unpack(head)
        dictionary = _read(inp, dict_len) if dict_len else b""
        block = _read(inp, block_len)
        body = deflate_block(zlib_ng, block, dictionary, bool(last), level, mem_level)
        out.write(_LEN.pack(len(body)) + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
