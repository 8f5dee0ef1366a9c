"""The schema of one imported battle line: FastChat's clean-battle format plus our ``arena`` part.

An uploaded file is untrusted, so every field is checked for type and size, nested turns
included, text for characters SQLite and JSON can't hold, and every number for being finite and
every time for lying between 1970 and 2100 (a ``tstamp`` of 1e20 would pass a float check and then
break every later export). A line that breaks a rule is
refused with its line number (see exports.import_battles); unknown extra fields (FastChat
logs carry many) are ignored, never stored.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from arena.core import textcheck
from arena.core.outcomes import Winner

MAX_TEXT = 1_000_000     # characters in one message or answer (8,192 tokens of long tokens fit)
MAX_NAME = 200           # model ids, names, engines (config.MAX_LABEL)
MAX_TURNS = 100          # per battle (the ceiling of --max-turns)
MAX_ATTEMPTS = 20        # earlier answers kept per turn (the arena keeps at most Limits.max_attempts - 1)
MAX_MESSAGES = 2 * MAX_TURNS + 1  # per conversation: every turn's question and answer, and a system prompt
MAX_TSTAMP = 4_102_444_800.0  # 2100-01-01 UTC: later (or infinite) unix times are refused


def Time(**kwargs):  # noqa: N802 - a field type, named like one
    """A unix time: finite, from 1970 to 2100."""
    return Field(None, ge=0, le=MAX_TSTAMP, **kwargs)


def _clean(value):
    if isinstance(value, str):
        textcheck.check(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bad_characters(cls, value):
        return _clean(value)


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_TEXT)


class Notice(_Strict):
    dropped_turns: int = Field(0, ge=0, le=10_000)
    max_new_tokens: int | None = Field(None, ge=0, le=1_000_000)


class Answer(_Strict):
    text: str = Field("", max_length=MAX_TEXT)
    error: str | None = Field(None, max_length=2000)
    stopped: bool = False
    ttft_s: float | None = Field(None, ge=0)
    total_s: float | None = Field(None, ge=0)
    output_tokens: int = Field(0, ge=0)
    tokens_per_s: float | None = Field(None, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    queue_s: float | None = Field(None, ge=0)
    notice: Notice | None = None


class Settings(_Strict):
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, le=1_000_000)
    system_prompt: str = Field("", max_length=MAX_TEXT)


class Attempt(_Strict):
    """Answers a turn had before Regenerate replaced them."""

    a: Answer
    b: Answer
    seed: int | None = Field(None, ge=0, le=2 ** 63)
    tstamp: float | None = Time()


class Turn(_Strict):
    question: str = Field(max_length=MAX_TEXT)
    a: Answer
    b: Answer
    settings: Settings | None = None
    tstamp: float | None = Time()
    seed: int | None = Field(None, ge=0, le=2 ** 63)
    earlier: list[Attempt] = Field(default_factory=list, max_length=MAX_ATTEMPTS)


class ModelInfo(_Strict):
    name: str = Field(max_length=MAX_NAME)
    engine: str | None = Field(None, max_length=MAX_NAME)
    quantization: str | None = Field(None, max_length=1000)
    rss_mb: float | None = Field(None, ge=0)


class ArenaPart(_Strict):
    """What our own export adds. ``rated`` is read but never trusted: import decides it."""

    mode: Literal["named", "blind"] | None = None
    flag: str | None = Field(None, max_length=2000)
    started: float | None = Time()
    hold: bool = False
    settings: Settings | None = None
    model_a_info: ModelInfo | None = None
    model_b_info: ModelInfo | None = None
    turns: list[Turn] = Field(default_factory=list, max_length=MAX_TURNS)
    ttft_a: float | None = Field(None, ge=0)
    ttft_b: float | None = Field(None, ge=0)
    tps_a: float | None = Field(None, ge=0)
    tps_b: float | None = Field(None, ge=0)


class BattleLine(_Strict):
    id: str | None = Field(None, max_length=100, pattern=r"^[\w.:-]+$")
    model_a: str = Field(min_length=1, max_length=MAX_NAME)
    model_b: str = Field(min_length=1, max_length=MAX_NAME)
    winner: Winner
    tstamp: float | None = Time()
    anony: bool = False
    judge: str | None = Field(None, max_length=MAX_NAME)
    turn: int | None = Field(None, ge=0)
    conversation_a: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)
    conversation_b: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)
    question_id: str | None = Field(None, max_length=MAX_NAME)
    language: str | None = Field(None, max_length=50)     # FastChat's "English", "Chinese", …
    category: str | None = Field(None, max_length=MAX_NAME)  # ours: the preset's category or "typed"
    arena: ArenaPart | None = None


def problem_of(exc: Exception) -> str:
    """A one-line reason from a pydantic ValidationError (or anything else)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "line"
        cause = first.get("ctx", {}).get("error")
        message = str(cause) if isinstance(cause, textcheck.TextProblem) else first.get("msg", str(exc))
        return f"{where}: {message}"
    return str(exc)
