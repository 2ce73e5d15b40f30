"""Files in and out: atomic output (write beside the target, fsync, then ``os.replace``) and
reading an input file with the one-line errors every verb gives.

A reader never sees a half-written file, and a failure leaves the previous file (or no
file) in place: the temporary is removed on any exception.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from detpack.errors import DetpackError, InputError, OutputError

TEMP_PREFIX = ".detpack-tmp-"


def read_input(path: Path, what: str = "file", error: type[DetpackError] = InputError) -> bytes:
    """The bytes of an input file, or one line naming it: ``PATH: no such WHAT``."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None


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
def _atomic_path(target: Path) -> Iterator[Path]:
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

    A process killed mid-write leaves only a hidden temporary carrying its pid, which the
    next writer in that folder removes (``sweep``); ``target`` is never touched.
    """
    try:
        with _atomic_path(target) as tmp, tmp.open("wb") as f:
            yield f
    except OSError as exc:
        raise OutputError(
            f"{target}: cannot write ({exc.strerror or exc}); nothing was written and any previous file is intact"
        ) from None


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_writer(target) as f:
        f.write(data)


@contextlib.contextmanager
def exclusive(lock: Path, owner: Path, what: str, error: type[DetpackError] = OutputError) -> Iterator[None]:
    """Hold the file ``lock`` (flock; made, with its folder, if missing) exclusively; when it cannot be
    opened, ``error`` names ``owner`` (what the lock guards) and ``what`` was being opened."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise error(f"{owner}: cannot open {what} ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
