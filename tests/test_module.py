"""The public API is deliberate: what ``detpack`` exports is exactly ``__all__``."""

from __future__ import annotations

import inspect
import subprocess
import sys

import detpack


def test_public_names_are_exactly_all() -> None:
    public = {name for name in dir(detpack) if not name.startswith("_")} | {"__version__"}
    # Submodules imported by the package are reachable but are not API re-exports.
    submodules = {name for name in public if inspect.ismodule(getattr(detpack, name, None))}
    assert public - submodules == set(detpack.__all__)


def test_python_dash_m_runs_the_cli() -> None:
    r = subprocess.run([sys.executable, "-m", "detpack", "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 0
    assert r.stdout.strip() == f"detpack {detpack.__version__}"


def test_every_error_is_a_detpack_error_with_an_exit_code() -> None:
    for name in detpack.__all__:
        obj = getattr(detpack, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, detpack.DetpackError)
            assert obj("x").exit_code in (1, 2)
