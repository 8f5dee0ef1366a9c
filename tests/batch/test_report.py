"""The report is written from stored data only, escapes everything a model wrote, never fetches
anything, renders Chinese, and keeps batch answers and judge verdicts out of the human leaderboard."""
import re
import time

import pytest

from arena.batch import report
from arena.batch.runner import build_pairs
from arena.ratings import leaderboard
from arena.storage.store import Store

EVIL = '<script>alert(1)</script> ![tracker](http://evil.example/x.png) <img src="http://evil.example/y.png"> ```'


def _stored_run(store: Store, run_id: str = "r1", text_a: str = EVIL, speed_a: float = 20.0,
                models: tuple[str, str] = ("m1", "m2"), labels: tuple[str, str] = ("A", "A"),
                quantization: str = "Q4") -> None:
    """One judged pair of m1 and m2 (listed in ``models`` order); ``labels`` are the judge's in both orders."""
    presets = [{"id": "zh-1", "category": "中文", "question": "明明和白白谁喜欢谁？", "reference": "白白喜欢明明。",
                "source": "t", "language": "zh"}]
    config = {"models": list(models), "presets": presets, "judge": "m1", "self_judging": True,
              "judge_rule": "the ready local model with the most parameters (worker /health)",
              "settings": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "seed": 0, "repeats": 1,
                           "system_prompt": "", "batch_size": 8, "judge_max_tokens": 64}}
    env = {"cpu": "Test CPU", "cores": 2, "memory_gib": 24, "python": "3.11", "platform": "Linux",
           "libraries": {"llama-cpp-python": "0.3.36"},
           "models": {m: {"entry": {"name": f"Model {m}", "engine": "llamacpp", "quantization": quantization}, "threads": 2,
                          "params": 135_000_000} for m in ("m1", "m2")}}
    store.create_batch_run(run_id, time.time(), config, env)
    store.save_batch_answers([
        {"key": f"{run_id}-{m}", "run_id": run_id, "model": m, "preset_id": "zh-1", "repeat": 0, "seed": 0,
         "settings_hash": "h", "question": presets[0]["question"], "text": text, "error": None, "ttft_s": 0.5,
         "total_s": 2.0, "output_tokens": 31, "prompt_tokens": 20, "tokens_per_s": speed, "finish_reason": "stop",
         "engine": "llamacpp", "quantization": "Q4", "batched": 1, "batch_size": 2, "created": time.time()}
        for m, text, speed in (("m1", text_a, speed_a), ("m2", "白白喜欢明明。", 10.0))])
    pairs = build_pairs(run_id, config, store.batch_answers(run_id))
    store.save_judge_pairs(pairs)
    store.save_judgments([{"pair_id": pairs[0]["id"], "judge": "m1", "shown": shown, "label": label,
                           "rationale": f"rationale {shown} <b>bold</b>", "reply": "", "attempts": 1,
                           "prompt_version": "pairwise-ref-v1", "ttft_s": 1.0, "total_s": 2.0, "created": 0}
                          for shown, label in zip(("ab", "ba"), labels)])
    store.set_batch_run_status(run_id, "done", time.time())


