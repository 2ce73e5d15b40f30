"""Paths in the build root after a hook has run: hostile input to the host.

A hook can replace anything under the build root (it is read-write in its sandbox) with a symbolic
link to a host path, a FIFO, or a device node's link. The host therefore never opens, writes or
re-modes a path there by following it: each directory on the way from the build root is checked
with ``lstat`` (a real directory, not a link), a file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and
checked with ``fstat`` to be a regular file, and a place the host is about to write is made afresh
(whatever a hook left there is removed, never followed). Nothing of a hook runs while the host does
this: each hook's processes end with its sandbox (its own PID namespace).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from pathlib import Path

from detpack.errors import BackendError


class NotPlain(BackendError):
    """A path a hook controls is not what the host expected (a link, a FIFO, a device)."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_dirs(root: Path, path: Path) -> None:
    """Every directory from ``root`` (exclusive) down to ``path``'s parent is a real directory."""
    rel = path.relative_to(root)
    here = root
    for part in rel.parts[:-1]:
        here = here / part
        mode = os.lstat(here).st_mode
        if not stat.S_ISDIR(mode):
            raise NotPlain(f"{here}: {_kind(mode)} where the build root has a directory (a hook put it there)")


def real_dir(root: Path, path: Path) -> bool:
    """Whether ``path`` and every directory from ``root`` down to it are real directories (no link)."""
    try:
        check_dirs(root, path)
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (OSError, NotPlain):
        return False


def plain_file(root: Path, path: Path, what: str) -> Path:
    """``path`` (under ``root``) when it and every directory on the way are plain: a regular file
    reached through real directories; else ``NotPlain`` naming ``what`` it should be."""
    if "\x00" in str(path):  # a hook's answer can hold one; no path can (os.lstat raises ValueError)
        raise NotPlain(f"{what} {str(path)!r}: a path holding a NUL byte; refusing to read it")
    try:
        check_dirs(root, path)
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise NotPlain(f"{what} {path.name!r}: no such file") from None
    except NotPlain as exc:
        raise NotPlain(f"{what} {path.name!r}: {exc.message}") from None
    if not stat.S_ISREG(mode):
        raise NotPlain(f"{what} {path.name!r}: {_kind(mode)}, not a regular file; refusing to read it")
    return path


def read_plain(path: Path, limit: int) -> bytes | None:
    """A regular file's first ``limit`` bytes, never through a link and never blocking on a FIFO;
    None for anything else (or nothing there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with contextlib.closing(os.fdopen(fd, "rb")) as f, contextlib.suppress(OSError):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return f.read(limit)
    return None


#: The most of one file ``plain_sha256`` hashes (a tool, a header, a library a build used).
HASH_LIMIT = 4 << 30


def plain_sha256(path: Path, limit: int = HASH_LIMIT) -> str | None:
    """The sha256 of a regular file, never through a link, never blocking on a FIFO, never past ``limit``
    bytes; None for anything else (a FIFO, a device, a link, too big, nothing there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with contextlib.closing(os.fdopen(fd, "rb")) as f, contextlib.suppress(OSError):
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            if f.tell() > limit:
                return None
        return digest.hexdigest()
    return None


def fresh_dir(root: Path, path: Path) -> Path:
    """``path`` (under ``root``) made afresh as an empty directory, whatever a hook left there and on
    the way to it: a link or a file is removed, never followed; a directory is emptied."""
    here = root
    for part in path.relative_to(root).parts:
        here = here / part
        if here == path:
            remove(here)
        else:
            _make_real_dir(here)
    here.mkdir(mode=0o755)
    return path


def _make_real_dir(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        path.mkdir(mode=0o755)
        return
    if not stat.S_ISDIR(mode):
        path.unlink()
        path.mkdir(mode=0o755)


def remove(path: Path) -> None:
    """Remove ``path`` if it exists, never following a link (a link is removed, not its target)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, onerror=force_remove)
    else:
        path.unlink()


def force_remove(func: object, path: str, _exc: object) -> None:
    """``shutil.rmtree``'s error handler: a read-only directory (some backends copy 0o555 trees)
    blocks removal, so open it up and try again. Only real directories are re-moded: a link is never
    followed (a hook's link to a host file must not make that file 0o755)."""
    with contextlib.suppress(OSError):
        for candidate in (os.path.dirname(path), path):
            if stat.S_ISDIR(os.lstat(candidate).st_mode):
                os.chmod(candidate, 0o755)
        if callable(func):
            func(path)
