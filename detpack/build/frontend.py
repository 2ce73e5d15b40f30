"""PEP 517 through the ``build`` library: one distribution per call, raw artifacts out.

``build`` owns the hooks and the isolated environment; detpack owns what is installed into
it (pip with ``--report``, so every installed file's sha256 is known) and how subprocesses
run (``environment.Runner``). Nothing here normalizes: outputs are the backend's own bytes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import subprocess
import tomllib
import warnings
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import build._ctx
import pyproject_hooks
from build import BuildBackendException, BuildException, ProjectBuilder, check_dependency
from build.env import DefaultIsolatedEnv

from detpack.build import envcache
from detpack.build import deps as installer
from detpack.build.environment import Runner
from detpack.errors import BackendError, ConfigError, InputError, LockError
from detpack.build.deps import InstalledDependency, Installer
from detpack.build.lockfile import BuildLock
from detpack.build.source import tree_digest

Distribution = Literal["sdist", "wheel"]
ConfigSettings = Mapping[str, str | list[str]]

LEGACY_BACKEND = "setuptools.build_meta:__legacy__"


@dataclass(frozen=True)
class RawArtifact:
    distribution: Distribution
    path: Path
    backend: str
    requires: tuple[str, ...]
    installed: tuple[InstalledDependency, ...]


@dataclass(frozen=True)
class FrontendSettings:
    config_settings: ConfigSettings
    isolation: bool = True
    installer: Installer = "pip"
    skip_dependency_check: bool = False
    constraints: Path | None = None
    lock: BuildLock | None = None
    env_cache: Path | None = None  # with a lock: keep/reuse build environments here
    uv: str | None = None  # with installer uv: the uv binary (installer.find_uv)


def backend_name(srcdir: Path) -> str:
    """The project's ``build-backend`` (the legacy setuptools one when pyproject has none)."""
    pyproject = srcdir / "pyproject.toml"
    if not pyproject.is_file():
        return LEGACY_BACKEND
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pyproject}: invalid TOML ({exc})") from None
    backend = data.get("build-system", {}).get("build-backend", LEGACY_BACKEND)
    return str(backend)


@contextlib.contextmanager
def _build_logger(runner: Runner) -> Iterator[None]:
    def log(message: str, *, kind: tuple[str, ...] | None = None) -> None:
        for line in message.rstrip("\n").splitlines():
            runner.emit(line)

    token = build._ctx.LOGGER.set(log)
    try:
        # pyproject_hooks re-raises the backend's warnings in this process; collect them
        # for the runner instead of letting Python print them with source lines.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for w in caught:
                    runner.warn(f"{w.category.__name__}: {str(w.message).strip().splitlines()[0]}")
    finally:
        build._ctx.LOGGER.reset(token)


def build_distribution(
    srcdir: Path,
    distribution: Distribution,
    outdir: Path,
    *,
    runner: Runner,
    settings: FrontendSettings,
    env_dir: Path,
    label: Path | None = None,
) -> RawArtifact:
    """Build one distribution of ``srcdir`` into ``outdir`` with the project's backend.

    ``label`` names the project in error messages (the user's path, not the build copy).
    """
    who = label or srcdir
    backend = backend_name(srcdir)
    with _translate_errors(who, f"build the {distribution}", backend, runner), _build_logger(runner):
        if settings.isolation:
            return _isolated(srcdir, distribution, outdir, runner, settings, env_dir, backend)
        return _in_place(srcdir, distribution, outdir, runner, settings, backend, who)


@contextlib.contextmanager
def _translate_errors(who: Path, what: str, backend: str, runner: Runner) -> Iterator[None]:
    """Turn ``build``'s and the installer's failures into one-line detpack errors."""
    try:
        yield
    except BuildBackendException as exc:
        raise BackendError(
            f"{who}: backend {backend!r} failed to {what} ({_cause(exc)})",
            details=runner.log_text()[-8000:],
        ) from None
    except BuildException as exc:
        raise InputError(f"{who}: {exc}") from None
    except subprocess.CalledProcessError as exc:
        output = str(exc.output or "")
        why = installer.install_failure(output) or f"exit status {exc.returncode}"
        raise BackendError(
            f"{who}: installing the build requirements to {what} failed "
            f"({Path(str(exc.cmd[0])).name} exited {exc.returncode}: {why})",
            details=output[-8000:],
        ) from None


