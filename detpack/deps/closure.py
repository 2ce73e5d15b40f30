"""A closure to verify: every distribution file an application installs, with its sha256.

Two inputs are read: a PEP 751 lock (``pylock.toml`` or ``pylock.NAME.toml``: each package's
wheels and sdist with their hashes) and a pip requirements file in hash-checking mode
(``NAME==VERSION --hash=sha256:…``, continuation lines joined). A requirements file names no
file, only digests: its files have no name (``filename`` None) and are matched by digest alone.
Every file must carry a sha256: a closure without one cannot be verified, and is refused
(``InputError``, one line naming the file and the package).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.pylock import PackageSdist, PackageWheel, Pylock, PylockValidationError
from packaging.utils import canonicalize_name

from detpack.deps.report import ClosureKind
from detpack.errors import InputError

Kind = Literal["wheel", "sdist", "unknown"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[A-Za-z0-9][A-Za-z0-9.!+_-]*)$")


@dataclass(frozen=True)
class ClosureFile:
    """One distribution file of the closure."""

    name: str  # the project's canonical name
    version: str  # its exact version
    sha256: str  # the file's sha256, hex
    filename: str | None  # the file's name (None: a requirements file names none)
    kind: Kind  # a wheel, an sdist, or unknown (a bare digest)

    @property
    def spec(self) -> str:
        """``NAME==VERSION``: the release to rebuild."""
        return f"{self.name}=={self.version}"

    @property
    def label(self) -> str:
        """The file's name, or its digest when the closure gave none."""
        return self.filename or f"sha256:{self.sha256[:16]}"


@dataclass(frozen=True)
class Closure:
    label: str  # what was read, as given (a path, oci:DIR:TAG, a registry reference)
    kind: ClosureKind  # a lock, hashed requirements, a layer or an image
    sha256: str  # of the lock's bytes, or the layer blob's or image manifest's digest (hex)
    files: tuple[ClosureFile, ...]  # in the closure's order, each digest once


def unique(files: list[ClosureFile]) -> tuple[ClosureFile, ...]:
    """``files`` with each digest once, in order."""
    seen: dict[str, ClosureFile] = {}
    for f in files:
        seen.setdefault(f.sha256, f)
    return tuple(seen.values())


def read_closure(path: Path) -> Closure:
    """The files of ``path``: a PEP 751 lock when its name is ``pylock*.toml``, else hashed requirements."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such closure; give a pylock.toml or a requirements file with --hash") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; give a pylock.toml or a requirements file with --hash") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the closure ({exc})") from None
    is_lock = path.name.startswith("pylock.") and path.name.endswith(".toml")
    files = _from_lock(path, text) if is_lock else _from_requirements(path, text)
    if not files:
        raise InputError(f"{path}: names no distribution files; give a lock or hashed requirements of the closure")
    digest = hashlib.sha256(data).hexdigest()
    return Closure(str(path), "pylock" if is_lock else "requirements", digest, unique(files))


def _from_lock(path: Path, text: str) -> list[ClosureFile]:
    try:
        lock = Pylock.from_dict(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    except PylockValidationError as exc:
        raise InputError(
            f"{path}: not a valid PEP 751 lock ({exc}); re-make it with hashes (pip lock, uv export)"
        ) from None
    files = []
    for pkg in lock.packages:
        name = canonicalize_name(str(pkg.name))
        if pkg.version is None:
            raise InputError(f"{path}: package {name} has no exact version; lock it with one (pip lock, uv export)")
        entries: list[tuple[Kind, PackageWheel | PackageSdist]] = [("wheel", w) for w in pkg.wheels or ()]
        if pkg.sdist is not None:
            entries.append(("sdist", pkg.sdist))
        if not entries:
            raise InputError(f"{path}: package {name} lists no wheel or sdist; a closure names the files it installs")
        for kind, entry in entries:
            digest = (entry.hashes or {}).get("sha256", "").lower()
            filename = entry.name or (entry.url.rsplit("/", 1)[-1] if entry.url else None)
            if not _SHA256.match(digest):
                what = filename or f"its {kind}"
                raise InputError(f"{path}: package {name}: {what} has no sha256 hash; lock it with hashes")
            files.append(ClosureFile(name, str(pkg.version), digest, filename, kind))
    return files


def _from_requirements(path: Path, text: str) -> list[ClosureFile]:
    files = []
    for number, line in _logical_lines(text):
        words = line.split()
        if not words:
            continue
        if words[0].startswith("-"):
            raise InputError(f"{path}:{number}: {words[0]} is not supported here; list NAME==VERSION --hash=sha256:…")
        m = _PIN.match(words[0].split(";", 1)[0])
        if m is None:
            raise InputError(f"{path}:{number}: {words[0]!r} is not an exact release; pin it as NAME==VERSION")
        hashes = [w.removeprefix("--hash=") for w in words[1:] if w.startswith("--hash=")]
        digests = [h.removeprefix("sha256:").lower() for h in hashes if h.startswith("sha256:")]
        if not digests or not all(_SHA256.match(d) for d in digests):
            raise InputError(
                f"{path}:{number}: {words[0]} has no --hash=sha256:…; "
                "write the file hashes (pip-compile --generate-hashes)"
            )
        for digest in digests:
            files.append(ClosureFile(canonicalize_name(m["name"]), m["version"], digest, None, "unknown"))
    return files


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each requirement: comments dropped, ``\\`` continuations joined."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        part = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        cont = part.rstrip().endswith("\\")
        part = part.rstrip().removesuffix("\\")
        pending = (pending[0], f"{pending[1]} {part}") if pending else (number, part)
        if not cont:
            lines.append(pending)
            pending = None
    if pending:
        lines.append(pending)
    return [(n, t.strip()) for n, t in lines if t.strip()]
