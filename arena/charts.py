"""Leaderboard figures (matplotlib), drawn from the tables leaderboard.py computes."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def ratings_chart(table: pd.DataFrame) -> plt.Figure:
    """Ratings with 95% bootstrap confidence intervals, best at the top."""
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(table), 2) + 1.2))
    if table.empty:
        ax.text(0.5, 0.5, "No rated (blind) battles yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    rows = table.iloc[::-1]
    y = np.arange(len(rows))
    ax.errorbar(rows["rating"], y, xerr=[rows["rating"] - rows["ci_low"], rows["ci_high"] - rows["rating"]],
                fmt="o", color="#1f6feb", ecolor="#8ab4f8", elinewidth=3, capsize=4)
    ax.set_yticks(y, rows["model"])
    ax.axvline(1000, color="#999", lw=0.8, ls="--")
    ax.set_xlabel("Bradley-Terry rating (Elo scale), 95% bootstrap CI")
    ax.set_title("Ratings from blind battles")
    fig.tight_layout()
    return fig


def win_fraction_chart(matrix: pd.DataFrame) -> plt.Figure:
    """Fraction of decisive battles the row model won against the column model."""
    n = max(len(matrix), 2)
    fig, ax = plt.subplots(figsize=(1.1 * n + 3, 0.8 * n + 2))
    if matrix.empty:
        ax.text(0.5, 0.5, "No rated (blind) battles yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=0, vmax=1)
    ax.set_xticks(range(len(matrix)), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(matrix)), matrix.index)
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if abs(v - 0.5) > 0.3 else "black")
    ax.set_xlabel("model B")
    ax.set_ylabel("model A")
    ax.set_title("Win fraction of A over B (decisive battles)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
