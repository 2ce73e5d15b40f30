"""``detpack verify``: check artifacts against a signed provenance and an optional policy.

Exit 0 verified, 1 not verified (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from detpack.cli._output import Output
from detpack.errors import ConfigError, InputError, VerificationError


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="verify artifacts against a signed provenance (DSSE envelope)",
        description="Check the envelope's signature with PUB, that every ARTIFACT's sha256 is a subject of the "
        "statement, and the optional policy. Exit 0 verified, 1 not verified, 2 bad input.",
    )
    p.add_argument("artifacts", nargs="+", type=Path, metavar="ARTIFACT")
    p.add_argument("--provenance", type=Path, required=True, metavar="FILE", help="the .intoto.jsonl envelope")
    p.add_argument("--key", type=Path, required=True, metavar="PUB", help="the signer's public key")
    p.add_argument("--source-commit", metavar="SHA", help="require this source commit (a prefix of 7+ hex digits)")
    p.add_argument("--builder", metavar="ID", help="require this builder id")
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    from detpack import provenance, signing

    if args.source_commit is not None and not re.fullmatch(r"[0-9a-fA-F]{7,64}", args.source_commit):
        raise ConfigError(f"--source-commit {args.source_commit!r}: expected 7 to 64 hex digits of a commit id")
    key = signing.load_public_key(args.key, private_ok=False)
    data = _read(args.provenance)
    try:
        envelope = signing.Envelope.parse(data, args.provenance)
    except InputError:
        if b'"_type"' in data and b'"subject"' in data:
            raise VerificationError(
                f"{args.provenance}: an unsigned statement; sign it (detpack sign) and pass the .intoto.jsonl envelope"
            ) from None
        raise
    if envelope.payload_type != signing.PAYLOAD_TYPE:
        raise VerificationError(
            f"{args.provenance}: payloadType is {envelope.payload_type!r}, not {signing.PAYLOAD_TYPE}"
        )
    payload = signing.verify(envelope, key, args.provenance)
    summary = provenance.summarize(provenance.parse_statement(payload, args.provenance))
    digests = {str(path): provenance.file_sha256(path) for path in _existing(args.artifacts)}
    problems = provenance.check_policy(summary, digests, source_commit=args.source_commit, builder=args.builder)
    if problems:
        raise VerificationError(f"not verified: {'; '.join(problems)}")
    for label, digest in digests.items():
        out.result(f"verified  {label}  sha256:{digest}")
    out.result(f"signed by keyid {key.keyid}; builder {summary.builder}; source commit {summary.source_commit or '-'}")
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _existing(paths: list[Path]) -> list[Path]:
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    return paths
