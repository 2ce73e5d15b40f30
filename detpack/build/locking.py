"""``detpack lock``: resolve a project's build dependencies into a PEP 751 lock.

Static ``[build-system].requires`` plus what the backend asks for to build an sdist and a
wheel (``get_requires_for_build_*``), resolved by pip for this interpreter and platform in
the controlled environment; each installed file's sha256 comes from pip's install report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import detpack
from detpack.atomic import write_bytes
from detpack.build import environment
from detpack.build.config import BuildRequest, backend_name, resolve
from detpack.build.environment import LineSink
from detpack.build.frontend import resolve_requirements
from detpack.build.lockfile import DEFAULT_NAME, LockedPackage, lock_bytes
from detpack.build.session import session
from detpack.build.workspace import lay_out
from detpack.errors import ConfigError


@dataclass(frozen=True)
class LockResult:
    path: Path
    requires: tuple[str, ...]
    packages: tuple[LockedPackage, ...]


def create_lock(
    request: BuildRequest,
    output: Path | None = None,
    *,
    on_line: LineSink | None = None,
    on_step: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
) -> LockResult:
    plan = resolve(request, caller_env=caller_env)
    source = plan.source
    if source.kind != "directory":
        raise ConfigError(f"{source.path}: lock a project directory, not an sdist")
    target = output or source.path / DEFAULT_NAME
    with session(plan, on_line=on_line, on_step=on_step) as ses, environment.applied(ses.env):
        srcdir = lay_out(source, ses.root)
        if on_step:
            on_step(f"resolving build requirements of {source.path}")
        requires, installed = resolve_requirements(
            srcdir,
            runner=ses.runner,
            settings=replace(plan.frontend, lock=None, env_cache=None),  # resolve afresh, not from an old lock
            env_dir=ses.root.env_dir("lock"),
            backend=plan.backend or backend_name(srcdir),
            label=source.path,
        )
    packages = []
    for dep in installed:
        if not dep.sha256:
            raise ConfigError(
                f"{source.path}: the installer did not report a sha256 for {dep.name} {dep.version}; "
                "lock with --installer pip"
            )
        packages.append(LockedPackage(dep.name, dep.version, dep.sha256, None, dep.url))
    data = lock_bytes(packages, requires=requires, created_by=f"detpack {detpack.__version__}", project=plan.project)
    write_bytes(target, data)
    return LockResult(target, requires, tuple(packages))
