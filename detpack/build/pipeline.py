"""``detpack build``: source -> controlled PEP 517 build -> canonical outputs + provenance.

The order of work: inspect the source, resolve the epoch, take the build root, lay the
source out at a fixed path, build (by default the sdist, then the wheel from the
*normalized* sdist unpacked at a fixed path), normalize each output into a hidden temporary
file in the output directory, and only when everything succeeded rename the outputs into
place and write the provenance. A failure leaves the output directory as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.utils import parse_sdist_filename, parse_wheel_filename

from detpack.digest import file_sha256, canonical_json
from detpack import policy
from detpack.build import environment
from detpack.build import deps as installer
from detpack.provenance import statement as provenance
from detpack.archive.detect import ArchiveKind
from detpack.atomic import atomic_writer, sweep, temp_name
from detpack.build.config import BuildRequest, load_tool_config
from detpack.build.environment import BuildRoot, LineSink, Runner
from detpack.errors import ArchiveError, BackendError, InputError, OutputError
from detpack.build.frontend import Distribution, RawArtifact, build_distribution
from detpack.build.workspace import lay_out, unpack_sdist
from detpack.build.lockfile import read_lock
from detpack.archive.normalize import NormalizeOptions, normalize_stream
from detpack.build.source import Epoch, Source, dirty_warning, inspect_source, resolve_epoch
from detpack.build.toolchain import capture_toolchain, host_facts


@dataclass(frozen=True)
class BuiltArtifact:
    distribution: Distribution
    path: Path
    sha256: str
    size: int
    backend_sha256: str


@dataclass(frozen=True)
class BuildResult:
    artifacts: tuple[BuiltArtifact, ...]
    provenance: Path
    epoch: Epoch
    source: Source


@dataclass
class _Staging:
    """Normalized outputs waiting in hidden temporaries until the whole build succeeded."""

    outdir: Path
    normalize: bool = True
    pending: list[tuple[Path, Path]] = field(default_factory=list)

    def add(self, raw: Path, final_name: str, options: NormalizeOptions, scratch: Path) -> Path:
        tmp = self.outdir / temp_name(final_name)
        kind: ArchiveKind = "tar.gz" if final_name.endswith(".tar.gz") else "wheel"
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            sweep(self.outdir)
            self.pending.append((tmp, self.outdir / final_name))
            with tmp.open("wb") as out:
                if self.normalize:
                    normalize_stream(raw, out, kind, options, scratch)
                else:
                    with raw.open("rb") as inp:
                        shutil.copyfileobj(inp, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise OutputError(
                f"{self.outdir / final_name}: cannot write ({exc.strerror or exc}); nothing was written"
            ) from None
        return tmp

    def commit(self) -> None:
        for tmp, final in self.pending:
            try:
                tmp.chmod(0o644)
                os.replace(tmp, final)
            except OSError as exc:
                self.discard()
                raise OutputError(f"{final}: cannot move the output into place ({exc.strerror or exc})") from None
        self.pending.clear()

    def discard(self) -> None:
        for tmp, _ in self.pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.pending.clear()


@dataclass(frozen=True)
class Session:
    """One build's resolved settings and its controlled environment, holding the build root."""

    source: Source
    epoch: Epoch
    recompress: bool
    offline: bool
    root: BuildRoot
    env: environment.ControlledEnvironment
    runner: Runner
    request: BuildRequest  # with the lock, if any, read into ``request.frontend.lock``


