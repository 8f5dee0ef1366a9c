"""The comparison report of a batch run: one self-contained HTML file plus a Markdown copy.

Written purely from stored data (the run, its answers, the judge's verdicts), so
``python -m arena report RUN_ID`` gives the same file at any later time. Everything a
model wrote is untrusted: in HTML it is escaped and shown as preformatted text, in
Markdown it sits in a code fence longer than any backtick run inside it, so neither a
script nor a remote image (``![x](http://…)``) can ever render. The HTML carries a
Content-Security-Policy that forbids scripts and any network fetch, and its charts are
inline SVG, so it opens offline in any browser.
"""
from __future__ import annotations

import functools
import html
import io
import math
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from arena.batch.runner import build_pairs, cutoffs_of, run_gradables, run_grades
from arena.batch.tables import html_table, markdown_table
from arena.core.language import language_of
from arena.grading import grades as G
from arena.grading import judge as J
from arena.grading.grader import ASSERTIONS, BOTH_WRONG, REFERENCE_CHECK
from arena.quality import board as quality_board
from arena.ratings import charts
from arena.storage.store import Store

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; "
       "form-action 'none'")
BATCH_TIMING_NOTE = (
    "Answers decoded together in one engine batch (column *batched*) were timed under batching: their time "
    "to first token includes the prefill of every prompt in the batch, and their tokens/s is one sequence's "
    "share of the batch's aggregate throughput. Compare such figures with each other, not with the page's "
    "single-stream timings. Batched greedy answers are reproducible run to run but may differ from the page's "
    "single-stream answers (different kernel paths break near-ties differently).")
# The worker's resident memory, recorded by the run after the model's answers (rss) and its peak (VmHWM).
MEMORY_HEADING = "worker memory, MB (after answers / peak)"
REFERENCE_FIGURES = (
    "For scale: GPT-4 as a judge agreed with humans 66% of the time with ties and 85% without (humans with "
    "each other: 63% and 81%), and kept its verdict after a swap only 65% of the time (MT-Bench). \"The longer "
    "answer wins\" agreed with humans 62% of the time (AlpacaEval).")


class ReportError(ValueError):
    """The report cannot be written (unknown run); the message says why."""


@dataclass
class RunData:
    run: dict
    answers: list[dict]
    pairs: list[dict]
    verdicts: dict[str, J.Verdict]
    judgments: dict[tuple[str, str], dict]
    human_pairs: list[dict]
    human_verdicts: dict[str, J.Verdict]
    grades: dict[tuple[str, str, int], dict] = field(default_factory=dict)  # (model, preset, repeat) -> grade
    bases: dict[str, str] = field(default_factory=dict)  # pair id -> what its verdict rests on
    quality: list[dict] = field(default_factory=list)  # the newest `arena quality` comparison of the run's models

    @property
    def config(self) -> dict:
        return self.run["config"]

    @property
    def method(self) -> str:
        """How the run was graded; runs from before grading had only the generative judge."""
        return self.config.get("method") or ("generate" if self.config.get("judge") else "auto")

    @property
    def grader(self) -> str:
        return self.config.get("judge") or ASSERTIONS

    @functools.cached_property
    def cutoffs(self) -> G.Cutoffs:
        """The run's pass thresholds and margins per language (read once: pass_rates asks for every answer)."""
        return cutoffs_of(self.config)

    def name(self, model_id: str) -> str:
        entry = self.run["environment"].get("models", {}).get(model_id, {}).get("entry", {})
        return entry.get("name") or model_id


def load(store: Store, run_id: str) -> RunData:
    run = store.batch_run(run_id)
    if run is None:
        known = ", ".join(r["id"] for r in store.batch_runs()[-5:]) or "none yet"
        raise ReportError(f"no batch run {run_id!r}; recent runs: {known}")
    answers = store.batch_answers(run_id)
    pairs = build_pairs(run_id, run["config"], answers)
    data = RunData(run, answers, pairs, {}, {}, store.judge_pairs(human_only=True), {})
    judge, method = run["config"].get("judge"), data.method
    if method == "generate":
        mine = store.judgments(judge, [p["id"] for p in pairs]) if judge else []
        data.verdicts, data.judgments = J.verdicts_by_pair(mine), {(r["pair_id"], r["shown"]): r for r in mine}
        data.human_verdicts = J.verdicts_by_pair(store.judgments(judge, [p["id"] for p in data.human_pairs])) \
            if judge else {}
    else:
        mine = [r for r in store.pair_verdicts([p["id"] for p in pairs], data.grader) if r["method"] == method]
        data.verdicts = {r["pair_id"]: _verdict(r) for r in mine}
        data.bases = {r["pair_id"]: r["basis"] for r in mine}
        data.human_verdicts = {r["pair_id"]: _verdict(r) for r in store.pair_verdicts(
            [p["id"] for p in data.human_pairs], data.grader) if r["method"] == method}
    data.grades = run_grades(store, run["config"], run_gradables(run["config"], answers), method)
    quality = quality_board.latest_comparison(store.quality_results(), set(run["config"]["models"]))
    data.quality = quality if any(r["figures"] for r in quality) else []
    return data


def _verdict(row: dict) -> J.Verdict:
    """A stored pair verdict as the judge module's Verdict (an abstention is a verdict of no winner)."""
    return J.Verdict(row["winner"], None, "agreed" if row["winner"] else "abstained")


# -- numbers ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PassRate:
    passed: int
    graded: int
    ungraded: int

    @property
    def interval(self) -> tuple[float, float]:
        return G.wilson(self.passed, self.graded)

    def words(self) -> str:
        """'6 of 22 (27%, 13–48%)': the count, the rate and its 95% Wilson interval."""
        if not self.graded:
            return "not graded"
        lo, hi = self.interval
        extra = f"; {self.ungraded} not graded" if self.ungraded else ""
        return f"{self.passed} of {self.graded} ({self.passed / self.graded:.0%}, {lo:.0%}–{hi:.0%}){extra}"


