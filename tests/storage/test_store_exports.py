"""Unit, on SQLite and on PostgreSQL (the ``make_store`` fixture): round trip, exactly one vote per
round (also from two stores racing), the batch tables, CSV escaping, JSONL export/import."""
import asyncio
import csv
import json
from dataclasses import replace

import pytest

from arena.core.records import ModelInfo, RoundRecord, Settings, SideAnswer, Turn
from arena.ratings import leaderboard
from arena.storage import exports
from arena.storage import store as arena_store
from arena.storage.store import Store


def record(i: int, winner: str | None = None, mode: str = "blind", a: str = "x", b: str = "y",
           text_a: str = "答案A", question: str = "问题？") -> RoundRecord:
    answer = lambda t: SideAnswer(t, ttft_s=0.2, total_s=1.0, output_tokens=10, tokens_per_s=11.25)  # noqa: E731
    return RoundRecord(id=f"r{i}", tstamp=1700000000.0 + i, session="s1", mode=mode, model_a=a, model_b=b,
                       model_a_info=ModelInfo(a.upper(), "llamacpp", "Q4"),
                       model_b_info=ModelInfo(b.upper(), "llamacpp", "Q4"),
                       settings=Settings(0.7, 0.9, 64, ""), turns=(Turn(question, answer(text_a), answer("B says")),),
                       ttft_a=0.2, ttft_b=0.3, tps_a=11.25, tps_b=20.0)


@pytest.fixture
def store(make_store):
    return make_store()


def test_round_trip_keeps_every_field(store):
    r = record(1)
    store.save_round(r)
    back = store.get_round("r1")
    assert back == r
    if store.dialect == "sqlite":
        with store._read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_exactly_one_vote_per_round(store):
    store.save_round(record(1))
    assert store.record_vote("r1", "model_a", 1.0, rated=True, flag=None) is True
    assert store.record_vote("r1", "model_b", 2.0, rated=True, flag=None) is False
    assert store.get_round("r1").winner == "model_a"
    # saving the round again (a late turn) must not erase the vote
    store.save_round(record(1))
    assert store.get_round("r1").winner == "model_a"


def test_a_refused_write_leaves_the_store_working(store):
    """A write the schema refuses (a winner outside the CHECK list, a round without a session)
    raises, stores nothing, and the next writes and reads work: the shared SQLite connection and
    the pooled PostgreSQL ones come back clean."""
    from sqlalchemy.exc import IntegrityError

    store.save_round(record(1))
    with pytest.raises(IntegrityError):
        store.record_vote("r1", "model_c", 1.0, rated=True, flag=None)
    with pytest.raises(IntegrityError):
        store.save_round(RoundRecord(id="r2", tstamp=1.0, session=None, mode="blind", model_a="x", model_b="y"))
    with pytest.raises(IntegrityError):
        store.save_batch_answers([{"key": "k", "run_id": "run"}])  # many columns NOT NULL
    assert store.record_vote("r1", "tie", 1.0, rated=True, flag=None) is True
    assert store.get_round("r1").winner == "tie" and store.get_round("r2") is None
    assert store.batch_answers("run") == []


def test_neutralise_only_touches_formula_text():
    for bad in ("=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx"):
        assert exports.neutralise(bad) == "'" + bad
    assert exports.neutralise("fine =") == "fine ="
    assert exports.neutralise(-3) == -3


def test_csv_is_utf8_bom_one_row_per_vote_and_injection_safe(store, tmp_path):
    store.save_round(record(1, text_a="=HYPERLINK(\"http://evil\")", question="冬天：能穿多少穿多少"))
    store.record_vote("r1", "tie (bothbad)", 1700000100.0, rated=True, flag=None)
    store.save_round(record(2))  # not voted: not exported
    path = exports.write_csv(store.voted_rounds(), tmp_path / "votes.csv")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(open(path, encoding="utf-8-sig")))
    assert len(rows) == 1
    row = rows[0]
    assert list(row) == list(exports.CSV_COLUMNS)
    assert row["answer_a"].startswith("'=HYPERLINK")
    assert row["question"] == "冬天：能穿多少穿多少"
    assert row["vote"] == "Both bad" and row["winner"] == "tie (bothbad)"
    assert row["tokens_per_s_a"] == "11.25" and row["ttft_b_s"] == "0.3"


