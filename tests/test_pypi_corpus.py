"""What the rebuild corpus (corpus/top100.txt, corpus/sample100.txt) taught ``rebuild --pypi``, offline:

- a large wheel built without SOURCE_DATE_EPOCH whose generated ``.dist-info`` files were stamped a
  zip time or two apart (awscli's RECORD, written after 8,000 members) was built without an epoch,
  not with one at its newest member's time;
- a published wheel whose data files were gzipped outside the build (botocore: ``X.json`` in the sdist,
  ``X.json.gz`` in the wheel) is said to differ for that, not for "no cause inferred".
"""

from __future__ import annotations

import calendar
import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from detpack.verify import causes
from detpack.verify.compare import compare_files
from detpack.verify.publisher import PublisherClock, wheel_facts


def _wheel(path: Path, members: dict[str, tuple[bytes, tuple[int, int, int, int, int, int]]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (data, when) in members.items():
            zf.writestr(zipfile.ZipInfo(name, when), data)
    return path


WHEEL = b"Wheel-Version: 1.0\nGenerator: setuptools (75.1.0)\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n"


def test_generated_files_stamped_seconds_apart_mean_no_epoch(tmp_path: Path) -> None:
    copied, late = (2026, 11, 5, 16, 59, 26), (2026, 11, 5, 17, 1, 14)
    info = "x-1.dist-info"
    members = {
        "x/__init__.py": (b"", late),
        "x/cli.py": (b"", copied),
        f"{info}/METADATA": (b"Name: x\n", (2026, 11, 5, 17, 1, 22)),
        f"{info}/WHEEL": (WHEEL, (2026, 11, 5, 17, 1, 22)),
        f"{info}/top_level.txt": (b"x\n", (2026, 11, 5, 17, 1, 20)),
        f"{info}/RECORD": (b"", (2026, 11, 5, 17, 1, 24)),  # written last, a zip time later
    }
    assert wheel_facts(_wheel(tmp_path / "x-1-py3-none-any.whl", members)) == ("setuptools (75.1.0)", None)
    # the perturbations: one time for every member is an epoch; generated files hours apart are not a clock's
    same = {n: (d, late) for n, (d, _) in members.items()}
    assert wheel_facts(_wheel(tmp_path / "same.whl", same))[1] == calendar.timegm((*late, 0, 0, 0))
    apart = {**members, f"{info}/RECORD": (b"", (2026, 11, 5, 19, 1, 24))}
    assert wheel_facts(_wheel(tmp_path / "apart.whl", apart))[1] == calendar.timegm((2026, 11, 5, 19, 1, 24, 0, 0, 0))


def test_files_gzipped_outside_the_build_are_named(tmp_path: Path) -> None:
    when = (2026, 12, 2, 16, 19, 16)
    data = b'{"version": "2.0", "operations": {}}\n' * 50
    common = {"botocore/__init__.py": (b"", when), "x-1.dist-info/WHEEL": (WHEEL, when)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    published = _wheel(
        tmp_path / "a" / "x-1-py3-none-any.whl",
        {**common, "botocore/data/s3/service-2.json.gz": (gzip.compress(data, mtime=1796000000), when)},
    )
    rebuilt = _wheel(
        tmp_path / "b" / "x-1-py3-none-any.whl", {**common, "botocore/data/s3/service-2.json": (data, when)}
    )
    result = compare_files(published, rebuilt, published.name, content_only=True)
    assert not result.identical and result.members_differing == 3  # and RECORD, which lists them
    assert result.cause_tally() == [(causes.COMPRESSED_OUTSIDE, 2)]
    said = {d.evidence for d in result.differences if d.cause}
    assert said == {
        "A has botocore/data/s3/service-2.json.gz, the other botocore/data/s3/service-2.json: the same bytes once "
        "decompressed"
    }
    # the perturbation: other bytes once decompressed are no such pair
    (tmp_path / "c").mkdir()
    other = _wheel(
        tmp_path / "c" / "x-1-py3-none-any.whl",
        {**common, "botocore/data/s3/service-2.json.gz": (gzip.compress(data + b"\n"), when)},
    )
    again = compare_files(other, rebuilt, other.name, content_only=True)
    assert again.cause_tally() == [] and all(d.cause is None for d in again.differences)


def test_times_seconds_apart_are_a_clock() -> None:
    ctx = causes.Context(0.0, 0.0)
    cause, why = causes.explain_attribute("date_time", "2026-07-29 06:39:22", "2026-07-29 06:39:20", ctx)
    assert cause == causes.CLOCK and why == "the times are -2 s apart: each a clock's reading during its build"
    # the perturbation: months apart is no such thing
    assert causes.explain_attribute("date_time", "2026-11-02 20:04:00", "2026-09-16 21:48:22", ctx)[0] is None


def test_what_a_metadata_writer_decides_is_named() -> None:
    published = (
        b"Metadata-Version: 2.1\nName: alibabacloud-adb20211201\nVersion: 4.5.1\nPlatform: UNKNOWN\n"
        b'Requires-Dist: isodate>=0.6.1\nRequires-Dist: tomli>=1.1.0; python_version < "3.11"\n\nReadme.\n\n\n'
    )
    rebuilt = (
        b"Metadata-Version: 2.1\nName: alibabacloud_adb20211201\nVersion: 4.5.1\nLicense-File: LICENSE\n"
        b'Requires-Dist: tomli >=1.1.0 ; python_version < "3.11"\nRequires-Dist: isodate >=0.6.1\n\nReadme.\n'
    )
    cause, why = causes.explain_content("x-1.dist-info/METADATA", published, rebuilt)
    assert cause == causes.BACKEND_VERSION and "Platform: UNKNOWN, License-File" in why
    # the perturbations: another requirement, another description
    other = rebuilt.replace(b"isodate >=0.6.1", b"isodate >=0.7")
    assert causes.explain_content("x-1.dist-info/METADATA", published, other)[0] is None
    assert (
        causes.explain_content("x-1.dist-info/METADATA", published, rebuilt.replace(b"Readme.", b"Other."))[0] is None
    )


def test_members_only_the_published_wheel_has_are_told_by_the_sdist(tmp_path: Path) -> None:

    from detpack.verify.compare import Difference, FileComparison
    from detpack.verify.pypi import sdist_causes

    sdist = tmp_path / "x-1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name in ("x-1/pkg/__init__.py", "x-1/pkg/kept.py", "x-1/LICENSE", "x-1/setup.py"):
            tf.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    diffs = (
        Difference("removed", "pkg/stale.py", "presence", 1, None),  # a stale build/lib leftover
        Difference("removed", "pkg/kept.py", "presence", 1, None),  # in the sdist, left out by its build
        Difference("removed", "x-1.dist-info/LICENSE", "presence", 1, None),  # copied by another backend version
        Difference("removed", "x-1.dist-info/NOTICE", "presence", 1, None),
        Difference("content", "x-1.dist-info/RECORD", "content", 1, 2),
    )
    named = sdist_causes(FileComparison("x-1-py3-none-any.whl", "wheel", False, 9, 5, diffs), sdist)
    assert named is not None
    assert [d.cause for d in named.differences] == [
        causes.NOT_IN_SDIST,
        causes.SDIST_LAYOUT,
        causes.BACKEND_VERSION,
        causes.NOT_IN_SDIST,
        None,
    ]


def test_files_the_sdist_build_writes_do_not_make_the_clock_a_fixed_time(tmp_path: Path) -> None:

    from detpack.verify.publisher import publisher_clock

    built = (2026, 12, 1, 17, 52, 16)
    wheel = _wheel(
        tmp_path / "x-1-py3-none-any.whl",
        {"x/__init__.py": (b"", (2026, 12, 1, 17, 51, 56)), "x-1.dist-info/WHEEL": (WHEEL, built)},
    )
    sdist = tmp_path / "x-1.tar.gz"
    later = calendar.timegm((2026, 12, 1, 17, 52, 19, 0, 0, 0))  # the sdist made 3 s after the wheel
    files = {"x-1/x/__init__.py": later - 23, "x-1/PKG-INFO": later, "x-1/setup.cfg": later}
    files["x-1/x.egg-info/SOURCES.txt"] = later
    _sdist(sdist, files)
    clock = publisher_clock(wheel, sdist)
    assert clock is not None and clock.real and clock.utc == calendar.timegm((*built, 0, 0, 0))
    # the perturbation: a source file newer than the wheel's generated files makes it a fixed time
    files["x-1/x/__init__.py"] = later
    _sdist(sdist, files)
    clock = publisher_clock(wheel, sdist)
    assert clock is not None and not clock.real


def _sdist(path: Path, files: dict[str, int]) -> Path:

    with tarfile.open(path, "w:gz") as tf:
        for name, mtime in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            tf.addfile(info, io.BytesIO(b""))
    return path


def test_generated_files_written_at_other_instants_are_each_read(tmp_path: Path) -> None:
    # pygsheets 2.0.6: egg_info wrote top_level.txt (copied into the .dist-info) at 14:17:46, the rest
    # at 14:17:48; keras 3.15.1: bdist_wheel closed the wheel (RECORD, the clock's) a zip time later
    from detpack.verify.publisher import publisher_clock

    built = (2022, 11, 30, 14, 17, 48)
    utc = calendar.timegm((*built, 0, 0, 0))
    members = {
        "x/__init__.py": (b"", (2022, 2, 13, 16, 3, 0)),  # the sdist file's time (a copy)
        "x/_version.py": (b"", (2022, 11, 30, 14, 17, 40)),  # written by the build, 8 s before
        "x/held.py": (b"", (2022, 11, 30, 14, 17, 42)),  # the sdist holds it: a rebuild copies its time
        "x-1.dist-info/METADATA": (b"", built),
        "x-1.dist-info/WHEEL": (WHEEL, built),
        "x-1.dist-info/top_level.txt": (b"x\n", (2022, 11, 30, 14, 17, 46)),
        "x-1.dist-info/RECORD": (b"", (2022, 11, 30, 14, 17, 50)),
    }
    files = {"x-1/x/__init__.py": utc - 9 * 86400 * 30, "x-1/x/held.py": utc - 6, "x-1/PKG-INFO": utc - 77}
    sdist = _sdist(tmp_path / "x-1.tar.gz", files)
    clock = publisher_clock(_wheel(tmp_path / "x-1-py3-none-any.whl", members), sdist)
    assert clock is not None and clock.real and clock.utc == utc
    assert set(clock.each) == {
        (utc - 2, ".egg-info/top_level.txt"),
        (utc - 2, ".dist-info/top_level.txt"),
        (utc - 8, "/x/_version.py"),
    }  # not the copies of the sdist's files
    assert clock.closed == utc + 2 and clock.faketime() == "@2022-11-30 14:17:48"
    assert clock.faketime(at_closing=True) == "@2022-11-30 14:17:50"
    # the perturbation: every generated member at one instant: nothing of its own, no later closing
    members = {k: (v[0], built if k.startswith("x-1.dist-info/") else v[1]) for k, v in members.items()}
    members["x/_version.py"] = (b"", (2022, 11, 30, 14, 10, 0))  # minutes before: not this build's step
    clock = publisher_clock(_wheel(tmp_path / "x-1-py3-none-any.whl", members), sdist)
    assert clock is not None and clock.each == () and clock.closed is None


def test_copies_stamped_at_build_time_are_the_publishers_clock(tmp_path: Path) -> None:
    from detpack.verify.pypi import build_time_causes

    built = (2026, 11, 2, 20, 4, 0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    published = _wheel(
        tmp_path / "a" / "x-1-py3-none-any.whl",
        {"x/__init__.py": (b"", built), "x/old.py": (b"", built), "x-1.dist-info/WHEEL": (WHEEL, built)},
    )
    rebuilt = _wheel(
        tmp_path / "b" / "x-1-py3-none-any.whl",
        {
            "x/__init__.py": (b"", (2026, 9, 16, 21, 48, 22)),  # the sdist file's time
            "x/old.py": (b"", (2026, 9, 16, 21, 48, 22)),
            "x-1.dist-info/WHEEL": (WHEEL, built),
        },
    )
    comparison = compare_files(published, rebuilt, published.name)
    assert comparison.cause_tally() == []
    named = build_time_causes(comparison, published)
    assert named is not None and named.cause_tally() == [(causes.CLOCK, 2)]
    # said as such: the sdist's times cannot give the published ones, not "the clock did not stamp them"
    from detpack.cli.rebuild import _explanation
    from detpack.verify.pypi import WheelCheck

    check = WheelCheck("x-1-py3-none-any.whl", "setuptools", None, None, "content-identical", named, "", "")
    said = _explanation(check)[0]
    assert "2 published copies of the sdist's files carry the build's instant" in said, said
    # the perturbation: a published copy with a time of its own (the sdist file's) stays unexplained
    (tmp_path / "c").mkdir()
    other = _wheel(
        tmp_path / "c" / "x-1-py3-none-any.whl",
        {
            "x/__init__.py": (b"", (2026, 5, 1, 10, 0, 0)),
            "x/old.py": (b"", (2026, 9, 16, 21, 48, 22)),
            "x-1.dist-info/WHEEL": (WHEEL, built),
        },
    )
    again = build_time_causes(compare_files(other, rebuilt, other.name), other)
    assert again is not None and again.cause_tally() == []
    check = WheelCheck("x-1-py3-none-any.whl", "setuptools", None, None, "content-identical", again, "", "")
    assert "did not stamp the same times" in _explanation(check)[0]


def test_a_bdist_wheel_metadata_is_rebuilt_under_older_setuptools_caps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detpack.verify import pypibuild, pypireplay
    from detpack.verify.compare import Difference, FileComparison

    def outcome(metadata_differs: bool) -> pypibuild.Outcome:
        member = "x-1.dist-info/METADATA" if metadata_differs else "x-1.dist-info/top_level.txt"
        diff = Difference("content" if metadata_differs else "attribute", member, "content", 1, 2)
        return ("different", FileComparison("x-1-py3-none-any.whl", "wheel", False, 5, 1, (diff,)))

    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    tried: list[str] = []

    def build(rebuild: pypibuild.Rebuild, how: pypibuild.How) -> pypibuild.Built:
        assert how.constraints is not None
        tried.append(how.constraints.read_text())
        (rebuilt / "x-1-py3-none-any.whl").write_text(str(len(tried)))
        return pypibuild.Built(rebuilt / "x-1-py3-none-any.whl", str(len(tried)))

    monkeypatch.setattr(pypibuild, "rebuild_wheel", build)
    monkeypatch.setattr(pypibuild, "judge", lambda published, path: outcome(path.read_text() != "2"))
    rebuild = pypibuild.Rebuild("x==1", tmp_path / "x-1.tar.gz", rebuilt, tmp_path, pypibuild.Fetch(), None, None, None)
    first = pypibuild.Built(rebuilt / "x-1-py3-none-any.whl", "0")
    pins = ("wheel==0.38.4", "setuptools<70.1")
    built, got, how = pypireplay.replay_setuptools(
        rebuild, tmp_path / "x.whl", pypibuild.How(None, None), first, outcome(True), lambda _: None, pins
    )
    assert tried == ["wheel==0.38.4\nsetuptools<64\n", "wheel==0.38.4\nsetuptools<60\n"]
    assert how.setuptools == "<60" and built.sha256 == "2" and not pypireplay.metadata_differs(got)
    # the perturbation: no cap gives the published METADATA: the first rebuild stands, its files put back
    tried.clear()
    monkeypatch.setattr(pypibuild, "judge", lambda published, path: outcome(True))
    (rebuilt / "x-1-py3-none-any.whl").write_text("first")
    built, got, how = pypireplay.replay_setuptools(
        rebuild, tmp_path / "x.whl", pypibuild.How(None, None), first, outcome(True), lambda _: None, pins
    )
    assert len(tried) == len(pypireplay.SETUPTOOLS_CAPS) and how.setuptools is None and built is first
    assert (rebuilt / "x-1-py3-none-any.whl").read_text() == "first"


def test_a_wheel_closed_later_is_rebuilt_with_the_clock_started_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keras 3.15.1: its RECORD (bdist_wheel stamps it with the clock as it closes the wheel) is a zip
    # time after its other generated members; the rebuild's wheel, closed sooner, had them all alike
    from detpack.verify import pypibuild, pypireplay
    from detpack.verify.compare import Difference, FileComparison

    utc = calendar.timegm((2026, 7, 29, 6, 39, 20, 0, 0, 0))
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    tried: list[str] = []

    def build(rebuild: pypibuild.Rebuild, how: pypibuild.How) -> pypibuild.Built:
        tried.append(how.faked["FAKETIME"])
        (rebuilt / "x-1-py3-none-any.whl").write_text(how.faked["FAKETIME"])
        return pypibuild.Built(rebuilt / "x-1-py3-none-any.whl", str(len(tried)))

    def verdict(published: Path, path: Path) -> pypibuild.Outcome:
        if path.read_text() == "@2026-07-29 06:39:22 x0.05":
            return ("byte-identical", None)
        diff = Difference("attribute", "x-1.dist-info/RECORD", "date_time", 1, 2)
        return ("content-identical", FileComparison("x-1-py3-none-any.whl", "wheel", False, 5, 1, (diff,)))

    def settings(closed: int | None) -> object:
        clock = PublisherClock(utc, 0, closed=closed)
        return lambda rebuild, wheel, step: (clock, {"FAKETIME": f"{clock.faketime()} x0.2"}, "libfaketime")

    monkeypatch.setattr(pypibuild, "rebuild_wheel", build)
    monkeypatch.setattr(pypibuild, "judge", verdict)
    monkeypatch.setattr(pypireplay, "publisher_umask", lambda wheel: None)
    monkeypatch.setattr(pypireplay, "sdist_modes_kept", lambda wheel, sdist: False)
    monkeypatch.setattr(pypireplay, "clock_settings", settings(utc + 2))
    rebuild = pypibuild.Rebuild("x==1", tmp_path / "x-1.tar.gz", rebuilt, tmp_path, pypibuild.Fetch(), None, None, None)
    first = pypibuild.Built(rebuilt / "x-1-py3-none-any.whl", "0")
    (rebuilt / "x-1-py3-none-any.whl").write_text("first")
    before = verdict(tmp_path / "x.whl", rebuilt / "x-1-py3-none-any.whl")
    steps: list[str] = []
    how0 = pypibuild.How(None, None)
    _, got, how, _ = pypireplay.replay(rebuild, tmp_path / "x.whl", how0, first, before, steps.append, None)
    assert tried == ["@2026-07-29 06:39:20 x0.2", "@2026-07-29 06:39:22 x0.05"]  # slower: it closes within 2 s
    assert got[0] == "byte-identical" and how.faked["FAKETIME"].startswith("@2026-07-29 06:39:22")
    assert any("the clock started at 06:39:22 UTC (the published RECORD's time" in s for s in steps)
    closing = PublisherClock(utc, 0, each=((utc - 2, ".egg-info/a"), (utc - 2, ".dist-info/a")), closed=utc + 2)
    assert pypireplay.clock_words(closing, how) == ["1 file at its own instant", "clock from 06:39:22 (RECORD's time)"]
    # the perturbation: a RECORD stamped with the others: one rebuild under the clock, as before
    tried.clear()
    monkeypatch.setattr(pypireplay, "clock_settings", settings(None))
    pypireplay.replay(rebuild, tmp_path / "x.whl", how0, first, before, steps.append, None)
    assert tried == ["@2026-07-29 06:39:20 x0.2"]


def test_copies_written_at_build_time_are_no_zone(tmp_path: Path) -> None:
    # sqlalchemy 2.1.9: its 262 modules, written at build time, are 32 minutes newer than the sdist's
    # files; rounded, that reads as UTC+00:30, which no zone has: the zip times are UTC
    from detpack.verify.publisher import publisher_clock

    built = (2026, 11, 16, 21, 16, 16)
    utc = calendar.timegm((*built, 0, 0, 0))
    members = {f"x/m{i}.py": (b"", (2026, 11, 16, 21, 16, 8)) for i in range(5)}
    members["x-1.dist-info/WHEEL"] = (WHEEL, built)
    files = {f"x-1/x/m{i}.py": utc - 32 * 60 - 25 for i in range(5)}
    clock = publisher_clock(_wheel(tmp_path / "x-1-py3-none-any.whl", members), _sdist(tmp_path / "x-1.tar.gz", files))
    assert clock is not None and clock.offset == 0 and clock.utc == utc
    # the perturbation: copies two hours older than their zip times: a zone two hours east wrote them
    files = {f"x-1/x/m{i}.py": utc - 2 * 3600 - 8 for i in range(5)}
    clock = publisher_clock(_wheel(tmp_path / "x-1-py3-none-any.whl", members), _sdist(tmp_path / "x-1.tar.gz", files))
    assert clock is not None and clock.offset == 7200 and clock.utc == utc - 7200
