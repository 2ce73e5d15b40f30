"""Images in the store by reference: ``store push oci:DIR[:TAG]`` and ``store push HOST:PORT/REPO[:TAG|@DIGEST]``
store the manifest, config and layers (byte for byte what skopeo reads), the image's provenance and SBOMs,
name the image by its reference and link each layer to it; ``show``, ``query`` and the dashboard say image
and layer. Against a hostile layout, a hostile registry and a lying writer, nothing false is stored or
believed."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_oci import image, layer
from test_store import isolated_home  # noqa: F401 - the fixture

from conftest import DETPACK, FIXTURES, materialize, require_tool, run, sha256

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """A wheel built by detpack (its provenance lies beside it)."""
    root = tmp_path_factory.mktemp("wheel")
    src = materialize(FIXTURES / "setuptools-basic", root / "src", 0o022)
    r = run([DETPACK, "build", src, "-w", "-o", root / "dist", "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stderr
    (whl,) = (root / "dist").glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def signed_image(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, str]:
    """``oci:DIR/app:1.0``: a layer with the wheel, signed provenance and SBOMs beside the layout."""
    root = tmp_path_factory.mktemp("image")
    assert run([DETPACK, "keygen", "-o", root / "signer.key"]).code == 0
    layer(root / "app-layer.tar.gz", "--wheel", wheel, "--add", f"{FIXTURES / 'setuptools-basic'}:/src")
    digest = image(f"oci:{root / 'app'}:1.0", "--layer", root / "app-layer.tar.gz", "--sign", root / "signer.key",
                   "--sbom")  # fmt: skip
    return root, digest


def _ok(argv: list[str | Path]) -> str:
    r = run(argv)
    assert r.code == 0, r.stdout + r.stderr
    return r.stdout


def _manifest(layout: Path, tag: str) -> Any:
    """The manifest as skopeo reads it (an independent client)."""
    raw = subprocess.run([require_tool("skopeo"), "inspect", "--raw", f"oci:{layout}:{tag}"], capture_output=True,
                         check=True).stdout  # fmt: skip
    return json.loads(raw)


def _log_size(store: str) -> int:
    return len(json.loads(_ok([DETPACK, "store", "--store", store, "log", "--json"])))


def _stored_blob(store: Path, digest: str) -> bytes:
    (found,) = [p for p in (store / "blobs").rglob(digest.removeprefix("sha256:")) if p.is_file()]
    return found.read_bytes()


def test_an_image_layout_is_stored_by_reference(tmp_path: Path, signed_image: tuple[Path, str], wheel: Path,
                                                isolated_home: Path) -> None:  # noqa: F811  # fmt: skip
    root, digest = signed_image
    store = tmp_path / "store"
    _ok([DETPACK, "store", "--store", store, "init"])
    out = _ok([DETPACK, "store", "--store", store, "push", f"oci:{root / 'app'}:1.0"])
    manifest = _manifest(root / "app", "1.0")
    config = str(manifest["config"]["digest"])
    layers = [str(d["digest"]) for d in manifest["layers"]]
    assert out.splitlines() == [
        f"stored     app:1.0.intoto.jsonl  sha256:{sha256(root / 'app.1.0.intoto.jsonl')}  (provenance)",
        f"stored     app:1.0~config  {config}  (config)",
        f"stored     app:1.0~layer1  {layers[0]}  (layer)",
        f"stored     app:1.0  {digest}  (image)",
        f"stored     app:1.0.cdx.json  sha256:{sha256(root / 'app.1.0.cdx.json')}",
        f"stored     app:1.0.spdx.json  sha256:{sha256(root / 'app.1.0.spdx.json')}",
    ]
    # Every blob is what the layout holds, byte for byte.
    for d in (digest, config, *layers):
        assert _stored_blob(store, d) == (root / "app" / "blobs" / "sha256" / d.removeprefix("sha256:")).read_bytes()
    shown = json.loads(_ok([DETPACK, "store", "--store", store, "show", "app:1.0", "--json"]))
    assert shown["kind"] == "image" and shown["names"] == ["app:1.0"]
    assert shown["reference"] == "oci:app:1.0"  # the folder's name, not where it lies on this machine
    assert [p["digest"] for p in shown["layers"]] == layers and shown["config"]["digest"] == config
    assert all(p["stored"] for p in shown["layers"])
    assert shown["provenance"]["names"] == ["app:1.0.intoto.jsonl"] and shown["provenance"]["signed_by"]
    layer_shown = json.loads(_ok([DETPACK, "store", "--store", store, "show", layers[0], "--json"]))
    assert layer_shown["kind"] == "layer" and layer_shown["images"] == [{"digest": digest, "names": ["app:1.0"]}]
    text = _ok([DETPACK, "store", "--store", store, "show", "app:1.0"])
    assert f"{digest}  image," in text and "reference:    oci:app:1.0" in text and "layer 1:" in text
    # The query index says image and layer, and finds the image by the wheel it contains.
    images = _ok([DETPACK, "store", "--store", store, "query", "--kind", "image"])
    assert images.split()[:3] == [digest[:19], "image", "app:1.0"], images
    assert _ok([DETPACK, "store", "--store", store, "query", "--kind", "layer"]).split()[:3] == [
        layers[0][:19], "layer", "app:1.0~layer1"]  # fmt: skip
    name = wheel.name.split("-")[0]
    contains = json.loads(_ok([DETPACK, "store", "--store", store, "query", "--contains", name, "--json"]))
    assert digest in {m["digest"] for m in contains["matches"]}
    # Pushed again: nothing new is logged. Promoted by name, with its signed provenance checked.
    size = _log_size(str(store))
    again = _ok([DETPACK, "store", "--store", store, "push", f"oci:{root / 'app'}:1.0"])
    assert again.count("unchanged") == 6 and _log_size(str(store)) == size
    _ok([DETPACK, "store", "--store", store, "promote", "app:1.0", "--to", "prod", "--key", root / "signer.key.pub"])
    assert _ok([DETPACK, "store", "--store", store, "resolve", "prod"]).strip().endswith(digest.removeprefix("sha256:"))
    assert "verified:" in _ok([DETPACK, "store", "--store", store, "verify"])


def test_an_image_in_a_registry_is_stored_by_reference(tmp_path: Path, signed_image: tuple[Path, str],
                                                       registry: str, isolated_home: Path) -> None:  # noqa: F811  # fmt: skip
    root, digest = signed_image
    _ok([DETPACK, "push", f"oci:{root / 'app'}:1.0", f"{registry}/images-team/app"])
    store = f"oci://{registry}/stores/images"  # a registry store this time
    _ok([DETPACK, "store", "--store", store, "init"])
    out = _ok([DETPACK, "store", "--store", store, "push", f"{registry}/images-team/app:1.0"])
    assert f"stored     app:1.0  {digest}  (image)" in out.splitlines()
    assert "app:1.0.intoto.jsonl" in out and "app:1.0.cdx.json" in out and "app:1.0~layer1" in out
    shown = json.loads(_ok([DETPACK, "store", "--store", store, "show", "app:1.0", "--json"]))
    assert shown["kind"] == "image" and shown["reference"] == f"{registry}/images-team/app:1.0@{digest}"
    manifest = _manifest(root / "app", "1.0")
    assert [p["digest"] for p in shown["layers"]] == [str(d["digest"]) for d in manifest["layers"]]
    assert shown["provenance"]["signed_by"], "the signed provenance referrer was stored and linked"
    # By digest, under a name of one's own; a digest reference without --name is named by its digest.
    pinned = f"{registry}/images-team/app@{digest}"
    by_digest = _ok([DETPACK, "store", "--store", store, "push", pinned, "--name", "app:pinned"])
    assert f"stored     app:pinned  {digest}  (image)" in by_digest.splitlines()
    plain = _ok([DETPACK, "store", "--store", tmp_path / "plain", "push", f"{registry}/images-team/app@{digest}"])
    assert f"stored     app:{digest.replace(':', '-')}  {digest}  (image)" in plain.splitlines()
    assert "verified:" in _ok([DETPACK, "store", "--store", store, "verify"])


def test_a_damaged_layout_stores_nothing(tmp_path: Path, signed_image: tuple[Path, str],
                                         isolated_home: Path) -> None:  # noqa: F811  # fmt: skip
    root, _ = signed_image
    copy = tmp_path / "app"
    shutil.copytree(root / "app", copy)
    manifest = _manifest(copy, "1.0")
    blob = copy / "blobs" / "sha256" / str(manifest["layers"][0]["digest"]).removeprefix("sha256:")
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes() + b"tampered")
    store = tmp_path / "store"
    _ok([DETPACK, "store", "--store", store, "init"])
    r = run([DETPACK, "store", "--store", store, "push", f"oci:{copy}:1.0"])
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 2, r.stderr  # the step line, then the error
    assert f"{blob}: its bytes are sha256:" in r.stderr and "Traceback" not in r.stderr
    assert _log_size(str(store)) == 1  # only the init entry
    for argv, needle in [
        (["--name", "sha256:abcd"], "not a usable store name"),
        (["--name", "../x:1"], "not a usable store name"),
        (["--name", "app"], "an image is named BASE:TAG"),
    ]:
        r = run([DETPACK, "store", "--store", store, "push", f"oci:{root / 'app'}:1.0", *argv])
        assert r.code == 2 and needle in r.stderr, r.stderr
    r = run([DETPACK, "store", "--store", store, "push", f"oci:{root / 'app'}:2.0"])
    assert r.code == 2 and "no image tagged '2.0'" in r.stderr
    assert _log_size(str(store)) == 1


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A registry that serves a manifest naming one layer, then other bytes for it; and a provenance
    referrer about another image."""

    layer = b"the layer the manifest names"
    config = b"{}"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": len(layer)}],
    }).encode()  # fmt: skip

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/v2/evil/manifests/1.0":
            body, kind = self.manifest, "application/vnd.oci.image.manifest.v1+json"
        elif self.path.endswith(hashlib.sha256(self.config).hexdigest()):
            body, kind = self.config, "application/octet-stream"
        elif "/blobs/" in self.path:
            body, kind = b"X" * len(self.layer), "application/octet-stream"  # as long, other bytes
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile_registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_hostile_registry_stores_nothing(tmp_path: Path, hostile_registry: str,
                                           isolated_home: Path) -> None:  # noqa: F811  # fmt: skip
    with urllib.request.urlopen(f"http://{hostile_registry}/v2/evil/manifests/1.0") as resp:
        assert resp.status == 200  # the attacker is up and serving its manifest
    store = tmp_path / "store"
    _ok([DETPACK, "store", "--store", store, "init"])
    r = run([DETPACK, "store", "--store", store, "push", f"{hostile_registry}/evil:1.0"])
    assert r.code == 2 and "came back with other content; refusing it" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and _log_size(str(store)) == 1
    assert not list((store / "blobs").rglob("*")) or all(p.is_dir() for p in (store / "blobs").rglob("*"))


