"""`detpack store query` over a large store: its index built, brought up to date and asked, against naive scans.

  python bench/query.py [--entries N] [--reps N] [--smoke] [--json FILE]

Seeds a directory store of N log entries (10,000 by default; ``--entries 100000`` for the target
scale) with ``tests/seeded_store.py`` (releases with provenance, layers with SBOMs, promotions), then
measures, median of ``--reps``:

- the index built from scratch and brought up to date after 100 more entries, as whole processes
  (``detpack store query``) and in-process (``index.open_index``);
- each kind of query as a whole process, in-process on an open index, and in-process with the
  up-to-date check that every query makes first (re-hashing the covered log);
- the same questions answered without the index, as whole processes: a full replay that reads every
  linked provenance once (``Store.state`` and ``read_provenance``), ``detpack store log --json``
  piped through a filter, or ``detpack store resolve``; and prints each ratio (below 1.0: the
  index is faster) with the number of matches both found.

``make bench`` runs it from ``bench/run.py`` (10,000 entries; 2,000 with ``--smoke``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # seeded_store: the tests' bulk writer of a real store

import seeded_store  # noqa: E402
from run import DETPACK, run_once  # noqa: E402

from detpack.store import index, open_store, query  # noqa: E402

#: A full replay that reads each linked provenance once: what answering without an index costs.
NAIVE = textwrap.dedent(
    """
    import fnmatch, sys
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from detpack.errors import DetpackError
    from detpack.provenance import reader
    from detpack.store import open_store
    store = open_store(sys.argv[1])
    kind, value = sys.argv[2], sys.argv[3]
    state = store.state()
    read = {}
    def statement(item):
        linked = store.provenance_of(state, item)
        if linked is None:
            return None
        if linked.digest not in read:
            try:
                read[linked.digest] = store.read_provenance(linked).statement
            except DetpackError:
                read[linked.digest] = None
        return read[linked.digest]
    def wheels(s):
        deps = reader.dig(s, "predicate", "buildDefinition", "resolvedDependencies") or []
        return [d.get("name", "") for d in deps if str(d.get("name", "")).endswith(".whl")]
    req = Requirement(value) if kind in ("dep", "contains") else None
    found = 0
    for item in state.items.values():
        if item.kind != "artifact":
            continue
        s = statement(item)
        if s is None:
            continue
        if kind == "dep":
            deps = reader.dig(s, "predicate", "buildDefinition", "resolvedDependencies") or []
            hit = any(canonicalize_name(str(d.get("name"))) == canonicalize_name(req.name)
                      and isinstance(reader.dig(d, "annotations", "usedFor"), list)
                      and req.specifier.contains(str(reader.dig(d, "annotations", "version")), prereleases=True)
                      for d in deps)
        elif kind == "contains":
            hit = any(n.split("-")[0] == canonicalize_name(req.name).replace("-", "_")
                      and req.specifier.contains(n.split("-")[1], prereleases=True) for n in wheels(s))
        elif kind == "builder":
            hit = reader.dig(s, "predicate", "runDetails", "builder", "id") == value
        else:  # the build's source, or the sources of the wheels a layer holds
            sources = [reader.dig(s, "predicate", "buildDefinition", "externalParameters", "source")]
            deps = reader.dig(s, "predicate", "buildDefinition", "resolvedDependencies") or []
            sources += [reader.dig(d, "annotations", "source") for d in deps if str(d.get("name")).endswith(".whl")]
            if kind == "commit":
                hit = any(str(reader.dig(x, "digest", "gitCommit") or "").startswith(value) for x in sources)
            else:
                hit = any(value.lower() in str(reader.dig(x, "uri") or "").lower() for x in sources)
        found += bool(hit)
    print(found)
    """
)


def _log_filter(code: str) -> str:
    """``detpack store log --json`` piped through a Python filter of its entries (``e``)."""
    return f"python3 -c {shlex.quote('import json, sys; e = json.load(sys.stdin); ' + code)}"


def _median(fn: Callable[[], object], reps: int, setup: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(reps):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _processes(argv: list[str] | str, reps: int, setup: Callable[[], object] | None = None) -> tuple[float, float]:
    runs = [run_once(argv, setup) for _ in range(reps)]
    return statistics.median(t for t, _ in runs), max(r for _, r in runs)


def measure(work: Path, entries: int, reps: int) -> list[dict[str, Any]]:
    """Seed, build, update and ask; print the table; the rows (seconds)."""
    work.mkdir(parents=True, exist_ok=True)
    keys, path = work / "keys", work / "index.sqlite"
    start = time.perf_counter()
    seeded = seeded_store.seed(work / "store", entries, seed=1, keys=keys)
    store_url = str(seeded.root)
    print(
        f"store query: {seeded.entries} log entries ({len(seeded.releases)} releases, {len(seeded.layers)} layers, "
        f"{len(seeded.promotions)} promotions) seeded in {time.perf_counter() - start:.1f}s; median of {reps}\n",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    s = [DETPACK, "store", "--store", store_url, "query", "--index", str(path)]

    def row(job: str, process: float, inproc: float | None, anchor: str | None, anchor_s: float | None,
            matches: str = "", rss: float | None = None) -> None:  # fmt: skip
        ratio = process / anchor_s if anchor_s else None
        rows.append({"job": job, "process_s": process, "in_process_s": inproc, "anchor": anchor,
                     "anchor_s": anchor_s, "ratio": ratio, "matches": matches, "rss_mib": rss})  # fmt: skip
        inner = f"{inproc * 1000:9.1f} ms" if inproc is not None else " " * 12
        versus = f"{anchor:<34} {anchor_s:7.2f}s  ratio {ratio:5.3f}" if anchor and anchor_s and ratio else ""
        print(f"{job:<38} {process:7.3f}s  {inner}  {matches:<11} {versus}", flush=True)

    print(f"{'job':<38} {'process':>8}  {'in-process':>12}  {'matches':<11} {'naive anchor (process)':<34}")
    naive = [sys.executable, "-c", NAIVE, store_url]
    full, rss = _processes([*s, "--rebuild-index", "--kind", "image"], reps)
    inproc = _median(lambda: index.open_index(open_store(store_url), path, rebuild=True).close(), reps)
    anchor, _ = _processes([*naive, "builder", "x"], reps)
    row("index: full build", full, inproc, "one full replay + provenance scan", anchor, rss=rss)

    def grow() -> None:
        seeded_store.more(seeded, 100, seed=int(time.perf_counter() * 1000), keys=keys)

    update, rss = _processes([*s, "--kind", "image"], reps, setup=grow)
    inproc = _median(lambda: index.open_index(open_store(store_url), path).close(), reps, setup=grow)
    row("index: +100 entries", update, inproc, None, None, rss=rss)
    idx = index.open_index(open_store(store_url), path)
    current = _median(lambda: index.open_index(open_store(store_url), path).close(), reps)
    row("index: up to date (the check)", _processes([*s, "--kind", "image"], reps)[0], current, None, None)
    audit, rss = _processes([DETPACK, "store", "--store", store_url, "verify"], 1)
    row("store verify (every blob, checkpoint)", audit, None, "one full replay + provenance scan", anchor, rss=rss)

    release = seeded.releases[len(seeded.releases) // 2]
    wheel = "{}=={}".format(*seeded.layers[len(seeded.layers) // 2].wheels[0])
    at = seeded_store.time_of(seeded.entries // 2).strftime("%Y-%m-%dT%H:%M:%SZ")
    log = f"{DETPACK} store --store {shlex.quote(store_url)} log --json | "
    jobs: list[tuple[str, dict[str, Any], list[str], str | list[str]]] = [
        ("--dep 'setuptools<70'", {"dep": ["setuptools<70"]}, ["--dep", "setuptools<70"],
         [*naive, "dep", "setuptools<70"]),
        (f"--contains '{wheel}'", {"contains": [wheel]}, ["--contains", wheel], [*naive, "contains", wheel]),
        (f"--commit {release.commit[:8]}", {"commit": release.commit[:8]}, ["--commit", release.commit[:8]],
         [*naive, "commit", release.commit[:8]]),
        ("--repo /org3/", {"repo": "/org3/"}, ["--repo", "/org3/"], [*naive, "repo", "/org3/"]),
        ("--builder (CI)", {"builder": seeded_store.CI}, ["--builder", seeded_store.CI],
         [*naive, "builder", seeded_store.CI]),
        ("--name 'proj00*.whl'", {"name": "proj00*.whl"}, ["--name", "proj00*.whl"],
         log + _log_filter("import fnmatch; print(sum(1 for x in e if x['type'] == 'push' and "
                           "fnmatch.fnmatchcase(x['name'], 'proj00*.whl')))")),
        ("--kind layer", {"kind": "layer"}, ["--kind", "layer"],
         log + _log_filter("print(sum(1 for x in e if x['type'] == 'push' and x['name'].startswith('app-') "
                           "and x['name'].endswith('.tar.gz')))")),
        ("--live prod", {"live": "prod"}, ["--live", "prod"],
         [DETPACK, "store", "--store", store_url, "resolve", "prod"]),
        ("--env prod --at T", {"env": "prod", "at": at}, ["--env", "prod", "--at", at],
         log + _log_filter(f"p = [x for x in e if x['type'] == 'promote' and x['env'] == 'prod' "
                           f"and x['time'] <= {at!r}]; print(1 if p else 0)")),
        ("--env prod --history", {}, ["--env", "prod", "--history"],
         log + _log_filter("print(sum(1 for x in e if x['type'] == 'promote' and x['env'] == 'prod'))")),
        ("--dep hatchling --live staging", {"dep": ["hatchling"], "live": "staging"},
         ["--dep", "hatchling", "--live", "staging"], []),
    ]  # fmt: skip
    for label, given, argv, anchor_argv in jobs:
        history = "--history" in argv
        q = query.Query.parse(**given)

        def ask(q: query.Query = q, history: bool = history) -> int:
            return len(query.history(idx, "prod") if history else query.query(idx, q))

        found = ask()
        inproc = _median(ask, max(reps, 5))
        process, rss = _processes([*s, *argv], reps)
        if not anchor_argv:
            row(f"query {label}", process, inproc, None, None, str(found), rss)
            continue
        anchor_s, _ = _processes(anchor_argv, reps)
        row(f"query {label}", process, inproc, "naive: " + _anchor_name(anchor_argv), anchor_s,
            f"{found}/{_count(anchor_argv)}", rss)  # fmt: skip
    idx.close()
    print("\n(matches: the index's / the naive anchor's; the --live and --env anchors print one digest)")
    return rows


def _anchor_name(argv: str | list[str]) -> str:
    if isinstance(argv, str):
        return "store log --json | filter"
    return "store resolve" if "resolve" in argv else "full replay + provenance"


def _count(argv: str | list[str]) -> str:
    import subprocess

    out = subprocess.run(argv, shell=isinstance(argv, str), capture_output=True, text=True, check=False).stdout
    lines = out.strip().splitlines()
    if len(lines) == 1 and lines[0].isdigit():
        return lines[0]
    return str(len(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=10_000, help="log entries to seed (100000 for the target scale)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="2,000 entries, one run")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="detpack-bench-query-") as tmp:
        rows = measure(Path(tmp), 2_000 if args.smoke else args.entries, 1 if args.smoke else args.reps)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
