"""Server-provided text made safe for a terminal: control characters escaped, long values cut.

A job name, an error message or a model's answer comes from the backend (and, through it, from
whoever created the job). Printed raw, an ``ESC[2J`` would clear the user's screen and an OSC
sequence would retitle their terminal or plant a hyperlink; a 4 MB name would flood it. Every
string the CLI prints from the server goes through :func:`printable` (and :func:`clip` where a
table or a one-line value needs a bound).
"""

from __future__ import annotations

import unicodedata

__all__ = ["CELL_LIMIT", "VALUE_LIMIT", "clip", "printable"]

#: A table cell (``jobs list``) is cut to this many characters.
CELL_LIMIT = 40
#: One value of ``jobs show`` or ``jobs events`` is cut to this many characters.
VALUE_LIMIT = 2000

# Besides the C0/C1 controls (category Cc), the invisible format characters that reorder or
# hide text (bidi overrides and isolates, zero-width joiners...) are escaped too.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control or format character written as a ``\\x..``/``\\u....`` escape.

    With ``keep_newlines``, ``\\n`` and ``\\t`` stay as they are (for multi-line answers).
    """
    if text.isprintable():  # the common case: nothing to escape (space is printable)
        return text
    kept = "\n\t" if keep_newlines else ""
    return "".join(
        c if c in kept or unicodedata.category(c) not in _ESCAPED_CATEGORIES else _escape(c)
        for c in text
    )


def clip(text: str, limit: int) -> str:
    """``text`` escaped by :func:`printable`, cut to ``limit`` characters with a marker."""
    if len(text) > 4 * limit:  # do not escape megabytes only to cut them
        text = text[: 4 * limit]
        cut = True
    else:
        cut = False
    shown = printable(text)
    if len(shown) <= limit and not cut:
        return shown
    return shown[: max(1, limit - 3)] + "..."
