"""What ``store push`` stores of an image named by reference (``oci.fetch.Image``), and in which order.

An image ``NAME`` (``BASE:TAG``, by default from its reference) becomes, in this order: its provenance
(``NAME.intoto.jsonl`` when signed, else ``NAME.provenance.json``; its subject must be the manifest),
its config (``NAME~config``) and layers (``NAME~layer1``…), each linked to the image, then the
manifest itself (``NAME``, linked to the provenance, recording the reference, the config and the
layers), then its SBOMs (``NAME.cdx.json``, ``NAME.spdx.json``), which the query index reads. A
reader that sees the image sees its blobs already. Every file is hashed here: a blob whose bytes are
not the digest the manifest gives (a damaged layout, a hostile registry) is refused before anything
is written.
"""

from __future__ import annotations

from pathlib import Path

from detpack.digest import file_sha256
from detpack.errors import InputError
from detpack.oci.fetch import Blob, Image, check_image_name
from detpack.provenance import reader
from detpack.store.writer import Input, Planned, check_name


def plan(image: Image, name: str) -> list[Planned]:
    """The blobs to store for ``image`` under ``name``, in order."""
    check_name(check_image_name(name))
    manifest = _blob(image.manifest, name, image.reference)
    config = _blob(image.config, f"{name}~config", image.reference)
    layers = [_blob(b, f"{name}~layer{n}", image.reference) for n, b in enumerate(image.layers, 1)]
    steps: list[Planned] = []
    prov: Input | None = None
    if image.provenance is not None:
        parsed = reader.read_file(image.provenance)
        subjects = [s.sha256 for s in parsed.subjects]
        if manifest.digest not in subjects:
            raise InputError(
                f"{image.provenance}: not provenance of {image.reference} (its subjects do not include the "
                f"manifest sha256:{manifest.digest[:16]}…)"
            )
        keyids = [s.keyid for s in parsed.envelope.signatures] if parsed.envelope else []
        suffix = ".intoto.jsonl" if parsed.envelope else ".provenance.json"
        prov = _file(image.provenance, name + suffix)
        steps.append(Planned(prov, "provenance", {"subjects": subjects, "keyids": keyids, "signed": bool(keyids)}))
    part_of = {"provenance": None, "image": manifest.digest}
    steps.append(Planned(config, "push", {**part_of, "media": "config"}))
    steps += [Planned(layer, "push", {**part_of, "media": "layer"}) for layer in layers]
    steps.append(
        Planned(
            manifest,
            "push",
            {
                "provenance": prov.digest if prov else None,
                "media": "image",
                "reference": image.reference,
                "config": config.digest,
                "layers": [layer.digest for layer in layers],
            },
        )
    )
    for sbom in image.sboms:
        suffix = ".cdx.json" if sbom.name.endswith(".cdx.json") else ".spdx.json"
        steps.append(Planned(_file(sbom, name + suffix), "push", {"provenance": None}))
    return steps


def _blob(blob: Blob, name: str, reference: str) -> Input:
    """A blob as an input to store, once its bytes are shown to be the digest the manifest gives."""
    digest = file_sha256(blob.path)
    if "sha256:" + digest != blob.digest:
        raise InputError(
            f"{blob.path}: its bytes are sha256:{digest[:16]}…, not {blob.digest[:23]}… as {reference} says; "
            "the image is damaged or was tampered with (nothing was stored)"
        )
    return Input(blob.path, check_name(name), digest, blob.path.stat().st_size)


def _file(path: Path, name: str) -> Input:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return Input(path, check_name(name), file_sha256(path), path.stat().st_size)
