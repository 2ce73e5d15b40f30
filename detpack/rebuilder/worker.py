"""One rebuilder: claim a release from the queue, rebuild it, post the signed attestations, record the outcome.

The rebuild is ``detpack rebuild --pypi SPEC --attest KEY -o DIR`` in a process of its own, as
``rebuild -r`` runs each release (a build changes the process environment, and a backend that
crashes or hangs must not take the worker with it). While it runs the worker renews its lease
every third of the lease; a worker that is killed stops renewing, and once its lease has run out
another worker takes the job. The attestations it wrote (``*.rebuild.KEYID.intoto.jsonl``) go to
the store as ``attestation`` entries, then the outcome and their digests go to the queue in one
transaction. A release that could not be rebuilt is an outcome too ("not rebuilt", with the
reason), so it is not tried again by this key.

A worker killed after posting its attestations but before recording the outcome rebuilds the
release again when it comes back; the store already binds the attestation's name (names are
write-once), so the attestation it posted the first time is the one recorded: once it is checked to be
this key's, about the same wheels. A name another writer bound first stops the worker in one line (the
queue never records as this key's an attestation it did not sign).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from detpack.errors import InputError, StoreError
from detpack.provenance import reader, signing
from detpack.provenance.attestation import REBUILD_SUFFIX
from detpack.rebuilder.queue import VERDICTS, Claim, Outcome, Queue
from detpack.store.store import Store
from detpack.verify.pypi_batch import DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Settings:
    key: Path  # the rebuilder's private key: signs its attestations (rebuild --attest)
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    lease: float = 600.0  # seconds a claim holds without renewal
    poll: float = 5.0  # seconds between looks at the queue when nothing can be taken
    drain: bool = False  # stop once nothing is left for this key (else wait for new jobs)
    find_links: tuple[Path, ...] = ()
    offline: bool = False
    workdir: Path | None = None  # where rebuilds keep their files (default: a temporary folder)
    timeout: float | None = DEFAULT_TIMEOUT  # seconds one rebuild may take before it is given up (None: no limit)


@dataclass(frozen=True)
class Done:
    """One job the worker finished."""

    claim: Claim
    outcome: Outcome
    seconds: float
    posted: int  # attestations newly stored (0: already in the store, or none)


@dataclass(frozen=True)
class Event:
    """What the worker is doing, for the caller to show: ``claimed``, ``done``, ``lease lost``, ``waiting``."""

    kind: str
    release: str
    text: str = ""


def run(
    queue: Queue,
    store: Store,
    settings: Settings,
    on_event: Callable[[Event], None] = lambda e: None,
    stop: Callable[[], bool] = lambda: False,
) -> list[Done]:
    """Take jobs until ``stop()``, or with ``drain`` until nothing is left for this key; what was done."""
    keyid = signing.load_private_key(settings.key).public.keyid
    done: list[Done] = []
    waiting = False
    while not stop():
        claim = queue.claim(keyid, settings.name, settings.lease)
        if claim is None:
            left = queue.remaining(keyid)
            if settings.drain and left.total == 0:
                break
            if not waiting:
                on_event(Event("waiting", "", f"{left.leased} leased by other workers" if left.leased else "no jobs"))
            waiting = True
            time.sleep(min(settings.poll, settings.lease / 2))
            continue
        waiting = False
        dead = claim.taken_over_from
        on_event(Event("claimed", claim.spec, f"taken over from {dead}, whose lease ran out" if dead else ""))
        try:
            done.append(_one(queue, store, settings, claim, on_event))
        except BaseException:
            with contextlib.suppress(StoreError):  # stopped on purpose or by a bug: the job is free again at once
                queue.release(claim)
            raise
        on_event(Event("done", claim.spec, _said(done[-1])))
    return done


def _said(d: Done) -> str:
    o = d.outcome
    what = o.reason if o.verdict == "not rebuilt" else ", ".join(f"sha256:{a[:16]}…" for a in o.attestations)
    return f"{o.verdict} ({what}; {d.seconds:.1f} s)"


def _one(queue: Queue, store: Store, settings: Settings, claim: Claim, on_event: Callable[[Event], None]) -> Done:
    started = time.monotonic()
    base = settings.workdir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="detpack-rebuilder-", dir=base) as tmp:
        outdir = Path(tmp) / claim.release.replace("==", "-")
        code, reason = _rebuild(queue, settings, claim, outdir, on_event)
        written = sorted(outdir.glob(f"*{REBUILD_SUFFIX}{claim.keyid[:16]}.intoto.jsonl"))
        if code not in (0, 1) or not written:
            reason = reason.removeprefix(f"{claim.spec}: ") or f"detpack rebuild exited {code} and attested nothing"
            outcome = Outcome("not rebuilt", (), reason)
            queue.finish(claim, outcome)
            return Done(claim, outcome, time.monotonic() - started, 0)
        digests, verdicts, posted = _post(store, written, signing.load_private_key(settings.key).public)
    worst = max(verdicts, key=VERDICTS.index)  # the release's verdict is its worst wheel's
    outcome = Outcome(worst, tuple(digests))
    queue.finish(claim, outcome)
    return Done(claim, outcome, time.monotonic() - started, posted)


def _rebuild(
    queue: Queue, settings: Settings, claim: Claim, outdir: Path, on_event: Callable[[Event], None]
) -> tuple[int, str]:
    """Run ``detpack rebuild --pypi`` for the claim, renewing the lease while it runs: (exit code, error line)."""
    argv = [sys.executable, "-m", "detpack", "rebuild", "--pypi", claim.spec, "--attest", str(settings.key)]
    argv += ["-o", str(outdir), "-q"]
    argv += [f for d in settings.find_links for f in ("--find-links", str(d.absolute()))]
    if settings.offline:
        argv.append("--offline")
    log = outdir.parent / "rebuild.log"
    renew_every = settings.lease / 3
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    with log.open("w+b") as err:
        # In the worker's process group (a worker killed whole takes its rebuild along); given up, the rebuild
        # is killed, and its sandboxes with it (bubblewrap's --die-with-parent).
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            while True:
                wait = renew_every if deadline is None else max(0.0, min(renew_every, deadline - time.monotonic()))
                try:
                    code = proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    if deadline is not None and time.monotonic() >= deadline:
                        limit = settings.timeout or 0
                        return -1, f"gave up after {limit:g} s (the time limit for one rebuild: --timeout)"
                    if not queue.renew(claim, settings.lease):
                        on_event(Event("lease lost", claim.spec, "another worker may take it; rebuilding anyway"))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return code, _reason(stderr, code) if code not in (0, 1) else ""


def _reason(stderr: str, code: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else f"detpack rebuild exited {code} and said nothing"


def _post(store: Store, written: list[Path], signer: signing.PublicKey) -> tuple[list[str], list[str], int]:
    """Store the attestations: (their digests as stored, their verdicts, how many were new). One whose name the
    store binds already was posted by this key before (a worker killed before it recorded the outcome): that one
    stands, once it is this key's attestation about the same wheels (names are write-once, and another writer
    may have bound the name first: its attestation is never recorded as this key's)."""
    bound = store.state().names
    fresh = [p for p in written if p.name not in bound]
    pushed = {p.name: p for p in store.push([], None, fresh)} if fresh else {}
    digests, verdicts = [], []
    for path in written:
        if path.name in pushed:
            digests.append(pushed[path.name].digest)
            verdicts.append(_verdict(path.read_bytes(), path.name))
        else:
            digest = bound[path.name]
            with store.backend.open_blob(digest) as blob:
                data = blob.read()
            _same_attestation(data, path, signer, f"{store.backend.url}: {path.name}")
            verdicts.append(_verdict(data, f"{path.name} in the store"))
            digests.append(digest)
    return digests, verdicts, sum(1 for p in pushed.values() if p.stored)


def _same_attestation(data: bytes, path: Path, signer: signing.PublicKey, where: str) -> None:
    """Refuse a stored attestation that ``signer`` did not sign, or that is about other wheels than ``path``'s."""
    stored = reader.read(data, where)
    if stored.envelope is None or not signing.signed_by(stored.envelope, signer):
        raise StoreError(
            f"{where}: the name is bound to an attestation not signed by this rebuilder's key "
            f"{signer.keyid[:16]} (another writer pushed it first; see detpack store show {path.name})"
        )
    ours = {s.sha256 for s in reader.read_file(path).subjects}
    if {s.sha256 for s in stored.subjects} != ours:
        raise StoreError(
            f"{where}: the name is bound to an attestation about other wheels than this rebuild's (another "
            f"writer pushed it first; see detpack store show {path.name})"
        )


def _verdict(data: bytes, source: str) -> str:
    verdict = reader.read(data, source).statement.get("predicate", {}).get("verdict")
    if verdict not in VERDICTS:
        raise InputError(f"{source}: the attestation's verdict {verdict!r} is none of {', '.join(VERDICTS)}")
    return str(verdict)
