"""What continuous batching buys on this machine: a real vLLM (CPU build, fp32) against the arena's own llama.cpp
batched decode, same model (Qwen2.5-Coder-0.5B from the shipped GGUF), side by side in one run.

    .venv/bin/python bench/bench_vllm.py [--requests 8] [--tokens 64] [--levels 1,2,4,8]

Needs scripts/install-vllm.sh. Both models start through the arena's supervisor, from models.yaml's entries
qwen2.5-coder-0.5b-vllm and qwen2.5-coder-0.5b-q4km, one after the other (never both decoding at once).

1. Batch throughput: the first ``--requests`` questions of prompts.yaml, greedy, ``--tokens`` new tokens at most,
   sent as a batch run sends them (``client.batch_chat``): to vLLM at each concurrency level (it has no arena batch
   endpoint, so the client keeps that many requests in flight), to llama.cpp one request per call and all in one
   call of the arena worker's batch endpoint (one batched decode). Aggregate tokens/s = all new tokens / wall time.
   Every measured call opens its questions differently, so none finds the previous call's prompts in a prefix
   cache.
2. Mixed load: while a batch of 2 x ``--requests`` runs at concurrency 8, two page users each ask three questions
   one after the other (streamed, as the page asks). Their time to first token, p50 and p95, against the same two
   users on the idle server.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.core.config import DEFAULT_MODELS_FILE, load_models, load_prompts  # noqa: E402
from arena.core.generation import GenerationParams, Usage  # noqa: E402
from arena.serving import client  # noqa: E402
from arena.serving.engines.base import BatchRequest  # noqa: E402
from arena.serving.supervisor import Supervisor  # noqa: E402

VLLM, LLAMACPP = "qwen2.5-coder-0.5b-vllm", "qwen2.5-coder-0.5b-q4km"


def started(model_id: str, data_dir: Path, threads: int) -> Supervisor:
    model = next(m for m in load_models(DEFAULT_MODELS_FILE) if m.id == model_id)
    supervisor = Supervisor([model], DEFAULT_MODELS_FILE, data_dir, threads=threads)
    began = time.perf_counter()
    supervisor.start()
    status = supervisor.wait_until_settled(900)[0]
    if status.state != "ready":
        raise SystemExit(f"{model_id} did not start: {status.describe()}")
    print(f"{model_id}: ready in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return supervisor


def batch(supervisor: Supervisor, model_id: str, requests: list[BatchRequest], params: GenerationParams,
          concurrency: int) -> tuple[float, int, str]:
    """(wall seconds, new tokens, how the client sent them). An arena worker takes the whole list in one batched
    decode; ``concurrency`` 1 sends it one request per call instead, one after the other."""
    began = time.perf_counter()
    calls = [requests] if concurrency > 1 or not supervisor.model(model_id).arena_worker else \
        [[request] for request in requests]
    answers, via = [], ""
    for call in calls:
        reply = client.batch_chat(supervisor.endpoint(model_id), model_id, call, params,
                                  api_key=supervisor.api_key(model_id), concurrency=concurrency)
        answers += reply.answers
        via = reply.via if len(calls) == 1 else f"{reply.via}, one request per call"
    took = time.perf_counter() - began
    errors = [a.error for a in answers if a.error]
    if errors:
        raise SystemExit(f"{model_id}: {errors[0]}")
    return took, sum(a.usage.completion_tokens for a in answers), via


def asked(prompts: list[str], take: int) -> list[BatchRequest]:
    """The questions opened differently for every measured call, so no call finds the last one's prompts in
    a prefix cache (llama.cpp's batch path and vLLM both keep one): each call prefills its prompts."""
    return [BatchRequest([{"role": "user", "content": f"({take}) {question}"}]) for question in prompts]


async def page_user(supervisor: Supervisor, model_id: str, questions: list[str], params: GenerationParams
                    ) -> list[float]:
    """Time to first token of each question, asked one after the other as a person at the page does."""
    ttfts = []
    for question in questions:
        began, first = time.perf_counter(), None
        async for item in client.stream_chat(supervisor.endpoint(model_id), model_id,
                                             [{"role": "user", "content": question}], params,
                                             api_key=supervisor.api_key(model_id)):
            if isinstance(item, str) and item and first is None:
                first = time.perf_counter() - began
            if isinstance(item, Usage):
                break
        ttfts.append(first if first is not None else float("nan"))
    return ttfts


def two_users(supervisor: Supervisor, model_id: str, questions: list[str], params: GenerationParams) -> list[float]:
    async def both():
        return await asyncio.gather(page_user(supervisor, model_id, questions[:3], params),
                                    page_user(supervisor, model_id, questions[3:6], params))
    return [t for user in asyncio.run(both()) for t in user]


def mixed(supervisor: Supervisor, model_id: str, requests: list[BatchRequest], questions: list[str],
          params: GenerationParams) -> tuple[list[float], list[float]]:
    """TTFTs of two page users on the idle server, then while a batch runs at concurrency 8."""
    idle = two_users(supervisor, model_id, questions, params)
    runner = threading.Thread(target=batch, args=(supervisor, model_id, requests * 2, params, 8))
    runner.start()
    time.sleep(2.0)  # the batch is decoding
    loaded = two_users(supervisor, model_id, questions, params)
    runner.join()
    return idle, loaded


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data",
                        help="the app's data dir (default ./data): the assembled GGUF, vLLM's HF copy, logs")
    args = parser.parse_args()
    prompts = load_prompts(ROOT / "prompts.yaml")
    batch_questions = [p.question for p in prompts[:args.requests]]
    questions = [p.question for p in prompts[args.requests:args.requests + 6]]
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=args.tokens)
    rows, mixes = [], {}
    for model_id, levels in ((VLLM, [int(x) for x in args.levels.split(",")]), (LLAMACPP, [1, args.requests])):
        supervisor = started(model_id, args.data_dir, args.threads)
        try:
            batch(supervisor, model_id, asked(batch_questions[:1], 0), params, 1)  # warm-up
            for take, level in enumerate(levels, start=1):
                took, tokens, via = batch(supervisor, model_id, asked(batch_questions, take), params, level)
                rows.append((model_id, level, via, took, tokens))
                print(f"{model_id} c={level}: {tokens} tokens in {took:.1f} s ({via})", file=sys.stderr)
            mixes[model_id] = mixed(supervisor, model_id, asked(batch_questions, 99), questions, params)
        finally:
            supervisor.stop()
    report(rows, mixes, args)


def report(rows: list[tuple], mixes: dict[str, tuple[list[float], list[float]]], args: argparse.Namespace) -> None:
    base = {m: tok / took for m, level, _, took, tok in rows if level == 1}
    print(f"\n{args.requests} questions of prompts.yaml, greedy, at most {args.tokens} new tokens, "
          f"{args.threads} threads\n")
    print("| server | requests in flight | sent as | wall time | new tokens | aggregate tok/s | vs one at a time |")
    print("|---|---|---|---|---|---|---|")
    for model_id, level, via, took, tokens in rows:
        rate = tokens / took
        print(f"| {model_id} | {level} | {via} | {took:.1f} s | {tokens} | {rate:.1f} | {rate / base[model_id]:.2f}× |")
    print("\nTwo page users, three questions each, time to first token (s):\n")
    print("| server | idle p50 | idle p95 | beside a batch at concurrency 8: p50 | p95 |")
    print("|---|---|---|---|---|")
    for model_id, (idle, loaded) in mixes.items():
        print(f"| {model_id} | {statistics.median(idle):.2f} | {percentile(idle, 0.95):.2f} | "
              f"{statistics.median(loaded):.2f} | {percentile(loaded, 0.95):.2f} |")


if __name__ == "__main__":
    main()
