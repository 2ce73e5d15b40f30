"""Build settings: the request as given, ``[tool.detpack]``, and the build they resolve to.

``BuildRequest`` is what a caller asks for and is never rewritten. ``resolve`` merges it
with ``[tool.detpack]`` (precedence: request, then ``[tool.detpack]``, then defaults),
inspects the source, picks the epoch, reads the lock and finds uv, once, into a
``ResolvedBuild`` that the rest of the build reads. The project's pyproject.toml is parsed
once for this (``_read_project``). Unknown ``[tool.detpack]`` keys are refused (a misspelt
``source-date-epoch`` must not silently fall back to a default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from build import ConfigSettingsType as ConfigSettings
from build import DistributionType as Distribution
from packaging.utils import InvalidSdistFilename, parse_sdist_filename

from detpack import policy
from detpack.build import toolimage
from detpack.build.deps import Installer, InstallSettings, choose_installer, find_uv
from detpack.build.environment import BuildRoot, LineSink, root_path
from detpack.build.lockfile import BuildLock, read_lock
from detpack.build.source import Epoch, Source, dirty_warning, inspect_source, resolve_epoch
from detpack.build.toolimage import ToolchainImage
from detpack.errors import ConfigError, InputError

KNOWN_KEYS = frozenset(
    {
        "source-date-epoch",
        "recompress",
        "pass-env",
        "find-links",
        "offline",
        "lock",
        "store",
        "store-key",
        "allow-network",
        "require-sandbox",
        "require-clean",
        "toolchain",
    }
)
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"


@dataclass(frozen=True)
class FrontendSettings:
    config_settings: ConfigSettings
    isolation: bool = True
    installer: Installer | None = None  # None: uv when it is installed, else pip (``deps.choose_installer``)
    skip_dependency_check: bool = False
    constraints: Path | None = None
    lock: BuildLock | None = None
    env_cache: Path | None = None  # keep/reuse build environments here (a lock's; unlocked with uv: the files')
    uv: str | None = None  # with installer uv: the uv binary (deps.find_uv)
    answers: Path | None = None  # remember the backend's get_requires answers here (None: always ask)
    toolchain_python: str | None = None  # a toolchain image's interpreter: environments are made with it there
    #: installed beside the backend's own requirements (``rebuild --pypi``: the publisher's metadata writer)
    also_install: tuple[str, ...] = ()
    #: how long an unlocked build's remembered resolution stands, in seconds (0: resolve again: ``--refresh``)
    resolution_ttl: float = 600.0

    @property
    def install(self) -> InstallSettings:
        """What the provisioner needs to fill an isolated environment."""
        installer = self.installer or "pip"
        return InstallSettings(
            installer,
            self.uv,
            self.constraints,
            self.lock,
            self.env_cache,
            self.answers,
            self.toolchain_python,
            self.resolution_ttl,
        )


@dataclass(frozen=True)
class BuildRequest:
    """What a caller asks for (the CLI builds one from argv); ``resolve`` makes it a build."""

    srcdir: Path
    outdir: Path | None = None
    distributions: tuple[Distribution, ...] | None = None  # None: sdist, then wheel from it
    frontend: FrontendSettings = dataclasses.field(default_factory=lambda: FrontendSettings({}))
    epoch_spec: str | None = None
    pass_env: tuple[str, ...] = ()
    find_links: tuple[Path, ...] = ()
    offline: bool | None = None
    env_dir: Path | None = None  # build's --env-dir: a fixed, user-chosen isolated-env path
    sdist_extract_dir: Path | None = None  # build's --sdist-extract-dir
    lock: Path | BuildLock | None = None  # a PEP 751 lock of the build dependencies (detpack lock), or one read
    normalize: bool = True  # False: keep the backend's bytes (rebuild --pypi compares those)
    allow_network: bool | None = None  # let the backend's hooks reach the network (recorded; not hermetic)
    require_sandbox: bool | None = None  # refuse to build where no sandbox can be made
    require_clean: bool | None = None  # refuse a work tree that differs from its commit
    lock_any: bool = False  # use a lock made for another project (recorded)
    cache: bool = True  # False: make every environment afresh and ask the backend every question
    #: the build's umask; another than policy's only to reproduce a build made under it (rebuild --pypi)
    umask: int = policy.UMASK
    #: unpack an sdist with its files' modes as they are (frontends before extraction filters did)
    sdist_modes_kept: bool = False
    toolchain: str | None = None  # an OCI image whose system the build runs in (``toolimage``)
    toolchain_python: str | None = None  # the image's interpreter (default: ``toolimage.find_python``)
    toolchain_loader: toolimage.Loader | None = None  # how to get the image (``detpack.oci.toolchain.load``)
    repair: bool | None = None  # with a toolchain: auditwheel repair a native wheel (None: on)


@dataclass(frozen=True)
class ToolConfig:
    epoch_spec: str | None = None
    pass_env: tuple[str, ...] = ()
    find_links: tuple[Path, ...] = ()
    offline: bool = False
    lock: Path | None = None
    store: str | None = None  # the artifact store's URL (`detpack store`); a relative path is from srcdir
    store_key: Path | None = None  # the store's public key readers trust (else the published one, pinned)
    allow_network: bool = False
    require_sandbox: bool = False
    require_clean: bool = False
    toolchain: str | None = None


@dataclass(frozen=True)
class ProjectFile:
    """What detpack reads from a project's pyproject.toml (parsed once)."""

    backend: str
    tool: ToolConfig
    name: str | None = None  # [project] name


