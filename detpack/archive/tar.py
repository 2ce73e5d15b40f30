"""Read any tar; write the canonical tar form.

Canonical form: members sorted by UTF-8 path, every parent directory present, PAX format
(plain ustar headers whenever a member fits them) with no atime/ctime/xattr records,
mtime = epoch, uid/gid 0, empty uname/gname, modes from ``policy.canonical_mode``.
Symlinks and hardlinks are kept (a hardlink group's first member in sorted order carries
the data); devices and fifos are refused, as are absolute, ``..`` and escaping names.
The input must be a seekable, uncompressed tar so members can be read in any order.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, BinaryIO, Final

from detpack import policy
from detpack.archive.entry import (
    DUPLICATES_HINT,
    READ_ERRORS,
    BoundedTarInfo,
    Entry,
    check_count,
    check_link_target,
    check_name,
    check_total,
    parents,
    safe_name,
    same_streams,
)
from detpack.errors import ArchiveError


@dataclass(frozen=True)
class TarItem:
    """A member to write: its canonical ``Entry`` and the input member holding its data."""

    entry: Entry
    source: tarfile.TarInfo | None


#: Opens one file's data for ``write_entries`` (a context manager: the file is closed after copying).
Opener = Callable[[], AbstractContextManager[BinaryIO]]


def open_tar(fileobj: BinaryIO, label: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=fileobj, mode="r:", tarinfo=BoundedTarInfo)
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label}: corrupt or truncated tar archive ({exc})") from None


def plan(
    tf: tarfile.TarFile,
    label: str,
    limits: policy.Limits = policy.DEFAULT_LIMITS,
    *,
    replaced: list[str] | None = None,
) -> list[TarItem]:
    """Validate every member and return the canonical member list, in write order.

    Two different members under one name are refused, unless ``replaced`` is given: then the
    last one wins, as tar, tarfile, pip and uv extract it, and the name is appended to
    ``replaced``. An exact repeat is always harmless.
    """
    infos: list[tarfile.TarInfo] = []
    total = 0
    try:
        # Member by member, so a million-member archive is refused before it is all indexed.
        for info in tf:
            infos.append(info)
            check_count(len(infos), label, limits)
            total += max(info.size, 0)
            check_total(total, label, limits)
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label}: corrupt or truncated tar archive ({exc})") from None
    _check_end(tf, label)
    by_name: dict[str, tarfile.TarInfo] = {}
    for info in infos:
        check_name(info.name, label, limits)
        name = safe_name(info.name, label)
        if name in by_name:
            if _same_file(tf, by_name[name], info):
                continue  # an exact repeat (hatchling copies a stale PKG-INFO) is harmless
            if replaced is None:
                raise ArchiveError(
                    f"{label}: two different members are named {name!r} (which one is meant is ambiguous); "
                    f"refusing the archive (extractors keep the last one: {DUPLICATES_HINT})"
                )
            replaced.append(name)
            del by_name[name]  # the last one wins, and takes the last one's place
        if info.ischr() or info.isblk() or info.isfifo():
            raise ArchiveError(f"{label}: member {name!r} is a device or fifo; refusing the archive")
        if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
            raise ArchiveError(f"{label}: member {name!r} has unsupported type {info.type!r}")
        if info.issym():
            check_link_target(name, info.linkname, label)
        by_name[name] = info

    items: dict[str, TarItem] = {}
    for name, info in by_name.items():
        if info.isdir():
            items[name] = TarItem(Entry(name, "dir", policy.DIR_MODE), None)
        elif info.issym():
            items[name] = TarItem(Entry(name, "symlink", policy.SYMLINK_MODE, 0, info.linkname), None)
        elif info.isfile():
            items[name] = TarItem(Entry(name, "file", policy.canonical_mode(info.mode), info.size), info)
    _add_hardlinks(by_name, items, label)
    for name in list(items):
        for parent in parents(name):
            if parent in items and items[parent].entry.kind != "dir":
                raise ArchiveError(f"{label}: {parent!r} is both a file and a directory; refusing the archive")
            items.setdefault(parent, TarItem(Entry(parent, "dir", policy.DIR_MODE), None))
    return sorted(items.values(), key=lambda item: item.entry.sort_key)


def _check_end(tf: tarfile.TarFile, label: str) -> None:
    """tarfile stops quietly at a cut-off header: after the last member only zeros may follow."""
    fileobj = tf.fileobj
    if fileobj is None:
        return
    fileobj.seek(tf.offset)
    while chunk := fileobj.read(1 << 16):
        if chunk.strip(b"\0"):
            raise ArchiveError(
                f"{label}: data after the last readable member at offset {tf.offset} (a cut-off or corrupt "
                "header); the archive is truncated or damaged"
            )


def _same_file(tf: tarfile.TarFile, a: tarfile.TarInfo, b: tarfile.TarInfo) -> bool:
    if not (a.isfile() and b.isfile() and a.size == b.size and a.mode & 0o111 == b.mode & 0o111):
        return False
    fa, fb = tf.extractfile(a), tf.extractfile(b)
    if fa is None or fb is None:
        return False
    return same_streams(fa, fb)


def _add_hardlinks(by_name: dict[str, tarfile.TarInfo], items: dict[str, TarItem], label: str) -> None:
    groups: dict[str, list[str]] = {}
    for name, info in by_name.items():
        if not info.islnk():
            continue
        target = safe_name(info.linkname, label)
        seen = {name}
        while target in by_name and by_name[target].islnk():
            if target in seen:
                raise ArchiveError(f"{label}: hardlink {name!r} is part of a link cycle; refusing the archive")
            seen.add(target)
            target = safe_name(by_name[target].linkname, label)
        if target not in by_name or not by_name[target].isfile():
            raise ArchiveError(f"{label}: hardlink {name!r} points to {target!r}, which is not a file in the archive")
        groups.setdefault(target, [target]).append(name)
    for target, names in groups.items():
        data = by_name[target]
        mode = policy.canonical_mode(data.mode)
        primary, *others = sorted(set(names), key=lambda n: n.encode("utf-8", "surrogateescape"))
        items[primary] = TarItem(Entry(primary, "file", mode, data.size), data)
        for other in others:
            items[other] = TarItem(Entry(other, "hardlink", mode, 0, primary), None)


def _tarinfo(entry: Entry, epoch: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(entry.name)
    ti.mtime = epoch
    ti.mode = entry.mode
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.pax_headers = {}
    ti.type = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
    }[entry.kind]
    ti.linkname = entry.linkname
    ti.size = entry.size if entry.kind == "file" else 0
    return ti


_USTAR_MAX = 8**11 - 1
_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
_RECORD = tarfile.RECORDSIZE


def header(entry: Entry, epoch: int) -> bytes:
    """The header block(s) tarfile's PAX writer gives ``entry``, built directly when plain ustar suffices.

    A member whose name and link fit ustar's ASCII fields and whose numbers fit its octal
    fields gets no extended record from a PAX writer, just the ustar block; building that
    block here skips tarfile's per-field checks (most of the cost of a small member). Same
    bytes either way: ``tests/test_properties.py`` compares the two on generated entries.
    """
    name = entry.name + "/" if entry.kind == "dir" else entry.name
    size = entry.size if entry.kind == "file" else 0
    link = entry.linkname
    if (
        name.isascii()
        and len(name) <= tarfile.LENGTH_NAME
        and link.isascii()
        and len(link) <= tarfile.LENGTH_LINK
        and 0 <= size <= _USTAR_MAX
        and 0 <= epoch <= _USTAR_MAX
    ):
        raw_name, raw_link = name.encode("ascii"), link.encode("ascii")
        middle = _middle(entry.mode & 0o7777, entry.kind, epoch)
        sizes = b"%011o\0" % size
        # The checksum is the sum of the block's bytes with its own field as spaces; the fixed
        # fields' share is computed once per (mode, kind, epoch).
        checksum = middle[1] + sum(raw_name) + sum(raw_link) + sum(sizes)
        return b"".join(
            (
                raw_name.ljust(100, b"\0"),
                middle[0][:16],  # mode, uid
                b"0000000\0",  # gid
                sizes,
                middle[0][16:],  # mtime
                b"%06o\0 " % checksum,
                _TYPES[entry.kind],
                raw_link.ljust(100, b"\0"),
                _TAIL,
            )
        )
    return _tarinfo(entry, epoch).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


#: ustar magic and version, empty uname and gname, devmajor, devminor and prefix, padding to 512.
_TAIL: Final = tarfile.POSIX_MAGIC + bytes(tarfile.BLOCKSIZE - 257 - len(tarfile.POSIX_MAGIC))


@functools.lru_cache(maxsize=64)
def _middle(mode: int, kind: str, epoch: int) -> tuple[bytes, int]:
    """Mode and uid fields then the mtime field, and the checksum's share of every fixed field."""
    fields = b"%07o\0" % mode + b"0000000\0" + b"%011o\0" % epoch
    fixed = sum(fields) + sum(b"0000000\0") + sum(b"        ") + sum(_TYPES[kind]) + sum(_TAIL)
    return fields, fixed


