"""The canonical archive forms, on archives made in the test: sorted, fixed times, normalized
modes and owners, no noise, idempotent; and hostile or broken input refused by name."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import os
import random
import stat
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from wheel.wheelfile import WheelError

from conftest import WHEELHOUSE, read_all_with_wheel
from detpack import ArchiveError, InputError, NormalizeOptions, normalize_file
from detpack.archive import codec, detect, zipwrite
from detpack.archive import zip as zipc
from detpack.archive.zipwrite import ZipSink
from detpack.policy import DEFAULT_EPOCH

EPOCH = 1_700_000_001  # odd on purpose: zip stores 2-second steps
OPTS = NormalizeOptions(EPOCH)

FILES = {
    "pkg/__init__.py": b"VALUE = 1\n",
    "pkg/data/table.csv": b"a,b\n1,2\n" * 100,
    "pkg/tool.sh": b"#!/bin/sh\necho hi\n",
    "README.md": "# héllo\n".encode(),
}
EXEC = {"pkg/tool.sh"}


def noisy_zip(path: Path, seed: int, *, wheel: bool = False, umask: int = 0o022) -> Path:
    rng = random.Random(seed)
    files = dict(FILES)
    if wheel:
        files["demo-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
        files["demo-1.0.dist-info/WHEEL"] = (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        files["demo-1.0.dist-info/RECORD"] = b"stale,,\n"
    names = list(files)
    rng.shuffle(names)
    with zipfile.ZipFile(path, "w") as zf:
        zf.comment = f"built at {time.time()} seed {seed}".encode()
        if not wheel:
            zf.writestr(zipfile.ZipInfo("pkg/", (2020, 1, 1, 0, 0, 0)), b"")
        for name in names:
            zi = zipfile.ZipInfo(name, time.localtime(time.time() - rng.randint(0, 10**6))[:6])
            mode = (0o777 if name in EXEC else 0o666) & ~umask
            zi.external_attr = (stat.S_IFREG | mode) << 16
            zi.create_system = rng.choice([0, 3])
            zi.extra = b"UT\x05\x00\x01" + int(time.time()).to_bytes(4, "little")
            zi.comment = b"member comment"
            zi.compress_type = rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
            zf.writestr(zi, files[name])
    return path


def noisy_tar_gz(path: Path, seed: int, *, umask: int = 0o022) -> Path:
    rng = random.Random(seed)
    names = list(FILES)
    rng.shuffle(names)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in names:
            ti = tarfile.TarInfo(f"demo-1.0/{name}")
            ti.size = len(FILES[name])
            ti.mtime = time.time() - rng.randint(0, 10**6)
            ti.mode = (0o777 if name in EXEC else 0o666) & ~umask
            ti.uid, ti.gid, ti.uname, ti.gname = 1000 + seed, 1000, f"user{seed}", "staff"
            ti.pax_headers = {"atime": str(time.time()), "ctime": str(time.time())}
            tf.addfile(ti, io.BytesIO(FILES[name]))
        link = tarfile.TarInfo("demo-1.0/link-to-readme")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "README.md", time.time()
        tf.addfile(link)
    with (
        path.open("wb") as f,
        gzip.GzipFile(filename=f"noise{seed}.tar", mode="wb", fileobj=f, mtime=time.time() + seed) as gz,
    ):
        gz.write(raw.getvalue())
    return path


def test_zip_canonical_form_and_perturbation(tmp_path: Path) -> None:
    a = noisy_zip(tmp_path / "a.zip", 1, umask=0o022)
    b = noisy_zip(tmp_path / "b.zip", 2, umask=0o002)
    assert a.read_bytes() != b.read_bytes()  # the perturbation is real
    # Stored vs deflated members differ between a and b; every member is re-deflated, so
    # content-equal members give equal bytes.
    ra = normalize_file(a, tmp_path / "out-a.zip", OPTS)
    rb = normalize_file(b, tmp_path / "out-b.zip", OPTS)
    assert ra.sha256 == rb.sha256
    with zipfile.ZipFile(ra.output) as zf:
        infos = zf.infolist()
        assert zf.comment == b""
    names = [i.filename for i in infos]
    assert names == sorted(names, key=lambda n: n.encode())
    expected_time = time.gmtime(EPOCH - 1)[:6]  # 2-second resolution
    for info in infos:
        assert info.date_time == expected_time
        assert info.extra == b"" and info.comment == b""
        assert info.create_system == 3
        assert info.flag_bits & 0x08 == 0
        mode = info.external_attr >> 16
        if info.is_dir():
            assert stat.S_IMODE(mode) == 0o755
        else:
            assert stat.S_IMODE(mode) == (0o755 if info.filename in EXEC else 0o644)


def test_zip_members_are_redeflated_by_the_pinned_codec_and_idempotent(tmp_path: Path) -> None:
    src = noisy_zip(tmp_path / "in.zip", 3)
    once = normalize_file(src, tmp_path / "once.zip", OPTS)
    twice = normalize_file(once.output, tmp_path / "twice.zip", OPTS)
    assert once.changed and not twice.changed
    assert once.sha256 == twice.sha256
    kinds = set()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(once.output) as zout, open(once.output, "rb") as raw:
        for info in zin.infolist():
            if info.is_dir():
                continue
            kinds.add(info.compress_type)
            data = zin.read(info)
            out = zout.getinfo(info.filename)
            assert zout.read(out) == data and out.CRC == info.CRC
            raw.seek(out.header_offset + 30 + len(out.filename))
            stream = raw.read(out.compress_size)
            # whatever the input's method, the member is the pinned codec's deflate of its content
            if data:
                assert out.compress_type == zipfile.ZIP_DEFLATED and stream == codec.deflate(data)
            else:
                assert out.compress_type == zipfile.ZIP_STORED and stream == b""
    assert kinds == {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}  # the input mixes both


def test_already_compressed_members_are_stored(tmp_path: Path) -> None:
    src = tmp_path / "in.zip"
    packed = gzip.compress(b"json " * 1000, mtime=0)
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.json.gz", packed)
        zf.writestr("plain.txt", b"json " * 1000)
    out = normalize_file(src, tmp_path / "out.zip", OPTS)
    with zipfile.ZipFile(out.output) as zf:
        assert zf.getinfo("data.json.gz").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("plain.txt").compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("data.json.gz") == packed


def test_wheel_order_and_regenerated_record(tmp_path: Path) -> None:
    src = noisy_zip(tmp_path / "demo-1.0-py3-none-any.whl", 4, wheel=True)
    out = normalize_file(src, tmp_path / "out" / src.name, OPTS)
    assert out.kind == "wheel"
    with zipfile.ZipFile(out.output) as zf:
        names = zf.namelist()
        record = zf.read("demo-1.0.dist-info/RECORD").decode()
        contents = {n: zf.read(n) for n in names}
    assert not any(n.endswith("/") for n in names)  # no directory entries in wheels
    assert names[-1] == "demo-1.0.dist-info/RECORD"
    first_dist_info = next(i for i, n in enumerate(names) if n.startswith("demo-1.0.dist-info/"))
    assert all(n.startswith("demo-1.0.dist-info/") for n in names[first_dist_info:])
    rows = list(csv.reader(io.StringIO(record)))
    assert [r[0] for r in rows] == names
    for name, digest, size in rows[:-1]:
        expect = base64.urlsafe_b64encode(hashlib.sha256(contents[name]).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={expect}" and int(size) == len(contents[name])
    assert rows[-1] == ["demo-1.0.dist-info/RECORD", "", ""]


def test_zip_time_is_clamped_to_1980(tmp_path: Path) -> None:
    out = normalize_file(noisy_zip(tmp_path / "a.zip", 5), tmp_path / "o.zip", NormalizeOptions(0))
    with zipfile.ZipFile(out.output) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_tar_gz_canonical_form(tmp_path: Path) -> None:
    a = noisy_tar_gz(tmp_path / "a.tar.gz", 1, umask=0o022)
    b = noisy_tar_gz(tmp_path / "b.tar.gz", 2, umask=0o002)
    assert a.read_bytes() != b.read_bytes()
    ra = normalize_file(a, tmp_path / "oa" / "demo-1.0.tar.gz", OPTS)
    rb = normalize_file(b, tmp_path / "ob" / "demo-1.0.tar.gz", OPTS)
    assert ra.kind == "tar.gz" and ra.sha256 == rb.sha256
    data = ra.output.read_bytes()
    assert data[:4] == b"\x1f\x8b\x08\x00"  # no FNAME flag
    assert data[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert data[9] == 255  # OS byte
    with tarfile.open(ra.output) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.encode())
    assert "demo-1.0" in names and "demo-1.0/pkg" in names and "demo-1.0/pkg/data" in names
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (EPOCH, 0, 0, "", "")
        assert "atime" not in m.pax_headers and "ctime" not in m.pax_headers
        if m.isdir():
            assert m.mode == 0o755
        elif m.issym():
            assert m.linkname == "README.md"
        else:
            assert m.mode == (0o755 if m.name.endswith("tool.sh") else 0o644)
    again = normalize_file(ra.output, tmp_path / "oc" / "demo-1.0.tar.gz", OPTS)
    assert again.sha256 == ra.sha256 and not again.changed


def test_hardlink_before_its_target_is_reordered(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        target = tarfile.TarInfo("d/z-target")
        target.size = 5
        tf.addfile(target, io.BytesIO(b"hello"))
        link = tarfile.TarInfo("d/a-link")
        link.type, link.linkname = tarfile.LNKTYPE, "d/z-target"
        tf.addfile(link)
    src = tmp_path / "h.tar"
    src.write_bytes(raw.getvalue())
    out = normalize_file(src, tmp_path / "o" / "h.tar", OPTS)
    dest = tmp_path / "x"
    with tarfile.open(out.output) as tf:
        members = [(m.name, m.type) for m in tf.getmembers()]
        tf.extractall(dest, filter="data")
    assert members == [("d", tarfile.DIRTYPE), ("d/a-link", tarfile.REGTYPE), ("d/z-target", tarfile.LNKTYPE)]
    assert (dest / "d/a-link").read_bytes() == (dest / "d/z-target").read_bytes() == b"hello"


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_identical_duplicates_collapse(tmp_path: Path) -> None:
    # hatchling copies a stale PKG-INFO from the tree and then writes its own (seen on PyPI sdists).
    tar = _tar_with(tmp_path / "d.tar", [_ti("p-1/PKG-INFO", size=3), _ti("p-1/PKG-INFO", size=3)])
    with tarfile.open(normalize_file(tar, tmp_path / "o" / "d.tar", OPTS).output) as tf:
        assert [m.name for m in tf.getmembers()] == ["p-1", "p-1/PKG-INFO"]
    z = _zip_with(tmp_path / "d.zip", [("a.txt", b"same", 0o100644), ("a.txt", b"same", 0o100644)])
    with zipfile.ZipFile(normalize_file(z, tmp_path / "o" / "d.zip", OPTS).output) as zf:
        assert zf.namelist() == ["a.txt"]


def test_plain_gzip_header(tmp_path: Path) -> None:
    src = tmp_path / "notes.txt.gz"
    with src.open("wb") as f, gzip.GzipFile(filename="notes.txt", mode="wb", fileobj=f, mtime=123456) as gz:
        gz.write(b"some text\n" * 50)
    out = normalize_file(src, tmp_path / "o" / src.name, OPTS)
    assert out.kind == "gz"
    data = out.output.read_bytes()
    assert data[3] == 0 and data[4:8] == b"\0\0\0\0" and data[9] == 255
    assert gzip.decompress(data) == b"some text\n" * 50


def test_detection_is_by_content(tmp_path: Path) -> None:
    wheel = noisy_zip(tmp_path / "demo-1.0-py3-none-any.whl", 6, wheel=True)
    disguised = tmp_path / "thing.bin"
    disguised.write_bytes(wheel.read_bytes())
    assert detect(disguised) == "wheel"
    tgz = noisy_tar_gz(tmp_path / "t.tar.gz", 1)
    other = tmp_path / "t.data"
    other.write_bytes(tgz.read_bytes())
    assert detect(other) == "tar.gz"


def _zip_with(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name)
            zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return path


def _tar_with(path: Path, infos: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w") as tf:
        for ti in infos:
            tf.addfile(ti, io.BytesIO(b"x" * ti.size) if ti.isfile() else None)
    return path


def _ti(name: str, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("zip-traversal", "escapes the archive root"),
        ("zip-absolute", "absolute path"),
        ("zip-duplicate", "two different members are named"),
        ("tar-duplicate", "two different members are named"),
        ("zip-symlink-escape", "points outside the archive"),
        ("zip-truncated", "corrupt or truncated zip"),
        ("tar-device", "device or fifo"),
        ("tar-abs-symlink", "points to absolute path"),
        ("tar-traversal", "escapes the archive root"),
        ("tar-dangling-hardlink", "not a file in the archive"),
        ("targz-truncated", "truncated"),
        ("not-an-archive", "not a zip, tar or gzip archive"),
        ("empty", "empty file"),
    ],
)
def test_hostile_and_broken_input_is_refused(case: str, needle: str, tmp_path: Path) -> None:
    p = tmp_path / f"{case}.bin"
    if case == "zip-traversal":
        _zip_with(p, [("../evil.py", b"x", 0o100644)])
    elif case == "zip-absolute":
        _zip_with(p, [("/etc/evil", b"x", 0o100644)])
    elif case == "zip-duplicate":
        _zip_with(p, [("a.txt", b"1", 0o100644), ("a.txt", b"2", 0o100644)])
    elif case == "zip-symlink-escape":
        _zip_with(p, [("link", b"../../etc/passwd", 0o120777)])
    elif case == "zip-truncated":
        good = noisy_zip(tmp_path / "good.zip", 7)
        p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "tar-duplicate":
        _tar_with(p, [_ti("a.txt", size=1), _ti("a.txt", size=2)])
    elif case == "tar-device":
        _tar_with(p, [_ti("dev/null", type=tarfile.CHRTYPE)])
    elif case == "tar-abs-symlink":
        _tar_with(p, [_ti("etc", type=tarfile.SYMTYPE, linkname="/etc")])
    elif case == "tar-traversal":
        _tar_with(p, [_ti("a/../../x", size=1)])
    elif case == "tar-dangling-hardlink":
        _tar_with(p, [_ti("a", type=tarfile.LNKTYPE, linkname="missing")])
    elif case == "targz-truncated":
        good = noisy_tar_gz(tmp_path / "good.tar.gz", 1)
        p.write_bytes(good.read_bytes()[:200])
    elif case == "not-an-archive":
        p.write_bytes(b"hello, I am plain text and not an archive at all\n" * 20)
    elif case == "empty":
        p.write_bytes(b"")
    outdir = tmp_path / "out"
    outdir.mkdir()
    with pytest.raises(InputError) as info:
        normalize_file(p, outdir / p.name, OPTS)
    assert needle in str(info.value)
    assert str(p) in str(info.value)
    assert isinstance(info.value, ArchiveError) or case == "not-an-archive"
    assert list(outdir.iterdir()) == []  # nothing half-written, no temporaries left


def test_default_epoch_is_1980() -> None:
    assert time.gmtime(DEFAULT_EPOCH)[:3] == (1980, 1, 1)


def test_gzip_blocks_do_not_depend_on_thread_count() -> None:
    from detpack.archive.gz import BlockGzipWriter

    data = os.urandom(200_000) + b"compressible text " * 40_000
    outputs = set()
    for workers in (1, 2, 7):
        buf = io.BytesIO()
        with BlockGzipWriter(buf, workers=workers) as out:
            for i in range(0, len(data), 50_000):
                out.write(data[i : i + 50_000])
        outputs.add(buf.getvalue())
    assert len(outputs) == 1
    stream = outputs.pop()
    assert gzip.decompress(stream) == data
    assert stream[:4] == b"\x1f\x8b\x08\x00" and stream[4:8] == b"\0\0\0\0" and stream[9] == 255


# --- archive.zipwrite writes, field for field, what zipfile writes for the same members (headers,
# central directory, zip64 fields and end records); zipfile's own writer is the reference here.
# orig_filename is the one zipfile internal the reader relies on.

_RAW_DATA = b"canonical bytes " * 400
_TIME = (2020, 1, 2, 3, 4, 6)
_MODE = (stat.S_IFREG | 0o644) << 16


def _deflated(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _zipfile_writes(out: io.BytesIO | _Unseekable | io.BufferedRandom, names: list[str]) -> None:
    """Members (name, stored or deflated at level 6) written by zipfile's public API alone."""
    with zipfile.ZipFile(out, "w") as zf:  # type: ignore[arg-type]
        for name in names:
            zi = zipfile.ZipInfo(name, _TIME)
            zi.external_attr = _MODE
            method = zipfile.ZIP_DEFLATED if name.startswith("d.") else zipfile.ZIP_STORED
            zf.writestr(zi, _RAW_DATA if ".bin" in name else b"", compress_type=method, compresslevel=6)