@contextlib.contextmanager
def session(
    request: BuildRequest,
    *,
    caller_env: Mapping[str, str] | None,
    on_line: LineSink | None,
    on_step: LineSink | None = None,
    on_warning: LineSink | None = None,
) -> Iterator[Session]:
    """Resolve ``request`` (command line over ``[tool.detpack]``) and take the build root."""
    caller_env = dict(os.environ if caller_env is None else caller_env)
    if request.frontend.installer == "uv" and request.frontend.uv is None:  # the caller's PATH, not the build's
        request = replace(request, frontend=replace(request.frontend, uv=installer.find_uv(caller_env)))
    source = inspect_source(request.srcdir)
    warning = dirty_warning(source)
    if warning is not None and on_warning is not None:
        on_warning(warning)
    tool = load_tool_config(source.path)
    epoch = resolve_epoch(request.epoch_spec or tool.epoch_spec, caller_env, source)
    offline = tool.offline if request.offline is None else request.offline
    with environment.build_root(on_wait=on_step) as root:
        if str(root.root) != policy.BUILD_ROOT and on_warning is not None:
            on_warning(
                f"build root {root.root} is not the default {policy.BUILD_ROOT}: it is mapped away in "
                "CFLAGS, but a backend that ignores CFLAGS may embed it"
            )
        env = environment.controlled_environment(
            epoch=None if epoch.origin == "unset" else epoch.value,
            root=root,
            caller_env=caller_env,
            pass_env=(*tool.pass_env, *request.pass_env),
            find_links=(*tool.find_links, *request.find_links),
            offline=offline,
        )
        recompress = tool.recompress if request.recompress is None else request.recompress
        lock_path = request.lock or tool.lock
        if lock_path is not None:
            request = replace(request, frontend=replace(request.frontend, lock=read_lock(lock_path)))
        if request.frontend.lock is not None and request.frontend.isolation and request.env_dir is None:
            request = replace(request, frontend=replace(request.frontend, env_cache=root.cache))
        for name in env.injects_code:
            if on_warning is not None:
                on_warning(f"{name} is passed to the build: it loads code into every build process (recorded)")
        yield Session(source, epoch, recompress, offline, root, env, Runner(env, on_line, on_warning), request)


def default_outdir(source: Path) -> Path:
    return source.parent if source.is_file() else source / "dist"


def build_project(
    request: BuildRequest,
    *,
    on_line: LineSink | None = None,
    on_step: LineSink | None = None,
    on_warning: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
) -> BuildResult:
    """Run one reproducible build; see the module docstring for the order of work."""
    started = dt.datetime.now(dt.UTC)
    outdir = (request.outdir or default_outdir(request.srcdir)).absolute()
    with session(request, caller_env=caller_env, on_line=on_line, on_step=on_step, on_warning=on_warning) as ses:
        source, epoch, root, env, runner = ses.source, ses.epoch, ses.root, ses.env, ses.runner
        recompress, offline, request = ses.recompress, ses.offline, ses.request
        if outdir.exists() and not outdir.is_dir():
            raise InputError(f"{outdir}: output path exists and is not a directory")
        distributions = _plan(source, request.distributions)
        options = NormalizeOptions(epoch.value, recompress)
        staging = _Staging(outdir, normalize=request.normalize)
        try:
            with environment.applied(env):
                raws, finals = _run_builds(
                    source,
                    distributions,
                    request,
                    root,
                    runner,
                    staging,
                    options,
                    on_step or (lambda _: None),
                )
            subjects = [provenance.Subject(final.name, file_sha256(tmp)) for tmp, final in staging.pending]
            log = runner.log_text().encode("utf-8")
            statement = provenance.statement(
                subjects=subjects,
                source=source,
                epoch=epoch,
                parameters=provenance.BuildParameters(
                    distributions=tuple(raw.distribution for raw in raws),
                    via_sdist=request.distributions is None and source.kind == "directory",
                    config_settings=request.frontend.config_settings,
                    isolation=request.frontend.isolation,
                    installer=request.frontend.installer,
                    skip_dependency_check=request.frontend.skip_dependency_check,
                    recompress=recompress,
                    offline=offline,
                    lock=request.frontend.lock,
                    normalized=request.normalize,
                ),
                environment=env.recorded(),
                paths={
                    "buildRoot": str(root.root),
                    **{
                        k: str(v.absolute())
                        for k, v in (
                            ("envDir", request.env_dir),
                            ("sdistExtractDir", request.sdist_extract_dir),
                        )
                        if v is not None
                    },
                },
                passed_through=env.passed_through,
                injects_code=env.injects_code,
                raws=raws,
                toolchain=capture_toolchain(),
                run=provenance.RunFacts(
                    invocation_id=f"urn:uuid:{uuid.uuid4()}",
                    started=started,
                    finished=dt.datetime.now(dt.UTC),
                    log_sha256=hashlib.sha256(log).hexdigest(),
                    host=host_facts(source),
                    raw_outputs=[provenance.Subject(r.path.name, file_sha256(r.path)) for r in raws],
                ),
            )
            backend_digests = {r.path.name: file_sha256(r.path) for r in raws}
        except BaseException:
            staging.discard()
            raise
        staging.commit()
    prov_path = outdir / f"{_stem(finals[-1])}.provenance.json"
    with atomic_writer(prov_path) as f:
        f.write(canonical_json(statement))
    artifacts = tuple(
        BuiltArtifact(
            distribution=raw.distribution,
            path=outdir / final,
            sha256=file_sha256(outdir / final),
            size=(outdir / final).stat().st_size,
            backend_sha256=backend_digests[raw.path.name],
        )
        for raw, final in zip(raws, finals, strict=True)
    )
    return BuildResult(artifacts, prov_path, epoch, source)


