"""The leaderboard people ask for (issue 16): per category and language, style control, retired models.

Pure: the style features (markdown-it, code blocks excluded), the design matrix as FastChat builds it, the
fit recovering an injected length bonus, the language rule. Store and arena: a round's category and language,
stored, filtered, exported and backfilled; retired and vanished models kept and marked. CLI: a battle file
imported with --trust-import, then `leaderboard --category --language` (tables, style control, too few).
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from arena.core import topics
from arena.core.config import Prompt, load_models, started_by_default
from arena.core.outcomes import Winner
from arena.core.records import RoundRecord, SideAnswer, Turn
from arena.ratings import leaderboard, style_control
from arena.ratings.style import features
from arena.rounds.rules import Arena, Limits
from arena.storage import exports
from arena.storage.store import Store

from ..conftest import ROOT
from ..rounds.test_rounds import FakeSupervisor, answered

FEATURES_ZERO = {"length": 0, "headers": 0, "lists": 0, "bold": 0}


def test_style_features_count_markdown_outside_code_only():
    """Proves style.features: ATX and setext headers, list items of both kinds, both bold forms, characters of
    every turn; nothing inside a fenced code block counts as formatting."""
    text = "# Title\n\nSome **bold** and __also__.\n\n- a\n- b\n1. x\n\n```\n# not a header\n**no**\n- no\n```\n"
    assert features([text, "Setext\n======\n"]) == {"length": len(text) + 14, "headers": 2, "lists": 3, "bold": 2}
    assert features(["用中文回答：**是**。"]) == {"length": 12, "headers": 0, "lists": 0, "bold": 1}


def test_design_matrix_is_fastchats():
    """Proves style_control.design against a hand-built case: each battle twice, ±ln 10 model columns, the
    normalised difference (a-b)/(a+b+1) standardised, a win twice, a tie once each way, a loss never."""
    battles = [{"model_a": "x", "model_b": "y", "winner": w, "style_a": {**FEATURES_ZERO, "length": la},
                "style_b": {**FEATURES_ZERO, "length": lb}}
               for w, la, lb in (("model_a", 9, 0), ("tie", 0, 9), ("model_b", 4, 4))]
    x, y = style_control.design(battles, ["x", "y"])
    assert x.shape == (6, 2 + 4)
    assert np.allclose(x[:, 0], math.log(10)) and np.allclose(x[:, 1], -math.log(10))
    diff = np.array([0.9, -0.9, 0.0])
    assert np.allclose(x[:3, 2], (diff - diff.mean()) / diff.std()) and np.allclose(x[3:, 2], x[:3, 2])
    assert np.allclose(x[:, 3:], 0)  # features that never differ stay zero
    assert y.tolist() == [1, 1, 0, 1, 0, 0]


def synthetic_battles(seed: int, bonus: float, n: int = 3000) -> list[dict]:
    """Battles among four models of known ratings; m1 writes four times longer answers. The outcome's log-odds
    are the rating difference plus ``bonus`` times the standardised length difference. The same random draws
    for every ``bonus``, so bonus 0 gives the same battles without the bonus."""
    rng = np.random.default_rng(seed)
    true = {"m0": 950.0, "m1": 1000.0, "m2": 1000.0, "m3": 1050.0}
    mean_length = {"m0": 400, "m1": 1600, "m2": 400, "m3": 400}
    pairs = [tuple(rng.choice(list(true), 2, replace=False)) for _ in range(n)]
    la = np.array([rng.lognormal(math.log(mean_length[a]), 0.5) for a, _ in pairs])
    lb = np.array([rng.lognormal(math.log(mean_length[b]), 0.5) for _, b in pairs])
    d = (la - lb) / (la + lb + 1)
    z = (d - d.mean()) / d.std()
    u = rng.random(n)
    out = []
    for i, (a, b) in enumerate(pairs):
        logit = math.log(10) * (true[a] - true[b]) / 400 + bonus * z[i]
        out.append({"model_a": a, "model_b": b, "winner": "model_a" if u[i] < 1 / (1 + math.exp(-logit)) else "model_b",
                    "style_a": {**FEATURES_ZERO, "length": int(la[i])}, "style_b": {**FEATURES_ZERO, "length": int(lb[i])}})
    return out


def _aggregate(battles: list[dict]) -> list[tuple]:
    counts: dict[tuple, int] = {}
    for b in battles:
        key = (b["model_a"], b["model_b"], b["winner"])
        counts[key] = counts.get(key, 0) + 1
    return [(a, b, w, n, None, 0, None, 0, None, 0, None, 0) for (a, b, w), n in counts.items()]


def _interval(ci: str, rating: float) -> tuple[float, float]:
    up, down = ci.split(" / ")
    return rating - float(down.lstrip("-")), rating + float(up.lstrip("+"))


def test_style_control_recovers_an_injected_length_bonus():
    """Proves the fit: with a length bonus of 0.6 log-odds per SD injected, the length coefficient's 95% interval
    holds 0.6 and the other coefficients stay near 0; the style-controlled ratings equal the plain ratings of the
    same battles without the bonus, within their intervals; the plain ratings with the bonus do not (the
    verbose model gains ~80 points), so the test can fail; that model's rank falls under style control."""
    with_bonus, without = synthetic_battles(0, 0.6), synthetic_battles(0, 0.0)
    plain_bonus, _ = leaderboard.rated_table(_aggregate(with_bonus), rounds=50)
    plain_clean, _ = leaderboard.rated_table(_aggregate(without), rounds=50)
    styled, coefficients = style_control.style_table(with_bonus, plain_bonus, rounds=50)
    length = coefficients.set_index("feature").loc["length"]
    low, high = json.loads(length["coefficient_ci"])
    assert low <= 0.6 <= high, coefficients
    clean = dict(zip(plain_clean["model"], plain_clean["rating"]))
    for _, row in styled.iterrows():
        lo, hi = _interval(row["ci_sc"], row["rating_sc"])
        assert lo <= clean[row["model"]] <= hi, (row["model"], clean, styled)
    inflated = plain_bonus.set_index("model").loc["m1"]
    lo, hi = _interval(inflated["ci_95"], inflated["rating"])
    assert not lo <= clean["m1"] <= hi  # the bonus moved the plain rating out of its own interval
    assert styled.set_index("model").loc["m1", "rank_change"].startswith("↓")


