"""Words for counts, shared by the library's messages and the CLI's output."""

from __future__ import annotations

import re


class Recorded(str):
    """A warning about something the provenance records (a dirty tree, a duplicate member kept, an
    sdist fallback, no sandbox, code-injecting variables): shown even with ``-q``."""

    __slots__ = ()


class Distrusted(str):
    """A warning that part of what a store holds was not believed (not signed by the trusted key, or refused by
    its access policy): shown even with ``-q``."""

    __slots__ = ()


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 package``, ``2 packages``; ``plural`` for words that do not just take an s."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


#: Query parameters that carry a credential (``?token=…``, ``&access_token=…``, ``sig=``, …).
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.-]*(?:token|secret|password|passwd|pwd|auth|key|signature|sig|credential)s?"
    r"[a-z0-9_.-]*)=)[^&;#\s]+"
)


def redact_params(url: str) -> str:
    """``url`` with the value of every query parameter that carries a credential (``password=``, ``token=``…)
    replaced by ``***``."""
    return _SECRET_PARAM.sub(r"\1***", url)


def redact(value: str) -> str:
    """Hide credentials in URLs: ``scheme://user:pass@host`` and ``user:pass@host`` become
    ``***@host`` (``scheme://user@host``, whose user may be a token, too), and a query parameter
    that carries one (``?token=…``, ``&password=…``) becomes ``token=***``; other text is kept."""
    out = []
    for part in value.split():
        scheme, sep, rest = part.partition("://")
        authority = rest.split("/", 1)[0] if sep else ""
        if sep and "@" in authority:
            part = f"{scheme}://***@{rest.split('@', 1)[1]}"
        elif not sep and re.match(r"^[^\s/@:]+:[^\s/@]*@[^\s@]+", part):
            part = "***@" + part.split("@", 1)[1]  # user:password@host, no scheme
        part = _SECRET_PARAM.sub(r"\1***", part)
        out.append(part)
    return " ".join(out)
