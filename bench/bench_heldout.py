"""The graders on the held-out set (bench/heldout): questions written after the grading was frozen.

    python bench/bench_heldout.py collect --data-dir DIR RUN_ID [RUN_ID ...]   # batch runs -> answers.jsonl
    python bench/bench_heldout.py sheet [--ids FILE] [--sample N]              # answers to label, models hidden
    python bench/bench_heldout.py [--graders ID,ID] grade                      # grade every answer (cached), only
    python bench/bench_heldout.py [--graders ID,ID]                            # grade, then print every table

The answers come from ``python -m arena batch --prompts bench/heldout/question.jsonl --judge none`` runs
(bench/heldout/README.md lists them). Grades are cached in bench/results/heldout-grades.db and written, every one
with its raw top tokens, to bench/results/heldout-grades.jsonl; every figure is printed with a 95% interval from a
bootstrap over questions (arena/grading/calibration.py). BENCHMARKS.md §17 quotes the output.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.batch import grader_check as GC  # noqa: E402
from arena.grading import answer_check  # noqa: E402
from arena.grading import calibration as C  # noqa: E402
from arena.grading import grades as G  # noqa: E402
from arena.grading.grader import check_rows  # noqa: E402
from arena.storage.store import Store  # noqa: E402

HELDOUT = ROOT / "bench" / "heldout"
GRADER = "qwen2.5-coder-1.5b-q4km"  # the arena's best grader: its own answers are reported apart


def questions() -> dict[str, dict]:
    rows = [json.loads(line) for line in open(HELDOUT / "question.jsonl", encoding="utf-8") if line.strip()]
    return {r["question_id"]: r for r in rows}


def collect(data_dir: Path, run_ids: list[str]) -> list[dict]:
    """The answers of the given batch runs, one line each, with what produced them."""
    store = Store(data_dir / "arena.db")
    asked = questions()
    rows = []
    for run_id in run_ids:
        run = store.batch_run(run_id)
        if run is None:
            raise SystemExit(f"no batch run {run_id} in {data_dir / 'arena.db'}")
        settings = run["config"]["settings"]
        for a in store.batch_answers(run_id):
            if a["error"]:
                raise SystemExit(f"run {run_id}: {a['model']} failed on {a['preset_id']}: {a['error']}; resume it first")
            q = asked[a["preset_id"]]
            rows.append({
                "id": hashlib.sha256(f"{run_id}|{a['model']}|{a['preset_id']}|{a['repeat']}".encode()).hexdigest()[:12],
                "question_id": a["preset_id"], "language": q["category"].rsplit("-", 1)[1], "category": q["category"],
                "model": a["model"], "engine": a["engine"], "quantization": a["quantization"],
                "temperature": settings["temperature"], "top_p": settings["top_p"], "seed": a["seed"], "run_id": run_id,
                "question": q["turns"][0], "reference": q["reference"][0], "answer": a["text"],
                "finish_reason": a["finish_reason"], "output_tokens": a["output_tokens"]})
    return rows


def sheet(answers: list[dict], ids: set[str] | None, sample: int | None, seed: int) -> str:
    """The answers to label as plain text, grouped by question, in a shuffled order and without the model's
    name (a labeller should not know whose answer it is)."""
    chosen = [a for a in answers if ids is None or a["id"] in ids]
    rng = random.Random(seed)
    if sample:
        chosen = rng.sample(chosen, min(sample, len(chosen)))
    by: dict[str, list[dict]] = {}
    for a in chosen:
        by.setdefault(a["question_id"], []).append(a)
    out = []
    for qid in sorted(by):
        group = by[qid]
        rng.shuffle(group)
        out.append(f"=== {qid} | Q: {group[0]['question']}\n    REF: {group[0]['reference']}")
        for a in group:
            cut = " [cut off at the token limit]" if a["finish_reason"] == "length" else ""
            out.append(f"--- {a['id']}{cut}\n{a['answer'].strip()}")
    return "\n".join(out)


# -- the baselines ---------------------------------------------------------------------------------------------
_STOP = set("the and for that with this from are was were its it's into than then they them their there which what "
            "when where while because about also only more most much very have has had not but can will would "
            "should could one two".split())


def keywords(text: str) -> set[str]:
    """Content words of English text (3+ letters, not stop words) and character pairs of Chinese text."""
    text = text.lower()
    words = {w for w in re.findall(r"[a-z]{3,}", text) if w not in _STOP}
    for run in re.findall(r"[\u4e00-\u9fff]+", text):
        words |= {run[i:i + 2] for i in range(len(run) - 1)} or {run}
    return words


def overlap(answer: str, reference: str) -> float:
    """The share of the reference's keywords that the answer uses."""
    wanted = keywords(reference)
    return len(wanted & keywords(answer)) / len(wanted) if wanted else 0.0


