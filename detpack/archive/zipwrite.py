"""The bytes of the canonical zip: local headers, central directory and end records.

Written with ``struct``, field for field what ``zipfile`` writes for the same members (its
``ZipInfo.FileHeader`` and ``ZipFile._write_end_record`` on CPython 3.11 to 3.13, zip64
records included; ``tests/test_archive.py`` compares the two on the running CPython), but
without a ``ZipInfo`` per member and without a write call per field: members are gathered
in a buffer and reach the output stream about once a MiB, the central directory in one call.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import BinaryIO, Final

_LOCAL: Final = struct.Struct("<4s2B4HL2L2H")
_CENTRAL: Final = struct.Struct("<4s4B4HL2L5H2L")
_END: Final = struct.Struct("<4s4H2LH")
_END64: Final = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64: Final = struct.Struct("<4sLQL")
_ZIP64_FIELD: Final = struct.Struct("<HHQQ")

#: zipfile's limits: above ZIP64_LIMIT a size or offset moves to a zip64 field; above
#: FILECOUNT_LIMIT members the archive needs the zip64 end records.
ZIP64_LIMIT: Final = (1 << 31) - 1
FILECOUNT_LIMIT: Final = (1 << 16) - 1
STORED: Final = 0
DEFLATED: Final = 8
_ZIP64_VERSION: Final = 45
_UTF8_NAME: Final = 0x800
#: The buffer of small members is written out once it holds this much.
_FLUSH: Final = 1 << 20


def encode_name(name: str) -> tuple[bytes, int]:
    """The name's bytes and flag bits, as zipfile encodes them (ASCII, else UTF-8 and the UTF-8 flag).

    ``zipfile.ZipInfo`` cuts a name at a NUL and turns the platform's separator into ``/``.
    """
    cut = name.find("\x00")
    if cut >= 0:
        name = name[:cut]
    if os.sep != "/" and os.sep in name:
        name = name.replace(os.sep, "/")
    if name.isascii():
        return name.encode("ascii"), 0
    return name.encode("utf-8"), _UTF8_NAME


class ZipSink:
    """Writes members' headers and data to ``fp``; ``close`` writes the central directory.

    Every member has the one time ``date_time``, ``version`` (made on ``create_system``; 4.5 where
    zip64 fields are needed), no extra field but zip64's, no comment. Offsets count from ``fp.tell()`` at the start, or
    from 0 for a stream without ``tell`` (as zipfile counts them).
    """

    def __init__(
        self, fp: BinaryIO, date_time: tuple[int, int, int, int, int, int], create_system: int, version: int = 20
    ) -> None:
        if date_time[0] < 1980:
            raise ValueError("ZIP does not support timestamps before 1980")
        self._fp: BinaryIO | None = fp
        self._time = date_time[3] << 11 | date_time[4] << 5 | (date_time[5] // 2)
        self._date = (date_time[0] - 1980) << 9 | date_time[1] << 5 | date_time[2]
        self._system, self._version = create_system, version
        try:
            self.start_dir = fp.tell()
            self.seekable = bool(getattr(fp, "seekable", lambda: False)())
        except (AttributeError, OSError):
            self.start_dir, self.seekable = 0, False
        self._buffer = bytearray()
        self._central: list[bytes] = []
        self._names: set[bytes] = set()

    @property
    def offset(self) -> int:
        """Where the next member's header goes."""
        return self.start_dir + len(self._buffer)

    def header(
        self, name: bytes, flags: int, method: int, crc: int, compress_size: int, size: int, zip64: bool | None
    ) -> tuple[bytes, int]:
        """A local header and the version it needs (``zip64`` None: decided by the sizes)."""
        if zip64 is None:
            zip64 = size > ZIP64_LIMIT or compress_size > ZIP64_LIMIT
        extra = b""
        version = self._version
        if zip64:
            extra = _ZIP64_FIELD.pack(1, 16, size, compress_size)
            size = compress_size = 0xFFFFFFFF
            version = max(_ZIP64_VERSION, version)
        fields = (b"PK\x03\x04", version, 0, flags, method, self._time, self._date, crc, compress_size, size)
        return _LOCAL.pack(*fields, len(name), len(extra)) + name + extra, version

    def add(
        self,
        name: str,
        external: int,
        method: int,
        crc: int,
        size: int,
        pieces: Iterable[bytes],
        compress_size: int,
        *,
        zip64: bool | None = None,
    ) -> None:
        """A member whose compressed bytes, ``compress_size`` of them, are ``pieces``."""
        encoded, flags = self._claim(name)
        header, version = self.header(encoded, flags, method, crc, compress_size, size, zip64)
        offset = self.offset
        self._buffer += header
        for piece in pieces:
            if len(piece) >= _FLUSH:
                self._write_buffer()
                self._write(piece)
            else:
                self._buffer += piece
        if len(self._buffer) >= _FLUSH:
            self._write_buffer()
        self._record(encoded, flags, method, crc, compress_size, size, offset, external, version)

    def add_whole(self, name: str, external: int, method: int, crc: int, size: int, body: bytes) -> None:
        """``add`` of a member whose compressed bytes are ``body``: the common case, without zip64, inlined."""
        offset = self.start_dir + len(self._buffer)
        n = len(body)
        if offset > ZIP64_LIMIT or size > ZIP64_LIMIT or n > ZIP64_LIMIT or n >= _FLUSH:
            self.add(name, external, method, crc, size, (body,), n)
            return
        encoded, flags = self._claim(name)
        stamp = (flags, method, self._time, self._date, crc, n, size, len(encoded))
        version = self._version
        self._buffer += _LOCAL.pack(b"PK\x03\x04", version, 0, *stamp, 0)
        self._buffer += encoded
        self._buffer += body
        central = _CENTRAL.pack(b"PK\x01\x02", version, self._system, version, 0, *stamp, 0, 0, 0, 0, external, offset)
        self._central.append(central + encoded)
        if len(self._buffer) >= _FLUSH:
            self._write_buffer()

    def add_patched(
        self, name: str, external: int, method: int, crc: int, size: int, pieces: Iterable[bytes], zip64: bool
    ) -> None:
        """A member of unknown compressed size, written as it comes; its header is patched after (seekable only)."""
        fp = self._stream()
        encoded, flags = self._claim(name)
        self._write_buffer()
        offset = self.start_dir
        header, version = self.header(encoded, flags, method, crc, 0, size, zip64)
        self._write(header)
        for piece in pieces:
            self._write(piece)
        end = self.start_dir
        compress_size = end - offset - len(header)
        header, version = self.header(encoded, flags, method, crc, compress_size, size, zip64)
        fp.seek(offset)
        fp.write(header)
        fp.seek(end)
        self._record(encoded, flags, method, crc, compress_size, size, offset, external, version)

    def close(self) -> None:
        """Write the central directory and the end records; flush (the stream stays open)."""
        fp = self._stream()
        self._write_buffer()
        directory = b"".join(self._central)
        count, size, start = len(self._central), len(directory), self.start_dir
        end = bytearray(directory)
        if count > FILECOUNT_LIMIT or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
            end += _END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, start)
            end += _LOCATOR64.pack(b"PK\x06\x07", 0, start + size, 1)
            count, size, start = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
        end += _END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0)
        self._write(end)
        fp.flush()
        self._fp = None

    def _stream(self) -> BinaryIO:
        if self._fp is None:
            raise ValueError("the canonical zip writer is already closed")
        return self._fp

    def _claim(self, name: str) -> tuple[bytes, int]:
        self._stream()
        encoded, flags = encode_name(name)
        if encoded in self._names:
            raise ValueError(f"member {name!r} is already written")  # read_members refused duplicates
        self._names.add(encoded)
        return encoded, flags

    def _record(
        self,
        name: bytes,
        flags: int,
        method: int,
        crc: int,
        compress_size: int,
        size: int,
        offset: int,
        external: int,
        version: int,
    ) -> None:
        large: list[int] = []
        if size > ZIP64_LIMIT or compress_size > ZIP64_LIMIT:
            large += (size, compress_size)
            size = compress_size = 0xFFFFFFFF
        if offset > ZIP64_LIMIT:
            large.append(offset)
            offset = 0xFFFFFFFF
        extra = struct.pack(f"<HH{len(large)}Q", 1, 8 * len(large), *large) if large else b""
        if large:
            version = max(_ZIP64_VERSION, version)
        fields = (b"PK\x01\x02", version, self._system, version, 0, flags, method, self._time, self._date, crc)
        central = _CENTRAL.pack(*fields, compress_size, size, len(name), len(extra), 0, 0, 0, external, offset)
        self._central.append(central + name + extra)

    def _write_buffer(self) -> None:
        """Write the buffer out; a new one takes its place (the stream may keep the old one)."""
        if self._buffer:
            self._stream().write(self._buffer)
            self.start_dir += len(self._buffer)
            self._buffer = bytearray()

    def _write(self, data: bytes | bytearray) -> None:
        """Write ``data`` after the buffer's content (the caller wrote that out first)."""
        self._stream().write(data)
        self.start_dir += len(data)
