"""Unit: reviewing a batch run's grades (arena/batch/review.py) on a real store: each answer with the grade that
counted and what decided it, people's labels stored and replaced, and the labels read back for grader-check."""
import threading
import time

import pytest

from arena.batch import grader_check as GC
from arena.batch import review
from arena.batch.runner import BatchRunner, Progress, build_pairs, cutoffs_of, run_gradables
from arena.core.texts import t
from arena.grading import grades as G
from arena.storage.store import Store
from arena.web.review_panel import basis_text, item_markdown

PRESETS = [
    {"id": "sky", "category": "science", "question": "Why is the sky blue?", "language": "en", "source": "team",
     "reference": "Air scatters blue light more than red (Rayleigh scattering)."},
    {"id": "times", "category": "math", "question": "What is 6 × 7?", "language": "en", "source": "team", "reference": "42"},
    {"id": "no-ref", "category": "chat", "question": "Say hello.", "language": "en", "source": "team",
     "reference": ""},
]
ANSWERS = {("m1", "sky"): "Because air scatters blue light most.", ("m2", "sky"): "The sea reflects onto it.",
           ("m1", "times"): "6 × 7 = \\boxed{42}", ("m2", "times"): "It is 48.",
           ("m1", "no-ref"): "Hello!", ("m2", "no-ref"): "Hi."}


def stored_run(store: Store, run_id: str = "r", presets: list[dict] = PRESETS, answers: dict = ANSWERS,
               judge: str | None = None, extra: dict | None = None, probabilities: dict | None = None) -> None:
    """A finished run graded by the rules only (no grader model), as `batch --judge none` leaves it; or, with
    ``judge``, by that grader model too, whose P(yes) of each answer is ``probabilities[(model, preset)]`` (stored
    before grading, so no model is asked). ``extra``: more of the run's config (a calibration, a refusal)."""
    config = {"models": ["m1", "m2"], "presets": presets, "judge": judge, "method": "auto", "margin": 0.35,
              "settings": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "seed": 0, "repeats": 1,
                           "system_prompt": "", "batch_size": 8, "judge_max_tokens": 64}, **(extra or {})}
    store.create_batch_run(run_id, time.time(), config, {"models": {}})
    questions = {p["id"]: p["question"] for p in presets}
    store.save_batch_answers([
        {"key": f"{run_id}-{m}-{p}", "run_id": run_id, "model": m, "preset_id": p, "repeat": 0, "seed": 0,
         "settings_hash": "h", "question": questions[p], "text": text, "error": None, "ttft_s": 0.5, "total_s": 2.0,
         "output_tokens": 31, "prompt_tokens": 20, "tokens_per_s": 10.0, "finish_reason": "stop",
         "engine": "llamacpp", "quantization": "Q4", "batched": 1, "batch_size": 2, "created": time.time()}
        for (m, p), text in answers.items()])
    stored = store.batch_answers(run_id)
    gradables = run_gradables(config, stored)
    store.save_grades([{"id": f"{judge}-{m}-{p}", "answer_digest": gradables[(m, p, 0)].digest(), "grader": judge,
                        "method": "reference", "prompt_version": G.REFERENCE_V1, "probability": value,
                        "details": "{}", "seconds": 0.1, "created": time.time()}
                       for (m, p), value in (probabilities or {}).items()])
    pairs = build_pairs(run_id, config, stored)
    store.save_judge_pairs(pairs)
    sides = {q["id"]: (gradables[(q["model_a"], q["preset_id"], 0)], gradables[(q["model_b"], q["preset_id"], 0)])
             for q in pairs}
    BatchRunner(None, store, []).grade_pairs(pairs, sides, list(gradables.values()), judge, "auto",
                                             cutoffs_of(config), Progress(run_id, 0, 0, "", time.time()),
                                             lambda _: None, threading.Event())
    store.set_batch_run_status(run_id, "done", time.time())


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "a.db")
    stored_run(s)
    yield s
    s.close()


