"""The thing being built: a project directory or an sdist, and what identifies it.

``inspect_source`` validates the input and records its identity (git commit and dirty
flag when there is one, else a digest of the tree or the sdist file). ``resolve_epoch``
applies DESIGN's order: option, environment, git, sdist PKG-INFO, constant. ``copy_tree``
lays a directory out at a fixed path with the usual local clutter left behind.
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

from plumbum import ProcessExecutionError, local
from plumbum.commands.processes import CommandNotFound

from detpack import policy
from detpack.archive.entry import READ_ERRORS
from detpack.environment import redact
from detpack.errors import ArchiveError, ConfigError, InputError
from detpack.policy import parse_epoch

SourceKind = Literal["directory", "sdist"]
EpochOrigin = Literal["option", "environment", "git", "sdist", "default", "unset"]

#: Left out when a directory is copied into the build root: local clutter a fresh checkout
#: does not have (a stale build/ tree is a classic source of drift). ``*.egg-info`` is kept:
#: setuptools takes an sdist's file list from its SOURCES.txt when there is no VCS.
TOP_LEVEL_EXCLUDES = frozenset({".venv", "venv", ".tox", ".nox", "build", "dist", ".eggs", ".git"})
ANYWHERE_EXCLUDES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


@dataclass(frozen=True)
class GitInfo:
    toplevel: Path
    gitdir: Path
    commit: str
    dirty: bool
    commit_time: int
    remote: str | None
    subdir: str


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


def git_output(*args: str) -> str | None:
    try:
        return str(local["git"](*args)).strip()
    except (ProcessExecutionError, CommandNotFound, OSError):
        return None


def git_info(path: Path) -> GitInfo | None:
    top = git_output("-C", str(path), "rev-parse", "--show-toplevel")
    if not top:
        return None
    commit = git_output("-C", str(path), "rev-parse", "HEAD")
    if not commit:
        return None  # a repository without commits says nothing about the source
    gitdir = git_output("-C", str(path), "rev-parse", "--absolute-git-dir") or str(Path(top) / ".git")
    status = git_output("-C", str(path), "status", "--porcelain", "--untracked-files=normal", "--", ".")
    ctime = git_output("-C", str(path), "log", "-1", "--format=%ct")
    remote = git_output("-C", str(path), "config", "--get", "remote.origin.url")
    subdir = os.path.relpath(path.resolve(), Path(top).resolve())
    return GitInfo(
        toplevel=Path(top),
        gitdir=Path(gitdir),
        commit=commit,
        dirty=bool(status),
        commit_time=int(ctime) if ctime else policy.DEFAULT_EPOCH,
        remote=redact(remote) if remote else None,
        subdir="" if subdir == "." else subdir,
    )


def walk(root: Path) -> Iterator[Path]:
    """Every file and symlink under ``root`` that ``copy_tree`` copies, sorted."""
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
            if top and name == ".git":
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
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        x = "x" if path.stat().st_mode & 0o111 else "-"
        outer.update(f"{x} {h.hexdigest()} {rel}\n".encode("utf-8", "surrogateescape"))
    return outer.hexdigest()


def _sdist_facts(path: Path) -> tuple[str, int]:
    """The sdist's single top-level directory and its PKG-INFO mtime."""
    try:
        with tarfile.open(path, "r:gz") as tf:
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
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return Source(path.resolve(), "sdist", h.hexdigest(), None, mtime, top)


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
    """Copy a directory source to ``dest``; link its git metadata so VCS-versioning plugins work."""
    root = source.path
    dest.mkdir(parents=True)
    for path in walk(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
        else:
            shutil.copyfile(path, target)
            target.chmod(stat.S_IMODE(path.stat().st_mode))
    if source.git is not None and not source.git.subdir:
        # A gitdir file, not a copy: cheap for big histories; GIT_OPTIONAL_LOCKS=0 in the
        # controlled environment keeps git from rewriting the user's index.
        (dest / ".git").write_text(f"gitdir: {source.git.gitdir}\n", encoding="utf-8")
