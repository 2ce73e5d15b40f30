"""Toolchain images unpacked into the cache: a hostile image writes nothing outside its cache entry
and leaves no half entry; whiteouts follow the OCI layer rules; a layer must hash to its digest; a
cache entry changed after unpacking is detected before use (quick: by stat; full: by content).

Images are made here, member by member, with ``tarfile`` (what no packer would write), wrapped in
an OCI image layout; one is made with detpack's own layer and image writers.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from conftest import require_tool, unavailable
from detpack import policy
from detpack.errors import ArchiveError, CacheEntryError, InputError
from detpack.oci import fetch, unpack
from detpack.oci.layout import CONFIG, MANIFEST, Descriptor, Layout, LayoutRef

pytestmark = pytest.mark.integration  # one test runs Python again without privileges (unshare)

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class M:
    """One member of a hand-made layer."""

    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    link: str = ""
    mode: int = 0o644
    mtime: int = 1_700_000_000


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> M:
    return M(name, tarfile.REGTYPE, data, mode=mode)


def directory(name: str, mode: int = 0o755) -> M:
    return M(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> M:
    return M(name, tarfile.SYMTYPE, link=target, mode=0o777)


def hardlink(name: str, target: str) -> M:
    return M(name, tarfile.LNKTYPE, link=target)


def tar_bytes(members: Sequence[M]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.kind
            info.mode = m.mode
            info.mtime = m.mtime
            info.linkname = m.link
            info.size = len(m.data) if m.kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(m.data) if info.size else None)
    return buf.getvalue()


def gz(members: Sequence[M]) -> bytes:
    return gzip.compress(tar_bytes(members), mtime=0)


def make_image(
    directory: Path,
    layers: Sequence[bytes],
    *,
    tag: str = "1.0",
    media_types: Sequence[str] | None = None,
    config: dict[str, object] | None = None,
) -> str:
    """An OCI image layout at ``directory`` with these layer blobs; its ``oci:DIR:TAG`` reference."""
    layout = Layout(directory)
    descriptors = []
    for n, blob in enumerate(layers):
        digest = layout.write_blob(blob)
        media_type = media_types[n] if media_types else GZIP
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
    config_json = {
        "architecture": "amd64",
        "os": "linux",
        "config": config if config is not None else {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},
    }
    config_bytes = json.dumps(config_json).encode()
    config_digest = layout.write_blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": descriptors,
    }
    data = json.dumps(manifest).encode()
    layout.tag(Descriptor(MANIFEST, layout.write_blob(data), len(data)), tag)
    return f"oci:{directory}:{tag}"


def unpacked(reference: str, cache: Path) -> unpack.Toolchain:
    with fetch.open_image(reference) as image:
        return unpack.unpacked(image, cache)


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root``: ``dir``, ``-> TARGET`` or the file's content."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_text()
    return found


def entries(cache: Path) -> list[str]:
    """What the cache holds, but its lock file."""
    return sorted(p.name for p in cache.iterdir() if p.name != unpack.LOCK)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the cache an attacker aims at; it holds one file, ``secret``."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("host secret\n")
    return path


def refused(tmp_path: Path, cache: Path, layers: Sequence[bytes], *parts: str) -> str:
    """Unpack must refuse with one line naming the image, the layer and ``parts``; nothing is left."""
    reference = make_image(tmp_path / "img", layers)
    with pytest.raises(InputError) as info:
        unpacked(reference, cache)
    message = str(info.value)
    assert "\n" not in message
    assert "img:1.0" in message, message
    assert "sha256:" in message, message
    for part in parts:
        assert part in message, message
    leftovers = entries(cache) if cache.exists() else []
    assert leftovers == [], leftovers
    return message


def untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "host secret\n"


# --- the attacker's layers ---------------------------------------------------------------------


def test_dotdot_escape_is_refused(tmp_path: Path, cache: Path, outside: Path) -> None:
    layer = gz([file("usr/ok"), file("../outside/planted"), file("../../outside/planted")])
    refused(tmp_path, cache, [layer], "../outside/planted", "..")
    untouched(outside)


def test_dotdot_inside_a_name_is_refused(tmp_path: Path, cache: Path, outside: Path) -> None:
    layer = gz([directory("usr"), file("usr/../../outside/planted")])
    refused(tmp_path, cache, [layer], "usr/../../outside/planted")
    untouched(outside)


def test_absolute_path_is_refused(tmp_path: Path, cache: Path, outside: Path) -> None:
    layer = gz([file(str(outside / "planted"))])
    refused(tmp_path, cache, [layer], str(outside / "planted"), "absolute")
    untouched(outside)


@pytest.mark.parametrize("target", ["ABS", "../../../../../../../../../../OUTSIDE_REL"])
def test_write_through_a_planted_symlink_same_layer(tmp_path: Path, cache: Path, outside: Path, target: str) -> None:
    link = str(outside) if target == "ABS" else "../" * 12 + str(outside).lstrip("/")
    layer = gz([symlink("evil", link), file("evil/planted", b"owned")])
    refused(tmp_path, cache, [layer], "evil/planted", "symbolic link")
    untouched(outside)


def test_write_through_a_planted_symlink_across_layers(tmp_path: Path, cache: Path, outside: Path) -> None:
    first = gz([directory("usr"), symlink("usr/evil", str(outside))])
    second = gz([file("usr/evil/planted", b"owned")])
    refused(tmp_path, cache, [first, second], "usr/evil/planted", "symbolic link")
    untouched(outside)


def test_directory_through_a_planted_symlink(tmp_path: Path, cache: Path, outside: Path) -> None:
    first = gz([symlink("evil", str(outside))])
    second = gz([directory("evil/newdir"), symlink("evil/link", "/etc/passwd")])
    refused(tmp_path, cache, [first, second], "evil/newdir", "symbolic link")
    untouched(outside)


def test_symlink_replaced_by_a_file_is_never_followed(tmp_path: Path, cache: Path, outside: Path) -> None:
    """A later file at a symlink's path replaces the link; it never writes to what the link names."""
    first = gz([symlink("secret", str(outside / "secret")), symlink("new", str(outside / "new"))])
    second = gz([file("secret", b"mine"), file("new", b"mine too")])
    toolchain = unpacked(make_image(tmp_path / "img", [first, second]), cache)
    assert tree(toolchain.root) == {"new": "mine too", "secret": "mine"}
    untouched(outside)


