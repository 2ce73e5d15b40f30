"""`detpack store query` and its index: real builds, layers, images and SBOMs in a store, each filter
with a negative control, incremental indexing, a rewritten log rebuilding the index, bad input,
and a seeded store of 10,000+ entries checked against what was put in it."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import seeded_store
from packaging.version import Version

from conftest import DETPACK, FIXTURES, materialize, run, sha256
from detpack.errors import ConfigError, StoreError, StoreTrustError
from detpack.store import LocalBackend, index, open_store, query, verify_store
from detpack.store import fold as fold_module
from detpack.store.index import open_index

LOCAL = "https://detpack.dev/builders/local/v1"
CI_BUILDER = "https://ci.example/builders/release"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and every detpack it runs) gets its own HOME: store keys and indexes stay in it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


def _query(store: Path, *argv: object) -> dict[str, Any]:
    r = run([DETPACK, "store", "--store", store, "query", *argv, "--json"])
    value: dict[str, Any] = json.loads(r.stdout)
    found = value.get("matches", value.get("history"))
    assert r.code == (0 if found else 1), r.stderr  # as grep: 1 when nothing matches
    return value


def _names(value: dict[str, Any]) -> set[str]:
    return {m["names"][0] for m in value["matches"]}


# -- a store of real builds, a layer of each wheel, an image and their SBOMs -------------------------


def _git_project(fixture: str, dest: Path, remote: str) -> str:
    src = materialize(FIXTURES / fixture, dest, 0o022)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    for argv in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", fixture],
                 ["git", "remote", "add", "origin", remote]):  # fmt: skip
        assert run(argv, cwd=src, env=env).code == 0
    return run(["git", "rev-parse", "HEAD"], cwd=src).stdout.strip()


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> dict[str, Any]:
    """Two real builds (flit locally, hatchling "in CI"), a layer of each wheel, an image of the flit
    layer, their SBOMs, all pushed to one store, and three promotions a second apart."""
    base = tmp_path_factory.mktemp("released")
    home = base / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    out: dict[str, Any] = {"home": home}
    for fixture, remote, extra in (
        ("flit", "https://example.com/org/fx-flit.git", {}),
        ("hatchling", "https://example.com/other/fx-hatchling.git", {"DETPACK_CI_BUILDER_ID": CI_BUILDER}),
    ):
        out[f"{fixture}-commit"] = _git_project(fixture, base / fixture, remote)
        r = run([DETPACK, "build", base / fixture, "-o", base / f"{fixture}-dist", "--find-links", wheelhouse,
                 "--offline", "-q"], env={**env, **extra})  # fmt: skip
        assert r.code == 0, r.stderr
        out[fixture] = {p.name: p for p in (base / f"{fixture}-dist").iterdir()}
    flit_wheel = next(p for n, p in out["flit"].items() if n.endswith(".whl"))
    hatch_wheel = next(p for n, p in out["hatchling"].items() if n.endswith(".whl"))
    for layer, wheel in (("flit-layer.tar.gz", flit_wheel), ("hatch-layer.tar.gz", hatch_wheel)):
        r = run([DETPACK, "layer", "-o", base / layer, "--wheel", wheel, "--sbom", "-q"], env=env)
        assert r.code == 0, r.stderr
    r = run([DETPACK, "image", "-o", f"oci:{base / 'img'}:1.0", "--layer", base / "flit-layer.tar.gz", "--sbom",
             "-q"], env=env)  # fmt: skip
    assert r.code == 0, r.stderr
    manifest_digest = r.stdout.strip().rsplit("sha256:", 1)[1]
    manifest = base / "img-1.0.manifest.json"  # the manifest blob, under a file name the store takes
    shutil.copy(base / "img" / "blobs" / "sha256" / manifest_digest, manifest)
    store = base / "store"
    s = [DETPACK, "store", "--store", store]
    pushes = [
        [flit_wheel, out["flit"]["fx_flit-1.0.0.tar.gz"], "--provenance", out["flit"]["fx_flit-1.0.0.provenance.json"]],
        [hatch_wheel, *(p for n, p in out["hatchling"].items() if n.endswith(".tar.gz")), "--provenance",
         next(p for n, p in out["hatchling"].items() if n.endswith(".provenance.json"))],
        [base / "flit-layer.tar.gz", "--provenance", base / "flit-layer.tar.gz.provenance.json"],
        [base / "hatch-layer.tar.gz", "--provenance", base / "hatch-layer.tar.gz.provenance.json"],
        [manifest, "--provenance", base / "img.1.0.provenance.json"],
        [base / "hatch-layer.tar.gz.cdx.json", base / "img.1.0.cdx.json"],
    ]  # fmt: skip
    for argv in pushes:
        r = run([*s, "push", *argv], env=env)
        assert r.code == 0, r.stderr
    for ref, target in ((flit_wheel.name, "prod"), (hatch_wheel.name, "prod"), (flit_wheel.name, "staging")):
        assert run([*s, "promote", ref, "--to", target, "--force"], env=env).code == 0
        time.sleep(1.1)  # promotion times are to the second: keep them apart
    entries = [json.loads(line) for line in (store / "log" / "entries.jsonl").read_text().splitlines()]
    out["promoted"] = [e["time"] for e in entries if e["type"] == "promote"]
    out.update(store=store, base=base, flit_wheel=flit_wheel.name, hatch_wheel=hatch_wheel.name, manifest=manifest.name)
    return out


@pytest.fixture
def real(released: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The released store, copied for one test (which may write to it), with its key in this test's HOME."""
    store = tmp_path / "real-store"
    shutil.copytree(released["store"], store)
    shutil.copytree(released["home"] / ".local", Path(os.environ["HOME"]) / ".local")
    return {**released, "store": store}


