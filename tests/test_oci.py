"""OCI layers and images: same inputs -> same digests under any path, umask, TZ, locale and
clock (plain ``tar`` on the same inputs differs); real clients (umoci, skopeo) accept the
layout; a wheel installed into a layer runs its console script; provenance chains the
wheel's own build record into the layer and the image; bad input fails with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_tar import make_tree

from conftest import DETPACK, FIXTURES, materialize, require_tool, run, sha256, variations

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """A wheel with a console script, built by detpack (so it has provenance beside it)."""
    root = tmp_path_factory.mktemp("wheel")
    src = materialize(FIXTURES / "setuptools-basic", root / "src", 0o022)
    out = root / "dist"
    r = run([DETPACK, "build", src, "-w", "-o", out, "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stderr
    (whl,) = out.glob("*.whl")
    return whl


def capture(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, check=True, text=True, env=env).stdout


def layer(out: Path, *argv: str | Path, env: dict[str, str] | None = None, umask: int = 0o022) -> tuple[str, str]:
    r = run([DETPACK, "layer", "-o", out, *argv], env=env, umask=umask)
    assert r.code == 0, r.stderr
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert lines["digest"] == f"sha256:{sha256(out)}"
    return lines["diff_id"], lines["digest"]


def image(ref: str, *argv: str | Path, env: dict[str, str] | None = None, umask: int = 0o022) -> str:
    r = run([DETPACK, "image", "-o", ref, *argv], env=env, umask=umask)
    assert r.code == 0, r.stderr
    return r.stdout.strip().rsplit("@", 1)[1]


def test_layer_and_image_identical_across_variations(tmp_path: Path, wheel: Path) -> None:
    layers, images, controls = [], [], []
    for i, (label, env, umask, where) in enumerate(variations(tmp_path)):
        app = make_tree(where / "app", umask, stamp=1_600_000_000 + 3600 * i)
        whl = where / "wheels" / wheel.name
        whl.parent.mkdir(parents=True)
        shutil.copy2(wheel, whl)
        out = tmp_path / label / "layer.tar.gz"
        layers.append(layer(out, "--add", f"{app}:/app", "--wheel", whl, env=env, umask=umask))
        ref = f"oci:{tmp_path / label / 'image'}:1.0"
        images.append(
            image(ref, "--layer", out, "--entrypoint", '["fx-setuptools-basic"]', "--env", "A=1", env=env, umask=umask)
        )
        control = tmp_path / label / "control.tar.gz"
        subprocess.run(["tar", "-czf", control, "-C", where, "app"], check=True, env={**os.environ, **env})
        controls.append(sha256(control))
    assert layers[0] == layers[1]
    assert images[0] == images[1]
    assert controls[0] != controls[1], "the variations did not change plain tar's output"


def test_clients_accept_the_layout_and_the_script_runs(tmp_path: Path, wheel: Path) -> None:
    umoci, skopeo = require_tool("umoci"), require_tool("skopeo")
    app = make_tree(tmp_path / "app", 0o022, stamp=1_700_000_000)
    out = tmp_path / "layer.tar.gz"
    diff_id, digest = layer(out, "--add", f"{app}:/app", "--wheel", wheel)
    ref = tmp_path / "img"
    manifest = image(f"oci:{ref}:v1", "--layer", out, "--workdir", "/app", "--label", "team=release")
    info = json.loads(subprocess.run([skopeo, "inspect", f"oci:{ref}:v1"], capture_output=True, check=True).stdout)
    assert info["Digest"] == manifest and info["Layers"] == [digest]
    assert info["Created"] == "1980-01-01T00:00:00Z" and info["Labels"] == {"team": "release"}
    config = json.loads(
        subprocess.run([skopeo, "inspect", "--config", f"oci:{ref}:v1"], capture_output=True, check=True).stdout
    )
    assert config["rootfs"]["diff_ids"] == [diff_id]
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--rootless", "--image", f"{ref}:v1", bundle], check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    assert (rootfs / "app" / "pkg" / "link").is_symlink()
    script = rootfs / "usr" / "local" / "bin" / "fx-setuptools-basic"
    assert script.read_text().startswith(f"#!/usr/local/bin/python{PY}\n")
    assert os.access(script, os.X_OK)
    site = rootfs / "usr" / "local" / "lib" / f"python{PY}" / "site-packages"
    r = subprocess.run([sys.executable, script], env={"PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    record = next(site.glob("*.dist-info")) / "RECORD"
    assert "fx_setuptools_basic/__init__.py,sha256=" in record.read_text()


def test_base_image_layers_are_reused(tmp_path: Path, wheel: Path) -> None:
    skopeo, umoci = require_tool("skopeo"), require_tool("umoci")
    base_layer, app_layer = tmp_path / "base.tar.gz", tmp_path / "app.tar.gz"
    _, base_digest = layer(base_layer, "--wheel", wheel)
    app = make_tree(tmp_path / "app", 0o022, stamp=1_700_000_000)
    _, app_digest = layer(app_layer, "--add", f"{app}:/srv/app")
    base = image(f"oci:{tmp_path / 'base'}:3", "--layer", base_layer, "--env", "PATH=/usr/local/bin:/usr/bin")
    top = image(
        f"oci:{tmp_path / 'top'}:1", "--base", f"oci:{tmp_path / 'base'}:3", "--layer", app_layer, "--env", "MODE=prod"
    )
    info = json.loads(
        subprocess.run([skopeo, "inspect", f"oci:{tmp_path / 'top'}:1"], capture_output=True, check=True).stdout
    )
    assert info["Layers"] == [base_digest, app_digest]
    assert info["Env"] == ["PATH=/usr/local/bin:/usr/bin", "MODE=prod"]
    manifest = json.loads((tmp_path / "top" / "blobs" / "sha256" / top.removeprefix("sha256:")).read_bytes())
    assert manifest["annotations"]["org.opencontainers.image.base.digest"] == base
    assert (
        tmp_path / "top" / "blobs" / "sha256" / base_digest.removeprefix("sha256:")
    ).read_bytes() == base_layer.read_bytes()
    subprocess.run(
        [umoci, "unpack", "--rootless", "--image", f"{tmp_path / 'top'}:1", tmp_path / "b"],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "b" / "rootfs" / "srv" / "app" / "README").read_text() == "hello\n"
    assert (tmp_path / "b" / "rootfs" / "usr" / "local" / "bin" / "fx-setuptools-basic").exists()


def test_provenance_chains_wheel_to_image(tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "layer.tar.gz"
    _, digest = layer(out, "--wheel", wheel)
    statement = json.loads((tmp_path / "layer.tar.gz.provenance.json").read_bytes())
    assert statement["subject"] == [{"name": "layer.tar.gz", "digest": {"sha256": digest.removeprefix("sha256:")}}]
    (wheel_rd,) = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert wheel_rd["digest"]["sha256"] == sha256(wheel)
    (build_prov,) = wheel.parent.glob("*.provenance.json")
    assert wheel_rd["annotations"]["provenance"]["digest"]["sha256"] == sha256(build_prov)
    manifest = image(f"oci:{tmp_path / 'img'}:2", "--layer", out, "--revision", "abc123")
    img = json.loads((tmp_path / "img.2.provenance.json").read_bytes())
    assert img["subject"][0]["digest"]["sha256"] == manifest.removeprefix("sha256:")
    (layer_rd,) = img["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert layer_rd["digest"]["sha256"] == digest.removeprefix("sha256:")
    assert layer_rd["annotations"]["provenance"]["digest"] == sha256(tmp_path / "layer.tar.gz.provenance.json")
    assert layer_rd["annotations"]["inputs"][0]["annotations"]["provenance"]["digest"]["sha256"] == sha256(build_prov)
    blob = tmp_path / "img" / "blobs" / "sha256" / manifest.removeprefix("sha256:")
    annotations = json.loads(blob.read_bytes())["annotations"]
    assert annotations["org.opencontainers.image.revision"] == "abc123"
    assert annotations["org.opencontainers.image.created"] == "1980-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("remote", "source"),
    [
        ("https://example.org/app.git", "https://example.org/app.git"),
        ("https://user:tok@example.com/x.git", "https://example.com/x.git"),
        ("git@github.com:org/app.git", "https://github.com/org/app.git"),
        ("/work/main", None),  # a clone of a local repository: no public location
        ("file:///srv/git/app.git", None),
    ],
)
def test_image_takes_the_commit_from_a_git_source(tmp_path: Path, remote: str, source: str | None) -> None:
    app = make_tree(tmp_path / "app", 0o022, stamp=1_700_000_000)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    for argv in (
        ["init", "-q"],
        ["add", "-A"],
        ["commit", "-qm", "x"],
        ["remote", "add", "origin", remote],
    ):
        subprocess.run(["git", "-C", app, *argv], check=True, env=env)
    commit = subprocess.run(
        ["git", "-C", app, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    out = tmp_path / "l.tar.gz"
    layer(out, "--add", f"{app}:/app", "--source-date-epoch", "1700000000")
    manifest = image(f"oci:{tmp_path / 'img'}:1", "--layer", out)
    blob = tmp_path / "img" / "blobs" / "sha256" / manifest.removeprefix("sha256:")
    data = json.loads(blob.read_bytes())
    assert data["annotations"]["org.opencontainers.image.revision"] == commit
    assert data["annotations"].get("org.opencontainers.image.source") == source
    assert data["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert "tok" not in blob.read_text() and str(tmp_path) not in blob.read_text()


def test_explicit_source_must_be_public(tmp_path: Path) -> None:
    app = make_tree(tmp_path / "app", 0o022, stamp=1_700_000_000)
    layer(tmp_path / "l.tar.gz", "--add", f"{app}:/app")
    r = run([DETPACK, "image", "-o", "oci:img", "--layer", "l.tar.gz", "--source", "/srv/app"], cwd=tmp_path)
    _one_error(r.code, r.stderr, "--source /srv/app: not a public URL")
    assert not (tmp_path / "img").exists()


def _one_error(r_code: int, stderr: str, needle: str) -> None:
    assert r_code == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], stderr


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--add", "app:../etc"], "climbs out of the image root"),
        (["--add", "app:/srv/../../etc"], "climbs out of the image root"),
        (["--add", "missing:/app"], "missing: no such file"),
        (["--wheel", "missing.whl"], "missing.whl: no such wheel"),
        (["--wheel", "bad.whl"], "bad.whl: corrupt or truncated zip"),
        (["--add", "app:/x", "--add", "app/README:/x/README"], "comes from both"),
        (["--add", "fifo-app:/app"], "fifo"),
        ([], "nothing to pack"),
    ],
)
def test_layer_bad_input(tmp_path: Path, argv: list[str], needle: str) -> None:
    make_tree(tmp_path / "app", 0o022, stamp=1_700_000_000)
    (tmp_path / "bad.whl").write_bytes(b"PK\x03\x04 not really a wheel")
    fifo_app = make_tree(tmp_path / "fifo-app", 0o022, stamp=1_700_000_000)
    os.mkfifo(fifo_app / "pipe")
    out = tmp_path / "out.tar.gz"
    out.write_bytes(b"previous")
    r = run([DETPACK, "layer", "-o", out, *argv], cwd=tmp_path)
    _one_error(r.code, r.stderr, needle)
    assert out.read_bytes() == b"previous"
    assert not (tmp_path / "out.tar.gz.provenance.json").exists()


def test_device_in_tree_is_refused(tmp_path: Path) -> None:
    app = make_tree(tmp_path / "app", 0o022, stamp=1_700_000_000)
    try:
        os.mknod(app / "null", 0o600 | 0o020000, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root") if os.environ.get("CI") != "true" else pytest.fail("not root")
    r = run([DETPACK, "layer", "-o", tmp_path / "l.tar.gz", "--add", f"{app}:/app"])
    _one_error(r.code, r.stderr, "is a device")
    assert not (tmp_path / "l.tar.gz").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-o", "oci:img", "--layer", "missing.tar.gz"], "missing.tar.gz: no such layer file"),
        (["-o", "img", "--layer", "l.tar.gz"], "oci:DIR[:TAG]"),
        (["-o", "oci:img", "--base", "oci:nowhere:1", "--layer", "l.tar.gz"], "no such image layout"),
        (["-o", "oci:img", "--layer", "corrupt.tar.gz"], "corrupt gzip layer"),
        (["-o", "oci:img", "--layer", "l.tar.gz", "--entrypoint", "[1]"], "JSON array of strings"),
    ],
)
def test_image_bad_input(tmp_path: Path, argv: list[str], needle: str) -> None:
    app = make_tree(tmp_path / "app", 0o022, stamp=1_700_000_000)
    layer(tmp_path / "l.tar.gz", "--add", f"{app}:/app")
    (tmp_path / "corrupt.tar.gz").write_bytes((tmp_path / "l.tar.gz").read_bytes()[:100])
    r = run([DETPACK, "image", *argv], cwd=tmp_path)
    _one_error(r.code, r.stderr, needle)
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize(
    ("url", "source"),
    [
        ("https://github.com/org/app.git", "https://github.com/org/app.git"),
        ("https://user:tok@example.com/x.git", "https://example.com/x.git"),
        ("https://ghp_token@example.com/x.git", "https://example.com/x.git"),
        ("https://***@example.com/x.git", "https://example.com/x.git"),  # as git_info redacts it
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("ssh://git@example.com/org/x.git", "ssh://git@example.com/org/x.git"),
        ("ssh://git:secret@example.com/org/x.git", "ssh://example.com/org/x.git"),
        ("git@github.com:org/app.git", "https://github.com/org/app.git"),
        ("git://example.org/x.git", "git://example.org/x.git"),
        ("/work/main", None),
        ("../sibling", None),
        ("file:///srv/git/app.git", None),
        ("https://localhost/x.git", None),
        ("http://127.0.0.1:3000/x.git", None),
        ("https://10.0.0.5/x.git", None),
        ("gh:org/app", None),  # an ssh config alias names nothing public
        ("C:\\repos\\app", None),
    ],
)
def test_public_source(url: str, source: str | None) -> None:
    from detpack.oci.image import public_source

    assert public_source(url) == source


def test_image_digest_does_not_depend_on_the_layer_file_name(tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "layer.tar.gz"
    diff_id, _ = layer(out, "--wheel", wheel)
    renamed = tmp_path / "elsewhere" / "l1-built-on-another-machine.tar.gz"
    renamed.parent.mkdir()
    shutil.copy(out, renamed)
    digests, histories = [], []
    for name, path in (("a", out), ("b", renamed)):
        digests.append(image(f"oci:{tmp_path / name}:1.0", "--layer", path))
        (index,) = [json.loads((tmp_path / name / "index.json").read_text())]
        manifest = json.loads(
            (tmp_path / name / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text()
        )
        config = json.loads(
            (tmp_path / name / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text()
        )
        histories.append(config["history"])
    assert digests[0] == digests[1]
    assert histories[0] == [{"created": "1980-01-01T00:00:00Z", "created_by": f"detpack layer {diff_id}"}]
    assert "layer.tar.gz" not in json.dumps(histories) and "l1-built" not in json.dumps(histories)
