"""A hostile backend stays in its sandbox: each test runs one attack of ``fixtures/hostile-backend``
(the attack named in its ``_backend/attack.json``) and asserts the harm did not happen on the host.

The harms: code run on the host (a marker file the attack's setup.py writes, at a host path no
hook can see), host files written, read or re-moded through a path the hook controls, a host
process made to hang on a FIFO, and the caller's secrets (git credentials, index and proxy
passwords, /etc/pip.conf) packed into an artifact. Each build either ends in one line, exit 2,
or succeeds harmlessly.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import DETPACK, FIXTURES, materialize, plain_user_detpack, require_tool, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]
GIT_SECRET = "SECRET-GIT-7f3a"
ENV_SECRETS = ("SECRET-INDEX-91c2", "SECRET-PROXY-5d07", "SECRET-TOKEN-0b6e", "SECRET-BARE-77d1")
CONF_SECRET = "SECRET-PIPCONF-2b88"


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    require_tool("bwrap")


def _project(tmp_path: Path, kind: str, **attack: Any) -> Path:
    src = materialize(FIXTURES / "hostile-backend", tmp_path / "src", 0o022)
    (src / "_backend" / "attack.json").write_text(json.dumps({"kind": kind, **attack}))
    return src


def _build(
    src: Path, out: Path, wheelhouse: Path, *extra: object, env: dict[str, str] | None = None, timeout: float = 240
) -> tuple[int, str, str]:
    argv = [DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "-q", *extra]
    try:
        r = run(argv, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the build hung for {timeout} s (a host process blocked on a path the hook controls)")
    return r.code, r.stdout, r.stderr


def _one_line_refusal(code: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _everything(outdir: Path) -> bytes:
    """Every byte under ``outdir``, archives opened (zip members, tar members, gzip bodies)."""
    found = b""
    for path in sorted(p for p in outdir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += data
        if path.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                found += b"".join(zf.read(n) for n in zf.namelist())
        elif path.name.endswith(".tar.gz"):
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                for member in tf.getmembers():
                    got = tf.extractfile(member) if member.isfile() else None
                    found += got.read() if got else b""
        elif path.suffix == ".gz":
            found += gzip.decompress(data)
    return found


# -- build requirements: a hook's answer never makes the host run code ------------------------


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("requires-url", "a direct reference"),
        ("requires-path", "not a requirement"),
        ("requires-option", "not a requirement"),
        ("requires-newline", "not a requirement"),
    ],
)
def test_a_requirement_answer_cannot_run_code_on_the_host(
    kind: str, said: str, tmp_path: Path, wheelhouse: Path
) -> None:
    marker = tmp_path / "host-marker"
    src = _project(tmp_path, kind, marker=str(marker))
    out = tmp_path / "out"
    code, _, err = _build(src, out, wheelhouse, env={"DETPACK_BUILD_ROOT": str(tmp_path / "root")})
    assert not marker.exists(), "the hook's sdist ran its setup.py on the host"
    line = _one_line_refusal(code, err)
    assert "hook get_requires_for_build_wheel" in line and said in line and line.startswith(f"error: {src}: "), line
    assert not out.exists() or not any(out.iterdir())  # nothing written


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_installer_configuration_planted_in_home_is_not_read(installer: str, tmp_path: Path, wheelhouse: Path) -> None:
    """The sdist phase plants pip.conf and uv.toml in HOME naming an index of its own; the wheel
    phase then asks for a plain name only that index has. The installer must not read them."""
    marker = tmp_path / "host-marker"
    src = _project(tmp_path, "planted-config", marker=str(marker))
    code, _, err = _build(src, tmp_path / "out", wheelhouse, "--installer", installer)
    assert not marker.exists(), "the installer read the planted configuration and ran its sdist on the host"
    line = _one_line_refusal(code, err)
    assert "fx-helper" in line or "fx_helper" in line, line


def test_a_poisoned_answer_in_the_requirements_cache_is_refused(tmp_path: Path, wheelhouse: Path) -> None:
    """Whatever wrote the answers cache, a cached answer is checked as a fresh one is."""
    marker = tmp_path / "host-marker"
    src = _project(tmp_path, "none", marker=str(marker))
    root = tmp_path / "root"
    env = {"DETPACK_BUILD_ROOT": str(root)}
    code, _, err = _build(src, tmp_path / "first", wheelhouse, env=env)
    assert code == 0, err
    answers = sorted((root / "cache" / "requires").glob("*.json"))
    assert answers, "no answers cached"
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(b"not even an sdist")
    for entry in answers:
        entry.write_text(json.dumps([f"evil-dep @ file://{evil}"]))
    code, _, err = _build(src, tmp_path / "second", wheelhouse, env=env)
    line = _one_line_refusal(code, err)
    assert "a direct reference" in line and "evil-dep" in line, line


def test_a_build_root_of_another_owner_is_refused(tmp_path: Path, wheelhouse: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a directory of another owner needs root (CI runs as root)")
    src = _project(tmp_path, "none")
    root = tmp_path / "root"
    root.mkdir(mode=0o777)
    os.chown(root, 65534, 65534)  # nobody: another local user pre-created it
    code, _, err = _build(src, tmp_path / "out", wheelhouse, env={"DETPACK_BUILD_ROOT": str(root)})
    line = _one_line_refusal(code, err)
    assert str(root) in line and "owned by" in line, line
    assert not (root / "runs").exists() and not (root / "cache").exists()


def test_the_build_root_is_private_to_its_user(tmp_path: Path, wheelhouse: Path) -> None:
    src = _project(tmp_path, "none")
    root = tmp_path / "root"
    code, _, err = _build(src, tmp_path / "out", wheelhouse, env={"DETPACK_BUILD_ROOT": str(root)})
    assert code == 0, err
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


# -- the host never follows a path a hook controls ---------------------------------------------


def test_a_link_at_the_unpack_target_writes_nothing_on_the_host(tmp_path: Path, wheelhouse: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    src = _project(tmp_path, "unpack-symlink", victim=str(victim))
    code, _, err = _build(src, tmp_path / "out", wheelhouse)
    assert list(victim.iterdir()) == [], "the host unpacked the sdist through the hook's link"
    assert code in (0, 2), err
    if code == 2:
        _one_line_refusal(code, err)


def test_an_output_that_is_a_link_to_a_host_file_is_refused(tmp_path: Path, wheelhouse: Path) -> None:
    victim = tmp_path / "host-secret.whl"
    with zipfile.ZipFile(victim, "w") as zf:
        zf.writestr("fx_hostile/secret.txt", "SECRET-HOST-FILE-c4e1")
    src = _project(tmp_path, "output-symlink", victim=str(victim))
    out = tmp_path / "out"
    code, _, err = _build(src, out, wheelhouse)
    line = _one_line_refusal(code, err)
    assert "not a regular file" in line, line
    assert not out.exists() or b"SECRET-HOST-FILE" not in _everything(out)


def test_an_output_that_is_a_fifo_does_not_hang_the_host(tmp_path: Path, wheelhouse: Path) -> None:
    src = _project(tmp_path, "output-fifo")
    code, _, err = _build(src, tmp_path / "out", wheelhouse, timeout=180)
    line = _one_line_refusal(code, err)
    assert "not a regular file" in line, line


def test_a_control_file_made_a_fifo_does_not_hang_the_host(tmp_path: Path, wheelhouse: Path) -> None:
    src = _project(tmp_path, "control-fifo")
    code, _, err = _build(src, tmp_path / "out", wheelhouse, "--no-cache", timeout=180)
    line = _one_line_refusal(code, err)
    assert "get_requires_for_build_wheel" in line and "output.json" in line, line


def test_a_control_file_made_a_link_to_a_host_file_is_not_read(tmp_path: Path, wheelhouse: Path) -> None:
    """The host file holds an answer with a requirement the hook could not give itself."""
    marker = tmp_path / "host-marker"
    victim = tmp_path / "answer.json"
    victim.write_text(json.dumps({"return_val": ["SECRET-ANSWER-e90d"]}))
    src = _project(tmp_path, "control-symlink", victim=str(victim), marker=str(marker))
    code, _, err = _build(src, tmp_path / "out", wheelhouse, "--no-cache")
    line = _one_line_refusal(code, err)
    assert "output.json" in line and "symbolic link" in line and "SECRET-ANSWER" not in err, line


@pytest.mark.parametrize("kind", ["native-fifo", "native-symlink"])
def test_native_notes_a_hook_replaced_are_not_read(kind: str, tmp_path: Path, wheelhouse: Path) -> None:
    """FIFOs (a reader hangs) or links to a host file (its lines would be read as the toolchain)."""
    victim = tmp_path / "host-notes"
    victim.write_text("gcc\t/usr/bin/SECRET-NOTE-51aa\nx.o: /usr/include/SECRET-NOTE-51aa.h\n")
    src = _project(tmp_path, kind, victim=str(victim))
    out = tmp_path / "out"
    code, _, err = _build(src, out, wheelhouse, timeout=180)
    assert code == 0, err  # notes that are not regular files are no notes: the build is harmless
    assert b"SECRET-NOTE" not in _everything(out)


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("metadata-symlink", "not a regular file"),  # the METADATA the hook prepared, a link to a host file
        ("metadata-fifo", "not a regular file"),  # a reader hangs
        ("metadata-escape", "outside"),  # the hook's answer names a host directory holding a METADATA
        ("metadata-wheel-symlink", "not a regular file"),  # no prepare hook; the built wheel, a link to a host wheel
        ("metadata-wheel-bomb", "max_metadata_bytes"),  # no prepare hook; the wheel's METADATA, a bzip2 bomb
    ],
)
def test_the_metadata_a_hook_prepares_is_read_from_the_build_root_only(
    kind: str, said: str, tmp_path: Path, wheelhouse: Path
) -> None:
    """``build --metadata`` reads what the hook left: never through a link, a FIFO or a path its answer names
    outside the build root, and never more than a metadata file may hold (a wheel's member read whole)."""
    host = tmp_path / "host"
    (host / "fx_hostile-1.0.dist-info").mkdir(parents=True)
    secret = "Metadata-Version: 2.1\nName: SECRET-METADATA-3c9d\nVersion: 1.0\n"
    (host / "METADATA").write_text(secret)
    victim_wheel = host / "fx_hostile-1.0-py3-none-any.whl"
    with zipfile.ZipFile(victim_wheel, "w") as zf:
        zf.writestr("fx_hostile-1.0.dist-info/METADATA", secret)
    src = _project(tmp_path, kind, victim=str(host / "METADATA"), victim_wheel=str(victim_wheel))
    argv = [DETPACK, "build", src, "--metadata", "--find-links", wheelhouse, "--offline", "--no-cache"]
    rusage = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); " + (
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
    )
    try:
        r = run([sys.executable, "-c", rusage, *argv], timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("build --metadata hung on a FIFO the hook left")
    *lines, peak = r.stderr.strip().splitlines()
    assert "SECRET-METADATA" not in r.stdout + r.stderr
    line = _one_line_refusal(r.code, "\n".join(lines))
    assert said in line and "METADATA" in line, line
    assert int(peak) < 200_000, f"{int(peak) >> 10} MiB at the peak"


def test_clean_up_never_changes_a_mode_through_a_link(wheelhouse: Path) -> None:
    """A read-only directory holding a link to a host file: removing the build root fails on it,
    and the clean-up that opens such directories up must not chmod the link's target. As root
    nothing fails to be removed, so the build runs as a plain user (uid 65534, as
    tests/test_sandbox.py's plain-user build does) who owns the victim file."""
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="detpack-hostile-user-"))  # pytest's own tmp dirs are 0700
    try:
        victim = home / "victim-file"
        victim.write_text("host file")
        victim.chmod(0o600)
        src = _project(home, "cleanup-chmod", victim=str(victim))
        detpack, env = plain_user_detpack(home)
        argv = [*detpack, "build", src, "-o", home / "out", "--find-links", wheelhouse, "--offline"]
        r = run(argv, env=env, timeout=240)
        assert r.code == 0, r.stderr
        assert stat.S_IMODE(victim.stat().st_mode) == 0o600, "clean-up chmodded a host file through the hook's link"
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- no caller secret is visible to a hook -----------------------------------------------------