def test_jsonl_export_reimports_to_the_same_leaderboard(store, make_store, tmp_path):
    outcomes = ["model_a"] * 6 + ["model_b"] * 2 + ["tie"] * 2
    for i, w in enumerate(outcomes):
        store.save_round(record(i))
        store.record_vote(f"r{i}", w, 1700000100.0 + i, rated=True, flag=None)
    path = exports.write_jsonl(store.voted_rounds(), tmp_path / "battles.jsonl")
    line = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert {"model_a", "model_b", "winner", "tstamp", "anony", "conversation_a", "conversation_b"} <= set(line)
    assert line["anony"] is True and line["conversation_a"][0] == {"role": "user", "content": "问题？"}
    other = make_store()
    assert exports.import_battles(other, path, trust=True) == (10, 0)
    assert exports.import_battles(other, path, trust=True) == (0, 10)  # de-duplicated by id
    before = leaderboard.from_store(store)[0]
    after = leaderboard.from_store(other)[0]
    assert before[["model", "rating", "battles"]].equals(after[["model", "rating", "battles"]])


def test_fastchat_log_without_ids_imports_and_dedupes(store, tmp_path):
    line = {"model_a": "m1", "model_b": "m2", "winner": "model_b", "tstamp": 1.5, "anony": True,
            "conversation_a": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
            "conversation_b": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "b"}]}
    path = tmp_path / "fastchat.jsonl"
    path.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    assert exports.import_battles(store, path) == (1, 1)
    (r,) = store.voted_rounds()
    assert r.rated == 0 and r.mode == "blind" and r.turns[0].b.text == "b"  # shown, not rated by default
    assert r.origin == "import:fastchat.jsonl" and "--trust-import" in r.flag


def test_malformed_line_is_named_and_nothing_is_stored(store, tmp_path):
    good = json.dumps({"id": "ok1", "model_a": "m1", "model_b": "m2", "winner": "tie", "anony": True})
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + '{"model_a": "m1", "winner": "tie"}\n')
    with pytest.raises(exports.ImportError_, match=r"bad.jsonl line 2: model_b: Field required"):
        exports.import_battles(store, path)
    path.write_text(good + "\n\nnot json\n")
    with pytest.raises(exports.ImportError_, match="line 3"):
        exports.import_battles(store, path)
    assert store.voted_rounds() == []


def battle_line(**changes) -> str:
    line = {"model_a": "m1", "model_b": "m2", "winner": "model_a", "tstamp": 2.0, "anony": True,
            "conversation_a": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "conversation_b": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}
    return json.dumps({**line, **changes})


def test_a_file_cannot_rate_itself(store, make_store, tmp_path):
    """A named battle claiming "rated": true, or a blind one whose answer names a model, is not rated
    even with --trust-import; a clean blind battle is rated only with it."""
    path = tmp_path / "claims.jsonl"
    path.write_text("\n".join([
        battle_line(id="named", anony=False, arena={"rated": True, "mode": "named"}),
        battle_line(id="names-itself", model_a="mistral-x", conversation_a=[
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "As Mistral, I say a"}]),
        battle_line(id="clean")]) + "\n")
    exports.import_battles(store, path)
    assert {r.id: r.rated for r in store.voted_rounds()} == {"named": 0, "names-itself": 0, "clean": 0}
    trusted = make_store()
    exports.import_battles(trusted, path, trust=True)
    rounds = {r.id: r for r in trusted.voted_rounds()}
    assert {k: r.rated for k, r in rounds.items()} == {"named": 0, "names-itself": 0, "clean": 1}
    assert "mistral" in rounds["names-itself"].flag


