"""Running the graders of grades.py against a grader model, and storing what they find.

A grader model is reached through one function, ``ask(requests, params) -> answers`` (a worker's batch
endpoint, or concurrent requests to any OpenAI-compatible server), always greedy, one token, with the
top log-probabilities. Assertions need no model at all.

Requests are ordered for a llama.cpp worker's prefix cache: the answers to one question are graded in
successive calls, one answer of each of up to ``batch_size`` questions per call, so each sequence slot keeps
the question and reference it prefilled and the next call prefills only the next answer.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Callable

from arena.core.assertion_spec import Assertion
from arena.core.generation import GenerationParams
from arena.core.outcomes import Winner
from arena.grading import answer_check
from arena.grading import assertions as checks
from arena.grading import grades as G
from arena.serving.engines.base import BatchAnswer, BatchRequest

Ask = Callable[[list[BatchRequest], GenerationParams], list[BatchAnswer]]
GRADE_PARAMS = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=1, top_logprobs=G.TOP_LOGPROBS)
ASSERTIONS = "assertions"  # the grader name of assertion grades
REFERENCE_CHECK = "reference-check"  # the grader name of exact checks against the reference (answer_check);
# both are rules, stored with the method 'assert'
CHECK_V1 = "check-v1"
METHODS = ("auto", "assert", "reference", "pairwise", "generate")
BOTH_WRONG = "both wrong"  # how a verdict's basis starts when both grades fail and one is closer by the margin


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


def answer_digest(question: str, basis: str | None, text: str) -> str:
    """What a grade is a grade of: the question, what the answer is held against, and the answer."""
    return _digest("answer", question, basis or "", text)


@dataclass(frozen=True)
class Gradable:
    """One answer with what it is graded against: the preset's assertions, its rubric, or its reference."""

    question: str
    text: str
    language: str
    reference: str | None = None
    assertions: tuple[Assertion, ...] = ()

    @property
    def rubric(self) -> str | None:
        return checks.rubric(self.assertions)

    @property
    def basis(self) -> str | None:
        """What the model grader compares the answer with: an llm-rubric if the preset has one, else the reference."""
        return self.rubric or self.reference

    def digest(self) -> str:
        return answer_digest(self.question, self.basis, self.text)

    def exact_check(self) -> answer_check.Check | None:
        """The exact check against the reference, when no text assertion decides and the reference concludes in
        a number, a choice or yes/no (answer_check); None otherwise."""
        if checks.textual(self.assertions) or not self.reference:
            return None
        return answer_check.check(self.text, self.reference)

    @property
    def rule_decides(self) -> bool:
        """Whether a rule (the preset's assertions, or an exact check of the reference) grades this answer, so
        no model grader is asked."""
        return bool(checks.textual(self.assertions)) or (
            bool(self.reference) and answer_check.conclusion(self.reference) is not None)


def _rule_row(grader: str, method: str, version: str, digest: str, passed: bool, details: dict) -> dict:
    return {"id": _digest(grader, method, version, digest), "answer_digest": digest, "grader": grader,
            "method": method, "prompt_version": version, "probability": 1.0 if passed else 0.0, "seconds": 0.0,
            "created": time.time(), "details": json.dumps(details, ensure_ascii=False)}


def assertion_rows(answers: list[Gradable]) -> list[dict]:
    """Grades of every answer whose preset has text assertions: probability 1 (all pass) or 0."""
    rows = []
    for answer in answers:
        graded = checks.grade(answer.assertions, answer.text)
        if graded is not None:
            passed, results = graded
            rows.append(_rule_row(ASSERTIONS, "assert", "assert-v1", answer.digest(), passed,
                                  {"results": [r.__dict__ for r in results]}))
    return rows


def check_rows(answers: list[Gradable]) -> list[dict]:
    """Grades of every answer checked exactly against its reference (Gradable.exact_check): 1 when its final
    answer is the reference's conclusion, else 0, with what was read on each side."""
    rows = []
    for answer in answers:
        if (found := answer.exact_check()) is not None:
            rows.append(_rule_row(REFERENCE_CHECK, "assert", CHECK_V1, answer.digest(), found.passed,
                                  {"check": dataclasses.asdict(found)}))
    return rows


def _calls(groups: list[list], batch_size: int) -> list[list]:
    """The order of calls for prefix reuse: for each block of up to ``batch_size`` questions, their first
    answers, then their second answers, and so on."""
    calls = []
    for start in range(0, len(groups), batch_size):
        block = groups[start:start + batch_size]
        for turn in range(max(len(g) for g in block)):
            calls.append([g[turn] for g in block if turn < len(g)])
    return calls


def _top_json(answer: BatchAnswer) -> str:
    first = answer.logprobs[0] if answer.logprobs else None
    return json.dumps({"reply": answer.text, "top": [list(t) for t in first.top] if first else []},
                      ensure_ascii=False)


Save = Callable[[list[dict]], None]


