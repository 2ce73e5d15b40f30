"""`detpack store serve`'s small doors (issue 34, part 3), each against a real server on 127.0.0.1 over
real sockets: a foreign ``Host:`` (DNS rebinding) is refused; idle connections time out and handler
threads are capped; credentials in a store URL are never shown; a provenance signer is "verified"
only when a --trust'ed key verifies the envelope, else "claimed, not verified"."""

from __future__ import annotations

import html
import http.client
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from test_store import isolated_home  # noqa: F401 - the fixture

from conftest import DETPACK, Postgres, sha256
from detpack.digest import canonical_json
from detpack.provenance import signing
from detpack.provenance.reader import PAYLOAD_TYPE, Envelope, Signature
from detpack.serve import Dashboard, bind
from detpack.store import open_store
from detpack.store.postgres import PostgresBackend
from detpack.store.store import Store

pytestmark = pytest.mark.integration


def _statement(artifact: Path) -> bytes:
    return canonical_json(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": artifact.name, "digest": {"sha256": sha256(artifact)}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"runDetails": {"builder": {"id": "https://detpack.dev/builders/local/v1"}}},
        }
    )


def _push(
    store: Store, directory: Path, name: str, signatures: list[tuple[signing.PrivateKey, bool]]
) -> dict[str, str]:
    """Push wheel ``name`` with an envelope carrying one signature per (key, genuine): a genuine one
    by the key, or garbage bytes under the key's keyid. Returns the wheel's and the envelope's digests."""
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    wheel.write_bytes(f"wheel {name}".encode())
    payload = _statement(wheel)
    message = signing.pae(PAYLOAD_TYPE, payload)
    sigs = tuple(Signature(k.public.keyid, k.sign(message) if genuine else bytes(64)) for k, genuine in signatures)
    envelope = directory / f"{name}.intoto.jsonl"
    envelope.write_bytes(Envelope(payload, PAYLOAD_TYPE, sigs).to_json())
    store.push([wheel], envelope)
    return {"wheel": sha256(wheel), "envelope": sha256(envelope)}


def _start(dashboard: Dashboard, idle_timeout: float = 0, max_connections: int = 1) -> tuple[int, ThreadingHTTPServer]:
    """``dashboard`` served on a free port of 127.0.0.1, in this process (no idle_timeout: ``bind``'s limits)."""
    limited = idle_timeout > 0  # on the code before the fix, bind took no limits
    server = bind(dashboard, idle_timeout=idle_timeout, max_connections=max_connections) if limited else bind(dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_port, server


def _stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[tuple[int, Dashboard]]:
    """A small directory store (one pushed wheel) served on a free port of 127.0.0.1."""
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "in").mkdir()
    _push(store, tmp_path / "in", "plain", [])
    dashboard = Dashboard(store)
    port, server = _start(dashboard)
    try:
        yield port, dashboard
    finally:
        _stop(server)


