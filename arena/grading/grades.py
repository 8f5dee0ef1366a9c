"""Grading answers, as pure functions: the grader's prompts, reading its probabilities, turning grades into
pair verdicts, and the statistics that say how sure each figure is.

Why per answer, by probability (BENCHMARKS.md §13 measures it):
- **Each answer alone against the reference.** The grader sees the question, the reference and ONE answer,
  and is asked, in the question's language, whether the answer reaches the reference's conclusion. Its
  grade is P(yes) read from the next-token distribution of one forward pass (``max_tokens: 1`` with
  ``top_logprobs``): nothing is generated or parsed, so nothing is unparsed, and with one answer shown
  there is no position to be biased by. The question and the reference come first, so a llama.cpp worker
  prefills them once per question and reuses them for every answer to it.
- **Pairwise by probability** only where there is no reference (a person's own question): P("A") with A
  shown first and with B shown first, averaged after mapping back, p = ½[P_AB(A) + 1 − P_BA(A)]
  (AlpacaEval's weighted annotator): a constant position bias cancels. A verdict only when |p − ½|
  exceeds the margin; otherwise the pair abstains, and abstentions are counted.
- **Pair verdicts from grades.** A wins when its grade beats B's by at least the margin; otherwise both
  passing is a tie and both failing "both bad". The margin is calibrated on the labelled set
  (bench/labelled) and stored with the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from arena.core.generation import TokenLogprob
from arena.core.outcomes import Winner

REFERENCE_V1 = "reference-prob-v1"
PAIRWISE_V1 = "pairwise-prob-v1"
# A grade of P(yes) at or above this passes. The small graders say yes to most answers: on the labelled set
# the 1.5B passes 162 of 176 answers at 0.5 (17 are correct; kappa 0.02) and 70 at 0.8 (kappa 0.20, accuracy
# 66%), the best threshold that still passes a useful share (BENCHMARKS.md §13). Assertions give 1 or 0.
PASS_THRESHOLD = 0.8
# The margins calibrated on the labelled set (BENCHMARKS.md §13; stored with each run, --margin overrides):
# - a grade must beat the other by 0.35 to win a pair (auto with the 1.5B grader: kappa 0.69 on the decisive
#   verdicts; calibrated on either half of the presets, 0.20 and 0.40, kappa 0.59 on the other half);
# - reference-only grading (P(yes), no assertions): 0.05 (the 1.5B's best; P(yes) rarely says no);
# - pairwise by probability: |p - 1/2| must exceed 0.05 (at 0.10 the 1.5B abstained on 44 of 45 pairs).
DEFAULT_MARGIN = 0.35
PAIRWISE_MARGIN = 0.05
_MARGINS = {"reference": 0.05, "pairwise": PAIRWISE_MARGIN}


def default_margin(method: str) -> float:
    """The calibrated margin of a grading method (grader.METHODS)."""
    return _MARGINS.get(method, DEFAULT_MARGIN)


ANSWER_HEAD, ANSWER_TAIL = 400, 1000  # of a longer answer the grader reads its start and its end (where the
# conclusion usually is); a looping or rambling middle adds prefill time and nothing to judge
TOP_LOGPROBS = 20
# What BENCHMARKS.md §13 measured for a grader and method on the labelled set (176 answers, 616 pairs): the
# reports quote it beside a run's own figures. Keyed (grader, method).
_BASELINE = "the length baseline (\"the longer answer wins\"): 48% without ties, kappa 0.00"
LABELLED_FIGURES: dict[tuple[str, str], str] = {
    ("qwen2.5-coder-1.5b-q4km", "auto"):
        "per answer ROC-AUC 0.92 (kappa 0.39 at the pass threshold 0.8); pair verdicts at margin 0.35 agree with the labels' in 98% of decisive pairs "
        "(83 of 616 pairs decisive), kappa 0.69 (0.59 with the margin calibrated on the other half of the "
        "presets); " + _BASELINE + ".",
    ("qwen2.5-coder-1.5b-q4km", "reference"):
        "per answer ROC-AUC 0.78; it says yes too often (at P(yes) 0.5 it passes 162 of 176 answers, 17 of "
        "them correct; at the threshold 0.8, 70: accuracy 66%, kappa 0.20); pair verdicts at "
        "margin 0.05: 80% without ties (132 decisive of 616), kappa 0.12; " + _BASELINE + ".",
    ("qwen2.5-coder-1.5b-q4km", "pairwise"):
        "on 45 sampled pairs, margin 0.05: abstained on 37, 71% agreement on the 7 decided; margin 0: 63% "
        "(30 decided), kappa 0.13.",
    ("qwen2.5-coder-1.5b-q4km", "generate"):
        "on 45 sampled pairs it answered TIE to every one (coverage 0%): no information.",
    ("qwen2.5-coder-0.5b-q4km", "auto"):
        "per answer ROC-AUC 0.80, all of it from the assertions (its own P(yes) has AUC 0.41, below chance); "
        "pair verdicts at the calibrated margin 0.25: 97% without ties, kappa 0.74, but 0.24 with the margin "
        "calibrated on the other half of the presets; " + _BASELINE + ".",
    ("qwen2.5-coder-0.5b-q4km", "reference"):
        "per answer ROC-AUC 0.41, below chance: not a grader. Pair verdicts 69% without ties, kappa 0.07.",
    ("qwen2.5-coder-0.5b-q4km", "pairwise"):
        "on 45 sampled pairs: 53% agreement at margin 0 (chance), a first-position bias of P(first) 0.67.",
    ("qwen2.5-coder-0.5b-q4km", "generate"):
        "on 45 sampled pairs it answered TIE to every one (coverage 0%): no information.",
    ("assertions", "assert"):
        "104 answers of the 13 presets with assertions: 93% accuracy, kappa 0.69 against the labels (the "
        "assertions were written on the same presets, so this is not a held-out figure).",
}

# A grader model decides pass/fail only when what was measured of it clears both bars: ROC-AUC 0.70 for its
# P(yes), and Cohen's kappa 0.40 at its pass decision. A grader that fails them is not asked by ``auto``: verdicts
# then come from the rules (assertions, reference checks) only. A grader never measured is used, and the
# report says it is unmeasured.
TRUST_AUC, TRUST_KAPPA = 0.70, 0.40


@dataclass(frozen=True)
class Measured:
    """What is known of a grader model's P(yes) as a pass/fail judge, and where it was measured."""

    auc: float
    kappa: float | None  # at the pass threshold; None: not measured
    where: str

    def shortfall(self) -> str | None:
        """Why these figures do not clear the bars, or None when they do. A figure that could not be measured
        (NaN: labels all of one class) does not clear them."""
        low = [] if self.auc >= TRUST_AUC else [f"ROC-AUC {_figure(self.auc)} (needs {TRUST_AUC:.2f})"]
        if self.kappa is not None and not self.kappa >= TRUST_KAPPA:
            low.append(f"kappa {_figure(self.kappa)} at its pass threshold (needs {TRUST_KAPPA:.2f})")
        return f"{' and '.join(low)} on {self.where}" if low else None


