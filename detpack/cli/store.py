"""``detpack store``: the write-once artifact store and its verifiable log.

The store's URL comes from ``--store`` (before or after the subcommand), else ``[tool.detpack]
store`` in ./pyproject.toml, else ~/.local/share/detpack/store. Its private key is kept by the
writer, outside the store (``detpack.store.keys``). Exit codes: 0 done, 1 refused, not verified
or tampered (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

from detpack.cli import store_serve
from detpack.cli._output import Output, count
from detpack.errors import ConfigError, InputError

SUBCOMMANDS = {
    "init": "create the store (optionally with an existing signing key) and print its public key's id",
    "key": "print the store's public key (what auditors need for `store verify --key`)",
    "move-key": "move a private key that an older version kept inside the store to the writer's key directory",
    "push": "store files (write-once, by sha256) and link their provenance",
    "tag": "bind another name to a stored digest (write-once)",
    "log": "list the log's entries",
    "show": "what a digest or name is, who built it, when, from which commit, with which toolchain",
    "query": "find artifacts by build dependency, contained wheel, source, builder, name, kind or where they were live",
    "proof": "print an inclusion proof for a digest or name, or a consistency proof between tree sizes",
    "verify": "audit the store: re-hash blobs, recompute the tree, check every checkpoint",
    "checkpoint": "print the latest signed checkpoint (keep it: `verify --since FILE` proves the log still extends it)",
    "policy": "set (with FILE) or print the policy promotions to ENV must meet (kept in the store, logged)",
    "promote": "record that a digest is live in an environment (checked against its policy, with a signed VSA)",
    "resolve": "print the digest live in an environment",
    "hold": "protect a digest from retention (--release lifts the hold)",
    "expire": "take old artifacts out of the live set (logged)",
    "access": "set (with FILE, signed by root keys) or print the access policy: who may push, promote, hold, expire",
    "approve": "approve a digest for an environment with your key (promoted once its approval threshold is met)",
    "witness": "act as a witness: cosign the store's latest checkpoint if it extends what this witness saw",
    "verify-proof": "check a tlog-proof file offline: the log's signature, the entry's inclusion, witnesses",
    "serve": "serve a read-only dashboard: environments, lineage, the log and its verification, search",
}


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    default: Any = None if top else argparse.SUPPRESS
    p.add_argument(
        "--store",
        metavar="URL",
        default=default,
        help="the store: a directory, oci://HOST:PORT/REPO (a registry) or postgresql://USER@HOST:PORT/DB?blobs=…",
    )
    p.add_argument(
        "--store-key",
        type=Path,
        metavar="PUB",
        default=default,
        help="the store's public key, as you trust it: readers believe only checkpoints it signs "
        "(default: [tool.detpack] store-key, else the key the store publishes, pinned at first use)",
    )
    p.add_argument(
        "--signing-key",
        type=Path,
        metavar="KEY",
        default=default,
        help="the store's private key, for writes (default: ~/.local/share/detpack/store-keys/KEYID.key)",
    )
    p.add_argument(
        "--author",
        type=Path,
        metavar="KEY",
        default=default,
        help="your private key: signs the entries you make (required once the store has an access policy)",
    )
    p.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS, help="JSON output")
    p.add_argument("--quiet", "-q", action="count", default=0 if top else argparse.SUPPRESS)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "store",
        help="write-once artifact store with a verifiable log",
        description="A write-once, content-addressed artifact store with an append-only, signed Merkle log.",
    )
    _common(p, top=True)
    cmds = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {}
    for name, text in SUBCOMMANDS.items():
        parsers[name] = cmds.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        _common(parsers[name], top=False)
    parsers["init"].add_argument(
        "--key", type=Path, metavar="KEY", help="sign checkpoints with this existing key (used in place, never copied)"
    )
    parsers["key"].add_argument("-o", "--output", type=Path, metavar="FILE", help="write the PEM here")
    parsers["key"].add_argument(
        "--vkey", action="store_true", help="print the log's C2SP verifier key (NAME+HASH+KEY) instead of the PEM"
    )
    parsers["access"].add_argument("file", nargs="?", type=Path, metavar="FILE", help="a TOML access policy")
    _root_key(parsers["access"], "a root key's private key signing the change; repeat up to the threshold")
    parsers["approve"].add_argument("ref", metavar="DIGEST")
    parsers["approve"].add_argument("--to", required=True, metavar="ENV", help="the environment")
    parsers["approve"].add_argument("--key", type=Path, required=True, metavar="KEY", help="your private key")
    parsers["approve"].add_argument(
        "--trust", type=Path, action="append", default=[], metavar="PUB",
        help="a key trusted to sign provenance, for the promotion this approval completes (as promote --key)",
    )  # fmt: skip
    parsers["approve"].add_argument(
        "--force",
        action="store_true",
        help="the promotion this approval completes goes ahead without verified provenance",
    )
    parsers["witness"].add_argument("action", choices=["add-checkpoint", "vkey"], help="cosign, or print your vkey")
    parsers["witness"].add_argument("--key", type=Path, required=True, metavar="KEY", help="the witness's private key")
    parsers["witness"].add_argument("--name", required=True, metavar="NAME", help="the witness's name (its vkey's)")
    parsers["witness"].add_argument(
        "--state", type=Path, metavar="DIR", help="what the witness saw (default ~/.local/share/detpack/witness)"
    )
    parsers["witness"].add_argument(
        "--log-key", type=Path, metavar="PUB", help="the store's public key, the first time this witness sees it"
    )
    parsers["witness"].add_argument("-o", "--output", type=Path, metavar="FILE", help="write the cosigned checkpoint")
    store_serve.add_arguments(parsers["serve"])
    parsers["verify-proof"].add_argument("file", type=Path, metavar="FILE", help="a .tlog-proof (store proof -o)")
    parsers["verify-proof"].add_argument(
        "--log-key", required=True, metavar="VKEY|PUB", help="the log's verifier key (store key --vkey) or PEM"
    )
    parsers["verify-proof"].add_argument("--artifact", type=Path, metavar="FILE", help="the file the entry stores")
    parsers["push"].add_argument("files", nargs="*", type=Path, metavar="FILE")
    parsers["push"].add_argument("--provenance", type=Path, metavar="P", help="provenance (.json or .intoto.jsonl)")
    parsers["push"].add_argument(
        "--attestation",
        action="append",
        default=[],
        type=Path,
        metavar="A",
        help="a signed rebuild attestation of the files (detpack rebuild --attest); repeatable",
    )
    parsers["policy"].add_argument("env", metavar="ENV")
    parsers["policy"].add_argument("file", nargs="?", type=Path, metavar="FILE", help="a TOML policy (verify --policy)")
    _root_key(parsers["policy"], "with an access policy: a root key's private key signing the change")
    parsers["tag"].add_argument("name", metavar="NAME")
    parsers["tag"].add_argument("ref", metavar="DIGEST")
    parsers["show"].add_argument("ref", metavar="DIGEST|NAME")
    from detpack.cli.store_query import add_arguments as query_arguments

    query_arguments(parsers["query"])
    parsers["proof"].add_argument("ref", nargs="?", metavar="DIGEST|NAME")
    parsers["proof"].add_argument(
        "--consistency", nargs="+", type=int, metavar=("OLD", "NEW"), help="prove tree OLD is a prefix of NEW"
    )
    parsers["proof"].add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write a C2SP tlog-proof (verifies offline: verify-proof)"
    )
    parsers["verify"].add_argument("--key", type=Path, metavar="PUB", help="the store's public key, as you trust it")
    parsers["verify"].add_argument(
        "--since", type=Path, metavar="FILE", help="a checkpoint saved earlier (store checkpoint) the log must extend"
    )
    for name in ("verify", "verify-proof"):
        parsers[name].add_argument(
            "--witness", action="append", default=[], metavar="VKEY", help="a witness's verifier key (or a file of it)"
        )
        parsers[name].add_argument(
            "--quorum", type=int, default=0, metavar="N", help="require N of the witnesses' cosignatures"
        )
    parsers["checkpoint"].add_argument("-o", "--output", type=Path, metavar="FILE", help="write it here")
    parsers["promote"].add_argument("ref", metavar="DIGEST")
    parsers["promote"].add_argument("--to", required=True, metavar="ENV", help="the environment")
    parsers["promote"].add_argument(
        "--key", type=Path, action="append", default=[], metavar="PUB", help="a key trusted to sign provenance"
    )
    parsers["promote"].add_argument("--force", action="store_true", help="promote even without verified provenance")
    parsers["resolve"].add_argument("env", metavar="ENV")
    parsers["hold"].add_argument("ref", metavar="DIGEST")
    parsers["hold"].add_argument("--release", action="store_true", help="lift the hold instead")
    parsers["expire"].add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h, 30m, 0s")
    parsers["expire"].add_argument("--keep-last", type=int, metavar="N", help="always keep each project's newest N")


def _root_key(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--root-key", type=Path, action="append", default=[], metavar="KEY", help=text)
    parser.add_argument(
        "--root-signature", type=Path, action="append", default=[], metavar="FILE",
        help="a root key holder's detached signature of this change (made with --sign-only); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--sign-only", type=Path, metavar="FILE",
        help="with one --root-key: write that key's signature of this change to FILE and change nothing",
    )  # fmt: skip


def _parse_age(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match:
        raise ConfigError(f"--older-than {text!r}: expected a number and a unit: s, m, h, d or w (e.g. 90d)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    return dt.timedelta(seconds=int(match[1]) * unit)


def _store_url(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    from detpack.build.config import load_tool_config
    from detpack.store import default_store_url

    return load_tool_config(Path.cwd()).store or default_store_url()


def trusted_key(given: Path | None, *, url_given: bool) -> Any:
    """The store key readers trust: ``--store-key PUB``, else ``[tool.detpack] store-key``, else None (the
    published key, pinned at first use)."""
    from detpack.build.config import load_tool_config
    from detpack.provenance.signing import load_public_key
    from detpack.store import TrustedKey

    if given is not None:
        return TrustedKey(load_public_key(given), f"given with --store-key {given}")
    if url_given:
        return None  # [tool.detpack] store-key is the key of [tool.detpack] store, not of another store
    configured = load_tool_config(Path.cwd()).store_key
    if configured is not None:
        return TrustedKey(load_public_key(configured), f"[tool.detpack] store-key {configured}")
    return None


def show_notices(store: Any, out: Output) -> None:
    """What reading the store did not believe, or pinned: on stderr."""
    for line in store.notices:
        out.warning(line)
    store.notices.clear()


def run(args: argparse.Namespace, out: Output) -> int:
    from detpack.provenance.signing import load_private_key
    from detpack.store import open_store

    if args.command == "verify-proof":
        return _verify_proof(args, out)
    if args.command == "witness" and args.action == "vkey":
        out.result(_witness_of(args).vkey().text())  # needs no store
        return 0
    author = load_private_key(args.author) if args.author else None
    store = open_store(
        _store_url(args), args.signing_key, author, trusted_key(args.store_key, url_given=bool(args.store))
    )
    if args.command not in ("init", "push", "access"):
        require_existing(store)
    inside = store.keys.inside_store()
    if inside is not None and args.command != "move-key":
        out.warning(
            f"{inside}: the store's private key is inside the store, so every copy of the store can sign; "
            f"move it out with `detpack store --store {store.backend.url} move-key`"
        )
    handler = globals()[f"_{args.command.replace('-', '_')}"]
    try:
        code: int = handler(store, args, out)
    finally:
        show_notices(store, out)
    return code


def _serve(store: Any, args: argparse.Namespace, out: Output) -> int:
    return store_serve.serve(store, args, out)


def require_existing(store: Any) -> None:
    """Refuse a directory store that does not exist yet (only a write creates one)."""
    root = getattr(store.backend, "root", None)
    if isinstance(root, Path) and not root.is_dir():
        from detpack.errors import StoreError

        raise StoreError(f"{root}: no store here (`detpack store push` or `detpack store init` creates one)")


def _emit(out: Output, args: argparse.Namespace, value: Any, lines: list[str]) -> None:
    if args.json:
        out.result(json.dumps(value, indent=2, ensure_ascii=False))
    else:
        for line in lines:
            out.result(line)


def _init(store: Any, args: argparse.Namespace, out: Output) -> int:
    key = store.init(args.key)
    _emit(out, args, {"store": store.backend.url, "keyid": key.keyid}, [f"{store.backend.url}  keyid {key.keyid}"])
    return 0


def _key(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.errors import StoreError
    from detpack.provenance.signing import parse_public_key

    pem = store.backend.read_public_key()
    if pem is None:
        raise StoreError(f"{store.backend.url}: no public key yet (run `detpack store init`)")
    if args.vkey:
        _, checkpoint = store.records()
        if checkpoint is None or checkpoint.form != "c2sp":
            raise StoreError(
                f"{store.backend.url}: "
                + ("the log is empty" if checkpoint is None else "a format 1 or 2 store has no C2SP checkpoints")
                + "; there is no verifier key to print"
            )
        pem = (checkpoint.vkey(parse_public_key(pem, f"{store.backend.url}: published key")).text() + "\n").encode()
    if args.output:
        from detpack.atomic import write_bytes

        write_bytes(args.output, pem)
        out.result(f"{args.output}  public key")
    else:
        out.result(pem.decode("ascii").rstrip())
    return 0


def _move_key(store: Any, args: argparse.Namespace, out: Output) -> int:
    target = store.move_key_out()
    _emit(out, args, {"key": str(target)}, [f"{target}  the store's private key, moved out of {store.backend.url}"])
    return 0


def _push(store: Any, args: argparse.Namespace, out: Output) -> int:
    if not args.files and not args.attestation:
        raise ConfigError("store push: give the FILEs to store (or --attestation A for files stored already)")
    results = store.push(args.files, args.provenance, args.attestation)
    lines = [
        f"{'stored   ' if r.stored else 'unchanged'}  {r.name}  sha256:{r.digest}"
        + (f"  ({r.kind})" if r.kind != "artifact" else "")
        for r in results
    ]
    value = [{"name": r.name, "digest": f"sha256:{r.digest}", "kind": r.kind, "stored": r.stored} for r in results]
    _emit(out, args, value, lines)
    return 0


def _tag(store: Any, args: argparse.Namespace, out: Output) -> int:
    changed = store.tag(args.name, args.ref)
    digest = store.find(store.state(), args.name).digest
    _emit(out, args, {"name": args.name, "digest": f"sha256:{digest}", "changed": changed},
          [f"{'tagged   ' if changed else 'unchanged'}  {args.name}  sha256:{digest}"])  # fmt: skip
    return 0


def _summary(entry: dict[str, Any]) -> str:
    digest = str(entry.get("digest", ""))[:16]
    kind = entry.get("type")
    if kind == "init":
        return f"store {entry.get('origin')} keyid {str(entry.get('keyid'))[:16]}"
    if kind in ("push", "provenance", "tag"):
        return f"{entry.get('name')}  sha256:{digest}"
    if kind == "promote":
        forced = "  FORCED: " + str(entry.get("reason")) if entry.get("forced") else ""
        run = f"  ({entry['ci_run']})" if entry.get("ci_run") else ""
        gate = f"  policy {entry['verdict']}" if entry.get("verdict") else ""
        return f"sha256:{digest} -> {entry.get('env')}{run}{gate}{forced}"
    if kind == "policy":
        return f"{entry.get('env')}: policy sha256:{digest}"
    if kind == "attestation":
        return f"{entry.get('name')}  sha256:{digest}"
    if kind == "approve":
        return f"sha256:{digest} for {entry.get('env')}"
    if kind == "access":
        policy: Any = entry.get("policy") if isinstance(entry.get("policy"), dict) else {}
        root: Any = policy.get("root") if isinstance(policy.get("root"), dict) else {}
        signed = len(entry.get("signatures") or [])
        keys = len(policy.get("keys") or {})
        return f"access policy: {keys} keys, root threshold {root.get('threshold')} ({signed} signed)"
    return f"sha256:{digest}"


def _log(store: Any, args: argparse.Namespace, out: Output) -> int:
    entries = store.entries()
    who = [str(e.get("author") or e.get("user", "")) for e in entries]
    kinds = [str(e.get("type", "")) for e in entries]
    # Columns as wide as their widest value (an "attestation" entry is wider than a "push")
    wide_who, wide_kind = max(map(len, who), default=0), max(map(len, kinds), default=0)
    lines = [
        f"{i:>5}  {e.get('time', '')}  {w:<{wide_who}}  {k:<{wide_kind}}  {_summary(e)}"
        for i, (e, w, k) in enumerate(zip(entries, who, kinds, strict=True), 1)
    ]
    _emit(out, args, [{"index": i, **e} for i, e in enumerate(entries, 1)], lines)
    return 0


def _show(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.cli.store_show import describe, render

    value = describe(store, args.ref)
    _emit(out, args, value, render(value))
    return 0


def _query(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.cli.store_query import run as query

    return query(store, args, out)


def _proof(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.store import proofs

    if args.consistency:
        if args.ref is not None or len(args.consistency) > 2:
            raise ConfigError("proof: give either DIGEST|NAME or --consistency OLD [NEW]")
        value = proofs.consistency(store, *args.consistency)
        lines = [
            f"consistency {value['old']['size']} -> {value['new']['size']}",
            f"old root {value['old']['root']}",
            f"new root {value['new']['root']}",
            *(f"  {h}" for h in value["proof"]),
        ]
    else:
        if args.ref is None:
            raise ConfigError("proof: give DIGEST|NAME, or --consistency OLD [NEW]")
        value = proofs.inclusion(store, args.ref)
        if args.output is not None:
            from detpack.atomic import write_bytes

            write_bytes(args.output, proofs.tlog_proof(store, args.ref))
            entry = f"log entry {value['leaf_index'] + 1} of {value['tree_size']}"
            _emit(out, args, {**value, "output": str(args.output)}, [f"{args.output}  tlog-proof of {entry}"])
            return 0
        lines = [
            f"{value['digest']}: log entry {value['leaf_index'] + 1} of {value['tree_size']}",
            f"leaf hash {value['leaf_hash']}",
            f"root      {value['checkpoint']['root']} (checkpoint signed by keyid {value['checkpoint']['keyid'][:16]})",
            "audit path:",
            *(f"  {h}" for h in value["proof"]),
        ]
    _emit(out, args, value, lines)
    return 0


def _verify(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.provenance.signing import load_public_key
    from detpack.store import verify_store

    key = load_public_key(args.key) if args.key else None
    since = None
    if args.since is not None:
        try:
            since = args.since.read_bytes()
        except OSError as exc:
            raise InputError(f"{args.since}: cannot read ({exc.strerror or exc})") from None
    witnesses = [_vkey(w, "--witness") for w in args.witness]
    if args.quorum < 0 or args.quorum > len(witnesses):
        raise ConfigError(
            f"--quorum {args.quorum}: give a number from 0 to the number of --witness keys ({len(witnesses)})"
        )
    audit = verify_store(store.backend, key, since, witnesses, args.quorum)
    value = {"ok": audit.ok, "problems": list(audit.problems), "notes": list(audit.notes), "entries": audit.entries,
             "checkpoints": audit.checkpoints, "blobs": audit.blobs, "keyid": audit.keyid,
             "wrong_key": audit.wrong_key, "witnessed": audit.witnessed,
             "cosigners": list(audit.cosigners)}  # fmt: skip
    if audit.ok:
        head = (
            f"verified: {count(audit.entries, 'log entry', 'log entries')}, "
            f"{count(audit.checkpoints, 'checkpoint')}, {count(audit.blobs, 'blob')}"
        )
    elif audit.wrong_key:
        _emit(out, args, value, [f"not verified: {audit.problems[0]}"])
        return 1
    else:
        head = f"TAMPERED: {len(audit.problems)} problem(s) in {store.backend.url}"
    _emit(
        out, args, value, [head, *(f"  problem: {p}" for p in audit.problems), *(f"  note: {n}" for n in audit.notes)]
    )
    return 0 if audit.ok else 1


def _checkpoint(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.errors import StoreError
    from detpack.store import witness

    _, checkpoint = store.records()
    if checkpoint is None:
        raise StoreError(f"{store.backend.url}: the log is empty")
    if checkpoint.form == "c2sp":
        text = witness.cosigned_note(store.backend, checkpoint).encode()
    else:
        text = checkpoint.record() + b"\n"
    if args.output:
        from detpack.atomic import write_bytes

        write_bytes(args.output, text)
        out.result(f"{args.output}  checkpoint of tree size {checkpoint.size}")
    elif args.json:
        out.result(json.dumps(checkpoint.to_json(), indent=2))
    else:
        out.result(text.decode("utf-8").rstrip("\n"))
    return 0


def _promote(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.provenance.signing import load_public_key

    keys = [load_public_key(k) for k in args.key]
    p = store.promote(args.ref, args.to, keys, force=args.force, environ=os.environ)
    return _promoted(p, args, out)


def _promoted(p: Any, args: argparse.Namespace, out: Output) -> int:
    if p.forced:
        out.warning(f"promoted without verified provenance ({p.reason}); this is logged")
    value = {"env": p.env, "digest": f"sha256:{p.digest}", "user": p.user, "time": p.time, "ci_run": p.ci_run,
             "forced": p.forced, "reason": p.reason, "policy": p.policy, "vsa": p.vsa}  # fmt: skip
    lines = [f"promoted  sha256:{p.digest} -> {p.env}  by {p.author or p.user} at {p.time}"]
    if p.approvers:
        value["approvals"] = list(p.approvers)
        lines.append(f"  approved by {', '.join(p.approvers)}")
    if p.vsa is not None:
        lines.append(f"  policy sha256:{p.policy}; signed VSA sha256:{p.vsa} (store show {p.vsa[:12]})")
    _emit(out, args, value, lines)
    return 0


def _policy(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.verify import gate

    if args.file is None:
        policy = store.policy(store.state(), args.env)
        if policy is None:
            raise InputError(f"{args.env}: no policy is set for this environment (store policy {args.env} FILE)")
        _emit(out, args, {"env": args.env, "digest": f"sha256:{policy.sha256}"},
              [policy.self_contained().decode("utf-8").rstrip("\n")])  # fmt: skip
        return 0
    gate_policy = gate.load(args.file)
    if args.sign_only is not None:
        return _sign_only(store.policy_change((args.env, gate_policy)), args, out)
    detached = _detached(args.root_signature)
    digest, changed = store.set_policy(args.env, gate_policy, _private_keys(args.root_key), detached)
    _emit(out, args, {"env": args.env, "digest": f"sha256:{digest}", "changed": changed},
          [f"{'policy set' if changed else 'unchanged '}  {args.env}  sha256:{digest}"])  # fmt: skip
    return 0


def _resolve(store: Any, args: argparse.Namespace, out: Output) -> int:
    p = store.resolve(args.env)
    value = {"env": p.env, "digest": f"sha256:{p.digest}", "user": p.user, "time": p.time, "ci_run": p.ci_run}
    _emit(out, args, value, [f"sha256:{p.digest}"])
    return 0


def _hold(store: Any, args: argparse.Namespace, out: Output) -> int:
    changed = store.hold(args.ref, release=args.release)
    item = store.find(store.state(), args.ref)
    state = "held" if item.held else "not held"
    _emit(out, args, {"digest": f"sha256:{item.digest}", "held": item.held, "changed": changed},
          [f"{state}  sha256:{item.digest}{'' if changed else '  (unchanged)'}"])  # fmt: skip
    return 0


def _expire(store: Any, args: argparse.Namespace, out: Output) -> int:
    if args.keep_last is not None and args.keep_last < 0:
        raise ConfigError("--keep-last: must be 0 or more")
    decisions = store.expire(_parse_age(args.older_than), args.keep_last)
    value = [{"digest": f"sha256:{d.digest}", "names": list(d.names), "expired": d.expired, "reason": d.reason}
             for d in decisions]  # fmt: skip
    lines = [f"{'expired' if d.expired else 'kept   '}  {', '.join(d.names)}  sha256:{d.digest[:16]}…  ({d.reason})"
             for d in decisions]  # fmt: skip
    _emit(out, args, value, lines or ["nothing to expire"])
    return 0


def _private_keys(paths: list[Path]) -> list[Any]:
    from detpack.provenance.signing import load_private_key

    return [load_private_key(p) for p in paths]


def _detached(paths: list[Path]) -> list[tuple[bytes, str]]:
    out = []
    for path in paths:
        try:
            out.append((path.read_bytes(), str(path)))
        except OSError as exc:
            raise InputError(f"{path}: cannot read the root signature ({exc.strerror or exc})") from None
    return out


def _sign_only(change: Any, args: argparse.Namespace, out: Output) -> int:
    """Write one root key's signature of the next policy change (nothing in the store changes)."""
    from detpack.atomic import write_bytes
    from detpack.provenance.signing import load_private_key

    if len(args.root_key) != 1 or args.root_signature:
        raise ConfigError(
            "--sign-only FILE: give exactly one --root-key KEY (the key that signs), and no --root-signature"
        )
    key = load_private_key(args.root_key[0])
    write_bytes(args.sign_only, change.signature_file(key))
    _emit(out, args, {"file": str(args.sign_only), "keyid": key.public.keyid, "subject": change.subject,
                      "version": change.version},
          [f"{args.sign_only}  root signature by keyid {key.public.keyid[:16]} of {change.subject} "
           f"policy version {change.version}"])  # fmt: skip
    return 0