def wheel_metadata(srcdir: Path, *, runner: Runner, settings: FrontendSettings, env_dir: Path, label: Path) -> bytes:
    """The wheel's METADATA as the backend prepares it (``prepare_metadata_for_build_wheel``)."""
    backend = backend_name(srcdir)
    with _translate_errors(label, "prepare wheel metadata", backend, runner), _build_logger(runner):
        if settings.isolation:
            with installer.isolated_env(env_dir, installer=settings.installer, uv=settings.uv) as env:
                builder = ProjectBuilder.from_isolated_env(env, srcdir, runner=runner)
                requires = set(builder.build_system_requires)
                _provision(env, requires, runner, settings, label, fresh=True)
                extra = builder.get_requires_for_build("wheel", settings.config_settings)
                _provision(env, extra - requires, runner, settings, label, fresh=False)
                return _read_metadata(builder, env_dir.parent / "metadata")
        builder = ProjectBuilder(srcdir, runner=runner)
        return _read_metadata(builder, env_dir.parent / "metadata")


def resolve_requirements(
    srcdir: Path, *, runner: Runner, settings: FrontendSettings, env_dir: Path, label: Path
) -> tuple[tuple[str, ...], tuple[InstalledDependency, ...]]:
    """Everything a build of ``srcdir`` installs: static requires plus what the backend asks
    for to build an sdist and a wheel, resolved and installed once (for ``detpack lock``)."""
    backend = backend_name(srcdir)
    with _translate_errors(label, "resolve its build requirements", backend, runner), _build_logger(runner):
        with installer.isolated_env(env_dir, installer=settings.installer, uv=settings.uv) as env:
            builder = ProjectBuilder.from_isolated_env(env, srcdir, runner=runner)
            wanted = set(builder.build_system_requires)
            items = _provision(env, wanted, runner, settings, label, fresh=True)
            for dist in ("sdist", "wheel"):
                extra = builder.get_requires_for_build(dist, settings.config_settings) - wanted
                items += _provision(env, extra, runner, settings, label, fresh=False)
                wanted |= extra
        return tuple(sorted(wanted)), installer.merge(items, wanted)


def _read_metadata(builder: ProjectBuilder, where: Path) -> bytes:
    where.mkdir(parents=True, exist_ok=True)
    return (Path(builder.metadata_path(where)) / "METADATA").read_bytes()


def _cause(exc: BuildBackendException) -> str:
    inner = exc.exception
    if isinstance(inner, pyproject_hooks.BackendUnavailable):
        last = [ln for ln in (inner.traceback or "").splitlines() if ln.strip()]
        return f"the backend cannot be imported: {last[-1].strip() if last else inner}"
    if isinstance(inner, subprocess.CalledProcessError):
        return backend_failure(str(inner.output or "")) or f"exit status {inner.returncode}"
    return f"{type(inner).__name__}: {inner}"


def backend_failure(output: str) -> str | None:
    """The line of a failed hook's output that says why, or None for no output.

    The exception line of the last traceback when there is one (the hook's stdout is
    block-buffered, so its lines can land after the traceback), else the last non-blank line.
    """
    lines = output.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.strip() == "Traceback (most recent call last):"]
    if starts:
        indent = len(lines[starts[-1]]) - len(lines[starts[-1]].lstrip())
        for line in lines[starts[-1] + 1 :]:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                return line.strip()
    rest = [ln.strip() for ln in lines if ln.strip()]
    return rest[-1] if rest else None


def _isolated(
    srcdir: Path,
    distribution: Distribution,
    outdir: Path,
    runner: Runner,
    settings: FrontendSettings,
    env_dir: Path,
    backend: str,
) -> RawArtifact:
    if settings.lock is not None and settings.env_cache is not None:
        return _cached(srcdir, distribution, outdir, runner, settings, env_dir, backend)
    with installer.isolated_env(env_dir, installer=settings.installer, uv=settings.uv) as env:
        builder = ProjectBuilder.from_isolated_env(env, srcdir, runner=runner)
        requires = set(builder.build_system_requires)
        installed = _provision(env, requires, runner, settings, srcdir, fresh=True)
        extra = builder.get_requires_for_build(distribution, settings.config_settings)
        installed += _provision(env, extra - requires, runner, settings, srcdir, fresh=False)
        path = builder.build(distribution, outdir, settings.config_settings)
    deps = installer.merge(installed, requires | extra)
    return RawArtifact(distribution, Path(path), backend, tuple(sorted(requires | extra)), deps)


