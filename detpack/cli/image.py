"""``detpack image``: an OCI image layout from layers (and a base), with its provenance."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
from pathlib import Path
from typing import Any

from detpack import policy
from detpack.atomic import write_bytes
from detpack.cli._output import Output, count
from detpack.cli._progress import byte_progress, per_file
from detpack.digest import canonical_json
from detpack.errors import ConfigError
from detpack.oci import attest
from detpack.oci.image import BaseImage, ImageSettings, LayerBlob, build_image, open_base, public_source
from detpack.oci.layout import LayoutRef

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "image",
        help="make an OCI image layout from layers",
        description=(
            "Write an OCI image (config and manifest as canonical JSON, times from the epoch) into an image "
            "layout directory, on top of an optional base image; writes DIR.TAG.provenance.json beside it."
        ),
    )
    p.add_argument("-o", "--output", required=True, metavar="oci:DIR[:TAG]", help="the layout (tag default: latest)")
    p.add_argument("--base", metavar="oci:DIR[:TAG]", help="a base image in a local layout (its layers reused as-is)")
    p.add_argument("--layer", action="append", default=[], type=Path, metavar="L.tar.gz", help="a layer, in order")
    p.add_argument("--entrypoint", metavar="CMD", help="JSON array or shell words, e.g. '[\"/usr/local/bin/app\"]'")
    p.add_argument("--cmd", metavar="ARGS", help="default arguments (JSON array or shell words)")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--workdir", metavar="DIR")
    p.add_argument("--user", metavar="USER[:GROUP]")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--annotation", action="append", default=[], metavar="K=V", help="extra manifest annotations")
    p.add_argument("--platform", metavar="OS/ARCH", help="default: the base's, else linux/<this machine>")
    p.add_argument("--source", metavar="URL", help="org.opencontainers.image.source (default: from the layers)")
    p.add_argument("--revision", metavar="SHA", help="org.opencontainers.image.revision (default: from the layers)")
    p.add_argument("--sign", type=Path, metavar="KEY", help="also sign the provenance (DIR.TAG.intoto.jsonl)")
    p.add_argument(
        "--sbom",
        action="store_true",
        help="also write the image's SBOMs (DIR.TAG.cdx.json, DIR.TAG.spdx.json): every wheel of its layers",
    )
    p.add_argument("--source-date-epoch", metavar="N", help="created time (default: $SOURCE_DATE_EPOCH, the layers')")
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0)


def _words(text: str | None, option: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{option} {text}: not a JSON array ({exc})") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{option} {text}: must be a JSON array of strings")
        return tuple(value)
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise ConfigError(f"{option} {text}: {exc}") from None


def _pairs(items: list[str], option: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {item}: expected KEY=VALUE")
        out.append((key, value))
    return tuple(out)


def _platform(text: str | None) -> tuple[str, str]:
    if text is None:
        return ("linux", _ARCH.get(platform.machine(), platform.machine()))
    os_name, sep, arch = text.partition("/")
    if not sep or not os_name or not arch:
        raise ConfigError(f"--platform {text}: expected OS/ARCH, e.g. linux/amd64")
    return (os_name, arch)


def _layer_records(layers: list[LayerBlob]) -> tuple[list[dict[str, Any]], list[int]]:
    records, epochs = [], []
    for layer in layers:
        rd: dict[str, Any] = {
            "name": layer.path.name,
            "digest": {"sha256": layer.digest.removeprefix("sha256:")},
            "annotations": {"diffID": layer.diff_id, "mediaType": layer.media_type},
        }
        statement = attest.read_statement(attest.provenance_path(layer.path), layer.digest)
        if statement is not None:
            data, digest = statement
            build = data["predicate"]["buildDefinition"]
            rd["annotations"]["provenance"] = {"name": attest.provenance_path(layer.path).name, "digest": digest}
            rd["annotations"]["inputs"] = build.get("resolvedDependencies", [])
            epoch = build.get("externalParameters", {}).get("sourceDateEpoch")
            if isinstance(epoch, int):
                epochs.append(epoch)
        records.append(rd)
    return records, epochs


def run(args: argparse.Namespace, out: Output) -> int:
    started = dt.datetime.now(dt.UTC)
    ref = LayoutRef.parse(args.output, what="output")
    signing_key = None
    if args.sign is not None:
        from detpack.provenance.signing import load_private_key

        signing_key = load_private_key(args.sign)  # a bad key fails before anything is written
    base, plat = _base_and_platform(args)
    out.step(f"hashing {count(len(args.layer), 'layer')}")
    with byte_progress(out, "hashing") as advance:
        layers = [LayerBlob.inspect(p, told) for p, told in zip(args.layer, per_file(args.layer, advance), strict=True)]
    records, epochs = _layer_records(layers)
    epoch = policy.epoch_from(args.source_date_epoch, os.environ, max(epochs, default=policy.DEFAULT_EPOCH))
    settings = _settings(args, plat, _annotations(args, records))
    out.step(f"writing {ref}")
    image = build_image(ref, layers, settings, epoch, base)
    statement = attest.image_statement(
        reference=f"{ref.directory.name}:{ref.tag}",
        manifest_digest=image.manifest.digest,
        base=_base_record(base),
        layers=records,
        config=_config_parameters(settings),
        epoch=epoch,
        times=(started, dt.datetime.now(dt.UTC)),
    )
    where = attest.image_provenance_path(ref.directory, ref.tag)
    write_bytes(where, canonical_json(statement) + b"\n")
    out.result(f"{ref}@{image.manifest.digest}")
    out.line(f"provenance {where}")
    if signing_key is not None:
        from detpack.provenance.signing import sign_file

        out.line(f"signed {sign_file(where, signing_key)}")
    if args.sbom:
        for label, written in _write_sbom(ref, image.manifest.digest, epoch, layers, where):
            out.line(f"{label} SBOM {written}")
    return 0


def _write_sbom(
    ref: LayoutRef, manifest_digest: str, epoch: int, layers: list[LayerBlob], where: Path
) -> list[tuple[str, Path]]:
    """The image's SBOMs beside its provenance: every wheel each layer's own record lists."""
    from detpack.provenance import reader
    from detpack.sbom import Artifact, packed_image
    from detpack.sbom.files import write_packed

    pairs = []
    for layer in layers:
        record = attest.provenance_path(layer.path)
        if record.is_file():
            pairs.append((reader.read_file(record), Artifact(layer.path, layer.digest.removeprefix("sha256:"))))
    packed = packed_image(f"{ref.directory.name}:{ref.tag}", manifest_digest.removeprefix("sha256:"), epoch, pairs)
    stem = where.with_name(where.name.removesuffix(".provenance.json"))
    return write_packed(packed, stem, str(where))


def _base_and_platform(args: argparse.Namespace) -> tuple[BaseImage | None, tuple[str, str]]:
    """The base image, if any, and the platform: ``--platform``, else the base's, else this machine's."""
    base_ref = LayoutRef.parse(args.base, what="base image") if args.base else None
    plat = _platform(args.platform)
    base = open_base(base_ref, plat) if base_ref is not None else None
    if base is not None and args.platform is None:
        plat = (str(base.config.get("os", plat[0])), str(base.config.get("architecture", plat[1])))
    return base, plat


def _annotations(args: argparse.Namespace, records: list[dict[str, Any]]) -> dict[str, str]:
    """``--annotation`` items, plus the image's public source and revision (given, or from the layers)."""
    source, revision = attest.origin(records)
    annotations = dict(_pairs(args.annotation, "--annotation"))
    if args.source is not None:
        source = public_source(args.source)
        if source is None:
            raise ConfigError(
                f"--source {args.source}: not a public URL (https://, http://, ssh://, git:// or git@host:path); "
                "an image carries no local paths"
            )
    elif source is not None:
        source = public_source(source)  # a clone of a local path or file:// names nothing public
    for key, value in (("source", source), ("revision", args.revision or revision)):
        if value:
            annotations[f"org.opencontainers.image.{key}"] = str(value)
    return annotations


