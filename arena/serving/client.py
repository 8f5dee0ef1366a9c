"""Talk to any OpenAI-compatible chat endpoint: our workers, vLLM, Ollama, llama.cpp's server.

``stream_chat`` yields answer text pieces and finally a ``Usage``; every failure
becomes an ``EndpointError`` whose message a user can act on.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, AsyncIterator, Iterator

import httpx
from pydantic import ValidationError

from arena.core.generation import GenerationParams, Notice, Started, TokenLogprob, Usage, with_seed
from arena.core.redact import without_credentials
from arena.serving.engines.base import AnswerCollector, BatchAnswer, BatchRequest
from arena.serving.openai_schema import BatchResponse, Completion, LogprobEntry, StreamEvent


class EndpointError(RuntimeError):
    """The endpoint refused, failed or vanished; the message is shown in the pane."""


def request_body(model: str, messages: list[dict], params: GenerationParams) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True},
        "temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_new_tokens}
    for key in ("top_k", "min_p", "repeat_penalty", "seed"):
        if (value := getattr(params, key)) is not None:
            body[key] = value
    if params.top_logprobs is not None:  # OpenAI's fields, as vLLM and llama.cpp's server read them too
        body.update(logprobs=True, top_logprobs=params.top_logprobs)
    return body


def _logprobs(entries: list[LogprobEntry] | None) -> list[TokenLogprob] | None:
    if entries is None:
        return None
    return [TokenLogprob(e.token, e.logprob, tuple((t.token, t.logprob) for t in e.top_logprobs)) for e in entries]


def _error_message(body: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's start (never a traceback dump)."""
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message[:500]
    except (ValueError, AttributeError):
        pass
    return body[:300]


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Bearer header of an OpenAI-compatible server, or none without a key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _http_error(url: str, status: int, body: str) -> EndpointError:
    """A non-200 answer as the error a pane shows: the server's own message, and what to check."""
    detail = _error_message(body)
    if status == 400 and "context" in detail:
        return EndpointError(detail)  # ours: already says what to do
    hint = " Check the API key environment variable." if status in (401, 403) else ""
    return EndpointError(f"{url} answered HTTP {status}: {detail}{hint}")


def _event(url: str, data: str) -> StreamEvent:
    """One streamed event, checked against the schema: a server sending something else is named."""
    try:
        return StreamEvent.model_validate_json(data)
    except ValidationError as exc:
        raise EndpointError(f"{url} sent a malformed stream event ({_first_problem(exc)}); "
                            f"is it an OpenAI-compatible server?") from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "event"
    return f"{where}: {error['msg']}"


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """Loading the CA bundle costs ~50 ms of CPU; do it once, not once per answer."""
    return ssl.create_default_context()


@contextlib.contextmanager
def network_errors(url: str, timed_out: str, during: str = "") -> Iterator[None]:
    """A failure to reach a model server, or to keep it, as an EndpointError that names the server and says what
    to check; the one mapping for the sync and the async calls. ``timed_out`` and ``during`` finish the timeout
    and lost-connection messages ("after 300 s", " mid-answer")."""
    try:
        yield
    except httpx.ConnectError as exc:
        raise EndpointError(f"cannot connect to {url}: {exc}. Is the model server running?") from None
    except httpx.TimeoutException:
        raise EndpointError(f"{url} timed out {timed_out}") from None
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise EndpointError(f"connection to {url} lost{during} ({type(exc).__name__}); "
                            f"the model server may have crashed") from None


async def stream_chat(base_url: str, model: str, messages: list[dict], params: GenerationParams, *,
                      api_key: str | None = None, connect_timeout: float = 5.0,
                      read_timeout: float = 300.0) -> AsyncIterator[str | Usage | Notice | Started]:
    """Stream one answer from ``{base_url}/chat/completions`` (base_url ends in /v1).

    Yields ``Started`` as the request goes out and again when one of our workers says its engine took
    the request (any wait in between was a queue); then text pieces; last one ``Usage``."""
    target = base_url.rstrip("/") + "/chat/completions"
    url = without_credentials(target)  # what error messages may show
    headers = auth_headers(api_key)
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    usage: Usage | None = None
    pieces = 0
    with network_errors(url, f"(connect {connect_timeout:.0f}s, read {read_timeout:.0f}s)", " mid-answer"):
        async with httpx.AsyncClient(timeout=timeout, verify=_tls()) as http:
            yield Started()
            async with http.stream("POST", target, json=request_body(model, messages, params),
                                   headers=headers) as resp:
                if resp.status_code != 200:
                    raise _http_error(url, resp.status_code, (await resp.aread()).decode("utf-8", "replace"))
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = _event(url, data)
                    if event.arena_started is not None:
                        yield Started(event.arena_started.queue_s)
                    if event.arena_notice is not None:
                        yield Notice(event.arena_notice.dropped_turns, event.arena_notice.max_new_tokens)
                    if event.error is not None:
                        error = event.error
                        raise EndpointError(error if isinstance(error, str) else error.message or f"{url} failed")
                    for choice in event.choices or []:
                        if text := choice.delta and choice.delta.content:
                            pieces += 1
                            yield text
                        if choice.finish_reason:
                            usage = Usage(0, 0, choice.finish_reason)
                    if event.usage is not None:
                        usage = Usage(event.usage.prompt_tokens or 0, event.usage.completion_tokens or 0,
                                      usage.finish_reason if usage else "stop")
                else:
                    raise EndpointError(f"{url} closed the stream before it finished (no [DONE]); "
                                        f"the model server may have crashed")
    # Servers that send no usage: fall back to counting streamed pieces (about one per token).
    yield usage if usage and usage.completion_tokens else Usage(0, pieces, usage.finish_reason if usage else "stop")


