"""``detpack store serve``: a read-only dashboard of one store (environments, lineage, the log).

``model`` reads what pages show from a store (pure values); ``app`` renders them with Jinja2
templates (``templates/``) and serves them on the standard library's HTTP server.
"""

from __future__ import annotations

from detpack.serve.app import Dashboard, Response, bind, index_finder

__all__ = ["Dashboard", "Response", "bind", "index_finder"]