def shares_final_number(answer: str, reference: str) -> float:
    """1 when the reference's last number appears anywhere in the answer (the §15 baseline), else 0."""
    ref = answer_check.numbers(reference)
    return float(bool(ref) and any(ref[-1].matches(n) for n in answer_check.numbers(answer)))


# -- the methods -------------------------------------------------------------------------------------------------
OVERLAP_PASS = 0.5  # fixed before looking at the labels: half the reference's keywords


@dataclass(frozen=True)
class Method:
    """A way to grade: a score per answer (None: it does not decide this one) and, if it has one, a pass decision."""

    name: str
    scores: list[float | None]
    threshold: float | None  # a score at or above passes; None: the method only ranks


def rule_scores(items: list[C.Labelled]) -> list[float | None]:
    """The frozen reference check: 1 or 0 where the reference is a number, a choice or yes/no, else None."""
    by = {r["answer_digest"]: r["probability"] for r in check_rows([GC.gradable(i) for i in items])}
    return [by.get(GC.gradable(i).digest()) for i in items]


def methods(items: list[C.Labelled], graded: dict[str, list[float | None]]) -> list[Method]:
    """The baselines, the rules and every grader, and auto as shipped and as it would be with each grader."""
    rule = rule_scores(items)
    out = [Method("length (characters)", [float(len(i.answer.strip())) for i in items], None),
           Method("shares the reference's final number", [shares_final_number(i.answer, i.reference) for i in items], 1.0),
           Method(f"keyword overlap (pass at {OVERLAP_PASS})", [overlap(i.answer, i.reference) for i in items],
                  OVERLAP_PASS),
           Method("reference check (rules only)", rule, 1.0)]
    for grader, p in graded.items():
        out.append(Method(f"{grader} P(yes), every answer", p, G.PASS_THRESHOLD))
        refused = sorted({i.language for i in items if G.refused_grader(grader, i.language)}, reverse=True)
        shipped = [r if r is not None else None if G.refused_grader(grader, i.language) else q
                   for r, q, i in zip(rule, p, items)]
        out.append(Method(f"auto as shipped with {grader}" + (f" (refused in {', '.join(refused)})" if refused else ""),
                          shipped, G.PASS_THRESHOLD))
        if refused:
            out.append(Method(f"auto if {grader} were trusted everywhere",
                              [r if r is not None else q for r, q in zip(rule, p)], G.PASS_THRESHOLD))
    return out


# -- the figures -------------------------------------------------------------------------------------------------
def _ci(groups: list[str], statistic: Callable[[list[int]], float]) -> str:
    value = statistic(list(range(len(groups))))
    if math.isnan(value):
        return "–"
    low, high = C.cluster_ci(groups, statistic)
    return f"{value:.2f} ({low:.2f}–{high:.2f})"


