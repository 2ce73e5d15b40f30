"""A raw, attribute-by-attribute view of an archive, for comparison (not for writing).

Where ``Entry`` is what detpack writes, a ``RawMember`` is what a file *holds*: every header
field a build can leak into (times, modes, owners, zip versions and flags, extra fields,
PAX records), kept as JSON-ready values. ``ArchiveView`` opens member data lazily so a
comparison reads only what it needs: zip members are matched by CRC and size first.
"""

from __future__ import annotations

import contextlib
import struct
import tarfile
import tempfile
import zipfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from sys import intern
from typing import IO, Any

from detpack import policy
from detpack.archive import gz
from detpack.archive.detect import ArchiveKind, detect
from detpack.archive.entry import READ_ERRORS, BoundedTarInfo, check_central_count, check_count
from detpack.archive.zip import open_member
from detpack.errors import ArchiveError

_GZIP_FNAME = 0x08
_GZIP_FEXTRA = 0x04
_XFL_LEVEL = {2: "best (9)", 4: "fastest (1)", 0: "default/other"}


@dataclass(frozen=True, slots=True)
class RawMember:
    name: str
    index: int
    size: int
    #: Header field names and values (``attrs`` pairs them); the names tuple is shared by every
    #: member of a listing, so 20k members cost 20k small tuples, not 20k dicts.
    keys: tuple[str, ...]
    values: tuple[Any, ...]
    #: A cheap content identity when the format stores one (zip: CRC32 and size).
    identity: str | None = None

    @classmethod
    def of(cls, name: str, index: int, size: int, attrs: dict[str, Any], identity: str | None = None) -> RawMember:
        return cls(name, index, size, _shared_keys(tuple(attrs)), tuple(attrs.values()), identity)

    @property
    def attrs(self) -> dict[str, Any]:
        """Header fields as found, e.g. {"mtime": 1700000000, "mode": "0644", "uid": 0}."""
        return dict(zip(self.keys, self.values, strict=True))


_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    return _KEYS.setdefault(keys, keys)


@dataclass(frozen=True)
class Listing:
    path: Path
    kind: ArchiveKind
    header: dict[str, Any]
    members: tuple[RawMember, ...]
    #: Each name's member; of two members under one name, the last (as tar, pip, uv and
    #: ``detpack build`` take it).
    by_name: dict[str, RawMember] = field(default_factory=dict)
    #: Names held by more than one member, with how many.
    duplicates: dict[str, int] = field(default_factory=dict)

    def kept(self, member: RawMember) -> bool:
        """Whether ``member`` is the one its name stands for (not an earlier duplicate)."""
        return self.by_name.get(member.name) is member


def _gzip_header(path: Path) -> dict[str, Any]:
    """The fields of a gzip header that builds leak into: mtime, file name, level, OS."""
    with path.open("rb") as f:
        head = f.read(10)
        if len(head) < 10 or head[:2] != b"\x1f\x8b":
            raise ArchiveError(f"{path}: not a gzip file")
        flags, mtime, xfl, os_byte = head[3], struct.unpack("<I", head[4:8])[0], head[8], head[9]
        if flags & _GZIP_FEXTRA:
            (xlen,) = struct.unpack("<H", f.read(2))
            f.read(xlen)
        name = b""
        if flags & _GZIP_FNAME:
            while (c := f.read(1)) not in (b"", b"\x00"):
                name += c
    return {
        "gzip.mtime": mtime,
        "gzip.name": name.decode("latin-1"),
        "gzip.level": _XFL_LEVEL.get(xfl, f"xfl={xfl}"),
        "gzip.os": os_byte,
    }


def _zip_members(zf: zipfile.ZipFile, label: str) -> tuple[list[RawMember], _ZipIndex]:
    out = []
    infos = zf.infolist()
    check_count(len(infos), label, policy.DEFAULT_LIMITS)
    index = _ZipIndex(infos)
    for i, info in enumerate(infos):
        attrs = {
            # Interned: 20k members mostly share these values; a copy each would cost megabytes.
            "date_time": intern("{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}".format(*info.date_time)),
            "mode": intern(f"{(info.external_attr >> 16) & 0o7777:04o}"),
            "file_type": intern(f"{(info.external_attr >> 28) & 0xF:x}"),
            "dos_attr": info.external_attr & 0xFFFF,
            "create_system": info.create_system,
            "create_version": info.create_version,
            "extract_version": info.extract_version,
            "flag_bits": info.flag_bits,
            "compress_type": info.compress_type,
            "extra": intern(info.extra.hex()),
            "comment": intern(info.comment.decode("utf-8", "replace")),
        }
        identity = f"{info.CRC:08x}:{info.file_size}"
        out.append(RawMember.of(info.filename, i, info.file_size, attrs, identity))
    # Listed: reading a member later needs only the index. Dropping zipfile's own ZipInfo
    # objects (about 350 bytes each) keeps a 20k-member comparison under detpack's memory ceiling.
    zf.filelist, zf.NameToInfo = [], {}
    return out, index