@pytest.mark.parametrize("bad, reason", [
    ('{"model_a": "m1", "model_b": "m2", "winner": "tie", "arena": {"turns": [{}]}}', "arena.turns.0.question"),
    (battle_line(winner="model_c"), "winner"),
    (battle_line(model_a="x" * 201), "model_a"),
    (battle_line(model_a="m\u0000"), "control character"),
    (battle_line(conversation_a=[{"role": "user", "content": "\ud800"}]), "lone surrogate"),
    (battle_line(conversation_a=[{"role": "hacker", "content": "q"}]), "conversation_a.0.role"),
    (battle_line(id="../../etc/passwd"), "id"),
    ("[1, 2]", "line"),
    # a time past 2100 or infinite passed a float check once and then broke every later CSV export
    (battle_line(tstamp=1e20), "tstamp: Input should be less than or equal to 4102444800"),
    (battle_line().replace('"tstamp": 2.0', '"tstamp": Infinity'), "tstamp: Input should be a finite number"),
    (battle_line(arena={"started": 1e20}), "arena.started"),
    (battle_line(tstamp=-5), "tstamp: Input should be greater than or equal to 0"),
])
def test_hostile_lines_are_refused_with_their_line_and_nothing_is_stored(store, tmp_path, bad, reason):
    path = tmp_path / "hostile.jsonl"
    path.write_text(battle_line(id="fine") + "\n" + bad + "\n")
    with pytest.raises(exports.ImportError_, match=rf"hostile.jsonl line 2: .*{reason}"):
        exports.import_battles(store, path)
    assert store.voted_rounds() == []


def test_a_lone_carriage_return_stays_in_its_csv_cell(store, tmp_path):
    """A question with a lone CR and a formula after it: Python's csv module and pandas both read back one
    row with the whole question, and no cell starts with '=' (a spreadsheet would run it)."""
    import pandas as pd

    hostile = "What?\r=cmd|' /C calc'!A0"
    store.save_round(record(1, question=hostile, text_a="ok\rmore\n=1+1"))
    store.record_vote("r1", "tie", 1700000100.0, rated=True, flag=None)
    path = exports.write_csv(store.voted_rounds(), tmp_path / "votes.csv")
    rows = list(csv.reader(open(path, encoding="utf-8-sig", newline="")))
    assert len(rows) == 2 and rows[1][list(exports.CSV_COLUMNS).index("question")] == hostile
    frame = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, dtype=str)
    assert len(frame) == 1 and frame.loc[0, "question"] == hostile
    cells = [c for row in rows for c in row] + [str(v) for v in frame.to_numpy().ravel()]
    assert not any(c.startswith("=") for c in cells)


