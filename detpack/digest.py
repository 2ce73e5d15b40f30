"""Digests and canonical JSON: the one way detpack hashes a file and serialises what it hashes or signs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

import rfc8785

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


class CanonicalJSONError(ValueError):
    """A value RFC 8785 cannot serialise: a non-string key, NaN, an integer beyond 2**53, a lone surrogate."""


def canonical_json(value: Any) -> bytes:
    """The one JSON serialisation detpack hashes and signs: RFC 8785 (JCS), as UTF-8 bytes.

    Keys are sorted by their UTF-16 code units, numbers are written as ECMAScript writes them
    (``1.0`` is ``1``), strings escape only what JSON must. Raises CanonicalJSONError (a
    ValueError) for values JCS cannot represent.
    """
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalJSONError(str(exc)) from None
