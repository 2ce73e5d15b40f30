"""``detpack rebuild RECORD``: signed envelopes as records, and a tree build's sdist beside it.

One flit build from a directory, signed, is shared by the module; each test copies what it
needs so the record and its outputs can be moved, tampered with or left out.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, run

pytestmark = pytest.mark.slow

SDIST = "fx_flit-1.0.0.tar.gz"
WHEEL = "fx_flit-1.0.0-py3-none-any.whl"
SKIPPED = f"  skipped  {SDIST}  (rebuilt from itself; pass --source to rebuild the sdist from the tree)"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    tmp = tmp_path_factory.mktemp("rebuild")
    src = materialize(FIXTURES / "flit", tmp / "src", 0o022)
    assert run([DETPACK, "keygen", "-o", tmp / "key"]).code == 0
    r = run([DETPACK, "build", src, "-o", tmp / "dist", "--find-links", wheelhouse, "--offline", "--sign", tmp / "key"])
    assert r.code == 0, r.stderr
    return tmp


def _copy(built: Path, dest: Path, *names: str) -> Path:
    dest.mkdir()
    for name in names:
        shutil.copy2(built / "dist" / name, dest / name)
    return dest


def _rebuild(*args: object, wheelhouse: Path) -> tuple[int, str, str]:
    r = run([DETPACK, "rebuild", *args, "--find-links", wheelhouse, "--offline"])
    return r.code, r.stdout, r.stderr


def test_rebuild_reads_a_signed_envelope_and_checks_it_with_key(built: Path, wheelhouse: Path) -> None:
    envelope = built / "dist" / "fx_flit-1.0.0.intoto.jsonl"
    code, out, err = _rebuild(envelope, "--source", built / "src", "--key", built / "key.pub", wheelhouse=wheelhouse)
    assert code == 0, out + err
    assert out.startswith("reproduced: 2 of 2 subjects match (tree digest matches)")
    assert "signature verified" in out and "not checked" not in err
    assert run([DETPACK, "keygen", "-o", built / "other"]).code == 0
    code, out, err = _rebuild(envelope, "--source", built / "src", "--key", built / "other.pub", wheelhouse=wheelhouse)
    assert code == 1 and "no signature verifies" in err and out == "", err


def test_rebuild_an_envelope_without_key_says_the_signature_is_not_checked(built: Path, wheelhouse: Path) -> None:
    envelope = built / "dist" / "fx_flit-1.0.0.intoto.jsonl"
    code, out, err = _rebuild(envelope, "--source", built / "src", wheelhouse=wheelhouse)
    assert code == 0, out + err
    notes = [ln for ln in err.splitlines() if "not checked" in ln]
    assert len(notes) == 1 and str(envelope) in notes[0] and "--key" in notes[0], err
    r = run([DETPACK, "rebuild", envelope, "--key", built / "key"])  # a private key: refused before building
    assert r.code == 2 and "is a private key" in r.stderr, r.stderr


def test_a_tree_record_is_rebuilt_from_the_sdist_beside_it(built: Path, tmp_path: Path, wheelhouse: Path) -> None:
    moved = _copy(built, tmp_path / "moved", "fx_flit-1.0.0.provenance.json", SDIST, WHEEL)
    code, out, err = _rebuild(moved / "fx_flit-1.0.0.provenance.json", wheelhouse=wheelhouse)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("reproduced: 1 of 1 rebuilt subjects match, 1 skipped (sdist beside the record"), out
    assert SKIPPED in lines
    assert any(ln.startswith(f"  match    {WHEEL}  sha256:") for ln in lines), out


def test_a_tree_record_refuses_an_sdist_that_is_not_its_subject(built: Path, tmp_path: Path, wheelhouse: Path) -> None:
    moved = _copy(built, tmp_path / "moved", "fx_flit-1.0.0.provenance.json")
    (moved / SDIST).write_bytes((built / "dist" / SDIST).read_bytes() + b"\0")
    code, out, err = _rebuild(moved / "fx_flit-1.0.0.provenance.json", wheelhouse=wheelhouse)
    assert code == 1, out + err
    [line] = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert SDIST in line and "not the recorded" in line and "--source" in line


def test_a_tree_record_without_its_sdist_asks_for_the_tree(built: Path, tmp_path: Path) -> None:
    moved = _copy(built, tmp_path / "moved", "fx_flit-1.0.0.provenance.json")
    r = run([DETPACK, "rebuild", moved / "fx_flit-1.0.0.provenance.json"])
    assert r.code == 2 and "pass --source PATH" in r.stderr and SDIST in r.stderr, r.stderr
