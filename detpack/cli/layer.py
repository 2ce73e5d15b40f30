"""``detpack layer``: an OCI layer from directories and wheels, with its provenance beside it."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

from detpack import policy
from detpack.atomic import write_bytes
from detpack.cli._output import Output
from detpack.cli._progress import byte_progress
from detpack.digest import canonical_json, file_sha256
from detpack.errors import ConfigError, InputError
from detpack.oci import attest
from detpack.oci.layer import DEFAULT_PREFIX, Addition, PythonTarget, WheelInput, build_layer


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "layer",
        help="make an OCI layer (tar.gz) from directories and wheels",
        description=(
            "Pack directories (--add SRC:DEST) and wheels (--wheel, installed as an installer would) into one "
            "canonical OCI layer; prints its diff_id and digest and writes OUT.provenance.json beside it."
        ),
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.tar.gz")
    p.add_argument("--add", action="append", default=[], metavar="SRC:DEST", help="put SRC at DEST in the image")
    p.add_argument("--wheel", action="append", default=[], nargs="+", type=Path, metavar="WHEEL")
    p.add_argument("--python-prefix", default=DEFAULT_PREFIX, metavar="PATH", help=f"default {DEFAULT_PREFIX}")
    p.add_argument(
        "--python-version", default=PythonTarget().version, metavar="X.Y", help="the image's Python (default: this one)"
    )
    p.add_argument(
        "--compression",
        choices=("gzip", "zstd", "none"),
        help="tar+gzip (default; OUT.tar.gz), tar+zstd (OUT.tar.zst: faster, zstd level 3, the same bytes at any "
        "number of threads) or a plain tar (OUT.tar); default: what OUT's suffix says",
    )
    p.add_argument("--source-date-epoch", metavar="N", help="member times (default: $SOURCE_DATE_EPOCH, else 1980)")
    p.add_argument(
        "--sbom",
        action="store_true",
        help="also write the layer's SBOMs (OUT.cdx.json, OUT.spdx.json): every wheel installed in it",
    )
    p.add_argument(
        "--evidence",
        action="append",
        default=[],
        type=Path,
        metavar="REPORT",
        help="a closure report (deps verify -o): each wheel's state and evidence go into the provenance and SBOMs",
    )
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    started = dt.datetime.now(dt.UTC)
    target: Path = args.output
    suffixes = {"gzip": (".tar.gz", ".tgz"), "zstd": (".tar.zst",), "none": (".tar",)}
    named = next((kind for kind, ends in suffixes.items() if target.name.endswith(ends)), None)
    if named is None:
        raise ConfigError(f"{target}: a layer is written as *.tar.gz (or *.tar.zst with zstd, *.tar uncompressed)")
    if args.compression is not None and args.compression != named:
        raise ConfigError(
            f"{target}: --compression {args.compression} writes {' or '.join(suffixes[args.compression])}, "
            f"not a {named} file; name the output to match"
        )
    if target.is_dir():
        raise InputError(f"{target}: is a directory; -o names the layer file")
    prefix = args.python_prefix
    if not prefix.startswith("/") or ".." in prefix.split("/"):
        raise ConfigError(f"--python-prefix {prefix}: must be an absolute path inside the image, e.g. /usr/local")
    if not all(part.isdigit() for part in args.python_version.split(".")) or args.python_version.count(".") != 1:
        raise ConfigError(f"--python-version {args.python_version}: expected X.Y, e.g. 3.11")
    epoch = policy.epoch_from(args.source_date_epoch, os.environ)
    additions = [Addition.parse(spec) for spec in args.add]
    wheel_paths: list[Path] = [w for group in args.wheel for w in group]
    for wheel in wheel_paths:
        if not wheel.is_file():
            raise InputError(f"{wheel}: no such wheel file")
    wheels = [WheelInput(w, file_sha256(w)) for w in wheel_paths]
    python = PythonTarget(prefix.rstrip("/") or "/", args.python_version)
    found = _evidence(args.evidence)
    missing = None
    if args.evidence:
        missing = {"state": "unverified", "reason": "in no closure report given (--evidence)", "statement": None}
    out.step(f"packing layer {target}")
    with byte_progress(out, "packing") as advance:
        layer = build_layer(
            target,
            additions=additions,
            wheels=wheels,
            target=python,
            epoch=epoch,
            progress=advance,
            zstd=named == "zstd",
        )
    statement = attest.layer_statement(
        name=target.name,
        digest=layer.digest,
        diff_id=layer.diff_id,
        additions=[
            (str(a.source), a.dest, attest.source_descriptor(a.source, str(a.source), digest))
            for a, digest in zip(additions, layer.source_digests, strict=True)
        ],
        wheels=[attest.wheel_descriptor(w.path, w.sha256, found.get(w.sha256, missing)) for w in wheels],
        python={"prefix": python.prefix, "version": python.version, "sitePackages": python.site_packages},
        epoch=epoch,
        times=(started, dt.datetime.now(dt.UTC)),
    )
    write_bytes(attest.provenance_path(target), canonical_json(statement) + b"\n")
    out.result(f"diff_id {layer.diff_id}")
    out.result(f"digest  {layer.digest}")
    out.line(f"provenance {attest.provenance_path(target)}")
    if args.sbom:
        from detpack.sbom.files import write_all

        for label, written in write_all(attest.provenance_path(target))[0]:
            out.line(f"{label} SBOM {written}")
    return 0


def _evidence(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """sha256 -> what the first closure report naming those bytes found, as the layer's provenance records it."""
    if not paths:
        return {}  # no --evidence: the closure reader (packaging's lock parser with it) is not loaded
    from detpack.atomic import read_input
    from detpack.deps.report import parse

    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        data = read_input(path, "closure report")
        report = parse(data, str(path))
        source = {"name": path.name, "digest": {"sha256": file_sha256(path)}}
        for e in report.entries:
            statement = None
            if e.evidence is not None:
                statement = {"kind": e.evidence.kind, "name": e.evidence.name, "digest": {"sha256": e.evidence.sha256}}
            found.setdefault(e.sha256, {"state": e.state, "reason": e.reason, "statement": statement, "report": source})
    return found
