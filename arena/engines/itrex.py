"""The legacy engine of the original report: Intel Extension for Transformers 1.4.2 NeuralChat
``build_chatbot`` with neural-speed and ``RtnConfig(bits=4, compute_dtype="int8",
weight_dtype="int4_fullrange")``.

``ItrexEngine`` runs only inside the ITREX virtualenv (scripts/install-itrex.sh), in an
arena worker started with that env's interpreter. ITREX and neural-speed are discontinued
upstream; the workarounds below make 1.4.2 usable as a stateless, stoppable chat engine.
``itrex_python`` is what the arena's main environment uses to find that env.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Iterator

from ..config import PROJECT_DIR, ModelConfig
from . import GenerationParams, Usage, phase

INSTALL_COMMAND = "scripts/install-itrex.sh"


def itrex_python() -> Path | None:
    """The ITREX env's interpreter ($ARENA_ITREX_VENV or ./.venv-itrex), if it is installed."""
    venv = Path(os.environ.get("ARENA_ITREX_VENV", PROJECT_DIR / ".venv-itrex"))
    python = venv / "bin" / "python"
    return python if (venv / ".installed").is_file() and python.is_file() else None


def _patched_qwen_converter(cache: Path) -> Path:
    """neural-speed 1.0's convert_qwen.py hard-codes RoPE base 10000; Qwen2/2.5 use rope_theta (1e6).
    Write a copy that reads it from config.json (the original stays untouched)."""
    import neural_speed.convert.convert_qwen as original

    text = Path(original.__file__).read_text()
    old = 'fout.write(struct.pack("f", 10000.0))  # freq_base'
    if old not in text:
        raise RuntimeError("unexpected neural-speed version: convert_qwen.py has no hard-coded freq_base to patch")
    patched = cache / "convert_qwen_rope.py"
    patched.write_text(text.replace(old, 'fout.write(struct.pack("f", float(hparams.get("rope_theta", 10000.0))))'))
    return patched


class ItrexEngine:
    def __init__(self, model: ModelConfig, hf_dir: Path, threads: int, cache_dir: Path):
        hf_dir, cache = hf_dir.resolve(), (cache_dir / model.id).resolve()
        (cache / "runtime_outs").mkdir(parents=True, exist_ok=True)
        # neural-speed runs its converters as a bare `python`, reads OMP_NUM_THREADS, and caches
        # runtime_outs/ne_<model_type>_*.bin in the working directory keyed by type only: one dir per model.
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.chdir(cache)

        import neural_speed
        import intel_extension_for_transformers.neural_chat.models.model_utils as model_utils
        from intel_extension_for_transformers.neural_chat import PipelineConfig, build_chatbot
        from intel_extension_for_transformers.neural_chat.config import LoadingModelConfig
        from intel_extension_for_transformers.transformers import RtnConfig
        from transformers import AutoConfig, TextIteratorStreamer

        # ITREX sets generation_config.pad_token_id on Qwen models; neural_speed.Model has none.
        if not hasattr(neural_speed.Model, "generation_config"):
            neural_speed.Model.generation_config = types.SimpleNamespace(pad_token_id=None)
        if AutoConfig.from_pretrained(hf_dir).model_type == "qwen2" and \
                not any(f.startswith("ne_qwen2_q_") for f in os.listdir("runtime_outs")):
            phase("converting to neural-speed format")
            subprocess.run([sys.executable, str(_patched_qwen_converter(cache)), "--outfile",
                            "runtime_outs/ne_qwen2_f32.bin", "--outtype", "f32", str(hf_dir)], check=True)

        engine = self

        class StoppableStreamer(TextIteratorStreamer):
            """ITREX forces 1024 new tokens for neural-speed and cannot be stopped: this streamer
            aborts the C++ loop at the limit or when the consumer goes away."""

            def put(self, value):
                if engine._stop.is_set() or engine._tokens >= engine._limit:
                    self.end()
                    raise RuntimeError("generation stopped")
                engine._tokens += 1
                super().put(value)

            def end(self):
                super().end()
                engine._done.set()

        model_utils.TextIteratorStreamer = StoppableStreamer
        self._stop, self._done = threading.Event(), threading.Event()
        self._tokens, self._limit = 0, 0
        phase("quantizing to INT4 (ITREX RTN, int4_fullrange, int8 compute)")
        self.chatbot = build_chatbot(PipelineConfig(
            model_name_or_path=str(hf_dir),
            optimization_config=RtnConfig(bits=4, compute_dtype="int8", weight_dtype="int4_fullrange"),
            loading_config=LoadingModelConfig(use_neural_speed=True)))
        if not hasattr(self.chatbot, "predict_stream"):
            from intel_extension_for_transformers.neural_chat.utils.error_utils import get_latest_error
            raise RuntimeError(f"ITREX build_chatbot failed (error code {get_latest_error()})")
        self._utils = model_utils
        self._tokenizer = model_utils.MODELS[str(hf_dir)]["tokenizer"]
        self._ns_model = model_utils.MODELS[str(hf_dir)]["model"]

    def stream_chat(self, messages: list[dict], params: GenerationParams) -> Iterator[str | Usage]:
        from intel_extension_for_transformers.neural_chat.config import GenerationConfig

        # ITREX passes a prompt through as is when it already contains its chat roles.
        prompt = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_tokens = len(self._tokenizer(prompt)["input_ids"])
        # ITREX always generates "interactively", continuing the previous request's context: reset it.
        if self._ns_model.model is not None:
            self._ns_model.model.reinit()
            self._ns_model.generate_round = 0
        self._stop.clear()
        self._done.clear()
        self._tokens, self._limit = 0, params.max_new_tokens
        self._utils.output_token_len = 1  # ITREX divides by it after an early stop
        stream, _ = self.chatbot.predict_stream(prompt, config=GenerationConfig(
            max_new_tokens=params.max_new_tokens, temperature=max(params.temperature, 0.01),
            top_p=params.top_p, top_k=params.top_k or 40, repetition_penalty=params.repeat_penalty or 1.0,
            do_sample=params.temperature > 0))
        try:
            for piece in stream:
                if piece:
                    yield piece
        finally:
            self._stop.set()
            self._done.wait(timeout=60)
        yield Usage(prompt_tokens, self._tokens, "length" if self._tokens >= params.max_new_tokens else "stop")
