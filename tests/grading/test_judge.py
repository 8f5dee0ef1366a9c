"""Unit tests of the judge's pure parts, the resume key, the battle-file validation and the
report's escaping. No model runs here; test_batch.py runs the same code with real models."""
import json
import math

import pytest

from arena.batch.runner import BatchSettings, answer_key, build_pairs, judge_batch, settings_hash
from arena.core.config import ModelConfig, ModelSource
from arena.core.language import language_of
from arena.grading import judge as J
from arena.grading.judge_file import BattleFileError, read_pairs
from arena.serving.engines.base import BatchAnswer


# -- strict parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("reply,label", [
    ("Reason: A names Paris.\nVerdict: [[A]]", "A"),
    ("Reason: B is right.\nVerdict: [[ b ]]", "B"),
    ("两者一样。\nVerdict: [[TIE]]", "tie"),
    ("Both wrong. [[BOTH_BAD]]", "bothbad"),
    ("Both wrong. [[both bad]]", "bothbad"),
    ("A is better. Verdict: [[A]] ... as I said, [[A]]", "A"),   # the same verdict twice is still one verdict
])
def test_a_single_verdict_token_is_read(reply, label):
    """Exactly one distinct verdict token gives that label, whatever the case or spacing inside the brackets."""
    assert J.parse_verdict(reply).label == label


@pytest.mark.parametrize("reply", [
    "A is better.",                                              # no token
    "Verdict: A",                                                # not in the required brackets
    "Verdict: <one of [[A]], [[B]], [[TIE]], [[BOTH_BAD]]>",     # echoing the instructions names four verdicts
    "[[A]] or maybe [[B]]",
    "[[C]]",
    "",
])
def test_anything_else_is_unparseable_never_a_guess(reply):
    """A reply without exactly one verdict is not read as any label (it is retried, then stored unparsed)."""
    assert J.parse_verdict(reply).label is None


def test_rationale_is_kept_without_the_tags():
    """The judge's reason is stored without the 'Reason:'/'Verdict:' scaffolding or the token."""
    parsed = J.parse_verdict("Reason: B gives the right total of 5 cents.\nVerdict: [[B]]")
    assert parsed.rationale == "B gives the right total of 5 cents."


def test_unparseable_reply_is_retried_once_then_stored_unparsed():
    """judge_batch asks again (with the retry message) only for unparseable replies, at most once,
    and stores what stays unparseable as 'unparsed' with attempts=2, never as a win."""
    calls = []
    scripted = [["Verdict: [[A]]", "no idea", "still no idea", "Verdict: [[TIE]]"], ["Verdict: [[B]]", "hmm"]]

    def ask(requests, max_tokens):
        calls.append(requests)
        return [BatchAnswer(text=t) for t in scripted[len(calls) - 1]]

    pair = {"id": "p1", "question": "q", "answer_a": "x", "answer_b": "yy", "reference": None, "language": "en"}
    pair2 = {**pair, "id": "p2"}
    rows = judge_batch(ask, [(pair, "ab"), (pair, "ba"), (pair2, "ab"), (pair2, "ba")], "judge", J.PROMPT_V1)
    assert len(calls) == 2 and len(calls[1]) == 2
    assert "did not contain exactly one verdict" in calls[1][0].messages[-1]["content"]
    assert [(r["label"], r["attempts"]) for r in rows] == [("A", 1), ("B", 2), ("unparsed", 2), ("tie", 1)]
    assert {r["prompt_version"] for r in rows} == {J.PROMPT_V1}


def test_a_failed_judge_call_is_not_a_verdict():
    """An endpoint error is stored as unparsed with attempts=0 (so a resumed run asks again), not retried."""
    rows = judge_batch(lambda reqs, limit: [BatchAnswer(error="cannot connect") for _ in reqs],
                       [({"id": "p", "question": "q", "answer_a": "a", "answer_b": "b", "language": "en"}, "ab")], "j")
    assert rows[0]["label"] == "unparsed" and rows[0]["attempts"] == 0 and rows[0]["reply"] == "cannot connect"


