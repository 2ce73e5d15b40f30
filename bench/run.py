"""detpack's benchmarks against public anchors, measured in the same run.

  python bench/run.py [--quick]

Each figure is the best of N wall-clock runs of a whole process. Ratios are detpack's time
over the anchor's (below 1.0: detpack is faster). Anchors:
  - strip-nondeterminism (Debian) on the same wheel / zip,
  - `tar --sort=name ... | gzip -n` on the same tree,
  - `python -m build` on the same project.
Inputs are generated here (a 100 MB tree, a wheel of the same content) plus a fixture build.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DETPACK = str(BIN / "detpack")


def best_of(n: int, argv: list[str] | str, *, setup: object = None, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(n):
        if callable(setup):
            setup()
        start = time.perf_counter()
        subprocess.run(
            argv,
            check=True,
            shell=isinstance(argv, str),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
    return min(times)


def make_tree(root: Path, megabytes: int) -> Path:
    """Source-like content: mostly text (compressible), some binary, ~2000 files."""
    rng = random.Random(0)
    words = [f"{rng.getrandbits(40):x}" for _ in range(5000)]
    tree = root / "proj-1.0"
    total, i = 0, 0
    while total < megabytes << 20:
        d = tree / f"pkg{i % 40:02d}"
        d.mkdir(parents=True, exist_ok=True)
        if i % 10 == 0:
            data = os.urandom(rng.randint(10_000, 200_000))
        else:
            data = " ".join(rng.choice(words) for _ in range(rng.randint(2_000, 12_000))).encode()
        (d / f"mod{i:05d}.py").write_bytes(data)
        total += len(data)
        i += 1
    (tree / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: proj\nVersion: 1.0\n")
    return tree


def make_wheel(tree: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(tree.rglob("*"), reverse=True):  # a non-canonical order on purpose
            if p.is_file() and p.name != "PKG-INFO":
                zf.write(p, p.relative_to(tree).as_posix())
        zf.writestr("proj-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: proj\nVersion: 1.0\n")
        zf.writestr("proj-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    return out


def row(label: str, ours: float, anchor: float | None, anchor_name: str) -> None:
    if anchor is None:
        print(f"{label:<38} detpack {ours:7.2f}s   {anchor_name:<28} not installed")
    else:
        print(f"{label:<38} detpack {ours:7.2f}s   {anchor_name:<28} {anchor:7.2f}s   ratio {ours / anchor:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 MB inputs, one run each")
    args = ap.parse_args()
    size, n = (20, 1) if args.quick else (100, 3)
    work = Path(tempfile.mkdtemp(prefix="detpack-bench-"))
    try:
        tree = make_tree(work / "src", size)
        tgz = work / "proj-1.0.tar.gz"
        subprocess.run(["tar", "-C", str(tree.parent), "-czf", str(tgz), tree.name], check=True)
        wheel = make_wheel(tree, work / "proj-1.0-py3-none-any.whl")
        print(f"inputs: {size} MB tree -> tar.gz {tgz.stat().st_size >> 20} MB, wheel {wheel.stat().st_size >> 20} MB")
        print(f"best of {n} runs, wall clock\n")

        ours = best_of(n, [DETPACK, "normalize", str(tgz), "-o", str(work / "n1"), "-q"])
        anchor = best_of(
            n,
            f"tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner "
            f"-C {tree.parent} -cf - {tree.name} | gzip -n -9 > {work / 'anchor.tar.gz'}",
        )
        row("sdist-like tar.gz: normalize", ours, anchor, "tar --sort=name | gzip -n -9")

        ours = best_of(n, [DETPACK, "normalize", str(wheel), "-o", str(work / "n2"), "-q"])
        snd = shutil.which("strip-nondeterminism")
        copy = work / "snd.whl"
        anchor_t = None
        if snd:
            anchor_t = best_of(n, [snd, "-T", "315532800", str(copy)], setup=lambda: shutil.copy(wheel, copy))
        row("wheel: normalize", ours, anchor_t, "strip-nondeterminism")

        copy_gz = work / "snd.tar.gz"
        if snd:
            anchor_t = best_of(n, [snd, "-T", "315532800", str(copy_gz)], setup=lambda: shutil.copy(tgz, copy_gz))
        row(
            "tar.gz (gzip header only for snd)",
            best_of(n, [DETPACK, "normalize", str(tgz), "-o", str(work / "n3"), "-q"]),
            anchor_t,
            "strip-nondeterminism",
        )

        # diff: identical pair ~ one pass over the bytes; a pair differing only in metadata
        # ~ one index pass (members with equal CRC and size are not decompressed).
        twin = work / "twin" / wheel.name
        twin.parent.mkdir()
        shutil.copy(wheel, twin)
        ours = best_of(n, [DETPACK, "diff", str(wheel), str(twin), "-q"])
        anchor = best_of(n, ["sha256sum", str(wheel), str(twin)])
        row("diff: identical 2 x wheel", ours, anchor, "sha256sum both")
        renorm = work / "n2" / wheel.name
        ours = best_of(n, f"{DETPACK} diff {wheel} {renorm} -q > /dev/null; test $? -eq 1")
        row("diff: same content, all metadata differs", ours, anchor, "sha256sum both")

        house = ROOT / ".wheelhouse"
        fixture = ROOT / "fixtures" / "setuptools-basic"
        src = work / "fixture"
        shutil.copytree(fixture, src)
        env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(house)}
        ours = best_of(
            n,
            [
                DETPACK,
                "build",
                str(src),
                "-o",
                str(work / "b1"),
                "-q",
                "--find-links",
                str(house),
                "--offline",
            ],
        )
        anchor = best_of(n, [sys.executable, "-m", "build", str(src), "-o", str(work / "b2")], env=env)
        row("build setuptools fixture (sdist+wheel)", ours, anchor, "python -m build")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
