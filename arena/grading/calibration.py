"""Measuring a grader against labels people gave, and fitting its pass threshold and pair margin to them.

Why these statistics:
- **Answers to one question are not independent** (a model's greedy and sampled answers often say the same
  thing), so every 95% interval here is a *cluster* bootstrap: it resamples questions, not answers.
- **ROC-AUC within a question** compares only answers to the same question. Overall AUC also rewards a grader
  for knowing which questions are hard; within a question it must tell a right answer from a wrong one to
  the same question, which is what a pair verdict needs.
- **The threshold and margin are fitted per language**, because a small grader's P(yes) is not calibrated the
  same in Chinese and English (BENCHMARKS.md §17). A fit is only as good as the labels it rests on, so each
  carries how many labels and positives it saw.
- **Whether a fit may be trusted is judged on questions it was not fitted on.** A threshold chosen on the
  labels agrees with them better than it will with the next question (the in-sample kappa); the
  cross-validated kappa decides each question's answers at the threshold fitted on the other questions.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from arena.core.outcomes import Winner
from arena.grading import grades as G
from arena.grading.judge import cohen_kappa

LABELS = ("correct", "partly correct", "wrong")
RANK = {"correct": 2, "partly correct": 1, "wrong": 0}
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95, the pass thresholds tried
MIN_OWN_LABELS = 50  # a person's own labels in one language before batch runs use the fit made from them
FOLDS = 5  # question folds of the cross-validated kappa


@dataclass(frozen=True)
class Labelled:
    """One answer and the label a person gave it against its question's reference."""

    id: str
    question_id: str
    language: str
    model: str
    question: str
    reference: str
    answer: str
    label: str  # one of LABELS

    @property
    def correct(self) -> bool:
        return self.label == "correct"


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not JSON ({err.msg}); each line must be one JSON object") from err
    return rows


def labelled(row: dict, label: str, where: str) -> Labelled:
    """One labelled answer from a dict with its question, reference and answer (``where`` names it in errors)."""
    if label not in LABELS:
        raise ValueError(f"{where}: label {label!r} is not one of {', '.join(LABELS)}")
    missing = [k for k in ("question", "reference", "answer") if not str(row.get(k) or "").strip()]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)}; a label needs the question, the reference and the answer")
    return Labelled(id=str(row.get("id") or row.get("answer_digest") or where), question_id=str(
        row.get("question_id") or row.get("preset_id") or row["question"]), language=str(row.get("language") or "en"),
        model=str(row.get("model") or "unknown"), question=row["question"], reference=row["reference"],
        answer=row["answer"], label=label)


def load_labels(path: Path) -> list[Labelled]:
    """A labels file where each line carries its answer: question, reference, answer, label (and optionally id,
    question_id, language, model). This is what the arena's review exports and what ``--labels`` reads."""
    return [labelled(row, str(row.get("label")), f"{path}:{n}") for n, row in enumerate(_read_jsonl(path), 1)]


def load_set(answers: Path, labels: Path) -> list[Labelled]:
    """A labelled set kept as two files (bench/heldout): the answers, and one labelling pass keyed by answer id.
    Only labelled answers are returned."""
    given = {r["id"]: r["label"] for r in _read_jsonl(labels)}
    return [labelled(row, given[row["id"]], f"{answers}:{row['id']}") for row in _read_jsonl(answers)
            if row["id"] in given]


# -- statistics --------------------------------------------------------------------------------------------
def kappa_accuracy(truth: Sequence[bool], guess: Sequence[bool]) -> tuple[float, float]:
    """Cohen's kappa and accuracy of a pass/fail decision against the labels' (NaN when there is nothing)."""
    if not truth:
        return math.nan, math.nan
    accuracy = sum(t == g for t, g in zip(truth, guess)) / len(truth)
    return cohen_kappa([str(t) for t in truth], [str(g) for g in guess]), accuracy


def within_auc(scores: Sequence[float], positive: Sequence[bool], groups: Sequence[str]) -> float:
    """ROC-AUC over the (right, wrong) answer pairs of the same question only (ties ½); NaN without such pairs."""
    by: dict[str, tuple[list[float], list[float]]] = {}
    for score, pos, group in zip(scores, positive, groups):
        by.setdefault(group, ([], []))[0 if pos else 1].append(score)
    won = total = 0.0
    for right, wrong in by.values():
        for r, w in itertools.product(right, wrong):
            won += 1.0 if r > w else 0.5 if r == w else 0.0
            total += 1
    return won / total if total else math.nan


def cluster_ci(groups: Sequence[str], statistic: Callable[[list[int]], float], rounds: int = 1000,
               seed: int = 2026) -> tuple[float, float]:
    """95% percentile interval of ``statistic(indices)`` over bootstrap resamples of the groups (questions):
    each round draws as many questions as there are, with replacement, and takes all their items. Rounds
    where the statistic is undefined (NaN) are dropped; NaN bounds if most are."""
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    keys = list(members)
    rng = random.Random(seed)
    values = []
    for _ in range(rounds):
        picked = [i for _ in keys for i in members[keys[rng.randrange(len(keys))]]]
        value = statistic(picked)
        if not math.isnan(value):
            values.append(value)
    if len(values) < rounds / 2:
        return math.nan, math.nan
    values.sort()
    return values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]


