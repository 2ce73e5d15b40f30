"""What ``rebuild --pypi`` replays of a publisher who had no SOURCE_DATE_EPOCH: the clock in the
files the build writes (a preload: files written since the rebuild started report the publisher's
instant; older files keep their own), the umask, and a zone with summer time."""

from __future__ import annotations

import calendar
import datetime as dt
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conftest import DETPACK, FIXTURES, materialize, run, unavailable
from detpack.build.workspace import unpack_sdist
from detpack.verify import filetimes
from detpack.verify.publisher import faketime_library, publisher_clock, publisher_umask, sdist_modes_kept

PAST = 1_577_836_800  # 2020-01-01 00:00:00 UTC
OLDER = 1_262_304_000  # 2010-01-01 00:00:00 UTC

_STAT_ALL = """
import os, sys
new, old, between = sys.argv[1], sys.argv[2], sys.argv[3]
with open(new, "w") as f:
    f.write("x")
fd = os.open(new, os.O_RDONLY)
entry = next(e for e in os.scandir(os.path.dirname(new)) if e.path == new)
print(int(os.stat(new).st_mtime), int(os.lstat(new).st_mtime), int(os.fstat(fd).st_mtime),
      int(entry.stat().st_mtime), int(os.stat(old).st_mtime), int(os.stat(new).st_ctime),
      int(os.stat(between).st_mtime))
"""


def _compiler() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        unavailable("no C compiler to build the file-time preload (apt-get install gcc; .ci/run does)")


def test_new_files_show_the_given_instant_and_old_ones_their_own(tmp_path: Path) -> None:
    _compiler()
    library = filetimes.library(tmp_path / "cache")
    assert library.is_file() and filetimes.library(tmp_path / "cache") == library  # built once
    old = tmp_path / "old.txt"
    old.write_text("old")
    os.utime(old, (OLDER, OLDER))
    between = tmp_path / "cached.txt"  # from before the rebuild, newer than the publisher's instant
    between.write_text("cached")
    os.utime(between, (time.time() - 100, time.time() - 100))
    argv = [sys.executable, "-c", _STAT_ALL, tmp_path / "new.txt", old, between]
    since = int(time.time()) - 1
    plain = run(argv)
    assert plain.code == 0, plain.stderr
    assert all(int(v) >= since for v in plain.stdout.split()[:4]), plain.stdout  # the kernel's time: today
    faked = run(argv, env={"LD_PRELOAD": str(library), **filetimes.variables(since, PAST)})
    assert faked.code == 0, faked.stderr
    new_m, new_l, new_f, new_e, old_m, new_c, between_m = (int(v) for v in faked.stdout.split())
    assert (new_m, new_l, new_f, new_e, new_c) == (PAST,) * 5  # stat, lstat, fstat, scandir; ctime too
    assert old_m == OLDER  # older than the publisher's instant: as it is
    assert between_m == PAST - 2  # just before it: nothing the build writes looks older than what it read
    # coreutils (statx) see the same
    shown = run(
        ["stat", "-c", "%Y", tmp_path / "new.txt"], env={"LD_PRELOAD": str(library), **filetimes.variables(since, PAST)}
    )
    assert shown.stdout.strip() == str(PAST), shown.stdout + shown.stderr


def test_the_order_of_writes_is_kept_below_the_second(tmp_path: Path) -> None:
    # make and ninja compare nanosecond times: a file written later must still look newer
    _compiler()
    library = filetimes.library(tmp_path / "cache")
    code = (
        "import os, sys, time\n"
        "a, b = sys.argv[1], sys.argv[2]\n"
        "open(a, 'w').close(); time.sleep(0.05); open(b, 'w').close()\n"
        "print(os.stat(a).st_mtime_ns, os.stat(b).st_mtime_ns)\n"
    )
    env = {"LD_PRELOAD": str(library), **filetimes.variables(int(time.time()) - 1, PAST)}
    r = run([sys.executable, "-c", code, tmp_path / "a", tmp_path / "b"], env=env)
    first, second = (int(v) for v in r.stdout.split())
    assert first // 10**9 == second // 10**9 == PAST, r.stdout + r.stderr
    assert first < second  # 50 ms later: 50 us later below the second


