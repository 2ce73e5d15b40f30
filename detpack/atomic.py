"""Atomic file output: write beside the target, fsync, then ``os.replace``.

A reader never sees a half-written file, and a failure leaves the previous file (or no
file) in place: the temporary is removed on any exception.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from detpack.errors import OutputError

TEMP_PREFIX = ".detpack-tmp-"
_TEMP = re.compile(r"^\.detpack-tmp-(?P<pid>\d+)-.*\.part$")


def sweep(directory: Path) -> None:
    """Remove temporaries that a killed detpack process left in ``directory``.

    Temporaries carry their writer's pid; one whose process is gone can never be completed.
    """
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None:
            continue
        try:
            os.kill(int(match["pid"]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                entry.unlink()
        except PermissionError:
            pass  # alive, someone else's


def temp_name(final_name: str) -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{final_name}.part"


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s directory; rename it over ``target`` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary file object whose content replaces ``target`` on success.

    Where the filesystem supports ``O_TMPFILE`` the data goes to an anonymous file that gets
    a (hidden) name only after it is complete and synced, so even a process killed mid-write
    leaves nothing behind; elsewhere a hidden named temporary is used.
    """
    try:
        with _tmpfile_writer(target) as f:
            yield f
    except OSError as exc:
        raise OutputError(
            f"{target}: cannot write ({exc.strerror or exc}); nothing was written and any previous file is intact"
        ) from None


_SUPPORT: dict[int, bool] = {}


def _links_anonymous_files(directory: Path) -> bool:
    """Whether ``directory``'s filesystem can create an ``O_TMPFILE`` file and link it in
    (overlayfs, for one, cannot); probed once per device."""
    dev = directory.stat().st_dev
    if dev not in _SUPPORT:
        probe = directory / f"{TEMP_PREFIX}{os.getpid()}-probe"
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
            try:
                os.link(f"/proc/self/fd/{fd}", probe)
                probe.unlink()
                _SUPPORT[dev] = True
            finally:
                os.close(fd)
        except (AttributeError, OSError):
            _SUPPORT[dev] = False
    return _SUPPORT[dev]


@contextlib.contextmanager
def _tmpfile_writer(target: Path) -> Iterator[BinaryIO]:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _links_anonymous_files(target.parent):
        with atomic_path(target) as tmp, tmp.open("wb") as f:
            yield f
        return
    fd = os.open(target.parent, os.O_TMPFILE | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
        os.fchmod(f.fileno(), 0o644)
        tmp = target.parent / f"{TEMP_PREFIX}{os.getpid()}-{target.name}.part"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.link(f"/proc/self/fd/{f.fileno()}", tmp)
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_writer(target) as f:
        f.write(data)
