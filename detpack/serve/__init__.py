"""``detpack store serve``: a read-only dashboard of one store (environments, lineage, the log).

``model`` reads what pages show from a store (pure values); ``closure`` reads the closure reports
it holds (an item's closure bar, a report's files by state, a dependency's release history);
``app`` renders them with Jinja2 templates (``templates/``) and serves them on the standard
library's HTTP server.
"""

from __future__ import annotations

from detpack.serve.app import Dashboard, Response, bind, index_finder

__all__ = ["Dashboard", "Response", "bind", "index_finder"]
