"""``python -m arena grader-check``: each grader model measured against labels people gave, per language.

The labels are the ones people gave in the Batch tab's review (review.py), a user's own file (``--labels``, the
format of calibration.load_labels) and the held-out set (bench/heldout: team-written questions, labelled
answers). A grader's P(yes) is only asked where no rule decides (a reference that concludes in a number, choice
or yes/no is checked exactly), so it is measured on those answers alone. For each language this prints how well P(yes) ranks right above wrong answers, the
pass threshold and pair margin that agree best with the labels, and whether it clears the bars that let a
grader decide pass/fail (grades.TRUST_AUC, TRUST_KAPPA; kappa cross-validated over questions).

Where a person's own labels (the review's and ``--labels``, not bench/heldout's, which set the defaults) reach
calibration.MIN_OWN_LABELS in a language, the fit made from them alone is stored (storage
``grader_calibrations``): batch runs graded by that grader then pass its answers in that language at the fitted
threshold, decide pairs at the fitted margin, and let it decide pass/fail there only if the fit clears the bars.
"""
from __future__ import annotations

import math
import time

from arena.core.config import PROJECT_DIR
from arena.grading import calibration as C
from arena.grading import grades as G
from arena.grading.grader import Ask, Gradable, reference_grades
from arena.storage.store import Store

HELDOUT = PROJECT_DIR / "bench" / "heldout"


def heldout() -> list[C.Labelled]:
    """The held-out set's answers with their first labelling pass."""
    return C.load_set(HELDOUT / "answers.jsonl", HELDOUT / "labels-pass1.jsonl")


def stored(store: Store) -> list[C.Labelled]:
    """The labels people gave in the Batch tab's review."""
    return [C.labelled({**r, "id": r["answer_digest"], "question_id": r["preset_id"]}, r["label"],
                       f"review of run {r['run_id']}") for r in store.answer_labels()]


def gradable(item: C.Labelled) -> Gradable:
    return Gradable(item.question, item.answer, item.language, item.reference)


def model_graded(items: list[C.Labelled]) -> list[C.Labelled]:
    """The answers a grader model is asked about: those no rule decides."""
    return [item for item in items if not gradable(item).rule_decides]


def grade(ask: Ask, items: list[C.Labelled], grader: str, store: Store, batch_size: int = 8) -> list[float | None]:
    """The grader's P(yes) of each answer against its reference: stored grades are reused (they are keyed by the
    question, reference and answer), the rest are asked and stored. None where a call failed."""
    digests = [gradable(item).digest() for item in items]
    have = {r["answer_digest"] for r in store.grades(digests, grader)}
    todo = [gradable(item) for item, d in zip(items, digests) if d not in have]
    reference_grades(ask, list({g.digest(): g for g in todo}.values()), grader, store.save_grades, batch_size)
    found = {r["answer_digest"]: r["probability"] for r in store.grades(digests, grader)}
    return [found.get(d) for d in digests]


def fits(items: list[C.Labelled], scores: list[float | None]) -> list[C.Fit]:
    """One fit per language present, Chinese first."""
    return [C.fit(items, scores, language) for language in sorted({i.language for i in items}, reverse=True)]


def _decides(f: C.Fit) -> str:
    if f.positives == 0 or f.positives == f.n:
        return "unknown: the labels are all one class"
    shortfall = f.measured("these labels").shortfall()
    return f"no: {shortfall}" if shortfall else "yes"


def _num(x: float, digits: int = 2) -> str:
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def table(grader: str, found: list[C.Fit], sources: str) -> str:
    """The per-language figures as a Markdown table, with what they rest on."""
    lines = [f"{grader}: P(yes) on {sum(f.n for f in found)} labelled answers that no rule decides ({sources})", "",
             "| language | answers | correct | questions | ROC-AUC (95% CI) | within a question | pass threshold | "
             "kappa in-sample | kappa cross-validated | accuracy cross-validated | pair margin | "
             "may decide pass/fail |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in found:
        lines.append(f"| {f.language} | {f.n} | {f.positives} | {f.questions} | {_num(f.auc)} ({_num(f.auc_ci[0])}–"
                     f"{_num(f.auc_ci[1])}) | {_num(f.auc_within)} | {f.threshold:.2f} | {_num(f.kappa)} | "
                     f"{_num(f.kappa_cv)} | {_num(f.accuracy_cv * 100, 0)}% | {f.margin:.2f} | {_decides(f)} |")
    lines += ["", "The threshold and margin are fitted on all these labels, so the in-sample kappa flatters them; the "
              "cross-validated kappa decides each question at the threshold fitted on the other questions, and it is "
              f"the one held to the bar. The arena's defaults are threshold {G.PASS_THRESHOLD} and margin "
              f"{G.DEFAULT_MARGIN}."]
    return "\n".join(lines)


def sources(counts: dict[str, int]) -> str:
    """Where the labels came from, for the table's heading."""
    return ", ".join(f"{n} from {where}" for where, n in counts.items() if n) or "none"


def _stored(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def calibrations(grader: str, own: list[C.Fit], where: str) -> list[dict]:
    """The fits batch runs use (storage ``grader_calibrations``): of ``own`` (fits of a person's own labels alone),
    those resting on at least MIN_OWN_LABELS graded labels, with why it may not decide pass/fail if it fails the
    bars."""
    rows = []
    for f in own:
        if f.n < C.MIN_OWN_LABELS:
            continue
        refused = f.measured(f"{f.n} of your own labels in {f.language}, kappa cross-validated").shortfall()
        rows.append({"grader": grader, "language": f.language, "threshold": f.threshold, "margin": f.margin,
                     "labels": f.n, "positives": f.positives, "questions": f.questions, "auc": _stored(f.auc),
                     "auc_low": _stored(f.auc_ci[0]), "auc_high": _stored(f.auc_ci[1]), "kappa": _stored(f.kappa_cv),
                     "accuracy": _stored(f.accuracy_cv), "refused": refused, "sources": where, "created": time.time()})
    return rows


def calibration_lines(grader: str, own: list[C.Fit], saved: list[dict]) -> list[str]:
    """What grader-check stored from a person's own labels, and per language how many more labels a fit needs."""
    done = {r["language"]: r for r in saved}
    lines = []
    for f in own:
        if row := done.get(f.language):
            verdict = f"it may not decide pass/fail there: {row['refused']}" if row["refused"] else \
                "it decides pass/fail there"
            lines.append(f"{f.language}: stored your calibration of {grader} from {row['labels']} labels: pass threshold "
                         f"{row['threshold']:.2f}, pair margin {row['margin']:.2f}; batch runs graded by it use them, "
                         f"and {verdict}.")
        else:
            lines.append(f"{f.language}: {f.n} of your own labels graded by {grader}; {C.MIN_OWN_LABELS - f.n} more and "
                         "batch runs use a calibration fitted on them (until then, the defaults).")
    return lines
