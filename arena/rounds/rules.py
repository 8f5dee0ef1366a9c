"""The arena's rules: start a round, ask both models, vote, reveal.

Named and blind battles are the same ``Round``; only the reveal differs: a named round is revealed
from the start, a blind one once its vote is stored. Every view handed to the UI or the API goes
through ``Arena.view``, so hidden identities cannot leak through a second code path.

One owner for every round: all of ``Arena``'s state (the rounds, their states, the rate limits) is
read and changed only on the event loop, and a round changes state only through ``Round``'s
transitions, each checked and taken without an ``await`` between the check and the change. Database
calls run in threads on frozen snapshots (records.RoundRecord), never on state the loop may change.
"""
from __future__ import annotations

import asyncio
import ipaddress
import random
import time
import uuid
from collections import OrderedDict, defaultdict, deque
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from functools import partial
from typing import AsyncIterator

from arena.core.config import ModelConfig, Prompt
from arena.core.generation import GenerationParams, Notice, Started, Usage
from arena.core.outcomes import VOTE_LABELS, Winner, parse_winner
from arena.core.records import DEFAULTS, ModelInfo, RoundRecord, Settings, Turn, fallback_model, self_identification
from arena.core.refusals import ArenaError, checked_text
from arena.core.topics import topic
from arena.rounds.battle import Answer, run_turn
from arena.serving import client, memory
from arena.serving.supervisor import ModelUnavailable, Supervisor
from arena.storage.store import Store

__all__ = ["DEFAULTS", "Arena", "ArenaError", "Limits", "Round", "RoundState", "RoundView", "Settings"]
MODES = ("named", "blind")


@dataclass(frozen=True)
class Limits:
    max_question_chars: int = 8000
    votes_per_minute: int = 30             # per session
    questions_per_minute: int = 30         # per session
    votes_per_minute_per_address: int = 120      # per client address: a new session does not reset it
    questions_per_minute_per_address: int = 120
    leaderboard_views_per_minute_per_address: int = 60
    max_turns: int = 20            # questions in one round
    max_attempts: int = 10         # answers to one question: the first and up to nine Regenerates
    restart_wait_s: float = 120.0  # how long a round waits for a crashed worker to come back
    open_rounds: int = 5000        # unvoted rounds kept in memory; older ones are reloaded from the store


class RoundState(Enum):
    OPEN = "open"            # started, no answer yet
    STREAMING = "streaming"  # a turn is being answered and stored
    ANSWERED = "answered"    # every turn stored; a follow-up or a vote may come
    VOTING = "voting"        # the vote is being written
    VOTED = "voted"          # final: the store holds the vote


TRANSITIONS = {
    RoundState.OPEN: {RoundState.STREAMING},
    RoundState.STREAMING: {RoundState.ANSWERED},
    RoundState.ANSWERED: {RoundState.STREAMING, RoundState.VOTING, RoundState.VOTED},
    RoundState.VOTING: {RoundState.VOTED, RoundState.ANSWERED},  # back to answered if the write failed
    RoundState.VOTED: set(),
}


