"""What a round is made of, as the arena keeps and stores it: frozen types, and the checks that read them (does
an answer name its model, for blind battles and imported ones alike).

A ``RoundRecord`` is replaced, never changed in place, so a snapshot handed to a database thread
can't change under it. Dicts appear only at the edges: ``to_json``/``from_json`` for the database's
JSON columns and for battle files (exports.py), and the API's views (rounds.RoundView.as_dict).
``from_json`` reads rows of every earlier version (missing keys take their defaults).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from arena.core.config import ModelConfig
from arena.core.generation import GenerationParams, Notice
from arena.core.outcomes import Winner
from arena.core.refusals import ArenaError, checked_text

DEFAULTS = GenerationParams()  # the one source of the sampling defaults (page, API, worker)
MAX_SYSTEM_PROMPT_CHARS = 4000
MAX_ERROR_CHARS = 2000  # the longest error kept with an answer (what an import accepts, battle_schema.py)


def _known(cls, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class Settings:
    """Generation settings applied to both models and stored with the round and each turn."""

    temperature: float = DEFAULTS.temperature
    top_p: float = DEFAULTS.top_p
    max_new_tokens: int = DEFAULTS.max_new_tokens
    system_prompt: str = ""

    def checked(self) -> "Settings":
        if not 0 <= self.temperature <= 2:
            raise ArenaError("bad_temperature", value=self.temperature)
        if not 0 < self.top_p <= 1:
            raise ArenaError("bad_top_p", value=self.top_p)
        if not 1 <= int(self.max_new_tokens) <= 8192:
            raise ArenaError("bad_max_tokens", value=self.max_new_tokens)
        system = checked_text(self.system_prompt or "", "what_system")
        if len(system) > MAX_SYSTEM_PROMPT_CHARS:
            raise ArenaError("system_too_long", length=len(system), limit=MAX_SYSTEM_PROMPT_CHARS)
        return Settings(float(self.temperature), float(self.top_p), int(self.max_new_tokens), system)

    def params(self, model: ModelConfig) -> GenerationParams:
        """The round's settings on top of the model's own defaults from models.yaml."""
        defaults = {k: v for k, v in model.generation.items() if k in GenerationParams.__dataclass_fields__}
        return GenerationParams(**{**defaults, "temperature": self.temperature, "top_p": self.top_p,
                                   "max_new_tokens": self.max_new_tokens})

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> "Settings":
        values = {k: v for k, v in _known(cls, data or {}).items() if v is not None}
        return cls(**values)


@dataclass(frozen=True)
class SideAnswer:
    """One model's finished answer in one turn, with its stopwatch figures.

    ``ttft_s`` and ``total_s`` count from the moment the engine started on the request; the time the
    request waited before that (a worker busy with another session or a batch group, a restarting
    worker) is ``queue_s``, kept apart so the speed figures are the engine's own."""

    text: str = ""
    error: str | None = None
    stopped: bool = False
    notice: Notice | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    output_tokens: int = 0
    tokens_per_s: float | None = None
    prompt_tokens: int = 0
    queue_s: float | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["notice"] = asdict(self.notice) if self.notice else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> "SideAnswer":
        values = _known(cls, data)
        notice = values.get("notice")
        if isinstance(notice, dict):
            values["notice"] = Notice(**_known(Notice, notice))
        return cls(**values)


@dataclass(frozen=True)
class Attempt:
    """Both answers to a turn's question that Regenerate replaced, with the seed they were sampled with."""

    a: SideAnswer
    b: SideAnswer
    seed: int | None = None
    tstamp: float | None = None

    def to_json(self) -> dict:
        return {"a": self.a.to_json(), "b": self.b.to_json(), "seed": self.seed, "tstamp": self.tstamp}

    @classmethod
    def from_json(cls, data: dict) -> "Attempt":
        return cls(SideAnswer.from_json(data["a"]), SideAnswer.from_json(data["b"]), data.get("seed"),
                   data.get("tstamp"))


@dataclass(frozen=True)
class Turn:
    """One question and both answers to it: the attempt shown (and voted on, if the vote came after this turn),
    and the ones Regenerate replaced before it (``earlier``, oldest first). ``seed``: the seed both models
    sampled the shown answers with (None: each model's own default)."""

    question: str
    a: SideAnswer
    b: SideAnswer
    settings: Settings | None = None
    tstamp: float | None = None
    seed: int | None = None
    earlier: tuple[Attempt, ...] = ()

    @property
    def attempt(self) -> int:
        """Which attempt is shown: 1 for the first answers, 2 after one Regenerate, …"""
        return len(self.earlier) + 1

    def side(self, key: str) -> SideAnswer:
        return self.a if key == "a" else self.b

    def replaced_by(self, new: "Turn") -> "Turn":
        """``new`` as this turn's next attempt: this one joins the earlier ones."""
        return replace(new, earlier=(*self.earlier, Attempt(self.a, self.b, self.seed, self.tstamp)))

    def to_json(self) -> dict:
        return {"question": self.question, "a": self.a.to_json(), "b": self.b.to_json(),
                "settings": self.settings.to_json() if self.settings else None, "tstamp": self.tstamp,
                "seed": self.seed, "attempt": self.attempt, "earlier": [e.to_json() for e in self.earlier]}

    @classmethod
    def from_json(cls, data: dict) -> "Turn":
        settings = data.get("settings")
        return cls(question=data["question"], a=SideAnswer.from_json(data["a"]), b=SideAnswer.from_json(data["b"]),
                   settings=Settings.from_json(settings) if settings else None, tstamp=data.get("tstamp"),
                   seed=data.get("seed"), earlier=tuple(Attempt.from_json(e) for e in data.get("earlier") or ()))