def test_v2_asks_for_the_reason_then_one_word_in_the_same_conversation():
    """v2: turn 1 gets the reason (long limit), turn 2 the one-word choice (short limit) after the judge's
    own reason; an unparseable choice is asked once more; the reason is stored as the rationale."""
    calls = []
    scripted = [["B gives 5 cents, A says 10.", "Both are wrong."],          # turn 1: reasons
                ["B", "A, B, TIE or BOTH_BAD"],                              # turn 2: one choice, one copied list
                ["BOTH_BAD"]]                                                # retry of the copied list

    def ask(requests, max_tokens):
        calls.append((requests, max_tokens))
        return [BatchAnswer(text=t) for t in scripted[len(calls) - 1]]

    pair = {"id": "p1", "question": "q", "answer_a": "x", "answer_b": "yy", "reference": None, "language": "en"}
    rows = judge_batch(ask, [(pair, "ab"), (pair, "ba")], "judge", J.PROMPT_V2, max_tokens=200)
    assert [limit for _, limit in calls] == [200, J.CHOICE_MAX_TOKENS, J.CHOICE_MAX_TOKENS]
    second = calls[1][0][0].messages
    assert second[-2] == {"role": "assistant", "content": "B gives 5 cents, A says 10."}
    assert "one word" in second[-1]["content"] and "[[" not in second[1]["content"]
    assert len(calls[2][0]) == 1 and calls[2][0][0].messages[-2]["content"] == "A, B, TIE or BOTH_BAD"
    assert [(r["label"], r["attempts"], r["rationale"]) for r in rows] == [
        ("B", 1, "B gives 5 cents, A says 10."), ("bothbad", 2, "Both are wrong.")]
    assert {r["prompt_version"] for r in rows} == {J.PROMPT_V2}


def test_v2_failed_first_turn_is_not_asked_for_a_choice():
    """A judge call that fails in turn 1 is stored with attempts 0 and never reaches the choice turn."""
    calls = []

    def ask(requests, max_tokens):
        calls.append(requests)
        return [BatchAnswer(error="cannot connect") if len(calls) == 1 and i == 0 else BatchAnswer(text="A")
                for i, _ in enumerate(requests)]

    pair = {"id": "p", "question": "q", "answer_a": "a", "answer_b": "b", "language": "en"}
    rows = judge_batch(ask, [(pair, "ab"), (pair, "ba")], "j", J.PROMPT_V2)
    assert len(calls[1]) == 1
    assert [(r["label"], r["attempts"]) for r in rows] == [("unparsed", 0), ("A", 1)]


@pytest.mark.parametrize("reply,label", [
    ("A", "A"), ("b", "B"), (" TIE\n", "tie"), ("BOTH_BAD", "bothbad"), ("both bad", "bothbad"),
    ("BOTHBAD", "bothbad"), ("B.", "B"), ("**A**", "A"), ("[[B]]", "B"), ("Verdict: A", "A"), ("Answer B", "B"),
    ("结论：TIE", "tie"), ("回答 A", "A"), ("“B”。", "B"),
])
def test_v2_one_word_choice_is_read(reply, label):
    """The v2 choice is the whole reply, allowing a tag, brackets, emphasis and a final full stop."""
    assert J.parse_choice(reply) == label


@pytest.mark.parametrize("reply", [
    "A, B, TIE or BOTH_BAD",            # the options copied: never read as the first one
    "A、B、TIE、BOTH_BAD",
    "A or B",
    "A is better",
    "Answer A is better than B",
    "I think B",
    "C", "", "   ", "AB", "Verdict:",
])
def test_v2_anything_but_one_choice_is_unparseable(reply):
    """Strict: anything that is not exactly one choice is not read as any label (retried, then unparsed)."""
    assert J.parse_choice(reply) is None