class _Short(Exception):
    """A member's data ended before its recorded size."""


_COPY_ERRORS: tuple[type[BaseException], ...] = (_Short, *READ_ERRORS)


class _Emitter:
    """Writes tar blocks to ``out``, coalescing small writes into ~1 MiB ones."""

    def __init__(self, out: BinaryIO, told: Callable[[int], None] | None = None) -> None:
        self._out = out
        self._buffer = bytearray()
        self.offset = 0
        self.copied = 0  # file bytes copied: what ``told`` hears, about once a MiB and at the end
        self._told = told
        self._said = 0

    def put(self, data: bytes) -> None:
        self._buffer += data
        self.offset += len(data)
        if len(self._buffer) >= policy.CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._out.write(self._buffer)
            self._buffer = bytearray()

    def copy(self, src: IO[bytes], size: int, digest: hashlib._Hash | None = None) -> None:
        """Copy exactly ``size`` bytes from ``src`` and pad to a block; more or fewer is an error."""
        remaining = size
        while remaining:
            chunk = src.read(min(policy.CHUNK, remaining))
            if not chunk:
                raise _Short
            if digest is not None:
                digest.update(chunk)
            remaining -= len(chunk)
            if len(chunk) >= policy.CHUNK:
                self.flush()
                self._out.write(chunk)
                self.offset += len(chunk)
            else:
                self.put(chunk)
            self.copied += len(chunk)
            if self._told is not None and self.copied - self._said >= policy.CHUNK:
                self._said = self.copied
                self._told(self.copied)
        self.put(bytes(-size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        """End-of-archive: two zero blocks, then zeros up to a whole record (as tarfile does)."""
        self.put(bytes(2 * tarfile.BLOCKSIZE))
        self.put(bytes(-self.offset % _RECORD))
        self.flush()
        if self._told is not None:
            self._told(self.copied)


class _PositionalReader:
    """Reads one plain member's bytes with ``os.pread``: no seek, no buffer thrown away.

    Members are written in sorted order, not archive order; ``extractfile`` seeks the shared
    buffered file for every member, which costs more than the copy for small members.
    """

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd, self._pos, self._end = fd, offset, offset + size

    @classmethod
    def of(cls, tf: tarfile.TarFile, info: tarfile.TarInfo) -> _PositionalReader | None:
        if info.issparse() or not info.isreg() or tf.fileobj is None:
            return None
        try:
            fd = tf.fileobj.fileno()  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            return None
        return cls(fd, info.offset_data, info.size)

    def read(self, size: int = -1) -> bytes:
        want = self._end - self._pos if size < 0 else min(size, self._end - self._pos)
        if want <= 0:
            return b""
        data = os.pread(self._fd, want, self._pos)
        if not data:
            raise EOFError("unexpected end of data")
        self._pos += len(data)
        return data


def write(
    out: BinaryIO,
    items: Iterable[TarItem],
    src: tarfile.TarFile | None,
    epoch: int,
    label: str,
    told: Callable[[int], None] | None = None,
) -> None:
    """Write planned ``items`` canonically to ``out``, streaming file data from ``src``.

    ``told`` hears the file bytes copied so far, about once a MiB and at the end (progress)."""
    emit = _Emitter(out, told)
    for item in items:
        emit.put(header(item.entry, epoch))
        if item.entry.kind != "file":
            continue
        assert src is not None and item.source is not None
        try:
            data = _PositionalReader.of(src, item.source) or src.extractfile(item.source)
            if data is None:
                raise ArchiveError(f"{label}: member {item.entry.name!r} has no data")
            emit.copy(data, item.entry.size)  # type: ignore[arg-type]
        except _COPY_ERRORS as exc:
            reason = "unexpected end of data" if isinstance(exc, _Short) else str(exc)
            raise ArchiveError(f"{label}: member {item.entry.name!r} is truncated or unreadable ({reason})") from None
    emit.close()


def write_entries(
    out: BinaryIO,
    items: Iterable[tuple[Entry, Opener | None]],
    epoch: int,
    label: str,
    observe: Callable[[Entry, str | None], None] | None = None,
    told: Callable[[int], None] | None = None,
) -> int:
    """Write canonical entries to ``out`` in the given (sorted) order, file data from each opener.

    A file whose size changed since it was listed is an error: the archive would otherwise
    record one size and hold other bytes (or be cut short). ``observe`` is told every entry
    written, with a file's sha256 computed while it was copied (provenance without a second
    read); ``told``, the file bytes copied so far, about once a MiB and at the end (progress).
    Returns the number of entries.
    """
    count = 0
    emit = _Emitter(out, told)
    for entry, opener in items:
        count += 1
        emit.put(header(entry, epoch))
        if entry.kind != "file":
            if observe is not None:
                observe(entry, None)
            continue
        assert opener is not None
        with opener() as data:
            digest = hashlib.sha256() if observe is not None else None
            try:
                emit.copy(data, entry.size, digest)
            except _Short:
                raise ArchiveError(
                    f"{label}: {entry.name!r} shrank while it was being packed; retry when nothing writes to it"
                ) from None
            if data.read(1):
                raise ArchiveError(
                    f"{label}: {entry.name!r} grew while it was being packed; retry when nothing writes to it"
                )
            if observe is not None and digest is not None:
                observe(entry, digest.hexdigest())
    emit.close()
    return count