def test_every_kind_of_round_the_arena_writes_it_can_import(tmp_path, make_store):
    """Whatever the arena stores, its JSONL export imports again, field for field: named and blind, rated and
    flagged, every vote, stopped answers, a context notice, a system prompt, a preset, 20 turns, a held
    round, a queue wait, a 300,000-character answer, a session id a client chose, and model output with a
    text-direction override and a control character (cleaned on the way in)."""
    from types import SimpleNamespace

    from arena.core.config import Prompt
    from arena.core.generation import Notice, Started, Usage
    from arena.rounds.rules import Arena, Limits, Settings
    from arena.web.access import session_of

    from ..rounds.test_rounds import FakeSupervisor

    source = make_store()
    arena = Arena(FakeSupervisor(), source, [Prompt("p1", "c", "Preset?", "Ref.", "s", "en")],
                  Limits(votes_per_minute=1000, questions_per_minute=1000, max_turns=20))
    answer = {"text": "fine", "notice": None, "stop_after": None}

    async def stream(model, messages, params):
        yield Started(0.7)
        if answer["notice"]:
            yield answer["notice"]
        for i, piece in enumerate(answer["text"].split("|")):
            if answer["stop_after"] is not None and i >= answer["stop_after"]:
                await asyncio.sleep(10)
            yield piece
        yield Usage(5, 7)
    arena._stream = stream

    async def play(session, questions, vote, stop=False, **kwargs):
        round_id = None
        for q in questions:
            views = arena.ask(session, q, round_id=round_id, **kwargs)
            first = await views.__anext__()
            round_id = first.round_id
            if stop:
                await asyncio.sleep(0.05)
                await arena.stop(session, round_id)
            async for _ in views:
                pass
        return await arena.vote(session, round_id, vote)

    weird = session_of(SimpleNamespace(session_hash="x" * 300 + "\x07"))
    named = {"mode": "named", "model_a": "qwen-x", "model_b": "smol-y"}

    async def play_all():
        await play("s1", ["Preset?"], "A better", preset_id="p1", **named)
        await play("s1", ["Q?"], "B better", mode="blind")
        answer["text"] = "As SmolLM2|, I \u202eanswer\x07."
        await play("s1", ["Who are you?"], "Tie", mode="blind", hold=True)
        answer.update(text="a|b|c|d", stop_after=2)
        await play(weird, ["Stop me"], "Both bad", stop=True, **named)
        answer.update(text="long " * 60_000, stop_after=None, notice=Notice(3, 100))
        await play("s1", ["Write a lot"], "A better", **named)
        answer.update(text="short", notice=Notice(3, 100))
        await play("s1", [f"turn {i}" for i in range(20)], "Tie",
                   settings=Settings(0.2, 0.5, 64, "Be brief."), **named)
    asyncio.run(play_all())
    path = exports.write_jsonl(source.voted_rounds(), tmp_path / "all.jsonl")
    target = make_store()
    assert exports.import_battles(target, path, trust=True) == (6, 0)
    imported = {r.id: r for r in target.voted_rounds()}
    for original in source.voted_rounds():
        back = imported[original.id]
        assert replace(back, origin="local", rated=original.rated, flag=original.flag) == original
    assert weird.startswith("h-") and len(weird) <= 64


def test_oversized_files_and_invalid_utf8_are_refused(store, tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text(battle_line() + "\n" + " " * 2000)
    with pytest.raises(exports.ImportError_, match="import limit is 0 MB"):
        exports.import_battles(store, big, max_bytes=1000)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(battle_line().encode().replace(b'"q"', b'"\xff"', 1) + b"\n")
    with pytest.raises(exports.ImportError_, match=r"line 1: not UTF-8 text \(byte 0xff"):
        exports.import_battles(store, broken)


def test_leaderboard_can_leave_out_imported_battles(store, tmp_path):
    for i in range(4):
        store.save_round(record(i))
        store.record_vote(f"r{i}", "model_a", 10.0 + i, rated=True, flag=None)
    path = tmp_path / "far.jsonl"
    path.write_text("".join(battle_line(id=f"f{i}", model_a="far1", model_b="far2") + "\n" for i in range(3)))
    exports.import_battles(store, path, trust=True)
    everything = leaderboard.from_store(store)[0]
    local = leaderboard.from_store(store, include_imported=False)[0]
    assert set(everything["model"]) == {"x", "y", "far1", "far2"} and set(local["model"]) == {"x", "y"}


def test_two_stores_racing_on_the_same_rounds_store_one_vote_each(store):
    """Two Store objects on one database stand for two app processes: 8 threads vote every round at
    once, and each round keeps exactly the vote of the one call that returned True."""
    from concurrent.futures import ThreadPoolExecutor

    other = Store(store.url)
    try:
        for i in range(30):
            store.save_round(record(i))
        calls = [(s, f"r{i}", winner) for i in range(30) for s, winner in
                 ((store, "model_a"), (other, "model_b"), (store, "tie"), (other, "tie (bothbad)"))]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda c: c[0].record_vote(c[1], c[2], 1.0, rated=True, flag=None), calls))
        won = {round_id: winner for (_, round_id, winner), ok in zip(calls, results) if ok}
        assert sum(results) == 30 and len(won) == 30
        assert {r.id: r.winner for r in other.voted_rounds()} == won
    finally:
        other.close()


