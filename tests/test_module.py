"""The public API is deliberate: what ``detpack`` exports is exactly ``__all__``."""

from __future__ import annotations

import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

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


def test_archive_verbs_load_no_git_runner_installer_or_closure_reader(tmp_path: Path) -> None:
    """normalize, tar and layer of plain inputs (no git work tree, no --evidence) load neither plumbum
    (git runs), packaging (closure reports, locks) nor the build machinery: ~0.1-0.3 s of each run.
    The check runs the real CLI in-process and lists what it loaded."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a\n")
    wheel = tmp_path / "w-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("w/__init__.py", "")
        zf.writestr("w-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("w-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: w\nVersion: 1.0\n")
        zf.writestr("w-1.0.dist-info/RECORD", "")
    verbs = {
        "normalize": ["normalize", str(wheel), "-o", str(tmp_path / "n"), "-q"],
        "tar": ["tar", str(tree), "-o", str(tmp_path / "t.tar.gz"), "-q"],
        "layer": ["layer", "-o", str(tmp_path / "l.tar.gz"), "--add", f"{tree}:/app", "-q"],
    }
    heavy = ("plumbum", "packaging", "detpack.build", "detpack.deps", "detpack.store", "installer")
    for verb, argv in verbs.items():
        code = (
            "import sys\nfrom detpack.cli import main\n"
            f"code = main({argv!r})\n"
            f"loaded = sorted({{m.split('.')[0] if m.split('.')[0] != 'detpack' else '.'.join(m.split('.')[:2]) "
            f"for m in sys.modules}} & set({heavy!r}))\n"
            "print(code, loaded)\n"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path)
        assert r.returncode == 0, (verb, r.stderr)
        assert r.stdout.strip().splitlines()[-1] == "0 []", (verb, r.stdout)
