"""Run `detpack check` (raw and detpack) over a corpus of real PyPI releases.

For each ``NAME==VERSION  # backend`` line of projects.txt: download the sdist, unpack it,
run ``detpack check --raw`` (plain ``python -m build`` under variations) and ``detpack check``
(``detpack build`` under the same variations), and record exit code, time and the decisive
lines. ``--rebuild`` then runs ``detpack rebuild --pypi`` for every release that publishes a
pure wheel. Failures are data: the script exits 0 once the run completes.

    python corpus/run.py [--only NAME ...] [--jobs N] [--out DIR] [--work DIR] [--rebuild] [--expect FILE]

Reports (results.json, table.md, rebuild.md) go to --out; sdists (DIR/sdists), unpacked sources
(DIR/src/NAME-VERSION), kept check trees (DIR/keep/NAME/{raw,detpack}) and rebuild outputs
(DIR/rebuild/NAME) to --work, which must lie outside any git work tree.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import re
import shutil
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plumbum import local

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DETPACK = ROOT / ".venv" / "bin" / "detpack"
PYTHON = ROOT / ".venv" / "bin" / "python"
CHECK_TIMEOUT = 3600
# Sources are unpacked outside any git work tree: inside one, detpack check (like detpack
# build) builds a checkout of that repository's commit and takes its epoch from git, and
# VCS plugins (setuptools-scm, hatch-vcs) read that repository instead of PKG-INFO.
DEFAULT_WORK = Path("/var/tmp/detpack-corpus")
TAIL = 12

_lock = threading.Lock()


@dataclass
class Project:
    name: str
    version: str
    backend: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


@dataclass
class CheckRun:
    cmd: list[str]
    rc: int | None = None
    seconds: float = 0.0
    verdict: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file name -> identical/differs/only-one
    culprits: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reason: str = ""
    stdout_tail: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)


@dataclass
class Result:
    name: str
    version: str
    backend: str
    sdist: str = ""
    download: str = ""  # how the sdist was fetched, or why it could not be
    pure_wheel: str = ""
    raw: CheckRun | None = None
    detpack: CheckRun | None = None
    rebuild: dict[str, Any] | None = None


def parse_projects(path: Path) -> list[Project]:
    out: list[Project] = []
    for line in path.read_text().splitlines():
        body, _, comment = line.partition("#")
        body = body.strip()
        if not body:
            continue
        name, sep, version = body.partition("==")
        if not sep:
            raise SystemExit(f"{path}: not NAME==VERSION: {line!r}")
        out.append(Project(name.strip(), version.strip(), comment.strip() or "?"))
    return out


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _tail(text: str, n: int = TAIL) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()][-n:]


def _index_sdist(p: Project, dest: Path) -> Path:
    """Fallback: the sdist straight from the index's PEP 691 JSON page (no metadata build)."""
    url = f"https://pypi.org/simple/{_canon(p.name)}/"
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - a fixed https URL
        page = json.load(resp)
    want = {f"{_canon(p.name)}-{p.version}.tar.gz", f"{p.name}-{p.version}.tar.gz".lower()}
    for f in page.get("files", []):
        fname: str = f["filename"]
        if _canon(fname[: -len(".tar.gz")]) + ".tar.gz" in want or fname.lower() in want:
            target = dest / fname
            file_url = urllib.parse.urljoin(url, f["url"])
            if not file_url.startswith("https://"):
                raise RuntimeError(f"{fname}: not an https URL: {file_url}")
            with urllib.request.urlopen(file_url, timeout=120) as resp:  # noqa: S310 - https only
                data = resp.read()
            sha = f.get("hashes", {}).get("sha256")
            if sha and hashlib.sha256(data).hexdigest() != sha:
                raise RuntimeError(f"{fname}: sha256 mismatch")
            target.write_bytes(data)
            return target
    raise RuntimeError(f"{p.spec}: no .tar.gz sdist on the index")


def download_sdist(p: Project, out: Path, res: Result) -> Path | None:
    dest = out / "sdists" / p.key
    found = sorted(dest.glob("*.tar.gz")) if dest.is_dir() else []
    if found:
        res.download = "cached"
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    pip = local[str(PYTHON)]["-m", "pip", "download", "--no-deps", "--no-binary", p.name, p.spec, "-d", str(dest)]
    rc, _, err = pip.run(retcode=None, timeout=1800)
    found = sorted(dest.glob("*.tar.gz"))
    if rc == 0 and found:
        res.download = "pip download --no-deps --no-binary NAME"
        return found[0]
    why = next((ln.strip() for ln in reversed(err.splitlines()) if "error" in ln.lower()), f"pip exit {rc}")
    try:
        got = _index_sdist(p, dest)
    except Exception as exc:  # noqa: BLE001 - any failure here is a recorded outcome
        res.download = f"failed: pip: {why}; index: {exc}"
        return None
    res.download = f"index JSON (pip download failed: {why})"
    return got


