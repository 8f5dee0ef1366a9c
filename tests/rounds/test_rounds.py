"""Unit: the arena's rules (question limits, one vote per round, session ownership, blind reveal,
self-identification flag, rate limit), the round's state machine under concurrent requests, and the
two-stream merge. The supervisor and the model streams are replaced by fakes here (``fake_models``
swaps the one method that talks to a model server); test_real_models.py and test_api.py run them
for real."""
import asyncio
import random
import re
import time
from dataclasses import replace

import pytest

from arena.core.config import ModelConfig, ModelSource, Prompt
from arena.core.generation import Started, Usage
from arena.core.outcomes import Winner
from arena.core.records import RoundRecord, SideAnswer, Turn, identity_words
from arena.core.textcheck import clean_model_text
from arena.rounds.battle import run_turn
from arena.rounds.rules import Arena, ArenaError, Limits, RoundState, Settings, _RateLimiter, address_key
from arena.serving.client import EndpointError
from arena.serving.supervisor import ModelStatus, ModelUnavailable
from arena.storage.store import Store

MODELS = {m.id: m for m in (
    ModelConfig("qwen-x", "Qwen2.5 X", "llamacpp", ModelSource(file="/x"), "Q4", "MIT"),
    ModelConfig("smol-y", "SmolLM2 Y", "llamacpp", ModelSource(file="/y"), "Q4", "MIT", identity_words=("smol",)),
)}


class FakeSupervisor:
    def api_key(self, model_id):
        return None

    def model(self, model_id):  # same contract as Supervisor.model
        if model_id not in MODELS:
            raise ModelUnavailable(f"unknown model {model_id!r}")
        return MODELS[model_id]

    def ready_ids(self):
        return list(MODELS)

    def pid(self, model_id):
        return None

    def statuses(self):
        return [ModelStatus(m.id, m.name, "ready", load_seconds=1.0) for m in MODELS.values()]


@pytest.fixture
def arena(tmp_path):
    prompts = [Prompt("p1", "c", "Q?", "The reference.", "s", "en")]
    a = Arena(FakeSupervisor(), Store(tmp_path / "a.db"), prompts, Limits(max_question_chars=50, votes_per_minute=3))
    yield a
    a.store.close()


def answered(arena, mode="blind", session="s1", text_a="fine", error=None, preset_id="p1"):
    """A round with one finished, stored turn, as ask() leaves it."""
    round_ = arena.new_round(session, mode, "qwen-x", "smol-y", preset_id=preset_id)
    answer = SideAnswer(text_a, error, ttft_s=0.1, total_s=1.0, output_tokens=5, tokens_per_s=4.4)
    round_.start_turn("Q?")
    record = round_.finish_turn(Turn("Q?", answer, replace(answer, text="also fine", error=None)))
    arena.store.save_round(record)
    round_.stored()
    return round_


def vote(arena, session, round_id, choice):
    return asyncio.run(arena.vote(session, round_id, choice))


def fake_models(arena, pieces="one two three", delay=0.0, done_delays=(0.0, 0.0)):
    """Replace the arena's one call to a model server: every model streams ``pieces`` word by word.
    ``done_delays`` per side (A, B, by the model's position in the round) hold the end of each answer."""
    async def stream(model, messages, params):
        side = 0 if model.id == "qwen-x" else 1
        yield Started()
        for word in pieces.split():
            await asyncio.sleep(delay)
            yield word + " "
        await asyncio.sleep(done_delays[side])
        yield Usage(len(messages), len(pieces.split()))
    arena._stream = stream


async def anext_all(agen) -> list:
    """Every item of an async generator."""
    return [item async for item in agen]


async def drain(agen):
    """The last item of an async generator (the final view of an ask)."""
    items = [item async for item in agen]
    return items[-1] if items else None


def test_empty_and_too_long_questions_are_refused(arena):
    for bad in ("", "   \n\t"):
        with pytest.raises(ArenaError, match="empty"):
            arena.validate_question(bad)
    with pytest.raises(ArenaError, match="51 characters; the limit is 50 .*--max-question-chars"):
        arena.validate_question("x" * 51)
    assert arena.validate_question("  hi  ") == "hi"


def test_named_round_needs_two_different_models(arena):
    with pytest.raises(ArenaError, match="pick two different"):
        arena.new_round("s", "named", "qwen-x", "qwen-x")
    with pytest.raises(ArenaError, match="unknown model 'nope'"):
        arena.new_round("s", "named", "qwen-x", "nope")


