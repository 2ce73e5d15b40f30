"""Writing a record's SBOMs beside it: CycloneDX 1.6 and SPDX 2.3 JSON, for a build or a layer.

Each file is written whole or not at all (temp file, then rename); the artifacts are read and
checked against the record's sha256 first, so nothing is written for a record whose files changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from detpack import atomic
from detpack.errors import ConfigError
from detpack.provenance import reader
from detpack.provenance.statement import LAYER_BUILD_TYPE
from detpack.sbom import (
    SUFFIX,
    Artifact,
    Packed,
    artifacts_beside,
    cyclonedx,
    layer_cyclonedx,
    packed_cyclonedx,
    sbom_name,
    spdx,
)

#: Every format ``detpack sbom`` writes, with its label and file suffix.
FORMATS = {"cyclonedx": ("CycloneDX 1.6", SUFFIX), "spdx": ("SPDX 2.3", spdx.SUFFIX)}


def write_all(
    record_path: Path, formats: Sequence[str] = tuple(FORMATS), output: Path | None = None
) -> tuple[list[tuple[str, Path]], tuple[Artifact, ...]]:
    """Write the SBOMs of what ``record_path`` records (beside it, or at ``output`` for one format);
    returns (label, path) for each written, and the artifacts they describe."""
    if output is not None and len(formats) != 1:
        raise ConfigError("sbom: -o FILE names one file; choose its --format (cyclonedx or spdx)")
    record = reader.read_file(record_path)
    artifacts = artifacts_beside(record, record_path.parent)
    layer = record.statement.get("predicate", {}).get("buildDefinition", {}).get("buildType") == LAYER_BUILD_TYPE
    written = []
    for name in formats:
        label, suffix = FORMATS[name]
        if name == "cyclonedx":
            data = layer_cyclonedx(record, artifacts[0]) if layer else cyclonedx(record, artifacts)
        else:
            data = spdx.layer_spdx(record, artifacts[0]) if layer else spdx.build_spdx(record, artifacts)
        target = output or record_path.parent / sbom_name(record_path, suffix)
        atomic.write_bytes(target, data)
        written.append((label, target))
    return written, artifacts


def write_packed(packed: Packed, stem: Path, source: str) -> list[tuple[str, Path]]:
    """Write an image's (or a layer's) SBOMs as ``STEM.cdx.json`` and ``STEM.spdx.json``."""
    written = []
    for name, (label, suffix) in FORMATS.items():
        data = packed_cyclonedx(packed) if name == "cyclonedx" else spdx.packed_spdx(packed, source)
        target = stem.with_name(stem.name + suffix)
        atomic.write_bytes(target, data)
        written.append((label, target))
    return written
