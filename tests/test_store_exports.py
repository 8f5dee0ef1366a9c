"""Unit: SQLite round trip, exactly one vote per round, CSV escaping, JSONL export/import."""
import csv
import json

import pytest

from arena import exports, leaderboard
from arena.store import RoundRecord, Store


def record(i: int, winner: str | None = None, mode: str = "blind", a: str = "x", b: str = "y",
           text_a: str = "答案A", question: str = "问题？") -> RoundRecord:
    answer = lambda t: {"text": t, "error": None, "stopped": False, "ttft_s": 0.2, "total_s": 1.0,  # noqa: E731
                        "output_tokens": 10, "tokens_per_s": 11.25}
    r = RoundRecord(id=f"r{i}", tstamp=1700000000.0 + i, session="s1", mode=mode, model_a=a, model_b=b,
                    model_a_info={"name": a.upper(), "engine": "llamacpp", "quantization": "Q4"},
                    model_b_info={"name": b.upper(), "engine": "llamacpp", "quantization": "Q4"},
                    settings={"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "system_prompt": ""},
                    turns=[{"question": question, "a": answer(text_a), "b": answer("B says")}],
                    ttft_a=0.2, ttft_b=0.3, tps_a=11.25, tps_b=20.0)
    return r


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "arena.db")
    yield s
    s.close()


def test_round_trip_keeps_every_field(store):
    r = record(1)
    store.save_round(r)
    back = store.get_round("r1")
    assert back == r
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_exactly_one_vote_per_round(store):
    store.save_round(record(1))
    assert store.record_vote("r1", "model_a", 1.0, rated=True, flag=None) is True
    assert store.record_vote("r1", "model_b", 2.0, rated=True, flag=None) is False
    assert store.get_round("r1").winner == "model_a"
    # saving the round again (a late turn) must not erase the vote
    store.save_round(record(1))
    assert store.get_round("r1").winner == "model_a"


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


def test_jsonl_export_reimports_to_the_same_leaderboard(store, tmp_path):
    outcomes = ["model_a"] * 6 + ["model_b"] * 2 + ["tie"] * 2
    for i, w in enumerate(outcomes):
        store.save_round(record(i))
        store.record_vote(f"r{i}", w, 1700000100.0 + i, rated=True, flag=None)
    path = exports.write_jsonl(store.voted_rounds(), tmp_path / "battles.jsonl")
    line = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert {"model_a", "model_b", "winner", "tstamp", "anony", "conversation_a", "conversation_b"} <= set(line)
    assert line["anony"] is True and line["conversation_a"][0] == {"role": "user", "content": "问题？"}
    other = Store(tmp_path / "other.db")
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
    assert r.rated == 0 and r.mode == "blind" and r.turns[0]["b"]["text"] == "b"  # shown, not rated by default
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


def test_a_file_cannot_rate_itself(store, tmp_path):
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
    trusted = Store(tmp_path / "trusted.db")
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
])
def test_hostile_lines_are_refused_with_their_line_and_nothing_is_stored(store, tmp_path, bad, reason):
    path = tmp_path / "hostile.jsonl"
    path.write_text(battle_line(id="fine") + "\n" + bad + "\n")
    with pytest.raises(exports.ImportError_, match=rf"hostile.jsonl line 2: .*{reason}"):
        exports.import_battles(store, path)
    assert store.voted_rounds() == []


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
