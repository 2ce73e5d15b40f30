"""``detpack sign``: wrap a provenance statement in a signed DSSE envelope."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detpack.cli._output import Output


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sign",
        help="sign a provenance file (DSSE envelope, NAME.intoto.jsonl)",
        description="Sign the canonical bytes of a provenance statement with an ed25519 key and write a "
        "DSSE envelope (payloadType application/vnd.in-toto+json) as NAME.intoto.jsonl beside it. Given an "
        "envelope, add this key's signature to it (in place, or -o FILE): a policy can require several signers.",
    )
    p.add_argument("provenance", type=Path, metavar="PROVENANCE", help="a statement, or an envelope to co-sign")
    p.add_argument("--key", type=Path, required=True, metavar="KEY", help="ed25519 private key (detpack keygen)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="envelope path (default: NAME.intoto.jsonl)")
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    from detpack.provenance.signing import load_private_key, sign_file

    key = load_private_key(args.key)
    target = sign_file(args.provenance, key, args.output)
    out.result(f"{target}  signed by keyid {key.public.keyid}")
    return 0