def pass_rates(data: RunData, by: str | None = None) -> dict[tuple[str, str], PassRate]:
    """Per (model, group) the answers whose grade passed (a rule, or P(yes) at or above the pass threshold of the
    question's language), out of those graded; ``by``: None (one group), 'category' or 'language' of the preset."""
    presets = {p["id"]: p for p in data.config["presets"]}
    counts: dict[tuple[str, str], list[int]] = {}
    for a in data.answers:
        preset = presets.get(a["preset_id"])
        if preset is None:
            continue
        language = language_of(preset["question"], preset.get("language"))
        group = "all" if by is None else language if by == "language" else str(preset.get(by))
        grade = data.grades.get((a["model"], a["preset_id"], a["repeat"]))
        p = grade["probability"] if grade else None
        c = counts.setdefault((a["model"], group), [0, 0, 0])
        if a["error"] or p is None:
            c[2] += 1
        else:
            c[1] += 1
            c[0] += data.cutoffs.passes(p, language)
    return {k: PassRate(*v) for k, v in counts.items()}


def pass_rate_table(store: Store, names: dict[str, str] | None = None):
    """Every batch run's graded answers together: per model, the pass rate overall, by category and by language,
    each as 'passed/graded (rate)'. The Leaderboard tab shows it beside the graders' ratings."""
    import pandas as pd

    counts: dict[tuple[str, str], list[int]] = {}
    for run in store.batch_runs():
        data = RunData(run, store.batch_answers(run["id"]), [], {}, {}, [], {})
        data.grades = run_grades(store, run["config"], run_gradables(run["config"], data.answers), data.method)
        for by in (None, "category", "language"):
            for (model, group), rate in pass_rates(data, by).items():
                c = counts.setdefault((model, group if by else "all"), [0, 0])
                c[0] += rate.passed
                c[1] += rate.graded
    if not counts:
        return pd.DataFrame(columns=["model", "all"])
    groups = ["all", *sorted({g for _, g in counts} - {"all"})]
    models = sorted({m for m, _ in counts})
    rows = []
    for model in models:
        row = {"model": (names or {}).get(model, model)}
        for group in groups:
            passed, graded = counts.get((model, group), (0, 0))
            row[group] = f"{passed}/{graded} ({passed / graded:.0%})" if graded else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", *groups])


def verdict_sentences(data: RunData) -> list[str]:
    """The report's opening: each model's pass rate with its interval, as a person would write it."""
    if not data.grades:
        return ["No answer was graded in this run (no assertions, and no grader model)."]
    rates = pass_rates(data)
    lines = []
    for model in data.config["models"]:
        rate = rates.get((model, "all"))
        if rate:
            lines.append(f"**{_md_inline(data.name(model))}** passes {rate.words()}.")
    return lines


def grade_words(grade: dict | None, threshold: float = G.PASS_THRESHOLD) -> str:
    """One answer's grade for people: its assertions, or the grader's P(yes) against the pass ``threshold``."""
    if grade is None:
        return "not graded"
    p = grade["probability"]
    if grade["grader"] == REFERENCE_CHECK:
        c = grade["details"].get("check", {})
        found = c.get("found") if c.get("found") is not None else "no final answer"
        return (f"reference check ({c.get('rule', '?')}): " + ("pass" if p else "fail")
                + f"; expected {c.get('expected', '?')}, found {found} ({c.get('how', '?')})")
    if grade["method"] == "assert":
        failed = [r["assertion"] for r in grade["details"].get("results", []) if not r["passed"]]
        return "assertions: pass" if p else "assertions: fail (" + "; ".join(failed) + ")"
    if p is None:
        return f"{grade['grader']}: neither yes nor no among its likely first words (not graded)"
    against = "the rubric" if grade["method"] == "rubric" else "the reference"
    return f"{grade['grader']}: P(agrees with {against}) {p:.2f}, " + ("pass" if p >= threshold else "fail")


def _answer_grade(data: RunData, model: str, preset: dict, repeat: int) -> str:
    language = language_of(preset["question"], preset.get("language"))
    return grade_words(data.grades.get((model, preset["id"], repeat)), data.cutoffs.threshold_for(language))


