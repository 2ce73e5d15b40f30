"""``detpack build``: source -> controlled PEP 517 build -> canonical outputs + provenance.

The order of work: resolve the request (``config.resolve``), take the build root, lay the
source out at a fixed path, build (by default the sdist, then the wheel from the
*normalized* sdist unpacked at a fixed path), normalize each output into a hidden temporary
file in the output directory, write the provenance into one more, and only when everything
succeeded move them into place: the old provenance goes first, then the artifacts, the new
provenance last, so a provenance file in the output directory always describes artifacts
that are there. A failure leaves the output directory as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from packaging.utils import parse_sdist_filename, parse_wheel_filename

from detpack.archive import gz
from detpack.archive.detect import ArchiveKind
from detpack.archive.normalize import NormalizeOptions, normalize_stream
from detpack.atomic import sweep, temp_name
from detpack.build import ci, environment, imagebuild, native, sandbox
from detpack.build.config import BuildRequest, Distribution, ResolvedBuild, backend_name, resolve
from detpack.build.config import default_outdir as default_outdir
from detpack.build.environment import LineSink
from detpack.build.frontend import RawArtifact, build_distribution, check_output, fixed_build_dirs
from detpack.build.session import Session, session
from detpack.build.source import Epoch, Source
from detpack.build.toolchain import capture_toolchain, host_facts
from detpack.build.workspace import fresh_target, lay_out, unpack_sdist
from detpack.digest import canonical_json, file_sha256
from detpack.errors import ArchiveError, BackendError, HookError, InputError, OutputError
from detpack.git import Change, changes_since_release
from detpack.provenance import statement as provenance
from detpack.wording import Recorded


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
    log: Path | None = None  # the build log kept beside the provenance (NAME-VERSION.build.log.gz)


@dataclass
class _Staging:
    """Outputs waiting in hidden temporaries until the whole build succeeded.

    ``commit`` moves them into place in an order that keeps a reader safe: the old
    provenance of the same name is removed first, then each artifact is renamed, the new
    provenance last. A provenance file is visible only while every artifact it lists is.
    """

    outdir: Path
    normalize: bool = True
    pending: list[tuple[Path, Path]] = field(default_factory=list)
    provenance: tuple[Path, Path] | None = None
    byproducts: list[tuple[Path, Path]] = field(default_factory=list)  # the build log: not a subject

    def add(self, raw: Path, final_name: str, options: NormalizeOptions, scratch: Path) -> tuple[Path, tuple[str, ...]]:
        """Stage ``raw`` under ``final_name``; also return the duplicate member names resolved."""
        kind: ArchiveKind = "tar.gz" if final_name.endswith(".tar.gz") else "wheel"
        replaced: tuple[str, ...] = ()

        def write(out: BinaryIO) -> None:
            nonlocal replaced
            if self.normalize:
                replaced = normalize_stream(raw, out, kind, options, scratch)
            else:
                with raw.open("rb") as inp:
                    shutil.copyfileobj(inp, out, 1 << 20)

        tmp = self._write(final_name, write)
        self.pending.append((tmp, self.outdir / final_name))
        return tmp, replaced

    def extend_wheels(self, extras: Callable[[Path], Sequence[tuple[str, bytes]]], epoch: int, scratch: Path) -> None:
        """Write each staged wheel again in its canonical form with ``extras(wheel)`` added."""
        options = NormalizeOptions(epoch)
        for tmp, final in self.pending:
            if not final.name.endswith(".whl"):
                continue
            members = extras(tmp)

            def fill(out: BinaryIO, wheel: Path = tmp, added: Sequence[tuple[str, bytes]] = members) -> None:
                normalize_stream(wheel, out, "wheel", options, scratch, added)

            os.replace(self._write(final.name + ".extended", fill), tmp)

    def add_log(self, final_name: str, text: bytes) -> str:
        """Stage the build log, gzip-compressed canonically; return the sha256 of the file."""

        def fill(out: BinaryIO) -> None:
            with gz.canonical_writer(out) as gzout:
                gzout.write(text)

        tmp = self._write(final_name, fill)
        self.byproducts.append((tmp, self.outdir / final_name))
        return file_sha256(tmp)

    def add_provenance(self, final_name: str, data: bytes) -> None:
        self.provenance = (self._write(final_name, lambda out: out.write(data)), self.outdir / final_name)

    def _write(self, final_name: str, fill: Callable[[BinaryIO], object]) -> Path:
        tmp = self.outdir / temp_name(final_name)
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            sweep(self.outdir)
            tmp.unlink(missing_ok=True)
            # 0600 whatever the umask (a replayed publisher's can be 0): nobody else opens it before it is whole
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                try:
                    fill(out)
                    out.flush()
                    os.fsync(out.fileno())
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
        except OSError as exc:
            raise OutputError(
                f"{self.outdir / final_name}: cannot write ({exc.strerror or exc}); nothing was written"
            ) from None
        return tmp

    def commit(self) -> None:
        assert self.provenance is not None, "stage the provenance before committing"
        moved: list[Path] = []
        final = self.provenance[1]
        try:
            final.unlink(missing_ok=True)  # it may describe artifacts about to be replaced
            for tmp, final in (*self.pending, *self.byproducts, self.provenance):
                tmp.chmod(0o644)
                os.replace(tmp, final)
                moved.append(final)
        except OSError as exc:
            for path in reversed(moved):
                with contextlib.suppress(OSError):
                    path.unlink()
            self.discard()
            raise OutputError(f"{final}: cannot move the output into place ({exc.strerror or exc})") from None
        self.pending.clear()
        self.byproducts.clear()
        self.provenance = None

    def discard(self) -> None:
        for tmp, _ in (*self.pending, *self.byproducts, *([self.provenance] if self.provenance else [])):
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.pending.clear()
        self.byproducts.clear()
        self.provenance = None


#: Members to add to a built wheel (name, bytes), given the staged canonical wheel and the build's
#: buildDefinition (what the SBOM in the wheel describes); see ``build_project(wheel_extras=)``.
WheelExtras = Callable[[Path, Mapping[str, Any]], Sequence[tuple[str, bytes]]]


def build_project(
    request: BuildRequest,
    *,
    on_line: LineSink | None = None,
    on_step: LineSink | None = None,
    on_warning: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
    wheel_extras: WheelExtras | None = None,
) -> BuildResult:
    """Run one reproducible build; see the module docstring for the order of work.

    ``wheel_extras`` adds members to each wheel after it is normalized (the wheel is written in its
    canonical form again, RECORD listing them), before its digest is taken for the provenance, which
    records ``sbomInWheel``: ``detpack build --sbom-in-wheel`` passes the SBOM writer here."""
    return _build_resolved(
        resolve(request, caller_env=caller_env, on_warning=on_warning),
        on_line=on_line,
        on_step=on_step,
        on_warning=on_warning,
        wheel_extras=wheel_extras,
    )


def _build_resolved(
    plan: ResolvedBuild,
    *,
    on_line: LineSink | None = None,
    on_step: LineSink | None = None,
    on_warning: LineSink | None = None,
    wheel_extras: WheelExtras | None = None,
) -> BuildResult:
    """Build ``plan`` (from ``config.resolve``)."""
    started = dt.datetime.now(dt.UTC)
    outdir = plan.outdir
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir}: output path exists and is not a directory")
    with session(plan, on_line=on_line, on_step=on_step, on_warning=on_warning) as ses:
        staging = _Staging(outdir, normalize=plan.request.normalize)
        try:
            with environment.applied(ses.env):
                built = _run_builds(ses, staging, on_step or (lambda _: None), on_warning or (lambda _: None))
            raws = built.raws
            facts = _facts(ses)  # once: the provisional statement below is made of the same facts
            if wheel_extras is not None and any(final.name.endswith(".whl") for _, final in staging.pending):
                built = dataclasses.replace(built, sbom_in_wheel=True)
                provisional = [provenance.Subject(final.name, "") for _, final in staging.pending]
                definition = _statement(ses, built, provisional, started, facts)["predicate"]
                staging.extend_wheels(
                    lambda wheel: wheel_extras(wheel, definition["buildDefinition"]),  # type: ignore[index]
                    ses.plan.epoch.value,
                    ses.root.tmp,
                )
            subjects = [provenance.Subject(final.name, file_sha256(tmp)) for tmp, final in staging.pending]
            stem = _stem(subjects[-1].name)
            log_name = f"{stem}.build.log.gz"
            log = ses.runner.log_text().encode("utf-8")
            log_file = provenance.Subject(log_name, staging.add_log(log_name, log))
            statement = _statement(ses, built, subjects, started, facts, log, log_file)
            prov_path = outdir / f"{stem}.provenance.json"
            staging.add_provenance(prov_path.name, canonical_json(statement))
            backend_digests = {r.path.name: file_sha256(r.path) for r in raws}
            staging.commit()
        except BaseException:
            staging.discard()
            raise
    artifacts = tuple(
        BuiltArtifact(
            distribution=raw.distribution,
            path=outdir / subject.name,
            sha256=subject.sha256,
            size=(outdir / subject.name).stat().st_size,
            backend_sha256=backend_digests[raw.path.name],
        )
        for raw, subject in zip(raws, subjects, strict=True)
    )
    return BuildResult(artifacts, prov_path, plan.epoch, plan.source, outdir / log_name)


@dataclass(frozen=True)
class _Facts:
    """What a statement records of the machine and the run that costs a probe: gathered once a build."""

    toolchain: provenance.Toolchain
    native: tuple[dict[str, Any], ...]
    ci: ci.CIContext | None
    changes: tuple[str | None, tuple[Change, ...]] | None


def _facts(ses: Session) -> _Facts:
    git = ses.plan.source.git
    toolchain, native_entries = capture_toolchain(), _native(ses)
    if ses.plan.toolchain is not None and isinstance(ses.box, sandbox.Sandbox):
        toolchain, image = imagebuild.facts(ses.plan.toolchain, ses.box, toolchain)
        native_entries = (image, *native_entries)
    return _Facts(
        toolchain,
        native_entries,
        ci.detect(ses.plan.caller_env),
        changes_since_release(git.toplevel) if git is not None else None,
    )


def _statement(
    ses: Session,
    built: _Built,
    subjects: list[provenance.Subject],
    started: dt.datetime,
    facts: _Facts,
    log: bytes = b"",
    log_file: provenance.Subject | None = None,
) -> dict[str, object]:
    plan, env, frontend, raws = ses.plan, ses.env, ses.plan.frontend, built.raws
    return provenance.statement(
        subjects=subjects,
        source=plan.source,
        epoch=plan.epoch,
        parameters=provenance.BuildParameters(
            distributions=tuple(raw.distribution for raw in raws),
            via_sdist=plan.via_sdist and built.sdist_fallback is None,
            sdist_fallback=built.sdist_fallback,
            # what the hooks were given: the user's settings, and a fixed build directory for a backend
            # that would pick a random one (frontend.FIXED_BUILD_DIR)
            config_settings=fixed_build_dirs(frontend, raws[0].backend).config_settings if raws else {},
            isolation=frontend.isolation,
            installer=frontend.installer or "pip",
            skip_dependency_check=frontend.skip_dependency_check,
            offline=plan.offline,
            lock=frontend.lock,
            normalized=plan.request.normalize,
            allow_network=plan.allow_network,
            sbom_in_wheel=built.sbom_in_wheel,
        ),
        environment=env.recorded(),
        paths={
            "buildRoot": str(ses.root.seen),
            **{
                k: str(v.absolute())
                for k, v in (("envDir", plan.request.env_dir), ("sdistExtractDir", plan.request.sdist_extract_dir))
                if v is not None
            },
        },
        passed_through=env.passed_through,
        injects_code=env.injects_code,
        duplicates=built.duplicates,
        umask=env.umask,
        sdist_modes_kept=plan.request.sdist_modes_kept,
        sandbox=ses.box.record(),
        raws=raws,
        toolchain=facts.toolchain,
        native=(*facts.native, *built.repairs),
        run=provenance.RunFacts(
            invocation_id=f"urn:uuid:{uuid.uuid4()}",
            started=started,
            finished=dt.datetime.now(dt.UTC),
            log_sha256=hashlib.sha256(log).hexdigest(),
            log_file=log_file,
            ci=facts.ci,
            changes=facts.changes,
            host=host_facts(plan.source),
            sandbox=ses.box.details(),
            raw_outputs=[provenance.Subject(r.path.name, file_sha256(r.path)) for r in raws],
            reused={r.distribution: r.reused for r in raws if r.reused},
        ),
    )


def _native(ses: Session) -> tuple[dict[str, Any], ...]:
    """The native toolchain the hooks used, probed where they ran (in the sandbox when there is one)."""
    box = ses.box
    if isinstance(box, sandbox.Sandbox):
        return native.collect(ses.root.root, ses.root.seen, probe=box.probe, visible=box.sees, system=box.image_root)
    return native.collect(ses.root.root, ses.root.seen)


@dataclass(frozen=True)
class _Built:
    """What the backend made, and what detpack had to decide about it (both recorded)."""

    raws: list[RawArtifact]
    duplicates: tuple[provenance.ResolvedDuplicate, ...] = ()
    #: Why the wheel was built straight from the tree: the backend could not make an sdist of it.
    sdist_fallback: str | None = None
    sbom_in_wheel: bool = False  # members (the SBOM) were added to each wheel after it was normalized
    repairs: tuple[dict[str, Any], ...] = ()  # auditwheel's repairs in the toolchain image (resolved dependencies)


def _run_builds(ses: Session, staging: _Staging, step: LineSink, warn: LineSink) -> _Built:
    plan, root = ses.plan, ses.root
    # A backend's own output is taken as its extractors take it: of two different members under
    # one name the last wins (python -m build accepts such an sdist; tar, pip and uv keep the last).
    options = NormalizeOptions(plan.epoch.value, duplicates="last")
    raws: list[RawArtifact] = []
    duplicates: list[provenance.ResolvedDuplicate] = []
    repairs: list[dict[str, Any]] = []

    def one(srcdir: Path, dist: Distribution, backend: str) -> Path:
        step(f"building {dist} in {root.to_inside(str(srcdir))}")
        raw = build_distribution(
            srcdir,
            dist,
            root.raw / dist,
            runner=ses.runner,
            settings=plan.frontend,
            env_dir=ses.env_dir(dist),
            backend=backend,
            label=plan.source.path,
        )
        check_output(raw, root.raw / dist, plan.source.path)
        if plan.repair and dist == "wheel" and imagebuild.has_native_code(raw.path):
            assert plan.toolchain is not None and isinstance(ses.box, sandbox.Sandbox) and plan.frontend.uv
            step(f"repairing {raw.path.name} with auditwheel in the toolchain image")
            repaired, record = imagebuild.repair(plan.toolchain, raw.path, ses.runner, root, ses.box, plan.frontend.uv)
            raw = dataclasses.replace(raw, path=repaired)
            repairs.append(record)
        step(
            f"normalizing {raw.path.name}" if staging.normalize else f"keeping {raw.path.name} as the backend wrote it"
        )
        try:
            staged, replaced = staging.add(raw.path, raw.path.name, options, root.tmp)
        except ArchiveError as exc:
            # Name the user's project and the backend, not a path in the emptied build root.
            reason = exc.message.removeprefix(f"{raw.path}: ")
            raise BackendError(
                f"{plan.source.path}: the {dist} {raw.path.name} that backend {raw.backend!r} wrote is unusable: "
                f"{reason}"
            ) from None
        for name in replaced:
            warn(
                Recorded(
                    f"the {dist} {raw.path.name} that backend {raw.backend!r} wrote holds two different members "
                    f"named {name!r}; kept the last one, as tar, pip and uv do (a stale copy of that file in the "
                    "source tree is the usual cause; recorded)"
                )
            )
            duplicates.append(provenance.ResolvedDuplicate(raw.path.name, name))
        raws.append(raw)
        return staged

    if plan.source.kind == "sdist":
        srcdir = unpack_sdist(plan.source.path, ses.sdist_extract_dir, plan.source.path, plan.request.sdist_modes_kept)
        backend = backend_name(srcdir)  # an sdist's pyproject.toml, read once unpacked
        for dist in plan.distributions or ("wheel",):
            one(srcdir, dist, backend)
        return _Built(raws, tuple(duplicates), repairs=tuple(repairs))
    srcdir = lay_out(plan.source, root)
    backend = plan.backend or backend_name(srcdir)
    if plan.distributions is None:
        try:
            sdist = one(srcdir, "sdist", backend)
        except HookError as exc:
            if not (srcdir / "PKG-INFO").is_file():
                raise
            # An unpacked sdist whose backend can only make sdists from a VCS checkout (meson-python
            # wants git): python -m build fails the same way, but the wheel can still be built.
            fallback = f"backend {backend!r} cannot make an sdist from this unpacked sdist: {exc.reason}"
            warn(Recorded(f"{plan.source.path}: {fallback}; building the wheel directly from the tree (recorded)"))
            one(srcdir, "wheel", backend)
            return _Built(raws, tuple(duplicates), fallback, repairs=tuple(repairs))
        unpacked = unpack_sdist(
            sdist,
            fresh_target(ses.sdist_extract_dir, ses.root.root),
            Path(raws[-1].path.name),
            plan.request.sdist_modes_kept,
        )
        one(unpacked, "wheel", backend)
    else:
        for dist in plan.distributions:
            one(srcdir, dist, backend)
    return _Built(raws, tuple(duplicates), repairs=tuple(repairs))


def _stem(filename: str) -> str:
    if filename.endswith(".whl"):
        name, version, _, _ = parse_wheel_filename(filename)
    else:
        name, version = parse_sdist_filename(filename)
    return f"{str(name).replace('-', '_')}-{version}"
