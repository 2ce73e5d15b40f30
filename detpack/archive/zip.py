"""Read any zip; write the canonical zip form.

Canonical form: members in the caller's order; each member's time is the epoch (UTC),
create_system Unix, version 2.0, no extra fields (zip64 excepted), no comments, no data
descriptors; modes from ``policy.canonical_mode``. A member already deflated (or stored) is
copied as its raw compressed stream, verified against its CRC on the way through; any other
method, or ``recompress=True``, is re-deflated at the policy level.
"""

from __future__ import annotations

import contextlib
import hashlib
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from detpack import policy
from detpack.archive.entry import (
    READ_ERRORS,
    Entry,
    check_count,
    check_link_target,
    check_name,
    check_ratio,
    check_total,
    parents,
    safe_name,
    same_streams,
)
from detpack.errors import ArchiveError

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_RAW_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class ZipMember:
    """A member of an input zip: its canonical ``Entry`` and where its bytes are."""

    entry: Entry
    info: zipfile.ZipInfo


def read_members(zf: zipfile.ZipFile, label: str, limits: policy.Limits = policy.DEFAULT_LIMITS) -> list[ZipMember]:
    """Validate every member of ``zf`` and describe it; refuse hostile or unsupported members."""
    seen: dict[str, zipfile.ZipInfo] = {}
    members: list[ZipMember] = []
    infos = zf.infolist()
    check_count(len(infos), label, limits)
    total = 0
    for info in infos:
        check_name(info.filename, label, limits)
        # zipfile cuts names at a NUL byte; the original name shows the smuggling attempt.
        name = safe_name(info.orig_filename, label)
        total += info.file_size
        check_total(total, label, limits)
        check_ratio(name, info.file_size, info.compress_size, label, limits)
        if name in seen:
            if _same_member(zf, seen[name], info):
                continue  # an exact repeat is harmless; keep the first
            raise ArchiveError(
                f"{label}: two different members are named {name!r} (which one is meant is ambiguous); "
                "refusing the archive"
            )
        seen[name] = info
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{label}: member {name!r} is encrypted; detpack cannot normalize it")
        unix_mode = info.external_attr >> 16
        if info.is_dir():
            entry = Entry(name, "dir", policy.DIR_MODE)
        elif stat.S_ISLNK(unix_mode):
            target = zf.read(info).decode("utf-8", "surrogateescape")
            check_link_target(name, target, label)
            entry = Entry(name, "symlink", policy.SYMLINK_MODE, len(target), target)
        else:
            entry = Entry(name, "file", policy.canonical_mode(unix_mode), info.file_size)
        members.append(ZipMember(entry, info))
    links = {m.entry.name for m in members if m.entry.kind == "symlink"}
    for m in members if links else ():
        through = next((p for p in parents(m.entry.name) if p in links), None)
        if through is not None:
            raise ArchiveError(
                f"{label}: member {m.entry.name!r} is written through symlink {through!r}; refusing the archive"
            )
    return members


def _same_member(zf: zipfile.ZipFile, a: zipfile.ZipInfo, b: zipfile.ZipInfo) -> bool:
    if (a.CRC, a.file_size, a.is_dir(), a.external_attr >> 16) != (
        b.CRC,
        b.file_size,
        b.is_dir(),
        b.external_attr >> 16,
    ):
        return False
    try:
        with zf.open(a) as fa, zf.open(b) as fb:
            return same_streams(fa, fb)
    except READ_ERRORS:
        return False


def external_attr(entry: Entry) -> int:
    if entry.kind == "dir":
        return ((stat.S_IFDIR | entry.mode) << 16) | 0x10
    if entry.kind == "symlink":
        return (stat.S_IFLNK | entry.mode) << 16
    return (stat.S_IFREG | entry.mode) << 16


def _zipinfo(entry: Entry, epoch: int) -> zipfile.ZipInfo:
    name = entry.name + "/" if entry.kind == "dir" else entry.name
    zi = zipfile.ZipInfo(name, policy.zip_date_time(epoch))
    zi.create_system = policy.ZIP_CREATE_SYSTEM
    zi.create_version = policy.ZIP_VERSION
    zi.extract_version = policy.ZIP_VERSION
    zi.external_attr = external_attr(entry)
    zi.flag_bits = 0
    return zi


