"""``detpack diff`` of two real dist folders: provenance is compared by what it asserts.

Two ``detpack build`` runs of the same project give the same archives and statements that
differ only in their run details (times, invocation id, build log digest): that is
``identical`` (exit 0) with the run details reported as information. A change in what a
statement asserts (a subject digest, a resolved dependency) is a difference, named by its key
path, in text and in JSON; so is the same change inside a signed envelope (``.intoto.jsonl``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest

from conftest import DETPACK, FIXTURES, ROOT, run
from detpack.provenance.signing import PrivateKey, sign_file
from detpack.verify.compare import compare_paths

SCHEMA = json.loads((ROOT / "detpack" / "schemas" / "diff-v1.schema.json").read_text())
STATEMENT = "fx_flit-1.0.0.provenance.json"
ENVELOPE = "fx_flit-1.0.0.intoto.jsonl"


def _env() -> dict[str, str]:
    root = os.environ.get("DETPACK_BUILD_ROOT")
    return {"DETPACK_BUILD_ROOT": root} if root else {}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> tuple[Path, Path]:
    """Two ``detpack build`` runs of the flit fixture into two folders, each with a signed envelope."""
    tmp = tmp_path_factory.mktemp("two-builds")
    src = shutil.copytree(FIXTURES / "flit", tmp / "src")
    key = PrivateKey.generate()
    outs = []
    for label in ("a", "b"):
        out = tmp / label
        r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"], env=_env())
        assert r.code == 0, r.stderr
        sign_file(out / STATEMENT, key)
        outs.append(out)
    # The negative control: the statements' bytes really differ between the two builds.
    assert (outs[0] / STATEMENT).read_bytes() != (outs[1] / STATEMENT).read_bytes()
    assert (outs[0] / ENVELOPE).read_bytes() != (outs[1] / ENVELOPE).read_bytes()
    return outs[0], outs[1]


def _copy(src: Path, dest: Path) -> Path:
    return Path(shutil.copytree(src, dest))


def _edit_statement(path: Path, edit: object) -> None:
    value = json.loads(path.read_bytes())
    edit(value)  # type: ignore[operator]
    path.write_text(json.dumps(value, indent=1))


def test_two_builds_are_identical_and_run_details_are_information(builds: tuple[Path, Path]) -> None:
    a, b = builds
    r = run([DETPACK, "diff", a, b])
    assert r.code == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "identical"
    assert "differs" not in r.stdout and "None" not in r.stdout
    notes = [ln for ln in lines if "run details differ" in ln]
    assert len(notes) == 2, r.stdout  # the statement and the envelope
    # times have one-second precision and a build can take less: the invocation id always differs
    assert all("invocationId" in ln and "expected between two builds" in ln for ln in notes)


def test_two_builds_json_carries_the_same_facts(builds: tuple[Path, Path]) -> None:
    r = run([DETPACK, "diff", "--json", *builds])
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["identical"] is True and data["summary"] == "identical"
    by_name = {f["name"]: f for f in data["files"]}
    statement, envelope = by_name[STATEMENT], by_name[ENVELOPE]
    assert (statement["kind"], envelope["kind"]) == ("provenance", "dsse")
    for f in (statement, envelope):
        assert f["identical"] is True and f["differences"] == []
        [note] = f["notes"]
        assert note["topic"] == "runDetails"
        assert "metadata.invocationId" in note["keys"]


def test_a_changed_subject_digest_is_a_difference_named_by_its_key_path(
    builds: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = builds
    b2 = _copy(b, tmp_path / "b")
    old = json.loads((b / STATEMENT).read_bytes())["subject"][0]
    name, digest = old["name"], old["digest"]["sha256"]
    forged = "0" * 64

    def edit(value: dict) -> None:  # type: ignore[type-arg]
        value["subject"][0]["digest"]["sha256"] = forged

    _edit_statement(b2 / STATEMENT, edit)
    r = run([DETPACK, "diff", a, b2])
    assert r.code == 1, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "1 of 4 paired files differ"
    path = f'subject["{name}"].digest.sha256'
    [line] = [ln for ln in r.stdout.splitlines() if path in ln]
    assert digest in line and forged in line, line
    assert "None" not in r.stdout
    data = json.loads(run([DETPACK, "diff", "--json", a, b2]).stdout)
    jsonschema.validate(data, SCHEMA)
    [f] = [f for f in data["files"] if f["name"] == STATEMENT]
    assert not f["identical"]
    [d] = f["differences"]
    assert (d["kind"], d["member"], d["attribute"], d["a"], d["b"]) == ("provenance", "subject", path, digest, forged)
    assert f["notes"][0]["topic"] == "runDetails"  # still information, beside the difference


def test_changed_resolved_dependencies_in_a_signed_envelope(builds: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = builds
    b2 = _copy(b, tmp_path / "b")

    def edit(value: dict) -> None:  # type: ignore[type-arg]
        deps = value["predicate"]["buildDefinition"]["resolvedDependencies"]
        [flit] = [d for d in deps if d["name"] == "flit-core"]
        flit["uri"] = "pkg:pypi/flit-core@9.9.9"

    _edit_statement(b2 / STATEMENT, edit)
    (b2 / ENVELOPE).unlink()
    sign_file(b2 / STATEMENT, PrivateKey.generate())
    c = compare_paths(a, b2)
    assert not c.identical
    got = {f.name: [(d.member, d.attribute, d.a, d.b) for d in f.differences] for f in c.files if not f.identical}
    path = 'predicate.buildDefinition.resolvedDependencies["flit-core"].uri'
    change = ("resolvedDependencies", path, "pkg:pypi/flit-core@4.2.0", "pkg:pypi/flit-core@9.9.9")
    assert got == {STATEMENT: [change], ENVELOPE: [change]}
    [envelope] = [f for f in c.files if f.name == ENVELOPE]
    assert any(n.topic == "signatures" for n in envelope.notes)  # another key signed B: information


def test_envelope_payload_is_what_is_compared(builds: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = builds
    a2 = _copy(a, tmp_path / "a")
    line = json.loads((a2 / ENVELOPE).read_bytes())
    statement = json.loads(base64.b64decode(line["payload"]))
    statement["predicate"]["runDetails"]["metadata"]["startedOn"] = "1999-01-01T00:00:00Z"
    line["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (a2 / ENVELOPE).write_text(json.dumps(line) + "\n")
    [f] = [f for f in compare_paths(a, a2).files if f.name == ENVELOPE]
    assert f.identical and f.kind == "dsse"
    assert f.notes[0].keys == ("metadata.startedOn",)


def test_other_files_compared_as_bytes_show_sizes(tmp_path: Path) -> None:
    for side, text in (("A", "one\ntwo\n"), ("B", "one\nthree\nfour\n")):
        (tmp_path / side).mkdir()
        (tmp_path / side / "SHA256SUMS").write_text(text)
    (tmp_path / "A" / "blob.bin").write_bytes(b"\x00\x01\x02\x03")
    (tmp_path / "B" / "blob.bin").write_bytes(b"\x00\x01\xff\x03\x04")
    r = run([DETPACK, "diff", tmp_path / "A", tmp_path / "B"])
    assert r.code == 1
    assert "None" not in r.stdout, r.stdout
    assert "content differs (8 vs 15 bytes)" in r.stdout
    assert "+three" in r.stdout
    assert "binary: 4 vs 5 bytes, first difference at offset 2" in r.stdout
