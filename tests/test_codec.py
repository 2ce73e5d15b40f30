"""The pinned deflate (detpack.archive.codec): known answers, the block scheme, the checks.

The known answers run on every machine that runs the suite, so each one checks the promise
that canonical bytes do not depend on the machine; tests/test_machines.py checks it on
another libz and another architecture.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import zipfile
import zlib
from pathlib import Path

import known_answers
import pytest
from test_archive import _Unseekable

from detpack import policy
from detpack.archive import codec, zipmember
from detpack.archive import zip as zipc
from detpack.archive.entry import Entry
from detpack.archive.pool import Pool
from detpack.errors import DetpackError


def test_known_answers(tmp_path: Path) -> None:
    assert known_answers.answers(tmp_path) == known_answers.GOLDEN
    assert known_answers.GOLDEN["codec"] == policy.DEFLATE_KNOWN_ANSWER


def test_known_answer_is_a_deflate_stream_of_three_blocks() -> None:
    data = codec.known_input()
    stream = codec.deflate(data)
    assert zlib.decompress(stream, -15) == data  # any inflater reads it
    assert len(data) > 2 * policy.GZIP_BLOCK and len(stream) < len(data)
    # one block alone is zlib-ng's one-shot deflate of it (what a small member gets)
    block = data[: policy.GZIP_BLOCK]
    assert codec.deflate(block) == codec.deflate_block(block, b"", True)


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_block_scheme_bytes_do_not_depend_on_threads_or_feeding(workers: int) -> None:
    rng = random.Random(workers)
    data = codec.known_input() + bytes(rng.getrandbits(8) for _ in range(50_000)) + b"tail " * 70_000
    expected = codec.deflate(data)
    pool = Pool(workers)
    try:
        deflater = codec.BlockDeflater(pool, window=workers)
        pieces = []
        at = 0
        while at < len(data):
            step = rng.choice([1, 777, 65_536, 300_000])
            pieces += deflater.feed(data[at : at + step])
            at += step
        pieces += deflater.finish()
    finally:
        pool.shutdown()
    assert b"".join(pieces) == expected and deflater.size == len(expected)


def test_the_interpreter_zlib_is_not_what_writes() -> None:
    # detpack's bytes are zlib-ng's: at the same level the host's zlib 1.2.13 writes others
    # (if this machine's interpreter were itself on zlib-ng 2.3.3 they could agree).
    data = codec.known_input()[: policy.GZIP_BLOCK]
    c = zlib.compressobj(policy.DEFLATE_LEVEL, zlib.DEFLATED, -15, policy.DEFLATE_MEM_LEVEL)
    theirs = c.compress(data) + c.flush()
    if zlib.ZLIB_RUNTIME_VERSION != policy.DEFLATE_VERSION + ".zlib-ng":
        assert theirs != codec.deflate(data)


def test_a_large_member_streams_to_the_same_bytes_on_any_output(tmp_path: Path) -> None:
    data = b"".join(b"line %d of a large member\n" % i for i in range(150_000))  # ~3.9 MiB: streamed
    assert len(data) > zipmember.SMALL
    seekable = tmp_path / "a.zip"
    with seekable.open("wb") as f, zipc.CanonicalZipWriter(f, policy.DEFAULT_EPOCH, workers=2) as w:
        w.add_bytes(Entry("small.txt", "file", 0o644), b"small")
        w.add_bytes(Entry("empty.txt", "file", 0o644), b"")  # stored, written before the streamed one
        _copy(w, data, tmp_path)
    unseekable = _Unseekable()
    with zipc.CanonicalZipWriter(unseekable, policy.DEFAULT_EPOCH, workers=3) as w:  # type: ignore[arg-type]
        w.add_bytes(Entry("small.txt", "file", 0o644), b"small")
        w.add_bytes(Entry("empty.txt", "file", 0o644), b"")
        _copy(w, data, tmp_path)
    assert seekable.read_bytes() == bytes(unseekable.data)
    with zipfile.ZipFile(seekable) as zf:
        assert zf.testzip() is None and zf.read("big.txt") == data
        assert zf.namelist() == ["small.txt", "empty.txt", "big.txt"]
        info = zf.getinfo("big.txt")
        raw = seekable.read_bytes()[info.header_offset + 30 + len("big.txt") :][: info.compress_size]
    assert raw == codec.deflate(data)


def test_a_large_already_compressed_member_is_stored(tmp_path: Path) -> None:
    data = gzip.compress(random.Random(3).randbytes(3 << 20), mtime=0)  # > _SMALL: the streamed path
    out = tmp_path / "a.zip"
    with out.open("wb") as f, zipc.CanonicalZipWriter(f, policy.DEFAULT_EPOCH) as w:
        _copy(w, data, tmp_path)
    with zipfile.ZipFile(out) as zf:
        assert zf.getinfo("big.txt").compress_type == zipfile.ZIP_STORED and zf.read("big.txt") == data


def _copy(writer: zipc.CanonicalZipWriter, data: bytes, tmp: Path) -> None:
    src = tmp / "src.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.txt", data)
    with zipc.open_source(src) as (zf, raw):
        [member] = zipc.read_members(zf, str(src))
        digest = writer.copy_member(zf, raw, member, str(src), record=True)
    assert digest == hashlib.sha256(data).digest()


def test_gzip_writer_is_one_standard_member(tmp_path: Path) -> None:
    from detpack.archive.gz import BlockGzipWriter

    data = codec.known_input() * 2
    out = io.BytesIO()
    with BlockGzipWriter(out, workers=2) as w:
        w.write(data)
    stream = out.getvalue()
    assert gzip.decompress(stream) == data
    assert stream[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert stream[10:-8] == codec.deflate(data)  # the gzip body is the codec's stream, nothing else
    d = zlib.decompressobj(31)
    assert d.decompress(stream) == data and d.eof and d.unused_data == b""  # one member, not several


def test_another_zlib_ng_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "DEFLATE_VERSION", "2.2.4")
    with pytest.raises(DetpackError, match=r"zlib-ng 2\.3\.3 is installed, but .* zlib-ng 2\.2\.4: .*pip install"):
        codec.check.__wrapped__()


def test_a_machine_whose_zlib_ng_deflates_otherwise_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "DEFLATE_KNOWN_ANSWER", "0" * 64)
    with pytest.raises(DetpackError, match=r"known input to sha256 .* would differ from other machines"):
        codec.check.__wrapped__()