def _figure(x: float) -> str:
    return "unknown" if math.isnan(x) else f"{x:.2f}"


@dataclass(frozen=True)
class Cutoffs:
    """Where a run's grades pass, and how far apart two must be to decide a pair, per language: the defaults,
    or a person's own calibration where one was fitted (python -m arena grader-check). A rule's grade is 1 or
    0, so only a grader model's P(yes) is moved by them. ``refused``: languages whose answers the grader model
    may not decide, because what was measured of it there (a person's calibration, else MEASURED_GRADERS) fails
    the bars."""

    margin: float = DEFAULT_MARGIN
    calibrated: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # language -> (threshold, margin)
    refused: frozenset[str] = frozenset()

    def threshold_for(self, language: str) -> float:
        return self.calibrated[language][0] if language in self.calibrated else PASS_THRESHOLD

    def margin_for(self, language: str) -> float:
        return self.calibrated[language][1] if language in self.calibrated else self.margin

    def passes(self, grade: float, language: str) -> bool:
        return grade >= self.threshold_for(language)


_HELDOUT = "open questions written after the grading was frozen (bench/heldout, BENCHMARKS.md §17)"
# What the arena measured of its graders, per language, where auto asks them: bench/heldout's answers that no rule
# decides (not the grader's own), at the frozen pass threshold 0.8. Measured per language because a small grader's
# P(yes) is not calibrated alike in both (issue L): the 1.5B's English kappa is 0.4008, at the bar (95% CI
# 0.15-0.62; one label either way can move it), and its Chinese kappa 0.19 (it passes 58 answers, 10 of them
# correct). Before: pooled over both languages on the first 217 of these answers, ROC-AUC 0.71 and kappa 0.25; on
# 60 public word problems (§15) kappa 0.27; in-sample on the labelled set (§13) the 0.5B's ROC-AUC was 0.41.
MEASURED_GRADERS: dict[str, dict[str, Measured]] = {
    "qwen2.5-coder-0.5b-q4km": {"zh": Measured(0.62, 0.0, f"144 answers to 16 Chinese {_HELDOUT}"),
                                "en": Measured(0.62, 0.0, f"135 answers to 15 English {_HELDOUT}")},
    "qwen2.5-coder-1.5b-q4km": {"zh": Measured(0.84, 0.19, f"144 answers to 16 Chinese {_HELDOUT}"),
                                "en": Measured(0.76, 0.40, f"135 answers to 15 English {_HELDOUT}")},
}


