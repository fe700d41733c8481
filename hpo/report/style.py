"""The one plotly look of every report figure (the HTML page, the PNG/SVG/PDF files and the
prediction page): the template :data:`NAME`, registered with plotly when this module is first
imported and applied by :func:`apply`, never by changing plotly's global default.

Made for a paper's main text: a white background with a light grid and a box of axis lines,
one sans-serif font (Liberation Sans, metric-compatible with Arial, is what Debian's Chromium
draws with), colour-blind-safe colours (Okabe and Ito's, then Tol's muted set), and the legend
laid out horizontally above the plot so that it never takes the plot's width."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

#: The template's name in ``plotly.io.templates``.
NAME = "specopt"
FONT = "Liberation Sans, Arial, Helvetica, sans-serif"
FONT_SIZE = 15
#: Okabe & Ito (2008) without its yellow (unreadable on white), then Tol's muted colours.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
          "#332288", "#882255", "#999933", "#44AA99", "#AA4499", "#661100", "#6699CC")
#: Sequential colour scale (objective values in parallel coordinates and contours).
COLORSCALE = "Viridis"
#: The y-axis title of every spectrum: each level is broadened to a Gaussian of unit area
#: (``data_prep.spectra.broaden``), so a spectrum counts levels per eV.
INTENSITY = "intensity (levels/eV)"
_INK, _GRID = "#222222", "#E3E3E3"
#: A log axis's ticks: at 1, 2 and 5 of each decade, each written in full ("0.05", not
#: plotly's bare mantissa "5").
LOG_TICKS = dict(dtick="D2", tickformat="~g")

_AXIS = dict(showline=True, linecolor=_INK, linewidth=1, mirror=True, ticks="outside",
             tickcolor=_INK, ticklen=5, showgrid=True, gridcolor=_GRID, zeroline=False,
             automargin=True, title=dict(standoff=10))

#: Where the legend sits: a horizontal row above the plot area, left-aligned (plotly wraps it
#: onto more rows as needed and makes the top margin room for it).
LEGEND = dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom",
              bgcolor="rgba(255,255,255,0)", font=dict(size=FONT_SIZE - 2),
              tracegroupgap=4)


def _template() -> go.layout.Template:
    base = pio.templates["plotly_white"]
    t = go.layout.Template(base)
    t.layout.update(
        font=dict(family=FONT, size=FONT_SIZE, color=_INK),
        paper_bgcolor="white", plot_bgcolor="white", colorway=list(COLORS),
        xaxis=_AXIS, yaxis=_AXIS, legend=LEGEND,
        margin=dict(l=70, r=20, t=30, b=60), title=dict(font=dict(size=FONT_SIZE + 2)),
        colorscale=dict(sequential=COLORSCALE, sequentialminus=COLORSCALE),
        coloraxis=dict(colorbar=dict(outlinewidth=0, ticks="outside", len=1)),
        annotationdefaults=dict(font=dict(size=FONT_SIZE)),
        hoverlabel=dict(font=dict(family=FONT)),
    )
    return t


def register() -> go.layout.Template:
    """The template, added to ``plotly.io.templates`` under :data:`NAME` (once)."""
    if NAME not in pio.templates:
        pio.templates[NAME] = _template()
    return pio.templates[NAME]


TEMPLATE = register()


def apply(fig: go.Figure) -> go.Figure:
    """Give ``fig`` the report's template (in place; returns it). Values the figure sets itself
    win over the template's, so figures set only what is theirs (titles, sizes)."""
    fig.update_layout(template=TEMPLATE)
    return fig
