"""The dashboard's closures (issue 37, item 2): an image pushed by reference, closure reports of it pushed as
plain files (``Report(...).to_bytes()``, as ``deps verify`` writes them), a malformed one, a hostile one and
one the store's key never signed. Pages fetched over HTTP: the image's page draws its newest report's bar,
the report's page lists its files by state with their evidence, a dependency's page flags the regression
between two reports; the closure page is screenshotted in headless Chromium and the bar's colours measured
in the PNG."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import threading
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_oci import image, layer
from test_store import isolated_home  # noqa: F401 - the fixture
from test_store_serve import _get, _links

from conftest import DETPACK, headless_chromium, run
from detpack.deps.report import REPORT_SUFFIX, Entry, Evidence, Report
from detpack.serve import Dashboard, bind
from detpack.serve.closure import Loaded, history
from detpack.store import open_store
from detpack.store.fold import CLOSURE_SUFFIX
from detpack.store.state import Item

pytestmark = pytest.mark.integration

#: The bar's colours (base.html), in the order the parts are drawn.
COLOURS = {"built here": (0x09, 0x69, 0xDA), "reproduced": (0x1A, 0x7F, 0x37), "different": (0xCF, 0x22, 0x2E),
           "unverified": (0xD4, 0xA7, 0x2C)}  # fmt: skip
HOSTILE = "<script>alert(1)</script>"


def _entry(name: str, version: str, state: str, reason: str = "", **more: object) -> Entry:
    sha = hashlib.sha256(f"{name}-{version}".encode()).hexdigest()
    return Entry(name, version, f"{name}-{version}-py3-none-any.whl", sha, state, reason or "as found", **more)  # type: ignore[arg-type]


def _ok(argv: list[str | Path], env: dict[str, str]) -> str:
    r = run(argv, env=env)
    assert r.code == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A store with an image, rebuild evidence, four closure reports (hostile, malformed, old, new) and a fifth
    appended to the log after its last checkpoint (never signed)."""
    base = tmp_path_factory.mktemp("closure")
    env = {"HOME": str(base / "home")}
    (base / "app").mkdir()
    (base / "app" / "main.py").write_text("print('hello')\n")
    layer(base / "app-layer.tar.gz", "--add", f"{base / 'app'}:/app")
    digest = image(f"oci:{base / 'img'}:1.0", "--layer", base / "app-layer.tar.gz").removeprefix("sha256:")
    store = base / "store"
    s: list[str | Path] = [DETPACK, "store", "--store", store]
    _ok([*s, "push", f"oci:{base / 'img'}:1.0"], env)
    evidence = base / "requests-2.32.0.rebuild.intoto.json"
    evidence.write_bytes(b'{"a rebuild attestation": "its bytes are what the report names"}\n')
    _ok([*s, "push", evidence], env)
    ev = hashlib.sha256(evidence.read_bytes()).hexdigest()
    attested = Evidence("attestation", evidence.name, ev)
    recorded = Evidence("record", "certifi-2024.8.30.intoto.jsonl", "ab" * 32)  # a record this store does not hold
    old = Report("oci:img:1.0", "image", digest, "5", "2026-11-01T09:00:00Z", (
        _entry("certifi", "2024.8.30", "built here", evidence=recorded),
        _entry("idna", "3.10", "reproduced"),
        _entry("requests", "2.31.0", "reproduced", evidence=Evidence("attestation", "r.intoto.jsonl", "cd" * 32)),
        _entry("urllib3", "2.2.0", "unverified", "native wheel"),
    ))  # fmt: skip
    new = Report("oci:img:1.0", "image", digest, "5", "2026-12-07T12:00:00Z", (
        _entry("certifi", "2024.8.30", "built here", evidence=recorded),
        _entry("packaging", "24.2", "built here"),
        _entry("idna", "3.10", "reproduced"),
        _entry("charset-normalizer", "3.4.0", "reproduced"),
        _entry("six", "1.16.0", "reproduced"),
        _entry("pyparsing", "3.2.0", "reproduced"),
        _entry("requests", "2.32.0", "different", "rebuilt: other bytes", details=("RECORD differs",
               "requests/__version__.py differs"), evidence=attested),
        _entry("urllib3", "2.2.3", "unverified", "native wheel"),
        _entry("pyyaml", "6.0.2", "unverified", "no sdist"),
        _entry("cffi", "1.17.1", "unverified", "not tried"),
    ))  # fmt: skip
    evil = Report(HOSTILE, "pylock", "ef" * 32, "5", "2026-10-01T00:00:00Z", (
        _entry(HOSTILE, "<b>1</b>", "different", "<img src=x onerror=alert(1)>", details=(HOSTILE,),
               evidence=Evidence("record", HOSTILE, "01" * 32)),
    ))  # fmt: skip
    reports = base / "reports"
    reports.mkdir()
    files = {"evil": evil.to_bytes(), "broken": b'{"_type": "not a report", "files": 3}\n',
             "app-2026-11": old.to_bytes(), "app-2026-12": new.to_bytes()}  # fmt: skip
    found = {"image": digest, "evidence": ev, "store": str(store), "base": str(base)}
    for name, data in files.items():
        path = reports / f"{name}{REPORT_SUFFIX}"
        path.write_bytes(data)
        _ok([*s, "push", path], env)
        found[name] = hashlib.sha256(data).hexdigest()
    # A newer report of the image, in the log and the blobs but after the last signed checkpoint: not believed.
    forged = Report(
        "oci:img:1.0", "image", digest, "5", "2026-12-31T00:00:00Z", (_entry("idna", "3.10", "reproduced"),)
    )
    data = forged.to_bytes()
    found["forged"] = hashlib.sha256(data).hexdigest()
    (store / "blobs" / "sha256" / found["forged"]).write_bytes(data)
    line = {"digest": found["forged"], "name": f"forged{REPORT_SUFFIX}", "provenance": None, "size": len(data),
            "time": "2026-12-31T00:00:00Z", "type": "push", "user": "mallory"}  # fmt: skip
    with (store / "log" / "entries.jsonl").open("a") as log:
        log.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
    return found