def _sink_writes(out: io.BytesIO | _Unseekable | io.BufferedRandom, names: list[str]) -> None:
    sink = ZipSink(out, _TIME, 3)  # type: ignore[arg-type]
    for name in names:
        data = _RAW_DATA if ".bin" in name else b""
        body = _deflated(data, 6) if name.startswith("d.") else data
        method = zipwrite.DEFLATED if name.startswith("d.") else zipwrite.STORED
        halves = [body[:100], body[100:]]
        sink.add(name, _MODE, method, zlib.crc32(data), len(data), halves, len(body))
    sink.close()


class _Unseekable(io.RawIOBase):
    """A write-only stream with no seek and no tell (a pipe, say)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


_NAMES = ["a.txt", "s.bin", "d.bin", "caf\u00e9/\u00fc.bin", "z.txt"]


def test_zipwrite_writes_what_zipfile_writes() -> None:
    ours, theirs = io.BytesIO(), io.BytesIO()
    _sink_writes(ours, _NAMES)
    _zipfile_writes(theirs, _NAMES)
    assert ours.getvalue() == theirs.getvalue()
    with zipfile.ZipFile(io.BytesIO(ours.getvalue())) as zf:
        assert zf.testzip() is None
        assert zf.read("d.bin") == _RAW_DATA


def test_zipwrite_on_an_unseekable_output() -> None:
    # Offsets count from 0 without tell; the bytes are those written to a seekable stream.
    ours, seekable = _Unseekable(), io.BytesIO()
    _sink_writes(ours, _NAMES)
    _sink_writes(seekable, _NAMES)
    assert ours.data == seekable.getvalue()


def test_zipwrite_zip64_end_records_for_many_members() -> None:
    names = [f"m/{i:05d}" for i in range(zipwrite.FILECOUNT_LIMIT + 2)]
    ours, theirs = io.BytesIO(), io.BytesIO()
    _sink_writes(ours, names)
    _zipfile_writes(theirs, names)
    assert ours.getvalue() == theirs.getvalue()


def test_zipwrite_zip64_offsets(tmp_path: Path) -> None:
    # Offsets past ZIP64_LIMIT (a sparse file that starts 2 GiB in): zip64 fields in the central
    # directory and the zip64 end records, as zipfile writes them.
    outputs = []
    for write in (_sink_writes, _zipfile_writes):
        with (tmp_path / write.__name__).open("w+b") as f:
            f.seek(zipwrite.ZIP64_LIMIT + 10)
            write(f, _NAMES)
            f.seek(zipwrite.ZIP64_LIMIT)
            outputs.append(f.read())
    assert outputs[0] == outputs[1]


def test_zipwrite_forced_zip64_local_header() -> None:
    ours, theirs = io.BytesIO(), io.BytesIO()
    sink = ZipSink(ours, _TIME, 3)
    sink.add(
        "big.bin",
        _MODE,
        zipwrite.STORED,
        zlib.crc32(_RAW_DATA),
        len(_RAW_DATA),
        [_RAW_DATA],
        len(_RAW_DATA),
        zip64=True,
    )
    sink.close()
    with zipfile.ZipFile(theirs, "w") as zf:
        zi = zipfile.ZipInfo("big.bin", _TIME)
        zi.external_attr = _MODE
        with zf.open(zi, "w", force_zip64=True) as w:
            w.write(_RAW_DATA)
    assert ours.getvalue() == theirs.getvalue()


def test_zipwrite_patched_header_is_what_zipfile_writes() -> None:
    ours, theirs = io.BytesIO(), io.BytesIO()
    sink = ZipSink(ours, _TIME, 3)
    sink.add("a.txt", _MODE, zipwrite.STORED, 0, 0, [], 0)
    body = _deflated(_RAW_DATA, 6)
    sink.add_patched("d.bin", _MODE, zipwrite.DEFLATED, zlib.crc32(_RAW_DATA), len(_RAW_DATA), iter([body]), False)
    sink.close()
    _zipfile_writes(theirs, ["a.txt"])
    with zipfile.ZipFile(theirs, "a") as zf:
        zi = zipfile.ZipInfo("d.bin", _TIME)
        zi.external_attr = _MODE
        zf.writestr(zi, _RAW_DATA, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    assert ours.getvalue() == theirs.getvalue()


def test_zipwrite_add_whole_writes_what_add_writes(tmp_path: Path) -> None:
    # The inlined common case, and its fallbacks (a body of a MiB or more; offsets past ZIP64_LIMIT).
    bodies = [b"", b"x", _RAW_DATA, bytes(1 << 20)]
    outputs = []
    for whole in (False, True):
        for start in (0, zipwrite.ZIP64_LIMIT + 10):
            with (tmp_path / f"w{whole}{start}").open("w+b") as f:
                f.seek(start)  # a sparse file: the zip starts 2 GiB in
                sink = ZipSink(f, _TIME, 3)
                for i, body in enumerate(bodies):
                    name = f"m{i}/\u00e9" if i % 2 else f"m{i}"
                    if whole:
                        sink.add_whole(name, _MODE, zipwrite.STORED, zlib.crc32(body), len(body), body)
                    else:
                        sink.add(name, _MODE, zipwrite.STORED, zlib.crc32(body), len(body), [body], len(body))
                sink.close()
                f.seek(start)
                outputs.append(f.read())
    assert outputs[:2] == outputs[2:]


def test_zipwrite_refuses_a_repeat_and_a_closed_writer() -> None:
    sink = ZipSink(io.BytesIO(), _TIME, 3)
    sink.add("s.bin", _MODE, zipwrite.STORED, zlib.crc32(b"x"), 1, [b"x"], 1)
    with pytest.raises(ValueError, match="already written"):
        sink.add("s.bin", _MODE, zipwrite.STORED, zlib.crc32(b"x"), 1, [b"x"], 1)
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.add("t.bin", _MODE, zipwrite.STORED, zlib.crc32(b"x"), 1, [b"x"], 1)


def test_a_plain_name_is_what_the_full_cleaning_returns() -> None:
    # safe_name's shortcut (entry._plain) against the full steps, on every name of up to 5 characters.
    from itertools import product

    from detpack.archive import entry

    for length in range(6):
        for chars in product(("a", "/", ".", "\\", ":", "\x00", "\u00e9"), repeat=length):
            raw = "".join(chars)
            if entry._plain(raw):
                assert entry._cleaned(raw, "x") == raw


def test_orig_filename_keeps_what_zipfile_cuts(tmp_path: Path) -> None:
    # zipfile cuts a read name at NUL; orig_filename keeps the name as stored. read_members
    # refuses the name by it, and _raw_chunks compares the local header's name with it.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("evil.txtXsh", b"x")
    path = tmp_path / "nul.zip"
    path.write_bytes(buf.getvalue().replace(b"evil.txtXsh", b"evil.txt\x00sh"))
    with zipfile.ZipFile(path) as zf:
        (info,) = zf.infolist()
        assert (info.filename, info.orig_filename) == ("evil.txt", "evil.txt\x00sh")
        with pytest.raises(ArchiveError, match="NUL byte"):
            zipc.read_members(zf, str(path))


# --- the canonical wheels, read by wheel's own reader: every member is listed in RECORD
# and wheel.wheelfile.WheelFile verifies each one's sha256 as it is read.


def test_normalized_wheels_pass_wheels_own_record_check(tmp_path: Path) -> None:
    wheels = sorted(WHEELHOUSE.glob("*.whl"))
    assert len(wheels) >= 5, f"{WHEELHOUSE} lacks wheels: run `make setup`"
    wheels.append(noisy_zip(tmp_path / "demo-1.0-py3-none-any.whl", 9, wheel=True))
    for wheel in wheels:
        out = normalize_file(wheel, tmp_path / "out" / wheel.name, OPTS)
        assert read_all_with_wheel(out.output) > 1, wheel.name


def test_wheels_record_check_catches_a_changed_member(tmp_path: Path) -> None:
    # The check above can fail: a member changed after normalizing is caught by wheel's reader.
    src = noisy_zip(tmp_path / "demo-1.0-py3-none-any.whl", 10, wheel=True)
    out = normalize_file(src, tmp_path / "out" / src.name, OPTS)
    bad = tmp_path / "bad" / src.name
    bad.parent.mkdir()
    with zipfile.ZipFile(out.output) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info).replace(b"VALUE = 1", b"VALUE = 2"))
    assert read_all_with_wheel(out.output) > 1
    with pytest.raises(WheelError, match="Hash mismatch"):
        read_all_with_wheel(bad)
