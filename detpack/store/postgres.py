"""The PostgreSQL backend: names, log records and the key in a database; blobs beside it.

URL: ``postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE?blobs=BLOBS`` (any other query
parameter, such as ``sslmode``, goes to the driver; ``postgres://`` works too). BLOBS is where
the content-addressed blobs live: a directory, or an OCI registry repository ``oci://HOST/REPO``.
A blob is written (and checked against its digest) before the transaction that logs or names
it, so a name or a log entry never points at a blob that is not there yet. One database holds
one store.

Tables::

    detpack_log(stream, idx, record)        primary key (stream, idx): no duplicate record
    detpack_length(stream, length, truncations)
                                            the commit point of each stream; an append
                                            locks this row (FOR UPDATE), checks that the
                                            stream is exactly ``idx`` long, inserts the record
                                            and moves the length in one transaction, so
                                            concurrent writers on any number of machines
                                            never leave a gap or a duplicate
    detpack_names(name, digest)             primary key (name): a name is bound once
    detpack_key(singleton, pem)             the store's public key, published once

Writers are serialised across machines by a session advisory lock (``lock()``): the database
releases it when a writer's connection ends, so a killed writer never leaves the store locked.
A writer killed mid-transaction leaves nothing (the transaction is rolled back); between the
entry and its checkpoint it leaves an entry past the last checkpoint, which the next writer
truncates (``log.truncate_unsigned``), as on the other backends. A writer caches the records it has read:
its next read fetches only the records past them, unless the stream was truncated since. (A
record changed in the table behind the store's back is then not seen by that writer, but the
checkpoint it signs covers the records as they were, so ``store verify`` still names the change.)
A process that never takes the writer lock reads every record afresh, so an auditor or a
long-running dashboard sees the table as it is.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from detpack.errors import StoreError, StoreRefusedError
from detpack.store.backend import Backend, Records, Stream, already_bound, checked_digest, checked_name
from detpack.wording import redact, redact_params

#: The advisory lock of writers (an arbitrary 64-bit constant: "detpack" in ASCII).
_WRITER_LOCK = 0x6465747061636B
#: Taken (per transaction) while the tables are created, so that first writers do not race.
_SCHEMA_LOCK = _WRITER_LOCK + 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS detpack_length (
    stream text PRIMARY KEY CHECK (stream IN ('entries', 'checkpoints', 'cosignatures')),
    length bigint NOT NULL CHECK (length >= 0),
    truncations bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS detpack_log (
    stream text NOT NULL REFERENCES detpack_length (stream),
    idx bigint NOT NULL CHECK (idx >= 0),
    record bytea NOT NULL CHECK (position('\\x0a'::bytea in record) = 0),
    PRIMARY KEY (stream, idx)
);
CREATE TABLE IF NOT EXISTS detpack_names (
    name text PRIMARY KEY,
    digest text NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$')
);
CREATE TABLE IF NOT EXISTS detpack_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pem bytea NOT NULL
);
INSERT INTO detpack_length (stream, length) VALUES ('entries', 0), ('checkpoints', 0), ('cosignatures', 0)
    ON CONFLICT DO NOTHING;
"""


