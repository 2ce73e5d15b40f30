"""What git says about a directory, read without ever writing to the repository (no index refresh).

Shared by building (the source's identity), tarballs (``--git``) and images (the commit a layer came from).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plumbum import ProcessExecutionError, local
from plumbum.commands.processes import CommandNotFound

from detpack import policy
from detpack.wording import redact


@dataclass(frozen=True)
class GitInfo:
    """What git says about a directory source, read without writing to the repository."""

    toplevel: Path  # the repository's work tree
    gitdir: Path  # its git directory (a linked worktree's own, not the common one)
    commit: str  # HEAD
    dirty: bool  # the files that go into the build differ from HEAD (modified or untracked > 0)
    commit_time: int  # HEAD's committer time, seconds
    remote: str | None  # remote.origin.url, credentials redacted
    subdir: str  # the project's path inside the work tree ("" at the top), POSIX
    modified: int = 0  # tracked files that go into the build and differ from HEAD
    untracked: int = 0  # untracked, not ignored files that go into the build
    branch: str | None = None  # the checked-out branch, None when HEAD is detached
    tags: tuple[str, ...] = ()  # the tags that point at HEAD, sorted

    @property
    def refs(self) -> tuple[str, ...]:
        """The full names of the refs at HEAD: the branch checked out, then its tags."""
        branch = (f"refs/heads/{self.branch}",) if self.branch else ()
        return branch + tuple(f"refs/tags/{t}" for t in self.tags)


def git_output(*args: str) -> str | None:
    """git's stripped output, or None when git is missing or fails; never writes the index."""
    out = _git_raw(*args)
    return None if out is None else out.strip()


def _git_raw(*args: str) -> str | None:
    try:
        return str(local["git"].with_env(GIT_OPTIONAL_LOCKS="0")(*args))
    except (ProcessExecutionError, CommandNotFound, OSError):
        return None


def _changes(path: Path, subdir: str) -> tuple[int, int]:
    """(modified, untracked) files under ``path`` that go into the build, per ``git status``."""
    excludes = [f":(exclude){d}/" for d in sorted(policy.TOP_LEVEL_EXCLUDES)]
    out = _git_raw("-C", str(path), "status", "--porcelain", "-z", "--untracked-files=all", "--", ".", *excludes)
    fields = iter((out or "").split("\0"))
    prefix = f"{subdir}/" if subdir else ""
    modified = untracked = 0
    for entry in fields:
        if len(entry) < 4:
            continue
        code, rel = entry[:2], entry[3:]
        if code[0] in "RC":
            next(fields, None)  # the rename's or copy's original path
        if code == "!!" or not rel.startswith(prefix) or not policy.copied(rel[len(prefix) :].rstrip("/")):
            continue
        if code == "??":
            untracked += 1
        else:
            modified += 1
    return modified, untracked


def git_info(path: Path) -> GitInfo | None:
    top = git_output("-C", str(path), "rev-parse", "--show-toplevel")
    if not top:
        return None
    commit = git_output("-C", str(path), "rev-parse", "HEAD")
    if not commit:
        return None  # a repository without commits says nothing about the source
    gitdir = git_output("-C", str(path), "rev-parse", "--absolute-git-dir") or str(Path(top) / ".git")
    ctime = git_output("-C", str(path), "log", "-1", "--format=%ct")
    remote = git_output("-C", str(path), "config", "--get", "remote.origin.url")
    branch = git_output("-C", str(path), "symbolic-ref", "-q", "--short", "HEAD")
    subdir = os.path.relpath(path.resolve(), Path(top).resolve())
    subdir = "" if subdir == "." else Path(subdir).as_posix()
    modified, untracked = _changes(path, subdir)
    tags = git_output("-C", str(path), "tag", "--points-at", "HEAD") or ""
    return GitInfo(
        toplevel=Path(top),
        gitdir=Path(gitdir),
        commit=commit,
        dirty=bool(modified or untracked),
        commit_time=int(ctime) if ctime else policy.DEFAULT_EPOCH,
        remote=redact(remote) if remote else None,
        subdir=subdir,
        modified=modified,
        untracked=untracked,
        branch=branch or None,
        tags=tuple(sorted(t for t in tags.splitlines() if t)),
    )
