"""Serve ONE model as an OpenAI-compatible streaming chat endpoint.

Run as its own process (``python -m arena.serving.worker``) so a crash or OOM in an
engine cannot take down the page or the other model. Endpoints:
``GET /health``, ``GET /v1/models`` and ``POST /v1/chat/completions``
(``stream: true`` sends server-sent events, the last chunk carrying ``usage``), plus
``POST /v1/arena/batch`` for batch runs: several conversations answered in one call,
decoded together where the engine can (``batch_chat``), one at a time otherwise, and
``POST /v1/arena/logits`` for ``python -m arena quality``: teacher forcing over a token sequence.
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import replace
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from arena.core.generation import MAX_TOP_LOGPROBS, GenerationParams, Notice, Started, TokenLogprob, Usage, with_seed
from arena.serving.engines.base import (
    ERROR_PREFIX,
    AnswerCollector,
    BatchAnswer,
    BatchRequest,
    ChatEngine,
    LogprobsUnsupported,
    exit_with_parent,
    installed_versions,
    n_params,
    normal_scheduling,
)
from arena.serving.engines.context import ContextOverflow, fit_context

MAX_BATCH_REQUESTS = 64  # one /v1/arena/batch call; the engine splits it into decode groups


def run_batch(engine: ChatEngine, requests: list[BatchRequest], params: GenerationParams) -> tuple[list[BatchAnswer], bool]:
    """Answer every request; returns (answers, decoded together?).

    Engines without ``batch_chat`` answer one request after the other, each timed on its own,
    so a batch run works on every engine and only the throughput differs. Log-probabilities come from
    ``batch_chat`` or an engine's ``logprob_chat``; an engine with neither refuses, naming itself."""
    if hasattr(engine, "batch_chat"):
        return engine.batch_chat(requests, params), True
    if params.top_logprobs is not None:
        if not hasattr(engine, "logprob_chat"):
            raise LogprobsUnsupported(f"the {type(engine).__name__} engine cannot return log-probabilities")
        return [engine.logprob_chat(r.messages, with_seed(params, r.seed)) for r in requests], False
    answers = []
    for request in requests:
        collector = AnswerCollector()
        try:
            for item in engine.stream_chat(request.messages, with_seed(params, request.seed)):
                collector.add(item)
        except Exception as exc:
            answers.append(collector.finish(f"{type(exc).__name__}: {exc}"))
            continue
        answers.append(collector.finish())
    return answers, False


def run_fitted_batch(engine: ChatEngine, requests: list[BatchRequest], params: GenerationParams,
                     context_length: int | None) -> tuple[list[BatchAnswer], bool]:
    """``run_batch`` after fitting each conversation to the context, as a streamed answer is.

    A request that can't fit gets the refusal with the numbers as its error, without reaching the
    engine; one whose answer budget had to shrink is answered alone with that budget, so its
    batch-mates keep the settings the run asked for."""
    answers: list[BatchAnswer | None] = [None] * len(requests)
    together: list[tuple[int, BatchRequest]] = []
    alone: list[tuple[int, BatchRequest, GenerationParams]] = []
    for index, request in enumerate(requests):
        try:
            messages, fitted, _ = fit(engine, request.messages, params, context_length)
        except ContextOverflow as exc:
            answers[index] = BatchAnswer(error=str(exc))
            continue
        if fitted == params:
            together.append((index, replace(request, messages=messages)))
        else:
            alone.append((index, replace(request, messages=messages), fitted))
    batched = False
    if together:
        group, batched = run_batch(engine, [request for _, request in together], params)
        for (index, _), answer in zip(together, group):
            answers[index] = answer
    for index, request, fitted in alone:
        answers[index] = run_batch(engine, [request], fitted)[0][0]
    return answers, batched


