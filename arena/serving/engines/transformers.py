"""HF-format models through transformers, optionally INT4 weight-only quantized, with a disk cache.

The first load reads the full-precision weights (a local directory, a downloaded hub
snapshot, or a GGUF file that transformers dequantizes), quantizes them and saves the
quantized state dict. Later loads build the model skeleton on the ``meta`` device and
assign the cached INT4 tensors, so the fp32 model is never materialised again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Iterator

from arena.core.config import ModelConfig, QuantizeConfig
from arena.core.generation import GenerationParams, TokenLogprob, Usage
from arena.serving.engines.base import SCORE_CHUNK, BatchAnswer, BatchRequest, exclusive, in_groups, phase, top_logprobs
from arena.serving.sources import sha256_of, source_identity

CACHE_FORMAT = 1
MAX_BATCH = 8  # rows per batched generate(): 3.8x decode at 8 on 2 cores (DESIGN.md §9); more costs RAM


class CacheError(RuntimeError):
    """A cache entry is missing, stale or corrupt; the caller rebuilds it."""


def cache_key(model: ModelConfig, weights: Path, quantize: QuantizeConfig) -> tuple[str, dict]:
    identity = {
        "format": CACHE_FORMAT, "source": source_identity(model, weights), "quantize": quantize.__dict__,
        "trust_remote_code": model.trust_remote_code,
        "versions": {p: version(p) for p in ("torch", "transformers", "torchao", "optimum-quanto")},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    return digest, identity


def _load_kwargs(model: ModelConfig, weights: Path) -> tuple[str, dict]:
    """(path for from_pretrained, extra kwargs) for a directory or a GGUF file."""
    kwargs = {"trust_remote_code": model.trust_remote_code}
    if weights.is_file():
        return str(weights.parent), {**kwargs, "gguf_file": weights.name}
    return str(weights), kwargs


def _friendly(exc: Exception, model: ModelConfig) -> Exception:
    text = str(exc)
    if "trust_remote_code" in text and not model.trust_remote_code:
        return RuntimeError(f"{model.id} needs custom code from its repository: set 'trust_remote_code: true' "
                            f"in models.yaml line {model.line} if you trust it. ({text[:200]})")
    if "does not recognize this architecture" in text or "model type" in text:
        return RuntimeError(f"transformers {version('transformers')} cannot load {model.id}: {text[:300]}")
    return exc


def _return_freed_memory() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the memory is reused by this process instead


def quanto_kernels() -> None:
    """Build (or load) quanto's C++ kernels now, under a lock that ends with its process. torch's own build lock
    is a plain file: a process killed while compiling (a stopped worker, a killed test) leaves it behind, and every
    later quanto load waits on it forever. While this lock is held no arena process is building, so a torch lock
    found then is stale and goes."""
    from optimum.quanto.library.extensions import get_extension, is_extension_available

    if not is_extension_available("quanto_cpp"):
        return
    extension = get_extension("quanto_cpp")
    build = Path(extension.build_directory)
    with exclusive(build.parent, ".arena-build-lock"):
        (build / "lock").unlink(missing_ok=True)
        extension.lib  # noqa: B018 (the property builds or loads the kernels)


def quantize_model(hf_model, quantize: QuantizeConfig):
    """Quantize in place to INT4 weight-only; activations in ``compute_dtype`` (bf16)."""
    import torch

    hf_model.to(torch.bfloat16)
    if quantize.backend == "torchao":
        # Int4OpaqueTensor: torchao 0.18's CPU kernel for INT4 weights with bf16 activations
        # (Int4WeightOnlyConfig needs CUDA/XPU; the int8-activation variant's CPU kernel is not in the wheel).
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import quantize_
        quantize_(hf_model, PrototypeInt4WeightOnlyConfig(group_size=quantize.group_size))
    elif quantize.backend == "quanto":
        from optimum.quanto import freeze, qint4
        from optimum.quanto import quantize as quanto_quantize
        quanto_kernels()
        quanto_quantize(hf_model, weights=qint4)
        freeze(hf_model)
    else:
        raise ValueError(f"unknown quantization backend {quantize.backend!r}")
    return hf_model


class TransformersEngine:
    def __init__(self, model: ModelConfig, weights: Path, threads: int, cache_dir: Path, rebuild: bool = False):
        import torch

        torch.set_num_threads(threads)
        self.config = model
        self.hf_model, self.tokenizer = self._load(model, weights, cache_dir, rebuild)
        self.hf_model.eval()

    # -- loading ------------------------------------------------------------------------------
    def _load(self, model: ModelConfig, weights: Path, cache_dir: Path, rebuild: bool):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        path, kwargs = _load_kwargs(model, weights)
        quantize = model.quantize
        entry = None
        if quantize:
            key, identity = cache_key(model, weights, quantize)
            entry = cache_dir / f"{model.id}-{key}"
            if not rebuild:
                try:
                    return self._load_cached(entry, identity)
                except CacheError as exc:
                    phase("phase_cache_rebuild", error=str(exc))
        if model.trust_remote_code:
            print(f"WARNING: {model.id}: trust_remote_code is on; this runs Python code shipped with the model",
                  flush=True)
        phase("phase_loading_weights", file=weights.name)
        try:
            # Fail on architecture / remote code before reading weights. The config is handed on: a GGUF's
            # metadata is parsed in Python each time it is read (5 s for SmolLM2's vocabulary), once per reader.
            config = AutoConfig.from_pretrained(path, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path, config=config, **kwargs)
            hf_model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype="float32", **kwargs)
        except (ValueError, OSError, KeyError) as exc:
            raise _friendly(exc, model) from None
        if quantize:
            phase("phase_quantizing_int4", recipe=quantize.describe())
            quantize_model(hf_model, quantize)
            _return_freed_memory()  # the fp32 copy is gone; give its ~1 GB back to the OS
            phase("phase_saving_cache")
            self._save_cached(entry, identity, hf_model, tokenizer)
        return hf_model, tokenizer

    def _save_cached(self, entry: Path, identity: dict, hf_model, tokenizer) -> None:
        import torch

        partial = entry.with_name(entry.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        hf_model.config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        torch.save(hf_model.state_dict(), partial / "weights.pt")
        if self.config.quantize.backend == "quanto":  # quanto rebuilds its modules from this map on reload
            from optimum.quanto import quantization_map
            (partial / "quanto-map.json").write_text(json.dumps(quantization_map(hf_model)))
        meta = {**identity, "weights_sha256": sha256_of(partial / "weights.pt"), "created": time.time()}
        (partial / "arena-cache.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(partial, entry)

    def _load_cached(self, entry: Path, identity: dict):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        meta_file = entry / "arena-cache.json"
        if not meta_file.is_file():
            raise CacheError("no cache yet")
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            raise CacheError("unreadable arena-cache.json") from None
        if {k: meta.get(k) for k in identity} != identity:
            raise CacheError("stale: source, settings or library versions changed")
        if sha256_of(entry / "weights.pt") != meta.get("weights_sha256"):
            raise CacheError("weights.pt is corrupt (checksum mismatch)")
        phase("phase_loading_cache")
        try:
            from accelerate import init_empty_weights

            config = AutoConfig.from_pretrained(entry, trust_remote_code=self.config.trust_remote_code)
            # Parameters on "meta" (no memory), buffers such as rotary frequencies built for real.
            with init_empty_weights(include_buffers=False):
                hf_model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                             trust_remote_code=self.config.trust_remote_code)
            # weights_only: the cache is a file on disk, and unpickling may run no code from it. The one class
            # beyond plain tensors it holds is torchao's INT4 tensor (quanto's state dict has none).
            from torchao.prototype.quantization.int4 import Int4OpaqueTensor

            with torch.serialization.safe_globals([Int4OpaqueTensor]):
                state = torch.load(entry / "weights.pt", weights_only=True, mmap=True)
            if self.config.quantize.backend == "quanto":
                from optimum.quanto import requantize
                quanto_kernels()
                qmap = json.loads((entry / "quanto-map.json").read_text())
                requantize(hf_model, state, qmap, device=torch.device("cpu"))
            else:
                hf_model.load_state_dict(state, assign=True, strict=True)
            # No tie_weights(): the state dict names every parameter, and quantization may have untied
            # lm_head from the embedding on purpose.
            tokenizer = AutoTokenizer.from_pretrained(entry)
        except Exception as exc:  # anything odd in a cache entry means: rebuild it
            raise CacheError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        return hf_model, tokenizer

    # -- generation -----------------------------------------------------------------------------
    def count_prompt_tokens(self, messages: list[dict]) -> int:
        """Exactly what apply_chat_template will feed the model."""
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)
        return len(encoded["input_ids"])

    def stream_chat(self, messages: list[dict], params: GenerationParams) -> Iterator[str | Usage]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tokenizer = self.tokenizer
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set()

        sample = params.temperature > 0
        options = {"max_new_tokens": params.max_new_tokens, "do_sample": sample, "streamer": streamer,
                   "stopping_criteria": StoppingCriteriaList([_Stop()]),
                   "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
        if sample:
            options.update(temperature=params.temperature, top_p=params.top_p)
            if params.top_k:
                options["top_k"] = params.top_k
        if params.repeat_penalty:
            options["repetition_penalty"] = params.repeat_penalty
        if params.seed is not None:
            torch.manual_seed(params.seed)
        result: dict = {}

        def generate() -> None:
            try:
                with torch.no_grad():  # not inference_mode: quanto's generic INT4 tensors fail under it
                    result["out"] = self.hf_model.generate(**inputs, **options)
            except Exception as exc:
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True, name="hf-generate")
        thread.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:
            stop.set()  # the consumer went away (Stop, disconnect): end generation at the next token
            thread.join()
        if "error" in result:
            raise result["error"]
        generated = result["out"][0, prompt_tokens:]
        configured = self.hf_model.generation_config.eos_token_id
        eos = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
        finished = len(generated) > 0 and int(generated[-1]) in eos
        count = len(generated) - (1 if finished else 0)
        yield Usage(prompt_tokens, count, "stop" if finished or count < params.max_new_tokens else "length")

    # -- batched generation (batch runs) --------------------------------------------------------
    def n_params(self) -> int:
        """Logical parameter count (INT4 tensors report their unpacked shape)."""
        return int(sum(p.numel() for p in self.hf_model.parameters()))

    def batch_chat(self, requests: list[BatchRequest], params: GenerationParams) -> list[BatchAnswer]:
        return in_groups(requests, MAX_BATCH, lambda group: self._generate_group(group, params))

    def _generate_group(self, requests: list[BatchRequest], params: GenerationParams) -> list[BatchAnswer]:
        """One batched ``generate`` with left padding; each row's first-token and finish times are
        taken per step. Unlike llama.cpp, HF keeps computing a finished row until the longest ends,
        and one RNG serves the whole batch: sampled (temperature > 0) answers depend on the batch."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        started = time.perf_counter()
        inputs = self._left_padded(requests)
        configured = self.hf_model.generation_config.eos_token_id
        eos = {self.tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None}
        first: list[float] = []
        finished_at: dict[int, float] = {}

        class _Clock(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                now = time.perf_counter() - started
                if not first:
                    first.append(now)
                for row, token in enumerate(input_ids[:, -1].tolist()):
                    if row not in finished_at and token in eos:
                        finished_at[row] = now
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        options = self._generate_options(params, requests[0].seed)
        options["stopping_criteria"] = StoppingCriteriaList([_Clock()])
        try:
            with torch.no_grad():
                out = self.hf_model.generate(**inputs, **options)
        except Exception as exc:
            return [BatchAnswer(error=f"batched generate failed: {type(exc).__name__}: {exc}") for _ in requests]
        end = time.perf_counter() - started
        answers = []
        for row in range(len(requests)):
            answer = self._row_answer(out, row, inputs, params, eos)
            answer.ttft_s, answer.total_s = first[0] if first else None, finished_at.get(row, end)
            answers.append(answer)
        return answers

    def _left_padded(self, requests: list[BatchRequest]):
        """The requests' chat prompts as one left-padded tensor batch: generation continues from the right edge
        of every row."""
        tokenizer = self.tokenizer
        texts = [tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False)
                 for r in requests]
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tokenizer.padding_side = side

    def _generate_options(self, params: GenerationParams, seed: int | None) -> dict:
        """``generate``'s settings for ``params``; sampling is seeded by the group's first request."""
        import torch

        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        sample = params.temperature > 0
        options = {"max_new_tokens": params.max_new_tokens, "do_sample": sample, "pad_token_id": pad}
        if params.top_logprobs is not None:  # the raw logits of every step (before any sampling settings)
            options.update(output_logits=True, return_dict_in_generate=True)
        if sample:
            options.update(temperature=params.temperature, top_p=params.top_p)
            if params.top_k:
                options["top_k"] = params.top_k
            torch.manual_seed(seed if seed is not None else 0)
        if params.repeat_penalty:
            options["repetition_penalty"] = params.repeat_penalty
        return options

    def _row_answer(self, out, row: int, inputs, params: GenerationParams, eos: set[int]) -> BatchAnswer:
        """One row of a batched ``generate``: its text up to the end-of-turn token, its usage and (asked for)
        the log-probabilities of every step up to and including that token."""
        sequences = out.sequences if params.top_logprobs is not None else out
        tokens = sequences[row, int(inputs["input_ids"].shape[1]):].tolist()
        stop = next((k for k, t in enumerate(tokens) if t in eos), None)
        kept = tokens if stop is None else tokens[:stop]
        logprobs = None
        if params.top_logprobs is not None:
            logprobs = []
            for step, token in enumerate(tokens[:len(kept) + (stop is not None)]):
                _, top, all_logprobs = top_logprobs(out.logits[step][row].float().numpy(), params.top_logprobs,
                                                    self.token_text)
                logprobs.append(TokenLogprob(self.token_text(token), float(all_logprobs[token]), top))
        return BatchAnswer(text=self.tokenizer.decode(kept, skip_special_tokens=True),
                           usage=Usage(int(inputs["attention_mask"][row].sum()), len(kept),
                                       "stop" if stop is not None else "length"), logprobs=logprobs)

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)

    def score_tokens(self, ids: list[int], top: int, gather: list[list[int]] | None, tail: int = 0) -> dict:
        """Teacher forcing over ``ids``: ``model(ids).logits`` in chunks that continue one KV cache."""
        import numpy as np
        import torch
        from transformers import DynamicCache

        from arena.serving.scoring import score_sequence

        tensor = torch.tensor([ids])
        cache = DynamicCache()

        def forward(start: int, stop: int) -> np.ndarray:
            with torch.inference_mode():
                out = self.hf_model(input_ids=tensor[:, start:stop], past_key_values=cache, use_cache=True)
            return out.logits[0].float().numpy()

        return score_sequence(ids, top, gather, SCORE_CHUNK, forward, tail)
