"""Drop-in parity with ``python -m build``: what it builds, detpack builds.

- A backend that packs two different members under one name (hatchling with a stale PKG-INFO in
  the tree): ``python -m build`` accepts the sdist, every extractor keeps the last member, and so
  does ``detpack build``, with one warning and a record in the provenance. ``detpack normalize``
  of the same file still refuses it unless asked (``--duplicates last``).
- A backend that cannot make an sdist from an unpacked sdist (as meson-python wants git): detpack
  says so in one line and builds the wheel from the tree, recorded so a rebuild does the same.
"""

from __future__ import annotations

import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, run, sha256

pytestmark = [pytest.mark.integration]
EPOCH = "1700000000"


def _statement(outdir: Path) -> dict[str, object]:
    (path,) = outdir.glob("*.provenance.json")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _members(sdist: Path, name: str) -> list[bytes]:
    with tarfile.open(sdist) as tf:
        found = []
        for info in tf.getmembers():
            if info.name == name:
                data = tf.extractfile(info)
                assert data is not None
                found.append(data.read())
        return found


def test_a_duplicate_in_the_backend_output_is_resolved_as_extractors_do(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "stale-pkginfo", tmp_path / "src", 0o022)
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "SOURCE_DATE_EPOCH": EPOCH}
    # What python -m build makes of it: an sdist holding the stale PKG-INFO and hatchling's own.
    r = run([sys.executable, "-m", "build", "--sdist", src, "-o", tmp_path / "pmb"], env=env)
    assert r.code == 0, r.stderr
    (raw,) = (tmp_path / "pmb").glob("*.tar.gz")
    stale, fresh = _members(raw, "fx_stale-1.0.0/PKG-INFO")
    assert b"Version: 0.9.0" in stale and b"Version: 1.0.0" in fresh
    with tarfile.open(raw) as tf:
        assert tf.extractfile("fx_stale-1.0.0/PKG-INFO").read() == fresh  # type: ignore[union-attr]

    # detpack build: builds it, one warning, the last member kept, recorded.
    out = tmp_path / "dist"
    r = run(
        [DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"], env={"SOURCE_DATE_EPOCH": EPOCH}
    )
    assert r.code == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if "two different members" in ln]
    assert len(warnings) == 1 and "'fx_stale-1.0.0/PKG-INFO'; kept the last one" in warnings[0], r.stderr
    sdist = out / "fx_stale-1.0.0.tar.gz"
    assert _members(sdist, "fx_stale-1.0.0/PKG-INFO") == [fresh]
    with zipfile.ZipFile(out / "fx_stale-1.0.0-py3-none-any.whl") as zf:
        assert "Version: 1.0.0" in zf.read("fx_stale-1.0.0.dist-info/METADATA").decode()
    internal = _statement(out)["predicate"]["buildDefinition"]["internalParameters"]  # type: ignore[index]
    assert internal["duplicateMembers"] == [
        {"artifact": "fx_stale-1.0.0.tar.gz", "member": "fx_stale-1.0.0/PKG-INFO", "kept": "last"}
    ]

    # normalize of an archive of unknown origin: refused with one line, nothing written ...
    r = run([DETPACK, "normalize", raw, "-o", tmp_path / "n1"], env={"SOURCE_DATE_EPOCH": EPOCH})
    assert r.code == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "two different members are named 'fx_stale-1.0.0/PKG-INFO'" in line and "--duplicates last" in line
    assert not (tmp_path / "n1" / raw.name).exists()
    # ... unless asked: then the same bytes as detpack build's own sdist.
    r = run(
        [DETPACK, "normalize", raw, "-o", tmp_path / "n2", "--duplicates", "last"], env={"SOURCE_DATE_EPOCH": EPOCH}
    )
    assert r.code == 0, r.stderr
    assert "kept the last one (--duplicates last)" in r.stderr
    assert sha256(tmp_path / "n2" / raw.name) == sha256(sdist)


def test_a_duplicate_zip_member_keeps_the_last_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a.txt", b"first")
        zf.writestr("b.txt", b"b")
        zf.writestr("a.txt", b"second, the one unzip and pip keep")
    r = run([DETPACK, "normalize", path, "-o", tmp_path / "refused", "--source-date-epoch", EPOCH])
    assert r.code == 2 and "two different members are named 'a.txt'" in r.stderr
    r = run([DETPACK, "normalize", path, "-o", tmp_path / "out", "--duplicates", "last", "--source-date-epoch", EPOCH])
    assert r.code == 0, r.stderr
    with zipfile.ZipFile(tmp_path / "out" / "dup.zip") as zf:
        assert zf.namelist() == ["a.txt", "b.txt"]
        assert zf.read("a.txt") == b"second, the one unzip and pip keep"


def test_an_unpacked_sdist_whose_backend_cannot_make_an_sdist_still_gets_its_wheel(
    tmp_path: Path, wheelhouse: Path
) -> None:
    src = materialize(FIXTURES / "sdist-needs-vcs", tmp_path / "src", 0o022)
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    # python -m build fails as a whole: its sdist step is the backend's.
    pmb = run(
        [sys.executable, "-m", "build", src, "-o", tmp_path / "pmb"],
        env={**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)},
    )
    assert pmb.code != 0 and "not a git repository" in pmb.stdout + pmb.stderr
    out = tmp_path / "dist"
    r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"], env=env)
    assert r.code == 0, r.stderr
    said = [ln for ln in r.stderr.splitlines() if "cannot make an sdist" in ln]
    assert len(said) == 1 and "not a git repository" in said[0] and "building the wheel directly" in said[0]
    assert sorted(p.name for p in out.iterdir()) == [
        "fx_needs_vcs-1.0.0-py3-none-any.whl",
        "fx_needs_vcs-1.0.0.build.log.gz",
        "fx_needs_vcs-1.0.0.provenance.json",
    ]
    external = _statement(out)["predicate"]["buildDefinition"]["externalParameters"]  # type: ignore[index]
    assert external["viaSdist"] is False and external["distributions"] == ["wheel"]
    assert "cannot make an sdist from this unpacked sdist" in external["sdistFallback"]
    # The record says what was done, so a rebuild from it does the same and matches.
    r = run([DETPACK, "rebuild", out / "fx_needs_vcs-1.0.0.provenance.json", "--source", src,
             "--find-links", wheelhouse, "--offline"], env=env)  # fmt: skip
    assert r.code == 0, r.stdout + r.stderr
    assert "reproduced: 1 of 1 subjects match" in r.stdout


def test_a_tree_that_is_not_an_unpacked_sdist_still_fails_on_a_failing_sdist_hook(
    tmp_path: Path, wheelhouse: Path
) -> None:
    src = materialize(FIXTURES / "sdist-needs-vcs", tmp_path / "src", 0o022)
    (src / "PKG-INFO").unlink()  # a checkout, not an unpacked sdist: the failure is the user's to see
    r = run([DETPACK, "build", src, "-o", tmp_path / "dist", "--find-links", wheelhouse, "--offline"])
    assert r.code == 2 and "Traceback" not in r.stderr
    assert "failed to build the sdist" in r.stderr and "not a git repository" in r.stderr
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())
