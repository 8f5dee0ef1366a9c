"""Reviewing a batch run's grades: each answer with the grade that counted for it and on what basis, and a
person's label for it, stored as a correction (storage ``answer_labels``).

The graders are small and measured to be wrong often (BENCHMARKS.md §13, §17), so the people who run the
arena are the last word: ``python -m arena grader-check`` measures every grader against their labels and
fits its pass threshold and margin per language. Only answers with a reference can be labelled: a label
says whether the answer reaches the reference's conclusion (bench/labelled/RULE.md).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from arena.batch.runner import cutoffs_of, run_gradables, run_grades
from arena.grading.calibration import LABELS
from arena.grading.grader import Gradable, answer_digest
from arena.storage.store import Store


class ReviewError(ValueError):
    """A review that cannot be done as asked (no such run or answer, an unknown label)."""


@dataclass(frozen=True)
class ReviewItem:
    """One answer of a run as a reviewer sees it."""

    key: str             # batch_answers.key
    model: str
    preset_id: str
    language: str
    question: str
    reference: str
    answer: str
    grader: str | None   # who graded it (a model id, 'assertions', 'reference-check'); None: ungraded
    grade: float | None  # P(yes), or 1/0 for a rule
    check: dict | None   # for an exact reference check, what it read: rule, expected, found
    passed: bool | None  # the grade's pass/fail; None: ungraded
    threshold: float     # the pass threshold of a grader model's P(yes) in this run and language
    label: str | None    # a person's label, if reviewed

    @property
    def digest(self) -> str:
        """What the label is a label of: the question, the reference and the answer (not the preset's rubric)."""
        return answer_digest(self.question, self.reference, self.answer)


def items(store: Store, run_id: str) -> list[ReviewItem]:
    """Every answer of the run that has a reference, in the run's order, with its counting grade and label."""
    run = store.batch_run(run_id)
    if run is None:
        raise ReviewError(f"no batch run {run_id!r}")
    answers = [a for a in store.batch_answers(run_id) if not a["error"]]
    gradables = run_gradables(run["config"], answers)
    cutoffs = cutoffs_of(run["config"])
    grades = run_grades(store, run["config"], gradables, run["config"].get("method", "auto"))
    out = []
    for a in answers:
        key = (a["model"], a["preset_id"], a["repeat"])
        g: Gradable | None = gradables.get(key)
        if g is None or not g.reference:
            continue
        grade = grades.get(key)
        p = grade["probability"] if grade else None
        passed = None if p is None else cutoffs.passes(p, g.language)  # as the report counts it
        out.append(ReviewItem(a["key"], a["model"], a["preset_id"], g.language, g.question, g.reference, g.text,
                              grade["grader"] if grade else None, p, (grade or {}).get("details", {}).get("check"),
                              passed, cutoffs.threshold_for(g.language), None))
    labels = {r["answer_digest"]: r["label"] for r in store.answer_labels(run_id)}
    return [ReviewItem(**{**i.__dict__, "label": labels.get(i.digest)}) for i in out]


def next_item(found: list[ReviewItem], after: str | None = None) -> ReviewItem | None:
    """The first answer not yet labelled after the one with key ``after`` (wrapping round), or None when all are."""
    keys = [i.key for i in found]
    start = keys.index(after) + 1 if after in keys else 0
    for item in found[start:] + found[:start]:
        if item.label is None:
            return item
    return None


def label(store: Store, run_id: str, key: str, value: str) -> list[ReviewItem]:
    """Store a person's label of one answer of the run; returns the run's answers as they now stand (the page
    shows the next one and the tally from them, without reading the run again)."""
    if value not in LABELS:
        raise ReviewError(f"label {value!r} is not one of {', '.join(LABELS)}")
    found = items(store, run_id)
    item = next((i for i in found if i.key == key), None)
    if item is None:
        raise ReviewError(f"run {run_id} has no answer {key!r} with a reference to review")
    store.save_answer_label({"answer_digest": item.digest, "run_id": run_id, "answer_key": key, "model": item.model,
                             "preset_id": item.preset_id, "language": item.language, "question": item.question,
                             "reference": item.reference, "answer": item.answer, "label": value,
                             "grader": item.grader, "grade": item.grade, "created": time.time()})
    return [ReviewItem(**{**i.__dict__, "label": value}) if i.digest == item.digest else i for i in found]


@dataclass(frozen=True)
class Tally:
    """How far a run's review has got, and how often the grades agreed with the people."""

    total: int
    labelled: int
    graded_and_labelled: int
    agreed: int  # of those, the grade's pass/fail matched the label (pass = labelled correct)


def tally(found: list[ReviewItem]) -> Tally:
    both = [i for i in found if i.label is not None and i.passed is not None]
    return Tally(len(found), sum(i.label is not None for i in found), len(both),
                 sum(i.passed == (i.label == "correct") for i in both))
