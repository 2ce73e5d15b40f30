"""A build's toolchain image (``--toolchain REF``): the compilers, headers and Python a build runs with.

``detpack.oci.toolchain.load`` (above this layer: the build is given it as ``BuildRequest.toolchain_loader``)
resolves REF (``oci:DIR[:TAG]`` or ``HOST[:PORT]/REPO[:TAG]@sha256:…``) to its manifest digest, unpacks the
image once into the cache keyed by that digest (``oci.unpack``: every layer checked against its digest,
nothing written outside the entry) and checks the entry before each use. The build's
installs and hooks then run with the image's system directories as theirs (``sandbox.make(image_root=)``)
and the image's Python; detpack itself stays on this machine. ``record`` is what the provenance says of
the image: a resolved dependency naming it by digest, and its Python in place of this machine's.

Paths inside the image are resolved inside its root (``inside``): a link in the image is followed as the
sandbox would follow it, never to this machine's files.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.build.sandbox import IMAGE_SYSTEM
from detpack.digest import file_sha256
from detpack.errors import ConfigError, InputError

_PYTHON_NAME = re.compile(r"python3\.(\d+)")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class ToolchainImage:
    """A toolchain image, unpacked and checked, and what a build takes from it."""

    reference: str  # where it came from, as recorded (a registry reference with its digest, or oci:NAME:TAG)
    digest: str  # sha256:HEX of the manifest
    platform: str  # os/architecture[/variant], from its config
    root: Path  # the unpacked root on this machine (read-only)
    python: str  # the interpreter the build runs, as a path inside the image
    path: str  # PATH inside (the image config's, else DEFAULT_PATH)
    pinned: bool  # named by digest (a tag alone was resolved now)
    given: str  # REF as the user gave it

    @property
    def uri(self) -> str:
        """The image by digest: ``oci://HOST/REPO@sha256:…`` for a registry, ``oci:NAME@sha256:…`` for a layout."""
        if self.reference.startswith("oci:"):
            return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"
        return f"oci://{self.reference.split('@', 1)[0]}@{self.digest}"


def inside(root: Path, path: str, *, limit: int = 40) -> Path:
    """``path`` (absolute, as the image sees it) on this machine, its links followed inside ``root`` only."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            if hops > limit:
                raise InputError(f"{root}: {path}: too many links in the toolchain image")
            target = str(candidate.readlink())
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    if not done or not (done[0] in IMAGE_SYSTEM or done[:3] == ["var", "lib", "dpkg"]):
        # what a build sees of the image is its system directories (``sandbox.image_system``): a path that
        # ends anywhere else (its /proc, /tmp, /run) is not what the build would run or read there
        raise InputError(
            f"{root}: {path} is not in the toolchain image's system directories ({', '.join(IMAGE_SYSTEM)})"
        )
    return root.joinpath(*done)


def find_python(root: Path, config: Mapping[str, Any], given: str | None) -> str:
    """The image's interpreter: ``given``, else ``PYTHON`` in its config's Env, else the newest ``python3.X``
    on its PATH."""
    env = _env(config)
    if given is None and env.get("PYTHON", "").startswith("/"):
        given = env["PYTHON"]
    if given is not None:
        try:
            there = given.startswith("/") and inside(root, given).is_file()
        except InputError:
            there = False
        if not there:
            raise ConfigError(
                f"--toolchain-python {given}: no such interpreter in the toolchain image's system directories"
            )
        return given
    found: list[tuple[int, int, str]] = []  # (minor version, -place on PATH, path)
    for place, directory in enumerate((env.get("PATH") or DEFAULT_PATH).split(":")):
        if not directory.startswith("/"):
            continue
        try:
            folder = inside(root, directory)
        except InputError:
            continue  # not where the build would look
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            m = _PYTHON_NAME.fullmatch(entry.name)
            with contextlib.suppress(InputError):
                if m and inside(root, posixpath.join(directory, entry.name)).is_file():
                    found.append((int(m[1]), -place, posixpath.join(directory, entry.name)))
    if not found:
        raise ConfigError(
            f"{root}: the toolchain image has no python3.X on its PATH; name one with --toolchain-python PATH"
        )
    return max(found)[2]  # the newest; of one version, the first on PATH


def image_path(config: Mapping[str, Any]) -> str:
    """The PATH the build's processes get: the image config's entries that name its system directories
    (absolute, plain; anything else, a folder under the build root, /tmp or a relative one, is left out),
    else ``DEFAULT_PATH``."""
    kept = []
    for entry in (_env(config).get("PATH") or "").split(":"):
        parts = entry.split("/")
        plain = entry.startswith("/") and not re.search(r"[\s,]", entry) and ".." not in parts and "." not in parts
        if plain and len(parts) > 1 and parts[1] in IMAGE_SYSTEM and entry not in kept:
            kept.append(entry)
    return ":".join(kept) or DEFAULT_PATH


def _env(config: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in config.get("Env") or []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            found[key] = value
    return found


#: ``(REF, --toolchain-python or None) -> ToolchainImage``: how a build gets its image (``oci.toolchain.load``).
Loader = Callable[[str, "str | None"], ToolchainImage]


def record(image: ToolchainImage, python_version: str, python_implementation: str) -> dict[str, Any]:
    """The toolchain image as a resolved dependency of the build."""
    return {
        "name": "toolchain image",
        "uri": image.uri,
        "digest": {"sha256": image.digest.removeprefix("sha256:")},
        "annotations": {
            "platform": image.platform,
            "python": {
                "path": image.python,
                "implementation": python_implementation,
                "version": python_version,
                "sha256": python_sha256(image),
            },
        },
    }


def python_sha256(image: ToolchainImage) -> str:
    return file_sha256(inside(image.root, image.python))
