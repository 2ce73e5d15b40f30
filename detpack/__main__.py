"""``python -m detpack``."""

from detpack.cli import main

raise SystemExit(main())