FLIT = {"fx_flit-1.0.0-py3-none-any.whl", "fx_flit-1.0.0.tar.gz"}
HATCH = {"fx_hatchling-1.0.0-py3-none-any.whl", "fx_hatchling-1.0.0.tar.gz"}


@pytest.mark.slow
def test_each_filter_finds_what_it_should_and_nothing_else(real: dict[str, Any]) -> None:
    store = real["store"]
    every = _names(_query(store))
    assert every == FLIT | HATCH | {"flit-layer.tar.gz", "hatch-layer.tar.gz", real["manifest"],
                                    "hatch-layer.tar.gz.cdx.json", "img.1.0.cdx.json"}  # fmt: skip
    # --dep: PEP 508, names in either spelling; the other build's dependencies do not match
    assert _names(_query(store, "--dep", "flit_core>=3.2,<5")) == FLIT
    assert _names(_query(store, "--dep", "hatchling")) == HATCH
    assert _names(_query(store, "--dep", "flit-core<3")) == set()
    found = _query(store, "--dep", "Flit.Core")["matches"][0]["facts"]
    assert found[0]["filter"] == "dep" and found[0]["value"].startswith("flit-core ")
    # --contains: the layer's and the image's provenance, and the SBOM of the hatchling layer
    assert _names(_query(store, "--contains", "fx-flit==1.*")) == {"flit-layer.tar.gz", real["manifest"]}
    assert _names(_query(store, "--contains", "fx_hatchling")) == {"hatch-layer.tar.gz"}
    assert _names(_query(store, "--contains", "fx-flit>1")) == set()
    # --commit and --repo: the build's source, and the sources of the wheels a layer or image holds
    flit, hatch = real["flit-commit"], real["hatchling-commit"]
    assert _names(_query(store, "--commit", flit[:7])) == FLIT | {"flit-layer.tar.gz", real["manifest"]}
    assert _names(_query(store, "--commit", hatch.upper())) == HATCH | {"hatch-layer.tar.gz"}
    unused = next(p for p in ("0000", "ffff", "abcd") if not flit.startswith(p) and not hatch.startswith(p))
    assert _names(_query(store, "--commit", unused)) == set()
    assert _names(_query(store, "--repo", "ORG/fx-flit")) == FLIT | {"flit-layer.tar.gz", real["manifest"]}
    assert _names(_query(store, "--repo", "nowhere.example")) == set()
    # --builder: exact ids
    assert _names(_query(store, "--builder", CI_BUILDER)) == HATCH
    assert _names(_query(store, "--builder", LOCAL)) == FLIT | {"flit-layer.tar.gz", "hatch-layer.tar.gz",
                                                               real["manifest"]}  # fmt: skip
    assert _names(_query(store, "--builder", CI_BUILDER + "/other")) == set()
    # --name and --kind
    assert _names(_query(store, "--name", "fx_flit-*")) == FLIT
    assert _names(_query(store, "--name", "fx_flit-*.whl")) == {real["flit_wheel"]}
    assert _names(_query(store, "--kind", "layer")) == {"flit-layer.tar.gz", "hatch-layer.tar.gz"}
    assert _names(_query(store, "--kind", "image")) == {real["manifest"]}
    assert _names(_query(store, "--kind", "sbom")) == {"hatch-layer.tar.gz.cdx.json", "img.1.0.cdx.json"}
    assert _names(_query(store, "--kind", "provenance", "--builder", CI_BUILDER)) == {
        "fx_hatchling-1.0.0.provenance.json"
    }
    assert _names(_query(store, "--kind", "wheel", "--name", "*.tar.gz")) == set()
    # filters combine
    assert _names(_query(store, "--dep", "flit-core", "--kind", "sdist")) == {"fx_flit-1.0.0.tar.gz"}
    assert _names(_query(store, "--contains", "fx-flit", "--kind", "image", "--commit", flit[:10])) == {
        real["manifest"]
    }
    assert _names(_query(store, "--contains", "fx-flit", "--builder", CI_BUILDER)) == set()


