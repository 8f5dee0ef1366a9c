"""Which ITREX RTN recipes really run on this CPU? Run in the ITREX env:

    .venv-itrex/bin/python bench/itrex_recipes.py MODEL_DIR [--f32 ne_<type>_f32.bin] [--expect Rome] [--grid full|sane]

For each (bits, weight_dtype, compute_dtype, group_size, scheme) it maps the recipe exactly as
ITREX 1.4.2 does (``RtnConfig(...).post_init_runtime()``), quantizes with neural-speed in a fresh
child process (a crash there is a result, not the end of the run), generates greedily and
prints one JSON line: accepted by ITREX, quantized, answered, tokens, quantize and decode
timings, and whether the answer contains ``--expect``. ``--f32`` reuses an already converted
fp32 file (hard-linked: neural-speed deletes it after quantizing).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

PROMPT = [{"role": "user", "content": "What is the capital of Italy? Answer in one word."}]
COUNT = [{"role": "user", "content": "Count from 1 to 40, separated by commas."}]
FULL = {"bits4": ["int4_fullrange", "int4_clip", "nf4", "fp4"], "bits8": ["int8", "fp8_e4m3", "fp8_e5m2"],
        "compute": ["int8", "fp32", "bf16", "fp16"], "group": [32, 128, -1], "scheme": ["sym", "asym"]}


def one(model_dir: str, f32: str | None, recipe: dict, tokens: int) -> dict:
    """Runs in a child process, cwd = a fresh temp dir."""
    import torch  # noqa: F401  (neural-speed expects torch loaded first)
    from intel_extension_for_transformers.transformers import RtnConfig
    from neural_speed import Model
    from transformers import AutoConfig, AutoTokenizer

    result: dict = {}
    cfg = RtnConfig(bits=recipe["bits"], weight_dtype=recipe["weight_dtype"], compute_dtype=recipe["compute_dtype"],
                    group_size=recipe["group_size"], sym=recipe["scheme"] == "sym")
    try:
        cfg.post_init_runtime()
    except ValueError as exc:
        return {"itrex": f"refused: {exc}"}
    result["mapped"] = {"weight_dtype": cfg.weight_dtype, "compute_dtype": cfg.compute_dtype,
                        "group_size": cfg.group_size, "alg": cfg.scheme, "scale_dtype": cfg.scale_dtype}
    model_type = AutoConfig.from_pretrained(model_dir, trust_remote_code=True).model_type
    os.makedirs("runtime_outs", exist_ok=True)
    if f32:
        os.link(f32, f"runtime_outs/ne_{model_type}_f32.bin")
    started = time.perf_counter()
    model = Model()
    model.init(model_dir, weight_dtype=cfg.weight_dtype, alg=cfg.scheme, group_size=cfg.group_size,
               scale_dtype=cfg.scale_dtype, compute_dtype=cfg.compute_dtype, use_ggml=False, use_quant=True)
    result["quantize_s"] = round(time.perf_counter() - started, 2)
    result["bin_mb"] = round(os.path.getsize(model.bin_file) / 1e6, 1)
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True, use_fast=False)  # as ITREX loads it
    threads = int(os.environ.get("OMP_NUM_THREADS", 2))

    def run(messages: list[dict], n: int) -> tuple[list[int], float]:
        ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                  return_tensors="pt").input_ids
        started = time.perf_counter()
        out = model.generate(ids, max_new_tokens=n, do_sample=False, threads=threads)
        return out[0][ids.shape[1]:], time.perf_counter() - started

    new, _ = run(PROMPT, tokens)
    result["text"] = tok.decode(new, skip_special_tokens=True)
    _, ttft = run(COUNT, 1)
    counted, total = run(COUNT, 32)
    result.update(ttft_s=round(ttft, 3), decode_tokens=len(counted),
                  decode_tok_s=round((len(counted) - 1) / max(total - ttft, 1e-6), 1) if len(counted) > 4 else None)
    return result


def grid(kind: str) -> list[dict]:
    rows = []
    for bits, dtypes in ((4, FULL["bits4"]), (8, FULL["bits8"])):
        for w, c, g, s in itertools.product(dtypes, FULL["compute"], FULL["group"], FULL["scheme"]):
            rows.append({"bits": bits, "weight_dtype": w, "compute_dtype": c, "group_size": g, "scheme": s})
    if kind == "sane":  # the recipes that ran on the random model, checked on a real one
        # int4_clip is left out: ITREX 1.4.2 maps it to the same neural-speed "int4" as int4_fullrange
        rows = [r for r in rows if r["weight_dtype"] in ("int4_fullrange", "int8")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--f32")
    parser.add_argument("--expect")
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--grid", choices=("full", "sane"), default="full")
    parser.add_argument("--only", help="JSON list of recipes to try instead of the grid")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(one(args.model_dir, args.f32, json.loads(args.child), args.tokens)), flush=True)
        return
    # neural-speed runs its converters as a bare `python`: make that this env's interpreter
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    for recipe in json.loads(args.only) if args.only else grid(args.grid):
        with tempfile.TemporaryDirectory(prefix="recipe-") as cwd:
            cmd = [sys.executable, os.path.abspath(__file__), os.path.abspath(args.model_dir), "--tokens",
                   str(args.tokens), "--child", json.dumps(recipe)] + (["--f32", os.path.abspath(args.f32)] if args.f32 else [])
            started = time.perf_counter()
            try:
                done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
                lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
                row = json.loads(lines[-1][7:]) if lines else {
                    "error": f"exit {done.returncode}: " + (done.stderr.strip().splitlines() or ["?"])[-1][-200:]}
            except subprocess.TimeoutExpired:
                row = {"error": "timeout after 900 s"}
            row = {**recipe, **row, "wall_s": round(time.perf_counter() - started, 1)}
            if args.expect and "text" in row:
                row["sane"] = args.expect.lower() in row["text"].lower()
            print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