def test_blind_view_hides_identities_until_the_vote(arena):
    round_ = answered(arena)
    before = str(arena.view(round_))
    for secret in ("qwen", "Qwen", "smol", "Smol", "llamacpp", "The reference"):
        assert secret not in before
    after = vote(arena, "s1", round_.id, "A better")
    assert after.revealed and {after.a.model, after.b.model} == {"qwen-x", "smol-y"}
    assert after.reference == "The reference." and after.rated is True


def test_one_vote_per_round_and_only_by_its_session(arena):
    round_ = answered(arena, mode="named")
    with pytest.raises(ArenaError, match="another session"):
        vote(arena, "intruder", round_.id, "Tie")
    with pytest.raises(ArenaError, match="Unknown vote"):
        vote(arena, "s1", round_.id, "C better")
    view = vote(arena, "s1", round_.id, "Tie")
    assert view.vote == "Tie" and view.rated is False  # named votes are not rated
    with pytest.raises(ArenaError, match="already has a vote"):
        vote(arena, "s1", round_.id, "A better")
    with pytest.raises(ArenaError, match="no such round"):
        vote(arena, "s1", "does-not-exist", "Tie")


def test_vote_on_a_failed_answer_is_refused_and_the_round_kept(arena):
    round_ = answered(arena, error="connection lost mid-answer")
    with pytest.raises(ArenaError, match="an answer failed .*connection lost"):
        vote(arena, "s1", round_.id, "B better")
    assert arena.store.get_round(round_.id).error == "Model A: connection lost mid-answer"


def test_self_identifying_blind_answer_is_kept_but_not_rated(arena):
    round_ = answered(arena, text_a="As SmolLM2, I think…")
    view = vote(arena, "s1", round_.id, "A better")
    assert view.rated is False and "smol" in view.flag
    assert arena.store.get_round(round_.id).winner is Winner.A


def test_default_identity_words_come_from_the_name():
    assert identity_words(MODELS["qwen-x"]) == ("qwen",)
    assert identity_words(MODELS["smol-y"]) == ("smol",)


def test_votes_are_rate_limited_per_session(arena):
    rounds = [answered(arena) for _ in range(4)]
    for r in rounds[:3]:
        vote(arena, "s1", r.id, "Tie")
    with pytest.raises(ArenaError, match="Too many votes .*3 per minute"):
        vote(arena, "s1", rounds[3].id, "Tie")
    assert arena.store.get_round(rounds[3].id).winner is None


async def fake_stream(pieces, delay, fail_after=None):
    for i, piece in enumerate(pieces):
        await asyncio.sleep(delay)
        if fail_after is not None and i >= fail_after:
            raise EndpointError("worker died")
        yield piece
    yield Usage(3, len(pieces))


def test_both_panes_stream_at_the_same_time():
    async def go():
        snapshots = []
        async for a, b in run_turn((lambda: fake_stream("abcd", 0.02), lambda: fake_stream("wxyz", 0.02))):
            snapshots.append((a.text, b.text, a.done, b.done))
        return snapshots
    snaps = asyncio.run(go())
    # some snapshot shows both panes partly filled, neither finished
    assert any(0 < len(a) < 4 and 0 < len(b) < 4 for a, b, *_ in snaps)
    assert snaps[-1][:2] == ("abcd", "wxyz") and all(snaps[-1][2:])


def test_one_failing_model_does_not_stop_the_other():
    async def go():
        async for answers in run_turn((lambda: fake_stream("abcdef", 0.01), lambda: fake_stream("xyz", 0.01, 1))):
            last = answers
        return last
    a, b = asyncio.run(go())
    assert a.text == "abcdef" and a.error is None and a.output_tokens == 6
    assert b.text == "x" and b.error == "worker died" and b.done
    assert a.ttft_s is not None and a.total_s >= a.ttft_s and a.tokens_per_s > 0


def test_sequential_schedule_starts_b_after_a():
    async def go():
        async for a, b in run_turn((lambda: fake_stream("ab", 0.01), lambda: fake_stream("cd", 0.01)), "sequential"):
            if b.text:
                assert a.done
        return a, b
    a, b = asyncio.run(go())
    assert (a.text, b.text) == ("ab", "cd")


