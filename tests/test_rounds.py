"""Unit: the arena's rules (question limits, one vote per round, session ownership, blind reveal,
self-identification flag, rate limit) and the two-stream merge. The supervisor and the model
streams are replaced by fakes here; test_real_models.py and test_api.py run them for real."""
import asyncio
import re
import time

import pytest

from arena.battle import run_turn
from arena.client import EndpointError
from arena.config import ModelConfig, ModelSource, Prompt
from arena.engines import Usage
from arena.rounds import Arena, ArenaError, Limits, Settings, _RateLimiter, identity_words
from arena.textcheck import clean_model_text
from arena.store import Store
from arena.supervisor import ModelStatus, ModelUnavailable

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
    round_ = arena.new_round(session, mode, "qwen-x", "smol-y", preset_id=preset_id)
    answer = {"text": text_a, "error": error, "stopped": False, "ttft_s": 0.1, "total_s": 1.0,
              "output_tokens": 5, "tokens_per_s": 4.4}
    round_.record.turns.append({"question": "Q?", "a": answer, "b": {**answer, "text": "also fine", "error": None}})
    round_.record.error = f"Model A: {error}" if error else None
    arena.store.save_round(round_.record)
    return round_


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
    after = arena.vote("s1", round_.id, "A better")
    assert after["revealed"] and {after["a"]["model"], after["b"]["model"]} == {"qwen-x", "smol-y"}
    assert after["reference"] == "The reference." and after["rated"] is True


def test_one_vote_per_round_and_only_by_its_session(arena):
    round_ = answered(arena, mode="named")
    with pytest.raises(ArenaError, match="another session"):
        arena.vote("intruder", round_.id, "Tie")
    with pytest.raises(ArenaError, match="Unknown vote"):
        arena.vote("s1", round_.id, "C better")
    view = arena.vote("s1", round_.id, "Tie")
    assert view["vote"] == "Tie" and view["rated"] is False  # named votes are not rated
    with pytest.raises(ArenaError, match="already has a vote"):
        arena.vote("s1", round_.id, "A better")
    with pytest.raises(ArenaError, match="no such round"):
        arena.vote("s1", "does-not-exist", "Tie")


def test_vote_on_a_failed_answer_is_refused_and_the_round_kept(arena):
    round_ = answered(arena, error="connection lost mid-answer")
    with pytest.raises(ArenaError, match="an answer failed .*connection lost"):
        arena.vote("s1", round_.id, "B better")
    assert arena.store.get_round(round_.id).error == "Model A: connection lost mid-answer"


def test_self_identifying_blind_answer_is_kept_but_not_rated(arena):
    round_ = answered(arena, text_a="As SmolLM2, I think…")
    view = arena.vote("s1", round_.id, "A better")
    assert view["rated"] is False and "smol" in view["flag"]
    assert arena.store.get_round(round_.id).winner == "model_a"


def test_default_identity_words_come_from_the_name():
    assert identity_words(MODELS["qwen-x"]) == ("qwen",)
    assert identity_words(MODELS["smol-y"]) == ("smol",)


def test_votes_are_rate_limited_per_session(arena):
    rounds = [answered(arena) for _ in range(4)]
    for r in rounds[:3]:
        arena.vote("s1", r.id, "Tie")
    with pytest.raises(ArenaError, match="Too many votes .*3 per minute"):
        arena.vote("s1", rounds[3].id, "Tie")
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
    assert clean_model_text("ok\ud800 and\x00 more") == "ok\ufffd and more"


def test_a_streaming_round_refuses_a_second_question_and_a_vote(arena):
    """Two tabs, or Enter and Send together: the second ask and a vote wait for the turn to end."""
    round_ = answered(arena, mode="named")
    round_.busy = True  # what ask() holds while a turn streams
    async def second_ask():
        async for _ in arena.ask("s1", "again?", round_id=round_.id):
            pass
    with pytest.raises(ArenaError, match="still answering"):
        asyncio.run(second_ask())
    with pytest.raises(ArenaError, match="Wait until both answers are finished"):
        arena.vote("s1", round_.id, "Tie")
    assert round_.state == "streaming"
    round_.busy = False
    assert round_.state == "answered"
    arena.vote("s1", round_.id, "Tie")
    assert arena.store.get_round(round_.id).winner == "tie"


def test_memory_stays_bounded(arena, tmp_path):
    """Voted rounds leave memory, open ones are capped (reloaded from the store on a follow-up),
    and the rate limiter forgets clients idle for a minute."""
    small = Arena(FakeSupervisor(), arena.store, [], Limits(open_rounds=3, votes_per_minute=100))
    rounds = [answered(small, mode="named") for _ in range(5)]
    assert small.open_rounds() == 3
    assert small._round_for("s1", rounds[0].id).id == rounds[0].id  # evicted, found again in the store
    small.vote("s1", rounds[1].id, "Tie")
    assert rounds[1].id not in small._rounds
    limiter = _RateLimiter(5)
    for i in range(100):
        limiter.check(f"client-{i}", "what_questions")
    limiter._sweep(time.monotonic() + 61)
    assert len(limiter) == 0