def test_git_credentials_in_the_repository_config_stay_out_of_the_artifacts(tmp_path: Path, wheelhouse: Path) -> None:
    require_tool("git")
    src = _project(tmp_path, "git-config")
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    header = f"AUTHORIZATION: basic {GIT_SECRET}"
    for argv in (
        ["init", "-q", "-b", "main"],
        ["config", "http.https://git.example.invalid/.extraheader", header],
        ["remote", "add", "origin", f"https://ci:{GIT_SECRET}@git.example.invalid/x.git"],
        ["add", "-A"],
        ["commit", "-q", "-m", "c"],
    ):
        subprocess.run(["git", "-C", src, *argv], check=True, env={**ident, "PATH": "/usr/bin:/bin"})
    out = tmp_path / "out"
    code, _, err = _build(src, out, wheelhouse)
    assert code == 0, err
    loot = _everything(out)
    assert b"no config visible" in loot or b"[core]" in loot, "the attack did not run"
    assert GIT_SECRET.encode() not in loot


def test_index_and_proxy_credentials_stay_out_of_the_artifacts(tmp_path: Path, wheelhouse: Path) -> None:
    src = _project(tmp_path, "environment")
    env = {
        "PIP_INDEX_URL": f"https://ci:{ENV_SECRETS[0]}@127.0.0.1:9/simple",
        "HTTPS_PROXY": f"http://ci:{ENV_SECRETS[1]}@127.0.0.1:9",
        "PIP_EXTRA_INDEX_URL": f"https://127.0.0.1:9/simple?token={ENV_SECRETS[2]}",
        "HTTP_PROXY": f"ci:{ENV_SECRETS[3]}@127.0.0.1:9",
    }
    out = tmp_path / "out"
    code, _, err = _build(src, out, wheelhouse, env=env)
    assert code == 0, err
    loot = _everything(out)
    assert b'"SOURCE_DATE_EPOCH"' in loot  # the attack ran: the hook's environment is in the wheel
    for secret in ENV_SECRETS:
        assert secret.encode() not in loot, secret