def _stats(values: list[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None]
    return (statistics.fmean(vals), statistics.median(vals)) if vals else None


def summary(data: RunData) -> list[dict]:
    """One row per model: judge win rate with CI, timings (mean / median), answer length, errors."""
    rates = J.win_rates(data.pairs, data.verdicts)
    rows = []
    for model in data.config["models"]:
        mine = [a for a in data.answers if a["model"] == model]
        ok = [a for a in mine if not a["error"]]
        rows.append({
            "model": model, "name": data.name(model), "answers": len(mine), "errors": len(mine) - len(ok),
            "win": rates.get(model), "ttft": _stats([a["ttft_s"] for a in ok]),
            "tps": _stats([a["tokens_per_s"] for a in ok]), "total": _stats([a["total_s"] for a in ok]),
            "tokens": _stats([a["output_tokens"] for a in ok]), "chars": _stats([len(a["text"]) for a in ok]),
            "batched": sum(a["batched"] for a in ok), "memory": _memory(data, model)})
    return rows


def _memory(data: RunData, model: str) -> str:
    """The worker's resident memory after its answers and its peak, MB, as the run recorded them."""
    info = data.run["environment"].get("models", {}).get(model, {})
    if info.get("rss_mb") is None:
        return "–"
    return f"{info['rss_mb']:.0f} / {figure(info.get('peak_rss_mb'), 0)}"


def figure(value: float | None, digits: int = 2, pct: bool = False) -> str:
    """A number for people: a dash for missing or NaN (an undefined kappa), else fixed digits or a percentage."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.0f}%" if pct else f"{value:.{digits}f}"


def _pair(stats: tuple[float, float] | None, digits: int = 2) -> str:
    return "–" if stats is None else f"{stats[0]:.{digits}f} / {stats[1]:.{digits}f}"


def _win(win: tuple | None) -> str:
    return "–" if not win else f"{100 * win[0]:.0f}% [{100 * win[1]:.0f}–{100 * win[2]:.0f}%] (n={win[3]})"


def _versions(data: RunData) -> str:
    """The judge prompt version(s) of this run's stored judgments (an older run may hold v1 verdicts)."""
    found = sorted({r["prompt_version"] for r in data.judgments.values()}) or [J.PROMPT_VERSION]
    return " and ".join(f"`{v}`" for v in found)


def judge_block(data: RunData) -> list[str]:
    """Plain sentences (Markdown-safe, no model text) describing the grading and how far to trust it."""
    if data.method != "generate":
        return grading_block(data)
    cfg = data.config
    judge = cfg.get("judge")
    if not judge:
        return ["No judge: this run was not judged (fewer than two models, or `--judge none`)."]
    lines = [f"Judge: **{_md_inline(data.name(judge))}** (`{judge}`), chosen as {cfg.get('judge_rule', '?')}. "
             f"Prompt {_versions(data)}: pairwise, reference-guided where the preset has a reference, in the "
             "question's language, greedy; every pair judged in both orders."]
    if cfg.get("self_judging"):
        lines.append(f"**Self-judging:** the judge is also a contestant in this run. Judges tend to prefer their "
                     f"own answers (self-preference), so treat `{judge}`'s win rate with extra suspicion.")
    q = J.quality(data.pairs, data.verdicts)
    lines.append(f"On this run: {q.pairs} pair(s) judged; {q.unparsed} unparsed after one retry (not counted as "
                 f"wins); inconsistent after the swap (counted as ties): {figure(q.inconsistency_rate, pct=True)} "
                 f"({q.inconsistent} of {q.pairs - q.unparsed}). The longer answer won "
                 f"{figure(q.longer_wins_rate, pct=True)} of the judge's decisive verdicts (n={q.longer_wins_n}).")
    h = J.quality(data.human_pairs, data.human_verdicts)
    if against := _against_humans(h, "judge", "that this judge judged"):
        lines += against
    else:
        lines.append("Agreement with humans: not measured yet: no stored pair has both a human vote and a verdict "
                     "of this judge. Measure it with `python -m arena export --format jsonl -o votes.jsonl` then "
                     f"`python -m arena judge votes.jsonl --judge {judge}`.")
    unreliable = (not math.isnan(q.inconsistency_rate) and q.inconsistency_rate >= 0.5) or \
        h.beats_length_baseline is False or (q.pairs and q.unparsed / q.pairs >= 0.5)
    if unreliable:
        lines.append("**Verdict on the judge: not reliable.** Its win rates below say more about the judge's "
                     "position and length biases than about the models. Use a stronger judge (for example an "
                     "`openai` endpoint model) before drawing conclusions.")
    lines.append(REFERENCE_FIGURES)
    return lines


def _against_humans(h: J.JudgeQuality, who: str, which_pairs: str) -> list[str]:
    """Agreement with human votes beside the length baseline's, or nothing when no voted pair was judged."""
    jh, lh = h.judge_vs_human, h.length_vs_human
    if not (jh and jh.n):
        return []
    lines = [f"Against human votes (stored pairs with a human vote {which_pairs}, n={jh.n}): the {who} agrees "
             f"{figure(jh.with_ties, pct=True)} with ties, {figure(jh.without_ties, pct=True)} without "
             f"(n={jh.n_decisive}), Cohen's kappa {figure(jh.kappa)}; the baseline \"the longer answer wins\" agrees "
             f"{figure(lh.with_ties, pct=True)} with ties, {figure(lh.without_ties, pct=True)} without "
             f"(n={lh.n_decisive}), kappa {figure(lh.kappa)}."
             + (f" Inconsistency on those pairs: {figure(h.inconsistency_rate, pct=True)}." if who == "judge" else "")]
    if not h.beats_length_baseline:
        lines.append(f"**This {who} does not beat the length baseline** on human-voted pairs: its verdicts are "
                     "no better than picking the longer answer.")
    return lines


def refused_words(refused: dict, graded_elsewhere: bool = False) -> str:
    """Why a run's grader did not decide pass/fail (runner.refusal), for the CLI and the report;
    ``graded_elsewhere``: it still decides the run's other languages."""
    where = f" in {', '.join(refused.get('languages') or [])}" if graded_elsewhere else ""
    return (f"The grader {refused['grader']} is not used for pass/fail{where}: {refused['reason']}. Verdicts "
            f"{'there ' if where else ''}come from the assertions and the reference checks only; answers neither "
            f"decides are not graded (run with --method reference --judge {refused['grader']} to grade them anyway, "
            "or label more answers in the Batch tab's review and run python -m arena grader-check).")


def calibration_words(calibration: dict[str, dict]) -> list[str]:
    """The person's own calibrations a run used, language by language, with what each rests on."""
    lines = []
    for language, c in sorted(calibration.items(), reverse=True):
        auc = "unknown" if c["auc"] is None else f"{c['auc']:.2f} ({c['auc_low']:.2f}–{c['auc_high']:.2f})"
        kappa = "unknown" if c["kappa"] is None else f"{c['kappa']:.2f}"
        lines.append(f"In {language}, pass threshold {c['threshold']:.2f} and pair margin {c['margin']:.2f} from your own "
                     f"calibration (python -m arena grader-check, {time.strftime('%Y-%m-%d', time.localtime(c['created']))}"
                     f"): {c['labels']} labelled answers to {c['questions']} questions ({c['positives']} correct; "
                     f"{c['sources']}); its P(yes) there has ROC-AUC {auc} and kappa {kappa} cross-validated over "
                     "questions; " + (f"it may not decide pass/fail ({c['refused']})." if c["refused"] else
                                      "it clears the bars to decide pass/fail."))
    return lines


def measured_words(grader: str, languages: set[str]) -> list[str]:
    """What the arena measured of ``grader`` held out, in the languages where it decides with the defaults."""
    measured = G.MEASURED_GRADERS.get(grader, {})
    return [f"Measured held out in {language}, where it decides: ROC-AUC {m.auc:.2f} and kappa {m.kappa:.2f} at the "
            f"pass threshold {G.PASS_THRESHOLD}, on {m.where}." for language in sorted(languages, reverse=True)
            if (m := measured.get(language))]


def _languages(data: RunData) -> set[str]:
    return {language_of(p["question"], p.get("language")) for p in data.config["presets"]}


def grading_block(data: RunData) -> list[str]:
    """How the run's answers were graded, what came of it, and how well the grader measured (README, Grading)."""
    cfg, method, grader = data.config, data.method, data.config.get("judge")
    margin = cfg.get("margin", G.DEFAULT_MARGIN)
    asserted = sum(1 for p in cfg["presets"] if any(a["type"] != "llm-rubric" for a in p.get("assert", [])))
    by_model = f"**{_md_inline(data.name(grader))}** (`{grader}`)'s" if grader else "no model's (none named)"
    how = {
        "auto": f"answers to the {asserted} preset(s) with assertions are graded by them (exact, free); answers "
                "whose reference concludes in a number, a choice or yes/no by checking their final answer against it "
                f"(exact, free); every other answer by {by_model} probability that it reaches the reference's "
                "conclusion",
        "assert": f"answers are graded by rules only: their presets' assertions ({asserted} preset(s) have them), and "
                  "a check of their final answer where the reference concludes in a number, a choice or yes/no",
        "reference": f"every answer is graded by {by_model} probability that it reaches the reference's conclusion",
        "pairwise": f"each pair by {by_model} probability that one answer is better, in both orders, averaged",
    }[method]
    lines = [f"Grading: **{method}**: {how}. The probability is read from one forward pass (`max_tokens: 1`, top "
             f"log-probabilities; prompt `{cfg.get('grade_prompt', G.REFERENCE_V1)}`): nothing is generated or parsed, "
             "and one answer is shown at a time, so there is no order to be biased by. "
             + (f"A pair's verdict: the answer whose grade is higher by at least {margin:.2f} wins; otherwise a tie "
                "when their grades pass, \"both bad\" when they fail." if method != "pairwise" else
                f"A verdict only when the averaged probability is further than {margin:.2f} from ½; otherwise the "
                "pair abstains.")]
    if refused := cfg.get("grader_refused"):
        lines.append(f"**{_md_inline(refused_words(refused, graded_elsewhere=bool(grader)))}**")
    lines += [_md_inline(line) for line in calibration_words(cfg.get("calibration") or {})]
    if grader and method in ("auto", "reference"):  # languages on the defaults: neither calibrated nor refused
        lines += measured_words(grader, _languages(data) - set(data.cutoffs.calibrated) - data.cutoffs.refused)
    if grader and cfg.get("self_judging"):
        lines.append(f"**Self-grading:** the grader is also a contestant; treat `{grader}`'s own grades with care.")
    graded = sum(1 for g in data.grades.values() if g.get("probability") is not None)
    deciders = Counter(_decider(g) for g in data.grades.values() if g.get("probability") is not None)
    if graded:
        lines.append("Who decided each grade: " + ", ".join(f"{n} by {who}" for who, n in sorted(deciders.items()))
                     + " (each answer's grade below says what was read).")
    outcomes = [v.winner for v in data.verdicts.values()]
    closer = sum(b.startswith(BOTH_WRONG) for b in data.bases.values())
    lines.append(f"On this run: {graded} of {len(data.answers)} answer(s) graded; of {len(data.pairs)} pair(s), "
                 f"{sum(w in ('model_a', 'model_b') for w in outcomes)} decisive verdict(s)"
                 + (f" ({closer} between two failing answers, the closer one winning: \"{BOTH_WRONG}; A closer\")"
                    if closer else "") + ", "
                 f"{outcomes.count('tie')} tie(s), {outcomes.count('tie (bothbad)')} \"both bad\", "
                 f"{outcomes.count(None)} without a verdict.")
    h = J.quality(data.human_pairs, data.human_verdicts)
    if against := _against_humans(h, "grader", "graded the same way"):
        lines += against
    else:
        lines.append("Agreement with human votes: none of the stored pairs with a human vote was graded this way yet "
                     "(`python -m arena judge votes.jsonl --method " + method + (f" --judge {grader}" if grader else "")
                     + "`).")
    if known := G.LABELLED_FIGURES.get((grader or ASSERTIONS, method)):
        lines.append("Measured on the arena's labelled set (BENCHMARKS.md §13; in-sample: the presets the grading "
                     f"was tuned on, so not a promise for other questions): {known}")
    if grader and method in ("auto", "reference") and grader not in G.MEASURED_GRADERS:
        lines.append(f"`{grader}` has not been measured as a grader: its pass/fail is unverified.")
    return lines


def _decider(grade: dict) -> str:
    return ("reference checks" if grade["grader"] == REFERENCE_CHECK else "assertions" if grade["method"] == "assert"
            else f"the grader {grade['grader']}")


# -- charts (matplotlib Figure objects, never pyplot: it keeps every figure alive) --------------------
def _names(data: RunData) -> dict[str, str]:
    return {r["model"]: data.name(r["model"]) for r in data.quality}


def _svg(draw: Callable[[], Any]) -> str:
    """The figure ``draw()`` makes, as SVG with its text kept as text: the reader's browser draws it in its own
    fonts, Chinese included, whatever fonts this machine has. Without a CJK font here, matplotlib can only estimate
    the width of Chinese text for the layout, and would warn once per character about glyphs it does not draw."""
    import warnings

    import matplotlib

    from arena.ratings.charts import cjk_font

    buf = io.StringIO()
    # Only fonts this machine has (naming one it lacks logged a findfont line per text: 846 in one report);
    # a fixed hash salt gives stable ids: the same data gives the same file.
    style = {"svg.fonttype": "none", "svg.hashsalt": "arena",
             "font.family": ["DejaVu Sans", *([cjk_font()] if cjk_font() else [])]}
    with matplotlib.rc_context(style), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig = draw()
        fig.tight_layout()
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.find("<svg"):]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def box_chart(data: RunData, column: str, label: str) -> str:
    return _svg(lambda: _box_figure(data, column, label))


