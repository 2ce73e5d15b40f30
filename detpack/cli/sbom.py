"""``detpack sbom RECORD``: the CycloneDX SBOM of a build, from its provenance and the artifacts beside it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detpack.cli._output import Output


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sbom",
        help="write the CycloneDX 1.6 and SPDX 2.3 SBOMs of a build or layer from its provenance",
        description="Read a build's provenance (RECORD) and the artifacts beside it (each checked against its "
        "recorded sha256) and write CycloneDX 1.6 and SPDX 2.3 JSON SBOMs: the project, each artifact with its "
        "sha256, the "
        "declared dependencies and, in formulation, every build dependency, tool and setting. The same build "
        "gives the same bytes on every machine.",
    )
    p.add_argument("record", type=Path, metavar="RECORD", help="the build's provenance (NAME-VERSION.provenance.json)")
    p.add_argument(
        "--format",
        choices=("cyclonedx", "spdx"),
        action="append",
        help="write only this format (default: both, NAME-VERSION.cdx.json and NAME-VERSION.spdx.json)",
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="with one --format: write it here")
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    from detpack.sbom.files import FORMATS, write_all

    formats = tuple(dict.fromkeys(args.format)) if args.format else tuple(FORMATS)
    written, artifacts = write_all(args.record, formats, args.output)
    for label, target in written:
        out.result(f"{target}  {label} SBOM of {', '.join(a.path.name for a in artifacts)}")
    return 0
