"""The thing being built: a project directory or an sdist, and what identifies it.

``inspect_source`` validates the input and records its identity (git commit and dirty
flag when there is one, else a digest of the tree or the sdist file). ``resolve_epoch``
picks the first that is given, in this order: ``--source-date-epoch``, ``$SOURCE_DATE_EPOCH``,
the git commit time, the sdist's PKG-INFO time, the constant default (1980-01-01). ``copy_tree``
lays a directory out at a fixed path with the usual local clutter left behind; ``copied``
says which paths it takes, and a git source is dirty exactly when one of those differs from
the commit (a stale ``dist/`` or an ignored file does not count). git is only ever read here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detpack import policy
from detpack.archive.entry import READ_ERRORS, BoundedTarInfo
from detpack.digest import file_sha256
from detpack.errors import ArchiveError, ConfigError, InputError
from detpack.git import GitInfo, git_info
from detpack.policy import ANYWHERE_EXCLUDES, TOP_LEVEL_EXCLUDES, left_out_files, parse_epoch
from detpack.wording import Recorded

SourceKind = Literal["directory", "sdist"]
EpochOrigin = Literal["option", "environment", "git", "sdist", "default", "unset"]


@dataclass(frozen=True)
class Source:
    path: Path
    kind: SourceKind
    digest: str
    git: GitInfo | None
    pkg_info_mtime: int | None
    sdist_top: str | None


@dataclass(frozen=True)
class Epoch:
    value: int
    origin: EpochOrigin


def dirty_warning(source: Source) -> str | None:
    """The one-line warning for a source whose files differ from its commit, else None."""
    info = source.git
    if info is None or not info.dirty:
        return None
    return Recorded(
        f"{source.path}: the work tree differs from commit {info.commit[:12]} ({info.modified} modified, "
        f"{info.untracked} untracked files go into the build); the provenance records dirty: true"
    )


def walk(root: Path) -> Iterator[Path]:
    """Every file and symlink under ``root`` that ``copy_tree`` copies, sorted."""
    left_out = left_out_files(root)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        top = here == root
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in ANYWHERE_EXCLUDES and not (top and d in TOP_LEVEL_EXCLUDES) and not (here / d).is_symlink()
        )
        links = [d for d in os.listdir(here) if (here / d).is_symlink() and (here / d).is_dir()]
        for name in sorted([*filenames, *links]):
            if top and (name == ".git" or name in left_out):
                continue
            yield here / name


def tree_digest(root: Path) -> str:
    """sha256 over (path, exec bit or link target, content digest) of every copied file."""
    outer = hashlib.sha256()
    for path in walk(root):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            outer.update(f"l {os.readlink(path)} {rel}\n".encode("utf-8", "surrogateescape"))
            continue
        h = hashlib.sha256()
        try:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        x = "x" if path.stat().st_mode & 0o111 else "-"
        outer.update(f"{x} {h.hexdigest()} {rel}\n".encode("utf-8", "surrogateescape"))
    return outer.hexdigest()


def _sdist_facts(path: Path) -> tuple[str, int]:
    """The sdist's single top-level directory and its PKG-INFO mtime."""
    try:
        with tarfile.open(path, "r:gz", tarinfo=BoundedTarInfo) as tf:
            members = tf.getmembers()
    except READ_ERRORS as exc:
        raise ArchiveError(f"{path}: corrupt or truncated sdist ({exc})") from None
    tops = {m.name.lstrip("./").split("/", 1)[0] for m in members if m.name.strip("./")}
    if len(tops) != 1:
        raise ArchiveError(f"{path}: an sdist must hold one top-level directory, found {sorted(tops)}")
    top = tops.pop()
    for m in members:
        if m.name.lstrip("./") == f"{top}/PKG-INFO" and m.isfile():
            return top, int(m.mtime)
    raise ArchiveError(f"{path}: no {top}/PKG-INFO inside; this is not an sdist")


def inspect_source(path: Path) -> Source:
    """Validate ``path`` as a buildable source and describe it."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        if not (path / "pyproject.toml").is_file() and not (path / "setup.py").is_file():
            raise InputError(f"{path}: not a Python project (no pyproject.toml or setup.py)")
        return Source(path.resolve(), "directory", tree_digest(path), git_info(path), None, None)
    if not path.name.endswith(".tar.gz"):
        raise InputError(f"{path}: expected a project directory or an sdist (.tar.gz)")
    top, mtime = _sdist_facts(path)
    return Source(path.resolve(), "sdist", file_sha256(path), None, mtime, top)


def resolve_epoch(spec: str | None, environ: Mapping[str, str], source: Source) -> Epoch:
    """Pick SOURCE_DATE_EPOCH: ``spec`` (N, 'git' or 'sdist'), then environment, git, sdist, constant."""
    if spec is not None:
        if spec == "git":
            if source.git is None:
                raise ConfigError(f"--source-date-epoch git: {source.path} is not in a git repository with commits")
            return Epoch(source.git.commit_time, "git")
        if spec == "unset":
            # Reproducing a build made without SOURCE_DATE_EPOCH: leave it out of the
            # environment (normalization, if any, still uses the default epoch).
            return Epoch(policy.DEFAULT_EPOCH, "unset")
        if spec == "sdist":
            if source.pkg_info_mtime is None:
                raise ConfigError(f"--source-date-epoch sdist: {source.path} is not an sdist")
            return Epoch(source.pkg_info_mtime, "sdist")
        return Epoch(parse_epoch(spec, "--source-date-epoch"), "option")
    if "SOURCE_DATE_EPOCH" in environ:
        return Epoch(parse_epoch(environ["SOURCE_DATE_EPOCH"], "SOURCE_DATE_EPOCH"), "environment")
    if source.git is not None:
        return Epoch(source.git.commit_time, "git")
    if source.pkg_info_mtime is not None:
        return Epoch(source.pkg_info_mtime, "sdist")
    return Epoch(policy.DEFAULT_EPOCH, "default")


def copy_tree(source: Source, dest: Path) -> None:
    """Copy a directory source's files (``walk``) to ``dest``, keeping modes and symlinks."""
    root = source.path
    dest.mkdir(parents=True, exist_ok=True)
    for path in walk(root):
        target = dest / path.relative_to(root)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                target.symlink_to(os.readlink(path))
            else:
                shutil.copyfile(path, target)
                target.chmod(stat.S_IMODE(path.stat().st_mode))
        except OSError as exc:
            raise InputError(f"{path}: cannot copy it into the build root ({exc.strerror or exc})") from None