def refused_grader(grader: str | None, language: str) -> str | None:
    """Why ``grader`` may not decide pass/fail on answers in ``language`` (MEASURED_GRADERS), or None when it may
    (also when it was never measured there: the report then says it is unmeasured)."""
    measured = MEASURED_GRADERS.get(grader or "", {}).get(language)
    return measured.shortfall() if measured else None


_SYSTEM = {"zh": "你是一位严格、公正的阅卷老师。", "en": "You are a strict and fair grader."}
_REFERENCE = {
    "zh": "【问题】\n{question}\n\n【参考答案】\n{reference}\n\n【学生回答】\n{answer}\n\n"
          "学生回答的结论与参考答案一致吗？只回答“是”或“否”。",
    "en": "[Question]\n{question}\n\n[Reference answer]\n{reference}\n\n[Student answer]\n{answer}\n\n"
          "Does the student's answer reach the same conclusion as the reference answer? Answer only Yes or No.",
}
_PAIRWISE = {
    "zh": "【问题】\n{question}\n\n【回答 A】\n{first}\n\n【回答 B】\n{second}\n\n"
          "哪个回答更好（更正确、更有帮助）？只回答 A 或 B。",
    "en": "[Question]\n{question}\n\n[Answer A]\n{first}\n\n[Answer B]\n{second}\n\n"
          "Which answer is better (more correct, more helpful)? Answer only A or B.",
}
YES = {"yes", "是", "对", "正确", "一致"}
NO = {"no", "否", "不", "不是", "错", "错误", "不一致"}
_STRIP = " \t\r\n\"'“”‘’「」『』*.。,，:：!！?？()（）[]【】▁Ġ"


def _lang(language: str | None) -> str:
    return language if language in _SYSTEM else "en"


def clipped(answer: str, head: int = ANSWER_HEAD, tail: int = ANSWER_TAIL) -> str:
    answer = (answer or "").strip() or "(empty)"
    return answer if len(answer) <= head + tail else answer[:head] + " … " + answer[-tail:]


def reference_messages(question: str, reference: str, answer: str, language: str | None) -> list[dict]:
    """The grader's prompt for one answer: question and reference first (a shared prefix), then the answer."""
    lang = _lang(language)
    return [{"role": "system", "content": _SYSTEM[lang]},
            {"role": "user", "content": _REFERENCE[lang].format(question=question.strip(), reference=reference.strip(),
                                                                answer=clipped(answer))}]


def pairwise_messages(question: str, first: str, second: str, language: str | None) -> list[dict]:
    lang = _lang(language)
    return [{"role": "system", "content": _SYSTEM[lang]},
            {"role": "user", "content": _PAIRWISE[lang].format(question=question.strip(), first=clipped(first),
                                                               second=clipped(second))}]


def _normalised(token: str) -> str:
    return token.strip(_STRIP).lower()


