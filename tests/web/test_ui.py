"""Unit: the page's behaviour without a browser — renderers, translations, handlers, charts.
(test_browser.py checks that the same functions are wired to the controls.)"""
import asyncio
import time

import gradio as gr
import pytest
from matplotlib.figure import Figure

from arena.core.generation import Started, Usage
from arena.core.texts import TEXTS, language_of, t
from arena.ratings import charts
from arena.rounds.rules import Arena, ArenaError, Limits, Settings, SideView, TurnView
from arena.serving.supervisor import ModelStatus
from arena.storage.store import Store
from arena.web import render
from arena.web.handlers import Handlers
from arena.web.page import RELABEL, relabel

from ..rounds.test_rounds import FakeSupervisor, answered


def turn_view(**changes) -> TurnView:
    values = dict(question="q", text="a", error=None, stopped=False, done=True, notice=None, ttft_s=0.5,
                  total_s=2.0, output_tokens=31, tokens_per_s=20.0, queue_s=None)
    return TurnView(**{**values, **changes})


def test_every_text_exists_in_both_languages_and_formats():
    assert set(TEXTS["en"]) == set(TEXTS["zh"])
    assert all(TEXTS["zh"][k] for k in TEXTS["zh"])
    assert set(k for _, k in RELABEL.values()) <= set(TEXTS["en"])
    zh = relabel("zh")
    assert zh["send"]["value"] == "同时发送" and zh["mode"]["choices"][1] == ("匿名对战", "blind")
    assert language_of("zh-CN,zh;q=0.9,en;q=0.8") == "zh" and language_of("fr-FR,en;q=0.5") == "en"
    assert language_of(None) == "en"


def test_refusals_read_in_the_readers_language():
    exc = ArenaError("question_too_long", length=9001, limit=8000)
    assert str(exc) == "The question is 9,001 characters; the limit is 8,000 (change it with --max-question-chars)."
    assert exc.message("zh").startswith("问题有 9,001 个字符")
    surrogate = ArenaError("bad_text", what="what_question", problem=("surrogate", "U+D800"), position=3)
    assert "lone surrogate U+D800" in str(surrogate) and "孤立代理项" in surrogate.message("zh")


def test_blind_metrics_are_hidden_until_revealed_and_named_ones_show_numbers():
    side = SideView("A", (turn_view(),))
    assert render.metrics_markdown(side, revealed=True) == \
        "Time to first token **0.50 s** · total **2.00 s** · tokens **31** · **20.00** tokens/s"
    hidden = render.metrics_markdown(side, revealed=False)
    assert "hidden" in hidden and not any(ch.isdigit() for ch in hidden)
    streaming = SideView("A", (turn_view(done=False),))
    assert "answering" in render.metrics_markdown(streaming, revealed=True)
    assert render.metrics_markdown(streaming, revealed=False, held=True) == t("held")


def test_a_wait_for_the_model_shows_apart_from_the_timings_when_it_is_long():
    """Time to first token is the engine's; a wait of half a second or more for a busy worker is shown beside it."""
    assert "waited" not in render.metrics_markdown(SideView("A", (turn_view(queue_s=0.3),)))
    shown = render.metrics_markdown(SideView("A", (turn_view(queue_s=2.34),)))
    assert shown.startswith("Time to first token **0.50 s**") and "waited **2.3 s**" in shown
    assert "等待模型 **2.3 秒**" in render.metrics_markdown(SideView("A", (turn_view(queue_s=2.34),)), lang="zh")


def test_a_blind_error_names_no_model_or_server():
    side = SideView("Model A", (turn_view(text="", error="failed"),))
    shown = render.chat_messages(side)[1]["content"]
    assert "failed" in shown and "http" not in shown


def test_status_shows_load_time_and_resident_memory_in_both_languages():
    ready = ModelStatus("m", "Model M", "ready", load_seconds=2.04)
    failed = ModelStatus("f", "Model F", "failed", detail="file missing")
    en = render.status_markdown([(ready, 634.2), (failed, None)])
    assert "ready (loaded in 2.0 s, 634 MB resident)" in en and "failed: file missing" in en
    zh = render.status_markdown([(ready, 634.2)], "zh")
    assert "就绪（加载用时 2.0 秒，常驻内存 634 MB）" in zh


