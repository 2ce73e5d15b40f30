"""The hostile-input suite, generated here: every case is refused with one line naming the
file, the member and the problem (nothing written), or, for valid but unusual input, handled
correctly. The same inputs never make ``diff`` fail with anything but a DetpackError."""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import tarfile
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import DETPACK, run
from detpack import DetpackError, InputError, NormalizeOptions, compare_paths, normalize_file
from detpack.policy import Limits

OPTS = NormalizeOptions(315532800)
Maker = Callable[[Path], Path]


def zip_of(entries: list[tuple[str, bytes, int]], **kw: object) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are the point of some cases
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            zi.external_attr = mode << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    return buf.getvalue()


GOOD_ZIP = [("pkg/__init__.py", b"A = 1\n" * 50, 0o100644), ("pkg/data.txt", b"hello\n" * 100, 0o100644)]


def tar_of(infos: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in infos:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti(name: str, data: bytes = b"", **kw: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    return info, (data if info.isfile() else None)


GOOD_TAR = [ti("p-1/PKG-INFO", b"Metadata-Version: 2.1\n"), ti("p-1/a.py", b"x = 1\n" * 100)]


def gz(data: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


def _write(name: str, data: bytes) -> Maker:
    def make(tmp: Path) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p

    return make


def _zip_mutate(fn: Callable[[bytearray], None], entries: list[tuple[str, bytes, int]] = GOOD_ZIP) -> bytes:
    data = bytearray(zip_of(entries))
    fn(data)
    return bytes(data)


def _set_flag_encrypted(data: bytearray) -> None:
    # flag bits live at offset 6 in the local header and 8 in each central header
    data[6] |= 1
    cd = data.find(b"PK\x01\x02")
    while cd != -1:
        data[cd + 8] |= 1
        cd = data.find(b"PK\x01\x02", cd + 4)


def _second_encrypted(data: bytearray) -> None:
    # the last central entry (the repeat of the first member) and its local header say "encrypted"
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 8] |= 1
    (offset,) = struct.unpack_from("<I", data, cd + 42)
    data[offset + 6] |= 1


def _lzma_bad_properties(tmp: Path) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_LZMA) as zf:
        zf.writestr("x.bin", b"lzma member\n" * 20)
    data = bytearray(buf.getvalue())
    data[30 + len("x.bin") + 4] = 0xFF  # the LZMA properties byte (lc/lp/pb) after the 4-byte header
    return _write("a.zip", bytes(data))(tmp)


def _other_method(method: int) -> Maker:
    def make(tmp: Path) -> Path:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, data, _ in [*GOOD_ZIP, ("empty", b"", 0), ("big", os.urandom(1 << 20) + b"text " * 300_000, 0)]:
                zf.writestr(name, data)
        return _write("a.zip", buf.getvalue())(tmp)

    return make


def _rename_local(data: bytearray) -> None:
    i = data.find(b"pkg/__init__.py")
    data[i : i + 3] = b"evl"  # local header name no longer matches the central directory


def _nul_in_name(data: bytearray) -> None:
    for at in (i for i in range(len(data)) if data.startswith(b"pkg/data.txt", i)):
        data[at + 3] = 0  # "pkg\0data.txt" in the local and the central header


def _bad_crc(data: bytearray) -> None:
    cd = data.find(b"PK\x01\x02")
    data[cd + 16] ^= 0xFF
    data[16] ^= 0xFF


def _cd_offset_beyond(data: bytearray) -> None:
    # the end record claims the central directory starts 100 bytes later than it does: zipfile shifts every
    # member's local header offset by the difference, so the first member's is negative
    eocd = data.find(b"PK\x05\x06")
    (offset,) = struct.unpack_from("<I", data, eocd + 16)
    struct.pack_into("<I", data, eocd + 16, offset + 100)


def _truncations() -> list[tuple[str, Maker, str]]:
    z = zip_of(GOOD_ZIP)
    cd = z.find(b"PK\x01\x02")
    eocd = z.find(b"PK\x05\x06")
    cuts = {
        "zip-cut-local-header": 10,
        "zip-cut-data": 60,
        "zip-cut-before-central": cd,
        "zip-cut-central": cd + 20,
        "zip-cut-eocd": eocd + 10,
    }
    out: list[tuple[str, Maker, str]] = [
        (k, _write(f"{k}.zip", z[:v]), "corrupt or truncated zip") for k, v in cuts.items()
    ]
    t = tar_of(GOOD_TAR)
    tgz = gz(t)
    for k, v in {"tar-cut-header": 300, "tar-cut-data": 512 + 20, "tar-cut-second-header": 1024 + 100}.items():
        out.append((k, _write(f"{k}.tar", t[:v]), ""))
    for k, v in {"targz-cut-header": 6, "targz-cut-deflate": len(tgz) // 2, "targz-cut-trailer": len(tgz) - 4}.items():
        out.append((k, _write(f"{k}.tar.gz", tgz[:v]), ""))
    return out


def _zip64(tmp: Path) -> Path:
    p = tmp / "zip64.zip"
    with zipfile.ZipFile(p, "w") as zf, zf.open("big.txt", "w", force_zip64=True) as f:
        f.write(b"zip64 member\n")
    return p


def _sparse_tar(tmp: Path) -> Path:
    src = tmp / "sparse-src"
    src.mkdir()
    with (src / "holes.bin").open("wb") as f:
        f.seek(1 << 20)
        f.write(b"end")
    p = tmp / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(p), "-C", str(src), "holes.bin"], check=True)
    return p


