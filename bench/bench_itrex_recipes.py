"""Benchmark: ITREX recipes side by side in one run, through the real supervisor and workers.

    .venv/bin/python bench/bench_itrex_recipes.py [--models models-itrex.yaml] [--tokens 64] [--repeats 3] [--data-dir DIR]

Takes the ``engine: itrex`` entries of the catalog (the two Qwen recipes of models-itrex.yaml),
starts them together on an empty data dir (first load: conversion + quantization), then again
on the same dir (cached), and per recipe reports: time to ready, the worker's own load time,
peak memory of the whole process group (worker + converter, sampled every 0.2 s) and of the
main-environment conversion, the preflight estimate next to it, resident memory when serving,
then time to first token and decode tok/s of a greedy answer (median of --repeats, the models
alternating one at a time, so both see the same host load).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import sys  # noqa: E402

sys.path.insert(0, str(ROOT))
PROMPT = [{"role": "user", "content": "Write a detailed essay about the history of the printing press."}]


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class GroupSampler:
    """Peak summed RSS per process group (a worker and its converter), and of our own children."""

    def __init__(self):
        self.peaks: dict[int, int] = {}
        self.children_peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        me = os.getpid()
        while not self._stop.wait(0.2):
            groups: dict[int, int] = {}
            children = 0
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                pid = int(entry.name)
                try:
                    stat = (entry / "stat").read_text().split(") ")[1].split()
                except OSError:
                    continue
                ppid, pgid = int(stat[1]), int(stat[2])
                if ppid == me and b"itrex_prepare" in _cmdline(pid):  # the main-env conversion
                    children += _rss(pid)
                if pgid != os.getpgid(0):
                    groups[pgid] = groups.get(pgid, 0) + _rss(pid)
            for pgid, total in groups.items():
                self.peaks[pgid] = max(self.peaks.get(pgid, 0), total)
            self.children_peak = max(self.children_peak, children)

    def stop(self):
        self._stop.set()


def measure(base_url: str, tokens: int, api_key: str | None = None) -> dict:
    from arena.core.generation import GenerationParams, Usage
    from arena.serving import client

    async def run():
        start, first, usage = time.perf_counter(), None, None
        async for item in client.stream_chat(base_url, "m", PROMPT, GenerationParams(temperature=0.0, max_new_tokens=tokens),
                                             api_key=api_key):
            if isinstance(item, Usage):
                usage = item
            elif first is None:
                first = time.perf_counter()
        done = time.perf_counter()
        return {"ttft_s": round(first - start, 3), "tokens": usage.completion_tokens,
                "decode_tok_s": round((usage.completion_tokens - 1) / (done - first), 1)}
    return asyncio.run(run())


def start(models, catalog: Path, data: Path, tokens: int, repeats: int) -> dict:
    from arena.serving.supervisor import Supervisor

    sampler = GroupSampler()
    supervisor = Supervisor(models, catalog, data, threads=2)
    began = time.perf_counter()
    supervisor.start()
    ready_at: dict[str, float] = {}
    while len(ready_at) < len(models) and time.perf_counter() - began < 1800:
        for status in supervisor.statuses():
            if status.state == "ready" and status.id not in ready_at:
                ready_at[status.id] = time.perf_counter() - began
            if status.state in ("failed", "unavailable"):
                raise SystemExit(f"{status.id}: {status.describe()}")
        time.sleep(0.2)
    results = {}
    try:
        for model in models:
            status = next(s for s in supervisor.statuses() if s.id == model.id)
            results[model.id] = {"ready_s": round(ready_at[model.id], 1), "worker_load_s": status.load_seconds}
        runs: dict[str, list[dict]] = {m.id: [] for m in models}
        for _ in range(repeats):  # alternate the models, one at a time: both see the same host load
            for model in models:
                runs[model.id].append(measure(supervisor.endpoint(model.id), tokens, supervisor.api_key(model.id)))
        for model in models:
            pid = supervisor.pid(model.id)
            for key in ("ttft_s", "decode_tok_s"):
                results[model.id][key] = statistics.median(r[key] for r in runs[model.id])
            results[model.id]["rss_serving_gb"] = round(_rss(pid) / 1e9, 2)
            results[model.id]["peak_group_gb"] = round(sampler.peaks.get(pid, 0) / 1e9, 2)
    finally:
        supervisor.stop()
        sampler.stop()
    results["_main_env_conversion_peak_gb"] = round(sampler.children_peak / 1e9, 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models-itrex.yaml")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed answers per model (median)")
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary directory (first load from scratch)")
    args = parser.parse_args()
    from arena.core.config import load_models
    from arena.serving import memory
    from arena.serving.engines.itrex import itrex_python
    from arena.serving.sources import resolve

    if itrex_python() is None:
        raise SystemExit("the ITREX env is not installed: run scripts/install-itrex.sh")
    models = [m for m in load_models(args.models) if m.engine == "itrex"]
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-itrex-"))
    (data / "models").mkdir(parents=True, exist_ok=True)
    for model in models:  # reuse the assembled GGUF instead of assembling it again
        src = resolve(model, ROOT / "data")
        if src.is_file() and not (data / "models" / src.name).exists():
            shutil.copy2(src, data / "models" / src.name)
            stamp = src.with_name(src.name + ".verified.json")
            if stamp.exists():
                shutil.copy2(stamp, data / "models" / stamp.name)
    params = memory.count_params(resolve(models[0], ROOT / "data"))
    report = {"first": start(models, args.models, data, args.tokens, args.repeats),
              "cached": start(models, args.models, data, args.tokens, args.repeats),
              "estimates_gb": {step: round(memory.estimate(step, params) / 1e9, 2)
                               for step in ("itrex-prepare", "itrex-convert", "itrex-quantize", "itrex-run")},
              "params": params, "recipes": {m.id: m.quantize.describe() for m in models}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