def test_stores_opening_a_new_database_at_once_create_the_schema_once(make_store):
    """Replicas starting together: concurrent CREATE TABLE must not fail any of them."""
    from concurrent.futures import ThreadPoolExecutor

    first = make_store()
    with first._write() as conn:  # back to an empty database, then four stores open it at once
        for table in reversed(list(arena_store.metadata.sorted_tables)):
            table.drop(conn)
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: Store(first.url), range(4)))
    stores[0].save_round(record(1))
    assert all(s.get_round("r1") is not None for s in stores)
    for s in stores:
        s.close()


def test_import_writes_in_chunks_and_counts_only_new_rounds(store):
    for i in range(4):
        store.save_round(record(i))
    assert store.insert_voted_rounds([record(i, winner="tie") for i in range(10)], chunk=3) == 6
    assert store.existing_ids([f"r{i}" for i in range(12)]) == {f"r{i}" for i in range(10)}


def test_batch_tables_keep_or_overwrite_by_key(store):
    store.create_batch_run("run1", 1.0, {"models": ["x"]}, {"cpu": "é"})
    store.create_batch_run("run1", 2.0, {"models": ["changed"]}, {})  # an existing run is kept
    store.set_batch_run_status("run1", "done", 3.0)
    assert {k: store.batch_run("run1")[k] for k in ("created", "status", "finished", "config", "environment")} == \
        {"created": 1.0, "status": "done", "finished": 3.0, "config": {"models": ["x"]}, "environment": {"cpu": "é"}}
    assert [r["id"] for r in store.batch_runs()] == ["run1"] and store.batch_run("nope") is None

    def answer(key: str, model: str, error: str | None = None, text: str = "t") -> dict:
        return {"key": key, "run_id": "run1", "model": model, "preset_id": "p", "repeat": 0, "settings_hash": "h",
                "question": "q", "text": text, "error": error, "batched": 0, "created": 1.0}
    store.save_batch_answers([answer("k2", "y", error="boom"), answer("k1", "x")])
    store.save_batch_answers([answer("k1", "x", text="again")])  # --fresh overwrites by key
    assert [(a["key"], a["text"]) for a in store.batch_answers("run1")] == [("k1", "again"), ("k2", "t")]
    assert store.answered_keys("run1") == {"k1"}

    def pair(pair_id: str, created: float, answer_a: str = "a") -> dict:
        return {"id": pair_id, "source": "run:run1", "run_id": "run1", "language": "en", "question": "q", "model_a": "x",
                "model_b": "y", "answer_a": answer_a, "answer_b": "b", "created": created}
    assert store.save_judge_pairs([pair("p2", 1.0), pair("p1", 2.0)]) == 2
    assert store.save_judge_pairs([pair("p2", 3.0, answer_a="changed")]) == 0  # a stored pair is kept
    assert [(p["id"], p["answer_a"]) for p in store.judge_pairs("run1")] == [("p2", "a"), ("p1", "a")]
    assert [p["id"] for p in store.judge_pairs(ids=["p1"])] == ["p1"] and len(store.judge_pairs()) == 2

    def verdict(pair_id: str, shown: str, label: str) -> dict:
        return {"pair_id": pair_id, "judge": "j", "shown": shown, "label": label, "rationale": "", "reply": "",
                "attempts": 1, "prompt_version": "v1", "created": 1.0}
    store.save_judgments([verdict("p2", "ba", "A"), verdict("p2", "ab", "B"), verdict("p1", "ab", "tie")])
    store.save_judgments([verdict("p2", "ab", "unparsed")])  # a judge asked again overwrites
    assert [(j["pair_id"], j["shown"], j["label"]) for j in store.judgments("j")] == \
        [("p1", "ab", "tie"), ("p2", "ab", "unparsed"), ("p2", "ba", "A")]
    assert [j["pair_id"] for j in store.judgments(pair_ids=["p1"])] == ["p1"] and store.judgments("other") == []
