"""Layers applied to a root as OCI changesets, through directory descriptors: the image is hostile input.

- Nothing is written outside the root: every entry is placed by walking from the root's descriptor
  one directory at a time with ``O_NOFOLLOW``, and what an entry replaces is removed, never opened.
  An entry under a symbolic link, an absolute name or one with ``..``, a hard link to anything but a
  regular file already in the root (reached the same way), a device and a FIFO are refused with one
  line naming the image, the layer and the entry. Symbolic links are made as they are, whatever
  they point to: only following one is dangerous, and the host never does.
- Layers apply in order as OCI changesets: ``.wh.NAME`` and ``.wh..wh..opq`` hide lower layers'
  entries, never the same layer's, and are never materialized. Each layer is streamed (gzip, zstd or
  plain tar, by magic) and hashed as it is read: a blob that is not its digest and size is refused.
  Members and unpacked bytes obey ``policy.Limits``.
- Files are 0o555 or 0o444 (setuid, setgid and sticky bits dropped) with their layer's time, and their
  sha256 is kept by inode; directories are made 0o755 and their layers' times returned, for the
  caller to set last (``unpack`` does, making them 0o555).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard
from zlib_ng import gzip_ng

from detpack import policy
from detpack.archive.entry import READ_ERRORS, BoundedTarInfo
from detpack.errors import ArchiveError, InputError
from detpack.oci.fetch import Image

CHUNK = 1 << 20
#: Opens a directory, never through a symbolic link.
DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DEPTH = 256  # deeper names are refused: nothing real nests so deep, and removal stays shallow
_OPAQUE = ".wh..wh..opq"
_LAYER_TYPES = frozenset(
    f"application/vnd.oci.image.layer.{kind}.tar{suffix}"
    for kind in ("v1", "nondistributable.v1")
    for suffix in ("", "+gzip", "+zstd")
) | {"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}
_READ_ERRORS: tuple[type[BaseException], ...] = (*READ_ERRORS, zstandard.ZstdError)
#: Failures of the cache's disk rather than of the image.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
#: A hard link's source: its directory's descriptor, its name there, its inode.
_Source = tuple[int, str, int]


class _Hashing:
    """A blob read once from start to end, hashed on the way; more bytes than declared are refused."""

    def __init__(self, f: BinaryIO, limit: int, label: str) -> None:
        self._f, self._limit, self._label = f, limit, label
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.size += len(data)
        if self.size > self._limit:
            raise InputError(f"{self._label}: larger than the {self._limit} bytes its manifest gives; fetch it again")
        self.hash.update(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # what zlib-ng's reader calls
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _decompressed(f: BinaryIO, hashing: _Hashing) -> Iterator[IO[bytes]]:
    magic = f.read(4)
    f.seek(0)
    source = cast(IO[bytes], hashing)
    if magic[:2] == b"\x1f\x8b":
        with gzip_ng.GzipFile(fileobj=source, mode="rb") as z:  # type: ignore[no-untyped-call]  # 1.7x zlib's speed
            yield cast(IO[bytes], z)
    elif magic == b"\x28\xb5\x2f\xfd":
        with zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False) as z:
            yield cast(IO[bytes], z)
    else:
        yield source


def apply_layers(image: Image, root: Path, limits: policy.Limits) -> tuple[dict[int, str], dict[str, int]]:
    """Every layer applied to ``root``; the sha256 of each file by inode, and directories' times by path."""
    applier = _Applier(root, limits)
    try:
        for blob in image.layers:
            label = f"{image.reference}: layer {blob.digest[:19]}"
            if blob.media_type not in _LAYER_TYPES:
                raise InputError(f"{label}: not a filesystem layer (media type {blob.media_type!r}); not a toolchain")
            try:
                f = blob.path.open("rb")
            except OSError as exc:
                raise InputError(f"{label}: cannot read it ({exc.strerror or exc})") from None
            with f:
                hashing = _Hashing(f, blob.size, label)
                try:
                    with (
                        _decompressed(f, hashing) as stream,
                        tarfile.open(fileobj=stream, mode="r|", tarinfo=BoundedTarInfo) as tf,
                    ):
                        applier.layer(tf, label)
                    while hashing.read(CHUNK):  # the rest of the blob (tar padding, compressed trailer)
                        pass
                except _READ_ERRORS as exc:
                    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
                        raise
                    raise ArchiveError(f"{label}: not a readable tar layer ({exc}); the image is damaged") from None
            if "sha256:" + hashing.hash.hexdigest() != blob.digest or hashing.size != blob.size:
                raise InputError(f"{label}: content does not match its digest {blob.digest}; fetch the image again")
    finally:
        applier.close()
    return applier.hashes, applier.dir_times


