"""Read any zip; write the canonical zip form.

Canonical form: members in the caller's order; each member's time is the epoch (UTC),
create_system Unix, version 2.0, no extra fields (zip64 excepted), no comments, no data
descriptors; modes from ``policy.canonical_mode``. Every member is inflated once (verified
against its size and CRC) and deflated again by ``archive.codec``, whatever the input's
method: the output never carries the build machine's deflate.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO, Final

from zlib_ng import zlib_ng

from detpack import policy
from detpack.archive import codec
from detpack.archive.entry import (
    DUPLICATES_HINT,
    READ_ERRORS,
    Entry,
    check_central_count,
    check_count,
    check_link_target,
    check_name,
    check_ratio,
    check_total,
    parents,
    safe_name,
    same_streams,
)
from detpack.archive.pool import Pool
from detpack.archive.zipdecode import BOUNDED, bounded
from detpack.archive.zipmember import (
    INFLATE_ERROR,
    LOCAL_HEADER,
    RAW_METHODS,
    SMALL,
    Ahead,
    Prepared,
    ZipMember,
    ahead_of_time,
    central_name,
    data_start,
    inflated,
    prepared,
    stored,
    truncated,
)
from detpack.archive.zipwrite import DEFLATED, STORED, ZIP64_LIMIT, ZipSink
from detpack.errors import ArchiveError


def read_members(
    zf: zipfile.ZipFile,
    label: str,
    limits: policy.Limits = policy.DEFAULT_LIMITS,
    *,
    replaced: list[str] | None = None,
) -> list[ZipMember]:
    """Validate every member of ``zf`` and describe it; refuse hostile or unsupported members.

    Two different members under one name are refused, unless ``replaced`` is given: then the
    last one wins, as every extractor resolves it (zipfile, pip, unzip overwrite in order), and
    the name is appended to ``replaced``. An exact repeat is always harmless: the first is kept.
    """
    seen: dict[str, zipfile.ZipInfo] = {}
    position: dict[str, int] = {}
    members: list[ZipMember] = []
    infos = zf.infolist()
    check_count(len(infos), label, limits)
    total = 0
    # Each check runs where it could refuse (a name of n characters is at most 4n bytes in UTF-8).
    max_chars, max_total, ratio_floor = limits.max_name_bytes // 4, limits.max_total_bytes, limits.ratio_floor
    for info in infos:
        if len(info.filename) > max_chars:
            check_name(info.filename, label, limits)
        # zipfile cuts names at a NUL byte; the original name shows the smuggling attempt.
        name = safe_name(info.orig_filename, label)
        total += info.file_size
        if total > max_total:
            check_total(total, label, limits)
        if info.file_size > ratio_floor:
            check_ratio(name, info.file_size, info.compress_size, label, limits)
        if info.flag_bits & 0x1:  # before a repeated name is compared: zipfile cannot open it (RuntimeError)
            raise ArchiveError(f"{label}: member {name!r} is encrypted; detpack cannot normalize it")
        if name in seen:
            if _same_member(zf, seen[name], info):
                continue  # an exact repeat is harmless; keep the first
            if replaced is None:
                raise ArchiveError(
                    f"{label}: two different members are named {name!r} (which one is meant is ambiguous); "
                    f"refusing the archive (extractors keep the last one: {DUPLICATES_HINT})"
                )
            replaced.append(name)
        seen[name] = info
        unix_mode = info.external_attr >> 16
        if info.is_dir():
            entry = Entry(name, "dir", policy.DIR_MODE)
        elif stat.S_ISLNK(unix_mode):
            target = _link_target(zf, info, name, label)
            check_link_target(name, target, label)
            entry = Entry(name, "symlink", policy.SYMLINK_MODE, len(target), target)
        else:
            entry = Entry(name, "file", policy.canonical_mode(unix_mode), info.file_size)
        if name in position:
            members[position[name]] = ZipMember(entry, info)
        else:
            position[name] = len(members)
            members.append(ZipMember(entry, info))
    links = {m.entry.name for m in members if m.entry.kind == "symlink"}
    for m in members if links else ():
        through = next((p for p in parents(m.entry.name) if p in links), None)
        if through is not None:
            raise ArchiveError(
                f"{label}: member {m.entry.name!r} is written through symlink {through!r}; refusing the archive"
            )
    return members


#: The longest symlink target a Linux file system stores (PATH_MAX, 4096, with its NUL).
_LINK_MAX: Final = 4095


def _link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, label: str) -> str:
    """A symlink member's target, read (and its CRC checked) while the members are listed."""
    if info.file_size > _LINK_MAX:
        raise ArchiveError(
            f"{label}: symlink {name!r} has a {info.file_size}-byte target (a link holds at most {_LINK_MAX}); "
            "refusing the archive"
        )
    try:
        with open_member(zf, info, label) as f:  # at most its declared size, checked against its CRC; never
            data = f.read(info.file_size + 1)  # read() (that reads the whole compressed size at once)
    except READ_ERRORS as exc:
        why = f"cannot read the target of symlink {name!r} ({exc})"
        raise ArchiveError(f"{label}: {why}; refusing the archive") from None
    return data.decode("utf-8", "surrogateescape")


