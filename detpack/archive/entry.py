"""The one member model shared by the zip and tar readers and writers.

An ``Entry`` describes a member's canonical identity (name, kind, mode, link target);
data is streamed separately. ``safe_name`` is the single gate every member name passes:
absolute paths, ``..`` components, NUL bytes and empty names are refused.
"""

from __future__ import annotations

import posixpath
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Final, Literal

from detpack import policy
from detpack.errors import ArchiveError

Kind = Literal["file", "dir", "symlink", "hardlink"]

try:  # zipfile loads it too, where the interpreter has it: a zip's LZMA members need it
    import lzma

    _LZMA_ERRORS: tuple[type[BaseException], ...] = (lzma.LZMAError,)
except ImportError:  # pragma: no cover - an interpreter built without lzma
    _LZMA_ERRORS = ()

#: Everything the standard library's readers raise on malformed input (found by fuzzing:
#: zipfile also raises NotImplementedError, ValueError and struct.error, tarfile ValueError;
#: a zip's corrupt LZMA member, lzma's own error).
READ_ERRORS: tuple[type[BaseException], ...] = (
    *_LZMA_ERRORS,
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    OSError,
    EOFError,
    NotImplementedError,
    ValueError,
    struct.error,
    OverflowError,
    UnicodeDecodeError,
)

#: The most a pax or GNU long-name header may hold: tarfile reads one whole, and parses it, before it yields
#: the member it describes (a few hundred bytes of gzip make a GiB header). A name holds 4,096 bytes at most.
MAX_TAR_HEADER: Final = 1 << 20
_TAR_HEADER_TYPES: Final = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


#: The most regions a sparse member's map may list: tarfile collects every one (a tuple each) before it yields
#: the member, from extension headers (old GNU) or the member's data (GNU sparse 1.0), which gzip makes tiny.
MAX_SPARSE_REGIONS: Final = 1 << 16


def _sparse_refused(how_many: str) -> tarfile.ReadError:
    return tarfile.ReadError(
        f"a sparse member's map {how_many}, more than {MAX_SPARSE_REGIONS}; refusing a likely archive bomb"
    )


class BoundedTarInfo(tarfile.TarInfo):
    """``tarfile.open(..., tarinfo=BoundedTarInfo)``: a pax or GNU long-name header of more than
    ``MAX_TAR_HEADER`` bytes, or a sparse map of more than ``MAX_SPARSE_REGIONS`` regions, refused
    (``tarfile.ReadError``) before tarfile reads it whole. The two sparse readers are tarfile's own (3.11 to
    3.13), with that count added."""

    def _proc_sparse(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined]
        del self._sparse_structs  # type: ignore[attr-defined]
        while isextended:
            buf = tf.fileobj.read(tarfile.BLOCKSIZE)
            pos = 0
            for _ in range(21):
                try:
                    offset = tarfile.nti(buf[pos : pos + 12])  # type: ignore[attr-defined]
                    numbytes = tarfile.nti(buf[pos + 12 : pos + 24])  # type: ignore[attr-defined]
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
                pos += 24
            if len(structs) > MAX_SPARSE_REGIONS:
                raise _sparse_refused(f"lists {len(structs)} regions so far")
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tf.fileobj.tell()
        tf.offset = self.offset_data + self._block(self.size)  # type: ignore[attr-defined]
        self.size = origsize
        return self

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict[str, str], tf: tarfile.TarFile) -> None:
        sparse: list[int] = []
        buf = tf.fileobj.read(tarfile.BLOCKSIZE)
        fields, buf = buf.split(b"\n", 1)
        count = int(fields)
        if count > MAX_SPARSE_REGIONS:
            raise _sparse_refused(f"declares {count} regions")
        while len(sparse) < count * 2:
            if b"\n" not in buf:
                buf += tf.fileobj.read(tarfile.BLOCKSIZE)
            number, buf = buf.split(b"\n", 1)
            sparse.append(int(number))
        next.offset_data = tf.fileobj.tell()
        next.sparse = list(zip(sparse[::2], sparse[1::2], strict=False))  # type: ignore[assignment]

    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _TAR_HEADER_TYPES and self.size > MAX_TAR_HEADER:
            raise tarfile.ReadError(
                f"a header of {self.size} bytes (type {self.type!r}, more than {MAX_TAR_HEADER}); refusing a likely "
                "archive bomb"
            )
        return super()._proc_member(tf)  # type: ignore[misc,no-any-return]


#: How to accept an archive holding two different members under one name.
DUPLICATES_HINT = "detpack normalize --duplicates last does the same"

#: What to do with two different members under one name: refuse the archive, or keep the last
#: one (as every extractor does).
Duplicates = Literal["refuse", "last"]


@dataclass(frozen=True)
class Entry:
    """One archive member, as detpack will write it."""

    name: str
    kind: Kind
    mode: int
    size: int = 0
    linkname: str = ""

    @property
    def sort_key(self) -> bytes:
        return self.name.encode("utf-8", "surrogateescape")


