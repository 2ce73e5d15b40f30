"""File times under the publisher's clock: the preload ``filetimes.c`` beside this module, built
once per machine with the system's C compiler and kept in the user's cache.

libfaketime fakes the clock a build reads; the files the build writes still carry the kernel's
time, and backends that stamp zip members from a file's mtime (bdist_wheel, setuptools, flit for
copied files) put it in the wheel. Under this library a file changed since the rebuild started
reports the publisher's instant instead (below the second, how long after the start: the order
of writes is kept for make and ninja), or, when its path ends as one of the files the published
wheel shows written at another instant does, that one; the sdist's own files keep their times, and
a file from before the rebuild but newer than that instant shows just before it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

VARIABLE = "DETPACK_FILE_TIMES"
EACH = "DETPACK_FILE_TIMES_EACH"
SOURCE = Path(__file__).with_name("filetimes.c")


class Unavailable(Exception):
    """Why the library cannot be had here (no C compiler, or it failed): said, not fatal."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/detpack/preload`` (``~/.cache/detpack/preload``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "detpack" / "preload"


def library(cache: Path | None = None) -> Path:
    """The built library (built now if this source has not been built on this machine)."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + platform.machine().encode()).hexdigest()[:16]
    where = cache or cache_dir()
    built = where / f"detpack-filetimes-{key}.so"
    if built.is_file():
        return built
    compiler = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if compiler is None:
        raise Unavailable("no C compiler (cc) to build it: apt-get install gcc")
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".detpack-filetimes-", suffix=".so", dir=where)
        os.close(fd)
    except OSError as exc:
        raise Unavailable(f"cannot write to {where} ({exc.strerror or exc})") from None
    try:
        ran = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", tmp, str(SOURCE), "-ldl"],
            capture_output=True,
            text=True,
            check=False,
        )
        if ran.returncode != 0:
            last = (ran.stderr.strip().splitlines() or [f"exit status {ran.returncode}"])[-1]
            raise Unavailable(f"{compiler} could not build {SOURCE.name} ({last})")
        os.replace(tmp, built)
        for stale in where.glob("detpack-filetimes-*.so"):  # built from an earlier filetimes.c
            if stale != built:
                stale.unlink(missing_ok=True)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return built


def variables(since: int, as_of: int, each: Iterable[tuple[int, str]] = ()) -> dict[str, str]:
    """The library's setting: files changed at or after ``since`` show ``as_of`` (epoch seconds), or,
    when a file's path ends with one of ``each``'s ends, that end's own instant (the first such)."""
    table = " ".join(f"{when} {end}" for when, end in each if not any(c.isspace() for c in end))
    return {VARIABLE: f"{since} {as_of}", **({EACH: table} if table else {})}
