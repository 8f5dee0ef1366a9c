"""The quality × speed × memory table, from stored ``python -m arena quality`` results: one function picks the
comparison to show, one formats it (Leaderboard tab, CLI, batch report). The chart is in charts.py."""
from __future__ import annotations

import pandas as pd

from arena.core.texts import t

COLUMNS = ("model", "engine", "kl_mean", "kl_p99", "same_top", "ppl", "ppl_ratio", "rms_dp", "decode_tps", "rss_mb")


def latest_comparison(results: list[dict], models: set[str] | None = None) -> list[dict]:
    """The rows of the newest comparison: figures from another reference, text or length are not comparable, so
    only results sharing the newest one's reference, text and token count are kept (the newest per model),
    optionally only for ``models`` (and their reference). Reference first, then by mean KL."""
    if models is not None:
        results = [r for r in results if r["model"] in models or
                   any(o["model"] in models and o["reference"] == r["model"] for o in results)]
    if not results:
        return []
    newest = max(results, key=lambda r: r["created"])
    key = (newest["reference"], newest["text_digest"], newest["tokens"])
    latest: dict[str, dict] = {}
    for row in sorted(results, key=lambda r: r["created"]):
        if (row["reference"], row["text_digest"], row["tokens"]) == key:
            latest[row["model"]] = row
    return ordered(list(latest.values()))


def ordered(rows: list[dict]) -> list[dict]:
    """The reference first, then the candidates from the least to the most mean KL."""
    return sorted(rows, key=lambda r: (r["figures"] is not None, r["figures"]["kl_mean"][0] if r["figures"] else 0.0))


def _ci(value: list[float] | tuple, scale: float = 1.0, digits: int = 4) -> str:
    return f"{value[0] * scale:.{digits}f} [{value[1] * scale:.{digits}f}, {value[2] * scale:.{digits}f}]"


def frame(rows: list[dict], names: dict[str, str] | None = None, lang: str = "en") -> pd.DataFrame:
    """The rows as display strings, one per model, columns named in ``lang``."""
    names = names or {}
    out = []
    for row in rows:
        f = row["figures"]
        label = names.get(row["model"], row["model"])
        if f is None:
            label += " " + t("quality_reference_row", lang)
        elif row["approximate"]:
            label += " " + t("quality_approximate", lang)
        out.append({
            "model": label, "engine": row["engine"],
            "kl_mean": "" if f is None else _ci(f["kl_mean"]),
            "kl_p99": "" if f is None else f"{f['kl_p99']:.4f}",
            "same_top": "" if f is None else _ci(f["same_top"], 100, 1),
            "ppl": f"{row['ppl']:.3f}" if row["ppl"] is not None else "",
            "ppl_ratio": "" if f is None else _ci(f["ppl_ratio"]),
            "rms_dp": "" if f is None else _ci(f["rms_dp"], 100, 2),
            "decode_tps": "" if row["decode_tps"] is None else f"{row['decode_tps']:.1f}",
            "rss_mb": "" if row["rss_mb"] is None else f"{row['rss_mb']:.0f}",
        })
    return pd.DataFrame(out, columns=list(COLUMNS)).rename(columns=lambda c: t(f"col_{c}", lang))


def intro(rows: list[dict], names: dict[str, str] | None = None, lang: str = "en") -> str:
    """What the table compares with, or how to fill it."""
    if not rows:
        return t("quality_none", lang)
    reference = rows[0]["reference"]
    return t("quality_intro", lang, reference=(names or {}).get(reference, reference), tokens=rows[0]["tokens"])