def same_streams(fa: IO[bytes], fb: IO[bytes]) -> bool:
    """Whether two readable streams hold the same bytes (read in chunks, stops at the first difference)."""
    while True:
        ca, cb = fa.read(1 << 20), fb.read(1 << 20)
        if ca != cb:
            return False
        if not ca:
            return True


def safe_name(raw: str, archive: str) -> str:
    """Return ``raw`` as a clean relative POSIX path, or raise naming the archive."""
    return raw if _plain(raw) else _cleaned(raw, archive)  # the common case: already clean


def _cleaned(raw: str, archive: str) -> str:
    name = raw.replace("\\", "/") if "\\" in raw and "/" not in raw else raw
    if "\x00" in name:
        raise ArchiveError(f"{archive}: member name {raw!r} contains a NUL byte; refusing the archive")
    while name.startswith("./"):
        name = name[2:]
    stripped = name.rstrip("/")
    if not stripped or stripped == ".":
        raise ArchiveError(f"{archive}: member with an empty name; refusing the archive")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive}: member {raw!r} has an absolute path; refusing the archive")
    parts = stripped.split("/")
    if ".." in parts:
        raise ArchiveError(f"{archive}: member {raw!r} escapes the archive root with '..'; refusing the archive")
    return "/".join(p for p in parts if p not in ("", "."))


def _plain(raw: str) -> bool:
    """Whether ``_cleaned`` would return ``raw`` unchanged: no backslash, NUL, drive or root; no
    empty, ``.`` or ``..`` component (it starts with neither ``/`` nor ``.``, nor ends with ``/``)."""
    return (
        raw[:1] not in ("", "/", ".")
        and raw[1:2] != ":"
        and not raw.endswith(("/", "/.", "/.."))
        and "\\" not in raw
        and "\x00" not in raw
        and "//" not in raw
        and "/./" not in raw
        and "/../" not in raw
    )


def check_link_target(name: str, target: str, archive: str) -> None:
    """Refuse a symlink whose target is absolute or climbs out of the archive root."""
    if target.startswith("/"):
        raise ArchiveError(f"{archive}: symlink {name!r} points to absolute path {target!r}; refusing the archive")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(
            f"{archive}: symlink {name!r} -> {target!r} points outside the archive; refusing the archive"
        )


def parents(name: str) -> list[str]:
    """Every ancestor directory of ``name``, outermost first."""
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def check_count(count: int, archive: str, limits: policy.Limits) -> None:
    if count > limits.max_members:
        raise ArchiveError(
            f"{archive}: more than {limits.max_members} members (limit max_members); refusing a likely "
            "archive bomb (raise it with --limit max_members=N if the archive is trusted)"
        )


#: The smallest central directory entry (its fixed fields, an empty name): a directory of at most this
#: many bytes per member allowed cannot hold too many.
_CENTRAL_ENTRY: Final = 46
_CENTRAL_SIGNATURE: Final = b"PK\x01\x02"


def check_central_count(raw: IO[bytes], label: str, limits: policy.Limits) -> None:
    """Refuse more than ``limits.max_members`` central entries before zipfile reads them: it makes an
    object of each (~400 bytes of memory for an entry of 47 bytes, before ``read_members`` counts them).

    Every entry starts with the central signature: their count in the bytes zipfile reads as the
    directory (in chunks) bounds the entries. Only a directory too large to be surely within the
    limit is read; anything else wrong with it is left to zipfile to report.
    """
    try:
        end = zipfile._EndRecData(raw)  # type: ignore[attr-defined]  # zipfile's own reading of the end record
    except READ_ERRORS:
        return
    if not end or end[zipfile._ECD_SIZE] <= _CENTRAL_ENTRY * limits.max_members:  # type: ignore[attr-defined]
        return
    size = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    start = end[zipfile._ECD_LOCATION] - size  # type: ignore[attr-defined]  # where zipfile reads it from
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
    if start < 0:
        return
    raw.seek(start)
    count, tail = 0, b""
    while size > 0 and (chunk := raw.read(min(policy.CHUNK, size))):
        size -= len(chunk)
        joined = tail + chunk
        count += joined.count(_CENTRAL_SIGNATURE)  # a signature across two chunks is counted once
        tail = joined[-3:]
        check_count(count, label, limits)


def check_total(total: int, archive: str, limits: policy.Limits) -> None:
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"{archive}: members expand to more than {limits.max_total_bytes} bytes (limit max_total_bytes); "
            "refusing a likely archive bomb (raise it with --limit max_total_bytes=N if trusted)"
        )


def check_ratio(name: str, size: int, compressed: int, archive: str, limits: policy.Limits) -> None:
    if size > limits.ratio_floor and size > limits.max_ratio * max(compressed, 1):
        raise ArchiveError(
            f"{archive}: member {name!r} expands {compressed} bytes to {size} (over {limits.max_ratio}x, "
            "limit max_ratio); refusing a likely zip bomb"
        )


def check_name(raw: str, archive: str, limits: policy.Limits) -> None:
    if len(raw.encode("utf-8", "surrogateescape")) > limits.max_name_bytes:
        raise ArchiveError(
            f"{archive}: a member name is longer than {limits.max_name_bytes} bytes (limit max_name_bytes): "
            f"{raw[:60]!r}...; refusing the archive"
        )