def _vkey(text: str, option: str) -> Any:
    """A C2SP verifier key, given as itself or as a file holding it."""
    from detpack.store.note import VerifierKey

    path = Path(text)
    source = text
    if "+" not in text and path.is_file():
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read the verifier key ({exc})") from None
    try:
        return VerifierKey.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{option} {source}: {exc}") from None


def _access(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.store import access

    if args.file is None:
        state = store.state()
        if state.access is None:
            raise InputError(f"{store.backend.url}: has no access policy (store access FILE --root-key KEY…)")
        value = {"entry": state.access_index + 1, "policy": state.access.to_json()}
        _emit(out, args, value, [f"access policy of log entry {value['entry']}",
                                 json.dumps(value["policy"], indent=2, sort_keys=True)])  # fmt: skip
        return 0
    policy = access.load(args.file)
    if args.sign_only is not None:
        return _sign_only(store.policy_change(policy), args, out)
    entry, changed = store.set_access(policy, _private_keys(args.root_key), _detached(args.root_signature))
    _emit(out, args, {"entry": entry, "changed": changed},
          [f"{'access policy set' if changed else 'unchanged        '}  log entry {entry}"])  # fmt: skip
    return 0


def _approve(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.provenance.signing import load_private_key, load_public_key

    trusted = [load_public_key(k) for k in args.trust]
    done = store.approve(args.ref, args.to, load_private_key(args.key), trusted, force=args.force, environ=os.environ)
    item = store.find(store.state(), args.ref)
    if done.already_live:
        _emit(out, args, {"digest": f"sha256:{item.digest}", "env": args.to, "approvals": done.approvers,
                          "needed": done.needed, "promoted": True, "changed": False},
              [f"unchanged  sha256:{item.digest} is live in {args.to} already"])  # fmt: skip
        return 0
    have = f"{len(done.approvers)} of {done.needed} ({', '.join(done.approvers)})"
    line = f"approved  sha256:{item.digest} for {args.to}: {have}"
    if done.promotion is None:
        _emit(out, args, {"digest": f"sha256:{item.digest}", "env": args.to, "approvals": done.approvers,
                          "needed": done.needed, "promoted": False}, [line])  # fmt: skip
        return 0
    if not args.json:
        out.result(line)
    return _promoted(done.promotion, args, out)


def _witness_of(args: argparse.Namespace) -> Any:
    from detpack.provenance.signing import load_private_key
    from detpack.store.keys import user_dir
    from detpack.store.note import valid_name
    from detpack.store.witness import Witness

    if not valid_name(args.name):
        raise ConfigError(f"--name {args.name!r}: a witness name has no spaces and no '+' (e.g. witness.example/w1)")
    state_dir = args.state or user_dir("XDG_DATA_HOME", ".local/share") / "detpack" / "witness"
    return Witness(load_private_key(args.key), args.name, state_dir)


def _witness(store: Any, args: argparse.Namespace, out: Output) -> int:
    import time

    from detpack.provenance.signing import load_public_key

    w = _witness_of(args)
    log_key = load_public_key(args.log_key) if args.log_key else None
    cosig, seen = w.add_checkpoint(store, log_key, int(time.time()))
    line = cosig.signature.line().rstrip("\n")
    if args.output is not None:
        from detpack.atomic import write_bytes

        _, checkpoint = store.records()
        write_bytes(args.output, checkpoint.signed_note([cosig.signature]).encode())
    since = f"extends tree size {seen.size}" if seen is not None else "first seen"
    value = {"size": cosig.size, "root": cosig.root.hex(), "cosignature": line, "previous": seen.size if seen else None}
    _emit(out, args, value, [f"cosigned tree size {cosig.size} ({since})", line])
    return 0


def _log_key(text: str) -> Any:
    """``--log-key``: a vkey, a file of one, or a PEM public key file."""
    from detpack.provenance.signing import load_public_key

    path = Path(text)
    if "+" not in text and path.is_file() and not path.read_bytes().lstrip().startswith(b"-----BEGIN"):
        return _vkey(text, "--log-key")
    return _vkey(text, "--log-key") if "+" in text else load_public_key(path)


def _verify_proof(args: argparse.Namespace, out: Output) -> int:
    from detpack.digest import file_sha256
    from detpack.errors import VerificationError
    from detpack.store import proofs

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise InputError(f"{args.file}: cannot read ({exc.strerror or exc})") from None
    log_key = _log_key(args.log_key)
    witnesses = [_vkey(w, "--witness") for w in args.witness]
    if args.quorum < 0 or args.quorum > len(witnesses):
        raise ConfigError(
            f"--quorum {args.quorum}: give a number from 0 to the number of --witness keys ({len(witnesses)})"
        )
    check = proofs.check_tlog_proof(data, str(args.file), log_key, witnesses, args.quorum)
    digest = str(check.entry.get("digest", ""))
    if args.artifact is not None:
        if not args.artifact.is_file():
            raise InputError(f"{args.artifact}: no such file")
        actual = file_sha256(args.artifact)
        if actual != digest:
            raise VerificationError(
                f"{args.artifact}: sha256:{actual[:16]}… is not what log entry {check.index + 1} stores "
                f"(sha256:{digest[:16]}…)"
            )
    value = {"index": check.index, "size": check.size, "origin": check.origin, "entry": check.entry,
             "cosigners": list(check.cosigners)}  # fmt: skip
    witnessed = f", cosigned by {', '.join(check.cosigners)}" if check.cosigners else ""
    what = f"{check.entry.get('type')} {check.entry.get('name') or ''} sha256:{digest[:16]}…"
    _emit(
        out,
        args,
        value,
        [f"verified: log entry {check.index + 1} of {check.size} ({what}) in {check.origin}{witnessed}"],
    )
    return 0
