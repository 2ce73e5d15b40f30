"""The query index of a store: a derived SQLite database, rebuilt from the store whenever in doubt.

The index holds what ``detpack store query`` looks things up by, folded from the store's committed
log (the entries its latest checkpoint covers) and the provenance and SBOM blobs it stores, read
through the backend's API only (a directory, ``oci://`` or any other backend): every item with its
names, kind, size, the entry that first stored it and who pushed it; the provenance each artifact is
linked to (as ``Store.provenance_of`` links it); what each provenance statement says (build
dependencies, source repository and commit, builder, contained wheels: ``facts``); what each
layer's or image's SBOM says it contains; and every promotion, so what was live in an environment at
any moment is one lookup. A provenance or SBOM blob that cannot be read is noted, not fatal.

Invariants:
- The index is never the truth: it records the log size it covers, the RFC 6962 root of those
  entries and a SHA-256 of their exact bytes. Opening it re-hashes the covered entries as the store
  has them now: when they match, only the entries after them are folded in, in one SQLite
  transaction; when they do not (a rewritten or rolled-back log, a copy of the store that went
  another way, another store, another schema, a damaged file), the index is rebuilt from scratch.
- A half-built index is never used: a rebuild is written to a pid-tagged temporary beside the
  index and renamed over it once complete; an incremental update commits or leaves the index as
  it was. Writers of one index are serialised by a file lock beside it; readers never take it.
- Its default place is ``$XDG_CACHE_HOME/detpack/index/<sha256(origin or URL)[:32]>.sqlite``, by
  the store's origin (its init entry), so it follows a store that moves.

SQL surface (for other readers of the file; ``query`` uses it): tables ``items``, ``names``,
``subjects``, ``provenances``, ``deps``, ``wheels``, ``sources``, ``sboms``, ``promotions``,
``notes``, ``meta``, and views ``artifact_deps``, ``artifact_wheels``, ``artifact_sources`` that
join facts to the artifacts they describe. Digests are lower-case sha256 hex; log indexes 0-based.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.atomic import exclusive, sweep, temp_name
from detpack.errors import OutputError
from detpack.store import log
from detpack.store.fold import SCHEMA, SCHEMA_VERSION, Fold, root_of, set_meta
from detpack.store.keys import user_dir
from detpack.store.store import Store


@dataclass(frozen=True)
class Coverage:
    """What an index covers, and what opening it did."""

    path: Path  # the index file
    size: int  # log entries it covers (all the store's committed entries)
    root: str  # the RFC 6962 root of those entries (hex)
    added: int  # entries this open folded in
    rebuilt: str | None  # why this open rebuilt it from scratch (None: it was reused)
    matches_checkpoint: bool  # the root is the one the store's latest checkpoint signs


@dataclass(frozen=True)
class Note:
    """A blob the index could not read, skipped."""

    log_index: int  # the entry that stored it (0-based)
    digest: str
    message: str  # one line: what it is and why it was skipped


class Index:
    """An open index: a read-only SQLite connection and what it covers (close it, or use ``with``)."""

    def __init__(self, db: sqlite3.Connection, coverage: Coverage) -> None:
        self.db = db
        self.coverage = coverage

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_path(origin: str | None, url: str) -> Path:
    """``$XDG_CACHE_HOME/detpack/index/<sha256(origin, else url)[:32]>.sqlite`` (``~/.cache`` without it)."""
    key = hashlib.sha256((origin or url).encode("utf-8")).hexdigest()[:32]
    return user_dir("XDG_CACHE_HOME", ".cache") / "detpack" / "index" / f"{key}.sqlite"


def open_index(
    store: Store, path: Path | None = None, *, rebuild: bool = False, progress: Callable[[int, int], None] | None = None
) -> Index:
    """The store's index, brought up to date with its log first (at ``path``, else ``default_path``);
    ``rebuild``: from scratch, whatever the index holds."""
    seen = store.view()
    records, checkpoint = list(seen.records), seen.checkpoint
    origin = _origin(records)
    target = path if path is not None else default_path(origin, store.backend.url)
    lock = target.with_name(target.name + ".lock")
    try:
        with exclusive(lock, target, "the query index's lock", OutputError):
            sweep(target.parent)
            coverage = _update(store, records, checkpoint, target, origin, rebuild, seen.prefix, progress)
            # opened under the lock: a rebuild another process renames into place later never mixes in
            db = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            db.execute("SELECT 1 FROM meta LIMIT 1")  # opens the file now, not at the first query
    except sqlite3.Error as exc:
        raise OutputError(f"{target}: cannot use the query index ({exc}); remove it to rebuild it") from None
    except OSError as exc:
        raise OutputError(f"{target}: cannot write the query index ({exc.strerror or exc})") from None
    return Index(db, coverage)


def notes(index: Index) -> tuple[Note, ...]:
    """Every blob the index skipped, in log order."""
    rows = index.db.execute("SELECT log_index, digest, message FROM notes ORDER BY log_index, digest")
    return tuple(Note(int(i), str(d), str(m)) for i, d, m in rows)


@dataclass(frozen=True)
class _Meta:
    origin: str | None
    size: int
    prefix: str  # sha256 of the covered records, each followed by a newline
    frontier: tuple[bytes, ...]  # the roots of the perfect subtrees covering those records, left to right


def _origin(records: Sequence[bytes]) -> str | None:
    if not records:
        return None
    with contextlib.suppress(ValueError):
        entry = log.parse_entry(records[0])
        if entry.get("type") == "init" and isinstance(entry.get("origin"), str):
            return str(entry["origin"])
    return None


def _prefix(records: Sequence[bytes]) -> Any:
    """A running sha256 over ``records``, each followed by a newline (the bytes a directory store keeps)."""
    digest = hashlib.sha256()
    if records:
        digest.update(b"\n".join(records))
        digest.update(b"\n")
    return digest


def _read_meta(path: Path) -> _Meta | None:
    """What the index at ``path`` says it covers; None when there is none, or none of this schema."""
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:  # read-write: rolls back a killed update
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if int(meta.get("schema", -1)) != SCHEMA_VERSION:
            return None
        frontier = tuple(bytes.fromhex(h) for h in json.loads(meta["frontier"]))
        return _Meta(meta.get("origin") or None, int(meta["size"]), str(meta["prefix"]), frontier)
    except (sqlite3.Error, KeyError, ValueError, TypeError):
        return None


def _update(
    store: Store,
    records: Sequence[bytes],
    checkpoint: log.Checkpoint | None,
    target: Path,
    origin: str | None,
    rebuild: bool,
    whole: str,
    progress: Callable[[int, int], None] | None = None,
) -> Coverage:
    """``whole``: the sha256 of all of ``records`` (``view.View.prefix``), so an index covering them all is
    checked without hashing them again."""
    meta = None if rebuild else _read_meta(target)
    reason = "asked to rebuild" if rebuild else "no index yet"
    if meta is not None:
        if meta.size == len(records) and meta.origin == origin and meta.prefix == whole:
            root = root_of(meta.frontier)
            return Coverage(target, len(records), root.hex(), 0, None, _signed(checkpoint, len(records), root))
        prefix = _prefix(records[: meta.size])
        if meta.origin != origin:
            reason = "the index is of another store"
        elif meta.size > len(records) or prefix.hexdigest() != meta.prefix:
            reason = "the log no longer extends what the index covered"
        else:
            added = len(records) - meta.size
            frontier = list(meta.frontier)
            if added:
                try:
                    with contextlib.closing(sqlite3.connect(target, isolation_level=None)) as db:
                        db.execute("BEGIN IMMEDIATE")
                        Fold(
                            db, store, meta.size, frontier, prefix, refused=store.refused(records), progress=progress
                        ).run(records[meta.size :])
                        db.execute("COMMIT")
                        db.execute("PRAGMA optimize")  # refreshes the statistics when they went stale
                except sqlite3.DatabaseError:
                    return _rebuild(store, records, checkpoint, target, origin, "the index file was damaged", progress)
            root = root_of(frontier)
            return Coverage(target, len(records), root.hex(), added, None, _signed(checkpoint, len(records), root))
    return _rebuild(store, records, checkpoint, target, origin, reason, progress)


def _rebuild(
    store: Store,
    records: Sequence[bytes],
    checkpoint: log.Checkpoint | None,
    target: Path,
    origin: str | None,
    reason: str,
    progress: Callable[[int, int], None] | None = None,
) -> Coverage:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(temp_name(target.name))
    frontier: list[bytes] = []
    try:
        with contextlib.closing(sqlite3.connect(temp, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode = OFF")  # a temporary: renamed into place only when complete
            db.execute("PRAGMA synchronous = OFF")
            db.execute("PRAGMA cache_size = -65536")  # 64 MiB: the tables of 100,000 entries stay in memory
            db.executescript(SCHEMA)
            db.execute("BEGIN")
            set_meta(db, {"schema": str(SCHEMA_VERSION), "origin": origin or "", "url": store.backend.url})
            Fold(db, store, 0, frontier, _prefix(()), refused=store.refused(records), progress=progress).run(records)
            db.execute("ANALYZE")  # the planner's statistics: drive each lookup from its most selective index
            db.execute("COMMIT")
        with temp.open("rb") as f:
            os.fsync(f.fileno())
        for leftover in ("-journal", "-wal", "-shm"):  # a killed update's journal must not meet the new file
            with contextlib.suppress(FileNotFoundError):
                target.with_name(target.name + leftover).unlink()
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    root = root_of(frontier)
    return Coverage(target, len(records), root.hex(), len(records), reason, _signed(checkpoint, len(records), root))


def _signed(checkpoint: log.Checkpoint | None, size: int, root: bytes) -> bool:
    return checkpoint is not None and checkpoint.size == size and checkpoint.root == root
