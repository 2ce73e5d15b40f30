"""Small members read whole from an archive that may be hostile: a wheel's METADATA, WHEEL or RECORD,
an sdist's PKG-INFO, a published wheel's exported CMake targets.

``normalize`` and ``diff`` stream every member under the limits of ``policy.Limits``; the readers
that want one small member whole use these instead of ``zipfile.ZipFile(path).read(name)``, which
parses any number of central entries into objects, reads a member of any declared size at once,
and decompresses each bzip2 or LZMA chunk whole (a few hundred bytes make GiBs). Here the central
directory is counted before zipfile parses it, a member declaring more than
``Limits.max_metadata_bytes`` is refused before a byte of it is read, and its bytes come through
``zip.open_member`` (bzip2 and LZMA a chunk at a time; zipfile stops a deflate member at its
declared size and checks its CRC). Every failure is one ``ArchiveError`` naming the archive and
the member.
"""

from __future__ import annotations

import contextlib
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from detpack import policy
from detpack.archive.entry import READ_ERRORS, check_count
from detpack.archive.zip import open_member, open_source
from detpack.errors import ArchiveError

#: What reading one member can raise besides ``READ_ERRORS``: an encrypted member (RuntimeError).
_MEMBER_ERRORS: tuple[type[BaseException], ...] = (*READ_ERRORS, RuntimeError)


@contextlib.contextmanager
def open_zip_small(path: Path, limits: policy.Limits = policy.DEFAULT_LIMITS) -> Iterator[zipfile.ZipFile]:
    """``path`` as a zip to read a few small members of; its central entries counted before zipfile parses them."""
    with open_source(path, limits) as (zf, _):
        check_count(len(zf.infolist()), str(path), limits)
        yield zf


def _too_big(label: str, name: str, size: int, limits: policy.Limits) -> ArchiveError:
    return ArchiveError(
        f"{label}: member {name!r} declares {size} bytes, more than a metadata file may hold "
        f"({limits.max_metadata_bytes}, limit max_metadata_bytes); refusing a likely archive bomb"
    )


def zip_member(
    zf: zipfile.ZipFile, member: str | zipfile.ZipInfo, label: str, limits: policy.Limits = policy.DEFAULT_LIMITS
) -> bytes:
    """One member's bytes, whole; refused past ``limits.max_metadata_bytes`` (declared or found)."""
    try:
        info = zf.getinfo(member) if isinstance(member, str) else member
    except KeyError:
        raise ArchiveError(f"{label}: no member {member!r}") from None
    if info.file_size > limits.max_metadata_bytes:
        raise _too_big(label, info.filename, info.file_size, limits)
    try:
        with open_member(zf, info, label) as f:
            data = f.read(info.file_size + 1)  # zipfile stops at the declared size; the bounded readers refuse more
    except _MEMBER_ERRORS as exc:
        raise ArchiveError(f"{label}: cannot read member {info.filename!r} ({exc})") from None
    if len(data) != info.file_size:
        raise ArchiveError(f"{label}: member {info.filename!r} holds other than its declared {info.file_size} bytes")
    return data


def dist_info_member(
    zf: zipfile.ZipFile, name: str, label: str, limits: policy.Limits = policy.DEFAULT_LIMITS
) -> bytes:
    """A wheel's one top-level ``*.dist-info/NAME`` (METADATA, WHEEL, RECORD), whole; b"" when there is
    not exactly one."""
    found = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(f".dist-info/{name}")]
    return zip_member(zf, found[0], label, limits) if len(found) == 1 else b""


def tar_member(
    tf: tarfile.TarFile, info: tarfile.TarInfo, label: str, limits: policy.Limits = policy.DEFAULT_LIMITS
) -> bytes:
    """A regular tar member's bytes, whole; refused past ``limits.max_metadata_bytes``."""
    if info.size > limits.max_metadata_bytes:
        raise _too_big(label, info.name, info.size, limits)
    try:
        got = tf.extractfile(info)
        data = got.read(info.size + 1) if got is not None else b""
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label}: cannot read member {info.name!r} ({exc})") from None
    if len(data) != info.size:
        raise ArchiveError(f"{label}: member {info.name!r} is truncated")
    return data
