"""PEP 517 through the ``build`` library: one distribution per call, raw artifacts out.

``build`` owns the hooks and the isolated environment; detpack owns what is installed into
it (``deps.provisioned``: pip with ``--report``, so every installed file's sha256 is known)
and how subprocesses run (``environment.Runner``). Nothing here normalizes: outputs are the
backend's own bytes. The caller names the backend (read once from pyproject.toml by
``config``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyproject_hooks
from build import BuildBackendException, BuildException, ProjectBuilder, check_dependency
from packaging.requirements import InvalidRequirement, Requirement

from detpack import policy
from detpack.build import deps, installerrors, provision, sandbox, untrusted
from detpack.build.config import ConfigSettings, Distribution, FrontendSettings
from detpack.build.deps import InstalledDependency, Installer, Provisioner
from detpack.build.environment import Runner
from detpack.build.source import tree_digest
from detpack.errors import ArchiveError, BackendError, ConfigError, HookError, InputError


@dataclass(frozen=True)
class RawArtifact:
    distribution: Distribution
    path: Path
    backend: str
    requires: tuple[str, ...]
    installed: tuple[InstalledDependency, ...]
    reused: tuple[str, ...] = ()  # what the build took from before instead of doing again (``Provisioner.reused``)


_T = TypeVar("_T")

BuildLog = Callable[..., None]  # build's logger: (message, *, kind=None)


def _route_build_log(log: BuildLog) -> Callable[[], None]:
    """Send ``build``'s own messages ("Getting build dependencies for wheel...") to ``log``;
    returns the function that puts the previous logger back.

    ``build`` (1.6) has no public logging hook: its CLI sets the context variable
    ``build._ctx.LOGGER``. This is the one place detpack touches it;
    tests/test_edges.py::test_build_messages_reach_the_runner fails when ``build`` changes it.
    """
    import build._ctx

    token = build._ctx.LOGGER.set(log)
    return lambda: build._ctx.LOGGER.reset(token)


@contextlib.contextmanager
def _build_logger(runner: Runner) -> Iterator[None]:
    def log(message: str, *, kind: tuple[str, ...] | None = None) -> None:
        for line in message.rstrip("\n").splitlines():
            runner.emit(line)

    restore = _route_build_log(log)
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
        restore()


#: Backends that build in a directory of a random name unless told one, and write its path into
#: the wheel (meson-python's ``.mesonpy-XXXXXXXX`` lands in a project's generated
#: ``_build_config.py``): the setting that fixes it, and the fixed name (inside the source tree,
#: which is at a fixed path).
FIXED_BUILD_DIR = {"mesonpy": ("build-dir", ".mesonpy-detpack")}


def fixed_build_dirs(settings: FrontendSettings, backend: str) -> FrontendSettings:
    """``settings`` with a fixed build directory for a backend that would pick a random one,
    unless the user chose one."""
    fixed = FIXED_BUILD_DIR.get(backend)
    if fixed is None or fixed[0] in settings.config_settings:
        return settings
    return dataclasses.replace(settings, config_settings={**settings.config_settings, fixed[0]: fixed[1]})


def build_distribution(
    srcdir: Path,
    distribution: Distribution,
    outdir: Path,
    *,
    runner: Runner,
    settings: FrontendSettings,
    env_dir: Path,
    backend: str,
    label: Path | None = None,
) -> RawArtifact:
    """Build one distribution of ``srcdir`` into ``outdir`` with ``backend`` (the project's).

    ``label`` names the project in error messages (the user's path, not the build copy).
    """
    who = label or srcdir
    settings = fixed_build_dirs(settings, backend)
    with _translate_errors(who, f"build the {distribution}", backend, runner), _build_logger(runner):
        if not settings.isolation:
            return _in_place(srcdir, distribution, outdir, runner, settings, backend, who)
        with provision.provisioned(env_dir, settings.install, runner, who) as env:
            builder, requires = _provision(env, srcdir, (distribution,), runner, settings, backend, who)
            path = _answer(lambda: builder.build(distribution, outdir, settings.config_settings), who, backend)
            installed, reused = env.installed(), tuple(env.reused)
    return RawArtifact(distribution, Path(path), backend, tuple(sorted(requires)), installed, reused)


def wheel_metadata(
    srcdir: Path, *, runner: Runner, settings: FrontendSettings, env_dir: Path, root: Path, backend: str, label: Path
) -> bytes:
    """The wheel's METADATA as the backend prepares it (``prepare_metadata_for_build_wheel``) in ``root`` (the
    build root: not ``env_dir``'s parent, which ``--env-dir`` makes a folder of the user's)."""
    with _translate_errors(label, "prepare wheel metadata", backend, runner), _build_logger(runner):
        if settings.isolation:
            with provision.provisioned(env_dir, settings.install, runner, label) as env:
                builder, _ = _provision(env, srcdir, ("wheel",), runner, settings, backend, label)
                return _read_metadata(builder, root, settings, backend, label)
        return _read_metadata(ProjectBuilder(srcdir, runner=runner), root, settings, backend, label)


def resolve_requirements(
    srcdir: Path, *, runner: Runner, settings: FrontendSettings, env_dir: Path, backend: str, label: Path
) -> tuple[tuple[str, ...], tuple[InstalledDependency, ...]]:
    """Everything a build of ``srcdir`` installs: static requires plus what the backend asks
    for to build an sdist and a wheel, resolved and installed once (for ``detpack lock``)."""
    with (
        _translate_errors(label, "resolve its build requirements", backend, runner),
        _build_logger(runner),
        provision.provisioned(env_dir, settings.install, runner, label) as env,
    ):
        _, wanted = _provision(env, srcdir, ("sdist", "wheel"), runner, settings, backend, label)
        return tuple(sorted(wanted)), env.installed()


def _provision(
    env: Provisioner,
    srcdir: Path,
    distributions: tuple[Distribution, ...],
    runner: Runner,
    settings: FrontendSettings,
    backend: str,
    who: Path,
) -> tuple[ProjectBuilder, set[str]]:
    """The builder for ``srcdir`` in ``env``, with everything the backend needs for ``distributions``."""
    builder = ProjectBuilder.from_isolated_env(env.env, srcdir, runner=runner)
    wanted = set(builder.build_system_requires)
    checked_answer(wanted, "its [build-system] requires", backend, who, direct=True)
    wanted |= set(settings.also_install)
    env.require(wanted)  # the backend first: it must import to be asked for more
    cs = settings.config_settings
    for dist in distributions:

        def facts(dist: Distribution = dist) -> list[str]:
            return [dist, json.dumps(cs, sort_keys=True), tree_digest(srcdir), backend]

        def ask(dist: Distribution = dist) -> set[str]:
            env.ready()  # the backend must be there to be asked
            return set(builder.get_requires_for_build(dist, cs))

        extra = env.requires_for(facts, ask)
        checked_answer(extra, f"hook get_requires_for_build_{dist}", backend, who)
        env.require(extra)
        wanted |= extra
    env.ready()
    return builder, wanted


def checked_answer(answer: set[str], source: str, backend: str, who: Path, *, direct: bool = False) -> None:
    """A hook's requirements, refused unless each is one PEP 508 requirement by name: no options,
    no line breaks, no direct reference (a URL or a path; ``direct``: allowed, for the project's own
    ``[build-system] requires``). The installer reads them as lines of a requirements file, where any
    of those makes it fetch, or build, what the backend chose."""
    for text in sorted(answer, key=repr):
        problem = _requirement_problem(text, direct)
        if problem is not None:
            fix = "fix pyproject.toml" if direct else "list it in [build-system] requires if the project needs it"
            raise InputError(
                f"{who}: backend {backend!r}, {source}, asks for {text!r}: {problem}; refusing to install it ({fix})"
            )


def _requirement_problem(text: object, direct: bool) -> str | None:
    if not isinstance(text, str):
        return "not a requirement (not a string)"
    if any(c in text for c in "\r\n\0") or text.strip().startswith("-"):
        return "not a requirement (an installer option or more than one line)"
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        return f"not a requirement ({str(exc).splitlines()[0]})"
    if req.url is not None and not direct:
        return "a direct reference (a URL or a path) the project did not give"
    return None


@contextlib.contextmanager
def _translate_errors(who: Path, what: str, backend: str, runner: Runner) -> Iterator[None]:
    """Turn ``build``'s and the installer's failures into one-line detpack errors."""
    try:
        yield
    except BuildBackendException as exc:
        # only the failed hook's own output: an install before it may have printed anything
        inner = exc.exception
        hook_output = str(inner.output or "") if isinstance(inner, subprocess.CalledProcessError) else ""
        if runner.sandbox is not None and not runner.sandbox.network and sandbox.network_attempt(hook_output):
            hook = re.search(r"invoke (\w+)", str(exc))
            raise BackendError(
                f"{who}: the backend tried to reach the network during {hook[1] if hook else what} (builds run "
                "without network); pass --allow-network to permit it (the provenance will say so)",
                details=runner.log_text()[-8000:],
            ) from None
        cause = _cause(exc)
        raise HookError(
            f"{who}: backend {backend!r} failed to {what} ({cause})",
            reason=cause,
            details=runner.log_text()[-8000:],
        ) from None
    except BuildException as exc:
        raise InputError(f"{who}: {exc}") from None
    except subprocess.CalledProcessError as exc:
        output = str(exc.output or "")
        why = installerrors.install_failure(output) or f"exit status {exc.returncode}"
        raise BackendError(
            f"{who}: installing the build requirements to {what} failed "
            f"({Path(str(exc.cmd[0])).name} exited {exc.returncode}: {why})",
            details=output[-8000:],
        ) from None


def _answer(call: Callable[[], _T], who: Path, backend: str) -> _T:
    """``build``'s ``build`` or ``prepare``, which join the hook's answer to the output directory: an answer
    that is not a string (a number, None from the hook's JSON) makes that a TypeError, said in one line."""
    try:
        return call()
    except TypeError as exc:
        raise BackendError(
            f"{who}: backend {backend!r} answered with something that is not a file name ({exc}); refusing it"
        ) from None


def check_output(raw: RawArtifact, outdir: Path, project: Path) -> None:
    """The file a backend says it wrote: a plain name in ``outdir``, a regular file reached through
    real directories (a hook could have left a link to a host file there, or a FIFO)."""
    path = raw.path
    if path.parent != outdir or path.name in ("", ".", "..") or "/" in path.name:
        raise BackendError(f"{project}: backend {raw.backend!r} named {str(path)!r} as its {raw.distribution}, "
                           f"not a file in the output directory it was given")  # fmt: skip
    try:
        untrusted.plain_file(outdir.parent.parent, path, f"the {raw.distribution} of backend {raw.backend!r}")
    except untrusted.NotPlain as exc:
        raise BackendError(f"{project}: {exc.message}") from None


def _read_metadata(builder: ProjectBuilder, root: Path, settings: FrontendSettings, backend: str, label: Path) -> bytes:
    """The METADATA the backend prepares in ``root/metadata`` or, without that hook, the one of the wheel it
    builds there. Not ``build``'s ``metadata_path``: it reads whatever directory the hook's answer names and
    unpacks the hook's wheel (a link to a host file, a bomb) on the host. Here the answer must name a
    directory in the one given, every path is read as ``untrusted`` says, and the wheel's member as
    ``archive.small`` does."""
    where = untrusted.fresh_dir(root, root / "metadata")
    what = f"the metadata of backend {backend!r}"
    try:
        prepared = _answer(lambda: builder.prepare("wheel", where, settings.config_settings), label, backend)
        if prepared is None:  # no prepare_metadata_for_build_wheel: the wheel it builds has it
            wheel = Path(_answer(lambda: builder.build("wheel", where, settings.config_settings), label, backend))
            if wheel.parent != where or wheel.name in ("", ".", ".."):
                raise BackendError(f"{label}: backend {backend!r} named {str(wheel)!r} as its wheel, outside "
                                   "the directory it was given")  # fmt: skip
            untrusted.plain_file(root, wheel, f"the wheel of backend {backend!r} (built for its METADATA)")
            return _wheel_metadata(wheel, label)
        path = Path(prepared)
        if path.parent != where or path.name in ("", ".", ".."):
            raise BackendError(f"{label}: backend {backend!r} named {prepared!r} as its metadata directory, outside "
                               "the directory it was given; refusing to read its METADATA")  # fmt: skip
        metadata = untrusted.plain_file(root, path / "METADATA", what)
        limit = policy.DEFAULT_LIMITS.max_metadata_bytes
        data = untrusted.read_plain(metadata, limit + 1)
    except untrusted.NotPlain as exc:
        raise BackendError(f"{label}: {exc.message}") from None
    if data is None:
        raise BackendError(f"{label}: {what}: METADATA is not a regular file; refusing to read it")
    if len(data) > limit:
        raise BackendError(f"{label}: {what}: METADATA holds more than {limit} bytes (limit max_metadata_bytes)")
    return data


def _wheel_metadata(wheel: Path, label: Path) -> bytes:
    from detpack.archive.small import dist_info_member, open_zip_small

    try:
        with open_zip_small(wheel) as zf:
            data = dist_info_member(zf, "METADATA", f"{label}: the wheel {wheel.name}")
    except ArchiveError as exc:
        raise BackendError(exc.message) from None
    if not data:
        raise BackendError(f"{label}: the wheel {wheel.name} has no one .dist-info/METADATA")
    return data


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


def _in_place(
    srcdir: Path,
    distribution: Distribution,
    outdir: Path,
    runner: Runner,
    settings: FrontendSettings,
    backend: str,
    who: Path,
) -> RawArtifact:
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
    path = _answer(lambda: builder.build(distribution, outdir, settings.config_settings), who, backend)
    installed = deps.present(requires | extra)
    return RawArtifact(distribution, Path(path), backend, tuple(sorted(requires | extra)), installed)


__all__ = [
    "ConfigSettings",
    "Distribution",
    "FrontendSettings",
    "Installer",
    "RawArtifact",
    "backend_failure",
    "build_distribution",
    "resolve_requirements",
    "wheel_metadata",
]
