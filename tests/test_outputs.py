"""What detpack builds is usable and well-formed: pip installs and imports every wheel,
twine accepts every output, and the provenance parses with the in-toto SLSA v1 model."""

from __future__ import annotations

import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement

from conftest import DETPACK, FIXTURES, MODULES, ROOT, materialize, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> dict[str, Path]:
    """Each fixture built once with detpack: fixture name -> output directory."""
    outs: dict[str, Path] = {}
    base = tmp_path_factory.mktemp("built")
    for fixture in MODULES:
        src = materialize(FIXTURES / fixture, base / "src" / fixture, 0o022)
        out = base / "out" / fixture
        r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"])
        assert r.code == 0, r.stderr
        outs[fixture] = out
    return outs


@pytest.mark.parametrize("fixture", sorted(MODULES))
def test_rebuild_from_provenance_reproduces_every_digest(
    fixture: str, built: dict[str, Path], wheelhouse: Path
) -> None:
    [prov] = built[fixture].glob("*.provenance.json")
    src = built[fixture].parent.parent / "src" / fixture
    r = run([DETPACK, "rebuild", prov, "--source", src, "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.startswith("reproduced: 2 of 2 subjects match (tree digest matches)")


@pytest.mark.parametrize("fixture", sorted(MODULES))
def test_wheel_installs_and_imports(fixture: str, built: dict[str, Path], tmp_path: Path, wheelhouse: Path) -> None:
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", venv]).code == 0
    wheel = next(built[fixture].glob("*.whl"))
    r = run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            venv / "bin" / "python",
            "install",
            "--no-index",
            "--find-links",
            wheelhouse,
            wheel,
        ]
    )
    assert r.code == 0, r.stdout + r.stderr
    module = MODULES[fixture]
    r = run([venv / "bin" / "python", "-c", f"import {module}; print({module}.hello())"], cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.stdout.strip()


def test_exec_bit_survives_into_installed_script(built: dict[str, Path]) -> None:
    wheel = next(built["setuptools-basic"].glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
    scripts = [n for n in modes if n.endswith("/scripts/fx-hello")]
    assert scripts and modes[scripts[0]] == 0o755
    assert all(m in (0o644, 0o755) for m in modes.values())
    sdist = next(built["setuptools-basic"].glob("*.tar.gz"))
    with tarfile.open(sdist) as tf:
        members = {m.name: m for m in tf.getmembers()}
    script = next(m for n, m in members.items() if n.endswith("scripts/fx-hello"))
    assert script.mode == 0o755
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members.values())


def test_twine_check_passes(built: dict[str, Path]) -> None:
    files = [p for out in built.values() for p in out.iterdir() if p.name.endswith((".whl", ".tar.gz"))]
    r = run([sys.executable, "-m", "twine", "check", "--strict", *files])
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.count("PASSED") == len(files)


@pytest.mark.parametrize("fixture", sorted(MODULES))
def test_provenance_is_strict_slsa_v1(fixture: str, built: dict[str, Path]) -> None:
    [prov_path] = built[fixture].glob("*.provenance.json")
    raw = prov_path.read_bytes()
    data = json.loads(raw)
    # Canonical JSON: re-serialising gives the very same bytes.
    assert json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() == raw
    stmt = json_format.ParseDict(data, statement_pb2.Statement())  # unknown fields raise
    Statement.copy_from_pb(stmt).validate()
    pred = json_format.ParseDict(data["predicate"], provenance_pb2.Provenance())
    assert pred.build_definition.build_type
    names = {s["name"] for s in data["subject"]}
    outputs = {p.name for p in built[fixture].iterdir() if p.name.endswith((".whl", ".tar.gz"))}
    assert names == outputs
    deps = {d["name"]: d for d in data["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert {"source", "python", "zlib", "detpack", "build-backend"} <= deps.keys()
    installed = [
        d for d in deps.values() if d.get("uri", "").startswith("pkg:pypi/") and "usedFor" in d.get("annotations", {})
    ]
    if fixture != "noisy":  # the noisy backend is in-tree and needs nothing installed
        assert installed and all(len(d["digest"]["sha256"]) == 64 for d in installed)
        # Each recorded hash is the hash of a file that is really in the wheelhouse.
        from conftest import WHEELHOUSE, sha256

        house = {sha256(p) for p in WHEELHOUSE.glob("*.whl")}
        assert all(d["digest"]["sha256"] in house for d in installed)
    env = data["predicate"]["buildDefinition"]["internalParameters"]["environment"]
    assert env["TZ"] == "UTC" and env["PYTHONHASHSEED"] == "0" and env["LC_ALL"] == "C.UTF-8"
    assert env["HOME"].startswith("/tmp/detpack-build/")
    ext = data["predicate"]["buildDefinition"]["externalParameters"]
    assert ext["sourceDateEpoch"]["origin"] == "default"
    assert str(ROOT) not in json.dumps(data["predicate"]["buildDefinition"]["externalParameters"])
