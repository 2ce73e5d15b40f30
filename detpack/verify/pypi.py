"""``detpack rebuild --pypi NAME==VERSION``: check a published release against a local rebuild.

Fetch the release's sdist and wheel through pip (so the user's index settings apply), read
the backend and its version from the wheel's ``WHEEL`` ``Generator:`` line, take the epoch
from the wheel's newest entry time, rebuild the wheel from the sdist in the controlled
environment with that backend pinned, keep the backend's bytes (no normalization: the
published wheel was not normalized either) and classify: byte-identical, content-identical
(only metadata differs: which) or different (which members).
"""

from __future__ import annotations

import calendar
import re
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plumbum import local
from plumbum.commands.processes import ProcessExecutionError

from detpack.build.config import BuildRequest, FrontendSettings
from detpack.build.environment import LineSink
from detpack.build.pipeline import build_project
from detpack.digest import CHUNK, file_sha256
from detpack.errors import ConfigError, InputError
from detpack.verify.compare import FileComparison, compare_files, same_bytes

Verdict = Literal["byte-identical", "content-identical", "different"]

#: ``Generator:`` value -> the requirement that pins the backend that wrote it.
_GENERATORS = (
    (re.compile(r"^flit (?P<v>\S+)"), "flit_core"),
    (re.compile(r"^hatchling (?P<v>\S+)"), "hatchling"),
    (re.compile(r"^poetry-core (?P<v>\S+)"), "poetry-core"),
    (re.compile(r"^poetry (?P<v>\S+)"), "poetry-core"),
    (re.compile(r"^setuptools \((?P<v>[^)]+)\)"), "setuptools"),
    (re.compile(r"^bdist_wheel \((?P<v>[^)]+)\)"), "wheel"),
    (re.compile(r"^pdm-backend \((?P<v>[^)]+)\)"), "pdm-backend"),
    (re.compile(r"^pdm-backend (?P<v>\S+)"), "pdm-backend"),
)


@dataclass(frozen=True)
class WheelCheck:
    wheel: str
    generator: str
    pin: str | None
    epoch: int | None
    verdict: Verdict
    comparison: FileComparison | None
    rebuilt_sha256: str
    published_sha256: str
    record_problems: tuple[str, ...] = ()  # the published wheel against its own RECORD, per the `wheel` project


def record_problems(wheel: Path) -> tuple[str, ...]:
    """Where a wheel's members disagree with its own RECORD, checked by the ``wheel`` project's reader.

    ``wheel.wheelfile.WheelFile`` parses the file name and RECORD and verifies each member's
    sha256 while it is read; a member changed after the wheel was built, or missing from
    RECORD, is named. Members are streamed, never held whole.
    """
    from wheel.wheelfile import WheelError, WheelFile

    problems: list[str] = []
    try:
        with WheelFile(wheel) as wf:
            for info in wf.infolist():
                if info.is_dir():
                    continue
                try:
                    with wf.open(info) as member:
                        while member.read(CHUNK):
                            pass
                except WheelError as exc:
                    problems.append(str(exc))
    except WheelError as exc:
        return (str(exc),)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{wheel}: not a readable wheel ({exc})") from None
    return tuple(problems)


def backend_pin(generator: str) -> str | None:
    for pattern, requirement in _GENERATORS:
        m = pattern.match(generator.strip())
        if m:
            return f"{requirement}=={m['v']}"
    return None


def _wheel_facts(wheel: Path) -> tuple[str, int | None]:
    """The ``Generator:`` of a wheel and the SOURCE_DATE_EPOCH its build most likely had.

    Backends stamp the files they generate (``.dist-info``) with SOURCE_DATE_EPOCH when it is
    set, and every other member too. When the members' times vary while the ``.dist-info``
    ones agree, the publisher had no SOURCE_DATE_EPOCH: ``None``.
    """
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")]
        if not names:
            raise InputError(f"{wheel}: no .dist-info/WHEEL inside; not a wheel")
        lines = zf.read(names[0]).decode().splitlines()
        generator = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Generator:")), "")
        prefix = names[0].rsplit("/", 1)[0] + "/"
        times = {i.filename: calendar.timegm((*i.date_time, 0, 0, 0)) for i in zf.infolist()}
    generated = (f"{prefix}WHEEL", f"{prefix}METADATA", f"{prefix}RECORD")
    meta = {t for n, t in times.items() if n in generated}
    if len(set(times.values())) == 1:
        return generator, next(iter(times.values()))
    if len(meta) == 1:
        return generator, None
    return generator, max(times.values())