@dataclass(frozen=True)
class ResolvedBuild:
    """One build with every setting final; the request it came from is kept as given."""

    request: BuildRequest
    source: Source
    epoch: Epoch
    backend: str | None  # the project's build-backend; None for an sdist (read once it is unpacked)
    outdir: Path
    distributions: tuple[Distribution, ...] | None  # None: sdist, then wheel from it
    frontend: FrontendSettings  # lock read, uv found, environment cache chosen
    offline: bool
    pass_env: tuple[str, ...]
    find_links: tuple[Path, ...]
    root: BuildRoot  # the fixed build root (a sandboxed build's private root is bound there)
    caller_env: Mapping[str, str]
    allow_network: bool = False
    require_sandbox: bool = False
    project: str | None = None  # the project's name, as a lock names it (``project_name``)
    toolchain: ToolchainImage | None = None  # the image the build's processes run in (unpacked, checked)

    @property
    def repair(self) -> bool:
        """Whether a wheel with native code is repaired to a manylinux tag (with a toolchain, by default)."""
        return self.toolchain is not None and self.request.repair is not False

    @property
    def via_sdist(self) -> bool:
        return self.distributions is None


def resolve(
    request: BuildRequest, *, caller_env: Mapping[str, str] | None = None, on_warning: LineSink | None = None
) -> ResolvedBuild:
    """Merge ``request`` with ``[tool.detpack]`` and the source's facts into one final build."""
    caller = dict(os.environ if caller_env is None else caller_env)
    source = inspect_source(request.srcdir)
    project = _read_project(source.path) if source.kind == "directory" else None
    tool = project.tool if project is not None else ToolConfig()
    warning = dirty_warning(source)
    if warning is not None:
        require_clean = tool.require_clean if request.require_clean is None else request.require_clean
        if require_clean:
            raise InputError(
                warning.replace("; the provenance records dirty: true", "")
                + "; --require-clean refuses to build it: commit or stash the changes"
            )
        if on_warning is not None:
            on_warning(warning)
    root = BuildRoot(root_path())
    frontend = request.frontend
    if frontend.installer is None and frontend.isolation:
        installer, uv, _ = choose_installer(caller)
        frontend = dataclasses.replace(frontend, installer=installer, uv=uv)
    if frontend.installer == "uv" and frontend.uv is None:  # the caller's PATH, not the build's
        frontend = dataclasses.replace(frontend, uv=find_uv(caller))
    name = project_name(source, project)
    lock = request.lock or frontend.lock or tool.lock
    if isinstance(lock, Path):
        lock = read_lock(lock).check_project(name, lock_any=request.lock_any)
    frontend = dataclasses.replace(frontend, lock=lock)
    image = None
    given = request.toolchain or tool.toolchain
    if given is not None:
        image = _toolchain(given, request, frontend)
        if not image.pinned and not given.startswith("oci:") and on_warning is not None:
            on_warning(
                f"--toolchain {given}: a tag, resolved now to {image.digest} (recorded); pin it by digest so every "
                f"build uses this image: {given}@{image.digest}"
            )
        # Its installs run in the image: uv, never this machine's pip or Python; environments this machine's
        # Python made are not the image's (a backend's answers are remembered per image and interpreter).
        frontend = dataclasses.replace(frontend, installer="uv", uv=frontend.uv or find_uv(caller), env_cache=None,
                                       toolchain_python=f"{image.python}@{image.digest}")  # fmt: skip
    elif request.repair:
        raise ConfigError("--repair: only with --toolchain (the wheel is repaired inside the toolchain image)")
    if request.cache and frontend.isolation and request.env_dir is None:
        if frontend.env_cache is None and image is None:
            frontend = dataclasses.replace(frontend, env_cache=root.cache)
        if frontend.answers is None:
            frontend = dataclasses.replace(frontend, answers=root.cache)
    return ResolvedBuild(
        request=request,
        source=source,
        epoch=resolve_epoch(request.epoch_spec or tool.epoch_spec, caller, source),
        backend=project.backend if project is not None else None,
        outdir=(request.outdir or default_outdir(request.srcdir)).absolute(),
        distributions=_plan(source, request.distributions),
        frontend=frontend,
        offline=tool.offline if request.offline is None else request.offline,
        pass_env=(*tool.pass_env, *request.pass_env),
        find_links=(*tool.find_links, *request.find_links),
        root=root,
        caller_env=caller,
        allow_network=tool.allow_network if request.allow_network is None else request.allow_network,
        require_sandbox=tool.require_sandbox if request.require_sandbox is None else request.require_sandbox,
        project=name,
        toolchain=image,
    )