def _ns(mtime: float) -> int:
    """A member's time in nanoseconds, kept within what every filesystem stores."""
    return int(min(max(mtime, 0), 1 << 33) * 1_000_000_000)


class _Applier:
    """Applies layers to a root through directory descriptors, never following a link."""

    def __init__(self, root: Path, limits: policy.Limits) -> None:
        self._root = os.open(root, DIR)
        self._limits = limits
        self.hashes: dict[int, str] = {}  # sha256 of every file written, by inode
        self.dir_times: dict[str, int] = {}  # mtime (ns) of every directory a layer names, by path
        self._members = self._bytes = 0
        self._label = ""
        self._touched: set[str] = set()  # what the current layer wrote: its own whiteouts spare it
        self._cached: tuple[str, int] | None = None  # the directory last walked to, and its descriptor

    def close(self) -> None:
        self._forget()
        os.close(self._root)

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def layer(self, tf: tarfile.TarFile, label: str) -> None:
        self._label, self._touched = label, set()
        while (info := tf.next()) is not None:
            cast(Any, tf).members.clear()  # a stream: no member is looked up again, so memory stays flat
            self._members += 1
            if self._members > self._limits.max_members:
                raise ArchiveError(f"{label}: the image has over {self._limits.max_members} members (max_members)")
            try:
                self._entry(tf, info)
            except OSError as exc:
                if exc.errno in _DISK_ERRNOS:
                    raise
                raise self._refuse(info.name, f"cannot be placed ({exc.strerror or exc})") from None
            except ValueError as exc:  # a NUL in a link target
                raise self._refuse(info.name, f"cannot be placed ({exc})") from None

    def _refuse(self, name: str, problem: str) -> ArchiveError:
        return ArchiveError(f"{self._label}: entry {name!r} {problem}; refusing the image (nothing of it is kept)")

    def _parts(self, name: str, entry: str, which: str = "") -> list[str]:
        """``name`` as path components under the root; refused if it could land outside."""
        if name.startswith("/"):
            raise self._refuse(entry, f"{which}is an absolute path: it would land outside the root")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self._refuse(entry, f"{which}has '..' in its path: it could land outside the root")
        if len(parts) > _MAX_DEPTH or len(os.fsencode(name)) > self._limits.max_name_bytes or "\x00" in name:
            raise self._refuse(entry, f"{which}is over {_MAX_DEPTH} deep, too long or holds a NUL byte")
        return parts

    def _dir(self, parts: list[str], entry: str, *, create: bool, which: str = "") -> int | None:
        """A new descriptor of the directory ``parts`` names, walked to from the root without following
        a link; missing directories are made when ``create``, else the answer is None."""
        path = "/".join(parts)
        if self._cached is not None and self._cached[0] == path:
            return os.dup(self._cached[1])
        fd = os.dup(self._root)
        try:
            for n, part in enumerate(parts, 1):
                here = "/".join(parts[:n])
                try:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self._touched.add(here)
                    self.dir_times.pop(here, None)  # made anew: an earlier layer's time is not its own
                else:
                    if stat.S_ISLNK(st.st_mode):
                        problem = "a symbolic link: writing through it could land anywhere"
                        raise self._refuse(entry, f"{which}is under {here!r}, {problem}")
                    if not stat.S_ISDIR(st.st_mode):
                        raise self._refuse(entry, f"{which}is under {here!r}, which is not a directory")
                child = os.open(part, DIR, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        self._forget()
        self._cached = (path, os.dup(fd))
        return fd

    def _entry(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = info.name
        parts = self._parts(name, name)
        if not parts:
            if not info.isdir():
                raise self._refuse(name, "replaces the root directory with something else")
            self.dir_times[""] = _ns(info.mtime)
        elif parts[-1].startswith(".wh."):
            self._whiteout(parts, name)
        elif info.ischr() or info.isblk():
            raise self._refuse(name, "is a device node; a toolchain root needs none (pack the image without /dev)")
        elif info.isfifo():
            raise self._refuse(name, "is a FIFO; a toolchain root needs none")
        elif not (info.isdir() or info.issym() or info.islnk() or info.isreg()):
            raise self._refuse(name, f"has an unsupported member type {info.type!r}")
        else:
            with contextlib.ExitStack() as fds:
                source = self._link_source(info, name) if info.islnk() else None
                if source is not None:
                    fds.callback(os.close, source[0])
                parent = cast(int, self._dir(parts[:-1], name, create=True))
                fds.callback(os.close, parent)
                self._place(tf, info, parent, parts[-1], "/".join(parts), source)
            self._touched.add("/".join(parts))

    def _place(
        self, tf: tarfile.TarFile, info: tarfile.TarInfo, parent: int, base: str, rel: str, source: _Source | None
    ) -> None:
        try:
            existing: os.stat_result | None = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if info.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                self._remove(parent, base, existing)
                os.mkdir(base, 0o755, dir_fd=parent)
            self.dir_times[rel] = _ns(info.mtime)
            return
        if source is not None and existing is not None and existing.st_ino == source[2]:
            return  # that file already
        self._remove(parent, base, existing)
        if source is not None:
            os.link(source[1], base, src_dir_fd=source[0], dst_dir_fd=parent, follow_symlinks=False)
        elif info.issym():
            os.symlink(info.linkname, base, dir_fd=parent)
            os.utime(base, ns=(_ns(info.mtime),) * 2, dir_fd=parent, follow_symlinks=False)
        else:
            self._file(tf, info, parent, base)

    def _link_source(self, info: tarfile.TarInfo, name: str) -> _Source:
        """The regular file a hard link names, reached from the root without following a link."""
        which = f"links to {info.linkname!r}, which "
        parts = self._parts(info.linkname, name, which)
        fd = self._dir(parts[:-1], name, create=False, which=which) if parts else None
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False) if fd is not None else None
        except FileNotFoundError:
            st = None
        if fd is None or st is None or not stat.S_ISREG(st.st_mode):
            if fd is not None:
                os.close(fd)
            missing = "is not in the root (a hard link names a file of its own or a lower layer)"
            raise self._refuse(name, which + (missing if st is None else "is not a regular file"))
        return fd, parts[-1], st.st_ino

    def _file(self, tf: tarfile.TarFile, info: tarfile.TarInfo, parent: int, base: str) -> None:
        src = tf.extractfile(info)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        h = hashlib.sha256()
        try:
            while src is not None:
                try:
                    chunk = src.read(CHUNK)
                except _READ_ERRORS as exc:
                    raise ArchiveError(
                        f"{self._label}: not a readable tar layer ({exc}); the image is damaged"
                    ) from None
                if not chunk:
                    break
                self._bytes += len(chunk)
                if self._bytes > self._limits.max_total_bytes:
                    limit = self._limits.max_total_bytes
                    raise ArchiveError(f"{self._label}: the image unpacks to over {limit} bytes (max_total_bytes)")
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o555 if info.mode & 0o111 else 0o444)
            os.utime(fd, ns=(_ns(info.mtime),) * 2)
            self.hashes[os.fstat(fd).st_ino] = h.hexdigest()
        finally:
            os.close(fd)

    def _remove(self, parent: int, base: str, existing: os.stat_result | None) -> None:
        """Remove what is at ``base`` (a link itself, never what it names)."""
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            self._forget()
            shutil.rmtree(base, dir_fd=parent)
        elif existing is not None:
            os.unlink(base, dir_fd=parent)

    def _whiteout(self, parts: list[str], name: str) -> None:
        """``.wh.NAME`` hides NAME of lower layers; ``.wh..wh..opq`` all that lower layers put beside it."""
        marker, where = parts[-1], parts[:-1]
        if marker.startswith(".wh..wh.") and marker != _OPAQUE:
            return  # other aufs bookkeeping: no change to the tree
        victim = marker.removeprefix(".wh.")
        if victim in ("", ".", ".."):
            raise self._refuse(name, f"whites out {victim!r}, which names no entry")
        fd = self._dir(where, name, create=marker == _OPAQUE)
        if fd is None:
            return  # its directory is gone already
        try:
            for child in os.listdir(fd) if marker == _OPAQUE else [victim]:
                self._prune(fd, child, "/".join([*where, child]))
        finally:
            os.close(fd)

    def _prune(self, parent: int, base: str, rel: str) -> None:
        """Remove what lower layers put at ``rel``, keeping what the current layer wrote."""
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if rel not in self._touched:
            self._remove(parent, base, st)
        elif stat.S_ISDIR(st.st_mode):
            fd = os.open(base, DIR, dir_fd=parent)
            try:
                for child in os.listdir(fd):
                    self._prune(fd, child, f"{rel}/{child}")
            finally:
                os.close(fd)
