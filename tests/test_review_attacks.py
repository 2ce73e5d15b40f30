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


def _gnu_sparse_bomb(path: Path, blocks: int) -> Path:
    """A tar.gz whose one member is an old-style GNU sparse file followed by ``blocks`` extension headers of 21
    regions each: tarfile collects every region before it yields the member (a list growing with the input)."""
    info = tarfile.TarInfo("holes.bin")
    info.size = 0
    head = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    head[156:157] = tarfile.GNUTYPE_SPARSE
    head[482] = 1  # isextended
    head[483:495] = b"%011o\0" % 1
    head[148:156] = b" " * 8
    head[148:155] = b"%06o\0" % sum(head)
    region = (b"%011o\0" % 1) * 2
    extension = region * 21 + b"\1" + bytes(7)
    with gzip.open(path, "wb", compresslevel=1) as gz:
        gz.write(bytes(head))
        gz.write(extension * (blocks - 1))
        gz.write(region * 21 + bytes(8) + bytes(1024))
    return path


def _pax_sparse_bomb(path: Path, numbers: int) -> Path:
    """A tar.gz whose member is a GNU sparse 1.0 file (pax): its data starts with a map of ``numbers`` // 2
    regions, which tarfile reads whole into a list before it yields the member."""
    pax = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "holes.bin",
           "GNU.sparse.realsize": "1"}  # fmt: skip
    info = tarfile.TarInfo("GNUSparseFile.0/holes.bin")
    info.pax_headers = pax
    body = b"%d\n" % (numbers // 2) + b"1\n" * numbers
    info.size = len(body)
    with gzip.open(path, "wb", compresslevel=1) as gz:
        gz.write(info.tobuf(tarfile.PAX_FORMAT) + body + bytes(-len(body) % 512) + bytes(1024))
    return path


@pytest.mark.parametrize("kind", ["gnu-old", "pax-1.0"])
def test_a_sparse_map_bomb_is_refused_before_it_is_read(kind: str, tmp_path: Path) -> None:
    """A few hundred KB of gzip holding millions of sparse regions: tarfile made a tuple of each (about 0.5 GB)
    before ``normalize`` (or any tar reader) saw the member. Refused in one line, memory flat."""
    import tracemalloc

    from detpack.archive.normalize import NormalizeOptions, normalize_file

    src = (
        _gnu_sparse_bomb(tmp_path / "sparse.tar.gz", 100_000)
        if kind == "gnu-old"
        else _pax_sparse_bomb(tmp_path / "sparse.tar.gz", 4_000_000)
    )
    assert src.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DetpackError) as info:
            normalize_file(src, tmp_path / "out.tar.gz", NormalizeOptions(epoch=0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(src)) and "sparse" in message, message
    assert peak < 32 << 20, f"{peak >> 20} MiB"
    assert not (tmp_path / "out.tar.gz").exists()


@pytest.mark.parametrize("metadata", [False, True], ids=["build", "metadata"])
def test_a_hook_answer_that_is_not_a_file_name_is_one_line(
    metadata: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """build_wheel answering None, prepare_metadata_for_build_wheel answering 42: ``build`` joined the answer to
    a path (TypeError: a traceback, exit 3)."""
    require_tool("bwrap")
    src = materialize(FIXTURES / "hostile-backend", tmp_path / "src", 0o022)
    (src / "_backend" / "attack.json").write_text(json.dumps({"kind": "answer-not-string"}))
    argv = ["build", str(src), "--find-links", str(WHEELHOUSE), "--offline", "--no-cache", "-q"]
    argv += ["--metadata"] if metadata else ["-o", str(tmp_path / "out"), "--wheel"]
    code = main(argv)
    line = _one_line(code, capsys.readouterr().err)
    assert "not a file name" in line, line
