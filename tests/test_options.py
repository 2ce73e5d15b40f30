"""python -m build's options keep their meaning under detpack: --metadata, --env-dir,
--sdist-extract-dir, --installer uv, -C; and the uv installer gives pip's exact bytes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, digests, materialize, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_metadata_matches_python_m_build(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    ours = run([DETPACK, "build", src, "--metadata", "--find-links", wheelhouse, "--offline"])
    assert ours.code == 0, ours.stderr
    theirs = run(
        [sys.executable, "-m", "build", src, "--metadata"],
        env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)},
    )
    assert theirs.code == 0, theirs.stderr
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    assert json.loads(ours.stdout)["name"] == "fx-flit"
    assert not (src / "dist").exists()


def test_env_dir_and_sdist_extract_dir_are_used_and_recorded(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    env_dir, extract = tmp_path / "env", tmp_path / "extract"
    r = run(
        [
            DETPACK,
            "build",
            src,
            "-o",
            tmp_path / "out",
            "--env-dir",
            env_dir,
            "--sdist-extract-dir",
            extract,
            "--find-links",
            wheelhouse,
            "--offline",
        ]
    )
    assert r.code == 0, r.stderr
    assert (extract / "fx_setuptools_basic-1.0.0" / "PKG-INFO").is_file()  # kept, as with build
    assert not env_dir.exists()  # removed on success, as with build
    prov = json.loads(next((tmp_path / "out").glob("*.provenance.json")).read_bytes())
    internal = prov["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["envDir"] == str(env_dir) and internal["sdistExtractDir"] == str(extract)
    r = run([DETPACK, "build", src, "-o", tmp_path / "out2", "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stderr
    assert digests(tmp_path / "out") == digests(tmp_path / "out2")


def test_uv_installer_gives_the_same_bytes_as_pip(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "hatchling", tmp_path / "src", 0o022)
    common = ["--find-links", wheelhouse, "--offline"]
    r = run([DETPACK, "build", src, "-o", tmp_path / "pip", *common])
    assert r.code == 0, r.stderr
    r = run([DETPACK, "build", src, "-o", tmp_path / "uv", "--installer", "uv", *common])
    assert r.code == 0, r.stderr
    assert digests(tmp_path / "pip") == digests(tmp_path / "uv")
    prov = json.loads(next((tmp_path / "uv").glob("*.provenance.json")).read_bytes())
    deps = {d["name"]: d for d in prov["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["hatchling"]["annotations"]["version"] == "1.33.0"
    assert prov["predicate"]["buildDefinition"]["externalParameters"]["installer"] == "uv"


def test_config_settings_reach_the_backend(tmp_path: Path, wheelhouse: Path) -> None:
    # setuptools' --build-option is passed through -C; a bad value makes the backend fail.
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    r = run(
        [
            DETPACK,
            "build",
            src,
            "-w",
            "-o",
            tmp_path / "out",
            "-C--build-option=--no-such-option",
            "--find-links",
            wheelhouse,
            "--offline",
        ]
    )
    assert r.code == 2
    assert "option --no-such-option not recognized" in r.stderr
    r = run([DETPACK, "build", src, "-w", "-o", tmp_path / "out", "--config-json", "[1]"])
    assert r.code == 2 and "--config-json" in r.stderr


def test_bad_option_combinations(tmp_path: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    r = run([DETPACK, "build", src, "--metadata", "--sdist"])
    assert r.code == 2 and "--metadata" in r.stderr
    r = run([DETPACK, "build", src, "--no-isolation", "--env-dir", tmp_path / "e"])
    assert r.code == 2  # argparse: mutually exclusive with --installer group, or our check
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    r = run([DETPACK, "build", wheel])
    assert r.code == 2 and "--metadata" in r.stderr


def test_no_isolation_names_missing_backend_requirements(tmp_path: Path) -> None:
    src = materialize(FIXTURES / "poetry", tmp_path / "src", 0o022)  # poetry-core is not in detpack's venv
    r = run([DETPACK, "build", src, "-n", "-o", tmp_path / "out"])
    assert r.code == 2, r.stderr
    assert "--no-isolation but the build backend's requirements are missing: poetry-core" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_no_isolation_builds_reproducibly_with_installed_backend(tmp_path: Path) -> None:
    # The in-tree noisy backend needs nothing installed, so --no-isolation can run it anywhere.
    src = materialize(FIXTURES / "noisy", tmp_path / "src", 0o022)
    r1 = run([DETPACK, "build", src, "-n", "-o", tmp_path / "a"])
    r2 = run([DETPACK, "build", src, "-n", "-o", tmp_path / "b"], umask=0o002, env={"TZ": "Asia/Tokyo"})
    assert r1.code == 0 and r2.code == 0, r1.stderr + r2.stderr
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    prov = json.loads(next((tmp_path / "a").glob("*.provenance.json")).read_bytes())
    assert prov["predicate"]["buildDefinition"]["externalParameters"]["isolation"] is False
