"""``detpack store serve``: the read-only dashboard of a store, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

from detpack.cli._output import Output
from detpack.errors import InputError
from detpack.wording import redact


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8321, metavar="P", help="the port (default 8321; 0: any free one)")
    p.add_argument(
        "--host", default="127.0.0.1", metavar="ADDR",
        help="the address to listen on (default 127.0.0.1: this machine); requests must name it in their Host header",
    )  # fmt: skip
    p.add_argument(
        "--key", type=Path, metavar="PUB", help="the store's public key to audit with (default: the one it publishes)"
    )
    p.add_argument(
        "--trust", type=Path, action="append", default=[], metavar="PUB",
        help="a builder's public key: only a signature it verifies is shown as verified, any other keyid as "
        "claimed (repeatable)",
    )  # fmt: skip
    p.add_argument("--refresh", type=float, default=2.0, metavar="S", help="re-read the store at most every S seconds")


def serve(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.provenance.signing import load_public_key
    from detpack.serve import Dashboard, bind, index_finder

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: not a port (0..65535)")
    try:
        ipaddress.ip_address(args.host)
    except ValueError:
        raise InputError(f"--host {args.host}: not an IP address (127.0.0.1 serves this machine only)") from None
    if args.refresh <= 0:
        raise InputError(f"--refresh {args.refresh}: must be more than 0 seconds")
    if args.key is not None:  # the key the pages believe, as the audit checks with
        from detpack.store import TrustedKey

        store.trust = TrustedKey(load_public_key(args.key), f"given with --key {args.key}")
    dashboard = Dashboard(
        store,
        store_key=load_public_key(args.key) if args.key else None,
        trusted=[load_public_key(p) for p in args.trust],
        refresh=args.refresh,
        finder=index_finder(store),
    )
    dashboard.snapshot()  # a store that cannot be read is refused before the server starts
    try:
        server = bind(dashboard, args.host, args.port, on_request=out.line)
    except OSError as exc:
        raise InputError(f"--port {args.port}: cannot listen on {args.host} ({exc.strerror or exc})") from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    out.result(f"serving {redact(store.backend.url)} at http://{host}:{server.server_port}/ (read-only; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