def method_row(method: Method, items: list[C.Labelled]) -> str:
    """One method on some answers: how many it decides, and each figure with its interval over questions."""
    kept = [(i, s) for i, s in zip(items, method.scores) if s is not None]
    truth = [i.correct for i, _ in kept]
    scores = [s for _, s in kept]
    groups = [i.question_id for i, _ in kept]
    auc = _ci(groups, lambda idx: G.roc_auc([scores[k] for k in idx], [truth[k] for k in idx]))
    within = _ci(groups, lambda idx: C.within_auc([scores[k] for k in idx], [truth[k] for k in idx],
                                                  [groups[k] for k in idx]))
    kappa = accuracy = rate = "–"
    if method.threshold is not None:
        passed = [s >= method.threshold for s in scores]
        kappa = _ci(groups, lambda idx: C.kappa_accuracy([truth[k] for k in idx], [passed[k] for k in idx])[0])
        accuracy = _ci(groups, lambda idx: C.kappa_accuracy([truth[k] for k in idx], [passed[k] for k in idx])[1])
        rate = f"{sum(passed)} ({sum(truth)} correct)"
    return f"| {method.name} | {len(kept)} of {len(items)} | {rate} | {accuracy} | {kappa} | {auc} | {within} |"


def method_table(title: str, ms: list[Method], items: list[C.Labelled], keep: Callable[[C.Labelled], bool]) -> str:
    idx = [k for k, i in enumerate(items) if keep(i)]
    sub = [items[k] for k in idx]
    lines = [f"\n### {title}: {len(sub)} answers to {len({i.question_id for i in sub})} questions, "
             f"{sum(i.correct for i in sub)} labelled correct\n",
             "| method | decides | passes | accuracy (95% CI) | kappa (95% CI) | ROC-AUC (95% CI) | ROC-AUC within a "
             "question (95% CI) |", "|---|---|---|---|---|---|---|"]
    for m in ms:
        lines.append(method_row(Method(m.name, [m.scores[k] for k in idx], m.threshold), sub))
    return "\n".join(lines)