def test_html_report_escapes_model_output_and_fetches_nothing(tmp_path):
    """Script tags, markdown images and <img> in an answer stay inert text: no <script>, no <img>, no
    remote URL in any src/href; a CSP forbids scripts and fetches; charts are inline SVG; Chinese is there;
    the self-judging flag and the inconsistent verdict (first-shown picked twice) are stated."""
    store = Store(tmp_path / "a.db")
    _stored_run(store)
    html_path, md_path = report.write_report(store, "r1", tmp_path / "out")
    page = html_path.read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert not re.search(r'(src|href)\s*=\s*"https?://', page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count("<svg") == 3  # TTFT, tokens/s, win matrix
    assert "明明和白白谁喜欢谁？" in page and "白白喜欢明明。" in page
    assert "Self-judging" in page and "inconsistent" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "not reliable" in page  # 1 of 1 pairs inconsistent


def test_markdown_copy_fences_model_output(tmp_path):
    """In the Markdown copy an answer sits in a fence longer than any backtick run inside it, so the
    image syntax and HTML can't render; the summary table and judge block are there."""
    store = Store(tmp_path / "a.db")
    _stored_run(store)
    _, md_path = report.write_report(store, "r1", tmp_path / "out")
    text = md_path.read_text(encoding="utf-8")
    fenced = re.search(r"(`{4,})text\n(.*?)\n\1", text, re.S)
    assert fenced and EVIL in fenced.group(2)
    assert "| Model m1 |" in text and "Self-judging" in text and "白白喜欢明明。" in text
    assert "engine llamacpp, Q4, 135M params, 2 thread(s)" in text  # the measured count, named once


def test_a_parameter_count_in_the_catalogs_description_is_not_repeated(tmp_path):
    """models.yaml's quantization text may already say "630M params"; the header then does not add the
    measured count after it (it read "630M params, 630M params")."""
    store = Store(tmp_path / "a.db")
    _stored_run(store, quantization="Q4_1 GGUF (4-bit), 135M params")
    _, md_path = report.write_report(store, "r1", tmp_path / "out")
    assert "Q4\\_1 GGUF (4-bit), 135M params, 2 thread(s)" in md_path.read_text(encoding="utf-8")


def test_compare_shows_changed_answers_flipped_verdicts_and_speed(tmp_path):
    """report --compare: the answer of m1 changed, m2's did not; m1's speed ratio is 40/20 = 2."""
    store = Store(tmp_path / "a.db")
    _stored_run(store, "old", text_a="old answer", speed_a=20.0)
    _stored_run(store, "new", text_a="new answer", speed_a=40.0)
    html_path, md_path = report.write_report(store, "new", tmp_path / "out", compare_with="old")
    text = md_path.read_text(encoding="utf-8")
    assert "Changes against run old" in text
    assert "| zh-1 | m1 | changed | 2.00 |" in text and "| zh-1 | m2 | same | 1.00 |" in text
    assert "No judge verdict changed." in text  # same verdict in both runs


def test_compare_finds_a_flipped_verdict_when_the_other_run_lists_the_models_the_other_way(tmp_path):
    """Old run: m1 vs m2, the judge prefers m1 in both orders. New run lists m2 first and the judge now
    prefers m1's opponent: one verdict flipped, named by model, whatever the order of the lists."""
    store = Store(tmp_path / "a.db")
    _stored_run(store, "old", models=("m1", "m2"), labels=("A", "B"))   # A=m1 first, then B=m1: m1 better
    _stored_run(store, "new", models=("m2", "m1"), labels=("A", "B"))   # m2 listed first: now m2 better
    _, md_path = report.write_report(store, "new", tmp_path / "out", compare_with="old")
    text = md_path.read_text(encoding="utf-8")
    assert "- zh-1, m2 vs m1: m1 better → m2 better" in text, text[text.find("Changes against"):]


def test_unknown_run_is_a_clear_error(tmp_path):
    """An unknown run id names the recent runs instead of writing an empty report."""
    store = Store(tmp_path / "a.db")
    _stored_run(store)
    try:
        report.write_report(store, "nope", tmp_path / "out")
    except report.ReportError as exc:
        assert "no batch run 'nope'" in str(exc) and "r1" in str(exc)
    else:
        raise AssertionError("no error for an unknown run")


def test_batch_data_never_reaches_the_human_leaderboard(tmp_path):
    """Batch answers and judge verdicts live in their own tables: the human (rounds) leaderboard stays
    empty, while the judge table rates the judged models."""
    store = Store(tmp_path / "a.db")
    _stored_run(store)
    human, _, named = leaderboard.from_store(store)
    assert human.empty and named.empty and store.voted_rounds() == []
    judged, _ = leaderboard.judge_table(store)
    assert set(judged["model"]) == {"m1", "m2"} and set(judged["battles"]) == {1}


def _cli(*args, cwd=None):
    import subprocess
    import sys

    from ..conftest import ROOT
    return subprocess.run([sys.executable, "-m", "arena", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_report_and_judge_leaderboard_from_a_stored_run(tmp_path):
    """`report RUN_ID` writes both files; `leaderboard --source judge` prints the judge's table apart from
    human votes, and `--source human` still says there are no rated battles; an unknown run exits 2."""
    store = Store(tmp_path / "d" / "arena.db")
    _stored_run(store)
    store.close()
    data = ["--data-dir", str(tmp_path / "d")]
    done = _cli("report", "r1", "--out", str(tmp_path / "out"), *data)
    assert done.returncode == 0 and (tmp_path / "out" / "batch-r1.html").is_file()
    assert (tmp_path / "out" / "batch-r1.md").is_file()
    judged = _cli("leaderboard", "--source", "judge", *data)
    assert judged.returncode == 0 and "Automatic judge" in judged.stdout and "m1" in judged.stdout
    assert "No rated (blind) battles yet." in _cli("leaderboard", "--source", "human", *data).stdout
    missing = _cli("report", "nope", *data)
    assert missing.returncode == 2 and "no batch run 'nope'" in missing.stderr


def test_cli_judge_refuses_a_bad_file_before_starting_any_model(tmp_path):
    """`judge FILE` with a corrupt line exits 2 naming the line, and no model is loaded for it."""
    bad = tmp_path / "battles.jsonl"
    bad.write_text('{"model_a": "x"}\n', encoding="utf-8")
    result = _cli("judge", str(bad), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "battles.jsonl line 1" in result.stderr and "loading" not in result.stderr


def test_summary_shows_each_workers_recorded_memory(tmp_path):
    """The summary table carries the worker RSS a run recorded after the model's answers and its peak;
    a model without a measurement (remote, or a run from before this column) shows a dash."""
    store = Store(tmp_path / "a.db")
    _stored_run(store)
    env = store.batch_run("r1")["environment"]
    env["models"]["m1"].update(rss_mb=512.4, peak_rss_mb=601.0, rss_when="after its answers")
    store.set_batch_run_environment("r1", env)
    html_path, md_path = report.write_report(store, "r1", tmp_path / "out")
    rows = [line for line in md_path.read_text(encoding="utf-8").splitlines() if line.startswith("| Model m")]
    assert rows[0].endswith("| 512 / 601 |") and rows[1].endswith("| – |")
    assert "Prompt `pairwise-ref-v1`" in md_path.read_text(encoding="utf-8")  # the stored verdicts' version
    assert report.MEMORY_HEADING in html_path.read_text(encoding="utf-8")


def test_judge_table_is_cached_until_a_judgment_changes(tmp_path, monkeypatch):
    """The Leaderboard's judge table is computed once per state of the judgments table: page views
    reuse it; a stored or replaced judgment recomputes it, and the recomputed table shows the change."""
    store = Store(tmp_path / "a.db")
    _stored_run(store)
    calls = []
    real = leaderboard.judge_table
    monkeypatch.setattr(leaderboard, "judge_table", lambda *a, **k: calls.append(1) or real(*a, **k))
    cached = leaderboard.CachedJudgeTable(store, rounds=10)
    first, _ = cached.get({})
    assert cached.get({})[0] is first and len(calls) == 1
    assert first["rating"].nunique() == 1  # the judge picked the first-shown answer twice: a tie
    pair = store.judge_pairs("r1")[0]
    store.save_judgments([{"pair_id": pair["id"], "judge": "m1", "shown": "ba", "label": "B", "rationale": "",
                           "reply": "B", "attempts": 1, "prompt_version": "pairwise-ref-v2", "ttft_s": 1.0,
                           "total_s": 2.0, "created": time.time()}])   # replaces the 'ba' verdict: now agreed
    again, _ = cached.get({})
    assert len(calls) == 2 and list(again["model"]) == ["m1", "m2"] and again["rating"].iloc[0] > 1000
    assert cached.get({}, judge="m1")[0] is not again and len(calls) == 3  # another filter, another entry


@pytest.mark.parametrize("method", ["auto", "generate"])
def test_cli_judge_judges_a_battle_file_with_a_real_model(tmp_path, method):
    """`judge FILE --judge smol-a` on a two-battle file without references: by default (auto) SmolLM2 grades
    each pair by probability in both orders; with --method generate it judges both orders by a reason and a
    word. Either way 4 things are stored, the verdicts file holds both pairs, and the agreement with the
    file's human votes is printed; a second run finds nothing left to grade and prints the same."""
    import json

    from ..conftest import smol_catalog

    catalog = smol_catalog(tmp_path / "models.yaml")
    battles = tmp_path / "battles.jsonl"
    battles.write_text("".join(json.dumps({
        "question_id": f"q{i}", "model_a": "far-a", "model_b": "far-b", "winner": winner,
        "conversation_a": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": a}],
        "conversation_b": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": b}]}) + "\n"
        for i, (winner, a, b) in enumerate([("model_a", "4", "5"), ("model_b", "22", "It is 4.")])), encoding="utf-8")
    data = ("--models", str(catalog), "--data-dir", str(tmp_path / "d"))
    first = _cli("judge", str(battles), "--judge", "smol-a", "--method", method, "--threads", "1", *data)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "agreement with the file's human votes (n=" in first.stdout or "no agreement to report" in first.stdout
    store = Store(tmp_path / "d" / "arena.db")
    try:
        pairs = [p["id"] for p in store.judge_pairs()]
        if method == "generate":
            stored = store.judgments("smol-a")
            assert sorted(j["shown"] for j in stored) == ["ab", "ab", "ba", "ba"]
            assert all(j["attempts"] > 0 for j in stored)  # every order got a reply (parsed or not)
        else:
            stored = store.pair_grades(pairs, "smol-a")
            assert sorted(g["shown"] for g in stored) == ["ab", "ab", "ba", "ba"] and all(g["details"]["top"]
                                                                                         for g in stored)
        assert {v["method"] for v in store.pair_verdicts(pairs, "smol-a")} >= {method}
    finally:
        store.close()
    verdicts = (tmp_path / "d" / "judgments" / f"battles.smol-a.{method}.jsonl").read_text(encoding="utf-8")
    assert len(verdicts.splitlines()) == 2
    lines = [json.loads(v) for v in verdicts.splitlines()]
    assert {v["human_winner"] for v in lines} == {"model_a", "model_b"} and all("status" not in v for v in lines)
    assert ("consistency" in lines[0]) == (method == "generate")
    again = _cli("judge", str(battles), "--judge", "smol-a", "--method", method, "--threads", "1", *data)
    assert again.returncode == 0 and again.stdout.splitlines()[1:] == first.stdout.splitlines()[1:]


def test_a_verdict_line_says_agreement_with_the_human_apart_from_the_judges_consistency():
    """Before, a graded verdict was written with "status": "agreed" beside a human vote it contradicted ("agreed"
    meant the generative judge's two orders). Now agreement with the human is its own field, consistency is the
    generative judge's only, and no field is called status."""
    from arena.batch.cli import verdict_line
    from arena.grading import judge as J

    pair = {"id": "p", "model_a": "x", "model_b": "y", "human_winner": "model_b"}
    graded = verdict_line(pair, J.Verdict("model_a", None, "agreed"), {"basis": "grader"}, {}, "g", "auto")
    assert graded["agrees_with_human"] is False and "consistency" not in graded and "status" not in graded
    judged = verdict_line(pair, J.Verdict("tie", False, "inconsistent"), None, {"ab": {}}, "j", "generate")
    assert judged["consistency"] == "inconsistent" and judged["agrees_with_human"] is False
    assert verdict_line(pair, J.Verdict("model_b", True, "agreed"), None, {}, "j", "generate")["consistency"] == \
        "consistent"
    assert verdict_line({**pair, "human_winner": None}, None, None, {}, "j", "auto")["agrees_with_human"] is None


def test_agreement_with_human_votes_is_written_beside_the_length_baseline_or_left_out():
    """The judge's and the grader's report blocks share one paragraph on human votes: the figures beside the
    length baseline's, inconsistency only for a judge (a grader reads each answer once), a warning when length
    agrees better, and nothing when no voted pair was judged (the caller then says how to measure it)."""
    from arena.grading import judge as J
    pairs = [{"id": str(i), "answer_a": "a", "answer_b": "bbbb", "human_winner": "model_a"} for i in range(4)]
    wrong = J.quality(pairs, {str(i): J.aggregate("B", "A") for i in range(4)})  # always the longer answer
    judge_lines = report._against_humans(wrong, "judge", "that this judge judged")
    assert "the judge agrees 0% with ties" in judge_lines[0] and "Inconsistency on those pairs: 0%." in judge_lines[0]
    grader_lines = report._against_humans(wrong, "grader", "graded the same way")
    assert "Inconsistency" not in grader_lines[0]
    assert grader_lines[1].startswith("**This grader does not beat the length baseline**")
    right = J.quality(pairs, {str(i): J.aggregate("A", "B") for i in range(4)})
    assert len(report._against_humans(right, "judge", "x")) == 1  # agrees 100%, beats length: no warning
    assert report._against_humans(J.quality(pairs, {}), "judge", "x") == []


@pytest.mark.parametrize("cjk", [True, False])
def test_report_charts_keep_chinese_as_text_and_log_no_font_warning(cjk, monkeypatch, caplog):
    """Chinese model names and labels are written into the SVG as text (the reader's browser draws them), with a
    CJK font on this machine or without one; no font is named that is not installed, so nothing is logged (one
    60-question batch logged 846 "findfont: Font family 'Noto Sans CJK SC' not found" lines) or warned."""
    import logging
    import warnings
    from types import SimpleNamespace

    from arena.ratings import charts

    if not cjk:
        monkeypatch.setattr(charts, "cjk_font", lambda: None)
    elif charts.cjk_font() is None:
        pytest.fail("no CJK font installed: scripts/install.sh --test installs fonts-noto-cjk", pytrace=False)
    models = ["通义千问", "模型乙"]
    data = SimpleNamespace(config={"models": models}, answers=[
        {"model": m, "error": None, "ttft_s": s} for m in models for s in (0.4, 0.6)])
    caplog.set_level(logging.DEBUG, logger="matplotlib")
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        svg = report.box_chart(data, "ttft_s", "首 token 时间（秒）")
    assert "通义千问" in svg and "首 token 时间（秒）" in svg and "<text" in svg
    families = set(re.findall(r"font-family:\s*([^;\"]+)", svg))
    assert families and all(("Noto" in f or "CJK" in f) == cjk for f in families), families
    assert not [w for w in warned if "font" in str(w.message).lower() or "Glyph" in str(w.message)]
    assert not [r for r in caplog.records if "findfont" in r.getMessage() and "not found" in r.getMessage()]


def test_a_numeric_reference_is_checked_exactly_and_a_refused_grader_is_named(tmp_path):
    """A question whose reference is a number: each answer's final number decides, not its fluency (the
    Chinese answer that reasons confidently to 答案是30 fails against 18; the one boxing 18 passes), the pair
    verdict follows, and the report shows what was read from each answer, who decided each grade, and why
    the grader auto would have used was refused."""
    import threading

    from arena.batch.runner import BatchRunner, Progress, run_gradables
    from arena.grading import grades as G

    store = Store(tmp_path / "a.db")
    question = "小明有3袋苹果，每袋6个，他一共有多少个苹果？"
    presets = [{"id": "apples", "category": "math", "question": question, "reference": "18", "source": "t",
                "language": "zh"}]
    refused = {"grader": "qwen2.5-coder-0.5b-q4km", "reason": "ROC-AUC 0.41 (needs 0.70) on somewhere"}
    config = {"models": ["m1", "m2"], "presets": presets, "judge": None, "method": "auto", "margin": 0.35,
              "grader_refused": refused, "settings": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64,
                                                      "seed": 0, "repeats": 1, "system_prompt": "", "batch_size": 8,
                                                      "judge_max_tokens": 64}}
    store.create_batch_run("r", time.time(), config, {"models": {}})
    texts = {"m1": "每袋6个，3袋就是3×6。所以一共有 \\boxed{18} 个苹果。",
             "m2": "我们一步一步来。每袋6个苹果，共有5袋，6×5=30。答案是30个。"}
    store.save_batch_answers([
        {"key": f"r-{m}", "run_id": "r", "model": m, "preset_id": "apples", "repeat": 0, "seed": 0,
         "settings_hash": "h", "question": question, "text": text, "error": None, "ttft_s": 0.5, "total_s": 2.0,
         "output_tokens": 31, "prompt_tokens": 20, "tokens_per_s": 10.0, "finish_reason": "stop",
         "engine": "llamacpp", "quantization": "Q4", "batched": 1, "batch_size": 2, "created": time.time()}
        for m, text in texts.items()])
    answers = store.batch_answers("r")
    gradables = run_gradables(config, answers)
    pairs = build_pairs("r", config, answers)
    store.save_judge_pairs(pairs)
    sides = {p["id"]: (gradables[(p["model_a"], "apples", 0)], gradables[(p["model_b"], "apples", 0)]) for p in pairs}
    progress = Progress("r", 0, 0, "", time.time())
    assert BatchRunner(None, store, []).grade_pairs(pairs, sides, list(gradables.values()), None, "auto", G.Cutoffs(0.35),
                                                    progress, lambda _: None, threading.Event())
    (verdict,) = store.pair_verdicts(grader="assertions")
    winner = {"model_a": pairs[0]["model_a"], "model_b": pairs[0]["model_b"]}[verdict["winner"]]
    assert winner == "m1" and verdict["basis"].count("reference check") == 2
    html_path, md_path = report.write_report(store, "r", tmp_path / "reports")
    md = md_path.read_text(encoding="utf-8")
    assert "reference check (number): fail; expected 18, found 30 (announced)" in md
    assert "reference check (number): pass; expected 18, found 18 (boxed)" in md
    assert "2 by reference checks" in md and "qwen2.5-coder-0.5b-q4km is not used for pass/fail" in md
    assert "passes 1 of 1" in md and "passes 0 of 1" in md


def test_graders_measured_below_the_bars_are_refused_with_the_figures():
    """Per language, held out: the 0.5B (ROC-AUC 0.62, passes nothing) is refused in both languages; the 1.5B is
    refused in Chinese (kappa 0.19: over-confident) and decides English (ROC-AUC 0.76, kappa 0.40, at the bar); a
    grader never measured may decide, and nothing invents figures for it."""
    from arena.grading import grades as G

    small, big = "qwen2.5-coder-0.5b-q4km", "qwen2.5-coder-1.5b-q4km"
    assert "ROC-AUC 0.62 (needs 0.70)" in G.refused_grader(small, "en") and G.refused_grader(small, "zh")
    assert "kappa 0.19" in G.refused_grader(big, "zh") and "Chinese" in G.refused_grader(big, "zh")
    assert G.refused_grader(big, "en") is None
    assert G.refused_grader("smol-a", "en") is None and G.refused_grader(None, "zh") is None
    assert G.Measured(0.75, 0.45, "x").shortfall() is None