def test_absolute_and_climbing_symlinks_are_kept_as_links(tmp_path: Path, cache: Path, outside: Path) -> None:
    layer = gz([directory("usr/bin"), symlink("bin", "usr/bin"), symlink("etc-passwd", "/etc/passwd"),
                symlink("up", "../../../..")])  # fmt: skip
    toolchain = unpacked(make_image(tmp_path / "img", [layer]), cache)
    assert tree(toolchain.root) == {
        "bin": "-> usr/bin",
        "etc-passwd": "-> /etc/passwd",
        "up": "-> ../../../..",
        "usr": "dir",
        "usr/bin": "dir",
    }


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside/secret", "OUTSIDE_ABS"])
def test_hard_link_out_of_the_root_is_refused(tmp_path: Path, cache: Path, outside: Path, target: str) -> None:
    target = str(outside / "secret") if target == "OUTSIDE_ABS" else target
    layer = gz([file("ok"), hardlink("stolen", target)])
    refused(tmp_path, cache, [layer], "stolen", target)
    untouched(outside)


def test_hard_link_through_a_symlink_is_refused(tmp_path: Path, cache: Path, outside: Path) -> None:
    layer = gz([symlink("evil", str(outside)), hardlink("stolen", "evil/secret")])
    refused(tmp_path, cache, [layer], "stolen", "evil/secret")
    untouched(outside)