def _reply(url: str, response: httpx.Response, schema: type, what: str):
    """A whole JSON reply checked against ``schema``: an HTTP error or a malformed reply is an EndpointError."""
    if response.status_code != 200:
        raise _http_error(url, response.status_code, response.text)
    try:
        return schema.model_validate_json(response.content)
    except ValidationError as exc:
        raise EndpointError(f"{url} sent a malformed {what} ({_first_problem(exc)})") from None


@dataclass
class BatchReply:
    """Answers of one batch call, in request order, and how they were produced."""

    answers: list[BatchAnswer]
    batched: bool    # decoded together in one engine batch (timings then measured under batching)
    via: str         # "worker batch endpoint" or "N requests at a time (server has no batch endpoint)"


def _post(target: str, body: dict, api_key: str | None, timeout: float) -> httpx.Response:
    """One JSON POST; a failure to reach the server becomes an EndpointError that names it."""
    with network_errors(without_credentials(target), f"after {timeout:.0f} s"):
        return httpx.post(target, json=body, headers=auth_headers(api_key), verify=_tls(),
                          timeout=httpx.Timeout(timeout, connect=5.0))


def batch_chat(base_url: str, model: str, requests: list[BatchRequest], params: GenerationParams, *,
               api_key: str | None = None, timeout: float = 1800.0, concurrency: int = 8) -> BatchReply:
    """Answer several conversations: one ``POST {base_url}/arena/batch`` to an arena worker, or, for any
    other OpenAI-compatible server (which answers 404), one streamed chat completion after the other,
    timed here. Every failure of the whole call becomes an ``EndpointError``."""
    target = base_url.rstrip("/") + "/arena/batch"
    url = without_credentials(target)
    body = request_body(model, [], params)
    body.pop("messages"), body.pop("stream"), body.pop("stream_options")
    body.pop("seed", None)
    body["requests"] = [{"messages": r.messages, "seed": r.seed} for r in requests]
    response = _post(target, body, api_key, timeout)
    if response.status_code in (404, 405):
        return BatchReply(_one_at_a_time(base_url, model, requests, params, api_key, concurrency), False,
                          f"{concurrency} requests at a time (server has no batch endpoint)")
    data = _reply(url, response, BatchResponse, "batch reply")
    if len(data.results) != len(requests):
        raise EndpointError(f"{url} returned {len(data.results)} answers for {len(requests)} requests")
    answers = [BatchAnswer(text=r.text or "", error=r.error, ttft_s=r.ttft_s, total_s=r.total_s,
                           usage=Usage(r.prompt_tokens, r.completion_tokens, r.finish_reason or "stop"),
                           logprobs=_logprobs(r.logprobs))
               for r in data.results]
    if params.top_logprobs is not None and any(a.logprobs is None and not a.error for a in answers):
        raise EndpointError(f"{url} answered without log-probabilities")
    return BatchReply(answers, data.batched, "worker batch endpoint")


async def chat_once(base_url: str, model: str, messages: list[dict], params: GenerationParams, *,
                    api_key: str | None = None, timeout: float = 300.0) -> BatchAnswer:
    """One whole (not streamed) answer, with log-probabilities if ``params.top_logprobs`` asks for them.
    A server that sends none when asked is an error naming it (a grader can't work without them)."""
    target = base_url.rstrip("/") + "/chat/completions"
    url = without_credentials(target)
    body = {**request_body(model, messages, params), "stream": False}
    body.pop("stream_options")
    started = time.perf_counter()
    with network_errors(url, f"after {timeout:.0f} s"):
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0), verify=_tls()) as http:
            response = await http.post(target, json=body, headers=auth_headers(api_key))
    data = _reply(url, response, Completion, "completion")
    choice = data.choices[0]
    logprobs = _logprobs(choice.logprobs.content if choice.logprobs else None)
    if params.top_logprobs is not None and logprobs is None:
        raise EndpointError(f"{url} answered without log-probabilities; this server (or its model) can't grade by "
                            f"probability: use --method generate, or a server that returns logprobs (vLLM does)")
    elapsed = time.perf_counter() - started
    usage = data.usage
    return BatchAnswer(text=choice.message.content or "", ttft_s=elapsed, total_s=elapsed, logprobs=logprobs,
                       usage=Usage(usage.prompt_tokens or 0 if usage else 0, usage.completion_tokens or 0 if usage else 0,
                                   choice.finish_reason or "stop"))


