"""bench/heldout: the held-out questions load as presets, as a batch run reads them."""
from pathlib import Path

from arena.core.config import load_mt_bench

HELDOUT = Path(__file__).resolve().parents[2] / "bench" / "heldout" / "question.jsonl"


def test_the_held_out_questions_load_thirty_per_language_each_with_a_reference():
    """Proves the file stays usable: 60 presets with unique ids, 30 per language, every one with a reference,
    in the categories its README counts."""
    prompts = load_mt_bench(HELDOUT)
    assert len(prompts) == 60 and len({p.id for p in prompts}) == 60
    assert sorted(p.language for p in prompts) == ["en"] * 30 + ["zh"] * 30
    assert all(p.reference and p.reference.strip() for p in prompts)
    counts = {}
    for p in prompts:
        counts[p.category] = counts.get(p.category, 0) + 1
    assert counts == {f"{kind}-{lang}": n for lang in ("en", "zh")
                      for kind, n in (("open", 16), ("math", 6), ("choice", 4), ("yesno", 4))}


def test_every_held_out_answer_is_labelled_and_grader_check_reads_them():
    """Proves the labelled set is whole: each of the 600 answers has exactly one first-pass label by the written
    rule, the second pass labels a subset of them, and grader-check's loader joins them with nothing dropped."""
    import json

    from arena.batch import grader_check as GC
    from arena.grading.calibration import LABELS

    folder = HELDOUT.parent
    answers = [json.loads(line) for line in open(folder / "answers.jsonl", encoding="utf-8")]
    first = [json.loads(line) for line in open(folder / "labels-pass1.jsonl", encoding="utf-8")]
    second = [json.loads(line) for line in open(folder / "labels-pass2.jsonl", encoding="utf-8")]
    ids = {a["id"] for a in answers}
    assert len(answers) == len(ids) == 600 and {a["question_id"] for a in answers} == {p.id for p in load_mt_bench(HELDOUT)}
    assert sorted(r["id"] for r in first) == sorted(ids) and all(r["label"] in LABELS for r in first + second)
    assert {r["id"] for r in second} <= ids and len(second) == 80
    items = GC.heldout()
    assert len(items) == 600 and sum(i.correct for i in items) == sum(r["label"] == "correct" for r in first)
    assert 0 < len(GC.model_graded(items)) < 600  # the open answers only: a rule checks the others
