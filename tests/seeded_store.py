"""A large, real store made fast, and what it holds (for tests/test_store_query.py and bench/query.py).

``seed(ROOT, N)`` makes a directory store with about N log entries: releases of many projects
(a provenance statement written by ``detpack.provenance.statement``, a wheel and an sdist pushed
with it), OCI layers holding some of those wheels (their statements by ``detpack.oci.attest``, a
CycloneDX SBOM of every fifth by ``detpack.sbom``), promotions to three environments, tags and holds.
Every entry is the record ``Store`` would write, each followed by a checkpoint signed with the
store's key, so the result passes ``store verify``; only the way it is written is bulk: a writer
appending N entries through ``Store`` re-reads the whole log each time (quadratic), so the writer
here keeps the Merkle tree's frontier and writes blobs, names and log lines without the per-write
fsyncs a real writer needs. ``Seeded`` is the ground truth a test checks queries against, computed
here from what was generated, never from the index.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detpack.digest import canonical_json, sha256_hex
from detpack.git import GitInfo
from detpack.oci import attest
from detpack.provenance import signing, statement
from detpack.sbom import LayerWheel, Packed, packed_cyclonedx
from detpack.store import LocalBackend, Store, StoreKeys, log, merkle
from detpack.store.keys import default_key_dir

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=60)  # entry i is logged at START + i * STEP
ENVIRONMENTS = ("dev", "staging", "prod")
LOCAL = statement.BUILDER_ID
CI = "https://github.com/example/release/.github/workflows/build.yml@refs/heads/main"
#: build backends and the versions a build may have installed of them, and what else each installs
BACKENDS = {
    "setuptools.build_meta": [
        ("setuptools", ("68.2.2", "69.5.1", "70.0.0", "75.1.0")),
        ("wheel", ("0.42.0", "0.43.0")),
    ],
    "hatchling.build": [("hatchling", ("1.21.0", "1.25.0")), ("packaging", ("23.2", "24.1"))],
    "flit_core.buildapi": [("flit-core", ("3.9.0", "3.10.1"))],
}


@dataclass(frozen=True)
class Release:
    """One build: its provenance, wheel and sdist (digests hex), and what its provenance records."""

    project: str
    version: str
    provenance: str
    wheel: str
    sdist: str
    deps: tuple[tuple[str, str], ...]  # (canonical name, version) installed for the build
    commit: str
    repository: str
    builder: str

    @property
    def wheel_name(self) -> str:
        return f"{self.project}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class Layer:
    name: str
    digest: str
    provenance: str
    wheels: tuple[tuple[str, str], ...]  # (canonical name, version)
    sbom: str | None  # the digest of its stored SBOM


@dataclass(frozen=True)
class Promoted:
    log_index: int  # 0-based
    env: str
    digest: str
    time: dt.datetime


@dataclass
class Seeded:
    """What a seeded store holds."""

    root: Path
    entries: int = 0
    releases: list[Release] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    promotions: list[Promoted] = field(default_factory=list)
    held: list[str] = field(default_factory=list)

    def live(self, env: str, at: dt.datetime | None = None) -> str | None:
        found = [p for p in self.promotions if p.env == env and (at is None or p.time <= at)]
        return found[-1].digest if found else None


def time_of(index: int) -> dt.datetime:
    return START + index * STEP


class _Bulk(LocalBackend):
    """A directory store written without fsyncs and with the log's length kept in memory (seeding only)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.pending: dict[str, list[bytes]] = {"entries": [], "checkpoints": []}

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_hex(data)
        target = self._blob(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o444)
        return digest

    def bind_fast(self, name: str, digest: str) -> None:
        target = self._name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"sha256:{digest}\n", "ascii")

    def flush(self) -> None:
        for stream, records in self.pending.items():
            path = self._stream(stream)  # type: ignore[arg-type]
            with path.open("ab") as f:
                f.write(b"".join(r + b"\n" for r in records))
            records.clear()


