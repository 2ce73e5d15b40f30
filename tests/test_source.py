"""The source of a build: git projects (setuptools-scm, a package in a monorepo) are built
from a copy that keeps what VCS plugins need, never in the user's checkout; ``dirty`` means
the files that go into the build differ from the commit; the library leaves the process as
it found it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, digests, require_tool, run
from detpack.git import git_info

pytestmark = [pytest.mark.integration]


def _git(repo: Path, *args: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_OPTIONAL_LOCKS": "0",  # status must not refresh the index: the listing watches .git too
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_AUTHOR_DATE": "2024-05-06T07:08:09Z",
        "GIT_COMMITTER_DATE": "2024-05-06T07:08:09Z",
    }
    proc = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True)
    return proc.stdout


#: 2024-05-06T07:08:09Z, the commit time ``_git`` gives every commit.
COMMIT_TIME = 1714979289


def make_repo(path: Path, fixture: str, subdir: str = "", tag: str | None = None) -> Path:
    """A fresh git repository holding ``fixture`` at ``subdir``, committed (and tagged)."""
    require_tool("git")
    project = path / subdir if subdir else path
    shutil.copytree(FIXTURES / fixture, project, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if subdir:
        (path / "README.md").write_text("a monorepo\n")
    _git(path, "init", "-q", "-b", "main")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "initial")
    if tag:
        _git(path, "tag", tag)
    return project


def _env() -> dict[str, str]:
    root = os.environ.get("DETPACK_BUILD_ROOT")
    return {"DETPACK_BUILD_ROOT": root} if root else {}


def _build(src: Path, wheelhouse: Path, *extra: object) -> tuple[int, str, str]:
    r = run([DETPACK, "build", src, "--find-links", wheelhouse, "--offline", *extra], env=_env())
    return r.code, r.stdout, r.stderr


def _listing(root: Path) -> list[tuple[str, int, int]]:
    """Every path under ``root`` (the .git directory included) with its size and mtime."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted([*dirnames, *filenames]):
            p = Path(dirpath) / name
            st = p.lstat()
            out.append((p.relative_to(root).as_posix(), st.st_size if p.is_file() else 0, st.st_mtime_ns))
    return sorted(out)


