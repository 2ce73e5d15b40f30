"""The fast paths of archive writing give the canonical bytes: deflate worker processes,
small-member batches, and the known-answer check's input."""

from __future__ import annotations

import io
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from zlib_ng import zlib_ng

from detpack.archive import codec, deflate_worker, procs
from detpack.archive.gz import BlockGzipWriter
from detpack.errors import DetpackError


def _data(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    words = [f"{rng.getrandbits(40):x} ".encode() for _ in range(500)]
    text = b"".join(rng.choice(words) for _ in range(size // 12))
    return text[: size // 2] + os.urandom(size // 4) + text[size // 2 :]


def test_worker_deflates_as_the_codec() -> None:
    data = codec.known_input()
    for last in (False, True):
        for dictionary in (b"", data[:32768]):
            block = data[32768 : 32768 + 131072]
            assert deflate_worker.deflate_block(zlib_ng, block, dictionary, last, 6, 8) == codec.deflate_block(
                block, dictionary, last
            )


@pytest.mark.parametrize("workers", [2, 3])
def test_process_pool_gives_the_codec_bytes(workers: int) -> None:
    data = _data(workers, (procs.START_AFTER + 11) * 128 * 1024 + 999)
    with ThreadPoolExecutor(workers) as threads:
        pool = procs.DeflatePool(threads, workers)
        deflater = codec.BlockDeflater(pool, window=procs.IN_FLIGHT * workers - 1)
        try:
            out = b"".join([*deflater.feed(data), *deflater.finish()])
            assert pool._workers, "the worker processes did not start"
        finally:
            pool.shutdown()
    assert out == codec.deflate(data)
    assert all(w.proc.returncode == 0 for w in pool._workers or ())


def test_gzip_writer_same_bytes_with_processes_threads_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data(7, 3 << 20)
    outputs = set()
    for workers, start_after in ((1, 8), (2, 8), (2, 10**9), (4, 0)):
        monkeypatch.setattr(procs, "START_AFTER", start_after)
        buf = io.BytesIO()
        with BlockGzipWriter(buf, workers=workers) as w:
            for at in range(0, len(data), 300_001):
                w.write(data[at : at + 300_001])
        outputs.add(buf.getvalue())
    assert len(outputs) == 1


def test_a_worker_that_dies_is_an_error_not_a_short_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "START_AFTER", 0)
    data = _data(3, 2 << 20)
    with ThreadPoolExecutor(2) as threads:
        pool = procs.DeflatePool(threads, 2)
        deflater = codec.BlockDeflater(pool, window=procs.IN_FLIGHT * 2 - 1)
        first = pool.submit(data[:131072], b"", False)
        assert pool._workers
        pool._workers[0].proc.kill()
        pool._workers[0].proc.wait()
        with pytest.raises(DetpackError, match="deflate worker process ended early"):
            first.result()
        pool.shutdown()
        del deflater


def test_no_processes_where_pipes_cannot_hold_the_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "START_AFTER", 0)

    def small(fd: int) -> None:
        raise OSError("the pipe cannot be made large enough")

    monkeypatch.setattr(procs, "_grow_pipe", small)  # as on a host with a lower pipe limit: threads instead
    data = _data(5, 1 << 20)
    with ThreadPoolExecutor(2) as threads:
        pool = procs.DeflatePool(threads, 2)
        deflater = codec.BlockDeflater(pool, window=7)
        out = b"".join([*deflater.feed(data), *deflater.finish()])
        assert pool._workers == []
    assert out == codec.deflate(data)


def test_known_input_is_what_it_was() -> None:
    import hashlib

    words = [b"detpack ", b"wheel ", b"canonical ", b"deflate ", b"\n", b"    ", b"return ", b"0x1f8b "]
    choice = hashlib.shake_256(b"detpack known input: text").digest(30_000)
    text = b"".join(words[c & 7] + words[c >> 5] for c in choice)[: 200 * 1024]
    noise = hashlib.shake_256(b"detpack known input: noise").digest(100 * 1024)
    assert codec.known_input.__wrapped__() == text + noise


def test_the_early_check_is_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from detpack import policy

    codec.check.cache_clear()
    monkeypatch.setattr(codec, "_early", {})
    monkeypatch.setattr(policy, "DEFLATE_KNOWN_ANSWER", "0" * 64)
    codec.check_soon()  # refuses in its thread, quietly
    with pytest.raises(DetpackError, match="known input to sha256"):
        codec.ready()  # and the writer's call says so
    monkeypatch.undo()
    codec.check.cache_clear()
    assert codec.ready() == "zlib-ng 2.3.3"


def test_zstd_layer_same_bytes_at_any_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    import zstandard

    from detpack.archive import tarball
    from detpack.oci.image import LAYER_ZSTD, LayerBlob
    from detpack.oci.layer import Addition, build_layer

    app = tmp_path / "app"
    for i in range(40):
        (app / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (app / f"d{i % 3}" / f"f{i}.txt").write_bytes(_data(i, 200_000))
    digests = set()
    for cpus in (1, 2, 5):
        monkeypatch.setattr(tarball.os, "cpu_count", lambda cpus=cpus: cpus)
        out = tmp_path / f"layer{cpus}.tar.zst"
        layer = build_layer(out, additions=[Addition.parse(f"{app}:/app")], zstd=True)
        digests.add((layer.digest, layer.diff_id, out.read_bytes()))
    assert len(digests) == 1
    digest, diff_id, blob = digests.pop()
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    assert diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    seen = LayerBlob.inspect(tmp_path / "layer1.tar.zst")  # detpack image takes it as tar+zstd
    assert (seen.media_type, seen.digest, seen.diff_id) == (LAYER_ZSTD, digest, diff_id)


def test_layer_compression_option_and_suffix(tmp_path: Path) -> None:
    from conftest import DETPACK, run

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "x.txt").write_text("x\n")
    add = f"{tmp_path / 'app'}:/app"
    r = run([DETPACK, "layer", "-o", tmp_path / "l.tar.gz", "--add", add, "--compression", "zstd"])
    assert r.code == 2 and "--compression zstd writes .tar.zst, not a gzip file" in r.stderr, r.stderr
    r = run([DETPACK, "layer", "-o", tmp_path / "l.tar.zst", "--add", add, "-q"])
    assert r.code == 0, r.stderr
    assert (tmp_path / "l.tar.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    r = run([DETPACK, "image", "-o", f"oci:{tmp_path / 'img'}:v1", "--layer", tmp_path / "l.tar.zst"])
    assert r.code == 0, r.stderr
    manifest = next(p for p in (tmp_path / "img" / "blobs" / "sha256").iterdir() if b"tar+zstd" in p.read_bytes())
    assert manifest.exists()


def test_normalize_hashes_what_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import zipfile

    from detpack.archive import normalize
    from detpack.archive import zip as zipc

    src = tmp_path / "big-1.0-py3-none-any.whl"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big/a.bin", _data(1, 3 << 20))
        zf.writestr("big/small.py", "print(1)\n")
        zf.writestr("big-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("big-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: big\nVersion: 1.0\n")
    reread: list[Path] = []
    monkeypatch.setattr(
        normalize, "file_sha256", lambda p: reread.append(p) or hashlib.sha256(p.read_bytes()).hexdigest()
    )
    options = normalize.NormalizeOptions(315532800)
    held = normalize.normalize_file(src, tmp_path / "held" / src.name, options)
    assert reread == []  # written front to back: hashed on the way
    monkeypatch.setattr(zipc, "_HELD", 1 << 20)  # the 3 MiB member streams, its header patched afterwards
    patched = normalize.normalize_file(src, tmp_path / "patched" / src.name, options)
    assert reread == [patched.output]  # a seek back voids the running hash: read once more
    assert held.sha256 == patched.sha256 == hashlib.sha256(held.output.read_bytes()).hexdigest()
    assert held.output.read_bytes() == patched.output.read_bytes()
