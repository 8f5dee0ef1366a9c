"""Assertions on an answer, in promptfoo's vocabulary: exact, free checks for presets with an objective answer.

A preset in prompts.yaml may carry ``assert:``, a list of checks that must all pass::

    assert:
      - {type: regex, value: '鸡\\D{0,8}23'}
      - {type: contains-any, value: ["5 cents", "$0.05"]}
      - {type: not-icontains, value: "10 cents"}
      - {type: llm-rubric, value: "Says that both sentences mean China won."}

Types: ``contains``, ``icontains``, ``contains-any``, ``contains-all``, ``icontains-any``, ``icontains-all``,
``regex``, ``equals``; any of them prefixed with ``not-`` passes when the check fails (as in promptfoo);
and ``llm-rubric``, which the model grader judges (grades.py) with the rubric as its reference. Patterns
are compiled once, when prompts.yaml loads, and every match is bounded in time (the ``regex`` module's
timeout), so a hostile pattern in a user's prompts file cannot hang a run: it fails that assertion, saying so.
"""
from __future__ import annotations

from dataclasses import dataclass

from arena.core.assertion_spec import RUBRIC, Assertion

REGEX_TIMEOUT_S = 0.25


@dataclass(frozen=True)
class AssertionResult:
    assertion: str     # Assertion.describe()
    passed: bool
    reason: str = ""   # why it failed, or the pattern timing out


def check(assertion: Assertion, text: str) -> AssertionResult:
    """One assertion on an answer (``llm-rubric`` is not checked here: grades.py judges it)."""
    base, value = assertion.base, assertion.value
    folded = text.casefold()
    if base == "contains":
        hit = value in text
    elif base == "icontains":
        hit = value.casefold() in folded
    elif base == "equals":
        hit = text.strip() == value.strip()
    elif base in ("contains-any", "icontains-any"):
        hit = any((v.casefold() in folded) if base.startswith("i") else (v in text) for v in value)
    elif base in ("contains-all", "icontains-all"):
        hit = all((v.casefold() in folded) if base.startswith("i") else (v in text) for v in value)
    elif base == "regex":
        try:
            hit = assertion.pattern.search(text, timeout=REGEX_TIMEOUT_S) is not None
        except TimeoutError:
            return AssertionResult(assertion.describe(), False,
                                   f"the pattern took over {REGEX_TIMEOUT_S} s on this answer; counted as failed")
    else:
        raise ValueError(f"{assertion.type} is graded by the model grader, not checked as text")
    passed = hit != assertion.negated
    reason = "" if passed else ("found" if assertion.negated else "not found")
    return AssertionResult(assertion.describe(), passed, reason)


def textual(assertions: tuple[Assertion, ...]) -> tuple[Assertion, ...]:
    return tuple(a for a in assertions if a.base != RUBRIC)


def rubric(assertions: tuple[Assertion, ...]) -> str | None:
    """The rubrics of a preset's ``llm-rubric`` entries, joined, or None."""
    texts = [a.value for a in assertions if a.base == RUBRIC]
    return "\n".join(texts) if texts else None


def grade(assertions: tuple[Assertion, ...], text: str) -> tuple[bool, list[AssertionResult]] | None:
    """Every text assertion on an answer: (all passed?, each result); None when the preset has none."""
    checks = textual(assertions)
    if not checks:
        return None
    results = [check(a, text) for a in checks]
    return all(r.passed for r in results), results
