"""Style-controlled Bradley-Terry ratings, as FastChat's leaderboard computes them (``elo_analysis.py``:
``construct_style_matrices``, ``fit_mle_elo``, ``get_bootstrap_result_style_control``), so that a long,
heavily formatted answer does not win on looks.

For each battle, each style feature (style.FEATURES: length, headers, list items, bold) enters as the
normalised difference (a - b) / (a + b + 1), standardised over all battles, and is fitted jointly with the
model strengths by logistic regression without intercept. As in FastChat every battle appears twice: a win
twice, a tie once as a win and once as a loss; the fit carries scikit-learn's default L2 penalty (C = 1),
which FastChat inherits; the intervals come from the same bootstrap over battles. Ratings are on the Elo
scale (400 points per factor of 10 in odds), centred at 1000 like the plain table so the two compare.

A style coefficient is a log-odds change per standard deviation of its feature; ``elo_per_sd`` says the same
in rating points: +40 for length means an answer one standard deviation longer than its rival's wins as
often as a model 40 points stronger would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from arena.ratings.bradley_terry import BASE, INIT_RATING, SCALE, ci_rank, ci_text
from arena.ratings.style import FEATURES

A_WINS = "model_a"
TIES = ("tie", "tie (bothbad)")


@dataclass
class StyleFit:
    models: list[str]
    ratings: np.ndarray        # (models,) Elo scale, centred at 1000
    coefficients: np.ndarray   # (features,) log-odds per standard deviation


def design(battles: list[dict], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """FastChat's X and Y: each battle twice; model columns +ln(10) for A and -ln(10) for B; then the
    standardised style differences. ``battles``: dicts with model_a, model_b, winner, style_a, style_b."""
    index = {m: i for i, m in enumerate(models)}
    n, p, k = len(battles), len(models), len(FEATURES)
    a = np.array([index[b["model_a"]] for b in battles])
    b_ = np.array([index[b["model_b"]] for b in battles])
    x = np.zeros((2 * n, p + k))
    rows = np.arange(2 * n)
    x[rows, np.concatenate([a, a])] = math.log(BASE)
    x[rows, np.concatenate([b_, b_])] = -math.log(BASE)
    va = np.array([[bt["style_a"][f] for f in FEATURES] for bt in battles], dtype=float).reshape(n, k)
    vb = np.array([[bt["style_b"][f] for f in FEATURES] for bt in battles], dtype=float).reshape(n, k)
    diff = (va - vb) / (va + vb + 1.0)
    std = diff.std(axis=0)
    z = (diff - diff.mean(axis=0)) / np.where(std > 0, std, 1.0)  # a feature that never differs stays 0
    x[:, p:] = np.concatenate([z, z])
    winners = np.array([bt["winner"] for bt in battles])
    y = np.concatenate([(winners == A_WINS) | np.isin(winners, TIES), winners == A_WINS]).astype(float)
    return x, y


def fit(x: np.ndarray, y: np.ndarray, n_models: int) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression without intercept, L2 penalty 1/2 |w|^2 (scikit-learn's default C = 1), by L-BFGS.
    Returns (model ratings on the Elo scale, centred at 1000; style coefficients)."""
    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        logits = x @ w
        # log(1 + e^z) - y z, stable for large |z|
        loss = np.sum(np.logaddexp(0.0, logits) - y * logits) + 0.5 * w @ w
        grad = x.T @ (1.0 / (1.0 + np.exp(-logits)) - y) + w
        return loss, grad

    w = minimize(loss_and_grad, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B",
                 options={"gtol": 1e-8, "maxiter": 2000}).x
    ratings = SCALE * w[:n_models]
    return ratings - ratings.mean() + INIT_RATING, w[n_models:]


def fit_battles(battles: list[dict]) -> StyleFit:
    models = sorted({b["model_a"] for b in battles} | {b["model_b"] for b in battles})
    x, y = design(battles, models)
    ratings, coefficients = fit(x, y, len(models))
    return StyleFit(models, ratings, coefficients)


def bootstrap(battles: list[dict], models: list[str], rounds: int = 100, seed: int = 42
              ) -> tuple[np.ndarray, np.ndarray]:
    """Ratings (rounds, models; NaN for a model absent from a resample) and coefficients (rounds, features) of
    ``rounds`` resamples of the battles with replacement, each standardised and fitted as the whole."""
    rng = np.random.default_rng(seed)
    ratings = np.full((rounds, len(models)), np.nan)
    coefficients = np.zeros((rounds, len(FEATURES)))
    position = {m: i for i, m in enumerate(models)}
    for r in range(rounds):
        sample = [battles[i] for i in rng.integers(0, len(battles), size=len(battles))]
        result = fit_battles(sample)
        ratings[r, [position[m] for m in result.models]] = result.ratings
        coefficients[r] = result.coefficients
    return ratings, coefficients


def style_table(battles: list[dict], plain: pd.DataFrame, names: dict[str, str] | None = None, rounds: int = 100,
                seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ratings with style control beside each model's plain rank, style coefficients with 95% intervals).
    ``plain`` is leaderboard.rated_table's table of the same battles (its ``model`` column holds display names)."""
    if not battles:
        return pd.DataFrame(columns=STYLE_COLUMNS), pd.DataFrame(columns=COEFFICIENT_COLUMNS)
    result = fit_battles(battles)
    samples, coefficient_samples = bootstrap(battles, result.models, rounds, seed)
    lower, upper = np.nanpercentile(samples, 2.5, axis=0), np.nanpercentile(samples, 97.5, axis=0)
    labels = [(names or {}).get(m, m) for m in result.models]
    plain_rank = dict(zip(plain["model"], plain["rank"])) if not plain.empty else {}
    table = pd.DataFrame({
        "rank_sc": ci_rank(lower, upper), "model": labels, "rating_sc": result.ratings.round(1),
        "ci_sc": ci_text(result.ratings, lower, upper),
        "rank": [plain_rank.get(label) for label in labels],
    })
    table["rank_change"] = [_change(p, s) for p, s in zip(table["rank"], table["rank_sc"])]
    table = table.sort_values("rating_sc", ascending=False, ignore_index=True)[STYLE_COLUMNS]
    c_low, c_high = np.percentile(coefficient_samples, 2.5, axis=0), np.percentile(coefficient_samples, 97.5, axis=0)
    elo = SCALE / math.log(BASE)
    coefficients = pd.DataFrame({
        "feature": list(FEATURES), "coefficient": result.coefficients.round(4),
        "coefficient_ci": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(c_low, c_high)],
        "elo_per_sd": [f"{elo * c:+.1f} [{elo * lo:+.1f}, {elo * hi:+.1f}]"
                       for c, lo, hi in zip(result.coefficients, c_low, c_high)],
    })
    return table, coefficients


def _change(plain: int | None, controlled: int) -> str:
    """'↑2' when style control moves a model up two ranks, '↓1' down, '=' unchanged."""
    if plain is None or (isinstance(plain, float) and math.isnan(plain)):
        return ""
    delta = int(plain) - int(controlled)
    return "=" if delta == 0 else f"↑{delta}" if delta > 0 else f"↓{-delta}"


STYLE_COLUMNS = ["rank_sc", "model", "rating_sc", "ci_sc", "rank", "rank_change"]
COEFFICIENT_COLUMNS = ["feature", "coefficient", "coefficient_ci", "elo_per_sd"]