@pytest.fixture
def served(world: dict[str, str], isolated_home: Path) -> Iterator[str]:  # noqa: F811 - the fixture
    server = bind(Dashboard(open_store(world["store"])))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _page(url: str, status: int = 200) -> str:
    code, body = _get(url)
    assert code == status, (url, code, body[-3000:])
    assert "Traceback" not in body and "internal error" not in body
    return body


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _bar(html: str) -> list[tuple[str, int, str]]:
    """(state slug, flex-grow, href) of each drawn part of the first bar on a page."""
    found = re.findall(r'<a class="part st-(\w+)" style="flex-grow: (\d+)" href="([^"]+)"', html)
    return [(slug, int(grow), href) for slug, grow, href in found]


def test_the_index_calls_reports_closures(world: dict[str, str], isolated_home: Path) -> None:  # noqa: F811
    assert CLOSURE_SUFFIX == REPORT_SUFFIX  # the store spells deps' suffix itself (it sits below deps)
    env = {"HOME": str(Path(world["base"]) / "home")}
    query = [DETPACK, "store", "--store", world["store"], "query", "--json", "--kind"]
    closures = json.loads(_ok([*query, "closure"], env))
    names = sorted(n for m in closures["matches"] for n in m["names"])
    assert names == [f"{n}{REPORT_SUFFIX}" for n in ("app-2026-11", "app-2026-12", "broken", "evil")], closures
    assert {m["kind"] for m in closures["matches"]} == {"closure"}  # "forged" is after the last checkpoint
    files = json.loads(_ok([*query, "file"], env))
    assert not [n for m in files["matches"] for n in m["names"] if n.endswith(REPORT_SUFFIX)], files


