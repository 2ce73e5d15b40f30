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
import zipfile
from pathlib import Path

from detpack.verify import causes
from detpack.verify.compare import compare_files
from detpack.verify.pypi import _wheel_facts


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
    assert _wheel_facts(_wheel(tmp_path / "x-1-py3-none-any.whl", members)) == ("setuptools (75.1.0)", None)
    # the perturbations: one time for every member is an epoch; generated files hours apart are not a clock's
    same = {n: (d, late) for n, (d, _) in members.items()}
    assert _wheel_facts(_wheel(tmp_path / "same.whl", same))[1] == calendar.timegm((*late, 0, 0, 0))
    apart = {**members, f"{info}/RECORD": (b"", (2026, 11, 5, 19, 1, 24))}
    assert _wheel_facts(_wheel(tmp_path / "apart.whl", apart))[1] == calendar.timegm((2026, 11, 5, 19, 1, 24, 0, 0, 0))


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
