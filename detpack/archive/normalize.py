"""Rewrite an archive into detpack's canonical byte form.

Wheels: members sorted by UTF-8 path, ``.dist-info`` last, ``RECORD`` last of all and
regenerated (sha256 and size of every member, in entry order); directory entries dropped;
stale ``RECORD.jws``/``RECORD.p7s`` signatures dropped (they sign the old RECORD).
Jars: ``META-INF/MANIFEST.MF`` first (the JarInputStream convention), then sorted.
Other zips: sorted. Tars and tar.gz: see ``archive.tar``. Plain gzip: canonical header.
Invariant: ``normalize(normalize(x)) == normalize(x)`` byte for byte.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from detpack import policy
from detpack.archive import codec
from detpack.archive import zip as zipc
from detpack.archive.detect import ArchiveKind, detect, is_zip, zip_kind
from detpack.archive.entry import Duplicates, Entry, same_streams
from detpack.archive.meter import CountingReader, Progress
from detpack.archive.zipmember import ZipMember
from detpack.atomic import atomic_writer
from detpack.errors import ArchiveError

#: A tar.gz is decompressed to a scratch tar, then rewritten: its progress counts the first step
#: as this share of the input's bytes (measured, 2 cores: 1.2 s and 2.9 s for a 220 MB tar.gz).
_GUNZIP_SHARE = 0.3


@dataclass(frozen=True)
class NormalizeOptions:
    epoch: int
    limits: policy.Limits = policy.DEFAULT_LIMITS
    #: Two different members under one name: refuse (for an archive of unknown origin), or keep
    #: the last one, as extractors do (for a backend's own output: ``python -m build`` accepts it).
    duplicates: Duplicates = "refuse"

    def replaced(self) -> list[str] | None:
        """Where the archive readers note the names they resolved (None: they refuse)."""
        return [] if self.duplicates == "last" else None


@dataclass(frozen=True)
class NormalizeResult:
    source: Path
    output: Path
    kind: ArchiveKind
    sha256: str
    size: int
    changed: bool
    replaced: tuple[str, ...] = ()  # names of which the last of two different members was kept


def normalize_file(
    src: Path, target: Path, options: NormalizeOptions, progress: Progress | None = None
) -> NormalizeResult:
    """Normalize ``src`` into ``target`` (which may be ``src``) atomically.

    ``progress`` hears (bytes of ``src`` done, its size), about once a MiB: bytes read, for a
    zip or a tar; for a tar.gz an estimate (decompressing is ``_GUNZIP_SHARE`` of the work)."""
    codec.check_soon()  # the writer needs it; it runs while the input is opened and read
    kind = detect(src) if not _exists_and_zip(src) else None
    if kind is None:  # a zip: open it once, for classifying and for copying
        with zipc.open_source(src, options.limits) as (zf, raw):
            kind = zip_kind(zf, src)
            with atomic_writer(target) as f, _HashingWriter.over(f) as out:
                replaced = _normalize_open_zip(zf, _counted(raw, src, progress), src, out, kind, options)  # type: ignore[arg-type]
                changed = _differs(src, f)
    else:
        with atomic_writer(target) as f, _HashingWriter.over(f) as out:
            replaced = normalize_stream(src, out, kind, options, scratch=target.parent, progress=progress)  # type: ignore[arg-type]
            changed = _differs(src, f)
    after = out.hexdigest() or _file_sha256(target)
    return NormalizeResult(src, target, kind, after, target.stat().st_size, changed, replaced)


def _file_sha256(path: Path) -> str:
    from detpack.digest import file_sha256  # loaded when needed: `detpack normalize` starts faster

    return file_sha256(path)


class _HashingWriter:
    """The output file, hashed as it is written (no second read for its sha256).

    A writer that seeks back (the zip writer patches a large member's header) makes the
    hash void: ``hexdigest`` is then empty and the caller reads the file once more.

    Every ``_EARLY_SYNC`` bytes the file is handed to the disk on a thread (``fdatasync``), so
    the atomic writer's fsync at the end waits for the last few MiB only (measured: 16 MiB
    take ~6.5 ms to sync at once, the last 4 MiB ~1 ms). ``over`` waits for that thread.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hash: hashlib._Hash | None = hashlib.sha256()
        self._end = out.tell()
        self._synced = self._end
        self._syncing: threading.Thread | None = None
        self.name = out.name

    @classmethod
    @contextlib.contextmanager
    def over(cls, out: BinaryIO) -> Iterator[_HashingWriter]:
        writer = cls(out)
        try:
            yield writer
        finally:
            if writer._syncing is not None:
                writer._syncing.join()  # before the file is closed

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._hash is not None:
            if self._out.tell() != self._end:
                self._hash = None
            else:
                self._hash.update(data)
        written = self._out.write(data)
        self._end = max(self._end, self._out.tell())
        if self._end - self._synced >= _EARLY_SYNC and (self._syncing is None or not self._syncing.is_alive()):
            self._out.flush()
            self._synced = self._end
            self._syncing = threading.Thread(target=_datasync, args=(self._out.fileno(),), daemon=True)
            self._syncing.start()
        return written

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._out.seek(offset, whence)

    def tell(self) -> int:
        return self._out.tell()

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        self._out.flush()

    def hexdigest(self) -> str:
        return "" if self._hash is None else self._hash.hexdigest()


