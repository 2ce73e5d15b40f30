"""bzip2 and LZMA zip members decompressed at most a chunk at a time.

zipfile's own readers decompress each compressed chunk they read whole: a few hundred bytes of
bzip2, or a few KiB of LZMA, make GiBs in one call. ``zip`` reads those members through these
instead, its sink checking their size and CRC as the bytes come.
"""

from __future__ import annotations

import bz2
import lzma
import zipfile
from collections.abc import Callable, Iterator
from typing import Final, Protocol

from detpack import policy
from detpack.archive.entry import READ_ERRORS
from detpack.errors import ArchiveError


class Sink(Protocol):
    """What takes a member's bytes as they come (``zip._Sink``: it refuses a member past its declared size)."""

    def feed(self, data: bytes) -> None: ...


class ZipLzma:
    """A zip's LZMA member (a 4-byte header: version, size of the properties; the properties; a raw
    LZMA1 stream) decompressed at most ``max_length`` bytes at a time: zipfile's own reader has no
    such bound, and LZMA turns a few KiB into hundreds of MiB in one call."""

    def __init__(self) -> None:
        self._head = b""
        self._d: lzma.LZMADecompressor | None = None

    @property
    def eof(self) -> bool:
        return self._d is not None and self._d.eof

    @property
    def needs_input(self) -> bool:
        return self._d is None or self._d.needs_input

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._d is None:
            self._head += data
            if len(self._head) < 4 or len(self._head) < 4 + int.from_bytes(self._head[2:4], "little"):
                return b""
            end = 4 + int.from_bytes(self._head[2:4], "little")
            props = lzma._decode_filter_properties(lzma.FILTER_LZMA1, self._head[4:end])  # type: ignore[attr-defined]
            self._d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[props])
            data, self._head = self._head[end:], b""
        return self._d.decompress(data, max_length)


#: The other methods zipfile reads, decompressed here a chunk at a time (zipfile's reader decompresses
#: each compressed chunk whole: a bzip2 member of a few KiB can make GiBs in one call).
BOUNDED: Final[dict[int, Callable[[], bz2.BZ2Decompressor | ZipLzma]]] = {
    zipfile.ZIP_BZIP2: bz2.BZ2Decompressor,
    zipfile.ZIP_LZMA: ZipLzma,
}


def bounded(
    d: bz2.BZ2Decompressor | ZipLzma, chunks: Iterator[bytes], sink: Sink, info: zipfile.ZipInfo, label: str
) -> Iterator[bytes]:
    """A bzip2 or LZMA member's bytes, at most a chunk at a time; its end marker is not required (as
    zipfile, which stops at the member's compressed size): ``sink`` checks size and CRC."""
    try:
        for chunk in chunks:
            if d.eof:  # bytes after the stream's end: read, never kept
                continue
            out = d.decompress(chunk, policy.CHUNK)
            while True:
                if out:
                    sink.feed(out)
                    yield out
                if d.eof or d.needs_input:
                    break
                out = d.decompress(b"", policy.CHUNK)
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label}: cannot read member {info.filename!r} ({exc})") from None
