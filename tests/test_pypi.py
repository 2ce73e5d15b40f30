"""``detpack rebuild --pypi`` against real releases on the index (marked network)."""

from __future__ import annotations

import pytest

from conftest import DETPACK, run
from detpack.pypi import backend_pin


@pytest.mark.network
@pytest.mark.slow
def test_flit_release_is_byte_identical() -> None:
    # idna 3.10 was built by flit 3.9.0 without SOURCE_DATE_EPOCH (generated files at 2016-01-01).
    r = run([DETPACK, "rebuild", "--pypi", "idna==3.10"], timeout=900)
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "idna==3.10: 1 byte-identical of 1 wheel(s)"
    assert "pinned flit_core==3.9.0; epoch unset" in r.stdout


@pytest.mark.network
def test_unknown_release_is_one_line_exit_2() -> None:
    r = run([DETPACK, "rebuild", "--pypi", "idna==0.0.0.0.1"], timeout=600)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.code == 2 and len(lines) == 1 and "idna==0.0.0.0.1: the index has no sdist" in lines[0], r.stderr


def test_generator_lines_map_to_backend_pins() -> None:
    assert backend_pin("flit 3.9.0") == "flit_core==3.9.0"
    assert backend_pin("hatchling 1.25.0") == "hatchling==1.25.0"
    assert backend_pin("setuptools (75.1.0)") == "setuptools==75.1.0"
    assert backend_pin("bdist_wheel (0.43.0)") == "wheel==0.43.0"
    assert backend_pin("poetry-core 1.9.0") == "poetry-core==1.9.0"
    assert backend_pin("some-other-tool 1.0") is None
