"""Unit: a person's own calibration of a grader (grader-check's fit of their labels, storage grader_calibrations)
in batch runs, on a real store: the pass threshold and pair margin of each language, the languages where the
grader may not decide, and what the report and the review then say. The run with real models that picks a stored
calibration up is in test_batch.py."""
import math
import random

import pytest

from arena.batch import grader_check as GC
from arena.batch import report, review
from arena.batch.runner import cutoffs_of, own_calibration, refusal
from arena.grading import calibration as C
from arena.grading import grades as G
from arena.storage.store import Store

from .test_review import stored_run

PRESETS = [
    {"id": "sky", "category": "science", "question": "Why is the sky blue?", "language": "en", "source": "team",
     "reference": "Air scatters blue light more than red (Rayleigh scattering)."},
    {"id": "tian", "category": "science", "question": "为什么天空是蓝色的？", "language": "zh", "source": "team",
     "reference": "空气对蓝光的散射比对红光强（瑞利散射）。"},
]
ANSWERS = {("m1", "sky"): "Because air scatters blue light most.", ("m2", "sky"): "The sea reflects onto it.",
           ("m1", "tian"): "因为空气散射蓝光最多。", ("m2", "tian"): "因为海水把蓝色反射到天上。"}
P_YES = {("m1", "sky"): 0.9, ("m2", "sky"): 0.85, ("m1", "tian"): 0.97, ("m2", "tian"): 0.9}
ZH = {"threshold": 0.95, "margin": 0.05, "labels": 64, "positives": 20, "questions": 21, "auc": 0.82, "auc_low": 0.7,
      "auc_high": 0.91, "kappa": 0.47, "accuracy": 0.8, "refused": None, "sources": "64 from the Batch tab's review",
      "created": 1.79e9}
EN_REFUSED = {"grader": "g", "reason": "ROC-AUC 0.61 (needs 0.70) on 55 of your own labels in en",
              "languages": ["en"]}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "a.db")
    yield s
    s.close()


def _rates(s: Store, run_id: str) -> dict:
    data = report.load(s, run_id)
    return {k: (r.passed, r.graded) for k, r in report.pass_rates(data, "language").items()}, data


def test_without_a_calibration_the_defaults_decide(store):
    """The baseline the next test moves: at the default threshold 0.8 every P(yes) here passes, and the Chinese
    pair (0.97 vs 0.90, closer than the margin 0.35) is a tie."""
    stored_run(store, "plain", PRESETS, ANSWERS, judge="g", probabilities=P_YES)
    rates, data = _rates(store, "plain")
    assert rates == {("m1", "en"): (1, 1), ("m2", "en"): (1, 1), ("m1", "zh"): (1, 1), ("m2", "zh"): (1, 1)}
    assert sorted(v.winner for v in data.verdicts.values()) == ["tie", "tie"]


def test_a_calibration_sets_its_languages_threshold_and_margin_and_a_refused_language_goes_ungraded(store):
    """zh calibrated (threshold 0.95, margin 0.05): 0.90 now fails and 0.97 beats it. en refused by its own
    calibration: the grader's en grades do not count, so those answers are ungraded and their pair has no
    verdict. The report, the per-answer grade and the review all say the same."""
    stored_run(store, "mine", PRESETS, ANSWERS, judge="g", probabilities=P_YES,
               extra={"calibration": {"zh": ZH}, "grader_refused": EN_REFUSED})
    rates, data = _rates(store, "mine")
    assert rates == {("m1", "en"): (0, 0), ("m2", "en"): (0, 0), ("m1", "zh"): (1, 1), ("m2", "zh"): (0, 1)}
    winners = {p["preset_id"]: data.verdicts[p["id"]].winner for p in data.pairs}
    assert winners == {"tian": "model_a", "sky": None}
    margins = {r["margin"] for r in store.pair_verdicts(grader="g")}
    assert margins == {0.05, 0.35}  # zh at its own margin, en at the run's
    block = "\n".join(report.grading_block(data))
    assert "not used for pass/fail in en: ROC-AUC 0.61" in block
    assert "In zh, pass threshold 0.95 and pair margin 0.05 from your own calibration" in block
    assert "64 labelled answers to 21 questions (20 correct" in block and "kappa 0.47 cross-validated" in block
    page = report.write_html(data)
    assert "g: P(agrees with the reference) 0.90, fail" in page and "g: P(agrees with the reference) 0.97, pass" in page
    found = {(i.model, i.preset_id): i for i in review.items(store, "mine")}
    assert found[("m2", "tian")].passed is False and found[("m2", "tian")].threshold == 0.95
    assert found[("m1", "sky")].grade is None and found[("m1", "sky")].threshold == G.PASS_THRESHOLD


