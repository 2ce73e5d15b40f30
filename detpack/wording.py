"""Words for counts, shared by the library's messages and the CLI's output."""

from __future__ import annotations


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 package``, ``2 packages``; ``plural`` for words that do not just take an s."""
    return f"{n} {word if n == 1 else plural or word + 's'}"
