"""Every console and Python example in README.md and docs/*.md runs, in order, as a user would type it.

Sybil finds the fenced blocks; each block is one test. The documents run in a fixed order,
README.md and then the pages of ``PAGES`` (later pages use files that earlier ones made: the
wheel of ``make demo``, ``/tmp/flitproj``, the signed build in ``/tmp/flitdist``), each from
top to bottom, in one shared world: a copy of this checkout (its tracked and untracked, not
ignored files, committed to a fresh git repository, so ``example/`` is a subdirectory of a
repository as in a real clone) with ``.venv``, ``.wheelhouse`` and ``.samples`` linked in, and
``/tmp/`` in commands and outputs mapped to a private folder (all but the build root, which stays at
its default ``/tmp/detpack-build``), so examples that pass files from one to the next work
and nothing outside those folders is written.

Rules for a ``console`` block: ``$ `` starts a command (a trailing ``\\`` continues it on
the next line); the lines up to the next command are its expected output, stdout and
stderr together as a terminal shows them. ``…`` matches any text within a line, a line
that is only ``…`` any number of lines, and a trailing ``  # note`` on an output line is
a note for the reader. No output shown means the command prints nothing. A command's
exit code is 0 unless its own comment says ``exit N``. Shell variables set by one command
(``S="--store /tmp/rel"``) are kept for the following ones. ``127.0.0.1:5000`` is a
Distribution registry the test starts. An HTML comment ``<!-- readme-test: network -->``
right before a block marks a block that needs PyPI (run by ``make test-network``; such a
block must stand alone); ``<!-- readme-test: machines -->`` one that needs what ``make
machines`` and ``make toolchain`` prepare (skipped without it, failed in CI). ``$ make test`` is not run inside the
test suite it starts: the test checks that the target runs pytest instead. A failure names the
document and line (``docs/store.md:120``). A page of ``docs/`` missing from ``PAGES`` fails the
suite, so no page goes untested; so does a relative link to a file or heading that is not there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sybil import Document
from sybil.parsers.markdown import CodeBlockParser

from conftest import ROOT, unavailable

README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: The pages of docs/, in the order their examples run (the order README.md lists them in).
PAGES = (
    "build",
    "deps",
    "rebuilder",
    "rebuild",
    "compare",
    "sbom",
    "images",
    "signing",
    "store",
    "errors",
    "performance",
    "library",
    "layout",
)
DOCUMENTS = (README, *(DOCS / f"{name}.md" for name in PAGES))
NETWORK = "<!-- readme-test: network -->"
MACHINES = "<!-- readme-test: machines -->"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NOTE = re.compile(r"\s{2,}#\s.*$")
EXIT = re.compile(r"#.*\bexit (\d+)")
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")


@dataclass(frozen=True)
class Command:
    line: int  #: line of the command in its document
    text: str  #: the command, continuation lines joined
    expected: tuple[str, ...]  #: output lines as the document shows them
    exit_code: int  #: what the command's comment says it exits with (default 0)


@dataclass(frozen=True)
class Block:
    document: str  #: the document's path in the checkout: "README.md", "docs/store.md"
    line: int  #: line of the opening fence in it
    language: str  #: "console" or "python"
    source: str  #: the block's text
    network: bool  #: marked as needing PyPI
    machines: bool = False  #: marked as needing `make machines`

    def commands(self) -> list[Command]:
        commands: list[Command] = []
        lines = self.source.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                raise AssertionError(f"{self.document}:{self.line + 1 + i}: output before any command: {lines[i]!r}")
            start = i
            text = lines[i][2:]
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            i += 1
            expected: list[str] = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            code = EXIT.search(text)
            commands.append(Command(self.line + 1 + start, text, tuple(expected), int(code.group(1)) if code else 0))
        return commands


def document_blocks(path: Path) -> list[Block]:
    name = path.relative_to(ROOT).as_posix()
    document = Document.parse(str(path), CodeBlockParser("console"), CodeBlockParser("python"))
    blocks = []
    for example in document.examples():
        before = document.text[: example.region.start].rstrip().splitlines()
        language = example.region.lexemes["arguments"]
        mark = before[-1] if before else ""
        blocks.append(Block(name, example.line, language, str(example.parsed), mark == NETWORK, mark == MACHINES))
    return blocks


BLOCKS = [block for path in DOCUMENTS if path.is_file() for block in document_blocks(path)]


@dataclass
class World:
    """Where the documents' commands run: a copy of the checkout and a private /tmp."""

    repo: Path
    tmp: Path
    env: dict[str, str]
    registry: str | None = None
    variables: dict[str, str] = field(default_factory=dict)

    def localize(self, text: str) -> str:
        text = re.sub(r"/tmp/(?!detpack-build)", f"{self.tmp}/", text).replace(str(ROOT), str(self.repo))
        if self.registry is not None:
            text = text.replace("127.0.0.1:5000", self.registry)
        return text

    def run(self, command: str) -> tuple[int, str]:
        prelude = "".join(f"{name}={shlex.quote(value)}\n" for name, value in self.variables.items())
        script = prelude + self.localize(command)
        assigned = ASSIGNMENT.match(command)
        if assigned:
            script += f'\nprintf "\\0%s" "${assigned.group(1)}"'
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=self.repo,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
            check=False,
        )
        output = proc.stdout
        if assigned:
            output, _, value = output.rpartition("\0")
            self.variables[assigned.group(1)] = value
        return proc.returncode, ANSI.sub("", output)