def test_credentials_are_redacted_in_every_form_a_url_holds_them() -> None:
    from detpack.wording import redact

    assert redact("https://u:pw@host/simple") == "https://***@host/simple"
    assert redact("https://ghp_token@host/x.git") == "https://***@host/x.git"
    assert redact("u:pw@proxy:3128") == "***@proxy:3128"
    assert redact("https://host/simple?token=abc&x=1") == "https://host/simple?token=***&x=1"
    assert redact("https://host/a?X-Amz-Signature=abc") == "https://host/a?X-Amz-Signature=***"
    for kept in ("git@github.com:o/r.git", "http://proxy:3128", "/etc/ssl/certs/ca.crt", "a b"):
        assert redact(kept) == kept


def test_the_machines_pip_configuration_stays_out_of_the_artifacts(tmp_path: Path, wheelhouse: Path) -> None:
    bwrap = require_tool("bwrap")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nextra-index-url = https://ci:{CONF_SECRET}@127.0.0.1:9/simple\n")
    overlay = [bwrap, "--dev-bind", "/", "/", "--ro-bind", str(conf), "/etc/pip.conf", "--"]
    src = _project(tmp_path, "etc-pip-conf")
    out = tmp_path / "out"
    argv = [*overlay, DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "--installer", "pip"]
    r = run(argv, timeout=240)
    assert r.code == 0, r.stderr
    loot = _everything(out)
    assert b"fx_hostile/loot.txt" in loot  # the attack ran (and found nothing, or the secret)
    assert CONF_SECRET.encode() not in loot


