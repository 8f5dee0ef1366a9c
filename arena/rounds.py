"""The arena's rules: start a round, ask both models, vote, reveal.

Named and blind battles are the same ``Round``; only ``Round.revealed`` differs:
a named round is revealed from the start, a blind one once its vote is stored.
Every view handed to the UI or the API goes through ``Arena.view``, so hidden
identities cannot leak through a second code path.
"""
from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import partial
from typing import AsyncIterator

from . import client
from .battle import Answer, run_turn
from .config import ModelConfig, Prompt
from .engines import GenerationParams, Usage
from .store import RoundRecord, Store
from .supervisor import ModelUnavailable, Supervisor

VOTE_CHOICES = {  # button label -> FastChat winner value
    "A better": "model_a", "B better": "model_b", "Tie": "tie", "Both bad": "tie (bothbad)"}
MODES = ("named", "blind")


class ArenaError(ValueError):
    """A request the arena refuses; the message tells the user what to do instead."""


@dataclass(frozen=True)
class Limits:
    max_question_chars: int = 8000
    votes_per_minute: int = 30
    questions_per_minute: int = 30
    restart_wait_s: float = 120.0  # how long a round waits for a crashed worker to come back


@dataclass(frozen=True)
class Settings:
    """Generation settings applied to both models and stored with the round."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 512
    system_prompt: str = ""

    def checked(self) -> "Settings":
        if not 0 <= self.temperature <= 2:
            raise ArenaError(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ArenaError(f"top_p must be above 0 and at most 1, got {self.top_p}")
        if not 1 <= int(self.max_new_tokens) <= 8192:
            raise ArenaError(f"max_new_tokens must be between 1 and 8192, got {self.max_new_tokens}")
        return Settings(float(self.temperature), float(self.top_p), int(self.max_new_tokens), self.system_prompt or "")

    def params(self, model: ModelConfig) -> GenerationParams:
        """The round's settings on top of the model's own defaults from models.yaml."""
        defaults = {k: v for k, v in model.generation.items() if k in GenerationParams.__dataclass_fields__}
        return GenerationParams(**{**defaults, "temperature": self.temperature, "top_p": self.top_p,
                                   "max_new_tokens": self.max_new_tokens})


@dataclass
class Round:
    record: RoundRecord
    live: tuple[Answer, Answer] | None = None  # answers of the turn being streamed
    pending_question: str | None = None
    stop: asyncio.Event | None = None  # set by Arena.stop to end the streaming turn

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def revealed(self) -> bool:
        return self.record.mode == "named" or self.record.winner is not None


def identity_words(model: ModelConfig) -> tuple[str, ...]:
    """Words that give a model away; by default the leading letters of its name ('Qwen2.5' -> 'qwen')."""
    if model.identity_words:
        return tuple(w.lower() for w in model.identity_words)
    match = re.match(r"[A-Za-z]+", model.name)
    return (match.group(0).lower(),) if match and len(match.group(0)) >= 3 else ()


def self_identification(record: RoundRecord, models: tuple[ModelConfig, ModelConfig]) -> str | None:
    """Why a blind battle must not be rated, if an answer names either model (FastChat does the same)."""
    for side, key in (("A", "a"), ("B", "b")):
        text = " ".join(t[key]["text"] for t in record.turns).lower()
        for model in models:
            for word in identity_words(model):
                if word and word in text:
                    return f"Model {side}'s answer contains {word!r}, which identifies {model.name}"
    return None


class _RateLimiter:
    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._events: dict[str, deque] = defaultdict(deque)

    def check(self, session: str, what: str) -> None:
        now, events = time.monotonic(), self._events[session]
        while events and now - events[0] > 60:
            events.popleft()
        if len(events) >= self.per_minute:
            raise ArenaError(f"Too many {what} from this session ({self.per_minute} per minute). "
                             f"Wait {60 - (now - events[0]):.0f} s and try again.")
        events.append(now)


@dataclass
class Arena:
    supervisor: Supervisor
    store: Store
    prompts: list[Prompt]
    limits: Limits = field(default_factory=Limits)
    schedule: str = "concurrent"
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rounds: dict[str, Round] = {}
        self._vote_limiter = _RateLimiter(self.limits.votes_per_minute)
        self._ask_limiter = _RateLimiter(self.limits.questions_per_minute)
        self._prompts = {p.id: p for p in self.prompts}

    # -- rounds -----------------------------------------------------------------------
    def _pick_models(self, mode: str, model_a: str | None, model_b: str | None) -> tuple[str, str]:
        if mode == "blind":
            ready = self.supervisor.ready_ids()
            if len(ready) < 2:
                raise ArenaError(f"A blind battle needs two ready models; ready now: {', '.join(ready) or 'none'}. "
                                 f"Wait for the models to load (see Model status).")
            pair = self.rng.sample(ready, 2)
            return pair[0], pair[1]
        if not model_a or not model_b:
            raise ArenaError("Pick a model for both A and B.")
        if model_a == model_b:
            raise ArenaError(f"Model A and Model B are both {model_a!r}; pick two different models.")
        for model_id in (model_a, model_b):
            try:
                self.supervisor.model(model_id)
            except ModelUnavailable as exc:
                raise ArenaError(str(exc)) from None
        return model_a, model_b

    def new_round(self, session: str, mode: str, model_a: str | None = None, model_b: str | None = None,
                  settings: Settings = Settings(), preset_id: str | None = None) -> Round:
        if mode not in MODES:
            raise ArenaError(f"mode must be one of {MODES}, got {mode!r}")
        a, b = self._pick_models(mode, model_a, model_b)
        info = lambda m: {"name": m.name, "engine": m.engine, "quantization": m.quantization}  # noqa: E731
        record = RoundRecord(
            id=uuid.uuid4().hex, tstamp=time.time(), session=session, mode=mode, model_a=a, model_b=b,
            model_a_info=info(self.supervisor.model(a)), model_b_info=info(self.supervisor.model(b)),
            settings=settings.checked().__dict__, preset_id=preset_id if preset_id in self._prompts else None)
        round_ = Round(record)
        self._rounds[record.id] = round_
        return round_

    def _round_for(self, session: str, round_id: str | None) -> Round | None:
        if not round_id:
            return None
        round_ = self._rounds.get(round_id)
        if round_ is None or round_.record.session != session:
            raise ArenaError(f"Round {round_id} is not open in this session; press 'New round'.")
        return round_

    def validate_question(self, question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise ArenaError("The question is empty. Type a question or pick a preset first.")
        if len(question) > self.limits.max_question_chars:
            raise ArenaError(f"The question is {len(question):,} characters; the limit is "
                             f"{self.limits.max_question_chars:,} (change it with --max-question-chars).")
        return question.strip()

    async def ask(self, session: str, question: str, *, round_id: str | None = None, mode: str = "named",
                  model_a: str | None = None, model_b: str | None = None, settings: Settings = Settings(),
                  preset_id: str | None = None) -> AsyncIterator[dict]:
        """Send ``question`` to both models of the round and yield a view after every streamed piece.

        Continuing an open, unvoted round keeps each pane's conversation (multi-turn);
        otherwise a new round starts. The turn is stored even if the stream is stopped.
        """
        question = self.validate_question(question)
        settings = settings.checked()
        round_ = self._round_for(session, round_id)
        self._ask_limiter.check(session, "questions")
        if round_ is None or round_.record.winner is not None:
            preset = self._prompts.get(preset_id or "")
            preset_id = preset_id if preset and preset.question == question else None
            round_ = self.new_round(session, mode, model_a, model_b, settings, preset_id)
        record = round_.record
        models = (self.supervisor.model(record.model_a), self.supervisor.model(record.model_b))
        history = (record.conversation("a"), record.conversation("b"))
        if settings.system_prompt and not record.turns:
            record.settings = settings.__dict__
        streams = tuple(partial(self._stream, model, history[i] + [{"role": "user", "content": question}],
                                settings.params(model)) for i, model in enumerate(models))
        round_.pending_question = question
        round_.stop = asyncio.Event()
        answers = (Answer(), Answer())
        try:
            async for answers in run_turn(streams, self.schedule, stop=round_.stop):
                round_.live = answers
                yield self.view(round_)
        finally:
            self._finish_turn(round_, question, settings, answers)
        yield self.view(round_)

    def stop(self, session: str, round_id: str | None) -> bool:
        """End the round's streaming answers where they are (call from the event loop).

        Returns whether anything was streaming. The ask() generator then stores the
        partial turn and yields its final view as usual.
        """
        round_ = self._rounds.get(round_id or "")
        if round_ is None or round_.record.session != session:
            return False
        if round_.live is None or round_.stop is None:
            return False
        round_.stop.set()
        return True

    async def _stream(self, model: ModelConfig, messages: list[dict], params: GenerationParams
                      ) -> AsyncIterator[str | Usage]:
        try:
            # May wait for a restarting worker: off the event loop, so other sessions keep streaming.
            base_url = await asyncio.to_thread(self.supervisor.endpoint, model.id, self.limits.restart_wait_s)
        except ModelUnavailable as exc:
            raise client.EndpointError(str(exc)) from None
        endpoint = model.endpoint
        async for item in client.stream_chat(
                base_url, endpoint.model if endpoint else model.id, messages, params,
                api_key=self.supervisor.api_key(model.id), read_timeout=endpoint.timeout_s if endpoint else 300.0):
            yield item

    def _finish_turn(self, round_: Round, question: str, settings: Settings, answers: tuple[Answer, Answer]) -> None:
        record = round_.record
        turn = {"question": question, "settings": settings.__dict__, "tstamp": time.time()}
        for key, answer in zip("ab", answers):
            stopped = answer.error == "stopped by user"
            turn[key] = {"text": answer.text, "error": None if stopped else answer.error,
                         "stopped": stopped or not answer.done, **answer.metrics()}
        record.turns.append(turn)
        for key in "ab":
            if record.error is None and turn[key]["error"]:
                record.error = f"Model {key.upper()}: {turn[key]['error']}"
            first = record.turns[0][key]
            setattr(record, f"ttft_{key}", first["ttft_s"])
            tokens = sum(t[key]["output_tokens"] for t in record.turns)
            decode = sum((t[key]["total_s"] or 0) - (t[key]["ttft_s"] or 0) for t in record.turns)
            setattr(record, f"tps_{key}", round((tokens - len(record.turns)) / decode, 3)
                    if decode > 0 and tokens > len(record.turns) else None)
        round_.live, round_.pending_question = None, None
        self.store.save_round(record)

    # -- votes ------------------------------------------------------------------------
    def vote(self, session: str, round_id: str, choice: str) -> dict:
        """Store the one vote of a round and return the revealed view."""
        winner = VOTE_CHOICES.get(choice, choice)
        if winner not in VOTE_CHOICES.values():
            raise ArenaError(f"Unknown vote {choice!r}; use one of: {', '.join(VOTE_CHOICES)}.")
        record = self.store.get_round(round_id) if round_id else None
        if record is None:
            raise ArenaError("There is no such round to vote on. Ask a question first.")
        if record.session != session:
            raise ArenaError("This round belongs to another session; you can only vote on your own rounds.")
        if record.winner is not None:
            raise ArenaError("This round already has a vote; each round gets exactly one. Press 'New round'.")
        if not record.turns:
            raise ArenaError("This round has no answers yet; wait for them before voting.")
        if record.error:
            raise ArenaError(f"Votes are not taken on rounds where an answer failed ({record.error}). "
                             f"The round is stored with its error; press 'New round' to try again.")
        self._vote_limiter.check(session, "votes")
        models = (self.supervisor.model(record.model_a), self.supervisor.model(record.model_b))
        flag = self_identification(record, models) if record.mode == "blind" else None
        rated = record.mode == "blind" and flag is None
        if not self.store.record_vote(round_id, winner, time.time(), rated, flag):
            raise ArenaError("This round already has a vote; each round gets exactly one. Press 'New round'.")
        stored = self.store.get_round(round_id)
        round_ = self._rounds.setdefault(round_id, Round(stored))
        round_.record = stored
        return self.view(round_)

    # -- views ------------------------------------------------------------------------
    def view(self, round_: Round) -> dict:
        """What the browser or an API client may see of a round; hides identities until revealed."""
        record = round_.record
        revealed = round_.revealed
        turns = [dict(t) for t in record.turns]
        if round_.live is not None:
            live = {"question": round_.pending_question}
            for key, answer in zip("ab", round_.live):
                live[key] = {"text": answer.text, "error": answer.error, "stopped": False, **answer.metrics()}
            turns.append(live)
        sides = {}
        for key in "ab":
            info = getattr(record, f"model_{key}_info")
            side = {"label": info.get("name", getattr(record, f"model_{key}")) if revealed else f"Model {key.upper()}",
                    "turns": [{"question": t["question"], **{k: t[key][k] for k in
                               ("text", "error", "stopped", "ttft_s", "total_s", "output_tokens", "tokens_per_s")}}
                              for t in turns]}
            if revealed:
                side.update(model=getattr(record, f"model_{key}"), engine=info.get("engine"),
                            quantization=info.get("quantization"))
            sides[key] = side
        prompt = self._prompts.get(record.preset_id or "")
        voted = record.winner is not None
        return {
            "round_id": record.id, "mode": record.mode, "revealed": revealed, "streaming": round_.live is not None,
            "a": sides["a"], "b": sides["b"], "error": record.error,
            "vote": next((k for k, v in VOTE_CHOICES.items() if v == record.winner), None),
            "rated": bool(record.rated) if voted else None, "flag": record.flag if voted else None,
            "reference": prompt.reference if (voted and prompt) else None,
        }