def test_language_of_counts_cjk_characters_against_latin_words():
    """Proves topics.language_of: a declared language wins; otherwise Chinese when CJK characters outnumber Latin
    words, so Chinese around code stays Chinese and an English question quoting Chinese stays English."""
    assert topics.language_of("解释这段代码：def f(x): return x*2") == "zh"
    assert topics.language_of("What does 你好 mean in English?") == "en"
    assert topics.language_of("用Python写一个快速排序") == "zh"
    assert topics.language_of("anything", "zh") == "zh" and topics.language_of("") == "en"
    assert topics.from_fastchat("Chinese") == "zh" and topics.from_fastchat("Japanese") == "japanese"


PROMPTS = [Prompt("p-zh", "logic", "明明和白白谁喜欢谁？", "白白", "s", "zh"),
           Prompt("p-en", "math", "What is 2+2?", "4", "s", "en")]


@pytest.fixture
def arena(tmp_path):
    a = Arena(FakeSupervisor(), Store(tmp_path / "a.db"), PROMPTS, Limits(votes_per_minute=1000))
    yield a
    a.store.close()


def test_a_round_gets_its_category_and_language_and_the_tables_filter_by_them(arena, tmp_path):
    """Proves the round's topic end to end: a preset's category and language, 'typed' for a person's question,
    stored with the round, filtered by the store's aggregates, written to CSV and JSONL (FastChat's language
    names) and read back by an import."""
    rounds = [arena.new_round("s", "blind", "qwen-x", "smol-y", preset_id=p, question=q)
              for p, q in (("p-zh", PROMPTS[0].question), ("p-en", PROMPTS[1].question), (None, "你好吗？今天怎么样"))]
    assert [(r.record.category, r.record.language) for r in rounds] == [("logic", "zh"), ("math", "en"),
                                                                        (topics.TYPED, "zh")]
    for r in rounds:
        turn = Turn(r.record.turns[0].question if r.record.turns else "Q", SideAnswer("a"), SideAnswer("b"))
        arena.store.save_round(replace(r.record, turns=(turn,), winner=Winner("model_a"), vote_tstamp=1.0,
                                       rated=True))
    assert {r[:2] for r in arena.store.topics()} == {("logic", "zh"), ("math", "en"), (topics.TYPED, "zh")}
    assert sum(r[3] for r in arena.store.rating_aggregates("rated", language="zh")) == 2
    assert sum(r[3] for r in arena.store.rating_aggregates("rated", category="math")) == 1
    records = arena.store.voted_rounds()
    csv_path = exports.write_csv(records, tmp_path / "v.csv")
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8-sig")))
    assert sorted((r["category"], r["language"]) for r in rows) == [("logic", "zh"), ("math", "en"), ("typed", "zh")]
    jsonl = exports.write_jsonl(records, tmp_path / "b.jsonl")
    lines = [json.loads(line) for line in open(jsonl, encoding="utf-8")]
    assert sorted(line["language"] for line in lines) == ["Chinese", "Chinese", "English"]
    other = Store(tmp_path / "other.db")
    exports.import_battles(other, jsonl, trust=True)
    assert sorted(r[:2] for r in other.topics()) == sorted(r[:2] for r in arena.store.topics())


