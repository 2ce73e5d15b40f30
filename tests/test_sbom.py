"""``detpack sbom``: a build's CycloneDX 1.6 SBOM, valid by cyclonedx-python-lib's own validator, the
same bytes from two builds made in different places."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from conftest import DETPACK, FIXTURES, materialize, run
from detpack.digest import canonical_json
from detpack.sbom import project_facts


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> tuple[Path, Path]:
    outs = []
    for i, umask in enumerate((0o022, 0o077)):
        base = tmp_path_factory.mktemp(f"sbom{i}")
        src = materialize(FIXTURES / "setuptools-basic", base / f"checkout-{i}" / "src", umask)
        out = base / "out"
        r = run([DETPACK, "build", src, "-o", out, "--offline", "--find-links", wheelhouse], umask=umask)
        assert r.code == 0, r.stdout + r.stderr
        outs.append(out)
    return outs[0], outs[1]


def _sbom(out: Path) -> tuple[Path, dict]:
    r = run([DETPACK, "sbom", out / "fx_setuptools_basic-1.0.0.provenance.json"])
    assert r.code == 0, r.stdout + r.stderr
    path = out / "fx_setuptools_basic-1.0.0.cdx.json"
    assert r.stdout.startswith(f"{path}  CycloneDX 1.6 SBOM of "), r.stdout
    return path, json.loads(path.read_text())


def test_the_sbom_is_valid_cyclonedx_and_the_same_from_two_builds(two_builds: tuple[Path, Path]) -> None:
    a_path, a = _sbom(two_builds[0])
    b_path, _ = _sbom(two_builds[1])
    assert a_path.read_bytes() == b_path.read_bytes()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(a_path.read_text()) is None
    assert a["specVersion"] == "1.6" and a["serialNumber"].startswith("urn:uuid:")
    # each artifact with the sha256 of the file beside it
    files = {c["name"]: c["hashes"][0]["content"] for c in a["components"] if c["type"] == "file"}
    assert files == {n: hashlib.sha256((two_builds[0] / n).read_bytes()).hexdigest() for n in files}
    assert sorted(files) == ["fx_setuptools_basic-1.0.0-py3-none-any.whl", "fx_setuptools_basic-1.0.0.tar.gz"]
    assert a["metadata"]["component"]["purl"] == "pkg:pypi/fx-setuptools-basic@1.0.0"


def test_the_formulation_is_what_the_provenance_says_was_installed(two_builds: tuple[Path, Path]) -> None:
    out = two_builds[0]
    _, sbom = _sbom(out)
    record = json.loads((out / "fx_setuptools_basic-1.0.0.provenance.json").read_text())
    installed = {
        d["uri"]: d["digest"]["sha256"]
        for d in record["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d.get("uri", "").startswith("pkg:pypi/setuptools@")
    }
    assert len(installed) == 1
    (formula,) = sbom["formulation"]
    built = {c["purl"]: c["hashes"][0]["content"] for c in formula["components"] if "hashes" in c}
    purl, digest = next(iter(installed.items()))
    assert built[purl] == digest
    properties = {p["name"]: p["value"] for p in formula["properties"]}
    assert properties["detpack:build-backend"] == "setuptools.build_meta"
    assert properties["detpack:sandbox"] == "kind=bubblewrap, network=none, hermetic=true"
    definition = canonical_json(record["predicate"]["buildDefinition"])
    assert properties["detpack:build-definition:sha256"] == hashlib.sha256(definition).hexdigest()


def test_a_tampered_or_missing_artifact_is_one_line(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    for name in ("fx_setuptools_basic-1.0.0.provenance.json", "fx_setuptools_basic-1.0.0.tar.gz"):
        (tmp_path / name).write_bytes((two_builds[0] / name).read_bytes())
    record = tmp_path / "fx_setuptools_basic-1.0.0.provenance.json"
    r = run([DETPACK, "sbom", record])  # the wheel is missing
    assert r.code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "fx_setuptools_basic-1.0.0-py3-none-any.whl is not beside it" in r.stderr
    wheel = tmp_path / "fx_setuptools_basic-1.0.0-py3-none-any.whl"
    wheel.write_bytes((two_builds[0] / wheel.name).read_bytes() + b"x")
    r = run([DETPACK, "sbom", record])
    assert r.code == 2 and r.stderr.count("\n") == 1 and "is not the recorded" in r.stderr, r.stderr
    assert not list(tmp_path.glob("*.cdx.json"))  # nothing written


def test_declared_dependencies_leave_out_extras(tmp_path: Path) -> None:
    wheel = tmp_path / "p-1.0-py3-none-any.whl"
    metadata = (
        "Metadata-Version: 2.4\nName: p\nVersion: 1.0\nLicense-Expression: MIT\n"
        "Requires-Dist: requests>=2\nRequires-Dist: tomli; python_version < '3.11'\n"
        "Requires-Dist: pytest; extra == 'test'\n"
    )
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("p-1.0.dist-info/METADATA", metadata)
    facts = project_facts(wheel)
    assert (facts.name, facts.version, facts.license_expression) == ("p", "1.0", "MIT")
    assert [str(r) for r in facts.requires] == ["requests>=2", 'tomli; python_version < "3.11"']


def test_build_sbom_writes_the_same_sbom_beside_the_build(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    wheelhouse = Path(__file__).resolve().parent.parent / ".wheelhouse"
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    r = run([DETPACK, "build", src, "-o", tmp_path / "out", "--offline", "--find-links", wheelhouse, "--sbom"])
    assert r.code == 0, r.stdout + r.stderr
    written = tmp_path / "out" / "fx_setuptools_basic-1.0.0.cdx.json"
    assert f"{written}  CycloneDX 1.6 SBOM" in r.stdout
    reference, _ = _sbom(two_builds[0])
    assert written.read_bytes() == reference.read_bytes()


def test_a_layer_sbom_lists_every_wheel_with_its_sha256(two_builds: tuple[Path, Path], wheelhouse: Path) -> None:
    """The SBOM of a ``detpack layer`` names each wheel installed in it: exact version, the sha256 of the
    wheel file, its licence, and for our own build the provenance beside it; two layers made in two
    places give the same SBOM bytes."""
    ours = "fx_setuptools_basic-1.0.0-py3-none-any.whl"
    theirs = sorted(wheelhouse.glob("packaging-*.whl"))[-1]
    sboms = []
    for out in two_builds:
        layer = out / "layer" / "app.tar.gz"
        r = run([DETPACK, "layer", "-o", layer, "--wheel", out / ours, theirs, "--python-version", "3.11", "-q"])
        assert r.code == 0, r.stdout + r.stderr
        r = run([DETPACK, "sbom", out / "layer" / "app.tar.gz.provenance.json"])
        assert r.code == 0, r.stdout + r.stderr
        sboms.append(out / "layer" / "app.tar.gz.cdx.json")
    assert sboms[0].read_bytes() == sboms[1].read_bytes()
    text = sboms[0].read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    sbom = json.loads(text)
    layer = two_builds[0] / "layer" / "app.tar.gz"
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == hashlib.sha256(layer.read_bytes()).hexdigest()
    wheels = {c["purl"]: c for c in sbom["components"]}
    version = theirs.name.split("-")[1]
    assert sorted(wheels) == ["pkg:pypi/fx-setuptools-basic@1.0.0", f"pkg:pypi/packaging@{version}"]
    for purl, path in (
        ("pkg:pypi/fx-setuptools-basic@1.0.0", two_builds[0] / ours),
        (f"pkg:pypi/packaging@{version}", theirs),
    ):
        assert wheels[purl]["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(path.read_bytes()).hexdigest()}]
    assert wheels[f"pkg:pypi/packaging@{version}"]["licenses"], "packaging's licence is in its METADATA"
    props = {p["name"]: p["value"] for p in wheels["pkg:pypi/fx-setuptools-basic@1.0.0"]["properties"]}
    record = two_builds[0] / "fx_setuptools_basic-1.0.0.provenance.json"
    assert props["detpack:provenance"] == record.name
    source = json.loads(record.read_text())["predicate"]["buildDefinition"]["externalParameters"]["source"]
    assert props["detpack:source-tree:sha256"] == source["digest"]["sha256"]
    (dependency,) = [d for d in sbom["dependencies"] if d["ref"] == sbom["metadata"]["component"]["bom-ref"]]
    assert sorted(dependency["dependsOn"]) == sorted(wheels)