def _one_at_a_time(base_url: str, model: str, requests: list[BatchRequest], params: GenerationParams,
                   api_key: str | None, concurrency: int = 8) -> list[BatchAnswer]:
    """A server without our batch endpoint (vLLM, Ollama, llama.cpp's server): ``concurrency`` requests in
    flight at once, so its own batching works; a failed request fails only its own answer."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(request: BatchRequest) -> BatchAnswer:
        async with gate:
            seeded = with_seed(params, request.seed)
            if params.top_logprobs is not None:
                try:
                    return await chat_once(base_url, model, request.messages, seeded, api_key=api_key)
                except EndpointError as exc:
                    return BatchAnswer(error=str(exc))
            collector = AnswerCollector()
            try:
                async for item in stream_chat(base_url, model, request.messages, seeded, api_key=api_key):
                    collector.add(item)
            except EndpointError as exc:
                return collector.finish(str(exc))
            return collector.finish()

    async def run() -> list[BatchAnswer]:
        return list(await asyncio.gather(*(one(r) for r in requests)))
    return asyncio.run(run())


# -- scoring a fixed text (python -m arena quality) ----------------------------------------------------------
def score_text(base_url: str, model: str, ids: list[int], top: int, gather: list[list[int]] | None, tail: int = 0,
               *, api_key: str | None = None, timeout: float = 3600.0) -> dict:
    """Teacher forcing on an arena worker (``POST {base_url}/arena/logits``): the positions as JSON lists."""
    target = base_url.rstrip("/") + "/arena/logits"
    response = _post(target, {"model": model, "ids": ids, "top": top, "gather": gather, "tail": tail}, api_key, timeout)
    if response.status_code != 200:
        raise _http_error(without_credentials(target), response.status_code, response.text)
    try:
        return response.json()["positions"]
    except (ValueError, KeyError) as exc:
        raise EndpointError(f"{without_credentials(target)} sent a malformed reply ({exc!r})") from None


def _server_root(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


def tokenize_on_server(base_url: str, model: str, text: str, *, api_key: str | None = None) -> list[int] | None:
    """The server's own token ids for ``text`` (vLLM's ``POST /tokenize``), or None if it has no such endpoint."""
    target = _server_root(base_url) + "/tokenize"
    response = _post(target, {"model": model, "prompt": text, "add_special_tokens": False}, api_key, 300.0)
    if response.status_code in (404, 405):
        return None
    if response.status_code != 200:
        raise _http_error(without_credentials(target), response.status_code, response.text)
    tokens = response.json().get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise EndpointError(f"{without_credentials(target)} sent no token ids")
    return tokens


def prompt_logprobs(base_url: str, model: str, ids: list[int], k: int, *, api_key: str | None = None,
                    timeout: float = 3600.0) -> list[dict[int, float]]:
    """The server's log-probabilities of its top ``k`` tokens (and of the actual next token) at every position
    of ``ids``, through vLLM's ``prompt_logprobs`` extension of ``/v1/completions``. Entry i predicts ids[i + 1].
    A server without the extension is refused with a message saying so."""
    target = base_url.rstrip("/") + "/completions"
    url = without_credentials(target)
    response = _post(target, {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0,
                              "prompt_logprobs": k}, api_key, timeout)
    if response.status_code != 200:
        raise _http_error(url, response.status_code, response.text)
    try:
        entries = response.json()["choices"][0].get("prompt_logprobs")
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise EndpointError(f"{url} sent a malformed completion ({exc!r})") from None
    if not isinstance(entries, list) or len(entries) != len(ids):
        raise EndpointError(f"{url} returned no prompt log-probabilities, so it cannot score a text: this needs "
                            f"a server with vLLM's prompt_logprobs (Ollama and llama.cpp's server have none)")
    positions = []
    for entry in entries[1:]:
        if not isinstance(entry, dict):
            raise EndpointError(f"{url} sent a prompt log-probability entry that is not a mapping")
        positions.append({int(token): float(v["logprob"] if isinstance(v, dict) else v) for token, v in entry.items()})
    return positions
