"""Questions to a store's query index (``index``): which artifacts match, what was live where and when.

``Query.parse`` turns what a user typed into a validated ``Query`` (ConfigError naming the flag
otherwise); ``query`` answers it with one ``Match`` per item, in log order, each with the facts
that made it match; ``live`` and ``history`` answer what an environment ran. Filters combine: an
item matches when every filter given holds. Requirements are PEP 508 (a name and a specifier,
matched with ``packaging`` against the versions recorded, pre-releases included); names are
compared in their PEP 503 form. Pure lookups: nothing here writes or reads the store itself.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from detpack.errors import ConfigError, StoreError
from detpack.store.index import Index

#: What ``--kind`` takes: what an artifact is (by its provenance, an SBOM of it, or its file name: a
#: ``*.closure.json`` is a ``deps verify`` closure report), or the kind of record the log says it is.
KINDS = (
    "wheel", "sdist", "layer", "image", "config", "sbom", "file", "closure", "provenance", "attestation", "log",
    "policy", "vsa",
)  # fmt: skip

_COMMIT = re.compile(r"^[0-9a-f]{4,64}$")


@dataclass(frozen=True)
class Query:
    """What to look for; every field given must hold (``Query()`` matches every artifact)."""

    dependencies: tuple[Requirement, ...] = ()  # --dep: its provenance records a build dependency matching each
    contains: tuple[Requirement, ...] = ()  # --contains: a layer or image holding a wheel matching each
    commit: str | None = None  # --commit: a source commit starting with this (lower-case hex)
    repository: str | None = None  # --repo: a source repository containing this (case-insensitive)
    builder: str | None = None  # --builder: built by exactly this builder id
    name: str | None = None  # --name: one of its names matches this glob (* ? [...], case-sensitive)
    kind: str | None = None  # --kind: one of KINDS (None: artifacts of any kind)
    live: str | None = None  # --live: live in this environment now
    env: str | None = None  # --env: live in this environment at ``at`` (now without it)
    at: dt.datetime | None = None  # --at: the moment (UTC)

    @classmethod
    def parse(
        cls,
        *,
        dep: Sequence[str] = (),
        contains: Sequence[str] = (),
        commit: str | None = None,
        repo: str | None = None,
        builder: str | None = None,
        name: str | None = None,
        kind: str | None = None,
        live: str | None = None,
        env: str | None = None,
        at: str | None = None,
    ) -> Query:
        """A query from text as given on the command line (ConfigError naming the flag and the problem)."""
        if commit is not None and not _COMMIT.match(commit.lower()):
            raise ConfigError(f"--commit {commit!r}: not a commit id or its prefix (4 to 64 hex digits)")
        if kind is not None and kind not in KINDS:
            raise ConfigError(f"--kind {kind!r}: not a kind (one of {', '.join(KINDS)})")
        for flag, value in (("--repo", repo), ("--builder", builder), ("--name", name), ("--live", live),
                            ("--env", env)):  # fmt: skip
            if value is not None and not value.strip():
                raise ConfigError(f"{flag}: give a value, not an empty string")
        if at is not None and env is None:
            raise ConfigError("--at: give --env ENV too (the environment to look at)")
        return cls(
            tuple(requirement(r, "--dep") for r in dep),
            tuple(requirement(r, "--contains") for r in contains),
            commit.lower() if commit is not None else None,
            repo,
            builder,
            name,
            kind,
            live,
            env,
            moment(at, "--at") if at is not None else None,
        )


def requirement(text: str, flag: str) -> Requirement:
    """A PEP 508 requirement naming a package and, optionally, the versions wanted."""
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        why = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise ConfigError(f"{flag} {text!r}: not a requirement such as 'setuptools<70' ({why})") from None
    if req.url or req.marker is not None or req.extras:
        what = "a URL" if req.url else "a marker" if req.marker is not None else "extras"
        raise ConfigError(f"{flag} {text!r}: give a name and a version specifier only, not {what}")
    return req


def moment(text: str, flag: str) -> dt.datetime:
    """An ISO 8601 time (``2026-03-14T12:00:00Z``; no offset means UTC) or date (00:00 UTC that day)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: not a time (give an ISO 8601 date or time, e.g. 2026-03-14 or 2026-03-14T12:00:00Z)"
        ) from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class Fact:
    """One fact that made an item match a filter."""

    filter: str  # the filter: dep, contains, commit, repo, builder, live or env
    value: str  # what matched ("setuptools 69.5.1", a commit, a repository, "prod since …")


@dataclass(frozen=True)
class Match:
    """An item that matches, as the index knows it."""

    digest: str  # sha256 hex
    kind: str  # one of KINDS
    names: tuple[str, ...]  # in the order they were bound
    size: int
    log_entry: int  # the entry that first stored it (1-based, as `store log` counts)
    time: str  # that entry's time
    author: str  # who pushed it
    expired: str | None  # when it was taken out of the live set
    held: bool
    facts: tuple[Fact, ...]  # why it matched, filter by filter

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": f"sha256:{self.digest}",
            "kind": self.kind,
            "names": list(self.names),
            "size": self.size,
            "pushed": {"log_entry": self.log_entry, "time": self.time, "author": self.author},
            "expired": self.expired,
            "held": self.held,
            "facts": [{"filter": f.filter, "value": f.value} for f in self.facts],
        }


