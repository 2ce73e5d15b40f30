"""What a reader believes of a log: the entries the newest checkpoint signed by a trusted key covers.

Anyone who can write a store's storage can append entries and checkpoints; only the holder of
its private key can sign one. So a reader walks the checkpoints from the newest back and believes
the first whose signature verifies with the trusted key *and* whose root is the RFC 6962 root of
the log's first ``size`` entries as they are now: those entries are the log. Checkpoints after it
that fail (unreadable, another key, a bad signature, a root that entries changed in place no longer
match, more entries than the log holds) and entries after it are not believed, and ``View.ignored``
says so in one line.

The roots are computed from a frontier (the roots of the perfect subtrees covering a prefix of
the log) kept in the reader's cache, ``$XDG_CACHE_HOME/detpack/verified/`` (per store location
and key), with the sha256 of the records it covers: when the log still begins with those exact
bytes, only the entries after them are hashed. The cache is the reader's own, written only after
a checkpoint verified, and it is also what the reader saw before: a log that no longer extends it
(rolled back, rewritten, even by the holder of the store's key, or its newer checkpoints
withheld) is reported as ``View.rewound``, and the cache keeps the larger state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detpack.atomic import write_bytes
from detpack.errors import DetpackError
from detpack.provenance.signing import PublicKey
from detpack.store import merkle
from detpack.store.keys import user_dir
from detpack.store.log import Checkpoint
from detpack.wording import count


@dataclass(frozen=True)
class View:
    """The believed log, and what was not believed."""

    records: tuple[bytes, ...]  # the entries the trusted checkpoint covers
    checkpoint: Checkpoint | None  # the newest checkpoint that verifies (None: none does, or the log is empty)
    held: int  # entries the log holds, believed or not
    failed: tuple[str, ...]  # checkpoints after the trusted one that were not believed, one phrase each
    prefix: str  # sha256 of the believed records, each followed by a newline (the query index's check)
    tail: tuple[bytes, ...] = ()  # the entries after them, not believed
    #: The tree size this reader verified before (its cache) when the log no longer extends it: rolled back,
    #: rewritten, or checkpoints withheld (None: it extends what was seen, or nothing was seen yet).
    rewound: int | None = None
    position: int = 0  # checkpoint records up to the trusted one (what a writer keeps: the rest is unsigned)
    changed: bool = False  # a checkpoint the key signed no longer matches the entries: they were changed

    @property
    def ignored(self) -> str | None:
        """One line: what was not believed (None: everything the log holds is covered by a verified checkpoint)."""
        trailing = self.held - len(self.records)
        if not self.failed and not trailing:
            return None
        parts = []
        if self.failed:
            more = f" and {count(len(self.failed) - 1, 'more')}" if len(self.failed) > 1 else ""
            parts.append(f"{self.failed[-1]}{more}")
        if trailing:
            parts.append(f"{count(trailing, 'log entry', 'log entries')} after tree size {len(self.records)}")
        return "ignored " + "; ".join(parts)


def empty(held: int = 0) -> View:
    """Nothing believed (a log with no checkpoint, or a store with no key yet)."""
    return View((), None, held, (), _running(()).hexdigest())


@dataclass(frozen=True)
class _Known:
    """A verified prefix of the log, from the cache."""

    size: int
    prefix: str
    frontier: tuple[bytes, ...]


def cache_path(location: str, keyid: str) -> Path:
    """Where this reader keeps what it verified of the store at ``location`` signed by ``keyid``."""
    key = hashlib.sha256(f"{location}\n{keyid}".encode()).hexdigest()[:32]
    return user_dir("XDG_CACHE_HOME", ".cache") / "detpack" / "verified" / f"{key}.json"


def _read_cache(path: Path | None) -> _Known | None:
    if path is None:
        return None
    try:
        value = json.loads(path.read_bytes())
        return _Known(int(value["size"]), str(value["prefix"]), tuple(bytes.fromhex(h) for h in value["frontier"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path | None, known: _Known) -> None:
    if path is None:
        return
    value = {"size": known.size, "prefix": known.prefix, "frontier": [h.hex() for h in known.frontier]}
    with contextlib.suppress(OSError, DetpackError):  # a cache: a reader that cannot write it only recomputes
        write_bytes(path, json.dumps(value).encode())


class _Roots:
    """Roots of prefixes of the log, from the cached frontier when the log still begins with its bytes."""

    def __init__(self, entries: Sequence[bytes], known: _Known | None) -> None:
        self.entries = entries
        self.known = known
        self.hash = _running(entries[: known.size] if known is not None and known.size <= len(entries) else ())
        if known is not None and (known.size > len(entries) or self.hash.hexdigest() != known.prefix):
            self.known = None
            self.hash = _running(())
        base = self.known.size if self.known is not None else 0
        self.base = base
        self.frontier = list(self.known.frontier) if self.known is not None else []
        self.size = base
        self.leaves: list[bytes] | None = None

    def root(self, size: int) -> tuple[bytes, tuple[bytes, ...] | None]:
        """The root of the first ``size`` entries, and the frontier at that size (when it came cheaply)."""
        if size >= self.base:
            if size < self.size:  # asked for a smaller tree than the frontier has grown to: start again
                self.frontier = list(self.known.frontier) if self.known is not None else []
                self.size = self.base
            while self.size < size:
                merkle.frontier_append(self.frontier, self.size, merkle.leaf_hash(self.entries[self.size]))
                self.size += 1
            return merkle.frontier_root(self.frontier), tuple(self.frontier)
        if self.leaves is None:
            self.leaves = [merkle.leaf_hash(e) for e in self.entries]
        return merkle.root(self.leaves[:size]), None

    def prefix(self, size: int) -> str:
        """The sha256 of the first ``size`` records, each followed by a newline."""
        if size < self.base:
            return _running(self.entries[:size]).hexdigest()
        digest = self.hash.copy()
        if size > self.base:
            digest.update(b"\n".join(self.entries[self.base : size]) + b"\n")
        return digest.hexdigest()


def _running(records: Sequence[bytes]) -> hashlib._Hash:
    digest = hashlib.sha256()
    if records:
        digest.update(b"\n".join(records))
        digest.update(b"\n")
    return digest


def believe(entries: Sequence[bytes], checkpoints: Sequence[bytes], key: PublicKey, cache: Path | None = None) -> View:
    """The view of a log (its entry and checkpoint records) that ``key`` vouches for; ``cache``: where the
    verified frontier of this log and key is kept (None: computed from the entries alone)."""
    seen_before = _read_cache(cache)
    roots = _Roots(entries, seen_before)
    failed: list[str] = []
    changed = False
    for number in range(len(checkpoints), 0, -1):
        where = f"checkpoint {number}"
        try:
            cp = Checkpoint.parse(checkpoints[number - 1])
        except ValueError as exc:
            failed.append(f"{where}: {exc}")
            continue
        where = f"checkpoint {number} (tree size {cp.size})"
        if not cp.verifies(key):
            failed.append(f"{where}: its signature does not verify with keyid {key.keyid[:16]}")
            continue
        if cp.size > len(entries):
            failed.append(f"{where}: covers {cp.size} entries, the log holds {len(entries)}")
            continue
        root, frontier = roots.root(cp.size)
        if root != cp.root:
            failed.append(f"{where}: the entries it covers were changed")
            changed = True
            continue
        believed = tuple(entries[: cp.size])
        prefix = roots.prefix(cp.size)
        rewound = _rewound(seen_before, roots, cp.size)
        if rewound is None and frontier is not None and (roots.known is None or cp.size > roots.known.size):
            _write_cache(cache, _Known(cp.size, prefix, frontier))
        failed.reverse()
        tail = tuple(entries[cp.size :])
        return View(believed, cp, len(entries), tuple(failed), prefix, tail, rewound, number, changed)
    failed.reverse()
    return View((), None, len(entries), tuple(failed), _running(()).hexdigest(), tuple(entries),
                _rewound(seen_before, roots, 0), 0, changed)  # fmt: skip


def _rewound(seen_before: _Known | None, roots: _Roots, size: int) -> int | None:
    """The size this reader verified before, when the believed log (``size`` entries) does not extend it."""
    if seen_before is None or seen_before.size == 0:
        return None
    if roots.known is None or size < seen_before.size:
        return seen_before.size
    return None
