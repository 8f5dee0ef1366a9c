"""Unit: the statistics that measure a grader against labels (arena/grading/calibration.py): ROC-AUC within a
question, the cluster bootstrap, the fitted threshold and margin, and reading a labels file."""
import json
import math
import random

import pytest

from arena.core.outcomes import Winner
from arena.grading import calibration as C
from arena.grading import grades as G


def item(qid: str, label: str, language: str = "en", n: int = 0) -> C.Labelled:
    return C.Labelled(id=f"{qid}-{n}", question_id=qid, language=language, model="m", question=f"Q {qid}?",
                      reference="R", answer=f"answer {n}", label=label)


def test_within_auc_ignores_which_question_is_hard():
    """A grader that only knows that q1 is easy and q2 is hard ranks well overall but learns nothing per question:
    within a question it is at chance. One that tells right from wrong within each question scores 1 there,
    even where its overall ranking mixes the questions up."""
    positive = [True, True, False, True, False, False]
    groups = ["q1"] * 3 + ["q2"] * 3
    knows_difficulty = [0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    assert G.roc_auc(knows_difficulty, positive) > 0.6
    assert C.within_auc(knows_difficulty, positive, groups) == 0.5
    knows_answers = [0.9, 0.9, 0.8, 0.2, 0.1, 0.1]
    assert G.roc_auc(knows_answers, positive) < 1.0
    assert C.within_auc(knows_answers, positive, groups) == 1.0
    assert math.isnan(C.within_auc([0.5, 0.4], [True, True], ["q1", "q1"]))  # no right-wrong pair


def test_within_auc_matches_roc_auc_on_one_question():
    rng = random.Random(1)
    scores = [rng.random() for _ in range(40)]
    positive = [rng.random() < 0.4 for _ in range(40)]
    assert C.within_auc(scores, positive, ["q"] * 40) == pytest.approx(G.roc_auc(scores, positive))


def test_cluster_ci_resamples_questions_not_answers():
    """Ten questions each answered five times the same way: resampling answers would make the interval of the
    pass rate look five times better informed than it is; resampling questions keeps it as wide as ten items."""
    groups = [f"q{i}" for i in range(10) for _ in range(5)]
    passed = [i < 5 for i in range(10) for _ in range(5)]
    low, high = C.cluster_ci(groups, lambda idx: sum(passed[i] for i in idx) / len(idx), rounds=2000)
    assert low <= 0.5 <= high
    assert high - low > 0.4  # ten coin flips, not fifty
    assert C.cluster_ci(groups, lambda idx: math.nan) == (math.nan, math.nan)


def test_best_threshold_prefers_the_higher_on_a_tie_and_reports_its_kappa():
    scores = [0.95, 0.9, 0.6, 0.55]  # every threshold from 0.65 to 0.9 separates them
    truth = [True, True, False, False]
    threshold, kappa, accuracy = C.best_threshold(scores, truth)
    assert threshold == 0.9 and kappa == 1.0 and accuracy == 1.0
    # a grader that says yes to everything fits no threshold that separates; kappa says so
    _, kappa, _ = C.best_threshold([0.99] * 4, [True, False, True, False])
    assert kappa <= 0.0


def test_label_pairs_give_the_labels_verdicts_within_a_question_only():
    items = [item("q1", "correct", n=1), item("q1", "wrong", n=2), item("q1", "wrong", n=3),
             item("q2", "partly correct", n=4), item("q2", "correct", n=5)]
    pairs = C.label_pairs(items)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (0, 2), (1, 2), (3, 4)]
    assert [v for _, _, v in pairs] == [Winner.A, Winner.A, Winner.BOTH_BAD, Winner.B]
    assert C.label_verdict("correct", "correct") == Winner.TIE