@pytest.fixture
def handlers(tmp_path):
    arena = Arena(FakeSupervisor(), Store(tmp_path / "a.db"), [], Limits(votes_per_minute=100))
    yield Handlers(arena)
    arena.store.close()


def test_new_round_clears_panes_and_round_id(handlers):
    out = handlers.cleared("blind", None, None, "zh")
    assert out["round_id"] is None and out["chat_a"]["value"] == [] and out["chat_a"]["label"] == "模型 A"
    assert all(out[k]["interactive"] is False for k in ("vote_a", "vote_b", "vote_tie", "vote_bothbad"))
    named = handlers.mode_changed("named", "qwen-x", "smol-y", "en")
    assert named["chat_a"]["label"] == "Qwen2.5 X" and named["pickers"]["visible"] is True


def test_vote_handler_renders_the_reveal_and_locks_votes(handlers):
    round_ = answered(handlers.arena, session="s1")
    out = asyncio.run(handlers.vote("Tie", round_.id, "en", "s1"))
    assert "You voted: Tie" in out["reveal"] and out["vote_a"]["interactive"] is False
    with pytest.raises(gr.Error, match="已经投过票"):
        asyncio.run(handlers.vote("Tie", round_.id, "zh", "s1"))


def test_stop_is_noticed_at_once_while_the_loop_is_idle(handlers):
    """The page's Stop runs on the event loop (before, a plain function set the round's asyncio.Event from a
    thread, and an idle loop noticed it only at its next wake-up, 2 s later in a reproduction)."""
    async def slow(model, messages, params):
        yield Started()
        await asyncio.sleep(30)  # prefill of a long question: nothing wakes the loop
        yield "late"
        yield Usage(1, 1)
    handlers.arena._stream = slow

    async def go():
        views = handlers.send("Q?", "named", "qwen-x", "smol-y", Settings(), False, None, None, "en", "s")
        first = await views.__anext__()
        rest = asyncio.create_task(asyncio.wait_for(_drain(views), 5))
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        assert await handlers.stop(first["round_id"], "s") is True
        await rest
        return time.perf_counter() - started
    assert asyncio.run(go()) < 0.5


def test_a_streaming_answer_sends_each_property_once(handlers):
    """Gradio answers every property update (a pane's label, a button's interactivity) by building a new component
    and its JSON schema on the event loop; a stream's updates used to repeat them all every time. Now the first
    update sets them, later ones carry plain values, and a property goes again only when it changes (the votes
    unlock at the end)."""
    async def words(model, messages, params):
        yield Started()
        for word in ("one ", "two ", "three ", "four"):
            yield word
            await asyncio.sleep(0.06)  # past the 20-per-second coalescing: every word is an update
        yield Usage(1, 4)
    handlers.arena._stream = words

    async def go():
        return [u async for u in handlers.send("Q?", "named", "qwen-x", "smol-y", Settings(), False, None, None,
                                               "en", "s")]
    updates = asyncio.run(go())
    props = [[k for k, v in u.items() if isinstance(v, dict) and v.get("__type__") == "update"] for u in updates]
    assert len(updates) >= 4 and {"chat_a", "chat_b", "vote_a"} <= set(props[0])
    assert all(p == [] for p in props[1:-1]), props  # streaming: plain values only
    assert set(props[-1]) == {"vote_a", "vote_b", "vote_tie", "vote_bothbad"}  # the votes unlock
    assert isinstance(updates[-1]["chat_a"], list) and "four" in str(updates[-1]["chat_a"][-1]["content"])


async def _drain(agen):
    async for _ in agen:
        pass


