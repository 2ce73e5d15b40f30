"""``detpack verify`` on images: a local layout (``oci:DIR:TAG``) and a registry reference.

One signed chain is built for the module: the flit fixture committed in a git repository and
built with ``--sign``, a layer from its wheel, an image from the layer with ``--sign``. verify
finds the image's envelope (beside the layout, or the referrer artifact ``push`` attached),
checks the manifest digest is its subject and follows the recorded chain of inputs down to the
wheel's build and its source commit.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BUILDER = "https://detpack.dev/builders/local/v1"


@dataclass(frozen=True)
class Chain:
    tmp: Path
    key: Path
    pub: Path
    commit: str
    wheel: Path
    layer: Path
    layout: Path
    ref: str  # oci:DIR:TAG
    digest: str  # the manifest's


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Chain:
    tmp = tmp_path_factory.mktemp("chain")
    src = materialize(FIXTURES / "flit", tmp / "src", 0o022)
    _git(src, "init", "-q")
    _git(src, "add", ".")
    _git(src, "commit", "-qm", "init")
    commit = _git(src, "rev-parse", "HEAD")
    key = tmp / "release.key"
    assert run([DETPACK, "keygen", "-o", key]).code == 0
    dist = tmp / "dist"
    r = run([DETPACK, "build", src, "-o", dist, "--find-links", wheelhouse, "--offline", "--sign", key])
    assert r.code == 0, r.stderr
    [wheel] = dist.glob("*.whl")
    layer = tmp / "app.tar.gz"
    r = run([DETPACK, "layer", "-o", layer, "--wheel", wheel])
    assert r.code == 0, r.stderr
    layout = tmp / "img"
    ref = f"oci:{layout}:1.0"
    r = run([DETPACK, "image", "-o", ref, "--layer", layer, "--sign", key])
    assert r.code == 0, r.stderr
    digest = r.stdout.strip().rsplit("@", 1)[1]
    return Chain(tmp, key, Path(f"{key}.pub"), commit, wheel, layer, layout, ref, digest)


def test_verify_a_layout_follows_the_chain_to_the_source_commit(chain: Chain) -> None:
    r = run([DETPACK, "verify", chain.ref, "--key", chain.pub, "--source-commit", chain.commit[:7]])
    assert r.code == 0, r.stderr
    assert f"verified  {chain.ref}  {chain.digest}" in r.stdout
    assert chain.commit in r.stdout
    assert chain.wheel.name in r.stdout  # which input carries the commit


def test_verify_a_layout_with_a_wrong_commit_says_why(chain: Chain) -> None:
    wrong = "0" * 12 if not chain.commit.startswith("0" * 12) else "1" * 12
    r = run([DETPACK, "verify", chain.ref, "--key", chain.pub, "--source-commit", wrong])
    assert r.code == 1, r.stderr
    [line] = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert line.startswith("error: not verified: ") and wrong in line
    assert chain.commit[:12] in line and chain.wheel.name in line
    assert r.stdout == ""


def test_verify_a_layout_checks_the_builder(chain: Chain) -> None:
    r = run([DETPACK, "verify", chain.ref, "--key", chain.pub, "--builder", BUILDER])
    assert r.code == 0, r.stderr
    r = run([DETPACK, "verify", chain.ref, "--key", chain.pub, "--builder", "https://ci.example.com/builder"])
    assert r.code == 1 and "builder is" in r.stderr and "https://ci.example.com/builder" in r.stderr, r.stderr


def test_the_image_statement_names_each_wheel_builds_builder(chain: Chain) -> None:
    statement = json.loads((chain.tmp / "img.1.0.provenance.json").read_bytes())
    [layer] = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    [wheel] = layer["annotations"]["inputs"]
    assert wheel["annotations"]["builder"] == {"id": BUILDER}


def test_verify_a_layout_refuses_another_images_provenance(chain: Chain, tmp_path: Path) -> None:
    other = tmp_path / "other"
    r = run([DETPACK, "image", "-o", f"oci:{other}:1.0", "--layer", chain.layer, "--env", "X=1", "--sign", chain.key])
    assert r.code == 0, r.stderr
    envelope = tmp_path / "other.1.0.intoto.jsonl"
    r = run([DETPACK, "verify", chain.ref, "--key", chain.pub, "--provenance", envelope])
    assert r.code == 1 and "is not a subject of the provenance" in r.stderr, r.stderr
    r = run([DETPACK, "verify", f"oci:{other}:1.0", "--key", chain.pub, "--provenance", envelope])
    assert r.code == 0, r.stderr


def test_verify_a_layout_without_a_signed_provenance(chain: Chain, tmp_path: Path) -> None:
    r = run([DETPACK, "image", "-o", f"oci:{tmp_path / 'plain'}:1.0", "--layer", chain.layer])
    assert r.code == 0, r.stderr
    r = run([DETPACK, "verify", f"oci:{tmp_path / 'plain'}:1.0", "--key", chain.pub])
    assert r.code == 1 and "unsigned" in r.stderr and "--sign" in r.stderr, r.stderr
    (tmp_path / "plain.1.0.provenance.json").unlink()
    r = run([DETPACK, "verify", f"oci:{tmp_path / 'plain'}:1.0", "--key", chain.pub])
    assert r.code == 1 and "no provenance" in r.stderr and "plain.1.0.intoto.jsonl" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("oci:{tmp}/absent:1.0", "no such image layout directory"),
        ("oci:{layout}:nope", "no image tagged 'nope'"),
        ("{tmp}/absent.whl", "no such file"),
    ],
)
def test_verify_bad_image_references_are_one_line_exit_2(chain: Chain, target: str, needle: str) -> None:
    arg = target.format(tmp=chain.tmp, layout=chain.layout)
    r = run([DETPACK, "verify", arg, "--key", chain.pub])
    assert r.code == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_verify_files_still_need_a_provenance(chain: Chain) -> None:
    r = run([DETPACK, "verify", chain.wheel, "--key", chain.pub])
    assert r.code == 2 and "--provenance" in r.stderr, r.stderr


def test_verify_a_pushed_image_from_its_referrer(chain: Chain, registry: str) -> None:
    r = run([DETPACK, "push", chain.ref, f"{registry}/verify/app"])
    assert r.code == 0, r.stderr
    for target in (f"{registry}/verify/app:1.0", f"{registry}/verify/app@{chain.digest}"):
        r = run([DETPACK, "verify", target, "--key", chain.pub, "--source-commit", chain.commit[:10]])
        assert r.code == 0, r.stderr
        assert f"verified  {target}  {chain.digest}" in r.stdout and chain.commit in r.stdout
    r = run([DETPACK, "verify", f"{registry}/verify/app:1.0", "--key", chain.pub, "--source-commit", "abcdef1"])
    assert r.code == 1 and "abcdef1" in r.stderr and chain.commit[:12] in r.stderr, r.stderr
    # without its provenance, a pushed image has nothing to verify it by
    r = run([DETPACK, "push", f"oci:{chain.layout}:1.0", f"{registry}/verify/bare:1.0", "--no-provenance"])
    assert r.code == 0, r.stderr
    r = run([DETPACK, "verify", f"{registry}/verify/bare:1.0", "--key", chain.pub])
    assert r.code == 1 and "no signed provenance refers to" in r.stderr, r.stderr
    r = run([DETPACK, "verify", f"{registry}/verify/missing:1.0", "--key", chain.pub])
    assert r.code == 2 and "no such image" in r.stderr, r.stderr