def test_items_show_each_answer_with_a_reference_and_what_graded_it(store):
    found = {(i.model, i.preset_id): i for i in review.items(store, "r")}
    assert set(found) == {("m1", "sky"), ("m2", "sky"), ("m1", "times"), ("m2", "times")}  # no reference: nothing
    right, wrong, open_ = found[("m1", "times")], found[("m2", "times")], found[("m1", "sky")]
    assert (right.passed, right.grader, right.check["found"]) == (True, "reference-check", "42")
    assert (wrong.passed, wrong.check["expected"], wrong.check["found"]) == (False, "42", "48")
    assert open_.passed is None and open_.grader is None and open_.label is None  # no grader model in this run
    assert "read 48 where the reference says 42" in basis_text(wrong, "en")
    assert "回答给出 48，参考答案为 42" in basis_text(wrong, "zh")
    assert basis_text(open_, "zh") == t("basis_none", "zh")


def test_a_label_is_stored_replaced_and_skipped_by_next(store):
    found = review.items(store, "r")
    first = review.next_item(found)
    assert first.key == found[0].key
    review.label(store, "r", first.key, "wrong")
    returned = review.label(store, "r", first.key, "correct")  # a second look replaces the first
    assert returned == review.items(store, "r")  # what the page shows next is what a fresh read gives
    (row,) = store.answer_labels("r")
    assert row["label"] == "correct" and row["answer"] == first.answer and row["reference"] == first.reference
    again = review.items(store, "r")
    assert again[0].label == "correct"
    assert review.next_item(again).key == found[1].key
    assert review.next_item(again, after=found[3].key).key == found[1].key  # wraps round
    for item in again[1:]:
        review.label(store, "r", item.key, "wrong")
    done = review.items(store, "r")
    assert review.next_item(done) is None
    counts = review.tally(done)
    # graded: the two 'times' answers; m1's 42 passed and is labelled wrong, m2's 48 failed and is labelled wrong
    assert (counts.total, counts.labelled, counts.graded_and_labelled, counts.agreed) == (4, 4, 2, 1)
    assert "Every answer of this run with a reference is reviewed" in item_markdown(None, counts, "en")


def test_bad_reviews_are_refused_with_the_reason(store):
    key = review.items(store, "r")[0].key
    with pytest.raises(review.ReviewError, match="label 'right' is not one of correct, partly correct, wrong"):
        review.label(store, "r", key, "right")
    with pytest.raises(review.ReviewError, match="run r has no answer 'r-m1-no-ref' with a reference"):
        review.label(store, "r", "r-m1-no-ref", "wrong")
    with pytest.raises(review.ReviewError, match="no batch run 'nope'"):
        review.items(store, "nope")
    assert store.answer_labels() == []


def test_stored_labels_are_what_grader_check_measures(store):
    """A label of an open answer is one the grader model is measured on; a checkable one (42) is decided by a
    rule, so it is not."""
    found = {(i.model, i.preset_id): i for i in review.items(store, "r")}
    review.label(store, "r", found[("m1", "sky")].key, "correct")
    review.label(store, "r", found[("m1", "times")].key, "correct")
    labelled = GC.stored(store)
    assert {(i.question_id, i.label) for i in labelled} == {("sky", "correct"), ("times", "correct")}
    (graded,) = GC.model_graded(labelled)
    assert graded.question_id == "sky" and graded.language == "en" and graded.model == "m1"
    assert GC.gradable(graded).digest() == found[("m1", "sky")].digest  # the grade grader-check asks is of this answer


def test_the_card_escapes_what_models_wrote(tmp_path):
    """An answer's HTML and links reach the card as text: read back by a CommonMark parser, the card has no
    element a model wrote (the browser test reads the real page)."""
    from markdown_it import MarkdownIt

    s = Store(tmp_path / "b.db")
    hostile = {("m1", "sky"): "<img src=x onerror=alert(1)> **air**", ("m2", "sky"): "[x](javascript:alert(1))"}
    stored_run(s, presets=PRESETS[:1], answers=hostile)
    items = review.items(s, "r")
    for item in items:
        html = MarkdownIt("commonmark").render(item_markdown(item, review.tally(items), "en"))
        assert "<img" not in html and "<a " not in html, html
    s.close()
