"""A small zip member, read, verified and deflated again; and members prepared ahead on a pool.

A member of one block (``policy.GZIP_BLOCK``) is read whole with its local header (checked
against the central directory), inflated at most one byte past its declared size, checked
against its size and CRC, hashed for the wheel's RECORD, and stored or deflated (``codec``).

``Ahead`` does that for the members a writer will copy, in batches on the writer's pool,
while the writer's thread writes the members before them in order: inflate, sha256 and
deflate give up the GIL, so both cores work. Members larger than a block, up to ``_LARGE``,
are prepared there too, by the writer's own streaming code (``zip._prepared_large``), and
held whole. Each member is read with ``os.pread`` of the same open file (no shared file
position); a member that fails keeps its error, which its turn raises, so a hostile archive
is refused with the same error as one member at a time. At most ``window`` batches of at
most ``_BATCH_BYTES`` (plus one larger member) are in flight: memory stays bounded whatever
the archive's size. Measured on the botocore wheel (``normalize_file``, 2 cores, median of 15):
0.122 s with every member in the writer's thread, 0.102 s with the small ones ahead, 0.097 s
with the larger ones ahead as well.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from zlib_ng import zlib_ng

from detpack import policy
from detpack.archive import codec
from detpack.archive.entry import Entry
from detpack.archive.zipwrite import DEFLATED, STORED
from detpack.errors import ArchiveError

if TYPE_CHECKING:
    from detpack.archive.pool import Job, Pool

LOCAL_HEADER: Final = struct.Struct("<4s2B4HL2L2H")
RAW_METHODS: Final = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
#: zlib-ng's inflate error (its stubs type it as an instance, not a class).
INFLATE_ERROR: Final[type[Exception]] = zlib_ng.error  # type: ignore[assignment]
#: Members up to one block of the scheme are read whole and deflated at once; larger ones stream.
SMALL: Final = policy.GZIP_BLOCK
#: A batch of members prepared ahead holds at most this many members and bytes (in and out).
_BATCH_MEMBERS: Final = 64
_BATCH_BYTES: Final = 1 << 20
#: Offsets past this are left to the writer's thread (its seek reports them as it always has).
_MAX_OFFSET: Final = 1 << 62
#: Larger members than ``SMALL``, up to this size, are prepared ahead too (held whole); larger ones
#: stream in the writer's thread, their blocks deflated on the pool.
_LARGE: Final = 2 << 20

#: A member ready to write: its method, its compressed bytes, the sha256 of its content (or None).
Prepared = tuple[int, bytes, bytes | None]


@dataclass(frozen=True)
class ZipMember:
    """A member of an input zip: its canonical ``Entry`` and where its bytes are."""

    entry: Entry
    info: zipfile.ZipInfo


def central_name(info: zipfile.ZipInfo) -> bytes:
    """The member's name as its central directory entry holds it."""
    name = info.orig_filename
    if name.isascii():  # the same bytes in UTF-8 and cp437
        return name.encode("ascii")
    return name.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")


def data_start(block: bytes, head: int, name: bytes, info: zipfile.ZipInfo, label: str) -> int:
    """Check the local header at the start of ``block``; return where the member's data starts."""
    if len(block) < head or block[:4] != b"PK\x03\x04":
        raise ArchiveError(f"{label}: member {info.filename!r} has a bad local header; the archive is corrupt")
    fields = LOCAL_HEADER.unpack(block[: LOCAL_HEADER.size])
    local_name = block[LOCAL_HEADER.size : LOCAL_HEADER.size + fields[10]]
    if local_name != name or fields[4] != info.compress_type:
        raise ArchiveError(
            f"{label}: member {info.filename!r}: local header does not match the central directory "
            "(a smuggling or corruption attempt); refusing the archive"
        )
    return head + int(fields[11])  # the local extra field moves the data's start (and end) further


def truncated(info: zipfile.ZipInfo, label: str) -> ArchiveError:
    return ArchiveError(f"{label}: member {info.filename!r} is truncated; the archive is damaged")


def inflated(raw: bytes, info: zipfile.ZipInfo, label: str) -> bytes:
    """A small stored or deflated member's content from its raw stream, size and CRC checked.

    Inflation stops one byte past the declared size, so a bomb never reaches memory whole.
    """
    if info.compress_type == zipfile.ZIP_STORED:
        data = raw
    else:
        d = zlib_ng.decompressobj(-15)
        try:
            data = d.decompress(raw, info.file_size + 1)
        except INFLATE_ERROR as exc:
            raise ArchiveError(f"{label}: member {info.filename!r} has a corrupt deflate stream ({exc})") from None
        if len(data) > info.file_size:
            raise ArchiveError(
                f"{label}: member {info.filename!r} holds more data than its declared "
                f"{info.file_size} bytes; refusing the archive"
            )
        if not d.eof:
            raise ArchiveError(f"{label}: member {info.filename!r} has a truncated deflate stream")
    if len(data) != info.file_size or codec.crc32(data) != info.CRC:
        raise ArchiveError(
            f"{label}: member {info.filename!r} is corrupt (size or CRC does not match); "
            "the archive is damaged or truncated"
        )
    return data