class Seeder:
    """Appends entries to a directory store in bulk (``seed`` uses it; ``more`` appends to a seeded store)."""

    def __init__(self, root: Path, seeded: Seeded | None = None, seed: int = 0, keys: Path | None = None) -> None:
        self.backend = _Bulk(root)
        store = Store(self.backend, StoreKeys(keys or default_key_dir()))
        store.init()
        records, _ = store.records()
        init = log.parse_entry(records[0])
        self.origin = str(init["origin"])
        found = store.keys.find(str(init["keyid"]))
        assert found is not None
        self.key = signing.load_private_key(found)
        self.size = 0
        self.frontier: list[bytes] = []
        for record in records:
            self._leaf(record)
        self.rng = random.Random(seed * 1_000_003 + len(records))
        self.seeded = seeded or Seeded(root)
        self.seeded.entries = self.size
        self.versions: dict[str, int] = {}
        for r in self.seeded.releases:
            self.versions[r.project] = self.versions.get(r.project, 0) + 1

    def _leaf(self, record: bytes) -> None:
        size, node = self.size, merkle.leaf_hash(record)
        while size & 1:
            node = merkle.node_hash(self.frontier.pop(), node)
            size >>= 1
        self.frontier.append(node)
        self.size += 1

    def _root(self) -> bytes:
        node = self.frontier[-1]
        for left in reversed(self.frontier[:-1]):
            node = merkle.node_hash(left, node)
        return node

    def append(self, entry: dict[str, Any]) -> int:
        """Log ``entry`` as the store would (time, user, canonical record) and sign a checkpoint."""
        index = self.size
        time = statement.rfc3339(time_of(index))
        record = log.entry_record({**entry, "time": time, "user": "seeder"})
        self._leaf(record)
        checkpoint = log.Checkpoint.signed(self.key, self.origin, self.size, self._root(), time, c2sp=True)
        self.backend.pending["entries"].append(record)
        self.backend.pending["checkpoints"].append(checkpoint.record())
        self.seeded.entries = self.size
        return index

    def push(self, kind: str, name: str, data: bytes, **extra: Any) -> str:
        digest = self.backend.put_bytes(data)
        self.append({"type": kind, "name": name, "digest": digest, "size": len(data), **extra})
        self.backend.bind_fast(name, digest)
        return digest

    def run(self, entries: int) -> Seeded:
        """Append about ``entries`` entries (a release is three; never fewer than asked)."""
        goal = self.size + entries
        while self.size < goal:
            roll = self.rng.random()
            releases = self.seeded.releases
            if releases and roll < 0.06:
                self.promote()
            elif len(releases) > 3 and roll < 0.09:
                self.layer()
            elif releases and roll < 0.10:
                self.tag_or_hold()
            else:
                self.release()
        self.backend.flush()
        return self.seeded

    def release(self) -> Release:
        number = self.rng.randrange(max(8, len(self.seeded.releases) // 6 + 8))
        project = f"proj{number:04d}"
        self.versions[project] = self.versions.get(project, 0) + 1
        version = f"1.{self.versions[project]}.0"
        backend = sorted(BACKENDS)[number % len(BACKENDS)]
        installed = [(name, self.rng.choice(versions)) for name, versions in BACKENDS[backend]]
        commit = hashlib.sha1(f"{project} {version} {self.rng.random()}".encode()).hexdigest()
        repository = f"https://git.example.com/org{number % 5}/{project}.git"
        builder = CI if number % 3 == 0 else LOCAL
        wheel_name, sdist_name = f"{project}-{version}-py3-none-any.whl", f"{project}-{version}.tar.gz"
        wheel_bytes, sdist_bytes = f"wheel {project} {version}".encode(), f"sdist {project} {version}".encode()
        subjects = [
            statement.Subject(sdist_name, sha256_hex(sdist_bytes)),
            statement.Subject(wheel_name, sha256_hex(wheel_bytes)),
        ]
        record = canonical_json(build_statement(subjects, backend, installed, commit, repository, builder, self.size))
        prov = self.push("provenance", f"{project}-{version}.provenance.json", record,
                         subjects=[s.sha256 for s in subjects], keyids=[], signed=False)  # fmt: skip
        wheel = self.push("push", wheel_name, wheel_bytes, provenance=prov)
        sdist = self.push("push", sdist_name, sdist_bytes, provenance=prov)
        release = Release(project, version, prov, wheel, sdist, tuple(installed), commit, repository, builder)
        self.seeded.releases.append(release)
        return release

    def promote(self) -> None:
        env = self.rng.choice(ENVIRONMENTS)
        release = self.rng.choice(self.seeded.releases[-40:])
        index = self.append({"type": "promote", "digest": release.wheel, "env": env, "forced": False,
                             "verified_by": self.key.public.keyid})  # fmt: skip
        self.seeded.promotions.append(Promoted(index, env, release.wheel, time_of(index)))

    def tag_or_hold(self) -> None:
        release = self.rng.choice(self.seeded.releases)
        if self.rng.random() < 0.5:
            name = f"{release.project}-latest-{self.size}"
            self.append({"type": "tag", "name": name, "digest": release.wheel})
            self.backend.bind_fast(name, release.wheel)
        else:
            self.append({"type": "hold", "digest": release.sdist})
            self.seeded.held.append(release.sdist)

    def layer(self) -> Layer:
        chosen = self.rng.sample(self.seeded.releases[-200:], k=min(3, len(self.seeded.releases[-200:])))
        name = f"app-{self.size}.tar.gz"
        data = f"layer {self.size} {[r.wheel for r in chosen]}".encode()
        digest = sha256_hex(data)
        wheels = [_wheel_descriptor(r) for r in chosen]
        times = (time_of(self.size), time_of(self.size))
        layer_statement = attest.layer_statement(
            name=name, digest=digest, diff_id=f"sha256:{hashlib.sha256(data + b'tar').hexdigest()}", additions=(),
            wheels=wheels, python={"prefix": "/usr/local", "version": "3.11"}, epoch=315532800, times=times,
        )  # fmt: skip
        prov = self.push("provenance", f"{name}.provenance.json", canonical_json(layer_statement),
                         subjects=[digest], keyids=[], signed=False)  # fmt: skip
        self.push("push", name, data, provenance=prov)
        sbom = None
        if len(self.seeded.layers) % 5 == 0:
            packed = Packed("layer", name, digest, 315532800, tuple(_layer_wheel(r) for r in chosen), {})
            sbom = self.push("push", f"{name}.cdx.json", packed_cyclonedx(packed))
        layer = Layer(name, digest, prov, tuple((r.project, r.version) for r in chosen), sbom)
        self.seeded.layers.append(layer)
        return layer


def seed(root: Path, entries: int, *, seed: int = 0, keys: Path | None = None) -> Seeded:
    """A store at ``root`` with at least ``entries`` log entries (see the module docstring); its key is
    made in ``keys`` (default: the writer's key directory)."""
    return Seeder(root, seed=seed, keys=keys).run(entries)


def more(seeded: Seeded, entries: int, *, seed: int = 1, keys: Path | None = None) -> Seeded:
    """Append at least ``entries`` more entries to a seeded store."""
    return Seeder(seeded.root, seeded, seed=seed, keys=keys).run(entries)


@dataclass(frozen=True)
class _Source:
    path: Path
    kind: str
    digest: str
    git: GitInfo | None


@dataclass(frozen=True)
class _Epoch:
    value: int
    origin: str


@dataclass(frozen=True)
class _Dependency:
    name: str
    version: str
    requested: bool
    sha256: str | None


@dataclass(frozen=True)
class _Raw:
    distribution: str
    backend: str
    requires: Sequence[str]
    installed: Sequence[_Dependency]


@dataclass(frozen=True)
class _CI:
    run_url: str | None
    builder_id: str | None

    def record(self) -> dict[str, object]:
        return {"system": "github-actions", "runUrl": self.run_url}


TOOLCHAIN = statement.Toolchain(
    "CPython", "3.11.7", "0" * 64, "1.2.13", "zlib-ng 2.3.3", "zlib-ng 1.1.0", "0.1.0", "1" * 64, "1.2.1", "24.0"
)


def build_statement(
    subjects: Sequence[statement.Subject],
    backend: str,
    installed: Sequence[tuple[str, str]],
    commit: str,
    repository: str,
    builder: str,
    index: int,
) -> dict[str, Any]:
    """A ``detpack build`` statement, as ``statement.statement`` writes one."""
    git = GitInfo(Path("/src"), Path("/src/.git"), commit, False, 1767225600, repository, "")
    deps = tuple(
        _Dependency(n, v, n == installed[0][0], hashlib.sha256(f"{n}{v}".encode()).hexdigest()) for n, v in installed
    )
    raws = [_Raw(d, backend, (f"{installed[0][0]}>=1",), deps) for d in ("sdist", "wheel")]
    started = time_of(index)
    ci = _CI(f"https://github.com/example/release/actions/runs/{index}", builder) if builder == CI else None
    run = statement.RunFacts(f"urn:uuid:{index:032x}", started, started, "2" * 64, {"os": "Linux"}, (), ci=ci)
    parameters = statement.BuildParameters(("sdist", "wheel"), True, {}, True, "pip", False, True)
    return statement.statement(
        subjects=subjects, source=_Source(Path("/src"), "directory", "3" * 64, git), epoch=_Epoch(1767225600, "git"),
        parameters=parameters, environment={"LC_ALL": "C.UTF-8"}, paths={}, passed_through=(), raws=raws,
        toolchain=TOOLCHAIN, run=run,
    )  # fmt: skip


def _wheel_descriptor(release: Release) -> dict[str, Any]:
    """What ``attest.wheel_descriptor`` records of a wheel whose own provenance lies beside it."""
    return {
        "name": release.wheel_name,
        "digest": {"sha256": release.wheel},
        "annotations": {
            "provenance": {"name": f"{release.project}-{release.version}.provenance.json",
                           "digest": {"sha256": release.provenance}},
            "source": {"digest": {"gitCommit": release.commit, "sha256": "3" * 64},
                       "uri": f"git+{release.repository}@{release.commit}"},
            "builder": {"id": release.builder},
        },
    }  # fmt: skip


def _layer_wheel(release: Release) -> LayerWheel:
    return LayerWheel(release.wheel_name, release.project, release.version, release.wheel, "", "",
                      f"{release.project}-{release.version}.provenance.json", release.commit, "3" * 64)  # fmt: skip