def unpack(sdist: Path, out: Path, p: Project) -> Path:
    target = out / "src" / p.key
    if target.exists():
        shutil.rmtree(target)
    tmp = out / "src" / f".{p.key}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp, filter="data")
    entries = list(tmp.iterdir())
    top = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
    top.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_kept(keep: Path) -> dict[str, str]:
    """Which output files differ between the control build and the all-variations build."""
    a = next(iter(sorted(keep.glob("out-01-*"))), None)
    b = next(iter(sorted(keep.glob("out-02-*"))), None)
    if a is None or b is None:
        return {}
    files: dict[str, str] = {}
    names = {f.name for f in a.iterdir() if f.is_file()} | {f.name for f in b.iterdir() if f.is_file()}
    for name in sorted(names):
        if name.endswith((".provenance.json", ".build.log.gz")):
            continue
        fa, fb = a / name, b / name
        if not (fa.exists() and fb.exists()):
            files[name] = "only in one build"
        else:
            files[name] = "identical" if _sha(fa) == _sha(fb) else "differs"
    return files


_ERROR_HINT = re.compile(r"(error|refus|cannot|failed|not reproducible)", re.IGNORECASE)


def run_check(src: Path, keep: Path, raw: bool) -> CheckRun:
    if keep.exists():
        shutil.rmtree(keep)
    keep.parent.mkdir(parents=True, exist_ok=True)
    args = ["check", *(["--raw"] if raw else []), str(src), "-q", "--keep", str(keep)]
    run = CheckRun(cmd=[str(DETPACK), *args])
    t0 = time.monotonic()
    try:
        rc, out, err = local[str(DETPACK)][args].run(retcode=None, timeout=CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - a timeout is a recorded outcome
        rc, out, err = None, "", f"error: {type(exc).__name__}: {exc}"
    run.seconds = round(time.monotonic() - t0, 1)
    run.rc = rc
    (keep.parent / f"{'raw' if raw else 'detpack'}.stdout").write_text(out)
    (keep.parent / f"{'raw' if raw else 'detpack'}.stderr").write_text(err)
    run.stdout_tail = _tail(out)
    run.stderr_tail = _tail(err)
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    run.verdict = next((ln for ln in lines if ln.startswith(("reproducible", "not reproducible"))), "")
    for ln in lines:
        if ln.startswith("responsible variation(s):"):
            run.culprits = [c.strip() for c in ln.split(":", 1)[1].split(",")]
    run.warnings = [ln.strip() for ln in err.splitlines() if "warning" in ln.lower()]
    if keep.is_dir():
        run.files = compare_kept(keep)
    if rc == 0:
        run.reason = ""
    elif rc == 1:
        extra = [ln for ln in lines if ln.startswith(("responsible", "no single", "differs even"))]
        run.reason = "; ".join([run.verdict, *extra])
    else:
        errs = [ln.strip() for ln in err.splitlines() if ln.strip() and not ln.startswith("*")]
        hint = next((ln for ln in errs if _ERROR_HINT.search(ln)), errs[-1] if errs else f"exit {rc}")
        run.reason = hint
    return run


def has_pure_wheel(p: Project, out: Path) -> str:
    dest = out / "wheels" / p.key
    found = sorted(dest.glob("*-none-any.whl")) if dest.is_dir() else []
    if found:
        return found[0].name
    dest.mkdir(parents=True, exist_ok=True)
    flags = ["--only-binary", ":all:", "--platform", "any", "--implementation", "py", "--abi", "none"]
    pip = local[str(PYTHON)]["-m", "pip", "download", "--no-deps", *flags, p.spec, "-d", str(dest)]
    pip.run(retcode=None, timeout=600)
    found = sorted(dest.glob("*-none-any.whl"))
    return found[0].name if found else ""


def do_project(p: Project, out: Path, skip_raw: bool, skip_detpack: bool, prev: Result | None) -> Result:
    res = Result(p.name, p.version, p.backend)
    if prev is not None:  # what this run does not redo is kept from the last one
        res.raw, res.detpack, res.rebuild = prev.raw, prev.detpack, prev.rebuild
    log(f"start {p.spec} ({p.backend})")
    res.pure_wheel = has_pure_wheel(p, out)
    sdist = download_sdist(p, out, res)
    if sdist is None:
        log(f"  {p.spec}: sdist download failed: {res.download}")
        return res
    res.sdist = sdist.name
    src = unpack(sdist, out, p)
    keep = out / "keep" / p.name
    if not skip_raw:
        res.raw = run_check(src, keep / "raw", raw=True)
        log(f"  {p.spec} raw: rc={res.raw.rc} {res.raw.seconds}s {res.raw.reason or res.raw.verdict}")
    if skip_detpack:
        return res
    res.detpack = run_check(src, keep / "detpack", raw=False)
    log(f"  {p.spec} detpack: rc={res.detpack.rc} {res.detpack.seconds}s {res.detpack.reason or res.detpack.verdict}")
    return res


def log(msg: str) -> None:
    with _lock:
        print(time.strftime("%H:%M:%S"), msg, flush=True)


# ---------------------------------------------------------------- reporting


def _builds(r: CheckRun | None) -> str:
    if r is None:
        return "-"
    return "yes" if r.rc in (0, 1) else "no"


def _repro(r: CheckRun | None) -> str:
    if r is None or r.rc not in (0, 1):
        return "-"
    if r.rc == 0:
        return "yes"
    kinds: dict[str, list[str]] = {}
    for name, state in r.files.items():
        kind = "wheel" if name.endswith(".whl") else "sdist" if name.endswith((".tar.gz", ".zip")) else name
        kinds.setdefault(kind, []).append(state)
    if not kinds:
        return "no"
    parts = []
    for kind in ("sdist", "wheel", *sorted(k for k in kinds if k not in ("sdist", "wheel"))):
        if kind in kinds:
            ok = all(s == "identical" for s in kinds[kind])
            parts.append(f"{kind} {'yes' if ok else 'no'}")
    return "no (" + ", ".join(parts) + ")"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def res_key(r: Result) -> str:
    return f"{r.name}-{r.version}"


def load_results(out: Path) -> dict[str, Result]:
    path = out / "results.json"
    results: dict[str, Result] = {}
    if not path.exists():
        return results
    for k, v in json.loads(path.read_text()).items():
        raw = CheckRun(**v["raw"]) if v.get("raw") else None
        det = CheckRun(**v["detpack"]) if v.get("detpack") else None
        rest = {f: x for f, x in v.items() if f not in ("raw", "detpack")}
        results[k] = Result(**rest, raw=raw, detpack=det)
    return results


def write_reports(out: Path, results: dict[str, Result]) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=2) + "\n")
    tmp.replace(out / "results.json")
    rows = [
        "| project | backend | `python -m build` builds? | `python -m build` reproducible? "
        "| detpack builds? | detpack reproducible? | time raw / detpack (s) | reason for failure |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results.values():
        reasons = []
        if r.sdist == "":
            reasons.append(f"sdist: {r.download}")
        for label, c in (("raw", r.raw), ("detpack", r.detpack)):
            if c is not None and c.rc != 0:
                reasons.append(f"{label}: {c.reason}")
        t_raw = f"{r.raw.seconds:.0f}" if r.raw else "-"
        t_det = f"{r.detpack.seconds:.0f}" if r.detpack else "-"
        rows.append(
            f"| {r.name}=={r.version} | {r.backend} | {_builds(r.raw)} | {_repro(r.raw)} | {_builds(r.detpack)} "
            f"| {_repro(r.detpack)} | {t_raw} / {t_det} | {_cell('<br>'.join(reasons))} |"
        )
    (out / "table.md").write_text("\n".join(rows) + "\n")


_VERDICT = re.compile(r"^\s*(byte-identical|content-identical|different)\s+(\S+)\s*(.*)$")


def do_rebuild(p: Project, out: Path) -> dict[str, Any]:
    dest = out / "rebuild" / p.name
    if dest.exists():
        shutil.rmtree(dest)
    t0 = time.monotonic()
    try:
        rc, so, se = local[str(DETPACK)]["rebuild", "--pypi", p.spec, "-o", str(dest)].run(retcode=None, timeout=3600)
    except Exception as exc:  # noqa: BLE001 - recorded outcome
        rc, so, se = None, "", f"error: {type(exc).__name__}: {exc}"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "rebuild.stdout").write_text(so)
    (dest / "rebuild.stderr").write_text(se)
    wheels = []
    lines = so.splitlines()
    for i, ln in enumerate(lines):
        m = _VERDICT.match(ln)
        if m:
            detail = [d.strip() for d in lines[i + 1 : i + 3] if d.startswith("    ")]
            wheels.append({"verdict": m.group(1), "wheel": m.group(2), "note": m.group(3), "detail": detail})
    errs = [ln.strip() for ln in se.splitlines() if ln.strip() and not ln.startswith("*")]
    error = "" if wheels else next((ln for ln in errs if _ERROR_HINT.search(ln)), errs[-1] if errs else "")
    summary = next((ln.strip() for ln in lines if ln.startswith(f"{p.spec}:") or ": " in ln[:60]), "")
    return {
        "rc": rc,
        "seconds": round(time.monotonic() - t0, 1),
        "summary": summary,
        "wheels": wheels,
        "error": error,
        "warnings": [ln.strip() for ln in se.splitlines() if "warning" in ln.lower()],
    }