def test_an_image_page_draws_its_newest_closure(served: str, world: dict[str, str]) -> None:
    page = _page(f"{served}/item/sha256:{world['image']}")
    assert "<tr><th>kind</th><td>image," in page
    text = _text(page)
    new, old = world["app-2026-12"], world["app-2026-11"]
    assert "From the newest report on this digest: app-2026-12.closure.json , verified 2026-12-07T12:00:00Z" in text
    assert "Older: app-2026-11.closure.json , verified 2026-11-01T09:00:00Z" in text
    assert f'<a href="/closure/sha256:{new}">app-2026-12.closure.json</a>' in page
    assert f'<a href="/closure/sha256:{old}">app-2026-11.closure.json</a>' in page
    assert "forged" not in page  # newer, naming the image, but never signed by the store's key
    # Four parts in proportion, in order, each linking to its files; counts and percentages as text too.
    assert _bar(page) == [
        ("built", 2, f"/closure/sha256:{new}?state=built"),
        ("reproduced", 4, f"/closure/sha256:{new}?state=reproduced"),
        ("different", 1, f"/closure/sha256:{new}?state=different"),
        ("unverified", 3, f"/closure/sha256:{new}?state=unverified"),
    ]
    for line in ("built here : 2 of 10 (20%)", "reproduced : 4 of 10 (40%)", "different : 1 of 10 (10%)",
                 "unverified : 3 of 10 (30%) not checked: not clean"):  # fmt: skip
        assert line in text, text
    assert 'aria-label="unverified: 3 of 10 files (30%)"' in page
    # The report's own item page leads to its closure page.
    assert f'<a href="/closure/sha256:{new}">its files by state</a>' in _page(f"{served}/item/sha256:{new}")
    # The home page lists the reports, newest first; the malformed one with its error.
    html = _page(served + "/")
    home = _text(html)
    listed = re.findall(r'<tr><td><a href="/closure/sha256:[0-9a-f]{64}">([^<]+)\.closure\.json</a></td>', html)
    assert listed == ["app-2026-12", "app-2026-11", "broken", "evil"], home
    assert "2 built here · 4 reproduced · 1 different · 3 unverified" in home
    assert "not a closure report (_type is not" in home


def test_the_closure_page_lists_files_by_state_with_their_evidence(served: str, world: dict[str, str]) -> None:
    new = world["app-2026-12"]
    page = _page(f"{served}/closure/sha256:{new}")
    text = _text(page)
    assert "Closure oci:img:1.0" in text and "verified 2026-12-07T12:00:00Z (policy version 5)" in text
    assert f'<a href="/item/sha256:{world["image"]}">sha256:{world["image"]}</a> (img:1.0)' in page
    assert [s for s, _, _ in _bar(page)] == ["built", "reproduced", "different", "unverified"]
    for state in ("built", "reproduced", "different", "unverified"):
        assert f'<h2 id="{state}">' in page
    # requests: different, why, the details, and the attestation linked (the store holds it)
    row = re.search(r"<tr>\s*<td><a href=\"/dependency/requests\">requests</a></td>.*?</tr>", page, re.S)
    assert row is not None, page
    assert "rebuilt: other bytes" in row.group() and "<li>RECORD differs</li>" in row.group()
    assert (
        f'attestation <a href="/item/sha256:{world["evidence"]}">requests-2.32.0.rebuild.intoto.json</a>' in row.group()
    )
    assert 'certifi-2024.8.30.intoto.jsonl <span class="warn">(not in this store)</span>' in page
    # every link answers
    for link in sorted(set(_links(page))):
        if link.startswith("/"):
            _page(served + link)
    # one state's files
    only = _page(f"{served}/closure/sha256:{new}?state=different")
    assert "requests-2.32.0-py3-none-any.whl" in only and "idna-3.10-py3-none-any.whl" not in only
    assert "Showing the different files only" in _text(only)
    assert "state=widget: not a state" in _page(f"{served}/closure/sha256:{new}?state=widget", 404)
    assert "not a closure report" in _page(f"{served}/closure/sha256:{world['image']}", 404)