def test_stop_ends_both_answers_and_the_turn_finishes():
    async def go():
        stop = asyncio.Event()
        async for a, b in run_turn((lambda: fake_stream("a" * 200, 0.01), lambda: fake_stream("b" * 200, 0.01)),
                                   stop=stop):
            if len(a.text) > 3:
                stop.set()
            last = a, b
        return last
    a, b = asyncio.run(go())
    assert a.done and b.done and a.error == b.error == "stopped by user"
    assert 3 < len(a.text) < 200


@pytest.mark.parametrize("text, problem", [
    ("a\x00b", "a control character (U+0000) at character 2"),
    ("ok \ud800", "an invalid character (a lone surrogate U+D800) at character 4"),
    ("abc\u202edef", "a text-direction override (U+202E) at character 4"),
    ("bell\x07", "a control character (U+0007) at character 5"),
])
def test_questions_with_characters_that_cant_be_stored_are_refused_with_the_position(arena, text, problem):
    with pytest.raises(ArenaError, match=re.escape(f"The question contains {problem}")):
        arena.validate_question(text)
    assert arena.validate_question("tab\tand\nnewlines\r\nare fine") == "tab\tand\nnewlines\r\nare fine"


def test_bad_generation_settings_and_system_prompts_are_refused():
    with pytest.raises(ArenaError, match="temperature must be between 0 and 2, got 3"):
        Settings(temperature=3).checked()
    with pytest.raises(ArenaError, match="system prompt is 4,001 characters; the limit is 4,000"):
        Settings(system_prompt="x" * 4001).checked()
    with pytest.raises(ArenaError, match="system prompt contains a control character"):
        Settings(system_prompt="be\x00nice").checked()


def test_model_output_is_cleaned_not_refused():
    """Lone surrogates become U+FFFD; control characters and text-direction overrides are dropped, so an
    answer the arena stores can always be exported and imported again."""
    assert clean_model_text("ok\ud800 and\x00 more \u202etxt") == "ok\ufffd and more txt"


def test_a_streaming_round_refuses_a_second_question_and_a_vote(arena):
    """Two tabs, or Enter and Send together: the second ask and a vote wait for the turn to end."""
    round_ = answered(arena, mode="named")
    round_.start_turn("again?")  # what ask() does while a turn streams
    with pytest.raises(ArenaError, match="still answering"):
        asyncio.run(drain(arena.ask("s1", "again?", round_id=round_.id)))
    with pytest.raises(ArenaError, match="Wait until both answers are finished"):
        vote(arena, "s1", round_.id, "Tie")
    assert round_.state is RoundState.STREAMING
    round_.finish_turn(round_.record.turns[0])
    round_.stored()
    vote(arena, "s1", round_.id, "Tie")
    assert arena.store.get_round(round_.id).winner is Winner.TIE


def test_memory_stays_bounded(arena, tmp_path):
    """Voted rounds leave memory, open ones are capped (reloaded from the store on a follow-up),
    and the rate limiter forgets clients idle for a minute."""
    small = Arena(FakeSupervisor(), arena.store, [], Limits(open_rounds=3, votes_per_minute=100))
    rounds = [answered(small, mode="named") for _ in range(5)]
    assert small.open_rounds() == 3
    assert asyncio.run(small._find(rounds[0].id)).id == rounds[0].id  # evicted, found again in the store
    vote(small, "s1", rounds[1].id, "Tie")
    assert rounds[1].id not in small._rounds
    limiter = _RateLimiter(5)
    for i in range(100):
        limiter.check(f"client-{i}", "what_questions")
    limiter._sweep(time.monotonic() + 61)
    assert len(limiter) == 0


# -- one owner for each round: concurrent requests ----------------------------------------------------
def test_the_next_question_after_a_vote_starts_a_new_round(arena):
    """A person votes, then types another question: that is a new round (not a refusal), with the mode and
    models the page asks for; the voted round keeps its one turn."""
    fake_models(arena)
    first = asyncio.run(drain(arena.ask("s1", "Q?", mode="named", model_a="qwen-x", model_b="smol-y")))
    vote(arena, "s1", first.round_id, "A better")
    second = asyncio.run(drain(arena.ask("s1", "And now?", round_id=first.round_id, mode="named",
                                         model_a="qwen-x", model_b="smol-y")))
    assert second.round_id != first.round_id and [t.question for t in second.a.turns] == ["And now?"]
    assert len(arena.store.get_round(first.round_id).turns) == 1


