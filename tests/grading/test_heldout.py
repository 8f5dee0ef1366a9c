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
