"""Loading a build's toolchain image: ``load`` is the ``toolchain_loader`` the CLI gives builds.

REF is an image layout (``oci:DIR[:TAG]``) or a registry image (``HOST[:PORT]/REPO[:TAG][@sha256:…]``);
a tag alone is resolved now (the digest is what the record names). The image is unpacked once into the
cache keyed by its manifest digest (``unpack``) and the entry is checked before each use; a registry's
image found unpacked is not fetched again (only its manifest and config are read).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from detpack.build.toolimage import ToolchainImage, find_python, image_path
from detpack.errors import ConfigError
from detpack.oci import fetch, unpack


def load(given: str, python: str | None, cache: Path | None = None) -> ToolchainImage:
    """The toolchain image ``given`` names, unpacked (or found unpacked) and checked."""
    if not fetch.is_reference(given):
        raise ConfigError(
            f"--toolchain {given}: name an image: oci:DIR[:TAG] or HOST[:PORT]/REPO[:TAG]@sha256:… (a registry)"
        )
    cache = cache or unpack.default_cache()
    unpacked = None
    if not given.startswith("oci:"):  # a registry's image already unpacked needs no layer fetched
        with fetch.open_image(given, layers=False) as image:
            if (cache / image.manifest.digest.removeprefix("sha256:")).is_dir():
                unpacked = unpack.unpacked(image, cache)  # checked against what was unpacked
    if unpacked is None:
        with fetch.open_image(given) as image:
            unpacked = unpack.unpacked(image, cache)
    config = unpacked.config if isinstance(unpacked.config, Mapping) else {}
    return ToolchainImage(
        reference=unpacked.reference,
        digest=unpacked.digest,
        platform=unpacked.platform,
        root=unpacked.root,
        python=find_python(unpacked.root, config, python),
        path=image_path(config),
        pinned="@sha256:" in given,
        given=given,
    )
