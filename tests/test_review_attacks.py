"""An attacker's review of ``build --metadata``'s reading of a hook's answer and of ``rebuild --pypi``'s own
fetch of the published wheel: each case is a hole the review found, closed.

Run in-process (``detpack.cli.main``, the library): the code under test is this tree's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FIXTURES, WHEELHOUSE, materialize, require_tool
from detpack.cli import main


def _one_line(code: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.slow
@pytest.mark.integration
def test_build_metadata_with_an_env_dir_leaves_the_folder_beside_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--env-dir DIR --metadata``: the hook's metadata directory was ``DIR/../metadata``, made afresh
    (a folder of the user's named ``metadata`` beside the environment emptied), and outside the sandbox's
    view (the hook could not write there). It belongs in the build root."""
    require_tool("bwrap")
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    mine = tmp_path / "user" / "metadata"
    mine.mkdir(parents=True)
    (mine / "keep.txt").write_text("the user's")
    argv = ["build", str(src), "--metadata", "--env-dir", str(tmp_path / "user" / "venv"), "--no-cache"]
    code = main([*argv, "--find-links", str(WHEELHOUSE), "--offline"])
    out, err = capsys.readouterr()
    assert (mine / "keep.txt").read_text() == "the user's"
    assert code == 0 and '"name": "fx-flit"' in out, err


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("kind", ["metadata-nul", "metadata-wheel-nul"])
def test_a_hook_answer_holding_a_nul_is_one_line(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A NUL in the directory (or wheel) name the hook answers: ``os.lstat`` raises ValueError, a traceback
    (exit 3) instead of a refusal."""
    require_tool("bwrap")
    src = materialize(FIXTURES / "hostile-backend", tmp_path / "src", 0o022)
    (src / "_backend" / "attack.json").write_text(json.dumps({"kind": kind}))
    code = main(["build", str(src), "--metadata", "--find-links", str(WHEELHOUSE), "--offline", "--no-cache"])
    line = _one_line(code, capsys.readouterr().err)
    assert "NUL" in line and str(src) in line, line
