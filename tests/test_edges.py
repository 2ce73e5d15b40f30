"""Edges: a locked metadata build installs the lock, `--installer uv` finds uv as users have
it, bad limits and bad pyproject.toml are one-line configuration errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, WHEELHOUSE, materialize, run


def _house(tmp: Path, name: str, skip: str) -> Path:
    house = tmp / name
    house.mkdir()
    for wheel in WHEELHOUSE.glob("*.whl"):
        if not wheel.name.startswith(skip):
            (house / wheel.name).symlink_to(wheel)
    return house


@pytest.mark.slow
@pytest.mark.integration
def test_locked_metadata_build_installs_the_locked_backend(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    old_only = _house(tmp_path, "old", "flit_core-4.")
    env = {"DETPACK_BUILD_ROOT": str(tmp_path / "root")}  # fresh: nothing cached from other builds
    assert run([DETPACK, "lock", src, "--find-links", old_only, "--offline"], env=env).code == 0
    lock = src / "pylock.build.toml"
    assert 'version = "3.12.0"' in lock.read_text()
    # The wheelhouse also serves flit_core 4.2.0; the lock must keep 3.12.0.
    argv = [DETPACK, "build", src, "--metadata", "--lock", lock, "--find-links", wheelhouse, "--offline", "-v"]
    r = run(argv, env=env)
    assert r.code == 0, r.stderr
    assert "flit_core-4.2.0" not in r.stderr and "flit_core-3.12.0" in r.stderr
    # flit_core 3.12.0 writes Metadata-Version 2.4; 4.2.0 writes 2.5.
    assert json.loads(r.stdout)["metadata_version"] == "2.4"