def test_the_dependency_page_flags_a_regression(served: str, world: dict[str, str]) -> None:
    page = _page(f"{served}/dependency/requests")
    text = _text(page)
    assert "Regression: reproduced for 2.31.0, different for 2.32.0" in text, text
    rows = re.findall(r"<tr>\s*<td>([^<]+)</td>\s*<td><span class=\"state st-(\w+)\">", page)
    assert rows == [("2.31.0", "reproduced"), ("2.32.0", "different")]
    assert f'<a href="/closure/sha256:{world["app-2026-11"]}">oci:img:1.0</a> (2026-11-01T09:00:00Z)' in page
    assert "Not counted (1 report(s) that cannot be read)" in text  # the malformed one, named
    assert "reproduced for 2.31.0" in _page(f"{served}/dependency/Requests")  # names compared as PEP 503
    for steady in ("idna", "urllib3", "certifi"):  # the same, or unverified both times: nothing to flag
        assert "No regression" in _text(_page(f"{served}/dependency/{steady}")), steady
    assert "no closure report in the store names this dependency" in _page(f"{served}/dependency/flask", 404)


def test_a_version_takes_its_worst_state_and_unverified_is_never_clean() -> None:
    def loaded(*entries: Entry) -> Loaded:
        report = Report("x", "pylock", "00" * 32, "5", "2026-12-07T00:00:00Z", entries)
        return Loaded(Item("11" * 32, "artifact", 1, [f"x{REPORT_SUFFIX}"]), report)

    def states(*reports: Loaded) -> list[tuple[str, str, str]]:
        return [(r.version, r.state, r.regression) for r in history(reports, "pkg")]

    a = loaded(_entry("pkg", "2.9.0", "reproduced"), _entry("pkg", "2.10.0", "reproduced"))
    b = loaded(_entry("Pkg", "2.10.0", "different"), _entry("pkg", "2.11.0", "built here"))
    assert states(a, b) == [  # packaging's order (2.9 < 2.10), the worst of two reports, recovery not flagged
        ("2.9.0", "reproduced", ""),
        ("2.10.0", "different", "reproduced for 2.9.0, different for 2.10.0"),
        ("2.11.0", "built here", ""),
    ]
    c = loaded(
        _entry("pkg", "1.0", "built here"), _entry("pkg", "1.1", "reproduced"), _entry("pkg", "1.2", "unverified")
    )
    assert states(c) == [("1.0", "built here", ""), ("1.1", "reproduced", ""),
                         ("1.2", "unverified", "reproduced for 1.1, unverified for 1.2")]  # fmt: skip


def test_a_malformed_report_is_one_line_on_its_page(served: str, world: dict[str, str]) -> None:
    page = _page(f"{served}/closure/sha256:{world['broken']}")
    error = re.search(r'<p class="bad" id="closure-error">([^<]*)</p>', page)
    assert error is not None, page
    assert "\n" not in error.group(
        1
    ) and "not a closure report (_type is not https://detpack.dev/closure-report/v1)" in (error.group(1))
    assert 'class="closure-bar"' not in page


def test_a_report_nested_too_deeply_is_one_line_too(tmp_path: Path, isolated_home: Path) -> None:  # noqa: F811
    deep = tmp_path / f"deep{REPORT_SUFFIX}"
    deep.write_bytes(b"[" * 100_000)
    store = tmp_path / "store"
    _ok([DETPACK, "store", "--store", store, "push", deep], {"HOME": str(isolated_home)})
    dashboard = Dashboard(open_store(str(store)))
    digest = hashlib.sha256(deep.read_bytes()).hexdigest()
    for path in (f"/closure/sha256:{digest}", "/"):
        response = dashboard.handle(path)
        assert response.status == 200 and b"not a closure report (nested too deeply to read)" in response.body


