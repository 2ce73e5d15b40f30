"""The fast paths of archive writing give the canonical bytes: the early known-answer check and its
input, zstd layers, and normalize's output hashed as it is written."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from detpack.archive import codec
from detpack.errors import DetpackError


def _data(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    words = [f"{rng.getrandbits(40):x} ".encode() for _ in range(500)]
    text = b"".join(rng.choice(words) for _ in range(size // 12))
    return text[: size // 2] + os.urandom(size // 4) + text[size // 2 :]


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
        normalize, "_file_sha256", lambda p: reread.append(p) or hashlib.sha256(p.read_bytes()).hexdigest()
    )
    options = normalize.NormalizeOptions(315532800)
    held = normalize.normalize_file(src, tmp_path / "held" / src.name, options)
    assert reread == []  # written front to back: hashed on the way
    monkeypatch.setattr(zipc, "_HELD", 1 << 20)  # the 3 MiB member streams, its header patched afterwards
    patched = normalize.normalize_file(src, tmp_path / "patched" / src.name, options)
    assert reread == [patched.output]  # a seek back voids the running hash: read once more
    assert held.sha256 == patched.sha256 == hashlib.sha256(held.output.read_bytes()).hexdigest()
    assert held.output.read_bytes() == patched.output.read_bytes()
