"""Benchmarks for the arena itself, each measured side by side in one run.

    .venv/bin/python bench/bench_arena.py api-overhead   # tokens/s via the public API vs llama.cpp direct
    .venv/bin/python bench/bench_arena.py schedule       # time until both answers are done, per schedule

Run on a quiet machine: other jobs on the two cores slow llama.cpp 5-20x.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.core.config import load_models, load_prompts  # noqa: E402
from arena.rounds.rules import Arena, Settings  # noqa: E402
from arena.serving.sources import resolve  # noqa: E402
from arena.serving.supervisor import Supervisor, free_port  # noqa: E402
from arena.storage.store import Store  # noqa: E402

STORY = "Write a long, detailed story about a lighthouse keeper and a storm."


def direct_run(llm, max_tokens: int, defaults: dict) -> tuple[float, int]:
    """tokens/s of llama-cpp-python called in-process, timed like the app times an answer."""
    started, first, n = time.perf_counter(), None, 0
    for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": STORY}], stream=True,
                                            temperature=0.0, top_p=1.0, max_tokens=max_tokens, **defaults):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
            n += 1
    total = time.perf_counter() - started
    return (max_tokens - 1) / (total - (first - started)), n


def api_overhead(args) -> None:
    """Same model, same settings: through app + worker + HTTP + Gradio API, and in-process."""
    from gradio_client import Client
    from llama_cpp import Llama

    model = next(m for m in load_models(ROOT / "models.yaml") if m.id == args.model)
    weights = resolve(model, ROOT / "data")
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    other = next(m.id for m in load_models(ROOT / "models.yaml") if m.id != args.model)
    app = subprocess.Popen([sys.executable, "-m", "arena", "--port", str(port), "--threads", str(args.threads),
                            "--schedule", "sequential", "--data-dir", str(tmp)], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        for _ in range(600):
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                if all(m["state"] == "ready" for m in client.predict(api_name="/models")):
                    break
            except Exception:
                pass
            time.sleep(0.5)
        llm = Llama(model_path=str(weights), n_ctx=model.context_length, n_threads=args.threads,
                    n_threads_batch=args.threads, verbose=False)
        direct, via_api = [], []
        for i in range(args.repeats):  # interleaved so drift on a shared machine hits both alike
            tps, _ = direct_run(llm, args.max_tokens, model.generation)  # the model's defaults, as the app uses
            direct.append(tps)
            # sequential schedule: A (the measured model) answers alone, then B
            view = client.predict(STORY, "named", args.model, other, "", 0.0, 1.0, args.max_tokens, "", "",
                                  api_name="/ask")
            turn = view["a"]["turns"][-1]
            assert turn["output_tokens"] == args.max_tokens, turn
            via_api.append(turn["tokens_per_s"])
            print(f"run {i + 1}: direct {tps:.1f} tok/s, via API {turn['tokens_per_s']:.1f} tok/s", flush=True)
        d, a = statistics.median(direct), statistics.median(via_api)
        print("\n| model | threads | tokens | direct tok/s (median) | via public API tok/s (median) | ratio |")
        print("|---|---|---|---|---|---|")
        print(f"| {args.model} | {args.threads} | {args.max_tokens} | {d:.1f} | {a:.1f} | **{a / d:.3f}** |")
    finally:
        app.terminate()
        app.wait(20)


def schedule(args) -> None:
    """Time until both answers are complete for the default pair, per schedule and thread split."""
    models = load_models(ROOT / "models.yaml")[:2]
    questions = [p.question for p in load_prompts(ROOT / "prompts.yaml")[:args.questions]]
    configs = [("sequential", 2), ("concurrent", 1), ("concurrent", 2)]
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {c: [] for c in configs}
    tmp = Path(tempfile.mkdtemp())
    arenas = {}
    for config in configs:  # one pair of workers per thread count, all loaded up front
        if config[1] not in arenas:
            sup = Supervisor(models, ROOT / "models.yaml", ROOT / "data", threads=config[1])
            sup.start()
            sup.wait_until_settled(300)
            arenas[config[1]] = sup
    settings = Settings(temperature=0.0, top_p=1.0, max_new_tokens=args.max_tokens)

    async def one(arena: Arena, question: str) -> tuple[float, float, float]:
        """(both done, later pane's first visible text, tokens), all timed from the click."""
        started = time.perf_counter()
        first: dict[str, float] = {}
        async for view in arena.ask("bench", question, mode="named", model_a=models[0].id, model_b=models[1].id,
                                    settings=settings):
            for key in "ab":
                if key not in first and view.side(key).turns[-1].text:
                    first[key] = time.perf_counter() - started
        a, b = view.a.turns[-1], view.b.turns[-1]
        return time.perf_counter() - started, max(first.values()), a.output_tokens + b.output_tokens

    try:
        for _ in range(args.repeats):
            for question in questions:
                for config in configs:  # round-robin: every config sees the same machine state
                    arena = Arena(arenas[config[1]], Store(tmp / "bench.db"), [], schedule=config[0])
                    results[config].append(asyncio.run(one(arena, question)))
        print("\n| schedule | threads per model | both answers done, mean s | second pane's first text, mean s | "
              "tokens (both) | vs sequential |")
        print("|---|---|---|---|---|---|")
        base = statistics.mean(r[0] for r in results[configs[0]])
        for (mode, threads), rows in results.items():
            done = statistics.mean(r[0] for r in rows)
            print(f"| {mode} | {threads} | {done:.2f} | {statistics.mean(r[1] for r in rows):.2f} | "
                  f"{statistics.mean(r[2] for r in rows):.0f} | {done / base:.2f} |")
    finally:
        for sup in arenas.values():
            sup.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Arena benchmarks")
    sub = parser.add_subparsers(dest="which", required=True)
    p = sub.add_parser("api-overhead")
    p.add_argument("--model", default="qwen2.5-coder-0.5b-q4km")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    s = sub.add_parser("schedule")
    s.add_argument("--questions", type=int, default=5, help="the first N presets (the report's puzzles)")
    s.add_argument("--max-tokens", type=int, default=256)
    s.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    {"api-overhead": api_overhead, "schedule": schedule}[args.which](args)


if __name__ == "__main__":
    main()
