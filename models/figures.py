"""Report figures as PNG bytes, drawn on matplotlib's object-oriented Figure: no pyplot, so no display
backend, no global figure registry and nothing to close."""
from __future__ import annotations

import io
from typing import Callable

from matplotlib.figure import Figure

FIGURE_DPI = 80


def figure_png(figsize: tuple[float, float], draw: Callable, panels: int = 1) -> bytes:
    """A figure of `figsize` inches with `panels` axes side by side, drawn by `draw(ax, ...)`
    (one axes argument per panel), as PNG bytes."""
    fig = Figure(figsize=figsize, dpi=FIGURE_DPI)
    axes = fig.subplots(1, panels, squeeze=False)
    draw(*axes[0])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
