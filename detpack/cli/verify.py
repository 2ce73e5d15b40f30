"""``detpack verify``: check artifacts or images against a signed provenance and an optional policy.

Files are checked against ``--provenance``. An image (``oci:DIR[:TAG]``, or a registry
reference as ``detpack push`` prints it) is checked against its own signed statement, found
beside the layout or attached to it in the registry, and ``--source-commit``/``--builder`` follow
the chain of inputs that statement records (layers, their wheels, those wheels' builds).

Exit 0 verified, 1 not verified (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from detpack.atomic import read_input
from detpack.cli._output import Output, count
from detpack.digest import file_sha256
from detpack.errors import ConfigError, InputError, VerificationError
from detpack.oci import attest, evidence
from detpack.oci.evidence import Candidate, ImageEvidence
from detpack.oci.layout import LayoutRef
from detpack.oci.registry import Registry
from detpack.provenance import reader, signing
from detpack.provenance.attestation import REBUILD_SUFFIX
from detpack.provenance.signing import PublicKey
from detpack.verify import attest as signed
from detpack.verify import gate


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="verify artifacts or images against a signed provenance (DSSE envelope)",
        description="Check the envelope's signature with PUB, that every ARTIFACT's sha256 is a subject of the "
        "statement, and the optional policy. An ARTIFACT may be a file (with --provenance), an image layout "
        "oci:DIR[:TAG] (provenance DIR.TAG.intoto.jsonl beside it) or a pushed image REGISTRY/REPO[:TAG|@sha256:...] "
        "(provenance: the artifact referring to it); for images the policy follows the chain of inputs to each "
        "wheel's build. Exit 0 verified, 1 not verified, 2 bad input.",
    )
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="files, oci:DIR[:TAG] or REGISTRY/REPO[:TAG]")
    p.add_argument(
        "--provenance",
        type=Path,
        metavar="FILE",
        help="the .intoto.jsonl envelope (required for files; for an image, instead of the one found)",
    )
    p.add_argument(
        "--key", type=Path, metavar="PUB", help="the signer's public key (KEY.pub); a --policy names its own"
    )
    p.add_argument("--source-commit", metavar="SHA", help="require this source commit (a prefix of 7+ hex digits)")
    p.add_argument("--builder", metavar="ID", help="require this builder id")
    p.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="check a TOML policy (trusted keys and threshold, builders, source, hermeticity, independent "
        "rebuilds, age); every unmet rule is named",
    )
    p.add_argument(
        "--attestation",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a rebuild attestation for --policy (detpack rebuild --attest); those named "
        "STEM.rebuild.*.intoto.jsonl beside the provenance are read too",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="with --policy: take each artifact's provenance and rebuild attestations from this store (by digest)",
    )
    p.add_argument(
        "--store-key",
        type=Path,
        metavar="PUB",
        help="with --store: the store's public key, as you trust it (default: its published key, pinned at first use)",
    )
    p.add_argument("--vsa", type=Path, metavar="OUT", help="with --policy: write a signed SLSA VSA v1 of the verdict")
    p.add_argument("--vsa-key", type=Path, metavar="KEY", help="the verifier's ed25519 private key that signs --vsa")
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    if args.source_commit is not None and not re.fullmatch(r"[0-9a-fA-F]{7,64}", args.source_commit):
        raise ConfigError(f"--source-commit {args.source_commit!r}: expected 7 to 64 hex digits of a commit id")
    if (args.vsa is None) != (args.vsa_key is None):
        raise ConfigError("verify: --vsa OUT and --vsa-key KEY go together (the VSA is signed)")
    if args.policy is not None:
        return _verify_policy(args, out)
    if args.vsa is not None or args.attestation or args.store is not None:
        raise ConfigError("verify: --vsa, --attestation and --store go with --policy FILE")
    if args.key is None:
        raise ConfigError("verify: give --key PUB (the signer's public key) or --policy FILE")
    key = signing.load_public_key(args.key, private_ok=False)
    kinds = [(text, evidence.reference_kind(text)) for text in args.artifacts]
    images = [(text, kind) for text, kind in kinds if kind != "file"]
    if images and len(images) != len(kinds):
        raise ConfigError("verify: give files or images, not both (each image is checked against its own provenance)")
    if not images:
        _existing([Path(text) for text in args.artifacts])
        if args.provenance is None:
            raise ConfigError(
                f"{args.artifacts[0]}: a file is verified against --provenance FILE (the .intoto.jsonl envelope)"
            )
        return _verify_files(args, key, [Path(text) for text in args.artifacts], out)
    for text, kind in images:
        _verify_image(args, key, text, kind, out)
    return 0


def _verify_policy(args: argparse.Namespace, out: Output) -> int:
    """``--policy``: every rule checked against the provenance and the rebuild attestations given or beside it."""
    if args.key is not None or args.source_commit is not None or args.builder is not None:
        raise ConfigError(
            "verify --policy: the policy names the keys, builders and commits; drop --key/--builder/--source-commit"
        )
    kinds = [evidence.reference_kind(text) for text in args.artifacts]
    if any(k != "file" for k in kinds):
        if len(kinds) != 1 or args.store is not None:
            raise ConfigError(
                "verify --policy: give one image (its provenance is beside it or attached to it), or files"
            )
        return _policy_image(args, args.artifacts[0], kinds[0], out)
    if (args.provenance is None) == (args.store is None):
        raise ConfigError(
            f"{args.artifacts[0]}: verify --policy takes the provenance from --provenance FILE (the .intoto.jsonl "
            "envelope) or from --store URL; give one"
        )
    paths = _existing([Path(text) for text in args.artifacts])
    if len({p.name for p in paths}) != len(paths):
        raise ConfigError("verify --policy: two artifacts share a file name; a verdict names each artifact once")
    policy = gate.load(args.policy)
    digests = {path.name: file_sha256(path) for path in paths}
    if args.store is not None:
        found, attestations = _from_store(args.store, digests, args.store_key, out)
        attestations += [gate.read_evidence(p) for p in args.attestation]
    else:
        found = gate.read_evidence(args.provenance)
        attestations = [gate.read_evidence(p) for p in _attestation_files(args.provenance, args.attestation)]
    return _judged(args, policy, digests, found, attestations, [f"{p}" for p in paths], out)


def _policy_image(args: argparse.Namespace, text: str, kind: str, out: Output) -> int:
    """``verify IMAGE --policy``: the policy over the image's signed provenance (its subject the manifest)."""
    policy = gate.load(args.policy)
    if kind == "layout":
        found = evidence.from_layout(text, LayoutRef.parse(text), args.provenance)
    else:
        target = evidence.parse_registry_target(text)
        found = evidence.from_registry(text, target, args.provenance, Registry(target.ref.host))
    digest = found.digest.removeprefix("sha256:")
    statements = [
        gate.parse_evidence(c.data, c.where) for c in found.candidates if reader.read(c.data, c.where).names(digest)
    ]
    if not statements:
        raise VerificationError(f"not verified: {text}: no provenance names {found.digest} (looked in {found.looked})")
    # The statement signed by a key the policy trusts, else any signed one, else the first: a statement another
    # key signed, attached to the image by anyone who can push to the registry, cannot shadow the right one.
    trusted = [e for e in statements if e.provenance.envelope is not None and gate.signed_by_any(e, policy.keys)]
    signed = [e for e in statements if e.provenance.envelope is not None]
    chosen = (trusted or signed or statements)[0]
    attestations = [gate.read_evidence(p) for p in args.attestation]
    return _judged(args, policy, {text: digest}, chosen, attestations, [text], out)