def test_a_multi_platform_index_is_refused_in_one_line(tmp_path: Path, signed_image: tuple[Path, str],
                                                       isolated_home: Path) -> None:  # noqa: F811  # fmt: skip
    root, digest = signed_image
    copy = tmp_path / "multi"
    shutil.copytree(root / "app", copy)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                            "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}]}  # fmt: skip
    data = json.dumps(index).encode()
    hexdigest = hashlib.sha256(data).hexdigest()
    (copy / "blobs" / "sha256" / hexdigest).write_bytes(data)
    top = json.loads((copy / "index.json").read_text())
    top["manifests"].append({"mediaType": index["mediaType"], "digest": f"sha256:{hexdigest}", "size": len(data),
                             "annotations": {"org.opencontainers.image.ref.name": "multi"}})  # fmt: skip
    (copy / "index.json").chmod(0o644)
    (copy / "index.json").write_text(json.dumps(top))
    store = tmp_path / "store"
    r = run([DETPACK, "store", "--store", store, "push", f"oci:{copy}:multi"])
    assert r.code == 2 and "an image index (several platforms)" in r.stderr, r.stderr


def test_a_lying_image_entry_is_named_by_verify(tmp_path: Path, signed_image: tuple[Path, str],
                                                isolated_home: Path) -> None:  # noqa: F811  # fmt: skip
    """A writer holding the store's key logs an image whose layers are not its manifest's: readers would
    follow the logged layers, so ``store verify`` names it."""
    from detpack.store import open_store
    from detpack.store.writer import Input

    root, digest = signed_image
    store = tmp_path / "store"
    _ok([DETPACK, "store", "--store", store, "init"])
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"not a layer of the image")
    manifest = root / "app" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    opened = open_store(str(store))
    with opened._writing() as w:  # a writer with the key, writing what detpack never would
        for path, extra in [
            (decoy, {"media": "layer", "image": digest.removeprefix("sha256:")}),
            (manifest, {"media": "image", "reference": "oci:app:1.0", "config": sha256(decoy),
                        "layers": [sha256(decoy)]}),
        ]:  # fmt: skip
            w.store_blob(Input(path, f"lie:{path.name[:8]}", sha256(path), path.stat().st_size), "push", extra)
    r = run([DETPACK, "store", "--store", store, "verify"])
    assert r.code == 1, r.stdout + r.stderr
    assert "the log names config and layers other than its manifest's" in r.stdout + r.stderr
    assert "of the image is not in the store" in r.stdout + r.stderr


