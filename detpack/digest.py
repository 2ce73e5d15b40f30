"""Digests and canonical JSON: the one way detpack hashes a file and serialises what it hashes or signs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def stream_sha256(source: BinaryIO, copy_to: BinaryIO | None = None) -> str:
    """The hex sha256 of everything left in ``source``, read in chunks; copied to ``copy_to`` on the way."""
    h = hashlib.sha256()
    while chunk := source.read(CHUNK):
        h.update(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes, streamed (memory does not grow with the file)."""
    with path.open("rb") as f:
        return stream_sha256(f)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: object) -> bytes:
    """The one JSON serialisation detpack hashes and signs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
