"""`detpack store serve`: the dashboard over a real chain (a signed build of a fixture, a layer of
its wheel, an image of that layer, all pushed and promoted), fetched over HTTP, every link
followed, rendered by headless Chromium, loaded by concurrent clients, and a tampered store shown
as failing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_store import isolated_home  # noqa: F401 - the fixture

from conftest import DETPACK, FIXTURES, headless_chromium, materialize, run
from detpack.provenance.signing import load_public_key
from detpack.serve import Dashboard, bind, index_finder
from detpack.store import open_store

pytestmark = pytest.mark.integration

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}


def _ok(r: object) -> str:
    assert getattr(r, "code", None) == 0, getattr(r, "stdout", "") + getattr(r, "stderr", "")
    return str(getattr(r, "stdout", ""))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> dict[str, str]:
    """A store holding a signed build, a layer of its wheel and an image of the layer, promoted."""
    base = tmp_path_factory.mktemp("chain")
    src = materialize(FIXTURES / "flit", base / "src", 0o022)
    for argv in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "fixture"]):
        _ok(run(argv, cwd=src, env=GIT_ENV))
    commit = _ok(run(["git", "rev-parse", "HEAD"], cwd=src)).strip()
    key = base / "builder"
    _ok(run([DETPACK, "keygen", "-o", key]))
    out = base / "out"
    _ok(run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "--sign", key]))
    wheel = out / "fx_flit-1.0.0-py3-none-any.whl"
    layer = base / "app-layer.tar.gz"
    _ok(run([DETPACK, "layer", "-o", layer, "--wheel", wheel]))
    _ok(run([DETPACK, "sign", base / "app-layer.tar.gz.provenance.json", "--key", key]))
    _ok(run([DETPACK, "image", "-o", f"oci:{base / 'img'}:1.0", "--layer", layer, "--sign", key], cwd=base))
    index = json.loads((base / "img" / "index.json").read_text())
    digest = index["manifests"][0]["digest"].removeprefix("sha256:")
    manifest = base / "img-1.0.manifest.json"
    shutil.copy(base / "img" / "blobs" / "sha256" / digest, manifest)
    store = base / "store"
    home = {"HOME": str(base / "home")}
    s = ["--store", str(store)]
    _ok(run([DETPACK, "store", *s, "push", wheel, out / "fx_flit-1.0.0.tar.gz", "--provenance",
             out / "fx_flit-1.0.0.intoto.jsonl"], env=home))  # fmt: skip
    _ok(run([DETPACK, "store", *s, "push", layer, "--provenance", base / "app-layer.tar.gz.intoto.jsonl"], env=home))
    _ok(run([DETPACK, "store", *s, "push", manifest, "--provenance", base / "img.1.0.intoto.jsonl"], env=home))
    _ok(run([DETPACK, "store", *s, "promote", wheel.name, "--to", "staging", "--key", f"{key}.pub"], env=home))
    _ok(run([DETPACK, "store", *s, "promote", manifest.name, "--to", "prod", "--key", f"{key}.pub"], env=home))
    return {
        "store": str(store),
        "key": f"{key}.pub",
        "image": digest,
        "wheel": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "layer": hashlib.sha256(layer.read_bytes()).hexdigest(),
        "commit": commit,
        "base": str(base),
    }


@pytest.fixture
def served(chain: dict[str, str]) -> Iterator[tuple[str, Dashboard]]:
    """The dashboard of the chain's store on a free port of 127.0.0.1, in this process."""
    store = open_store(chain["store"])
    dashboard = Dashboard(store, trusted=[load_public_key(Path(chain["key"]))], finder=index_finder(store))
    server = bind(dashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", dashboard
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links.append(href)


def _links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.links


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_pages_answer_from_the_store_and_every_link_is_followed(
    served: tuple[str, Dashboard], chain: dict[str, str]
) -> None:
    base, dashboard = served
    dashboard.verification(wait=60)
    status, home = _get(base + "/")
    assert status == 200
    text = _text(home)
    assert "prod img-1.0.manifest.json" in text and "staging fx_flit-1.0.0-py3-none-any.whl" in text, text
    assert "Verified: 11 log entries" in text, text
    # Follow every link of the home page, then every link of each page reached (two levels), once.
    seen: dict[str, int] = {}
    frontier = [link for link in _links(home) if link.startswith("/")]
    for _level in range(2):
        following = []
        for link in frontier:
            if link in seen:
                continue
            status, page = _get(base + link)
            seen[link] = status
            following += [x for x in _links(page) if x.startswith("/") and x not in seen]
        frontier = following
    assert len(seen) >= 15, seen
    assert all(status == 200 for status in seen.values()), {k: v for k, v in seen.items() if v != 200}
    assert f"/item/sha256:{chain['image']}" in seen and "/env/prod" in seen and "/log" in seen
    assert f"/item/sha256:{chain['wheel']}" in seen and f"/item/sha256:{chain['layer']}" in seen
    # The image's lineage: image -> layer -> wheel -> build -> source commit, each signature verified.
    status, page = _get(f"{base}/item/sha256:{chain['image']}")
    lineage = _text(page[page.index('id="lineage"') :])
    order = ["image img-1.0.manifest.json", "layer app-layer.tar.gz", "wheel fx_flit-1.0.0-py3-none-any.whl",
             "build", "builder: https://detpack.dev/builders/local/v1", f"commit: {chain['commit']}"]  # fmt: skip
    positions = [lineage.find(s) for s in order]
    assert -1 not in positions and positions == sorted(positions), (positions, lineage)
    assert lineage.count("verifies with trusted key") == 3, lineage
    assert "build dependencies: flit-core" in lineage
    assert "inclusion proof" in _text(page) and "checks against the signed checkpoint" in _text(page)
    # Environment history and "what was live at a time".
    status, page = _get(base + "/env/prod?at=2000-01-01")
    assert status == 200 and "nothing was live in prod" in _text(page)
    status, page = _get(base + "/env/prod?at=2999-01-01T00:00:00Z")
    assert status == 200 and f"sha256:{chain['image'][:16]}" in _text(page[page.index('id="at"') :])
    # Search by name and by digest prefix.
    status, page = _get(base + "/search?q=fx_flit")
    assert status == 200 and "fx_flit-1.0.0-py3-none-any.whl" in page and "fx_flit-1.0.0.tar.gz" in page
    status, page = _get(f"{base}/search?q={chain['layer'][:12]}")
    assert "app-layer.tar.gz" in page and "fx_flit-1.0.0.tar.gz" not in page
    # Search by build dependency and by contained wheel, over the query index.
    status, page = _get(base + "/search?dep=flit-core%3E%3D3.2")
    found = _text(page[page.index('id="results"') :])
    assert status == 200 and "fx_flit-1.0.0-py3-none-any.whl" in found and "dep: flit-core" in found, found
    assert "img-1.0.manifest.json" not in found
    assert "0 result(s)" in _text(_get(base + "/search?dep=flit-core%3C1")[1])
    status, page = _get(base + "/search?q=contains:fx-flit%3D%3D1.0.0")
    found = _text(page[page.index('id="results"') :])
    assert "img-1.0.manifest.json" in found and "app-layer.tar.gz" in found, found
    assert "fx_flit-1.0.0-py3-none-any.whl" not in found.replace("contains: fx-flit", "")
    status, page = _get(base + "/search?dep=not%20a%20spec%20%3C")
    assert status == 200 and "not a requirement" in page
    # Unknown things: 404 with one line; bad times: 400; and the server is read-only.
    assert _get(base + "/item/sha256:" + "0" * 64)[0] == 404
    assert _get(base + "/env/nowhere")[0] == 404
    assert _get(base + "/nope")[0] == 404
    assert _get(base + "/env/prod?at=yesterday")[0] == 400
    request = urllib.request.Request(base + "/", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    refused.value.close()


def test_headless_chromium_renders_the_environments_and_the_lineage(
    served: tuple[str, Dashboard], chain: dict[str, str], tmp_path: Path
) -> None:
    base, dashboard = served
    dashboard.verification(wait=60)
    shots = Path(os.environ.get("DETPACK_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    for name, path in (("environments", "/"), ("image-lineage", f"/item/sha256:{chain['image']}")):
        png = shots / f"{name}.png"
        r = subprocess.run(
            [*headless_chromium(tmp_path / f"profile-{name}"), "--window-size=1280,1000", f"--screenshot={png}",
             base + path], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0 and png.stat().st_size > 20_000, r.stderr[-2000:]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        dom = subprocess.run(
            [*headless_chromium(tmp_path / f"dom-{name}"), "--dump-dom", base + path],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "<script" not in dom.stdout  # works without JavaScript: there is none
        if name == "environments":
            assert 'id="environments"' in dom.stdout and "img-1.0.manifest.json" in dom.stdout
        else:
            assert 'id="lineage"' in dom.stdout and chain["commit"] in dom.stdout


def test_a_store_that_fails_verification_is_shown_as_failing(chain: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(chain["store"], store, symlinks=True)
    blob = store / "blobs" / "sha256" / chain["layer"]
    blob.chmod(0o644)
    blob.write_bytes(b"not the layer")
    dashboard = Dashboard(open_store(str(store)))
    dashboard.snapshot()
    verification = dashboard.verification(wait=60)
    assert verification.state == "bad"
    for path in ("/", "/log", f"/item/sha256:{chain['image']}", "/verify"):
        response = dashboard.handle(path)
        text = _text(response.body.decode())
        assert "NOT VERIFIED: this store fails verification (1 problem(s))" in text, (path, text)
        assert f"blob sha256:{chain['layer'][:16]}" in text
    # a log overwritten with garbage: no checkpoint to trust, so nothing shown as verified
    (store / "log" / "checkpoints.jsonl").write_bytes(b"garbage\n")
    (store / "log" / "entries.jsonl").write_bytes(b"{broken\n")
    broken = Dashboard(open_store(str(store)))
    assert broken.verification(wait=60).state == "bad"
    text = _text(broken.handle("/").body.decode())
    assert "NOT VERIFIED" in text and "checkpoint 1" in text, text


def test_concurrent_clients_all_get_answers(served: tuple[str, Dashboard], chain: dict[str, str]) -> None:
    """A bounded load: 8 clients, 40 requests each, over the pages; every answer complete and 200."""
    base, dashboard = served
    dashboard.verification(wait=60)
    paths = ["/", "/log", "/env/prod", f"/item/sha256:{chain['image']}", "/search?q=fx", "/verify"]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(40):
            path = paths[(n + i) % len(paths)]
            started = time.monotonic()
            status, page = _get(base + path)
            took = time.monotonic() - started
            with lock:
                latencies.append(took)
                if status != 200 or not page.rstrip().endswith("</html>"):
                    failures.append(f"{path}: {status}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert failures == []
    assert len(latencies) == 320
    assert statistics.median(latencies) < 5  # a sanity bound, not a benchmark (bench/serve.py measures)


def test_the_cli_serves_until_interrupted_and_refuses_bad_options(chain: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [DETPACK, "store", "--store", chain["store"], "serve", "--port", "0", "--trust", chain["key"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+/) \(read-only", line)
        assert found, line
        status, page = _get(found.group(1))
        assert status == 200 and "img-1.0.manifest.json" in page
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    for argv, expected in (
        (["--port", "70000"], "--port 70000: not a port"),
        (["--host", "localhost.example"], "--host localhost.example: not an IP address"),
    ):
        r = run([DETPACK, "store", "--store", chain["store"], "serve", *argv])
        assert r.code == 2 and expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run([DETPACK, "store", "--store", tmp_path / "nothing", "serve", "--port", "0"])
    assert r.code == 2 and "no store here" in r.stderr, r.stderr


def test_a_large_store_pages_answer_and_searches_are_capped(tmp_path: Path) -> None:
    """A 10,000-entry seeded store: the pages answer from one snapshot, the log is paged, the lineage of
    a layer reaches its wheels' builds, a dependency search matching thousands shows the first 500."""
    import seeded_store

    from detpack.serve.app import SEARCH_LIMIT

    seeded = seeded_store.seed(tmp_path / "store", 10_000, seed=3, keys=tmp_path / "keys")
    store = open_store(str(seeded.root))
    dashboard = Dashboard(store, finder=index_finder(store))
    assert dashboard.verification(wait=300).state == "ok"
    home = _text(dashboard.handle("/").body.decode())
    assert f"Verified: {seeded.entries} log entries" in home
    for env in ("dev", "staging", "prod"):
        live = seeded.live(env)
        assert live is not None and f"sha256:{live[:16]}" in home
    log_page = dashboard.handle("/log?page=2").body.decode()
    assert f'id="entry-{seeded.entries - 100}"' in log_page and f'id="entry-{seeded.entries}"' not in log_page
    layer = seeded.layers[0]
    lineage = _text(dashboard.handle(f"/item/sha256:{layer.digest}").body.decode())
    assert "layer" in lineage and "wheel" in lineage and "build" in lineage, lineage[:2000]
    # the ground truth: the wheel and the sdist of every release whose build installed setuptools
    want = {d for r in seeded.releases if any(n == "setuptools" for n, _ in r.deps) for d in (r.wheel, r.sdist)}
    assert len(want) > SEARCH_LIMIT
    page = dashboard.handle("/search?dep=setuptools").body.decode()
    shown = re.search(r"(\d+) result\(s\), the first (\d+) shown", _text(page))
    assert shown and int(shown.group(1)) == len(want) and int(shown.group(2)) == SEARCH_LIMIT, _text(page)[:3000]
    listed = set(re.findall(r'<td><a href="/item/sha256:([0-9a-f]{64})">', page))
    assert len(listed) == SEARCH_LIMIT and listed <= want