def _request(port: int, path: str, host: str | None, method: str = "GET") -> tuple[int, bytes]:
    """One request with exactly the ``Host:`` given (None: no Host header at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _drain(s: socket.socket) -> bytes:
    """Everything the server sends on ``s`` until it closes it."""
    return b"".join(iter(lambda: s.recv(65536), b""))


def _text(page: bytes) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.decode("utf-8"))))


# -- 1. DNS rebinding -------------------------------------------------------------------------


def test_a_foreign_host_header_is_refused(plain: tuple[int, Dashboard]) -> None:
    port, _ = plain
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        status, body = _request(port, "/", host)
        assert status == 200 and b"plain-1.0-py3-none-any.whl" in body, (host, status)
    foreign = [f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", f"localhost:{port + 1}",
               "127.0.0.1", f"127.0.0.1:{port}@evil.example", ""]  # fmt: skip
    for host in foreign:
        for method in ("GET", "HEAD", "POST"):
            status, body = _request(port, "/", host, method)
            assert status in (400, 421), (host, method, status)
            assert b"plain" not in body and b"<html" not in body and len(body) < 300, (host, body)
    status, body = _request(port, "/log", None)  # no Host at all: refused as well
    assert status in (400, 421) and b"<html" not in body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # HTTP/1.0 without a Host
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = _drain(s)
    assert re.match(rb"HTTP/1\.[01] (400|421) ", answer) and b"<html" not in answer, answer[:200]


def test_the_host_rule_for_an_address_other_than_loopback() -> None:
    """Bound to one address: only that address (with its port); bound to every address (0.0.0.0, ::):
    any IP literal with the port (a rebinding attack needs a DNS name), never a name but localhost."""
    from detpack.serve.app import host_allowed

    assert host_allowed("192.0.2.10:8321", "192.0.2.10", 8321)
    for wrong in ("127.0.0.1:8321", "localhost:8321", "192.0.2.10:8322", "192.0.2.10", "evil.example:8321"):
        assert not host_allowed(wrong, "192.0.2.10", 8321), wrong
    assert host_allowed("192.0.2.10", "192.0.2.10", 80) and host_allowed("[2001:db8::1]:80", "2001:db8::1", 80)
    assert host_allowed("[2001:db8::1]:8321", "2001:db8:0::1", 8321)
    for host in ("192.0.2.10:8321", "[2001:db8::1]:8321", "localhost:8321", "127.0.0.1:8321"):
        assert host_allowed(host, "0.0.0.0", 8321) and host_allowed(host, "::", 8321), host
    for wrong in ("evil.example:8321", "192.0.2.10:8322", "192.0.2.10", "1.2.3.4.nip.io:8321"):
        assert not host_allowed(wrong, "0.0.0.0", 8321), wrong


# -- 2. slowloris -----------------------------------------------------------------------------


def test_idle_connections_are_closed_and_handler_threads_are_capped(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "in").mkdir()
    _push(store, tmp_path / "in", "idle", [])
    dashboard = Dashboard(store)
    dashboard.verification(wait=60)
    cap, timeout = 4, 1.0
    port, server = _start(dashboard, idle_timeout=timeout, max_connections=cap)
    threads_before = threading.active_count()
    idle: list[socket.socket] = []
    try:
        opened = time.monotonic()
        for _ in range(cap + 6):  # connect and send nothing
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.3)
        assert threading.active_count() - threads_before <= cap, threading.active_count() - threads_before
        # a normal client is answered within a few seconds (turned away at once while the cap is held)
        deadline, status = time.monotonic() + timeout + 4, 0
        while time.monotonic() < deadline:
            try:
                status, body = _request(port, "/", f"127.0.0.1:{port}")
            except ConnectionError:  # turned away before the request was read
                status, body = 0, b""
            if status == 200:
                break
            assert status in (0, 503) and len(body) < 200, (status, body[:200])
            time.sleep(0.1)
        assert status == 200
        assert time.monotonic() - opened < timeout + 4
        # every idle socket is closed by the server: the first ones after the timeout, silently;
        # those past the cap at once, with a 503
        answers = []
        for s in idle:
            s.settimeout(timeout + 5)
            answers.append(_drain(s))
        assert time.monotonic() - opened < timeout + 6
        assert answers[:cap] == [b""] * cap, answers[:cap]
        assert all(a.startswith(b"HTTP/1.0 503 ") for a in answers[cap:]), answers[cap:]
    finally:
        for s in idle:
            s.close()
        _stop(server)


def test_the_defaults_are_a_timeout_and_a_cap() -> None:
    from detpack.serve.app import IDLE_TIMEOUT, MAX_CONNECTIONS

    assert 0 < IDLE_TIMEOUT <= 30 and 0 < MAX_CONNECTIONS <= 256


# -- 3. credentials in URLs -------------------------------------------------------------------


def _close(store: Store) -> None:
    assert isinstance(store.backend, PostgresBackend)
    store.backend.close()


_USERINFO_SECRET = "Userinfo5ecret"
_QUERY_SECRET = "Query5ecret"


def test_credentials_in_the_store_url_are_never_shown(tmp_path: Path, postgres: Postgres) -> None:
    """A real PostgreSQL store opened with a password in the userinfo and in the query (the test server
    trusts 127.0.0.1, so both are accepted and ignored): no page, error page or CLI line shows either."""
    plain_url = postgres.createdb("servedoors")
    url = (plain_url.replace("detpack@", f"detpack:{_USERINFO_SECRET}@")
           + f"?blobs={tmp_path / 'blobs'}&password={_QUERY_SECRET}&sslmode=disable")  # fmt: skip
    store = open_store(url)
    (tmp_path / "in").mkdir()
    pushed = _push(store, tmp_path / "in", "creds", [])
    dashboard = Dashboard(store, refresh=0.05)
    port, server = _start(dashboard)
    host = f"127.0.0.1:{port}"
    try:
        dashboard.verification(wait=60)
        pages = {}
        for path in ("/", "/log", "/verify", "/search?q=creds", f"/item/sha256:{pushed['wheel']}", "/nope",
                     "/env/prod"):  # fmt: skip
            status, body = _request(port, path, host)
            pages[path] = (status, body)
        assert pages["/"][0] == 200 and pages["/nope"][0] == 404 and pages["/env/prod"][0] == 404
        for path, (_, body) in pages.items():
            assert _USERINFO_SECRET.encode() not in body and _QUERY_SECRET.encode() not in body, path
        header = _text(pages["/"][1])
        assert "password=***" in header and "***@127.0.0.1" in header, header[:600]
        # the store fails to read: the error page names the store, redacted
        postgres.psql("servedoors", "DROP TABLE detpack_log")
        time.sleep(0.1)
        status, body = _request(port, "/", host)
        assert status == 503 and b"password=***" in body, body[:2000]
        assert _USERINFO_SECRET.encode() not in body and _QUERY_SECRET.encode() not in body
    finally:
        _stop(server)
        _close(store)
    # the CLI's "serving …" line and its request log
    url = url.replace("/servedoors?", "/servedoors2?")
    postgres.createdb("servedoors2")
    store = open_store(url)
    _push(store, tmp_path / "in", "again", [])
    _close(store)
    proc = subprocess.Popen([DETPACK, "store", "--store", url, "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"at http://127\.0\.0\.1:(\d+)/ \(read-only", line)
        assert found, line
        _request(int(found.group(1)), f"/search?q=x&password={_QUERY_SECRET}", f"127.0.0.1:{found.group(1)}")
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "password=***" in line and "***@127.0.0.1" in line, line
    for text in (line, stdout, stderr):
        assert _USERINFO_SECRET not in text and _QUERY_SECRET not in text, text


# -- 4. signers -------------------------------------------------------------------------------


@pytest.fixture
def signed(tmp_path: Path) -> dict[str, object]:
    """A store holding three wheels: one signed by trusted key A, one whose envelope carries garbage
    under A's keyid, one signed by A and carrying garbage under trusted key B's keyid."""
    a, b = signing.PrivateKey.generate(), signing.PrivateKey.generate()
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "in").mkdir()
    return {
        "store": store,
        "a": a.public,
        "b": b.public,
        "good": _push(store, tmp_path / "in", "good", [(a, True)]),
        "forged": _push(store, tmp_path / "in", "forged", [(a, False)]),
        "mixed": _push(store, tmp_path / "in", "mixed", [(a, True), (b, False)]),
    }


def _page(port: int, path: str) -> str:
    status, body = _request(port, path, f"127.0.0.1:{port}")
    assert status == 200, (path, status)
    return _text(body)


def test_a_signer_is_verified_only_by_a_trusted_key(signed: dict[str, object]) -> None:
    a, b = signed["a"], signed["b"]
    assert isinstance(a, signing.PublicKey) and isinstance(b, signing.PublicKey)
    good, forged, mixed = (signed[k] for k in ("good", "forged", "mixed"))
    assert isinstance(good, dict) and isinstance(forged, dict) and isinstance(mixed, dict)
    store = signed["store"]
    assert isinstance(store, Store)
    port, server = _start(Dashboard(store, trusted=[a, b]))
    try:
        # the envelope's own page: each keyid verified or claimed, never a plain "signed by"
        page = _page(port, f"/item/sha256:{forged['envelope']}")
        assert f"keyid {a.keyid}: claimed, not verified" in page, page
        assert "verified with a --trust'ed key" not in page and f"signed by {a.keyid}" not in page
        page = _page(port, f"/item/sha256:{good['envelope']}")
        assert f"keyid {a.keyid}: verified with a --trust'ed key" in page and "claimed" not in page, page
        page = _page(port, f"/item/sha256:{mixed['envelope']}")
        assert f"keyid {a.keyid}: verified with a --trust'ed key" in page, page
        assert f"keyid {b.keyid}: claimed, not verified" in page, page
        assert f"keyid {b.keyid}: verified" not in page
        # the wheels' lineage
        page = _page(port, f"/item/sha256:{forged['wheel']}")
        lineage = page[page.index("Lineage") :]
        assert f"claimed by keyid {a.keyid[:16]}, not verified" in lineage and "verifies with trusted" not in lineage, (
            lineage
        )
        page = _page(port, f"/item/sha256:{good['wheel']}")
        assert f"verifies with trusted key {a.keyid[:16]}" in page and "claimed" not in page, page
        page = _page(port, f"/item/sha256:{mixed['wheel']}")
        assert f"verifies with trusted key {a.keyid[:16]}" in page, page
        assert f"{b.keyid[:16]}: claimed, not verified" in page and f"trusted key {b.keyid[:16]}" not in page, page
    finally:
        _stop(server)
    # without --trust, even a genuine signature is only claimed
    port, server = _start(Dashboard(store))
    try:
        page = _page(port, f"/item/sha256:{good['envelope']}")
        assert f"keyid {a.keyid}: claimed, not verified (the server was given no --trust key)" in page, page
        page = _page(port, f"/item/sha256:{good['wheel']}")
        assert f"claimed by keyid {a.keyid[:16]}, not verified" in page and "verifies with trusted" not in page, page
    finally:
        _stop(server)


def test_the_cli_takes_trust_keys(signed: dict[str, object], tmp_path: Path) -> None:
    a = signed["a"]
    assert isinstance(a, signing.PublicKey)
    pub = tmp_path / "a.pub"
    pub.write_bytes(a.pem())
    store = signed["store"]
    assert isinstance(store, Store)
    good = signed["good"]
    assert isinstance(good, dict)
    proc = subprocess.Popen([DETPACK, "store", "--store", store.backend.url, "serve", "--port", "0", "--trust", pub],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        found = re.search(r"at http://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert found
        page = _page(int(found.group(1)), f"/item/sha256:{good['envelope']}")
        assert f"keyid {a.keyid}: verified with a --trust'ed key" in page, page
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