def test_hard_link_to_a_symlink_is_refused(tmp_path: Path, cache: Path, outside: Path) -> None:
    layer = gz([symlink("evil", str(outside / "secret")), hardlink("stolen", "evil")])
    refused(tmp_path, cache, [layer], "stolen", "not a regular file")
    untouched(outside)


def test_hard_link_inside_the_root_is_kept(tmp_path: Path, cache: Path) -> None:
    first = gz([directory("usr/bin"), file("usr/bin/python3.13", b"elf", 0o755)])
    second = gz([hardlink("usr/bin/python3", "usr/bin/python3.13"), hardlink("./usr/bin/py", "./usr/bin/python3.13")])
    root = unpacked(make_image(tmp_path / "img", [first, second]), cache).root
    inodes = {(root / "usr/bin" / n).stat().st_ino for n in ("python3.13", "python3", "py")}
    assert len(inodes) == 1
    assert (root / "usr/bin/python3").read_bytes() == b"elf"


@pytest.mark.parametrize(
    ("kind", "word"), [(tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"), (tarfile.FIFOTYPE, "FIFO")]
)
def test_devices_and_fifos_are_refused(tmp_path: Path, cache: Path, kind: bytes, word: str) -> None:
    layer = gz([directory("dev"), M("dev/null", kind)])
    refused(tmp_path, cache, [layer], "dev/null", word)


@pytest.mark.parametrize("name", [".wh..", ".wh...", "usr/.wh.."])
def test_whiteout_of_dot_or_dotdot_is_refused(tmp_path: Path, cache: Path, outside: Path, name: str) -> None:
    first = gz([directory("usr"), file("usr/keep")])
    refused(tmp_path, cache, [first, gz([file(name, b"")])], name)
    untouched(outside)


def test_whiteout_through_a_symlink_deletes_nothing_outside(tmp_path: Path, cache: Path, outside: Path) -> None:
    first = gz([symlink("evil", str(outside))])
    second = gz([file("evil/.wh.secret", b""), file("evil/.wh..wh..opq", b"")])
    refused(tmp_path, cache, [first, second], "evil/.wh.", "symbolic link")
    untouched(outside)


def test_setuid_is_dropped_and_everything_is_read_only(tmp_path: Path, cache: Path) -> None:
    layer = gz([directory("usr/bin", 0o777), file("usr/bin/su", b"elf", 0o4755), file("usr/bin/wall", b"elf", 0o2755),
                file("etc-shadow", b"", 0o640), file("none", b"", 0o000), directory("tmp", 0o1777)])  # fmt: skip
    root = unpacked(make_image(tmp_path / "img", [layer]), cache).root
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}
    assert modes == {
        "usr": 0o555,
        "usr/bin": 0o555,
        "usr/bin/su": 0o555,
        "usr/bin/wall": 0o555,
        "etc-shadow": 0o444,
        "none": 0o444,
        "tmp": 0o555,
    }
    assert stat.S_IMODE(root.stat().st_mode) == 0o555
    assert all(p.lstat().st_uid == os.getuid() for p in root.rglob("*"))
    assert (root / "usr/bin/su").stat().st_mtime == 1_700_000_000  # times kept (pyc checks compare them)


def test_a_layer_not_matching_its_digest_is_refused(tmp_path: Path, cache: Path) -> None:
    good = gz([file("usr/bin/cc", b"real compiler")])
    reference = make_image(tmp_path / "img", [good])
    with fetch.open_image(reference) as image:
        blob = image.layers[0].path
    blob.write_bytes(gz([file("usr/bin/cc", b"evil compiler")]))  # the layout now lies
    with pytest.raises(InputError) as info:
        unpacked(reference, cache)
    message = str(info.value)
    assert "does not match its digest" in message and "img:1.0" in message and "\n" not in message
    assert entries(cache) == []


def test_a_layer_that_is_not_a_tar_is_refused(tmp_path: Path, cache: Path) -> None:
    layer = gzip.compress(b"this is no tar archive, just text " * 100)
    with pytest.raises(ArchiveError):
        unpacked(make_image(tmp_path / "img", [layer]), cache)
    assert entries(cache) == []


def test_a_non_layer_media_type_is_refused(tmp_path: Path, cache: Path) -> None:
    reference = make_image(tmp_path / "img", [gz([file("a")])], media_types=["application/vnd.example.chart"])
    with pytest.raises(InputError, match="not a filesystem layer"):
        unpacked(reference, cache)


# --- whiteouts ---------------------------------------------------------------------------------


def test_whiteouts_and_opaque_directories(tmp_path: Path, cache: Path) -> None:
    first = gz([
        directory("etc"), file("etc/keep", b"keep"), file("etc/gone", b"gone"),
        directory("opt/tool/lib"), file("opt/tool/old", b"old"), file("opt/tool/lib/libold.so", b"old"),
        directory("var/cache/apt"), file("var/cache/apt/pkgcache.bin", b"cache"),
        file("replaced", b"file"), symlink("link", "etc/keep"),
    ])  # fmt: skip
    second = gz([
        file("etc/.wh.gone", b""),
        directory("opt/tool"), file("opt/tool/new", b"new"),  # before the opaque marker: the same layer's, kept
        file("opt/tool/.wh..wh..opq", b""),
        directory("opt/tool/lib"), file("opt/tool/lib/libnew.so", b"new"),
        file("var/cache/.wh.apt", b""),
        file(".wh.replaced", b""), directory("replaced"), file("replaced/inside", b"dir now"),
        file(".wh.link", b""), file(".wh.never-existed", b""),
        file("usr/.wh..wh.plnk", b""),  # aufs bookkeeping: ignored, never materialized
    ])  # fmt: skip
    root = unpacked(make_image(tmp_path / "img", [first, second]), cache).root
    assert tree(root) == {
        "etc": "dir",
        "etc/keep": "keep",
        "opt": "dir",
        "opt/tool": "dir",
        "opt/tool/lib": "dir",
        "opt/tool/lib/libnew.so": "new",
        "opt/tool/new": "new",
        "replaced": "dir",
        "replaced/inside": "dir now",
        "var": "dir",
        "var/cache": "dir",
    }


def test_a_whiteout_hides_only_lower_layers(tmp_path: Path, cache: Path) -> None:
    """The same layer's file survives its own whiteout; the next layer's whiteout removes it."""
    first = gz([file("a", b"lower")])
    second = gz([file("a", b"same layer"), file(".wh.a", b""), file("b", b"b")])
    root = unpacked(make_image(tmp_path / "one", [first, second]), cache).root
    assert tree(root) == {"a": "same layer", "b": "b"}
    third = gz([file(".wh.a", b""), file(".wh.b", b"")])
    root = unpacked(make_image(tmp_path / "two", [first, second, third]), cache).root
    assert tree(root) == {}


def test_a_later_layer_replaces_a_directory_with_a_file(tmp_path: Path, cache: Path) -> None:
    first = gz([directory("x/y"), file("x/y/z", b"deep")])
    second = gz([file("x", b"flat")])
    assert tree(unpacked(make_image(tmp_path / "img", [first, second]), cache).root) == {"x": "flat"}


# --- formats and the image's description ---------------------------------------------------------


def test_zstd_and_plain_tar_layers(tmp_path: Path, cache: Path) -> None:
    zst = zstandard.ZstdCompressor().compress(tar_bytes([file("z", b"zstd")]))
    plain = tar_bytes([file("t", b"tar")])
    reference = make_image(tmp_path / "img", [zst, plain, gz([file("g", b"gzip")])], media_types=[ZSTD, TAR, GZIP])
    toolchain = unpacked(reference, cache)
    assert tree(toolchain.root) == {"g": "gzip", "t": "tar", "z": "zstd"}
    assert len(toolchain.layers) == 3


def test_the_toolchain_describes_the_image(tmp_path: Path, cache: Path) -> None:
    reference = make_image(tmp_path / "img", [gz([file("a")])], config={"Env": ["CC=gcc"], "Cmd": ["bash"]})
    with fetch.open_image(reference) as image:
        toolchain = unpack.unpacked(image, cache)
        assert toolchain.digest == image.manifest.digest
        assert toolchain.layers == tuple(layer.digest for layer in image.layers)
    assert toolchain.reference == "oci:img:1.0"
    assert toolchain.platform == "linux/amd64"
    assert toolchain.config == {"Env": ["CC=gcc"], "Cmd": ["bash"]}
    assert toolchain.root == cache / toolchain.digest.removeprefix("sha256:") / "root"
    record = json.loads((toolchain.root.parent / "toolchain.json").read_text())
    assert record["manifest"] == toolchain.digest and record["layers"] == list(toolchain.layers)


def test_detpack_layer_and_image_unpack_to_the_same_tree(tmp_path: Path, cache: Path) -> None:
    from detpack.oci.image import ImageSettings, LayerBlob, build_image
    from detpack.oci.layer import Addition, build_layer

    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_text("#!/bin/sh\n")
    (src / "usr/bin/tool").chmod(0o755)
    (src / "bin").symlink_to("usr/bin")
    (src / "etc").mkdir()
    (src / "etc/os-release").write_text("ID=test\n")
    layer = build_layer(tmp_path / "l.tar.gz", additions=[Addition.parse(f"{src}:/")])
    build_image(LayoutRef.parse(f"oci:{tmp_path / 'img'}:t"), [LayerBlob.inspect(layer.path)], ImageSettings(), 0)
    root = unpacked(f"oci:{tmp_path / 'img'}:t", cache).root
    assert tree(root) == tree(src)
    assert stat.S_IMODE((root / "usr/bin/tool").stat().st_mode) == 0o555


# --- the cache -----------------------------------------------------------------------------------


def test_a_second_unpack_is_a_cache_hit(tmp_path: Path, cache: Path) -> None:
    layer = gz([directory("usr/bin"), file("usr/bin/cc", b"cc", 0o755)])
    first = unpacked(make_image(tmp_path / "img", [layer]), cache)
    inode = first.root.stat().st_ino
    file_inode = (first.root / "usr/bin/cc").stat().st_ino
    again = unpacked(make_image(tmp_path / "img", [layer], tag="other"), cache)  # same manifest, other tag
    assert again.root == first.root
    assert again.reference == "oci:img:other"
    assert again.root.stat().st_ino == inode and (again.root / "usr/bin/cc").stat().st_ino == file_inode
    assert entries(cache) == [first.digest.removeprefix("sha256:")]


def test_a_copied_cache_is_checked_in_full_once_then_used(tmp_path: Path, cache: Path) -> None:
    """A cache restored elsewhere (a CI cache, a copy) has new inodes and times: its content is checked in full
    and accepted, the quick listing made again; a copy whose content changed is still refused."""
    layer = gz([directory("usr/bin"), file("usr/bin/cc", b"cc", 0o755), symlink("usr/bin/gcc", "cc")])
    ref = make_image(tmp_path / "img", [layer])
    first = unpacked(ref, cache)
    copy = tmp_path / "restored"
    shutil.copytree(cache, copy, symlinks=True)
    listing = (first.entry / unpack.STATS).read_bytes()
    restored = unpacked(ref, copy)
    assert (restored.entry / unpack.STATS).read_bytes() != listing  # made again for the copy's inodes
    unpack.verify(restored)  # the quick check now passes
    tampered = tmp_path / "tampered"
    shutil.copytree(cache, tampered, symlinks=True)
    cc = tampered / first.digest.removeprefix("sha256:") / "root" / "usr" / "bin" / "cc"
    cc.chmod(0o755)
    cc.write_bytes(b"xx")  # same size, other bytes
    with pytest.raises(CacheEntryError, match="usr/bin/cc changed"):
        unpacked(ref, tampered)


def test_the_loser_of_a_race_uses_the_winners_entry(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = make_image(tmp_path / "img", [gz([directory("usr", 0o555), file("usr/cc", b"cc", 0o755)])])
    winner = unpacked(reference, cache)
    inode = winner.root.stat().st_ino
    with monkeypatch.context() as m:
        m.setattr(os.path, "lexists", lambda path: False)  # the winner renamed its entry after the loser looked
        loser = unpacked(reference, cache)
    assert loser.root == winner.root and loser.root.stat().st_ino == inode
    assert entries(cache) == [winner.digest.removeprefix("sha256:")]


def test_a_bomb_is_refused_by_the_limits(tmp_path: Path, cache: Path) -> None:
    reference = make_image(tmp_path / "img", [gz([file(f"f{n}") for n in range(10)])])
    with fetch.open_image(reference) as image, pytest.raises(ArchiveError, match="max_members"):
        unpack.unpacked(image, cache, policy.Limits(max_members=5))
    reference = make_image(tmp_path / "big", [gz([file("zeros", bytes(1 << 20))])])
    with fetch.open_image(reference) as image, pytest.raises(ArchiveError, match="max_total_bytes"):
        unpack.unpacked(image, cache, policy.Limits(max_total_bytes=1000))
    assert entries(cache) == []


def test_racing_unpacks_share_one_entry(tmp_path: Path, cache: Path) -> None:
    layer = gz([directory("usr/lib"), *(file(f"usr/lib/f{n}", b"x" * n) for n in range(120))])
    reference = make_image(tmp_path / "img", [layer])
    results: list[unpack.Toolchain] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(unpacked(reference, cache))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.root for r in results}) == 1
    assert entries(cache) == [results[0].digest.removeprefix("sha256:")]
    unpack.verify(results[0], full=True)


