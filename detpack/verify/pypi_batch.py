"""``detpack rebuild --pypi -r FILE``: many published releases checked at once.

Each release is checked by its own ``detpack rebuild --pypi NAME==VERSION --json`` process, a
few at a time: a build changes the process environment while it runs, and one release that
crashes or hangs its backend must not take the others with it. With a sandbox every build has
a private root, so the processes never wait for each other. The outcome of each is its JSON
report, or, when it could not be rebuilt, the one-line reason it gave.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.utils import canonicalize_name

from detpack.errors import ConfigError, InputError

Status = Literal["byte-identical", "content-identical", "different", "not rebuilt"]
#: Worst first: a release's status is its worst wheel's.
_ORDER: tuple[Status, ...] = ("not rebuilt", "different", "content-identical", "byte-identical")
_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.!+_-]*)$")


@dataclass(frozen=True)
class ReleaseOutcome:
    spec: str
    status: Status
    seconds: float
    report: dict[str, Any] | None  # the release's own --json report (None: not rebuilt)
    reason: str = ""  # why it was not rebuilt: the error line of its check
    timed_out: bool = False  # given up at the time limit (not a finding about the release: never cached)

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.spec,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            **({"reason": self.reason} if self.reason else {}),
            "wheels": (self.report or {}).get("wheels", []),
        }


def read_list(path: Path) -> list[str]:
    """``NAME==VERSION`` lines (``#`` comments and blank lines ignored; repeats dropped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such release list") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the release list ({exc})") from None
    specs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        m = _SPEC.match(spec)
        if m is None:
            raise InputError(f"{path}:{number}: {spec!r} is not an exact release; write NAME==VERSION, one a line")
        specs.setdefault(f"{canonicalize_name(m['name'])}=={m['version']}", spec)
    if not specs:
        raise InputError(f"{path}: no releases listed (one NAME==VERSION a line)")
    return list(specs.values())


#: How long one release may take in a batch before it is given up (it never holds up the rest).
DEFAULT_TIMEOUT = 600.0


def _run(argv: list[str], timeout: float | None) -> tuple[int, str, str] | None:
    """(exit code, stdout, stderr) of ``argv``; None when it outran ``timeout`` seconds, in which case it has
    been killed, and with it its sandboxes and every build process in them (bubblewrap's --die-with-parent).
    It stays in this process group, so a Ctrl-C of the batch reaches it too."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return None
    return process.returncode, stdout, stderr


def parse_timeout(text: str) -> float | None:
    """``--timeout``: ``90s``, ``10m``, ``1h`` or plain seconds; ``0`` or ``none``: no limit."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if text.strip().lower() == "none":
        return None
    if m is None:
        raise ConfigError(f"--timeout {text!r}: give a time such as 90s, 10m or 1h (0 or none: no limit)")
    seconds = float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]
    return seconds or None


def _span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def rebuild_many(
    specs: Sequence[str],
    *,
    jobs: int,
    outdir: Path | None = None,
    find_links: tuple[Path, ...] = (),
    offline: bool = False,
    attest: Path | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    on_done: Callable[[int, ReleaseOutcome], None] | None = None,
) -> list[ReleaseOutcome]:
    """Check every release, ``jobs`` at a time; outcomes in the order of ``specs``. With ``attest`` (a
    private key) each rebuild signs what it found, in its folder under ``outdir`` (which it then needs);
    the report lists the attestations."""
    flags = [f for d in find_links for f in ("--find-links", str(d.absolute()))]
    if offline:
        flags.append("--offline")
    if attest is not None:
        if outdir is None:
            raise ValueError("rebuild_many: attest needs an outdir to write the attestations in")
        flags += ["--attest", str(attest.absolute())]

    def one(spec: str) -> ReleaseOutcome:
        argv = [sys.executable, "-m", "detpack", "rebuild", "--pypi", spec, "--json", "-q", *flags]
        if outdir is not None:
            argv += ["-o", str(outdir.absolute() / spec.replace("==", "-"))]
        started = time.monotonic()
        finished = _run(argv, timeout)
        seconds = time.monotonic() - started
        if finished is None:
            said = f"gave up after {_span(timeout or 0)} (the time limit for one release: --timeout)"
            return ReleaseOutcome(spec, "not rebuilt", seconds, None, said, timed_out=True)
        code, stdout, stderr = finished
        if code in (0, 1):
            try:
                report = json.loads(stdout)
                return ReleaseOutcome(spec, _worst(report), seconds, report)
            except (ValueError, KeyError, TypeError):
                pass  # fall through: said what went wrong below
        return ReleaseOutcome(spec, "not rebuilt", seconds, None, _reason(stderr, code))

    outcomes: list[ReleaseOutcome | None] = [None] * len(specs)
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(one, spec): i for i, spec in enumerate(specs)}
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[futures[future]] = outcome
            done += 1
            if on_done is not None:
                on_done(done, outcome)
    return [o for o in outcomes if o is not None]


def _worst(report: dict[str, Any]) -> Status:
    verdicts = [w["verdict"] for w in report["wheels"]]
    if not verdicts:
        raise KeyError("wheels")
    return min(verdicts, key=_ORDER.index)


def _reason(stderr: str, code: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else f"detpack exited {code} and said nothing"


def tally(outcomes: Sequence[ReleaseOutcome]) -> dict[Status, int]:
    return {s: sum(1 for o in outcomes if o.status == s) for s in reversed(_ORDER)}