def test_a_file_the_publisher_wrote_at_another_instant_shows_that_one(tmp_path: Path) -> None:
    # pygsheets 2.0.6: egg_info wrote top_level.txt a zip time before bdist_wheel stamped the rest
    _compiler()
    library = filetimes.library(tmp_path / "cache")
    (tmp_path / "x.egg-info").mkdir()
    code = (
        "import os, sys\n"
        "egg, other = sys.argv[1], sys.argv[2]\n"
        "open(egg + '/top_level.txt', 'w').close(); open(other, 'w').close()\n"
        "os.chdir(egg)\n"
        "d = os.open('.', os.O_RDONLY); f = os.open('top_level.txt', os.O_RDONLY)\n"
        "print(int(os.stat('top_level.txt').st_mtime), int(os.stat('top_level.txt', dir_fd=d).st_mtime),\n"
        "      int(os.fstat(f).st_mtime), int(os.stat(other).st_mtime))\n"
    )
    each = [(PAST - 2, ".egg-info/top_level.txt"), (PAST - 4, "/nothing/here.py")]
    env = {"LD_PRELOAD": str(library), **filetimes.variables(int(time.time()) - 1, PAST, each)}
    argv = [sys.executable, "-c", code, tmp_path / "x.egg-info", tmp_path / "other.txt"]
    r = run(argv, env=env)
    assert r.code == 0, r.stderr
    # a relative path, one against a directory's descriptor, a file's descriptor: its own instant
    assert [int(v) for v in r.stdout.split()] == [PAST - 2, PAST - 2, PAST - 2, PAST], r.stdout
    shown = run(["stat", "-c", "%Y", tmp_path / "x.egg-info" / "top_level.txt"], env=env)
    assert shown.stdout.strip() == str(PAST - 2), shown.stdout + shown.stderr  # statx (coreutils)
    # the perturbation: without the table, the one instant for every file written
    r = run(argv, env={"LD_PRELOAD": str(library), **filetimes.variables(int(time.time()) - 1, PAST)})
    assert [int(v) for v in r.stdout.split()] == [PAST] * 4, r.stdout + r.stderr
    # a file from before the rebuild keeps its own time, whatever its path's end
    old = tmp_path / "y.egg-info" / "top_level.txt"
    old.parent.mkdir()
    old.write_text("")
    os.utime(old, (OLDER, OLDER))
    shown = run(["stat", "-c", "%Y", old], env=env)
    assert shown.stdout.strip() == str(OLDER), shown.stdout + shown.stderr


def test_without_a_setting_nothing_changes(tmp_path: Path) -> None:
    _compiler()
    library = filetimes.library(tmp_path / "cache")
    old = tmp_path / "old.txt"
    old.write_text("old")
    os.utime(old, (OLDER, OLDER))
    for setting in ({}, {filetimes.VARIABLE: "soon"}, {filetimes.VARIABLE: "1 2 3"}):
        r = run(
            [sys.executable, "-c", _STAT_ALL, tmp_path / "new.txt", old, old],
            env={"LD_PRELOAD": str(library), **setting},
        )
        assert r.code == 0, r.stderr
        values = [int(v) for v in r.stdout.split()]
        assert values[4] == OLDER and values[0] > PAST, (setting, r.stdout)


