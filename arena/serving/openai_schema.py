"""What a remote OpenAI-compatible server may send us, as pydantic schemas.

A model server's JSON is untrusted input like an upload: a field of the wrong type must become
an ``EndpointError`` that names the server, never an ``AttributeError`` in a pane or a wrong figure
in the store. Unknown fields are ignored (servers add their own); the fields we read are checked.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

MAX_TEXT = 1_000_000  # characters of one answer or one streamed piece


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Delta(_Lenient):
    content: str | None = Field(default=None, max_length=MAX_TEXT)


class TopLogprob(_Lenient):
    token: str = Field(max_length=1000)
    logprob: float = Field(le=0.0)


class LogprobEntry(_Lenient):
    """One generated token with its log-probability and the most likely alternatives (OpenAI's shape)."""

    token: str = Field(max_length=1000)
    logprob: float = Field(le=0.0)
    top_logprobs: list[TopLogprob] = Field(default_factory=list, max_length=100)


class ChoiceLogprobs(_Lenient):
    content: list[LogprobEntry] | None = Field(default=None, max_length=100_000)


class Choice(_Lenient):
    delta: Delta | None = None
    finish_reason: str | None = Field(default=None, max_length=64)
    logprobs: ChoiceLogprobs | None = None


class Message(_Lenient):
    content: str | None = Field(default=None, max_length=MAX_TEXT)


class CompletionChoice(_Lenient):
    message: Message
    finish_reason: str | None = Field(default=None, max_length=64)
    logprobs: ChoiceLogprobs | None = None


class TokenUsage(_Lenient):
    prompt_tokens: NonNegativeInt | None = None  # some servers send null: counted as unknown (0)
    completion_tokens: NonNegativeInt | None = None


class ErrorBody(_Lenient):
    message: str = Field(default="", max_length=2000)


class ArenaNotice(_Lenient):
    """Our workers' extension: how the conversation was fitted to the context."""

    dropped_turns: NonNegativeInt = 0
    max_new_tokens: NonNegativeInt | None = None


class ArenaStarted(_Lenient):
    """Our workers' extension: the engine started on the request after waiting ``queue_s`` for it."""

    queue_s: NonNegativeFloat | None = None


class StreamEvent(_Lenient):
    """One ``data:`` line of a streamed chat completion."""

    choices: list[Choice] | None = None
    usage: TokenUsage | None = None
    error: ErrorBody | str | None = None
    arena_notice: ArenaNotice | None = None
    arena_started: ArenaStarted | None = None


class Completion(_Lenient):
    """A whole (non-streamed) chat completion."""

    choices: list[CompletionChoice] = Field(min_length=1)
    usage: TokenUsage | None = None


class BatchResult(_Lenient):
    """One answer of our workers' ``POST /v1/arena/batch``."""

    text: str | None = Field(default="", max_length=MAX_TEXT)
    error: str | None = Field(default=None, max_length=5000)
    ttft_s: NonNegativeFloat | None = None
    total_s: NonNegativeFloat | None = None
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    finish_reason: str | None = Field(default="stop", max_length=64)
    logprobs: list[LogprobEntry] | None = None


class BatchResponse(_Lenient):
    batched: bool = False
    results: list[BatchResult]