def _params(body: dict[str, Any]) -> GenerationParams:
    defaults = GenerationParams()
    top = None
    if body.get("logprobs"):  # OpenAI's fields: logprobs: true, top_logprobs: 0..20
        top = int(body.get("top_logprobs") or 0)
        if not 0 <= top <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be from 0 to {MAX_TOP_LOGPROBS}, got {top}")
    return GenerationParams(
        temperature=float(body.get("temperature", defaults.temperature)),
        top_p=float(body.get("top_p", defaults.top_p)),
        max_new_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or defaults.max_new_tokens),
        top_k=body.get("top_k"), min_p=body.get("min_p"),
        repeat_penalty=body.get("repeat_penalty"), seed=body.get("seed"), top_logprobs=top)


MAX_SCORE_TOKENS = 32768
MAX_SCORE_TOP = 256


def _score_request(body: dict) -> tuple[list[int], int, list[list[int]] | None, int]:
    """Validate a /v1/arena/logits body: ids (2 to 32,768 token ids), top (1 to 256), tail (samples from beyond the
    top, 0 to 256), optional gather (one row of token ids per position)."""
    ids, top, gather, tail = body["ids"], body.get("top", 64), body.get("gather"), body.get("tail", 0)
    if not isinstance(ids, list) or not 2 <= len(ids) <= MAX_SCORE_TOKENS or \
            not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"'ids' must be a list of 2 to {MAX_SCORE_TOKENS} token ids")
    if not isinstance(top, int) or not 1 <= top <= MAX_SCORE_TOP:
        raise ValueError(f"'top' must be an integer from 1 to {MAX_SCORE_TOP}")
    if not isinstance(tail, int) or not 0 <= tail <= MAX_SCORE_TOP:
        raise ValueError(f"'tail' must be an integer from 0 to {MAX_SCORE_TOP}")
    if gather is not None:
        if not isinstance(gather, list) or len(gather) != len(ids) - 1 or not all(
                isinstance(row, list) and 1 <= len(row) <= MAX_SCORE_TOP and
                all(isinstance(i, int) and i >= 0 for i in row) for row in gather):
            raise ValueError("'gather' must hold one list of token ids per position (len(ids) - 1 rows)")
        if len({len(row) for row in gather}) != 1:
            raise ValueError("'gather' rows must all have the same length")
    return ids, top, gather, tail


def logprobs_json(entries: list[TokenLogprob] | None) -> list[dict] | None:
    """Log-probabilities in OpenAI's shape (``choices[0].logprobs.content``)."""
    if entries is None:
        return None
    return [{"token": e.token, "logprob": e.logprob, "bytes": list(e.token.encode("utf-8")),
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))} for t, lp in e.top]}
            for e in entries]


def fit(engine: ChatEngine, messages: list[dict], params: GenerationParams, context_length: int | None
        ) -> tuple[list[dict], GenerationParams, Notice | None]:
    """The conversation cut to the model's context (see engines/context.py); engines that can't
    count tokens get the messages as they are."""
    counter = getattr(engine, "count_prompt_tokens", None)
    if not context_length or counter is None:
        return messages, params, None
    fitted = fit_context(messages, counter, context_length, params.max_new_tokens)
    notice = None
    if fitted.dropped_turns or fitted.max_new_tokens != params.max_new_tokens:
        notice = Notice(fitted.dropped_turns, fitted.max_new_tokens if fitted.max_new_tokens != params.max_new_tokens
                        else None)
    return fitted.messages, replace(params, max_new_tokens=fitted.max_new_tokens), notice


def _error(message: str, kind: str, status: int) -> JSONResponse:
    """An error in OpenAI's shape, which every OpenAI client can show."""
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _key_guard(api_key: str | None):
    """The middleware in front of every route: the key on /v1 routes, and JSON bodies only (see create_app)."""
    expected = f"Bearer {api_key}".encode() if api_key else b""

    async def check_key(request: Request, call_next):
        # compare_digest: how long the check takes must not tell how much of a guessed key was right
        if api_key and request.url.path.startswith("/v1/") and \
                not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            return _error("invalid API key", "authentication_error", 401)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and kind != "application/json":
            return _error(f"send the body as application/json (got {kind or 'none'!r})", "invalid_request_error", 415)
        return await call_next(request)
    return check_key