def _gnu_longname(tmp: Path) -> Path:
    return _write("gnu-long.tar", tar_of([ti("p-1/" + "d" * 150 + "/" + "f" * 120, b"long\n")], tarfile.GNU_FORMAT))(
        tmp
    )


def _huge_size(tmp: Path) -> Path:
    info = tarfile.TarInfo("huge.bin")
    info.size = 1 << 40  # declares a terabyte, carries a few bytes
    return _write("huge.tar", info.tobuf(tarfile.PAX_FORMAT) + b"x" * 512 + bytes(1024))(tmp)


def _bomb(tmp: Path) -> Path:
    p = tmp / "bomb.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open("zeros.bin", "w") as f:
        chunk = bytes(1 << 20)
        for _ in range(40):
            f.write(chunk)
    return p


def _gz_bad_crc(tmp: Path) -> Path:
    data = bytearray(gz(b"some text\n" * 100))
    data[-8] ^= 0xFF
    return _write("badcrc.gz", bytes(data))(tmp)


def _zip64_malformed(tmp: Path) -> Path:
    data = bytearray(_zip64(tmp).read_bytes())
    i = data.find(b"\x01\x00", data.find(b"PK\x01\x02"))  # zip64 extra header id in the central directory
    data[i + 2] = 0xFF  # extra field length now runs past the record
    return _write("zip64-bad.zip", bytes(data))(tmp)


def _zip64_offset(offset: int, data: bytes) -> Maker:
    """A zip whose second member's central entry puts its local header at ``offset`` (a zip64 field)."""

    def make(tmp: Path) -> Path:
        raw = zlib.compress(data)[2:-4]
        crc = zlib.crc32(data)
        local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, 33, crc, len(raw), len(data), 1, 0)
        body = zip_of([("a", b"first\n", 0o100644)])
        cd = body.find(b"PK\x01\x02")
        eocd = body.find(b"PK\x05\x06")
        members = body[:cd] + local + b"b" + raw
        extra = struct.pack("<HHQ", 1, 8, offset)
        fields = (b"PK\x01\x02", 20, 3, 20, 0, 0, 8, 0, 33, crc, len(raw), len(data), 1, len(extra), 0, 0, 0)
        central = struct.pack("<4s4B4HL2L5H2L", *fields, 0o100644 << 16, 0xFFFFFFFF)  # the offset: in the extra
        directory = body[cd:eocd] + central + b"b" + extra
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 2, 2, len(directory), len(members), 0)
        return _write("offset.zip", members + directory + end)(tmp)

    return make


