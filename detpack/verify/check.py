"""``detpack check``: build a project several times under varied conditions and say whether
the outputs match; when they do not, name the variation responsible.

Procedure: a control build, then ``runs - 1`` builds with every selected variation at once.
All equal: reproducible (that many builds, nothing else). Otherwise: a second control build
shows what differs even with nothing varied (noise, usually the clock), then one build per
variation, each compared with the control; a variation is named when it causes differences
beyond the noise. With ``raw`` the project's own backend runs through ``python -m build``,
without detpack's controlled environment or normalization.

Every build gets its own copy of the source, laid down by ``variations.lay_down``: for a git
project a checkout of the same commit with the work tree's uncommitted changes (what
``detpack build`` would build now). The epoch follows ``build``'s rule (option, environment,
git, constant), resolved once here and given to every ``detpack build`` run; ``raw`` runs get
SOURCE_DATE_EPOCH only when the option or the environment sets it, as ``python -m build`` would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from plumbum import local

from detpack.build.config import BuildRequest, resolve
from detpack.build.source import Epoch, Source
from detpack.errors import BackendError, ConfigError, InputError
from detpack.verify import variations
from detpack.verify.compare import Comparison, compare_paths
from detpack.verify.variations import RunSpec

Signature = tuple[str, str | None, str]
#: Not build outputs: the provenance records times and host details by design.
SKIP = (".provenance.json",)
Step = Callable[[str], None]


@dataclass(frozen=True)
class CheckSettings:
    srcdir: Path
    runs: int = 2
    vary: tuple[str, ...] = variations.NAMES
    raw: bool = False
    find_links: tuple[Path, ...] = ()
    offline: bool = False
    keep: Path | None = None
    epoch_spec: str | None = None  # --source-date-epoch: N, 'git' (None: build's default order)
    libz: Path | None = None  # --libz: another libz.so.1 for the libz variation
    # The build as the user ships it: every build of the check gets these, as detpack build would.
    pass_env: tuple[str, ...] = ()  # --pass-env: variables passed from the caller's environment
    lock: Path | None = None  # --lock: the PEP 751 lock of the build dependencies
    config_json: str | None = None  # -C / --config-json: the backend's settings, as one JSON object
    installer: str | None = None  # --installer pip|uv


@dataclass(frozen=True)
class Culprit:
    variation: str
    description: str
    comparison: Comparison


@dataclass(frozen=True)
class CheckResult:
    reproducible: bool
    builds: int
    varied: tuple[str, ...]
    not_varied: Mapping[str, str]
    experiment: Comparison | None
    noise: Comparison | None
    culprits: tuple[Culprit, ...]
    epoch: Epoch | None = None  # the SOURCE_DATE_EPOCH every build got (None: raw, and none was set)


def signatures(c: Comparison) -> set[Signature]:
    sig: set[Signature] = {(n, None, "only in A") for n in c.only_a} | {(n, None, "only in B") for n in c.only_b}
    for f in c.files:
        sig |= {(f.name, d.member, d.attribute) for d in f.differences}
    return sig


def beyond(c: Comparison, noise: set[Signature]) -> Comparison:
    """``c`` without the differences that also appear between two identical builds."""
    files = []
    for f in c.files:
        kept = tuple(d for d in f.differences if (f.name, d.member, d.attribute) not in noise)
        touched = {d.member for d in kept if d.member is not None and d.kind != "order"}
        files.append(replace(f, identical=not kept, members_differing=len(touched), differences=kept))
    return replace(c, files=tuple(files))


def _argv(spec: RunSpec, project: Path, out: Path, settings: CheckSettings, epoch: Epoch | None) -> list[str]:
    shared: list[str] = []
    if settings.config_json is not None:
        shared += ["--config-json", settings.config_json]
    if settings.installer is not None:
        shared += ["--installer", settings.installer]
    if settings.raw:  # python -m build passes the caller's whole environment: --pass-env is implied
        return [sys.executable, "-m", "build", str(project), "-o", str(out), *shared]
    # --no-cache: every build asks the backend itself, so a variation reaches every hook
    argv = [sys.executable, "-m", "detpack", "build", str(project), "-o", str(out), "-q", "--no-cache", *shared]
    if epoch is not None:
        argv += ["--source-date-epoch", "unset" if epoch.origin == "unset" else str(epoch.value)]
    if settings.lock is not None:
        argv += ["--lock", str(settings.lock.resolve())]
    for name in dict.fromkeys((*settings.pass_env, *spec.pass_env)):
        argv += ["--pass-env", name]
    for link in settings.find_links:
        argv += ["--find-links", str(link.resolve())]
    if settings.offline:
        argv.append("--offline")
    return argv


def _child(spec: RunSpec) -> None:
    """In the build's process before it starts: the umask, and the CPUs it may run on."""
    os.umask(spec.umask)
    if spec.one_cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _build(spec: RunSpec, project: Path, out: Path, settings: CheckSettings, epoch: Epoch | None) -> None:
    label = settings.srcdir
    argv = _argv(spec, project, out, settings, epoch)
    with local.env():
        local.env.clear()
        local.env.update(spec.env)
        proc = local[argv[0]][argv[1:]].popen(
            cwd=str(spec.tree.parent),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: _child(spec),
        )
        output, _ = proc.communicate()
    if proc.returncode:
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit {proc.returncode}"
        raise BackendError(
            f"{label}: the {spec.label} build failed ({last})",
            details=text[-8000:],
        )


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    work = Path(tempfile.mkdtemp(prefix="detpack-check-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_check(
    settings: CheckSettings,
    *,
    on_step: Step | None = None,
    on_warning: Step | None = None,
    caller_env: Mapping[str, str] | None = None,
) -> CheckResult:
    """Run the check described in the module docstring."""
    step = on_step or (lambda _: None)
    caller = dict(os.environ if caller_env is None else caller_env)
    # The lock is read (and checked for this project) once here: a bad one is one line, before any build.
    request = BuildRequest(settings.srcdir, epoch_spec=settings.epoch_spec, lock=settings.lock)
    plan = resolve(request, caller_env=caller, on_warning=on_warning)
    if plan.source.kind != "directory":
        raise InputError(f"{settings.srcdir}: check needs a project directory, not an sdist")
    if settings.raw and settings.lock is not None:
        raise ConfigError(
            f"--lock {settings.lock}: python -m build (--raw) installs no lock; check detpack build without --raw"
        )
    epoch, extra = _epoch_and_extra(settings, plan.epoch)
    extra = {**_passed(settings, caller), **extra}
    if epoch is not None:
        step(f"SOURCE_DATE_EPOCH={epoch.value} (from {epoch.origin})")
    unsupported = {k: v for k, v in variations.supported(settings.libz).items() if k in settings.vary or k == "clock"}
    if settings.raw:  # python -m build runs the hooks itself, outside detpack's sandbox
        for name in sorted(variations.SANDBOX_ONLY & set(settings.vary)):
            unsupported[name] = f"--raw builds run without detpack's sandbox; the {name} was not varied"
    varied = tuple(v for v in settings.vary if v not in unsupported or v == "locale")
    with _workdir(settings.keep) as work:
        builds = _Builds(settings, plan.source, epoch, work, variations.control(work, caller, extra), step)
        control_out = builds.build(builds.base, "control")
        worst = _first_difference(builds, control_out, varied)
        if worst is None:
            return CheckResult(True, builds.count, varied, unsupported, None, None, (), epoch)
        noise_cmp = compare_paths(control_out, builds.build(builds.base, "control again"), skip_suffixes=SKIP)
        culprits = _culprits(builds, control_out, varied, signatures(noise_cmp))
        return CheckResult(
            False,
            builds.count,
            varied,
            unsupported,
            worst,
            None if noise_cmp.identical else noise_cmp,
            culprits,
            epoch,
        )


def _epoch_and_extra(settings: CheckSettings, resolved: Epoch) -> tuple[Epoch | None, dict[str, str]]:
    """The epoch every build gets, and the environment ``raw`` builds need to match it and the index options."""
    epoch: Epoch | None = resolved
    extra: dict[str, str] = {}
    if settings.raw:
        epoch = resolved if resolved.origin in ("option", "environment") else None
        if epoch is not None:
            extra["SOURCE_DATE_EPOCH"] = str(epoch.value)
    if settings.raw and settings.find_links:
        extra["PIP_FIND_LINKS"] = " ".join(str(p.resolve()) for p in settings.find_links)
    if settings.raw and settings.offline:
        extra["PIP_NO_INDEX"] = "1"
    return epoch, extra


def _passed(settings: CheckSettings, caller: Mapping[str, str]) -> dict[str, str]:
    """The variables the user passes to every build (``--pass-env``), from the caller's environment."""
    return {name: caller[name] for name in settings.pass_env if name in caller}


class _Builds:
    """The check's builds, numbered in the order they run, each in its own output directory under ``work``."""

    def __init__(
        self, settings: CheckSettings, source: Source, epoch: Epoch | None, work: Path, base: RunSpec, step: Step
    ) -> None:
        self.settings = settings
        self.source = source
        self.epoch = epoch
        self.work = work
        self.base = base
        self.step = step
        self.catalogue = variations.catalogue(settings.libz)
        self.count = 0

    def build(self, spec: RunSpec, name: str) -> Path:
        self.count += 1
        spec = replace(spec, label=name)
        # Trees and HOMEs sit at fixed places per spec: only the variation may move them.
        for d in (spec.tree, Path(spec.env["HOME"])):
            shutil.rmtree(d, ignore_errors=True)
        Path(spec.env["HOME"]).mkdir(parents=True)
        project = variations.lay_down(self.source, spec)
        out = self.work / f"out-{self.count:02d}-{name.replace(' ', '-')}"
        self.step(f"build {self.count}: {name}")
        _build(spec, project, out, self.settings, self.epoch)
        return out

    def experiment(self, names: tuple[str, ...], seed: int) -> RunSpec:
        """The control's spec with the variations ``names`` applied."""
        spec = self.base
        for n in names:
            spec = self.catalogue[n].apply(spec, self.work)
        if "hash-seed" in names:
            spec = replace(spec, env={**spec.env, "PYTHONHASHSEED": str(12345 + seed)})
        return spec


def _first_difference(builds: _Builds, control_out: Path, varied: tuple[str, ...]) -> Comparison | None:
    """Build with every variation at once ``runs - 1`` times; the first comparison that differs from the control."""
    worst: Comparison | None = None
    for i in range(1, max(builds.settings.runs, 2)):
        out = builds.build(builds.experiment(varied, i), "all variations")
        comparison = compare_paths(control_out, out, skip_suffixes=SKIP)
        if not comparison.identical and worst is None:
            worst = comparison
    return worst


def _culprits(
    builds: _Builds, control_out: Path, varied: tuple[str, ...], noise: set[Signature]
) -> tuple[Culprit, ...]:
    """One build per variation: those whose differences from the control go beyond the noise."""
    culprits = []
    for name in varied:
        cmp = compare_paths(control_out, builds.build(builds.experiment((name,), 1), name), skip_suffixes=SKIP)
        if signatures(cmp) - noise:
            culprits.append(Culprit(name, builds.catalogue[name].description, beyond(cmp, noise)))
    return tuple(culprits)
