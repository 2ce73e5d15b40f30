"""``detpack tar``: the same tree (or commit) gives the same bytes under any path, umask, TZ,
locale and clock, in every compression; plain ``tar`` on the same trees differs; the
canonical form holds member by member; hostile or missing input fails with one line.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from conftest import DETPACK, require_tool, run, sha256, variations

pytestmark = pytest.mark.integration


def make_tree(root: Path, umask: int, *, stamp: float) -> Path:
    """A small tree with every kind tar keeps: nested dirs, exec and plain files, links."""
    old = os.umask(umask)
    try:
        (root / "pkg" / "sub").mkdir(parents=True)
        (root / "empty-dir").mkdir()
        (root / "README").write_text("hello\n")
        (root / "pkg" / "__init__.py").write_text("VALUE = 1\n")
        (root / "pkg" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 64)
        (root / "pkg" / "sub" / "ünïcode name.txt").write_text("ü\n")
        tool = root / "run.sh"
        tool.write_text("#!/bin/sh\necho hi\n")
        tool.chmod(0o777 & ~umask)
        (root / "pkg" / "link").symlink_to("sub/data.bin")
        os.link(root / "README", root / "pkg" / "README.hard")
    finally:
        os.umask(old)
    for path in sorted(root.rglob("*")):
        if not path.is_symlink():
            os.utime(path, (stamp, stamp))
    return root


def tar_sha(out: Path, env: dict[str, str], umask: int, *argv: str | Path) -> str:
    r = run([DETPACK, "tar", *argv, "-o", out], env=env, umask=umask)
    assert r.code == 0, r.stderr
    assert f"sha256:{sha256(out)}" in r.stdout
    return sha256(out)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.zst"])
def test_directory_tarball_identical_across_variations(tmp_path: Path, suffix: str) -> None:
    results, controls = [], []
    for i, (label, env, umask, where) in enumerate(variations(tmp_path)):
        tree = make_tree(where / "tree", umask, stamp=1_600_000_000 + 86_400 * i)
        out = tmp_path / label / f"out{suffix}"
        results.append(tar_sha(out, env, umask, tree, "--prefix", "proj-1.0/"))
        control = tmp_path / label / "control.tar"
        subprocess.run(["tar", "-cf", control, "-C", tree.parent, tree.name], check=True, env={**os.environ, **env})
        controls.append(sha256(control))
    assert results[0] == results[1]
    assert controls[0] != controls[1], "the variations did not change plain tar's output"


def test_canonical_form(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", 0o002, stamp=1_700_000_000)
    out = tmp_path / "t.tar"
    tar_sha(out, {}, 0o022, tree, "--prefix", "proj/", "--source-date-epoch", "1234567890")
    with tarfile.open(out) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.encode())
    assert names[0] == "proj"
    by = {m.name: m for m in members}
    assert {m.mtime for m in members} == {1234567890}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert by["proj/run.sh"].mode == 0o755 and by["proj/README"].mode == 0o644
    assert by["proj/empty-dir"].isdir() and by["proj/empty-dir"].mode == 0o755
    assert by["proj/pkg/link"].issym() and by["proj/pkg/link"].linkname == "sub/data.bin"
    # The first name in sorted order carries the data; the other is a hardlink to it.
    assert by["proj/README"].isfile() and by["proj/pkg/README.hard"].islnk()
    assert by["proj/pkg/README.hard"].linkname == "proj/README"
    assert all(not m.pax_headers or set(m.pax_headers) <= {"path", "linkpath"} for m in members)


def test_compressions_hold_the_same_tar(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", 0o022, stamp=1_700_000_000)
    plain = tmp_path / "a.tar"
    tar_sha(plain, {}, 0o022, tree)
    gz, zst = tmp_path / "a.tgz", tmp_path / "a.tar.zst"
    tar_sha(gz, {}, 0o022, tree)
    tar_sha(zst, {}, 0o022, tree)
    raw = plain.read_bytes()
    import gzip

    assert gzip.decompress(gz.read_bytes()) == raw
    assert gz.read_bytes()[4:10] == b"\0\0\0\0\0\xff"  # mtime 0, no name flag checked below, OS unknown
    assert gz.read_bytes()[3] == 0  # FLG: no FNAME
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(zst.read_bytes())).read() == raw


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    base = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_AUTHOR_DATE": "2001-02-03T04:05:06Z",
        "GIT_COMMITTER_DATE": "2001-02-03T04:05:06Z",
    }
    return subprocess.run(
        ["git", "-C", repo, *args], check=True, capture_output=True, text=True, env={**base, **(env or {})}
    ).stdout


def test_git_revision_tars_the_commit_not_the_work_tree(tmp_path: Path) -> None:
    require_tool("git")
    repo = make_tree(tmp_path / "repo", 0o022, stamp=1_700_000_000)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")
    commit = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "README").write_text("changed in the work tree\n")
    (repo / "untracked.txt").write_text("not committed\n")
    out = tmp_path / "rev.tar.gz"
    r = run([DETPACK, "tar", "--git", "HEAD", "--repo", repo, "-o", out, "--prefix", "p/"])
    assert r.code == 0, r.stderr
    import gzip

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(out.read_bytes()))) as tf:
        names = tf.getnames()
        readme = tf.extractfile("p/README")
        assert readme is not None and readme.read() == b"hello\n"
        assert {m.mtime for m in tf.getmembers()} == {981173106}  # the commit time
    assert "p/untracked.txt" not in names and "p/pkg/link" in names
    # A clone elsewhere (other path, other checkout times) gives the same bytes for the same commit.
    clone = tmp_path / "x" / "y" / "clone"
    subprocess.run(["git", "clone", "-q", repo, clone], check=True)
    out2 = tmp_path / "rev2.tar.gz"
    r = run([DETPACK, "tar", "--git", commit, "--repo", clone, "-o", out2, "--prefix", "p/"], umask=0o077)
    assert r.code == 0, r.stderr
    assert sha256(out) == sha256(out2)


def _fails(r_code: int, stderr: str, *needles: str) -> None:
    assert r_code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("error: "), stderr  # the step line, then one error line
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[1], stderr


def test_fifo_and_socket_are_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", 0o022, stamp=1_700_000_000)
    os.mkfifo(tree / "pkg" / "pipe")
    out = tmp_path / "o.tar.gz"
    r = run([DETPACK, "tar", tree, "-o", out])
    _fails(r.code, r.stderr, "pipe", "fifo")
    assert not out.exists() and not list(tmp_path.glob(".detpack-tmp-*"))
    os.unlink(tree / "pkg" / "pipe")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tree / "sock"))
        r = run([DETPACK, "tar", tree, "-o", out])
    _fails(r.code, r.stderr, "sock", "socket")
    assert not out.exists()


def test_symlink_escaping_the_tree_is_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", 0o022, stamp=1_700_000_000)
    (tree / "pkg" / "evil").symlink_to("../../../etc/passwd")
    out = tmp_path / "o.tar"
    r = run([DETPACK, "tar", tree, "-o", out])
    _fails(r.code, r.stderr, "evil", "outside")
    assert not out.exists()


def test_existing_output_is_kept_on_failure(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", 0o022, stamp=1_700_000_000)
    out = tmp_path / "o.tar"
    out.write_bytes(b"previous release")
    os.mkfifo(tree / "pipe")
    r = run([DETPACK, "tar", tree, "-o", out])
    assert r.code == 2
    assert out.read_bytes() == b"previous release"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["missing-dir", "-o", "o.tar"], "no such file"),
        (["tree", "-o", "o.zip"], "unknown archive suffix"),
        (["--git", "no-such-rev", "--repo", "tree", "-o", "o.tar"], "not a git repository"),
        (["tree", "--git", "HEAD", "-o", "o.tar"], "either DIR or --git"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, argv: list[str], needle: str) -> None:
    make_tree(tmp_path / "tree", 0o022, stamp=1_700_000_000)
    r = run([DETPACK, "tar", *argv], cwd=tmp_path)
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert not (tmp_path / "o.tar").exists()


def test_unknown_revision_in_a_repository(tmp_path: Path) -> None:
    repo = make_tree(tmp_path / "repo", 0o022, stamp=1_700_000_000)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")
    r = run([DETPACK, "tar", "--git", "v9.9", "--repo", repo, "-o", tmp_path / "o.tar"])
    assert r.code == 2 and "no commit named 'v9.9'" in r.stderr, r.stderr


def test_streamed_walk_order_is_the_global_byte_order(tmp_path: Path) -> None:
    """The tree is walked lazily (subtrees at the key ``name/``); the result must be exactly the
    byte order of full paths, the canonical order, including names around '/' (0x2f)."""
    root = tmp_path / "t"
    names = ["a", "a.txt", "a-b/y", "a0", "ab", "A", "é/x", "a b/z", "a/x", "a/x.y/z", "a/x-y", "a/x/q", "z"]
    for name in names:
        path = root / name
        if name in ("a", "a/x"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    out = tmp_path / "o.tar"
    tar_sha(out, {}, 0o022, root)
    with tarfile.open(out) as tf:
        listed = tf.getnames()
    assert listed == sorted(listed, key=lambda n: n.encode())
    assert set(names) <= set(listed)


def test_one_entry_is_counted_singular(tmp_path: Path) -> None:
    (tmp_path / "only").write_text("x\n")
    r = run([DETPACK, "tar", tmp_path / "only", "-o", tmp_path / "one.tar", "--source-date-epoch", "0", "-q"])
    assert r.code == 0, r.stderr
    assert r.stdout.split("  ")[2] == "1 entry", r.stdout


def _epoch(r_code: int, stdout: str, stderr: str) -> int:
    assert r_code == 0, stderr
    return int(stdout.split("  epoch ")[1].split()[0])


def test_directory_epoch_follows_the_build_rule(tmp_path: Path) -> None:
    # The same rule as `detpack build`: option, $SOURCE_DATE_EPOCH, the repository's last commit, 1980.
    require_tool("git")
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "sub" / "a.txt").write_text("a\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")  # 2001-02-03T04:05:06Z
    (repo / "top.txt").write_text("later\n")
    _git(repo, "add", "-A")
    later = {"GIT_AUTHOR_DATE": "2002-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2002-01-01T00:00:00Z"}
    _git(repo, "commit", "-qm", "two", env=later)
    out = tmp_path / "o.tar"
    for tree in (repo, repo / "sub", repo / "sub" / "a.txt"):
        r = run([DETPACK, "tar", tree, "-o", out])
        assert _epoch(r.code, r.stdout, r.stderr) == 1009843200, tree  # the last commit of the repository
    r = run([DETPACK, "tar", repo / "sub", "-o", out], env={"SOURCE_DATE_EPOCH": "1234"})
    assert _epoch(r.code, r.stdout, r.stderr) == 1234
    r = run([DETPACK, "tar", repo / "sub", "-o", out, "--source-date-epoch", "99"], env={"SOURCE_DATE_EPOCH": "1234"})
    assert _epoch(r.code, r.stdout, r.stderr) == 99
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "b.txt").write_text("b\n")
    r = run([DETPACK, "tar", plain, "-o", out])
    assert _epoch(r.code, r.stdout, r.stderr) == 315532800
    r = run([DETPACK, "tar", plain, "-o", out], env={"SOURCE_DATE_EPOCH": "nope"})
    assert r.code == 2 and r.stderr.splitlines()[-1].startswith("error: SOURCE_DATE_EPOCH"), r.stderr