def _provenance(outdir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(next(outdir.glob("*.provenance.json")).read_bytes())
    return data


def _source_record(prov: dict[str, object]) -> dict[str, object]:
    deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"]  # type: ignore[index]
    source: dict[str, object] = next(d for d in deps if d["name"] == "source")
    return source


@pytest.mark.slow
def test_scm_project_builds_with_the_tag_version_and_commit_time(tmp_path: Path, wheelhouse: Path) -> None:
    project = make_repo(tmp_path / "repo", "scm", tag="v1.2.3")
    code, _, err = _build(project, wheelhouse, "-o", tmp_path / "out")
    assert code == 0, err
    assert sorted(digests(tmp_path / "out")) == ["fx_scm-1.2.3-py3-none-any.whl", "fx_scm-1.2.3.tar.gz"]
    assert f"SOURCE_DATE_EPOCH={COMMIT_TIME} (from git)" in err
    prov = _provenance(tmp_path / "out")
    epoch = prov["predicate"]["buildDefinition"]["externalParameters"]["sourceDateEpoch"]  # type: ignore[index]
    assert epoch == {"value": COMMIT_TIME, "origin": "git"}
    assert _source_record(prov)["annotations"]["dirty"] is False  # type: ignore[index]
    assert _git(tmp_path / "repo", "status", "--porcelain", "--ignored") == ""


@pytest.mark.slow
def test_monorepo_package_is_built_outside_the_checkout(tmp_path: Path, wheelhouse: Path) -> None:
    repo = tmp_path / "repo"
    project = make_repo(repo, "setuptools-basic", subdir="packages/a")
    before = _listing(repo)
    records = []
    for n in (1, 2):
        code, _, err = _build(project, wheelhouse, "-o", tmp_path / f"out{n}")
        assert code == 0, err
        assert _git(repo, "status", "--porcelain", "--ignored") == ""
        assert _listing(repo) == before, f"build {n} wrote into the checkout"
        record = _source_record(_provenance(tmp_path / f"out{n}"))
        assert record["annotations"] == {
            "kind": "directory",
            "dirty": False,
            "subdirectory": "packages/a",
            "refs": ["refs/heads/main"],  # the branch checked out (a policy's source-refs)
        }
        records.append(record["digest"])
    assert records[0] == records[1]
    assert digests(tmp_path / "out1") == digests(tmp_path / "out2")
    assert len(digests(tmp_path / "out1")) == 2


def test_dirty_counts_only_what_goes_into_the_build(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    project = make_repo(repo, "setuptools-basic", subdir="packages/a")
    (repo / ".gitignore").write_text("*.log\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-q", "-m", "ignore logs")
    # A previous build's outputs, a virtualenv, caches and ignored files: not in the copy.
    for rel in ("dist/x-1.0.tar.gz", "build/lib/x.py", ".venv/bin/python", "fx_setuptools_basic/__pycache__/a.pyc"):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("noise\n")
    (project / "debug.log").write_text("ignored\n")
    (repo / "elsewhere.txt").write_text("outside the package\n")  # not part of this build
    info = git_info(project)
    assert info is not None and info.subdir == "packages/a"
    assert (info.dirty, info.modified, info.untracked) == (False, 0, 0)

    (project / "README.md").write_text("edited\n")
    (project / "fx_setuptools_basic" / "new.py").write_text("NEW = 1\n")
    (project / "notes.txt").write_text("goes into the copy\n")
    info = git_info(project)
    assert info is not None
    assert (info.dirty, info.modified, info.untracked) == (True, 1, 2)


@pytest.mark.slow
def test_a_dirty_tree_is_warned_about_and_a_stale_dist_is_not(tmp_path: Path, wheelhouse: Path) -> None:
    project = make_repo(tmp_path / "repo", "setuptools-basic")
    code, _, err = _build(project, wheelhouse, "--sdist")  # leaves an untracked dist/ behind
    assert code == 0 and (project / "dist").is_dir(), err
    code, _, err = _build(project, wheelhouse, "--sdist")
    assert code == 0, err
    assert "differs from commit" not in err
    assert _source_record(_provenance(project / "dist"))["annotations"]["dirty"] is False  # type: ignore[index]

    (project / "README.md").write_text("edited\n")
    (project / "extra.txt").write_text("untracked\n")
    code, _, err = _build(project, wheelhouse, "--sdist", "-o", tmp_path / "out")
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "differs from commit" in ln]
    commit = _git(tmp_path / "repo", "rev-parse", "HEAD").strip()
    assert warnings == [
        f"WARNING {project}: the work tree differs from commit {commit[:12]} (1 modified, 1 untracked "
        "files go into the build); the provenance records dirty: true"
    ]
    assert _source_record(_provenance(tmp_path / "out"))["annotations"]["dirty"] is True  # type: ignore[index]


def test_a_dirty_tree_is_warned_about_even_quietly_and_refused_when_asked(tmp_path: Path, wheelhouse: Path) -> None:
    """-q hides steps and warnings, but not one that changes the record; --require-clean (or
    [tool.detpack] require-clean) refuses a dirty tree in one line, exit 2, nothing written."""
    project = make_repo(tmp_path / "repo", "setuptools-basic")
    code, _, err = _build(project, wheelhouse, "--sdist", "-q", "--require-clean", "-o", tmp_path / "clean")
    assert code == 0 and err == "", err  # a clean tree: nothing to say, and it builds
    (project / "README.md").write_text("edited\n")
    code, _, err = _build(project, wheelhouse, "--sdist", "-q", "-o", tmp_path / "quiet")
    assert code == 0, err
    assert [ln for ln in err.splitlines() if "differs from commit" in ln], err
    out = tmp_path / "refused"
    code, stdout, err = _build(project, wheelhouse, "--sdist", "--require-clean", "-o", out)
    assert code == 2 and stdout == "", (stdout, err)
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {project}: the work tree differs from commit"), line
    assert line.endswith("--require-clean refuses to build it: commit or stash the changes"), line
    assert not out.exists()
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool.detpack]\nrequire-clean = true\n")
    code, _, err = _build(project, wheelhouse, "--sdist", "-o", out)
    assert code == 2 and "--require-clean refuses" in err and not out.exists(), err