def _judged(
    args: argparse.Namespace,
    policy: gate.Policy,
    digests: dict[str, str],
    found: gate.Evidence,
    attestations: list[gate.Evidence],
    labels: list[str],
    out: Output,
) -> int:
    signer = signing.load_private_key(args.vsa_key) if args.vsa_key is not None else None
    verdict = gate.evaluate(policy, digests, found, attestations)
    if signer is not None:
        vsa = signed.write_vsa(args.vsa, signer, verdict, policy, digests)
        out.step(
            f"wrote {vsa} (SLSA VSA v1, {'PASSED' if verdict.passed else 'FAILED'}, keyid {signer.public.keyid[:16]})"
        )
    for rule in verdict.rules:
        out.result(f"  {'ok' if rule.passed else 'FAIL':4}  {rule.name}: {rule.detail}")
    if not verdict.passed:
        unmet = ", ".join(r.name for r in verdict.unmet)
        raise VerificationError(f"not verified: {args.policy}: {count(len(verdict.unmet), 'rule')} unmet ({unmet})")
    for label, digest in zip(labels, digests.values(), strict=True):
        out.result(f"verified  {label}  sha256:{digest}")
    out.result(f"policy {args.policy}: {count(len(verdict.rules), 'rule')} met")
    return 0


def _from_store(
    url: str, digests: dict[str, str], store_key: Path | None, out: Output
) -> tuple[gate.Evidence, list[gate.Evidence]]:
    """The one provenance the store links to every artifact, and the attestations it holds for them (from
    what the store's key signed: ``--store-key``, else the published key as pinned)."""
    from detpack.cli.store import require_existing, show_notices, trusted_key
    from detpack.store import open_store

    store = open_store(url, trust=trusted_key(store_key, url_given=True))
    require_existing(store)
    try:
        return _store_evidence(store, url, digests)
    finally:
        show_notices(store, out)


