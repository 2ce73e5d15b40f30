"""The install phase: which installer, what it records, what is remembered between builds.

uv (the default where it is installed) records every installed file's sha256 and URL, like pip
with ``--report``; pip's settings reach uv as uv's variables; a backend's
``get_requires_for_build_*`` answer is reused only for the same environment, source and
settings, and ``--no-cache`` asks again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, run, sha256


def _deps(out: Path) -> dict[str, dict[str, object]]:
    [prov] = out.glob("*.provenance.json")
    statement = json.loads(prov.read_bytes())
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    return {d["name"]: d for d in deps if "uri" in d and str(d["uri"]).startswith("pkg:pypi/")}


def _installer(out: Path) -> str:
    [prov] = out.glob("*.provenance.json")
    statement = json.loads(prov.read_bytes())
    return str(statement["predicate"]["buildDefinition"]["externalParameters"]["installer"])


def _env(tmp_path: Path) -> dict[str, str]:
    return {"DETPACK_BUILD_ROOT": str(tmp_path / "root")}  # fresh: nothing remembered from other tests


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_every_installed_file_is_recorded_with_its_sha256(installer: str, tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    out = tmp_path / "out"
    argv = [DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "--installer", installer]
    r = run(argv, env=_env(tmp_path))
    assert r.code == 0, r.stderr
    assert _installer(out) == installer
    flit = _deps(out)["flit-core"]
    version = flit["annotations"]["version"]  # type: ignore[index]
    [wheel] = wheelhouse.glob(f"flit_core-{version}-*.whl")
    assert flit["digest"] == {"sha256": sha256(wheel)}, flit


def test_the_default_installer_is_uv_when_it_is_there(tmp_path: Path, wheelhouse: Path) -> None:
    from detpack.build import deps

    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    out = tmp_path / "out"
    r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"], env=_env(tmp_path))
    assert r.code == 0, r.stderr
    expected = deps.choose_installer(os.environ)[0]  # uv, unless this machine's pip.conf says what uv cannot
    assert _installer(out) == expected


def test_choosing_the_installer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """uv when it is installed and pip's configuration can be told to it; pip otherwise."""
    from detpack.build import deps

    told = tmp_path / "told.conf"
    told.write_text("[global]\nindex-url = https://pypi.example/simple\ncert = /etc/ca.pem\ntimeout = 60\n")
    untold = tmp_path / "untold.conf"
    untold.write_text("[install]\nclient-cert = /etc/me.pem\n")
    monkeypatch.setattr(deps, "PIP_CONFIG_FILES", (str(told),))
    assert deps.choose_installer(os.environ)[0] == "uv"
    monkeypatch.setattr(deps, "PIP_CONFIG_FILES", (str(told), str(untold)))
    installer, _, why = deps.choose_installer(os.environ)
    assert installer == "pip" and "client-cert" in why, why
    # without uv (no uv package importable, no uv on PATH): pip
    monkeypatch.setattr(deps, "PIP_CONFIG_FILES", ())
    monkeypatch.setitem(__import__("sys").modules, "uv", None)
    assert deps.choose_installer({"PATH": str(tmp_path)}) == ("pip", None, "uv is not installed")


def test_pip_settings_reach_uv_as_its_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from detpack.build import deps

    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = https://a.example/simple\nextra-index-url =\n  https://b.example/simple\n"
        "  https://c.example/simple\nfind-links = /links/one /links/two\n[install]\nconstraint = /c.txt\n"
    )
    monkeypatch.setattr(deps, "PIP_CONFIG_FILES", (str(conf),))
    uv = deps.uv_settings({"PIP_INDEX_URL": "https://env.example/simple", "UV_CONSTRAINT": "/mine.txt"})
    assert uv == {
        "UV_DEFAULT_INDEX": "https://env.example/simple",  # the variable wins over the file, as for pip
        "UV_INDEX": "https://b.example/simple https://c.example/simple",
        "UV_FIND_LINKS": "/links/one,/links/two",  # uv's list is comma-separated
    }  # UV_CONSTRAINT was passed: the caller's own uv setting is kept