def reference_grades(ask: Ask, answers: list[Gradable], grader: str, save: Save, batch_size: int = 8,
                     on_call: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> bool:
    """P(yes) of every answer against its reference (or rubric), one forward pass each, handed to ``save``
    after every call (an interrupted run keeps what it graded). False if ``stop`` was set. An answer whose
    call failed gets no grade (and is graded again next time)."""
    groups: dict[tuple[str, str], list[Gradable]] = {}
    for answer in answers:
        if answer.basis:
            groups.setdefault((answer.question, answer.basis), []).append(answer)
    for call in _calls(list(groups.values()), batch_size):
        if stop is not None and stop.is_set():
            return False
        rows: list[dict] = []
        started = time.perf_counter()
        replies = ask([BatchRequest(G.reference_messages(a.question, a.basis, a.text, a.language)) for a in call],
                      GRADE_PARAMS)
        seconds = (time.perf_counter() - started) / len(call)
        for answer, reply in zip(call, replies):
            if reply.error or not reply.logprobs:
                continue
            method = "rubric" if answer.rubric else "reference"
            digest = answer.digest()
            rows.append({"id": _digest(grader, method, G.REFERENCE_V1, digest), "answer_digest": digest,
                         "grader": grader, "method": method, "prompt_version": G.REFERENCE_V1,
                         "probability": G.yes_probability(reply.logprobs[0]), "details": _top_json(reply),
                         "seconds": round(seconds, 3), "created": time.time()})
        save(rows)
        if on_call:
            on_call(len(call))
    return True


def pairwise_grades(ask: Ask, pairs: list[dict], grader: str, save: Save, batch_size: int = 8,
                    on_call: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> bool:
    """P(first shown is better) of every pair in both orders (pairs: dicts with id, question, answer_a,
    answer_b, language), handed to ``save`` after every call. False if ``stop`` was set."""
    items = [(p, shown) for p in pairs for shown in ("ab", "ba")]
    for start in range(0, len(items), batch_size):
        if stop is not None and stop.is_set():
            return False
        rows: list[dict] = []
        chunk = items[start:start + batch_size]
        replies = ask([BatchRequest(G.pairwise_messages(p["question"], *((p["answer_a"], p["answer_b"]) if shown == "ab"
                                                                        else (p["answer_b"], p["answer_a"])),
                                                        p["language"])) for p, shown in chunk], GRADE_PARAMS)
        for (pair, shown), reply in zip(chunk, replies):
            if reply.error or not reply.logprobs:
                continue
            rows.append({"pair_id": pair["id"], "grader": grader, "shown": shown, "prompt_version": G.PAIRWISE_V1,
                         "p_first": G.first_probability(reply.logprobs[0]), "details": _top_json(reply),
                         "created": time.time()})
        save(rows)
        if on_call:
            on_call(len(chunk))
    return True


def verdict_rows(pairs: list[dict], gradables: dict[str, tuple[Gradable, Gradable]], grades: dict[str, dict],
                 grader: str, method: str, cutoffs: G.Cutoffs) -> list[dict]:
    """Each pair's verdict from its two answers' grades (``gradables``: pair id -> (A, B); ``grades``: answer
    digest -> the grade that counts for it), at the margin and pass threshold of the question's language. A pair
    with an ungraded answer gets no winner (NULL)."""
    rows = []
    for pair in pairs:
        a, b = gradables[pair["id"]]
        ga, gb = grades.get(a.digest()), grades.get(b.digest())
        pa, pb = (ga or {}).get("probability"), (gb or {}).get("probability")
        margin, threshold = cutoffs.margin_for(a.language), cutoffs.threshold_for(a.language)
        winner = G.verdict_from_grades(pa, pb, margin, threshold)
        basis = f"{basis_of(ga)} vs {basis_of(gb)}"
        if winner in (Winner.A, Winner.B) and max(pa, pb) < threshold:  # a win between two failing answers
            basis = f"{BOTH_WRONG}; {'A' if winner is Winner.A else 'B'} closer: {basis}"
        rows.append({"pair_id": pair["id"], "grader": grader, "method": method,
                     "winner": winner.value if winner else None, "margin": margin, "basis": basis,
                     "created": time.time()})
    return rows


def basis_of(grade: dict | None) -> str:
    """What decided a grade, in a few words: 'reference check pass', 'assertions fail', 'P(yes) 0.91', 'ungraded'."""
    if grade is None:
        return "ungraded"
    if grade["method"] == "assert":  # a rule: the preset's assertions, or the exact check of the reference
        rule = "reference check" if grade["grader"] == REFERENCE_CHECK else "assertions"
        return f"{rule} " + ("pass" if grade["probability"] else "fail")
    p = grade["probability"]
    return "P(yes) " + ("?" if p is None else f"{p:.2f}")


def pairwise_verdict_rows(pairs: list[dict], rows: list[dict], grader: str, margin: float,
                          method: str = "pairwise") -> list[dict]:
    """Each pair's verdict from its two pairwise grades (None: abstained, or an order missing), stored under
    ``method`` (a pair graded pairwise by ``auto`` for lack of a reference keeps the run's method)."""
    by_pair: dict[str, dict[str, float | None]] = {}
    for row in rows:
        by_pair.setdefault(row["pair_id"], {})[row["shown"]] = row["p_first"]
    out = []
    for pair in pairs:
        orders = by_pair.get(pair["id"], {})
        p = G.pair_probability(orders.get("ab"), orders.get("ba"))
        winner = G.verdict_from_pair_probability(p, margin)
        out.append({"pair_id": pair["id"], "grader": grader, "method": method,
                    "winner": winner.value if winner else None, "margin": margin,
                    "basis": "abstained" if p is not None and winner is None else
                    "an order ungraded" if p is None else f"P(A better) {p:.2f}", "created": time.time()})
    return out


def winners(rows: list[dict]) -> dict[str, Winner | None]:
    return {r["pair_id"]: Winner(r["winner"]) if r["winner"] else None for r in rows}
