"""Leaderboard figures, drawn from the tables leaderboard.py computes.

Plain ``matplotlib.figure.Figure`` objects, never pyplot: pyplot keeps every figure it
ever made in a global registry, which grows forever in a long-running server.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.figure import Figure

from arena.core.texts import t

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "WenQuanYi Zen Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC")


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in names), None)


def chart_language(lang: str) -> str:
    """Chinese chart texts need a CJK font; without one, English beats boxes."""
    return lang if lang != "zh" or cjk_font() else "en"


def _fonts(lang: str) -> dict:
    return {"fontfamily": ["DejaVu Sans", cjk_font()]} if lang == "zh" and cjk_font() else {}


def _empty(fig: Figure, lang: str) -> Figure:
    ax = fig.subplots()
    ax.text(0.5, 0.5, t("chart_no_battles", lang), ha="center", va="center", transform=ax.transAxes, **_fonts(lang))
    ax.set_axis_off()
    return fig


def ratings_chart(table: pd.DataFrame, lang: str = "en") -> Figure:
    """Ratings with 95% bootstrap confidence intervals, best at the top."""
    lang = chart_language(lang)
    fig = Figure(figsize=(7, 0.5 * max(len(table), 2) + 1.2))
    if table.empty:
        return _empty(fig, lang)
    ax = fig.subplots()
    rows = table.iloc[::-1]
    y = np.arange(len(rows))
    ax.errorbar(rows["rating"], y, xerr=[rows["rating"] - rows["ci_low"], rows["ci_high"] - rows["rating"]],
                fmt="o", color="#1f6feb", ecolor="#8ab4f8", elinewidth=3, capsize=4)
    ax.set_yticks(y, rows["model"])
    ax.axvline(1000, color="#999", lw=0.8, ls="--")
    ax.set_xlabel(t("chart_ratings_x", lang), **_fonts(lang))
    ax.set_title(t("chart_ratings_title", lang), **_fonts(lang))
    fig.tight_layout()
    return fig


def win_fraction_chart(matrix: pd.DataFrame, lang: str = "en") -> Figure:
    """Fraction of decisive battles the row model won against the column model."""
    lang = chart_language(lang)
    n = max(len(matrix), 2)
    fig = Figure(figsize=(1.1 * n + 3, 0.8 * n + 2))
    if matrix.empty:
        return _empty(fig, lang)
    ax = fig.subplots()
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=0, vmax=1)
    ax.set_xticks(range(len(matrix)), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(matrix)), matrix.index)
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if abs(v - 0.5) > 0.3 else "black")
    ax.set_xlabel(t("chart_model_b", lang), **_fonts(lang))
    ax.set_ylabel(t("chart_model_a", lang), **_fonts(lang))
    ax.set_title(t("chart_winrate_title", lang), **_fonts(lang))
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def speed_quality_chart(table: pd.DataFrame, lang: str = "en") -> Figure:
    """Each model's rating (with its 95% CI) against its median decode speed: the INT4 trade-off at a glance."""
    lang = chart_language(lang)
    fig = Figure(figsize=(7, 4.5))
    rows = table.dropna(subset=["median_tokens_per_s"]) if not table.empty else table
    if rows.empty:
        return _empty(fig, lang)
    ax = fig.subplots()
    ax.errorbar(rows["median_tokens_per_s"], rows["rating"],
                yerr=[rows["rating"] - rows["ci_low"], rows["ci_high"] - rows["rating"]],
                fmt="o", color="#1f6feb", ecolor="#8ab4f8", elinewidth=3, capsize=4)
    for _, row in rows.iterrows():
        ax.annotate(str(row["model"]), (row["median_tokens_per_s"], row["rating"]), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    ax.axhline(1000, color="#999", lw=0.8, ls="--")
    ax.set_xlabel(t("chart_speed_x", lang), **_fonts(lang))
    ax.set_ylabel(t("chart_speed_y", lang), **_fonts(lang))
    ax.set_title(t("chart_speed_title", lang), **_fonts(lang))
    ax.margins(x=0.25, y=0.2)
    fig.tight_layout()
    return fig


def quality_chart(rows: list[dict], names: dict[str, str] | None = None, lang: str = "en") -> Figure:
    """What INT4 costs, one point per model: mean KL to the reference (95% CI) against decode speed, marker area by
    resident memory; the reference sits at KL 0. ``rows`` from quality/board.py latest_comparison."""
    lang = chart_language(lang)
    names = names or {}
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    drawn = [r for r in rows if r["decode_tps"] is not None]
    if not drawn:
        ax.text(0.5, 0.5, t("quality_none", lang), ha="center", va="center", wrap=True, transform=ax.transAxes,
                **_fonts(lang))
        ax.set_axis_off()
        return fig
    largest = max((r["rss_mb"] or 0) for r in drawn) or 1.0
    for row in drawn:
        f = row["figures"]
        kl, low, high = f["kl_mean"] if f else (0.0, 0.0, 0.0)
        size = 60 + 600 * (row["rss_mb"] or 0) / largest
        reference = f is None
        ax.scatter([row["decode_tps"]], [kl], s=size, alpha=0.55, color="#999" if reference else "#1f6feb",
                   marker="*" if reference else "o", edgecolors="black", linewidths=0.5)
        if not reference:
            ax.errorbar([row["decode_tps"]], [kl], yerr=[[kl - low], [high - kl]], fmt="none", ecolor="#444",
                        capsize=3)
        label = names.get(row["model"], row["model"])
        if reference:
            label += f" ({t('chart_quality_reference', lang)})"
        if row["rss_mb"]:
            label += f", {row['rss_mb']:.0f} MB"
        ax.annotate(label, (row["decode_tps"], kl), textcoords="offset points", xytext=(8, 6), fontsize=8,
                    **_fonts(lang))
    ax.set_xlabel(t("chart_quality_x", lang), **_fonts(lang))
    ax.set_ylabel(t("chart_quality_y", lang), **_fonts(lang))
    ax.set_title(t("chart_quality_title", lang), **_fonts(lang))
    ax.set_ylim(bottom=-0.05 * max((r["figures"]["kl_mean"][2] for r in drawn if r["figures"]), default=1.0))
    ax.margins(x=0.3, y=0.15)
    fig.tight_layout()
    return fig
