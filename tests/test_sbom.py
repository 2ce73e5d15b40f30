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


OURS = "fx_setuptools_basic-1.0.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def layers(two_builds: tuple[Path, Path], wheelhouse: Path) -> tuple[Path, Path]:
    """The same two wheels packed into a layer beside each build, with the layers' SBOMs."""
    theirs = sorted(wheelhouse.glob("packaging-*.whl"))[-1]
    made = []
    for out in two_builds:
        layer = out / "layer" / "app.tar.gz"
        argv = [DETPACK, "layer", "-o", layer, "--wheel", out / OURS, theirs, "--python-version", "3.11"]
        if out == two_builds[0]:
            r = run([*argv, "-q"])
            assert r.code == 0, r.stdout + r.stderr
            r = run([DETPACK, "sbom", out / "layer" / "app.tar.gz.provenance.json"])
        else:
            r = run([*argv, "--sbom", "-v"])  # the same SBOMs, written by layer itself
            assert "CycloneDX 1.6 SBOM" in r.stderr and "SPDX 2.3 SBOM" in r.stderr
        assert r.code == 0, r.stdout + r.stderr
        made.append(layer)
    return made[0], made[1]


def test_a_layer_sbom_lists_every_wheel_with_its_sha256(
    two_builds: tuple[Path, Path], layers: tuple[Path, Path], wheelhouse: Path
) -> None:
    """The SBOM of a ``detpack layer`` names each wheel installed in it: exact version, the sha256 of the
    wheel file, its licence, and for our own build the provenance beside it; two layers made in two
    places give the same SBOM bytes."""
    ours = OURS
    theirs = sorted(wheelhouse.glob("packaging-*.whl"))[-1]
    sboms = [layer.parent / "app.tar.gz.cdx.json" for layer in layers]
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


def _spdx_valid(path: Path) -> object:
    """The document as spdx-tools parses it back from the file, checked by its validator."""
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    document = parse_file(str(path))
    assert validate_full_spdx_document(document) == []
    return document