def stored(data: bytes) -> bool:
    """Whether content starting with ``data`` is stored rather than deflated: empty or already compressed."""
    return not data or data.startswith(policy.STORED_MAGIC)


def prepared(data: bytes, record: bool) -> Prepared:
    """A small member's verified content, compressed (or stored) and hashed if ``record``."""
    digest = hashlib.sha256(data).digest() if record else None
    if stored(data):
        return STORED, data, digest
    return DEFLATED, codec.deflate_block(data, b"", True), digest


def ahead_of_time(member: ZipMember) -> bool:
    """Whether ``member`` can be prepared by ``Ahead``: a stored or deflated file, small (read in one
    call) or up to ``_LARGE`` (streamed by the worker, held whole)."""
    info = member.info
    if member.entry.kind == "dir" or info.compress_type not in RAW_METHODS or not 0 <= info.header_offset < _MAX_OFFSET:
        return False
    if info.file_size <= SMALL:
        return info.compress_size <= policy.CHUNK
    return info.file_size <= _LARGE and info.compress_size <= 2 * _LARGE


def _read_at(fd: int, info: zipfile.ZipInfo, label: str) -> bytes:
    """``zip._raw_chunks`` of a small member, read with ``os.pread``: the same checks, in the same order."""
    name = central_name(info)
    head = LOCAL_HEADER.size + len(name)
    block = os.pread(fd, head + info.compress_size, info.header_offset)
    start = data_start(block, head, name, info, label)
    data = block[start:]
    if len(data) < info.compress_size:
        data += os.pread(fd, info.compress_size - len(data), info.header_offset + max(start, len(block)))
    if len(data) != info.compress_size:
        raise truncated(info, label)
    return data


#: How a larger member is prepared (``zip._prepared_large``): file descriptor, member, label, record.
Large = Callable[[int, ZipMember, str, bool], Prepared]


def _batch(fd: int, members: Sequence[ZipMember], label: str, record: bool, large: Large) -> list[Prepared | Exception]:
    """Each member prepared, up to the first that fails (its error takes its place)."""
    done: list[Prepared | Exception] = []
    for member in members:
        info = member.info
        try:
            if info.file_size <= SMALL:
                done.append(prepared(inflated(_read_at(fd, info, label), info, label), record))
            else:
                done.append(large(fd, member, label, record))
        except Exception as exc:  # noqa: BLE001 - raised in the member's turn, by the writer's thread
            done.append(exc)
            break
    return done


def _batches(members: Sequence[ZipMember]) -> Iterator[list[ZipMember]]:
    batch: list[ZipMember] = []
    size = 0
    for member in members:
        if not ahead_of_time(member):
            continue
        batch.append(member)
        size += member.info.file_size + member.info.compress_size
        if len(batch) >= _BATCH_MEMBERS or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class Ahead:
    """The small members of ``members`` prepared on ``pool`` in their order, handed out one by one."""

    def __init__(
        self, pool: Pool, fd: int, members: Sequence[ZipMember], label: str, record: bool, window: int, large: Large
    ) -> None:
        self.record = record
        self._pool, self._fd, self._label, self._large = pool, fd, label, large
        self._batches = _batches(members)
        self._pending: deque[tuple[list[ZipMember], Job[list[Prepared | Exception]]]] = deque()
        self._ready: deque[tuple[ZipMember, Prepared | Exception]] = deque()
        for _ in range(window):
            self._submit()

    def take(self, member: ZipMember) -> Prepared | None:
        """``member`` prepared, if it is the next one prepared ahead (None: prepare it here); raises its error."""
        if not self._ready and self._pending:
            batch, future = self._pending.popleft()
            self._submit()
            self._ready.extend(zip(batch, future.result(), strict=False))  # up to the first that failed
        if not self._ready or self._ready[0][0] is not member:
            return None
        _, result = self._ready.popleft()
        if isinstance(result, Exception):
            raise result
        return result

    def _submit(self) -> None:
        batch = next(self._batches, None)
        if batch is not None:
            future = self._pool.submit(_batch, self._fd, batch, self._label, self.record, self._large)
            self._pending.append((batch, future))