@pytest.mark.slow
def test_what_was_live_where_and_when(real: dict[str, Any]) -> None:
    store = real["store"]
    first, second, _ = real["promoted"]
    assert _names(_query(store, "--live", "prod")) == {real["hatch_wheel"]}
    assert _names(_query(store, "--live", "staging")) == {real["flit_wheel"]}
    assert _names(_query(store, "--env", "prod")) == {real["hatch_wheel"]}  # no --at: now
    assert _names(_query(store, "--env", "prod", "--at", first)) == {real["flit_wheel"]}
    assert _names(_query(store, "--env", "prod", "--at", second)) == {real["hatch_wheel"]}
    assert _names(_query(store, "--env", "prod", "--at", "2000-01-01")) == set()  # before anything
    assert _names(_query(store, "--env", "staging", "--at", second)) == set()  # staging had nothing yet
    # a time with an offset is the same moment in UTC
    at = dt.datetime.fromisoformat(first.replace("Z", "+00:00")).astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert _names(_query(store, "--env", "prod", "--at", at.isoformat())) == {real["flit_wheel"]}
    assert _names(_query(store, "--live", "prod", "--dep", "flit-core")) == set()  # AND
    assert _names(_query(store, "--live", "staging", "--dep", "flit-core")) == {real["flit_wheel"]}
    history = _query(store, "--env", "prod", "--history")["history"]
    assert [(h["names"][0], h["time"], h["until"]) for h in history] == [
        (real["flit_wheel"], first, second),
        (real["hatch_wheel"], second, None),
    ]
    assert [h["names"][0] for h in _query(store, "--env", "prod", "--history", "--at", first)["history"]] == [
        real["flit_wheel"]
    ]
    assert [h["names"][0] for h in _query(store, "--env", "prod", "--history", "--dep", "hatchling")["history"]] == [
        real["hatch_wheel"]
    ]
    r = run([DETPACK, "store", "--store", store, "query", "--env", "prod", "--history"])
    assert r.code == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    assert r.stdout.splitlines()[0].split()[3:5] == ["wheel", real["flit_wheel"]]
    assert re.search(r"  by \S+  live  FORCED: ", r.stdout.splitlines()[1])


@pytest.mark.slow
def test_text_output_is_one_line_per_artifact_and_json_is_stable(real: dict[str, Any]) -> None:
    store = real["store"]
    s = [DETPACK, "store", "--store", store, "query"]
    r = run([*s, "--dep", "flit-core", "--live", "staging"])
    assert r.code == 0, r.stderr
    digest = sha256(real["flit"][real["flit_wheel"]])
    [line] = r.stdout.splitlines()
    assert line.startswith(f"sha256:{digest[:12]}  wheel  {real['flit_wheel']}  dep flit-core ")
    assert "; live staging since " in line
    first = run([*s, "--contains", "fx-flit", "--json"]).stdout
    assert first == run([*s, "--json", "--contains", "fx-flit"]).stdout
    value = json.loads(first)
    lines = first.splitlines()
    assert list(value) == sorted(value) == ["index", "matches", "notes"] and lines[0] == "{" and lines[-1] == "}"
    start = lines.index('  "matches": [')
    rows = [line.strip().rstrip(",") for line in lines[start + 1 : start + 1 + len(value["matches"])]]
    assert rows == [json.dumps(m, sort_keys=True, ensure_ascii=False) for m in value["matches"]]  # one a line
    assert value["index"]["signed"] is True and value["notes"] == []
    r = run([*s, "--dep", "setuptools<1"])
    assert r.code == 1 and r.stdout == "" and "nothing matches" in r.stderr  # as grep: 1 when nothing matches
    r = run([*s, "--dep", "setuptools<1", "--json"])
    assert r.code == 1 and json.loads(r.stdout)["matches"] == [], r.stdout