class _Completion:
    """One chat completion's identity and the SSE chunks of its stream. ``extensions`` are our own fields
    (arena_notice, arena_started), which other OpenAI clients ignore."""

    def __init__(self, model_id: str) -> None:
        self.head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_id}

    def chunk(self, delta: dict, finish: str | None = None, usage: Usage | None = None, logprobs: dict | None = None,
              **extensions: dict) -> str:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        payload: dict[str, Any] = {**self.head, "object": "chat.completion.chunk", **extensions, "choices": [choice]}
        if usage is not None:
            payload["usage"] = _usage_json(usage)
        return _sse(payload)


def _usage_json(usage: Usage) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


class _Served:
    """One engine behind the worker's routes. One answer is generated at a time: the page's answers, batch
    groups and scoring all take ``lock``."""

    def __init__(self, engine: ChatEngine, model_id: str, load_seconds: float, context_length: int | None,
                 versions: dict | None) -> None:
        self.engine, self.model_id, self.context_length = engine, model_id, context_length
        self.lock = threading.Lock()
        self.info = {"status": "ok", "model": model_id, "load_seconds": round(load_seconds, 3), "pid": os.getpid(),
                     "n_params": n_params(engine), "batch_decoding": hasattr(engine, "batch_chat"),
                     "scoring": hasattr(engine, "score_tokens"), "versions": versions or {}}

    def health(self) -> dict:
        return self.info

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_id, "object": "model", "owned_by": "arena"}]}

    async def locked(self, work: Callable[[], Any]) -> Any:
        """``work`` in a thread, holding the generation lock."""
        def run() -> Any:
            with self.lock:
                return work()
        return await asyncio.to_thread(run)

    async def batch(self, request: Request):
        """Several conversations in, one JSON reply out: text, usage and timings per answer."""
        try:
            body = await request.json()
            raw = body["requests"]
            if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BATCH_REQUESTS:
                raise ValueError(f"'requests' must be a list of 1 to {MAX_BATCH_REQUESTS} items")
            requests = [BatchRequest(messages=list(r["messages"]), seed=None if r.get("seed") is None else int(r["seed"]))
                        for r in raw]
            params = _params({**body, "logprobs": body.get("logprobs") or body.get("top_logprobs") is not None})
        except (ValueError, KeyError, TypeError) as exc:
            return _error(f"bad request: {exc!r}", "invalid_request_error", 400)
        try:  # the page's single answers wait for this batch group, and vice versa
            answers, together = await self.locked(
                lambda: run_fitted_batch(self.engine, requests, params, self.context_length))
        except LogprobsUnsupported as exc:
            return _error(str(exc), "invalid_request_error", 400)
        except Exception as exc:
            return _error(f"{type(exc).__name__}: {exc}", "engine_error", 500)
        return {"model": self.model_id, "batched": together, "batch_size": len(requests), "results": [
            {"text": a.text, "error": a.error, "ttft_s": a.ttft_s, "total_s": a.total_s,
             "prompt_tokens": a.usage.prompt_tokens if a.usage else 0,
             "completion_tokens": a.usage.completion_tokens if a.usage else 0,
             "finish_reason": a.usage.finish_reason if a.usage else "error",
             "logprobs": logprobs_json(a.logprobs)} for a in answers]}

    async def logits(self, request: Request):
        """Teacher forcing over a token sequence (``python -m arena quality``): at every position the top
        log-probabilities and ``tail`` samples from the rest, or with ``gather`` the log-probabilities at the
        given token ids; the log-sum-exp, the next token's log-probability and the argmax. The weights stay
        here; the caller gets kilobytes per position."""
        if not hasattr(self.engine, "score_tokens"):
            return _error(f"the {type(self.engine).__name__} engine cannot score a text", "invalid_request_error", 400)
        try:
            ids, top, gather, tail = _score_request(await request.json())
        except (ValueError, KeyError, TypeError) as exc:
            return _error(f"bad request: {exc}", "invalid_request_error", 400)

        def work() -> tuple[dict, float]:
            started = time.perf_counter()
            return self.engine.score_tokens(ids, top, gather, tail), time.perf_counter() - started
        try:
            positions, seconds = await self.locked(work)
        except Exception as exc:
            return _error(f"{type(exc).__name__}: {exc}", "engine_error", 500)
        return {"model": self.model_id, "seconds": round(seconds, 3), "positions": positions}

    async def generate(self, messages: list[dict], params: GenerationParams
                       ) -> AsyncIterator[str | Usage | Started | Exception]:
        """Run the blocking engine in a thread; stop it as soon as the consumer goes away. Yields
        ``Started`` once the engine takes the request (another answer or a batch group may hold it)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        done = object()
        asked = time.perf_counter()

        def produce() -> None:
            with self.lock:
                loop.call_soon_threadsafe(queue.put_nowait, Started(round(time.perf_counter() - asked, 3)))
                try:
                    for item in self.engine.stream_chat(messages, params):
                        if cancelled.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, item)
                except Exception as exc:  # surfaced to the client as an error event
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, done)

        threading.Thread(target=produce, daemon=True, name="generate").start()
        try:
            while (item := await queue.get()) is not done:
                yield item
        finally:
            cancelled.set()

    async def chat(self, request: Request):
        """OpenAI's chat completions: streamed (SSE) or whole, with log-probabilities when asked."""
        try:
            body = await request.json()
            messages = body["messages"]
            params = _params(body)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(f"bad request: {exc!r}", "invalid_request_error", 400)
        try:
            messages, params, notice = await asyncio.to_thread(fit, self.engine, messages, params, self.context_length)
        except ContextOverflow as exc:
            return _error(str(exc), "context_length_exceeded", 400)
        completion = _Completion(self.model_id)
        if params.top_logprobs is not None:
            return await self.with_logprobs(messages, params, bool(body.get("stream")), completion)
        if not body.get("stream"):
            return await self.whole(messages, params, completion)
        return StreamingResponse(self.events(messages, params, notice, completion), media_type="text/event-stream")

    async def whole(self, messages: list[dict], params: GenerationParams, completion: _Completion):
        """A completion sent in one reply (``stream: false``)."""
        text, usage = [], None
        async for item in self.generate(messages, params):
            if isinstance(item, Exception):
                return _error(str(item), "engine_error", 500)
            if isinstance(item, Started):
                continue
            if isinstance(item, Usage):
                usage = item
            else:
                text.append(item)
        return {**completion.head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "finish_reason": usage.finish_reason if usage else "stop"}],
                "usage": {"prompt_tokens": usage.prompt_tokens if usage else 0,
                          "completion_tokens": usage.completion_tokens if usage else 0}}

    async def events(self, messages: list[dict], params: GenerationParams, notice: Notice | None,
                     completion: _Completion) -> AsyncIterator[str]:
        """The SSE stream: the role (and the context notice), when the engine started, the text, the usage."""
        yield completion.chunk({"role": "assistant", "content": ""},
                               **({"arena_notice": notice.__dict__} if notice is not None else {}))
        async for item in self.generate(messages, params):
            if isinstance(item, Exception):
                yield _sse({"error": {"message": f"{type(item).__name__}: {item}", "type": "engine_error"}})
                break
            if isinstance(item, Started):
                yield completion.chunk({}, arena_started={"queue_s": item.queue_s})
                continue
            if isinstance(item, Usage):
                yield completion.chunk({}, finish=item.finish_reason, usage=item)
            else:
                yield completion.chunk({"content": item})
        yield "data: [DONE]\n\n"

    async def with_logprobs(self, messages: list[dict], params: GenerationParams, stream: bool,
                            completion: _Completion):
        """A completion with each token's log-probability and its best alternatives: decoded through the
        engine's batch path (one request), then sent whole, or streamed as one content chunk and the usage."""
        try:
            answer = await self.locked(
                lambda: run_batch(self.engine, [BatchRequest(messages, params.seed)], params)[0][0])
        except LogprobsUnsupported as exc:
            return _error(str(exc), "invalid_request_error", 400)
        if answer.error:
            return _error(answer.error, "engine_error", 500)
        usage = answer.usage or Usage(0, 0)
        logprobs = {"content": logprobs_json(answer.logprobs)}
        if not stream:
            return {**completion.head, "object": "chat.completion", "usage": _usage_json(usage), "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer.text}, "logprobs": logprobs,
                 "finish_reason": usage.finish_reason}]}

        async def events() -> AsyncIterator[str]:
            yield completion.chunk({"role": "assistant", "content": answer.text}, logprobs=logprobs)
            yield completion.chunk({}, finish=usage.finish_reason, usage=usage)
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")