def test_a_dead_writers_temporary_is_swept(tmp_path: Path, cache: Path) -> None:
    stale = cache / ".unpack-999999999-x" / "root" / "ro"
    stale.mkdir(parents=True)
    (stale / "f").write_text("left by a killed unpack")
    stale.chmod(0o555)
    unpacked(make_image(tmp_path / "img", [gz([file("a")])]), cache)
    assert not (cache / ".unpack-999999999-x").exists()


def _modifiable(path: Path) -> None:
    for p in [path, *path.parents]:
        if p.is_dir() and p.name == "root":
            break
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


@pytest.fixture
def toolchain(tmp_path: Path, cache: Path) -> unpack.Toolchain:
    layer = gz([directory("usr/bin"), file("usr/bin/cc", b"compiler", 0o755), file("usr/lib/libc.so", b"libc"),
                symlink("usr/bin/gcc", "cc")])  # fmt: skip
    toolchain = unpacked(make_image(tmp_path / "img", [layer]), cache)
    unpack.verify(toolchain)
    unpack.verify(toolchain, full=True)
    return toolchain


def damaged(toolchain: unpack.Toolchain, *, full: bool, path: str) -> str:
    with pytest.raises(CacheEntryError) as info:
        unpack.verify(toolchain, full=full)
    message = str(info.value)
    entry = toolchain.root.parent
    assert "\n" not in message
    assert message.startswith(f"{entry}: ") and path in message and "remove that directory" in message, message
    return message


