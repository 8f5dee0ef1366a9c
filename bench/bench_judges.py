"""Benchmark: how local judges agree with each other (and with human votes, where there are any)
on the same pairs, every judgment in both orders.

    .venv/bin/python bench/bench_judges.py --run RUN_ID --judges qwen2.5-coder-1.5b-q4km,qwen2.5-coder-0.5b-q4km
    .venv/bin/python bench/bench_judges.py --file battles.jsonl --judges ...

The pairs come from a stored batch run (its current answers) or a FastChat battle file. Verdicts go
to the database like any other judgment (so a second call reuses them), then per judge: unparsed
and inconsistent shares, how often the longer answer wins, agreement with the human votes in the
pairs (if any) and with the length baseline; and for every two judges their agreement (with and
without ties, Cohen's kappa) on pairs both could judge.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f}%"


def main() -> None:
    from arena import judge as J
    from arena.batch import build_pairs, judge_batch, judge_params
    from arena.client import batch_chat
    from arena.config import load_models
    from arena.judge_file import read_pairs
    from arena.store import Store
    from arena.supervisor import Supervisor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run")
    source.add_argument("--file", type=Path)
    parser.add_argument("--judges", required=True, help="comma-separated judge model ids")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--catalog", type=Path, default=ROOT / "models.yaml")
    args = parser.parse_args()
    store = Store(args.data_dir / "arena.db")
    if args.run:
        run = store.batch_run(args.run)
        pairs = build_pairs(args.run, run["config"], store.batch_answers(args.run))
    else:
        pairs = read_pairs(args.file)
    store.save_judge_pairs(pairs)
    judges = args.judges.split(",")
    catalog = [m for m in load_models(args.catalog) if m.id in judges]
    supervisor = Supervisor(catalog, args.catalog, args.data_dir, threads=os.cpu_count())
    supervisor.start()
    verdicts: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    try:
        supervisor.wait_until_settled(900)
        for judge in judges:
            base = supervisor.endpoint(judge)
            done = {(j["pair_id"], j["shown"]) for j in store.judgments(judge)
                    if j["prompt_version"] == J.PROMPT_VERSION and j["attempts"] > 0}
            todo = [(p, s) for p in pairs for s in ("ab", "ba") if (p["id"], s) not in done]
            started = time.perf_counter()
            for at in range(0, len(todo), 8):
                chunk = todo[at:at + 8]
                ask = partial(lambda r, url, model: batch_chat(url, model, r, judge_params()).answers,
                              url=base, model=judge)
                store.save_judgments(judge_batch(ask, chunk, judge))
                print(f"{judge}: {min(at + 8, len(todo))}/{len(todo)}", flush=True)
            seconds[judge] = time.perf_counter() - started
            ids = {p["id"] for p in pairs}
            verdicts[judge] = J.verdicts_by_pair([j for j in store.judgments(judge) if j["pair_id"] in ids])
    finally:
        supervisor.stop()
    print(f"\n{len(pairs)} pairs, each judged in both orders\n")
    print("| judge | judging time, s (this call) | unparsed | inconsistent | longer answer wins | agreement with "
          "humans (with ties / without / kappa) | length baseline vs humans |")
    print("|---|---|---|---|---|---|---|")
    for judge in judges:
        q = J.quality(pairs, verdicts[judge])
        human = "no human votes" if not q.judge_vs_human else \
            f"{pct(q.judge_vs_human.with_ties)} / {pct(q.judge_vs_human.without_ties)} / {q.judge_vs_human.kappa:.2f}"
        base = "–" if not q.length_vs_human else \
            f"{pct(q.length_vs_human.with_ties)} / {pct(q.length_vs_human.without_ties)} / {q.length_vs_human.kappa:.2f}"
        print(f"| {judge} | {seconds[judge]:.0f} | {q.unparsed}/{q.pairs} | {pct(q.inconsistency_rate)} "
              f"({q.inconsistent}) | {pct(q.longer_wins_rate)} (n={q.longer_wins_n}) | {human} | {base} |")
    print("\n| judge x | judge y | pairs both parsed | agreement with ties | without ties (n) | kappa |")
    print("|---|---|---|---|---|---|")
    for x, y in itertools.combinations(judges, 2):
        both = [p["id"] for p in pairs if verdicts[x].get(p["id"]) and verdicts[y].get(p["id"])
                and verdicts[x][p["id"]].winner and verdicts[y][p["id"]].winner]
        a = J.agreement([J.outcome(verdicts[x][i].winner) for i in both], [J.outcome(verdicts[y][i].winner) for i in both])
        print(f"| {x} | {y} | {a.n} | {pct(a.with_ties)} | {pct(a.without_ties)} ({a.n_decisive}) | {a.kappa:.2f} |")


if __name__ == "__main__":
    main()