@pytest.mark.slow
def test_an_sbom_alone_says_what_a_layer_or_image_holds(real: dict[str, Any], tmp_path: Path) -> None:
    base, store = real["base"], tmp_path / "sboms"
    # a layer pushed without its provenance, and its SBOM: the SBOM says it is a layer and what it holds
    r = run(
        [DETPACK, "store", "--store", store, "push", base / "hatch-layer.tar.gz", base / "hatch-layer.tar.gz.cdx.json"]
    )
    assert r.code == 0, r.stderr
    assert _names(_query(store, "--kind", "layer")) == {"hatch-layer.tar.gz"}
    assert _names(_query(store, "--contains", "fx-hatchling==1.0.0")) == {"hatch-layer.tar.gz"}
    # an image SBOM whose image is not in the store stands for it
    assert run([DETPACK, "store", "--store", store, "push", base / "img.1.0.cdx.json"]).code == 0
    found = _query(store, "--contains", "fx-flit")["matches"]
    assert [(m["kind"], m["names"], m["facts"][0]["value"]) for m in found] == [
        ("sbom", ["img.1.0.cdx.json"], "fx-flit 1.0.0")
    ]
    # a build's own SBOM names declared dependencies, not contents: it holds nothing
    assert (
        run(
            [
                DETPACK,
                "sbom",
                real["flit"]["fx_flit-1.0.0.provenance.json"],
                "--format",
                "cyclonedx",
                "-o",
                tmp_path / "fx.cdx.json",
            ]
        ).code
        == 0
    )
    assert run([DETPACK, "store", "--store", store, "push", tmp_path / "fx.cdx.json"]).code == 0
    assert _names(_query(store, "--kind", "sbom")) == {"hatch-layer.tar.gz.cdx.json", "img.1.0.cdx.json", "fx.cdx.json"}
    assert _names(_query(store, "--contains", "fx-flit")) == {"img.1.0.cdx.json"}
    assert _query(store)["notes"] == []


# -- incremental indexing, rewritten logs, damaged and interrupted indexes ---------------------------


@pytest.fixture
def small(tmp_path: Path) -> seeded_store.Seeded:
    return seeded_store.seed(tmp_path / "store", 120)


def _open(root: Path, path: Path | None = None) -> index.Index:
    return open_index(open_store(str(root)), path)


def test_pushing_more_is_indexed_incrementally(small: seeded_store.Seeded) -> None:
    with _open(small.root) as idx:
        assert idx.coverage.rebuilt == "no index yet" and idx.coverage.size == small.entries
        assert idx.coverage.matches_checkpoint
        before = len(query.query(idx, query.Query.parse(kind="wheel")))
    with _open(small.root) as idx:  # nothing new: reused as it is
        assert (idx.coverage.rebuilt, idx.coverage.added) == (None, 0)
    size = small.entries
    seeded_store.more(small, 30)
    with _open(small.root) as idx:
        assert idx.coverage.rebuilt is None and idx.coverage.added == small.entries - size > 0
        assert idx.coverage.matches_checkpoint  # the frontier carried over gives the signed root
        after = len(query.query(idx, query.Query.parse(kind="wheel")))
        assert after == len(small.releases) > before
    # a push through the CLI (a real writer) is seen by the next query
    wheel = small.root.parent / "late-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"late")
    assert run([DETPACK, "store", "--store", small.root, "push", wheel]).code == 0
    late = _query(small.root, "--name", "late-*")
    assert _names(late) == {wheel.name} and late["index"] == {
        "entries": small.entries + 1,
        "root": late["index"]["root"],
        "signed": True,  # the root the index carried forward is the one the writer signed
    }