def test_leaderboard_shows_ratings_and_charts_only_from_ten_rated_battles(handlers):
    """Proves the minimum: no battle shows the empty state; 3 say they are too few and show no ratings; 10 show
    the table, the charts and the style-controlled table with its coefficients."""
    empty = handlers.leaderboard_view("en")
    assert empty["board_empty"]["visible"] is True and empty["charts"]["visible"] is False
    for _ in range(3):
        asyncio.run(handlers.arena.vote("s1", answered(handlers.arena, session="s1").id, "A better"))
    few = handlers.leaderboard_view("en")
    assert "Only 3 rated battle(s)" in few["board_note"] and few["board"].empty
    assert few["charts"]["visible"] is False and few["style_panel"]["visible"] is False
    for vote in ("B better", "Tie", "A better", "A better", "B better", "Both bad", "A better"):
        asyncio.run(handlers.arena.vote("s1", answered(handlers.arena, session="s1").id, vote))
    full = handlers.leaderboard_view("zh")
    assert "10 场" in full["board_note"] and full["style_panel"]["visible"] is True
    assert len(full["style_board"]) == 2 and len(full["style_coefficients"]) == 4
    assert full["charts"]["visible"] is True and "评分" in full["board"].columns
    assert set(full["board"]["模型"]) == {"Qwen2.5 X", "SmolLM2 Y"}
    for name in ("ratings_plot", "speed_plot", "matrix_plot"):
        assert isinstance(full[name], Figure)
    ratings = full["ratings_plot"].axes[0]
    assert len(ratings.lines) > 0 and not ratings.texts  # points drawn, not the empty-state text


def test_leaderboard_views_are_kept_per_selection_until_the_next_vote(handlers, monkeypatch):
    """A view costs a Bradley-Terry fit with a bootstrap and three charts: each selection (category, language,
    imported or not, page language) is computed once until a vote changes the store, then once again."""
    import arena.ratings.leaderboard as leaderboard

    fits = []
    real = leaderboard.board
    monkeypatch.setattr(leaderboard, "board", lambda *a, **k: fits.append(a[4:]) or real(*a, **k))
    for _ in range(10):
        asyncio.run(handlers.arena.vote("s1", answered(handlers.arena, session="s1").id, "A better"))
    for selection in [("en", True, "all", "all"), ("en", True, "typed", "all"), ("en", False, "all", "en"),
                      ("en", True, "all", "all"), ("en", True, "typed", "all"), ("zh", False, "all", "en")]:
        handlers.leaderboard_view(*selection)
    assert len(fits) == 3  # three selections; the page language only re-labels
    cached = handlers.leaderboard_view("en")
    assert cached["charts"]["visible"] is True  # a cached view still carries its updates, and the selectors' choices
    assert ("Chinese", "zh") in cached["board_language"]["choices"] and cached["board_category"]["choices"]
    asyncio.run(handlers.arena.vote("s1", answered(handlers.arena, session="s1").id, "Tie"))
    handlers.leaderboard_view("en")
    assert len(fits) == 4


def test_leaderboard_views_are_limited_per_address(tmp_path):
    """Each address may ask for the leaderboard --leaderboard-views-per-minute times a minute, cached or not."""
    arena = Arena(FakeSupervisor(), Store(tmp_path / "a.db"), [], Limits(leaderboard_views_per_minute_per_address=2))
    handlers = Handlers(arena)
    for _ in range(2):
        asyncio.run(handlers.board_view("en", address="198.51.100.7"))
    with pytest.raises(gr.Error, match="Too many leaderboard views from this address"):
        asyncio.run(handlers.board_view("en", address="198.51.100.7"))
    asyncio.run(handlers.board_view("en", address="203.0.113.9"))  # another address has its own count
    arena.store.close()


def test_speed_quality_chart_plots_each_model_at_its_median_speed():
    import pandas as pd

    table = pd.DataFrame({"model": ["x", "y"], "rating": [1050.0, 950.0], "ci_low": [1000.0, 900.0],
                          "ci_high": [1100.0, 1000.0], "median_tokens_per_s": [25.0, 80.0]})
    fig = charts.speed_quality_chart(table)
    xs = sorted(fig.axes[0].lines[0].get_xdata())
    assert xs == [25.0, 80.0]
    assert [a.get_text() for a in fig.axes[0].texts] == ["x", "y"]


def test_send_handler_refusal_is_a_translated_gradio_error(handlers):
    async def go():
        async for _ in handlers.send("", "named", "qwen-x", "smol-y", Settings(), False, None, None, "zh", "s"):
            pass
    with pytest.raises(gr.Error, match="问题为空"):
        asyncio.run(go())


def test_the_page_builds_without_a_batch_service(handlers, tmp_path):
    """build_ui wires only the tabs it has: no Batch tab, and the language switch still covers the rest."""
    from arena.web.page import build_ui

    demo = build_ui(handlers.arena)
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"send", "language", "leaderboard-table", "export-csv"} <= ids and "batch-start" not in ids
