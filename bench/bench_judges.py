"""Benchmark: how local judges agree with each other (and with human votes, where there are any)
on the same pairs, every judgment in both orders, under one or more judge prompt versions.

    .venv/bin/python bench/bench_judges.py --run RUN_ID --judges qwen2.5-coder-1.5b-q4km,qwen2.5-coder-0.5b-q4km
    .venv/bin/python bench/bench_judges.py --file votes.jsonl --judges ... --versions pairwise-ref-v1,pairwise-ref-v2

The pairs come from a stored batch run (its current answers) or a FastChat battle file (our export:
presets get their reference answers from prompts.yaml). Verdicts of the current prompt version go to
the database like any other judgment (so a second call, or an earlier ``python -m arena judge``,
is reused); other versions are judged in memory and written to ``--out`` (the judgments table keeps
one verdict per pair, judge and order). Then per judge and version: unparsed and inconsistent
shares, how often the longer answer wins, agreement with the human votes in the pairs (if any)
and with the length baseline; and for every two judges, per version, their agreement (with and
without ties, Cohen's kappa) on pairs both gave a verdict for.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.grading import judge as J  # noqa: E402


def pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f}%"


def agreement_cell(a: J.Agreement | None) -> str:
    return "–" if not a else f"{pct(a.with_ties)} / {pct(a.without_ties)} (n={a.n_decisive}) / {a.kappa:.2f}"


def label_counts(rows: list[dict]) -> str:
    """How often each label was given, over single judgments (one order each): a judge that answers
    TIE to everything parses fine and says nothing."""
    counts = {label: sum(r["label"] == label for r in rows) for label in (*J.LABELS, "unparsed")}
    return " ".join(f"{label} {n}" for label, n in counts.items() if n)


def quality_row(judge: str, version: str, seconds: float, pairs: list[dict], verdicts: dict[str, J.Verdict],
                rows: list[dict]) -> str:
    """One Markdown row of the per-judge table."""
    q = J.quality(pairs, verdicts)
    human = "no human votes" if not q.judge_vs_human else agreement_cell(q.judge_vs_human)
    return (f"| {judge} | {version} | {seconds:.0f} | {label_counts(rows)} | {q.unparsed}/{q.pairs} | "
            f"{pct(q.inconsistency_rate)} "
            f"({q.inconsistent}/{q.pairs - q.unparsed}) | {pct(q.longer_wins_rate)} (n={q.longer_wins_n}) | {human} | "
            f"{agreement_cell(q.length_vs_human)} |")


def cross_agreement(pairs: list[dict], x: dict[str, J.Verdict], y: dict[str, J.Verdict]) -> J.Agreement:
    """Agreement of two judges on the pairs both gave a verdict for (three classes: A, B, tie)."""
    both = [p["id"] for p in pairs if x.get(p["id"]) and y.get(p["id"]) and x[p["id"]].winner and y[p["id"]].winner]
    return J.agreement([J.outcome(x[i].winner) for i in both], [J.outcome(y[i].winner) for i in both])


def main() -> None:
    from arena.batch.runner import build_pairs, judge_batch, judge_params, judge_pending
    from arena.core.config import load_models, load_prompts
    from arena.grading.judge_file import read_pairs, with_references
    from arena.serving.client import batch_chat
    from arena.serving.supervisor import Supervisor
    from arena.storage.store import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run")
    source.add_argument("--file", type=Path)
    parser.add_argument("--judges", required=True, help="comma-separated judge model ids")
    parser.add_argument("--versions", default=J.PROMPT_VERSION,
                        help=f"comma-separated judge prompt versions ({', '.join(J.PROTOCOLS)}); default: current")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--catalog", type=Path, default=ROOT / "models.yaml")
    parser.add_argument("--prompts", type=Path, default=ROOT / "prompts.yaml")
    parser.add_argument("--out", type=Path, help="JSONL of every judgment made in memory (other versions)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads per judge worker (default: all cores; 1 on a host busier than its cores, "
                             "where llama.cpp's threads wait on each other: BENCHMARKS.md §10)")
    args = parser.parse_args()
    versions = args.versions.split(",")
    unknown = [v for v in versions if v not in J.PROTOCOLS]
    if unknown:
        parser.error(f"unknown prompt version(s) {', '.join(unknown)}; known: {', '.join(J.PROTOCOLS)}")
    store = Store(args.data_dir / "arena.db")
    if args.run:
        run = store.batch_run(args.run)
        pairs = build_pairs(args.run, run["config"], store.batch_answers(args.run))
    else:
        pairs = with_references(read_pairs(args.file), load_prompts(args.prompts))
    store.save_judge_pairs(pairs)
    ids = {p["id"] for p in pairs}
    judges = args.judges.split(",")
    todos = {(judge, version): judge_pending(store, pairs, judge, version=version) if version == J.PROMPT_VERSION
             else [(p, s) for p in pairs for s in ("ab", "ba")] for judge, version in itertools.product(judges, versions)}
    busy = {judge for (judge, _), todo in todos.items() if todo}  # only judges with work get a worker
    catalog = [m for m in load_models(args.catalog) if m.id in busy]
    supervisor = Supervisor(catalog, args.catalog, args.data_dir, threads=args.threads)
    supervisor.start()
    verdicts: dict[tuple[str, str], dict[str, J.Verdict]] = {}
    seconds: dict[tuple[str, str], float] = {}
    in_memory: list[dict] = []
    judged: dict[tuple[str, str], list[dict]] = {}
    try:
        supervisor.wait_until_settled(900)
        for judge, version in itertools.product(judges, versions):
            stored, todo = version == J.PROMPT_VERSION, todos[judge, version]
            base = supervisor.endpoint(judge) if todo else ""
            started, rows = time.perf_counter(), []
            for at in range(0, len(todo), 8):
                chunk = judge_batch(lambda reqs, limit, url=base, model=judge:
                                    batch_chat(url, model, reqs, judge_params(limit),
                                               api_key=supervisor.api_key(model)).answers,
                                    todo[at:at + 8], judge, version)
                if stored:
                    store.save_judgments(chunk)
                else:
                    rows.extend(chunk)
                print(f"{judge} {version}: {min(at + 8, len(todo))}/{len(todo)}", flush=True)
            seconds[judge, version] = time.perf_counter() - started
            if stored:
                rows = [j for j in store.judgments(judge) if j["pair_id"] in ids and j["prompt_version"] == version]
            in_memory += [] if stored else rows
            verdicts[judge, version] = J.verdicts_by_pair(rows)
            judged[judge, version] = rows
            # Each row as soon as it is known: on a busy host a long run may be stopped before the tables.
            print(quality_row(judge, version, seconds[judge, version], pairs, verdicts[judge, version], rows),
                  flush=True)
    finally:
        supervisor.stop()
    if args.out and in_memory:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in in_memory)
    print(f"\n{len(pairs)} pairs, each judged in both orders; {sum(bool(p['human_winner']) for p in pairs)} "
          f"with a human vote\n")
    print("| judge | prompt | judging time, s (this call) | labels given (both orders) | unparsed pairs | inconsistent "
          "after the swap | longer answer wins | agreement with human votes (with ties / without ties (n) / kappa) | "
          "length baseline vs human votes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for judge, version in itertools.product(judges, versions):
        print(quality_row(judge, version, seconds[judge, version], pairs, verdicts[judge, version],
                          judged[judge, version]))
    print("\n| prompt | judge x | judge y | pairs both gave a verdict | agreement with ties | without ties (n) | kappa |")
    print("|---|---|---|---|---|---|---|")
    for version in versions:
        for x, y in itertools.combinations(judges, 2):
            a = cross_agreement(pairs, verdicts[x, version], verdicts[y, version])
            print(f"| {version} | {x} | {y} | {a.n} | {pct(a.with_ties)} | {pct(a.without_ties)} ({a.n_decisive}) | "
                  f"{a.kappa:.2f} |")


if __name__ == "__main__":
    main()