SCRIPT = """
import os, sys, tempfile
from pathlib import Path
import detpack

src, out, house = (Path(a) for a in sys.argv[1:4])


def umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


os.umask(0o027)


def state():
    return tempfile.tempdir, dict(os.environ), os.getcwd(), umask()


# Nothing has asked for the temporary directory yet, as in a fresh program.
before = state()
request = detpack.BuildRequest(srcdir=src, outdir=out, find_links=(house,), offline=True)
detpack.build_project(request)
assert state() == before, (before, state())
addition = detpack.Addition.parse(f"{src}:/app")
layer = detpack.build_layer(out / "layer.tar.gz", additions=[addition], epoch=315532800)
assert tempfile.gettempdir() == os.environ["TMPDIR"]
cached = state()  # now with the caller's temporary directory cached
detpack.build_project(request)
assert state() == cached, (cached, state())
try:
    detpack.build_project(detpack.BuildRequest(srcdir=src / "missing"))
except detpack.DetpackError as exc:
    print("error:", exc)
print("ok", layer.digest)
"""


@pytest.mark.slow
def test_library_leaves_process_state_as_it_found_it(tmp_path: Path, wheelhouse: Path) -> None:
    project = make_repo(tmp_path / "repo", "flit")
    r = run(
        [sys.executable, "-c", SCRIPT, project, tmp_path / "out", wheelhouse],
        env={**_env(), "TMPDIR": str(tmp_path)},
    )
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("ok sha256:"), r.stdout
    assert "error: " in r.stdout and "no such file or directory" in r.stdout


def test_git_is_asked_only_where_a_work_tree_can_be_found(tmp_path: Path) -> None:
    """A layer, tarball or build of a folder in no git work tree starts no git (and loads no plumbum for it):
    ~0.1 s of every such run. Where git would find one (the folder, a parent, through a symlink, or
    GIT_DIR/GIT_WORK_TREE), it is asked as before, and a folder in a subdirectory gets the commit."""
    from detpack.git import outside_any_work_tree

    plain = tmp_path / "plain" / "deep"
    plain.mkdir(parents=True)
    (plain / "a.txt").write_text("a\n")
    repo = tmp_path / "repo"
    project = make_repo(repo, "setuptools-basic", subdir="packages/a")
    link = tmp_path / "plain" / "into-repo"
    link.symlink_to(project, target_is_directory=True)
    assert outside_any_work_tree(plain)
    assert not outside_any_work_tree(project) and not outside_any_work_tree(repo)
    assert not outside_any_work_tree(link)  # git walks up from the real path
    assert git_info(link) is not None

    # A git that leaves a mark: run for the repository's layer, never for the plain folder's.
    shim = tmp_path / "shim"
    shim.mkdir()
    marks = tmp_path / "git-ran"
    real_git = shutil.which("git")
    assert real_git is not None
    (shim / "git").write_text(f'#!/bin/sh\necho "$@" >> {marks}\nexec {real_git} "$@"\n')
    (shim / "git").chmod(0o755)
    env = {"PATH": f"{shim}:{os.environ['PATH']}"}
    r = run([DETPACK, "layer", "-o", tmp_path / "plain.tar.gz", "--add", f"{plain}:/app", "-q"], env=env)
    assert r.code == 0, r.stderr
    assert not marks.exists()
    prov = json.loads((tmp_path / "plain.tar.gz.provenance.json").read_bytes())
    assert "gitCommit" not in json.dumps(prov)
    r = run([DETPACK, "layer", "-o", tmp_path / "repo.tar.gz", "--add", f"{project}:/app", "-q"], env=env)
    assert r.code == 0, r.stderr
    assert marks.exists()  # the shim was on PATH and is what ran: the test can tell
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert head in (tmp_path / "repo.tar.gz.provenance.json").read_text()
