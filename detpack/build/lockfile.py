"""Locked build dependencies in the standard lock format, PEP 751 (``pylock.build.toml``).

A lock names every package the build environment may hold, each with one exact version and
the sha256 of the file to install. ``read_lock`` refuses a lock with a package that lacks a
version or a sha256; ``requirements`` turns a lock into pip's hash-checking mode input.
The lock file's own sha256 goes into provenance.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w
from packaging.pylock import Package, PackageSdist, PackageWheel, Pylock, PylockValidationError
from packaging.utils import canonicalize_name
from packaging.version import Version

from detpack.errors import ConfigError
from detpack.errors import LockError as LockError  # re-exported: its old import path

DEFAULT_NAME = "pylock.build.toml"


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    sha256: str
    filename: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class BuildLock:
    path: Path
    sha256: str
    packages: tuple[LockedPackage, ...]
    #: The project it was made for (``[tool.detpack] project`` in the lock, canonical name); None:
    #: a lock that names none (made by an older detpack, or by hand).
    project: str | None = None
    #: Used for another project than its own, by ``--lock-any`` (recorded).
    other_project: bool = False

    def check_project(self, name: str, *, lock_any: bool = False) -> BuildLock:
        """This lock for project ``name``: refused (LockError) when it was made for another project
        or names none, unless ``lock_any``; then the use is marked to be recorded."""
        if self.project == canonicalize_name(name):
            return self
        if lock_any:
            return replace(self, other_project=True)
        made = f"was made for project {self.project!r}" if self.project else "names no project (an older detpack's)"
        raise LockError(
            f"{self.path}: the lock {made}, not {canonicalize_name(name)!r}; make one for this project with "
            "`detpack lock`, or pass --lock-any to use it anyway (recorded)"
        )

    def requirements(self) -> str:
        """pip requirements in hash-checking mode: exactly these files, nothing else."""
        return "".join(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in self.packages)

    def versions(self) -> dict[str, str]:
        return {p.name: p.version for p in self.packages}


def read_lock(path: Path) -> BuildLock:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: lock file not found; create it with `detpack lock`") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
        lock = Pylock.from_dict(data)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LockError(f"{path}: not valid TOML ({exc})") from None
    except PylockValidationError as exc:
        raise LockError(f"{path}: not a valid PEP 751 lock ({exc})") from None
    packages = []
    for pkg in lock.packages:
        files: list[PackageWheel | PackageSdist] = [*(pkg.wheels or ()), *([pkg.sdist] if pkg.sdist else [])]
        digests = [f.hashes.get("sha256") for f in files]
        if pkg.version is None or not digests or not all(digests):
            raise LockError(f"{path}: package {pkg.name} has no exact version or no sha256; re-run `detpack lock`")
        first = files[0]
        packages.append(LockedPackage(str(pkg.name), str(pkg.version), str(digests[0]), first.name, first.url))
    tool = data.get("tool", {}).get("detpack", {}) if isinstance(data.get("tool"), dict) else {}
    project = tool.get("project", {}) if isinstance(tool, dict) else {}
    name = project.get("name") if isinstance(project, dict) else None
    return BuildLock(
        path,
        hashlib.sha256(raw).hexdigest(),
        tuple(sorted(packages, key=lambda p: p.name)),
        canonicalize_name(name) if isinstance(name, str) and name else None,
    )


def lock_bytes(
    packages: Iterable[LockedPackage], *, requires: Iterable[str], created_by: str, project: str | None = None
) -> bytes:
    """Serialize ``packages`` as a PEP 751 lock (validated by ``packaging`` before writing), naming
    the ``project`` it is for in ``[tool.detpack] project``."""
    entries = []
    for p in sorted(packages, key=lambda p: p.name):
        filename = p.filename or (p.url.rsplit("/", 1)[-1] if p.url else None)
        archive: dict[str, Any] = {"name": filename, "url": p.url, "hashes": {"sha256": p.sha256}}
        if filename and filename.endswith(".whl"):
            wheels, sdist = [PackageWheel(**archive)], None
        else:
            wheels, sdist = None, PackageSdist(**archive)
        entries.append(Package(name=canonicalize_name(p.name), version=Version(p.version), wheels=wheels, sdist=sdist))
    lock = Pylock(
        lock_version=Version("1.0"),
        created_by=created_by,
        packages=entries,
        tool={
            "detpack": {
                "build-requires": sorted(set(requires)),
                **({"project": {"name": canonicalize_name(project)}} if project else {}),
            }
        },
    )
    lock.validate()
    return tomli_w.dumps(lock.to_dict()).encode("utf-8")
