"""gzip streams: a canonical writer and a streaming reader.

Canonical gzip header: no file name, mtime 0, XFL from the fixed level, OS byte 255.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from detpack import policy
from detpack.archive.entry import READ_ERRORS
from detpack.errors import ArchiveError


def canonical_writer(fileobj: BinaryIO) -> gzip.GzipFile:
    """A gzip writer over ``fileobj`` whose header carries nothing but fixed values."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, compresslevel=policy.GZIP_LEVEL, mtime=0)


def gunzip(src: Path, dst: IO[bytes], limits: policy.Limits = policy.DEFAULT_LIMITS) -> None:
    """Stream-decompress ``src`` (all members) into ``dst``; refuse corrupt, truncated or bomb input.

    Only reading is guarded here: a failing write (disk full) is the caller's to report.
    """
    written = 0
    with _reading(src):
        inp = gzip.open(src, "rb")  # noqa: SIM115 - closed below; its errors are reading errors
    with inp:
        while True:
            with _reading(src):
                chunk = inp.read(policy.CHUNK)
            if not chunk:
                break
            written += len(chunk)
            if written > limits.max_total_bytes:
                raise ArchiveError(
                    f"{src}: decompresses to more than {limits.max_total_bytes} bytes (limit max_total_bytes); "
                    "refusing a likely gzip bomb (raise it with --limit max_total_bytes=N if trusted)"
                )
            dst.write(chunk)


@contextlib.contextmanager
def _reading(src: Path) -> Iterator[None]:
    try:
        yield
    except READ_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, EOFError):
            reason = "the stream ends early; the file is truncated"
        raise ArchiveError(f"{src}: corrupt gzip stream ({reason})") from None


def normalize_gz(src: Path, dst: BinaryIO, limits: policy.Limits = policy.DEFAULT_LIMITS) -> None:
    """Rewrite a plain (non-tar) gzip file with the canonical header and level."""
    with canonical_writer(dst) as out:
        gunzip(src, out, limits)  # type: ignore[arg-type]