def _plan(source: Source, requested: tuple[Distribution, ...] | None) -> tuple[Distribution, ...] | None:
    if source.kind == "sdist":
        if requested and "sdist" in requested:
            raise InputError(
                f"{source.path}: cannot build an sdist from an sdist; pass --wheel to build a wheel from it"
            )
        return requested or ("wheel",)
    return requested


def _run_builds(
    source: Source,
    distributions: tuple[Distribution, ...] | None,
    request: BuildRequest,
    root: BuildRoot,
    runner: Runner,
    staging: _Staging,
    options: NormalizeOptions,
    step: LineSink,
) -> tuple[list[RawArtifact], list[str]]:
    raws: list[RawArtifact] = []
    finals: list[str] = []

    def one(srcdir: Path, dist: Distribution) -> Path:
        raw_out = root.raw / dist
        step(f"building {dist} in {srcdir}")
        raw = build_distribution(
            srcdir,
            dist,
            raw_out,
            runner=runner,
            settings=request.frontend,
            env_dir=request.env_dir or root.env_dir(dist),
            label=source.path,
        )
        step(
            f"normalizing {raw.path.name}" if staging.normalize else f"keeping {raw.path.name} as the backend wrote it"
        )
        try:
            staged = staging.add(raw.path, raw.path.name, options, root.tmp)
        except ArchiveError as exc:
            # Name the user's project and the backend, not a path in the emptied build root.
            reason = exc.message.removeprefix(f"{raw.path}: ")
            if "two different members" in reason:
                reason += " (a stale copy of that file in the source tree is the usual cause)"
            raise BackendError(
                f"{source.path}: the {dist} {raw.path.name} that backend {raw.backend!r} wrote is unusable: {reason}"
            ) from None
        raws.append(raw)
        finals.append(raw.path.name)
        return staged

    if source.kind == "sdist":
        srcdir = unpack_sdist(source.path, request.sdist_extract_dir or root.work / "unpacked", source.path)
        for dist in distributions or ("wheel",):
            one(srcdir, dist)
        return raws, finals
    srcdir = lay_out(source, root)
    if distributions is None:
        sdist = one(srcdir, "sdist")
        unpacked = unpack_sdist(sdist, request.sdist_extract_dir or root.work / "unpacked", Path(finals[-1]))
        one(unpacked, "wheel")
    else:
        for dist in distributions:
            one(srcdir, dist)
    return raws, finals


def _stem(filename: str) -> str:
    if filename.endswith(".whl"):
        name, version, _, _ = parse_wheel_filename(filename)
    else:
        name, version = parse_sdist_filename(filename)
    return f"{str(name).replace('-', '_')}-{version}"