def split_url(url: str) -> tuple[str, str, str]:
    """(the driver's connection string, the blobs URL, the URL for messages: no password)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    blobs = [v for k, v in query if k == "blobs"]
    if len(blobs) != 1 or not blobs[0]:
        raise StoreError(
            f"{redact(url)}: a PostgreSQL store needs one ?blobs=DIRECTORY or ?blobs=oci://HOST/REPO for its blobs"
        )
    if not parts.path.strip("/"):
        raise StoreError(f"{redact(url)}: name the database (postgresql://USER@HOST:PORT/DATABASE?blobs=…)")
    rest = urlencode([(k, v) for k, v in query if k != "blobs"])
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, rest, ""))
    shown_netloc = parts.netloc
    if parts.password is not None:
        shown_netloc = shown_netloc.replace(f":{parts.password}@", ":***@", 1)
    shown = redact_params(urlunsplit((parts.scheme, shown_netloc, parts.path, urlencode(query, safe="/:"), "")))
    return conninfo, blobs[0], shown


def driver(url: str) -> Any:
    """The psycopg module: an optional dependency (``detpack[postgresql]``), named in one line when missing."""
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            f"{url}: a PostgreSQL store needs psycopg 3, which this installation of detpack lacks; install it "
            "with pip install 'detpack[postgresql]' (pipx: pipx inject detpack 'psycopg[binary]'; "
            "uv tool: uv tool install 'detpack[postgresql]')"
        ) from None
    return psycopg


class PostgresBackend:
    """A store in a PostgreSQL database, its blobs in ``blobs`` (see the module docstring)."""

    def __init__(self, url: str, blobs: Backend) -> None:
        self.conninfo, _, self.url = split_url(url)
        driver(self.url)  # refused when opened, in one line, not at the first query
        self.blobs = blobs
        self._conn: Any = None
        self._schema_ready = False
        #: stream -> (truncations seen, records read so far); kept once this process has written
        self._cache: dict[str, tuple[int, list[bytes]]] = {}
        self._writer = False
        self._mutex = threading.RLock()

    # -- the connection -------------------------------------------------------------------
    def _connect(self) -> Any:
        psycopg = driver(self.url)

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"{self.url}: cannot connect to the database ({_first_line(exc)})") from None
        return self._conn

    def close(self) -> None:
        """Close the connection (a long-lived reader's; a process's is closed when it exits)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """One use of the connection (one thread at a time: a dashboard reads from several), its
        database errors as one line naming the store and what was being done."""
        psycopg = driver(self.url)

        try:
            with self._mutex:
                yield
        except psycopg.errors.UndefinedTable:
            raise StoreError(f"{self.url}: the database has no detpack tables (is this a detpack store?)") from None
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self._conn = None
            raise StoreError(f"{self.url}: {doing} failed ({_first_line(exc)})") from None

    def _has_schema(self) -> bool:
        if not self._schema_ready:
            with self._errors("reading the store"):
                row = self._connect().execute("SELECT to_regclass('detpack_length') IS NOT NULL").fetchone()
            self._schema_ready = bool(row and row[0])
        return self._schema_ready

    def _create_schema(self) -> None:
        if self._has_schema():
            return
        with self._errors("creating the store's tables"):
            conn = self._connect()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_SCHEMA)
        self._schema_ready = True

    # -- writers --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._errors("taking the store's writer lock"):
            conn = self._connect()
            conn.execute("SELECT pg_advisory_lock(%s)", (_WRITER_LOCK,))
        self._writer = True
        try:
            self._create_schema()
            yield
        finally:
            with self._mutex:
                conn = self._conn
                if conn is not None and not conn.closed and not conn.broken:
                    with contextlib.suppress(Exception):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (_WRITER_LOCK,))

    # -- blobs: in the blob store, written before any transaction names them ---------------
    def has_blob(self, digest: str) -> bool:
        return self.blobs.has_blob(digest)

    def put_blob(self, digest: str, source: Path) -> bool:
        return self.blobs.put_blob(digest, source)

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self.blobs.open_blob(digest)

    def list_blobs(self) -> Iterator[str]:
        return self.blobs.list_blobs()

    def retire_blob(self, digest: str) -> None:
        self.blobs.retire_blob(digest)

    # -- names ----------------------------------------------------------------------------
    def get_name(self, name: str) -> str | None:
        if not self._has_schema():
            return None
        with self._errors(f"reading name {name}"):
            row = self._connect().execute("SELECT digest FROM detpack_names WHERE name = %s", (name,)).fetchone()
        return None if row is None else str(row[0])

    def bind_name(self, name: str, digest: str) -> None:
        checked_name(name, self.url)  # refused as the other backends refuse it, though a row is no path
        checked_digest(digest)
        if already_bound(name, self.get_name(name), digest, self.url):
            return
        self._create_schema()
        with self._errors(f"binding name {name}"):
            conn = self._connect()
            conn.execute(
                "INSERT INTO detpack_names (name, digest) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (name, digest)
            )
        if self.get_name(name) != digest:
            raise StoreRefusedError(f"{name}: was bound by another writer in {self.url}; names are write-once")

    def list_names(self) -> dict[str, str]:
        if not self._has_schema():
            return {}
        with self._errors("listing names"):
            rows = self._connect().execute("SELECT name, digest FROM detpack_names ORDER BY name").fetchall()
        return {str(name): str(digest) for name, digest in rows}

    # -- log ------------------------------------------------------------------------------
    def read_log(self, stream: Stream) -> Records:
        if not self._has_schema():
            return Records(())
        truncations, cached = self._cache.get(stream, (-1, [])) if self._writer else (-1, [])
        with self._errors(f"reading the {stream} log"):
            conn = self._connect()
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = conn.execute(
                    "SELECT length, truncations FROM detpack_length WHERE stream = %s", (stream,)
                ).fetchone()
                length, now = (0, 0) if row is None else (int(row[0]), int(row[1]))
                if now != truncations or len(cached) > length:
                    cached = []
                rows = conn.execute(
                    "SELECT idx, record FROM detpack_log WHERE stream = %s AND idx >= %s AND idx < %s ORDER BY idx",
                    (stream, len(cached), length),
                ).fetchall()
        records = list(cached)
        for idx, record in rows:
            if idx != len(records):
                raise StoreError(f"{self.url}: log record {stream} #{len(records)} is missing; the store is damaged")
            records.append(bytes(record))
        if len(records) != length:
            raise StoreError(f"{self.url}: log {stream} should have {length} records, has {len(records)}; damaged")
        if self._writer:
            self._cache[stream] = (now, records)
        return Records(tuple(records))

    def append_log(self, stream: Stream, index: int, record: bytes) -> None:
        if b"\n" in record:
            raise ValueError("a log record cannot contain a newline")
        self._create_schema()
        with self._errors(f"appending to the {stream} log"):
            conn = self._connect()
            with conn.transaction():
                row = conn.execute(
                    "SELECT length FROM detpack_length WHERE stream = %s FOR UPDATE", (stream,)
                ).fetchone()
                length = 0 if row is None else int(row[0])
                if length != index:
                    raise StoreError(
                        f"{self.url}: log {stream} has {length} records, expected {index} "
                        "(written outside the store's lock?)"
                    )
                conn.execute(
                    "INSERT INTO detpack_log (stream, idx, record) VALUES (%s, %s, %s)", (stream, index, record)
                )
                conn.execute("UPDATE detpack_length SET length = %s WHERE stream = %s", (index + 1, stream))

    def truncate_log(self, stream: Stream, count: int) -> None:
        if not self._has_schema():
            return
        with self._errors(f"truncating the {stream} log"):
            conn = self._connect()
            with conn.transaction():
                row = conn.execute(
                    "SELECT length FROM detpack_length WHERE stream = %s FOR UPDATE", (stream,)
                ).fetchone()
                if row is None or int(row[0]) <= count:
                    return
                conn.execute("DELETE FROM detpack_log WHERE stream = %s AND idx >= %s", (stream, count))
                conn.execute(
                    "UPDATE detpack_length SET length = %s, truncations = truncations + 1 WHERE stream = %s",
                    (count, stream),
                )

    # -- the store's key ------------------------------------------------------------------
    def read_public_key(self) -> bytes | None:
        if not self._has_schema():
            return None
        with self._errors("reading the store's public key"):
            row = self._connect().execute("SELECT pem FROM detpack_key").fetchone()
        return None if row is None else bytes(row[0])

    def publish_public_key(self, pem: bytes) -> None:
        existing = self.read_public_key()
        if existing == pem:
            return
        if existing is None:
            self._create_schema()
            with self._errors("publishing the store's public key"):
                self._connect().execute("INSERT INTO detpack_key (pem) VALUES (%s) ON CONFLICT DO NOTHING", (pem,))
            existing = self.read_public_key()
        if existing != pem:
            raise StoreRefusedError(f"{self.url}: another public key is already published for this store")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
