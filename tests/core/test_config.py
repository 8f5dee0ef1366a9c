"""Unit: models.yaml and prompts.yaml are validated with errors naming file, line and entry."""
from pathlib import Path

import pytest

from arena.core.config import ConfigError, load_models, load_prompts

ROOT = Path(__file__).resolve().parents[2]
GOOD = """models:
  - id: m1
    name: M1
    engine: llamacpp
    source: {file: m1.gguf}
    quantization: Q4
    license: MIT
"""


def write(tmp_path: Path, text: str, name: str = "models.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_catalog_lists_the_default_pair_first():
    models = load_models(ROOT / "models.yaml")
    assert [m.id for m in models[:2]] == ["qwen2.5-coder-0.5b-q4km", "smollm2-135m-q4_1"]
    qwen = models[0]
    assert qwen.source.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert len(qwen.source.parts) == 6


def test_shipped_prompts_start_with_the_five_report_puzzles_and_cover_categories():
    prompts = load_prompts(ROOT / "prompts.yaml")
    assert prompts[0].question.startswith("请说出以下两句话区别在哪里？1、冬天")
    assert prompts[4].question.startswith("领导：你这是什么意思？")
    assert all(p.reference for p in prompts)
    assert len(prompts) >= 20
    assert len({p.category for p in prompts}) >= 6
    assert {p.language for p in prompts} == {"zh", "en"}


def test_relative_file_source_resolves_next_to_the_catalog(tmp_path):
    (model,) = load_models(write(tmp_path, GOOD))
    assert model.source.file == str(tmp_path / "m1.gguf")


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace("    license: MIT\n", ""), ["models.yaml:2", "model 'm1'", "missing required key 'license'"]),
    (GOOD + GOOD[len("models:\n"):], ["models.yaml:8", "duplicate id", "line 2"]),
    (GOOD.replace("llamacpp", "tensorrt"), ["models.yaml:2", "unknown engine 'tensorrt'", "llamacpp"]),
    (GOOD.replace("source: {file: m1.gguf}", "source: {}"), ["model 'm1' source", "exactly one of"]),
    (GOOD.replace("source: {file: m1.gguf}", "source: {file: a.gguf, sha256: xyz}"), ["64 hex digits"]),
    (GOOD + "    colour: red\n", ["unknown key(s) ['colour']"]),
    (GOOD + "    generation: {temprature: 1}\n", ["unknown generation key(s) ['temprature']"]),
    ("models:\n  - id: m1\n    name: [unclosed\n", ["models.yaml: invalid YAML at line"]),
    ("models:\n  - id: a\n    id: b\n", ["line 3: duplicate key 'id'"]),
    ("models: {}\n", ["expected a top-level 'models:' list"]),
])
def test_bad_catalog_names_file_line_entry_and_problem(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_models(write(tmp_path, text))
    for fragment in expected:
        assert fragment in str(err.value)


def test_bad_prompts_name_the_entry(tmp_path):
    text = "prompts:\n  - id: p1\n    category: c\n    question: q\n    source: s\n"
    with pytest.raises(ConfigError, match=r"prompts.yaml:2: prompt 'p1': missing required key 'reference'"):
        load_prompts(write(tmp_path, text, "prompts.yaml"))
    dup = "prompts:\n" + "  - {id: p1, category: c, question: q, reference: r, source: s}\n" * 2
    with pytest.raises(ConfigError, match="duplicate id"):
        load_prompts(write(tmp_path, dup, "prompts.yaml"))


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_models(tmp_path / "nope.yaml")