ERR = "error"
OK = "ok"
CASES: list[tuple[str, Maker, str]] = [
    ("zip-dotdot", _write("a.zip", zip_of([("../evil.py", b"x", 0o100644)])), "escapes the archive root"),
    ("zip-nested-dotdot", _write("a.zip", zip_of([("a/../../evil", b"x", 0o100644)])), "escapes the archive root"),
    ("zip-absolute", _write("a.zip", zip_of([("/etc/evil", b"x", 0o100644)])), "absolute path"),
    ("zip-drive-letter", _write("a.zip", zip_of([("C:/evil", b"x", 0o100644)])), "absolute path"),
    ("zip-backslash-dotdot", _write("a.zip", zip_of([("..\\evil.py", b"x", 0o100644)])), "escapes the archive root"),
    ("zip-backslash-abs", _write("a.zip", zip_of([("\\windows\\evil", b"x", 0o100644)])), "absolute path"),
    ("zip-symlink-abs", _write("a.zip", zip_of([("l", b"/etc/passwd", 0o120777)])), "points to absolute path"),
    ("zip-symlink-escape", _write("a.zip", zip_of([("l", b"../../x", 0o120777)])), "points outside the archive"),
    ("zip-symlink-deep-escape", _write("a.zip", zip_of([("a/b/l", b"../../../x", 0o120777)])), "points outside"),
    # a symlink's target is read while the members are listed: damaged there, or huge, it is refused in one line
    ("zip-symlink-bad-crc", _write("a.zip", _zip_mutate(_bad_crc, [("l", b"pkg/x", 0o120777)])), "symlink 'l'"),
    ("zip-symlink-huge-target", _write("a.zip", zip_of([("l", b"a/" * 4096, 0o120777)])), "symlink 'l'"),
    (
        "zip-through-symlink",
        _write("a.zip", zip_of([("d", b"sub", 0o120777), ("d/f", b"x", 0o100644)])),
        "written through symlink 'd'",
    ),
    ("zip-dup-same", _write("a.zip", zip_of([("a", b"1", 0o100644), ("a", b"1", 0o100644)])), OK),
    (
        "zip-dup-different",
        _write("a.zip", zip_of([("a", b"1", 0o100644), ("a", b"2", 0o100644)])),
        "two different members are named 'a'",
    ),
    (
        "zip-dup-after-dot-slash",
        _write("a.zip", zip_of([("./a", b"1", 0o100644), ("a", b"2", 0o100644)])),
        "two different members",
    ),
    ("zip-dir-and-file", _write("a.zip", zip_of([("a/", b"", 0o40755), ("a", b"2", 0o100644)])), "two different"),
    ("zip-case-only", _write("a.zip", zip_of([("A.txt", b"1", 0o100644), ("a.txt", b"2", 0o100644)])), OK),
    ("zip-nul-name", _write("a.zip", _zip_mutate(_nul_in_name)), "NUL byte"),
    ("zip-empty-name", _write("a.zip", zip_of([("/", b"", 0o100644)])), "empty name"),
    ("zip-long-name", _write("a.zip", zip_of([("n" * 5000, b"1", 0o100644)])), "limit max_name_bytes"),
    ("zip-nested-archive", _write("a.zip", zip_of([("inner.zip", zip_of(GOOD_ZIP), 0o100644)])), OK),
    ("zip-encrypted", _write("a.zip", _zip_mutate(_set_flag_encrypted)), "is encrypted"),
    ("zip-bzip2-members", _other_method(zipfile.ZIP_BZIP2), OK),
    ("zip-lzma-members", _other_method(zipfile.ZIP_LZMA), OK),
    # lzma's own error (neither OSError nor ValueError) escaped as a traceback
    ("zip-lzma-bad-properties", _lzma_bad_properties, "cannot read member 'x.bin'"),
    # The same name again, encrypted: zipfile's open() raised RuntimeError comparing the two (a traceback).
    ("zip-dup-encrypted", _write("a.zip", _zip_mutate(_second_encrypted, [*GOOD_ZIP, GOOD_ZIP[0]])), "is encrypted"),
    ("zip-local-central-mismatch", _write("a.zip", _zip_mutate(_rename_local)), "local header does not match"),
    ("zip-bad-crc", _write("a.zip", _zip_mutate(_bad_crc)), "CRC"),
    ("zip-offset-before-start", _write("a.zip", _zip_mutate(_cd_offset_beyond)), "outside the file"),
    ("zip-bomb-ratio", _bomb, "limit max_ratio"),
    # A zip64 offset past what lseek takes (2**63 and more; ext4 refuses 2**44 and more): the local
    # header is missing, as for any offset past the file's end (was a traceback or "cannot write").
    ("zip64-offset-past-any-file", _zip64_offset((1 << 63) + 5, b"small\n"), "bad local header"),
    ("zip64-offset-past-file-system", _zip64_offset(1 << 50, b"x" * (3 << 20)), "bad local header"),
    ("zip64-valid", _zip64, OK),
    ("zip64-malformed", _zip64_malformed, "corrupt"),
    ("zip-empty", _write("a.zip", zip_of([])), OK),
    (
        "zip-non-utf8-name",
        _write("a.zip", zip_of([("caf\udce9.txt".encode("utf-8", "surrogateescape").decode("cp437"), b"x", 0o100644)])),
        OK,
    ),
    (
        "wheel-two-dist-infos",
        _write(
            "x-1.0-py3-none-any.whl",
            zip_of([("a-1.dist-info/WHEEL", b"W", 0o100644), ("b-1.dist-info/WHEEL", b"W", 0o100644)]),
        ),
        "exactly one top-level .dist-info/WHEEL",
    ),
    ("tar-dotdot", _write("a.tar", tar_of([ti("../evil", b"x")])), "escapes the archive root"),
    ("tar-absolute", _write("a.tar", tar_of([ti("/etc/evil", b"x")])), "absolute path"),
    ("tar-symlink-abs", _write("a.tar", tar_of([ti("l", type=tarfile.SYMTYPE, linkname="/etc")])), "absolute path"),
    (
        "tar-symlink-escape",
        _write("a.tar", tar_of([ti("a/l", type=tarfile.SYMTYPE, linkname="../../x")])),
        "points outside the archive",
    ),
    (
        "tar-hardlink-escape",
        _write("a.tar", tar_of([ti("l", type=tarfile.LNKTYPE, linkname="../x")])),
        "escapes the archive root",
    ),
    (
        "tar-hardlink-missing",
        _write("a.tar", tar_of([ti("l", type=tarfile.LNKTYPE, linkname="nope")])),
        "not a file in the archive",
    ),
    (
        "tar-through-symlink",
        _write("a.tar", tar_of([ti("d", type=tarfile.SYMTYPE, linkname="sub"), ti("d/f", b"x")])),
        "both a file and a directory",
    ),
    ("tar-chr-device", _write("a.tar", tar_of([ti("dev/null", type=tarfile.CHRTYPE)])), "device or fifo"),
    ("tar-blk-device", _write("a.tar", tar_of([ti("dev/sda", type=tarfile.BLKTYPE)])), "device or fifo"),
    ("tar-fifo", _write("a.tar", tar_of([ti("pipe", type=tarfile.FIFOTYPE)])), "device or fifo"),
    ("tar-dup-different", _write("a.tar", tar_of([ti("a", b"1"), ti("a", b"22")])), "two different members"),
    ("tar-dup-same", _write("a.tar", tar_of([ti("a", b"1"), ti("a", b"1")])), OK),
    ("tar-file-and-dir", _write("a.tar", tar_of([ti("a", b"1"), ti("a/b", b"2")])), "both a file and a directory"),
    ("tar-negative-mtime", _write("a.tar", tar_of([ti("a", b"1", mtime=-86400)], tarfile.GNU_FORMAT)), OK),
    ("tar-huge-mtime", _write("a.tar", tar_of([ti("a", b"1", mtime=8**12)], tarfile.GNU_FORMAT)), OK),
    ("tar-gnu-longname", _gnu_longname, OK),
    ("tar-sparse", _sparse_tar, OK),
    ("tar-non-utf8-name", _write("a.tar", tar_of([ti("caf\udce9", b"x")], tarfile.GNU_FORMAT)), OK),
    ("tar-long-name", _write("a.tar", tar_of([ti("n" * 5000, b"1")])), "limit max_name_bytes"),
    (
        "tar-huge-declared-size",
        _write("a.tar", tar_of(GOOD_TAR)[: 512 * 3].replace(b"00000001130", b"77777777777", 1)),
        "",
    ),
    ("tar-empty", _write("a.tar", bytes(10240)), OK),
    ("gz-multi-member", _write("a.txt.gz", gz(b"first\n") + gz(b"second\n")), OK),
    ("gz-trailing-garbage", _write("a.txt.gz", gz(b"text\n") + b"GARBAGE!"), "corrupt gzip"),
    ("gz-bad-crc", _gz_bad_crc, "corrupt gzip"),
    ("targz-not-tar-inside", _write("a.tar.gz", gz(b"plain text, not a tar\n" * 50)), OK),
    ("empty-file", _write("a.zip", b""), "empty file"),
    ("random-bytes", _write("a.whl", os.urandom(4096)), ""),
    ("text-file", _write("a.tar.gz", b"hello\n" * 100), "not a zip, tar or gzip archive"),
    *_truncations(),
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("case", "make", "expect"), CASES, ids=[c[0] for c in CASES])
def test_normalize_answers_every_hostile_input(case: str, make: Maker, expect: str, tmp_path: Path) -> None:
    src = make(tmp_path)
    outdir = tmp_path / "out"
    outdir.mkdir()
    target = outdir / src.name
    if expect == OK:
        first = normalize_file(src, target, OPTS)
        again = normalize_file(target, outdir / ("again-" + src.name), OPTS)
        assert first.sha256 == again.sha256, "normalize must be idempotent"
        return
    with pytest.raises(InputError) as info:
        normalize_file(src, target, OPTS)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(src))
    assert expect in message, message
    assert list(outdir.iterdir()) == []


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("case", "make", "expect"), CASES, ids=[c[0] for c in CASES])
def test_diff_never_crashes(case: str, make: Maker, expect: str, tmp_path: Path) -> None:
    src = make(tmp_path)
    other = tmp_path / "other" / src.name
    other.parent.mkdir()
    other.write_bytes(src.read_bytes() + b"" if src.suffix == ".gz" else src.read_bytes())
    # Against a slightly different file, so the comparison has to parse both sides.
    with other.open("ab") as f:
        f.write(b"\0")
    try:
        compare_paths(src, other)
    except DetpackError as exc:
        assert "\n" not in str(exc)