def test_no_compiler_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no gcc
    with pytest.raises(filetimes.Unavailable, match="no C compiler"):
        filetimes.library(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_failed_compile_is_said_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/bin/false")
    with pytest.raises(filetimes.Unavailable, match=r"could not build filetimes\.c"):
        filetimes.library(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # no half-built library left to be loaded


@pytest.mark.slow
def test_a_setuptools_release_built_without_epoch_is_rebuilt_byte_for_byte(wheelhouse: Path, tmp_path: Path) -> None:
    """A real setuptools release built the way most publishers build (``python -m build``, no
    SOURCE_DATE_EPOCH): its .dist-info members carry the moment it was built. Rebuilt later, only
    the file-time preload makes them carry that moment again."""
    _compiler()
    if faketime_library() is None:
        unavailable("libfaketime is not installed (apt-get install faketime; .ci/run does)")
    links = tmp_path / "links"
    # a publisher whose umask is 0002 (group-writable files, as on many CI images)
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o002)
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "TZ": "UTC"}
    published = run([sys.executable, "-m", "build", "-o", links, src], env=offline, umask=0o002, timeout=900)
    assert published.code == 0, published.stdout + published.stderr
    wheel = links / "fx_setuptools_basic-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        stamps = {
            zi.date_time for zi in zf.infolist() if zi.filename.startswith("fx_setuptools_basic-1.0.0.dist-info/")
        }
        modes = {zi.filename.rsplit("/", 1)[-1]: zi.external_attr >> 16 for zi in zf.infolist()}
    assert len(stamps) == 1, stamps  # built in one moment
    # written afresh under umask 0002 (WHEEL, the module), copied from a data-filtered sdist (package data)
    assert (modes["WHEEL"], modes["__init__.py"], modes["greeting.txt"]) == (0o100664, 0o100664, 0o100644), modes
    built_at = calendar.timegm((*stamps.pop(), 0, 0, 0))  # bdist_wheel writes UTC
    while time.time() < built_at + 4:  # zip times count in 2 s: a later build stamps another time
        time.sleep(0.5)

    def rebuild(keep: Path, **env: str) -> tuple[int, str, str]:
        argv = [DETPACK, "rebuild", "--pypi", "fx-setuptools-basic==1.0.0", "--offline", "-o", keep]
        r = run([*argv, "--find-links", links, "--find-links", wheelhouse], env=env, timeout=900)
        return r.code, r.stdout, r.stderr

    # the perturbation: without the preload (no compiler to build it) the times are today's
    code, out, err = rebuild(tmp_path / "plain", XDG_CACHE_HOME=str(tmp_path / "c1"), CC="/bin/false")
    assert "the file-time preload is unavailable" in err, err
    assert code == 1 and out.splitlines()[0] == "fx-setuptools-basic==1.0.0: 1 content-identical of 1 wheel", out + err
    assert "attributes date_time" in out, out
    code, out, err = rebuild(tmp_path / "timed", XDG_CACHE_HOME=str(tmp_path / "c2"))
    assert "files the build writes stamped at that instant" in err, err
    assert "also with umask 0002 (the published .dist-info/WHEEL is mode 0664)" in err, err
    assert code == 0 and out.splitlines()[0] == "fx-setuptools-basic==1.0.0: 1 byte-identical of 1 wheel", out + err
    assert (tmp_path / "timed" / "rebuilt" / wheel.name).read_bytes() == wheel.read_bytes()
    record = json.loads((tmp_path / "timed" / "rebuilt" / "fx_setuptools_basic-1.0.0.provenance.json").read_text())
    assert record["predicate"]["buildDefinition"]["internalParameters"]["umask"] == "0002"


def test_the_publishers_umask_is_read_from_the_generated_files(tmp_path: Path) -> None:
    def wheel(modes: dict[str, int]) -> Path:
        path = tmp_path / f"w{len(list(tmp_path.iterdir()))}.whl"
        with zipfile.ZipFile(path, "w") as zf:
            for name, mode in modes.items():
                info = zipfile.ZipInfo(name)
                info.external_attr = mode << 16
                zf.writestr(info, b"x")
        return path

    wheel_file, metadata = "p-1.dist-info/WHEEL", "p-1.dist-info/METADATA"
    record = {"p-1.dist-info/RECORD": 0o664}  # the wheel project's fixed mode: not evidence
    # WHEEL is written afresh; METADATA can be a copy of PKG-INFO (modern setuptools: 0644)
    assert publisher_umask(wheel({wheel_file: 0o100664, metadata: 0o100644, **record})) == 0o002
    assert publisher_umask(wheel({wheel_file: 0o100644, **record})) == 0o022
    assert publisher_umask(wheel({wheel_file: 0o100600})) == 0o066
    assert publisher_umask(wheel({metadata: 0o100664})) is None  # no WHEEL: nothing to go by
    assert publisher_umask(wheel({wheel_file: 0o644})) is None  # no file type: a writer's constant
    assert publisher_umask(wheel({wheel_file: 0o100755})) is None