def test_fit_separates_languages_and_finds_each_ones_threshold():
    """An over-confident Chinese grader (yes at 0.9 to wrong answers) and a sober English one: each language gets
    its own threshold, which one shared threshold could not give both."""
    items, scores = [], []
    for q in range(6):
        for n, (label, zh, en) in enumerate([("correct", 0.97, 0.7), ("wrong", 0.9, 0.3), ("wrong", 0.88, 0.2)]):
            items += [item(f"zh{q}", label, "zh", n), item(f"en{q}", label, "en", n)]
            scores += [zh, en]
    zh, en = C.fit(items, scores, "zh"), C.fit(items, scores, "en")
    assert (zh.n, zh.positives, zh.questions) == (18, 6, 6)
    assert zh.auc == 1.0 and en.auc == 1.0 and zh.auc_within == 1.0
    assert zh.threshold > 0.9 and 0.3 < en.threshold <= 0.7
    assert zh.kappa == 1.0 and en.kappa == 1.0
    assert 0.0 < en.margin  # a margin of 0 would make near-equal wrong answers decisive


def test_fit_skips_ungraded_answers():
    items = [item("q1", "correct", n=1), item("q1", "wrong", n=2), item("q2", "correct", n=3)]
    f = C.fit(items, [0.9, 0.1, None], "en")
    assert f.n == 2 and f.positives == 1


def test_load_labels_reads_a_users_file_and_refuses_bad_lines(tmp_path):
    good = tmp_path / "labels.jsonl"
    good.write_text(json.dumps({"question": "2+2?", "reference": "4", "answer": "4", "label": "correct",
                                "language": "en"}) + "\n\n", encoding="utf-8")
    (one,) = C.load_labels(good)
    assert one.correct and one.question_id == "2+2?" and one.model == "unknown"
    bad_label = tmp_path / "bad.jsonl"
    bad_label.write_text(json.dumps({"question": "q", "reference": "r", "answer": "a", "label": "right"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: label 'right' is not one of correct, partly correct, wrong"):
        C.load_labels(bad_label)
    no_reference = tmp_path / "noref.jsonl"
    no_reference.write_text(json.dumps({"question": "q", "answer": "a", "label": "wrong"}) + "\n")
    with pytest.raises(ValueError, match="no reference; a label needs the question, the reference and the answer"):
        C.load_labels(no_reference)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:1: not JSON"):
        C.load_labels(broken)


def test_cross_validated_kappa_is_what_an_overfitted_threshold_earns_on_new_questions():
    """Scores that are noise fit some threshold well by luck: in-sample kappa looks like agreement, while each
    question decided at the threshold fitted on the others agrees no better than chance. A grader that truly
    separates keeps its kappa under cross-validation."""
    groups = [f"q{i}" for i in range(30) for _ in range(3)]
    in_sample, held = [], []
    for seed in range(20):
        rng = random.Random(seed)
        truth = [rng.random() < 0.4 for _ in groups]
        noise = [round(rng.random(), 2) for _ in groups]
        in_sample.append(C.best_threshold(noise, truth)[1])
        held.append(C.cross_validated(noise, truth, groups)[0])
    assert sum(in_sample) / 20 - sum(held) / 20 > 0.05 and abs(sum(held) / 20) < 0.06  # chance is 0
    separating = [0.9 if t else 0.3 for t in truth]
    assert C.cross_validated(separating, truth, groups) == (1.0, 1.0)
    assert all(math.isnan(x) for x in C.cross_validated([0.5], [True], ["q1"]))  # one question: nothing held out


def test_a_fit_is_trusted_by_its_auc_and_cross_validated_kappa_and_never_when_unmeasurable():
    """The bars read the cross-validated kappa, not the in-sample one, and a fit whose labels are all one class
    (ROC-AUC undefined) does not clear them by default."""
    items = [item(f"q{q}", label, n=n) for q in range(10) for n, label in enumerate(("correct", "wrong"))]
    good = C.fit(items, [0.9, 0.2] * 10, "en")
    assert good.measured("x").shortfall() is None
    assert C.fit(items, [0.9, 0.9] * 10, "en").measured("x").shortfall().startswith("ROC-AUC 0.50 (needs 0.70)")
    wrong_only = [item(f"q{q}", "wrong", n=q) for q in range(10)]
    one_class = C.fit(wrong_only, [0.1 * q for q in range(10)], "en")
    assert math.isnan(one_class.auc)
    assert "ROC-AUC unknown (needs 0.70)" in one_class.measured("10 labels").shortfall()
