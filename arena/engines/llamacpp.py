"""GGUF models through llama-cpp-python."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from . import GenerationParams, Usage
from .context import approximate_count


class _TokenCounter:
    """A no-op logits processor: llama.cpp calls it once per sampled token, which
    gives exact prompt and completion token counts (its stream carries no usage)."""

    def __init__(self) -> None:
        self.calls = 0
        self.prompt_tokens = 0

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.calls == 0:
            self.prompt_tokens = len(input_ids)
        self.calls += 1
        return scores


class LlamaCppEngine:
    def __init__(self, weights: Path, threads: int, context_length: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(weights), n_ctx=context_length, n_threads=threads,
                         n_threads_batch=threads, verbose=False)

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens the chat prompt takes (content tokens plus template markers, slightly over)."""
        tokenize = lambda text: len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))  # noqa: E731
        return approximate_count(tokenize)(messages)

    def stream_chat(self, messages: list[dict], params: GenerationParams) -> Iterator[str | Usage]:
        from llama_cpp import LogitsProcessorList

        counter = _TokenCounter()
        extra = {k: v for k, v in (("top_k", params.top_k), ("min_p", params.min_p),
                                   ("repeat_penalty", params.repeat_penalty), ("seed", params.seed))
                 if v is not None}
        finish = "stop"
        for chunk in self.llm.create_chat_completion(
                messages=messages, stream=True, temperature=params.temperature, top_p=params.top_p,
                max_tokens=params.max_new_tokens, logits_processor=LogitsProcessorList([counter]), **extra):
            choice = chunk["choices"][0]
            if text := choice["delta"].get("content"):
                yield text
            finish = choice.get("finish_reason") or finish
        # The end-of-turn token is sampled (and counted) but not part of the answer.
        completion = counter.calls - (1 if finish == "stop" and counter.calls else 0)
        yield Usage(prompt_tokens=counter.prompt_tokens, completion_tokens=completion, finish_reason=finish)