# -- prompts ------------------------------------------------------------------------------------------
def test_prompt_language_reference_and_order():
    """Chinese questions get the Chinese prompt; the reference is shown when present; 'first' is Answer A."""
    zh = J.build_messages("明明和白白谁喜欢谁？", "第一", "第二", "白白喜欢明明。", language_of("明明和白白谁喜欢谁？"))
    assert "【参考答案】\n白白喜欢明明。" in zh[1]["content"] and "你是一位公正的评审" in zh[0]["content"]
    assert zh[1]["content"].index("第一") < zh[1]["content"].index("第二")
    en = J.build_messages("Capital of France?", "Paris", "Lyon", None, "en")
    assert "Reference" not in en[1]["content"] and "[Answer A]\nParis" in en[1]["content"]


# -- both orders ----------------------------------------------------------------------------------------
def test_both_orders_agreeing_keep_the_verdict():
    """(A, B) says A, and (B, A) says B, which is the same model: the verdict stands, consistent."""
    assert J.aggregate("A", "B") == J.Verdict("model_a", True, "agreed")
    assert J.aggregate("bothbad", "bothbad") == J.Verdict("tie (bothbad)", True, "agreed")


def test_disagreeing_orders_are_a_tie_counted_inconsistent():
    """A judge that always picks the first-shown answer gets a tie and an inconsistency, not a win."""
    assert J.aggregate("A", "A") == J.Verdict("tie", False, "inconsistent")
    assert J.aggregate("tie", "bothbad").status == "inconsistent"


def test_an_unparsed_order_makes_the_pair_unparsed():
    """One unparsed order means no verdict at all; a missing order means incomplete."""
    assert J.aggregate("A", "unparsed") == J.Verdict(None, None, "unparsed")
    assert J.aggregate("A", None).status == "incomplete"


# -- agreement, kappa, length baseline ------------------------------------------------------------------
def test_agreement_and_kappa_against_hand_computed_values():
    """Six pairs. With ties: 4/6 agree. Without ties: decisive in both = pairs 1,2,3,5 -> 3/4.
    Kappa: p_o = 4/6; human (A,A,B,B,tie,tie) -> 1/3 each; judge (A,A,A,B,tie,B) -> A 1/2, B 1/3,
    tie 1/6; p_e = 1/3*1/2 + 1/3*1/3 + 1/3*1/6 = 1/3; kappa = (2/3-1/3)/(1-1/3) = 0.5."""
    human = ["A", "A", "B", "B", "tie", "tie"]
    judge = ["A", "A", "A", "B", "tie", "B"]
    result = J.agreement(human, judge)
    assert result.n == 6 and result.with_ties == pytest.approx(4 / 6)
    assert result.n_decisive == 4 and result.without_ties == pytest.approx(3 / 4)
    assert result.kappa == pytest.approx(0.5)
    assert math.isnan(J.cohen_kappa(["A", "A"], ["A", "A"]))  # chance agreement 1: undefined, not 1.0


def test_length_baseline_and_how_often_the_longer_answer_wins():
    """The baseline picks the longer answer; quality() reports how often the judge's decisive verdicts
    went to the longer answer and whether the judge beats the baseline on human-voted pairs."""
    assert J.longer_wins("short", "much longer") == "B" and J.longer_wins("same", "same") == "tie"
    pairs = [  # human says A every time; A is the shorter answer in pairs 1-3
        {"id": "1", "answer_a": "a", "answer_b": "bbbb", "human_winner": "model_a"},
        {"id": "2", "answer_a": "a", "answer_b": "bbbb", "human_winner": "model_a"},
        {"id": "3", "answer_a": "a", "answer_b": "bbbb", "human_winner": "model_a"},
        {"id": "4", "answer_a": "aaaa", "answer_b": "b", "human_winner": "model_a"},
    ]
    verdicts = {"1": J.aggregate("A", "B"), "2": J.aggregate("A", "B"), "3": J.aggregate("B", "A"),
                "4": J.aggregate("A", "A")}
    q = J.quality(pairs, verdicts)
    assert q.inconsistent == 1 and q.inconsistency_rate == pytest.approx(0.25)
    assert q.longer_wins_n == 3 and q.longer_wins_rate == pytest.approx(1 / 3)  # judge picked the longer once
    assert q.judge_vs_human.with_ties == pytest.approx(0.5) and q.length_vs_human.with_ties == pytest.approx(0.25)
    assert q.beats_length_baseline is True