def _toolchain(given: str, request: BuildRequest, frontend: FrontendSettings) -> ToolchainImage:
    if not frontend.isolation:
        raise ConfigError("--toolchain: the build environment is made in the image; drop --no-isolation")
    if request.env_dir is not None:
        raise ConfigError("--toolchain: the build environment is made in the image's build root; drop --env-dir")
    if request.toolchain_loader is None:
        raise ConfigError(f"--toolchain {given}: this caller gives the build no way to load images (toolchain_loader)")
    return request.toolchain_loader(given, request.toolchain_python)


def project_name(source: Source, project: ProjectFile | None) -> str:
    """The name a lock is made for: ``[project] name``, an sdist's name, else the directory's name."""
    if project is not None and project.name:
        return project.name
    if source.kind == "sdist":
        with contextlib.suppress(InvalidSdistFilename):
            return str(parse_sdist_filename(source.path.name)[0])
        return source.path.name.removesuffix(".tar.gz").rsplit("-", 1)[0]
    return source.path.resolve().name


def default_outdir(source: Path) -> Path:
    return source.parent if source.is_file() else source / "dist"


def _plan(source: Source, requested: tuple[Distribution, ...] | None) -> tuple[Distribution, ...] | None:
    if source.kind == "sdist":
        if requested and "sdist" in requested:
            raise InputError(
                f"{source.path}: cannot build an sdist from an sdist; pass --wheel to build a wheel from it"
            )
        return requested or ("wheel",)
    return requested


def _read_project(srcdir: Path) -> ProjectFile:
    """``build-backend`` and ``[tool.detpack]`` from ``srcdir/pyproject.toml``, parsed once.

    An absent file: the legacy setuptools backend and default settings.
    """
    pyproject = srcdir / "pyproject.toml"
    if not srcdir.is_dir() or not pyproject.is_file():
        return ProjectFile(LEGACY_BACKEND, ToolConfig())
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pyproject}: invalid TOML ({exc})") from None
    backend = str(data.get("build-system", {}).get("build-backend", LEGACY_BACKEND))
    name = data.get("project", {}).get("name") if isinstance(data.get("project"), dict) else None
    return ProjectFile(backend, _tool_config(data, srcdir, pyproject), name if isinstance(name, str) else None)


def backend_name(srcdir: Path) -> str:
    """The project's ``build-backend`` (the legacy setuptools one when pyproject has none)."""
    return _read_project(srcdir).backend


def load_tool_config(srcdir: Path) -> ToolConfig:
    """``[tool.detpack]`` from ``srcdir/pyproject.toml`` (absent file or table: defaults)."""
    return _read_project(srcdir).tool


def _tool_config(data: dict[str, Any], srcdir: Path, pyproject: Path) -> ToolConfig:
    table = data.get("tool", {}).get("detpack", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.detpack] must be a table")
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{pyproject}: unknown [tool.detpack] key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_KEYS))}"
        )
    epoch = table.get("source-date-epoch")
    if epoch is not None and not isinstance(epoch, int | str):
        raise ConfigError(f"{pyproject}: [tool.detpack] source-date-epoch must be an integer, 'git' or 'sdist'")
    return ToolConfig(
        epoch_spec=None if epoch is None else str(epoch),
        # "recompress" is still accepted: since policy 5 every member is re-deflated anyway.
        pass_env=tuple(_strings(table, "pass-env", pyproject)),
        find_links=tuple(srcdir / p for p in _strings(table, "find-links", pyproject)),
        offline=_bool(table, "offline", pyproject),
        lock=srcdir / str(table["lock"]) if "lock" in table else None,
        store=_store_url(table, srcdir, pyproject),
        store_key=_store_key(table, srcdir, pyproject),
        allow_network=_bool(table, "allow-network", pyproject),
        require_sandbox=_bool(table, "require-sandbox", pyproject),
        require_clean=_bool(table, "require-clean", pyproject),
        toolchain=_string(table, "toolchain", pyproject),
    )


def _store_url(table: dict[str, Any], srcdir: Path, where: Path) -> str | None:
    value = table.get("store")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: [tool.detpack] store must be a directory path or an oci:// URL")
    return value if "://" in value else str(srcdir / value)


def _store_key(table: dict[str, Any], srcdir: Path, where: Path) -> Path | None:
    value = table.get("store-key")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: [tool.detpack] store-key must be the path of the store's public key (PEM)")
    return srcdir / value


def _string(table: dict[str, Any], key: str, where: Path) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}: [tool.detpack] {key} must be a string")
    return value


def _bool(table: dict[str, Any], key: str, where: Path) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: [tool.detpack] {key} must be true or false")
    return value


def _strings(table: dict[str, Any], key: str, where: Path) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: [tool.detpack] {key} must be an array of strings")
    return value


__all__ = [
    "BuildRequest",
    "ConfigSettings",
    "Distribution",
    "FrontendSettings",
    "ProjectFile",
    "ResolvedBuild",
    "ToolConfig",
    "backend_name",
    "default_outdir",
    "load_tool_config",
    "resolve",
]
