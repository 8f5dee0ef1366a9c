"""The question sets people already use: FastChat's MT-Bench ``question.jsonl`` (and ``reference_answer/``) as
presets; a multi-turn question asks its second turn as a follow-up in the same round (page and API) and in
batch runs (real SmolLM2 workers, the second turn's conversation holding the model's own first answer)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from arena.batch.runner import BatchRunner, BatchSettings
from arena.core.config import ConfigError, load_prompts
from arena.core.generation import Usage
from arena.rounds.rules import Arena, Limits
from arena.storage.store import Store

from ..batch.test_batch import running  # noqa: F401  (the module's real SmolLM2 workers)
from ..rounds.test_rounds import FakeSupervisor

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write one sentence about Hawaii.",
                                                        "Now rewrite it starting every word with A."]},
    {"question_id": 111, "category": "math", "turns": ["What is 3 + 4? Answer with the number.",
                                                     "And times 2?"]},
    {"question_id": 130, "category": "reasoning", "turns": ["小明比小红高，小红比小刚高。谁最矮？"],
     "reference": ["小刚"]},
]


def mt_bench(tmp_path: Path, lines: list[str] | None = None) -> Path:
    folder = tmp_path / "mt_bench"
    (folder / "reference_answer").mkdir(parents=True, exist_ok=True)
    path = folder / "question.jsonl"
    path.write_text("\n".join(lines or [json.dumps(q, ensure_ascii=False) for q in QUESTIONS]) + "\n",
                    encoding="utf-8")
    (folder / "reference_answer" / "gpt-4.jsonl").write_text(json.dumps(
        {"question_id": 111, "answer_id": "x", "model_id": "gpt-4",
         "choices": [{"index": 0, "turns": ["7", "14"]}], "tstamp": 1.0}) + "\n", encoding="utf-8")
    return path


def test_mt_bench_questions_load_as_presets_with_follow_ups_and_references(tmp_path):
    """Proves the reader: ids, categories, first turn as the question, later turns as follow-ups, a reference from
    reference_answer/ (first turn of the first choice) or from the line itself, the language read from the text."""
    prompts = {p.id: p for p in load_prompts(mt_bench(tmp_path))}
    assert list(prompts) == ["81", "111", "130"]
    assert prompts["81"].followups == ("Now rewrite it starting every word with A.",) and prompts["81"].reference == ""
    assert prompts["111"].reference == "7" and prompts["111"].category == "math"
    assert prompts["130"].reference == "小刚" and prompts["130"].language == "zh" and not prompts["130"].followups
    assert [t.id for t in prompts["81"].turns()] == ["81", "81-turn2"] and prompts["81"].turns()[1].follows == "81"


@pytest.mark.parametrize("line, problem", [
    ('{"question_id": 1, "category": "x", "turns": []}', "'turns' must be a list of one or more questions"),
    ('{"question_id": 1, "turns": ["q"]}', "'category' must be a non-empty string"),
    ('{"question_id": 1, "category": "x", "turns": ["q"]', "not a JSON object"),
    ('["not", "an", "object"]', "not a JSON object"),
])
def test_a_wrong_line_is_refused_with_its_number_and_nothing_is_loaded(tmp_path, line, problem):
    """Proves the refusals: the first bad line is named by file and number, with what is wrong."""
    good = json.dumps(QUESTIONS[0])
    with pytest.raises(ConfigError, match=r"question\.jsonl:2: " + problem.replace("(", r"\(").replace(")", r"\)")):
        load_prompts(mt_bench(tmp_path, [good, line, good]))


def test_a_multi_turn_preset_asks_its_second_turn_in_the_same_round(tmp_path):
    """Proves the page's and API's path (Arena.ask): a two-turn preset streams both turns into one round, the
    second turn's conversation holding each model's own first answer; Stop during the first ends the series."""
    prompts = load_prompts(mt_bench(tmp_path))
    arena = Arena(FakeSupervisor(), Store(tmp_path / "a.db"), prompts, Limits(votes_per_minute=100))
    seen: list[list[dict]] = []

    async def fake_stream(model, messages, params):
        seen.append(messages)
        yield f"{model.id} answer {len(messages)}"
        yield Usage(1, 1)
    arena._stream = fake_stream

    async def ask():
        last = None
        async for view in arena.ask("s", prompts[0].question, mode="named", model_a="qwen-x", model_b="smol-y",
                                    preset_id="81"):
            last = view
        return last
    view = asyncio.run(ask())
    record = arena.store.get_round(view.round_id)
    assert [t.question for t in record.turns] == [prompts[0].question, prompts[0].followups[0]]
    second = [m for m in seen if len(m) == 3]
    assert len(second) == 2 and {m[1]["content"] for m in second} == {"qwen-x answer 1", "smol-y answer 1"}
    assert record.category == "writing" and record.language == "en"


def test_a_batch_run_asks_the_second_turn_after_the_first_with_its_answer(running, tmp_path):  # noqa: F811
    """Proves batch runs on real SmolLM2 workers: each model answers turn 1, then turn 2 with its own turn-1
    answer in the conversation; both turns are stored, paired and reported."""
    supervisor, store, _ = running
    prompts = load_prompts(mt_bench(tmp_path))
    runner = BatchRunner(supervisor, store, prompts)
    plan = runner.plan(["smol-a", "smol-b"], ["111"], settings=BatchSettings(max_new_tokens=16, judge_max_tokens=16),
                       judge="none", method="assert")
    assert [p.id for p in plan.presets] == ["111", "111-turn2"]
    assert runner.run(plan) == "done"
    answers = {(a["model"], a["preset_id"]): a for a in store.batch_answers(plan.run_id)}
    assert len(answers) == 4 and all(a["error"] is None for a in answers.values())
    for model in ("smol-a", "smol-b"):
        first, second = answers[(model, "111")], answers[(model, "111-turn2")]
        # the second turn's prompt held the first question and answer: many more prompt tokens
        assert second["prompt_tokens"] > first["prompt_tokens"] + first["output_tokens"]
        assert second["question"] == "And times 2?"
    assert {p["preset_id"] for p in store.judge_pairs(plan.run_id)} == {"111", "111-turn2"}