@dataclass(frozen=True)
class Promotion:
    """One promotion in an environment's history, and how long it stayed live there."""

    log_entry: int  # 1-based
    env: str
    digest: str
    kind: str
    names: tuple[str, ...]
    time: str
    author: str
    forced: bool
    reason: str | None  # why it was forced
    until: str | None  # the time of the promotion that replaced it (None: still live)

    def to_json(self) -> dict[str, Any]:
        return {
            "log_entry": self.log_entry,
            "env": self.env,
            "digest": f"sha256:{self.digest}",
            "kind": self.kind,
            "names": list(self.names),
            "time": self.time,
            "author": self.author,
            "forced": self.forced,
            "reason": self.reason,
            "until": self.until,
        }


def environments(index: Index) -> tuple[str, ...]:
    """Every environment anything was promoted to, sorted."""
    return tuple(str(e) for (e,) in index.db.execute("SELECT DISTINCT env FROM promotions ORDER BY env"))


def live(index: Index, env: str, at: dt.datetime | None = None) -> Promotion | None:
    """What was live in ``env`` at ``at`` (now without it): its last promotion there by then."""
    _known(index, env)
    sql = _PROMOTIONS + " WHERE p.env = ?" + (" AND p.time_s <= ?" if at is not None else "")
    params: list[Any] = [env, *([int(at.timestamp())] if at is not None else [])]
    row = index.db.execute(sql + " ORDER BY p.log_index DESC LIMIT 1", params).fetchone()
    if row is None:
        return None
    then = index.db.execute(
        "SELECT time FROM promotions WHERE env = ? AND log_index > ? ORDER BY log_index LIMIT 1", (env, row[0])
    ).fetchone()
    return replace(_promotion(env, row), until=then[0] if then else None)


def history(index: Index, env: str, q: Query | None = None, until: dt.datetime | None = None) -> tuple[Promotion, ...]:
    """Every promotion to ``env`` made by ``until`` (all without it) of an item matching ``q``, oldest first."""
    _known(index, env)
    rows = index.db.execute(_PROMOTIONS + " WHERE p.env = ? ORDER BY p.log_index", (env,)).fetchall()
    found = [_promotion(env, row) for row in rows]
    found = [replace(p, until=found[n + 1].time) if n + 1 < len(found) else p for n, p in enumerate(found)]
    if until is not None:
        cutoff = int(until.timestamp())
        found = [p for p, row in zip(found, rows, strict=True) if row[-1] is not None and row[-1] <= cutoff]
    if q is not None and q != Query():
        wanted = {m.digest for m in query(index, q)}
        found = [p for p in found if p.digest in wanted]
    return tuple(found)


# The SQL of each filter (constant text; values are parameters, version lists a JSON array).
_DEP = "i.provenance IN (SELECT holder FROM deps WHERE name = ? AND version IN (SELECT value FROM json_each(?)))"
_DEP_FACTS = (
    "SELECT holder, name || ' ' || version FROM deps WHERE name = ? AND version IN (SELECT value FROM json_each(?))"
)
_CONTAINS = """(
    i.digest IN (SELECT holder FROM wheels WHERE name = ? AND version IN (SELECT value FROM json_each(?)))
    OR i.provenance IN (SELECT holder FROM wheels WHERE name = ? AND version IN (SELECT value FROM json_each(?)))
    OR i.digest IN (
        SELECT s.digest FROM sboms s
        WHERE s.subject IN (SELECT holder FROM wheels WHERE name = ? AND version IN (SELECT value FROM json_each(?)))
        AND NOT EXISTS (SELECT 1 FROM items a WHERE a.digest = s.subject AND a.item_kind = 'artifact')
    )
)"""
_CONTAINS_FACTS = (
    "SELECT holder, name || ' ' || version FROM wheels WHERE name = ? AND version IN (SELECT value FROM json_each(?))"
)
_COMMIT_SPAN = "FROM sources WHERE commit_id >= ? AND commit_id < ?"
_REPO_LIKE = "FROM sources WHERE repository LIKE ? ESCAPE '\\'"
_SELECT = (
    "SELECT i.digest, i.kind, i.size, i.first_index, i.time, i.author, i.expired, i.held, i.provenance, i.names,"
    " (SELECT subject FROM sboms s WHERE s.digest = i.digest)"
    " FROM items i WHERE "
)


