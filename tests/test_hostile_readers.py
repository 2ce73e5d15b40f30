"""Hostile wheels at the readers that take one small member whole (``archive.small``): ``build --metadata``
of a wheel, ``rebuild --pypi`` of a release whose published wheel is hostile, the SBOM's metadata.

Each wheel is fx_flit's own with one attack: its METADATA or WHEEL member a bzip2 bomb (a few hundred
bytes that make 256 MiB, declared as such or as 10 bytes: zipfile's reader decompresses a bzip2 chunk
whole), or a central directory of 500,000 entries (zipfile makes an object of each before anything
counts them). The harm: the host's memory (peak RSS of the detpack process, measured) or a traceback.
Each must end in one line naming the wheel, exit 2, within 200 MB.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import DETPACK, run
from detpack.archive.small import dist_info_member, open_zip_small
from detpack.errors import ArchiveError

BOMB = 256 << 20
PEAK_LIMIT_KB = 200_000
_WRAP = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
)


def _run_measured(argv: list[object], timeout: float = 600) -> tuple[int, str, str, int]:
    """Run ``argv`` alone under a parent that reports its peak RSS (KiB): (exit code, stdout, stderr, peak)."""
    r = run([sys.executable, "-c", _WRAP, *argv], timeout=timeout)
    *lines, peak = r.stderr.strip().splitlines()
    return r.code, r.stdout, "\n".join(lines), int(peak)


def _rewrite(wheel: Path, out: Path, member: str, method: int, extra: int, declare: int | None) -> Path:
    """``wheel`` copied to ``out`` with ``member`` (METADATA, WHEEL) ``extra`` newlines longer, compressed
    with ``method``; ``declare``: the size its entries claim instead of the true one."""
    with zipfile.ZipFile(wheel) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(out, "w") as zf:
        for info, data in members:
            if info.filename.count("/") == 1 and info.filename.endswith(f".dist-info/{member}"):
                info.compress_type = method
                data += b"\n" * extra
            zf.writestr(info, data)
    if declare is not None:
        data = bytearray(out.read_bytes())
        for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
            at = data.find(signature)
            while at >= 0:
                name_len = struct.unpack_from("<H", data, at + offset + 4 if signature == b"PK\x03\x04" else 28)[0]
                start = at + (30 if signature == b"PK\x03\x04" else 46)
                if data[start : start + name_len].decode().endswith(f".dist-info/{member}"):
                    struct.pack_into("<I", data, at + offset, declare)
                at = data.find(signature, at + 4)
        out.write_bytes(bytes(data))
    return out


def _flood(wheel: Path, out: Path, entries: int = 500_000) -> Path:
    """``wheel`` with its central directory followed by ``entries`` more entries, all naming one empty
    member (47 bytes each), counted in the end record."""
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 33, 0, 0, 0, 1, 0) + b"a"
    fields = (b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 33, 0, 0, 0, 1, 0, 0, 0, 0)
    directory = (struct.pack("<4s4B4HL2L5H2L", *fields, 0o100644 << 16, 0) + b"a") * entries
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory), len(local), 0)
    del wheel  # the flood is a zip of its own: nothing of the wheel is needed to make it refused
    out.write_bytes(local + directory + end)
    return out


Attack = Callable[[Path, Path], Path]
ATTACKS: dict[str, Attack] = {
    "metadata-bzip2-declared": lambda w, o: _rewrite(w, o, "METADATA", zipfile.ZIP_BZIP2, BOMB, None),
    "wheel-bzip2-declares-10": lambda w, o: _rewrite(w, o, "WHEEL", zipfile.ZIP_BZIP2, BOMB, 10),
    "wheel-lzma-declared": lambda w, o: _rewrite(w, o, "WHEEL", zipfile.ZIP_LZMA, BOMB, None),
    "central-flood": _flood,
}


@pytest.mark.parametrize("attack", ["metadata-bzip2-declared", "central-flood"])
def test_build_metadata_of_a_hostile_wheel_is_one_line(attack: str, flit_release: Path, tmp_path: Path) -> None:
    name = "fx_flit-1.0.0-py3-none-any.whl"
    wheel = ATTACKS[attack](flit_release / name, tmp_path / name)
    code, out, err, peak = _run_measured([DETPACK, "build", wheel, "--metadata"])
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {wheel}") and ("max_metadata_bytes" in err or "max_members" in err), err
    assert peak < PEAK_LIMIT_KB, f"{peak >> 10} MiB at the peak"
    # the perturbation: the wheel it was made from answers
    code, out, err, _ = _run_measured([DETPACK, "build", flit_release / "fx_flit-1.0.0-py3-none-any.whl", "--metadata"])
    assert code == 0 and '"name": "fx-flit"' in out, err


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_rebuild_pypi_of_a_release_with_a_hostile_published_wheel_is_one_line(
    attack: str, flit_release: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    shutil.copy2(flit_release / "fx_flit-1.0.0.tar.gz", index)
    wheel = ATTACKS[attack](flit_release / "fx_flit-1.0.0-py3-none-any.whl", index / "fx_flit-1.0.0-py3-none-any.whl")
    argv: list[object] = [DETPACK, "rebuild", "--pypi", "fx_flit==1.0.0", "--offline", "--find-links", index]
    try:
        code, _, err, peak = _run_measured([*argv, "--find-links", wheelhouse, "-o", tmp_path / "keep"], 900)
    except subprocess.TimeoutExpired:
        pytest.fail("rebuild --pypi did not end")
    lines = [ln for ln in err.splitlines() if not ln.startswith("* ")]  # its progress lines
    assert "Traceback" not in err and code == 2 and len(lines) == 1, err
    assert wheel.name in lines[0] or "fx_flit==1.0.0" in lines[0], lines[0]
    assert peak < PEAK_LIMIT_KB, f"{peak >> 10} MiB at the peak"


def test_a_small_member_is_read_within_its_declared_size(flit_release: Path, tmp_path: Path) -> None:
    wheel = flit_release / "fx_flit-1.0.0-py3-none-any.whl"
    with open_zip_small(wheel) as zf:
        assert dist_info_member(zf, "METADATA", "w").startswith(b"Metadata-Version:")
    bomb = ATTACKS["wheel-bzip2-declares-10"](wheel, tmp_path / "bomb.whl")
    with open_zip_small(bomb) as zf, pytest.raises(ArchiveError, match=r"'fx_flit-1\.0\.0\.dist-info/WHEEL'") as info:
        dist_info_member(zf, "WHEEL", str(bomb))
    assert "\n" not in str(info.value)
