"""``detpack diff`` on crafted pairs, one difference of each kind: it names the member, the
attribute and the likely cause; identical inputs give exit 0; bad input gives one line, exit 2."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import jsonschema
import pytest

from conftest import DETPACK, ROOT, chromium_dom, headless_chromium, materialize, run
from detpack.cli import main
from detpack.cli.diff import to_json
from detpack.verify import causes
from detpack.verify.compare import Comparison, compare_paths

OLD = (2021, 3, 4, 10, 0, 0)  # far from "now": time rules must not say "clock"
SCHEMA = json.loads((ROOT / "detpack" / "schemas" / "diff-v1.schema.json").read_text())


def make_zip(path: Path, members: list[tuple[str, bytes]], **over: object) -> Path:
    """A zip whose members all share ``OLD`` time and mode 0644 unless ``over`` says otherwise."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zi = zipfile.ZipInfo(name, over.get(f"{name}:date_time", OLD))  # type: ignore[arg-type]
            zi.external_attr = (0o100000 | int(over.get(f"{name}:mode", 0o644))) << 16  # type: ignore[call-overload]
            zi.create_system = int(over.get(f"{name}:create_system", 3))  # type: ignore[call-overload]
            zi.compress_type = int(over.get(f"{name}:compress_type", zipfile.ZIP_DEFLATED))  # type: ignore[call-overload]
            zi.extra = bytes(over.get(f"{name}:extra", b""))  # type: ignore[call-overload]
            zf.writestr(zi, data)
    return path


def make_tar_gz(
    path: Path, members: list[tuple[str, bytes]], gz_mtime: int = 0, gz_name: str = "", **over: object
) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = int(over.get(f"{name}:mtime", 1614852000))  # type: ignore[call-overload]
            ti.mode = int(over.get(f"{name}:mode", 0o644))  # type: ignore[call-overload]
            ti.uid = int(over.get(f"{name}:uid", 0))  # type: ignore[call-overload]
            ti.uname = str(over.get(f"{name}:uname", ""))
            tf.addfile(ti, io.BytesIO(data))
    with path.open("wb") as f, gzip.GzipFile(filename=gz_name, mode="wb", fileobj=f, mtime=gz_mtime) as g:
        g.write(raw.getvalue())
    return path


BASE = [
    ("pkg/__init__.py", b"VALUE = 1\n"),
    ("pkg/info.py", b"BUILD_DIR = '/tmp/build-a/src/pkg'\nORDER = 'alpha,bravo,charlie'\n"),
    ("pkg-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.41.0)\nTag: py3-none-any\n"),
]


def pair(
    tmp: Path,
    a: list[tuple[str, bytes]],
    b: list[tuple[str, bytes]],
    ext: str = ".zip",
    over_a: dict[str, object] | None = None,
    over_b: dict[str, object] | None = None,
) -> tuple[Path, Path]:
    (tmp / "A").mkdir(exist_ok=True)
    (tmp / "B").mkdir(exist_ok=True)
    maker = make_zip if ext == ".zip" else make_tar_gz
    return maker(tmp / "A" / f"x{ext}", a, **(over_a or {})), maker(tmp / "B" / f"x{ext}", b, **(over_b or {}))


def only(c: Comparison) -> list[tuple[str, str | None, str, str | None]]:
    return [(d.kind, d.member, d.attribute, d.cause) for f in c.files for d in f.differences]


