"""Properties over generated trees and archives (hypothesis): normalize is idempotent, keeps
every member's bytes and exec bit, ignores input order and metadata; diff of an archive and
its normalized form reports only metadata."""

from __future__ import annotations

import io
import random
import tarfile
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detpack import NormalizeOptions, compare_paths, normalize_file

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789_-.é", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
PATH = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)
TREE = st.dictionaries(PATH, st.tuples(st.binary(max_size=2048), st.booleans()), min_size=1, max_size=12).filter(
    # no path may be both a file and a parent directory of another
    lambda t: not any(other.startswith(p + "/") for p in t for other in t)
)
EPOCH = st.integers(min_value=315532800, max_value=4102444800)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _zip(tree: dict[str, tuple[bytes, bool]], seed: int) -> bytes:
    rng = random.Random(seed)
    names = list(tree)
    rng.shuffle(names)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            data, executable = tree[name]
            zi = zipfile.ZipInfo(name, (1980 + rng.randrange(40), 1 + rng.randrange(12), 1, 0, 0, 0))
            mode = (0o755 if executable else 0o644) | rng.choice([0, 0o020, 0o002])
            zi.external_attr = (0o100000 | mode) << 16
            zi.create_system = rng.choice([0, 3])
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.extra = rng.choice([b"", b"UT\x05\x00\x01" + rng.randbytes(4)])
            zf.writestr(zi, data, compresslevel=6)
    return buf.getvalue()


def _tar(tree: dict[str, tuple[bytes, bool]], seed: int) -> bytes:
    rng = random.Random(seed)
    names = list(tree)
    rng.shuffle(names)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=rng.choice([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])) as tf:
        for name in names:
            data, executable = tree[name]
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), rng.randrange(2**31)
            ti.mode = (0o755 if executable else 0o644) | rng.choice([0, 0o020])
            ti.uid, ti.uname = rng.randrange(2000), rng.choice(["", "alice", "bob"])
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _members(path: Path) -> dict[str, tuple[bytes, bool]]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return {i.filename: (zf.read(i), bool((i.external_attr >> 16) & 0o111)) for i in zf.infolist()}
    with tarfile.open(path) as tf:
        return {
            m.name: (tf.extractfile(m).read(), bool(m.mode & 0o111))  # type: ignore[union-attr]
            for m in tf.getmembers()
            if m.isfile()
        }


@FAST
@given(
    tree=TREE,
    seed_a=st.integers(0, 2**32),
    seed_b=st.integers(0, 2**32),
    epoch=EPOCH,
    kind=st.sampled_from(["zip", "tar.gz"]),
)
def test_normalize_properties(
    tree: dict[str, tuple[bytes, bool]], seed_a: int, seed_b: int, epoch: int, kind: str
) -> None:
    make = _zip if kind == "zip" else _tar
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        a, b = d / f"a.{kind}", d / f"b.{kind}"
        a.write_bytes(make(tree, seed_a))
        b.write_bytes(make(tree, seed_b))
        opts = NormalizeOptions(epoch)
        na = normalize_file(a, d / "na" / a.name, opts)
        nb = normalize_file(b, d / "nb" / a.name, opts)
        # Input order and metadata do not matter; contents and exec bits survive.
        assert na.sha256 == nb.sha256
        assert _members(na.output) == tree
        # Idempotent.
        again = normalize_file(na.output, d / "again" / a.name, opts)
        assert again.sha256 == na.sha256 and not again.changed
        # diff of an archive and its normalized form: metadata only.
        comparison = compare_paths(a, na.output)
        kinds = {diff.kind for f in comparison.files for diff in f.differences}
        assert kinds <= {"attribute", "order", "header"}, kinds
        assert compare_paths(a, na.output, content_only=True).identical


@settings(max_examples=500, deadline=None)
@given(
    name=st.one_of(
        st.text(min_size=1, max_size=160),
        st.text(alphabet="ab/", min_size=95, max_size=105),  # around the 100-byte ustar name field
    ).filter(lambda n: "\x00" not in n and not n.endswith("/")),  # entry names never end in "/"
    link=st.text(max_size=120).filter(lambda n: "\x00" not in n),
    size=st.integers(0, 8**12),
    mtime=st.one_of(st.integers(0, 8**12), st.sampled_from([0, 8**11 - 1, 8**11])),
    kind=st.sampled_from(["file", "dir", "symlink", "hardlink"]),
    mode=st.sampled_from([0o644, 0o755, 0o777]),
)
def test_direct_header_is_what_tarfile_pax_writes(
    name: str, link: str, size: int, mtime: int, kind: str, mode: int
) -> None:
    """The writer builds plain ustar headers itself; tarfile's PAX writer must agree byte for byte."""
    from detpack.archive.entry import Entry
    from detpack.archive.tar import _tarinfo, header

    entry = Entry(name, kind, mode, size if kind == "file" else 0, link if kind in ("symlink", "hardlink") else "")  # type: ignore[arg-type]
    ti = _tarinfo(entry, mtime)
    with io.BytesIO() as buf:
        with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
            tf.addfile(ti)
        expected = buf.getvalue()[: len(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))]
    assert header(entry, mtime) == expected
