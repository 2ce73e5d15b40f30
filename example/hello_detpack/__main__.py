"""Command-line entry point: ``hello-detpack [NAME]`` or ``python -m hello_detpack``."""

from __future__ import annotations

import sys

from hello_detpack import greet


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(greet(args[0] if args else "world"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