def test_verify_detects_a_changed_size(toolchain: unpack.Toolchain) -> None:
    cc = toolchain.root / "usr/bin/cc"
    _modifiable(cc)
    cc.write_bytes(b"a longer, different compiler")
    damaged(toolchain, full=False, path="usr/bin/cc")
    damaged(toolchain, full=True, path="usr/bin/cc")


def test_verify_detects_an_added_file(toolchain: unpack.Toolchain) -> None:
    lib = toolchain.root / "usr/lib"
    lib.chmod(0o755)
    (lib / "libevil.so").write_bytes(b"")
    damaged(toolchain, full=False, path="usr/lib/libevil.so")


def test_verify_detects_a_removed_link_and_a_mode(toolchain: unpack.Toolchain) -> None:
    (toolchain.root / "usr/lib/libc.so").chmod(0o555)
    damaged(toolchain, full=False, path="usr/lib/libc.so")
    damaged(toolchain, full=True, path="usr/lib/libc.so")


def test_full_verify_detects_same_size_content_with_the_time_put_back(toolchain: unpack.Toolchain) -> None:
    cc = toolchain.root / "usr/bin/cc"
    before = cc.stat()
    _modifiable(cc)
    cc.write_bytes(b"COMPILER")  # same size
    cc.chmod(stat.S_IMODE(before.st_mode))
    os.utime(cc, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = cc.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino, after.st_mode) == (
        before.st_size, before.st_mtime_ns, before.st_ino, before.st_mode)  # fmt: skip
    damaged(toolchain, full=True, path="usr/bin/cc")