@dataclass(frozen=True)
class ModelInfo:
    """What the reveal, the CSV and the report say about a side's model, as it was when the round started."""

    name: str
    engine: str | None = None
    quantization: str | None = None
    rss_mb: float | None = None  # the worker's resident memory when the round started

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None, model_id: str) -> "ModelInfo":
        values = _known(cls, data or {})
        values.setdefault("name", model_id)
        return cls(**values)


def decode_speeds(turns: tuple[Turn, ...], side: str) -> float | None:
    """A side's decode tokens/s over the round: tokens after each turn's first, over the time after each
    turn's first token, summed over the turns that produced at least two tokens. A turn stopped during
    prefill adds neither tokens nor time, so it can't drag a 25 tok/s model down to 4."""
    tokens, seconds = 0, 0.0
    for turn in turns:
        answer = turn.side(side)
        if answer.output_tokens < 2 or answer.ttft_s is None or answer.total_s is None:
            continue
        decode = answer.total_s - answer.ttft_s
        if decode > 0:
            tokens += answer.output_tokens - 1
            seconds += decode
    return round(tokens / seconds, 3) if seconds > 0 else None


@dataclass(frozen=True)
class RoundRecord:
    """A round as stored: who fought, with which settings, every turn, any error, and the vote."""

    id: str
    tstamp: float
    session: str
    mode: str
    model_a: str
    model_b: str
    model_a_info: ModelInfo = field(default_factory=lambda: ModelInfo(""))
    model_b_info: ModelInfo = field(default_factory=lambda: ModelInfo(""))
    settings: Settings = Settings()
    preset_id: str | None = None
    turns: tuple[Turn, ...] = ()
    error: str | None = None
    ttft_a: float | None = None
    ttft_b: float | None = None
    tps_a: float | None = None
    tps_b: float | None = None
    winner: Winner | None = None
    vote_tstamp: float | None = None
    rated: bool = False
    flag: str | None = None
    origin: str = "local"
    hold: bool = False  # blind: show both answers only once both are finished (kept across restarts)
    category: str | None = None  # the preset's category or topics.TYPED (leaderboards per category)
    language: str | None = None  # 'zh', 'en' (language.language_of), or what an imported file said

    def info(self, side: str) -> ModelInfo:
        return self.model_a_info if side == "a" else self.model_b_info

    def model(self, side: str) -> str:
        return self.model_a if side == "a" else self.model_b

    def with_turn(self, turn: Turn) -> "RoundRecord":
        """The record with one more turn, its first error and the speed columns updated."""
        return self._with_turns((*self.turns, turn))

    def with_attempt(self, turn: Turn) -> "RoundRecord":
        """The record with its last turn answered again (Regenerate): the answers it replaces are kept in the
        turn's earlier attempts, and the error and speed columns follow the answers shown."""
        return self._with_turns((*self.turns[:-1], self.turns[-1].replaced_by(turn)))

    def _with_turns(self, turns: tuple[Turn, ...]) -> "RoundRecord":
        error = next((f"Model {key.upper()}: {turn.side(key).error}" for turn in turns for key in "ab"
                      if turn.side(key).error), None)
        first = turns[0]
        return replace(self, turns=turns, error=error, ttft_a=first.a.ttft_s, ttft_b=first.b.ttft_s,
                       tps_a=decode_speeds(turns, "a"), tps_b=decode_speeds(turns, "b"))

    def conversation(self, side: str, upto: int | None = None) -> list[dict]:
        """FastChat-style message list for side 'a' or 'b' (system prompt first, if any), of the first ``upto``
        turns (all by default)."""
        messages = []
        if system := self.settings.system_prompt:
            messages.append({"role": "system", "content": system})
        for turn in self.turns[:upto]:
            messages.append({"role": "user", "content": turn.question})
            messages.append({"role": "assistant", "content": turn.side(side).text})
        return messages


def identity_words(model: ModelConfig) -> tuple[str, ...]:
    """Words that give a model away; by default the leading letters of its name ('Qwen2.5' -> 'qwen')."""
    if model.identity_words:
        return tuple(w.lower() for w in model.identity_words)
    match = re.match(r"[A-Za-z]+", model.name)
    return (match.group(0).lower(),) if match and len(match.group(0)) >= 3 else ()


def self_identification(record: RoundRecord, models: tuple[ModelConfig, ModelConfig]) -> str | None:
    """Why a blind battle must not be rated, if an answer names either model (FastChat does the same)."""
    for side in "ab":
        text = " ".join(turn.side(side).text for turn in record.turns).lower()
        for model in models:
            for word in identity_words(model):
                if word and word in text:
                    return f"Model {side.upper()}'s answer contains {word!r}, which identifies {model.name}"
    return None


def fallback_model(model_id: str, info: ModelInfo) -> ModelConfig:
    """A model that has left the catalog, described by what the round stored (for the identity check)."""
    return ModelConfig(model_id, info.name, info.engine or "openai", None, info.quantization or "", "")
