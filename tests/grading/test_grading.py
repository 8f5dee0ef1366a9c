"""Unit: grading without a model — assertions (promptfoo's vocabulary, bounded in time), reading P(yes) from
top log-probabilities, pair verdicts from grades, Wilson intervals, ROC-AUC and the margin's calibration.
test_batch.py grades with the real SmolLM2."""
import math
import time

import pytest

from arena.core import assertion_spec as spec
from arena.core.config import ConfigError, load_prompts
from arena.core.generation import TokenLogprob
from arena.core.outcomes import Winner
from arena.grading import assertions as A
from arena.grading import grades as G
from arena.grading.grader import Gradable, _calls, assertion_rows


def checks(*entries):
    return spec.parse(list(entries))


@pytest.mark.parametrize("entry, text, passed", [
    ({"type": "contains", "value": "23"}, "鸡23只", True),
    ({"type": "contains", "value": "Cents"}, "5 cents", False),
    ({"type": "icontains", "value": "Cents"}, "5 cents", True),
    ({"type": "not-icontains", "value": "10 cents"}, "not 10 Cents", False),
    ({"type": "contains-any", "value": ["a", "b"]}, "xbx", True),
    ({"type": "contains-all", "value": ["a", "b"]}, "xbx", False),
    ({"type": "icontains-all", "value": ["A", "B"]}, "ab", True),
    ({"type": "regex", "value": r"鸡\D{0,8}23"}, "鸡有23只", True),
    ({"type": "not-regex", "value": r"\d"}, "none", True),
    ({"type": "equals", "value": "Yes"}, "  Yes \n", True),
])
def test_each_assertion_type(entry, text, passed):
    (assertion,) = checks(entry)
    assert A.check(assertion, text).passed is passed


def test_a_hostile_pattern_fails_its_assertion_in_bounded_time():
    """A catastrophic pattern in a user's prompts file: the check gives up after its time limit and says so."""
    (assertion,) = checks({"type": "regex", "value": r"(x+x+)+y"})
    started = time.perf_counter()
    result = A.check(assertion, "x" * 5000)
    assert not result.passed and "took over" in result.reason and time.perf_counter() - started < 5


@pytest.mark.parametrize("entries, problem", [
    ([{"type": "containz", "value": "x"}], "unknown type 'containz'"),
    ([{"type": "regex", "value": "(unclosed"}], "does not compile"),
    ([{"type": "contains-any", "value": "one"}], "must be a list of texts"),
    ([{"type": "not-llm-rubric", "value": "x"}], "unknown type"),
    ([], "non-empty list"),
])
def test_bad_assertions_are_refused_naming_the_entry(entries, problem):
    with pytest.raises(spec.AssertionConfigError, match=problem):
        spec.parse(entries)


