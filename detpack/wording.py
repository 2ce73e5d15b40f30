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


#: Characters a terminal acts on rather than shows: C0 and C1 controls (ESC starts a sequence that clears the
#: screen, moves the cursor over a line, sets the window title; CR returns over a line), DEL, the line and
#: paragraph separators, and the bidirectional overrides that show text in another order than it is.
_UNSHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: str, keep: str = "") -> str:
    """``text`` for a terminal: each character it would act on (``_UNSHOWN``) but those in ``keep`` written as
    its escape (``\\u001b``: the same in JSON, Python and JavaScript, so a JSON document stays one), so a name
    from an archive or an index (a hostile release's) is seen as it is, and can neither drive the terminal nor
    start a line of its own."""
    if not _UNSHOWN.search(text):
        return text
    return _UNSHOWN.sub(lambda m: m[0] if m[0] in keep else f"\\u{ord(m[0]):04x}", text)