def _same_member(zf: zipfile.ZipFile, a: zipfile.ZipInfo, b: zipfile.ZipInfo) -> bool:
    if (a.CRC, a.file_size, a.is_dir(), a.external_attr >> 16) != (
        b.CRC,
        b.file_size,
        b.is_dir(),
        b.external_attr >> 16,
    ):
        return False
    try:
        with open_member(zf, a, "") as fa, open_member(zf, b, "") as fb:
            return same_streams(fa, fb)
    except READ_ERRORS:
        return False


def open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> contextlib.AbstractContextManager[IO[bytes]]:
    """``zf.open(info)``, except for a bzip2 or LZMA member: zipfile decompresses each chunk it reads of
    those whole (a few hundred bytes of bzip2 make GiBs), so they are read a chunk at a time here."""
    if info.compress_type in BOUNDED and not info.flag_bits & 0x61:
        return contextlib.nullcontext(_BoundedMember(zf, info, label))  # type: ignore[arg-type]
    return zf.open(info)


class _BoundedMember:
    """A bzip2 or LZMA member of ``zf`` read at most a chunk at a time, size and CRC checked; its errors
    are zipfile's (``BadZipFile``), as ``zf.open``'s would be."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> None:
        self._label = label
        self._sink = _Sink(label, info, None)
        reader = _PositionalReader(zf.fp.fileno())  # type: ignore[union-attr]  # its own position: never zipfile's
        self._chunks = _content(zf, reader, info, self._sink, label)  # type: ignore[arg-type]
        self._buffer = b""
        self._done = False

    def read(self, n: int) -> bytes:
        try:
            while len(self._buffer) < n and not self._done:
                chunk = next(self._chunks, None)
                if chunk is None:
                    self._done = True
                    self._sink.finish()
                else:
                    self._buffer += chunk
        except ArchiveError as exc:
            raise zipfile.BadZipFile(str(exc).removeprefix(f"{self._label}: ").split("; ")[0]) from None
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


def external_attr(entry: Entry) -> int:
    if entry.kind == "dir":
        return ((stat.S_IFDIR | entry.mode) << 16) | 0x10
    if entry.kind == "symlink":
        return (stat.S_IFLNK | entry.mode) << 16
    return (stat.S_IFREG | entry.mode) << 16


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
        self.crc = codec.crc32(data, self.crc)
        if self.digest is not None:
            self.digest.update(data)

    def finish(self) -> None:
        if self.size != self.info.file_size or self.crc != self.info.CRC:
            raise ArchiveError(
                f"{self.label}: member {self.info.filename!r} is corrupt (size or CRC does not match); "
                "the archive is damaged or truncated"
            )


def _raw_chunks(fp: IO[bytes], info: zipfile.ZipInfo, label: str) -> Iterator[bytes]:
    name = central_name(info)
    head = LOCAL_HEADER.size + len(name)
    small = info.compress_size <= policy.CHUNK
    if info.header_offset < 0:  # the end record claims its central directory starts later than it does
        raise ArchiveError(
            f"{label}: member {info.filename!r} starts at offset {info.header_offset}, outside the file; "
            "the archive is damaged"
        )
    try:
        fp.seek(info.header_offset)
    except (OSError, ValueError, OverflowError):  # past what the file system seeks to (ext4: 16 TiB; any: 2**63)
        block = b""  # no local header there, as past the file's end
    else:
        # A small member is read with its header in one call (most members of a wheel are small).
        block = fp.read(head + info.compress_size if small else head)
    start = data_start(block, head, name, info, label)
    if small:
        data = block[start:]
        if start > len(block):
            fp.seek(start - len(block), 1)
        if len(data) < info.compress_size:
            data += fp.read(info.compress_size - len(data))
        if len(data) != info.compress_size:
            raise truncated(info, label)
        if data:
            yield data
        return
    fp.seek(start - head, 1)
    remaining = info.compress_size
    while remaining:
        chunk = fp.read(min(policy.CHUNK, remaining))
        if not chunk:
            raise truncated(info, label)
        remaining -= len(chunk)
        yield chunk


class CanonicalZipWriter:
    """A zip writer that only ever writes canonical members (use it as a context manager).

    Every file member is deflated by ``archive.codec`` (zlib-ng, pinned), never copied from
    the input's stream and never by the interpreter's zlib: the bytes are the same on every
    machine. Content that is already compressed (``policy.STORED_MAGIC``) and empty files are
    stored. A member of one block (``policy.GZIP_BLOCK``) is read, inflated and deflated at
    once (``archive.zipmember``); the members announced by ``expect`` (up to a few MiB) are
    prepared on the pool, in batches, ahead of their turn, others in the calling thread.
    Larger members stream, their blocks deflated on the pool. Headers, central directory and
    end records are written by ``archive.zipwrite``.
    """

    def __init__(self, fileobj: BinaryIO, epoch: int, *, workers: int | None = None) -> None:
        codec.ready()
        self._sink = ZipSink(fileobj, policy.zip_date_time(epoch), policy.ZIP_CREATE_SYSTEM, policy.ZIP_VERSION)
        self.epoch = epoch
        self._workers = workers or min(8, os.cpu_count() or 1)
        self._pool = Pool(self._workers)
        self._ahead: Ahead | None = None

    def __enter__(self) -> CanonicalZipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # an error: the output is discarded; stop the workers, release the zip writer
            self._pool.shutdown(cancel=True)
            with contextlib.suppress(Exception):
                self._sink.close()

    def close(self) -> None:
        """Write the central directory (the output stream stays open)."""
        try:
            self._sink.close()
        finally:
            self._pool.shutdown()

    def add_bytes(self, entry: Entry, data: bytes) -> None:
        name = entry.name + "/" if entry.kind == "dir" else entry.name
        crc = codec.crc32(data)
        if len(data) <= SMALL:
            self._write_small(name, external_attr(entry), crc, data)
        else:
            self._stream(name, external_attr(entry), crc, len(data), iter((data,)))

    def expect(
        self, src: zipfile.ZipFile, raw: BinaryIO, members: Sequence[ZipMember], label: str, *, record: bool = False
    ) -> None:
        """Announce the members of ``src`` that ``copy_member`` will be given next, in that order: all
        but the largest are prepared ahead on the pool (read from ``raw``'s file with ``os.pread``)."""
        if not isinstance(raw, io.BufferedReader | io.FileIO):
            return  # no file descriptor to read at (or reads that are counted): one at a time
        window = 2 * self._workers
        large = functools.partial(_prepared_large, src)
        self._ahead = Ahead(self._pool, raw.fileno(), members, label, record, window, large)

    def copy_member(
        self, src: zipfile.ZipFile, raw: BinaryIO, member: ZipMember, label: str, *, record: bool = False
    ) -> bytes | None:
        """Write ``member`` of ``src`` canonically; return the sha256 of its content if ``record``.

        ``raw`` is a binary reader of the same file as ``src``: a stored or deflated member is
        read from there (its local header checked against the central directory) and inflated
        once; every member is verified against its declared size and CRC on the way through.
        """
        entry, info = member.entry, member.info
        if entry.kind == "dir":
            self.add_bytes(entry, b"")
            return hashlib.sha256(b"").digest() if record else None
        ahead = self._ahead
        if ahead is not None and ahead.record == record and ahead_of_time(member):
            ready = ahead.take(member)
            if ready is not None:
                method, body, digest = ready
                self._sink.add_whole(entry.name, external_attr(entry), method, info.CRC, info.file_size, body)
                return digest
        if info.file_size <= SMALL and info.compress_size <= policy.CHUNK and info.compress_type in RAW_METHODS:
            data = inflated(b"".join(_raw_chunks(raw, info, label)), info, label)  # one read, one inflate
            method, body, digest = prepared(data, record)
            self._sink.add_whole(entry.name, external_attr(entry), method, info.CRC, len(data), body)
            return digest
        sink = _Sink(label, info, hashlib.sha256() if record else None)
        content = _content(src, raw, info, sink, label)
        self._stream(entry.name, external_attr(entry), info.CRC, info.file_size, content)
        sink.finish()
        return sink.digest.digest() if sink.digest is not None else None

    def _write_small(self, name: str, external: int, crc: int, data: bytes) -> None:
        """A member of one block, deflated in this thread."""
        method, body, _ = prepared(data, False)
        self._sink.add_whole(name, external, method, crc, len(data), body)

    def _stream(self, name: str, external: int, crc: int, size: int, content: Iterator[bytes]) -> None:
        """Write a large member as it is read: header first, sizes patched in after the data."""
        first = _lead(content)  # the store rule reads the content's first bytes, however it was chunked
        store = stored(first)
        method = STORED if store else DEFLATED
        window = 2 * self._workers
        if not self._sink.seekable:  # unseekable: compress to a spool first
            with tempfile.TemporaryFile() as spool:
                for piece in _compressed(first, content, store, self._pool, window):
                    spool.write(piece)
                compress_size = spool.tell()
                spool.seek(0)
                spooled = iter(lambda: spool.read(policy.CHUNK), b"")
                self._sink.add(name, external, method, crc, size, spooled, compress_size)
            return
        zip64 = size * 1.05 > ZIP64_LIMIT  # what zipfile decides before streaming
        if size <= _HELD:  # held, then written once with its sizes: no seeking back
            pieces = list(_compressed(first, content, store, self._pool, window))
            compress_size = sum(len(p) for p in pieces)
            self._sink.add(name, external, method, crc, size, pieces, compress_size, zip64=zip64)
            return
        pieces_as_read = _compressed(first, content, store, self._pool, window)
        self._sink.add_patched(name, external, method, crc, size, pieces_as_read, zip64)


def _lead(content: Iterator[bytes]) -> bytes:
    """The first bytes of ``content`` (at least ``_MAGIC_BYTES`` unless it is shorter)."""
    first = b""
    for chunk in content:
        first += chunk
        if len(first) >= _MAGIC_BYTES:
            break
    return first


def _compressed(first: bytes, content: Iterator[bytes], store: bool, pool: Pool | None, window: int) -> Iterator[bytes]:
    if store:
        yield first
        yield from content
        return
    deflater = codec.BlockDeflater(pool, window=window)
    yield from deflater.feed(first)
    for chunk in content:
        yield from deflater.feed(chunk)
    yield from deflater.finish()


def _prepared_large(src: zipfile.ZipFile, fd: int, member: ZipMember, label: str, record: bool) -> Prepared:
    """What ``copy_member`` writes of a larger member, on a worker: read with ``os.pread``, inflated,
    checked, hashed and deflated in this thread (the blocks one after the other: the same bytes)."""
    info = member.info
    sink = _Sink(label, info, hashlib.sha256() if record else None)
    content = _content(src, _PositionalReader(fd), info, sink, label)  # type: ignore[arg-type]
    first = _lead(content)
    store = stored(first)
    body = b"".join(_compressed(first, content, store, None, 1))
    sink.finish()
    return (STORED if store else DEFLATED), body, sink.digest.digest() if sink.digest is not None else None


class _PositionalReader:
    """``seek`` and ``read`` of one open file at a position of its own (``os.pread``): a worker's reader."""

    def __init__(self, fd: int) -> None:
        self._fd, self._position = fd, 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self._position = offset if whence == 0 else self._position + offset
        return self._position

    def read(self, size: int) -> bytes:
        data = os.pread(self._fd, size, self._position)
        self._position += len(data)
        return data


#: The longest magic in ``policy.STORED_MAGIC``: what the store rule reads of a member.
_MAGIC_BYTES: Final = max(len(m) for m in policy.STORED_MAGIC)
#: Members up to this size are compressed whole before their header is written (the output is then
#: written front to back, so it can be hashed as it goes); larger ones stream and their header is patched.
_HELD: Final = 8 << 20


def _content(src: zipfile.ZipFile, raw: BinaryIO, info: zipfile.ZipInfo, sink: _Sink, label: str) -> Iterator[bytes]:
    """A member's uncompressed bytes in chunks, each fed to ``sink`` (which checks size and CRC)."""
    if info.compress_type in BOUNDED and not info.flag_bits & 0x60:  # not patched data, nor strong encryption
        yield from bounded(BOUNDED[info.compress_type](), _raw_chunks(raw, info, label), sink, info, label)
        return
    if info.compress_type not in RAW_METHODS:  # what zipfile says of the others (not supported)
        try:
            with src.open(info) as inp:
                while chunk := inp.read(policy.CHUNK):
                    sink.feed(chunk)
                    yield chunk
        except READ_ERRORS as exc:
            raise ArchiveError(f"{label}: cannot read member {info.filename!r} ({exc})") from None
        return
    chunks = _raw_chunks(raw, info, label)
    if info.compress_type == zipfile.ZIP_STORED:
        for chunk in chunks:
            sink.feed(chunk)
            yield chunk
        return
    d = zlib_ng.decompressobj(-15)
    try:
        for chunk in chunks:
            if d.eof:  # bytes after the stream's end: read (a cut member is still refused), never kept
                continue
            # Bounded inflation: the sink refuses the member as soon as it exceeds its
            # declared size, so a bomb never reaches memory whole.
            out = d.decompress(chunk, policy.CHUNK)
            while True:
                if out:
                    sink.feed(out)
                    yield out
                if not d.unconsumed_tail:
                    break
                out = d.decompress(d.unconsumed_tail, policy.CHUNK)
    except INFLATE_ERROR as exc:
        raise ArchiveError(f"{label}: member {info.filename!r} has a corrupt deflate stream ({exc})") from None
    if not d.eof:
        raise ArchiveError(f"{label}: member {info.filename!r} has a truncated deflate stream")


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        raise ArchiveError(f"{path}: corrupt or truncated zip archive ({exc})") from None


@contextlib.contextmanager
def open_source(
    path: Path, limits: policy.Limits = policy.DEFAULT_LIMITS
) -> Iterator[tuple[zipfile.ZipFile, BinaryIO]]:
    """``path`` opened once: its zip directory and a raw reader of the same open file.

    ``CanonicalZipWriter.copy_member`` reads raw streams from the reader; one open file for
    both means the two can never see different files (the path may be replaced meanwhile).
    """
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot open the zip archive ({exc.strerror or exc})") from None
    with raw:
        check_central_count(raw, str(path), limits)
        try:
            zf = zipfile.ZipFile(raw)
        except READ_ERRORS as exc:
            raise ArchiveError(f"{path}: corrupt or truncated zip archive ({exc})") from None
        with zf:
            yield zf, raw