class Round:
    """One battle and its state machine. Used only on the event loop.

    ``record`` is replaced at each change (it is frozen), so a snapshot given to a database thread
    never changes under it. ``live`` holds the answers of the turn being streamed."""

    def __init__(self, record: RoundRecord, state: RoundState | None = None):
        self.record = record
        self.state = state or (RoundState.VOTED if record.winner else
                               RoundState.ANSWERED if record.turns else RoundState.OPEN)
        self.live: tuple[Answer, Answer] | None = None
        self.pending_question: str | None = None
        self.stop: asyncio.Event | None = None  # set by Arena.stop to end the streaming turn
        self.regenerating = False  # the live turn answers the last stored one again
        self.replacing = False  # Regenerate stopped the live turn and will answer it again
        self.settled = asyncio.Event()  # set whenever no turn is being answered or stored
        self.settled.set()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def revealed(self) -> bool:
        return self.record.mode == "named" or self.state is RoundState.VOTED

    def _move(self, to: RoundState) -> None:
        if to not in TRANSITIONS[self.state]:
            raise RuntimeError(f"round {self.id}: no transition from {self.state.value} to {to.value}")
        self.state = to

    def start_turn(self, question: str, regenerating: bool = False) -> None:
        self._move(RoundState.STREAMING)
        self.pending_question, self.stop = question, asyncio.Event()
        self.live, self.regenerating, self.replacing = (Answer(), Answer()), regenerating, False
        self.settled.clear()

    def finish_turn(self, turn: Turn) -> RoundRecord:
        """The turn joins the record (or, regenerating, becomes the last turn's newest attempt); the round stays
        streaming until the caller has stored it."""
        self.record = self.record.with_attempt(turn) if self.regenerating else self.record.with_turn(turn)
        self.live, self.pending_question, self.regenerating = None, None, False
        return self.record

    def stored(self) -> None:
        self._move(RoundState.ANSWERED)
        self.settled.set()

    def start_vote(self) -> None:
        self._move(RoundState.VOTING)

    def vote_failed(self) -> None:
        self._move(RoundState.ANSWERED)

    def voted(self, record: RoundRecord) -> None:
        self.record = record
        self._move(RoundState.VOTED)


@dataclass(frozen=True)
class TurnView:
    question: str
    text: str
    error: str | None
    stopped: bool
    done: bool
    notice: Notice | None
    ttft_s: float | None
    total_s: float | None
    output_tokens: int | None
    tokens_per_s: float | None
    queue_s: float | None
    attempt: int = 1  # 2 and up: answered again with Regenerate


@dataclass(frozen=True)
class SideView:
    label: str
    turns: tuple[TurnView, ...]
    model: str | None = None        # the rest only once revealed
    engine: str | None = None
    quantization: str | None = None
    rss_mb: float | None = None


@dataclass(frozen=True)
class RoundView:
    """What the browser or an API client may see of a round at one moment."""

    round_id: str
    mode: str
    revealed: bool
    streaming: bool
    held: bool
    a: SideView
    b: SideView
    error: str | None
    vote: str | None          # the vote's label ('A better', …) once voted
    rated: bool | None
    flag: str | None
    reference: str | None

    def side(self, key: str) -> SideView:
        return self.a if key == "a" else self.b

    @property
    def votable(self) -> bool:
        """Votes unlock only on a finished, unvoted round whose answers did not fail."""
        return not self.streaming and not self.vote and not self.error and bool(self.a.turns)

    def as_dict(self) -> dict:
        """The API's JSON form."""
        return asdict(self)