def _copy_checkout(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if not src.is_file() or src.is_symlink():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)  # mtimes kept: make's set-up stamp stays newer than its inputs
    git = ["git", "-C", str(dest), "-c", "user.name=readme", "-c", "user.email=readme@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    links = (".venv", ".wheelhouse", ".samples", ".machines", ".toolchain")
    with (dest / ".git" / "info" / "exclude").open("a", encoding="utf-8") as exclude:
        exclude.write("".join(f"/{name}\n" for name in links))  # set up by make, not part of a clone
    for name in links:
        if (ROOT / name).exists():
            (dest / name).symlink_to(ROOT / name)
    subprocess.run([*git, "add", "-A"], check=True)
    dated = {**os.environ, "GIT_AUTHOR_DATE": "2026-11-01T12:00:00Z", "GIT_COMMITTER_DATE": "2026-11-01T12:00:00Z"}
    subprocess.run([*git, "commit", "-qm", "readme world"], check=True, env=dated)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[World]:
    base = tmp_path_factory.mktemp("readme")
    repo, tmp, home = base / "repo", base / "tmp", base / "home"
    for path in (repo, tmp, home):
        path.mkdir()
    _copy_checkout(repo)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
    }
    if "CI" in os.environ:
        env["CI"] = os.environ["CI"]
    registry = None
    if any("127.0.0.1:5000" in path.read_text(encoding="utf-8") for path in DOCUMENTS if path.is_file()):
        registry = request.getfixturevalue("registry")
    yield World(repo, tmp, env, registry)


def match_output(expected: tuple[str, ...], actual: str) -> bool:
    pattern = []
    for line in expected:
        line = NOTE.sub("", line).rstrip()
        if line.strip() == "…":
            pattern.append(r"(?:[^\n]*\n)*?")
            continue
        pattern.append(".*?".join(re.escape(part) for part in line.split("…")) + r"[ \t]*\n")
    lines = [line.rstrip() for line in actual.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    text = "".join(line + "\n" for line in lines)
    return re.fullmatch("".join(pattern), text) is not None


def _params() -> list[object]:
    params = []
    for block in BLOCKS:
        marks = [pytest.mark.network] if block.network else [pytest.mark.slow]
        params.append(pytest.param(block, id=f"{block.document}:{block.line}", marks=marks))
    return params


def test_readme_has_examples() -> None:
    assert sum(block.language == "console" for block in BLOCKS) >= 10
    assert all(block.language in ("console", "python") for block in BLOCKS)


def test_every_docs_page_is_run_and_linked() -> None:
    """A page of docs/ that PAGES does not list would go untested: list it where its examples belong."""
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    listed = sorted(f"{name}.md" for name in PAGES)
    assert pages == listed, f"the pages of docs/ are {pages}, tests/test_readme.py PAGES runs {listed}"
    readme = README.read_text(encoding="utf-8")
    assert [name for name in PAGES if f"](docs/{name}.md)" not in readme] == [], "README.md links every page"
    where = [readme.index(f"](docs/{name}.md)") for name in PAGES]
    assert where == sorted(where), "README.md lists the pages in the order their examples run"


FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives a page's headings: lower case, punctuation but ``-`` and ``_`` dropped,
    each space a ``-``, and ``-1``, ``-2`` … after a repeated one."""
    ids: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        ids.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return ids


@pytest.mark.parametrize("path", [*DOCUMENTS, ROOT / "SECURITY.md"], ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    """A link to another page, or to a heading of one, still points at something after a move."""
    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == [], f"{path.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("block", _params())
def test_readme_example(block: Block, world: World) -> None:
    if block.machines and not (ROOT / ".machines" / "zlib-ng-compat" / "libz.so.1").exists():
        unavailable(f"{block.document}:{block.line} needs `make machines` (.ci/run runs it)")
    if block.machines and not (ROOT / ".toolchain" / "debian12" / "index.json").exists():
        unavailable(f"{block.document}:{block.line} needs `make toolchain` (.ci/run runs it)")
    if block.language == "python":
        code, output = world.run(f".venv/bin/python - <<'PYTHON'\n{block.source}\nPYTHON")
        assert code == 0, f"{block.document}:{block.line}: the Python example failed:\n{output}"
        assert "Traceback" not in output
        return
    for command in block.commands():
        if command.text.split("#")[0].split() == ["make", "test"]:
            dry = subprocess.run(["make", "-n", "test"], cwd=world.repo, capture_output=True, text=True, check=False)
            assert dry.returncode == 0 and "pytest" in dry.stdout, dry.stdout + dry.stderr
            continue
        code, output = world.run(command.text)
        where = f"{block.document}:{command.line}: $ {command.text}"
        assert code == command.exit_code, f"{where}\nexit {code}, {block.document} says {command.exit_code}:\n{output}"
        expected = tuple(world.localize(line) for line in command.expected)
        assert match_output(expected, output), (
            f"{where}\n{block.document} shows:\n" + "\n".join(expected) + f"\n--- but it printed:\n{output}"
        )


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        (("a  sha256:…",), "a  sha256:12ab\n", True),
        (("a  sha256:…",), "b  sha256:12ab\n", False),
        (("first", "…", "last"), "first\nx\ny\nlast\n", True),
        (("first", "…", "last"), "first\nlast\n", True),
        (("first", "last"), "first\nx\nlast\n", False),
        ((), "", True),
        ((), "something\n", False),
        (("done   # a note",), "done\n", True),
    ],
)
def test_output_matching(expected: tuple[str, ...], actual: str, matches: bool) -> None:
    assert match_output(expected, actual) is matches
