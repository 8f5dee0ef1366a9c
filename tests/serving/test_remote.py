"""The `openai` engine against a real OpenAI-compatible server started on loopback (our own
worker, serving SmolLM2-135M with an API key), plus the endpoint's failure messages."""
import os
import re
import subprocess
import sys

import httpx
import pytest

from arena.core.config import ConfigError, load_models
from arena.core.generation import GenerationParams
from arena.rounds.rules import Arena, Settings
from arena.serving import client
from arena.serving.supervisor import Supervisor, free_port
from arena.storage.store import Store

from ..conftest import ROOT, collect, final_view, smol_catalog, wait_for

KEY = "s3cret-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory, smol_weights):
    """A SmolLM2 worker acting as someone else's OpenAI-compatible server, guarded by a key, started with the
    README's command for a worker on another machine (``python -m arena.worker``)."""
    models = smol_catalog(tmp_path_factory.mktemp("remote") / "models.yaml")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "arena.worker", "--models", str(models), "--model", "smol-a",
                             "--weights", str(smol_weights), "--port", str(port), "--threads", "1",
                             "--api-key-env", "REMOTE_KEY"], cwd=ROOT, env={**os.environ, "REMOTE_KEY": KEY})
    base = f"http://127.0.0.1:{port}/v1"
    wait_for(lambda: _up(f"http://127.0.0.1:{port}/health"), 60, "the remote server")
    yield base
    proc.terminate()
    proc.wait(10)