def address_key(address: str) -> str:
    """The rate-limit key of a client address: an IPv6 address counts by its /64 (one subscriber gets a
    whole /64 and could otherwise take a fresh address per request); IPv4 and names count as they are."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


class _RateLimiter:
    """At most ``per_minute`` events per key in any 60 s. Keys idle for a minute are swept out,
    so the dict holds only the last minute's clients, not everyone who ever came. Used only on the
    event loop (Arena's one owner), so a sweep never meets an insert from another thread."""

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


def retired_models(catalog: list[ModelConfig], store: Store) -> set[str]:
    """Model ids of stored battles that are retired (``retired: true``) or no longer in ``catalog``."""
    return {m.id for m in catalog if m.retired} | (store.battle_model_ids() - {m.id for m in catalog})


def mark_retired(names: dict[str, str], retired: set[str], mark: str) -> dict[str, str]:
    """Display names with every retired (or vanished) model's name followed by ``mark``, e.g. "(retired)"."""
    return {**names, **{m: f"{names.get(m, m)} {mark}" for m in retired}}


@dataclass
class Arena:
    supervisor: Supervisor
    store: Store
    prompts: list[Prompt]
    limits: Limits = field(default_factory=Limits)
    schedule: str = "concurrent"
    rng: random.Random = field(default_factory=random.Random)
    blind_hold: bool = False  # default for "show both blind answers only when both are finished"
    catalog: list[ModelConfig] = field(default_factory=list)  # every models.yaml entry, started or not

    def __post_init__(self) -> None:
        self._rounds: OrderedDict[str, Round] = OrderedDict()  # rounds not yet voted, oldest first
        self._vote_limiter = _RateLimiter(self.limits.votes_per_minute)
        self._ask_limiter = _RateLimiter(self.limits.questions_per_minute)
        self._address_vote_limiter = _RateLimiter(self.limits.votes_per_minute_per_address)
        self._address_ask_limiter = _RateLimiter(self.limits.questions_per_minute_per_address)
        self._prompts = {p.id: p for p in self.prompts}

    def model_names(self) -> dict[str, str]:
        """Display names of every catalog model (retired and not started ones too) and every running one."""
        return {**{m.id: m.name for m in self.catalog}, **{s.id: s.name for s in self.supervisor.statuses()}}

    def retired_ids(self) -> set[str]:
        """Models whose battles are shown marked: retired in the catalog, or gone from it (never dropped)."""
        return retired_models(self.catalog, self.store) - {s.id for s in self.supervisor.statuses()}

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

    def _model_info(self, model_id: str) -> ModelInfo:
        """What the reveal, the CSV and the report say about a model, including its resident memory now."""
        model = self.supervisor.model(model_id)
        pid = self.supervisor.pid(model_id)
        return ModelInfo(model.name, model.engine, model.quantization, memory.resident_mb(pid) if pid else None)

    def new_round(self, session: str, mode: str, model_a: str | None = None, model_b: str | None = None,
                  settings: Settings = Settings(), preset_id: str | None = None, hold: bool | None = None,
                  question: str | None = None) -> Round:
        """A new round between two models; ``question`` (its first) gives the round its category and language."""
        if mode not in MODES:
            raise ArenaError("bad_mode", modes=MODES, mode=mode)
        a, b = self._pick_models(mode, model_a, model_b)
        category, language = topic(question, self._prompts.get(preset_id or "")) if question else (None, None)
        record = RoundRecord(
            id=uuid.uuid4().hex, tstamp=time.time(), session=session, mode=mode, model_a=a, model_b=b,
            model_a_info=self._model_info(a), model_b_info=self._model_info(b), settings=settings.checked(),
            preset_id=preset_id if preset_id in self._prompts else None,
            hold=mode == "blind" and (self.blind_hold if hold is None else bool(hold)),
            category=category, language=language)
        round_ = Round(record)
        self._remember(round_)
        return round_

    def _remember(self, round_: Round) -> None:
        """Keep unvoted rounds for follow-ups; past the cap the oldest idle one goes (the store keeps it)."""
        self._rounds[round_.id] = round_
        self._rounds.move_to_end(round_.id)
        while len(self._rounds) > self.limits.open_rounds:
            oldest = next((k for k, r in self._rounds.items() if r.state is RoundState.ANSWERED), None)
            if oldest is None:
                break
            del self._rounds[oldest]

    def open_rounds(self) -> int:
        return len(self._rounds)

    async def _find(self, round_id: str) -> Round | None:
        """The round from memory, else from the store (after a restart, or evicted from memory)."""
        if round_id in self._rounds:
            return self._rounds[round_id]
        record = await asyncio.to_thread(self.store.get_round, round_id)
        if round_id in self._rounds:  # loaded by another request while this one read the store
            return self._rounds[round_id]
        if record is None:
            return None
        round_ = Round(record)
        if round_.state is not RoundState.VOTED:
            self._remember(round_)
        return round_

    def validate_question(self, question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise ArenaError("empty_question")
        if len(question) > self.limits.max_question_chars:
            raise ArenaError("question_too_long", length=len(question), limit=self.limits.max_question_chars)
        return checked_text(question, "what_question").strip()

    def _check_rate(self, limiter: _RateLimiter, by_address: _RateLimiter, session: str, address: str | None,
                    what: str) -> None:
        limiter.check(session, what)
        if address:
            by_address.check(address_key(address), what, "who_address")

    async def ask(self, session: str, question: str, *, round_id: str | None = None, mode: str = "named",
                  model_a: str | None = None, model_b: str | None = None, settings: Settings = Settings(),
                  preset_id: str | None = None, hold: bool | None = None,
                  address: str | None = None) -> AsyncIterator[RoundView]:
        """Send ``question`` to both models of the round and yield a view after every streamed piece.

        A follow-up on an answered round keeps each pane's conversation (multi-turn). Without a round,
        or after its vote, a new round starts with the given mode and models. The turn is stored even
        if the stream is stopped or the client goes away.
        """
        question = self.validate_question(question)
        settings = settings.checked()
        round_ = await self._find(round_id) if round_id else None
        # From here to start_turn nothing awaits: no vote or other question can slip in between.
        if round_ is not None and round_.record.session != session:
            raise ArenaError("round_not_open", round_id=round_id)
        if round_ is not None and round_.state is RoundState.STREAMING:
            raise ArenaError("still_streaming")
        if round_ is not None and round_.state in (RoundState.VOTING, RoundState.VOTED):
            round_ = None  # the next question after a vote starts a new round
        if round_ is not None and len(round_.record.turns) >= self.limits.max_turns:
            raise ArenaError("too_many_turns", turns=len(round_.record.turns))
        self._check_rate(self._ask_limiter, self._address_ask_limiter, session, address, "what_questions")
        followups: tuple[str, ...] = ()
        if round_ is None:
            preset = self._prompts.get(preset_id or "")
            preset_id = preset_id if preset and preset.question == question else None
            followups = preset.followups if preset_id else ()
            round_ = self.new_round(session, mode, model_a, model_b, settings, preset_id, hold, question)
        round_.start_turn(question)
        async for view in self._stream_turn(round_, question, settings):
            yield view
        # A multi-turn preset (MT-Bench) asks its later turns as follow-ups in the same round, each once both
        # answers before it are in; Stop ends the series.
        for followup in followups[:max(0, self.limits.max_turns - len(round_.record.turns))]:
            if round_.stop is not None and round_.stop.is_set() or round_.state is not RoundState.ANSWERED:
                break
            round_.start_turn(followup)
            async for view in self._stream_turn(round_, followup, settings):
                yield view
        if round_.replacing or round_.state is RoundState.STREAMING:
            return  # Regenerate stopped this turn to answer it again: its stream shows the round from here, and a
            # last view from this one could reach the page after it (votes enabled while answering)
        yield self.view(round_)

    async def regenerate(self, session: str, round_id: str | None,
                         address: str | None = None) -> AsyncIterator[RoundView]:
        """Answer the round's last question again, both models, with a new seed and the same settings. Before the
        vote only; a blind round keeps its pair, hidden. Answers still streaming are stopped first. The answers
        replaced are kept with the turn (records.Turn.earlier); a vote applies to the ones shown when it is cast."""
        round_ = await self._find(round_id) if round_id else None
        if round_ is None:
            raise ArenaError("no_such_round")
        if round_.record.session != session:
            raise ArenaError("other_session")
        if round_.state is not RoundState.STREAMING:
            self._can_regenerate(round_)
        self._check_rate(self._ask_limiter, self._address_ask_limiter, session, address, "what_questions")
        if round_.state is RoundState.STREAMING and round_.stop is not None:
            round_.replacing = True  # the stream stopped here shows no last view of its own
            round_.stop.set()  # the answers being written stop; wait until they are stored
            await round_.settled.wait()
        # From here to start_turn nothing awaits: no vote or question can slip in between.
        try:
            self._can_regenerate(round_)
            if round_.state is RoundState.STREAMING:
                raise ArenaError("still_streaming")
        except ArenaError:
            if round_.replacing:  # the stopped stream left the page to this one: show where the round is
                round_.replacing = False
                yield self.view(round_)
            raise
        last = round_.record.turns[-1]
        round_.start_turn(last.question, regenerating=True)
        async for view in self._stream_turn(round_, last.question, last.settings or round_.record.settings,
                                            seed=self.rng.randrange(1, 2 ** 31)):
            yield view
        yield self.view(round_)

    def _can_regenerate(self, round_: Round) -> None:
        """Raise why the round's last question cannot be answered again, if it cannot."""
        if round_.state in (RoundState.VOTING, RoundState.VOTED):
            raise ArenaError("regenerate_voted")
        if not round_.record.turns:
            raise ArenaError("nothing_to_regenerate")
        if (last := round_.record.turns[-1]).attempt >= self.limits.max_attempts:
            raise ArenaError("too_many_attempts", attempts=last.attempt)

    async def _stream_turn(self, round_: Round, question: str, settings: Settings,
                           seed: int | None = None) -> AsyncIterator[RoundView]:
        record = round_.record
        models = (self.supervisor.model(record.model_a), self.supervisor.model(record.model_b))
        if settings.system_prompt and not record.turns:
            round_.record = replace(record, settings=settings)
        earlier = len(record.turns) - 1 if round_.regenerating else None  # a new attempt: the turns before it
        history = (round_.record.conversation("a", earlier), round_.record.conversation("b", earlier))
        params = [settings.params(model) for model in models]
        params = [replace(p, seed=seed) if seed is not None else p for p in params]
        streams = tuple(partial(self._stream, model, history[i] + [{"role": "user", "content": question}],
                                params[i]) for i, model in enumerate(models))
        answers = round_.live
        try:
            yield self.view(round_)  # the question shows at once, before either model's first token
            async for answers in run_turn(streams, self.schedule, stop=round_.stop):
                round_.live = answers
                yield self.view(round_)
        finally:
            shown_seed = seed if seed is not None else params[0].seed if params[0].seed == params[1].seed else None
            snapshot = round_.finish_turn(Turn(question, answers[0].finished(), answers[1].finished(), settings,
                                               time.time(), shown_seed))
            try:
                # Off the event loop (other sessions keep streaming), and shielded: a client that goes
                # away mid-write must not lose the turn. The round stays streaming until it is stored.
                await asyncio.shield(asyncio.to_thread(self.store.save_round, snapshot))
            finally:
                round_.stored()

    async def stop(self, session: str, round_id: str | None) -> bool:
        """End the round's streaming answers where they are (runs on the event loop, like the stream).

        Works before the first token too (during prefill, or while waiting for a restarting
        worker). Returns whether anything was streaming; ask() then stores the partial turn
        and yields its final view as usual.
        """
        round_ = self._rounds.get(round_id or "")
        if round_ is None or round_.record.session != session:
            return False
        if round_.state is not RoundState.STREAMING or round_.stop is None:
            return False
        round_.stop.set()
        return True

    async def _stream(self, model: ModelConfig, messages: list[dict], params: GenerationParams
                      ) -> AsyncIterator[str | Usage | Notice | Started]:
        try:
            # May wait for a restarting worker: off the event loop, so other sessions keep streaming.
            base_url = await asyncio.to_thread(self.supervisor.endpoint, model.id, self.limits.restart_wait_s)
        except ModelUnavailable as exc:
            raise client.EndpointError(str(exc)) from None
        endpoint = model.endpoint
        async for item in client.stream_chat(
                base_url, model.served_name, messages, params,
                api_key=self.supervisor.api_key(model.id), read_timeout=endpoint.timeout_s if endpoint else 300.0):
            yield item

    # -- votes ------------------------------------------------------------------------
    async def vote(self, session: str, round_id: str | None, choice: str, address: str | None = None) -> RoundView:
        """Store the one vote of a round and return the revealed view."""
        try:
            winner = parse_winner(choice)
        except ValueError:
            raise ArenaError("unknown_vote", choice=choice, choices=", ".join(VOTE_LABELS)) from None
        round_ = await self._find(round_id) if round_id else None
        # From here to start_vote nothing awaits: no question or other vote can slip in between.
        if round_ is None:
            raise ArenaError("no_such_round")
        record = round_.record
        if record.session != session:
            raise ArenaError("other_session")
        if round_.state in (RoundState.VOTING, RoundState.VOTED):
            raise ArenaError("already_voted")
        if round_.state is RoundState.STREAMING:
            raise ArenaError("vote_while_streaming")
        if not record.turns:
            raise ArenaError("no_answers")
        if record.error:
            raise ArenaError("failed_round", error=record.error)
        self._check_rate(self._vote_limiter, self._address_vote_limiter, session, address, "what_votes")
        round_.start_vote()
        try:
            stored = await asyncio.to_thread(self._store_vote, record, winner)
        except BaseException:
            round_.vote_failed()
            raise
        self._rounds.pop(record.id, None)  # voted rounds live in the store only
        if stored is None:  # another app process (a replica) stored a vote first
            round_.voted(await asyncio.to_thread(self.store.get_round, record.id) or record)
            raise ArenaError("already_voted")
        round_.voted(stored)
        return self.view(round_)

    def _store_vote(self, record: RoundRecord, winner: Winner) -> RoundRecord | None:
        """In a thread: the identity check (it reads every answer) and the one atomic write. Returns the
        voted record, or None if the store already held a vote."""
        models = tuple(self._catalog_model(record.model(s), record.info(s)) for s in "ab")
        flag = self_identification(record, models) if record.mode == "blind" else None
        voted = replace(record, winner=winner, vote_tstamp=time.time(), rated=record.mode == "blind" and flag is None,
                        flag=flag)
        if not self.store.record_vote(record.id, winner, voted.vote_tstamp, voted.rated, flag):
            return None
        return voted

    def _catalog_model(self, model_id: str, info: ModelInfo) -> ModelConfig:
        try:
            return self.supervisor.model(model_id)
        except ModelUnavailable:
            return fallback_model(model_id, info)

    # -- views ------------------------------------------------------------------------
    def view(self, round_: Round) -> RoundView:
        """What the browser or an API client may see of a round.

        Until a blind round is revealed it carries no model name, engine, server, error text
        or timing figure (speed alone tells a 135M model from a 0.5B one), and with ``hold``
        nothing of the live turn either (no text, and not which side finished first) until
        both answers are finished.
        """
        record = round_.record
        revealed = round_.revealed
        held = not revealed and record.hold and round_.live is not None
        sides = {key: self._side_view(round_, key, revealed, held) for key in "ab"}
        prompt = self._prompts.get(record.preset_id or "")
        voted = record.winner is not None
        error = record.error if revealed or not record.error else "failed"
        return RoundView(
            round_id=record.id, mode=record.mode, revealed=revealed, streaming=round_.live is not None, held=held,
            a=sides["a"], b=sides["b"], error=error, vote=record.winner.label if voted else None,
            rated=bool(record.rated) if voted else None, flag=record.flag if voted else None,
            reference=prompt.reference if (voted and prompt) else None)

    @staticmethod
    def _side_view(round_: Round, key: str, revealed: bool, held: bool) -> SideView:
        record = round_.record
        stored = record.turns[:-1] if round_.regenerating else record.turns  # the answers being replaced go
        turns = [_stored_turn_view(turn, key) for turn in stored]
        if round_.live is not None:
            answer = round_.live[0 if key == "a" else 1]
            attempt = record.turns[-1].attempt + 1 if round_.regenerating else 1
            turns.append(TurnView(round_.pending_question or "", answer.text, answer.error, False, answer.done,
                                  answer.notice, answer.ttft_s, answer.total_s, answer.output_tokens,
                                  answer.tokens_per_s, answer.queue_s, attempt))
        if not revealed:  # timings, and how much context a model has, would hint at which model it is
            turns = [replace(tv, error="failed" if tv.error else None, notice=None, ttft_s=None, total_s=None,
                             output_tokens=None, tokens_per_s=None, queue_s=None) for tv in turns]
        if held:  # the live turn shows nothing, not even which side is done, until both are
            turns[-1] = replace(turns[-1], text="", error=None, done=False)
        info = record.info(key)
        if not revealed:
            return SideView(f"Model {key.upper()}", tuple(turns))
        return SideView(info.name, tuple(turns), model=record.model(key), engine=info.engine,
                        quantization=info.quantization, rss_mb=info.rss_mb)


def _stored_turn_view(turn: Turn, key: str) -> TurnView:
    answer = turn.side(key)
    return TurnView(turn.question, answer.text, answer.error, answer.stopped, True, answer.notice, answer.ttft_s,
                    answer.total_s, answer.output_tokens, answer.tokens_per_s, answer.queue_s, turn.attempt)