def test_a_clean_build_after_the_attacks_is_byte_identical_to_a_control(tmp_path: Path, wheelhouse: Path) -> None:
    """Nothing an attack left behind (caches, build roots) changes the next honest build."""
    control_src = materialize(FIXTURES / "flit", tmp_path / "control", 0o022)
    code, _, err = _build(control_src, tmp_path / "a", wheelhouse, "-q")
    assert code == 0, err
    src = _project(tmp_path, "requires-url", marker=str(tmp_path / "m"))
    _build(src, tmp_path / "attacked", wheelhouse)
    code, _, err = _build(control_src, tmp_path / "b", wheelhouse, "-q")
    assert code == 0, err
    artifacts = [p for p in (tmp_path / "a").iterdir() if p.name.endswith((".whl", ".tar.gz"))]
    assert len(artifacts) == 2, artifacts
    for artifact in artifacts:
        assert artifact.read_bytes() == (tmp_path / "b" / artifact.name).read_bytes(), artifact.name


def test_the_fixture_is_harmless_without_an_attack(tmp_path: Path, wheelhouse: Path) -> None:
    """The control: with no attack the backend is flit_core and builds."""
    src = _project(tmp_path, "none")
    shutil.rmtree(src / "_backend" / "__pycache__", ignore_errors=True)
    code, _, err = _build(src, tmp_path / "out", wheelhouse)
    assert code == 0, err


def test_rebuild_pypi_of_a_hostile_release_cannot_read_the_attest_key(tmp_path: Path, wheelhouse: Path) -> None:
    """A release served here (--find-links, --offline) whose backend reads the rebuilder's key at the
    very path it is kept: the key is read by detpack before any of the release's code runs, and no
    hook or install can see the folder it is in."""
    keys = tmp_path / "keys"
    keys.mkdir()
    key = keys / "rebuilder"
    src = _project(tmp_path, "read-key", key=str(key))
    links = tmp_path / "links"
    code, _, err = _build(src, links, wheelhouse)
    assert code == 0, err
    for extra in [*links.glob("*.provenance.json"), *links.glob("*.build.log.gz")]:
        extra.unlink()
    assert run([DETPACK, "keygen", "-o", key]).code == 0
    keep = tmp_path / "keep"
    argv = [DETPACK, "rebuild", "--pypi", "fx_hostile==1.0.0", "--offline", "--find-links", links]
    r = run([*argv, "--find-links", wheelhouse, "-o", keep, "--attest", key], timeout=600)
    assert r.code in (0, 1), r.stdout + r.stderr
    rebuilt = _everything(keep / "rebuilt")
    assert b"no key visible" in rebuilt, "the attack did not run in the rebuild"
    secret = b"".join(key.read_bytes().splitlines()[1:-1])  # the PEM body
    assert secret and secret not in _everything(keep).replace(b"\n", b"")
