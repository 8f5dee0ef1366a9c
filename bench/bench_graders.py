"""Every grader and method against the labelled set (bench/labelled): how often it agrees with the labels.

    python bench/bench_graders.py                   # grade (cached in bench/results/labelled-grades.db) and print
    python bench/bench_graders.py --graders qwen2.5-coder-1.5b-q4km --skip-generate

The labelled set: 176 answers to the 22 presets from Qwen2.5-Coder 0.5B (llama.cpp and torchao INT4) and
1.5B and SmolLM2-135M, greedy and sampled, each labelled correct / partly correct / wrong against the
preset's reference by a written rule (bench/labelled/RULE.md), with a second, independent pass over 40.

Figures:
- per answer: accuracy and Cohen's kappa of pass/fail against the labels (pass = correct), and ROC-AUC of
  P(yes) for the probability graders;
- per pair: verdicts built from the labels (the better label wins; equal labels are a tie, or "both bad" when
  both are wrong) for every pair of answers to one preset, against each method's verdicts: agreement with
  and without ties, coverage (share of decisive verdicts), and kappa on the decisive ones; the margin is
  calibrated on half the presets and evaluated on the other half, and the other way round;
- pairwise by probability and the generative judge on a sample of those pairs (both orders each).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.core.config import load_models, load_prompts  # noqa: E402
from arena.core.outcomes import Winner  # noqa: E402
from arena.grading import calibration as C  # noqa: E402
from arena.grading import grades as G  # noqa: E402
from arena.grading import judge as J  # noqa: E402
from arena.grading.grader import ASSERTIONS, Gradable, assertion_rows, pairwise_grades, reference_grades  # noqa: E402
from arena.serving.client import batch_chat  # noqa: E402
from arena.storage.store import Store  # noqa: E402

LABELLED = ROOT / "bench" / "labelled"


def load_set() -> tuple[list[dict], dict[str, str], dict[str, str]]:
    answers = [json.loads(line) for line in open(LABELLED / "answers.jsonl", encoding="utf-8")]
    first = {r["id"]: r["label"] for r in map(json.loads, open(LABELLED / "labels-pass1.jsonl", encoding="utf-8"))}
    second = {r["id"]: r["label"] for r in map(json.loads, open(LABELLED / "labels-pass2.jsonl", encoding="utf-8"))}
    return answers, first, second


def label_pairs(answers: list[dict], labels: dict[str, str]) -> list[dict]:
    """Every pair of answers to one preset, with the verdict its labels give."""
    pairs = []
    by_preset: dict[str, list[dict]] = {}
    for a in answers:
        by_preset.setdefault(a["preset_id"], []).append(a)
    for preset, group in by_preset.items():
        for x, y in itertools.combinations(group, 2):
            winner = C.label_verdict(labels[x["id"]], labels[y["id"]])
            pairs.append({"id": f"{x['id']}-{y['id']}", "preset_id": preset, "a": x, "b": y, "label": winner,
                          "question": x["question"], "answer_a": x["answer"], "answer_b": y["answer"],
                          "language": x["language"], "reference": x["reference"]})
    return pairs


def start_graders(ids: list[str]):
    from arena.serving.supervisor import Supervisor

    catalog = [m for m in load_models(ROOT / "models.yaml") if m.id in ids]
    supervisor = Supervisor(catalog, ROOT / "models.yaml", ROOT / "data", threads=2)
    supervisor.start()
    for status in supervisor.wait_until_settled(900):
        print(f"  {status.id}: {status.describe()}", file=sys.stderr, flush=True)
    return supervisor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graders", default="qwen2.5-coder-0.5b-q4km,qwen2.5-coder-1.5b-q4km")
    parser.add_argument("--sample-pairs", type=int, default=60, help="pairs for the pairwise and generative methods")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--db", type=Path, default=ROOT / "bench" / "results" / "labelled-grades.db")
    args = parser.parse_args()
    answers, labels, second = load_set()
    prompts = {p.id: p for p in load_prompts(ROOT / "prompts.yaml")}
    store = Store(args.db)

    # -- the label set's own agreement (the ceiling for any grader) --------------------------------------
    shared = [i for i in second if i in labels]
    k3 = J.cohen_kappa([labels[i] for i in shared], [second[i] for i in shared])
    same = sum(labels[i] == second[i] for i in shared) / len(shared)
    kb, accb = C.kappa_accuracy([labels[i] == "correct" for i in shared], [second[i] == "correct" for i in shared])
    print(f"\nLabels: {len(answers)} answers; {sum(v == 'correct' for v in labels.values())} correct, "
          f"{sum(v == 'partly correct' for v in labels.values())} partly, {sum(v == 'wrong' for v in labels.values())} "
          f"wrong. Second pass on {len(shared)}: same label {same:.0%}, kappa {k3:.2f} (3 classes); "
          f"pass/fail (correct or not) agreement {accb:.0%}, kappa {kb:.2f}")

    gradables = {a["id"]: Gradable(a["question"], a["answer"], a["language"], a["reference"],
                                   prompts[a["preset_id"]].assertions) for a in answers}
    store.save_grades(assertion_rows(list(gradables.values())))
    graders = [g for g in args.graders.split(",") if g]
    supervisor = start_graders(graders) if graders else None
    timings: dict[str, float] = {}
    pairs = label_pairs(answers, labels)
    rng = random.Random(7)
    decisive = [p for p in pairs if p["label"] in (Winner.A, Winner.B)]
    even = [p for p in pairs if p["label"] not in (Winner.A, Winner.B)]
    sample = rng.sample(decisive, min(len(decisive), args.sample_pairs * 2 // 3)) + \
        rng.sample(even, min(len(even), args.sample_pairs - min(len(decisive), args.sample_pairs * 2 // 3)))
    try:
        for grader in graders:
            base = supervisor.endpoint(grader, wait=900.0)

            def ask(requests, params, base=base, grader=grader):
                return batch_chat(base, grader, requests, params, api_key=supervisor.api_key(grader)).answers
            todo = [g for g in gradables.values()
                    if g.digest() not in {r["answer_digest"] for r in store.grades([g.digest()], grader)}]
            started = time.perf_counter()
            # reference grading (ignoring assertions): every answer against its reference
            plain = [Gradable(g.question, g.text, g.language, g.reference) for g in todo]
            reference_grades(ask, plain, grader, store.save_grades, batch_size=8)
            if todo:
                timings[f"{grader} reference"] = (time.perf_counter() - started) / len(todo)
            have = {r["pair_id"] for r in store.pair_grades([p["id"] for p in sample], grader)}
            started = time.perf_counter()
            missing = [p for p in sample if p["id"] not in have]
            pairwise_grades(ask, missing, grader, store.save_pair_grades, batch_size=8)
            if missing:
                timings[f"{grader} pairwise"] = (time.perf_counter() - started) / (2 * len(missing))
            if not args.skip_generate:
                from arena.batch.runner import judge_batch, judge_params
                jpairs = [{**p, "id": p["id"]} for p in sample]
                done = {(j["pair_id"], j["shown"]) for j in store.judgments(grader, [p["id"] for p in jpairs])}
                items = [(p, s) for p in jpairs for s in ("ab", "ba") if (p["id"], s) not in done]
                started = time.perf_counter()
                for start in range(0, len(items), 8):
                    rows = judge_batch(lambda reqs, limit, base=base, grader=grader:
                                       batch_chat(base, grader, reqs, judge_params(limit)).answers,
                                       items[start:start + 8], grader)
                    store.save_judgments(rows)
                if items:
                    timings[f"{grader} generate"] = (time.perf_counter() - started) / len(items)
    finally:
        if supervisor:
            supervisor.stop()
    report(answers, labels, pairs, sample, gradables, graders, store, timings)


def report(answers, labels, pairs, sample, gradables, graders, store, timings) -> None:
    digests = {i: g.digest() for i, g in gradables.items()}
    plain_digests = {i: Gradable(g.question, g.text, g.language, g.reference).digest() for i, g in gradables.items()}
    stored = store.grades(list(set(digests.values()) | set(plain_digests.values())))
    by = {(r["grader"], r["answer_digest"]): r for r in stored}
    ids = [a["id"] for a in answers]
    truth = [labels[i] == "correct" for i in ids]
    print(f"\n### Per answer (pass = labelled correct; a grade passes at P(yes) >= {G.PASS_THRESHOLD})\n")
    print("| grader | method | answers graded | accuracy | kappa | ROC-AUC of P(yes) | AUC, partly counted as pass | "
          "seconds per answer |")
    print("|---|---|---|---|---|---|---|---|")
    asserted = [i for i in ids if (ASSERTIONS, digests[i]) in by]
    kappa, acc = C.kappa_accuracy([labels[i] == "correct" for i in asserted],
                                    [by[(ASSERTIONS, digests[i])]["probability"] == 1.0 for i in asserted])
    print(f"| assertions | assert | {len(asserted)} of {len(ids)} (13 presets) | {acc:.0%} | {kappa:.2f} | – | – | 0 |")
    length = [len(a["answer"]) for a in answers]
    print(f"| length baseline | longer = better | {len(ids)} | – | – | {G.roc_auc(length, truth):.2f} | "
          f"{G.roc_auc(length, [labels[i] != 'wrong' for i in ids]):.2f} | 0 |")
    per_answer: dict[str, dict[str, float | None]] = {}
    for grader in graders:
        p = {i: by.get((grader, plain_digests[i]), {}).get("probability") for i in ids}
        graded = [i for i in ids if p[i] is not None]
        kappa, acc = C.kappa_accuracy([labels[i] == "correct" for i in graded], [p[i] >= G.PASS_THRESHOLD for i in graded])
        auc = G.roc_auc([p[i] for i in graded], [labels[i] == "correct" for i in graded])
        auc_partly = G.roc_auc([p[i] for i in graded], [labels[i] != "wrong" for i in graded])
        secs = timings.get(f"{grader} reference")
        print(f"| {grader} | reference | {len(graded)} of {len(ids)} | {acc:.0%} | {kappa:.2f} | {auc:.2f} | "
              f"{auc_partly:.2f} | {'–' if secs is None else f'{secs:.1f}'} |")
        per_answer[f"{grader} reference"] = p
        sweep = []
        for threshold in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
            kappa_t, acc_t = C.kappa_accuracy([labels[i] == "correct" for i in graded],
                                                [p[i] >= threshold for i in graded])
            sweep.append(f"{threshold}: passes {sum(p[i] >= threshold for i in graded)}, accuracy {acc_t:.0%}, "
                         f"kappa {kappa_t:.2f}")
        print(f"|  (pass threshold on P(yes): {'; '.join(sweep)}) | | | | | | | |")
        auto = {i: (by[(ASSERTIONS, digests[i])]["probability"] if (ASSERTIONS, digests[i]) in by else p[i]) for i in ids}
        graded = [i for i in ids if auto[i] is not None]
        kappa, acc = C.kappa_accuracy([labels[i] == "correct" for i in graded], [auto[i] >= G.PASS_THRESHOLD for i in graded])
        print(f"| {grader} | auto (assertions, else reference) | {len(graded)} of {len(ids)} | {acc:.0%} | "
              f"{kappa:.2f} | {G.roc_auc([auto[i] for i in graded], [labels[i] == 'correct' for i in graded]):.2f} | "
              f"{G.roc_auc([auto[i] for i in graded], [labels[i] != 'wrong' for i in graded]):.2f} | – |")
        per_answer[f"{grader} auto"] = auto

    print("\n### Pair verdicts against the labels' verdicts (all pairs of answers to one preset)\n")
    presets = sorted({p["preset_id"] for p in pairs})
    halves = (set(presets[0::2]), set(presets[1::2]))
    print("| grader, method | margin (calibrated on all / on each half) | pairs | coverage | agreement with ties | "
          "without ties (n) | kappa, decisive | abstained |")
    print("|---|---|---|---|---|---|---|---|")
    reference = [p["label"] for p in pairs]
    length_verdicts = [Winner.A if len(p["answer_a"].strip()) > len(p["answer_b"].strip()) else
                       Winner.B if len(p["answer_b"].strip()) > len(p["answer_a"].strip()) else Winner.TIE for p in pairs]
    _pair_line("length baseline", "–", G.pair_agreement(reference, length_verdicts))
    for name, p in per_answer.items():
        grades = [(p[q["a"]["id"]], p[q["b"]["id"]]) for q in pairs]
        margin = G.calibrate_margin(reference, grades)
        cross, margins = [], []  # calibrate on one half of the presets, judge the other, and the other way round
        for train, test in (halves, halves[::-1]):
            idx_train = [k for k, q in enumerate(pairs) if q["preset_id"] in train]
            margins.append(G.calibrate_margin([reference[k] for k in idx_train], [grades[k] for k in idx_train]))
            cross += [(k, G.verdict_from_grades(*grades[k], margins[-1])) for k, q in enumerate(pairs)
                      if q["preset_id"] in test]
        verdicts_cv = [v for _, v in sorted(cross, key=lambda item: item[0])]
        _pair_line(name, f"{margin:.2f}", G.pair_agreement(reference, [G.verdict_from_grades(a, b, margin)
                                                                         for a, b in grades]))
        _pair_line(name + ", margin from the other half of the presets", " / ".join(f"{m:.2f}" for m in margins),
                   G.pair_agreement(reference, verdicts_cv))

    print(f"\n### On a sample of {len(sample)} pairs ({sum(p['label'] in (Winner.A, Winner.B) for p in sample)} "
          f"with a better answer by the labels), every method\n")
    print("| grader, method | margin | pairs | coverage | agreement with ties | without ties (n) | kappa, decisive | "
          "abstained | seconds per judgment |")
    print("|---|---|---|---|---|---|---|---|---|")
    reference = [p["label"] for p in sample]
    _pair_line("length baseline", "–", G.pair_agreement(reference, [
        Winner.A if len(p["answer_a"].strip()) > len(p["answer_b"].strip()) else
        Winner.B if len(p["answer_b"].strip()) > len(p["answer_a"].strip()) else Winner.TIE for p in sample]), "0")
    for grader in graders:
        p = per_answer[f"{grader} reference"]
        grades_all = [(p[q["a"]["id"]], p[q["b"]["id"]]) for q in pairs]
        margin = G.calibrate_margin([q["label"] for q in pairs], grades_all)
        _pair_line(f"{grader} reference", f"{margin:.2f}", G.pair_agreement(reference, [
            G.verdict_from_grades(p[q["a"]["id"]], p[q["b"]["id"]], margin) for q in sample]),
            _secs(timings.get(f"{grader} reference"), 2))
        rows = store.pair_grades([q["id"] for q in sample], grader)
        orders: dict[str, dict[str, float | None]] = {}
        for r in rows:
            orders.setdefault(r["pair_id"], {})[r["shown"]] = r["p_first"]
        probs = [G.pair_probability(orders.get(q["id"], {}).get("ab"), orders.get(q["id"], {}).get("ba")) for q in sample]
        first = [x for o in orders.values() for x in [o.get("ab")] if x is not None]
        for margin in (0.0, 0.05, 0.1):
            _pair_line(f"{grader} pairwise by probability", f"{margin:.2f}", G.pair_agreement(
                reference, [G.verdict_from_pair_probability(x, margin) for x in probs]),
                _secs(timings.get(f"{grader} pairwise"), 2))
        if first:
            print(f"|  (P(first shown) in one order: mean {statistics.fmean(first):.2f}, range "
                  f"{min(first):.2f}–{max(first):.2f}) | | | | | | | | |")
        judgments = store.judgments(grader, [q["id"] for q in sample])
        if judgments:
            verdicts = J.verdicts_by_pair(judgments)
            graded = [Winner(verdicts[q["id"]].winner) if q["id"] in verdicts and verdicts[q["id"]].winner else None
                      for q in sample]
            _pair_line(f"{grader} generate (v2, both orders)", "–", G.pair_agreement(reference, graded),
                       _secs(timings.get(f"{grader} generate"), 1))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    with open(results / "labelled-grades.jsonl", "w", encoding="utf-8") as fh:
        for row in sorted(stored, key=lambda r: r["id"]):
            fh.write(json.dumps({k: row[k] for k in ("answer_digest", "grader", "method", "prompt_version",
                                                     "probability", "details")}, ensure_ascii=False) + "\n")
    print(f"\ngrades written to {results / 'labelled-grades.jsonl'}")


def _secs(value: float | None, _digits: int) -> str:
    return "–" if value is None else f"{value:.1f}"


def _pair_line(name: str, margin: str, agreement: G.PairAgreement, seconds: str | None = None) -> None:
    fig = lambda x: "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"  # noqa: E731
    kappa = "–" if math.isnan(agreement.kappa_decisive) else f"{agreement.kappa_decisive:.2f}"
    cells = [name, margin, str(agreement.n), fig(agreement.coverage), fig(agreement.with_ties),
             f"{fig(agreement.without_ties)} ({agreement.n_decisive})", kappa, str(agreement.abstained)]
    if seconds is not None:
        cells.append(seconds)
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    threading.excepthook = lambda args: print(args, file=sys.stderr)
    main()