def _settings(args: argparse.Namespace, plat: tuple[str, str], annotations: dict[str, str]) -> ImageSettings:
    return ImageSettings(
        entrypoint=_words(args.entrypoint, "--entrypoint"),
        cmd=_words(args.cmd, "--cmd"),
        env=_pairs(args.env, "--env"),
        workdir=args.workdir,
        labels=_pairs(args.label, "--label"),
        user=args.user,
        platform=plat,
        annotations=annotations,
    )


def _base_record(base: BaseImage | None) -> dict[str, Any] | None:
    """The base image as the statement's resolved dependency."""
    if base is None:
        return None
    return {
        "name": "base",
        "uri": f"oci:{base.ref.tag}",
        "digest": {"sha256": base.manifest.digest.removeprefix("sha256:")},
        "annotations": {"tag": base.ref.tag, "layers": len(base.manifest_json["layers"])},
    }


def _config_parameters(settings: ImageSettings) -> dict[str, Any]:
    """The image configuration as the statement records it."""
    return {
        "entrypoint": settings.entrypoint,
        "cmd": settings.cmd,
        "env": [f"{k}={v}" for k, v in settings.env],
        "workdir": settings.workdir,
        "user": settings.user,
        "labels": dict(settings.labels),
        "platform": "/".join(settings.platform),
        "annotations": settings.annotations,
    }