def test_rounds_stored_before_topics_are_backfilled(arena):
    """Proves topics.backfill: rounds without category and language (stored by an earlier version) get them from
    their preset or first question; a second pass finds nothing to do."""
    old = answered(arena, preset_id="p-zh")
    typed = answered(arena, preset_id=None)
    assert arena.store.get_round(old.id).language is None
    assert topics.backfill(arena.store, PROMPTS) == 2 and topics.backfill(arena.store, PROMPTS) == 0
    assert (arena.store.get_round(old.id).category, arena.store.get_round(old.id).language) == ("logic", "zh")
    assert arena.store.get_round(typed.id).category == topics.TYPED


def test_retired_and_vanished_models_stay_marked_never_dropped(tmp_path):
    """Proves retirement: a 'retired: true' entry is not started (started_by_default), its battles and those of a
    model gone from the catalog stay in the leaderboard, marked, and in the exports, flagged."""
    catalog_file = tmp_path / "models.yaml"
    catalog_file.write_text("models:\n" + "".join(f"""  - id: {m}
    name: "{m.title()}"
    engine: llamacpp
    source: {{file: /dev/null}}
    quantization: q
    license: l
""" + ("    retired: true\n" if m == "old" else "") for m in ("qwen-x", "smol-y", "old")), encoding="utf-8")
    catalog = load_models(catalog_file)
    assert [m.id for m in started_by_default(catalog)] == ["qwen-x", "smol-y"]
    arena = Arena(FakeSupervisor(), Store(tmp_path / "a.db"), [], Limits(votes_per_minute=1000), catalog=catalog)
    for a, b in (("old", "qwen-x"), ("gone", "smol-y")):
        arena.store.save_round(RoundRecord(id=f"{a}-{b}", tstamp=1.0, session="s", mode="blind", model_a=a, model_b=b,
                                           turns=(Turn("Q", SideAnswer("x"), SideAnswer("y")),),
                                           winner=Winner("model_a"), vote_tstamp=2.0, rated=True))
    assert arena.retired_ids() == {"old", "gone"}
    from arena.web.handlers import Handlers
    names = Handlers(arena).names("en")
    assert names["old"] == "Old (retired)" and names["gone"] == "gone (retired)" and names["qwen-x"] == "Qwen2.5 X"
    plain, _, _ = leaderboard.from_store(arena.store, names)
    assert {"Old (retired)", "gone (retired)"} <= set(plain["model"])
    rows = list(csv.DictReader(open(exports.write_csv(arena.store.voted_rounds(), tmp_path / "v.csv",
                                                      arena.retired_ids()), encoding="utf-8-sig")))
    assert {(r["model_a"], r["retired_a"], r["retired_b"]) for r in rows} == {("old", "1", "0"), ("gone", "1", "0")}


