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
    assert exports.import_battles(other, path) == (10, 0)
    assert exports.import_battles(other, path) == (0, 10)  # de-duplicated by id
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
    assert r.rated == 1 and r.mode == "blind" and r.turns[0]["b"]["text"] == "b"


def test_malformed_line_is_named_and_nothing_is_stored(store, tmp_path):
    good = json.dumps({"id": "ok1", "model_a": "m1", "model_b": "m2", "winner": "tie", "anony": True})
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + '{"model_a": "m1", "winner": "tie"}\n')
    with pytest.raises(exports.ImportError_, match=r"bad.jsonl line 2: missing field\(s\) \['model_b'\]"):
        exports.import_battles(store, path)
    path.write_text(good + "\n\nnot json\n")
    with pytest.raises(exports.ImportError_, match="line 3"):
        exports.import_battles(store, path)
    assert store.voted_rounds() == []
