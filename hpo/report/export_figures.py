"""The report's figures as files for a paper: PNG, SVG and PDF, drawn by plotly.js itself in a
headless Chrome through kaleido 1.x (the ``figures`` extra: ``pip install 'specopt[figures]'``).

kaleido finds a Chrome or Chromium on its own (Debian's ``/usr/bin/chromium`` included; the
``BROWSER_PATH`` environment variable names another). It loads the installed plotly's bundle
and no MathJax, so it works offline. Every figure is drawn in one browser session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from hpo.report.figures import Figure
from model.errors import ReportError

log = logging.getLogger("specopt.report")

#: Static formats a figure can be written in (``specopt report --format``).
STATIC_FORMATS = ("png", "svg", "pdf")
#: What ``--format`` takes: the HTML page (always written) and the static formats.
FORMATS = ("html", *STATIC_FORMATS)
#: The folder of the static figures, inside the report's folder.
FIGURES_DIR = "figures"
#: Size of a static figure (px at scale 1; PNG at :data:`PNG_SCALE`): a page-wide figure.
WIDTH, HEIGHT, PNG_SCALE = 1000, 450, 2


def parse_formats(text: str | Iterable[str]) -> list[str]:
    """``"png,svg"`` -> ``["png", "svg"]`` (in :data:`FORMATS`, without repeats); anything else
    is a :class:`ReportError` naming the formats there are."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        f = raw.strip().lower().lstrip(".")
        if not f:
            continue
        if f not in FORMATS:
            raise ReportError(f"unknown figure format {raw.strip()!r}: one or more of "
                              f"{', '.join(FORMATS)}, comma-separated (e.g. png,svg)")
        if f not in out:
            out.append(f)
    return out or ["html"]


def _size(fig) -> tuple[int, int]:
    width = fig.layout.width or WIDTH
    n_cols = len([k for k in fig.layout if k.startswith("xaxis")])  # subplot panels
    if fig.layout.width is None and n_cols >= 3:
        width = max(width, 1300)
    return int(width), int(fig.layout.height or HEIGHT)


def write_figures(figures: Sequence[Figure], out_dir: str | Path,
                  formats: Iterable[str]) -> list[Path]:
    """Write every drawn figure (notes have none) as ``<out_dir>/<key>.<format>`` for each of
    ``formats`` (of :data:`STATIC_FORMATS`; "html" is ignored: the page holds the figures).
    Returns the files written. Without kaleido or a Chrome, a :class:`ReportError` saying what
    to install."""
    wanted = [f for f in parse_formats(list(formats)) if f in STATIC_FORMATS]
    drawn = [f for f in figures if f.fig is not None]
    if not wanted or not drawn:
        return []
    try:
        import kaleido
        from kaleido.errors import ChromeNotFoundError
    except ImportError:
        raise ReportError("writing figures as " + ", ".join(wanted).upper() + " needs kaleido: "
                          "pip install 'specopt[figures]' (or pip install 'kaleido>=1.0')"
                          ) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs, paths = [], []
    for f in drawn:
        assert f.fig is not None
        fig = f.fig.to_dict()
        width, height = _size(f.fig)
        for fmt in wanted:
            path = out / f"{f.key}.{fmt}"
            specs.append({"fig": fig, "path": path, "opts": {
                "format": fmt, "width": width, "height": height,
                "scale": PNG_SCALE if fmt == "png" else 1}})
            paths.append(path)
    try:
        # mathjax=False: no MathJax from its CDN (offline), and no figure here uses LaTeX.
        kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False})
    except ChromeNotFoundError:
        raise ReportError(
            "writing figures needs Chrome or Chromium for kaleido: install Debian's chromium "
            "(apt-get install chromium), or run `kaleido_get_chrome`, or set BROWSER_PATH to a "
            "Chrome executable") from None
    except Exception as err:  # deliberately broad: the browser's failure, said in one line
        raise ReportError(f"kaleido could not write the figures: {type(err).__name__}: "
                          f"{' '.join(str(err).split())[:300]}") from None
    missing = [p for p in paths if not p.is_file() or p.stat().st_size == 0]
    if missing:
        raise ReportError(f"kaleido wrote no {', '.join(p.name for p in missing[:5])}")
    log.info("report: %d figure files in %s", len(paths), out)
    return paths
