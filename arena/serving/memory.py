"""Memory: a worker's resident memory (the status panel, the CSV), and the preflight: estimate a model's peak memory before loading or converting it, compare it
with what the machine has, and refuse (or warn) with the numbers instead of being killed by the
OOM killer halfway through a five-minute conversion.

Standard library only: the arena's main environment and the ITREX environment both import it.
The per-step figures are measured (BENCHMARKS.md, "Memory preflight"); the model's size comes from
file headers (safetensors, GGUF), never from reading the weights.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from arena.core.texts import Phrase, phrase, say

GB = 1e9


@dataclass(frozen=True)
class Step:
    """A slow step's cost (what it is called, in every language: texts.py, ``step_<name>``)."""

    bytes_per_param: float
    overhead: float            # bytes
    seconds_per_gparam: float  # wall time per 1e9 parameters on 2 cores (0: instant)


# Peak resident memory of each step = bytes_per_param x parameters + overhead. Measured with
# /usr/bin/time -v on Qwen2.5-Coder-0.5B (630 M parameters counted in the GGUF, 663 M once K/V heads
# are expanded for neural-speed) and SmolLM2-135M; see BENCHMARKS.md for estimate vs measured.
STEPS = {
    # GGUF or Qwen2 -> fp32 HF directory for ITREX (main env: transformers loads fp32, expands K/V, saves)
    "itrex-prepare": Step(6.0, 0.2 * GB, 85),
    # HF directory -> neural-speed's fp32 file (neural-speed's converter loads the fp32 model)
    "itrex-convert": Step(6.4, 0.8 * GB, 30),
    # the same for an architecture neural-speed reads natively, from its fp16/bf16 checkpoint: ChatGLM's and
    # Qwen's converters load the model in fp32 (4 B/param, read from convert_chatglm.py / convert_qwen.py;
    # not measured here: no such model fits the test machine); Llama's converter is lazy and needs less
    "itrex-convert-native": Step(4.3, 0.3 * GB, 45),
    # ITREX RTN quantization of the fp32 file, then serving it (the worker's peak)
    "itrex-quantize": Step(2.2, 0.5 * GB, 25),
    # serving a cached quantized file
    "itrex-run": Step(1.0, 0.5 * GB, 2),
    # transformers: fp32 load, then INT4 quantization in place
    "transformers": Step(5.0, 0.5 * GB, 60),
    "transformers-cached": Step(0.8, 0.4 * GB, 15),  # measured 0.90 GB (BENCHMARKS §4)
    "transformers-gguf": Step(5.5, 0.4 * GB, 230),  # 3.84 GB
    # GGUF -> fp32 HF directory for vLLM (as itrex-prepare, without expanding K/V heads; 72 s for Qwen 0.5B)
    "vllm-prepare": Step(6.0, 0.2 * GB, 115),
    # vLLM serving fp32 weights: 8.45 GB summed over its four processes for Qwen 0.5B with a 2 GiB KV cache
    # (engines/vllm.py KV_CACHE_GIB), the worker alone 6.6 GB; 120 s to start, compiling its graphs
    "vllm-run": Step(8.0, 3.4 * GB, 190),
    # llama.cpp maps the file: about its size (bytes_per_param is applied to the file size here)
    "llamacpp": Step(1.1, 0.2 * GB, 0),
}


def _safetensors_params(path: Path) -> int:
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def count_params(path: Path) -> int | None:
    """Parameters of a GGUF file or an HF directory, from headers only (None if unknown)."""
    path = Path(path)
    try:
        if path.is_file() and path.suffix == ".gguf":
            try:
                from gguf import GGUFReader  # main env; maps the file, reads tensor shapes only
                return int(sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors))
            except ImportError:
                return int(path.stat().st_size * 8 / 4.8)  # ~4.8 bits per weight for Q4_K_M
        if not path.is_dir():
            return None
        index = next(path.glob("*.safetensors.index.json"), None)
        if index is not None:
            files = sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
        else:
            files = sorted(path.glob("*.safetensors"))
        if files:
            return sum(_safetensors_params(f) for f in files)
        bins = sorted(path.glob("pytorch_model*.bin"))
        if bins:
            dtype = json.loads((path / "config.json").read_text()).get("torch_dtype", "float16")
            width = 4 if dtype == "float32" else 2
            return sum(f.stat().st_size for f in bins) // width
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return None