def test_a_rewritten_log_rebuilds_the_index_and_nothing_stale_is_answered(small: seeded_store.Seeded) -> None:
    release = small.releases[0]
    assert _names(_query(small.root, "--name", release.wheel_name)) == {release.wheel_name}
    entries = small.root / "log" / "entries.jsonl"
    old = entries.read_text()
    renamed = "renamed-0.0.1-py3-none-any.whl"
    entries.write_text(old.replace(f'"name":"{release.wheel_name}"', f'"name":"{renamed}"', 1))  # same size
    changed = next(i for i, line in enumerate(entries.read_text().splitlines()) if renamed in line)
    # this reader verified the whole log before: a log that no longer extends it is refused
    with pytest.raises(StoreTrustError, match="no longer extends the tree of size"):
        _open(small.root)
    seen = Path(os.environ["HOME"]) / ".cache" / "detpack" / "verified"

    def forget() -> None:  # a reader that never read this store
        shutil.rmtree(seen, ignore_errors=True)

    forget()
    with _open(small.root) as idx:
        assert idx.coverage.rebuilt == "the log no longer extends what the index covered"
        # the index holds what the store's key signed: the log up to the changed entry, not the change
        assert idx.coverage.size == changed and idx.coverage.matches_checkpoint
        assert query.query(idx, query.Query.parse(name=release.wheel_name)) == ()
        assert query.query(idx, query.Query.parse(name=renamed)) == ()
    # the log put back: what the key signed is believed again (the index covered a prefix of it: extended)
    entries.write_text(old)
    with _open(small.root) as idx:
        assert idx.coverage.size == small.entries and idx.coverage.matches_checkpoint
        assert [m.names for m in query.query(idx, query.Query.parse(name=release.wheel_name))] == [
            (release.wheel_name,)
        ]
    # a rolled-back log (fewer entries than the index covered): refused by this reader, rebuilt for a new one
    lines = old.splitlines(keepends=True)
    entries.write_text("".join(lines[:-5]))
    checkpoints = small.root / "log" / "checkpoints.jsonl"
    checkpoints.write_text("".join(checkpoints.read_text().splitlines(keepends=True)[: len(lines) - 5]))
    with pytest.raises(StoreTrustError, match=f"no longer extends the tree of size {small.entries} "):
        _open(small.root)
    forget()
    with _open(small.root) as idx:
        assert idx.coverage.rebuilt == "the log no longer extends what the index covered"
        assert idx.coverage.size == small.entries - 5 and idx.coverage.matches_checkpoint


def test_two_copies_of_a_store_that_went_apart_never_share_answers(small: seeded_store.Seeded, tmp_path: Path) -> None:
    fork = tmp_path / "fork"
    shutil.copytree(small.root, fork)  # the same origin, so the same default index
    for root, name in ((small.root, "only-here-1.0-py3-none-any.whl"), (fork, "only-there-1.0-py3-none-any.whl")):
        (tmp_path / name).write_bytes(name.encode())
        assert run([DETPACK, "store", "--store", root, "push", tmp_path / name]).code == 0
    assert _names(_query(small.root, "--name", "only-*")) == {"only-here-1.0-py3-none-any.whl"}
    assert _names(_query(fork, "--name", "only-*")) == {"only-there-1.0-py3-none-any.whl"}
    assert _names(_query(small.root, "--name", "only-*")) == {"only-here-1.0-py3-none-any.whl"}
    # another store through the same --index file: rebuilt for it
    other = seeded_store.seed(tmp_path / "other", 20, seed=5)
    shared = tmp_path / "shared.sqlite"
    _open(small.root, shared).close()
    with _open(other.root, shared) as idx:
        assert idx.coverage.rebuilt == "the index is of another store" and idx.coverage.size == other.entries


