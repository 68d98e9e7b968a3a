"""Text from input made inert before it reaches a terminal or a log: control characters (C0, C1, DEL) and
Unicode line breaks escaped, so one message is one line and sets no terminal state; credentials in URLs
redacted; long values cut to a short excerpt. Rich markup is never parsed in such text (callers print it
as a `rich.text.Text` or with markup off)."""

from __future__ import annotations

import re
from typing import Any

#: C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators (splitlines() breaks on them).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: Characters that break a line for YAML, str.splitlines() or a config parser: never in a single-line value.
LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
#: user:password@ (or user@) in a URL: replaced by ***@.
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
EXCERPT = 80

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def redact_urls(text: str) -> str:
    """Every URL's user information (user:password@) as ***@."""
    return URL_CREDENTIALS.sub(r"\1***@", text)


def inert(text: Any) -> str:
    """`text` as one printable line: control characters and line breaks escaped, URL credentials redacted."""
    return CONTROL.sub(_escape, redact_urls(str(text)))


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """A short, quoted, inert excerpt of an input value for a message: never the whole of a large value.

    Containers are named by type and size only: turning a huge (or alias-multiplied) value into text costs
    more than any message is worth."""
    if isinstance(value, dict | list | tuple | set):
        return f"<{type(value).__name__} of {len(value)}>"
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit]
    shown = inert(cut).replace("'", "\\'")
    return f"'{shown}'" + ("..." if len(text) > limit else "")


def has_line_break(text: str) -> bool:
    """Whether `text` holds any character that starts a new line for YAML, Python or a config parser."""
    return LINE_BREAKS.search(text) is not None
