"""detpack's benchmarks against public anchors, measured in the same run.

  python bench/run.py [--smoke] [--reps N] [--json FILE]

Each job runs detpack and its anchor alternately, N times each, as whole processes, and
reports the median wall time, the ratio detpack/anchor (below 1.0: detpack is faster) and
the peak RSS of each (os.wait4's ru_maxrss of that very child). Inputs are generated here
from a fixed seed; the real botocore wheel comes from .samples (make setup). Anchors:
strip-nondeterminism (Debian), `tar --sort=name … | gzip -n -6` and `| pigz -n -6`, a naive
in-memory Python rewrite, `python -m build` and `uv build`. `--smoke` uses tiny inputs and one run.
Last, `detpack store query` over a seeded store of 10,000 entries (2,000 with `--smoke`) against
naive scans of the store (bench/query.py, which also runs alone, at any scale).

Every command runs as on a user's machine: Python's bytecode is written and read (a
PYTHONDONTWRITEBYTECODE in the caller's environment is dropped: with it, each `uv build` hook
and each detpack run would compile its imports from source), and detpack's own bytecode and its
environment's are compiled before the first timed run, as an installer leaves them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DETPACK = str(BIN / "detpack")

NAIVE_SDIST = """
import gzip, io, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
with tarfile.open(src, "r:gz") as tf:
    members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
members.sort(key=lambda item: item[0].name)
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
    for m, data in members:
        m.mtime, m.uid, m.gid, m.uname, m.gname, m.pax_headers = 0, 0, 0, "", "", {}
        out.addfile(m, io.BytesIO(data) if data is not None else None)
with open(dst, "wb") as f:
    f.write(gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))
"""


@dataclass
class Row:
    job: str
    detpack_s: float
    anchor: str
    anchor_s: float | None
    ratio: float | None
    detpack_rss_mib: float
    anchor_rss_mib: float | None
    runs: int


def run_once(argv: list[str] | str, setup: object = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one whole process (a shell pipeline counts its shell)."""
    if callable(setup):
        setup()
    shell = isinstance(argv, str)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {argv}")
    return elapsed, usage.ru_maxrss / 1024


#: Substrings of job names to run (``--only``); empty runs everything.
ONLY: list[str] = []


def compare(
    job: str,
    ours: list[str] | str,
    anchor_name: str,
    anchor: list[str] | str | None,
    reps: int,
    setup: object = None,
    anchor_setup: object = None,
) -> Row | None:
    if ONLY and not any(o in job for o in ONLY):
        return None
    mine: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    for _ in range(reps):  # alternate, so drift hits both sides alike
        mine.append(run_once(ours, setup))
        if anchor is not None:
            theirs.append(run_once(anchor, anchor_setup))
    m = statistics.median(t for t, _ in mine)
    a = statistics.median(t for t, _ in theirs) if theirs else None
    row = Row(
        job,
        m,
        anchor_name,
        a,
        (m / a) if a else None,
        max(r for _, r in mine),
        max(r for _, r in theirs) if theirs else None,
        reps,
    )
    anchor_txt = f"{a:7.2f}s  ratio {row.ratio:5.2f}" if a else "   (not installed)"
    rss = f"RSS {row.detpack_rss_mib:5.0f} / {row.anchor_rss_mib or 0:5.0f} MiB"
    print(f"{job:<34} detpack {m:7.2f}s   {anchor_name:<26} {anchor_txt}   {rss}", flush=True)
    return row