def test_win_rates_and_judge_rows_leave_unparsed_out():
    """Win = 1, tie = 0.5; an unparsed pair counts for nobody; rows feed the Bradley-Terry table."""
    pairs = [{"id": str(i), "model_a": "m1", "model_b": "m2"} for i in range(4)]
    verdicts = {"0": J.aggregate("A", "B"), "1": J.aggregate("A", "B"), "2": J.aggregate("A", "A"),
                "3": J.aggregate("A", "unparsed")}
    rates = J.win_rates(pairs, verdicts)
    assert rates["m1"][0] == pytest.approx(2.5 / 3) and rates["m1"][3] == 3
    assert rates["m1"][1] <= rates["m1"][0] <= rates["m1"][2]
    rows = J.judge_rows(pairs, verdicts)
    assert sorted((a, b, w, n) for a, b, w, n, *_ in rows) == [("m1", "m2", "model_a", 2), ("m1", "m2", "tie", 1)]


# -- the resume key -------------------------------------------------------------------------------------
def _model(**changes) -> ModelConfig:
    base = dict(id="m", name="M", engine="llamacpp", source=ModelSource(file="/x.gguf"), quantization="q",
                license="l", generation={"repeat_penalty": 1.1})
    return ModelConfig(**{**base, **changes})


def test_resume_key_changes_with_everything_an_answer_depends_on():
    """The key differs when run, model, preset, settings, model entry, question, seed or repeat differ,
    and is equal for the same inputs (so a resumed run finds its stored answers)."""
    s = BatchSettings()
    digest = settings_hash(s, _model(), "q?")
    base = answer_key("r1", "m", "p", digest, 0, 0)
    assert base == answer_key("r1", "m", "p", settings_hash(BatchSettings(), _model(), "q?"), 0, 0)
    variants = [answer_key("r2", "m", "p", digest, 0, 0), answer_key("r1", "m2", "p", digest, 0, 0),
                answer_key("r1", "m", "p2", digest, 0, 0), answer_key("r1", "m", "p", digest, 1, 0),
                answer_key("r1", "m", "p", digest, 0, 1),
                answer_key("r1", "m", "p", settings_hash(BatchSettings(temperature=0.7), _model(), "q?"), 0, 0),
                answer_key("r1", "m", "p", settings_hash(s, _model(generation={}), "q?"), 0, 0),
                answer_key("r1", "m", "p", settings_hash(s, _model(), "q changed?"), 0, 0)]
    assert len({base, *variants}) == len(variants) + 1
    # batch size and repeats count do not change what one answer is
    assert settings_hash(BatchSettings(batch_size=2, repeats=3), _model(), "q?") == digest


def test_renaming_a_model_or_rewording_its_description_keeps_its_answers():
    """Display fields (name, quantization text, license, identity words, install hint) do not change an
    answer: a run resumed after renaming a model asks nothing again (before, it asked everything again and
    the report showed every answer twice)."""
    digest = settings_hash(BatchSettings(), _model(), "q?")
    for shown in (dict(name="M renamed"), dict(quantization="Q4_K_M, 4-bit"), dict(license="MIT"),
                  dict(identity_words=("em",)), dict(install="scripts/x.sh")):
        assert settings_hash(BatchSettings(), _model(**shown), "q?") == digest, shown
    assert settings_hash(BatchSettings(), _model(source=ModelSource(file="/other.gguf")), "q?") != digest