def test_there_are_at_least_60_cases() -> None:
    assert len(CASES) >= 60


def test_limits_are_named_and_can_be_raised(tmp_path: Path) -> None:
    many = _write("many.zip", zip_of([(f"f{i}", b"x", 0o100644) for i in range(101)]))(tmp_path)
    small = NormalizeOptions(315532800, limits=Limits(max_members=100))
    with pytest.raises(InputError, match="limit max_members"):
        normalize_file(many, tmp_path / "o.zip", small)
    assert normalize_file(many, tmp_path / "o.zip", NormalizeOptions(315532800, limits=Limits(max_members=101)))
    big = _write("big.tar.gz", gz(tar_of([ti("a", b"x" * 5000)])))(tmp_path)
    with pytest.raises(InputError, match="limit max_total_bytes"):
        normalize_file(big, tmp_path / "o.tar.gz", NormalizeOptions(0, limits=Limits(max_total_bytes=4096)))
    r = run([DETPACK, "normalize", many, "-o", tmp_path / "cli", "--limit", "max_members=100"])
    assert r.code == 2 and "limit max_members" in r.stderr
    r = run([DETPACK, "normalize", many, "-o", tmp_path / "cli", "--limit", "max_members=1K"])
    assert r.code == 0, r.stderr
    r = run([DETPACK, "normalize", many, "-o", tmp_path / "cli", "--limit", "nonsense=1"])
    assert r.code == 2 and "expected NAME=VALUE" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tar-dotdot", "tar-symlink-escape", "tar-chr-device"])
