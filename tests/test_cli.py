"""Bad input gets one line naming the thing and the problem, exit code 2, no traceback, and
leaves the output directory as it was; good input honours every documented setting."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, run
from detpack.cli import main


def _one_line_error(r_code: int, stderr: str, *needles: str) -> None:
    assert r_code == 2, stderr
    # Progress lines ("* building sdist ...") may precede it; the error itself is one line.
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("* ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", str(tmp_path / "nope"), "-o", str(tmp_path / "out")])
    _one_line_error(code, capsys.readouterr().err, str(tmp_path / "nope"), "no such file or directory")
    assert not (tmp_path / "out").exists()


def test_not_a_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = materialize(FIXTURES / "no-project", tmp_path / "src", 0o022)
    code = main(["build", str(src), "-o", str(tmp_path / "out")])
    _one_line_error(code, capsys.readouterr().err, str(src), "no pyproject.toml or setup.py")


def test_truncated_sdist_as_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sdist = tmp_path / "demo-1.0.tar.gz"
    sdist.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\x00" * 20)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["build", str(sdist), "-o", str(out)])
    _one_line_error(code, capsys.readouterr().err, str(sdist))
    assert list(out.iterdir()) == []


def test_bad_epoch_and_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    code = main(["build", str(src), "--source-date-epoch", "yesterday"])
    _one_line_error(code, capsys.readouterr().err, "--source-date-epoch", "'yesterday'")
    code = main(["build", str(src), "--source-date-epoch", "git"])
    _one_line_error(code, capsys.readouterr().err, "not in a git repository")
    pyproject = src / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool.detpack]\nsource_date_epoch = 5\n")
    code = main(["build", str(src)])
    _one_line_error(code, capsys.readouterr().err, str(pyproject), "unknown [tool.detpack] key")
    assert not (src / "dist").exists()


def test_outdir_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    (tmp_path / "file").write_text("x")
    code = main(["build", str(src), "-o", str(tmp_path / "file")])
    _one_line_error(code, capsys.readouterr().err, "not a directory")


def test_normalize_corrupt_file_subprocess(tmp_path: Path) -> None:
    bad = tmp_path / "broken.whl"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    out = tmp_path / "out"
    r = run([DETPACK, "normalize", bad, "-o", out])
    _one_line_error(r.code, r.stderr, str(bad), "corrupt or truncated zip")
    assert not out.exists() or list(out.iterdir()) == []


def test_normalize_in_place_failure_keeps_the_original(tmp_path: Path) -> None:
    bad = tmp_path / "broken.tar"
    payload = b"not a tar" * 100
    bad.write_bytes(payload)
    r = run([DETPACK, "normalize", bad, "--in-place"])
    _one_line_error(r.code, r.stderr, str(bad))
    assert bad.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tar"]


@pytest.mark.slow
def test_failing_backend_leaves_outdir_untouched(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "broken-backend", tmp_path / "src", 0o022)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous release notes")
    r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"])
    _one_line_error(r.code, r.stderr, str(src), "broken_backend", "broken on purpose")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # With -v the backend's own output follows the one-line summary.
    r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "-v"])
    assert r.code == 2 and "RuntimeError: broken on purpose" in r.stderr and "Traceback (most recent" in r.stderr


@pytest.mark.slow
def test_wheel_failure_after_sdist_leaves_nothing(tmp_path: Path, wheelhouse: Path) -> None:
    # The sdist builds, the wheel fails: the sdist must not appear on its own.
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    setup_py = src / "setup.py"
    setup_py.write_text(
        "import os\nfrom setuptools import setup\n"
        "if os.path.exists('PKG-INFO'):\n    raise SystemExit('wheel step fails on purpose')\nsetup()\n"
    )
    out = tmp_path / "out"
    r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"])
    _one_line_error(r.code, r.stderr, "wheel")
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow
def test_settings_epoch_origins_and_report(tmp_path: Path, wheelhouse: Path) -> None:
    git = shutil.which("git")
    assert git, "git is required"
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    env = {
        "GIT_AUTHOR_DATE": "2024-05-01T12:00:00Z",
        "GIT_COMMITTER_DATE": "2024-05-01T12:00:00Z",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([git, *argv], cwd=src, env={**env, "PATH": "/usr/bin:/bin"}, check=True)
    common = ["--find-links", wheelhouse, "--offline"]

    def epoch_of(out: Path) -> dict[str, object]:
        prov = json.loads(next(out.glob("*.provenance.json")).read_bytes())
        ext = prov["predicate"]["buildDefinition"]["externalParameters"]
        return {**ext["sourceDateEpoch"], "commit": ext["source"]["digest"].get("gitCommit")}

    r = run([DETPACK, "build", src, "-o", tmp_path / "o1", "--report", tmp_path / "report.json", *common])
    assert r.code == 0, r.stderr
    e = epoch_of(tmp_path / "o1")
    assert e["origin"] == "git" and e["value"] == 1714564800 and e["commit"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["version"] == "1.0"
    assert [a["kind"] for a in report["artifacts"]] == ["sdist", "wheel"]
    with tarfile.open(next((tmp_path / "o1").glob("*.tar.gz"))) as tf:
        assert {m.mtime for m in tf.getmembers()} == {1714564800}

    r = run([DETPACK, "build", src, "-o", tmp_path / "o2", *common], env={"SOURCE_DATE_EPOCH": "1600000000"})
    assert r.code == 0, r.stderr
    assert epoch_of(tmp_path / "o2")["origin"] == "environment"

    r = run(
        [DETPACK, "build", src, "-w", "-o", tmp_path / "o3", "--source-date-epoch", "1500000000", *common],
        env={"SOURCE_DATE_EPOCH": "1600000000"},
    )
    assert r.code == 0, r.stderr
    assert epoch_of(tmp_path / "o3")["value"] == 1500000000
    assert [p.suffix for p in (tmp_path / "o3").iterdir() if p.suffix != ".json" and ".build.log" not in p.name] == [
        ".whl"
    ]

    sdist = next((tmp_path / "o1").glob("*.tar.gz"))
    r = run([DETPACK, "build", sdist, "-o", tmp_path / "o4", "--source-date-epoch", "sdist", *common])
    assert r.code == 0, r.stderr
    e = epoch_of(tmp_path / "o4")
    assert e["origin"] == "sdist" and e["value"] == 1714564800
    wheel_from_sdist = next((tmp_path / "o4").glob("*.whl")).read_bytes()
    assert wheel_from_sdist == next((tmp_path / "o1").glob("*.whl")).read_bytes()


@pytest.mark.slow
def test_backend_warnings_are_one_line_each(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "setuptools-setuppy", tmp_path / "src", 0o022)
    setup_py = src / "setup.py"
    setup_py.write_text(setup_py.read_text().replace("setup(", "setup(\n    tests_require=['x'],", 1))
    r = run([DETPACK, "build", src, "-o", tmp_path / "out", "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "tests_require" in ln]
    assert lines and all(ln.startswith("WARNING BuildBackendWarning: ") for ln in lines)
    assert "warnings.warn" not in r.stderr  # no Python warning source lines


def test_lock_wait_is_announced(tmp_path: Path) -> None:
    import fcntl

    from detpack.build.environment import build_root

    root = tmp_path / "root"
    root.mkdir()
    heard: list[str] = []
    with (root / ".lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        import threading

        def release() -> None:
            fcntl.flock(held, fcntl.LOCK_UN)

        timer = threading.Timer(0.3, release)
        timer.start()
        with build_root(root, on_wait=heard.append) as br:
            assert br.home.is_dir()
        timer.join()
    assert heard and "waiting for another detpack build" in heard[0]


def test_counts_are_singular_for_one() -> None:
    from detpack.cli._output import count

    assert count(1, "package") == "1 package"
    assert count(0, "package") == "0 packages"
    assert count(2, "entry", "entries") == "2 entries"
    assert count(1, "entry", "entries") == "1 entry"


@pytest.mark.slow
def test_lock_of_one_package_says_package(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    r = run([DETPACK, "lock", src, "--find-links", wheelhouse, "--offline", "-q"])
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == [f"{src / 'pylock.build.toml'}  1 package for flit_core>=3.2,<5"]
