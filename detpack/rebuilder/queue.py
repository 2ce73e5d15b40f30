"""The rebuilders' queue: jobs and outcomes in the store's own PostgreSQL database.

PostgreSQL does the claiming (``SELECT … FOR UPDATE SKIP LOCKED``); there is no broker. Tables,
beside the store's ``detpack_*`` tables (the first user creates them)::

    detpack_rebuild_jobs(release, seq, spec, wanted, enqueued, claimed_by, worker, lease_until, claims,
                         takeovers)
        release      primary key: the canonical ``name==version``, so enqueuing a release twice is
                     one job
        seq          the order jobs are taken in (the order they were enqueued)
        spec         the release as it was first given (what ``rebuild --pypi`` is run with)
        wanted       how many keys must attest it (NULL: every key whose worker runs)
        claimed_by   the keyid of the worker holding the lease, with its ``worker`` name, until
        lease_until  (server time); NULL when nobody holds it. A live worker renews its lease
                     while it rebuilds; a killed one stops renewing, and once ``lease_until`` has
                     passed any worker of any key may claim the job
        claims       how many times it was claimed (by any key)
        takeovers    how many of those claims took it over from a worker whose lease had run out
                     (``lease_until`` still set: a worker that finishes or gives a job back clears it)

    detpack_rebuild_outcomes(release, keyid, verdict, attestations, reason, worker, finished)
        primary key (release, keyid): a key attests a release at most once, whichever worker
        or machine holds it, and however often the job is retried
        verdict      byte-identical, content-identical, different, or not rebuilt (a failed
                     rebuild is an outcome too, so a release never loops)
        attestations the sha256 of each signed attestation posted to the store (one per wheel)

Invariants: a worker claims a job only if its key has no outcome for it, nobody holds a live
lease on it, and (with ``wanted``) fewer than ``wanted`` keys have rebuilt it; the claim row is
locked ``FOR UPDATE SKIP LOCKED`` in the claiming transaction, so two workers never take the same
job at once. An outcome is inserted, and the lease dropped, in one transaction.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from detpack.errors import InputError, StoreError
from detpack.store import postgres
from detpack.wording import redact

#: Taken (per transaction) while the queue's tables are created ("detpack" + 2; the store uses + 0 and + 1).
_SCHEMA_LOCK = 0x6465747061636B + 2

VERDICTS = ("byte-identical", "content-identical", "different", "not rebuilt")
_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.!+_-]*)$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS detpack_rebuild_jobs (
    release text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    spec text NOT NULL,
    wanted integer CHECK (wanted IS NULL OR wanted > 0),
    enqueued timestamptz NOT NULL DEFAULT now(),
    claimed_by text,
    worker text,
    lease_until timestamptz,
    claims integer NOT NULL DEFAULT 0,
    takeovers integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS detpack_rebuild_outcomes (
    release text NOT NULL REFERENCES detpack_rebuild_jobs (release),
    keyid text NOT NULL CHECK (keyid ~ '^[0-9a-f]{64}$'),
    verdict text NOT NULL
        CHECK (verdict IN ('byte-identical', 'content-identical', 'different', 'not rebuilt')),
    attestations text[] NOT NULL DEFAULT '{}',
    reason text NOT NULL DEFAULT '',
    worker text NOT NULL,
    finished timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (release, keyid)
);
"""

#: The releases a key may still take: not attested by it, and not yet attested by enough keys; ``free``: nobody
#: holds a live lease on it. (Written out in each query: the statements are constants, never assembled.)
_CLAIM = """
SELECT j.release, j.spec, CASE WHEN j.lease_until IS NOT NULL THEN j.worker END FROM detpack_rebuild_jobs j
WHERE (j.lease_until IS NULL OR j.lease_until < now())
  AND NOT EXISTS (SELECT 1 FROM detpack_rebuild_outcomes o WHERE o.release = j.release AND o.keyid = %(keyid)s)
  AND (j.wanted IS NULL OR j.wanted > (SELECT count(*) FROM detpack_rebuild_outcomes o
                                       WHERE o.release = j.release AND o.verdict <> 'not rebuilt'))
ORDER BY j.seq
LIMIT 1
FOR UPDATE SKIP LOCKED
"""
_REMAINING = """
SELECT count(*) FILTER (WHERE j.lease_until IS NULL OR j.lease_until < now()), count(*)
FROM detpack_rebuild_jobs j
WHERE NOT EXISTS (SELECT 1 FROM detpack_rebuild_outcomes o WHERE o.release = j.release AND o.keyid = %(keyid)s)
  AND (j.wanted IS NULL OR j.wanted > (SELECT count(*) FROM detpack_rebuild_outcomes o
                                       WHERE o.release = j.release AND o.verdict <> 'not rebuilt'))
"""


