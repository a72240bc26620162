"""Masking passwords in anything Chancy prints or logs: DSNs, and error messages that may
echo one (libpq quotes fragments of a conninfo it cannot parse).

Works on text, not on a parsed DSN, so it also masks strings that psycopg rejects (a bad
port, an unknown scheme, an unterminated quote) — exactly the ones that end up in error
messages — and it never raises."""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

#: ``scheme://user:password@`` (scheme optional: ``user:password@host`` is a common typo).
#: The password runs to the last ``@`` of the word, so an unescaped ``@`` or ``/`` in it
#: is masked too.
_USERINFO = re.compile(r"(?P<keep>(?:[A-Za-z][\w+.-]*://)?[^\s:/?#@'\"=]+:)(?!//)(?P<secret>\S*)(?=@)")
#: ``?password=…`` / ``&sslpassword=…`` in a URL's query string: the value ends at ``&``.
_QUERY = re.compile(r"(?P<keep>[?&]\w*password=)(?P<secret>[^&#\s]*)", re.IGNORECASE)
#: ``password=…`` in a keyword conninfo (or ``PGPASSWORD=…``): a quoted value (possibly
#: unterminated: then to the end) or a word.
_KEYWORD = re.compile(
    r"(?P<keep>(?<![?&\w])\w*password\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*(?:'|$)|\S*)",
    re.IGNORECASE | re.DOTALL,
)
_PATTERNS = (_USERINFO, _QUERY, _KEYWORD)
#: Shorter literal passwords are not searched for in free text (they would garble it).
_MIN_LITERAL = 4


def _secrets_in(dsn: str) -> set[str]:
    """The password values written in ``dsn``, raw and unescaped (libpq may echo either)."""
    found: set[str] = set()
    for pattern in _PATTERNS:
        for match in pattern.finditer(dsn):
            raw = match["secret"]
            if raw.startswith("'"):
                raw = raw[1:-1] if raw.endswith("'") and len(raw) > 1 else raw[1:]
                found.add(re.sub(r"\\(.)", r"\1", raw))
            found |= {raw, unquote(raw)}
    return {secret for secret in found if len(secret) >= _MIN_LITERAL and secret != MASK}


def redact(text: str, dsn: str | None = None) -> str:
    """``text`` with every password masked: URL ``user:password@``, ``password=`` values
    (quoted or not) and ``?password=`` query parameters. Given the ``dsn`` a message is
    about, that DSN's password is also masked wherever it appears in ``text`` (in pieces
    quoted by an error message, say)."""
    secrets = _secrets_in(dsn) if dsn else set()
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match["keep"] + MASK, text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