def _up(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def remote_entry(model_id, base_url, model="smol-a", key_env="ARENA_TEST_REMOTE_KEY", timeout=60):
    key = f"\n      api_key_env: {key_env}" if key_env else ""
    return f"""
  - id: {model_id}
    name: "Remote {model_id}"
    engine: openai
    endpoint:
      base_url: {base_url}
      model: {model}{key}
      timeout_s: {timeout}
    quantization: "whatever the server runs"
    license: n/a
"""


def test_remote_model_answers_beside_a_local_one(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_TEST_REMOTE_KEY", KEY)
    catalog = smol_catalog(tmp_path / "models.yaml", remote_entry("far", server))
    supervisor = Supervisor(load_models(catalog), catalog, tmp_path / "data", threads=1)
    supervisor.start()
    try:
        statuses = {s.id: s for s in supervisor.wait_until_settled(60)}
        assert statuses["far"].state == "ready" and "remote: http://127.0.0.1" in statuses["far"].describe()
        arena = Arena(supervisor, Store(tmp_path / "arena.db"), [])
        view = final_view(arena, "What is the capital of France? Answer in one word.", mode="named",
                          model_a="far", model_b="smol-a", settings=Settings(temperature=0.0, max_new_tokens=24))
        far = view["a"]["turns"][-1]
        assert "Paris" in far["text"] and far["output_tokens"] > 0 and far["error"] is None
    finally:
        supervisor.stop()


@pytest.mark.parametrize("entry_args, env, expected", [
    (("http://127.0.0.1:9/v1",), {"ARENA_TEST_REMOTE_KEY": KEY}, "cannot reach http://127.0.0.1:9/v1"),
    ((None,), {"ARENA_TEST_REMOTE_KEY": "wrong"}, "refused the API key (HTTP 401)"),
    ((None,), {}, "environment variable ARENA_TEST_REMOTE_KEY is not set"),
    ((None, "no-such-model"), {"ARENA_TEST_REMOTE_KEY": KEY}, "does not serve 'no-such-model'"),
])
def test_endpoint_problems_are_named_in_the_status(server, tmp_path, monkeypatch, entry_args, env, expected):
    monkeypatch.delenv("ARENA_TEST_REMOTE_KEY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    base, *rest = entry_args
    path = tmp_path / "models.yaml"
    path.write_text("models:" + remote_entry("far", base or server, *rest))
    supervisor = Supervisor(load_models(path), path, tmp_path / "data")
    supervisor.start()
    try:
        status = wait_for(lambda: next((s for s in supervisor.statuses() if s.state == "failed"), None), 20,
                          "the failure")
        assert expected in status.detail
    finally:
        supervisor.stop()


def test_a_server_address_is_shown_without_its_credentials(tmp_path):
    """A base_url with user:password@ (some proxies take them) is used as it is, but every status, /models
    answer and pane error shows it without them, in English and in Chinese."""
    from arena.web.render import describe_status

    path = tmp_path / "models.yaml"
    path.write_text("models:" + remote_entry("far", "http://alice:pa55word@127.0.0.1:9/v1", key_env=None))
    supervisor = Supervisor(load_models(path), path, tmp_path / "data")
    supervisor.start()
    try:
        status = wait_for(lambda: next((s for s in supervisor.statuses() if s.state == "failed"), None), 20,
                          "the failure")
        shown = [status.detail, status.describe(), status.remote, describe_status(status, "zh")]
        assert all("pa55word" not in text and "alice" not in text for text in shown), shown
        assert "cannot reach http://127.0.0.1:9/v1" in status.detail
        assert describe_status(status, "zh").startswith("失败：无法连接 http://127.0.0.1:9/v1")
    finally:
        supervisor.stop()

    async def ask():
        async for _ in client.stream_chat("http://alice:pa55word@127.0.0.1:9/v1", "m", [], GenerationParams()):
            pass
    with pytest.raises(client.EndpointError) as refused:
        import asyncio
        asyncio.run(ask())
    assert "pa55word" not in str(refused.value) and "http://127.0.0.1:9/v1" in str(refused.value)


def test_wrong_key_and_timeout_become_pane_errors(server):
    params = GenerationParams(max_new_tokens=200)
    messages = [{"role": "user", "content": "Tell me a long story."}]
    with pytest.raises(client.EndpointError, match="HTTP 401.*Check the API key"):
        collect(server, messages, params, api_key="wrong")
    with pytest.raises(client.EndpointError, match="timed out"):
        collect(server, messages, params, api_key=KEY, read_timeout=0.001)


def test_openai_entries_are_validated(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models:" + remote_entry("far", "gpu-box:8000/v1"))
    with pytest.raises(ConfigError, match="'base_url' must start with http"):
        load_models(path)
    path.write_text("models:" + remote_entry("far", "http://x/v1", key_env="sk-live-abc123"))
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        load_models(path)
    entry = remote_entry("far", "http://x/v1").replace("endpoint:", "source: {file: a}\n    endpoint:")
    path.write_text("models:" + entry)
    with pytest.raises(ConfigError, match="takes 'endpoint:'"):
        load_models(path)



@pytest.mark.parametrize("event, problem", [
    ('{"choices": [{"delta": "oops"}]}', "choices.0.delta"),
    ('{"usage": {"prompt_tokens": -5}}', "usage.prompt_tokens"),
    ('[1, 2]', "event"),
    ("<html>busy</html>", "event"),
])
def test_a_malformed_stream_event_is_named_not_crashed_on(stub, event, problem):
    """A server's streamed JSON is checked against a schema: a wrong type becomes an error naming the
    server and the field, never an AttributeError in a pane or a negative token count in the store."""
    with pytest.raises(client.EndpointError, match=rf"sent a malformed stream event \({re.escape(problem)}"):
        collect(stub.base_url, [{"role": "user", "content": "RAW " + event}], GenerationParams())


def test_unknown_fields_and_null_usage_are_accepted(stub):
    """Servers add fields of their own and some send null counts: those answers still come through."""
    event = '{"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop", "logprobs": null}], ' \
            '"usage": {"prompt_tokens": null, "completion_tokens": 1}, "system_fingerprint": "x"}'
    text, usage = collect(stub.base_url, [{"role": "user", "content": "RAW " + event}], GenerationParams())
    assert text == "hi" and usage.completion_tokens == 1 and usage.finish_reason == "stop"


@pytest.mark.parametrize("reply, problem", [
    (b'{"results": [{"text": 5}]}', "results.0.text"),
    (b'{"results": [{"text": "a", "completion_tokens": -1}]}', "results.0.completion_tokens"),
    (b'{"batched": true}', "results"),
])
def test_a_malformed_batch_reply_is_refused(monkeypatch, reply, problem):
    """The batch endpoint's JSON is checked the same way (the real endpoint is exercised in
    test_real_models and test_batch)."""
    from arena.serving.engines.base import BatchRequest

    monkeypatch.setattr(client.httpx, "post", lambda *a, **k: client.httpx.Response(200, content=reply))
    with pytest.raises(client.EndpointError, match=rf"malformed batch reply \({re.escape(problem)}"):
        client.batch_chat("http://far:1/v1", "m", [BatchRequest([{"role": "user", "content": "q"}])], GenerationParams())


def test_a_server_without_the_batch_endpoint_gets_concurrent_requests_and_one_failure_fails_one_item():
    """vLLM, Ollama or llama.cpp's server have no /arena/batch: a batch of 16 goes out 8 requests at a time (the
    server's own batching can work), and the one request the server fails is the only answer with an error."""
    from arena.serving.engines.base import BatchRequest

    from ..stub_openai import StubOpenAI

    stub = StubOpenAI(piece_delay=0.05)
    try:
        requests = [BatchRequest([{"role": "user", "content": f"question {i}"}]) for i in range(15)] + \
            [BatchRequest([{"role": "user", "content": "FAIL please"}])]
        reply = client.batch_chat(stub.base_url, "stub-a", requests, GenerationParams(max_new_tokens=8),
                                  concurrency=8)
    finally:
        stub.close()
    assert reply.via == "8 requests at a time (server has no batch endpoint)" and stub.most_in_flight == 8
    assert [a.error is not None for a in reply.answers] == [False] * 15 + [True]
    assert "the stub was told to fail" in reply.answers[-1].error
    assert all(a.text == f"stub-a heard: question {i}" for i, a in enumerate(reply.answers[:15]))