def _cached(
    srcdir: Path,
    distribution: Distribution,
    outdir: Path,
    runner: Runner,
    settings: FrontendSettings,
    env_dir: Path,
    backend: str,
) -> RawArtifact:
    """A locked build in an environment reused from the cache when it verifies."""
    assert settings.lock is not None and settings.env_cache is not None
    with envcache.cached_env(
        settings.env_cache, settings.lock, runner, installer=settings.installer, uv=settings.uv, env_dir=env_dir
    ) as (env, items, reused):
        runner.emit(f"{'reusing' if reused else 'made'} cached build environment for lock {settings.lock.sha256[:12]}")
        builder = ProjectBuilder.from_isolated_env(env, srcdir, runner=runner)
        requires = set(builder.build_system_requires)
        _require_locked(settings.lock.path, requires, env, srcdir)  # the backend first: it must import
        facts = [
            settings.lock.sha256,
            distribution,
            json.dumps(settings.config_settings, sort_keys=True),
            tree_digest(srcdir),
            backend,
        ]
        extra = envcache.cached_requires(
            settings.env_cache,
            facts,
            lambda: set(builder.get_requires_for_build(distribution, settings.config_settings)),
        )
        _require_locked(settings.lock.path, extra, env, srcdir)
        path = builder.build(distribution, outdir, settings.config_settings)
    deps = installer.merge(items, requires | extra)
    return RawArtifact(distribution, Path(path), backend, tuple(sorted(requires | extra)), deps)


def _require_locked(lock: Path, requirements: Collection[str], env: object, who: Path) -> None:
    missing = installer.unmet(requirements, installer.installed_versions(env))
    if missing:
        raise LockError(f"{lock}: does not satisfy {', '.join(missing)} (needed to build {who}); re-run `detpack lock`")


def _provision(
    env: DefaultIsolatedEnv,
    requirements: Collection[str],
    runner: Runner,
    settings: FrontendSettings,
    who: Path,
    *,
    fresh: bool,
) -> list[dict[str, object]]:
    """Install ``requirements``; with a lock, install the whole lock once and check it covers them."""
    if settings.lock is None:
        return installer.install(
            env,
            requirements,
            runner,
            installer=settings.installer,
            constraints=settings.constraints,
            fresh=fresh,
            uv=settings.uv,
        )
    items = (
        installer.install_locked(env, settings.lock, runner, installer=settings.installer, uv=settings.uv)
        if fresh
        else []
    )
    missing = installer.unmet(requirements, installer.installed_versions(env))
    if missing:
        raise LockError(
            f"{settings.lock.path}: does not satisfy {', '.join(missing)} (needed to build {who}); "
            "re-run `detpack lock`"
        )
    return items


def _in_place(
    srcdir: Path,
    distribution: Distribution,
    outdir: Path,
    runner: Runner,
    settings: FrontendSettings,
    backend: str,
    who: Path,
) -> RawArtifact:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    builder = ProjectBuilder(srcdir, runner=runner)
    requires = set(builder.build_system_requires)
    if not settings.skip_dependency_check:
        # The backend itself first: without it, asking it for more requirements fails.
        missing_backend = {" -> ".join(chain) for req in requires for chain in check_dependency(req)}
        if missing_backend:
            raise ConfigError(
                f"{who}: --no-isolation but the build backend's requirements are missing: "
                f"{', '.join(sorted(missing_backend))}; install them or drop --no-isolation"
            )
        missing = builder.check_dependencies(distribution, settings.config_settings)
        if missing:
            flat = sorted({" -> ".join(chain) for chain in missing})
            raise ConfigError(
                f"{who}: --no-isolation but build dependencies are missing: {', '.join(flat)}; "
                "install them or drop --no-isolation"
            )
    extra = builder.get_requires_for_build(distribution, settings.config_settings)
    path = builder.build(distribution, outdir, settings.config_settings)
    deps: list[InstalledDependency] = []
    for req in sorted(requires | extra):
        name = canonicalize_name(Requirement(req).name)
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        deps.append(InstalledDependency(name, version, None, None, True))
    return RawArtifact(distribution, Path(path), backend, tuple(sorted(requires | extra)), tuple(deps))


__all__ = ["ConfigSettings", "Distribution", "FrontendSettings", "Installer", "RawArtifact", "backend_failure"]