def test_prompts_yaml_assertions_load_and_a_bad_one_names_file_and_line(tmp_path):
    shipped = {p.id: p for p in load_prompts()}
    assert len([p for p in shipped.values() if p.assertions]) >= 9
    assert A.grade(shipped["zh-math-1"].assertions, "鸡有23只，兔有12只。")[0] is True
    assert A.grade(shipped["zh-math-1"].assertions, "鸡有12只，兔有23只。")[0] is False
    bad = tmp_path / "prompts.yaml"
    bad.write_text("prompts:\n  - id: p\n    category: c\n    question: q\n    reference: r\n    source: s\n"
                   "    assert:\n      - {type: regex, value: '(oops'}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"prompts.yaml:2: prompt 'p': assert entry 1: the pattern"):
        load_prompts(bad)


def test_assertion_grades_are_one_or_zero_with_the_failed_checks():
    answer = Gradable("q", "the ball costs 10 cents", "en", "5 cents",
                      checks({"type": "icontains", "value": "5 cents"}, {"type": "not-icontains", "value": "10 cents"}))
    (row,) = assertion_rows([answer, Gradable("q", "x", "en", "r")])  # no assertions: no row
    assert row["probability"] == 0.0 and row["grader"] == "assertions" and '"passed": false' in row["details"]


def first(*top):
    return TokenLogprob(top[0][0], top[0][1], tuple(top))


def test_p_yes_adds_up_every_spelling_and_ignores_other_words():
    top = first(("是", math.log(0.6)), (" 是", math.log(0.1)), ("否", math.log(0.2)), ("我", math.log(0.05)))
    assert G.yes_probability(top) == pytest.approx(0.7 / 0.9)
    assert G.yes_probability(first(("Yes", math.log(0.3)), ("No", math.log(0.3)))) == pytest.approx(0.5)
    assert G.yes_probability(first(("The", -0.1), ("I", -3.0))) is None  # neither: not graded, not guessed


def test_pairwise_probability_cancels_a_constant_position_bias():
    """A grader that likes whatever comes first by +0.3 in both orders, and truly prefers A by 0.1."""
    assert G.pair_probability(0.5 + 0.3 + 0.1, 0.5 + 0.3 - 0.1) == pytest.approx(0.6)
    assert G.verdict_from_pair_probability(0.6, 0.05) is Winner.A
    assert G.verdict_from_pair_probability(0.52, 0.05) is None  # abstains
    assert G.pair_probability(None, 0.5) is None


def test_pair_verdicts_from_grades():
    assert G.verdict_from_grades(0.9, 0.2, 0.1) is Winner.A
    assert G.verdict_from_grades(0.2, 0.9, 0.1) is Winner.B
    assert G.verdict_from_grades(0.9, 0.85, 0.1) is Winner.TIE
    assert G.verdict_from_grades(0.1, 0.15, 0.1) is Winner.BOTH_BAD
    assert G.verdict_from_grades(1.0, 0.0, 0.1) is Winner.A  # assertions
    assert G.verdict_from_grades(None, 0.5, 0.1) is None


def test_wilson_interval_against_hand_computed_values():
    """6 of 22: 27%, 13–48% (the issue's example); 0 of 10 and 10 of 10 stay inside [0, 1]."""
    low, high = G.wilson(6, 22)
    assert (round(low, 2), round(high, 2)) == (0.13, 0.48)
    assert G.wilson(0, 10)[0] == 0.0 and G.wilson(10, 10)[1] == pytest.approx(1.0)
    assert math.isnan(G.wilson(0, 0)[0])


def test_roc_auc():
    assert G.roc_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert G.roc_auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert G.roc_auc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5
    assert G.roc_auc([0.9, 0.4, 0.6, 0.2], [True, True, False, False]) == 0.75
    assert math.isnan(G.roc_auc([0.3], [True]))


def test_calibration_picks_the_margin_that_agrees_best():
    """Grades that differ by about 0.3 when the labels differ, and by about 0.1 when they do not: a margin
    between the two separates them; none is too strict or too loose."""
    reference = [Winner.A, Winner.B, Winner.TIE, Winner.BOTH_BAD] * 5
    grades = [(0.8, 0.5), (0.4, 0.7), (0.9, 0.8), (0.2, 0.1)] * 5
    margin = G.calibrate_margin(reference, grades)
    assert 0.1 < margin <= 0.3
    agreement = G.pair_agreement(reference, [G.verdict_from_grades(a, b, margin) for a, b in grades])
    assert agreement.with_ties == 1.0 and agreement.coverage == 0.5 and agreement.kappa_decisive == 1.0


def test_prefix_order_grades_each_question_in_successive_calls():
    """Answers to one question go to successive calls, one per call, so a worker's sequence keeps the
    question and the reference it prefilled."""
    calls = _calls([["q1a", "q1b", "q1c"], ["q2a", "q2b"], ["q3a"]], batch_size=2)
    assert calls == [["q1a", "q2a"], ["q1b", "q2b"], ["q1c"], ["q3a"]]
