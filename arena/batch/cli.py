"""The ``batch``, ``judge`` and ``report`` subcommands of ``python -m arena``.

Each checks everything it can (ids, presets, files, runs) before starting a worker, starts
only the workers it needs, shows a progress bar with the ETA, and stops its workers on the
way out, Ctrl-C included (a batch run then prints the command that resumes it).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from arena.core.config import (
    DEFAULT_MODELS_FILE,
    DEFAULT_PROMPTS_FILE,
    ModelConfig,
    default_data_dir,
    load_models,
    load_prompts,
    started_by_default,
)
from arena.grading import grades as G
from arena.grading.grader import METHODS
from arena.storage.store import add_database_flag, open_store


def add_batch_commands(sub: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    """The batch, judge, quality and report subcommands; returns the two that the caller gives --models,
    --prompts and --data-dir."""
    _add_batch_parser(sub)
    judge = _add_judge_parser(sub)
    _add_quality_parser(sub)
    check = _add_grader_check_parser(sub)
    report = sub.add_parser("report", help="write a batch run's report (HTML + Markdown)")
    report.add_argument("run_id")
    report.add_argument("--compare", metavar="OTHER_RUN", help="also show per-question changes against this run")
    report.add_argument("--out", type=Path, help="directory (default: <data dir>/reports)")
    return [judge, report, check]


def _add_batch_parser(sub: argparse._SubParsersAction) -> None:
    batch = sub.add_parser("batch", help="run presets through models, judge both orders, write the report")
    batch.add_argument("--models", dest="models_list", metavar="ID,ID",
                       help="comma-separated model ids (default: every model that becomes ready)")
    # --models names model ids here (as the command line does), so the catalog file is --catalog.
    batch.add_argument("--catalog", dest="models", type=Path, default=DEFAULT_MODELS_FILE,
                       help="model catalog (default: models.yaml)")
    batch.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS_FILE, help="preset questions")
    batch.add_argument("--data-dir", type=Path, default=default_data_dir(), help="database, models, reports")
    add_database_flag(batch)
    batch.add_argument("--category", help="only presets of this category")
    batch.add_argument("--preset", nargs="+", action="extend", metavar="ID", help="only these preset ids")
    batch.add_argument("--repeats", type=int, default=1, help="answers per question and model (default 1)")
    batch.add_argument("--judge", help="grader model id, or 'none' for assertions only (default: the local model "
                                       "with the largest weights on disk)")
    batch.add_argument("--method", choices=METHODS, default="auto",
                       help="auto (default): assertions where the preset has them, else an exact check where the "
                            "reference is a number, a choice or yes/no, else the grader's P(yes) against the "
                            "reference (not from a grader measured below the bars); assert (rules only); reference; "
                            "pairwise (P(A better), both orders); generate (the generative judge: a reason, then a "
                            "verdict, both orders)")
    batch.add_argument("--margin", type=float, default=None,
                       help=f"how much better a grade must be to win a pair (default {G.DEFAULT_MARGIN}; with --method "
                            f"reference or pairwise {G.PAIRWISE_MARGIN}: calibrated on the labelled set, BENCHMARKS.md "
                            f"§13)")
    batch.add_argument("--concurrency", type=int, default=8,
                       help="requests in flight to a model server without the arena's batch endpoint (vLLM, Ollama, "
                            "llama.cpp's server), default 8")
    batch.add_argument("--out", type=Path, help="report directory (default: <data dir>/reports)")
    batch.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run; asks only what is missing")
    batch.add_argument("--fresh", action="store_true", help="ask and judge again even what is stored")
    batch.add_argument("--temperature", type=float, default=0.0, help="default 0: greedy, reproducible")
    batch.add_argument("--top-p", type=float, default=1.0)
    batch.add_argument("--seed", type=int, default=0, help="base seed; repeat r uses seed + r")
    batch.add_argument("--max-new-tokens", type=int, default=512)
    batch.add_argument("--system-prompt", default="")
    batch.add_argument("--batch-size", type=int, default=8,
                       help="questions per worker call, decoded together where the engine can (default 8)")
    batch.add_argument("--threads", type=int, default=None,
                       help="threads per worker (default: all cores; a batch asks one model at a time)")
    batch.add_argument("--load-timeout", type=float, default=900.0, help="seconds to wait for models to load")


def _add_judge_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    judge = sub.add_parser("judge", help="grade a FastChat-format battle file and measure against its votes")
    judge.add_argument("file", type=Path)
    judge.add_argument("--judge", help="grader model id (default: the local model with the largest weights on disk)")
    judge.add_argument("--method", choices=METHODS, default="auto",
                       help="auto (default): each answer against the preset's reference where the battle names one "
                            "(and its assertions), else pairwise by probability; or assert, reference, pairwise, "
                            "generate")
    judge.add_argument("--margin", type=float, default=None,
                       help=f"default {G.DEFAULT_MARGIN} ({G.PAIRWISE_MARGIN} with --method reference or pairwise)")
    judge.add_argument("-o", "--output", type=Path, help="verdicts JSONL (default: <data dir>/judgments/...)")
    judge.add_argument("--threads", type=int, default=None)
    judge.add_argument("--load-timeout", type=float, default=900.0)
    return judge


def _add_grader_check_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    check = sub.add_parser("grader-check", help="measure grader models against labelled answers (bench/heldout and "
                                                "--labels), and fit their pass threshold and margin per language")
    check.add_argument("--graders", metavar="ID,ID",
                       help="grader model ids (default: the local model with the largest weights on disk)")
    check.add_argument("--labels", type=Path, metavar="FILE",
                       help="your own labelled answers, JSONL: question, reference, answer, label (correct, partly "
                            "correct or wrong), and optionally language, model, question_id")
    check.add_argument("--without-heldout", action="store_true",
                       help="measure on your own labels only (the review's and --labels), not bench/heldout's")
    check.add_argument("--threads", type=int, default=None)
    check.add_argument("--load-timeout", type=float, default=900.0)
    return check


def _add_quality_parser(sub: argparse._SubParsersAction) -> None:
    quality = sub.add_parser("quality", help="what INT4 costs: each model's next-token distributions against a "
                                             "full-precision reference over a fixed text")
    quality.add_argument("--models", dest="models_list", metavar="ID,ID", required=True,
                         help="comma-separated model ids to measure")
    quality.add_argument("--reference", metavar="ID",
                         help="the full-precision model (default: the one the candidates' entries name as 'reference')")
    quality.add_argument("--text", type=Path, help="UTF-8 text to score (default: arena/data/quality-text.md, "
                                                   "2,176 Qwen tokens of Chinese and English)")
    quality.add_argument("--tokens", type=int, help="score only the first N tokens of the text (at least 16)")
    quality.add_argument("--catalog", dest="models", type=Path, default=DEFAULT_MODELS_FILE,
                         help="model catalog (default: models.yaml)")
    quality.add_argument("--data-dir", type=Path, default=default_data_dir(), help="database, models, caches")
    add_database_flag(quality)
    quality.add_argument("--threads", type=int, default=None, help="threads per worker (default: all cores)")
    quality.add_argument("--load-timeout", type=float, default=900.0, help="seconds to wait for a model to load")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _start_workers(catalog: list[ModelConfig], ids: set[str] | None, args: argparse.Namespace):
    """A Supervisor for the models a command needs (all of them when ``ids`` is None), loaded."""
    from arena.serving.supervisor import Supervisor

    models = [m for m in (started_by_default(catalog) if ids is None else catalog) if ids is None or m.id in ids]
    supervisor = Supervisor(models, args.models, Path(args.data_dir), threads=args.threads or os.cpu_count())
    supervisor.start()
    print(f"loading {len(models)} model(s): {', '.join(m.id for m in models)} …", file=sys.stderr, flush=True)
    for status in supervisor.wait_until_settled(args.load_timeout):
        print(f"  {status.id}: {status.describe()}", file=sys.stderr)
    return supervisor


def _bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="item", dynamic_ncols=True, smoothing=0.1)


def _shown_on(bar):
    """A progress callback that moves ``bar`` to a runner's Progress (done, total, phase)."""
    def show(progress) -> None:
        bar.total = progress.total
        bar.n = progress.done
        bar.set_description(progress.phase)
        bar.refresh()
    return show