def test_an_sdist_unpacks_with_its_modes_only_when_asked(tmp_path: Path) -> None:
    sdist = tmp_path / "p-1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, mode in (("p-1/a.py", 0o664), ("p-1/run", 0o775), ("p-1/s", 0o4755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 1, mode
            tf.addfile(info, io.BytesIO(b"x"))

    def modes(keep: bool) -> list[int]:
        top = unpack_sdist(sdist, tmp_path / f"u{keep}", sdist, keep)
        return [stat.S_IMODE((top / n).stat().st_mode) for n in ("a.py", "run", "s")]

    assert modes(False) == [0o644, 0o755, 0o755]  # the data filter: group/other write cleared
    assert modes(True) == [0o664, 0o775, 0o755]  # as frontends before extraction filters did (no setuid)


def test_which_unpacking_the_publisher_had_is_read_from_the_copies(tmp_path: Path) -> None:
    sdist = tmp_path / "p-1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name in ("p-1/src/p/__init__.py", "p-1/src/p/data.txt"):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 1, 0o664
            tf.addfile(info, io.BytesIO(b"x"))

    def wheel(*modes: int) -> Path:
        path = tmp_path / f"p-{'-'.join(f'{m:o}' for m in modes)}.whl"
        with zipfile.ZipFile(path, "w") as zf:
            for name, mode in zip(("p/__init__.py", "p/data.txt"), modes, strict=True):
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o100000 | mode) << 16
                zf.writestr(info, b"x")
        return path

    assert sdist_modes_kept(wheel(0o664, 0o664), sdist) is True  # six 1.16.0, h11 0.14.0
    assert sdist_modes_kept(wheel(0o644, 0o644), sdist) is False  # python -m build since 1.0 (the data filter)
    # a module written afresh under umask 0002 beside a data file copied from a data-filtered sdist
    assert sdist_modes_kept(wheel(0o664, 0o644), sdist) is False


def test_a_zone_with_summer_time_is_found(tmp_path: Path) -> None:
    # markdown-it-py 3.0.0 was published from Central Europe: files changed in winter are 1 h ahead
    # in the wheel's zip times, files changed in summer 2 h; one offset cannot say both.
    winter, summer = 1_609_459_200, 1_688_169_600  # 2021-01-01, 2023-07-01 00:00 UTC
    sdist = tmp_path / "p-1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, mtime in (("p/a.py", summer), ("p/b.py", summer), ("p/c.py", summer), ("p/d.py", winter)):
            info = tarfile.TarInfo(f"p-1/{name}")
            info.size, info.mtime = 1, mtime
            tf.addfile(info, io.BytesIO(b"x"))
    wheel = tmp_path / "p-1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, shift in (("p/a.py", 7200), ("p/b.py", 7200), ("p/c.py", 7200), ("p/d.py", 3600)):
            mtime = summer if shift == 7200 else winter
            zf.writestr(zipfile.ZipInfo(name, tuple(time.gmtime(mtime + shift))[:6]), b"x")
        zf.writestr(zipfile.ZipInfo("p-1.dist-info/METADATA", tuple(time.gmtime(summer + 7200 + 60))[:6]), b"x")
    clock = publisher_clock(wheel, sdist)
    assert clock is not None and clock.zone is not None, clock
    zone = ZoneInfo(clock.tz())
    assert zone.utcoffset(dt.datetime(2021, 1, 1)) == dt.timedelta(hours=1)
    assert zone.utcoffset(dt.datetime(2023, 7, 1)) == dt.timedelta(hours=2)
    assert (clock.utc, clock.offset) == (summer + 60, 7200)
    assert clock.describe() == f"clock 2023-07-01 00:01:00 {clock.zone}"
