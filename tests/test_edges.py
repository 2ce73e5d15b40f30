"""Edges: a locked metadata build installs the lock, `--installer uv` finds uv as users have
it, bad limits and bad pyproject.toml are one-line configuration errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, run, wheelhouse_without


@pytest.mark.slow
@pytest.mark.integration
def test_locked_metadata_build_installs_the_locked_backend(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    old_only = wheelhouse_without(tmp_path, "old", "flit_core-4.")
    env = {"DETPACK_BUILD_ROOT": str(tmp_path / "root")}  # fresh: nothing cached from other builds
    assert run([DETPACK, "lock", src, "--find-links", old_only, "--offline"], env=env).code == 0
    lock = src / "pylock.build.toml"
    assert 'version = "3.12.0"' in lock.read_text()
    # The wheelhouse also serves flit_core 4.2.0; the lock must keep 3.12.0.
    argv = [DETPACK, "build", src, "--metadata", "--lock", lock, "--find-links", wheelhouse, "--offline", "-v"]
    r = run(argv, env=env)
    assert r.code == 0, r.stderr
    # pip says "flit_core-3.12.0", uv "flit-core==3.12.0"
    assert not re.search(r"flit[-_]core[-=]+4\.2\.0", r.stderr) and re.search(r"flit[-_]core[-=]+3\.12\.0", r.stderr)
    # flit_core 3.12.0 writes Metadata-Version 2.4; 4.2.0 writes 2.5.
    assert json.loads(r.stdout)["metadata_version"] == "2.4"


def _without_uv_package(tmp: Path) -> Path:
    """A PYTHONPATH entry whose sitecustomize makes `import uv` fail as if the package were absent."""
    block = tmp / "no-uv-package"
    block.mkdir()
    (block / "sitecustomize.py").write_text("import sys\n\nsys.modules['uv'] = None  # `import uv` fails\n")
    return block


@pytest.mark.slow
@pytest.mark.integration
def test_installer_uv_found_on_path_without_the_uv_package(tmp_path: Path, wheelhouse: Path) -> None:
    import uv

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "uv").symlink_to(uv.find_uv_bin())
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "PYTHONPATH": str(_without_uv_package(tmp_path)),
        "DETPACK_BUILD_ROOT": str(tmp_path / "root"),
    }
    probe = run([sys.executable, "-c", "import uv"], env=env)
    assert probe.code == 1 and "ModuleNotFoundError" in probe.stderr  # the block works
    argv = [DETPACK, "build", src, "-o", tmp_path / "out", "--installer", "uv", "--find-links", wheelhouse, "--offline"]
    r = run(argv, env=env)
    assert r.code == 0, r.stderr
    assert len(list((tmp_path / "out").glob("*.whl"))) == 1


def test_installer_uv_missing_is_one_line(tmp_path: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(_without_uv_package(tmp_path)),
        "DETPACK_BUILD_ROOT": str(tmp_path / "root"),
    }
    assert shutil.which("uv", path=env["PATH"]) is None
    r = run([DETPACK, "build", src, "-o", tmp_path / "out", "--installer", "uv", "--offline"], env=env)
    assert r.code == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and "pip install uv" in r.stderr and "PATH" in r.stderr


def test_lock_error_is_a_public_input_error() -> None:
    import detpack
    import detpack.build.lockfile
    import detpack.errors

    assert detpack.errors.LockError is detpack.build.lockfile.LockError is detpack.LockError
    assert issubclass(detpack.LockError, detpack.InputError)
    assert "LockError" in detpack.__all__


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("max_members=lots", ["max_members", "not a whole number", "max_members=200000"]),
        ("bogus=1", ["bogus", "max_members", "NAME=VALUE"]),
    ],
)
def test_bad_limit_is_a_config_error_naming_it(item: str, words: list[str]) -> None:
    from detpack.errors import ConfigError
    from detpack.policy import Limits

    with pytest.raises(ConfigError) as exc:
        Limits.parse([item])
    assert all(w in str(exc.value) for w in words), exc.value


def test_bad_limit_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "x.whl"
    target.write_bytes(b"")
    r = run([DETPACK, "normalize", "--limit", "max_ratio=many", "-o", tmp_path / "out", target])
    assert r.code == 2 and r.stdout == "", r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: --limit 'max_ratio=many'"), r.stderr


def test_invalid_pyproject_toml_is_a_config_error_everywhere(tmp_path: Path) -> None:
    from detpack.build.config import backend_name, load_tool_config
    from detpack.errors import ConfigError

    (tmp_path / "pyproject.toml").write_text("[build-system\n")
    for read in (backend_name, load_tool_config):
        with pytest.raises(ConfigError, match=r"pyproject\.toml: invalid TOML"):
            read(tmp_path)


def test_build_messages_reach_the_runner(tmp_path: Path) -> None:
    """detpack routes ``build``'s own messages into the build log through build's private
    ``_ctx.LOGGER`` (``frontend._route_build_log``, the one place): this fails when build changes it."""
    from build import ProjectBuilder

    from detpack.build.environment import ControlledEnvironment, Runner
    from detpack.build.frontend import _build_logger

    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "be"\nbackend-path = ["."]\n'
    )
    (tmp_path / "be.py").write_text("def get_requires_for_build_wheel(config_settings=None):\n    return ['x']\n")
    runner = Runner(ControlledEnvironment({"PATH": os.environ["PATH"]}, ()))
    with _build_logger(runner):
        builder = ProjectBuilder(tmp_path, python_executable=sys.executable, runner=runner)
        assert builder.get_requires_for_build("wheel") == {"x"}
    assert "Getting build dependencies for wheel..." in runner.transcript, runner.transcript
