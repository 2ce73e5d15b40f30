"""Unlocked builds reuse what they did before: the resolution, the environment (shared by the sdist
and wheel phases), and say so; the bytes never change, and nothing a hook does reaches either."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import textwrap
import time
from pathlib import Path

from conftest import DETPACK, FIXTURES, digests, in_tree_backend, materialize, run
from detpack.build import reuse


def _build(src: Path, out: Path, links: Path, root: Path, *extra: object) -> str:
    r = run(
        [DETPACK, "build", src, "-o", out, "--find-links", links, "--offline", "--installer", "uv", "-v", *extra],
        env={"DETPACK_BUILD_ROOT": str(root)},
    )
    assert r.code == 0, r.stderr
    return r.stderr


def _reused(out: Path) -> dict[str, list[str]]:
    record = json.loads(next(out.glob("*.provenance.json")).read_text())
    byproducts = record["predicate"]["runDetails"]["byproducts"]
    return next((b["annotations"] for b in byproducts if b["name"] == "reused"), {})


def test_a_repeat_build_resolves_and_installs_nothing_and_writes_the_same_bytes(
    tmp_path: Path, wheelhouse: Path
) -> None:
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    root = tmp_path / "root"
    first = _build(src, tmp_path / "a", wheelhouse, root)
    # One resolution and one install for the whole build: the wheel phase takes the sdist phase's
    # resolution and its environment (every file checked), moved to its own path.
    assert first.count("uv pip compile") == 1 and first.count("uv pip install") == 1, first
    assert first.count("made cached build environment files-") == 1, first
    wheel_phase = first.split("building wheel", 1)[1]
    assert "taking the resolution" in wheel_phase and "reusing cached build environment files-" in wheel_phase
    second = _build(src, tmp_path / "b", wheelhouse, root)
    assert "uv pip" not in second, second  # no installer ran at all
    assert second.count("taking the resolution of ") == 2 and second.count("reusing cached build environment") == 2
    assert digests(tmp_path / "b", "*.[wt][ha][lr]*") == digests(tmp_path / "a", "*.[wt][ha][lr]*")
    said = _reused(tmp_path / "b")
    for dist in ("sdist", "wheel"):
        assert any(s.startswith("resolution of ") and "no index asked" in s for s in said[dist]), said
        assert any(s.startswith("environment files-") for s in said[dist]), said
    # Without the cache the same build resolves and installs again (the other way was taken),
    # and writes the same bytes.
    fresh = _build(src, tmp_path / "c", wheelhouse, root, "--no-cache")
    assert fresh.count("uv pip compile") == 2 and "taking the resolution" not in fresh
    assert digests(tmp_path / "c", "*.[wt][ha][lr]*") == digests(tmp_path / "a", "*.[wt][ha][lr]*")
    assert _reused(tmp_path / "c") == {}


def test_a_changed_find_links_folder_or_refresh_resolves_again(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    links = tmp_path / "links"
    shutil.copytree(wheelhouse, links)
    root = tmp_path / "root"
    _build(src, tmp_path / "a", links, root)
    assert "uv pip compile" not in _build(src, tmp_path / "b", links, root)
    (links / "fx_newcomer-1.0-py3-none-any.whl").write_bytes(b"")  # the folder offers something else now
    assert _build(src, tmp_path / "c", links, root).count("uv pip compile") == 1
    assert _build(src, tmp_path / "d", links, root, "--refresh").count("uv pip compile") == 2


def test_an_index_resolution_stands_for_its_time_a_damaged_one_never(tmp_path: Path) -> None:
    facts = ["asked setuptools>=61", "python 3.11"]
    sha = "a" * 64
    chosen = (reuse.ChosenFile("setuptools", "80.0", sha, "https://files.example/setuptools-80.0-py3-none-any.whl"),)
    reuse.remember(tmp_path, facts, reuse.Resolution(chosen, 1000.0, index=True))
    assert reuse.recall(tmp_path, facts, ttl=600, now=1599.0) == reuse.Resolution(chosen, 1000.0, True)
    assert reuse.recall(tmp_path, facts, ttl=600, now=1601.0) is None  # the index may have changed
    assert reuse.recall(tmp_path, facts, ttl=600, now=999.0) is None  # from the future: a clock went back
    assert reuse.recall(tmp_path, [*facts, "setting UV_INDEX_URL=x"], ttl=600, now=1100.0) is None
    reuse.remember(tmp_path, facts, reuse.Resolution(chosen, 1000.0, index=False))
    assert reuse.recall(tmp_path, facts, ttl=600, now=10.0**9) is not None  # no index: only the key matters
    entry = next((tmp_path / "resolutions").glob("*.json"))
    good = json.loads(entry.read_text())
    for damaged in (
        {**good, "files": [{**good["files"][0], "sha256": "not-a-digest"}]},
        {**good, "files": [{**good["files"][0], "url": "https://x/a\n--index-url https://evil"}]},
        {**good, "files": []},
        {**good, "index": "no"},
        {"files": good["files"]},
    ):
        entry.write_text(json.dumps(damaged))
        assert reuse.recall(tmp_path, facts, ttl=600, now=1100.0) is None, damaged
    entry.write_text("{not json")
    assert reuse.recall(tmp_path, facts, ttl=600, now=1100.0) is None


HOSTILE_BACKEND = textwrap.dedent(
    """
    import os, sys
    from setuptools import build_meta as _real

    def _plant():
        tries = [os.path.join(sys.prefix, "lib", "planted.pth")]
        for top in ("/tmp/detpack-build", os.path.dirname(os.environ.get("HOME", "/")), "{root}"):
            for sub in ("cache/resolutions", "cache/requires", "cache", "../cache/resolutions"):
                tries.append(os.path.join(top, sub, "planted.json"))
        for folder, dirs, files in os.walk("/tmp"):
            if os.path.basename(folder) in ("resolutions", "site-packages", "bin"):
                tries.append(os.path.join(folder, "planted.json"))
        for path in tries:
            try:
                with open(path, "w") as f:
                    f.write('{{"files": []}}')
            except OSError:
                pass
        with open("attempts.txt", "w") as f:  # into the sdist: the test sees what was tried
            f.write("\\n".join(tries) + "\\n")

    def get_requires_for_build_sdist(config_settings=None):
        _plant()
        return _real.get_requires_for_build_sdist(config_settings)

    def get_requires_for_build_wheel(config_settings=None):
        _plant()
        return _real.get_requires_for_build_wheel(config_settings)

    def build_sdist(sdist_directory, config_settings=None):
        _plant()
        return _real.build_sdist(sdist_directory, config_settings)

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        _plant()
        return _real.build_wheel(wheel_directory, config_settings, metadata_directory)
    """
)


def test_a_hook_reaches_neither_the_remembered_resolutions_nor_the_environments(
    tmp_path: Path, wheelhouse: Path
) -> None:
    root = tmp_path / "root"
    src = in_tree_backend(
        tmp_path / "src", "hostile_backend", HOSTILE_BACKEND.format(root=root), name="fx-planter", also="attempts.txt"
    )
    _build(src, tmp_path / "a", wheelhouse, root)
    time.sleep(0.01)
    second = _build(src, tmp_path / "b", wheelhouse, root)
    with tarfile.open(next((tmp_path / "b").glob("*.tar.gz"))) as sdist:
        member = next(m for m in sdist.getmembers() if m.name.endswith("/attempts.txt"))
        tried = sdist.extractfile(member).read().decode()  # type: ignore[union-attr]
    assert "site-packages/planted.json" in tried and "cache/resolutions/planted.json" in tried, tried
    planted = [p for p in root.rglob("planted*")]
    assert planted == [], planted
    # The cache is as detpack left it: the second build took both, every environment file checked.
    assert second.count("taking the resolution of ") == 2 and second.count("reusing cached build environment") == 2
    for entry in (root / "cache" / "resolutions").glob("*.json"):
        assert json.loads(entry.read_text())["files"], entry


SCRIPT_BACKEND = textwrap.dedent(
    """
    import subprocess
    from setuptools import build_meta as _real
    from setuptools.build_meta import *  # noqa: F403

    def _script():  # a console script of a build requirement, found on PATH as backends find cmake or meson
        subprocess.run(["wheel", "--help"], check=True, capture_output=True)

    def build_sdist(sdist_directory, config_settings=None):
        _script()
        return _real.build_sdist(sdist_directory, config_settings)

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        _script()
        return _real.build_wheel(wheel_directory, config_settings, metadata_directory)
    """
)


def test_a_requirements_script_runs_in_both_phases_of_a_shared_environment(tmp_path: Path, wheelhouse: Path) -> None:
    """The wheel phase takes the environment the sdist phase made, at another path: its scripts still run."""
    requires = '"setuptools>=61", "wheel"'
    src = in_tree_backend(tmp_path / "src", "script_backend", SCRIPT_BACKEND, name="fx-script-user", requires=requires)
    log = _build(src, tmp_path / "a", wheelhouse, tmp_path / "root")
    assert "reusing cached build environment files-" in log.split("building wheel", 1)[1], log


def test_a_cached_environment_changed_with_its_times_put_back_is_remade(tmp_path: Path, wheelhouse: Path) -> None:
    """An entry is taken unhashed only while no file of it changed (change times, which a writer cannot
    put back); a file rewritten with its size and mtime restored is caught, and the entry remade."""
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    root = tmp_path / "root"
    _build(src, tmp_path / "a", wheelhouse, root)
    entry = next((root / "cache").glob("files-*"))
    victim = next(entry.glob("lib/python*/site-packages/setuptools/__init__.py"))
    before = victim.stat()
    text = victim.read_bytes()
    victim.write_bytes(text.replace(b"import", b"imqort", 1))  # same size
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert victim.stat().st_size == before.st_size and victim.stat().st_mtime_ns == before.st_mtime_ns
    log = _build(src, tmp_path / "b", wheelhouse, root)
    assert "changed or is incomplete: remaking it" in log, log
    assert digests(tmp_path / "b", "*.[wt][ha][lr]*") == digests(tmp_path / "a", "*.[wt][ha][lr]*")
