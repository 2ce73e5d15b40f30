"""gzip streams: a canonical writer and a streaming reader.

Canonical gzip stream: no file name, mtime 0, XFL from the fixed level, OS byte 255, and the
deflate data cut into fixed blocks compressed independently (in parallel) with the previous
32 KiB as dictionary, so the bytes do not depend on the number of threads.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, BinaryIO

from detpack import policy
from detpack.archive.entry import READ_ERRORS
from detpack.errors import ArchiveError


class BlockGzipWriter(io.RawIOBase):
    """A gzip stream compressed in fixed blocks on a thread pool, pigz's way.

    The input is cut into ``policy.GZIP_BLOCK`` blocks; each block is deflated on its own
    with the previous 32 KiB of input as its dictionary and ends with a sync flush (the last
    one finishes the stream), so the concatenation is one valid deflate stream. Every block's
    bytes depend only on the input, never on the number of threads: one worker or eight give
    the same file. zlib releases the GIL, so blocks compress in parallel. Header: no name,
    mtime 0, XFL for the level, OS byte 255; trailer: CRC32 and size of all input.
    """

    def __init__(self, fileobj: IO[bytes], *, level: int = policy.GZIP_LEVEL, workers: int | None = None) -> None:
        super().__init__()
        self._out = fileobj
        self._level = level
        self._workers = workers or min(8, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=self._workers)
        self._pending: deque[Future[bytes]] = deque()
        self._buffer = bytearray()
        self._dictionary = b""
        self._crc = 0
        self._size = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        self._out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([xfl, policy.GZIP_OS_BYTE]))

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size  # tarfile asks where it is; the uncompressed position is the answer

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self._crc = zlib.crc32(view, self._crc)
        self._size += len(view)
        while len(self._buffer) > policy.GZIP_BLOCK:  # keep one block back: the last must finish
            self._submit(bytes(self._buffer[: policy.GZIP_BLOCK]), last=False)
            del self._buffer[: policy.GZIP_BLOCK]
        return len(view)

    def _submit(self, block: bytes, *, last: bool) -> None:
        self._pending.append(self._pool.submit(_deflate_block, block, self._dictionary, self._level, last))
        self._dictionary = block[-32768:] if len(block) >= 32768 else (self._dictionary + block)[-32768:]
        while len(self._pending) > 2 * self._workers:  # bounded memory: a few blocks in flight
            self._out.write(self._pending.popleft().result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._submit(bytes(self._buffer), last=True)
            self._buffer.clear()
            while self._pending:
                self._out.write(self._pending.popleft().result())
            self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True)
            super().close()


def _deflate_block(block: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
    if dictionary:
        compressor = zlib.compressobj(
            level, zlib.DEFLATED, -15, policy.GZIP_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, dictionary
        )
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, policy.GZIP_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY)
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def canonical_writer(fileobj: IO[bytes]) -> BlockGzipWriter:
    """The canonical gzip writer over ``fileobj`` (see ``BlockGzipWriter``)."""
    return BlockGzipWriter(fileobj)


def gunzip(src: Path, dst: IO[bytes], limits: policy.Limits = policy.DEFAULT_LIMITS) -> None:
    """Stream-decompress ``src`` (all members) into ``dst``; refuse corrupt, truncated or bomb input.

    Only reading is guarded here: a failing write (disk full) is the caller's to report.
    """
    written = 0
    with _reading(src):
        inp = gzip.open(src, "rb")  # noqa: SIM115 - closed below; its errors are reading errors
    with inp:
        while True:
            with _reading(src):
                chunk = inp.read(policy.CHUNK)
            if not chunk:
                break
            written += len(chunk)
            if written > limits.max_total_bytes:
                raise ArchiveError(
                    f"{src}: decompresses to more than {limits.max_total_bytes} bytes (limit max_total_bytes); "
                    "refusing a likely gzip bomb (raise it with --limit max_total_bytes=N if trusted)"
                )
            dst.write(chunk)


@contextlib.contextmanager
def _reading(src: Path) -> Iterator[None]:
    try:
        yield
    except READ_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, EOFError):
            reason = "the stream ends early; the file is truncated"
        raise ArchiveError(f"{src}: corrupt gzip stream ({reason})") from None


def normalize_gz(src: Path, dst: BinaryIO, limits: policy.Limits = policy.DEFAULT_LIMITS) -> None:
    """Rewrite a plain (non-tar) gzip file with the canonical header and level."""
    with canonical_writer(dst) as out:
        gunzip(src, out, limits)  # type: ignore[arg-type]