def test_pairs_skip_failed_answers_and_follow_model_order():
    """Every model pair per preset is judged, in the run's model order, except where an answer failed."""
    config = {"models": ["m1", "m2", "m3"], "settings": {"repeats": 1},
              "presets": [{"id": "p", "question": "q", "reference": "r", "language": "en"}]}
    answers = [{"model": m, "preset_id": "p", "repeat": 0, "text": m, "error": "boom" if m == "m3" else None}
               for m in ("m1", "m2", "m3")]
    pairs = build_pairs("run", config, answers)
    assert [(p["model_a"], p["model_b"]) for p in pairs] == [("m1", "m2")] and pairs[0]["reference"] == "r"


# -- battle files ---------------------------------------------------------------------------------------
def _battle(**changes) -> str:
    line = {"model_a": "x", "model_b": "y", "winner": "model_a",
            "conversation_a": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "ans a"}],
            "conversation_b": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "ans b"}]}
    line.update(changes)
    return json.dumps(line)


def test_battle_file_lines_become_pairs_with_the_human_winner(tmp_path):
    """A FastChat line gives a pair with the question, both answers and the human vote; duplicates merge."""
    f = tmp_path / "b.jsonl"
    f.write_text(_battle() + "\n\n" + _battle() + "\n" + _battle(winner="tie (bothbad)", model_b="z") + "\n")
    pairs = read_pairs(f)
    assert len(pairs) == 2 and pairs[0]["question"] == "Q" and pairs[0]["answer_b"] == "ans b"
    assert pairs[0]["human_winner"] == "model_a" and pairs[1]["human_winner"] == "tie (bothbad)"


@pytest.mark.parametrize("bad,expect", [
    ("not json", "line 2"),
    ('["a list"]', "line 2"),
    (_battle(winner="model_c"), "line 2: winner"),
    (_battle(conversation_a=[{"role": "user", "content": "Q"}]), "line 2: conversation_a"),
    (_battle(conversation_b=[{"role": "hacker", "content": "Q"}, {"role": "assistant", "content": "x"}]), "line 2"),
    (_battle(conversation_b=[{"role": "user", "content": "other"}, {"role": "assistant", "content": "x"}]),
     "different questions"),
])
def test_corrupt_or_foreign_battle_files_are_refused_with_the_line_number(tmp_path, bad, expect):
    """The first bad line refuses the whole file, naming the line; nothing is judged."""
    f = tmp_path / "b.jsonl"
    f.write_text(_battle() + "\n" + bad + "\n")
    with pytest.raises(BattleFileError, match=expect):
        read_pairs(f)


def test_an_exported_preset_battle_gets_its_reference_from_prompts_yaml():
    """Our export carries the preset id, not the reference: with_references adds the preset's reference and
    language when the question is the preset's, and leaves a changed question or a file's own reference alone."""
    from arena.core.config import Prompt
    from arena.grading.judge_file import with_references

    preset = Prompt("en-1", "c", "Which is heavier?", "Neither.", "team", "en")
    base = {"id": "x", "preset_id": "en-1", "question": "Which is heavier?", "reference": None, "language": "zh"}
    same, edited, own = with_references([base, {**base, "question": "Which is lighter?"},
                                         {**base, "reference": "file's own"}], [preset])
    assert (same["reference"], same["language"]) == ("Neither.", "en")
    assert edited["reference"] is None and own["reference"] == "file's own"


def test_verdict_parsing_of_hostile_replies_is_linear():
    """A judge's reply is model output: "verdict", 5,000 spaces and a letter is not a choice, and 20,000 blank
    lines are no rationale. (A regular expression took 7.8 s on 800 spaces, and hours on these: pytest's
    timeout would fail this test.)"""
    assert J.parse_choice("verdict" + " " * 5000 + "x") is None
    assert J.parse_choice("Verdict:" + " " * 5000 + "[[B]]") == "B"
    parsed = J.parse_verdict("Reason:" + " " * 5000 + "fine\n" + "\n" * 20000 + "Verdict: [[A]]")
    assert parsed.label == "A" and parsed.rationale == "fine"
