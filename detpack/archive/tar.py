"""Read any tar; write the canonical tar form.

Canonical form: members sorted by UTF-8 path, every parent directory present, PAX format
(plain ustar headers whenever a member fits them) with no atime/ctime/xattr records,
mtime = epoch, uid/gid 0, empty uname/gname, modes from ``policy.canonical_mode``.
Symlinks and hardlinks are kept (a hardlink group's first member in sorted order carries
the data); devices and fifos are refused, as are absolute, ``..`` and escaping names.
The input must be a seekable, uncompressed tar so members can be read in any order.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

from detpack import policy
from detpack.archive.entry import (
    READ_ERRORS,
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
        return tarfile.open(fileobj=fileobj, mode="r:")
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label}: corrupt or truncated tar archive ({exc})") from None


def plan(tf: tarfile.TarFile, label: str, limits: policy.Limits = policy.DEFAULT_LIMITS) -> list[TarItem]:
    """Validate every member and return the canonical member list, in write order."""
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
            raise ArchiveError(
                f"{label}: two different members are named {name!r} (which one is meant is ambiguous); "
                "refusing the archive"
            )
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


def plain_ustar(ti: tarfile.TarInfo) -> bool:
    """Whether PAX format would write ``ti`` as a plain ustar header (no extended records)."""
    return (
        ti.name.isascii()
        and len(ti.name) <= tarfile.LENGTH_NAME
        and ti.linkname.isascii()
        and len(ti.linkname) <= tarfile.LENGTH_LINK
        and not ti.uname
        and not ti.gname
        and 0 <= ti.size <= _USTAR_MAX
        and 0 <= int(ti.mtime) <= _USTAR_MAX
        and ti.uid == ti.gid == 0
    )


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


def write(out: BinaryIO, items: Iterable[TarItem], src: tarfile.TarFile | None, epoch: int, label: str) -> None:
    """Write ``items`` canonically to ``out``, streaming file data from ``src``."""
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT, encoding="utf-8") as dst:
        for item in items:
            ti = _tarinfo(item.entry, epoch)
            # Same bytes either way (a PAX writer emits a plain ustar header when nothing needs a
            # record); the ustar path just skips tarfile's field-by-field PAX checks.
            dst.format = tarfile.USTAR_FORMAT if plain_ustar(ti) else tarfile.PAX_FORMAT
            if item.entry.kind != "file":
                dst.addfile(ti)
                continue
            assert src is not None and item.source is not None
            try:
                data = _PositionalReader.of(src, item.source) or src.extractfile(item.source)
                if data is None:
                    raise ArchiveError(f"{label}: member {item.entry.name!r} has no data")
                dst.addfile(ti, data)
            except READ_ERRORS as exc:
                raise ArchiveError(f"{label}: member {item.entry.name!r} is truncated or unreadable ({exc})") from None


def write_entries(out: BinaryIO, items: Iterable[tuple[Entry, Opener | None]], epoch: int, label: str) -> None:
    """Write canonical entries to ``out`` in the given (sorted) order, file data from each opener.

    A file whose size changed since it was listed is an error: the archive would otherwise
    record one size and hold other bytes (or be cut short).
    """
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT, encoding="utf-8") as dst:
        dst.copybufsize = policy.CHUNK  # type: ignore[attr-defined]  # tarfile's 16 KiB default costs a Python call per 16 KiB
        for entry, opener in items:
            ti = _tarinfo(entry, epoch)
            dst.format = tarfile.USTAR_FORMAT if plain_ustar(ti) else tarfile.PAX_FORMAT
            if entry.kind != "file":
                dst.addfile(ti)
                continue
            assert opener is not None
            with opener() as data:
                try:
                    dst.addfile(ti, data)
                except OSError as exc:
                    if str(exc) != "unexpected end of data":
                        raise
                    raise ArchiveError(
                        f"{label}: {entry.name!r} shrank while it was being packed; retry when nothing writes to it"
                    ) from None
                if data.read(1):
                    raise ArchiveError(
                        f"{label}: {entry.name!r} grew while it was being packed; retry when nothing writes to it"
                    )
