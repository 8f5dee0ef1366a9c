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
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from functools import partial
from typing import AsyncIterator

from . import client, memory, textcheck
from .battle import Answer, run_turn
from .config import ModelConfig, Prompt
from .engines import GenerationParams, Usage
from .store import RoundRecord, Store
from .supervisor import ModelUnavailable, Supervisor
from .texts import t

VOTE_CHOICES = {  # button label -> FastChat winner value
    "A better": "model_a", "B better": "model_b", "Tie": "tie", "Both bad": "tie (bothbad)"}
MODES = ("named", "blind")
DEFAULTS = GenerationParams()  # the one source of the sampling defaults (page, API, worker)
MAX_SYSTEM_PROMPT_CHARS = 4000
TIMING_KEYS = ("ttft_s", "total_s", "output_tokens", "tokens_per_s")


class ArenaError(ValueError):
    """A request the arena refuses. ``key`` names the text in arena/texts.py, so the page can show
    it in the reader's language; ``str()`` is the English text the API and CLI show."""

    def __init__(self, key: str, **values):
        self.key, self.values = key, values
        super().__init__(self.message("en"))

    def message(self, lang: str) -> str:
        values = {k: (t(v, lang) if k in ("what", "who") else v) for k, v in self.values.items()}
        if "problem" in values:
            values["problem"] = textcheck.describe(*self.values["problem"], lang=lang)
        return t(self.key, lang, **values)


def checked_text(text: str, what: str) -> str:
    """``text`` if the arena can store and send it; otherwise a refusal naming the character."""
    try:
        textcheck.check(text)
    except textcheck.TextProblem as exc:
        raise ArenaError("bad_text", what=what, problem=(exc.kind, exc.code), position=exc.position) from None
    return text


@dataclass(frozen=True)
class Limits:
    max_question_chars: int = 8000
    votes_per_minute: int = 30             # per session
    questions_per_minute: int = 30         # per session
    votes_per_minute_per_address: int = 120      # per client address: a new session does not reset it
    questions_per_minute_per_address: int = 120
    max_turns: int = 20            # questions in one round
    restart_wait_s: float = 120.0  # how long a round waits for a crashed worker to come back
    open_rounds: int = 5000        # unvoted rounds kept in memory; older ones are reloaded from the store


@dataclass(frozen=True)
class Settings:
    """Generation settings applied to both models and stored with the round."""

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


