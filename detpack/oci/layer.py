"""OCI layers: directories and wheels packed into one canonical tar.gz blob.

A layer is the canonical tar (sorted, parents present, epoch times, root-owned, normalized
modes) of its sources merged into one root filesystem, gzip-compressed by the block-parallel
writer. Its diff_id (sha256 of the tar) and digest (sha256 of the blob) are computed while
writing. Wheels are installed as an installer would (``installer``: site-packages under the
prefix, console scripts with a fixed shebang, RECORD kept, no bytecode) into a scratch root
first, without running any Python of the target image.
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from detpack import policy
from detpack.archive import codec
from detpack.archive.entry import safe_name
from detpack.archive.meter import Progress
from detpack.archive.tarball import ContentDigest, TarDigests, content_size, write_tarball
from detpack.archive.tree import TreeItem, merge, walk
from detpack.archive.zip import open_zip, read_members
from detpack.errors import ArchiveError, ConfigError, InputError

DEFAULT_PREFIX = "/usr/local"


@dataclass(frozen=True)
class Addition:
    """``--add SRC:DEST``: a host path placed at DEST in the layer's root."""

    source: Path
    dest: str  # clean relative path inside the root; "" is the root itself
    as_given: str

    @classmethod
    def parse(cls, spec: str) -> Addition:
        src, sep, dest = spec.rpartition(":")
        if not sep or not src or not dest:
            raise ConfigError(f"--add {spec}: expected SRC:DEST, e.g. --add app:/app")
        return cls(Path(src), _dest_path(dest, f"--add {spec}"), spec)


def _dest_path(dest: str, label: str) -> str:
    """A destination inside the image root ("/app" and "app" alike), refusing escapes."""
    stripped = dest.lstrip("/")
    if not stripped.rstrip("/") or stripped.rstrip("/") == ".":
        return ""
    parts = stripped.rstrip("/").split("/")
    if ".." in parts:
        raise ConfigError(f"{label}: destination {dest!r} climbs out of the image root with '..'; use a path under /")
    return safe_name(stripped, label)


@dataclass(frozen=True)
class PythonTarget:
    """Where wheels go in the image: ``PREFIX/lib/pythonX.Y/site-packages``, scripts in ``PREFIX/bin``."""

    prefix: str = DEFAULT_PREFIX
    version: str = f"{sys.version_info.major}.{sys.version_info.minor}"

    @property
    def site_packages(self) -> str:
        return f"{self.prefix}/lib/python{self.version}/site-packages"

    @property
    def interpreter(self) -> str:
        return f"{self.prefix}/bin/python{self.version}"


@dataclass(frozen=True)
class WheelInput:
    path: Path
    sha256: str


@dataclass(frozen=True)
class Layer:
    path: Path
    digests: TarDigests
    additions: tuple[Addition, ...]
    wheels: tuple[WheelInput, ...]
    target: PythonTarget
    epoch: int
    #: Per ``--add``, sha256 over its entries (kind, mode, content digest or link, path under DEST).
    source_digests: tuple[str, ...] = ()

    @property
    def diff_id(self) -> str:
        return f"sha256:{self.digests.tar_sha256}"

    @property
    def digest(self) -> str:
        return f"sha256:{self.digests.blob_sha256}"


def _addition_items(addition: Addition, origin: int) -> Iterator[TreeItem]:
    # A file added at DEST is named DEST; at DEST/ (or /) it keeps its own name.
    rename = not addition.as_given.endswith("/")
    return walk(addition.source, addition.dest, absolute_links=True, rename=rename, origin=origin)


def _install_wheels(wheels: Sequence[Path], root: Path, target: PythonTarget) -> None:
    """Install ``wheels`` under ``root`` as if ``root`` were the image's ``/``."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.exceptions import InstallerError
    from installer.sources import WheelFile

    for wheel in wheels:
        if not wheel.is_file():
            raise InputError(f"{wheel}: no such wheel file")
        name = wheel.name.split("-", 1)[0]
        scheme = {
            "purelib": target.site_packages,
            "platlib": target.site_packages,
            "headers": f"{target.prefix}/include/python{target.version}/{name}",
            "scripts": f"{target.prefix}/bin",
            "data": target.prefix,
        }
        destination = SchemeDictionaryDestination(
            scheme, interpreter=target.interpreter, script_kind="posix", destdir=str(root)
        )
        with open_zip(wheel) as zf:
            read_members(zf, str(wheel))  # names, duplicates and bomb limits, as for any input zip
        try:
            with WheelFile.open(wheel) as source:
                source.validate_record(validate_contents=True)
                install(source, destination, {"INSTALLER": b"detpack\n"})
        except (zipfile.BadZipFile, InstallerError, ValueError, KeyError, OSError) as exc:
            raise ArchiveError(f"{wheel}: cannot be installed into the layer ({exc})") from None


def build_layer(
    output: Path,
    *,
    additions: Sequence[Addition] = (),
    wheels: Sequence[WheelInput] = (),
    target: PythonTarget = PythonTarget(),
    epoch: int = policy.DEFAULT_EPOCH,
    progress: Progress | None = None,
    zstd: bool = False,
) -> Layer:
    """Write the layer to ``output`` (atomically) and return its identity.

    ``progress`` hears (file bytes packed, file bytes in all sources), about once a MiB; the
    total comes from a walk of the sources before packing (names and sizes, no data read). ``zstd``: the
    layer is ``tar+zstd`` (``tarball.ZSTD_LAYER_LEVEL``, zstd's multi-threaded frames: the same bytes
    at any number of threads), not gzip; ``output`` is then named ``*.tar.zst``."""
    if not additions and not wheels:
        raise ConfigError("detpack layer: nothing to pack; give --add SRC:DEST and/or --wheel WHEEL")
    for addition in additions:
        if not addition.source.exists() and not addition.source.is_symlink():
            raise InputError(f"{addition.source}: no such file or directory (from --add {addition.as_given})")
    codec.check_soon()  # the gzip writer needs it; it runs while the sources are walked
    with tempfile.TemporaryDirectory(prefix="detpack-layer-") as scratch:
        sources: list[tuple[str, Iterator[TreeItem]]] = [
            (f"--add {a.as_given}", _addition_items(a, i)) for i, a in enumerate(additions)
        ]
        total = 0 if progress is None else sum(content_size(_addition_items(a, i)) for i, a in enumerate(additions))
        if wheels:
            root = Path(scratch) / "root"
            root.mkdir()
            _install_wheels([w.path for w in wheels], root, target)
            sources.append(("the installed wheels", walk(root, absolute_links=True, origin=len(additions))))
            total += 0 if progress is None else content_size(walk(root, absolute_links=True))
        per_source = [ContentDigest(a.dest) for a in additions]

        def observe(item: TreeItem, sha256: str | None) -> None:
            if item.content and item.origin < len(per_source):
                per_source[item.origin].add(item.entry, sha256)

        digests = write_tarball(
            merge(sources, str(output)),
            output,
            epoch,
            str(output),
            observe,
            progress=progress,
            total=total,
            compression="zstd-layer" if zstd else None,
        )
    source_digests = tuple(d.hexdigest() for d in per_source)
    return Layer(output, digests, tuple(additions), tuple(wheels), target, epoch, source_digests)
