"""Figures as PNG bytes with matplotlib's Agg backend: no display needed, nothing written but by the caller."""

from __future__ import annotations

import io

DPI = 100


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot loads a backend that needs a display
    import matplotlib.pyplot as plt

    return plt


def panels(n: int):
    """(figure, its n axes side by side), each 6 x 4.5 inches."""
    fig, axes = pyplot().subplots(1, n, figsize=(6 * n, 4.5), squeeze=False)
    return fig, list(axes[0])


def png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(fig)
    return buffer.getvalue()
