"""The leaderboards: human votes, or the graders' pair verdicts, as tables of Bradley-Terry ratings with 95%
intervals (bradley_terry.py), per category and language, with style control beside them (style_control.py), and
cached until what they are computed from changes.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from arena.ratings.bradley_terry import OUTCOME, Battles, bootstrap, ci_rank, ci_text, fit_bt


def rated_table(rows: list[tuple], names: dict[str, str] | None = None, rounds: int = 100,
                seed: int = 42, median_speed: dict[str, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leaderboard and pairwise win-fraction matrix from ``Store.rating_aggregates`` rows."""
    if not rows:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS), pd.DataFrame()
    battles = Battles.from_rows([r[:4] for r in rows])
    ratings = fit_bt(battles)
    samples = bootstrap(battles, rounds, seed)
    lower, upper = np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)
    n = len(battles.models)
    games, score = np.zeros(n), np.zeros(n)
    sums = np.zeros((n, 4))   # ttft sum, ttft count, tps sum, tps count
    wins = np.zeros((n, n))   # decisive wins of row over column
    for (i, j), y, row in zip(battles.pairs, battles.outcomes, rows):
        count = row[3]
        games[[i, j]] += count
        score[i] += y * count
        score[j] += (1 - y) * count
        sums[i] += [row[4] or 0, row[5], row[8] or 0, row[9]]
        sums[j] += [row[6] or 0, row[7], row[10] or 0, row[11]]
        if y == 1:
            wins[i, j] += count
        elif y == 0:
            wins[j, i] += count
    label = [(names or {}).get(m, m) for m in battles.models]
    table = pd.DataFrame({
        "rank": ci_rank(lower, upper), "model": label, "rating": ratings.round(1),
        "ci_95": ci_text(ratings, lower, upper),
        "ci_low": lower.round(1), "ci_high": upper.round(1), "battles": games.astype(int),
        "win_rate": (score / games).round(3),
        "mean_tokens_per_s": np.where(sums[:, 3] > 0, sums[:, 2] / np.maximum(sums[:, 3], 1), np.nan).round(1),
        "mean_ttft_s": np.where(sums[:, 1] > 0, sums[:, 0] / np.maximum(sums[:, 1], 1), np.nan).round(2),
        "median_tokens_per_s": [round((median_speed or {}).get(m, np.nan), 1) for m in battles.models],
    }).sort_values(["rating"], ascending=False, ignore_index=True)
    decisive = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(decisive > 0, wins / decisive, np.nan)
    matrix = pd.DataFrame(fraction, index=label, columns=label)
    ranked = list(table["model"])
    return table, matrix.loc[ranked, ranked]


LEADERBOARD_COLUMNS = ["rank", "model", "rating", "ci_95", "ci_low", "ci_high", "battles", "win_rate",
                       "mean_tokens_per_s", "mean_ttft_s", "median_tokens_per_s"]


def named_table(rows: list[tuple], names: dict[str, str] | None = None) -> pd.DataFrame:
    """Plain win/tie/loss counts of named (not rated) votes, shown apart from the ratings."""
    stats: dict[str, list[float]] = {}
    for a, b, winner, count, *_ in rows:
        y = OUTCOME[winner]
        for model, result in ((a, y), (b, 1 - y)):
            s = stats.setdefault(model, [0, 0, 0, 0])
            s[0] += count
            s[1 if result == 1 else 2 if result == 0.5 else 3] += count
    frame = pd.DataFrame([{"model": (names or {}).get(m, m), "battles": s[0], "wins": s[1], "ties": s[2],
                           "losses": s[3], "win_rate": round((s[1] + 0.5 * s[2]) / s[0], 3)}
                          for m, s in stats.items()],
                         columns=["model", "battles", "wins", "ties", "losses", "win_rate"])
    return frame.sort_values("win_rate", ascending=False, ignore_index=True)


def median_speeds(samples: list[tuple[str, float]]) -> dict[str, float]:
    """Median decode tokens/s per model over every side it played in rated battles."""
    if not samples:
        return {}
    frame = pd.DataFrame(samples, columns=["model", "tps"])
    return frame.groupby("model")["tps"].median().to_dict()


MIN_BATTLES = 10  # fewer rated battles than this: the table says so instead of showing meaningless intervals


