"""``detpack store`` commands of audit and governance: verify, proofs, checkpoints, access and gate policies,
approvals, witnesses.

Split from ``store`` (which parses every subcommand and dispatches here); each handler takes the
opened store, the parsed arguments and the output, and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from detpack.cli._output import Output, count
from detpack.cli._store_out import _emit, _promoted
from detpack.errors import ConfigError, InputError


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
    if args.reason is not None and not args.force:
        raise ConfigError("--reason TEXT goes with --force (it says why the promotion is forced)")
    done = store.approve(
        args.ref, args.to, load_private_key(args.key), trusted, force=args.force, environ=os.environ,
        reason=args.reason,
    )  # fmt: skip
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
    from detpack.cli._progress import progress

    with progress(out, "re-hashing blobs", "blobs", json=args.json) as told:
        audit = verify_store(store.backend, key, since, witnesses, args.quorum, progress=told)
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
