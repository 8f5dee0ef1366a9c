"""Fit a conversation into a model's context window before the engine ever sees it.

A conversation longer than ``context_length`` must never fail inside an engine (llama.cpp
raises, transformers silently truncates or runs out of memory). The oldest turns are left
out first, with a notice; if the latest question alone leaves too little room, the answer's
budget shrinks; if even that is not enough, the request is refused with the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MIN_ANSWER_TOKENS = 64


class ContextOverflow(ValueError):
    """The latest question (with the system prompt) does not fit; the message says by how much."""

    def __init__(self, prompt_tokens: int, context_length: int, max_new_tokens: int):
        self.prompt_tokens, self.context_length = prompt_tokens, context_length
        super().__init__(
            f"The question needs {prompt_tokens:,} tokens, and this model's context holds {context_length:,} "
            f"tokens in all, question and answer (at least {min(MIN_ANSWER_TOKENS, max_new_tokens)} for the "
            f"answer). Shorten the question, or ask a model with a longer context.")


@dataclass(frozen=True)
class Fitted:
    messages: list[dict]
    max_new_tokens: int
    dropped_turns: int = 0  # earlier question+answer pairs left out


def fit_context(messages: list[dict], count: Callable[[list[dict]], int], context_length: int,
                max_new_tokens: int) -> Fitted:
    """``messages`` trimmed so that prompt (as counted by ``count``) + answer fit ``context_length``."""
    system = [messages[0]] if messages and messages[0]["role"] == "system" else []
    body = messages[len(system):]
    dropped = 0
    while len(body) > 1 and count(system + body) + max_new_tokens > context_length:
        body = body[2:] if len(body) > 2 else body[-1:]  # oldest user + assistant pair
        dropped += 1
    prompt = count(system + body)
    if prompt + max_new_tokens > context_length:
        room = context_length - prompt
        if room < min(MIN_ANSWER_TOKENS, max_new_tokens):
            raise ContextOverflow(prompt, context_length, max_new_tokens)
        max_new_tokens = room
    return Fitted(system + body, max_new_tokens, dropped)


def approximate_count(tokenize: Callable[[str], int], per_message: int = 8) -> Callable[[list[dict]], int]:
    """A counter from a plain tokenizer: each message's tokens plus its chat-template markers
    (ChatML spends about 5 per message; 8 leaves a margin), plus the assistant's opening."""
    return lambda messages: sum(tokenize(m["content"]) + per_message for m in messages) + per_message