def test_pip_constraint_reaches_uv(tmp_path: Path, wheelhouse: Path) -> None:
    """PIP_CONSTRAINT pins the backend under uv too (the perturbation: without it the build works)."""
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    pins = tmp_path / "constraints.txt"
    pins.write_text("flit_core==0.0.1\n")
    argv = [DETPACK, "build", src, "-o", tmp_path / "out", "--find-links", wheelhouse, "--offline", "--installer", "uv"]
    r = run(argv, env={**_env(tmp_path), "PIP_CONSTRAINT": str(pins)})
    assert r.code == 2 and "flit-core==0.0.1" in r.stderr, r.stderr
    assert run(argv, env=_env(tmp_path)).code == 0


def test_the_backends_answer_is_reused_only_for_the_same_question(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    env = _env(tmp_path)

    def build(name: str, *extra: str) -> tuple[str, bytes]:
        out = tmp_path / name
        r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "-v", *extra], env=env)
        assert r.code == 0, r.stderr
        return r.stderr, next(out.glob("*.whl")).read_bytes()

    asked = "get_requires_for_build_wheel"
    first, wheel = build("first")
    assert asked in first and "answered before" not in first
    again, same = build("again")
    assert asked not in again and "answered before" in again and same == wheel
    fresh, _ = build("fresh", "--no-cache")
    assert asked in fresh and "answered before" not in fresh
    (src / "fx_setuptools_basic" / "extra.py").write_text("X = 1\n")  # another source tree: another question
    edited, _ = build("edited")
    assert asked in edited and "answered before" not in edited


def test_builds_at_once_each_take_their_own_set_of_download_caches(tmp_path: Path) -> None:
    """A set is in one build's root at a time (where installers hard-link from it); sets come back
    to the pool afterwards, the most recent DOWNLOAD_SETS kept."""
    import time

    from detpack.build.environment import DOWNLOAD_POOLS, DOWNLOAD_SETS, build_root

    pool = tmp_path / "root" / "cache" / DOWNLOAD_POOLS / "fx-one"
    for i in range(DOWNLOAD_SETS + 1):
        (pool / f"set{i}").mkdir(parents=True)
        (pool / f"set{i}" / "marker").write_text(f"{i}\n")
        os.utime(pool / f"set{i}", (time.time() - 100 + i, time.time() - 100 + i))
    one_root = build_root(tmp_path / "root", private=True, project="fx-one")
    with one_root as one, build_root(tmp_path / "root", private=True, project="fx-one") as two:
        mine = (one.downloads / "marker").read_text(), (two.downloads / "marker").read_text()
        assert mine == (f"{DOWNLOAD_SETS}\n", f"{DOWNLOAD_SETS - 1}\n")  # the most recent first, one each
        assert len(list(pool.iterdir())) == DOWNLOAD_SETS - 1
    kept = sorted((p / "marker").read_text() for p in pool.iterdir())
    assert len(kept) == DOWNLOAD_SETS and "0\n" not in kept  # the oldest set went


def test_a_set_of_download_caches_is_only_used_again_by_the_same_project(tmp_path: Path) -> None:
    """An install's code can change the set it used (it is read-write to installs): what one project's
    dependencies left there never reaches another project's build."""
    from detpack.build.environment import DOWNLOAD_POOLS, build_root

    with build_root(tmp_path / "root", private=True, project="fx-tainted") as tainted:
        tainted.downloads.mkdir()
        (tainted.downloads / "poison").write_text("left by an install of fx-tainted\n")
    pools = tmp_path / "root" / "cache" / DOWNLOAD_POOLS
    assert [p.name for p in pools.iterdir()] == ["fx-tainted"]  # the perturbation: the set went back
    with build_root(tmp_path / "root", private=True, project="fx-other") as other:
        assert not (other.downloads / "poison").exists()
    with build_root(tmp_path / "root", private=True, project="fx-tainted") as again:
        assert (again.downloads / "poison").is_file()  # the same project gets its own set back
