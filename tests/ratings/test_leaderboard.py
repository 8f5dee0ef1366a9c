"""Unit: the Bradley-Terry fit matches FastChat's conventions and the bootstrap is reproducible."""
import math

import numpy as np

from arena.ratings import leaderboard
from arena.ratings.leaderboard import Battles, bootstrap, fit_bt


def ratings(rows):
    battles = Battles.from_rows(rows)
    return dict(zip(battles.models, fit_bt(battles)))


def test_75_percent_of_decisive_games_is_a_190_8_point_gap():
    r = ratings([("a", "b", "model_a", 300), ("a", "b", "model_b", 100)])
    assert abs((r["a"] - r["b"]) - 400 * math.log10(3)) < 0.5
    assert abs((r["a"] + r["b"]) / 2 - 1000) < 1e-6  # anchored: mean rating 1000


def test_ties_and_both_bad_count_as_half_wins():
    # 2 wins + 2 ties of 4 games = 75% score, same as 3 wins of 4
    with_ties = ratings([("a", "b", "model_a", 200), ("a", "b", "tie", 100), ("a", "b", "tie (bothbad)", 100)])
    plain = ratings([("a", "b", "model_a", 300), ("a", "b", "model_b", 100)])
    assert abs((with_ties["a"] - with_ties["b"]) - (plain["a"] - plain["b"])) < 0.5
    assert abs(ratings([("a", "b", "tie", 50)])["a"] - 1000) < 1e-6


def test_side_does_not_matter():
    r = ratings([("a", "b", "model_a", 30), ("b", "a", "model_b", 30), ("a", "b", "model_b", 20)])
    assert r["a"] > r["b"]


def test_a_model_with_only_wins_gets_a_finite_rating():
    r = ratings([("a", "b", "model_a", 10), ("b", "c", "model_a", 5), ("c", "b", "model_a", 5)])
    assert all(np.isfinite(v) for v in r.values())
    assert r["a"] > r["b"] and r["a"] - r["b"] < 2000


def test_bootstrap_is_seeded_and_reproducible():
    battles = Battles.from_rows([("a", "b", "model_a", 30), ("a", "b", "model_b", 10), ("b", "c", "tie", 5)])
    first, second = bootstrap(battles, 100, seed=3), bootstrap(battles, 100, seed=3)
    assert first.shape == (100, 3)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, bootstrap(battles, 100, seed=4))


def test_table_has_rank_ci_win_rate_and_speed():
    rows = [("a", "b", "model_a", 60, 12.0, 60, 30.0, 60, 600.0, 60, 1200.0, 60),
            ("a", "b", "model_b", 20, 4.0, 20, 10.0, 20, 200.0, 20, 400.0, 20)]
    table, matrix = leaderboard.rated_table(rows, {"a": "Model A name"})
    top = table.iloc[0]
    assert top["model"] == "Model A name" and top["rank"] == 1 and top["battles"] == 80
    assert top["ci_low"] < top["rating"] < top["ci_high"]
    assert top["win_rate"] == 0.75 and top["mean_tokens_per_s"] == 10.0 and top["mean_ttft_s"] == 0.2
    assert matrix.loc["Model A name", "b"] == 0.75


def test_readers_at_once_share_one_computation_and_get_its_value():
    """Eight page handlers ask for the leaderboard at once (Gradio runs them in threads) after a vote: the
    bootstrap runs once, not eight times, and every caller gets the value of its own key (before the lock,
    eight threads computed side by side and a key could end up paired with another key's value)."""
    import threading
    import time

    from arena.ratings.leaderboard import Memo

    memo, calls, results = Memo(), [], []

    def compute(key: str) -> str:
        calls.append(key)
        time.sleep(0.2)  # a bootstrap of 100 Bradley-Terry fits
        return key

    def reader(key: str) -> None:
        results.append((key, memo.get((key,), lambda: compute(key))))
    threads = [threading.Thread(target=reader, args=("after-vote",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["after-vote"] and results == [("after-vote", "after-vote")] * 8