class _Sink:
    """Feeds a member's uncompressed bytes to an optional digest and checks size and CRC."""

    def __init__(self, label: str, info: zipfile.ZipInfo, digest: hashlib._Hash | None) -> None:
        self.label, self.info, self.digest = label, info, digest
        self.crc = 0
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.info.file_size:
            raise ArchiveError(
                f"{self.label}: member {self.info.filename!r} holds more data than its declared "
                f"{self.info.file_size} bytes; refusing the archive"
            )
        self.crc = zlib.crc32(data, self.crc)
        if self.digest is not None:
            self.digest.update(data)

    def finish(self) -> None:
        if self.size != self.info.file_size or self.crc != self.info.CRC:
            raise ArchiveError(
                f"{self.label}: member {self.info.filename!r} is corrupt (size or CRC does not match); "
                "the archive is damaged or truncated"
            )


def _raw_chunks(fp: IO[bytes], info: zipfile.ZipInfo, label: str) -> Iterator[bytes]:
    central_name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")
    head = _LOCAL_HEADER.size + len(central_name)
    small = info.compress_size <= policy.CHUNK
    fp.seek(info.header_offset)
    # A small member is read with its header in one call (most members of a wheel are small).
    block = fp.read(head + info.compress_size if small else head)
    if len(block) < head or block[:4] != b"PK\x03\x04":
        raise ArchiveError(f"{label}: member {info.filename!r} has a bad local header; the archive is corrupt")
    fields = _LOCAL_HEADER.unpack(block[: _LOCAL_HEADER.size])
    local_name = block[_LOCAL_HEADER.size : _LOCAL_HEADER.size + fields[10]]
    if local_name != central_name or fields[4] != info.compress_type:
        raise ArchiveError(
            f"{label}: member {info.filename!r}: local header does not match the central directory "
            "(a smuggling or corruption attempt); refusing the archive"
        )
    if small:
        start = head + fields[11]  # the local extra field moves the data's start (and end) further
        data = block[start:]
        if start > len(block):
            fp.seek(start - len(block), 1)
        if len(data) < info.compress_size:
            data += fp.read(info.compress_size - len(data))
        if len(data) != info.compress_size:
            raise ArchiveError(f"{label}: member {info.filename!r} is truncated; the archive is damaged")
        if data:
            yield data
        return
    fp.seek(fields[11], 1)
    remaining = info.compress_size
    while remaining:
        chunk = fp.read(min(policy.CHUNK, remaining))
        if not chunk:
            raise ArchiveError(f"{label}: member {info.filename!r} is truncated; the archive is damaged")
        remaining -= len(chunk)
        yield chunk


class CanonicalZipWriter:
    """A zip writer that only ever writes canonical members (use it as a context manager).

    Members are written through ``zipfile.ZipFile``; only the raw copy of an already
    compressed stream needs zipfile's internals, and those stay in ``_append_raw``.
    """

    def __init__(self, fileobj: BinaryIO, epoch: int) -> None:
        self._zip = zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self.epoch = epoch

    def __enter__(self) -> CanonicalZipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the central directory (the output stream stays open)."""
        self._zip.close()

    def add_bytes(self, entry: Entry, data: bytes) -> None:
        zi = _zipinfo(entry, self.epoch)
        if entry.kind == "dir":
            self._zip.writestr(zi, data, compress_type=zipfile.ZIP_STORED)
        else:
            self._zip.writestr(zi, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=policy.ZIP_DEFLATE_LEVEL)

    def copy_member(
        self,
        src: zipfile.ZipFile,
        raw: BinaryIO,
        member: ZipMember,
        label: str,
        *,
        recompress: bool,
        digest: hashlib._Hash | None = None,
    ) -> None:
        """Copy ``member`` of ``src`` canonically, feeding its uncompressed bytes to ``digest``.

        ``raw`` is a binary reader of the same file as ``src``: a member kept compressed as it
        is (stored or deflated) is copied from there, stream and all, without inflating twice.
        """
        entry, info = member.entry, member.info
        if entry.kind == "dir":
            self.add_bytes(entry, b"")
            return
        sink = _Sink(label, info, digest)
        if info.compress_type in _RAW_METHODS and not recompress:
            self._copy_raw(raw, info, entry, sink, label)
        else:
            self._recompress(src, info, entry, sink, label)
        sink.finish()

    def _copy_raw(self, raw: BinaryIO, info: zipfile.ZipInfo, entry: Entry, sink: _Sink, label: str) -> None:
        zi = _zipinfo(entry, self.epoch)
        zi.compress_type = info.compress_type
        zi.CRC = info.CRC
        zi.compress_size = info.compress_size
        zi.file_size = info.file_size
        _append_raw(self._zip, zi, _inflate_into(_raw_chunks(raw, info, label), info, sink, label))

    def _recompress(self, src: zipfile.ZipFile, info: zipfile.ZipInfo, entry: Entry, sink: _Sink, label: str) -> None:
        zi = _zipinfo(entry, self.epoch)
        zi.compress_type = zipfile.ZIP_DEFLATED
        _set_level(zi, policy.ZIP_DEFLATE_LEVEL)
        zi.file_size = info.file_size
        try:
            with src.open(info) as inp, self._zip.open(zi, "w") as out:
                while chunk := inp.read(policy.CHUNK):
                    sink.feed(chunk)
                    out.write(chunk)
        except READ_ERRORS as exc:
            raise ArchiveError(f"{label}: cannot read member {info.filename!r} ({exc})") from None


def _inflate_into(chunks: Iterator[bytes], info: zipfile.ZipInfo, sink: _Sink, label: str) -> Iterator[bytes]:
    """Pass a member's compressed ``chunks`` through, feeding their inflated bytes to ``sink``."""
    d = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    for chunk in chunks:
        yield chunk
        if d is None:
            sink.feed(chunk)
            continue
        try:
            # Bounded inflation: the sink refuses the member as soon as it exceeds its
            # declared size, so a bomb never reaches memory whole.
            sink.feed(d.decompress(chunk, policy.CHUNK))
            while d.unconsumed_tail:
                sink.feed(d.decompress(d.unconsumed_tail, policy.CHUNK))
        except zlib.error as exc:
            raise ArchiveError(f"{label}: member {info.filename!r} has a corrupt deflate stream ({exc})") from None
    if d is not None and not d.eof:
        raise ArchiveError(f"{label}: member {info.filename!r} has a truncated deflate stream")