def from_store(store, names: dict[str, str] | None = None, rounds: int = 100, seed: int = 42,
               include_imported: bool = True, category: str | None = None, language: str | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(rated leaderboard, win-fraction matrix, named-votes table) straight from the database;
    ``include_imported=False`` leaves out battles imported from files (origin other than 'local'); ``category``
    and ``language`` keep only battles of that preset category and language."""
    table, matrix = rated_table(store.rating_aggregates("rated", include_imported, category, language), names,
                                rounds, seed, median_speeds(store.speed_samples(include_imported)))
    return table, matrix, named_table(store.rating_aggregates("named", include_imported, category, language), names)


def styled_battles(store, include_imported: bool = True, category: str | None = None,
                   language: str | None = None) -> list[dict]:
    """Every rated battle with both answers' style features; features not stored yet (battles voted or
    imported before style control, or under an older definition) are computed once and stored."""
    from arena.ratings import style

    battles = store.rated_battles(include_imported, category, language)
    missing = [b["id"] for b in battles if b["style_a"] is None or b["version"] != style.VERSION]
    if missing:
        texts = store.answer_texts(missing)
        rows = [{"round_id": rid, "version": style.VERSION, "style_a": style.features(a for a, _ in texts[rid]),
                 "style_b": style.features(b for _, b in texts[rid])} for rid in missing]
        store.save_styles(rows)
        computed = {r["round_id"]: r for r in rows}
        for b in battles:
            if b["id"] in computed:
                b.update(style_a=computed[b["id"]]["style_a"], style_b=computed[b["id"]]["style_b"])
    return battles


@dataclass
class Board:
    """Everything the human leaderboard shows for one selection (category, language, imported or not)."""

    table: pd.DataFrame         # plain Bradley-Terry
    matrix: pd.DataFrame        # win fractions
    named: pd.DataFrame         # named votes, not rated
    style: pd.DataFrame         # style-controlled ratings with each model's rank change
    coefficients: pd.DataFrame  # the fitted style coefficients
    battles: int                # rated battles the tables rest on

    @property
    def enough(self) -> bool:
        return self.battles >= MIN_BATTLES


def board(store, names: dict[str, str] | None = None, rounds: int = 100, seed: int = 42,
          include_imported: bool = True, category: str | None = None, language: str | None = None) -> Board:
    """The plain and the style-controlled leaderboard of one selection (the style fit only with enough battles)."""
    from arena.ratings.style_control import COEFFICIENT_COLUMNS, STYLE_COLUMNS, style_table

    table, matrix, named = from_store(store, names, rounds, seed, include_imported, category, language)
    battles = int(table["battles"].sum() // 2) if not table.empty else 0
    style, coefficients = pd.DataFrame(columns=STYLE_COLUMNS), pd.DataFrame(columns=COEFFICIENT_COLUMNS)
    if battles >= MIN_BATTLES:
        style, coefficients = style_table(styled_battles(store, include_imported, category, language), table,
                                          names, rounds, seed)
    return Board(table, matrix, named, style, coefficients, battles)


class Memo:
    """Values by the key they were computed for (the newest ``size`` keys): recompute only for a new key.

    The page's leaderboard handlers run in Gradio's worker threads, several at once: the lock keeps a
    value paired with its own key and lets one computation serve the threads waiting for it. Keys carry the
    store's version, so a vote makes every older entry unreachable; they age out."""

    def __init__(self, size: int = 1) -> None:
        self._values: OrderedDict[tuple, object] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], object]):
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
            else:
                self._values[key] = compute()
                while len(self._values) > self._size:
                    self._values.popitem(last=False)
            return self._values[key]


SELECTIONS_KEPT = 32  # category x language x imported selections cached at once


class CachedLeaderboard:
    """``board`` recomputed only when a vote changed it (votes_version), not on every page view: each selection
    (category, language, imported battles or not; the plain and the style-controlled table together) is kept
    until the next vote, the newest SELECTIONS_KEPT of them."""

    def __init__(self, store, rounds: int = 100, seed: int = 42):
        self.store, self.rounds, self.seed = store, rounds, seed
        self._memo = Memo(SELECTIONS_KEPT)

    def get(self, names: dict[str, str], include_imported: bool = True, category: str | None = None,
            language: str | None = None) -> Board:
        key = (self.store.votes_version(), tuple(sorted(names.items())), include_imported, category, language)
        return self._memo.get(key, lambda: board(self.store, names, self.rounds, self.seed, include_imported,
                                                 category, language))


class CachedJudgeTable:
    """``judge_table`` recomputed only when a verdict, grade or judgment was stored
    or replaced, not on every page view: like the human table, its bootstrap refits Bradley-Terry ``rounds``
    times."""

    def __init__(self, store, rounds: int = 100, seed: int = 42):
        self.store, self.rounds, self.seed = store, rounds, seed
        self._memo = Memo()

    def version(self) -> tuple:
        """Changes whenever a stored judgment or grade does: the key of anything computed from them."""
        return (*self.store.judgments_version(), *self.store.grading_version())

    def get(self, names: dict[str, str], judge: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        key = (self.version(), tuple(sorted(names.items())), judge)
        return self._memo.get(key, lambda: judge_table(self.store, names, judge, self.rounds, self.seed))


def judge_table(store, names: dict[str, str] | None = None, judge: str | None = None, rounds: int = 100,
                seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bradley-Terry table and win matrix from the graders' pair verdicts only (never mixed with votes).

    Each graded pair counts once per grader and method (a generative judge's after both orders, disagreement
    = tie); pairs without a verdict are left out. ``judge`` restricts it to one grader. Judgments stored
    before verdicts were (the generative judge of earlier versions) count as that judge's verdicts."""
    from arena.grading import judge as J

    merged: dict[tuple[str, str, str], int] = {}
    verdicts = store.verdict_matchups(judge)
    for v in verdicts:
        if v["winner"]:
            merged[(v["model_a"], v["model_b"], v["winner"])] = merged.get((v["model_a"], v["model_b"], v["winner"]), 0) + 1
    recorded = {(v["pair_id"], v["grader"]) for v in verdicts if v["method"] == "generate"}
    judgments = [j for j in store.judged_matchups(judge) if (j["pair_id"], j["judge"]) not in recorded]
    pairs = list({j["pair_id"]: {"id": j["pair_id"], "model_a": j["model_a"], "model_b": j["model_b"]}
                  for j in judgments}.values())
    for judge_id in sorted({j["judge"] for j in judgments}):
        for a, b, w, n, *_ in J.judge_rows(pairs, J.verdicts_by_pair(judgments, judge_id)):
            merged[(a, b, w)] = merged.get((a, b, w), 0) + n
    return rated_table([(a, b, w, n, None, 0, None, 0, None, 0, None, 0) for (a, b, w), n in merged.items()],
                       names, rounds, seed)