def test_build_from_a_hostile_sdist_is_refused(case: str, tmp_path: Path) -> None:
    maker = dict((c[0], c[1]) for c in CASES)[case]
    raw = maker(tmp_path).read_bytes()
    members = tar_of([ti("evil-1.0/PKG-INFO", b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")])
    sdist = tmp_path / "evil-1.0.tar.gz"
    # The hostile member sits inside an otherwise plausible sdist.
    with tarfile.open(fileobj=io.BytesIO(raw)) as bad, tarfile.open(fileobj=io.BytesIO(members)) as good:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for m in good.getmembers():
                tf.addfile(m, good.extractfile(m))
            for m in bad.getmembers():
                m.name = "evil-1.0/" + m.name if not m.name.startswith(("/", "..")) else m.name
                tf.addfile(m, bad.extractfile(m) if m.isfile() else None)
    sdist.write_bytes(gz(out.getvalue()))
    r = run([DETPACK, "build", sdist, "-o", tmp_path / "dist"])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.code == 2 and len(lines) == 1 and str(sdist) in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


def test_zip_header_struct_sanity() -> None:
    # The mutations above rely on these offsets; fail loudly if zipfile changes its layout.
    data = zip_of(GOOD_ZIP)
    assert data[:4] == b"PK\x03\x04" and struct.unpack("<H", data[26:28])[0] == len("pkg/__init__.py")
    assert zlib.crc32(b"A = 1\n" * 50) == struct.unpack("<I", data[14:18])[0]


REGRESSIONS = sorted((Path(__file__).parent / "fuzz-regressions").iterdir())


@pytest.mark.parametrize("crash", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_fuzz_regressions(crash: Path, tmp_path: Path) -> None:
    # Inputs that once crashed a reader (fuzz/run.py): now a clear error or a valid result.
    case = tmp_path / crash.name.split("-", 1)[1]
    case.write_bytes(crash.read_bytes())
    try:
        normalize_file(case, tmp_path / "out" / case.name, OPTS)
    except DetpackError as exc:
        assert "\n" not in str(exc) and str(case) in str(exc)


def _with_trailing_bytes(tmp: Path, content: bytes, declared: int, method: int, mode: int = 0o100644) -> Path:
    """A zip whose member 'big' carries ``content`` (its deflate stream, or stored) and 24 MiB of zeros
    after it, all within its central entry's compressed size; the entry declares ``declared`` bytes."""
    raw = (zlib.compress(content)[2:-4] if method == zipfile.ZIP_DEFLATED else content) + bytes(24 << 20)
    crc = zlib.crc32(content)
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, method, 0, 33, crc, len(raw), declared, 3, 0)
    fields = (b"PK\x01\x02", 20, 3, 20, 0, 0, method, 0, 33, crc, len(raw), declared, 3, 0, 0, 0, 0)
    central = struct.pack("<4s4B4HL2L5H2L", *fields, mode << 16, 0) + b"big"
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + 3 + len(raw), 0)
    return _write(f"trailing-{method}-{declared}.zip", local + b"big" + raw + central + end)(tmp)


@pytest.mark.parametrize(
    ("size", "declared", "method", "expect"),
    [
        (11, 10, zipfile.ZIP_STORED, "member 'big'"),  # 24 MiB for 10 bytes: was read whole, then checked
        (11, 10, zipfile.ZIP_DEFLATED, "holds more data than its declared 10 bytes"),
        (300_000, 300_000, zipfile.ZIP_DEFLATED, OK),  # the bytes after the stream's end were kept as they came
        (5, 5, zipfile.ZIP_DEFLATED, OK),  # a symlink's target: its whole stream was read (zipfile's read())
    ],
    ids=["stored-declares-10", "deflated-declares-10", "after-the-stream-end", "symlink-target"],
)
def test_member_memory_does_not_grow_with_its_compressed_size(
    size: int, declared: int, method: int, expect: str, tmp_path: Path
) -> None:
    content, mode = (b"a.txt", 0o120777) if size == 5 else ((bytes(range(256)) * 1200)[:size], 0o100644)
    src = _with_trailing_bytes(tmp_path, content, declared, method, mode)
    tracemalloc.start()
    try:
        if expect == OK:
            normalize_file(src, tmp_path / "out.zip", OPTS)
        else:
            with pytest.raises(InputError, match=expect):
                normalize_file(src, tmp_path / "out.zip", OPTS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / (1 << 20):.1f} MiB for a member of 24 MiB"


def test_central_directory_is_counted_before_it_is_parsed(tmp_path: Path) -> None:
    # 250,000 central entries of 47 bytes (all naming one empty member): zipfile made an object of each
    # (~100 MiB for a 12 MB file; 425 MB RSS for 1,000,000) before the member limit was checked, in
    # normalize and in diff (which reads the directory to classify the zip, then to list it).
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 33, 0, 0, 0, 1, 0) + b"a"
    fields = (b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 33, 0, 0, 0, 1, 0, 0, 0, 0)
    directory = (struct.pack("<4s4B4HL2L5H2L", *fields, 0o100644 << 16, 0) + b"a") * 250_000
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory), len(local), 0)
    src = _write("entries.zip", local + directory + end)(tmp_path)
    good = _write("good.zip", zip_of(GOOD_ZIP))(tmp_path)
    for attempt in (lambda: normalize_file(src, tmp_path / "out.zip", OPTS), lambda: compare_paths(src, good)):
        tracemalloc.start()
        try:
            with pytest.raises(DetpackError, match="limit max_members"):
                attempt()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, f"{peak / (1 << 20):.1f} MiB for a directory of 12 MB"


