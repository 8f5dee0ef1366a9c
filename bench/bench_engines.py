"""Benchmark: the same Qwen2.5-Coder-0.5B weights through every engine, side by side in one run.

    .venv/bin/python bench/bench_engines.py [--tokens 64] [--repeats 3]

Each configuration runs in a fresh process (so peak RSS is its own) and in turn:
llama.cpp on the Q4_K_M file; transformers fp32 (the GGUF dequantized); transformers
torchao INT4 with bf16 activations, first built (load + quantize + save) and then
reloaded from the INT4 cache; ITREX + neural-speed when its environment exists
(scripts/install-itrex.sh). Load times exclude importing torch/transformers, for all.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPT = [{"role": "user", "content": "Write a detailed essay about the history of the printing press."}]


def qwen_gguf():
    """The llama.cpp Qwen entry of models.yaml and its assembled GGUF: the weights every configuration uses."""
    from arena.core.config import load_models
    from arena.serving.sources import resolve

    base = next(m for m in load_models(ROOT / "models.yaml") if m.id == "qwen2.5-coder-0.5b-q4km")
    return base, resolve(base, ROOT / "data")


def child(config: str, data_dir: str, tokens: int, repeats: int) -> dict:
    """Runs inside the fresh process: load, then time greedy decoding."""
    from arena.core.config import QuantizeConfig
    from arena.core.generation import GenerationParams, Usage
    from arena.serving.engines.registry import load_engine

    base, weights = qwen_gguf()
    if config == "llamacpp":
        model = base
    elif config == "itrex":  # running under the ITREX env's interpreter, on the prepared HF directory
        from arena.core.config import ModelSource
        weights = next(p for p in (Path(data_dir) / "itrex-hf").iterdir() if (p / "config.json").is_file())
        model = dataclasses.replace(base, id="bench-qwen-itrex", engine="itrex", source=ModelSource(dir=str(weights)))
    else:
        import torch  # noqa: F401  (imported before the clock starts, for every transformers config)
        import transformers  # noqa: F401
        model = dataclasses.replace(base, id="bench-qwen", engine="transformers",
                                    quantize=None if config == "fp32" else QuantizeConfig())
    started = time.perf_counter()
    engine = load_engine(model, weights, threads=2, data_dir=Path(data_dir), rebuild=config == "int4-build")
    load_s = time.perf_counter() - started
    rss_after_load = _rss_mb()
    runs = []
    for _ in range(repeats):
        t0, first, usage = time.perf_counter(), None, None
        for item in engine.stream_chat(PROMPT, GenerationParams(temperature=0.0, max_new_tokens=tokens)):
            if isinstance(item, Usage):
                usage = item
            elif first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        runs.append({"ttft": first - t0, "tps": (usage.completion_tokens - 1) / (end - first),
                     "tokens": usage.completion_tokens})
    return {"load_s": load_s, "rss_after_load_mb": rss_after_load,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "ttft_s": statistics.median(r["ttft"] for r in runs), "tps": statistics.median(r["tps"] for r in runs),
            "tokens": runs[-1]["tokens"]}


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def run_child(config: str, data_dir: str, args, python: str = sys.executable) -> dict:
    out = subprocess.run([python, __file__, "--child", config, "--data-dir", data_dir,
                          "--tokens", str(args.tokens), "--repeats", str(args.repeats)],
                         capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"{config} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def itrex(args, data_dir: str) -> dict | None:
    """Convert once for ITREX (in this env), then load + quantize + decode under the ITREX env."""
    from arena.serving.engines.itrex import itrex_python
    python = itrex_python()
    if python is None:
        return None
    subprocess.run([sys.executable, "-m", "arena.serving.engines.itrex_prepare", str(qwen_gguf()[1]),
                    str(Path(data_dir) / "itrex-hf")], check=True, cwd=ROOT, capture_output=True)
    return run_child("itrex", data_dir, args, python=str(python))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data_dir, args.tokens, args.repeats)))
        return
    data_dir = tempfile.mkdtemp(prefix="bench-engines-")
    results = {}
    for config in ("llamacpp", "fp32", "int4-build", "int4-cached"):
        results[config] = run_child(config, data_dir, args)
        print(config, json.dumps({k: round(v, 2) for k, v in results[config].items()}), flush=True)
    if (it := itrex(args, data_dir)) is not None:
        results["itrex"] = it
        print("itrex", it, flush=True)
    fp32, build, cached = results["fp32"], results["int4-build"], results["int4-cached"]
    names = {"llamacpp": "llama.cpp Q4_K_M", "fp32": "transformers fp32", "int4-build": "torchao INT4 bf16 (first load)",
             "int4-cached": "torchao INT4 bf16 (cached reload)", "itrex": "ITREX + neural-speed INT4"}
    print("\n| engine | load s | decode tok/s | time to first token s | RSS after load MB | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for key, r in results.items():
        if "error" in r:
            print(f"| {names[key]} | failed: {r['error'][:80]} | | | | |")
            continue
        print(f"| {names[key]} | {r['load_s']:.1f} | {r['tps']:.1f} | {r['ttft_s']:.2f} | "
              f"{r['rss_after_load_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    print("\n| target | measured | met |")
    print("|---|---|---|")
    checks = [("INT4 decode ≥ 2× fp32", cached["tps"] / fp32["tps"], ">=", 2.0),
              ("INT4 RSS after load ≤ 0.4× fp32", cached["rss_after_load_mb"] / fp32["rss_after_load_mb"], "<=", 0.4),
              ("cached reload peak RSS ≤ 0.5× fp32 peak", cached["peak_rss_mb"] / fp32["peak_rss_mb"], "<=", 0.5),
              ("cached reload time ≤ 10% of first load+quantize", cached["load_s"] / build["load_s"], "<=", 0.10)]
    for label, value, op, target in checks:
        ok = value >= target if op == ">=" else value <= target
        print(f"| {label} | {value:.2f}× | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
