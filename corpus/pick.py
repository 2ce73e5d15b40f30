"""Pick the rebuild corpus lists from PyPI's download ranking (issue 39).

The ranking is the public dataset hugovk/top-pypi-packages, file
``top-pypi-packages-30-days.min.json`` (downloads over the last 30 days, most downloaded first;
rank 1 is its first row). Two lists are written, one ``NAME==VERSION`` a line, each under a
header that records the ranking file, its ``last_update``, the rank range, the seed, the
selection method and the date the versions were pinned:

- ``top100.txt``: ranks 1..100, in rank order;
- ``sample100.txt``: ``random.Random(SEED).sample(range(101, 5001), 100)`` (ranks 101..5000, so
  disjoint from the top 100), written in rank order.

Each project is pinned to its latest version on PyPI at the time of the run (``info.version`` of
``https://pypi.org/pypi/NAME/json``: the newest release that is not a pre-release, as PyPI
chooses it); that lookup is the only network access. The selection itself depends only on the
ranking file and the seed, so the same file and seed give the same projects.

    python corpus/pick.py RANKING.json [--seed 39] [--out corpus]
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = "hugovk/top-pypi-packages, top-pypi-packages-30-days.min.json"


def ranking(path: Path) -> tuple[str, list[str]]:
    """(last_update, project names in rank order: index 0 is rank 1)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = data["rows"]
    return str(data.get("last_update", "unknown")), [str(row["project"]) for row in rows]


def top(names: list[str], count: int = 100) -> list[tuple[int, str]]:
    return [(rank, names[rank - 1]) for rank in range(1, count + 1)]


def sample(names: list[str], seed: int, first: int = 101, last: int = 5000, count: int = 100) -> list[tuple[int, str]]:
    ranks = sorted(random.Random(seed).sample(range(first, last + 1), count))  # noqa: S311 (a reproducible pick)
    return [(rank, names[rank - 1]) for rank in ranks]


def latest(name: str) -> str:
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=60) as response:
        return str(json.load(response)["info"]["version"])


def write(path: Path, header: list[str], picked: list[tuple[int, str]], versions: dict[str, str]) -> None:
    width = max(len(f"{name}=={versions[name]}") for _, name in picked)
    lines = [f"# {line}" if line else "#" for line in header]
    lines += [f"{name}=={versions[name]}".ljust(width) + f"  # rank {rank}" for rank, name in picked]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ranking", type=Path, help="top-pypi-packages-30-days.min.json")
    parser.add_argument("--seed", type=int, default=39)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)

    last_update, names = ranking(args.ranking)
    top_picked = top(names)
    sample_picked = sample(names, args.seed)
    wanted = sorted({name for _, name in top_picked + sample_picked})
    with ThreadPoolExecutor(8) as pool:
        versions = dict(zip(wanted, pool.map(latest, wanted), strict=True))
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    common = [
        f"Ranking: {SOURCE} (PyPI downloads over 30 days; last_update {last_update}).",
        f"Versions: the latest on PyPI on {today} (info.version of https://pypi.org/pypi/NAME/json).",
        "Regenerate: python corpus/pick.py top-pypi-packages-30-days.min.json --seed 39",
    ]
    write(
        args.out / "top100.txt",
        ["The 100 most downloaded projects on PyPI: ranks 1..100, in rank order.", *common],
        top_picked,
        versions,
    )
    write(
        args.out / "sample100.txt",
        [
            "A random sample of 100 projects from download ranks 101..5000 (disjoint from top100.txt):",
            f"sorted(random.Random({args.seed}).sample(range(101, 5001), 100)), rank 1 being the ranking's first row.",
            *common,
        ],
        sample_picked,
        versions,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
