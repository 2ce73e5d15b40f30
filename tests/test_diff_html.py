"""The ``--html`` report stays readable and small when thousands of members differ.

The summary appears once; differences are grouped by what differs and why; only the first
members are expanded, later ones are collapsed and then only counted; text diffs are capped.
The page is parsed (its structure) and, where chromium is installed, rendered.
"""

from __future__ import annotations

import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import chromium_dom
from detpack.cli import main
from detpack.cli.diff_html import EXPANDED, LISTED, render_html
from detpack.verify.compare import compare_paths

MEMBERS = 2000


class Page(HTMLParser):
    """The parts of the page the tests look at: details elements, pre blocks, the summary."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.details: list[dict[str, str | None]] = []  # attributes of each <details>, in order
        self.pre_lines: list[int] = []  # line count of each <pre>
        self.member_codes_open: int = 0  # member names shown inside an open <details>
        self.summaries: int = 0  # elements with id="summary" or class "summary"
        self._pre: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag not in ("br", "meta"):
            self.stack.append((tag, a))
        if tag == "details":
            self.details.append(a)
        if tag == "pre":
            self._pre = []
        if a.get("id") == "summary" or "summary" in (a.get("class") or "").split():
            self.summaries += 1

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            top, _ = self.stack.pop()
            if top == tag:
                break
        if tag == "pre" and self._pre is not None:
            self.pre_lines.append("".join(self._pre).count("\n") + 1)
            self._pre = None

    def handle_data(self, data: str) -> None:
        if self._pre is not None:
            self._pre.append(data)


def _zip(path: Path, mode: int, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(MEMBERS):
            zi = zipfile.ZipInfo(f"pkg/module_{i:04d}.py", (2021, 3, 4, 10, 0, 0))
            zi.external_attr = (0o100000 | mode) << 16
            body = "".join(f"LINE_{n} = 'value {n} built by {version}'\n" for n in range(60))
            zf.writestr(zi, body)
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("big")
    return _zip(tmp / "A" / "x.zip", 0o644, "one"), _zip(tmp / "B" / "x.zip", 0o664, "two")


def test_a_2000_member_report_is_small_with_one_summary(big: tuple[Path, Path], tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    assert main(["diff", *map(str, big), "--html", str(report), "-q"]) == 1
    page = report.read_text()
    assert len(page.encode()) < 300_000, len(page.encode())
    body = page.split("<body>", 1)[1]
    assert body.count(f"{MEMBERS} of {MEMBERS} members differ") == 1
    parsed = Page()
    parsed.feed(page)
    assert parsed.summaries == 1


def test_members_beyond_the_first_are_collapsed_and_diffs_capped(big: tuple[Path, Path]) -> None:
    page = render_html(compare_paths(*big))
    parsed = Page()
    parsed.feed(page)
    open_members = [d for d in parsed.details if "open" in d and d.get("class") == "member"]
    assert len(open_members) == EXPANDED
    assert any(d.get("class") == "more" and "open" not in d for d in parsed.details)
    assert max(parsed.pre_lines) <= 40
    # Grouped: one row says what differs in how many members, with its cause.
    assert "umask" in page and f"<td>{MEMBERS}</td>" in page
    # Every member is at least counted: the ones not listed are named as a number.
    assert "pkg/module_0000.py" in page and f"pkg/module_{LISTED - 1:04d}.py" in page
    assert f"pkg/module_{LISTED:04d}.py" not in page
    assert f"{MEMBERS - LISTED} more members not listed here" in page and "--json" in page


def test_a_small_report_expands_everything(tmp_path: Path) -> None:
    a = tmp_path / "A" / "x.zip"
    b = tmp_path / "B" / "x.zip"
    for path, version in ((a, "one"), (b, "two")):
        path.parent.mkdir()
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("pkg/a.py", f"V = '{version}'\n")
    page = render_html(compare_paths(a, b))
    parsed = Page()
    parsed.feed(page)
    assert [d.get("class") for d in parsed.details] == ["member"]
    assert "open" in parsed.details[0] and parsed.summaries == 1
    assert "+V = &#x27;two&#x27;" in page


@pytest.mark.slow
def test_the_2000_member_report_renders_in_chromium(big: tuple[Path, Path], tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    main(["diff", *map(str, big), "--html", str(report), "-q"])
    dom = chromium_dom(report, tmp_path / "profile")
    assert f'id="summary">{MEMBERS} of {MEMBERS} members differ' in dom
    assert dom.count('class="member"') == EXPANDED
