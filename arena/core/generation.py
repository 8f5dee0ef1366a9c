"""One generation, as every layer speaks of it: the settings asked for (``GenerationParams``), what the server
said before and after the text (``Started``, ``Notice``, ``Usage``), each token's log-probabilities, and the
tokens/s the arena reports. The client, the rounds, the records and every engine share these.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Notice:
    """Sent before an answer when the worker had to fit the conversation into the context window."""

    dropped_turns: int = 0
    max_new_tokens: int | None = None  # the answer budget, when it had to shrink


@dataclass(frozen=True)
class Started:
    """The engine started on the request: what came before was waiting (for a worker busy with another
    session or a batch group, or a restarting one). Stopwatch figures count from the last one seen."""

    queue_s: float | None = None  # the wait, as the server measured it (our workers tell)


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 512
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    top_logprobs: int | None = None  # return each generated token's log-probability and this many alternatives


MAX_TOP_LOGPROBS = 20  # as OpenAI's API


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with the model's log-probability of it and of its most likely alternatives,
    from the model's own next-token distribution (before any sampling settings), best first."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


def decode_speed(output_tokens: int, ttft_s: float | None, total_s: float | None) -> float | None:
    """Tokens/s as the arena reports it: tokens after the first over the time after the first token,
    so prefill (in the time to first token) does not count twice. None below two tokens."""
    if ttft_s is None or total_s is None or output_tokens < 2:
        return None
    decode = total_s - ttft_s
    return (output_tokens - 1) / decode if decode > 0 else None


def with_seed(params: GenerationParams, seed: int | None) -> GenerationParams:
    return params if seed is None else replace(params, seed=seed)