def _needed_models(args: argparse.Namespace, catalog: list[ModelConfig], prompts: list, store,
                   models: list[str] | None) -> set[str] | None:
    """The models a batch run will load (None: every model started by default), after refusing, without a model,
    everything that can be refused (BatchError): unknown or retired ids, a run to resume that is not stored, no
    presets."""
    from arena.batch.runner import BatchError, choose_judge, select_presets

    known = {m.id for m in catalog}
    retired = {m.id for m in catalog if m.retired}
    for model_id in (models or []) + ([args.judge] if args.judge and args.judge != "none" else []):
        if model_id not in known:
            raise BatchError(f"unknown model id {model_id!r}; known: {', '.join(known)}")
        if model_id in retired:
            raise BatchError(f"{model_id} is retired (models.yaml 'retired: true'); remove the flag to run it again")
    if args.resume:
        run = store.batch_run(args.resume)
        if run is None:
            raise BatchError(f"no batch run {args.resume!r} to resume")
        return set(run["config"]["models"]) | ({run["config"]["judge"]} if run["config"].get("judge") else set())
    select_presets(prompts, args.preset, args.category)
    if args.judge is None and args.method != "assert":  # the grader, picked from the files: load only it
        args.judge = choose_judge(catalog) or "none"
    return set(models) | ({args.judge} - {"none"}) if models else None


