"""gzip streams: a canonical writer and a streaming reader.

Canonical gzip header: no file name, mtime 0, XFL from the fixed level, OS byte 255.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import IO, BinaryIO

from detpack import policy
from detpack.errors import ArchiveError


def canonical_writer(fileobj: BinaryIO) -> gzip.GzipFile:
    """A gzip writer over ``fileobj`` whose header carries nothing but fixed values."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, compresslevel=policy.GZIP_LEVEL, mtime=0)


def gunzip(src: Path, dst: IO[bytes], limits: policy.Limits = policy.DEFAULT_LIMITS) -> None:
    """Stream-decompress ``src`` (all members) into ``dst``; refuse corrupt, truncated or bomb input."""
    written = 0
    try:
        with gzip.open(src, "rb") as inp:
            while chunk := inp.read(policy.CHUNK):
                written += len(chunk)
                if written > limits.max_total_bytes:
                    raise ArchiveError(
                        f"{src}: decompresses to more than {limits.max_total_bytes} bytes (limit max_total_bytes); "
                        "refusing a likely gzip bomb (raise it with --limit max_total_bytes=N if trusted)"
                    )
                dst.write(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, EOFError):
            reason = "the stream ends early; the file is truncated"
        raise ArchiveError(f"{src}: corrupt gzip stream ({reason})") from None


def normalize_gz(src: Path, dst: BinaryIO, limits: policy.Limits = policy.DEFAULT_LIMITS) -> None:
    """Rewrite a plain (non-tar) gzip file with the canonical header and level."""
    with canonical_writer(dst) as out:
        gunzip(src, out, limits)  # type: ignore[arg-type]