def wheel_like(path: Path, entries: int, megabytes: int, seed: int) -> Path:
    rng = random.Random(seed)
    words = [f"{rng.getrandbits(32):x}" for _ in range(3000)]
    per = (megabytes << 20) // entries
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for i in range(entries):
            name = f"pkg/sub{i % 97:02d}/mod{i:05d}.py"
            zi = zipfile.ZipInfo(name, (2020, 1, 1 + i % 28, 0, 0, 0))
            zi.external_attr = (0o100664 if i % 7 else 0o100775) << 16
            data = " ".join(rng.choice(words) for _ in range(max(per // 9, 1))).encode()
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
        zf.writestr("pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
    return path


def tree(root: Path, files: int, megabytes: int, seed: int) -> Path:
    rng = random.Random(seed)
    words = [f"{rng.getrandbits(40):x}" for _ in range(5000)]
    per = (megabytes << 20) // files
    top = root / "proj-1.0"
    for i in range(files):
        d = top / f"pkg{i % 50:02d}" / f"sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"m{i:05d}.py"
        data = os.urandom(per) if i % 10 == 0 else " ".join(rng.choice(words) for _ in range(per // 11)).encode()
        f.write_bytes(data)
        f.chmod(0o775 if i % 9 == 0 else 0o664)
        if i % 500 == 0:
            (d / f"link{i}").symlink_to(f.name)
    (top / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: proj\nVersion: 1.0\n")
    return top


def real_tree(root: Path, *, smoke: bool) -> Path:
    """A copy of this interpreter's standard library (without __pycache__ and site-packages): a real
    tree of fewer, larger files than ``tree`` (~100 MB, ~2,500 files on CPython 3.11; --smoke: email/)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = shutil.ignore_patterns("__pycache__", "site-packages")
    top = root / stdlib.name
    if smoke:
        shutil.copytree(stdlib / "email", top / "email", symlinks=True, ignore=skip)
    else:
        shutil.copytree(stdlib, top, symlinks=True, ignore=skip)
    return top


def noisy_tgz(src: Path, dst: Path) -> Path:
    with (
        dst.open("wb") as raw,
        gzip.GzipFile("x.tar", "wb", 6, raw, mtime=time.time()) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tf,
    ):
        tf.add(src, arcname=src.name)
    return dst


def _rm_readonly(path: Path) -> None:
    """Remove a tree whose directories were made read-only (an unpacked image)."""
    if path.exists():
        for d, _, _ in os.walk(path):
            os.chmod(d, 0o755)
        shutil.rmtree(path)


def _as_installed() -> None:
    """Bytecode as an installed detpack has it, and written as users' Pythons write it (module doc)."""
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for where in (ROOT / "detpack", Path(sysconfig.get_path("purelib")), Path(sysconfig.get_path("platlib"))):
        compileall.compile_dir(where, quiet=2, workers=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny inputs, one run (what CI runs)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT", help="run only jobs whose name has TEXT")
    args = ap.parse_args()
    ONLY.extend(args.only)
    _as_installed()
    reps = 1 if args.smoke else args.reps
    scale = (200, 4, 2000, 10, 400, 4, 400, 6) if args.smoke else (2000, 30, 20000, 130, 20000, 125, 20000, 200)
    snd = shutil.which("strip-nondeterminism")
    pigz = shutil.which("pigz")
    rows: list[Row | None] = []
    query_rows: list[dict[str, object]] = []
    work = Path(tempfile.mkdtemp(prefix="detpack-bench-"))
    try:
        small = wheel_like(work / "small-1.0-py3-none-any.whl", scale[0], scale[1], 1)
        many = wheel_like(work / "many-1.0-py3-none-any.whl", scale[2], scale[3], 2)
        src = tree(work / "tree", scale[4], scale[5], 3)
        tgz = noisy_tgz(src, work / "proj-1.0.tar.gz")
        print(
            f"inputs: {small.name} {small.stat().st_size >> 20} MB ({scale[0]} entries); "
            f"{many.name} {many.stat().st_size >> 20} MB ({scale[2]}); tree {scale[5]} MB ({scale[4]} files) -> "
            f"tar.gz {tgz.stat().st_size >> 20} MB; median of {reps}\n"
        )
        samples = sorted((ROOT / ".samples").glob("botocore-*.whl"))
        wheels = [*samples[:1], small, many]
        for wheel in wheels:
            copy = work / "snd" / wheel.name
            copy.parent.mkdir(exist_ok=True)
            anchor = [snd, "-T", "315532800", str(copy)] if snd else None
            if wheel is many and snd and not args.smoke:
                anchor = f"timeout 60 {snd} -T 315532800 {copy}; true"  # quadratic in entries: capped at 60 s
            rows.append(
                compare(
                    f"normalize {wheel.name[:24]}",
                    [DETPACK, "normalize", str(wheel), "-o", str(work / "n"), "-q"],
                    "strip-nondeterminism",
                    anchor,
                    reps,
                    anchor_setup=lambda w=wheel, c=copy: shutil.copy(w, c),
                )
            )
        naive = work / "naive.py"
        naive.write_text(NAIVE_SDIST)
        rows.append(
            compare(
                "normalize sdist-like tar.gz",
                [DETPACK, "normalize", str(tgz), "-o", str(work / "n"), "-q"],
                "naive in-memory rewrite",
                [sys.executable, str(naive), str(tgz), str(work / "naive.tgz")],
                reps,
            )
        )
        tar = "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner"
        rows.append(
            compare(
                "same tar.gz, vs tar|gzip -n -6",
                [DETPACK, "normalize", str(tgz), "-o", str(work / "n"), "-q"],
                "tar | gzip -n -6",
                f"{tar} -C {src.parent} -cf - {src.name} | gzip -n -6 > {work / 'a.tgz'}",
                reps,
            )
        )
        rows.append(
            compare(
                "same tar.gz, vs tar|pigz -n -6",
                [DETPACK, "normalize", str(tgz), "-o", str(work / "n"), "-q"],
                "tar | pigz -n -6",
                f"{tar} -C {src.parent} -cf - {src.name} | {pigz} -n -6 > {work / 'b.tgz'}" if pigz else None,
                reps,
            )
        )
        big = tree(work / "layer-tree", scale[6], scale[7], 4)
        print(f"layer tree: {scale[7]} MB, {scale[6]} files, mixed modes and symlinks")
        packers = {
            "tar | gzip -n -6": f"{tar} -C {big.parent} -cf - {big.name} | gzip -n -6 > {work / 'c.tgz'}",
            "tar | pigz -n -6": f"{tar} -C {big.parent} -cf - {big.name} | {pigz} -n -6 > {work / 'd.tgz'}"
            if pigz
            else None,
        }
        for name, anchor in packers.items():
            rows.append(
                compare(
                    f"tree -> layer, vs {name[6:]}",
                    [DETPACK, "layer", "-o", str(work / "layer.tar.gz"), "--add", f"{big}:/app", "-q"],
                    name,
                    anchor,
                    reps,
                )
            )
        real = real_tree(work / "real-tree", smoke=args.smoke)
        files = sum(1 for p in real.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in real.rglob("*") if p.is_file() and not p.is_symlink())
        print(f"real tree: this Python's standard library, {size >> 20} MB, {files} files (no __pycache__)")
        rows.append(
            compare(
                "stdlib tree -> layer, vs pigz -n -6",
                [DETPACK, "layer", "-o", str(work / "real.tar.gz"), "--add", f"{real}:/usr/lib/{real.name}", "-q"],
                "tar | pigz -n -6",
                f"{tar} -C {real.parent} -cf - {real.name} | {pigz} -n -6 > {work / 'r.tgz'}" if pigz else None,
                reps,
            )
        )
        zstd = shutil.which("zstd")
        for label, where, dest in (("tree", big, "/app"), ("stdlib tree", real, f"/usr/lib/{real.name}")):
            # the same trees as OCI zstd layers (layer --compression zstd: level 3, multi-threaded, the same bytes
            # at any thread count), against zstd's own command line at that level on every core
            rows.append(
                compare(
                    f"{label} -> zstd layer, vs zstd -3 -T0",
                    [DETPACK, "layer", "-o", str(work / "layer.tar.zst"), "--add", f"{where}:{dest}", "-q"],
                    "tar | zstd -3 -T0",
                    f"{tar} -C {where.parent} -cf - {where.name} | {zstd} -q -3 -T0 > {work / 'z.tar.zst'}"
                    if zstd
                    else None,
                    reps,
                )
            )
        rows.append(
            compare(
                "tree -> tar.gz (detpack tar)",
                [DETPACK, "tar", str(big), "-o", str(work / "t.tar.gz"), "-q"],
                "tar | gzip -n -6",
                packers["tar | gzip -n -6"],
                reps,
            )
        )
        twin = work / "twin" / many.name
        twin.parent.mkdir()
        shutil.copy(many, twin)
        rows.append(
            compare(
                "diff identical 20k-entry zips",
                [DETPACK, "diff", str(many), str(twin), "-q"],
                "sha256sum both",
                ["sha256sum", str(many), str(twin)],
                reps,
            )
        )
        rows.append(
            compare(
                "diff zip vs its normalized form",
                [DETPACK, "diff", str(many), str(work / "n" / many.name), "-q"],
                "sha256sum both",
                ["sha256sum", str(many), str(work / "n" / many.name)],
                reps,
            )
        )
        house = ROOT / ".wheelhouse"
        fixture = work / "fixture"
        shutil.copytree(ROOT / "fixtures" / "setuptools-basic", fixture)
        build_reps = 1 if args.smoke else args.reps

        def against_python_build(job: str, src: Path, tag: str) -> Row | None:
            """``detpack build SRC`` against ``python -m build SRC``, both offline from the wheelhouse."""
            ours = [DETPACK, "build", str(src), "-o", str(work / f"{tag}1"), "-q", "--find-links", str(house)]
            theirs = f"env PIP_NO_INDEX=1 PIP_FIND_LINKS={house} {sys.executable} -m build {src} -o {work / f'{tag}2'}"
            return compare(job, [*ours, "--offline"], "python -m build", theirs, build_reps)

        rows.append(against_python_build("build tiny project (sdist+wheel)", fixture, "b"))
        # What the sandbox costs: the same build with bwrap on PATH and without (then no sandbox).
        nobwrap = work / "bin-without-bwrap"
        nobwrap.mkdir()
        rows.append(
            compare(
                "build tiny project in the sandbox",
                [DETPACK, "build", str(fixture), "-o", str(work / "s1"), "-q", "--find-links", str(house), "--offline"],
                "the same without a sandbox",
                f"env PATH={nobwrap} {DETPACK} build {fixture} -o {work / 's2'} -q --find-links {house} --offline",
                build_reps,
            )
        )
        # A C extension: the compiler, assembler and linker run through detpack's shims, and the record
        # names them and the system files they read (dpkg), against python -m build of the same.
        cext = work / "cext"
        shutil.copytree(ROOT / "fixtures" / "cext", cext)
        rows.append(against_python_build("build C extension (sdist+wheel)", cext, "c"))
        # A C extension in the test toolchain image (`make toolchain`), its unpacked cache warm, against the
        # same build with this machine's compiler; and the first unpack of that image against umoci's.
        image = ROOT / ".toolchain" / "debian12"
        if (image / "index.json").is_file() and (not ONLY or any(o in "toolchain image" for o in ONLY)):
            ref = f"oci:{image}:1"
            tc_cache = work / "toolchain-cache"
            warm = f"env XDG_CACHE_HOME={tc_cache} {DETPACK} build {cext} -q --find-links {house} --offline"
            run_once(f"{warm} -o {work / 't0'} --toolchain {ref}")  # unpacks the image into the cache
            rows.append(
                compare(
                    "C extension in a toolchain image",
                    f"{warm} -o {work / 't1'} --toolchain {ref}",
                    "the same on this machine",
                    f"{DETPACK} build {cext} -o {work / 't2'} -q --find-links {house} --offline",
                    build_reps,
                )
            )
            rows.append(
                compare(
                    "C extension in the image, no repair",
                    f"{warm} -o {work / 't3'} --toolchain {ref} --no-repair",
                    "the same on this machine",
                    f"{DETPACK} build {cext} -o {work / 't4'} -q --find-links {house} --offline",
                    build_reps,
                )
            )
            fresh = work / "unpack-cache"
            load = (
                "from pathlib import Path; from detpack.oci.toolchain import load; "
                f"load({ref!r}, None, Path({str(fresh)!r}))"
            )
            umoci = shutil.which("umoci")
            rows.append(
                compare(
                    "first unpack of the toolchain image",
                    [sys.executable, "-c", load],
                    "umoci unpack --rootless",
                    f"{umoci} unpack --rootless --image {image}:1 {work / 'bundle'}" if umoci else None,
                    build_reps,
                    setup=lambda: _rm_readonly(fresh),
                    anchor_setup=lambda: _rm_readonly(work / "bundle"),
                )
            )
        # Builds run at once (each in its own private build root): two builds of two copies of the
        # project started together, against the slower of them built alone.
        twin_fixture = work / "fixture-twin"
        shutil.copytree(fixture, twin_fixture)
        one = f"{DETPACK} build {{src}} -o {{out}} -q --find-links {house} --offline"
        rows.append(
            compare(
                "two builds started together",
                "("
                + one.format(src=fixture, out=work / "p1")
                + " & "
                + one.format(src=twin_fixture, out=work / "p2")
                + " & wait)",
                "one of them alone",
                one.format(src=fixture, out=work / "p3"),
                build_reps,
            )
        )
        uv_bin = shutil.which("uv", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        rows.append(
            compare(
                "build tiny project, vs uv build",
                [DETPACK, "build", str(fixture), "-o", str(work / "u1"), "-q", "--find-links", str(house), "--offline"],
                "uv build",
                f"{uv_bin} build -q --offline --find-links {house} {fixture} -o {work / 'u2'}" if uv_bin else None,
                build_reps,
            )
        )
        lock = fixture / "pylock.build.toml"
        subprocess.run(
            [DETPACK, "lock", str(fixture), "--find-links", str(house), "--offline", "-q"],
            check=True,
            capture_output=True,
        )
        locked = [
            DETPACK,
            "build",
            str(fixture),
            "-o",
            str(work / "b3"),
            "-q",
            "--lock",
            str(lock),
            "--find-links",
            str(house),
            "--offline",
        ]
        run_once(locked)  # fills the locked-environment cache
        rows.append(
            compare(
                "build tiny project, warm lock cache",
                locked,
                "python -m build",
                f"env PIP_NO_INDEX=1 PIP_FIND_LINKS={house} {sys.executable} -m build {fixture} -o {work / 'b2'}",
                build_reps,
            )
        )
        rows.append(
            compare(
                "warm lock cache, vs uv build",
                locked,
                "uv build",
                f"{uv_bin} build -q --offline --find-links {house} {fixture} -o {work / 'u2'}" if uv_bin else None,
                build_reps,
            )
        )
        rows += _online_builds(work, uv_bin, build_reps)
        if not ONLY or any(o in "store query" for o in ONLY):
            from query import measure  # bench/query.py: `detpack store query` over a seeded store

            print()
            query_rows = measure(work / "query", 2_000 if args.smoke else 10_000, reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.write_text(
        json.dumps(
            {"smoke": args.smoke, "rows": [asdict(r) for r in rows if r is not None], "query": query_rows}, indent=2
        )
        + "\n"
    )
    print(f"\nresults: {args.json}")


#: A small setuptools sdist the bench did not tune for, downloaded fresh each run (issue: online builds).
ONLINE_SDIST = "six==1.17.0"


def _online_builds(work: Path, uv_bin: str | None, reps: int) -> list[Row | None]:
    """A fresh ``pip download`` of a small setuptools sdist, built as users build: online against the index,
    no lock, no --find-links. First-ever (a fresh DETPACK_BUILD_ROOT each time) and repeat, each against
    ``uv build`` of the same tree beside it (its own cache as it is)."""
    jobs = [f"{when} build online ({ONLINE_SDIST})" for when in ("first-ever", "repeat")]
    if ONLY and not any(o in job for o in ONLY for job in jobs):
        return []
    fetched = work / "online"
    got = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", ONLINE_SDIST,
         "-d", str(fetched)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    sdists = sorted(fetched.glob("*.tar.gz")) if got.returncode == 0 else []
    if not sdists:
        print(f"{'online builds':<34} (skipped: cannot download {ONLINE_SDIST} from the index)", flush=True)
        return []
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(fetched, filter="data")
    tree = next(p for p in fetched.iterdir() if p.is_dir())
    anchor = f"{uv_bin} build -q {tree} -o {work / 'on-uv'}" if uv_bin else None
    fresh = work / "fresh-root"
    first = f"env DETPACK_BUILD_ROOT={fresh} {DETPACK} build {tree} -o {work / 'on-1'} -q"
    rows = [
        compare(
            f"first-ever build online ({ONLINE_SDIST})",
            first,
            "uv build",
            anchor,
            reps,
            setup=lambda: _rm_readonly(fresh),
        )
    ]
    repeat = [DETPACK, "build", str(tree), "-o", str(work / "on-2"), "-q"]
    run_once(repeat)  # the build root's caches as a second build finds them
    rows.append(compare(f"repeat build online ({ONLINE_SDIST})", repeat, "uv build", anchor, reps))
    return rows


if __name__ == "__main__":
    main()