def batch_command(args: argparse.Namespace) -> int:
    from arena.batch.runner import BatchError, BatchSettings

    catalog = load_models(args.models)
    prompts = load_prompts(args.prompts)
    store = open_store(args)
    models = [m.strip() for m in args.models_list.split(",") if m.strip()] if args.models_list else None
    if args.models_list is not None and not models:
        return _fail("--models is empty; name at least one model id")
    try:
        needed = _needed_models(args, catalog, prompts, store, models)
    except BatchError as exc:
        return _fail(str(exc))
    settings = BatchSettings(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                             seed=args.seed, repeats=args.repeats, system_prompt=args.system_prompt,
                             batch_size=args.batch_size, concurrency=args.concurrency)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    supervisor = _start_workers(catalog, needed, args)
    try:
        return _run_batch(args, supervisor, store, prompts, models, settings)
    finally:
        supervisor.stop()


def _run_batch(args: argparse.Namespace, supervisor, store, prompts: list, models: list[str] | None,
               settings) -> int:
    """Plan, run and report a batch with the workers loaded; an interrupted run says how to continue it."""
    from arena.batch import report
    from arena.batch.runner import BatchError, BatchRunner

    bar = None
    plan = None
    try:
        runner = BatchRunner(supervisor, store, prompts)
        try:
            plan = runner.plan(models, args.preset, args.category, settings, args.judge, args.resume, args.fresh,
                               args.method, args.margin)
        except BatchError as exc:
            return _fail(str(exc))
        print(f"run {plan.run_id}: {len(plan.presets)} preset(s) × {len(plan.models)} model(s) × "
              f"{plan.settings.repeats} repeat(s); grading: {plan.method}, grader {plan.judge or 'none'}"
              + (" (also a contestant: self-grading is flagged in the report)" if plan.judge in plan.models else ""),
              file=sys.stderr, flush=True)
        if plan.refused:
            print(report.refused_words(plan.refused, graded_elsewhere=bool(plan.judge)), file=sys.stderr, flush=True)
        for line in report.calibration_words(plan.calibration):
            print(line, file=sys.stderr, flush=True)
        bar = _bar(0)
        status = runner.run(plan, _shown_on(bar))
        bar.close()
        html_path, md_path = report.write_report(store, plan.run_id, args.out or Path(args.data_dir) / "reports")
        print(f"run {plan.run_id}: {status}\nreport: {html_path}\nmarkdown: {md_path}")
        return 0
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if plan is not None:
            print(f"\ninterrupted; what was answered is stored. Continue with:\n  python -m arena batch --resume "
                  f"{plan.run_id}", file=sys.stderr)
        return 130


def verdict_line(pair: dict, verdict, row: dict | None, orders: dict, grader: str, method: str) -> dict:
    """One line of the verdicts file (every field is documented in the README, *Judging a battle file*).
    ``consistency`` is the generative judge's: whether its two orders agreed; graded methods have none, as
    their verdict comes from one probability per answer."""
    from arena.grading import judge as J

    winner = verdict.winner if verdict else None
    line = {"pair_id": pair["id"], "model_a": pair["model_a"], "model_b": pair["model_b"], "judge": grader,
            "method": method, "judge_winner": winner, "human_winner": pair["human_winner"],
            "agrees_with_human": None if winner is None or pair["human_winner"] is None
            else J.outcome(winner) == J.outcome(pair["human_winner"]),
            "basis": row["basis"] if row else None}
    if method == "generate":
        status = verdict.status if verdict else "incomplete"
        line["consistency"] = "consistent" if status == "agreed" else status
        line["orders"] = orders
    return line