def _store_evidence(store: Any, url: str, digests: dict[str, str]) -> tuple[gate.Evidence, list[gate.Evidence]]:
    state = store.state()
    provenance: dict[str, gate.Evidence] = {}
    attestations: dict[str, gate.Evidence] = {}
    for name, digest in digests.items():
        if digest not in state.items:
            raise VerificationError(f"not verified: {name}: sha256:{digest[:16]}… is not in the store {url}")
        found, more = store.evidence(state, state.items[digest], Path(name).name)
        if found is None:
            raise VerificationError(f"not verified: {name}: the store {url} holds no provenance for it")
        provenance[found.sha256] = found
        attestations.update((a.sha256, a) for a in more)
    if len(provenance) != 1:
        raise ConfigError(
            f"verify --policy --store: the artifacts have {len(provenance)} different provenance records; "
            "verify each build on its own"
        )
    return next(iter(provenance.values())), list(attestations.values())


def _attestation_files(provenance: Path, given: list[Path]) -> list[Path]:
    """The attestations given, then those named after the provenance beside it (each once)."""
    beside = sorted(provenance.parent.glob(f"{reader.record_stem(provenance)}{REBUILD_SUFFIX}*.intoto.jsonl"))
    seen: set[Path] = set()
    files = []
    for path in [*given, *beside]:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            files.append(path)
    return files


def _verify_files(args: argparse.Namespace, key: PublicKey, paths: list[Path], out: Output) -> int:
    summary = reader.summarize(_open(Candidate(str(args.provenance), _read(args.provenance)), key))
    digests = {str(path): file_sha256(path) for path in _existing(paths)}
    problems = reader.check_policy(summary, digests, source_commit=args.source_commit, builder=args.builder)
    if problems:
        raise VerificationError(f"not verified: {'; '.join(problems)}")
    for label, digest in digests.items():
        out.result(f"verified  {label}  sha256:{digest}")
    out.result(f"signed by keyid {key.keyid}; builder {summary.builder}; source commit {summary.source_commit or '-'}")
    return 0


def _verify_image(args: argparse.Namespace, key: PublicKey, text: str, kind: str, out: Output) -> None:
    if kind == "layout":
        found = evidence.from_layout(text, LayoutRef.parse(text), args.provenance)
        if not found.candidates:
            raise VerificationError(
                f"{text}: no provenance beside the layout (looked for {found.looked}); "
                "make the image with --sign KEY, or pass --provenance FILE"
            )
    else:
        target = evidence.parse_registry_target(text)
        found = evidence.from_registry(text, target, args.provenance, Registry(target.ref.host))
        if not found.candidates:
            raise VerificationError(
                f"{text}: no signed provenance refers to {found.digest} in {target.ref.name}; push the image "
                "with its provenance (detpack push, without --no-provenance), or pass --provenance FILE"
            )
    where, provenance = _first_verified(found, key)
    summary = reader.summarize(provenance)
    problems = reader.check_policy(summary, {text: found.digest.removeprefix("sha256:")})
    chain = attest.image_chain(provenance.statement)
    more, matched = attest.check_image_chain(
        chain, summary.builder, source_commit=args.source_commit, builder=args.builder
    )
    problems += more
    if problems:
        raise VerificationError(f"not verified: {'; '.join(problems)}")
    out.result(f"verified  {text}  {found.digest}")
    out.result(f"  provenance {where}")
    for c in matched or tuple(c for c in chain if c.commit):
        out.result(f"  {c.name} (layer {c.layer}): source commit {c.commit}")
    commits = sorted({c.commit for c in (matched or chain) if c.commit})
    commit = commits[0] if len(commits) == 1 else (f"{len(commits)} different" if commits else "-")
    out.result(f"signed by keyid {key.keyid}; builder {summary.builder}; source commit {commit}")


def _first_verified(found: ImageEvidence, key: PublicKey) -> tuple[str, reader.Provenance]:
    """The first candidate whose signature verifies and whose subjects name the image."""
    failure: VerificationError | None = None
    for candidate in found.candidates:
        try:
            provenance = _open(candidate, key)
        except VerificationError as exc:
            failure = failure or exc
            continue
        if provenance.names(found.digest):
            return candidate.where, provenance
        failure = failure or VerificationError(
            f"not verified: {found.label}: {found.digest[:23]}… is not a subject of the provenance ({candidate.where})"
        )
    assert failure is not None  # there was at least one candidate
    raise failure


def _open(candidate: Candidate, key: PublicKey) -> reader.Provenance:
    """The statement a DSSE envelope carries, once its signature verifies with ``key``."""
    provenance = reader.read(candidate.data, candidate.where)
    if provenance.envelope is None:
        raise VerificationError(
            f"{candidate.where}: an unsigned statement; sign it (detpack sign, or make it with --sign KEY) "
            "and pass the .intoto.jsonl envelope"
        )
    signing.verify(provenance.envelope, key, candidate.where)
    return provenance


def _read(path: Path) -> bytes:
    return read_input(path)


def _existing(paths: list[Path]) -> list[Path]:
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    return paths
