"""The dashboard: read-only pages of one store, rendered on the server (no JavaScript).

``Dashboard.handle(target)`` answers one GET (a path with its query string) with a
``Response``; ``bind`` puts it behind the standard library's threading HTTP server, bound to
127.0.0.1 unless told otherwise. Nothing here writes to the store.

The server answers only requests whose ``Host:`` is its own address (``host_allowed``: a DNS
rebinding page cannot read it), closes a connection silent for ``IDLE_TIMEOUT`` seconds, and
serves at most ``MAX_CONNECTIONS`` at once (each holds a thread; more are answered 503 at once).
Every value a page shows goes through ``wording.redact``: credentials in a store URL (a password,
a token, ``password=`` in its query) never reach a page or the request log.

The store is re-read when its log grows (checked at most every ``refresh`` seconds), and
audited (``verify_store``: every blob re-hashed, the tree recomputed, every checkpoint's
signature and consistency checked) in a background thread whenever the log it last audited
grew, and every ``reaudit`` seconds in any case (tampering need not grow the log); every page
carries the result, and a store that fails is shown as failing on every page.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jinja2
from markupsafe import Markup

from detpack.errors import DetpackError, InputError
from detpack.provenance import signing
from detpack.serve import closure, model
from detpack.store import witness
from detpack.store.audit import verify_store
from detpack.store.state import Item
from detpack.store.store import Store
from detpack.wording import redact

#: A query over the store's index: (requirement of a build dependency, requirement of a contained
#: wheel) -> (digest, why) pairs; None when no index is available.
Finder = Callable[[str, str], list[tuple[str, str]]]

#: Results shown on one search page (a query of the whole store can match thousands: `store query` lists them all).
SEARCH_LIMIT = 500
#: Seconds a connection may stay silent (waiting for its request, or within it) before it is closed.
IDLE_TIMEOUT = 10.0
#: Connections served at once (each holds a thread); more are answered 503 and closed.
MAX_CONNECTIONS = 64

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _redacted(text: str) -> str:
    """``text`` with credentials in URLs hidden, word by word (its spacing kept)."""
    return re.sub(r"\S+", lambda m: redact(m.group()), text)


def _shown(value: object) -> object:
    """What a template shows of ``value`` (Jinja's ``finalize``): strings redacted; in markup rendered
    already (a macro's, ``join``'s), the text between tags."""
    if isinstance(value, Markup):
        parts = re.split(r"(<[^>]*>)", str(value))
        return Markup("".join(p if i % 2 else _redacted(p) for i, p in enumerate(parts)))  # noqa: S704 - markup already
    return _redacted(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Verification:
    """The latest audit of the store, as pages show it."""

    state: str  # "pending", "ok" or "bad"
    size: int = 0  # the log size it checked
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    entries: int = 0
    checkpoints: int = 0
    blobs: int = 0
    keyid: str | None = None
    key_source: str = ""
    checked_at: str = ""


@dataclass(frozen=True)
class Result:
    item: Item
    why: str


@dataclass
class Dashboard:
    store: Store
    #: The store's public key to audit with (else the key it publishes, which proves less).
    store_key: signing.PublicKey | None = None
    #: Builders' keys: a provenance signature that verifies with one of them is shown as verified.
    trusted: Sequence[signing.PublicKey] = ()
    refresh: float = 2.0
    #: Audit again after this many seconds even if the log has not grown (tampering does not grow it).
    reaudit: float = 60.0
    finder: Finder | None = None
    _snapshot: model.Snapshot | None = field(default=None, init=False)
    _checked_at: float = field(default=0.0, init=False)
    _seen_checkpoints: int = field(default=-1, init=False)
    _audited_at: float = field(default=0.0, init=False)
    _verification: Verification = field(default_factory=lambda: Verification("pending"), init=False)
    _verifying: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _env: jinja2.Environment = field(init=False)
    _reports: closure.Reports = field(init=False)

    def __post_init__(self) -> None:
        self._reports = closure.Reports(self.store)
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("detpack.serve", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_shown,
        )

    # -- the store, as of its latest checkpoint -------------------------------------------
    def snapshot(self) -> model.Snapshot:
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._checked_at >= self.refresh:
                self._checked_at = now
                count = len(self.store.backend.read_log("checkpoints").items)
                if self._snapshot is None or count != self._seen_checkpoints:
                    self._snapshot = model.Snapshot.read(self.store)
                    self._seen_checkpoints = count
            snap = self._snapshot
            stale = (
                self._verification.state == "pending"
                or self._verification.size != snap.size
                or now - self._audited_at >= self.reaudit
            )
            if not self._verifying and stale:
                self._audited_at = now
                self._verifying = True
                threading.Thread(target=self._verify, args=(snap.size,), daemon=True).start()
            return snap

    def _verify(self, size: int) -> None:
        try:
            trusted = self.store.trust or self.store.trusted  # given, else the key as pinned when pages were read
            key = self.store_key or (trusted.key if trusted is not None else None)
            audit = verify_store(self.store.backend, key)
            result = Verification(
                "ok" if audit.ok else "bad",
                audit.entries if audit.ok else size,
                audit.problems,
                audit.notes,
                audit.entries,
                audit.checkpoints,
                audit.blobs,
                audit.keyid,
                "the key given to the server"
                if self.store_key or self.store.trust is not None
                else "the store's key, as pinned at first use",
                dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        except DetpackError as exc:
            result = Verification("bad", size, (exc.message,), checked_at=dt.datetime.now(dt.UTC).isoformat())
        with self._lock:
            self._verification = result
            self._verifying = False

    def verification(self, wait: float = 0.0) -> Verification:
        """The latest audit; ``wait``: seconds to wait for a running one first (one is started if none has been)."""
        if self._snapshot is None:
            try:
                self.snapshot()
            except DetpackError as exc:  # a store that cannot be believed: shown as failing, with the reason
                self._verification = Verification("bad", 0, (exc.message,))
                return self._verification
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                if not self._verifying or time.monotonic() >= deadline:
                    return self._verification
            time.sleep(0.02)

    # -- pages ----------------------------------------------------------------------------
    def _render(self, template: str, status: int = 200, **values: Any) -> Response:
        snap = values.pop("snap", None) or self._snapshot
        page = self._env.get_template(template).render(
            store_url=self.store.backend.url,
            verification=self._verification,
            snapshot_size=snap.size if snap else 0,
            distrusted=snap.distrusted if snap else (),
            **values,
        )
        return Response(status, page.encode("utf-8"))

    def _error(self, status: int, title: str, message: str) -> Response:
        return self._render("error.html", status, title=title, message=message)

    def handle(self, target: str) -> Response:
        """Answer ``GET target``."""
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = unquote(parts.path)
        try:
            snap = self.snapshot()
        except DetpackError as exc:
            self._verification = Verification("bad", 0, (exc.message,))
            return self._error(503, "The store cannot be read", exc.message)
        try:
            if path == "/":
                return self._home(snap)
            if path.startswith("/env/"):
                return self._environment(snap, path.removeprefix("/env/"), query.get("at", ""))
            if path.startswith("/item/"):
                return self._item(snap, path.removeprefix("/item/"))
            if path == "/log":
                return self._log(snap, query.get("page", "1"))
            if path == "/search":
                return self._search(snap, query)
            if path == "/verify":
                return self._render("verify.html", title="Verification")
            if path.startswith(("/closure/", "/dependency/")):
                template, values = closure.page(self._reports, snap, path, query)
                return self._render(template, snap=snap, **values)
        except DetpackError as exc:
            return self._error(404, "Not found", exc.message)
        return self._error(404, "Not found", f"{path}: no such page")

    def _home(self, snap: model.Snapshot) -> Response:
        recent = snap.artifacts_newest_first[:20]
        return self._render(
            "home.html",
            title="Environments",
            live=model.environments(snap),
            recent=recent,
            checkpoint=snap.checkpoint,
            snap=snap,
            **closure.home_values(self._reports, snap),
        )

    def _names_of(self, snap: model.Snapshot) -> Callable[[str], str]:
        def names(digest: str) -> str:
            item = snap.state.items.get(digest)
            return ", ".join(item.names) if item else ""

        return names

    def _environment(self, snap: model.Snapshot, env: str, at: str) -> Response:
        promotions = model.history(snap, env)
        if not promotions:
            return self._error(404, "Not found", f"{env}: nothing has been promoted to this environment")
        at_promotion = None
        if at:
            from detpack.store.query import moment

            try:
                when = moment(at, "at")
            except DetpackError as exc:
                return self._error(400, "Bad time", exc.message)
            at_promotion = model.at_time(snap, env, when)
        return self._render(
            "env.html",
            title=f"Environment {env}",
            env=env,
            promotions=promotions,
            at=at,
            at_promotion=at_promotion,
            names_of=self._names_of(snap),
            snap=snap,
        )

    def _item(self, snap: model.Snapshot, ref: str) -> Response:
        item = self.store.find(snap.state, ref)
        inclusion, inclusion_error = snap.inclusion(item), ""
        if inclusion is None:
            inclusion_error = "no signed checkpoint covers it"
        elif not inclusion.checks:
            inclusion, inclusion_error = None, "its inclusion proof does not check against the signed checkpoint"
        return self._render(
            "item.html",
            title=item.names[0] if item.names else item.digest[:16],
            item=item,
            inclusion=inclusion,
            inclusion_error=inclusion_error,
            live_in=sorted(env for env, d in snap.state.live_in().items() if d == item.digest),
            promotions=[p for p in snap.state.promotions if p.digest == item.digest],
            lineage=model.lineage(self.store, snap, item, self.trusted),
            signers=self._signers(item),
            trusting=bool(self.trusted),
            log_page=(snap.size - item.index - 1) // 100 + 1,
            snap=snap,
            parts=model.image_parts(snap.state, item),
            **closure.item_values(self._reports, snap, item),
        )

    def _signers(self, item: Item) -> model.Signers | None:
        """For a signed envelope: which keyids it claims a --trust'ed key verifies (None: no keyids)."""
        if not item.signed_by:
            return None
        try:
            envelope = self.store.read_provenance(item).envelope
        except DetpackError:
            envelope = None  # unreadable: every keyid stays claimed (the audit names a changed blob)
        return model.signers(envelope, self.trusted, item.signed_by)

    def _log(self, snap: model.Snapshot, page: str) -> Response:
        number = int(page) if page.isdigit() else 1
        cosigners: list[str] = []
        if snap.checkpoint is not None:
            cp = snap.checkpoint
            held = witness.cosignatures(self.store.backend)
            cosigners = sorted({c.signature.name for c in held if (c.size, c.root) == (cp.size, cp.root)})
        return self._render(
            "log.html",
            title="The log",
            page=model.log_page(snap, number),
            checkpoint=snap.checkpoint,
            cosigners=cosigners,
            snap=snap,
        )

    def _search(self, snap: model.Snapshot, query: dict[str, str]) -> Response:
        q, dep, contains = query.get("q", "").strip(), query.get("dep", "").strip(), query.get("contains", "").strip()
        if q.startswith("dep:"):
            dep, q = q.removeprefix("dep:").strip(), ""
        elif q.startswith("contains:"):
            contains, q = q.removeprefix("contains:").strip(), ""
        results: list[Result] = []
        error = ""
        if q:
            results = [Result(i, "digest" if i.digest.startswith(q.lower().removeprefix("sha256:")) else "name")
                       for i in model.search(snap, q)]  # fmt: skip
        if dep or contains:
            if self.finder is None:
                error = "no query index: dependency searches need one (detpack store serve builds it)"
            else:
                try:
                    hits = self.finder(dep, contains)
                except DetpackError as exc:
                    error = exc.message
                else:
                    found = {r.item.digest for r in results}
                    results += [
                        Result(snap.state.items[d], why) for d, why in hits if d in snap.state.items and d not in found
                    ]
        total = len(results)
        return self._render(
            "search.html",
            title="Search",
            total=total,
            query=q,
            dep=dep,
            contains=contains,
            results=results[:SEARCH_LIMIT],
            searched=bool(q or dep or contains),
            error=error,
            index_available=self.finder is not None,
            snap=snap,
        )


def index_finder(store: Store) -> Finder:
    """Dependency and contents searches over the store's query index (``store query``'s), brought up
    to date with the log on each search."""
    from detpack.store import query
    from detpack.store.index import open_index

    def find(dep: str, contains: str) -> list[tuple[str, str]]:
        wanted = query.Query.parse(dep=[dep] if dep else [], contains=[contains] if contains else [])
        with open_index(store) as index:
            matches = query.query(index, wanted)
        return [(m.digest, "; ".join(f"{f.filter}: {f.value}" for f in m.facts)) for m in matches]

    return find


def host_allowed(header: str, bound: str, port: int) -> bool:
    """Whether a ``Host:`` header names a server bound to (``bound``, ``port``). DNS rebinding points a
    name the attacker controls at this address, so names are refused: only the bound address itself
    (on loopback also 127.0.0.1, [::1] and localhost); bound to every address (0.0.0.0, ::), any IP
    literal (no rebinding forges one) and localhost. The port must match (none given: 80)."""
    host = header.strip().lower()
    if host.startswith("["):  # [IPv6] or [IPv6]:PORT
        name, _, rest = host[1:].partition("]")
        if rest and not rest.startswith(":"):
            return False
        given = rest[1:]
    else:
        name, _, given = host.partition(":")
    if (given or "80") != str(port):
        return False
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(name)
    own = ipaddress.ip_address(bound)
    if name == "localhost":
        return own.is_loopback or own.is_unspecified
    if own.is_unspecified:
        return address is not None
    return address == own or (own.is_loopback and address in _LOOPBACK)


_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_BUSY_BODY = b"busy: too many connections\n"
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n" + (
    b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%b" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_timeout)  # a silent client loses its connection
        super().setup()

    def _misdirected(self) -> bool:
        """Refuse (421, one line) a request that does not name this server in its one ``Host:``."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) == 1 and host_allowed(hosts[0], *self.server.bound):
            return False
        host, port = self.server.bound
        message = f"misdirected request: this dashboard answers to {f'[{host}]' if ':' in host else host}:{port} only\n"
        self.close_connection = True
        self._send(
            Response(HTTPStatus.MISDIRECTED_REQUEST, message.encode(), "text/plain"), body=self.command != "HEAD"
        )
        return True

    def _answer(self) -> Response:
        try:
            return self.server.dashboard.handle(self.path)
        except Exception as exc:  # noqa: BLE001 - one failing page must not take the server down
            self.log_message("internal error on %s: %s: %s", self.path, type(exc).__name__, exc)
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", "text/plain")

    def do_GET(self) -> None:
        if not self._misdirected():
            self._send(self._answer(), body=True)

    def do_HEAD(self) -> None:
        if not self._misdirected():
            self._send(self._answer(), body=False)

    def _refuse(self) -> None:
        if not self._misdirected():
            self._send(Response(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain"), body=True, allow=True)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _send(self, response: Response, *, body: bool, allow: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in _HEADERS.items():
            self.send_header(key, value)
        if allow:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.on_request is not None:
            self.server.on_request(_redacted(format % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: concurrent clients wait in it, not in SYN retries

    def __init__(self, address: tuple[str, int], dashboard: Dashboard, on_request: Callable[[str], None] | None,
                 idle_timeout: float, max_connections: int) -> None:  # fmt: skip
        if idle_timeout <= 0 or max_connections < 1:
            raise InputError(f"idle timeout {idle_timeout}, {max_connections} connections: both must be more than 0")
        self.dashboard, self.on_request, self.idle_timeout = dashboard, on_request, idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.bound: tuple[str, int] = self.socket.getsockname()[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # at the cap: 503 from this loop, never blocking
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
                request.recv(65536)  # what it sent already: closing with unread bytes would reset the connection
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread was started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (a client gone, a write timed out): one line, never a traceback."""
        if self.on_request is not None:
            exc = sys.exc_info()[1]
            self.on_request(_redacted(f"{client_address[0]}: connection failed ({type(exc).__name__}: {exc})"))


def bind(dashboard: Dashboard, host: str = "127.0.0.1", port: int = 0, on_request: Callable[[str], None] | None = None,
         *, idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> _Server:  # fmt: skip
    """A server for ``dashboard`` bound to (host, port) (port 0: any free one); call ``serve_forever``."""
    return _Server((host, port), dashboard, on_request, idle_timeout, max_connections)