#: How much more of the output is written before it is handed to the disk again (``_HashingWriter``).
_EARLY_SYNC = 4 << 20


def _datasync(fd: int) -> None:
    with contextlib.suppress(OSError):  # only early: the atomic writer's own fsync reports a failing disk
        getattr(os, "fdatasync", os.fsync)(fd)


def _differs(src: Path, out: BinaryIO) -> bool:
    """Whether the written temporary differs from the input (sizes first: usually no reading)."""
    out.flush()
    written = Path(out.name)
    if src.stat().st_size != written.stat().st_size:
        return True
    with src.open("rb") as a, written.open("rb") as b:
        return not same_streams(a, b)


def normalize_stream(
    src: Path,
    out: BinaryIO,
    kind: ArchiveKind,
    options: NormalizeOptions,
    scratch: Path,
    extra: Sequence[tuple[str, bytes]] = (),
    progress: Progress | None = None,
) -> tuple[str, ...]:
    """Write the canonical form of ``src`` (of ``kind``) to ``out``; return the member names of
    which the last of two different members was kept (only with ``duplicates="last"``).

    ``extra`` (a wheel only): members to add, (name, bytes), each in its canonical place and listed
    in the regenerated RECORD; a name the wheel already holds is refused. ``progress``: as for
    ``normalize_file``."""
    label = str(src)
    if extra and kind != "wheel":
        raise ArchiveError(f"{label}: members are added to wheels only")
    if kind in ("wheel", "jar", "zip"):
        return _normalize_zip(src, out, kind, options, extra, progress)
    from detpack.archive import gz  # tars and gzip only: a zip's normalize starts faster

    size = _size(src) if progress is not None else 0
    if kind == "tar":
        with src.open("rb") as f:
            return _normalize_tar(f, out, options, label, _share(progress, size, 0.0, 1.0, size))
    if kind == "tar.gz":
        with tempfile.TemporaryFile(dir=scratch) as plain:
            gz.gunzip(src, plain, options.limits, _share(progress, size, 0.0, _GUNZIP_SHARE, size))
            told = _share(progress, size, _GUNZIP_SHARE, 1.0, plain.tell())
            plain.seek(0)
            with gz.canonical_writer(out) as gzout:
                return _normalize_tar(plain, gzout, options, label, told)  # type: ignore[arg-type]
    gz.normalize_gz(src, out, options.limits, _share(progress, size, 0.0, 1.0, size))
    return ()


def _size(src: Path) -> int:
    try:
        return src.stat().st_size
    except OSError:
        return 0  # the readers say what is wrong with it


def _share(progress: Progress | None, size: int, start: float, end: float, of: int) -> Callable[[int], None] | None:
    """``progress`` told (bytes of ``src`` done, ``size``) for a step that does ``of`` units of work,
    mapped onto the part of ``size`` from ``start`` to ``end`` (fractions)."""
    if progress is None:
        return None
    first, span, units = start * size, (end - start) * size, max(of, 1)
    return lambda done: progress(min(size, int(first + span * min(done, units) / units)), size)


def _counted(raw: BinaryIO, src: Path, progress: Progress | None) -> BinaryIO:
    """``raw``, counting what is read of it for ``progress`` (a zip's members are read through it)."""
    if progress is None:
        return raw
    size = _size(src)
    counting = CountingReader(raw, lambda done: progress(min(done, size), size))
    return counting  # type: ignore[return-value]  # read, seek and tell: all the zip reader uses