def mem_available() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is no /proc)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def estimate(step: str, params: int | None, file_size: int | None = None) -> int | None:
    """Peak bytes of ``step`` for a model of ``params`` parameters (llamacpp: of ``file_size`` bytes)."""
    s = STEPS[step]
    base = file_size if step == "llamacpp" else params
    return None if base is None else int(s.bytes_per_param * base + s.overhead)


def expect(step: str, params: int | None) -> Phrase:
    """'expect about 4 min for 6.20 B parameters', for the status panel in the page's language."""
    if params is None:
        return phrase("expect_unknown")
    seconds = STEPS[step].seconds_per_gparam * params / 1e9
    gparams = f"{params / 1e9:.2f}"
    if seconds >= 90:
        return phrase("expect_minutes", minutes=f"{seconds / 60:.0f}", gparams=gparams)
    return phrase("expect_seconds", seconds=f"{max(seconds, 1):.0f}", gparams=gparams)


class InsufficientMemory(RuntimeError):
    """The estimated peak does not fit; the message (a phrase: ``reason``) has the numbers and what to do."""

    def __init__(self, reason: Phrase):
        super().__init__(say(reason))
        self.reason = reason


def preflight(model_id: str, step: str, params: int | None, file_size: int | None = None,
              available: int | None = None) -> Phrase | None:
    """Refuse (raise InsufficientMemory) when the estimated peak exceeds the available memory; return
    a warning when it takes more than 80 % of it; None when it fits or cannot be estimated.
    ``ARENA_MEMORY_CHECK=warn`` turns the refusal into a warning, ``off`` skips the check."""
    mode = os.environ.get("ARENA_MEMORY_CHECK", "on")
    need = estimate(step, params, file_size)
    available = mem_available() if available is None else available
    if mode == "off" or need is None or available is None:
        return None
    size = phrase("size_params", gparams=f"{params / 1e9:.2f}") if params else \
        phrase("size_file", gb=f"{file_size / GB:.1f}")
    numbers = {"what": phrase(f"step_{step}"), "model": model_id, "size": size, "need": f"{need / GB:.1f}",
               "available": f"{available / GB:.1f}"}
    if need > available and mode != "warn":
        raise InsufficientMemory(phrase("memory_refused", **numbers))
    if need > 0.8 * available:
        return phrase("memory_warning", **numbers)
    return None


def resident_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` and the processes in its process group, in MB (Linux /proc), or None where it can't be
    read. "Does it fit on my laptop" is the first question of an INT4 deployment: the status panel and the
    CSV show this. The group counts because a model can be several processes: vLLM's API server, engine core
    and worker all hold memory (pages they share are counted in each)."""
    return _group_mb(pid, "VmRSS")


def peak_resident_mb(pid: int) -> float | None:
    """VmHWM (the highest resident memory so far) in MB, summed like ``resident_mb``, or None. A batch run's
    report shows it next to the RSS after the answers: a worker's batch context is replaced when the group
    shape changes, so the RSS at one moment can be below what the model needed at its peak. Summed over
    several processes it is an upper bound: their peaks need not have come at once."""
    return _group_mb(pid, "VmHWM")


def _group_mb(leader: int, field: str) -> float | None:
    own = _status_mb(leader, field)
    if own is None:
        return None
    return own + sum(_status_mb(pid, field) or 0.0 for pid in _group_members(leader))


def _group_members(leader: int) -> list[int]:
    """The other processes whose process group is ``leader``'s (a worker leads its own: start_new_session)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == leader:
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            if int(fields[2]) == leader:  # state, ppid, pgrp
                members.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return members


def _status_mb(pid: int, field: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
