"""Is the first answer after a model loads slower than the next ones? (The arena's stopwatch must
not charge one model for paging its weights in.)

Starts a fresh worker for each model, asks the same question three times, and prints time to first
token and total time of each answer; with and without the worker's warm-up, alternating, so both
modes see the same host load.

    python bench/bench_first_answer.py --models qwen2.5-coder-0.5b-q4km,smollm2-135m-q4_1 --starts 3
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.core.config import DEFAULT_MODELS_FILE, load_models  # noqa: E402
from arena.core.generation import GenerationParams, Usage  # noqa: E402
from arena.serving import client  # noqa: E402
from arena.serving.sources import resolve  # noqa: E402
from arena.serving.supervisor import free_port  # noqa: E402

# Three different questions of about the same length: a repeated one would be answered from
# llama.cpp's prompt cache and make the later answers look faster than they are.
QUESTIONS = ["用一句话解释什么是量化。", "用一句话解释什么是蒸馏。", "用一句话解释什么是剪枝。"]
PARAMS = GenerationParams(temperature=0.0, max_new_tokens=32)


def start_worker(model_id: str, weights: Path, warmup: bool, threads: int) -> tuple[subprocess.Popen, str, float]:
    port, started = free_port(), time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "arena.serving.worker", "--models", str(DEFAULT_MODELS_FILE), "--model",
                             model_id, "--weights", str(weights), "--port", str(port), "--threads", str(threads),
                             *([] if warmup else ["--no-warmup"])], cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - started < 300:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url + "/v1", time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{model_id} did not start")


def timed_answer(base_url: str, model_id: str, question: str) -> tuple[float, float]:
    async def run() -> tuple[float, float]:
        started, first = time.perf_counter(), None
        async for item in client.stream_chat(base_url, model_id, [{"role": "user", "content": question}], PARAMS):
            if first is None and not isinstance(item, Usage):
                first = time.perf_counter() - started
        return first or 0.0, time.perf_counter() - started
    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="qwen2.5-coder-0.5b-q4km,smollm2-135m-q4_1")
    parser.add_argument("--starts", type=int, default=3, help="fresh worker starts per model and mode")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    catalog = {m.id: m for m in load_models(DEFAULT_MODELS_FILE)}
    rows = []
    for model_id in args.models.split(","):
        weights = resolve(catalog[model_id], ROOT / "data")
        runs: dict[bool, list] = {True: [], False: []}
        for _ in range(args.starts):
            for warmup in (False, True):
                proc, url, ready_s = start_worker(model_id, weights, warmup, args.threads)
                try:
                    runs[warmup].append((ready_s, *[timed_answer(url, model_id, q) for q in QUESTIONS]))
                finally:
                    proc.terminate()
                    proc.wait(20)
        for warmup, samples in runs.items():
            med = lambda values: round(statistics.median(values), 3)  # noqa: E731
            rows.append({"model": model_id, "warm_up": warmup, "ready_s": med([s[0] for s in samples]),
                         "ttft_1st_s": med([s[1][0] for s in samples]), "ttft_2nd_s": med([s[2][0] for s in samples]),
                         "ttft_3rd_s": med([s[3][0] for s in samples]),
                         "total_1st_s": med([s[1][1] for s in samples]), "total_2nd_s": med([s[2][1] for s in samples])})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