@dataclass(frozen=True)
class Claim:
    """A job a worker holds, until ``finish`` or its lease runs out."""

    release: str
    spec: str
    keyid: str
    worker: str
    taken_over_from: str | None  # the worker whose lease had run out (it died, or stopped renewing)


@dataclass(frozen=True)
class Outcome:
    """What one key's rebuild of a release found."""

    verdict: str
    attestations: tuple[str, ...] = ()  # sha256 of each attestation posted to the store
    reason: str = ""


@dataclass(frozen=True)
class Attested:
    keyid: str
    verdict: str
    attestations: tuple[str, ...]
    reason: str
    worker: str
    finished: str


@dataclass(frozen=True)
class JobState:
    release: str
    spec: str
    wanted: int | None
    enqueued: str
    claims: int
    takeovers: int
    leased_by: str | None  # keyid holding a live lease
    leased_worker: str | None
    lease_until: str | None
    outcomes: tuple[Attested, ...]

    def to_json(self) -> dict[str, Any]:
        lease = None
        if self.leased_by is not None:
            lease = {"keyid": self.leased_by, "worker": self.leased_worker, "until": self.lease_until}
        return {
            "release": self.release,
            "spec": self.spec,
            "wanted": self.wanted,
            "enqueued": self.enqueued,
            "claims": self.claims,
            "takeovers": self.takeovers,
            "lease": lease,
            "outcomes": [
                {
                    "keyid": o.keyid,
                    "verdict": o.verdict,
                    "attestations": [f"sha256:{a}" for a in o.attestations],
                    "reason": o.reason,
                    "worker": o.worker,
                    "finished": o.finished,
                }
                for o in self.outcomes
            ],
        }


@dataclass(frozen=True)
class Remaining:
    """The jobs a key may still take: ``free`` now, the others leased by another worker."""

    free: int
    leased: int

    @property
    def total(self) -> int:
        return self.free + self.leased


def release_of(spec: str) -> str:
    """``NAME==VERSION`` in canonical form (the job's key); InputError for anything else."""
    m = _SPEC.match(spec.strip())
    if m is None:
        raise InputError(f"{spec!r} is not an exact release; write NAME==VERSION")
    return f"{canonicalize_name(m['name'])}=={m['version']}"


def conninfo_of(url: str) -> tuple[str, str]:
    """(the driver's connection string, the URL for messages) of a PostgreSQL store's URL."""
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        kind = "a registry store" if scheme == "oci" else "a directory store" if scheme in ("", "file") else scheme
        raise StoreError(
            f"{redact(url)}: the rebuilders' queue lives in a PostgreSQL store, and this is {kind}; give "
            "--store postgresql://USER@HOST:PORT/DB?blobs=… (or ?host=SOCKETDIR for a Unix socket)"
        )
    conninfo, _, shown = postgres.split_url(url)
    return conninfo, shown


