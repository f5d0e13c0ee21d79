"""Text that the agent or its jobs wrote, made safe to print on the user's terminal.

Run names, argv, tags, reasons, metrics, log output, session notes and transcript text all come
from the sandbox. Printed as they are, an escape sequence among them can rewrite what is already
on the screen (a forged ``finished`` over a ``failed``), hide text, retitle the window, plant an
OSC 8 link or, on some terminals, type into the shell. Every host-side print of such text goes
through one of these functions:

- :func:`one_line` for a field (a name, an id, an argv, an error in a table): every control
  character becomes a visible escape, newline and tab included;
- :func:`multi_line` for text that spans lines (a log): the same, but newline and tab stay;
- :func:`cell` for a rich table cell or renderable: the escaped field as a ``Text``, which rich
  never reads as markup (``[link=...]`` in a run name stays literal).

Escaped: C0 controls (ESC, CR, BEL, backspace...), DEL, C1 controls (U+0080-U+009F, which some
terminals obey like ESC sequences), and the Unicode line and paragraph separators and
bidirectional overrides, which break or reorder what a reader sees. Each becomes ``\\xNN`` or
``\\uNNNN``: nothing is dropped, so the reader sees that something was there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_IN_TEXT = re.compile(f"[{_CONTROLS}]")
_IN_FIELD = re.compile(f"[\t\n{_CONTROLS}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(value: object) -> str:
    """``value`` as text for one line: no control character is left, newline and tab included."""
    return _IN_FIELD.sub(_escape, str(value))


def multi_line(value: object) -> str:
    """``value`` as text that may span lines: newline and tab kept, every other control
    character escaped."""
    return _IN_TEXT.sub(_escape, str(value))


def cell(value: object, style: str = "") -> Text:
    """A rich renderable for an untrusted field: escaped, and never parsed as markup."""
    from rich.text import Text

    return Text(one_line(value), style=style)
