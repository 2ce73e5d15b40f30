"""Words for counts, shared by the library's messages and the CLI's output."""

from __future__ import annotations


class Recorded(str):
    """A warning about something the provenance records (a dirty tree, a duplicate member kept, an
    sdist fallback, no sandbox, code-injecting variables): shown even with ``-q``."""

    __slots__ = ()


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 package``, ``2 packages``; ``plural`` for words that do not just take an s."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def redact(value: str) -> str:
    """Hide credentials in URLs (``scheme://user:pass@host`` -> ``scheme://***@host``); other text is kept."""
    out = []
    for part in value.split():
        if "://" in part and "@" in part.split("://", 1)[1].split("/", 1)[0]:
            scheme, rest = part.split("://", 1)
            part = f"{scheme}://***@{rest.split('@', 1)[1]}"
        out.append(part)
    return " ".join(out)