class _ZipIndex:
    """Where each listed zip member's data is and how to read it, in flat arrays (8 bytes a field).

    ``info(i)`` rebuilds the ``ZipInfo`` that ``ZipFile.open`` needs; zipfile still checks the
    local header's name against it, and the CRC and size as it inflates.
    """

    def __init__(self, infos: list[zipfile.ZipInfo]) -> None:
        self._names = [i.orig_filename for i in infos]  # the listing's own strings: no copies
        self._fields = {f: array("q", (getattr(i, f) for i in infos)) for f in _ZIP_FIELDS}
        ends = [getattr(i, "_end_offset", None) for i in infos]  # newer zipfiles check overlaps with it
        self._ends = None if all(e is None for e in ends) else array("q", (-1 if e is None else e for e in ends))

    def info(self, i: int) -> zipfile.ZipInfo:
        zi = zipfile.ZipInfo(self._names[i])
        for f, values in self._fields.items():
            setattr(zi, f, values[i])
        if self._ends is not None and self._ends[i] >= 0:
            zi._end_offset = self._ends[i]  # type: ignore[attr-defined]
        return zi


_ZIP_FIELDS = ("header_offset", "compress_size", "file_size", "CRC", "compress_type", "flag_bits")


def _tar_members(tf: tarfile.TarFile, label: str) -> list[RawMember]:
    out = []
    for i, info in enumerate(tf):
        check_count(i + 1, label, policy.DEFAULT_LIMITS)
        pax = {k: v for k, v in sorted(info.pax_headers.items()) if k not in ("path", "linkpath", "size", "mtime")}
        attrs = {
            "type": info.type.decode("latin-1") if isinstance(info.type, bytes) else str(info.type),
            "mtime": info.mtime,
            "mode": intern(f"{info.mode & 0o7777:04o}"),
            "uid": info.uid,
            "gid": info.gid,
            "uname": info.uname,
            "gname": info.gname,
            "linkname": info.linkname,
            "pax": pax,
        }
        out.append(RawMember.of(info.name, i, info.size if info.isfile() else 0, attrs))
    return out


class ArchiveView(contextlib.AbstractContextManager["ArchiveView"]):
    """An open archive: its ``listing`` and lazy access to member bytes."""

    def __init__(self, path: Path, scratch: Path | None = None) -> None:
        self.path = path
        self.kind = detect(path)
        self._stack = contextlib.ExitStack()
        self._zip: zipfile.ZipFile | None = None
        self._zip_index: _ZipIndex | None = None
        self._tar: tarfile.TarFile | None = None
        self._plain: IO[bytes] | None = None
        header: dict[str, Any] = {}
        members: list[RawMember] = []
        try:
            if self.kind in ("wheel", "jar", "zip"):
                raw_zip = self._stack.enter_context(path.open("rb"))
                check_central_count(raw_zip, str(path), policy.DEFAULT_LIMITS)
                self._zip = self._stack.enter_context(zipfile.ZipFile(raw_zip))
                members, self._zip_index = _zip_members(self._zip, str(path))
                header = {"zip.comment": self._zip.comment.decode("utf-8", "replace")}
            elif self.kind in ("tar", "tar.gz"):
                raw: IO[bytes]
                if self.kind == "tar.gz":
                    header = _gzip_header(path)
                    raw = self._stack.enter_context(tempfile.TemporaryFile(dir=scratch))  # noqa: SIM115
                    gz.gunzip(path, raw)
                    raw.seek(0)
                else:
                    raw = self._stack.enter_context(path.open("rb"))
                self._tar = self._stack.enter_context(tarfile.open(fileobj=raw, mode="r:", tarinfo=BoundedTarInfo))  # noqa: SIM115
                members = _tar_members(self._tar, str(path))
            else:
                header = _gzip_header(path)
                self._plain = self._stack.enter_context(tempfile.TemporaryFile(dir=scratch))  # noqa: SIM115
                gz.gunzip(path, self._plain)
                size = self._plain.tell()
                members = [RawMember.of("(content)", 0, size, {})]
        except READ_ERRORS as exc:
            self._stack.close()
            raise ArchiveError(f"{path}: corrupt or truncated {self.kind} archive ({exc})") from None
        except BaseException:
            self._stack.close()
            raise
        by_name: dict[str, RawMember] = {}
        duplicates: dict[str, int] = {}
        for m in members:
            if m.name in by_name:
                duplicates[m.name] = duplicates.get(m.name, 1) + 1
            by_name[m.name] = m
        self.listing = Listing(path, self.kind, header, tuple(members), by_name, duplicates)

    def chunks(self, member: RawMember) -> Iterator[bytes]:
        """Stream a member's uncompressed bytes."""
        try:
            if self._zip is not None and self._zip_index is not None:
                zinfo = self._zip_index.info(member.index)
                if zinfo.flag_bits & 0x1:  # zipfile's open() would raise RuntimeError, asking for a password
                    raise ArchiveError(f"{self.path}: member {member.name!r} is encrypted; its content cannot be read")
                with open_member(self._zip, zinfo, str(self.path)) as f:  # bzip2, LZMA: a chunk at a time
                    while chunk := f.read(1 << 20):
                        yield chunk
            elif self._tar is not None:
                info = self._tar.getmembers()[member.index]
                if not info.isfile():
                    return  # links carry no data of their own; never follow them
                data = self._tar.extractfile(info)
                if data is None:
                    return
                while chunk := data.read(1 << 20):
                    yield chunk
            elif self._plain is not None:
                self._plain.seek(0)
                while chunk := self._plain.read(1 << 20):
                    yield chunk
        except READ_ERRORS as exc:
            raise ArchiveError(f"{self.path}: member {member.name!r} is unreadable ({exc})") from None

    def read(self, member: RawMember, limit: int) -> bytes:
        """Up to ``limit`` bytes of a member (for text diffs and path evidence)."""
        out = bytearray()
        for chunk in self.chunks(member):
            out += chunk
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
