"""How log entries, and the provenance and SBOM blobs they store, become rows of the query index.

``Fold`` replays entries in log order into the tables ``SCHEMA`` makes, the way ``state.apply``
folds them into a ``State`` (items are made by the entry that first stores them, names are added,
provenance links and kinds follow later entries), reads each provenance statement and
layer or image SBOM once, when it is first stored, through the backend (``facts`` says what they
hold), and keeps the Merkle frontier and a running hash of the records it folded. It writes only
into the connection it is given, inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import InvalidSdistFilename, parse_sdist_filename
from packaging.version import InvalidVersion

from detpack.errors import DetpackError, StoreError
from detpack.provenance.statement import IMAGE_BUILD_TYPE, LAYER_BUILD_TYPE
from detpack.store import facts, log, merkle
from detpack.store.backend import NAME_RE, read_blob
from detpack.store.store import Store

#: 5: closure reports (``*.closure.json``) are kind "closure" (a store folded before says "file": rebuilt).
SCHEMA_VERSION = 5
#: What a closure report's name ends with (``detpack.deps.report.REPORT_SUFFIX``; the store sits below ``deps``,
#: whose ``verify --store`` pushes into it, so the suffix is spelled here and a test pins the two together).
CLOSURE_SUFFIX = ".closure.json"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE items (
    digest TEXT PRIMARY KEY,
    item_kind TEXT NOT NULL,         -- as the log says: artifact, provenance, attestation, log, policy, vsa
    kind TEXT NOT NULL,              -- what it is: wheel, sdist, layer, image, sbom, closure, file, or item_kind
    size INTEGER NOT NULL,
    first_index INTEGER NOT NULL,    -- the log entry that first stored it
    time TEXT NOT NULL,              -- that entry's time
    author TEXT NOT NULL,            -- its author (access policy key name) or user
    names TEXT NOT NULL DEFAULT '',  -- its names in the order they were bound, one a line (as in ``names``)
    media TEXT,                      -- an image's blob (store push oci:…): image, layer or config
    explicit_provenance TEXT,        -- the provenance a push entry linked it to
    provenance TEXT,                 -- the provenance it is linked to (a provenance: itself)
    expired TEXT,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX items_kind ON items(kind, first_index);
CREATE INDEX items_item_kind ON items(item_kind, first_index);
CREATE INDEX items_provenance ON items(provenance);
CREATE TABLE names (digest TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (digest, name))
    WITHOUT ROWID;
CREATE INDEX names_name ON names(name);
CREATE TABLE subjects (holder TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (holder, digest)) WITHOUT ROWID;
CREATE INDEX subjects_digest ON subjects(digest);
CREATE TABLE provenances (digest TEXT PRIMARY KEY, build_type TEXT, builder TEXT) WITHOUT ROWID;
CREATE INDEX provenances_builder ON provenances(builder);
CREATE TABLE deps (holder TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL);
CREATE INDEX deps_name ON deps(name, version);
CREATE INDEX deps_holder ON deps(holder);
CREATE TABLE wheels (holder TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, file TEXT NOT NULL,
                     via TEXT NOT NULL);
CREATE INDEX wheels_name ON wheels(name, version);
CREATE INDEX wheels_holder ON wheels(holder);
CREATE TABLE sources (holder TEXT NOT NULL, repository TEXT, commit_id TEXT);
CREATE INDEX sources_commit ON sources(commit_id);
CREATE INDEX sources_holder ON sources(holder);
CREATE TABLE sboms (digest TEXT PRIMARY KEY, subject TEXT NOT NULL, kind TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX sboms_subject ON sboms(subject);
CREATE TABLE promotions (
    log_index INTEGER PRIMARY KEY, env TEXT NOT NULL, digest TEXT NOT NULL, time TEXT NOT NULL,
    time_s INTEGER, author TEXT NOT NULL, forced INTEGER NOT NULL, reason TEXT
);
CREATE INDEX promotions_env ON promotions(env, log_index);
CREATE INDEX promotions_env_time ON promotions(env, time_s);
CREATE INDEX promotions_digest ON promotions(digest);
CREATE TABLE notes (log_index INTEGER NOT NULL, digest TEXT NOT NULL, message TEXT NOT NULL);
CREATE VIEW artifact_deps AS
    SELECT i.digest AS digest, d.name AS name, d.version AS version
    FROM items i JOIN deps d ON d.holder = i.provenance;
CREATE VIEW artifact_wheels AS
    SELECT i.digest AS digest, w.name AS name, w.version AS version, w.file AS file, w.via AS via
    FROM items i JOIN wheels w ON w.holder = i.provenance OR w.holder = i.digest;
CREATE VIEW artifact_sources AS
    SELECT i.digest AS digest, s.repository AS repository, s.commit_id AS commit_id
    FROM items i JOIN sources s ON s.holder = i.provenance;
"""


