"""One self-contained HTML page: tables and plotly figures, with plotly.js inlined by default
(works offline, no CDN; about 4.7 MB of the page); ``plotlyjs="cdn"`` loads it from plotly's CDN
and ``"directory"`` from a ``plotly.min.js`` written beside the page, for small pages to share.
Each figure's plotly JSON sits in a ``<script type="application/json" data-figure="KEY">``
element and is drawn by a small script at the end of the page, so the page can be checked both
by a parser (the data) and by a browser (the drawing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpo.escape import html_text as esc
from hpo.escape import json_text
from hpo.report.figures import Figure

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1.5em auto;
       max-width: 1300px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table.report-table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
table.report-table th, table.report-table td { border: 1px solid #ccc; padding: 3px 7px;
       text-align: right; white-space: nowrap; }
table.report-table th { background: #f2f2f2; }
table.report-table td.text { text-align: left; }
.scroll { overflow-x: auto; }
.message { background: #fff4e5; border: 1px solid #f0b37e; padding: 0.8em 1em; }
.note { color: #555; font-style: italic; }
.figure { margin: 1em 0 2em 0; } .plot { width: 100%; min-height: 380px; }
.meta { color: #555; font-size: 0.9em; }
"""

_DRAW = """
(function () {
  var blocks = document.querySelectorAll('script[type="application/json"][data-figure]');
  blocks.forEach(function (block) {
    var key = block.getAttribute('data-figure');
    var target = document.getElementById('plot-' + key);
    try {
      var fig = JSON.parse(block.textContent);
      Plotly.newPlot(target, fig.data, fig.layout || {},
                     {responsive: true, displaylogo: false});
      target.setAttribute('data-rendered', 'true');
    } catch (err) {
      target.textContent = 'This figure could not be drawn: ' + err;
      target.setAttribute('data-rendered', 'error');
    }
  });
})();
"""


def script_json(text: str) -> str:
    """JSON text safe inside a ``<script>`` element: every ``<``, ``>`` and ``&`` as a JSON
    ``\\u`` escape (still the same JSON), so no ``</script>``, ``<!--`` or ``<script`` in any
    string can end the element or switch the parser's state."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def table_html(rows: list[list[str]], key: str) -> str:
    """An HTML table from rows of formatted cells (header first)."""
    key = esc(key)
    if len(rows) <= 1:
        return f'<p class="note" data-table-empty="{key}">No rows.</p>'
    head = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
    body = []
    for r in rows[1:]:
        cells = []
        for c in r:
            cls = "" if _numeric(c) else ' class="text"'
            cells.append(f"<td{cls}>{esc(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="report-table" data-table="{key}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == ""
    return True


def figure_html(f: Figure) -> str:
    title = f"<h3>{esc(f.title)}</h3>"
    key = esc(f.key)
    if f.fig is None:
        return (f'<div class="figure" data-figure-key="{key}">{title}'
                f'<p class="note" data-figure-note="{key}">{esc(f.note)}</p></div>')
    data = script_json(f.fig.to_json())
    return (f'<div class="figure" data-figure-key="{key}">{title}'
            f'<div class="plot" id="plot-{key}"></div>'
            f'<script type="application/json" data-figure="{key}">{data}</script></div>')


#: Where a page gets plotly.js from (plotly's ``include_plotlyjs`` choices).
PLOTLYJS_MODES = ("inline", "cdn", "directory")
#: The file a ``directory`` page loads, beside it.
PLOTLYJS_FILE = "plotly.min.js"


def plotly_script(mode: str = "inline", folder: Path | None = None) -> str:
    """The ``<script>`` element giving a page plotly.js: the installed plotly's bundle inlined
    (``inline``), plotly's CDN URL of that same version (``cdn``: needs a network), or
    :data:`PLOTLYJS_FILE`, written into ``folder`` (``directory``: share the folder)."""
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    if mode == "inline":
        return f'<script type="text/javascript">{get_plotlyjs()}</script>'
    if mode == "cdn":
        url = f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"
        return f'<script src="{esc(url)}" charset="utf-8"></script>'
    if mode == "directory":
        if folder is None:
            raise ValueError("plotly.js 'directory' needs the page's folder")
        bundle = get_plotlyjs()
        target = folder / PLOTLYJS_FILE
        if not target.is_file() or target.read_text(encoding="utf-8") != bundle:
            target.write_text(bundle, encoding="utf-8")
        return f'<script src="{PLOTLYJS_FILE}" charset="utf-8"></script>'
    raise ValueError(f"plotly.js mode {mode!r}: one of {', '.join(PLOTLYJS_MODES)}")


def page(title: str, sections: Sequence[str], plotly_js: str | None = None,
         script: str | None = None) -> str:
    """The whole page; ``plotly_js`` (the bundle's text) defaults to the installed plotly's,
    inlined; ``script``: a ready ``<script>`` element instead (see :func:`plotly_script`)."""
    if script is None:
        if plotly_js is None:
            from plotly.offline import get_plotlyjs

            plotly_js = get_plotlyjs()
        script = f'<script type="text/javascript">{plotly_js}</script>'
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style>"
            f"{script}</head><body>"
            + "\n".join(sections)
            + f"<script type=\"text/javascript\">{_DRAW}</script></body></html>\n")


def section(heading: str, body: str, key: str) -> str:
    return f'<section id="{esc(key)}"><h2>{esc(heading)}</h2>{body}</section>'


def json_block(obj, key: str) -> str:
    text = script_json(json_text(obj))
    return f'<script type="application/json" data-report="{esc(key)}">{text}</script>'
