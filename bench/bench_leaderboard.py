"""Benchmark: stored battles -> finished leaderboard (BT fit + 100-resample bootstrap CIs).

    .venv/bin/python bench/bench_leaderboard.py [--battles 1000000] [--models 20]

Fills a fresh SQLite database with synthetic blind battles (true strengths drawn at
random, outcomes sampled from the Bradley-Terry model), then times
``leaderboard.from_store``: the SQL aggregation, the fit and the bootstrap.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from arena.ratings import leaderboard  # noqa: E402
from arena.storage.store import RoundRecord, Store  # noqa: E402


def fill(store: Store, battles: int, models: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    strength = rng.normal(0, 1, models)
    a = rng.integers(0, models, battles)
    b = (a + rng.integers(1, models, battles)) % models
    p = 1 / (1 + np.exp(-(strength[a] - strength[b])))
    u = rng.random(battles)
    winner = np.where(u < p * 0.9, "model_a", np.where(u < 0.9, "model_b", "tie"))
    template = RoundRecord(id="", tstamp=0.0, session="bench", mode="blind", model_a="", model_b="",
                           rated=1, winner="model_a", ttft_a=0.3, ttft_b=0.4, tps_a=20.0, tps_b=30.0)
    base = Store._to_row(template)
    rows = [{**base, "id": f"b{i}", "model_a": f"model-{a[i]:02d}", "model_b": f"model-{b[i]:02d}",
             "winner": str(winner[i])} for i in range(battles)]
    store.insert_round_rows(rows, chunk=50_000)
    return strength


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--battles", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        started = time.perf_counter()
        fill(store, args.battles, args.models)
        print(f"filled {args.battles:,} battles among {args.models} models in {time.perf_counter() - started:.1f} s")
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            table, matrix, _ = leaderboard.from_store(store, rounds=100, seed=42)
            times.append(time.perf_counter() - started)
        print(table.head(5).to_string(index=False))
        print(f"\nstored battles -> leaderboard with 95% CIs (100 bootstrap resamples): "
              f"best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s over {args.repeats} runs "
              f"(target <= 2 s)")


if __name__ == "__main__":
    main()
