"""The engine of the original report: Intel Extension for Transformers 1.4.2 NeuralChat
``build_chatbot`` with neural-speed and an RTN recipe from the entry's ``quantize:``
(default: the report's ``RtnConfig(bits=4, compute_dtype="int8", weight_dtype="int4_fullrange")``).

``ItrexEngine`` runs only inside the ITREX virtualenv (scripts/install-itrex.sh), in an
arena worker started with that env's interpreter. ITREX and neural-speed are discontinued
upstream; the workarounds below make 1.4.2 usable as a stateless, stoppable chat engine.
The module's top level (paths, cache keys, which architectures neural-speed reads natively)
imports nothing from ITREX, so the arena's main environment uses it too.

Cache layout under ``<data dir>/itrex/``:
    ns-<source key>/f32/ne_<type>_f32.bin   neural-speed's fp32 file, shared by every recipe
    ns-<source key>/<recipe>-<key>/runtime_outs/ne_<type>_q_*.bin   one quantized file per recipe
Each directory counts only once its ``COMPLETE`` marker (written last) exists; anything else is
a leftover of an interrupted run and is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Iterator

from arena.core.config import ITREX_DEFAULT_RECIPE, PROJECT_DIR, ModelConfig, QuantizeConfig
from arena.core.generation import GenerationParams, TokenLogprob, Usage
from arena.core.texts import Phrase, phrase
from arena.serving.engines.base import SCORE_CHUNK, BatchAnswer, exclusive, installed_versions, phase, top_logprobs

INSTALL_COMMAND = "scripts/install-itrex.sh"
CACHE_FORMAT = 2
COMPLETE = "COMPLETE"  # written last: a directory without it is half-written and never used

# HF ``model_type`` values neural-speed 1.0 converts itself (it has a convert_<type>.py and a runtime for
# them): these go to ITREX as they are, as in the report. Everything else (Qwen2/2.5 today, whose
# converter assumes one K/V head per attention head and RoPE base 10000) is converted first.
NATIVE_ARCHS = ("llama", "mistral", "mixtral", "chatglm", "qwen", "baichuan", "gptj", "gpt_neox", "falcon", "mpt",
                "bloom", "opt", "gpt_bigcode", "phi", "gemma", "stablelm")
# neural-speed's Llama-family converters read only sharded safetensors / pytorch_model*.bin and a SentencePiece
# tokenizer.model (not tokenizer.json), and its Llama graph only knows 32/40/60/80-layer models.
SENTENCEPIECE_ARCHS = ("llama", "mistral", "mixtral")
WEIGHT_GLOBS = ("model-00001-of-*.safetensors", "pytorch_model-00001-of-*.bin", "pytorch_model.bin", "consolidated.00.pth")


def itrex_python() -> Path | None:
    """The ITREX env's interpreter ($ARENA_ITREX_VENV or ./.venv-itrex), if it is installed."""
    venv = Path(os.environ.get("ARENA_ITREX_VENV", PROJECT_DIR / ".venv-itrex"))
    python = venv / "bin" / "python"
    return python if (venv / ".installed").is_file() and python.is_file() else None


def native_reason(hf_dir: Path) -> tuple[bool, Phrase]:
    """Can neural-speed read this HF directory as it is? (yes/no, and why), from config.json only."""
    try:
        model_type = json.loads((hf_dir / "config.json").read_text()).get("model_type", "?")
    except (OSError, ValueError) as exc:
        return False, phrase("native_unreadable", error=str(exc))
    if model_type not in NATIVE_ARCHS:
        return False, phrase("native_unknown", model_type=model_type)
    if model_type in SENTENCEPIECE_ARCHS:
        if not (hf_dir / "tokenizer.model").is_file():
            return False, phrase("native_no_tokenizer", model_type=model_type)
        if not any(next(hf_dir.glob(g), None) for g in WEIGHT_GLOBS):
            return False, phrase("native_not_sharded", model_type=model_type)
    return True, phrase("phase_itrex_native", model_type=model_type)


def library_versions() -> dict:
    """The versions an ITREX cache entry depends on (read in the ITREX env)."""
    return installed_versions(("intel-extension-for-transformers", "neural-speed", "transformers"))


def _digest(value: dict) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def recipe_fields(recipe: QuantizeConfig) -> dict:
    return {k: getattr(recipe, k) for k in ("bits", "weight_dtype", "compute_dtype", "group_size", "scheme")}