def test_vote_against_ask_on_one_round_100_times_at_once(tmp_path):
    """A vote and a follow-up question sent together on an answered round: exactly one of them takes the
    round. Either the vote is refused (still answering) and the round has two turns, or the vote is stored
    and the question starts a new round; a voted round never gains a turn, its speed columns never change."""
    store = Store(tmp_path / "race.db")
    arena = Arena(FakeSupervisor(), store, [], Limits(votes_per_minute=1000, questions_per_minute=1000))
    fake_models(arena, delay=0.001)
    rng = random.Random(7)
    outcomes = set()

    async def trial():
        round_ = answered(arena, mode="named")
        before = store.get_round(round_.id)

        async def ask_later():
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            return await drain(arena.ask("s1", "follow-up", round_id=round_.id, mode="named",
                                         model_a="qwen-x", model_b="smol-y"))

        async def vote_later():
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            return await arena.vote("s1", round_.id, "Tie")

        view, voted = await asyncio.gather(ask_later(), vote_later(), return_exceptions=True)
        stored = store.get_round(round_.id)
        if isinstance(voted, ArenaError):
            assert voted.key == "vote_while_streaming" and stored.winner is None
            assert view.round_id == round_.id and len(stored.turns) == 2
            outcomes.add("question first")
        else:
            assert stored.winner is Winner.TIE and len(stored.turns) == 1
            assert (stored.tps_a, stored.ttft_a) == (before.tps_a, before.ttft_a)
            assert view.round_id != round_.id
            outcomes.add("vote first")

    async def run():
        for _ in range(100):
            await trial()
    asyncio.run(run())
    assert outcomes == {"question first", "vote first"}  # both orders happened, and both kept the rules
    store.close()


def test_stop_against_vote_100_times_at_once(tmp_path):
    """Stop and vote pressed together while a turn streams: the vote is refused (still answering), the stop
    ends the turn within a tick (it runs on the event loop, not in a thread), the stopped turn is stored,
    and the next vote is taken."""
    store = Store(tmp_path / "stop.db")
    arena = Arena(FakeSupervisor(), store, [], Limits(votes_per_minute=1000, questions_per_minute=1000))
    fake_models(arena, pieces=" ".join(["word"] * 400), delay=0.005)

    async def trial():
        views = arena.ask("s1", "long?", mode="named", model_a="qwen-x", model_b="smol-y")
        first = await views.__anext__()
        streaming = asyncio.create_task(drain(views))
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        stopped, refused = await asyncio.gather(arena.stop("s1", first.round_id),
                                                arena.vote("s1", first.round_id, "Tie"), return_exceptions=True)
        last = await streaming
        assert stopped is True and isinstance(refused, ArenaError) and refused.key == "vote_while_streaming"
        assert time.perf_counter() - started < 0.5
        assert last.a.turns[-1].stopped and not last.streaming
        assert (await arena.vote("s1", first.round_id, "Tie")).vote == "Tie"

    async def run():
        for _ in range(100):
            await trial()
    asyncio.run(run())
    store.close()


def test_many_votes_against_the_rate_limiter_sweep(tmp_path):
    """100 votes at once from 100 sessions while the rate limiter sweeps idle clients: no vote fails with
    an error of the limiter's dictionary, every one is stored once."""
    store = Store(tmp_path / "sweep.db")
    arena = Arena(FakeSupervisor(), store, [], Limits(votes_per_minute=1000))
    rounds = [answered(arena, mode="named", session=f"s{i}") for i in range(100)]

    async def run():
        for limiter in (arena._vote_limiter, arena._address_vote_limiter):
            limiter._swept = time.monotonic() - 61  # the next check sweeps
            for i in range(500):
                limiter._events[f"idle-{i}"].append(time.monotonic() - 120)
        return await asyncio.gather(*(arena.vote(f"s{i}", r.id, "Tie", address=f"10.0.{i}.1")
                                      for i, r in enumerate(rounds)), return_exceptions=True)
    results = asyncio.run(run())
    assert all(not isinstance(r, BaseException) for r in results), [r for r in results if isinstance(r, BaseException)]
    assert all(store.get_round(r.id).winner is Winner.TIE for r in rounds)
    assert len(arena._vote_limiter) == 100  # the idle clients were swept out
    store.close()


