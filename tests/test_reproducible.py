"""Every fixture, built twice under different build path, umask, TZ, locale, HOME, clock and
PYTHONHASHSEED, gives byte-identical wheels and sdists with detpack; the same two
variations make ``python -m build`` give different bytes (the perturbation is real).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, MODULES, Run, digests, materialize, run, variations

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: Fixtures whose plain `python -m build` output must differ between the two variations.
CONTROLS = ("setuptools-basic", "noisy", "cext")


def detpack_build(src: Path, out: Path, env: dict[str, str], umask: int, wheelhouse: Path) -> Run:
    extra = [
        "--pass-env",
        "LD_PRELOAD",
        "--pass-env",
        "FAKETIME",
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