@dataclass
class Round:
    """One battle: open (no answer yet) -> streaming -> answered -> voted.

    A turn is asked only on an open or answered round and a vote only on an answered one;
    ``busy`` is the round's lock, held from the moment a question is accepted until its
    turn is stored, so two tabs (or Enter and Send together) can't interleave turns.
    """

    record: RoundRecord
    live: tuple[Answer, Answer] | None = None  # answers of the turn being streamed
    pending_question: str | None = None
    stop: asyncio.Event | None = None  # set by Arena.stop to end the streaming turn
    hold: bool = False  # blind: show both answers only once both are finished
    busy: bool = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def state(self) -> str:
        if self.record.winner is not None:
            return "voted"
        if self.busy:
            return "streaming"
        return "answered" if self.record.turns else "open"

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
    """At most ``per_minute`` events per key in any 60 s. Keys idle for a minute are swept out,
    so the dict holds only the last minute's clients, not everyone who ever came."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._events: dict[str, deque] = defaultdict(deque)
        self._swept = time.monotonic()

    def check(self, key: str, what: str, who: str = "who_session") -> None:
        now = time.monotonic()
        if now - self._swept > 60:
            self._sweep(now)
        events = self._events[key]
        while events and now - events[0] > 60:
            events.popleft()
        if len(events) >= self.per_minute:
            raise ArenaError("too_many", what=what, who=who, limit=self.per_minute, wait=60 - (now - events[0]))
        events.append(now)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in [k for k, e in self._events.items() if not e or now - e[-1] > 60]:
            del self._events[key]

    def __len__(self) -> int:
        return len(self._events)


@dataclass
class Arena:
    supervisor: Supervisor
    store: Store
    prompts: list[Prompt]
    limits: Limits = field(default_factory=Limits)
    schedule: str = "concurrent"
    rng: random.Random = field(default_factory=random.Random)
    blind_hold: bool = False  # default for "show both blind answers only when both are finished"

    def __post_init__(self) -> None:
        self._rounds: OrderedDict[str, Round] = OrderedDict()  # unvoted rounds, oldest first
        self._vote_limiter = _RateLimiter(self.limits.votes_per_minute)
        self._ask_limiter = _RateLimiter(self.limits.questions_per_minute)
        self._address_vote_limiter = _RateLimiter(self.limits.votes_per_minute_per_address)
        self._address_ask_limiter = _RateLimiter(self.limits.questions_per_minute_per_address)
        self._prompts = {p.id: p for p in self.prompts}

    # -- rounds -----------------------------------------------------------------------
    def _pick_models(self, mode: str, model_a: str | None, model_b: str | None) -> tuple[str, str]:
        if mode == "blind":
            ready = self.supervisor.ready_ids()
            if len(ready) < 2:
                raise ArenaError("blind_needs_two", ready=", ".join(ready) or "—")
            pair = self.rng.sample(ready, 2)
            return pair[0], pair[1]
        if not model_a or not model_b:
            raise ArenaError("pick_both")
        if model_a == model_b:
            raise ArenaError("same_model", model=model_a)
        for model_id in (model_a, model_b):
            try:
                self.supervisor.model(model_id)
            except ModelUnavailable as exc:
                raise ArenaError("model_unavailable", detail=str(exc)) from None
        return model_a, model_b

    def _model_info(self, model_id: str) -> dict:
        """What the reveal, the CSV and the report say about a model, including its resident memory now."""
        model = self.supervisor.model(model_id)
        pid = self.supervisor.pid(model_id)
        return {"name": model.name, "engine": model.engine, "quantization": model.quantization,
                "rss_mb": memory.resident_mb(pid) if pid else None}

    def new_round(self, session: str, mode: str, model_a: str | None = None, model_b: str | None = None,
                  settings: Settings = Settings(), preset_id: str | None = None, hold: bool | None = None) -> Round:
        if mode not in MODES:
            raise ArenaError("bad_mode", modes=MODES, mode=mode)
        a, b = self._pick_models(mode, model_a, model_b)
        record = RoundRecord(
            id=uuid.uuid4().hex, tstamp=time.time(), session=session, mode=mode, model_a=a, model_b=b,
            model_a_info=self._model_info(a), model_b_info=self._model_info(b),
            settings=settings.checked().__dict__, preset_id=preset_id if preset_id in self._prompts else None)
        round_ = Round(record, hold=mode == "blind" and (self.blind_hold if hold is None else hold))
        self._remember(round_)
        return round_

    def _remember(self, round_: Round) -> None:
        """Keep unvoted rounds for follow-ups; past the cap the oldest idle one goes (the store keeps it)."""
        self._rounds[round_.id] = round_
        self._rounds.move_to_end(round_.id)
        while len(self._rounds) > self.limits.open_rounds:
            oldest = next((k for k, r in self._rounds.items() if not r.busy), None)
            if oldest is None:
                break
            del self._rounds[oldest]

    def open_rounds(self) -> int:
        return len(self._rounds)

    def _round_for(self, session: str, round_id: str | None) -> Round | None:
        if not round_id:
            return None
        round_ = self._rounds.get(round_id)
        if round_ is None:  # evicted from memory, or the server restarted: the store has it
            record = self.store.get_round(round_id)
            if record is not None and record.session == session and record.winner is None:
                round_ = Round(record)
                self._remember(round_)
        if round_ is None or round_.record.session != session:
            raise ArenaError("round_not_open", round_id=round_id)
        return round_

    def validate_question(self, question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise ArenaError("empty_question")
        if len(question) > self.limits.max_question_chars:
            raise ArenaError("question_too_long", length=len(question), limit=self.limits.max_question_chars)
        return checked_text(question, "what_question").strip()

    def _check_rate(self, session: str, address: str | None) -> None:
        self._ask_limiter.check(session, "what_questions")
        if address:
            self._address_ask_limiter.check(address, "what_questions", "who_address")

    async def ask(self, session: str, question: str, *, round_id: str | None = None, mode: str = "named",
                  model_a: str | None = None, model_b: str | None = None, settings: Settings = Settings(),
                  preset_id: str | None = None, hold: bool | None = None,
                  address: str | None = None) -> AsyncIterator[dict]:
        """Send ``question`` to both models of the round and yield a view after every streamed piece.

        Continuing an answered, unvoted round keeps each pane's conversation (multi-turn);
        otherwise a new round starts. The turn is stored even if the stream is stopped.
        """
        question = self.validate_question(question)
        settings = settings.checked()
        round_ = await asyncio.to_thread(self._round_for, session, round_id)  # may read the store
        if round_ is not None and round_.busy:
            raise ArenaError("still_streaming")
        if round_ is not None and round_.state == "answered" and len(round_.record.turns) >= self.limits.max_turns:
            raise ArenaError("too_many_turns", turns=len(round_.record.turns))
        self._check_rate(session, address)
        if round_ is None or round_.state == "voted":
            preset = self._prompts.get(preset_id or "")
            preset_id = preset_id if preset and preset.question == question else None
            round_ = self.new_round(session, mode, model_a, model_b, settings, preset_id, hold)
        round_.busy = True  # taken before the first await: a second ask on this round is refused above
        try:
            async for view in self._stream_turn(round_, question, settings):
                yield view
        finally:
            round_.busy = False
        yield self.view(round_)

    async def _stream_turn(self, round_: Round, question: str, settings: Settings) -> AsyncIterator[dict]:
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
        round_.live = answers
        try:
            yield self.view(round_)  # the question shows at once, before either model's first token
            async for answers in run_turn(streams, self.schedule, stop=round_.stop):
                round_.live = answers
                yield self.view(round_)
        finally:
            self._finish_turn(round_, question, settings, answers)
            # Off the event loop (other sessions keep streaming), and shielded: a client that goes
            # away mid-write must not lose the turn.
            await asyncio.shield(asyncio.to_thread(self.store.save_round, record))

    def stop(self, session: str, round_id: str | None) -> bool:
        """End the round's streaming answers where they are (call from the event loop).

        Works before the first token too (during prefill, or while waiting for a restarting
        worker). Returns whether anything was streaming; ask() then stores the partial turn
        and yields its final view as usual.
        """
        round_ = self._rounds.get(round_id or "")
        if round_ is None or round_.record.session != session:
            return False
        if not round_.busy or round_.stop is None:
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
            yield textcheck.clean_model_text(item) if isinstance(item, str) else item

    def _finish_turn(self, round_: Round, question: str, settings: Settings, answers: tuple[Answer, Answer]) -> None:
        record = round_.record
        turn = {"question": question, "settings": settings.__dict__, "tstamp": time.time()}
        for key, answer in zip("ab", answers):
            stopped = answer.error == "stopped by user"
            turn[key] = {"text": answer.text, "error": None if stopped else answer.error,
                         "stopped": stopped or not answer.done, "notice": answer.notice, **answer.metrics()}
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

    # -- votes ------------------------------------------------------------------------
    def vote(self, session: str, round_id: str, choice: str, address: str | None = None) -> dict:
        """Store the one vote of a round and return the revealed view. Blocking (SQLite): call it
        from a worker thread, as Gradio does for plain functions."""
        winner = VOTE_CHOICES.get(choice, choice)
        if winner not in VOTE_CHOICES.values():
            raise ArenaError("unknown_vote", choice=choice, choices=", ".join(VOTE_CHOICES))
        live = self._rounds.get(round_id or "")
        if live is not None and live.busy:
            raise ArenaError("vote_while_streaming")
        record = self.store.get_round(round_id) if round_id else None
        if record is None:
            raise ArenaError("no_such_round")
        if record.session != session:
            raise ArenaError("other_session")
        if record.winner is not None:
            raise ArenaError("already_voted")
        if not record.turns:
            raise ArenaError("no_answers")
        if record.error:
            raise ArenaError("failed_round", error=record.error)
        self._vote_limiter.check(session, "what_votes")
        if address:
            self._address_vote_limiter.check(address, "what_votes", "who_address")
        models = (self.supervisor.model(record.model_a), self.supervisor.model(record.model_b))
        flag = self_identification(record, models) if record.mode == "blind" else None
        rated = record.mode == "blind" and flag is None
        if not self.store.record_vote(round_id, winner, time.time(), rated, flag):
            raise ArenaError("already_voted")
        self._rounds.pop(round_id, None)  # voted rounds live in the store only
        return self.view(Round(self.store.get_round(round_id)))

    # -- views ------------------------------------------------------------------------
    def view(self, round_: Round) -> dict:
        """What the browser or an API client may see of a round.

        Until a blind round is revealed it carries no model name, engine, server, error text
        or timing figure (speed alone tells a 135M model from a 0.5B one), and with ``hold``
        no text either until both answers are finished.
        """
        record = round_.record
        revealed = round_.revealed
        turns = [dict(t) for t in record.turns]
        if round_.live is not None:
            live = {"question": round_.pending_question}
            for key, answer in zip("ab", round_.live):
                live[key] = {"text": answer.text, "error": answer.error, "stopped": False, "done": answer.done,
                             "notice": answer.notice, **answer.metrics()}
            turns.append(live)
        held = not revealed and round_.hold and round_.live is not None
        sides = {key: self._side_view(record, key, turns, revealed, held) for key in "ab"}
        prompt = self._prompts.get(record.preset_id or "")
        voted = record.winner is not None
        error = record.error if revealed or not record.error else "failed"
        return {
            "round_id": record.id, "mode": record.mode, "revealed": revealed, "streaming": round_.live is not None,
            "held": held, "a": sides["a"], "b": sides["b"], "error": error,
            "vote": next((k for k, v in VOTE_CHOICES.items() if v == record.winner), None),
            "rated": bool(record.rated) if voted else None, "flag": record.flag if voted else None,
            "reference": prompt.reference if (voted and prompt) else None,
        }

    @staticmethod
    def _side_view(record: RoundRecord, key: str, turns: list[dict], revealed: bool, held: bool) -> dict:
        info = getattr(record, f"model_{key}_info")
        side_turns = []
        for turn in turns:
            answer = turn[key]
            shown = {"question": turn["question"], "text": "" if held else answer["text"],
                     "error": answer["error"], "stopped": answer["stopped"], "done": answer.get("done", True),
                     "notice": answer.get("notice"), **{k: answer.get(k) for k in TIMING_KEYS}}
            if not revealed:  # how much context a model has would hint at which model it is
                shown.update({k: None for k in (*TIMING_KEYS, "notice")})
                shown["error"] = "failed" if answer["error"] else None
            side_turns.append(shown)
        side = {"label": info.get("name", getattr(record, f"model_{key}")) if revealed else f"Model {key.upper()}",
                "turns": side_turns}
        if revealed:
            side.update(model=getattr(record, f"model_{key}"), engine=info.get("engine"),
                        quantization=info.get("quantization"), rss_mb=info.get("rss_mb"))
        return side
