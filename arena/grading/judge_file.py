"""Read a FastChat-format battle file (our JSONL export, FastChat's logs, hand-typed pairs) into
pairs for the judge. Every line is untrusted: it is validated with pydantic, and the first bad
line refuses the whole file with its line number, as ``import`` does, before any judging."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from arena.core.config import Prompt
from arena.core.language import language_of
from arena.storage.battle_schema import MAX_NAME, MAX_TEXT, Message, Winner


class BattleFileError(ValueError):
    """The file cannot be judged; names the line. Nothing was stored."""


class Battle(BaseModel):
    """The fields of a FastChat clean-battle line that judging needs; others are ignored. Messages are
    the import schema's (battle_schema), so both readers of battle files refuse the same text."""

    model_config = ConfigDict(extra="ignore")
    model_a: str = Field(min_length=1, max_length=MAX_NAME)
    model_b: str = Field(min_length=1, max_length=MAX_NAME)
    winner: Winner | None = None
    conversation_a: list[Message] = Field(min_length=2)
    conversation_b: list[Message] = Field(min_length=2)
    question_id: str | int | None = None
    reference: str | None = Field(default=None, max_length=MAX_TEXT)
    language: Literal["zh", "en"] | None = None

    @field_validator("conversation_a", "conversation_b")
    @classmethod
    def _has_exchange(cls, conv: list[Message]) -> list[Message]:
        if not any(m.role == "user" for m in conv) or not any(m.role == "assistant" for m in conv):
            raise ValueError("needs at least one user and one assistant message")
        return conv


def _side(conv: list[Message]) -> tuple[list[str], list[str]]:
    return [m.content for m in conv if m.role == "user"], [m.content for m in conv if m.role == "assistant"]


def pair_from(battle: Battle, source: str) -> dict:
    """A judge pair: the user turns as the question, each side's assistant turns as its answer
    (turns separated by a rule line, so a multi-turn conversation is judged as a whole)."""
    questions_a, answers_a = _side(battle.conversation_a)
    questions_b, answers_b = _side(battle.conversation_b)
    if questions_a != questions_b:
        raise ValueError("conversation_a and conversation_b ask different questions; they cannot be compared")
    sep = "\n\n---\n\n"
    question = sep.join(questions_a)
    body = [battle.model_a, battle.model_b, question, sep.join(answers_a), sep.join(answers_b), battle.reference]
    return {"id": hashlib.sha256(json.dumps(["file", *body], ensure_ascii=False).encode()).hexdigest()[:32],
            "source": source, "run_id": None, "preset_id": None if battle.question_id is None else str(battle.question_id),
            "repeat": None, "language": language_of(question, battle.language), "question": question,
            "reference": battle.reference, "model_a": battle.model_a, "model_b": battle.model_b,
            "answer_a": sep.join(answers_a), "answer_b": sep.join(answers_b), "human_winner": battle.winner,
            "created": time.time()}


def read_pairs(path: Path) -> list[dict]:
    """All pairs of the file, de-duplicated; the first invalid line raises BattleFileError."""
    path = Path(path)
    if not path.is_file():
        raise BattleFileError(f"{path}: file not found")
    pairs: dict[str, dict] = {}
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                pair = pair_from(Battle.model_validate(data), f"file:{path.name}")
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "line"
                raise BattleFileError(f"{path.name} line {number}: {where}: {first.get('msg')}. Nothing was judged; "
                                      f"fix or delete that line.") from None
            except (ValueError, TypeError) as exc:
                raise BattleFileError(f"{path.name} line {number}: {exc}. Nothing was judged; fix or delete that "
                                      f"line.") from None
            pairs.setdefault(pair["id"], pair)
    if not pairs:
        raise BattleFileError(f"{path.name}: no battles in the file")
    return list(pairs.values())


def with_references(pairs: list[dict], prompts: list[Prompt]) -> list[dict]:
    """Pairs whose ``question_id`` names a preset asking the same question get that preset's reference
    answer and language (our export carries the preset id, not the reference), so a judged export is
    reference-guided like a batch run. A reference already in the file wins; other pairs are unchanged."""
    presets = {p.id: p for p in prompts}
    out = []
    for pair in pairs:
        preset = presets.get(pair.get("preset_id") or "")
        if preset and not pair.get("reference") and preset.question.strip() == pair["question"].strip():
            pair = {**pair, "reference": preset.reference or None,
                    "language": language_of(preset.question, preset.language)}
        out.append(pair)
    return out