def _box_figure(data: RunData, column: str, label: str):
    models = data.config["models"]
    series = [[a[column] for a in data.answers if a["model"] == m and not a["error"] and a[column] is not None]
              for m in models]
    fig = _figure(7, 0.55 * len(models) + 1.4)
    ax = fig.add_subplot()
    shown = [(m, s) for m, s in zip(models, series) if s]
    if shown:
        ax.boxplot([s for _, s in shown], orientation="horizontal", tick_labels=[m for m, _ in shown], showmeans=True)
        for y, (_, s) in enumerate(shown, start=1):
            ax.scatter(s, [y] * len(s), s=10, alpha=0.5, color="#1f6feb", zorder=3)
    else:
        ax.text(0.5, 0.5, "no successful answers", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(label)
    return fig


def win_matrix_chart(data: RunData) -> str:
    """Share of judged pairs the row model won against the column model (ties count half)."""
    return _svg(lambda: _win_matrix_figure(data))


def _win_matrix_figure(data: RunData):
    import numpy as np

    models = data.config["models"]
    index = {m: i for i, m in enumerate(models)}
    score = np.zeros((len(models), len(models)))
    games = np.zeros_like(score)
    for p in data.pairs:
        v = data.verdicts.get(p["id"])
        if not v or v.winner is None:
            continue
        i, j = index[p["model_a"]], index[p["model_b"]]
        y = {"model_a": 1.0, "model_b": 0.0}.get(v.winner, 0.5)
        score[i, j] += y
        score[j, i] += 1 - y
        games[i, j] += 1
        games[j, i] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(games > 0, score / np.maximum(games, 1), np.nan)
    n = max(len(models), 2)
    fig = _figure(1.2 * n + 3, 0.9 * n + 1.8)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(frac), cmap="RdBu", vmin=0, vmax=1)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_yticks(range(len(models)), models)
    for (i, j), v in np.ndenumerate(frac):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}\n(n={int(games[i, j])})", ha="center", va="center", fontsize=8)
    ax.set_title("Judge: share won by row vs column (ties = ½)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


# -- text helpers ------------------------------------------------------------------------------------
def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _md_inline(text: object) -> str:
    """Model ids and names in Markdown prose: nothing in them may become a link, image or HTML."""
    return re.sub(r"([\\`*_\[\]<>|!#])", r"\\\1", str(text)).replace("\n", " ")


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in ``text``: its content can never render."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _timing(a: dict) -> str:
    if a["error"]:
        return f"error: {a['error']}"
    return (f"first token {figure(a['ttft_s'])} s · total {figure(a['total_s'])} s · {a['output_tokens']} tokens · "
            f"{figure(a['tokens_per_s'], 1)} tok/s" + (f" · batched ×{a['batch_size']}" if a["batched"] else "")
            + (" · cut at max tokens" if a["finish_reason"] == "length" else ""))


_VERDICT_WORDS = {"model_a": "A better", "model_b": "B better", "tie": "Tie", "tie (bothbad)": "Both bad"}


def _shown_label(row: dict | None, pair: dict) -> str:
    if row is None:
        return "not judged"
    if row["label"] == "unparsed":
        return "unparsed" if row["attempts"] else "judge call failed"
    winner = J.to_winner(row["label"], row["shown"])
    return {"model_a": f"{pair['model_a']} better", "model_b": f"{pair['model_b']} better"}.get(
        winner, _VERDICT_WORDS.get(winner, "?"))


def _final(v: J.Verdict | None, pair: dict) -> str:
    if v is None or v.status == "incomplete":
        return "not judged"
    if v.status == "unparsed":
        return "unparsed (not counted)"
    if v.status == "abstained":
        return "no verdict (the grader abstained, or an answer was not graded)"
    word = {"model_a": f"{pair['model_a']} better", "model_b": f"{pair['model_b']} better"}.get(
        v.winner, _VERDICT_WORDS[v.winner])
    return word + (" (the two orders disagreed: inconsistent)" if v.status == "inconsistent" else "")


def _header_facts(data: RunData) -> list[tuple[str, str]]:
    env, cfg = data.run["environment"], data.config
    s = cfg["settings"]
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(data.run["created"]))
    libs = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items() if v)
    facts = [("Run", f"{data.run['id']} ({data.run['status']}), started {created}"),
             ("Machine", f"{env.get('cpu')}, {env.get('cores')} cores, {env.get('memory_gib')} GiB RAM; "
                         f"Python {env.get('python')} on {env.get('platform')}"),
             ("Libraries", libs),
             ("Settings", f"temperature {s['temperature']}, top-p {s['top_p']}, max new tokens {s['max_new_tokens']}, "
                          f"seed {s['seed']} (+ repeat index), repeats {s['repeats']}, batch size {s['batch_size']}"
                          + (f", system prompt: {s['system_prompt']!r}" if s["system_prompt"] else "")),
             ("Questions", f"{len(cfg['presets'])} preset(s)")]
    if phases := env.get("phases"):
        facts.append(("Wall time", f"answering {phases['answering_s']:.0f} s, grading {phases['grading_s']:.0f} s "
                                   "(the last session of the run; model loading not included)"))
    for model in cfg["models"] + ([cfg["judge"]] if cfg.get("judge") and cfg["judge"] not in cfg["models"] else []):
        info = env.get("models", {}).get(model, {})
        entry = info.get("entry", {})
        role = "judge" if model == cfg.get("judge") and model not in cfg["models"] else "model"
        quantization = str(entry.get("quantization"))
        params = f", {info['params'] / 1e6:.0f}M params" if info.get("params") and "params" not in quantization else ""
        facts.append((f"{role} {model}", f"{entry.get('name', model)}: engine {entry.get('engine')}, "
                                         f"{quantization}{params}, {info.get('threads')} thread(s)"))
    return facts