def _normalize_tar(
    inp: BinaryIO, out: BinaryIO, options: NormalizeOptions, label: str, told: Callable[[int], None] | None = None
) -> tuple[str, ...]:
    from detpack.archive import tar  # tars only: a zip's normalize starts faster

    replaced = options.replaced()
    with tar.open_tar(inp, label) as tf:
        tar.write(out, tar.plan(tf, label, options.limits, replaced=replaced), tf, options.epoch, label, told)
    return tuple(replaced or ())


def _wheel_dist_info(members: list[ZipMember], label: str) -> str:
    found = {
        m.entry.name.split("/")[0]
        for m in members
        if m.entry.name.count("/") == 1 and m.entry.name.endswith(".dist-info/WHEEL")
    }
    if len(found) != 1:
        raise ArchiveError(f"{label}: a wheel needs exactly one top-level .dist-info/WHEEL, found {len(found)}")
    return found.pop()


def _zip_order(members: list[ZipMember], kind: ArchiveKind, label: str) -> tuple[list[ZipMember], str]:
    if kind == "wheel":
        dist_info = _wheel_dist_info(members, label)
        record = f"{dist_info}/RECORD"
        dropped = {record, f"{record}.jws", f"{record}.p7s"}
        kept = [m for m in members if m.entry.kind != "dir" and m.entry.name not in dropped]
        prefix = dist_info + "/"
        kept.sort(key=lambda m: (m.entry.name.startswith(prefix), m.entry.sort_key))
        return kept, record
    if kind == "jar":
        first = {"META-INF": 0, "META-INF/MANIFEST.MF": 1}
        return sorted(members, key=lambda m: (first.get(m.entry.name, 2), m.entry.sort_key)), ""
    return sorted(members, key=lambda m: m.entry.sort_key), ""


def _exists_and_zip(src: Path) -> bool:
    try:
        return is_zip(src)
    except OSError:
        return False  # detect() reports it properly


def _normalize_zip(
    src: Path,
    out: BinaryIO,
    kind: ArchiveKind,
    options: NormalizeOptions,
    extra: Sequence[tuple[str, bytes]] = (),
    progress: Progress | None = None,
) -> tuple[str, ...]:
    with zipc.open_source(src, options.limits) as (zf, raw):
        return _normalize_open_zip(zf, _counted(raw, src, progress), src, out, kind, options, extra)


def _normalize_open_zip(
    zf: zipfile.ZipFile,
    raw: BinaryIO,
    src: Path,
    out: BinaryIO,
    kind: ArchiveKind,
    options: NormalizeOptions,
    extra: Sequence[tuple[str, bytes]] = (),
) -> tuple[str, ...]:
    label = str(src)
    replaced = options.replaced()
    members = zipc.read_members(zf, label, options.limits, replaced=replaced)
    ordered, record = _zip_order(members, kind, label)
    present = {m.entry.name for m in members}
    added = [(Entry(name, "file", 0o644), data) for name, data in extra]
    for entry, _ in added:
        if entry.name in present or entry.name == record:
            raise ArchiveError(f"{label}: already holds {entry.name}; refusing to add another")
    prefix = record.rsplit("/", 1)[0] + "/" if record else ""
    placed: list[tuple[tuple[bool, bytes], ZipMember | tuple[Entry, bytes]]] = [
        ((m.entry.name.startswith(prefix) if prefix else False, m.entry.sort_key), m) for m in ordered
    ]
    placed += [((bool(prefix) and e.name.startswith(prefix), e.sort_key), (e, data)) for e, data in added]
    if added:
        placed.sort(key=lambda item: item[0])
    rows: list[tuple[str, str, str]] = []
    with zipc.CanonicalZipWriter(out, options.epoch) as writer:
        copied = [item for _, item in placed if not isinstance(item, tuple)]
        writer.expect(zf, raw, copied, label, record=bool(record))
        for _, item in placed:
            if isinstance(item, tuple):
                entry, data = item
                writer.add_bytes(entry, data)
                if record:
                    encoded = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
                    rows.append((entry.name, f"sha256={encoded}", str(len(data))))
                continue
            member = item
            digest = writer.copy_member(zf, raw, member, label, record=bool(record))
            if digest is not None:
                encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
                rows.append((member.entry.name, f"sha256={encoded}", str(member.info.file_size)))
        if record:
            writer.add_bytes(Entry(record, "file", 0o644), _record_bytes(rows, record))
    return tuple(replaced or ())


def _record_bytes(rows: list[tuple[str, str, str]], record: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=",", quotechar='"', lineterminator="\n")
    w.writerows(rows)
    w.writerow((record, "", ""))
    return buf.getvalue().encode("utf-8")