def test_diff_of_an_encrypted_member_is_one_line(tmp_path: Path) -> None:
    # diff read the member with zipfile's open(), which raises RuntimeError for an encrypted one (a traceback)
    src = _write("a.zip", _zip_mutate(_set_flag_encrypted))(tmp_path)
    other = _write("b.zip", zip_of([*GOOD_ZIP[:1], ("pkg/data.txt", b"other\n", 0o100644)]))(tmp_path)
    with pytest.raises(DetpackError, match="is encrypted") as info:
        compare_paths(src, other)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(src))


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
@pytest.mark.parametrize(
    ("where", "expect"),
    [
        ("member", "holds more data than its declared 10 bytes"),
        ("symlink", "cannot read the target of symlink 'z.bin'"),  # its target is read while listing
        ("repeat", "two different members are named 'z.bin'"),  # a repeated name's members are compared
    ],
)
def test_bzip2_and_lzma_members_are_decompressed_a_chunk_at_a_time(
    method: int, where: str, expect: str, tmp_path: Path
) -> None:
    # 64 MiB of zeros in a few hundred bytes (bzip2) or ~10 KB (LZMA), declaring 10: zipfile's reader
    # decompressed each compressed chunk whole (64 MiB at once, 551 MB RSS for 256 MiB) before the check.
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", method) as zf:
        warnings.simplefilter("ignore")  # the repeated name
        info = zipfile.ZipInfo("z.bin")
        info.compress_type = method
        info.external_attr = (0o120777 if where == "symlink" else 0o100644) << 16
        for _ in range(2 if where == "repeat" else 1):
            zf.writestr(info, bytes(64 << 20))
    data = bytearray(buf.getvalue())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        struct.pack_into("<I", data, at + 24, 10)  # each central entry's file size
        at = data.find(b"PK\x01\x02", at + 4)
    src = _write("bomb.zip", bytes(data))(tmp_path)
    peer = tmp_path / "peer.zip"
    with zipfile.ZipFile(peer, "w", method) as zf:
        zf.writestr("z.bin", b"0123456789")
    attempts: list[Callable[[], object]] = [lambda: normalize_file(src, tmp_path / "out.zip", OPTS)]
    if where == "member":  # diff reads neither targets nor repeats while listing, a member's content to compare
        attempts.append(lambda: compare_paths(src, peer))
    for attempt in attempts:
        tracemalloc.start()
        try:
            with pytest.raises(DetpackError):
                attempt()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, f"{peak / (1 << 20):.1f} MiB for a member declaring 10 bytes"  # LZMA: 8 MiB window
    with pytest.raises(InputError, match=expect):
        normalize_file(src, tmp_path / "out.zip", OPTS)
