"""``detpack push``: an image layout to a registry, by digest, with write-once tags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detpack.cli._output import Output, count
from detpack.errors import InputError
from detpack.oci import attest
from detpack.oci.layout import Layout, LayoutRef
from detpack.oci.push import SBOM_TYPES, push_image
from detpack.oci.registry import Registry, RegistryRef
from detpack.provenance.signing import envelope_path


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "push",
        help="push an OCI image layout to a registry by digest (tags are write-once)",
        description=(
            "Upload blobs and the manifest by digest, then write the tag only if it is absent or already points "
            "to the same digest (otherwise exit 1 naming both). The image's provenance (DIR.TAG.provenance.json "
            "or --provenance) and its SBOMs (DIR.TAG.cdx.json, DIR.TAG.spdx.json, from image --sbom) are pushed as OCI "
            "artifacts referring to the image. Prints REGISTRY/REPO@sha256:..."
        ),
    )
    p.add_argument("source", metavar="oci:DIR[:TAG]")
    p.add_argument("destination", metavar="REGISTRY/REPO[:TAG]", help="tag default: the source's tag")
    p.add_argument("--provenance", type=Path, metavar="FILE", help="statement or signed envelope to attach")
    p.add_argument("--no-provenance", action="store_true", help="push the image only")
    p.add_argument("--no-sbom", action="store_true", help="do not attach the SBOMs found beside the layout")
    p.add_argument("--no-tag", action="store_true", help="push by digest only, write no tag")
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    source = LayoutRef.parse(args.source)
    dest = RegistryRef.parse(args.destination)
    if args.no_tag:
        dest = RegistryRef(dest.host, dest.repository, None)
    elif dest.tag is None and source.tagged:
        dest = RegistryRef(dest.host, dest.repository, source.tag)
    descriptor = Layout(source.directory).resolve(source.tag)
    provenance: Path | None = None
    if args.provenance is not None:
        if not args.provenance.is_file():
            raise InputError(f"{args.provenance}: no such provenance file")
        provenance = args.provenance
    elif not args.no_provenance:
        candidate = attest.image_provenance_path(source.directory, source.tag)
        signed = envelope_path(candidate)
        for path in (signed, candidate):
            if path.is_file() and attest.names_subject(path, descriptor.digest):
                provenance = path
                break
    sboms: tuple[Path, ...] = ()
    if not args.no_sbom:
        stem = attest.image_provenance_path(source.directory, source.tag)
        candidates = [stem.with_name(stem.name.removesuffix(".provenance.json") + s) for s in SBOM_TYPES]
        hexdigest = descriptor.digest.removeprefix("sha256:").encode("ascii")
        sboms = tuple(c for c in candidates if c.is_file() and hexdigest in c.read_bytes())  # about this image
    out.step(f"pushing {source} to {dest}")
    result = push_image(source, dest, Registry(dest.host), provenance, sboms)
    out.line(f"{count(result.uploaded, 'blob')} uploaded, {result.skipped} already there")
    if result.attestation:
        out.line(f"provenance {provenance} pushed as {dest.name}@{result.attestation}")
    for path, digest in result.sboms:
        out.line(f"SBOM {path} pushed as {dest.name}@{digest}")
    if result.tag is not None:
        out.line(f"tag {result.tag}: {'written' if result.tag_state == 'created' else 'already points here'}")
    out.result(result.reference)
    return 0