def write_verdicts(output: Path, pairs: list[dict], verdicts: dict, rows: dict, judgments: dict, grader: str,
                   method: str) -> None:
    import json

    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as fh:
        for p in pairs:
            orders = {s: {"label": judgments[(p["id"], s)]["label"], "rationale": judgments[(p["id"], s)]["rationale"]}
                      for s in ("ab", "ba") if (p["id"], s) in judgments}
            line = verdict_line(p, verdicts.get(p["id"]), rows.get(p["id"]), orders, grader, method)
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def judge_command(args: argparse.Namespace) -> int:
    from arena.batch.runner import BatchError, BatchRunner, Progress, choose_judge, pair_gradables_of
    from arena.grading import judge as J
    from arena.grading.judge_file import BattleFileError, read_pairs, with_references

    catalog = load_models(args.models)
    known = {m.id for m in catalog}
    prompts = load_prompts(args.prompts)
    try:
        pairs = with_references(read_pairs(args.file), prompts)
    except BattleFileError as exc:
        return _fail(str(exc))
    if args.judge and args.judge not in known:
        return _fail(f"unknown judge {args.judge!r}; known: {', '.join(known)}")
    judge_id = args.judge or (choose_judge(catalog) if args.method != "assert" else None)
    if judge_id is None and args.method != "assert":
        return _fail("no local model can grade; name one with --judge ID")
    store = open_store(args)
    signal.signal(signal.SIGTERM, _interrupt)
    supervisor = _start_workers(catalog, {judge_id} if judge_id else set(), args)
    try:
        statuses = {s.id: s for s in supervisor.statuses()}
        if judge_id and statuses[judge_id].state != "ready":
            return _fail(f"judge {judge_id} is not ready: {statuses[judge_id].describe()}")
        store.save_judge_pairs(pairs)
        print(f"grading {len(pairs)} pair(s) from {args.file.name} with {judge_id or 'assertions'} ({args.method}; "
              f"grades already stored are kept)", file=sys.stderr, flush=True)
        progress = Progress(run_id=f"file:{args.file.name}", done=0, total=0, phase="", started=time.time())
        bar = _bar(progress.total)
        margin = G.default_margin(args.method) if args.margin is None else args.margin
        gradables, answers = pair_gradables_of(pairs, {p.id: p for p in prompts})
        try:
            BatchRunner(supervisor, store, []).grade_pairs(pairs, gradables, answers, judge_id, args.method,
                                                           G.Cutoffs(margin), progress, _shown_on(bar), threading.Event())
        except KeyboardInterrupt:
            bar.close()
            print("\ninterrupted; stored grades are kept and the same command continues", file=sys.stderr)
            return 130
        bar.close()
        grader_name = judge_id or "assertions"
        rows = {r["pair_id"]: r for r in store.pair_verdicts([p["id"] for p in pairs], grader_name)
                if r["method"] == args.method}
        judgments = {(r["pair_id"], r["shown"]): r for r in store.judgments(judge_id, [p["id"] for p in pairs])} \
            if args.method == "generate" else {}
        verdicts = J.verdicts_by_pair(list(judgments.values())) if args.method == "generate" else {
            pid: J.Verdict(r["winner"], None, "agreed" if r["winner"] else "abstained") for pid, r in rows.items()}
        output = args.output or Path(args.data_dir) / "judgments" / f"{args.file.stem}.{grader_name}.{args.method}.jsonl"
        write_verdicts(output, pairs, verdicts, rows, judgments, grader_name, args.method)
        print(f"verdicts: {output}")
        _print_agreement(pairs, verdicts, args.method, margin)
        return 0
    except BatchError as exc:
        return _fail(str(exc))
    finally:
        supervisor.stop()


