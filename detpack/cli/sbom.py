"""``detpack sbom RECORD``: the CycloneDX SBOM of a build, from its provenance and the artifacts beside it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detpack.cli._output import Output


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sbom",
        help="write the CycloneDX 1.6 SBOM of a build (NAME-VERSION.cdx.json) from its provenance",
        description="Read a build's provenance (RECORD) and the artifacts beside it (each checked against its "
        "recorded sha256) and write a CycloneDX 1.6 JSON SBOM: the project, each artifact with its sha256, the "
        "declared dependencies and, in formulation, every build dependency, tool and setting. The same build "
        "gives the same bytes on every machine.",
    )
    p.add_argument("record", type=Path, metavar="RECORD", help="the build's provenance (NAME-VERSION.provenance.json)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="where to write it (default: beside RECORD)")
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    from detpack import sbom

    target, artifacts = sbom.write_any(args.record, args.output)
    out.result(f"{target}  CycloneDX 1.6 SBOM of {', '.join(a.path.name for a in artifacts)}")
    return 0
