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


def test_signing_and_store_api_load_lazily() -> None:
    code = (
        "import sys, detpack; assert 'detpack.store' not in sys.modules and 'cryptography' not in sys.modules; "
        "detpack.open_store; detpack.sign_file; assert 'detpack.store' in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert {"open_store", "verify_store", "Store", "StoreAudit", "sign_file", "Envelope"} <= set(detpack.__all__)
    assert detpack.StoreRefusedError("x").exit_code == 1 and detpack.StoreError("x").exit_code == 2
