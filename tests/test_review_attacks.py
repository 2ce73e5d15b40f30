"""An attacker's review of ``build --metadata``'s reading of a hook's answer and of ``rebuild --pypi``'s own
fetch of the published wheel: each case is a hole the review found, closed.

Run in-process (``detpack.cli.main``, the library): the code under test is this tree's.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path

import pytest
from packaging.tags import sys_tags

from conftest import FIXTURES, WHEELHOUSE, materialize, require_tool
from detpack.archive.entry import MAX_TAR_HEADER
from detpack.cli import main
from detpack.errors import DetpackError, InputError
from detpack.verify import index


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


def _links(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "links"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"PK\x05\x06" + bytes(18))
    return folder


def test_a_pure_wheel_this_interpreter_cannot_take_does_not_hide_a_platform_wheel(tmp_path: Path) -> None:
    """pip (``--platform any`` failing, then ``--only-binary :all:``) took the platform wheel when the pure one
    is for Python 2 only; ``fetch_wheel`` refused the release."""
    platform = f"fx_x-1.0-{next(iter(sys_tags()))}.whl"  # the tag this interpreter ranks first
    folder = _links(tmp_path, "fx_x-1.0-py2-none-any.whl", platform)
    got = index.fetch_wheel("fx_x", "1.0", tmp_path / "dest", find_links=[folder], offline=True)
    assert got.name == platform


@pytest.mark.parametrize("what", ["fifo", "dir", "dangling"])
def test_a_wheel_in_find_links_that_is_not_a_file_is_not_fetched_from_the_index_offline(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``--find-links`` entry named like the wheel but not a regular file: ``fetch_wheel`` asked the index
    even ``--offline`` (and, when the index did not list it, ended in StopIteration: a traceback)."""
    folder = _links(tmp_path)
    odd = folder / "fx_x-1.0-py3-none-any.whl"
    {"fifo": lambda: os.mkfifo(odd), "dir": odd.mkdir, "dangling": lambda: odd.symlink_to("nowhere")}[what]()

    def no_index(*_: object) -> None:
        raise AssertionError("offline, the index was asked")

    monkeypatch.setattr(index, "project_files", no_index)
    with pytest.raises(InputError, match="no published wheel") as info:
        index.fetch_wheel("fx_x", "1.0", tmp_path / "dest", find_links=[folder], offline=True)
    assert "\n" not in info.value.message


def _header_bomb(path: Path, kind: bytes, size: int = 16 << 20) -> Path:
    """An sdist whose first header is a pax (or GNU long-name) header of ``size`` bytes, then its PKG-INFO:
    gzip makes the header a few hundred KiB; tarfile reads it whole (and parses it) before the member."""
    body = b" comment=" + b"A" * (size - 40) + b"\n"
    record = str(len(body) + 9).encode() + body if kind == tarfile.XHDTYPE else b"A" * size
    head = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    head.type, head.size = kind, len(record)
    pkg = b"Metadata-Version: 2.1\nName: fx-x\nVersion: 1.0\n"
    info = tarfile.TarInfo("fx_x-1.0/PKG-INFO")
    info.size = len(pkg)
    with gzip.open(path, "wb") as gz:
        gz.write(head.tobuf(tarfile.USTAR_FORMAT))
        gz.write(record + bytes(-len(record) % 512))
        gz.write(info.tobuf(tarfile.USTAR_FORMAT) + pkg + bytes(-len(pkg) % 512) + bytes(1024))
    return path


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME], ids=["pax", "gnu-longname"])
@pytest.mark.parametrize("reader", ["sbom", "inspect_source", "unpack_sdist", "publisher"])
def test_a_tar_header_bomb_is_refused_before_it_is_read(
    reader: str, kind: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile sdist (``rebuild --pypi``'s, the SBOM's, ``build``'s input) whose header declares 16 MiB:
    refused in one line naming the sdist, not read whole (a 1 MB sdist made the SBOM's reader hold 3 GB)."""
    from detpack.build.source import inspect_source
    from detpack.build.workspace import unpack_sdist
    from detpack.sbom import project_facts
    from detpack.verify.publisher import sdist_modes_kept

    sdist = _header_bomb(tmp_path / "fx_x-1.0.tar.gz", kind)

    def read_whole(*_: object) -> None:
        raise AssertionError("the header was read whole")

    for method in ("_proc_pax", "_proc_gnulong"):  # tarfile's readers of such a header, whole
        monkeypatch.setattr(tarfile.TarInfo, method, read_whole)
    if reader == "publisher":  # its facts are hints: an unreadable sdist shows none
        assert not sdist_modes_kept(sdist, sdist)
        return
    call = {
        "sbom": lambda: project_facts(sdist, False),
        "inspect_source": lambda: inspect_source(sdist),
        "unpack_sdist": lambda: unpack_sdist(sdist, tmp_path / "out", sdist),
    }[reader]
    with pytest.raises(DetpackError) as info:
        call()
    assert str(sdist) in info.value.message and "\n" not in info.value.message, info.value.message
    assert f"more than {MAX_TAR_HEADER}" in info.value.message, info.value.message
