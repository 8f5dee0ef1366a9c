"""Benchmark: batched decoding vs one sequence at a time, same engine, side by side in one run.

    .venv/bin/python bench/bench_batch.py [--engines llamacpp,torchao] [--repeats 2]

For each engine the same distinct prompts (long-answer requests, greedy, a fixed number of new
tokens) are answered (a) one after the other through ``stream_chat`` (the page's path) and (b)
together through ``batch_chat`` (the batch runs' path), alternating (a) and (b) so drift on this
shared machine hits both alike. Reported per mode, medians over the repeats:
- aggregate new tokens/s = all generated tokens / wall time (prefill included: what a batch run sees);
- decode tokens/s = tokens after each sequence's first / time after the first token (for B
  sequences together: (tokens - B) / (wall - time to the last first token)).
- CPU tokens/s = all generated tokens / CPU seconds this process used (all threads). On a shared,
  oversubscribed machine wall time mostly measures the other jobs; CPU time measures our work
  (llama.cpp's threads spin while they wait, so contention still inflates it somewhat).
The ratio columns divide by the one-at-a-time figure of the same engine in the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPICS = ["the printing press", "the steam engine", "the telescope", "vaccination", "the telephone",
          "the bicycle", "paper money", "the compass", "the electric light", "antibiotics", "the railway",
          "photography", "the radio", "the microscope", "the clock", "the sewing machine"]


def prompts(n: int, take: int = 0) -> list[list[dict]]:
    """n distinct essay requests. ``take`` opens each prompt differently, so a call never finds the previous
    call's prompts in llama.cpp's KV cache (the batch path reuses cached prefixes): every measured call
    prefills its prompts, as a batch run's first call does."""
    return [[{"role": "user", "content": f"Take {take}. Write a detailed essay about the history of "
                                         f"{TOPICS[i % len(TOPICS)]}."}] for i in range(n)]


def one_at_a_time(engine, convs, params) -> dict:
    from arena.core.generation import Usage

    started, cpu = time.perf_counter(), time.process_time()
    tokens, decode_tokens, decode_time = 0, 0, 0.0
    for conv in convs:
        t0 = time.perf_counter()
        first = None
        usage = None
        for item in engine.stream_chat(conv, params):
            if isinstance(item, Usage):
                usage = item
            elif first is None:
                first = time.perf_counter() - t0
        total = time.perf_counter() - t0
        tokens += usage.completion_tokens
        decode_tokens += usage.completion_tokens - 1
        decode_time += total - first
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"tokens": tokens, "wall_s": wall, "aggregate_tps": tokens / wall, "decode_tps": decode_tokens / decode_time,
            "cpu_tps": tokens / cpu}


def together(engine, convs, params) -> dict:
    from arena.serving.engines.base import BatchRequest

    started, cpu = time.perf_counter(), time.process_time()
    answers = engine.batch_chat([BatchRequest(c, 0) for c in convs], params)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    errors = [a.error for a in answers if a.error]
    if errors:
        raise RuntimeError(errors[0])
    tokens = sum(a.usage.completion_tokens for a in answers)
    last_first = max(a.ttft_s for a in answers)
    return {"tokens": tokens, "wall_s": wall, "aggregate_tps": tokens / wall,
            "decode_tps": (tokens - len(answers)) / (wall - last_first), "cpu_tps": tokens / cpu}


def load(engine_name: str, threads: int, data_dir: Path):
    from arena.core.config import load_models
    from arena.serving.engines.registry import load_engine
    from arena.serving.sources import resolve

    ids = {"llamacpp": "qwen2.5-coder-0.5b-q4km", "torchao": "qwen2.5-coder-0.5b-torchao-int4"}
    model = next(m for m in load_models(ROOT / "models.yaml") if m.id == ids[engine_name])
    weights = resolve(model, data_dir)
    return model, load_engine(model, weights, threads=threads, data_dir=data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="llamacpp,torchao")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--tokens", type=int, help="new tokens per answer (default: 128 llama.cpp, 64 torchao)")
    parser.add_argument("--sizes", help="comma-separated batch sizes (default: 8,16 llama.cpp; 8 torchao)")
    args = parser.parse_args()
    from arena.core.generation import GenerationParams
    from arena.serving.engines.base import BatchRequest

    plans = {"llamacpp": {"tokens": 128, "sizes": [8, 16]}, "torchao": {"tokens": 64, "sizes": [8]}}
    results = []
    for name in args.engines.split(","):
        model, engine = load(name, args.threads, args.data_dir)
        plan = dict(plans[name])
        if args.tokens:
            plan["tokens"] = args.tokens
        if args.sizes:
            plan["sizes"] = [int(x) for x in args.sizes.split(",")]
        # The model's own defaults (repeat penalty) as in a batch run; greedy; min_p etc. untouched.
        defaults = {k: v for k, v in model.generation.items() if k in GenerationParams.__dataclass_fields__}
        params = GenerationParams(**{**defaults, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": plan["tokens"]})
        warm = dataclasses.replace(params, max_new_tokens=4)  # first calls allocate buffers: keep them out
        list(engine.stream_chat(prompts(1, -1)[0], warm))
        engine.batch_chat([BatchRequest(c, 0) for c in prompts(plan["sizes"][0], -1)], warm)
        for size in plan["sizes"]:
            runs = {"one at a time": [], f"batched B={size}": []}
            for repeat in range(args.repeats):
                convs = prompts(size, repeat)  # both modes get the same prompts; no call repeats an earlier one
                runs["one at a time"].append(one_at_a_time(engine, convs, params))
                runs[f"batched B={size}"].append(together(engine, convs, params))
                print(name, size, {k: (round(v[-1]["aggregate_tps"], 1), round(v[-1]["cpu_tps"], 1))
                                   for k, v in runs.items()}, flush=True)
            base = None
            for mode, values in runs.items():
                row = {"engine": name, "model": model.id, "sequences": size, "mode": mode,
                       "new_tokens_each": plan["tokens"], "threads": args.threads,
                       "tokens": statistics.median(v["tokens"] for v in values),
                       "wall_s": statistics.median(v["wall_s"] for v in values),
                       "aggregate_tps": statistics.median(v["aggregate_tps"] for v in values),
                       "decode_tps": statistics.median(v["decode_tps"] for v in values),
                       "cpu_tps": statistics.median(v["cpu_tps"] for v in values)}
                base = base or row
                row["aggregate_ratio"] = row["aggregate_tps"] / base["aggregate_tps"]
                row["decode_ratio"] = row["decode_tps"] / base["decode_tps"]
                row["cpu_ratio"] = row["cpu_tps"] / base["cpu_tps"]
                results.append(row)
        del engine
        gc.collect()
    print("\n| engine | sequences | mode | new tokens each | wall s | aggregate tok/s (incl. prefill) | ratio | "
          "decode tok/s | ratio | tok per CPU-s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['engine']} | {r['sequences']} | {r['mode']} | {r['new_tokens_each']} | {r['wall_s']:.1f} | "
              f"{r['aggregate_tps']:.1f} | {r['aggregate_ratio']:.2f} | {r['decode_tps']:.1f} | {r['decode_ratio']:.2f} | "
              f"{r['cpu_tps']:.1f} | {r['cpu_ratio']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