def _print_agreement(pairs: list[dict], verdicts: dict, method: str, margin: float) -> None:
    """What ``judge`` prints after the verdicts: how decisive and how consistent they were, and their agreement
    with the file's human votes beside the baseline 'the longer answer wins'."""
    from arena.batch.report import figure
    from arena.grading import judge as J

    q = J.quality(pairs, verdicts)
    if method == "generate":
        print(f"pairs judged: {q.pairs}; unparsed: {q.unparsed}; inconsistent after the swap: "
              f"{q.inconsistent} ({figure(q.inconsistency_rate, pct=True)}); longer answer wins under the judge: "
              f"{figure(q.longer_wins_rate, pct=True)} (n={q.longer_wins_n})")
    else:
        decisive = sum(1 for v in verdicts.values() if v.winner in ("model_a", "model_b"))
        print(f"pairs graded: {q.pairs}; abstained (no verdict): {q.unparsed}; decisive verdicts: {decisive} "
              f"({figure(decisive / q.pairs if q.pairs else None, pct=True)} coverage), margin {margin:.2f}; "
              f"longer answer wins under the grader: {figure(q.longer_wins_rate, pct=True)} (n={q.longer_wins_n})")
    if q.judge_vs_human:
        jh, lh = q.judge_vs_human, q.length_vs_human
        print(f"agreement with the file's human votes (n={jh.n}): {figure(jh.with_ties, pct=True)} with ties, "
              f"{figure(jh.without_ties, pct=True)} without (n={jh.n_decisive}), kappa {jh.kappa:.2f}")
        print(f"baseline 'the longer answer wins': {figure(lh.with_ties, pct=True)} with ties, {figure(lh.without_ties, pct=True)} "
              f"without (n={lh.n_decisive}), kappa {lh.kappa:.2f}")
        if not q.beats_length_baseline:
            print("this judge does NOT beat the length baseline on these pairs")
    elif any(p["human_winner"] for p in pairs):
        print("no pair with a human winner got a verdict: no agreement to report")
    else:
        print("the file has no human winners: no agreement to report")


def report_command(args: argparse.Namespace) -> int:
    from arena.batch import report

    store = open_store(args)
    try:
        html_path, md_path = report.write_report(store, args.run_id, args.out or Path(args.data_dir) / "reports",
                                                 args.compare)
    except report.ReportError as exc:
        return _fail(str(exc))
    print(f"report: {html_path}\nmarkdown: {md_path}")
    return 0


def grader_check_command(args: argparse.Namespace) -> int:
    """Grade every labelled answer that no rule decides with each grader, then print the per-language figures."""
    from arena.batch import grader_check as GC
    from arena.batch.runner import BatchRunner, choose_judge
    from arena.grading.calibration import load_labels

    catalog = load_models(args.models)
    known = {m.id for m in catalog}
    graders = [g.strip() for g in (args.graders or "").split(",") if g.strip()] or [choose_judge(catalog)]
    if graders == [None]:
        return _fail("no local model can grade; name one with --graders ID")
    if unknown := [g for g in graders if g not in known]:
        return _fail(f"unknown grader {', '.join(unknown)}; known: {', '.join(known)}")
    store = open_store(args)
    try:
        mine = {"the Batch tab's review": GC.model_graded(GC.stored(store)),
                str(args.labels): GC.model_graded(load_labels(args.labels)) if args.labels else []}
        groups = {**mine, "bench/heldout": [] if args.without_heldout else GC.model_graded(GC.heldout())}
    except (OSError, ValueError) as exc:
        return _fail(f"cannot read the labels: {exc}")
    own = [item for group in mine.values() for item in group]  # a person's own labels: calibrations rest on these
    items = own + groups["bench/heldout"]
    if not items:
        return _fail("no labelled answer that a grader decides: review a batch run in the Batch tab, or pass --labels")
    signal.signal(signal.SIGTERM, _interrupt)
    supervisor = _start_workers(catalog, set(graders), args)
    try:
        runner = BatchRunner(supervisor, store, [])
        for grader in graders:
            status = next(s for s in supervisor.statuses() if s.id == grader)
            if status.state != "ready":
                print(f"skipped {grader}: {status.describe()}", file=sys.stderr)
                continue
            print(f"grading {len(items)} labelled answers with {grader} (stored grades are reused) …",
                  file=sys.stderr, flush=True)
            scores = GC.grade(runner.ask_grader(grader), items, grader, store)
            print(GC.table(grader, GC.fits(items, scores), GC.sources({k: len(v) for k, v in groups.items()})) + "\n")
            own_fits = GC.fits(own, scores[:len(own)])  # items start with the person's own labels
            saved = GC.calibrations(grader, own_fits, GC.sources({k: len(v) for k, v in mine.items()}))
            store.save_calibrations(saved)
            print("\n".join(GC.calibration_lines(grader, own_fits, saved)) + "\n")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stored grades are kept and the same command continues", file=sys.stderr)
        return 130
    finally:
        supervisor.stop()