def choice_probability(first: TokenLogprob, yes: set[str], no: set[str]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over the first position's top tokens (a word spelt several ways adds up);
    None when neither appears among them: the grader said something else, which is counted, not guessed."""
    p_yes = p_no = 0.0
    for token, logprob in first.top:
        word = _normalised(token)
        if word in yes:
            p_yes += math.exp(logprob)
        elif word in no:
            p_no += math.exp(logprob)
    return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None


def yes_probability(first: TokenLogprob) -> float | None:
    return choice_probability(first, YES, NO)


def first_probability(first: TokenLogprob) -> float | None:
    """P("A") / (P("A") + P("B")): how much the grader prefers the answer shown first."""
    return choice_probability(first, {"a"}, {"b"})


def pair_probability(p_first_ab: float | None, p_first_ba: float | None) -> float | None:
    """P(A better) from both orders, mapped back: ½[P_AB(A) + 1 − P_BA(B first)]. None if either is missing."""
    if p_first_ab is None or p_first_ba is None:
        return None
    return 0.5 * (p_first_ab + 1.0 - p_first_ba)


def verdict_from_grades(grade_a: float | None, grade_b: float | None, margin: float,
                        threshold: float = PASS_THRESHOLD) -> Winner | None:
    """A pair's verdict from two answers' grades (P(yes), or 1/0 for assertions): the one whose grade is higher
    by at least the margin wins; otherwise a tie when the mean grade passes the threshold, "both bad" when it
    does not. None when either grade is missing."""
    if grade_a is None or grade_b is None:
        return None
    if grade_a - grade_b >= margin and grade_a - grade_b > 0:
        return Winner.A
    if grade_b - grade_a >= margin and grade_b - grade_a > 0:
        return Winner.B
    return Winner.TIE if (grade_a + grade_b) / 2 >= threshold else Winner.BOTH_BAD


def verdict_from_pair_probability(p: float | None, margin: float) -> Winner | None:
    """A pairwise verdict, or None when the grader abstains (|p − ½| within the margin, or no probability)."""
    if p is None or abs(p - 0.5) <= margin:
        return None
    return Winner.A if p > 0.5 else Winner.B


# -- how sure ------------------------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a pass rate (sound at 0 of n and n of n, unlike p ± 1.96 se)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def roc_auc(scores: list[float], positive: list[bool]) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative (ties ½)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return math.nan
    ranked = sorted((s, i) for i, s in enumerate(pos + neg))
    ranks = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[ranked[k][1]] = (i + j) / 2 + 1
        i = j + 1
    pos_rank_sum = sum(ranks[:len(pos)])
    return (pos_rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


@dataclass(frozen=True)
class PairAgreement:
    """How a grader's pair verdicts compare with reference verdicts (labels or people)."""

    n: int                 # pairs with a reference verdict
    coverage: float        # share of them where the grader gave a decisive verdict (A or B)
    with_ties: float       # agreement over the pairs the grader gave any verdict (A, B or tie), 3 classes
    n_decisive: int        # pairs where both are decisive
    without_ties: float    # agreement on those
    kappa_decisive: float  # Cohen's kappa on the pairs where the grader is decisive (reference may tie)
    abstained: int         # pairs with no grader verdict at all


def pair_agreement(reference: list[Winner], graded: list[Winner | None]) -> PairAgreement:
    from arena.grading.judge import cohen_kappa

    given = [(r.outcome, g.outcome) for r, g in zip(reference, graded) if g is not None]
    decisive = [(r, g) for r, g in given if g != "tie"]
    both = [(r, g) for r, g in decisive if r != "tie"]
    n = len(reference)
    return PairAgreement(
        n=n, coverage=len(decisive) / n if n else math.nan,
        with_ties=sum(r == g for r, g in given) / len(given) if given else math.nan,
        n_decisive=len(both), without_ties=sum(r == g for r, g in both) / len(both) if both else math.nan,
        kappa_decisive=cohen_kappa([r for r, _ in decisive], [g for _, g in decisive]) if decisive else math.nan,
        abstained=n - len(given))


def calibrate_margin(reference: list[Winner], grades: list[tuple[float | None, float | None]],
                     candidates: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(11))) -> float:
    """The margin whose pair verdicts agree best with the reference verdicts (3-class Cohen's kappa over all
    pairs with both grades; ties broken towards the smaller margin)."""
    from arena.grading.judge import cohen_kappa

    best, best_kappa = DEFAULT_MARGIN, -math.inf
    for margin in candidates:
        graded = [verdict_from_grades(a, b, margin) for a, b in grades]
        kept = [(r.outcome, g.outcome) for r, g in zip(reference, graded) if g is not None]
        kappa = cohen_kappa([r for r, _ in kept], [g for _, g in kept]) if kept else math.nan
        if not math.isnan(kappa) and kappa > best_kappa + 1e-12:
            best, best_kappa = margin, kappa
    return best