# -- pairs and fits ----------------------------------------------------------------------------------------
def label_verdict(a: str, b: str) -> Winner:
    """The verdict two labels give a pair: the better label wins; equal labels tie, two wrong are both bad."""
    ra, rb = RANK[a], RANK[b]
    return Winner.A if ra > rb else Winner.B if rb > ra else Winner.TIE if ra else Winner.BOTH_BAD


def label_pairs(items: Sequence[Labelled]) -> list[tuple[int, int, Winner]]:
    """Every pair of answers to one question, as indices into ``items``, with the verdict their labels give."""
    by: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by.setdefault(item.question_id, []).append(index)
    return [(i, j, label_verdict(items[i].label, items[j].label))
            for group in by.values() for i, j in itertools.combinations(group, 2)]


@dataclass(frozen=True)
class Fit:
    """A grader's P(yes) measured against labels of one language, and the threshold and margin fitted to them."""

    language: str
    n: int
    positives: int
    questions: int
    auc: float
    auc_ci: tuple[float, float]
    auc_within: float
    threshold: float  # the pass threshold with the best kappa
    kappa: float      # at that threshold (in-sample: it was chosen on these labels)
    accuracy: float
    margin: float     # the pair margin with the best 3-class kappa on these labels' pair verdicts
    kappa_cv: float   # each question decided at the threshold fitted on the other questions (cross_validated)
    accuracy_cv: float

    def measured(self, where: str) -> G.Measured:
        """These figures as the bars see them: ROC-AUC (no fitting) and the cross-validated kappa."""
        return G.Measured(self.auc, self.kappa_cv, where)


def best_threshold(scores: Sequence[float], truth: Sequence[bool]) -> tuple[float, float, float]:
    """The pass threshold (of THRESHOLDS) whose decision agrees best with the labels: (threshold, kappa,
    accuracy); ties go to the higher threshold, since a small grader's failure is saying yes too often."""
    best = (G.PASS_THRESHOLD, -math.inf, math.nan)
    for threshold in THRESHOLDS:
        kappa, accuracy = kappa_accuracy(truth, [s >= threshold for s in scores])
        if not math.isnan(kappa) and kappa >= best[1] - 1e-12:
            best = (threshold, kappa, accuracy)
    return best


def cross_validated(values: Sequence[float], truth: Sequence[bool], groups: Sequence[str], folds: int = FOLDS,
                    seed: int = 2026) -> tuple[float, float]:
    """Kappa and accuracy of the fitted pass threshold on questions it was not fitted on: the questions are
    shuffled and dealt into ``folds`` folds, and each fold's answers are decided at the threshold that fits the
    other folds best. (NaN, NaN) with fewer than two questions."""
    keys = sorted(set(groups))
    if len(keys) < 2:
        return math.nan, math.nan
    random.Random(seed).shuffle(keys)
    fold_of = {key: n % folds for n, key in enumerate(keys)}
    decided = [False] * len(values)
    for fold in set(fold_of.values()):
        rest = [i for i, g in enumerate(groups) if fold_of[g] != fold]
        threshold = best_threshold([values[i] for i in rest], [truth[i] for i in rest])[0]
        for i, g in enumerate(groups):
            if fold_of[g] == fold:
                decided[i] = values[i] >= threshold
    return kappa_accuracy(truth, decided)


def fit(items: Sequence[Labelled], scores: Sequence[float | None], language: str) -> Fit:
    """Measure and fit one language's labelled answers that have a grade (``scores[i]`` for ``items[i]``)."""
    kept = [(item, s) for item, s in zip(items, scores) if s is not None and item.language == language]
    sub = [item for item, _ in kept]
    values = [s for _, s in kept]
    truth = [item.correct for item in sub]
    groups = [item.question_id for item in sub]
    threshold, kappa, accuracy = best_threshold(values, truth)
    pairs = label_pairs(sub)
    margin = G.calibrate_margin([v for _, _, v in pairs], [(values[i], values[j]) for i, j, _ in pairs])
    kappa_cv, accuracy_cv = cross_validated(values, truth, groups)
    return Fit(language=language, n=len(sub), positives=sum(truth), questions=len(set(groups)),
               auc=G.roc_auc(values, truth),
               auc_ci=cluster_ci(groups, lambda idx: G.roc_auc([values[i] for i in idx], [truth[i] for i in idx])),
               auc_within=within_auc(values, truth, groups), threshold=threshold, kappa=kappa, accuracy=accuracy,
               margin=margin, kappa_cv=kappa_cv, accuracy_cv=accuracy_cv)
