"""``detpack push`` against a real Distribution registry started for the session: push by
digest, the digest skopeo reports is ours, a re-push is a no-op, a tag never moves, the
provenance artifact refers to the image, and skopeo's own copy round-trips the digest.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from test_tar import make_tree

from conftest import DETPACK, require_tool, run

pytestmark = pytest.mark.integration

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def _image(tmp_path: Path, name: str, env_value: str) -> tuple[str, str]:
    app = make_tree(tmp_path / f"app-{name}", 0o022, stamp=1_700_000_000)
    lay = tmp_path / f"{name}.tar.gz"
    r = run([DETPACK, "layer", "-o", lay, "--add", f"{app}:/app"])
    assert r.code == 0, r.stderr
    ref = f"oci:{tmp_path / name}:1.0"
    r = run([DETPACK, "image", "-o", ref, "--layer", lay, "--env", f"V={env_value}"])
    assert r.code == 0, r.stderr
    return ref, r.stdout.strip().rsplit("@", 1)[1]


def _get(url: str) -> tuple[bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read(), {k.lower(): v for k, v in resp.headers.items()}


def test_push_by_digest_then_write_once_tag(tmp_path: Path, registry: str) -> None:
    skopeo = require_tool("skopeo")
    ref, digest = _image(tmp_path, "one", "1")
    r = run([DETPACK, "push", ref, f"{registry}/team/app", "-v"])
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == f"{registry}/team/app@{digest}"
    assert "2 blobs uploaded" in r.stderr and "tag 1.0: written" in r.stderr
    info = json.loads(
        subprocess.run(
            [skopeo, "inspect", "--tls-verify=false", f"docker://{registry}/team/app:1.0"],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert info["Digest"] == digest

    again = run([DETPACK, "push", ref, f"{registry}/team/app", "-v"])
    assert again.code == 0, again.stderr
    assert "0 blobs uploaded, 2 already there" in again.stderr and "already points here" in again.stderr

    other, other_digest = _image(tmp_path, "two", "2")
    refused = run([DETPACK, "push", other, f"{registry}/team/app:1.0"])
    assert refused.code == 1, refused.stderr
    assert digest in refused.stderr and other_digest in refused.stderr and "Traceback" not in refused.stderr
    _, headers = _get(f"http://{registry}/v2/team/app/manifests/1.0")
    assert headers["docker-content-digest"] == digest, "the refused push moved the tag"
    # The refused image was not uploaded either: refusal happens before any blob moves.
    with pytest.raises(urllib.error.HTTPError):
        _get(f"http://{registry}/v2/team/app/manifests/{other_digest}")


def test_provenance_is_an_artifact_referring_to_the_image(tmp_path: Path, registry: str) -> None:
    ref, digest = _image(tmp_path, "prov", "p")
    r = run([DETPACK, "push", ref, f"{registry}/team/prov"])
    assert r.code == 0, r.stderr
    index, _ = _get(f"http://{registry}/v2/team/prov/manifests/{digest.replace(':', '-')}")
    (entry,) = json.loads(index)["manifests"]
    assert entry["artifactType"] == "application/vnd.in-toto+json"
    artifact, _ = _get(f"http://{registry}/v2/team/prov/manifests/{entry['digest']}")
    assert "sha256:" + hashlib.sha256(artifact).hexdigest() == entry["digest"]
    manifest = json.loads(artifact)
    assert manifest["subject"]["digest"] == digest
    (blob,) = manifest["layers"]
    with urllib.request.urlopen(f"http://{registry}/v2/team/prov/blobs/{blob['digest']}", timeout=10) as resp:
        body = resp.read()
    assert body == (tmp_path / "prov.1.0.provenance.json").read_bytes()
    assert json.loads(body)["subject"][0]["digest"]["sha256"] == digest.removeprefix("sha256:")
    # Pushing again adds no second referrer.
    assert run([DETPACK, "push", ref, f"{registry}/team/prov"]).code == 0
    index, _ = _get(f"http://{registry}/v2/team/prov/manifests/{digest.replace(':', '-')}")
    assert len(json.loads(index)["manifests"]) == 1


def test_skopeo_copy_round_trips_the_digest(tmp_path: Path, registry: str) -> None:
    skopeo = require_tool("skopeo")
    ref, digest = _image(tmp_path, "copy", "c")
    src = ref.removeprefix("oci:")
    subprocess.run(
        [
            skopeo,
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{src}",
            f"docker://{registry}/team/copy:1",
        ],
        check=True,
        capture_output=True,
    )
    back = tmp_path / "back"
    subprocess.run(
        [
            skopeo,
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            f"docker://{registry}/team/copy:1",
            f"oci:{back}:1",
        ],
        check=True,
        capture_output=True,
    )
    info = json.loads(subprocess.run([skopeo, "inspect", f"oci:{back}:1"], capture_output=True, check=True).stdout)
    assert info["Digest"] == digest
    # And detpack's push of the same layout lands on the digest skopeo pushed.
    r = run([DETPACK, "push", ref, f"{registry}/team/copy:1"])
    assert r.code == 0 and r.stdout.strip().endswith(digest), r.stderr


@pytest.mark.parametrize(
    ("dest", "needle"),
    [
        ("127.0.0.1:1/team/app:1", "registry unreachable"),
        ("no-slash", "expected REGISTRY/REPOSITORY"),
        ("127.0.0.1:5000/Team/App:1", "not a valid repository name"),
    ],
)
def test_push_bad_input(tmp_path: Path, dest: str, needle: str) -> None:
    ref, _ = _image(tmp_path, "bad", "b")
    r = run([DETPACK, "push", ref, dest])
    assert r.code == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in r.stderr, r.stderr


def test_push_missing_layout_or_blob(tmp_path: Path, registry: str) -> None:
    r = run([DETPACK, "push", f"oci:{tmp_path / 'nowhere'}:1", f"{registry}/x/y"])
    assert r.code == 2 and "no such image layout" in r.stderr, r.stderr
    ref, digest = _image(tmp_path, "holes", "h")
    layout = Path(ref.removeprefix("oci:").rsplit(":", 1)[0])
    manifest = json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes())
    (layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")).unlink()
    r = run([DETPACK, "push", ref, f"{registry}/x/holes"])
    assert r.code == 2 and "missing" in r.stderr, r.stderr
    with pytest.raises(urllib.error.HTTPError):
        _get(f"http://{registry}/v2/x/holes/manifests/1.0")


def test_signed_image_provenance_is_attached(tmp_path: Path, registry: str) -> None:
    assert run([DETPACK, "keygen", "-o", tmp_path / "k"]).code == 0
    app = make_tree(tmp_path / "app", 0o022, stamp=1_700_000_000)
    lay = tmp_path / "s.tar.gz"
    assert run([DETPACK, "layer", "-o", lay, "--add", f"{app}:/app"]).code == 0
    r = run([DETPACK, "image", "-o", f"oci:{tmp_path / 'signed'}:2", "--layer", lay, "--sign", tmp_path / "k"])
    assert r.code == 0, r.stderr
    digest = r.stdout.strip().rsplit("@", 1)[1]
    envelope = tmp_path / "signed.2.intoto.jsonl"
    assert envelope.is_file()
    manifest = tmp_path / "signed" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    v = run([DETPACK, "verify", manifest, "--provenance", envelope, "--key", tmp_path / "k.pub"])
    assert v.code == 0, v.stderr  # the manifest blob is the statement's subject
    r = run([DETPACK, "push", f"oci:{tmp_path / 'signed'}:2", f"{registry}/team/signed"])
    assert r.code == 0, r.stderr
    index, _ = _get(f"http://{registry}/v2/team/signed/manifests/{digest.replace(':', '-')}")
    (entry,) = json.loads(index)["manifests"]
    artifact = json.loads(_get(f"http://{registry}/v2/team/signed/manifests/{entry['digest']}")[0])
    (blob,) = artifact["layers"]
    assert blob["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert blob["digest"] == "sha256:" + hashlib.sha256(envelope.read_bytes()).hexdigest()
