"""The store at team scale, measured: many writers on PostgreSQL against a directory store, and
the dashboard under a bounded load against the standard library's static file server.

  python bench/store_scale.py [--smoke] [--writers N] [--steps N] [--clients N] [--seconds S]

1. ``--writers`` processes each make ``--steps`` push + promote steps on one store: on PostgreSQL
   (Debian's, initdb'd and started here on 127.0.0.1, as ``nobody`` when run as root) and on a
   directory store; prints the wall time of each run, operations per second and the ratio, and
   checks every operation was logged once.
2. ``detpack store serve`` of a seeded store, ``--clients`` concurrent clients for ``--seconds``
   seconds over its pages (127.0.0.1 only); the anchor is ``python -m http.server`` serving the
   same pages saved as files, under the same load. Prints requests, errors, throughput and
   latency percentiles of each, and the ratios.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DETPACK = str(BIN / "detpack")

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from detpack.store import open_store
    url, work, worker, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = open_store(url)
    for step in range(steps):
        f = work / f"app{worker}-{step}.0-py3-none-any.whl"
        f.write_bytes(f"{worker}/{step}".encode() * 64)
        store.push([f])
        store.promote(f.name, f"env{worker % 3}", [], force=True, environ={})
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """Debian's PostgreSQL in a temporary directory, on 127.0.0.1."""

    def __init__(self, base: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = Path(found[-1]).parent
        self.as_user = []
        if os.geteuid() == 0:
            self.as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
            base.chmod(0o755)
            os.chown(base, 65534, 65534)
        self.data = base / "pg"
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "detpack", "--auth=trust", "--no-instructions")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "log"), "-o", options, "-w", "start")

    def _run(self, tool: str, *argv: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *argv], check=True, capture_output=True)

    def createdb(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "detpack", name)
        return f"postgresql://detpack@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True, check=False)  # fmt: skip


def writers(url: str, work: Path, count: int, steps: int, env: dict[str, str]) -> float:
    subprocess.run([DETPACK, "store", "--store", url, "init"], check=True, capture_output=True, env=env)
    work.mkdir(parents=True)
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(work), str(w), str(steps)], env=env)
        for w in range(count)
    ]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"a writer failed on {url}")
    elapsed = time.perf_counter() - start
    log = subprocess.run([DETPACK, "store", "--store", url, "log", "--json"], check=True, capture_output=True,
                         text=True, env=env).stdout  # fmt: skip
    entries = json.loads(log)
    entries = entries["entries"] if isinstance(entries, dict) else entries
    kinds = [e["type"] for e in entries]
    if kinds.count("push") != count * steps or kinds.count("promote") != count * steps:
        raise SystemExit(f"{url}: {kinds.count('push')} pushes, {kinds.count('promote')} promotions logged")
    verify = subprocess.run([DETPACK, "store", "--store", url, "verify"], capture_output=True, text=True, env=env)
    if verify.returncode != 0:
        raise SystemExit(f"{url}: {verify.stdout}")
    return elapsed