def test_refusal_is_decided_per_language_by_own_calibration_first():
    """Without a calibration of the person's own, what the arena measured decides per language: the 1.5B is refused
    in Chinese and decides English, the 0.5B is refused in both. Where they calibrated it and it cleared the bars, it
    decides; where their calibration fails, that is the reason given, even in a language the arena trusts it in. An
    unmeasured grader with no calibration decides everywhere."""
    big, small = "qwen2.5-coder-1.5b-q4km", "qwen2.5-coder-0.5b-q4km"
    measured = refusal(big, {"zh", "en"}, {})
    assert measured == {"grader": big, "reason": G.refused_grader(big, "zh"), "languages": ["zh"]}
    both = refusal(small, {"zh", "en"}, {})
    assert both["languages"] == ["zh", "en"] and both["reason"].startswith("in zh, ROC-AUC 0.62")
    assert "; in en, ROC-AUC 0.62" in both["reason"]
    assert refusal(big, {"zh", "en"}, {"zh": ZH}) is None
    failing_en = {"en": {**ZH, "refused": "ROC-AUC 0.55 (needs 0.70) on 50 of your own labels in en"}}
    assert refusal(big, {"en"}, failing_en)["reason"].startswith("ROC-AUC 0.55")
    own_fails = refusal("g", {"zh", "en"}, {"zh": {**ZH, "refused": "kappa 0.12 at its pass threshold"}})
    assert own_fails == {"grader": "g", "reason": "kappa 0.12 at its pass threshold", "languages": ["zh"]}
    assert refusal("g", {"zh", "en"}, {}) is None and refusal(None, {"en"}, {}) is None


def test_grader_check_stores_a_fit_only_from_enough_own_labels_and_a_run_copies_it(store):
    """60 English labels fit and are stored (with the cross-validated kappa and the refusal verdict); 12 Chinese
    ones are too few and say how many more are needed. A run copies the row; a margin named for the run wins."""
    rng = random.Random(3)
    own, scores = [], []
    for n in range(60):
        right = n % 3 == 0
        own.append(C.Labelled(f"e{n}", f"q{n // 3}", "en", "m", "Q?", "R", f"a{n}", "correct" if right else "wrong"))
        scores.append(min(1.0, (0.85 if right else 0.4) + rng.uniform(-0.1, 0.1)))
    for n in range(12):
        own.append(C.Labelled(f"z{n}", f"z{n // 2}", "zh", "m", "问？", "答", f"答{n}", "wrong"))
        scores.append(0.9)
    fits = GC.fits(own, scores)
    rows = GC.calibrations("g", fits, "72 from the Batch tab's review")
    (row,) = rows
    assert (row["language"], row["labels"], row["positives"], row["refused"]) == ("en", 60, 20, None)
    assert 0.45 <= row["threshold"] <= 0.75 and row["kappa"] == 1.0
    lines = GC.calibration_lines("g", fits, rows)
    assert lines[0].startswith("zh: 12 of your own labels graded by g; 38 more")
    assert "en: stored your calibration of g from 60 labels" in lines[1] and "it decides pass/fail there" in lines[1]
    store.save_calibrations(rows)
    stored = store.calibrations("g")["en"]
    assert own_calibration(stored, None)["threshold"] == row["threshold"]
    cutoffs = cutoffs_of({"margin": 0.35, "calibration": {"en": own_calibration(stored, 0.2)}})
    assert cutoffs.threshold_for("en") == row["threshold"] and cutoffs.margin_for("en") == 0.2
    assert cutoffs.threshold_for("zh") == G.PASS_THRESHOLD and cutoffs.margin_for("zh") == 0.35
    store.save_calibrations([{**row, "threshold": 0.5}])  # a new fit replaces the old one
    assert store.calibrations("g")["en"]["threshold"] == 0.5 and not math.isnan(stored["auc"])


def test_two_failing_answers_far_apart_are_both_wrong_with_the_closer_one_winning(store):
    """Two wrong answers are not always a tie: both below the pass threshold, but one's P(yes) higher by the margin
    (0.70 vs 0.20), is counted as the closer one's win and said as such; closer than the margin (0.50 vs 0.40) they
    are both bad. (BENCHMARKS.md §17 measures how seldom the shipped graders' "closer" agrees with labels.)"""
    stored_run(store, "closer", PRESETS, ANSWERS, judge="g",
               probabilities={("m1", "sky"): 0.7, ("m2", "sky"): 0.2, ("m1", "tian"): 0.5, ("m2", "tian"): 0.4})
    data = report.load(store, "closer")
    by = {p["preset_id"]: p["id"] for p in data.pairs}
    assert data.verdicts[by["sky"]].winner == "model_a" and data.verdicts[by["tian"]].winner == "tie (bothbad)"
    assert data.bases[by["sky"]] == "both wrong; A closer: P(yes) 0.70 vs P(yes) 0.20"
    assert not data.bases[by["tian"]].startswith("both wrong")
    assert "1 decisive verdict(s) (1 between two failing answers" in "\n".join(report.grading_block(data))
    assert "both wrong; A closer: P(yes) 0.70 vs P(yes) 0.20" in report.write_markdown(data)


def test_the_report_quotes_the_held_out_figures_of_the_languages_the_grader_decides(store):
    """A run planned with the 1.5B (refused in Chinese, runner.refusal): its English answers are graded by it and
    the report quotes the English held-out measurement, not a figure for Chinese, where the rules decide alone."""
    big = "qwen2.5-coder-1.5b-q4km"
    stored_run(store, "big", PRESETS, ANSWERS, judge=big, probabilities=P_YES,
               extra={"grader_refused": refusal(big, {"zh", "en"}, {})})
    rates, data = _rates(store, "big")
    assert rates == {("m1", "en"): (1, 1), ("m2", "en"): (1, 1), ("m1", "zh"): (0, 0), ("m2", "zh"): (0, 0)}
    block = "\n".join(report.grading_block(data))
    assert "Measured held out in en, where it decides: ROC-AUC 0.76 and kappa 0.40" in block
    assert "Measured held out in zh" not in block and "not used for pass/fail in zh: kappa 0.19 at its pass threshold" in block
