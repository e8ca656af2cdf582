"""Report figures as PNG bytes: one place that owns matplotlib's set-up (Agg, no display) and cleanup."""
from __future__ import annotations

import io
from typing import Callable

FIGURE_DPI = 80


def figure_png(figsize: tuple[float, float], draw: Callable, panels: int = 1) -> bytes:
    """A figure of `figsize` inches with `panels` axes side by side, drawn by `draw(ax, ...)`
    (one axes argument per panel), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=figsize, dpi=FIGURE_DPI, squeeze=False)
    try:
        draw(*axes[0])
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()
