"""One-line errors carry the failing tool's decisive line; the ``-v`` hint only without ``-v``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, run

#: Builds in these tests may use the caller's build root (a shared default root serializes builds).
ENV = {k: v for k, v in os.environ.items() if k == "DETPACK_BUILD_ROOT"}


def _error_lines(stderr: str, src: Path) -> list[str]:
    # With -v the tool's own output follows (uv's starts with "error: " too): detpack's line names src.
    return [ln for ln in stderr.splitlines() if ln.startswith(f"error: {src}")]


def _missing_requirement(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["fx-not-in-the-wheelhouse"]\nbuild-backend = "fx_nowhere"\n\n'
        '[project]\nname = "fx-missing-requirement"\nversion = "1.0"\n'
    )
    return src


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_missing_build_requirement_names_it(tmp_path: Path, wheelhouse: Path, installer: str) -> None:
    src = _missing_requirement(tmp_path)
    argv = [DETPACK, "build", src, "-o", tmp_path / "out", "--find-links", wheelhouse, "--offline"]
    argv += ["--installer", installer]
    r = run([*argv, "-q"], env=ENV)
    assert r.code == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {src}: installing the build requirements"), lines[0]
    assert "fx-not-in-the-wheelhouse" in lines[0], lines[0]
    if installer == "pip":
        assert "No matching distribution found for fx-not-in-the-wheelhouse" in lines[0], lines[0]
    assert lines[0].endswith("; run with -v to see why"), lines[0]

    r = run([*argv, "-v"], env=ENV)
    assert r.code == 2
    errors = _error_lines(r.stderr, src)
    assert len(errors) == 1, r.stderr
    assert "fx-not-in-the-wheelhouse" in errors[0]
    assert "-v" not in errors[0], errors[0]
    assert "Traceback" not in r.stderr


BROKEN = "RuntimeError: broken on purpose"


@pytest.mark.slow
def test_backend_failure_names_the_exception_and_hints_only_without_v(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "broken-backend", tmp_path / "src", 0o022)
    argv = [DETPACK, "build", src, "-o", tmp_path / "out", "--find-links", wheelhouse, "--offline"]
    r = run([*argv, "-q"], env=ENV)
    assert r.code == 2
    assert r.stderr.splitlines() == [
        f"error: {src}: backend 'broken_backend' failed to build the sdist ({BROKEN}); run with -v to see why"
    ]
    r = run([*argv, "-v"], env=ENV)
    errors = _error_lines(r.stderr, src)
    assert errors == [f"error: {src}: backend 'broken_backend' failed to build the sdist ({BROKEN})"]


PIP_MISSING = """\
Looking in links: /w
ERROR: Could not find a version that satisfies the requirement fx-a (from versions: none)
ERROR: No matching distribution found for fx-a

[notice] A new release of pip is available: 24.0 -> 25.0
[notice] To update, run: pip install --upgrade pip
"""

PIP_HASHES = """\
Processing /w/fx_a-1.0-py3-none-any.whl
ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated the package \
versions, please update the hashes. Otherwise, examine the package contents carefully; someone may have \
tampered with them.
    fx-a==1.0 from file:///w/fx_a-1.0-py3-none-any.whl:
        Expected sha256 aaaa
             Got        bbbb

"""

PIP_CONFLICT = """\
ERROR: Cannot install fx-a==1.0 and fx-a==2.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested fx-a==1.0
    The user requested fx-a==2.0

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip to attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""

UV_MISSING = """\
Using Python 3.11.7 environment at: /env
error: No solution found when resolving dependencies
  cause: Because fx-a was not found in the cache and you require fx-a, we can conclude that your requirements \
are unsatisfiable.

hint: Packages were unavailable because the network was disabled.
"""


def test_install_failure_picks_the_decisive_line() -> None:
    from detpack.build.installerrors import install_failure

    assert install_failure(PIP_MISSING) == "No matching distribution found for fx-a"
    assert install_failure(PIP_HASHES) == (
        "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE: "
        "fx-a==1.0 from file:///w/fx_a-1.0-py3-none-any.whl: expected sha256 aaaa, got bbbb"
    )
    assert install_failure(PIP_CONFLICT) == (
        "Cannot install fx-a==1.0 and fx-a==2.0 because these package versions have conflicting dependencies: "
        "The user requested fx-a==1.0; The user requested fx-a==2.0"
    )
    assert install_failure(UV_MISSING) == (
        "No solution found when resolving dependencies: Because fx-a was not found in the cache and you "
        "require fx-a, we can conclude that your requirements are unsatisfiable."
    )
    assert install_failure("something odd\nlast words\n\n") == "last words"
    assert install_failure("") is None


TRACEBACK_THEN_NOISE = """\
running egg_info
Traceback (most recent call last):
  File "x.py", line 1, in <module>
    import nope
ModuleNotFoundError: No module named 'nope'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "x.py", line 3, in <module>
    raise RuntimeError("no backend helper")
RuntimeError: no backend helper
copying src/a.py -> build/lib
"""


def test_backend_failure_picks_the_last_exception_line() -> None:
    from detpack.build.frontend import backend_failure

    # stdout is block-buffered in the hook process: its lines may land after the traceback.
    assert backend_failure(TRACEBACK_THEN_NOISE) == "RuntimeError: no backend helper"
    assert backend_failure("compiling\nerror: command '/usr/bin/gcc' failed with exit code 1\n") == (
        "error: command '/usr/bin/gcc' failed with exit code 1"
    )
    assert backend_failure("") is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("installer", "says"),
    [
        ("pip", "conflicting dependencies: The user requested flit_core"),
        ("uv", "No solution found when resolving dependencies: Because you require "),
    ],
)
def test_conflicting_build_requirements_name_the_conflict(
    installer: str, says: str, tmp_path: Path, wheelhouse: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core==3.12.0", "flit_core!=3.12.0"]\nbuild-backend = "flit_core.buildapi"\n'
    )
    argv = [DETPACK, "build", src, "-o", tmp_path / "out", "--find-links", wheelhouse, "--offline", "-q"]
    r = run([*argv, "--installer", installer], env=ENV)
    assert r.code == 2
    [line] = r.stderr.splitlines()
    assert says in line, line
    assert "ResolutionImpossible" not in line
    if installer == "uv":  # the whole of uv's wrapped explanation, on one line
        assert "flit-core>3.12.0" in line and "flit-core==3.12.0" in line, line
        assert "we can conclude that your requirements are unsatisfiable" in line, line