def test_a_name_that_looks_like_a_digest_does_not_shadow_one(tmp_path: Path, signed_image: tuple[Path, str],
                                                             isolated_home: Path) -> None:  # noqa: F811  # fmt: skip
    """A file named like the start of another item's digest cannot make `promote PREFIX` pick it."""
    root, digest = signed_image
    store = tmp_path / "store"
    _ok([DETPACK, "store", "--store", store, "push", f"oci:{root / 'app'}:1.0"])
    prefix = digest.removeprefix("sha256:")[:12]
    trap = tmp_path / prefix
    trap.write_bytes(b"an attacker's file, named like the image's digest")
    _ok([DETPACK, "store", "--store", store, "push", trap])
    r = run([DETPACK, "store", "--store", store, "show", prefix])
    assert r.code == 2 and "both a name and the start of another digest" in r.stderr, r.stderr
    assert json.loads(_ok([DETPACK, "store", "--store", store, "show", digest, "--json"]))["kind"] == "image"


def test_the_dashboard_says_image_and_layer(tmp_path: Path, signed_image: tuple[Path, str],
                                            isolated_home: Path) -> None:  # noqa: F811  # fmt: skip
    from test_store_serve import _get

    from detpack.provenance.signing import load_public_key
    from detpack.serve import Dashboard, bind, index_finder
    from detpack.store import open_store

    root, digest = signed_image
    store = tmp_path / "store"
    _ok([DETPACK, "store", "--store", store, "push", f"oci:{root / 'app'}:1.0"])
    layer_digest = str(_manifest(root / "app", "1.0")["layers"][0]["digest"])
    opened = open_store(str(store))
    dashboard = Dashboard(opened, trusted=[load_public_key(root / "signer.key.pub")], finder=index_finder(opened))
    server = bind(dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        status, home = _get(base + "/")
        assert status == 200
        row = re.search(r"<tr><td>\d+</td><td>(\w+)</td><td><a href=\"/item/" + digest + r"\">([^<]*)</a>", home)
        assert row is not None and row.groups() == ("image", "app:1.0"), home
        status, page = _get(f"{base}/item/{digest}")
        assert status == 200 and "<tr><th>kind</th><td>image," in page
        assert "<tr><th>reference</th><td>oci:app:1.0</td></tr>" in page
        assert f'layer 1 <a href="/item/{layer_digest}"' in page and "not in the store" not in page
        assert '<span class="kind image">image</span>' in page  # the lineage's root
        status, page = _get(f"{base}/item/{layer_digest}")
        assert "<tr><th>kind</th><td>layer," in page and "<tr><th>in images</th>" in page
        assert f'app:1.0 <a href="/item/{digest}"' in page
        status, found = _get(f"{base}/search?q=app:1.0~layer1")
        assert status == 200 and "<td>layer</td>" in found and "app:1.0~layer1" in found, found
    finally:
        server.shutdown()
        server.server_close()
