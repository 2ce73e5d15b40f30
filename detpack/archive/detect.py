"""Tell what kind of archive a file is from its bytes, not its name.

The name only breaks ties the content cannot: a zip is a wheel when it holds a top-level
``*.dist-info/WHEEL``; a zip is a jar when it holds ``META-INF/MANIFEST.MF``.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Literal

from detpack import policy
from detpack.archive.entry import READ_ERRORS, check_central_count
from detpack.errors import ArchiveError, InputError, NotAnArchiveError

ArchiveKind = Literal["wheel", "jar", "zip", "tar", "tar.gz", "gz"]

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"


def _looks_like_tar(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar" or block[:512] == bytes(512):  # an empty tar is all zeros
        return True
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _gunzip_head(path: Path, size: int = 512) -> bytes:
    out = b""
    d = zlib.decompressobj(wbits=31)
    with path.open("rb") as f:
        while len(out) < size:
            chunk = f.read(65536)
            if not chunk:
                break
            try:
                out += d.decompress(chunk, size - len(out))
            except zlib.error as exc:
                raise ArchiveError(f"{path}: corrupt gzip stream ({exc})") from None
            if d.eof:
                break
    return out


def detect(path: Path) -> ArchiveKind:
    """Classify ``path``; raise ``InputError`` naming the file when it is none of ours."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected an archive file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if head[:4] in _ZIP_MAGICS:
        return _zip_kind(path)
    if head[:2] == _GZIP_MAGIC:
        return "tar.gz" if _looks_like_tar(_gunzip_head(path)) else "gz"
    if _looks_like_tar(head):
        return "tar"
    if not head:
        raise NotAnArchiveError(f"{path}: empty file, expected a zip, tar or gzip archive")
    raise NotAnArchiveError(f"{path}: not a zip, tar or gzip archive (unrecognised leading bytes)")


def _zip_kind(path: Path) -> ArchiveKind:
    try:
        with path.open("rb") as raw:
            check_central_count(raw, str(path), policy.DEFAULT_LIMITS)  # before zipfile reads every entry
            with zipfile.ZipFile(raw) as zf:
                return zip_kind(zf, path)
    except READ_ERRORS as exc:
        raise ArchiveError(f"{path}: corrupt or truncated zip archive ({exc})") from None


def zip_kind(zf: zipfile.ZipFile, path: Path) -> ArchiveKind:
    """Wheel, jar or plain zip, from an already open zip (its central directory is read once)."""
    names = zf.namelist()
    top_level_wheel = any(
        n.count("/") == 1 and n.split("/")[0].endswith(".dist-info") and n.endswith("/WHEEL") for n in names
    )
    if top_level_wheel:
        return "wheel"
    if "META-INF/MANIFEST.MF" in names or path.suffix.lower() == ".jar":
        return "jar"
    return "zip"


def is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in _ZIP_MAGICS