def test_a_damaged_or_half_built_index_is_never_used(
    small: seeded_store.Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "idx" / "store.sqlite"
    _open(small.root, path).close()
    path.write_bytes(b"not a database" * 100)
    with _open(small.root, path) as idx:
        assert idx.coverage.rebuilt == "no index yet" and idx.coverage.size == small.entries
    good = path.read_bytes()
    # a rebuild that fails half-way leaves the previous index as it was, and no temporary
    calls = {"n": 0}
    apply = fold_module.Fold.apply

    def failing(self: fold_module.Fold, entry: dict[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 50:
            raise RuntimeError("killed")
        apply(self, entry)

    monkeypatch.setattr(fold_module.Fold, "apply", failing)
    with pytest.raises(RuntimeError):
        open_index(open_store(str(small.root)), path, rebuild=True)
    assert path.read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["store.sqlite", "store.sqlite.lock"]
    # an incremental update that fails half-way is rolled back: the index still covers what it did
    size = small.entries
    seeded_store.more(small, 100)
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        _open(small.root, path)
    with sqlite3.connect(path) as db:
        assert dict(db.execute("SELECT key, value FROM meta"))["size"] == str(size)
    monkeypatch.setattr(fold_module.Fold, "apply", apply)
    with _open(small.root, path) as idx:
        assert (idx.coverage.rebuilt, idx.coverage.added) == (None, small.entries - size)
    # a temporary a killed rebuild left (its pid is gone) is swept
    leftover = path.with_name(".detpack-tmp-999999999-store.sqlite.part")
    leftover.write_bytes(b"half")
    _open(small.root, path).close()
    assert not leftover.exists()


def test_the_default_index_lives_in_the_cache_named_by_the_store_origin(
    small: seeded_store.Seeded, isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(small.root) as idx:
        origin = json.loads((small.root / "log" / "entries.jsonl").read_text().splitlines()[0])["origin"]
        assert idx.coverage.path == index.default_path(origin, str(small.root))
        assert idx.coverage.path.parent == isolated_home / ".cache" / "detpack" / "index"
    moved = tmp_path / "moved"
    small.root.rename(moved)
    with _open(moved) as idx:  # the same store elsewhere: the same index, reused
        assert idx.coverage.path == index.default_path(origin, "anything") and idx.coverage.rebuilt is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with _open(moved) as idx:
        assert idx.coverage.path.parent == tmp_path / "cache" / "detpack" / "index"
    custom = tmp_path / "custom.sqlite"
    assert _query(moved, "--index", custom)["index"]["entries"] == small.entries and custom.is_file()


def test_unreadable_provenance_and_sboms_are_noted_and_skipped(small: seeded_store.Seeded, tmp_path: Path) -> None:
    seeder = seeded_store.Seeder(small.root, small)
    junk = seeder.push("provenance", "junk.provenance.json", b"{not json", subjects=[], keyids=[], signed=False)
    seeder.backend.flush()
    broken = tmp_path / "broken.cdx.json"
    broken.write_text('{"bomFormat": "SPDX"}')
    assert run([DETPACK, "store", "--store", small.root, "push", broken]).code == 0
    r = run([DETPACK, "store", "--store", small.root, "query", "--kind", "sbom", "--name", "broken*"])
    assert r.code == 0, r.stderr
    assert r.stdout.split()[1:3] == ["sbom", "broken.cdx.json"]
    assert "WARNING the index skipped 2 unreadable blobs (--json lists them): provenance sha256:" in r.stderr
    notes = _query(small.root, "--kind", "provenance", "--name", "junk*")
    assert _names(notes) == {"junk.provenance.json"}
    first, second = notes["notes"]
    assert first["digest"] == f"sha256:{junk}" and "not JSON" in first["message"]
    assert "not a CycloneDX SBOM" in second["message"]
    assert len(_query(small.root, "--kind", "wheel")["matches"]) == len(small.releases)  # the rest is indexed


# -- any backend: the index reads the store through its API only -----------------------------------


def _release_files(work: Path) -> tuple[Path, Path, str]:
    """A wheel and its provenance as ``statement.statement`` writes one (setuptools 69.5.1, built in CI)."""
    work.mkdir(parents=True, exist_ok=True)
    wheel = work / "anywhere-1.0-py3-none-any.whl"
    wheel.write_bytes(b"a wheel stored anywhere")
    commit = "c0ffee" + "0" * 34
    subjects = [seeded_store.statement.Subject(wheel.name, sha256(wheel))]
    record = seeded_store.build_statement(
        subjects, "setuptools.build_meta", [("setuptools", "69.5.1"), ("wheel", "0.43.0")], commit,
        "https://example.com/org/anywhere.git", seeded_store.CI, 0,
    )  # fmt: skip
    provenance = work / "anywhere-1.0.provenance.json"
    provenance.write_bytes(seeded_store.canonical_json(record))
    return wheel, provenance, commit


def _answers(url: str) -> None:
    s = [DETPACK, "store", "--store", url]
    for ask, expected in (
        (["--dep", "setuptools<70"], {"anywhere-1.0-py3-none-any.whl"}),
        (["--dep", "setuptools>=70"], set()),
        (["--commit", "c0ffee", "--builder", seeded_store.CI], {"anywhere-1.0-py3-none-any.whl"}),
        (["--live", "prod"], {"anywhere-1.0-py3-none-any.whl"}),
    ):
        r = run([*s, "query", *ask, "--json"])
        assert r.code == (0 if expected else 1), r.stderr
        assert {m["names"][0] for m in json.loads(r.stdout)["matches"]} == expected, ask


def test_a_store_in_memory_is_indexed_through_the_backend_protocol(tmp_path: Path) -> None:
    from test_store import MemoryBackend

    from detpack.store import Store, StoreKeys

    wheel, provenance, _ = _release_files(tmp_path / "in")
    store = Store(MemoryBackend(), StoreKeys(tmp_path / "keys"))  # type: ignore[arg-type]
    store.push([wheel], provenance)
    store.promote(wheel.name, "prod", [], force=True, environ={})
    with open_index(store, tmp_path / "memory.sqlite") as idx:
        found = query.query(idx, query.Query.parse(dep=["setuptools<70"], live="prod"))
        assert [m.names for m in found] == [(wheel.name,)] and idx.coverage.matches_checkpoint


@pytest.mark.integration
def test_registry_and_postgresql_stores_answer_the_same(tmp_path: Path, registry: str, postgres: Any) -> None:
    wheel, provenance, _ = _release_files(tmp_path / "in")
    for url in (f"oci://{registry}/stores/query", f"{postgres.createdb('query')}?blobs={tmp_path / 'blobs'}"):
        s = [DETPACK, "store", "--store", url]
        assert run([*s, "push", wheel, "--provenance", provenance]).code == 0
        assert run([*s, "promote", wheel.name, "--to", "prod", "--force"]).code == 0
        _answers(url)


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dep", "setuptools<<70"], "--dep 'setuptools<<70': not a requirement such as 'setuptools<70' ("),
        (["--dep", "setuptools; python_version<'3'"], "give a name and a version specifier only, not a marker"),
        (["--contains", "requests[socks]"], "--contains 'requests[socks]': give a name and a version specifier only"),
        (["--contains", "!!"], "--contains '!!': not a requirement"),
        (["--env", "prod", "--at", "yesterday"], "--at 'yesterday': not a time (give an ISO 8601 date or time"),
        (["--at", "2026-01-01"], "--at: give --env ENV too"),
        (["--history"], "--history: give --env ENV"),
        (["--commit", "xyz"], "--commit 'xyz': not a commit id or its prefix"),
        (["--kind", "widget"], "--kind 'widget': not a kind (one of wheel, sdist, layer, image, config, sbom, file"),
        (["--builder", ""], "--builder: give a value"),
        (["--live", "nowhere"], "nowhere: nothing has been promoted to this environment (environments: "),
    ],
)
def test_bad_input_is_one_line_naming_the_flag_exit_2(
    small: seeded_store.Seeded, argv: list[str], message: str
) -> None:
    r = run([DETPACK, "store", "--store", small.root, "query", *argv])
    assert r.code == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and message in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_query_parse_is_the_one_validating_constructor() -> None:
    q = query.Query.parse(dep=["Flit_Core>=3"], commit="ABC123", env="prod", at="2026-03-14")
    assert q.commit == "abc123" and q.at == dt.datetime(2026, 3, 14, tzinfo=dt.UTC)
    assert str(q.dependencies[0].specifier) == ">=3"
    with pytest.raises(ConfigError):
        query.Query.parse(kind="artifact")
    assert query.moment("2026-03-14T09:00:00+09:00", "--at") == dt.datetime(2026, 3, 14, tzinfo=dt.UTC)


# -- a seeded store of 10,000+ entries, checked against what was put in it ----------------------------


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[seeded_store.Seeded, Path]]:
    base = tmp_path_factory.mktemp("large")
    yield seeded_store.seed(base / "store", 10_000, seed=7, keys=base / "keys"), base / "index.sqlite"


def _digests(matches: tuple[query.Match, ...]) -> set[str]:
    return {m.digest for m in matches}


def test_a_large_seeded_store_answers_every_query_kind_correctly(large: tuple[seeded_store.Seeded, Path]) -> None:
    seeded, path = large
    assert seeded.entries >= 10_000
    releases, layers = seeded.releases, seeded.layers
    wheels_of = {r.wheel: r for r in releases}
    with open_index(open_store(str(seeded.root)), path) as idx:
        assert idx.coverage.size == seeded.entries and idx.coverage.matches_checkpoint

        def ask(**given: Any) -> set[str]:
            return _digests(query.query(idx, query.Query.parse(**given)))

        def layers_holding(names: set[tuple[str, str]]) -> set[str]:
            return {layer.digest for layer in layers if names & set(layer.wheels)}

        old = {
            d
            for r in releases
            for d in (r.wheel, r.sdist)
            if Version(dict(r.deps).get("setuptools", "999")) < Version("70")
        }
        assert ask(dep=["setuptools<70"]) == old and 0 < len(old) < len(releases) * 2
        assert ask(dep=["setuptools<70", "wheel==0.42.0"]) == {
            d for r in releases for d in (r.wheel, r.sdist)
            if Version(dict(r.deps).get("setuptools", "999")) < Version("70") and dict(r.deps).get("wheel") == "0.42.0"
        }  # fmt: skip
        assert ask(dep=["setuptools>=999"]) == set()
        target = layers[len(layers) // 2].wheels[0]
        assert ask(contains=[f"{target[0]}=={target[1]}"]) == layers_holding({target}) != set()
        project = target[0]
        assert ask(contains=[f"{project}>=1.2"]) == layers_holding(
            {(r.project, r.version) for r in releases if r.project == project and Version(r.version) >= Version("1.2")}
        )  # fmt: skip
        assert ask(contains=["no-such-project"]) == set()
        commit = releases[100].commit[:8]
        built = [r for r in releases if r.commit.startswith(commit)]
        assert ask(commit=commit) == {d for r in built for d in (r.wheel, r.sdist)} | layers_holding(
            {(r.project, r.version) for r in built}
        )  # fmt: skip
        in_org3 = [r for r in releases if "/org3/" in r.repository]
        assert ask(repo="/org3/") == {d for r in in_org3 for d in (r.wheel, r.sdist)} | layers_holding(
            {(r.project, r.version) for r in in_org3}
        )  # fmt: skip
        assert ask(builder=seeded_store.CI) == {
            d for r in releases if r.builder == seeded_store.CI for d in (r.wheel, r.sdist)
        }
        assert ask(builder=seeded_store.LOCAL) == {
            d for r in releases if r.builder == seeded_store.LOCAL for d in (r.wheel, r.sdist)
        } | {layer.digest for layer in layers}  # fmt: skip
        assert ask(kind="layer") == {layer.digest for layer in layers}
        assert len(ask(kind="sbom")) == sum(1 for layer in layers if layer.sbom)
        assert ask(name="proj0001-*.whl") == {r.wheel for r in releases if r.project == "proj0001"}
        for env in seeded_store.ENVIRONMENTS:
            assert ask(live=env) == {seeded.live(env)}
            history = query.history(idx, env)
            assert [(p.log_entry - 1, p.digest) for p in history] == [
                (p.log_index, p.digest) for p in seeded.promotions if p.env == env
            ]
        for step in range(0, seeded.entries, 997):
            at = seeded_store.time_of(step)
            expected = seeded.live("prod", at)
            assert ask(env="prod", at=at.isoformat()) == ({expected} if expected else set())
        held = query.query(idx, query.Query.parse(kind="sdist"))
        assert {m.digest for m in held if m.held} == set(seeded.held)
        assert all(
            wheels_of[m.digest].wheel_name == m.names[0] for m in query.query(idx, query.Query.parse(kind="wheel"))
        )


def test_the_index_agrees_with_the_stores_own_replay(large: tuple[seeded_store.Seeded, Path]) -> None:
    seeded, path = large
    store = open_store(str(seeded.root))
    state = store.state()
    with open_index(store, path) as idx:
        rows = {
            d: (k, f, p)
            for d, k, f, p in idx.db.execute("SELECT digest, item_kind, first_index, provenance FROM items")
        }
        names = {}
        for digest, name in idx.db.execute("SELECT digest, name FROM names ORDER BY position, name"):
            names.setdefault(digest, []).append(name)
        promotions = [
            tuple(r) for r in idx.db.execute("SELECT log_index, env, digest FROM promotions ORDER BY log_index")
        ]
    assert set(rows) == set(state.items)
    for digest, item in state.items.items():
        linked = store.provenance_of(state, item)
        kind, first, link = rows[digest]
        assert (kind, first, names.get(digest, [])) == (item.kind, item.index, item.names)
        if item.kind == "artifact":
            assert link == (linked.digest if linked else None)
    assert promotions == [(p.index, p.env, p.digest) for p in state.promotions]


def test_a_small_seeded_store_is_a_real_store(tmp_path: Path) -> None:
    seeded = seeded_store.seed(tmp_path / "store", 300, seed=3)
    audit = verify_store(LocalBackend(seeded.root), None)
    assert audit.ok, audit.problems
    assert audit.entries == seeded.entries


def test_an_unknown_environment_is_refused(small: seeded_store.Seeded) -> None:
    with _open(small.root) as idx, pytest.raises(StoreError, match="nothing has been promoted"):
        query.history(idx, "nowhere")