def create_app(engine: ChatEngine, model_id: str, load_seconds: float, api_key: str | None = None,
               context_length: int | None = None, versions: dict | None = None) -> FastAPI:
    """Wrap ``engine`` in the OpenAI chat protocol. One answer is generated at a time.

    With ``api_key`` the /v1 routes require ``Authorization: Bearer <key>``: the supervisor gives every worker
    a fresh random key (any page in a browser on this machine could otherwise find the port and hold the
    model's generation lock), and a worker served to other machines as an ``engine: openai`` model takes the
    key it is given. A POST must say it is JSON: a browser sends a cross-origin form or ``text/plain`` without
    asking the server first, ``application/json`` never.
    """
    served = _Served(engine, model_id, load_seconds, context_length, versions)
    app = FastAPI(title=f"arena worker: {model_id}")
    app.middleware("http")(_key_guard(api_key))
    app.get("/health")(served.health)
    app.get("/v1/models")(served.models)
    app.post("/v1/arena/batch")(served.batch)
    app.post("/v1/arena/logits")(served.logits)
    app.post("/v1/chat/completions")(served.chat)
    return app


def warm_up(engine: ChatEngine) -> None:
    """Generate one token before reporting ready, so the first user's stopwatch does not pay for
    paging the weights in and setting up the engine's buffers (see BENCHMARKS.md §11). An engine that
    cannot produce a token fails here, at load, rather than in every pane."""
    for _ in engine.stream_chat([{"role": "user", "content": "Hi"}], GenerationParams(temperature=0.0, max_new_tokens=1)):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve one model from models.yaml over OpenAI-compatible HTTP.")
    parser.add_argument("--models", required=True, help="path to models.yaml")
    parser.add_argument("--model", required=True, help="model id in models.yaml")
    parser.add_argument("--weights", required=True, help="resolved local weights file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--exit-with-parent", action="store_true")
    parser.add_argument("--api-key-env", help="require the key held by this environment variable on /v1 routes")
    parser.add_argument("--data-dir", help="where engines keep caches (the INT4 cache); default: next to the weights")
    parser.add_argument("--rebuild-cache", action="store_true", help="ignore and rebuild this model's INT4 cache")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="report ready without generating a first token (benchmarks of the warm-up itself)")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:  # before loading: a model can take minutes to load
        print(f"{ERROR_PREFIX}environment variable {args.api_key_env} is not set", file=sys.stderr, flush=True)
        sys.exit(2)
    normal_scheduling()
    if args.exit_with_parent:
        exit_with_parent()

    from pathlib import Path

    import uvicorn

    from arena.core.config import load_models
    from arena.serving.engines.registry import ENGINES, load_engine

    try:
        model = next(m for m in load_models(args.models) if m.id == args.model)
        started = time.perf_counter()
        engine = load_engine(model, Path(args.weights), threads=args.threads,
                             data_dir=Path(args.data_dir) if args.data_dir else None, rebuild=args.rebuild_cache)
        if args.warmup:
            warm_up(engine)
        load_seconds = time.perf_counter() - started
    except StopIteration:
        print(f"{ERROR_PREFIX}model {args.model!r} is not in {args.models}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception as exc:
        print(f"{ERROR_PREFIX}could not load {args.weights}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)
    app = create_app(engine, model.id, load_seconds, api_key, model.context_length,
                     installed_versions(ENGINES[model.engine].libraries if model.engine in ENGINES else ()))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