def test_a_failed_vote_write_leaves_the_round_answered(arena, monkeypatch):
    """If the database refuses the vote (disk full, PostgreSQL down), the round is not left half-voted:
    the same vote goes through once the database is back."""
    round_ = answered(arena, mode="named")
    monkeypatch.setattr(arena.store, "record_vote", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        vote(arena, "s1", round_.id, "Tie")
    assert round_.state is RoundState.ANSWERED
    monkeypatch.undo()
    assert vote(arena, "s1", round_.id, "Tie").vote == "Tie"


def test_transitions_are_checked():
    round_ = answered(Arena(FakeSupervisor(), Store(":memory:"), []), mode="named")
    round_.start_vote()
    with pytest.raises(RuntimeError, match="no transition from voting to streaming"):
        round_.start_turn("late question")


# -- what a person sees ---------------------------------------------------------------------------------
def test_held_views_show_nothing_of_the_live_turn_not_even_who_finished(arena):
    """Blind, "show both only when finished": while one answer is done and the other still streams, the view
    has no text, no error and the same 'not done' on both sides; after the turn both appear."""
    fake_models(arena, done_delays=(0.0, 0.05))

    async def run():
        return [v async for v in arena.ask("s1", "Q?", mode="blind", hold=True)]
    views = asyncio.run(run())
    live = [v for v in views if v.streaming]
    assert live and all(v.held for v in live)
    for v in live:
        for side in (v.a, v.b):
            assert side.turns[-1].text == "" and side.turns[-1].done is False and side.turns[-1].error is None
    assert not views[-1].held and views[-1].a.turns[-1].text.strip() == "one two three"


def test_blind_hold_survives_a_restart(arena):
    """The "together" setting is stored with the round: after a restart a follow-up is still held."""
    fake_models(arena, done_delays=(0.0, 0.05))
    first = asyncio.run(drain(arena.ask("s1", "Q?", mode="blind", hold=True)))
    restarted = Arena(FakeSupervisor(), arena.store, arena.prompts)
    fake_models(restarted, done_delays=(0.0, 0.05))

    async def follow_up():
        return [v async for v in restarted.ask("s1", "Q2?", round_id=first.round_id, mode="blind")]
    views = asyncio.run(follow_up())
    assert views[0].round_id == first.round_id and all(v.held for v in views if v.streaming)


def test_round_speed_counts_only_turns_that_produced_tokens():
    """A follow-up stopped during prefill (no tokens) leaves the round's tokens/s where the answered turn put it."""
    fast = SideAnswer("x" * 10, ttft_s=0.2, total_s=1.2, output_tokens=26, tokens_per_s=25.0)
    empty = SideAnswer("", stopped=True, ttft_s=None, total_s=3.0, output_tokens=0)
    record = RoundRecord("r", 0.0, "s", "named", "a", "b").with_turn(Turn("q1", fast, fast))
    assert record.tps_a == 25.0
    record = record.with_turn(Turn("q2", empty, fast))
    assert record.tps_a == 25.0 and record.tps_b == 25.0


def test_time_to_first_token_counts_from_the_engine_start_and_the_wait_is_kept_apart():
    """A worker busy with another session makes the request wait; that wait is ``queue_s``, not TTFT."""
    async def queued():
        yield Started()
        await asyncio.sleep(0.3)  # the worker is busy: our workers then say when the engine takes the request
        yield Started(0.3)
        await asyncio.sleep(0.05)
        yield "hello"
        yield Usage(3, 1)

    async def go():
        async for a, _ in run_turn((queued, lambda: fake_stream("ab", 0.01))):
            last = a
        return last
    a = asyncio.run(go())
    assert 0.25 < a.queue_s < 0.6 and a.ttft_s < 0.2 and a.finished().queue_s == round(a.queue_s, 3)


def test_ipv6_clients_are_limited_by_their_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("192.0.2.7") == "192.0.2.7" and address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("testclient") == "testclient"


def seeded_models(arena, delay=0.0):
    """Models whose answer names the seed they were given, and that remember every request's seed and history."""
    requests = []

    async def stream(model, messages, params):
        requests.append((model.id, params.seed, messages))
        yield Started()
        for word in (f"{model.id}", "seed", str(params.seed)):
            await asyncio.sleep(delay)
            yield word + " "
        yield Usage(len(messages), 3)
    arena._stream = stream
    return requests


def test_regenerate_twice_then_vote_keeps_every_attempt_and_votes_on_the_last(arena):
    """Both panes answer the last question again with a new seed (the same for both), same settings, same history;
    the stored round keeps every attempt with its seed and timings; the vote applies to the answers shown, and
    the FastChat export carries those, with the attempt count in our part."""
    import json

    from arena.storage.exports import battle_json, parse_battle

    requests = seeded_models(arena)
    first = asyncio.run(drain(arena.ask("s1", "Q1?", mode="named", model_a="qwen-x", model_b="smol-y")))
    asyncio.run(drain(arena.ask("s1", "Q2?", round_id=first.round_id)))
    for _ in range(2):
        view = asyncio.run(drain(arena.regenerate("s1", first.round_id)))
    assert view.a.turns[-1].attempt == 3 and len(view.a.turns) == 2 and view.votable
    seeds = [seed for model, seed, _ in requests[-4:]]
    assert seeds[0] == seeds[1] and seeds[2] == seeds[3] and seeds[0] != seeds[2] and None not in seeds
    qwen = [messages for model, _, messages in requests if model == "qwen-x"]
    assert qwen[1] == qwen[2] == qwen[3]  # each attempt at Q2 sees the same conversation
    voted = asyncio.run(arena.vote("s1", first.round_id, "A better"))
    assert voted.a.turns[-1].text.startswith(f"qwen-x seed {seeds[2]}")
    stored = arena.store.get_round(first.round_id)
    last = stored.turns[-1]
    assert last.attempt == 3 and last.seed == seeds[2] and [e.seed for e in last.earlier][1:] == [seeds[0]]
    assert all(e.a.total_s is not None for e in last.earlier) and stored.turns[0].attempt == 1
    line = battle_json(stored)
    assert line["arena"]["attempts"] == [1, 3]
    assert line["conversation_a"][-1]["content"].startswith(f"qwen-x seed {seeds[2]}")
    assert parse_battle(json.dumps(line), "import:x").turns == stored.turns  # every attempt survives a round trip


def test_regenerate_is_refused_after_the_vote_and_without_answers(arena):
    seeded_models(arena)
    round_ = answered(arena, mode="named")
    asyncio.run(arena.vote("s1", round_.id, "Tie"))
    with pytest.raises(ArenaError, match="You have voted on these answers"):
        asyncio.run(drain(arena.regenerate("s1", round_.id)))
    with pytest.raises(ArenaError, match="belongs to another session|other"):
        asyncio.run(drain(arena.regenerate("s2", answered(arena, mode="named").id)))
    empty = arena.new_round("s1", "named", "qwen-x", "smol-y")
    with pytest.raises(ArenaError, match="nothing to answer again"):
        asyncio.run(drain(arena.regenerate("s1", empty.id)))


def test_regenerate_while_answering_stops_the_old_answers_first(arena):
    """Regenerate during a stream: the answers being written stop where they are and are kept as the first
    attempt (stopped), then both models answer again; the blind pair stays the same and hidden. The stopped
    stream ends without a last view of its own: votes never unlock from it while the new answers stream (the
    page could draw it after the new stream's first view)."""
    seeded_models(arena, delay=0.2)

    async def go():
        views = arena.ask("s1", "Long?", mode="blind")
        first = await views.__anext__()
        asking = asyncio.create_task(anext_all(views))
        await asyncio.sleep(0.25)
        again = [v async for v in arena.regenerate("s1", first.round_id)]
        return first.round_id, await asking, again
    round_id, asked, again = asyncio.run(go())
    assert not any(v.votable for v in asked)
    assert all(v.a.label == "Model A" and not v.revealed for v in again)
    assert again[-1].a.turns[-1].attempt == 2 and len(again[-1].a.turns) == 1
    stored = arena.store.get_round(round_id)
    assert stored.turns[-1].earlier[0].a.stopped and not stored.turns[-1].a.stopped
    models = {stored.model_a, stored.model_b}
    voted = asyncio.run(arena.vote("s1", round_id, "B better"))
    assert {voted.a.model, voted.b.model} == models


def test_too_many_attempts_are_refused(arena):
    seeded_models(arena)
    arena.limits = replace(arena.limits, max_attempts=2)
    round_ = answered(arena, mode="named")
    asyncio.run(drain(arena.regenerate("s1", round_.id)))
    with pytest.raises(ArenaError, match="answered 2 times"):
        asyncio.run(drain(arena.regenerate("s1", round_.id)))