def cache_dirs(cache_root: Path, identity: dict, recipe: QuantizeConfig, versions: dict) -> tuple[Path, Path]:
    """(shared fp32 dir, this recipe's dir): keyed by source identity + versions, and + recipe."""
    base = {"format": CACHE_FORMAT, "source": identity, "versions": versions}
    root = cache_root / f"ns-{_digest(base)[:16]}"
    return root / "f32", root / f"{recipe.slug()}-{_digest({**base, 'recipe': recipe_fields(recipe)})[:10]}"


def is_complete(directory: Path) -> bool:
    return (directory / COMPLETE).is_file()


def mark_complete(directory: Path, **info) -> None:
    partial = directory / (COMPLETE + ".partial")
    partial.write_text(json.dumps({**info, "finished": time.time()}, indent=1, default=str))
    os.replace(partial, directory / COMPLETE)


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


def _fp32_file(directory: Path, hf_dir: Path, ns_type: str, params: int | None) -> Path:
    """neural-speed's fp32 file for ``hf_dir``, converted once and shared by every recipe."""
    with exclusive(directory.parent):
        return _fp32_file_locked(directory, hf_dir, ns_type, params)


def _fp32_file_locked(directory: Path, hf_dir: Path, ns_type: str, params: int | None) -> Path:
    out = directory / f"ne_{ns_type}_f32.bin"
    if is_complete(directory) and out.is_file():
        return out
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    from arena.serving.memory import expect
    phase("phase_itrex_convert", expect=expect("itrex-convert", params))
    partial = directory / (out.name + ".partial")
    if ns_type == "qwen2":
        cmd = [sys.executable, str(_patched_qwen_converter(directory)), "--outfile", str(partial), "--outtype", "f32",
               str(hf_dir)]
    else:
        import neural_speed.convert as ns_convert
        hf_type = json.loads((hf_dir / "config.json").read_text())["model_type"]
        script = Path(ns_convert.__file__).parent / f"convert_{ns_convert.model_maps.get(hf_type, hf_type)}.py"
        cmd = [sys.executable, str(script), "--outfile", str(partial), "--outtype", "f32", str(hf_dir)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode or not partial.is_file():
        tail = (done.stderr.strip() or done.stdout.strip())[-600:]
        raise RuntimeError(f"neural-speed could not convert {hf_dir} to its fp32 format (exit {done.returncode}): {tail}")
    os.replace(partial, out)
    mark_complete(directory, source=str(hf_dir), seconds=round(time.perf_counter() - started, 1))
    return out


def _write_runtime_outs_to(directory: Path) -> None:
    """neural-speed 1.0's ``Model.init`` keeps its files in ``runtime_outs/`` of the working directory (and
    ITREX calls it deep inside ``build_chatbot``). Rather than change the caller's working directory, run a
    copy of that method whose directory is ``directory`` (an absolute path, so the model file it records
    stays valid wherever the process is). The copy is made from the installed source, checked first."""
    import inspect
    import textwrap

    import neural_speed

    if not getattr(neural_speed.Model.init, "_arena_patched", False):
        source = textwrap.dedent(inspect.getsource(neural_speed.Model.init))
        old = 'output_path = "runtime_outs"'
        if old not in source:
            raise RuntimeError("unexpected neural-speed version: Model.init has no runtime_outs path to patch")
        namespace = dict(vars(sys.modules[neural_speed.Model.__module__]))
        exec(compile(source.replace(old, "output_path = type(self).arena_runtime_outs"), neural_speed.__file__,
                     "exec"), namespace)
        namespace["init"]._arena_patched = True
        neural_speed.Model.init = namespace["init"]
    neural_speed.Model.arena_runtime_outs = str(directory.resolve())


def _hf_config(model: ModelConfig, hf_dir: Path):
    """The model's transformers config; a model that ships its own code is refused until the catalog trusts it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(hf_dir, trust_remote_code=model.trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc) and not model.trust_remote_code:
            raise RuntimeError(f"{model.id} ships its own Python code (as ChatGLM3 and Qwen-7B do): set "
                               f"'trust_remote_code: true' in models.yaml line {model.line} if you trust it") from None
        raise


def _stoppable_streamer(engine: "ItrexEngine", base: type) -> type:
    """``base`` (transformers' TextIteratorStreamer), bound to ``engine``'s stop event and token limit."""

    class StoppableStreamer(base):
        """ITREX forces 1024 new tokens for neural-speed and cannot be stopped: this streamer
        aborts the C++ loop at the limit or when the consumer goes away."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            engine._streamer = self

        def put(self, value):
            if engine._stop.is_set() or engine._tokens >= engine._limit:
                self.end()
                raise RuntimeError("generation stopped")
            engine._tokens += 1
            super().put(value)

        def end(self):
            super().end()
            engine._done.set()

    return StoppableStreamer


class ItrexEngine:
    def __init__(self, model: ModelConfig, hf_dir: Path, threads: int, cache_dir: Path):
        from arena.serving.memory import count_params
        from arena.serving.sources import source_identity

        recipe = model.quantize or ITREX_DEFAULT_RECIPE
        if problem := recipe.unsupported():  # config.py refuses it already; a hand-made ModelConfig may not
            raise ValueError(f"{model.id}: {problem}")
        self.recipe = recipe
        hf_dir = hf_dir.resolve()
        # neural-speed runs its converters as a bare `python` and reads OMP_NUM_THREADS
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        os.environ["OMP_NUM_THREADS"] = str(threads)

        import intel_extension_for_transformers.neural_chat.models.model_utils as model_utils
        import neural_speed
        from neural_speed import _get_model_type
        from transformers import TextIteratorStreamer

        ns_type = _get_model_type(_hf_config(model, hf_dir))
        identity = source_identity(model, hf_dir)
        f32_dir, self.cache = cache_dirs(cache_dir.resolve(), identity, recipe, library_versions())
        params = count_params(hf_dir)

        # ITREX sets generation_config.pad_token_id on Qwen models; neural_speed.Model has none.
        if not hasattr(neural_speed.Model, "generation_config"):
            neural_speed.Model.generation_config = types.SimpleNamespace(pad_token_id=None)

        model_utils.TextIteratorStreamer = _stoppable_streamer(self, TextIteratorStreamer)
        self._stop, self._done = threading.Event(), threading.Event()
        self._tokens, self._limit = 0, 0
        self.cached = self._build(hf_dir, f32_dir, ns_type, identity, params)
        self._utils = model_utils
        self._tokenizer = model_utils.MODELS[str(hf_dir)]["tokenizer"]
        self._ns_model = model_utils.MODELS[str(hf_dir)]["model"]

    def _quant_bins(self, ns_type: str) -> list[Path]:
        return list((self.cache / "runtime_outs").glob(f"ne_{ns_type}_q_*.bin"))

    def _build(self, hf_dir: Path, f32_dir: Path, ns_type: str, identity: dict, params: int | None) -> bool:
        """ITREX's chatbot over this recipe's cache entry, quantizing first unless the entry is complete. Returns
        whether it was. One builder per recipe entry (another worker or arena building the same one waits); the
        lock is released however the build ends."""
        from intel_extension_for_transformers.neural_chat import PipelineConfig, build_chatbot
        from intel_extension_for_transformers.neural_chat.config import LoadingModelConfig
        from intel_extension_for_transformers.transformers import RtnConfig

        from arena.serving.memory import expect

        recipe = self.recipe
        with exclusive(self.cache.parent, f".lock-{self.cache.name}"):
            cached = is_complete(self.cache) and bool(self._quant_bins(ns_type))
            if not cached:  # nothing, or an interrupted run: start this recipe over
                shutil.rmtree(self.cache, ignore_errors=True)
                (self.cache / "runtime_outs").mkdir(parents=True)
                f32 = _fp32_file(f32_dir, hf_dir, ns_type, params)
                # neural-speed deletes the fp32 file after quantizing: give it a hard link, keep the original
                os.link(f32, self.cache / "runtime_outs" / f32.name)
            _write_runtime_outs_to(self.cache / "runtime_outs")
            if cached:
                phase("phase_itrex_cached", recipe=recipe.slug())
            else:
                phase("phase_itrex_quantize", recipe=recipe.slug(), expect=expect("itrex-quantize", params))
            started = time.perf_counter()
            self.chatbot = build_chatbot(PipelineConfig(
                model_name_or_path=str(hf_dir),
                optimization_config=RtnConfig(bits=recipe.bits, group_size=recipe.group_size,
                                              compute_dtype=recipe.compute_dtype, weight_dtype=recipe.weight_dtype,
                                              sym=recipe.scheme == "sym"),
                loading_config=LoadingModelConfig(use_neural_speed=True)))
            if not hasattr(self.chatbot, "predict_stream"):
                from intel_extension_for_transformers.neural_chat.utils.error_utils import get_latest_error
                raise RuntimeError(f"ITREX build_chatbot failed (error code {get_latest_error()})")
            if not cached:
                if not self._quant_bins(ns_type):
                    raise RuntimeError(f"ITREX finished without writing a quantized file in "
                                       f"{self.cache / 'runtime_outs'}")
                mark_complete(self.cache, recipe=recipe_fields(recipe), source=identity, versions=library_versions(),
                              model_type=ns_type, seconds=round(time.perf_counter() - started, 1))
        return cached

    def logprob_chat(self, messages: list[dict], params: GenerationParams) -> BatchAnswer:
        """An answer with each token's log-probability and its best alternatives, decoded here token by token
        from neural-speed's logits (ITREX's chatbot streams text only). Sampling as llama.cpp's batch path."""
        import numpy as np
        import torch

        from arena.serving.engines.llamacpp import sample_token

        started = time.perf_counter()
        prompt = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self._tokenizer(prompt)["input_ids"]
        configured = getattr(getattr(self._ns_model, "generation_config", None), "eos_token_id", None)
        eos = {self._tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None}
        rng = np.random.default_rng(params.seed if params.seed is not None else 0)
        generated: list[int] = []
        entries: list[TokenLogprob] = []
        finish, ttft = "length", None
        logits = self._ns_model(torch.tensor([ids]), reinit=True)
        for _ in range(params.max_new_tokens):
            row = np.asarray(logits, dtype=np.float32).reshape(-1, np.shape(logits)[-1])[-1]
            token = sample_token(row, generated, params, rng)
            _, top, logprobs = top_logprobs(row, params.top_logprobs or 0, self._token_text)
            entries.append(TokenLogprob(self._token_text(token), float(logprobs[token]), top))
            ttft = ttft if ttft is not None else time.perf_counter() - started
            if token in eos:
                finish = "stop"
                break
            generated.append(token)
            logits = self._ns_model(torch.tensor([[token]]))
        return BatchAnswer(text=self._tokenizer.decode(generated, skip_special_tokens=True), ttft_s=ttft,
                           total_s=time.perf_counter() - started, logprobs=entries,
                           usage=Usage(len(ids), len(generated), finish))

    def score_tokens(self, ids: list[int], top: int, gather: list[list[int]] | None, tail: int = 0) -> dict:
        """Teacher forcing over ``ids`` with neural-speed's ``logits_all`` evaluation, in a model initialised
        for a context of the text's length; the next chat initialises its own again (as after loading)."""
        import numpy as np
        import torch

        from arena.serving.scoring import score_sequence

        ns = self._ns_model
        ns.init_from_bin(ns.model_type, ns.bin_file, batch_size=1, max_request_num=1, ctx_size=len(ids) + 8)

        def forward(start: int, stop: int) -> np.ndarray:
            logits = ns(torch.tensor([ids[start:stop]]), logits_all=True)
            return np.asarray(logits, dtype=np.float32).reshape(stop - start, -1)

        try:
            return score_sequence(ids, top, gather, SCORE_CHUNK, forward, tail)
        finally:
            ns.model = None  # the chat path builds its own context on its next generate

    def _token_text(self, token: int) -> str:
        return self._tokenizer.decode([token], skip_special_tokens=False)

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        """What the prompt takes of the context (the worker fits long conversations with it)."""
        prompt = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(self._tokenizer(prompt)["input_ids"])

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
        self._streamer = None
        try:
            try:
                for piece in stream:
                    if piece:
                        yield piece
            except RuntimeError as exc:
                # ITREX waits 0.1 s for the first token and, if generation has already ended by then
                # (a small model or a small max_new_tokens, stopped by our streamer), re-raises our stop
                # instead of streaming: the text is in the streamer's queue, ended; read it from there.
                if str(exc) != "generation stopped" or self._streamer is None:
                    raise
                for piece in self._streamer:
                    if piece:
                        yield piece
        finally:
            self._stop.set()
            self._done.wait(timeout=60)
        yield Usage(prompt_tokens, self._tokens, "length" if self._tokens >= params.max_new_tokens else "stop")
