"""The package's layering, read from the source: imports point downward, and nothing imports in a circle.

- ``archive/`` (archive formats, normalizing, tarballs) uses only the shared top-level modules;
- ``provenance/`` uses only ``archive/`` and the shared modules, never ``build/`` or anything above;
- ``build/`` never reaches up into ``verify/``, ``oci/``, ``store/`` or the CLI;
- the shared top-level modules (errors, policy, atomic, digest, wording, git) use only each other;
- only the CLI (and ``__main__``) import the CLI;
- no two modules import each other, directly or around a longer circle, counting imports made
  inside functions and for type checking too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "detpack"
SHARED = {"detpack.errors", "detpack.policy", "detpack.atomic", "detpack.digest", "detpack.wording", "detpack.git"}

#: (importer's folder, imported folders it must not use)
FORBIDDEN = (
    ("detpack.archive", ("detpack.build", "detpack.verify", "detpack.oci", "detpack.store", "detpack.provenance")),
    ("detpack.build", ("detpack.verify", "detpack.oci", "detpack.store")),
    # provenance sits below the build: the statement reads the build's values through protocols
    ("detpack.provenance", ("detpack.build", "detpack.verify", "detpack.oci", "detpack.store", "detpack.cli")),
    # the SBOM is made from a record and its artifacts: it reads provenance and archives, nothing above
    ("detpack.sbom", ("detpack.build", "detpack.verify", "detpack.oci", "detpack.store", "detpack.cli")),
    ("detpack.archive", ("detpack.sbom",)),
    ("detpack.provenance", ("detpack.sbom",)),
    ("detpack.build", ("detpack.sbom",)),
)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the detpack modules it imports (``from detpack import x`` counts as ``detpack.x`` when x is one)."""
    files = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "detpack")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module.split(".")[0] != "detpack":
                    continue
                subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in files]
                targets.update(subs or [module])
                if len(subs) < len(node.names):
                    targets.add(module)
        targets.discard(name)
        graph[name] = {t for t in targets if t in files and t != "detpack"}
    return graph


def _inside(module: str, folder: str) -> bool:
    return module == folder or module.startswith(folder + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(root: Path) -> list[str]:
    graph = import_graph(root)
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            for folder, banned in FORBIDDEN:
                if _inside(module, folder) and any(_inside(target, b) for b in banned):
                    problems.append(f"{module} imports {target}: {folder} must not use {', '.join(banned)}")
            if module in SHARED and target not in SHARED:
                problems.append(f"{module} imports {target}: the shared modules use only each other")
            if _inside(target, "detpack.cli") and not (_inside(module, "detpack.cli") or module == "detpack.__main__"):
                problems.append(f"{module} imports {target}: only the CLI imports the CLI")
    for component in _cycles(graph):
        problems.append("import cycle: " + " <-> ".join(component))
    return problems


def test_the_layers_hold() -> None:
    assert violations(PACKAGE) == []


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph(PACKAGE)
    assert "detpack.errors" in graph["detpack.archive.zip"]  # from detpack.errors import …
    assert "detpack.policy" in graph["detpack.archive.zip"]  # from detpack import policy
    assert "detpack.git" in graph["detpack.archive.tarball"]  # imported inside a function


@pytest.mark.parametrize(
    ("where", "line", "expected"),
    [
        (
            "archive/zip.py",
            "from detpack.verify import compare",
            "detpack.archive.zip imports detpack.verify.compare",
        ),
        ("build/source.py", "from detpack.store import store", "detpack.build.source imports detpack.store.store"),
        ("policy.py", "from detpack.build import config", "detpack.policy imports detpack.build.config"),
        (
            "provenance/reader.py",
            "from detpack.build import config",
            "detpack.provenance.reader imports detpack.build.config",
        ),
        (
            "provenance/statement.py",
            "    from detpack.build import source",
            "detpack.provenance.statement imports detpack.build.source",
        ),
        (
            "archive/entry.py",
            "    from detpack.archive import gz",
            "import cycle: detpack.archive.entry <-> detpack.archive.gz",
        ),
        ("oci/layer.py", "from detpack.cli import _output", "detpack.oci.layer imports detpack.cli._output"),
        (
            "provenance/reader.py",
            "    from detpack.build import lockfile",
            "detpack.provenance.reader imports detpack.build.lockfile",
        ),
    ],
)
def test_a_planted_violation_is_reported(tmp_path: Path, where: str, line: str, expected: str) -> None:
    copy = tmp_path / "detpack"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / where
    body = f"def _planted() -> None:\n{line}\n" if line.startswith(" ") else f"{line}\n"
    target.write_text(target.read_text() + "\n" + body)
    assert violations(PACKAGE) == []
    found = violations(copy)
    assert any(p.startswith(expected) for p in found), found