def test_a_damaged_entry_is_refused_on_the_next_unpack(
    tmp_path: Path, cache: Path, toolchain: unpack.Toolchain
) -> None:
    (toolchain.root / "usr/bin").chmod(0o755)
    (toolchain.root / "usr/bin/gcc").unlink()
    with pytest.raises(CacheEntryError, match="usr/bin/gcc"):
        unpacked("oci:" + str(tmp_path / "img") + ":1.0", cache)


def test_default_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert unpack.default_cache() == tmp_path / "xdg" / "detpack" / "toolchains"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert unpack.default_cache() == tmp_path / "home" / ".cache" / "detpack" / "toolchains"


def test_digests_are_checked_even_for_the_config(tmp_path: Path, cache: Path) -> None:
    reference = make_image(tmp_path / "img", [gz([file("a")])])
    with fetch.open_image(reference) as image:
        image.config.path.write_bytes(json.dumps({"os": "linux", "architecture": "arm64"}).encode())
        with pytest.raises(InputError, match="does not match its digest"):
            unpack.unpacked(image, cache)


_UNPRIVILEGED = """
import os, sys, tarfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_toolchain_unpack import M, directory, entries, file, gz, make_image, unpacked
from detpack.errors import ArchiveError
from detpack.oci import unpack

work, cache = Path(sys.argv[2]), Path(sys.argv[2]) / "cache"
layer = gz([directory("ro", 0o555), file("ro/secret", b"s", 0o000), file("ro/tool", b"t", 0o4755)])
reference = make_image(work / "img", [layer])
toolchain = unpacked(reference, cache)
unpack.verify(toolchain, full=True)  # every file readable by its owner
try:
    (toolchain.root / "ro" / "new").write_text("x")
    sys.exit("the root is writable")
except PermissionError:
    pass
real, os.path.lexists = os.path.lexists, lambda path: False  # lose a race: the read-only temporary goes
unpacked(reference, cache)
os.path.lexists = real
stale = cache / ".unpack-1-stale" / "root" / "d"
stale.mkdir(parents=True)
(stale / "f").write_text("x")
stale.chmod(0o555)
stale.parent.chmod(0o555)
unpacked(make_image(work / "other", [gz([file("a")])]), cache)
try:
    unpacked(make_image(work / "bad", [gz([directory("x", 0o555), file("x/y"), M("dev/sda", tarfile.BLKTYPE)])]), cache)
    sys.exit("a device was accepted")
except ArchiveError:
    pass
names = entries(cache)
assert len(names) == 2 and not any(n.startswith(".") for n in names), names
print("ok")
"""


def test_without_privileges_the_root_is_read_only_and_leftovers_are_removed(tmp_path: Path) -> None:
    """As root nothing is read-only; the same steps run again as an unprivileged user (a user namespace)."""
    argv = [sys.executable, "-c", _UNPRIVILEGED, str(Path(__file__).parent), str(tmp_path)]
    if os.getuid() == 0:
        argv = [require_tool("unshare"), "--user", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0 and "unshare failed" in r.stderr:
        unavailable(f"no unprivileged user namespace here: {r.stderr.strip()}")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
