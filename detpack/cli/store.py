"""``detpack store``: the write-once artifact store and its verifiable log.

The store's URL comes from ``--store`` (before or after the subcommand), else ``[tool.detpack]
store`` in ./pyproject.toml, else ~/.local/share/detpack/store. Its private key is kept by the
writer, outside the store (``detpack.store.keys``). Exit codes: 0 done, 1 refused, not verified
or tampered (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

from detpack.cli import store_serve
from detpack.cli._output import Output
from detpack.cli._store_out import _emit, _promoted
from detpack.errors import ConfigError

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
    parsers["push"].add_argument(
        "files",
        nargs="*",
        metavar="FILE|IMAGE",
        help="files, or images by reference: oci:DIR[:TAG] or HOST[:PORT]/REPO[:TAG|@sha256:…]",
    )
    parsers["push"].add_argument("--provenance", type=Path, metavar="P", help="provenance (.json or .intoto.jsonl)")
    parsers["push"].add_argument(
        "--name", metavar="BASE:TAG", help="the name of the image pushed (default: from its reference)"
    )
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
    for name in ("promote", "approve"):
        parsers[name].add_argument(
            "--reason", metavar="TEXT",
            help="with --force: why, logged with the promotion (required once the store has an access policy)",
        )  # fmt: skip
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
    from detpack.provenance.signing import load_public_key
    from detpack.store import TrustedKey

    if given is not None:
        return TrustedKey(load_public_key(given), f"given with --store-key {given}")
    if url_given:
        return None  # [tool.detpack] store-key is the key of [tool.detpack] store, not of another store
    from detpack.build.config import load_tool_config

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
    from detpack.cli import store_govern
    from detpack.provenance.signing import load_private_key
    from detpack.store import open_store

    if args.command == "verify-proof":
        return store_govern._verify_proof(args, out)
    if args.command == "witness" and args.action == "vkey":
        out.result(store_govern._witness_of(args).vkey().text())  # needs no store
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
    from detpack.cli import store_govern

    name = f"_{args.command.replace('-', '_')}"
    handler = globals().get(name) or getattr(store_govern, name)
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


def _init(store: Any, args: argparse.Namespace, out: Output) -> int:
    key = store.init(args.key)
    _emit(out, args, {"store": store.backend.url, "keyid": key.keyid}, [f"{store.backend.url}  keyid {key.keyid}"])
    return 0


def _key(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.errors import StoreError
    from detpack.provenance.signing import parse_public_key

    store.view()  # a published key other than the one pinned for this store is refused, not printed
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
    from detpack.oci import fetch

    if not args.files and not args.attestation:
        raise ConfigError("store push: give the FILEs to store (or --attestation A for files stored already)")
    refs = [f for f in args.files if fetch.is_reference(f)]
    files = [Path(f) for f in args.files if not fetch.is_reference(f)]
    if refs and (files or args.attestation or len(refs) > 1):
        raise ConfigError("store push: push one image by reference at a time, without files or --attestation")
    if args.name is not None and not refs:
        raise ConfigError("store push --name: only for an image by reference (oci:DIR[:TAG], HOST/REPO:TAG)")
    if refs:
        if args.name is not None:  # refused before anything is downloaded
            from detpack.store.writer import check_name

            check_name(fetch.check_image_name(args.name))
        out.step(f"reading {refs[0]}")
        with fetch.open_image(refs[0], args.provenance) as image:
            results = store.push_image(image, args.name)
    else:
        results = store.push(files, args.provenance, args.attestation)
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
        media = entry.get("media") if kind == "push" and entry.get("media") in ("image", "layer", "config") else None
        return f"{entry.get('name')}  sha256:{digest}" + (f"  ({media})" if media else "")
    if kind == "promote":
        why = f" (why: {entry['why']})" if isinstance(entry.get("why"), str) else ""
        forced = "  FORCED: " + str(entry.get("reason")) + why if entry.get("forced") else ""
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


def _promote(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.provenance.signing import load_public_key

    keys = [load_public_key(k) for k in args.key]
    if args.reason is not None and not args.force:
        raise ConfigError("--reason TEXT goes with --force (it says why the promotion is forced)")
    p = store.promote(args.ref, args.to, keys, force=args.force, environ=os.environ, reason=args.reason)
    return _promoted(p, args, out)


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
