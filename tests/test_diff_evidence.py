"""``detpack diff`` names a cause only from evidence, and reads the record beside each side first.

A detpack build's member times are exactly the SOURCE_DATE_EPOCH its provenance records, and its
modes are canonical: for a project committed minutes ago, those times are "within minutes of when
the archive was written", but that is no evidence of a clock, and the detpack side is never blamed
for one, nor for a umask. A wheel truly built without SOURCE_DATE_EPOCH still is, whichever side
it is on. A mode only one member has (RECORD, which the wheel writer writes 0664 itself) is the
writer's, not a umask's. Archives with two members of one name are read as ``detpack build``, tar,
pip and uv read them: the last one wins, with a warning, in ``diff`` and ``diff --content-only``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, require_tool, run
from detpack.verify import causes

pytestmark = [pytest.mark.slow]
RECORD = "fx_setuptools_basic-1.0.0.dist-info/RECORD"


def _committed(tmp: Path) -> Path:
    """fixtures/setuptools-basic as a git repository committed five minutes ago (its files written now)."""
    require_tool("git")
    src = materialize(FIXTURES / "setuptools-basic", tmp / "proj", 0o022)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"] = f"@{int(time.time()) - 300} +0000"
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "now"]):
        subprocess.run(["git", "-C", src, *argv], check=True, env={**env, "PATH": "/usr/bin:/bin"})
    return src


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> tuple[Path, Path]:
    """python -m build's wheel (no SOURCE_DATE_EPOCH) and detpack's, of one fresh commit."""
    tmp = tmp_path_factory.mktemp("evidence")
    src = _committed(tmp)
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
    r = run([sys.executable, "-m", "build", "--wheel", src, "-o", tmp / "pmb"], env=offline)
    assert r.code == 0, r.stderr
    r = run([DETPACK, "build", src, "-o", tmp / "detpack", "--find-links", wheelhouse, "--offline", "-q"])
    assert r.code == 0, r.stderr
    [theirs] = (tmp / "pmb").glob("*.whl")
    [ours] = (tmp / "detpack").glob("*.whl")
    return theirs, ours


def _diff_json(a: Path, b: Path) -> list[dict[str, object]]:
    r = run([DETPACK, "diff", a, b, "--json"])
    assert r.code == 1, r.stderr
    [f] = json.loads(r.stdout)["files"]
    return f["differences"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("detpack_side", ["B", "A"])
def test_the_detpack_side_is_never_blamed_for_a_clock_or_umask(pair: tuple[Path, Path], detpack_side: str) -> None:
    theirs, ours = pair
    a, b = (theirs, ours) if detpack_side == "B" else (ours, theirs)
    other = "A" if detpack_side == "B" else "B"
    diffs = _diff_json(a, b)
    times = [d for d in diffs if d["attribute"] == "date_time"]
    assert times, diffs  # the perturbation: python -m build's times are its files' and its clock's
    for d in times:
        assert f"{detpack_side}'s date_time" not in str(d["evidence"]), d
        assert d["cause"] == causes.CLOCK and f"{other}'s date_time" in str(d["evidence"]), d
        assert "SOURCE_DATE_EPOCH recorded beside it" in str(d["evidence"]), d
    modes = [d for d in diffs if d["attribute"] == "mode"]
    assert any(d["member"] == RECORD for d in modes), modes  # wheel writes RECORD 0664, detpack 0644
    for d in modes:
        assert d["cause"] != causes.UMASK, d
    [record] = [d for d in modes if d["member"] == RECORD]
    assert record["cause"] == causes.WRITER_MODE and "RECORD 0664" in str(record["evidence"]), record

    r = run([DETPACK, "diff", a, b])  # the text: the detpack side named in no clock line
    assert f"{detpack_side}'s date_time" not in r.stdout and "likely cause: umask" not in r.stdout, r.stdout


def test_without_the_record_the_times_are_still_named_from_the_clock(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """The same detpack wheel moved away from its provenance: no record, so no fact to go by."""
    theirs, ours = pair
    alone = tmp_path / ours.name
    alone.write_bytes(ours.read_bytes())
    diffs = _diff_json(theirs, alone)
    assert any("B's date_time" in str(d["evidence"]) for d in diffs if d["attribute"] == "date_time"), diffs


def test_a_mode_many_members_share_is_a_umask_one_alone_is_not() -> None:
    ctx = causes.Context(0.0, 0.0, facts_b=causes.SideFacts(write_bits=5))
    assert causes.explain_attribute("mode", "0644", "0664", ctx, "pkg/a.py")[0] == causes.UMASK
    ctx = causes.Context(0.0, 0.0, facts_b=causes.SideFacts(write_bits=1))
    cause, evidence = causes.explain_attribute("mode", "0644", "0664", ctx, "pkg/a.py")
    assert cause is None and "the only member of B with them" in evidence
    cause, evidence = causes.explain_attribute("mode", "0644", "0664", ctx, RECORD)
    assert cause == causes.WRITER_MODE and "RECORD 0664" in evidence
    recorded = causes.Context(0.0, 0.0, facts_b=causes.SideFacts(write_bits=5, umask=0o022, record="x.provenance.json"))
    cause, evidence = causes.explain_attribute("mode", "0644", "0664", recorded, "pkg/a.py")
    assert cause is None and "umask 0022" in evidence


def test_no_cause_is_said_as_such() -> None:
    from detpack.cli.diff import because
    from detpack.verify.compare import Difference

    assert because(Difference("content", "x", "content", 1, 2)) == "  [no cause inferred]"
    said = because(Difference("attribute", "x", "mode", "0644", "0755", evidence="only exec bits differ"))
    assert said == "  [no cause inferred; only exec bits differ]"


def test_two_members_of_one_name_are_read_as_build_reads_them(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "stale-pkginfo", tmp_path / "src", 0o022)
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "SOURCE_DATE_EPOCH": "1700000000"}
    r = run([sys.executable, "-m", "build", "--sdist", src, "-o", tmp_path / "pmb"], env=env)
    assert r.code == 0, r.stderr
    [raw] = (tmp_path / "pmb").glob("*.tar.gz")
    argv = [DETPACK, "build", src, "-o", tmp_path / "dp", "-s", "--find-links", wheelhouse, "--offline", "-q"]
    r = run(argv, env=env)
    assert r.code == 0, r.stderr
    [ours] = (tmp_path / "dp").glob("*.tar.gz")
    member = "fx_stale-1.0.0/PKG-INFO"

    r = run([DETPACK, "diff", raw, ours, "--json"])
    assert r.code == 1, r.stderr
    [f] = json.loads(r.stdout)["files"]
    # The last PKG-INFO (hatchling's own) is compared: it is detpack's, so no content difference there.
    assert not [d for d in f["differences"] if d["member"] == member and d["kind"] == "content"], f["differences"]
    [dup] = [d for d in f["differences"] if d["attribute"] == "duplicate members"]
    assert (dup["member"], dup["a"], dup["b"]) == (member, 2, 1), dup
    text = run([DETPACK, "diff", raw, ours])
    assert f"A holds 2 members named {member!r}; the last one is compared" in text.stdout, text.stdout

    r = run([DETPACK, "diff", "--content-only", raw, ours])
    assert r.code == 0, r.stdout + r.stderr  # the same content once the stale copy is set aside as build does
    assert r.stdout.splitlines()[0] == "same content", r.stdout
    assert f"A holds more than one member named {member!r}; the last one is compared" in r.stdout, r.stdout
