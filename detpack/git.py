"""What git says about a directory, read without ever writing to the repository (no index refresh).

Shared by building (the source's identity), tarballs (``--git``) and images (the commit a layer came from).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

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
    from plumbum import ProcessExecutionError, local  # loaded when git runs: ~0.1 s of every layer and tar
    from plumbum.commands.processes import CommandNotFound

    try:
        return str(local["git"].with_env(GIT_OPTIONAL_LOCKS="0")(*args))
    except (ProcessExecutionError, CommandNotFound, OSError):
        return None


def outside_any_work_tree(path: Path) -> bool:
    """True when git could not find a work tree from ``path``: no ``.git`` in it or any folder above it,
    and no ``GIT_DIR``/``GIT_WORK_TREE`` in the environment. Said without running git (which is what
    ``git_info`` would otherwise start, to learn the same); a ``.git`` found means git is asked."""
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
        return False
    for start in {Path(os.path.abspath(path)), Path(os.path.realpath(path))}:  # git walks up from the real one
        for folder in (start, *start.parents):
            if os.path.lexists(folder / ".git"):
                return False
    return True


def _changes(path: Path, subdir: str) -> tuple[int, int]:
    """(modified, untracked) files under ``path`` that go into the build, per ``git status``."""
    excludes = [f":(exclude){d}/" for d in sorted(policy.TOP_LEVEL_EXCLUDES)]
    out = _git_raw("-C", str(path), "status", "--porcelain", "-z", "--untracked-files=all", "--", ".", *excludes)
    fields = iter((out or "").split("\0"))
    prefix = f"{subdir}/" if subdir else ""
    left_out = policy.left_out_files(path)
    modified = untracked = 0
    for entry in fields:
        if len(entry) < 4:
            continue
        code, rel = entry[:2], entry[3:]
        if code[0] in "RC":
            next(fields, None)  # the rename's or copy's original path
        if code == "!!" or not rel.startswith(prefix) or not policy.copied(rel[len(prefix) :].rstrip("/"), left_out):
            continue
        if code == "??":
            untracked += 1
        else:
            modified += 1
    return modified, untracked


def git_info(path: Path) -> GitInfo | None:
    if outside_any_work_tree(path):
        return None
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


@dataclass(frozen=True)
class Change:
    """One commit since the previous release tag: its subject, trailers and the issues it names."""

    commit: str
    subject: str
    trailers: tuple[tuple[str, str], ...]  # (key, value), as git parses them (unfolded)
    references: tuple[str, ...]  # "#12", "PROJ-123", "owner/repo#7", or an issue URL


#: Trailers whose values name issues or reviews worth linking.
ISSUE_TRAILERS = frozenset({"fixes", "closes", "resolves", "refs", "references", "related", "see"})
_ISSUE = re.compile(
    r"(?<![\w/#-])((?:[\w.-]+/[\w.-]+)?#\d+|[A-Z][A-Z0-9]+-\d+|https?://\S+/(?:issues|pull|merge_requests)/\d+)"
)
#: At most this many commits are recorded (a first release of a long history names the newest).
MAX_CHANGES = 200


def _references(text: str) -> list[str]:
    return [m.rstrip(".,;:)") for m in _ISSUE.findall(text)]


_TRAILER = re.compile(r"^([A-Za-z][\w-]*):\s+(\S.*)$")
_KEYWORD = re.compile(r"^(fix(?:e[sd])?|close[sd]?|resolve[sd]?|refs?|references|related|see)\s+(\S.*)$", re.IGNORECASE)


def _trailers(body: str) -> list[tuple[str, str]]:
    """The trailer block of a commit message (its last paragraph): ``Key: value`` lines, and the
    issue keywords GitHub and GitLab read without a colon (``Fixes #12``, ``Closes PROJ-123``)."""
    paragraphs = [p for p in body.strip().split("\n\n") if p.strip()]
    if not paragraphs:
        return []
    found = []
    for line in paragraphs[-1].splitlines():
        match = _TRAILER.match(line.strip()) or _KEYWORD.match(line.strip())
        if match:
            found.append((match[1], match[2].strip()))
    return found


def changes_since_release(path: Path) -> tuple[str | None, tuple[Change, ...]]:
    """The previous release tag (the newest tag before HEAD's own) and the commits after it, newest first."""
    at_head = set((git_output("-C", str(path), "tag", "--points-at", "HEAD") or "").split())
    since = None
    for rev in ("HEAD^", "HEAD") if at_head else ("HEAD",):
        found = git_output("-C", str(path), "describe", "--tags", "--abbrev=0", rev)
        if found and found not in at_head:
            since = found
            break
    span = f"{since}..HEAD" if since else "HEAD"
    out = _git_raw("-C", str(path), "log", f"--max-count={MAX_CHANGES}", "--format=%H%x1f%s%x1f%b%x1e", span)
    changes = []
    for record in (out or "").split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) != 3 or not fields[0]:
            continue
        commit, subject, body = fields
        trailers = _trailers(body)
        refs = _references(subject)
        for key, value in trailers:
            if key.lower() in ISSUE_TRAILERS:
                refs += _references(value) or [value]
        changes.append(Change(commit.strip(), subject, tuple(trailers), tuple(dict.fromkeys(refs))))
    return since, tuple(changes)
