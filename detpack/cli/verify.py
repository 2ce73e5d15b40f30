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
from detpack.cli._output import Output
from detpack.digest import file_sha256
from detpack.errors import ConfigError, InputError, VerificationError
from detpack.oci import attest, evidence
from detpack.oci.evidence import Candidate, ImageEvidence
from detpack.oci.layout import LayoutRef
from detpack.oci.registry import Registry
from detpack.provenance import reader, signing
from detpack.provenance.signing import PublicKey


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
    p.add_argument("--key", type=Path, required=True, metavar="PUB", help="the signer's public key (KEY.pub)")
    p.add_argument("--source-commit", metavar="SHA", help="require this source commit (a prefix of 7+ hex digits)")
    p.add_argument("--builder", metavar="ID", help="require this builder id")
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    if args.source_commit is not None and not re.fullmatch(r"[0-9a-fA-F]{7,64}", args.source_commit):
        raise ConfigError(f"--source-commit {args.source_commit!r}: expected 7 to 64 hex digits of a commit id")
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