def write_prompts(path: Path) -> Path:
    """PROMPTS as a prompts.yaml, so an imported battle file's questions get their categories."""
    path.write_text("prompts:\n" + "".join(f"""  - id: {p.id}
    category: {p.category}
    question: "{p.question}"
    reference: "{p.reference}"
    source: test
    language: {p.language}
""" for p in PROMPTS), encoding="utf-8")
    return path


def battle_file(path: Path, n: int = 24, models: tuple[str, str] = ("long-md", "plain")) -> Path:
    """A battle file (our JSONL export format) with Chinese logic and English math battles: the first model
    answers long with headers and lists, the second short. Blind, so --trust-import rates them."""
    rng = np.random.default_rng(1)
    records = []
    for i in range(n):
        zh = i % 2 == 0
        question = PROMPTS[0].question if zh else PROMPTS[1].question
        long_md = "# 答案\n\n- 第一点\n- 第二点\n\n**结论**：白白喜欢明明。" * 3 if zh else \
            "# Answer\n\n- first\n- second\n\n**So** it is 4." * 3
        short = "白白。" if zh else "4."
        flip = bool(rng.random() < 0.5)
        a, b = models if flip else models[::-1]
        text_a, text_b = (long_md, short) if flip else (short, long_md)
        winner = "model_a" if (rng.random() < 0.7) == flip else "model_b"
        records.append(RoundRecord(
            id=f"b{i}", tstamp=1_700_000_000.0 + i, session=f"s{i}", mode="blind", model_a=a, model_b=b,
            preset_id="p-zh" if zh else "p-en", turns=(Turn(question, SideAnswer(text_a), SideAnswer(text_b)),),
            winner=Winner(winner), vote_tstamp=1_700_000_100.0 + i, rated=True))
    return exports.write_jsonl(records, path)


def test_cli_leaderboard_by_category_and_language_with_style_control(tmp_path):
    """Proves the CLI on a really imported file: `leaderboard` shows the plain and style-controlled tables and
    the coefficients; --language zh keeps the 12 Chinese battles; --category math --language zh has none."""
    models = tmp_path / "models.yaml"
    models.write_text("models:\n" + "".join(f"""  - id: {m}
    name: "{m}"
    engine: openai
    endpoint: {{base_url: "http://127.0.0.1:9/v1", model: {m}}}
    quantization: none
    license: test
""" for m in ("long-md", "plain")), encoding="utf-8")
    prompts = tmp_path / "prompts.yaml"
    write_prompts(prompts)
    common = ["--models", str(models), "--prompts", str(prompts), "--data-dir", str(tmp_path)]

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "arena", *args, *common], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout
    assert "imported 24 battle(s)" in cli("import", str(battle_file(tmp_path / "b.jsonl")), "--trust-import")
    everything = cli("leaderboard")
    assert "24 rated battles." in everything and "With style control" in everything and "length" in everything
    chinese = cli("leaderboard", "--language", "zh")
    assert "12 rated battles (language zh)." in chinese
    assert "No rated (blind) battles (category math, language zh) yet." in cli("leaderboard", "--category", "math",
                                                                             "--language", "zh")