def test_hostile_names_in_a_report_are_shown_as_text(served: str, world: dict[str, str]) -> None:
    pages = [_page(f"{served}/closure/sha256:{world['evil']}"), _page(served + "/"),
             _page(f"{served}/dependency/{urllib.parse.quote(HOSTILE, safe='')}")]  # fmt: skip
    for page in pages:
        assert "<script" not in page.lower() and "<img" not in page.lower() and "<b>1" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0] and "&lt;img src=x onerror=alert(1)&gt;" in pages[0]
    assert "&lt;b&gt;1&lt;/b&gt;" in pages[2]


def test_a_report_the_store_key_never_signed_is_not_shown(served: str, world: dict[str, str]) -> None:
    page = _page(f"{served}/closure/sha256:{world['forged']}", 404)
    assert "NOT BELIEVED" in page
    assert "forged" not in _page(served + "/").split("<main>")[1]


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered RGB(A) rows of an 8-bit PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    n = 3 if colour == 2 else 4
    raw, stride, rows, prior = zlib.decompress(idat), width * n, [], bytearray(width * n)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left, up = line[i - n] if i >= n else 0, prior[i]
            upleft = prior[i - n] if i >= n else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else upleft)) & 255
        rows.append(bytes(line))
        prior = line
    return width, height, rows


def bar_in_screenshot(png: bytes) -> list[tuple[str, int]]:
    """The row of the screenshot with the most pixels of the bar's colours: (state, pixels) per run, left to right."""
    width, _, rows = _png_pixels(png)
    n = len(rows[0]) // width
    best: list[tuple[str, int]] = []
    for row in rows:
        runs: list[tuple[str, int]] = []
        for x in range(width):
            pixel = row[x * n : x * n + 3]
            state = next(
                (s for s, c in COLOURS.items() if all(abs(a - b) <= 8 for a, b in zip(pixel, c, strict=True))), None
            )
            if state is None:
                continue
            if runs and runs[-1][0] == state:
                runs[-1] = (state, runs[-1][1] + 1)
            else:
                runs.append((state, 1))
        if sum(r[1] for r in runs) > sum(r[1] for r in best):
            best = runs
    return best


#: page -> (path in ``world`` terms, the parts its bar must show: state and share of the files)
SHOTS = {
    "closure": ("/closure/sha256:{app-2026-12}", (("built here", 0.2), ("reproduced", 0.4), ("different", 0.1),
                                                  ("unverified", 0.3))),
    "image": ("/item/sha256:{image}", (("built here", 0.2), ("reproduced", 0.4), ("different", 0.1),
                                       ("unverified", 0.3))),
    # the control: another report's page gives other pixels (the measurement reads the page, not the test)
    "older": ("/closure/sha256:{app-2026-11}", (("built here", 0.25), ("reproduced", 0.5), ("unverified", 0.25))),
}  # fmt: skip


@pytest.mark.parametrize("page", sorted(SHOTS))
def test_headless_chromium_draws_the_bar_in_proportion(
    served: str, world: dict[str, str], tmp_path: Path, page: str
) -> None:
    template, expected = SHOTS[page]
    path = re.sub(r"\{([\w-]+)\}", lambda m: world[m.group(1)], template)
    shots = Path(os.environ.get("DETPACK_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / f"closure-{page}.png"
    r = subprocess.run(
        [*headless_chromium(tmp_path / "profile"), "--window-size=1280,1000", "--hide-scrollbars",
         f"--screenshot={png}", served + path], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0 and png.is_file(), r.stderr[-2000:]
    runs = bar_in_screenshot(png.read_bytes())
    assert [s for s, _ in runs] == [s for s, _ in expected], runs  # the parts drawn, in order, one run each
    total = sum(n for _, n in runs)
    assert total > 600, runs  # the bar, not a legend's swatches
    for (state, pixels), (_, share) in zip(runs, expected, strict=True):
        assert abs(pixels / total - share) < 0.015, (state, pixels, total, runs)
    if page != "closure":
        return
    dom = subprocess.run(
        [*headless_chromium(tmp_path / "dom"), "--dump-dom", f"{served}/closure/sha256:{world['evil']}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0 and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout, dom.stderr[-2000:]
    assert "<script" not in dom.stdout and "<img" not in dom.stdout