def _questions(data: RunData) -> list[dict]:
    by = {(a["model"], a["preset_id"], a["repeat"]): a for a in data.answers}
    out = []
    for preset in data.config["presets"]:
        for repeat in range(data.config["settings"]["repeats"]):
            answers = [(m, by.get((m, preset["id"], repeat))) for m in data.config["models"]]
            pairs = [p for p in data.pairs if p["preset_id"] == preset["id"] and p["repeat"] == repeat]
            out.append({"preset": preset, "repeat": repeat, "answers": answers, "pairs": pairs})
    return out


# -- HTML ----------------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;
max-width:1200px;margin:2em auto;padding:0 1em;color:#1b1f24;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f6f8fa}.answers{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));
gap:.8em}.answer{border:1px solid #d0d7de;border-radius:6px;padding:.6em}pre{white-space:pre-wrap;word-wrap:break-word;max-height:40em;overflow:auto;
font-family:inherit;margin:.3em 0;background:#f6f8fa;padding:.5em;border-radius:4px}.timing{color:#57606a;
font-size:.9em}.note{background:#fff8c5;border:1px solid #d4a72c;padding:.5em .8em;border-radius:6px}
.bad{color:#cf222e}.q{border-top:2px solid #d0d7de;margin-top:1.5em;padding-top:.5em}svg{max-width:100%;height:auto}
"""


def _html_paragraph(markdown_line: str) -> str:
    """The judge block's sentences: escape, then turn only our own **bold** and `code` into tags."""
    text = _h(markdown_line.replace("\\", ""))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return "<p>" + re.sub(r"`(.+?)`", r"<code>\1</code>", text) + "</p>"


SUMMARY_HEADER = ["model", "pair win rate [95% CI]", "first token, s (mean / median)", "tokens/s (mean / median)",
                  "total, s (mean / median)", "answer tokens (mean / median)"]


def write_html(data: RunData, compare: "Comparison | None" = None) -> str:
    models = data.config["models"]
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Batch report {_h(data.run['id'])}</title><style>{STYLE}</style></head><body>",
             f"<h1>Comparison report: {_h(' vs '.join(models))}</h1>",
             "<table>" + "".join(f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in _header_facts(data))
             + "</table>", "<h2>Verdict</h2>", *[_html_paragraph(line) for line in verdict_sentences(data)],
             *_rate_tables_html(data),
             f'<p class="note">{_h(BATCH_TIMING_NOTE).replace("*batched*", "<em>batched</em>")}</p>',
             "<h2>Summary</h2>" + _summary_html(data), *_quality_html(data)]
    parts.append("<h2>The grading, and how far to trust it</h2>")
    parts += [_html_paragraph(line) for line in judge_block(data)]
    parts.append("<h2>Charts</h2>")
    parts.append(f"<h3>Time to first token</h3>{box_chart(data, 'ttft_s', 'time to first token, s')}")
    parts.append(f"<h3>Decode speed</h3>{box_chart(data, 'tokens_per_s', 'tokens/s (after the first token)')}")
    if data.config.get("judge"):
        parts.append(f"<h3>Judge win matrix</h3>{win_matrix_chart(data)}")
    if compare:
        parts.append(compare.html())
    parts.append("<h2>Question by question</h2>")
    parts += [_question_html(data, q) for q in _questions(data)]
    parts.append(f"<p class=\"timing\">Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
                 f"<code>python -m arena report {_h(data.run['id'])}</code>.</p></body></html>")
    return "\n".join(parts)


def _summary_html(data: RunData) -> str:
    header = [*SUMMARY_HEADER, "answer chars (mean)", "answers (errors, batched)", MEMORY_HEADING]
    return html_table(header, [
        [f"{_h(r['name'])}<br><code>{_h(r['model'])}</code>", _h(_win(r['win'])), _pair(r['ttft']),
         _pair(r['tps'], 1), _pair(r['total']), _pair(r['tokens'], 0),
         figure(r['chars'][0] if r['chars'] else None, 0), f"{r['answers']} ({r['errors']}, {r['batched']})",
         _h(r['memory'])] for r in summary(data)])


def _quality_html(data: RunData) -> list[str]:
    if not data.quality:
        return []
    names = _names(data)
    table = quality_board.frame(data.quality, names)
    return ["<h2>What INT4 costs</h2>", _html_paragraph(quality_board.intro(data.quality, names)),
            html_table([_h(c) for c in table.columns], [[_h(v) for v in row] for row in table.values]),
            _svg(lambda: charts.quality_chart(data.quality, names))]


def _question_html(data: RunData, q: dict) -> str:
    """One question's block: the question and reference, each model's answer with its timing and grade, and each
    pair's verdict (with the generative judge's two orders)."""
    parts = []
    p = q["preset"]
    rep = f" (repeat {q['repeat'] + 1})" if data.config["settings"]["repeats"] > 1 else ""
    parts.append(f'<div class="q"><h3>{_h(p["id"])}{rep} · {_h(p["category"])}</h3>'
                 f"<p><strong>Question</strong></p><pre>{_h(p['question'])}</pre>")
    if p.get("reference"):
        parts.append(f"<p><strong>Reference answer</strong></p><pre>{_h(p['reference'])}</pre>")
    parts.append('<div class="answers">')
    for model, a in q["answers"]:
        body = "<p>not answered yet</p>" if a is None else \
            f"<pre>{_h(a['text'])}</pre><div class=\"timing{' bad' if a['error'] else ''}\">{_h(_timing(a))}</div>" \
            f"<div class=\"grade\">{_h(_answer_grade(data, model, p, q['repeat']))}</div>"
        parts.append(f'<div class="answer"><strong>{_h(data.name(model))}</strong>{body}</div>')
    parts.append("</div>")
    for pair in q["pairs"]:
        parts.append(f"<p><strong>{_h(_verdict_title(data, pair))}:</strong> "
                     f"{_h(_final(data.verdicts.get(pair['id']), pair))}{_h(_basis_words(data, pair))}</p>")
        if data.method != "generate":
            continue
        parts.append("<ul>")
        for shown in ("ab", "ba"):
            row = data.judgments.get((pair["id"], shown))
            first = pair["model_a"] if shown == "ab" else pair["model_b"]
            parts.append(f"<li>{_h(first)} shown first: <strong>{_h(_shown_label(row, pair))}</strong>"
                         + (f"<pre>{_h(row['rationale'] or row['reply'])}</pre>" if row else "") + "</li>")
        parts.append("</ul>")
    parts.append("</div>")
    return "\n".join(parts)


# -- Markdown ----------------------------------------------------------------------------------------
def write_markdown(data: RunData, compare: "Comparison | None" = None) -> str:
    models = data.config["models"]
    out = [f"# Comparison report: {_md_inline(' vs '.join(models))}", ""]
    out += [f"- **{_md_inline(k)}**: {_md_inline(v)}" for k, v in _header_facts(data)]
    out += ["", "## Verdict", ""]
    for line in verdict_sentences(data):
        out += [line, ""]
    out += _rate_tables_markdown(data)
    out += ["", "> " + BATCH_TIMING_NOTE, "", "## Summary", ""]
    out += markdown_table([*SUMMARY_HEADER, "answers (errors, batched)", MEMORY_HEADING], [
        [_md_inline(r['name']), _win(r['win']), _pair(r['ttft']), _pair(r['tps'], 1), _pair(r['total']),
         _pair(r['tokens'], 0), f"{r['answers']} ({r['errors']}, {r['batched']})", r['memory']]
        for r in summary(data)])
    if data.quality:
        names = _names(data)
        table = quality_board.frame(data.quality, names)
        out += ["", "## What INT4 costs", "", quality_board.intro(data.quality, names), ""]
        out += markdown_table(list(table.columns), [[_md_inline(v) for v in row] for row in table.values])
    out += ["", "## The grading, and how far to trust it", ""]
    for line in judge_block(data):
        out += [line, ""]
    out.append("Charts: see the HTML report.")
    if compare:
        out += ["", compare.markdown()]
    out += ["", "## Question by question"]
    for q in _questions(data):
        p = q["preset"]
        out += ["", f"### {_md_inline(p['id'])} · {_md_inline(p['category'])}"
                + (f" (repeat {q['repeat'] + 1})" if data.config["settings"]["repeats"] > 1 else ""), "",
                "**Question**", "", _fence(p["question"]), ""]
        if p.get("reference"):
            out += ["**Reference answer**", "", _fence(p["reference"]), ""]
        for model, a in q["answers"]:
            out += [f"**{_md_inline(data.name(model))}**", ""]
            out += ["not answered yet", ""] if a is None else [
                _fence(a["text"]), "", f"*{_md_inline(_timing(a))}*", "",
                f"Grade: {_md_inline(_answer_grade(data, model, p, q['repeat']))}", ""]
        for pair in q["pairs"]:
            out += [f"**{_md_inline(_verdict_title(data, pair))}:** "
                    f"{_md_inline(_final(data.verdicts.get(pair['id']), pair) + _basis_words(data, pair))}", ""]
            if data.method != "generate":
                continue
            for shown in ("ab", "ba"):
                row = data.judgments.get((pair["id"], shown))
                first = pair["model_a"] if shown == "ab" else pair["model_b"]
                out.append(f"- {_md_inline(first)} shown first: **{_md_inline(_shown_label(row, pair))}**")
                if row:
                    out += ["", _fence(row["rationale"] or row["reply"]), ""]
    return "\n".join(out) + "\n"


def _verdict_title(data: RunData, pair: dict) -> str:
    who = "Judge" if data.method == "generate" else f"Verdict ({data.method})"
    return f"{who}, {pair['model_a']} vs {pair['model_b']}"


def _basis_words(data: RunData, pair: dict) -> str:
    basis = data.bases.get(pair["id"])
    human = f"; human vote: {_VERDICT_WORDS[pair['human_winner']]}" if pair.get("human_winner") else ""
    return (f" ({basis})" if basis else "") + human


def _rate_rows(data: RunData, by: str) -> list[tuple[str, list[str]]]:
    rates = pass_rates(data, by)
    groups = list(dict.fromkeys(g for _, g in rates))
    return [(g, [rates[(m, g)].words() if (m, g) in rates else "–" for m in data.config["models"]]) for g in groups]


def _rate_tables_html(data: RunData) -> list[str]:
    if not data.grades:
        return []
    header = [_h(data.name(m)) for m in data.config["models"]]
    return [f"<h3>{title}</h3>" + html_table([by, *header], [[_h(g), *map(_h, cells)] for g, cells in _rate_rows(data, by)])
            for by, title in (("category", "Pass rate by category"), ("language", "Pass rate by language"))]


def _rate_tables_markdown(data: RunData) -> list[str]:
    if not data.grades:
        return []
    out = []
    for by, title in (("category", "Pass rate by category"), ("language", "Pass rate by language")):
        out += [f"### {title}", ""]
        out += markdown_table([by, *(_md_inline(data.name(m)) for m in data.config["models"])],
                              [[_md_inline(g), *cells] for g, cells in _rate_rows(data, by)])
        out.append("")
    return out


# -- comparing two runs --------------------------------------------------------------------------------
SPEED_HEADER = ["model", "median tokens/s, this run ÷ other"]
CHANGE_HEADER = ["question", "model", "answer", "tokens/s ratio"]


@dataclass
class Comparison:
    """Per-question changes between this run and another: answers, verdicts and speed."""

    other: str
    mapping: list[tuple[str, str]]       # (model here, model there)
    rows: list[dict]                     # per (preset, repeat, model)
    flips: list[dict]                    # per pair whose verdict changed
    speed: list[tuple[str, float | None]]  # (model here, median tok/s here / there)

    def html(self) -> str:
        parts = [f"<h2>Changes against run {_h(self.other)}</h2><p>Models matched: "
                 + ", ".join(f"{_h(a)} ↔ {_h(b)}" for a, b in self.mapping) + "</p>",
                 html_table(SPEED_HEADER, [[_h(m), figure(r)] for m, r in self.speed]),
                 html_table(CHANGE_HEADER, [[_h(r['preset_id']), _h(r['model']), _h(r['change']),
                                             figure(r['tps_ratio'])] for r in self.rows])]
        if self.flips:
            parts.append("<p>Verdicts that changed:</p><ul>" + "".join(
                f"<li>{_h(f['preset_id'])}, {_h(f['pair'])}: {_h(f['before'])} → {_h(f['after'])}</li>"
                for f in self.flips) + "</ul>")
        else:
            parts.append("<p>No judge verdict changed.</p>")
        return "\n".join(parts)

    def markdown(self) -> str:
        out = [f"## Changes against run {_md_inline(self.other)}", "",
               "Models matched: " + ", ".join(f"{_md_inline(a)} ↔ {_md_inline(b)}" for a, b in self.mapping), ""]
        out += markdown_table(SPEED_HEADER, [[_md_inline(m), figure(r)] for m, r in self.speed])
        out += [""] + markdown_table(CHANGE_HEADER, [[_md_inline(r['preset_id']), _md_inline(r['model']), r['change'],
                                                       figure(r['tps_ratio'])] for r in self.rows])
        out += [""] + ([f"- {_md_inline(f['preset_id'])}, {_md_inline(f['pair'])}: {_md_inline(f['before'])} → "
                        f"{_md_inline(f['after'])}" for f in self.flips] or ["No judge verdict changed."])
        return "\n".join(out)


def _favoured(verdict: J.Verdict | None, pair: dict, rename: dict | None = None) -> str | None:
    """A verdict as the model it favours (renamed by ``rename``), 'tie', 'both bad', or None if not judged."""
    if verdict is None or verdict.winner is None:
        return None
    side = {"model_a": pair["model_a"], "model_b": pair["model_b"]}.get(verdict.winner)
    if side is None:
        return "both bad" if verdict.winner == "tie (bothbad)" else "tie"
    return (rename or {}).get(side, side)


def _favoured_words(favoured: str | None) -> str:
    return "not judged" if favoured is None else favoured if favoured in ("tie", "both bad") else f"{favoured} better"


def compare(this: RunData, other: RunData) -> Comparison:
    """Match models by id when both runs have the same set, else by position (INT4 vs fp32 of one model)."""
    here, there = this.config["models"], other.config["models"]
    mapping = list(zip(here, here)) if set(here) == set(there) else list(zip(here, there))
    to_other = dict(mapping)
    old = {(a["model"], a["preset_id"], a["repeat"]): a for a in other.answers}
    rows = []
    for a in this.answers:
        b = old.get((to_other.get(a["model"]), a["preset_id"], a["repeat"]))
        if b is None:
            continue
        change = "both failed" if a["error"] and b["error"] else "failed now" if a["error"] else \
            "failed before" if b["error"] else "same" if a["text"] == b["text"] else "changed"
        ratio = a["tokens_per_s"] / b["tokens_per_s"] if a["tokens_per_s"] and b["tokens_per_s"] else None
        rows.append({"preset_id": a["preset_id"], "model": a["model"], "change": change, "tps_ratio": ratio})
    speed = []
    for m_here, m_there in mapping:
        x = _stats([a["tokens_per_s"] for a in this.answers if a["model"] == m_here and not a["error"]])
        y = _stats([a["tokens_per_s"] for a in other.answers if a["model"] == m_there and not a["error"]])
        speed.append((m_here, x[1] / y[1] if x and y and y[1] else None))
    # Verdicts are compared by the model they favour, not by side: either run may list the models in another order.
    back = {v: k for k, v in to_other.items()}
    before = {(p["preset_id"], p["repeat"], frozenset((back.get(p["model_a"]), back.get(p["model_b"])))):
              _favoured(other.verdicts.get(p["id"]), p, back) for p in other.pairs}
    flips = []
    for p in this.pairs:
        key = (p["preset_id"], p["repeat"], frozenset((p["model_a"], p["model_b"])))
        if key not in before:
            continue
        now = _favoured(this.verdicts.get(p["id"]), p)
        if now != before[key]:
            flips.append({"preset_id": p["preset_id"], "pair": f"{p['model_a']} vs {p['model_b']}",
                          "before": _favoured_words(before[key]), "after": _favoured_words(now)})
    return Comparison(other.run["id"], mapping, rows, flips, speed)


def write_report(store: Store, run_id: str, out_dir: Path, compare_with: str | None = None) -> tuple[Path, Path]:
    """Write ``batch-<run>.html`` and ``batch-<run>.md`` into ``out_dir``; returns both paths."""
    data = load(store, run_id)
    comparison = compare(data, load(store, compare_with)) if compare_with else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"batch-{run_id}" + (f"-vs-{compare_with}" if compare_with else "")
    html_path, md_path = out_dir / f"{stem}.html", out_dir / f"{stem}.md"
    html_path.write_text(write_html(data, comparison), encoding="utf-8")
    md_path.write_text(write_markdown(data, comparison), encoding="utf-8")
    return html_path, md_path
