"""Resolutions of unlocked builds, remembered: a repeat build installs without resolving.

A resolution is the files the installer chose for a set of requirements, each with its sha256
and URL. It depends on the requirements, the constraints, the interpreter, the installer and
every installer setting (index URLs, find-links, offline), which are its key, and on what the
index and the find-links folders offer. A local find-links folder's listing (every file's name,
inode, size, mtime and change time) is part of the key, so a folder that changed resolves again, as
is the file a direct reference (``pkg @ file:///…``) names. The index's
answers are taken as valid for ``ttl`` seconds after they were read (600 by default: what
PyPI's simple pages allow a client to cache, ``Cache-Control: max-age=600``, and what uv's own
cache honours); after that, or with ``--refresh``, the requirements are resolved again. An
install that uses no index (``--offline``) depends only on the key.

Entries are JSON under ``CACHE/resolutions``, written by detpack after the installer ran (never
by a hook: the cache is not in any sandbox); a damaged or unreadable entry is resolved again.
The files chosen are installed in hash-checking mode either way, so an entry can make an
install fail, never install other bytes than it names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit
from urllib.request import url2pathname

#: How long an index's answers are taken as valid (seconds): PyPI's simple pages' max-age.
DEFAULT_TTL: Final = 600.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LISTED_MAX = 20_000  # a find-links folder with more files than this is not listed: always resolved again


@dataclass(frozen=True)
class ChosenFile:
    """One file of a resolution: the package, its version, its sha256 and where it comes from."""

    name: str
    version: str
    sha256: str
    url: str


@dataclass(frozen=True)
class Resolution:
    files: tuple[ChosenFile, ...]
    resolved_at: float  # seconds since the epoch
    index: bool  # an index was asked (its answers age); False: find-links and --offline only

    def said(self, now: float) -> str:
        """How the log and the provenance name the reuse."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.resolved_at))
        age = f"{now - self.resolved_at:.0f} s ago" if self.index else "no index asked"
        return f"resolution of {len(self.files)} file(s) made {when} ({age})"


def uses_index(variables: Mapping[str, str]) -> bool:
    """Whether an install with these installer settings asks an index or a server's find-links page
    (its answers age like an index's; ``--offline`` with local folders asks neither)."""
    if any("://" in link for link in _links(variables)):
        return True
    return not (variables.get("UV_NO_INDEX") or variables.get("UV_OFFLINE") or variables.get("PIP_NO_INDEX"))


def _links(variables: Mapping[str, str]) -> set[str]:
    links = [*variables.get("UV_FIND_LINKS", "").split(","), *variables.get("PIP_FIND_LINKS", "").split()]
    return {link for link in links if link}


def facts(
    asked: Collection[str],
    *,
    python: Sequence[str],
    installer: str,
    constraints: Path | None,
    variables: Mapping[str, str],
) -> list[str] | None:
    """Everything a resolution of ``asked`` depends on but the index, or None when something of it
    cannot be known (a constraints file that cannot be read or names another, a find-links folder that
    cannot be read): resolve then."""
    out = [f"asked {r}" for r in sorted(asked)]
    for r in sorted(asked):  # a direct reference to a local file: the file is part of the question
        url = r.partition("@")[2].strip().split(";")[0].strip() if "@" in r else ""
        if url.startswith("file:"):
            try:
                st = Path(url2pathname(urlsplit(url).path)).stat()
            except OSError:
                return None
            out.append(f"direct {url} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}")
    out += [f"python {p}" for p in python]
    try:
        binary = Path(installer)
        st = binary.stat()
        out.append(f"installer {binary.resolve()} {st.st_size} {st.st_mtime_ns}")
        named = [str(constraints)] if constraints is not None else []
        for key in _FILES_NAMED:  # a constraints file a variable names (PIP_CONSTRAINT is passed through)
            named += variables.get(key, "").split()
        for name in named:
            fact = _file_fact(name)
            if fact is None:
                return None
            out.append(fact)
    except OSError:
        return None
    for key in sorted(variables):
        if key.startswith(("UV_", "PIP_")):
            out.append(f"setting {key}={variables[key]}")
    for link in sorted(_links(variables)):
        listing = _listing(Path(link)) if "://" not in link else None
        if listing is None and "://" not in link:
            return None
        out += listing or [f"find-links {link} (remote: aged like the index)"]
    return out


#: Installer settings that name files whose lines shape a resolution.
_FILES_NAMED = ("UV_CONSTRAINT", "PIP_CONSTRAINT", "UV_OVERRIDE", "UV_BUILD_CONSTRAINT")


def _file_fact(name: str) -> str | None:
    """A constraints file by its sha256; None (resolve again) for one that is a URL or names another
    file (``-c``, ``-r``: a line that is an option), whose contents the key would not cover."""
    if "://" in name:
        return None
    data = Path(name).read_bytes()
    if any(line.strip().startswith(b"-") for line in data.splitlines()):
        return None
    return f"constraints {name} {hashlib.sha256(data).hexdigest()}"


def _listing(folder: Path) -> list[str] | None:
    try:
        with os.scandir(folder) as it:
            entries = []
            for n, entry in enumerate(it):
                if n >= _LISTED_MAX:
                    return None
                st = entry.stat()
                # the change time and inode too: a file rewritten (or replaced) with its size and mtime put back
                entries.append(
                    f"find-links {folder}/{entry.name} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"
                )
    except OSError:
        return None
    return sorted(entries)


def _path(cache: Path, key_facts: Sequence[str]) -> Path:
    digest = hashlib.sha256("\n".join(key_facts).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache / "resolutions" / f"{digest}.json"


def recall(cache: Path, key_facts: Sequence[str], *, ttl: float, now: float | None = None) -> Resolution | None:
    """The resolution remembered under ``key_facts`` while it is still valid, else None."""
    now = time.time() if now is None else now
    try:
        data = json.loads(_path(cache, key_facts).read_text(encoding="utf-8"))
        files = tuple(ChosenFile(**f) for f in data["files"])
        made, index = float(data["resolvedAt"]), data["index"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(index, bool) or not files or not all(_sound(f) for f in files):
        return None
    if index and not (0 <= now - made < ttl):
        return None
    return Resolution(files, made, index)


def _sound(f: ChosenFile) -> bool:
    fields = (f.name, f.version, f.sha256, f.url)
    return all(isinstance(v, str) and v and "\n" not in v for v in fields) and bool(_SHA256.fullmatch(f.sha256))


def remember(cache: Path, key_facts: Sequence[str], resolution: Resolution) -> None:
    """Keep ``resolution`` under ``key_facts`` (temp file, then rename: a reader sees all or nothing)."""
    path = _path(cache, key_facts)
    data = {
        "files": [vars(f) for f in resolution.files],
        "resolvedAt": resolution.resolved_at,
        "index": resolution.index,
    }
    with contextlib.suppress(OSError):  # a cache that cannot be written: the next build resolves again
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