def set_meta(db: sqlite3.Connection, values: dict[str, str]) -> None:
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())


#: The RFC 6962 root of a tree from the roots of the perfect subtrees covering it (``merkle.root``).
root_of = merkle.frontier_root


def _epoch(text: str) -> int | None:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp())


def classify(
    item_kind: str, name: str, build_type: str | None, described_as: str | None, media: str | None = None
) -> str:
    """What an item is: its log kind, or for an artifact what an image push, its provenance, an SBOM of it or
    its name says."""
    if item_kind != "artifact":
        return item_kind
    if media is not None:
        return media
    if build_type == LAYER_BUILD_TYPE:
        return "layer"
    if build_type == IMAGE_BUILD_TYPE:
        return "image"
    if described_as is not None:
        return described_as
    if name.endswith(".whl"):
        return "wheel"
    if name.endswith((facts.SBOM_SUFFIX, ".spdx.json")):
        return "sbom"
    if name.endswith(CLOSURE_SUFFIX):
        return "closure"
    try:
        parse_sdist_filename(name)
    except (InvalidSdistFilename, InvalidVersion):
        return "file"
    return "sdist"


@dataclass
class Fold:
    """Folds log entries into the index, in order (the replay of ``state.apply``, kept in SQL)."""

    db: sqlite3.Connection
    store: Store
    index: int  # the next entry's index
    frontier: list[bytes]
    prefix: Any  # the running sha256 of the covered records
    dirty: set[str] = field(default_factory=set)  # items whose link or kind may have changed
    refused: frozenset[int] = frozenset()  # entries the access policy refuses: hashed, not folded in
    progress: Callable[[int, int], None] | None = None  # told (entries done, entries in all) now and then

    def run(self, records: Sequence[bytes]) -> None:
        for done, record in enumerate(records):
            if self.progress is not None and done % 500 == 0:
                self.progress(done, len(records))
            try:
                entry = log.parse_entry(record)
            except ValueError:
                raise StoreError(
                    f"{self.store.backend.url}: log entry {self.index + 1} is unreadable; run `detpack store verify`"
                ) from None
            if self.index not in self.refused:
                self.apply(entry)
            merkle.frontier_append(self.frontier, self.index, merkle.leaf_hash(record))
            self.prefix.update(record + b"\n")
            self.index += 1
        self.refresh()
        set_meta(
            self.db,
            {
                "size": str(self.index),
                "prefix": self.prefix.hexdigest(),
                "frontier": json.dumps([h.hex() for h in self.frontier]),
                "root": root_of(self.frontier).hex(),
            },
        )

    def apply(self, e: dict[str, Any]) -> None:
        kind = e.get("type")
        digest = str(e.get("digest", ""))
        if kind in ("push", "provenance", "attestation", "log"):
            self._push(e, digest, "artifact" if kind == "push" else str(kind))
        elif kind == "policy":
            self._blob(e, digest, "policy")
        elif kind == "tag":
            if self._exists(digest):
                self._name(digest, str(e.get("name")))
        elif kind == "promote":
            vsa = e.get("vsa") if isinstance(e.get("vsa"), dict) else None
            if vsa is not None:
                self._blob({**e, "size": vsa.get("size", 0)}, str(vsa.get("digest", "")), "vsa")
            time = str(e.get("time", ""))
            author = e.get("author") if isinstance(e.get("author"), str) else e.get("user", "")
            self.db.execute(
                "INSERT INTO promotions (log_index, env, digest, time, time_s, author, forced, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.index, str(e.get("env")), digest, time, _epoch(time), str(author),
                 int(bool(e.get("forced"))), e.get("reason") if isinstance(e.get("reason"), str) else None),
            )  # fmt: skip
        elif kind in ("hold", "release"):
            self.db.execute("UPDATE items SET held = ? WHERE digest = ?", (int(kind == "hold"), digest))
        elif kind == "expire":
            self.db.execute("UPDATE items SET expired = ? WHERE digest = ?", (str(e.get("time", "")), digest))

    def _exists(self, digest: str) -> bool:
        return self.db.execute("SELECT 1 FROM items WHERE digest = ?", (digest,)).fetchone() is not None

    def _blob(self, e: dict[str, Any], digest: str, kind: str) -> bool:
        """The item of a blob the entry stores, made when it is new (then True)."""
        created = self.db.execute(
            "INSERT OR IGNORE INTO items (digest, item_kind, kind, size, first_index, time, author)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (digest, kind, kind, int(e.get("size", 0) or 0), self.index, str(e.get("time", "")),
             str(e.get("author") or e.get("user", ""))),
        ).rowcount  # fmt: skip
        self.dirty.add(digest)
        return bool(created)

    def _name(self, digest: str, name: str) -> None:
        if not NAME_RE.fullmatch(name):
            return  # no store name: not bound (``state.apply``)
        if self.db.execute("SELECT 1 FROM names WHERE name = ? AND digest != ?", (name, digest)).fetchone():
            return  # bound to other bytes already: names are write-once, the first binding is kept
        sql = "INSERT OR IGNORE INTO names (digest, name, position) VALUES (?, ?, ?)"
        if self.db.execute(sql, (digest, name, self.index)).rowcount:
            append = "UPDATE items SET names = CASE names WHEN '' THEN ?1 ELSE names || char(10) || ?1 END"
            self.db.execute(append + " WHERE digest = ?2", (name, digest))
        self.dirty.add(digest)

    def _push(self, e: dict[str, Any], digest: str, kind: str) -> None:
        first = self._blob(e, digest, kind)
        if not first:  # pushing expired bytes again brings them back
            self.db.execute("UPDATE items SET expired = NULL WHERE digest = ?", (digest,))
        name = e.get("name")
        if isinstance(name, str):
            self._name(digest, name)
        if kind in ("provenance", "attestation") and first:  # what a record covers: as first stored
            subjects = [str(s) for s in e.get("subjects", [])]
            self.db.executemany(
                "INSERT OR IGNORE INTO subjects (holder, digest) VALUES (?, ?)", ((digest, s) for s in subjects)
            )
            self.dirty.update(subjects)
            if kind == "provenance":
                self._read_provenance(digest)
        elif e.get("provenance"):  # the first link is kept (``Store.provenance_of``)
            self.db.execute(
                "UPDATE items SET explicit_provenance = ? WHERE digest = ? AND explicit_provenance IS NULL",
                (str(e["provenance"]), digest),
            )
        if kind == "artifact" and e.get("media") in ("image", "layer", "config"):  # as first said (``state``)
            self.db.execute("UPDATE items SET media = ? WHERE digest = ? AND media IS NULL", (e["media"], digest))
        if kind == "artifact" and isinstance(name, str) and name.endswith(facts.SBOM_SUFFIX):
            self._read_sbom(digest, name)

    def _read(self, digest: str, what: str) -> bytes | None:
        try:
            return read_blob(self.store.backend, digest)
        except (DetpackError, OSError) as exc:
            self._note(digest, f"{what} sha256:{digest[:16]}… cannot be read ({exc}); skipped")
            return None

    def _note(self, digest: str, message: str) -> None:
        self.db.execute(
            "INSERT INTO notes (log_index, digest, message) VALUES (?, ?, ?)", (self.index, digest, message)
        )

    def _read_provenance(self, digest: str) -> None:
        if self.db.execute("SELECT 1 FROM provenances WHERE digest = ?", (digest,)).fetchone() is not None:
            return  # read once, when first stored: its bytes never change
        data = self._read(digest, "provenance")
        if data is None:
            return
        try:
            found = facts.provenance_facts(data, f"provenance sha256:{digest[:16]}…")
        except DetpackError as exc:
            self._note(digest, f"{exc.message}; skipped")
            return
        self.db.execute(
            "INSERT INTO provenances (digest, build_type, builder) VALUES (?, ?, ?)",
            (digest, found.build_type, found.builder),
        )
        self.db.executemany(
            "INSERT INTO deps (holder, name, version) VALUES (?, ?, ?)",
            ((digest, d.name, d.version) for d in found.dependencies),
        )
        self.db.executemany(
            "INSERT INTO sources (holder, repository, commit_id) VALUES (?, ?, ?)",
            ((digest, s.repository, s.commit) for s in found.sources),
        )
        self.db.executemany(
            "INSERT INTO wheels (holder, name, version, file, via) VALUES (?, ?, ?, ?, ?)",
            ((digest, w.name, w.version, w.file, digest) for w in found.wheels),
        )

    def _read_sbom(self, digest: str, name: str) -> None:
        if self.db.execute("SELECT 1 FROM sboms WHERE digest = ?", (digest,)).fetchone() is not None:
            return
        data = self._read(digest, f"SBOM {name}")
        if data is None:
            return
        try:
            found = facts.sbom_facts(data, f"SBOM {name} (sha256:{digest[:16]}…)")
        except DetpackError as exc:
            self._note(digest, f"{exc.message}; skipped")
            return
        if found is None:
            return  # a build's SBOM: it names no contents
        self.db.execute(
            "INSERT INTO sboms (digest, subject, kind) VALUES (?, ?, ?)", (digest, found.subject, found.kind)
        )
        self.db.executemany(
            "INSERT INTO wheels (holder, name, version, file, via) VALUES (?, ?, ?, ?, ?)",
            ((found.subject, w.name, w.version, w.file, digest) for w in found.wheels),
        )
        self.dirty.add(found.subject)

    def refresh(self) -> None:
        """Link and classify every item the entries touched (``Store.provenance_of``: the provenance its
        first linking push named, else the provenance stored first of those that list it as a subject)."""
        for digest in sorted(self.dirty):
            row = self.db.execute(_REFRESH, (digest,)).fetchone()
            if row is None:
                continue
            item_kind, explicit, listed, first, described, media = row
            link = None
            if item_kind == "provenance":
                link = digest
            elif item_kind == "artifact":
                link = explicit if explicit is not None else listed
            build = self.db.execute("SELECT build_type FROM provenances WHERE digest = ?", (link,)).fetchone()
            kind = classify(item_kind, first or "", build[0] if build else None, described, media)
            self.db.execute("UPDATE items SET provenance = ?, kind = ? WHERE digest = ?", (link, kind, digest))
        self.dirty.clear()


#: What ``Fold.refresh`` needs of one item: its log kind, the provenance its first push linked (when that is
#: stored), the provenance stored first of those listing it, its first name, what an SBOM says it is.
_REFRESH = """
SELECT i.item_kind,
    (SELECT e.digest FROM items e WHERE e.digest = i.explicit_provenance),
    (SELECT s.holder FROM subjects s CROSS JOIN items p ON p.digest = s.holder
     WHERE s.digest = i.digest AND p.item_kind = 'provenance' ORDER BY p.first_index LIMIT 1),
    (SELECT n.name FROM names n WHERE n.digest = i.digest ORDER BY n.position, n.name LIMIT 1),
    (SELECT b.kind FROM sboms b WHERE b.subject = i.digest LIMIT 1),
    i.media
FROM items i WHERE i.digest = ?
"""
