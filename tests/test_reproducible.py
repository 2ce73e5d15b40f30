"""Every fixture, built twice under different build path, umask, TZ, locale, HOME, clock and
PYTHONHASHSEED, gives byte-identical wheels and sdists with detpack; the same two
variations make ``python -m build`` give different bytes (the perturbation is real).
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, MODULES, Run, digests, materialize, require_tool, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: Fixtures whose plain `python -m build` output must differ between the two variations.
CONTROLS = ("setuptools-basic", "noisy", "cext")


def _faketime_env() -> dict[str, str]:
    require_tool("faketime")
    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libs:
        pytest.fail("faketime is installed but libfaketime.so.1 was not found")
    return {"LD_PRELOAD": libs[0], "FAKETIME": "+1d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def _locale_available(name: str) -> bool:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    return name.lower().replace("-", "") in out.lower().replace("-", "")


def variations(tmp: Path) -> list[tuple[str, dict[str, str], int, Path]]:
    """(label, environment, umask, where the tree lives) for the two builds."""
    if not _locale_available("de_DE.utf8"):
        message = "locale de_DE.UTF-8 missing (locales + locale-gen; .ci/run does it)"
        if __import__("os").environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    a = {"TZ": "UTC", "LANG": "C.UTF-8", "HOME": str(tmp / "home-a"), "PYTHONHASHSEED": "0"}
    b = {
        "TZ": "Asia/Tokyo",
        "LANG": "de_DE.UTF-8",
        "LC_ALL": "de_DE.UTF-8",
        "HOME": str(tmp / "elsewhere" / "home-b"),
        "PYTHONHASHSEED": "4242",
        **_faketime_env(),
    }
    for env in (a, b):
        Path(env["HOME"]).mkdir(parents=True)
    return [
        ("a", a, 0o022, tmp / "a" / "src"),
        ("b", b, 0o002, tmp / "b" / "a" / "much" / "deeper" / "checkout"),
    ]


def detpack_build(src: Path, out: Path, env: dict[str, str], umask: int, wheelhouse: Path) -> Run:
    extra = [
        "--pass-env",
        "LD_PRELOAD",
        "--pass-env",
        "FAKETIME",
        "--pass-env",
        "FAKETIME_DONT_FAKE_MONOTONIC",
    ]
    argv = [DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", *extra]
    return run(argv, env=env, cwd=src.parent, umask=umask)


def plain_build(src: Path, out: Path, env: dict[str, str], umask: int, wheelhouse: Path) -> Run:
    pip = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
    return run([sys.executable, "-m", "build", src, "-o", out], env={**env, **pip}, cwd=src.parent, umask=umask)


@pytest.mark.parametrize("fixture", sorted(MODULES))
def test_identical_across_variations(fixture: str, tmp_path: Path, wheelhouse: Path) -> None:
    results: dict[str, dict[str, str]] = {}
    controls: dict[str, dict[str, str]] = {}
    raw: dict[str, dict[str, str]] = {}
    for label, env, umask, where in variations(tmp_path):
        src = materialize(FIXTURES / fixture, where, umask)
        out = tmp_path / f"out-{label}"
        r = detpack_build(src, out, env, umask, wheelhouse)
        assert r.code == 0, r.stderr
        results[label] = digests(out)
        assert len(results[label]) == 2, results[label]
        prov = json.loads(next(out.glob("*.provenance.json")).read_bytes())
        assert {s["name"]: s["digest"]["sha256"] for s in prov["subject"]} == results[label]
        raw[label] = {
            b["name"]: b["digest"]["sha256"]
            for b in prov["predicate"]["runDetails"]["byproducts"]
            if b["name"].startswith("backend-output/")
        }
        if fixture in CONTROLS:
            ctl = tmp_path / f"control-{label}"
            r = plain_build(src, ctl, env, umask, wheelhouse)
            assert r.code == 0, r.stderr
            controls[label] = digests(ctl)
    assert results["a"] == results["b"]
    if fixture == "noisy":
        # The backend's own bytes differed in both runs: normalization, not luck, made them equal.
        assert raw["a"].keys() == raw["b"].keys()
        assert all(raw["a"][k] != raw["b"][k] for k in raw["a"])
    if fixture in CONTROLS:
        # Same file names, different bytes: python -m build is not reproducible here.
        assert controls["a"].keys() == controls["b"].keys() == results["a"].keys()
        for name in controls["a"]:
            assert controls["a"][name] != controls["b"][name], f"{name}: control did not differ"