def load(base: str, paths: list[str], clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads requesting ``paths`` in turn for ``seconds``: counts and latency percentiles."""
    host, port = base.removeprefix("http://").rstrip("/").split(":")
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            path = paths[i % len(paths)]
            i += 1
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                ok = resp.status == 200 and body.rstrip().endswith(b"</html>")
            except OSError:
                ok = False
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                errors[0] += not ok

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "errors": errors[0],
        "per_second": len(latencies) / seconds,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def seed(store: Path, work: Path, count: int, env: dict[str, str]) -> None:
    """``count`` pushes with provenance statements, promotions to three environments."""
    script = textwrap.dedent(
        """
        import json, sys, hashlib
        from pathlib import Path
        from detpack.store import open_store
        store, work, count = open_store(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
        for i in range(count):
            wheel = work / f"svc{i % 25}-{i}.0-py3-none-any.whl"
            wheel.write_bytes(f"wheel {i}".encode() * 50)
            prov = work / f"svc{i % 25}-{i}.0.provenance.json"
            prov.write_text(json.dumps({
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": wheel.name, "digest": {"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}}],
                "predicateType": "https://slsa.dev/provenance/v1",
                "predicate": {"buildDefinition": {"buildType": "https://detpack.dev/buildtypes/python-wheel/v1",
                    "externalParameters": {"source": {"uri": "git+https://example.org/svc.git",
                                                      "digest": {"gitCommit": f"{i:040x}"}}},
                    "resolvedDependencies": [{"name": "setuptools", "uri": f"pkg:pypi/setuptools@{60 + i % 20}.0",
                                              "annotations": {"version": f"{60 + i % 20}.0", "usedFor": ["wheel"]}}]},
                    "runDetails": {"builder": {"id": "https://detpack.dev/builders/local/v1"}}}}))
            store.push([wheel], prov)
            if i % 4 == 0:
                store.promote(wheel.name, ("dev", "staging", "prod")[i % 3], [], force=True, environ={})
        """
    )
    work.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", script, str(store), str(work), str(count)], check=True, env=env)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="small runs")
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=400, help="pushes in the dashboard's store")
    args = ap.parse_args()
    if args.smoke:
        args.writers, args.steps, args.seconds, args.seed = 2, 5, 2.0, 40
    work = Path(tempfile.mkdtemp(prefix="detpack-bench-store-"))
    work.chmod(0o755)
    env = {**os.environ, "HOME": str(work / "home"), "XDG_DATA_HOME": str(work / "data")}
    (work / "pgbase").mkdir()
    pg = Postgres(work / "pgbase")
    try:
        print(f"1. {args.writers} writers x {args.steps} push+promote steps, one store")
        url = pg.createdb("bench") + f"?blobs={work / 'pg-blobs'}"
        t_pg = writers(url, work / "w-pg", args.writers, args.steps, env)
        t_dir = writers(str(work / "dir-store"), work / "w-dir", args.writers, args.steps, env)
        ops = 2 * args.writers * args.steps
        print(
            f"   PostgreSQL        {t_pg:7.1f} s  {ops / t_pg:6.1f} ops/s  (every operation logged once, verify clean)"
        )
        print(f"   directory store   {t_dir:7.1f} s  {ops / t_dir:6.1f} ops/s")
        print(f"   ratio PostgreSQL/directory {t_pg / t_dir:5.2f}")

        print(f"2. dashboard: {args.clients} clients for {args.seconds:.0f} s, store of {args.seed} pushes")
        store = work / "dash-store"
        seed(store, work / "seed", args.seed, env)
        port = free_port()
        server = subprocess.Popen([DETPACK, "store", "--store", str(store), "serve", "--port", str(port)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
        assert server.stdout is not None
        server.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/")
        home = conn.getresponse().read().decode()
        conn.close()
        item = re.search(r'href="(/item/sha256:[0-9a-f]{64})"', home)
        paths = ["/", "/log", "/env/prod", item.group(1) if item else "/", "/search?q=svc7", "/verify"]
        time.sleep(3)  # let the first verification finish
        ours = load(base, paths, args.clients, args.seconds)
        # the anchor: the same pages, saved as files, behind python -m http.server
        static = work / "static"
        static.mkdir()
        files = []
        for n, path in enumerate(paths):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", path)
            (static / f"page{n}.html").write_bytes(c.getresponse().read())
            c.close()
            files.append(f"/page{n}.html")
        server.terminate()
        server.wait()
        sport = free_port()
        anchor_proc = subprocess.Popen([sys.executable, "-m", "http.server", str(sport), "--bind", "127.0.0.1",
                                        "--directory", str(static)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1)
        theirs = load(f"http://127.0.0.1:{sport}", files, args.clients, args.seconds)
        anchor_proc.terminate()
        anchor_proc.wait()
        for name, r in (("detpack store serve", ours), ("python -m http.server", theirs)):
            print(f"   {name:<22} {r['requests']:6.0f} requests, {r['errors']:.0f} errors, {r['per_second']:7.1f}/s"
                  f"   p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
                  f"  max {r['max_ms']:6.1f} ms")  # fmt: skip
        print(f"   ratio p50 {ours['p50_ms'] / theirs['p50_ms']:5.2f}   p99 {ours['p99_ms'] / theirs['p99_ms']:5.2f}"
              f"   throughput {ours['per_second'] / theirs['per_second']:5.2f}")  # fmt: skip
        if ours["errors"]:
            raise SystemExit(f"the dashboard answered {ours['errors']:.0f} requests with errors")
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
