"""Batch answers and grades sent to an OpenAI-compatible server without the arena's batch endpoint
(vLLM, Ollama, llama.cpp's server): one request at a time against ``--concurrency`` in flight.

    python bench/bench_concurrency.py                       # 64 requests, 0.5 s each, concurrency 1 vs 8

The server is the tests' stub (tests/stub_openai.py) with a fixed latency per request and unlimited
parallelism, so the figure is the client's: how much of a real server's batching it lets happen.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.core.generation import GenerationParams  # noqa: E402
from arena.serving.client import batch_chat  # noqa: E402
from arena.serving.engines.base import BatchRequest  # noqa: E402
from tests.stub_openai import StubOpenAI  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request at the server")
    parser.add_argument("--concurrency", default="1,8")
    args = parser.parse_args()
    stub = StubOpenAI(piece_delay=args.latency / 3)  # three pieces per answer
    requests = [BatchRequest([{"role": "user", "content": f"question {i}"}]) for i in range(args.requests)]
    rows = []
    try:
        for level in (int(c) for c in args.concurrency.split(",")):
            started = time.perf_counter()
            reply = batch_chat(stub.base_url, "stub-a", requests, GenerationParams(max_new_tokens=8), concurrency=level)
            took = time.perf_counter() - started
            assert all(a.error is None for a in reply.answers)
            rows.append((level, took, args.requests / took, stub.most_in_flight))
            stub.most_in_flight = 0
    finally:
        stub.close()
    base = rows[0][2]
    print(f"\n{args.requests} requests, {args.latency} s each at the server\n")
    print("| concurrency | wall time | requests/s | most in flight at the server | vs concurrency 1 |")
    print("|---|---|---|---|---|")
    for level, took, rate, most in rows:
        print(f"| {level} | {took:.1f} s | {rate:.2f} | {most} | {rate / base:.2f}× |")


if __name__ == "__main__":
    main()