def query(index: Index, q: Query) -> tuple[Match, ...]:
    """Every item matching ``q``, in the order the log first stored them."""
    db = index.db
    where: list[str] = ["i.kind = ?" if q.kind is not None else "i.item_kind = 'artifact'"]
    params: list[Any] = [q.kind] if q.kind is not None else []
    facts: list[_Facts] = []
    if q.name is not None:
        where.append("i.digest IN (SELECT digest FROM names WHERE name GLOB ?)")
        params.append(q.name)
    for req in q.dependencies:
        versions = [canonicalize_name(req.name), json.dumps(_versions(db, "deps", req))]
        where.append(_DEP)
        params += versions
        facts.append(_Facts("dep", _by_holder(db, _DEP_FACTS, versions)))
    for req in q.contains:
        versions = [canonicalize_name(req.name), json.dumps(_versions(db, "wheels", req))]
        where.append(_CONTAINS)
        params += versions * 3
        facts.append(_Facts("contains", _by_holder(db, _CONTAINS_FACTS, versions), sbom=True))
    if q.commit is not None:
        span = [q.commit, q.commit[:-1] + chr(ord(q.commit[-1]) + 1)]  # every id starting with the prefix
        where.append("i.provenance IN (SELECT holder " + _COMMIT_SPAN + ")")
        params += span
        facts.append(_Facts("commit", _by_holder(db, "SELECT holder, commit_id " + _COMMIT_SPAN, span)))
    if q.repository is not None:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", q.repository) + "%"
        where.append("i.provenance IN (SELECT holder " + _REPO_LIKE + ")")
        params.append(pattern)
        facts.append(_Facts("repo", _by_holder(db, "SELECT holder, repository " + _REPO_LIKE, [pattern])))
    if q.builder is not None:
        where.append("i.provenance IN (SELECT digest FROM provenances WHERE builder = ?)")
        params.append(q.builder)
        sql = "SELECT digest, builder FROM provenances WHERE builder = ?"
        facts.append(_Facts("builder", _by_holder(db, sql, [q.builder])))
    for flag, env, at in (("live", q.live, None), ("env", q.env, q.at)):
        if env is None:
            continue
        promotion = live(index, env, at)
        if promotion is None:
            return ()
        where.append("i.digest = ?")
        params.append(promotion.digest)
        when = f"at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}: promoted {promotion.time}" if at else f"since {promotion.time}"
        facts.append(_Facts(flag, {promotion.digest: [f"{env} {when} (log entry {promotion.log_entry})"]}, own=True))
    sql = _SELECT + " AND ".join(where) + " ORDER BY i.first_index, i.digest"
    matches = []
    for digest, kind, size, first, time, author, expired, held, link, names, subject in db.execute(sql, params):
        found = tuple(fact for f in facts for fact in f.of(digest, link, subject)) if facts else ()
        names = tuple(names.split("\n")) if names else ()
        matches.append(Match(digest, kind, names, size, first + 1, time, author, expired, bool(held), found))
    return tuple(matches)


@dataclass(frozen=True)
class _Facts:
    """What one filter found, by the digest holding it (an item, its provenance, or an SBOM's subject)."""

    filter: str
    by_holder: dict[str, list[str]]
    own: bool = False  # held by the item itself only
    sbom: bool = False  # also held by the subject an SBOM describes
    made: dict[str, Fact] = field(default_factory=dict)  # one Fact per value, shared by the matches

    def of(self, digest: str, link: str | None, subject: str | None) -> list[Fact]:
        values = list(self.by_holder.get(digest, ()))
        if not self.own and link and link != digest:
            values += self.by_holder.get(link, ())
        if self.sbom and subject:
            values += self.by_holder.get(subject, ())
        if len(values) > 1:
            values = sorted(set(values))
        return [self.made.get(v) or self.made.setdefault(v, Fact(self.filter, v)) for v in values]


def _by_holder(db: sqlite3.Connection, sql: str, params: Iterable[Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for holder, value in db.execute(sql, list(params)):
        found.setdefault(str(holder), []).append(str(value))
    return found


def _versions(db: sqlite3.Connection, table: str, req: Requirement) -> list[str]:
    """The versions recorded for the requirement's package that its specifier allows."""
    sql = {
        "deps": "SELECT DISTINCT version FROM deps WHERE name = ?",
        "wheels": "SELECT DISTINCT version FROM wheels WHERE name = ?",
    }[table]
    rows = db.execute(sql, (canonicalize_name(req.name),))
    return sorted(str(v) for (v,) in rows if _allows(req, str(v)))


def _allows(req: Requirement, version: str) -> bool:
    if not req.specifier:
        return True
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _known(index: Index, env: str) -> None:
    if index.db.execute("SELECT 1 FROM promotions WHERE env = ? LIMIT 1", (env,)).fetchone() is None:
        known = ", ".join(environments(index)) or "none yet"
        raise StoreError(f"{env}: nothing has been promoted to this environment (environments: {known})")


_PROMOTIONS = (
    "SELECT p.log_index, p.digest, p.time, p.author, p.forced, p.reason, i.kind, i.names, p.time_s"
    " FROM promotions p LEFT JOIN items i ON i.digest = p.digest"
)


def _promotion(env: str, row: Sequence[Any]) -> Promotion:
    log_index, digest, time, author, forced, reason, kind, names, _ = row
    return Promotion(int(log_index) + 1, env, str(digest), str(kind or "?"), tuple(names.split("\n")) if names else (),
                     str(time), str(author), bool(forced), reason, None)  # fmt: skip
