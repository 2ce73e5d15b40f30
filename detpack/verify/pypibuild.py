"""One rebuild of a published wheel, and its verdict: the values ``verify.pypi`` and ``verify.pypireplay`` share.

``rebuild_wheel`` builds the wheel from the release's sdist as a ``How`` says (the publisher's
backend pinned, its epoch, clock, umask, switches), keeping the backend's bytes; ``judge`` compares
it with the published wheel: byte-identical, content-identical (with what else differs) or
different (with which members).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detpack import policy
from detpack.build.config import BuildRequest, FrontendSettings
from detpack.build.environment import LineSink
from detpack.build.pipeline import build_project
from detpack.verify.compare import FileComparison, compare_files, same_bytes

Verdict = Literal["byte-identical", "content-identical", "different"]


Outcome = tuple[Verdict, FileComparison | None]


@dataclass(frozen=True)
class Fetch:
    """Where pip may get the release from: the user's index settings, plus these."""

    find_links: tuple[Path, ...] = ()  # folders (or URLs) pip also looks in
    offline: bool = False  # no index at all: only find_links

    def pip_flags(self) -> list[str]:
        flags = [f for d in self.find_links for f in ("--find-links", str(d))]
        return ["--no-index", *flags] if self.offline else flags


@dataclass(frozen=True)
class Rebuild:
    """How every wheel of one release is rebuilt: from which sdist, into where, with which hooks."""

    spec: str
    sdist: Path
    rebuilt: Path  # the rebuilt wheels' directory
    scratch: Path  # for the backend's constraints file
    fetch: Fetch
    on_step: LineSink | None
    on_line: LineSink | None
    caller_env: Mapping[str, str] | None
    #: pip's and uv's upload-time cutoff for every install of the rebuild (empty: none)
    dated: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class How:
    """How one wheel is rebuilt: the constraints file, the epoch, and what was turned on to match."""

    constraints: Path | None
    epoch: int | None
    variable: str | None = None  # NAME=VALUE: the project's switch for leaving out compiled speedups
    config: Mapping[str, str] = dataclasses.field(default_factory=dict)  # -C settings
    faked: Mapping[str, str] = dataclasses.field(default_factory=dict)  # libfaketime's variables
    umask: int = policy.UMASK  # the publisher's, as the modes of the wheel's generated files show it
    modes_kept: bool = False  # the publisher's frontend unpacked the sdist with its modes as they are
    also_install: tuple[str, ...] = ()  # beside the backend: the publisher's metadata writer (wheel<=0.40)
    setuptools: str | None = None  # the cap on setuptools behind bdist_wheel that writes the publisher's METADATA


@dataclass(frozen=True)
class Built:
    path: Path
    sha256: str


def as_of(when: int) -> dict[str, str]:
    """pip's and uv's "nothing uploaded after": every build requirement, to the last transitive
    one (hatch-vcs's setuptools-scm, the setuptools behind ``bdist_wheel``), as the index had it."""
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return {"PIP_UPLOADED_PRIOR_TO": moment, "UV_EXCLUDE_NEWER": moment}


def rebuild_wheel(rebuild: Rebuild, how: How) -> Built:
    """Build the wheel from the sdist (backend bytes kept) as ``how`` says; every variable it sets
    is passed through, so the rebuild's own provenance records it."""
    caller_env = dict(rebuild.caller_env or os.environ)
    name = None
    if how.variable is not None:
        name, _, value = how.variable.partition("=")
        caller_env[name] = value
    caller_env.update({**rebuild.dated, **how.faked})
    passed = ((name,) if name is not None else ()) + tuple(rebuild.dated) + tuple(how.faked)
    request = BuildRequest(
        srcdir=rebuild.sdist,
        outdir=rebuild.rebuilt,
        distributions=("wheel",),
        frontend=FrontendSettings(
            config_settings=dict(how.config), constraints=how.constraints, also_install=how.also_install
        ),
        epoch_spec="unset" if how.epoch is None else str(how.epoch),
        pass_env=passed,
        normalize=False,
        find_links=rebuild.fetch.find_links,
        offline=rebuild.fetch.offline,
        umask=how.umask,
        sdist_modes_kept=how.modes_kept,
    )
    built = build_project(request, on_step=rebuild.on_step, on_line=rebuild.on_line, caller_env=caller_env)
    return Built(built.artifacts[0].path, built.artifacts[0].sha256)


_RANK = {"byte-identical": 0, "content-identical": 1, "different": 2}


def better(a: Outcome, b: Outcome) -> bool:
    """Whether outcome ``a`` is nearer the published wheel than ``b``: a better verdict, or the same
    verdict with fewer differing members, or as many with fewer differences (a mode put right)."""

    def key(o: Outcome) -> tuple[int, int, int]:
        if o[1] is None:
            return _RANK[o[0]], 0, 0
        return _RANK[o[0]], o[1].members_differing, len(o[1].differences)

    return key(a) < key(b)


def judge(published: Path, rebuilt: Path) -> tuple[Verdict, FileComparison | None]:
    """Byte-identical; content-identical, with what else differs; or different, with which members."""
    if same_bytes(published, rebuilt):
        return "byte-identical", None
    content = compare_files(published, rebuilt, published.name, content_only=True)
    if content.identical:
        return "content-identical", compare_files(published, rebuilt, published.name)
    return "different", content