def pass_rates(items: list[C.Labelled], ms: list[Method]) -> str:
    """Per model and language: the labels' pass rate beside each method's, on the answers the method decides."""
    cells = sorted({(i.model, i.language) for i in items})
    lines = ["\n### Pass rates per model and language: the labels' and each method's\n",
             "| model | language | answers | labelled correct | " + " | ".join(m.name for m in ms) + " |",
             "|---|---|---|---|" + "---|" * len(ms)]
    for model, language in cells:
        idx = [k for k, i in enumerate(items) if (i.model, i.language) == (model, language)]
        row = [model, language, str(len(idx)), f"{sum(items[k].correct for k in idx) / len(idx):.0%}"]
        for m in ms:
            decided = [k for k in idx if m.scores[k] is not None]
            said = sum(m.scores[k] >= m.threshold for k in decided) / len(decided) if decided else math.nan
            truth = sum(items[k].correct for k in decided) / len(decided) if decided else math.nan
            row.append("–" if not decided else f"{said:.0%} (labels {truth:.0%}, n {len(decided)})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def wrong_pairs(items: list[C.Labelled]) -> list[tuple[int, int]]:
    """Every pair of different answers to one question that are both labelled not correct (both fail in truth)."""
    by: dict[str, list[int]] = {}
    for k, i in enumerate(items):
        if not i.correct:
            by.setdefault(i.question_id, []).append(k)
    return [(a, b) for ks in by.values() for a, b in itertools.combinations(ks, 2)
            if items[a].answer.strip() != items[b].answer.strip()]


def closer_row(name: str, scores: list[float | None], margin: float, items: list[C.Labelled],
               pairs: list[tuple[int, int]]) -> str:
    """A method's "both wrong; A closer" calls: a call where its scores differ by at least ``margin``. It is right
    when the answer it calls closer is labelled partly correct and the other wrong; every call between two
    answers with the same label, or the reverse, is wrong. Precision over questions, with its interval."""
    kept = [(a, b) for a, b in pairs if scores[a] is not None and scores[b] is not None]
    differ = [(a, b) for a, b in kept if items[a].label != items[b].label]
    called = [(a, b) for a, b in kept if abs(scores[a] - scores[b]) >= margin and scores[a] != scores[b]]
    right = [C.RANK[items[a].label] - C.RANK[items[b].label] == (1 if scores[a] > scores[b] else -1)
             for a, b in called]
    groups = [items[a].question_id for a, _ in called]
    precision = _ci(groups, lambda idx: sum(right[k] for k in idx) / len(idx) if idx else math.nan)
    return (f"| {name} | {margin:.2f} | {len(kept)} ({len(differ)} partly vs wrong) | {len(called)} | {sum(right)} | "
            f"{precision} | {sum(right)} of {len(differ)} |")


def closer_table(items: list[C.Labelled], graded: dict[str, list[float | None]]) -> str:
    """Issue L's "two wrong answers are not always a tie", measured: when both answers fail, how often a method's
    call of the closer one agrees with the labels (partly correct beats wrong; equal labels are both bad)."""
    pairs = wrong_pairs(items)
    lines = [f"\n### Both wrong: which is closer ({len(pairs)} pairs of different answers to one question, both "
             "labelled not correct; not the grader's own answers)\n",
             "| method | margin | pairs scored | calls \"closer\" | calls the labels agree with | precision (95% CI) "
             "| partly-vs-wrong pairs found |", "|---|---|---|---|---|---|---|"]
    lines.append(closer_row("the longer answer", [float(len(i.answer.strip())) for i in items], 0.0, items, pairs))
    lines.append(closer_row("keyword overlap", [overlap(i.answer, i.reference) for i in items], 0.1, items, pairs))
    for grader, p in graded.items():
        for margin in (0.1, 0.2, G.DEFAULT_MARGIN):
            lines.append(closer_row(f"{grader} P(yes)", p, margin, items, pairs))
    return "\n".join(lines)


def label_agreement(first: list[C.Labelled], second_path: Path) -> str:
    """The two labelling passes on the answers both labelled: agreement and kappa, 3 classes and pass/fail."""
    second = {r["id"]: r["label"] for r in map(json.loads, open(second_path, encoding="utf-8"))}
    both = [(i.label, second[i.id]) for i in first if i.id in second]
    k3 = C.cohen_kappa([a for a, _ in both], [b for _, b in both])
    kb, accb = C.kappa_accuracy([a == "correct" for a, _ in both], [b == "correct" for _, b in both])
    same = sum(a == b for a, b in both) / len(both)
    return (f"Second labelling pass on {len(both)} answers: the same label on {same:.0%}, kappa {k3:.2f} (3 classes); "
            f"pass/fail (correct or not) agreement {accb:.0%}, kappa {kb:.2f}.")


def grade_all(items: list[C.Labelled], graders: list[str], db: Path) -> dict[str, list[float | None]]:
    """Every grader's P(yes) of every answer (cached in ``db``), each grader loaded on its own in turn."""
    from arena.batch.runner import BatchRunner
    from arena.core.config import load_models
    from arena.serving.supervisor import Supervisor

    store = Store(db)
    graded = {}
    for grader in graders:
        catalog = [m for m in load_models(ROOT / "models.yaml") if m.id == grader]
        supervisor = Supervisor(catalog, ROOT / "models.yaml", ROOT / "data", threads=2)
        supervisor.start()
        try:
            supervisor.wait_until_settled(900)
            started = time.perf_counter()
            graded[grader] = GC.grade(BatchRunner(supervisor, store, []).ask_grader(grader), items, grader, store)
            print(f"{grader}: graded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        finally:
            supervisor.stop()
    rows = store.grades(sorted({GC.gradable(i).digest() for i in items}))
    with open(db.parent / "heldout-grades.jsonl", "w", encoding="utf-8") as fh:  # every grade, to recompute from
        fh.writelines(json.dumps({k: r[k] for k in ("answer_digest", "grader", "method", "prompt_version", "probability",
                                                    "seconds", "details")}, ensure_ascii=False) + "\n"
                      for r in sorted(rows, key=lambda r: (r["grader"], r["answer_digest"])))
    return graded


def every_answer() -> list[C.Labelled]:
    """All answers, labelled or not, for grading (a grade depends only on the question, reference and answer)."""
    rows = [json.loads(line) for line in open(HELDOUT / "answers.jsonl", encoding="utf-8")]
    return [C.labelled(r, "wrong", r["id"]) for r in rows]


def report(graders: list[str], db: Path) -> None:
    everything = every_answer()
    by_id = dict(zip([i.id for i in everything], zip(*grade_all(everything, graders, db).values()))) \
        if graders else {}
    items = C.load_set(HELDOUT / "answers.jsonl", HELDOUT / "labels-pass1.jsonl")
    graded = {g: [by_id[i.id][k] for i in items] for k, g in enumerate(graders)}
    ms = methods(items, graded)
    print(f"{len(items)} labelled answers; {sum(i.correct for i in items)} correct, "
          f"{sum(i.label == 'partly correct' for i in items)} partly, {sum(i.label == 'wrong' for i in items)} wrong.")
    if (HELDOUT / "labels-pass2.jsonl").exists():
        print(label_agreement(items, HELDOUT / "labels-pass2.jsonl"))
    others = lambda i: i.model != GRADER  # noqa: E731
    rule = set(GC.model_graded(items))
    print(method_table("Every answer not by the grader", ms, items, others))
    print(method_table("Open questions (no rule decides; the grader would)", ms, items,
                       lambda i: others(i) and i in rule))
    print(method_table("Checkable questions (number, choice, yes/no)", ms, items,
                       lambda i: others(i) and i not in rule))
    for language in ("zh", "en"):
        print(method_table(f"{language}, open questions", ms, items,
                           lambda i, lang=language: others(i) and i in rule and i.language == lang))
    print(method_table(f"The grader's own answers ({GRADER})", ms, items, lambda i: not others(i)))
    shown = [m for m in ms if m.threshold is not None and "every answer" not in m.name]
    print(pass_rates([i for i in items if others(i)], [Method(m.name, [m.scores[k] for k, i in enumerate(items)
                                                                       if others(i)], m.threshold) for m in shown]))
    mine = [k for k, i in enumerate(items) if others(i)]
    print(closer_table([items[k] for k in mine], {g: [p[k] for k in mine] for g, p in graded.items()}))
    for grader, scores in graded.items():
        asked = [(i, p) for i, p in zip(items, scores) if i in rule and others(i)]
        fits = GC.fits([i for i, _ in asked], [p for _, p in asked])
        print("\n" + GC.table(grader, fits, "bench/heldout, not the grader's own answers"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graders", default=f"qwen2.5-coder-0.5b-q4km,{GRADER}")
    parser.add_argument("--db", type=Path, default=ROOT / "bench" / "results" / "heldout-grades.db")
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("collect", help="write bench/heldout/answers.jsonl from batch runs")
    c.add_argument("--data-dir", type=Path, required=True)
    c.add_argument("runs", nargs="+")
    sub.add_parser("grade", help="grade every answer with each grader (cached), print nothing")
    s = sub.add_parser("sheet", help="print answers to label")
    s.add_argument("--ids", type=Path, help="only the answer ids listed in this file, one per line")
    s.add_argument("--question", help="only answers to questions whose id starts with this")
    s.add_argument("--sample", type=int)
    s.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if args.command == "collect":
        rows = collect(args.data_dir, args.runs)
        with open(HELDOUT / "answers.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{len(rows)} answers written to {HELDOUT / 'answers.jsonl'}")
    elif args.command == "sheet":
        answers = [json.loads(line) for line in open(HELDOUT / "answers.jsonl", encoding="utf-8")]
        answers = [a for a in answers if a["question_id"].startswith(args.question or "")]
        ids = set(args.ids.read_text().split()) if args.ids else None
        print(sheet(answers, ids, args.sample, args.seed))
    elif args.command == "grade":
        grade_all(every_answer(), [g for g in args.graders.split(",") if g], args.db)
    else:
        report([g for g in args.graders.split(",") if g], args.db)


if __name__ == "__main__":
    main()
