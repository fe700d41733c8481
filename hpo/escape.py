"""One escaping function per output format, for every value that comes from a study's database
or a user's file (study names and descriptions, parameter names and values, attributes, loss and
metric names, file names): written by every writer of that format, so such a value is always
shown as the text it is and never becomes markup, a formula or a terminal command.

- ``html_text``: HTML element text or a quoted attribute value.
- ``markdown_text``: Markdown inline text (a paragraph, a table cell, a heading).
- ``csv_text`` / ``write_csv``: CSV cells and headers that spreadsheets never run as formulas.
- ``json_text``: strict JSON (no ``NaN``/``Infinity``, which JSON parsers refuse).
- ``terminal_text``: one line for the terminal, without escape sequences.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["csv_text", "html_text", "json_text", "markdown_text", "terminal_text", "write_csv"]


#: A lone surrogate: what Python makes of a file name's bytes that are no UTF-8; no UTF-8 file
#: can hold one (writing it fails), so it is shown as U+FFFD, the replacement character.
_SURROGATE = re.compile("[\ud800-\udfff]")


def html_text(text: object) -> str:
    """Any text as HTML element text or a quoted attribute value (``& < > " '`` escaped; a
    lone surrogate as U+FFFD)."""
    return html.escape(_SURROGATE.sub("\ufffd", str(text)), quote=True)


def terminal_text(text: object) -> str:
    """``text`` with every character that is not printable (ESC, which starts the terminal's
    escape sequences; CR and backspace, which overwrite; line breaks; bidi overrides) written as
    its Python escape (``\\x1b``, ``\\n``, ``\\u202e``)."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


#: Backslash-escaped wherever they are: code spans, emphasis, links and images, table cells,
#: strikethrough, math; ``_`` only where it can emphasise (not between two letters or digits).
_MARKDOWN = re.compile(r"[\\`*\[\]|~$]|(?<![^\W_])_|_(?![^\W_])")
#: What starts a block (heading, quote, list, setext underline) at the start of a line.
_BLOCK_START = re.compile(r"[#>+=-]|\d{1,9}[.)]")
#: A number as written by pandas and Python (a spreadsheet reads it as a number too).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def markdown_text(text: object) -> str:
    """``text`` as Markdown inline text that renders as written: on one line (a line break
    would end a table row or start a block), HTML (tags, comments, autolinks) as entities,
    Markdown's punctuation backslash-escaped, and a leading block marker (``#``, ``>``, ``-``,
    ``1.``) escaped; a number stays as it is."""
    s = terminal_text(" ".join(str(text).split()))
    s = _MARKDOWN.sub(lambda m: "\\" + m.group(), html.escape(s, quote=False))
    start = _BLOCK_START.match(s)
    if start and not _NUMBER.fullmatch(s):
        s = s[: start.end() - 1] + "\\" + s[start.end() - 1:]
    return s


#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> Any:
    """A CSV cell or header that spreadsheets show as text: a string starting with
    :data:`FORMULA_START` gets a leading ``'``, unless it is a number (``-1.5`` stays one); any
    other value as it is. A lone surrogate becomes U+FFFD."""
    if not isinstance(value, str):
        return value
    value = _SURROGATE.sub("\ufffd", value)
    return "'" + value if value[:1] in FORMULA_START and not _NUMBER.fullmatch(value) else value


def write_csv(df: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """``df.to_csv(path, index=False, **kwargs)`` with every header and text cell through
    :func:`csv_text` (numeric columns are numbers: left as they are)."""
    from pandas.api.types import is_numeric_dtype

    out = df.copy()
    out.columns = [csv_text(str(c)) for c in df.columns]
    for i, dtype in enumerate(df.dtypes):
        if not is_numeric_dtype(dtype):
            out.isetitem(i, df.iloc[:, i].map(csv_text))
    out.to_csv(path, index=False, **kwargs)
    return Path(path)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k if isinstance(k, str | int) else str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj: Any, **kwargs: Any) -> str:
    """``obj`` as strict JSON: a non-finite float (``json.dumps`` writes ``NaN``, which JSON
    parsers refuse) as null, anything JSON has no type for as its ``str``."""
    return json.dumps(_finite(obj), default=str, allow_nan=False, **kwargs)
