"""The closure of a layer or an image: the wheels its provenance says were installed into it.

An installed tree no longer holds the wheel files, only what they unpacked to, so the files of the
closure (name, version, sha256 of the wheel) are what ``detpack layer`` recorded: the layer's
statement (``LAYER.provenance.json`` beside a ``.tar.gz`` layer, subject the blob's sha256) lists
each wheel in ``resolvedDependencies``; an image's statement (beside its layout, or attached in a
registry, as ``detpack image``/``push`` leave it) repeats each layer's inputs under the layer's
descriptor. The statement must name the layer blob or the image manifest as its subject, and every
layer it describes must be one of the manifest's layers: a statement about other bytes is refused
in one line, never used. Its signature is not checked here (``verify --policy`` does that).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from detpack.deps.closure import Closure, ClosureFile, unique
from detpack.digest import file_sha256
from detpack.errors import InputError
from detpack.provenance import reader

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_packed(text: str) -> bool:
    """Whether a ``deps verify`` argument names a layer or an image rather than a lock file."""
    from detpack.oci.fetch import is_reference

    return text.endswith((".tar.gz", ".tgz", ".tar")) or is_reference(text)


def read_packed(text: str, provenance: Path | None = None) -> Closure:
    """The wheels of the layer file or the image ``text`` names (``oci:DIR[:TAG]``, ``HOST/REPO:TAG``)."""
    layer = Path(text)
    if text.startswith("oci:") or not layer.exists():
        if not text.startswith("oci:") and text.endswith((".tar.gz", ".tgz", ".tar")):
            raise InputError(f"{layer}: no such layer file; give LAYER.tar.gz as detpack layer wrote it, or an image")
        return _image(text, provenance)
    digest = file_sha256(layer)
    where = provenance or layer.with_name(layer.name + ".provenance.json")
    record = _statement(where, digest, f"{layer}: its provenance")
    files = _wheels(record.statement.get("predicate", {}).get("buildDefinition", {}), str(where))
    return Closure(str(layer), "layer", digest, _nonempty(files, text))


def _image(text: str, provenance: Path | None) -> Closure:
    from detpack.oci.fetch import open_image

    with open_image(text, provenance) as image:
        digest = image.manifest.digest.removeprefix("sha256:")
        if image.provenance is None:
            raise InputError(
                f"{text}: no provenance about manifest sha256:{digest[:16]}… beside it or attached to it; "
                "make the image with detpack image (or give --provenance FILE)"
            )
        record = _statement(image.provenance, digest, f"{text}: its provenance")
        layers = {b.digest.removeprefix("sha256:") for b in image.layers}
        build = record.statement.get("predicate", {}).get("buildDefinition", {})
        files: list[ClosureFile] = []
        for rd in build.get("resolvedDependencies") or []:
            annotations = rd.get("annotations") if isinstance(rd, dict) else None
            if not isinstance(annotations, dict) or "inputs" not in annotations:
                continue  # the base image: its own packages are not a Python closure
            layer = str((rd.get("digest") or {}).get("sha256", ""))
            if layer not in layers:
                raise InputError(
                    f"{image.provenance}: describes layer sha256:{layer[:16]}…, which is not a layer of {text}; "
                    "this provenance is about another image"
                )
            files += _wheels({"resolvedDependencies": annotations["inputs"]}, str(image.provenance))
        return Closure(image.reference, "image", digest, _nonempty(files, text))


def _statement(path: Path, digest: str, label: str) -> reader.Provenance:
    if not path.is_file():
        raise InputError(
            f"{path}: no such file ({label}); detpack layer and detpack image write it beside their output"
        )
    record = reader.read_file(path)
    if not record.names(digest):
        raise InputError(f"{path}: does not name sha256:{digest[:16]}… as its subject; it is about other bytes")
    return record


def _wheels(build: Any, where: str) -> list[ClosureFile]:
    files = []
    for rd in (build.get("resolvedDependencies") if isinstance(build, dict) else None) or []:
        name = str(rd.get("name", "")) if isinstance(rd, dict) else ""
        if not name.endswith(".whl"):
            continue
        try:
            project, version, _, _ = parse_wheel_filename(name)
        except InvalidWheelFilename:
            raise InputError(f"{where}: {name!r} is not a wheel file name") from None
        digest = rd.get("digest")
        sha256 = str(digest.get("sha256", "")).lower() if isinstance(digest, dict) else ""
        if not _SHA256.match(sha256):
            # the digest names the cache entry and the report's file: 64 hex digits, never a path
            raise InputError(f"{where}: wheel {name} is recorded without a sha256 (64 hex digits)")
        files.append(ClosureFile(canonicalize_name(project), str(version), sha256, name, "wheel"))
    return files


def _nonempty(files: list[ClosureFile], text: str) -> tuple[ClosureFile, ...]:
    if not files:
        raise InputError(f"{text}: its provenance records no installed wheel; there is no Python closure to verify")
    return unique(files)