def test_the_spdx_sbom_is_valid_and_the_same_from_two_builds(two_builds: tuple[Path, Path]) -> None:
    for out in two_builds:
        _sbom(out)
    a, b = (out / "fx_setuptools_basic-1.0.0.spdx.json" for out in two_builds)
    assert a.read_bytes() == b.read_bytes()
    document = _spdx_valid(a)
    value = json.loads(a.read_text())
    assert value["spdxVersion"] == "SPDX-2.3" and value["creationInfo"]["creators"][0].startswith("Tool: detpack-")
    described = {r["relatedSpdxElement"] for r in value["relationships"] if r["relationshipType"] == "DESCRIBES"}
    packages = {p["SPDXID"]: p for p in value["packages"]}
    files = {packages[i]["packageFileName"]: packages[i]["checksums"][0]["checksumValue"] for i in described}
    assert files == {n: hashlib.sha256((two_builds[0] / n).read_bytes()).hexdigest() for n in files}
    assert sorted(files) == ["fx_setuptools_basic-1.0.0-py3-none-any.whl", "fx_setuptools_basic-1.0.0.tar.gz"]
    record = json.loads((two_builds[0] / "fx_setuptools_basic-1.0.0.provenance.json").read_text())
    (setuptools,) = [
        d for d in record["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d.get("uri", "").startswith("pkg:pypi/setuptools@")
    ]  # fmt: skip
    tools = [p for p in value["packages"] if any(r["referenceLocator"] == setuptools["uri"] for r in p["externalRefs"])]
    assert [t["checksums"][0]["checksumValue"] for t in tools] == [setuptools["digest"]["sha256"]]
    assert document is not None


def test_the_layer_spdx_sbom_contains_every_wheel(two_builds: tuple[Path, Path], layers: tuple[Path, Path]) -> None:
    path = two_builds[0] / "layer" / "app.tar.gz.spdx.json"
    assert path.read_bytes() == (two_builds[1] / "layer" / "app.tar.gz.spdx.json").read_bytes()
    _spdx_valid(path)
    value = json.loads(path.read_text())
    packages = {p["SPDXID"]: p for p in value["packages"]}
    contained = [
        packages[r["relatedSpdxElement"]] for r in value["relationships"] if r["relationshipType"] == "CONTAINS"
    ]
    recorded = json.loads((two_builds[0] / "layer" / "app.tar.gz.provenance.json").read_text())
    wheels = {
        d["name"]: d["digest"]["sha256"]
        for d in recorded["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d["name"].endswith(".whl")
    }
    assert {p["packageFileName"]: p["checksums"][0]["checksumValue"] for p in contained} == wheels
    assert len(wheels) == 2


def _get(url: str, accept: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=10) as resp:
        data: bytes = resp.read()
        return data


@pytest.mark.integration
def test_an_image_sbom_lists_every_wheel_and_is_pushed_as_a_referrer(
    two_builds: tuple[Path, Path], layers: tuple[Path, Path], registry: str, tmp_path: Path
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.toml").write_text("workers = 2\n")
    extra = tmp_path / "conf.tar.gz"
    assert run([DETPACK, "layer", "-o", extra, "--add", f"{conf}:/etc/app", "-q"]).code == 0
    digests = []
    for where in ("one", "two"):
        r = run([DETPACK, "image", "-o", f"oci:{tmp_path / where / 'app'}:1.0", "--layer", layers[0], "--layer", extra,
                 "--sbom", "--source-date-epoch", "1700000000", "-q"])  # fmt: skip
        assert r.code == 0, r.stdout + r.stderr
        digests.append(r.stdout.strip().rsplit("@sha256:", 1)[1])
    assert digests[0] == digests[1]
    cdx, spdx_path = (tmp_path / "one" / f"app.1.0{suffix}" for suffix in (".cdx.json", ".spdx.json"))
    for path in (cdx, spdx_path):
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx.read_text()) is None
    _spdx_valid(spdx_path)
    sbom = json.loads(cdx.read_text())
    assert sbom["metadata"]["component"]["type"] == "container"
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == digests[0]
    recorded = json.loads(layers[0].with_name("app.tar.gz.provenance.json").read_text())
    wheels = {
        d["name"]: d["digest"]["sha256"]
        for d in recorded["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d["name"].endswith(".whl")
    }
    listed = {
        next(p["value"] for p in c["properties"] if p["name"] == "detpack:wheel"): c["hashes"][0]["content"]
        for c in sbom["components"]
    }
    assert listed == wheels and len(listed) == 2
    # pushed with the image: a referrer whose artifactType is CycloneDX's, carrying these exact bytes
    r = run([DETPACK, "push", f"oci:{tmp_path / 'one' / 'app'}:1.0", f"{registry}/team/sbom:1.0", "-v"])
    assert r.code == 0, r.stdout + r.stderr
    assert f"SBOM {cdx} pushed as" in r.stderr and f"SBOM {spdx_path} pushed as" in r.stderr
    index = json.loads(_get(f"http://{registry}/v2/team/sbom/manifests/sha256-{digests[0]}",
                            "application/vnd.oci.image.index.v1+json"))  # fmt: skip
    types = {m["artifactType"]: m["digest"] for m in index["manifests"]}
    assert set(types) >= {"application/vnd.cyclonedx+json", "application/spdx+json"}
    manifest = json.loads(_get(f"http://{registry}/v2/team/sbom/manifests/{types['application/vnd.cyclonedx+json']}",
                               "application/vnd.oci.image.manifest.v1+json"))  # fmt: skip
    assert manifest["subject"]["digest"] == f"sha256:{digests[0]}"
    blob = _get(f"http://{registry}/v2/team/sbom/blobs/{manifest['layers'][0]['digest']}", "*/*")
    assert blob == cdx.read_bytes()


def test_sbom_in_wheel_keeps_the_wheel_canonical_and_reproducible(
    two_builds: tuple[Path, Path], wheelhouse: Path, tmp_path: Path
) -> None:
    """``--sbom-in-wheel`` (PEP 770): the SBOM is a member of the wheel, listed in RECORD; the wheel is
    still canonical (normalize leaves it as it is), the same from two checkouts, and rebuilt from its
    record with the SBOM in it again."""
    from detpack.verify.pypi import record_problems

    wheel_name = "fx_setuptools_basic-1.0.0-py3-none-any.whl"
    outs = []
    for i, umask in enumerate((0o022, 0o077)):
        src = materialize(FIXTURES / "setuptools-basic", tmp_path / f"checkout-{i}" / "src", umask)
        out = tmp_path / f"out-{i}"
        argv = [DETPACK, "build", src, "-o", out, "--offline", "--find-links", wheelhouse, "--sbom-in-wheel"]
        r = run(argv, umask=umask)
        assert r.code == 0, r.stdout + r.stderr
        outs.append(out)
    wheel = outs[0] / wheel_name
    assert wheel.read_bytes() == (outs[1] / wheel_name).read_bytes()
    assert wheel.read_bytes() != (two_builds[0] / wheel_name).read_bytes()  # the SBOM made a difference
    member = "fx_setuptools_basic-1.0.0.dist-info/sboms/detpack.cdx.json"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        inside = zf.read(member).decode("utf-8")
        record = zf.read("fx_setuptools_basic-1.0.0.dist-info/RECORD").decode("utf-8")
    assert member in names and names[-1].endswith("/RECORD") and f"{member},sha256=" in record
    assert record_problems(wheel) == ()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(inside) is None
    sbom = json.loads(inside)
    assert sbom["metadata"]["component"]["purl"] == "pkg:pypi/fx-setuptools-basic@1.0.0"
    assert any(c["name"] == "setuptools" for c in sbom["formulation"][0]["components"])
    normalized = tmp_path / "n"
    r = run([DETPACK, "normalize", wheel, "-o", normalized])
    assert r.code == 0, r.stdout + r.stderr
    assert (normalized / wheel_name).read_bytes() == wheel.read_bytes()
    provenance = json.loads((outs[0] / "fx_setuptools_basic-1.0.0.provenance.json").read_text())
    assert provenance["predicate"]["buildDefinition"]["externalParameters"]["sbomInWheel"] is True
    subjects = {s["name"]: s["digest"]["sha256"] for s in provenance["subject"]}
    assert subjects[wheel_name] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    r = run([DETPACK, "rebuild", outs[0] / "fx_setuptools_basic-1.0.0.provenance.json", "--source",
             tmp_path / "checkout-1" / "src", "--offline", "--find-links", wheelhouse])  # fmt: skip
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.startswith("reproduced: 2 of 2 subjects match"), r.stdout
