"""``detpack rebuilder``: rebuilders on several machines sharing one queue in a PostgreSQL store.

``enqueue`` adds releases (once each), ``run`` is a worker (claims, rebuilds, posts signed
attestations to the store), ``status`` shows jobs, leases and each key's outcome. Exit 0 done,
2 bad input (a bad URL, a store that is not PostgreSQL, an unreadable key).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from detpack.cli._output import Output, count
from detpack.errors import ConfigError


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "rebuilder",
        help="rebuilders on several machines sharing a queue in a PostgreSQL store",
        description="Verification jobs (releases to rebuild) in a PostgreSQL store's database, taken by any "
        "number of workers on any machines; each posts signed rebuild attestations to the store.",
    )
    verbs = p.add_subparsers(dest="rebuilder_verb", metavar="ACTION", required=True)
    e = verbs.add_parser("enqueue", help="queue releases to rebuild (each once, however often given)")
    e.add_argument("specs", nargs="*", metavar="NAME==VERSION")
    e.add_argument("-r", "--releases", type=Path, metavar="FILE", help="one NAME==VERSION a line")
    e.add_argument(
        "--attestations",
        type=int,
        metavar="N",
        help="keys that must rebuild each release (default: every key that runs)",
    )
    r = verbs.add_parser(
        "run",
        help="a worker: claim releases, rebuild, post signed attestations",
        description="Claim releases this key has not attested (FOR UPDATE SKIP LOCKED, with a lease renewed while "
        "the rebuild runs), rebuild each with `detpack rebuild --pypi --attest KEY`, post the attestations to the "
        "store and record the outcome. A killed worker's job is taken by another once its lease runs out.",
    )
    r.add_argument("--key", type=Path, required=True, metavar="KEY", help="the rebuilder's private key (attests)")
    r.add_argument(
        "--signing-key", type=Path, metavar="KEY",
        help="the store's private key, for posting (default: ~/.local/share/detpack/store-keys/KEYID.key)",
    )  # fmt: skip
    r.add_argument("--author", type=Path, metavar="KEY", help="your key, for a store with an access policy")
    r.add_argument("--store-key", type=Path, metavar="PUB", help="the store's public key, as you trust it")
    r.add_argument("--name", metavar="NAME", help="this worker's name in the queue (default HOSTNAME:PID)")
    r.add_argument("--lease", type=float, default=600.0, metavar="SECONDS", help="a claim's lease (default 600)")
    r.add_argument("--poll", type=float, default=5.0, metavar="SECONDS", help="wait between looks at an empty queue")
    r.add_argument("--drain", action="store_true", help="stop when nothing is left for this key (else keep waiting)")
    r.add_argument("--find-links", type=Path, action="append", default=[], metavar="DIR")
    r.add_argument("--offline", action="store_true", help="fetch releases only from --find-links")
    r.add_argument("--workdir", type=Path, metavar="DIR", help="where rebuilds run (default: a temporary folder)")
    r.add_argument(
        "--timeout", default="10m", metavar="TIME", help="give a rebuild up after this long (default 10m; 0: none)"
    )
    s = verbs.add_parser("status", help="jobs, leases, and each key's outcome per release")
    for parser in (e, r, s):
        parser.add_argument(
            "--store", required=True, metavar="URL",
            help="the PostgreSQL store: postgresql://USER@HOST:PORT/DB?blobs=… (a Unix socket: ?host=DIR)",
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help="JSON output")
        parser.add_argument("--verbose", "-v", action="count", default=0)
        parser.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    from detpack.rebuilder import Queue

    handler = {"enqueue": _enqueue, "run": _run, "status": _status}[args.rebuilder_verb]
    if args.rebuilder_verb == "run":
        _check_run(args)  # keys and options refused before the database is reached
    with Queue(args.store) as queue:
        return handler(queue, args, out)


def _enqueue(queue: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.verify.pypi_batch import read_list

    specs = list(args.specs) + (read_list(args.releases) if args.releases is not None else [])
    if not specs:
        raise ConfigError("rebuilder enqueue: give NAME==VERSION releases, or -r FILE")
    added = queue.enqueue(specs, args.attestations)
    if args.json:
        out.result(json.dumps([{"release": s, "added": a} for s, a in added], indent=2))
    else:
        for spec, new in added:
            out.result(f"{'queued ' if new else 'already'}  {spec}")
        out.result(
            f"{count(sum(1 for _, a in added if a), 'release')} queued, {sum(1 for _, a in added if not a)} already"
        )
    return 0


def _check_run(args: argparse.Namespace) -> None:
    from detpack.provenance.signing import load_private_key, load_public_key

    for value, option in ((args.lease, "--lease"), (args.poll, "--poll")):
        if not value > 0:
            raise ConfigError(f"{option} {value}: give a number of seconds above 0")
    if args.offline and not args.find_links:
        raise ConfigError("--offline leaves nothing to fetch releases from; add --find-links DIR")
    load_private_key(args.key)
    for given in (args.signing_key, args.author):
        if given is not None:
            load_private_key(given)
    if args.store_key is not None:
        load_public_key(args.store_key)


def _run(queue: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.cli.store import show_notices, trusted_key
    from detpack.provenance.signing import load_private_key
    from detpack.rebuilder import Event, Settings
    from detpack.rebuilder import run as work
    from detpack.store import open_store
    from detpack.verify.pypi_batch import parse_timeout

    author = load_private_key(args.author) if args.author else None
    store = open_store(args.store, args.signing_key, author, trusted_key(args.store_key, url_given=True))
    settings = Settings(
        args.key,
        lease=args.lease,
        poll=args.poll,
        drain=bool(args.drain),
        find_links=tuple(args.find_links),
        offline=bool(args.offline),
        workdir=args.workdir,
        timeout=parse_timeout(args.timeout),
    )
    if args.name:
        settings = dataclasses.replace(settings, name=args.name)
    keyid = load_private_key(args.key).public.keyid
    out.step(f"worker {settings.name}, key {keyid[:16]}, on {queue.url}")

    def shown(e: Event) -> None:
        out.step(f"{e.kind} {e.release}".rstrip() + (f": {e.text}" if e.text else ""))
        show_notices(store, out)

    try:
        done = work(queue, store, settings, shown)
    finally:
        show_notices(store, out)
    if args.json:
        value = [
            {
                "release": d.claim.spec,
                "verdict": d.outcome.verdict,
                "attestations": [f"sha256:{a}" for a in d.outcome.attestations],
                "reason": d.outcome.reason,
                "seconds": round(d.seconds, 1),
            }
            for d in done
        ]
        out.result(json.dumps(value, indent=2))
    else:
        for d in done:
            o = d.outcome
            said = o.reason if o.verdict == "not rebuilt" else " ".join(f"sha256:{a}" for a in o.attestations)
            out.result(f"{o.verdict:17}  {d.claim.spec}  {said}")
        out.result(f"{count(len(done), 'release')} done by key {keyid[:16]}")
    return 0


def _status(queue: Any, args: argparse.Namespace, out: Output) -> int:
    jobs = queue.status()
    if args.json:
        out.result(json.dumps([j.to_json() for j in jobs], indent=2))
        return 0
    for j in jobs:
        wanted = "every key" if j.wanted is None else f"{j.wanted} keys"
        lease = f"; leased by {j.leased_by[:16]} ({j.leased_worker}) until {j.lease_until}" if j.leased_by else ""
        claimed = "never claimed" if j.claims == 0 else f"claimed {'once' if j.claims == 1 else f'{j.claims} times'}"
        if j.takeovers:
            claimed += f" ({j.takeovers} after a lease ran out)"
        out.result(f"{j.spec}  {count(len(j.outcomes), 'outcome')}, wanted from {wanted}, {claimed}{lease}")
        for o in j.outcomes:
            said = o.reason if o.verdict == "not rebuilt" else " ".join(f"sha256:{a[:16]}…" for a in o.attestations)
            out.result(f"  {o.keyid[:16]}  {o.verdict:17}  {said}  by {o.worker} at {o.finished}")
    keys = {o.keyid for j in jobs for o in j.outcomes}
    leased = sum(1 for j in jobs if j.leased_by)
    outcomes = sum(len(j.outcomes) for j in jobs)
    out.result(
        f"{count(len(jobs), 'job')}, {leased} leased, {count(outcomes, 'outcome')} from {count(len(keys), 'key')}"
    )
    return 0
