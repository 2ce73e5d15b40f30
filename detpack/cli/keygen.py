"""``detpack keygen``: make an ed25519 key pair for signing provenance."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detpack.cli._output import Output


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "keygen",
        help="make an ed25519 signing key (KEY, mode 0600) and its public key (KEY.pub)",
        description="Write a new ed25519 private key (PKCS#8 PEM, mode 0600) and KEY.pub beside it. "
        "Existing files are never overwritten.",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="KEY", help="private key path")
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    from detpack.provenance.signing import generate_keypair

    key, public = generate_keypair(args.output)
    out.result(f"{args.output}  private key (keep it secret)")
    out.result(f"{public}  public key  keyid {key.public.keyid}")
    return 0