def test_identical_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair(tmp_path, BASE, BASE)
    assert main(["diff", str(a), str(b)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "identical"


def test_timezone(tmp_path: Path) -> None:
    shifted = (2021, 3, 4, 19, 0, 0)  # +9 h, as Asia/Tokyo local time would be
    a, b = pair(tmp_path, BASE, BASE, over_b={"pkg/__init__.py:date_time": shifted})
    assert only(compare_paths(a, b)) == [("attribute", "pkg/__init__.py", "date_time", causes.TIMEZONE)]


def test_umask(tmp_path: Path) -> None:
    # A umask sets the bits on every file the build writes: two members of B have them.
    over = {"pkg/info.py:mode": 0o664, "pkg-1.0.dist-info/WHEEL:mode": 0o664}
    a, b = pair(tmp_path, BASE, BASE, ".tar.gz", over_b=over)
    assert sorted(only(compare_paths(a, b)), key=str) == [
        ("attribute", "pkg-1.0.dist-info/WHEEL", "mode", causes.UMASK),
        ("attribute", "pkg/info.py", "mode", causes.UMASK),
    ]
    # One member alone with them: no umask did that (a file's own mode, or its writer's).
    a, b = pair(tmp_path, BASE, BASE, ".tar.gz", over_b={"pkg/info.py:mode": 0o664})
    assert only(compare_paths(a, b)) == [("attribute", "pkg/info.py", "mode", None)]


def test_build_path(tmp_path: Path) -> None:
    b_members = [
        BASE[0],
        ("pkg/info.py", BASE[1][1].replace(b"/tmp/build-a/src", b"/home/ci/work/deep/src")),
        BASE[2],
    ]
    a, b = pair(tmp_path, BASE, b_members)
    c = compare_paths(a, b)
    [d] = c.files[0].differences
    assert (d.kind, d.member, d.cause) == ("content", "pkg/info.py", causes.BUILD_PATH)
    assert "/tmp/build-a/src/pkg" in d.evidence and "/home/ci/work/deep/src/pkg" in d.evidence
    assert d.detail.startswith("--- a/pkg/info.py")


RECORD_LINES = [
    b"pkg/discovery.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,10",
    b"pkg/crt/__init__.py,sha256=frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN_XKdLCPjaYaY,0",
    b"pkg/crt/util.py,sha256=bO4ayfE4sjFl0UW4IbH_xbkoiTCF5bl4pnj6mvY4n8k,31",
    b"pkg-1.0.dist-info/RECORD,,",
]
RECORD = "pkg-1.0.dist-info/RECORD"


def test_reordered_record_lines_are_ordering_inside_a_file_not_build_path(tmp_path: Path) -> None:
    # A has 'pkg/discovery.py' where B has 'pkg/crt/__init__.py': the same lines, reordered.
    # The first differing byte sits inside two relative paths: that is no evidence of a build path.
    swapped = [RECORD_LINES[1], RECORD_LINES[0], *RECORD_LINES[2:]]
    a, b = pair(tmp_path, [(RECORD, b"\n".join(RECORD_LINES) + b"\n")], [(RECORD, b"\n".join(swapped) + b"\n")])
    [d] = compare_paths(a, b).files[0].differences
    assert (d.member, d.cause) == (RECORD, causes.HASH_ORDER), d.evidence
    assert "same 4 lines in another order" in d.evidence


def test_a_changed_relative_path_names_no_cause(tmp_path: Path) -> None:
    renamed = [RECORD_LINES[0].replace(b"discovery", b"discover"), *RECORD_LINES[1:]]
    a, b = pair(tmp_path, [(RECORD, b"\n".join(RECORD_LINES))], [(RECORD, b"\n".join(renamed))])
    [d] = compare_paths(a, b).files[0].differences
    assert d.cause is None, d.evidence


@pytest.mark.parametrize(
    ("a", "b", "cause"),
    [
        (b"src = '/tmp/build-a/src/pkg'\n", b"src = '/home/ci/work/src/pkg'\n", causes.BUILD_PATH),
        (b'"/build/pkg-1.0/src/x.c"', b'"/root/rpmbuild/BUILD/x.c"', causes.BUILD_PATH),
        (b"at C:\\Users\\ci\\src\\x.py\n", b"at D:\\a\\x\\src\\x.py\n", causes.BUILD_PATH),
        (b"see /scratch/u1/b/pkg\n", b"see /scratch/u2/b/pkg\n", causes.BUILD_PATH),
        # A relative path, a one-component path, a URL: no evidence of where the build ran.
        (b"pkg/discovery.py,,\n", b"pkg/crt/__init__.py,,\n", None),
        (b"x = '/a'\n", b"x = '/b'\n", None),
        (b"https://example.org/one/two\n", b"https://example.org/three/four\n", None),
    ],
)
def test_build_path_needs_an_absolute_build_like_path(a: bytes, b: bytes, cause: str | None) -> None:
    assert causes.explain_content("pkg/x.py", a, b)[0] == cause


def test_reordered_lines_of_a_truncated_head_name_no_order(tmp_path: Path) -> None:
    # Only the first bytes of a large member are read: equal line multisets there prove nothing.
    a, b = b"one\ntwo\n", b"two\none\n"
    assert causes.explain_content("pkg/x.txt", a, b)[0] == causes.HASH_ORDER
    assert causes.explain_content("pkg/x.txt", a, b, complete=False)[0] is None


def test_a_wheel_built_on_windows_is_named_so() -> None:
    # sniffio 1.3.1's METADATA was written on Windows: the same text with CRLF line endings
    lf = b"Metadata-Version: 2.1\nName: sniffio\n\nbody\n"
    cause, evidence = causes.explain_content("sniffio-1.3.1.dist-info/METADATA", lf.replace(b"\n", b"\r\n"), lf)
    assert cause == causes.OTHER_OS and "A with CRLF" in evidence
    # CRLF on both sides, or another text: not this cause
    assert causes.explain_content("x.txt", b"a\r\nb\r\n", b"a\r\nc\r\n")[0] != causes.OTHER_OS
    assert causes.explain_content("x.txt", b"a\r\nb\r\n", b"a\nc\n")[0] != causes.OTHER_OS
    ctx = causes.Context(0.0, 0.0)
    assert causes.explain_attribute("create_system", 0, 3, ctx)[0] == causes.OTHER_OS  # dunamai 1.23.0
    assert causes.explain_attribute("create_system", 3, 1, ctx)[0] == causes.ZIP_TOOL


def test_clock(tmp_path: Path) -> None:
    now = int(time.time())
    a, b = pair(tmp_path, BASE, BASE, ".tar.gz", over_b={"pkg/__init__.py:mtime": now})
    assert only(compare_paths(a, b)) == [("attribute", "pkg/__init__.py", "mtime", causes.CLOCK)]


def test_gzip_header(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    a = make_tar_gz(tmp_path / "A" / "x.tar.gz", BASE)
    b = make_tar_gz(tmp_path / "B" / "x.tar.gz", BASE, gz_mtime=int(time.time()), gz_name="x.tar")
    got = {(d.attribute, d.cause) for d in compare_paths(a, b).files[0].differences}
    assert got == {("gzip.mtime", causes.CLOCK), ("gzip.name", causes.GZIP_NAME)}


def test_backend_version(tmp_path: Path) -> None:
    newer = [BASE[0], BASE[1], (BASE[2][0], BASE[2][1].replace(b"0.41.0", b"0.42.0"))]
    a, b = pair(tmp_path, BASE, newer)
    [d] = compare_paths(a, b).files[0].differences
    assert (d.member, d.cause) == ("pkg-1.0.dist-info/WHEEL", causes.BACKEND_VERSION)
    assert "0.41.0" in d.evidence and "0.42.0" in d.evidence


def test_file_ordering(tmp_path: Path) -> None:
    a, b = pair(tmp_path, BASE, list(reversed(BASE)))
    assert only(compare_paths(a, b)) == [("order", None, "member order", causes.FILE_ORDER)]


def test_hash_seed_order_inside_a_file(tmp_path: Path) -> None:
    b_members = [
        BASE[0],
        ("pkg/info.py", BASE[1][1].replace(b"alpha,bravo,charlie", b"charlie,alpha,bravo")),
        BASE[2],
    ]
    a, b = pair(tmp_path, BASE, b_members)
    assert only(compare_paths(a, b)) == [("content", "pkg/info.py", "content", causes.HASH_ORDER)]


def test_owner(tmp_path: Path) -> None:
    a, b = pair(
        tmp_path,
        BASE,
        BASE,
        ".tar.gz",
        over_b={"pkg/__init__.py:uid": 1000, "pkg/__init__.py:uname": "builder"},
    )
    got = {(d.attribute, d.cause) for d in compare_paths(a, b).files[0].differences}
    assert got == {("uid", causes.BUILD_USER), ("uname", causes.BUILD_USER)}


def test_zip_fields(tmp_path: Path) -> None:
    ut = b"UT\x05\x00\x01" + int(time.time()).to_bytes(4, "little")
    a, b = pair(
        tmp_path,
        BASE,
        BASE,
        over_b={
            "pkg/__init__.py:extra": ut,
            "pkg/__init__.py:create_system": 0,
            "pkg-1.0.dist-info/WHEEL:compress_type": zipfile.ZIP_STORED,
        },
    )
    got = {(d.member, d.attribute, d.cause) for d in compare_paths(a, b).files[0].differences}
    assert ("pkg/__init__.py", "extra", causes.CLOCK) in got
    assert ("pkg/__init__.py", "create_system", causes.OTHER_OS) in got
    assert ("pkg-1.0.dist-info/WHEEL", "compress_type", causes.ZIP_TOOL) in got


def test_added_removed_and_binary(tmp_path: Path) -> None:
    a_members = [*BASE, ("pkg/blob.bin", b"\x00\x01\x02" * 10), ("pkg/gone.py", b"")]
    b_members = [
        *BASE,
        ("pkg/blob.bin", b"\x00\x01\x02" * 5 + b"\xff" + b"\x00\x01\x02" * 5),
        ("pkg/new.py", b"x"),
    ]
    a, b = pair(tmp_path, a_members, b_members)
    diffs = {(d.kind, d.member): d for d in compare_paths(a, b).files[0].differences}
    assert ("removed", "pkg/gone.py") in diffs and ("added", "pkg/new.py") in diffs
    assert diffs[("content", "pkg/blob.bin")].detail == "binary: 30 vs 31 bytes, first difference at offset 15"


def test_summary_counts_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair(tmp_path, BASE, BASE, ".tar.gz", over_b={"pkg/info.py:mode": 0o664, "pkg/__init__.py:mode": 0o664})
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2 of 3 members differ"
    assert "likely causes: umask (2)" in out[2]


def test_dist_folders_pair_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _b = pair(tmp_path, BASE, BASE)
    shutil.copy(a, tmp_path / "A" / "y.zip")
    make_zip(tmp_path / "B" / "z.zip", BASE)
    assert main(["diff", str(tmp_path / "A"), str(tmp_path / "B")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "0 of 1 paired files differ, 1 only in A, 1 only in B"
    assert "only in A: y.zip" in out and "only in B: z.zip" in out


def test_json_matches_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b_members = [BASE[0], ("pkg/info.py", BASE[1][1].replace(b"build-a", b"build-b")), BASE[2]]
    over = {"pkg/__init__.py:mode": 0o664, "pkg-1.0.dist-info/WHEEL:mode": 0o664}
    a, b = pair(tmp_path, BASE, b_members, over_b=over)
    assert main(["diff", "--json", str(a), str(b)]) == 1
    data = json.loads(capsys.readouterr().out)
    jsonschema.validate(data, SCHEMA)
    assert data["summary"] == "3 of 3 members differ"
    assert {d["cause"] for d in data["files"][0]["differences"]} == {causes.UMASK, causes.BUILD_PATH}
    identical = to_json(compare_paths(a, a))
    jsonschema.validate(identical, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**identical, "unexpected": 1}, SCHEMA)


@pytest.mark.parametrize("case", ["missing", "kinds", "corrupt", "file-vs-dir"])
def test_bad_input_one_line_exit_2(case: str, tmp_path: Path) -> None:
    a, b = pair(tmp_path, BASE, BASE)
    if case == "missing":
        b = tmp_path / "nope.zip"
    elif case == "kinds":
        b = make_tar_gz(tmp_path / "B" / "t.tar.gz", BASE)
    elif case == "corrupt":
        b.write_bytes(b.read_bytes()[: b.stat().st_size // 2])
    else:
        b = tmp_path / "B"
    r = run([DETPACK, "diff", a, b])
    assert r.code == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr


def test_real_wheel_rezipped_by_python_m_zipfile(tmp_path: Path) -> None:
    wheel = sorted((ROOT / ".wheelhouse").glob("hatchling-*.whl"))[0]
    tree = tmp_path / "tree"
    subprocess.run([sys.executable, "-m", "zipfile", "-e", str(wheel), str(tree)], check=True)
    rezipped = tmp_path / "re" / wheel.name
    rezipped.parent.mkdir()
    with zipfile.ZipFile(wheel) as zf:
        tops = list(dict.fromkeys(n.split("/")[0] for n in zf.namelist()))
    # `python -m zipfile -c` takes paths: give it the wheel's top-level entries.
    subprocess.run([sys.executable, "-m", "zipfile", "-c", str(rezipped), *tops], check=True, cwd=tree)
    full = compare_paths(wheel, rezipped)
    kinds = {d.kind for f in full.files for d in f.differences}
    assert not full.identical and kinds <= {"attribute", "order", "header"}, kinds
    assert compare_paths(wheel, rezipped, content_only=True).identical


@pytest.mark.slow
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    b_members = [BASE[0], ("pkg/info.py", BASE[1][1].replace(b"build-a", b"build-b") * 20), BASE[2]]
    a, b = pair(tmp_path, BASE, b_members, ".tar.gz", over_b={"pkg/__init__.py:mode": 0o664})
    report = tmp_path / "report.html"
    assert main(["diff", str(a), str(b), "--html", str(report), "-q"]) == 1
    page = report.read_text()
    assert "<script" not in page and "http" not in page.split("</style>")[1]  # self-contained
    shot = tmp_path / "shot.png"
    assert 'id="summary">2 of 3 members differ' in chromium_dom(report, tmp_path / "profile")
    subprocess.run(
        [*headless_chromium(tmp_path / "profile"), f"--screenshot={shot}", "--window-size=1200,900", report.as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000
    if keep := os.environ.get("DETPACK_KEEP_SCREENSHOT"):
        shutil.copy(shot, keep)


@pytest.mark.slow
def test_detpack_outputs_versus_python_m_build(tmp_path: Path, wheelhouse: Path) -> None:
    # A real pair: python -m build twice under different umask; diff names umask.
    from conftest import FIXTURES

    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "SOURCE_DATE_EPOCH": "1614852000"}
    outs = []
    for label, umask in (("a", 0o022), ("b", 0o002)):
        src = materialize(FIXTURES / "setuptools-basic", tmp_path / label / "src", umask)
        r = run([sys.executable, "-m", "build", "-w", src, "-o", tmp_path / f"out-{label}"], env=env, umask=umask)
        assert r.code == 0, r.stderr
        outs.append(tmp_path / f"out-{label}")
    r = run([DETPACK, "diff", *outs])
    assert r.code == 1
    assert "umask" in r.stdout.splitlines()[2]


@pytest.mark.parametrize("kind", ["wheel", "tar.gz"])
def test_same_members_compressed_otherwise_is_a_difference(kind: str, tmp_path: Path) -> None:
    """Byte truth: equal members with other compressed bytes (another deflate level, as another zlib
    would give) are not identical; the cause is named in text, JSON and HTML; --content-only agrees."""
    text = b"".join(b"line %d of a module that compresses differently at each level\n" % i for i in range(400))
    members = [("pkg/__init__.py", text), ("pkg/data.txt", text[::-1])]
    if kind == "wheel":
        a, b = tmp_path / "a" / "p-1.0-py3-none-any.whl", tmp_path / "b" / "p-1.0-py3-none-any.whl"
        for path, level in ((a, 1), (b, 9)):
            path.parent.mkdir()
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
                for name, data in members:
                    zi = zipfile.ZipInfo(name, OLD)
                    zi.external_attr = 0o100644 << 16
                    zi.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(zi, data, compresslevel=level)
    else:
        a, b = tmp_path / "a" / "p-1.0.tar.gz", tmp_path / "b" / "p-1.0.tar.gz"
        plain = make_tar_gz(tmp_path / "plain.tar.gz", members)
        tar = gzip.decompress(plain.read_bytes())
        for path, level in ((a, 1), (b, 9)):
            path.parent.mkdir()
            path.write_bytes(gzip.compress(tar, compresslevel=level, mtime=0))
    assert a.read_bytes() != b.read_bytes()  # the perturbation took
    r = run([DETPACK, "diff", a, b])
    assert r.code == 1, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "same members, different compressed bytes", r.stdout
    # a zip says nothing of its deflate level: the bytes are the evidence; gzip's header has a level flag
    cause = "compression implementation, version or level" if kind == "wheel" else "compression level or zlib version"
    assert f"likely causes: {cause} (1)" in r.stdout, r.stdout
    data = json.loads(run([DETPACK, "diff", a, b, "--json"]).stdout)
    assert data["identical"] is False and data["summary"] == "same members, different compressed bytes"
    [diff] = data["files"][0]["differences"]
    assert diff["cause"] == cause, diff
    report = tmp_path / "report.html"
    assert run([DETPACK, "diff", a, b, "--html", report, "-q"]).code == 1
    assert "same members, different compressed bytes" in report.read_text()
    assert run([DETPACK, "diff", a, b, "--content-only"]).code == 0  # the same content, as before