#: pip's lines that say why, most telling first.
_WHY = (
    re.compile(r"No matching distribution found for .*"),
    re.compile(r"Could not find a version that satisfies the requirement .*"),
    re.compile(r"(?:ERROR: )?(?!Ignored the following)[A-Z].*(?:error|Error|failed).*"),
)


def _why(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    for pattern in _WHY:
        for line in lines:
            m = pattern.search(line)
            if m and "Ignored the following yanked" not in line:
                return m.group(0)
    return lines[-1] if lines else "pip failed"


@dataclass(frozen=True)
class Fetch:
    """Where pip may get the release from: the user's index settings, plus these."""

    find_links: tuple[Path, ...] = ()  # folders (or URLs) pip also looks in
    offline: bool = False  # no index at all: only find_links

    def pip_flags(self) -> list[str]:
        flags = [f for d in self.find_links for f in ("--find-links", str(d))]
        return ["--no-index", *flags] if self.offline else flags


def _download(spec: str, dest: Path, kind: Literal["sdist", "pure wheel", "wheel"], fetch: Fetch) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    project = spec.split("==", 1)[0].strip()
    flags = {
        # The project as an sdist; what pip installs to read its metadata may be wheels (":all:"
        # would make pip build the backend from source too, which a wheelhouse cannot serve).
        "sdist": ["--no-binary", project],
        # The platform-independent wheel when the release has one (what a pure rebuild can match).
        "pure wheel": ["--only-binary", ":all:", "--platform", "any", "--implementation", "py", "--abi", "none"],
        "wheel": ["--only-binary", ":all:"],
    }[kind]
    try:
        pip = local[sys.executable]["-m", "pip", "download", "--no-deps", *fetch.pip_flags(), *flags]
        pip["-d", str(dest), spec]()
    except ProcessExecutionError as exc:
        why = _why(str(exc.stderr))
        about_itself = why.lower().rstrip(".").split(" for ")[-1].split("==")[0].split(" ")[0] == project.lower()
        if kind == "sdist" and ("Could not find a version" in why or about_itself):
            if fetch.offline:
                where = ", ".join(str(d) for d in fetch.find_links)
                raise InputError(
                    f"{spec}: no sdist of this release in --find-links {where} (offline: the index is not asked)"
                ) from None
            raise InputError(f"{spec}: the index has no sdist for this release ({why})") from None
        if kind == "sdist" and "matching distribution" in why:
            raise InputError(
                f"{spec}: pip downloaded the sdist but could not install what it needs to read its metadata ({why})"
            ) from None
        raise InputError(f"{spec}: cannot download its {kind} ({why})") from None
    # What this download added, or (pip skips a file already there) what matches it by name.
    got = sorted(set(dest.iterdir()) - before)
    return got or sorted(dest.iterdir())


def rebuild_pypi(
    spec: str,
    *,
    outdir: Path | None = None,
    find_links: tuple[Path, ...] = (),
    offline: bool = False,
    on_step: LineSink | None = None,
    on_line: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
) -> list[WheelCheck]:
    """Rebuild ``spec``'s wheels from its sdist; with ``outdir``, keep ``published/`` and ``rebuilt/`` there."""
    if "==" not in spec:
        raise InputError(f"{spec}: give an exact release, NAME==VERSION")
    if offline and not find_links:
        raise ConfigError(
            f"{spec}: --offline leaves nothing to fetch the release from; "
            "add --find-links DIR holding its sdist and wheel"
        )
    fetch = Fetch(tuple(find_links), offline)
    step = on_step or (lambda _: None)
    with tempfile.TemporaryDirectory(prefix="detpack-pypi-") as tmp:
        scratch = Path(tmp)
        work = outdir if outdir is not None else scratch
        sdist, wheels = _fetch_release(spec, work / "published", fetch, step)
        rebuild = _Rebuild(spec, sdist, work / "rebuilt", scratch, fetch, on_step, on_line, caller_env)
        return [_check_wheel(rebuild, wheel, step) for wheel in wheels]


def _fetch_release(spec: str, published: Path, fetch: Fetch, step: LineSink) -> tuple[Path, list[Path]]:
    """The release's sdist and its wheels (the pure one when there is one), downloaded into ``published``."""
    where = f"from --find-links {', '.join(str(d) for d in fetch.find_links)}" if fetch.offline else "with pip"
    step(f"downloading {spec} (sdist and wheel) {where}")
    sdists = [p for p in _download(spec, published, "sdist", fetch) if p.name.endswith(".tar.gz")]
    try:
        wheels = [p for p in _download(spec, published, "pure wheel", fetch) if p.suffix == ".whl"]
    except InputError:
        wheels = [p for p in _download(spec, published, "wheel", fetch) if p.suffix == ".whl"]
    if not sdists:
        raise InputError(f"{spec}: the index has no .tar.gz sdist for this release")
    return sdists[0], wheels


@dataclass(frozen=True)
class _Rebuild:
    """How every wheel of one release is rebuilt: from which sdist, into where, with which hooks."""

    spec: str
    sdist: Path
    rebuilt: Path  # the rebuilt wheels' directory
    scratch: Path  # for the backend's constraints file
    fetch: Fetch
    on_step: LineSink | None
    on_line: LineSink | None
    caller_env: Mapping[str, str] | None


def _check_wheel(rebuild: _Rebuild, wheel: Path, step: LineSink) -> WheelCheck:
    """Rebuild one published wheel with the backend and epoch it was made with, and compare."""
    generator, epoch = _wheel_facts(wheel)
    pin = backend_pin(generator)
    constraints = None
    if pin:
        constraints = rebuild.scratch / "constraints.txt"
        constraints.write_text(pin + "\n")
    when = "SOURCE_DATE_EPOCH unset" if epoch is None else f"SOURCE_DATE_EPOCH={epoch}"
    step(f"rebuilding {wheel.name} from {rebuild.sdist.name} with {pin or 'the newest backend'}, {when}")
    request = BuildRequest(
        srcdir=rebuild.sdist,
        outdir=rebuild.rebuilt,
        distributions=("wheel",),
        frontend=FrontendSettings(config_settings={}, constraints=constraints),
        epoch_spec="unset" if epoch is None else str(epoch),
        normalize=False,
        find_links=rebuild.fetch.find_links,
        offline=rebuild.fetch.offline,
    )
    built = build_project(request, on_step=rebuild.on_step, on_line=rebuild.on_line, caller_env=rebuild.caller_env)
    rebuilt = built.artifacts[0].path
    published_sha = file_sha256(wheel)
    if rebuilt.name != wheel.name:
        raise InputError(
            f"{rebuild.spec}: the sdist builds {rebuilt.name} on this machine, not the published {wheel.name} "
            "(a platform-specific wheel cannot be rebuilt here)"
        )
    verdict, comparison = _verdict(wheel, rebuilt)
    return WheelCheck(
        wheel.name,
        generator,
        pin,
        epoch,
        verdict,
        comparison,
        built.artifacts[0].sha256,
        published_sha,
        record_problems(wheel),
    )


def _verdict(published: Path, rebuilt: Path) -> tuple[Verdict, FileComparison | None]:
    """Byte-identical; content-identical, with what else differs; or different, with which members."""
    if same_bytes(published, rebuilt):
        return "byte-identical", None
    content = compare_files(published, rebuilt, published.name, content_only=True)
    if content.identical:
        return "content-identical", compare_files(published, rebuilt, published.name)
    return "different", content
