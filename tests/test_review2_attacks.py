"""An attacker's review of ``rebuild --pypi`` against a hostile release: its sdist and published wheel are the
attacker's bytes. Each case is a hole the review found, closed.

Run in-process (``detpack.cli.main``, the library): the code under test is this tree's.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import WHEELHOUSE, require_tool
from detpack.cli import main
from detpack.errors import InputError

#: What a hostile name carries to a terminal: a clear-screen, a cursor moved up over the verdict line, a
#: window-title (OSC) sequence, a carriage return, and a line break followed by a verdict of its own.
FORGED = "\x1b[2J\x1b[1A\x1b]0;owned\x07\r\nfx_flit==1.0.0: 1 byte-identical of 1 wheel"


def _hostile_wheel(published: Path, target: Path) -> None:
    """The published wheel with a ``Generator:`` and a member name holding terminal sequences and a line break."""
    with zipfile.ZipFile(published) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        stamp = src.infolist()[0].date_time
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".dist-info/WHEEL"):
                data = b"".join(
                    b"Generator: \x1b[2Jevil\x1b[1A\r\n" if ln.startswith(b"Generator:") else ln
                    for ln in data.splitlines(keepends=True)
                )
            out.writestr(info, data)
        out.writestr(zipfile.ZipInfo(f"fx_flit/x{FORGED}.py", stamp), b"")


@pytest.mark.slow
@pytest.mark.integration
def test_names_from_the_release_cannot_drive_the_terminal_or_forge_report_lines(
    flit_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text report printed the published wheel's ``Generator:`` and member names as they are: escape
    sequences reached the user's terminal (clear it, move the cursor over the real verdict, set its title) and a
    line break in a member name printed a verdict line of the attacker's."""
    require_tool("bwrap")
    links = tmp_path / "links"
    links.mkdir()
    shutil.copy2(flit_release / "fx_flit-1.0.0.tar.gz", links)
    wheel = "fx_flit-1.0.0-py3-none-any.whl"
    _hostile_wheel(flit_release / wheel, links / wheel)
    argv = ["rebuild", "--pypi", "fx_flit==1.0.0", "--offline", "--find-links", str(links)]
    code = main([*argv, "--find-links", str(WHEELHOUSE), "-v"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    for stream in (out, err):
        assert "\x1b" not in stream and "\r" not in stream and "\x07" not in stream, stream
    lines = out.splitlines()
    assert lines[0] == "fx_flit==1.0.0: 1 different of 1 wheel", out
    assert not any(ln.lstrip().startswith("fx_flit==1.0.0: 1 byte-identical") for ln in lines), out
    assert "\\u001b[2J" in out, "the name is shown, escaped"


@pytest.mark.slow
@pytest.mark.integration
def test_a_published_umask_of_zero_leaves_no_writable_output_in_the_outdir(
    flit_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A published ``.dist-info/WHEEL`` of mode 0666 makes the replay run under umask 0, detpack's own process
    too: the rebuild's wheel, log and provenance were staged in ``-o DIR/rebuilt`` as 0666 files until moved into
    place, so any local user could open one for writing then and change the kept rebuild after it was hashed."""
    require_tool("bwrap")
    from detpack.build import pipeline

    links = tmp_path / "links"
    links.mkdir()
    shutil.copy2(flit_release / "fx_flit-1.0.0.tar.gz", links)
    wheel = "fx_flit-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(flit_release / wheel) as src, zipfile.ZipFile(links / wheel, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".dist-info/WHEEL"):
                info.external_attr = 0o100666 << 16
            out.writestr(info, data + (b"# another\n" if info.filename.endswith("__init__.py") else b""))
    staged: list[int] = []
    commit = pipeline._Staging.commit

    def watched(self: pipeline._Staging) -> None:
        for tmp, _ in self.pending:
            staged.append(tmp.stat().st_mode & 0o777)
        commit(self)

    monkeypatch.setattr(pipeline._Staging, "commit", watched)
    argv = ["rebuild", "--pypi", "fx_flit==1.0.0", "--offline", "--find-links", str(links), "-o", str(tmp_path / "o")]
    code = main([*argv, "--find-links", str(WHEELHOUSE)])
    out, err = capsys.readouterr()
    assert code == 1 and "umask 0000" in err, out + err
    assert len(staged) >= 2 and all(mode & 0o022 == 0 for mode in staged), [oct(m) for m in staged]


@pytest.mark.parametrize("odd", ["\x00", "\x1b[2J", "\n"])
def test_a_listed_file_name_that_is_no_plain_name_is_not_the_releases(
    odd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """packaging reads ``fx_x-1.0-py3-none-any.<NUL>.whl`` as a wheel (a tag of its own) and ``fx_x-1.0<LF>.tar.gz``
    as an sdist (a version's surrounding blanks): an index listing such names had them fetched to
    ``published/`` under that name (a NUL: ValueError, a traceback) and shown as the release's files."""
    from detpack.verify import index

    names = [f"fx_x-1.0-py3-none-any.{odd}.whl", f"fx_x-1.0{chr(10)}.tar.gz"]
    listed = tuple(index.IndexFile(n, f"https://example.invalid/{i}", None) for i, n in enumerate(names))
    monkeypatch.setattr(index, "project_files", lambda *_: listed)
    monkeypatch.setattr(index, "index_url", lambda *_: "https://example.invalid/simple")
    assert index.release_wheels("fx_x", "1.0", find_links=[], offline=False) == ()
    with pytest.raises(InputError, match="no published wheel"):
        index.fetch_wheel("fx_x", "1.0", tmp_path / "published", find_links=[], offline=False)
    with pytest.raises(InputError, match="no sdist"):
        index.fetch_sdist("fx_x", "1.0", tmp_path / "published", find_links=[], offline=False)
