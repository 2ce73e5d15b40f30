"""Memory must not grow with archive size: normalizing a 6x larger archive costs about the
same peak memory (measured as the child process's max RSS)."""

from __future__ import annotations

import gzip
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import run

pytestmark = pytest.mark.slow

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child forked
# from a big pytest process would report the parent's size.
MEASURE = (
    "import sys\n"
    "from detpack.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0].split()[1]\n"
    "print('RSS_KB', hwm)\n"
    "raise SystemExit(code)\n"
)


def _peak_kb(path: Path, out: Path) -> int:
    r = run([sys.executable, "-c", MEASURE, "normalize", path, "-o", out, "-q"])
    assert r.code == 0, r.stderr
    return int(r.stdout.split("RSS_KB")[1].split()[0])


def _sdist(path: Path, megabytes: int) -> Path:
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w|") as tf,
    ):
        for i in range(megabytes // 4):
            data = os.urandom(4 << 20)
            ti = tarfile.TarInfo(f"big-1.0/blob{i:03d}.bin")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def _wheel(path: Path, megabytes: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in range(megabytes // 4):
            zf.writestr(f"big/blob{i:03d}.bin", os.urandom(4 << 20))
        zf.writestr("big-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("big-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: big\nVersion: 1.0\n")
    return path


@pytest.mark.parametrize("kind", ["sdist", "wheel"])
def test_peak_memory_does_not_grow_with_size(kind: str, tmp_path: Path) -> None:
    make, suffix = (_sdist, ".tar.gz") if kind == "sdist" else (_wheel, "-py3-none-any.whl")
    small = make(tmp_path / f"small{suffix}", 20)
    large = make(tmp_path / f"large{suffix}", 120)
    assert large.stat().st_size > 5 * small.stat().st_size
    peak_small = _peak_kb(small, tmp_path / "out-small")
    peak_large = _peak_kb(large, tmp_path / "out-large")
    # 100 MB more input may cost a few MB of allocator noise, never the archive itself.
    print(f"{kind}: peak RSS {peak_small} KiB (20 MB) vs {peak_large} KiB (120 MB)")
    assert peak_large - peak_small < 25_000, (peak_small, peak_large)
    assert peak_large < 120_000, peak_large


def _tree(root: Path, files: int) -> Path:
    """``files`` small files, 50 per directory (a listing is held per directory, never per tree)."""
    for i in range(files):
        d = root / f"d{i // 2500:02d}" / f"s{i // 50:04d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.py").write_bytes(b"x = %d\n" % i)
    return root


def _peak_verb_kb(*argv: str | Path) -> int:
    r = run([sys.executable, "-c", MEASURE, *argv, "-q"])
    assert r.code == 0, r.stderr
    return int(r.stdout.split("RSS_KB")[1].split()[0])


def test_layer_memory_does_not_grow_with_file_count(tmp_path: Path) -> None:
    """A tree is streamed in canonical order, not listed first: 10x the files, about the same memory."""
    small = _tree(tmp_path / "small", 4_000)
    large = _tree(tmp_path / "large", 40_000)
    peaks = {}
    for label, tree in (("small", small), ("large", large)):
        out = tmp_path / f"{label}.tar.gz"
        peaks[label] = _peak_verb_kb("layer", "-o", out, "--add", f"{tree}:/app")
        with tarfile.open(out) as tf:
            entries = sum(1 for _ in tf)
        assert entries > (40_000 if label == "large" else 4_000)
    print(f"layer: peak RSS {peaks['small']} KiB (4k files) vs {peaks['large']} KiB (40k files)")
    assert peaks["large"] - peaks["small"] < 8_000, peaks
    assert peaks["large"] < 64 * 1024, peaks


def test_diff_of_20k_members_stays_under_the_memory_ceiling(tmp_path: Path) -> None:
    """Every one of 20k members differs (times, modes, versions): the report is large, memory is not."""
    wheel = tmp_path / "many-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(20_000):
            zi = zipfile.ZipInfo(f"many/sub{i % 97:02d}/mod{i:05d}.py", (2020, 1, 1 + i % 28, 0, 0, 0))
            zi.external_attr = (0o100664 if i % 7 else 0o100775) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, f"VALUE = {i}\n" * 20)
        zf.writestr("many-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("many-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: many\nVersion: 1.0\n")
    normalized = tmp_path / "n"
    assert run([sys.executable, "-m", "detpack", "normalize", wheel, "-o", normalized, "-q"]).code == 0
    for extra in ([], ["--json"]):
        r = run([sys.executable, "-c", MEASURE, "diff", wheel, normalized / wheel.name, *extra])
        assert r.code == 1, r.stderr
        peak = int(r.stdout.rsplit("RSS_KB", 1)[1].split()[0])
        print(f"diff {' '.join(extra) or '(text)'}: peak RSS {peak} KiB")
        assert peak < 64 * 1024, peak
