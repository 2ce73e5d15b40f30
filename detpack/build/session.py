"""One build's session: its build root taken, its controlled environment, its sandbox and its runner.

``session`` takes a build root for a resolved build (private to it when there is a sandbox, else the
fixed one in turn), assembles the controlled environment, makes the sandbox (with a toolchain image's
system in place of this machine's when the build has one) and the runner every subprocess goes through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from detpack import policy
from detpack.build import deps, environment, sandbox
from detpack.build.config import ResolvedBuild
from detpack.build.environment import BuildRoot, LineSink, Runner
from detpack.errors import EnvironmentSetupError
from detpack.wording import Recorded


@dataclass(frozen=True)
class Session:
    """A resolved build holding the build root, with its controlled environment and runner."""

    plan: ResolvedBuild
    root: BuildRoot
    env: environment.ControlledEnvironment
    runner: Runner
    box: sandbox.Sandbox | sandbox.NoSandbox

    def env_dir(self, distribution: str) -> Path:
        """Where the isolated environment for ``distribution`` is made (on this machine)."""
        return self.plan.request.env_dir or self.root.env_dir(distribution)

    @property
    def sdist_extract_dir(self) -> Path:
        return self.plan.request.sdist_extract_dir or self.root.work / "unpacked"


@contextlib.contextmanager
def session(
    plan: ResolvedBuild,
    *,
    on_line: LineSink | None,
    on_step: LineSink | None = None,
    on_warning: LineSink | None = None,
) -> Iterator[Session]:
    """Take a build root for ``plan`` and assemble its controlled environment.

    With a sandbox the root is private to this build (seen at the fixed path by its
    subprocesses), so nothing waits; without one, builds take turns at the fixed path.
    """
    found = sandbox.locate(plan.caller_env)
    if isinstance(found, sandbox.NoSandbox) and plan.require_sandbox:
        raise EnvironmentSetupError(
            f"{plan.source.path}: no sandbox can be made here ({found.reason}); --require-sandbox refuses to "
            "build without one: install bubblewrap (apt-get install bubblewrap) or drop --require-sandbox"
        )
    if isinstance(found, sandbox.NoSandbox) and plan.toolchain is not None:
        raise EnvironmentSetupError(
            f"--toolchain {plan.toolchain.given}: a build runs in its image inside a sandbox, and none can be made "
            f"here ({found.reason}); install bubblewrap (apt-get install bubblewrap)"
        )
    private = not isinstance(found, sandbox.NoSandbox)
    with environment.build_root(plan.root.root, on_wait=on_step, private=private, project=plan.project or "") as root:
        if str(root.seen) != policy.BUILD_ROOT and on_warning is not None:
            on_warning(
                f"build root {root.seen} is not the default {policy.BUILD_ROOT}: compilers run through "
                "PATH map it away, but a backend that runs one by another path may embed it"
            )
        env = environment.controlled_environment(
            epoch=None if plan.epoch.origin == "unset" else plan.epoch.value,
            root=root,
            caller_env=plan.caller_env,
            pass_env=plan.pass_env,
            find_links=plan.find_links,
            offline=plan.offline,
            translate=deps.uv_settings if plan.frontend.installer == "uv" else None,
            umask=plan.request.umask,
            path=plan.toolchain.path if plan.toolchain is not None else None,
        )
        for name in env.injects_code:
            if on_warning is not None:
                on_warning(
                    Recorded(f"{name} is passed to the build: it loads code into every build process (recorded)")
                )
        box = found if isinstance(found, sandbox.NoSandbox) else _sandbox(plan, root, found)
        if plan.toolchain is not None and on_step is not None:
            on_step(f"in toolchain image {plan.toolchain.uri} ({plan.toolchain.platform}, {plan.toolchain.python})")
        if plan.toolchain is not None and on_warning is not None:
            withheld = sorted(k for k in env.redacted if k not in env.named)
            if withheld:
                on_warning(
                    f"{', '.join(withheld)}: hold credentials; installs run the toolchain image's interpreter with "
                    "the network, so they do not get them (name them with --pass-env to trust the image)"
                )
        if isinstance(box, sandbox.NoSandbox) and on_warning is not None:
            on_warning(Recorded(box.warning()))
        runner = Runner(env, on_line, on_warning, sandbox=box if isinstance(box, sandbox.Sandbox) else None, root=root)
        yield Session(plan, root, env, runner, box)


def _git_dirs(gitdir: Path) -> list[Path]:
    """The object stores the build root's copy reads from: the repository's (a linked worktree's
    common one) and every one its ``objects/info/alternates`` borrow from. Only the objects: the
    git directory's config (credentials: ``http.*.extraheader``, tokens in remote URLs) and hooks
    stay out of the sandbox."""
    common = gitdir.parent.parent if gitdir.parent.name == "worktrees" else gitdir
    found = [common / "objects"]
    pending = [common / "objects"]
    seen: set[Path] = set()
    while pending:
        objects = pending.pop()
        if objects in seen:
            continue
        seen.add(objects)
        try:
            lines = (objects / "info" / "alternates").read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.strip() and not line.startswith("#"):
                other = (objects / line.strip()).resolve()  # relative entries are relative to objects/
                found.append(other)
                pending.append(other)
    return found


def _sandbox(plan: ResolvedBuild, root: BuildRoot, bwrap: str) -> sandbox.Sandbox:
    """The sandbox the build's hooks run in: the build root (at its fixed path) and any directory
    the caller chose for the environment or the unpacked sdist writable; the source's git objects
    readable."""
    writable: list[Path | tuple[Path, Path]] = [(root.root, root.seen)]
    writable += [p.absolute() for p in (plan.request.env_dir, plan.request.sdist_extract_dir) if p]
    readonly: list[Path] = []
    if plan.source.git is not None:
        readonly.extend(_git_dirs(plan.source.git.gitdir))
    if not plan.frontend.isolation:
        readonly.append(Path(sys.prefix).resolve())  # --no-isolation: the backend comes from detpack's own environment
    if "LD_PRELOAD" in plan.pass_env:  # a library passed in to load into every process, where it is named
        for entry in re.split(r"[:\s]+", plan.caller_env.get("LD_PRELOAD", "")):
            if os.path.isabs(entry) and os.path.isfile(entry):
                readonly.append(Path(entry))
    return sandbox.make(
        bwrap,
        writable,
        network=plan.allow_network,
        readonly=readonly,
        caller_env=plan.caller_env,
        image_root=plan.toolchain.root if plan.toolchain is not None else None,
    )