def _append_raw(zf: zipfile.ZipFile, zi: zipfile.ZipInfo, chunks: Iterator[bytes]) -> None:
    """Append a member whose compressed bytes are ``chunks`` (``zi`` carries CRC and sizes).

    zipfile has no public way to write an already compressed stream, so this one function
    does what ``ZipFile.mkdir`` does inside CPython: write ``zi.FileHeader()`` at
    ``zf.start_dir`` through ``zf.fp`` (zipfile's own stream: for an unseekable output it is a
    position-counting wrapper), then the data, then register ``zi`` in ``zf.filelist`` and
    ``zf.NameToInfo`` (which ``close`` writes as the central directory) and move ``start_dir``
    past the data. None of these names is documented; tests/test_archive.py
    (``test_append_raw_*``) pins each of them on the running CPython.
    """
    fp = zf.fp
    if fp is None:
        raise ValueError("the canonical zip writer is already closed")
    if zi.filename in zf.NameToInfo:
        raise ValueError(f"member {zi.filename!r} is already written")  # read_members refused duplicates
    zi.header_offset = fp.tell()
    if zi.header_offset != zf.start_dir:  # zipfile leaves its stream at start_dir after every member
        raise ValueError(f"zip writer is at offset {zi.header_offset}, its directory starts at {zf.start_dir}")
    fp.write(zi.FileHeader(None))
    for chunk in chunks:
        fp.write(chunk)
    zf.filelist.append(zi)
    zf.NameToInfo[zi.filename] = zi
    zf.start_dir = fp.tell()


def _set_level(zi: zipfile.ZipInfo, level: int) -> None:
    """Set the deflate level ``ZipFile.open(zi, "w")`` will use.

    ``writestr`` takes a level, but the streaming ``open(zi, "w")`` reads it from ``zi``:
    CPython 3.11/3.12 call it ``_compresslevel`` (private), 3.13+ ``compress_level``.
    Pinned by ``test_set_level_reaches_the_compressor`` in tests/test_archive.py.
    """
    attr = "compress_level" if "compress_level" in zipfile.ZipInfo.__slots__ else "_compresslevel"
    setattr(zi, attr, level)


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        raise ArchiveError(f"{path}: corrupt or truncated zip archive ({exc})") from None


@contextlib.contextmanager
def open_source(path: Path) -> Iterator[tuple[zipfile.ZipFile, BinaryIO]]:
    """``path`` opened once: its zip directory and a raw reader of the same open file.

    ``CanonicalZipWriter.copy_member`` reads raw streams from the reader; one open file for
    both means the two can never see different files (the path may be replaced meanwhile).
    """
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot open the zip archive ({exc.strerror or exc})") from None
    with raw:
        try:
            zf = zipfile.ZipFile(raw)
        except READ_ERRORS as exc:
            raise ArchiveError(f"{path}: corrupt or truncated zip archive ({exc})") from None
        with zf:
            yield zf, raw