def write_rebuild_md(out: Path, results: dict[str, Result]) -> None:
    rows = ["| release | verdict | wheel | details |", "| --- | --- | --- | --- |"]
    for r in results.values():
        rb = r.rebuild
        if rb is None:
            continue
        if not rb["wheels"]:
            rows.append(f"| {r.name}=={r.version} | error (exit {rb['rc']}) | {r.pure_wheel} | {_cell(rb['error'])} |")
        for w in rb["wheels"]:
            detail = "<br>".join([w["note"], *w["detail"]])
            rows.append(f"| {r.name}=={r.version} | {w['verdict']} | {w['wheel']} | {_cell(detail)} |")
    (out / "rebuild.md").write_text("\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", type=Path, default=HERE / "projects.txt")
    ap.add_argument("--only", action="append", default=[], help="project name (repeatable)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help=f"sdists, unpacked sources, kept trees and rebuilds; outside any git work tree (default: {DEFAULT_WORK})",
    )
    ap.add_argument("--skip-raw", action="store_true", help="only check detpack build")
    ap.add_argument("--skip-detpack", action="store_true", help="only check python -m build")
    ap.add_argument("--skip-checks", action="store_true", help="no checks (with --rebuild: only rebuild)")
    ap.add_argument("--rebuild", action="store_true", help="then rebuild --pypi every release with a pure wheel")
    ap.add_argument("--expect", type=Path, help="JSON {name: {raw: rc, detpack: rc}}; exit 1 on a mismatch")
    args = ap.parse_args(argv)

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    inside, _, _ = local["git"]["-C", str(work), "rev-parse", "--is-inside-work-tree"].run(retcode=None)
    if inside == 0:
        raise SystemExit(f"--work {work}: inside a git work tree; detpack would build that repository's checkout")
    projects = parse_projects(args.list)
    if args.only:
        wanted = {_canon(n) for n in args.only}
        projects = [p for p in projects if _canon(p.name) in wanted]
        if not projects:
            raise SystemExit(f"--only {args.only}: not in {args.list}")

    order = [p.key for p in parse_projects(args.list)]
    done: set[str] = set()
    if not args.skip_checks:
        done |= {"sdist", "download", "pure_wheel"}
        done |= set() if args.skip_raw else {"raw"}
        done |= set() if args.skip_detpack else {"detpack"}

    def store(res: Result, fields: set[str]) -> dict[str, Result]:
        """Merge what this run produced into results.json (other runs may write it too)."""
        with _lock, (out / ".lock").open("w") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            results = load_results(out)
            cur = results.setdefault(res_key(res), res)
            for f in fields:
                setattr(cur, f, getattr(res, f))
            ordered = {k: results[k] for k in order if k in results}
            ordered.update({k: v for k, v in results.items() if k not in ordered})
            write_reports(out, ordered)
            return ordered

    if not args.skip_checks:
        prev = load_results(out)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for res in pool.map(
                lambda p: do_project(p, work, args.skip_raw, args.skip_detpack, prev.get(p.key)), projects
            ):
                store(res, done)

    if args.rebuild:
        for p in projects:
            res = load_results(out).get(p.key) or Result(p.name, p.version, p.backend)
            res.pure_wheel = res.pure_wheel or has_pure_wheel(p, work)
            if not res.pure_wheel:
                log(f"rebuild {p.spec}: no pure wheel published, skipped")
                continue
            log(f"rebuild {p.spec}")
            res.rebuild = do_rebuild(p, work)
            verdicts = ", ".join(w["verdict"] for w in res.rebuild["wheels"]) or f"error: {res.rebuild['error']}"
            log(f"  {p.spec}: {verdicts} ({res.rebuild['seconds']}s)")
            write_rebuild_md(out, store(res, {"rebuild", "pure_wheel"}))

    results = load_results(out)
    if args.expect:
        expect = json.loads(args.expect.read_text())
        bad = []
        for r in results.values():
            want = expect.get(r.name)
            if not want:
                continue
            for label, c in (("raw", r.raw), ("detpack", r.detpack)):
                if label in want and (c is None or c.rc != want[label]):
                    bad.append(f"{r.name} {label}: expected exit {want[label]}, got {None if c is None else c.rc}")
        for line in bad:
            print(line, file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
