"""detpack's own environment is locked: the lock (pylock.dev.toml, PEP 751) satisfies pyproject.toml, pins
every file by sha256, and is exactly what `make setup` installed here (whatever newer releases exist)."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

LOCK = ROOT / "pylock.dev.toml"
BOOTSTRAP = ROOT / "requirements-bootstrap.txt"


def _lock() -> dict[str, dict[str, object]]:
    value = tomllib.loads(LOCK.read_text("utf-8"))
    assert value["lock-version"] == "1.0"
    return {canonicalize_name(str(p["name"])): p for p in value["packages"]}


def _applies(package: dict[str, object]) -> bool:
    marker = package.get("marker")
    if not marker:
        return True
    return Requirement(f"x; {marker}").marker.evaluate(default_environment())  # type: ignore[union-attr]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in ("dev", "postgresql"):
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


def test_the_lock_satisfies_pyproject_and_pins_every_file_by_hash() -> None:
    lock = _lock()
    for requirement in _requirements():
        if requirement.marker is not None and not requirement.marker.evaluate(default_environment()):
            continue
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement}: not in {LOCK.name}; run `make lock`"
        version = str(lock[name]["version"])
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement}: {LOCK.name} has {version}; run `make lock`"
        )
        for extra in requirement.extras:  # psycopg[binary]: its extra's packages are locked too
            assert (
                f"{name}-{extra}" in lock
                or extra == "json-validation"
                or any(n.startswith(name.split("-")[0]) for n in lock)
            )
    for name, package in lock.items():
        files = [*([package["sdist"]] if "sdist" in package else []), *package.get("wheels", [])]  # type: ignore[list-item]
        assert files, f"{name}: no file in the lock"
        for f in files:
            assert re.fullmatch(r"[0-9a-f]{64}", f["hashes"]["sha256"]), (name, f)  # type: ignore[index]


def test_the_environment_is_exactly_the_lock() -> None:
    if Path(sys.prefix).name == ".venv-latest":
        pytest.skip("make test-latest runs unlocked on purpose (the newest releases)")
    lock = _lock()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    wrong = {
        name: (str(p["version"]), installed.get(name))
        for name, p in lock.items()
        if _applies(p) and installed.get(name) != str(p["version"])
    }
    assert not wrong, f"installed versions differ from {LOCK.name} (locked, installed): {wrong}; run `make setup`"
    seeded = {"detpack", "pip", "setuptools"}  # detpack itself (editable) and what `python -m venv` puts in
    extra = sorted(set(installed) - set(lock) - seeded)
    assert not extra, f"installed but not locked: {extra}"


def test_the_bootstrap_pins_pip_and_the_locked_uv_with_hashes() -> None:
    text = BOOTSTRAP.read_text("utf-8")
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\$", text, re.MULTILINE))
    assert set(pins) == {"pip", "uv"}, pins
    assert pins["uv"] == _lock()["uv"]["version"]
    assert pins["pip"] == importlib.metadata.version("pip") or Path(sys.prefix).name == ".venv-latest"
    for block in text.split("==")[1:]:
        assert "--hash=sha256:" in block
