"""What commands list: ``build`` names every file it wrote, ``store log`` keeps its columns aligned."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from conftest import DETPACK, FIXTURES, materialize, run


@pytest.mark.slow
def test_build_lists_every_file_it_wrote(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    out = tmp_path / "out"
    r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "-q", "--sbom"])
    assert r.code == 0, r.stderr
    listed = {Path(line.split("  ")[0]) for line in r.stdout.splitlines() if "  " in line}
    written = set(out.iterdir())
    assert {p.name for p in written} >= {"fx_flit-1.0.0.build.log.gz", "fx_flit-1.0.0.provenance.json"}
    assert listed == written, (sorted(listed), sorted(written))


class _Entries:
    """A store as ``store log`` reads it: its entries (the renderer under test needs nothing else)."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self._entries = entries

    def entries(self) -> list[dict[str, Any]]:
        return self._entries


def test_store_log_columns_align_whatever_the_entry_type(capsys: pytest.CaptureFixture[str]) -> None:
    from detpack.cli._output import Output
    from detpack.cli.store import _log

    when = "2026-12-07T05:00:00Z"
    entries = [
        {"type": "init", "time": when, "user": "ci", "origin": "detpack.example/store", "keyid": "ab" * 32},
        {"type": "push", "time": when, "author": "release-bot", "name": "a-1.0.whl", "digest": "cd" * 32},
        {"type": "attestation", "time": when, "user": "ci", "name": "a-1.0.rebuild.json", "digest": "ef" * 32},
        {"type": "promote", "time": when, "user": "ci", "env": "prod", "digest": "cd" * 32},
    ]
    assert _log(_Entries(entries), argparse.Namespace(json=False), Output()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    type_at = {line.index(f" {e['type']} ") for line, e in zip(lines, entries, strict=True)}
    assert len(type_at) == 1, lines  # the type column starts at one offset
    heads = ("store detpack.example", "a-1.0.whl", "a-1.0.rebuild.json", "sha256:")
    summary_at = {line.index(head) for line, head in zip(lines, heads, strict=True)}
    assert len(summary_at) == 1, lines  # and so does the summary, after the widest type ("attestation")