class Queue:
    """The queue of a PostgreSQL store (see the module docstring); one connection, autocommit."""

    def __init__(self, url: str) -> None:
        self.conninfo, self.url = conninfo_of(url)
        self._psycopg = postgres.driver(self.url)
        self._conn: Any = None
        self._ready = False

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = self._psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
                self._conn.execute("SET TIME ZONE 'UTC'")
            except self._psycopg.Error as exc:
                raise StoreError(f"{self.url}: cannot connect to the database ({_first_line(exc)})") from None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[Any]:
        try:
            yield self._connect()
        except self._psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self._conn = None
            raise StoreError(f"{self.url}: {doing} failed ({_first_line(exc)})") from None

    def _schema(self) -> None:
        if self._ready:
            return
        with self._errors("creating the queue's tables") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_SCHEMA)
        self._ready = True

    # -- producers -------------------------------------------------------------------------
    def enqueue(self, specs: Sequence[str], wanted: int | None = None) -> list[tuple[str, bool]]:
        """Queue each release once: (spec, True) when it is new, False when it was queued already."""
        if wanted is not None and wanted < 1:
            raise InputError(f"--attestations {wanted}: give at least 1")
        releases: dict[str, str] = {}
        for s in specs:
            releases.setdefault(release_of(s), s.strip())  # the first spelling of a release given twice
        self._schema()
        added = []
        with self._errors("enqueuing") as conn, conn.transaction():
            for release, spec in releases.items():
                cur = conn.execute(
                    "INSERT INTO detpack_rebuild_jobs (release, spec, wanted) VALUES (%s, %s, %s) "
                    "ON CONFLICT (release) DO NOTHING",
                    (release, spec, wanted),
                )
                added.append((spec, cur.rowcount == 1))
        return added

    # -- workers ---------------------------------------------------------------------------
    def claim(self, keyid: str, worker: str, lease: float) -> Claim | None:
        """Take the oldest job this key may take and nobody holds, with a lease of ``lease`` seconds."""
        self._schema()
        with self._errors("claiming a job") as conn, conn.transaction():
            row = conn.execute(_CLAIM, {"keyid": keyid}).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE detpack_rebuild_jobs SET claimed_by = %s, worker = %s, "
                "lease_until = now() + make_interval(secs => %s), claims = claims + 1, takeovers = takeovers + %s "
                "WHERE release = %s",
                (keyid, worker, lease, int(row[2] is not None), row[0]),
            )
        return Claim(str(row[0]), str(row[1]), keyid, worker, None if row[2] is None else str(row[2]))

    def renew(self, claim: Claim, lease: float) -> bool:
        """Extend the lease; False when this worker no longer holds it (it ran out and another took it)."""
        with self._errors("renewing a lease") as conn:
            cur = conn.execute(
                "UPDATE detpack_rebuild_jobs SET lease_until = now() + make_interval(secs => %s) "
                "WHERE release = %s AND claimed_by = %s AND worker = %s",
                (lease, claim.release, claim.keyid, claim.worker),
            )
        return bool(cur.rowcount == 1)

    def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Record the key's outcome and drop the lease, in one transaction; False when the key had one already."""
        if outcome.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {outcome.verdict!r}")
        with self._errors("recording an outcome") as conn, conn.transaction():
            cur = conn.execute(
                "INSERT INTO detpack_rebuild_outcomes (release, keyid, verdict, attestations, reason, worker) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (release, keyid) DO NOTHING",
                (claim.release, claim.keyid, outcome.verdict, list(outcome.attestations), outcome.reason, claim.worker),
            )
            self._drop(conn, claim)
        return bool(cur.rowcount == 1)

    def release(self, claim: Claim) -> None:
        """Give the job back unfinished (a worker stopped on purpose): others may take it at once."""
        with self._errors("releasing a lease") as conn:
            self._drop(conn, claim)

    @staticmethod
    def _drop(conn: Any, claim: Claim) -> None:
        conn.execute(
            "UPDATE detpack_rebuild_jobs SET claimed_by = NULL, worker = NULL, lease_until = NULL "
            "WHERE release = %s AND claimed_by = %s AND worker = %s",
            (claim.release, claim.keyid, claim.worker),
        )

    def remaining(self, keyid: str) -> Remaining:
        """What this key may still take: free now, or leased by another worker (it may yet be free)."""
        self._schema()
        with self._errors("reading the queue") as conn:
            row = conn.execute(_REMAINING, {"keyid": keyid}).fetchone()
        free, total = int(row[0]), int(row[1])
        return Remaining(free, total - free)

    # -- readers ---------------------------------------------------------------------------
    def status(self) -> list[JobState]:
        """Every job, its live lease and its outcomes, oldest first."""
        with self._errors("reading the queue") as conn:
            known = conn.execute("SELECT to_regclass('detpack_rebuild_jobs') IS NOT NULL").fetchone()
            if not (known and known[0]):
                return []
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                jobs = conn.execute(
                    "SELECT release, spec, wanted, enqueued, claims, takeovers, "
                    "CASE WHEN lease_until >= now() THEN claimed_by END, "
                    "CASE WHEN lease_until >= now() THEN worker END, "
                    "CASE WHEN lease_until >= now() THEN lease_until END "
                    "FROM detpack_rebuild_jobs ORDER BY seq"
                ).fetchall()
                rows = conn.execute(
                    "SELECT release, keyid, verdict, attestations, reason, worker, finished "
                    "FROM detpack_rebuild_outcomes ORDER BY finished, keyid"
                ).fetchall()
        outcomes: dict[str, list[Attested]] = {}
        for release, keyid, verdict, attestations, reason, worker, finished in rows:
            outcomes.setdefault(str(release), []).append(
                Attested(str(keyid), str(verdict), tuple(attestations), str(reason), str(worker), _time(finished))
            )
        return [
            JobState(
                str(release),
                str(spec),
                wanted,
                _time(enqueued),
                int(claims),
                int(takeovers),
                by,
                who,
                None if until is None else _time(until),
                tuple(outcomes.get(str(release), ())),
            )
            for release, spec, wanted, enqueued, claims, takeovers, by, who, until in jobs
        ]


def _time(value: Any) -> str:
    return str(value.isoformat(timespec="seconds")) if hasattr(value, "isoformat") else str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
