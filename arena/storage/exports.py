"""Votes out (CSV for people, FastChat JSONL for tools) and battles in (JSONL import).

CSV is what a user opens in Excel: UTF-8 with a BOM so Chinese shows correctly,
and text cells that a spreadsheet would run as a formula are neutralised.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from arena.core.config import ModelConfig, Prompt
from arena.core.outcomes import Winner
from arena.core.records import ModelInfo, RoundRecord, Settings, Turn, fallback_model, self_identification
from arena.core.topics import FASTCHAT_LANGUAGE, from_fastchat, topic
from arena.storage.battle_schema import BattleLine, problem_of
from arena.storage.store import Store

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
JUDGE_PREFIX = "arena_user_"  # FastChat's battle logs name the voter so; the rest is our session id
TURN_SEPARATOR = "\n\n---\n\n"
MAX_IMPORT_BYTES = 20_000_000

# Column -> meaning; the README's CSV table is generated from the same words.
CSV_COLUMNS = {
    "round_id": "server-side id of the round",
    "voted_at": "when the vote was stored (UTC, ISO 8601)",
    "started_at": "when the round's first question was sent (UTC)",
    "session": "browser or API session that voted",
    "mode": "named (side by side) or blind (battle)",
    "rated": "1 if the vote feeds the leaderboard (blind, not flagged)",
    "flag": "why a blind vote is not rated, e.g. an answer named its model",
    "vote": "A better, B better, Tie or Both bad",
    "winner": "the same in FastChat's words: model_a, model_b, tie, tie (bothbad)",
    "model_a": "model id of side A (models.yaml)", "model_b": "model id of side B",
    "name_a": "display name of A", "name_b": "display name of B",
    "engine_a": "engine of A", "engine_b": "engine of B",
    "quantization_a": "quantization of A", "quantization_b": "quantization of B",
    "preset_id": "prompts.yaml id if the first question was a preset",
    "category": "the preset's category, or typed for a question a person wrote",
    "language": "zh or en: the preset's language, else Chinese when CJK characters outnumber Latin words",
    "turns": "number of questions in the round",
    "attempts": "answers each question got, separated by commas: 1, or more after Regenerate (the vote is on the "
                "last)",
    "question": "the questions, separated by a line of ---",
    "answer_a": "A's answers, separated by a line of ---", "answer_b": "B's answers",
    "ttft_a_s": "A's time to first token in the first turn, seconds", "ttft_b_s": "same for B",
    "total_a_s": "A's total answer time summed over turns, seconds", "total_b_s": "same for B",
    "tokens_a": "A's output tokens summed over turns", "tokens_b": "same for B",
    "tokens_per_s_a": "A's decode speed: tokens after the first / time after the first token",
    "tokens_per_s_b": "same for B",
    "rss_a_mb": "resident memory of A's worker when the round started, MB (empty for remote models)",
    "rss_b_mb": "same for B",
    "retired_a": "1 if A's model is retired or gone from models.yaml (its battle stays, marked)",
    "retired_b": "same for B",
    "temperature": "sampling temperature (both models)", "top_p": "nucleus sampling top-p",
    "max_new_tokens": "answer length limit", "system_prompt": "system prompt, empty if none",
}


def neutralise(value: Any) -> Any:
    """Prefix a quote to text a spreadsheet would evaluate (CSV/formula injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _iso(tstamp: float | None) -> str | None:
    return datetime.fromtimestamp(tstamp, timezone.utc).isoformat(timespec="seconds") if tstamp else None


def _sum(record: RoundRecord, side: str, key: str) -> float | None:
    values = [getattr(t.side(side), key) for t in record.turns if getattr(t.side(side), key) is not None]
    return round(sum(values), 3) if values else None


def votes_frame(records: list[RoundRecord], retired: set[str] = frozenset()) -> pd.DataFrame:
    """One row per voted round; ``retired``: model ids to mark (retired, or gone from the catalog)."""
    rows = []
    for r in records:
        settings = r.settings
        row = {
            "round_id": r.id, "voted_at": _iso(r.vote_tstamp), "started_at": _iso(r.tstamp), "session": r.session,
            "mode": r.mode, "rated": int(r.rated), "flag": r.flag or "", "vote": r.winner.label if r.winner else "",
            "winner": r.winner.value if r.winner else "", "model_a": r.model_a, "model_b": r.model_b,
            "preset_id": r.preset_id or "", "category": r.category or "", "language": r.language or "",
            "turns": len(r.turns), "attempts": ",".join(str(t.attempt) for t in r.turns),
            "question": TURN_SEPARATOR.join(t.question for t in r.turns),
            "temperature": settings.temperature, "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens, "system_prompt": settings.system_prompt,
        }
        for side in "ab":
            info = r.info(side)
            row.update({f"name_{side}": info.name, f"engine_{side}": info.engine or "",
                        f"quantization_{side}": info.quantization or "",
                        f"answer_{side}": TURN_SEPARATOR.join(t.side(side).text for t in r.turns),
                        f"ttft_{side}_s": getattr(r, f"ttft_{side}"), f"total_{side}_s": _sum(r, side, "total_s"),
                        f"tokens_{side}": _sum(r, side, "output_tokens"),
                        f"tokens_per_s_{side}": getattr(r, f"tps_{side}"),
                        f"rss_{side}_mb": round(info.rss_mb) if info.rss_mb else None,
                        f"retired_{side}": int(r.model(side) in retired)})
        rows.append(row)
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def write_csv(records: list[RoundRecord], path: Path, retired: set[str] = frozenset()) -> Path:
    """Every text cell quoted: a carriage return or line feed inside a question or an answer stays in its
    cell (unquoted, a lone CR starts a new row in Excel and Python's csv reader, and that row's first
    cell could be a live formula); numbers stay unquoted."""
    frame = votes_frame(records, retired)
    frame = frame.map(neutralise)
    frame.to_csv(path, index=False, encoding="utf-8-sig", quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
    return path


def battle_json(record: RoundRecord, retired: set[str] = frozenset()) -> dict:
    """One battle in FastChat's clean-battle format, plus our timings under 'arena' (and which of its models
    are retired)."""
    return {
        "id": record.id, "model_a": record.model_a, "model_b": record.model_b,
        "winner": record.winner.value if record.winner else None,
        "judge": JUDGE_PREFIX + record.session, "turn": len(record.turns), "anony": record.mode == "blind",
        "tstamp": record.vote_tstamp, "conversation_a": record.conversation("a"),
        "conversation_b": record.conversation("b"), "question_id": record.preset_id,
        "language": FASTCHAT_LANGUAGE.get(record.language or "", record.language), "category": record.category,
        "arena": {"mode": record.mode, "rated": bool(record.rated), "flag": record.flag, "started": record.tstamp,
                  "settings": record.settings.to_json(), "model_a_info": record.model_a_info.to_json(),
                  "model_b_info": record.model_b_info.to_json(), "turns": [t.to_json() for t in record.turns],
                  "attempts": [t.attempt for t in record.turns],
                  "hold": record.hold, "retired": [m for m in (record.model_a, record.model_b) if m in retired],
                  "ttft_a": record.ttft_a, "ttft_b": record.ttft_b, "tps_a": record.tps_a, "tps_b": record.tps_b},
    }


def write_jsonl(records: list[RoundRecord], path: Path, retired: set[str] = frozenset()) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(battle_json(record, retired), ensure_ascii=False) + "\n")
    return path


class ImportError_(ValueError):
    """A battle file cannot be imported; names the line. Nothing was stored."""


def _turns_from_conversations(conv_a: list[dict], conv_b: list[dict]) -> list[Turn]:
    def pairs(conv: list[dict]) -> list[tuple[str, str]]:
        out, question = [], None
        for message in conv:
            if message["role"] == "user":
                question = message["content"]
            elif message["role"] == "assistant" and question is not None:
                out.append((question, message["content"]))
                question = None
        return out

    return [Turn.from_json({"question": question, "a": {"text": text_a}, "b": {"text": text_b}})
            for (question, text_a), (_, text_b) in zip(pairs(conv_a), pairs(conv_b))]


UNTRUSTED_FLAG = "imported: shown but not rated (import from the command line with --trust-import to rate it)"


def parse_battle(line: str, origin: str) -> RoundRecord:
    """One line of a battle file as a stored round, validated by battle_schema. Never rated here:
    ``import_battles`` decides that from what the file can prove."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    data = BattleLine.model_validate(raw).model_dump()
    conv_a, conv_b = data["conversation_a"], data["conversation_b"]
    ours = data["arena"] or {}
    tstamp = float(data["tstamp"] or 0)
    # FastChat logs carry no id: derive a stable one so re-importing the same file adds nothing.
    battle_id = data["id"] or hashlib.sha256(json.dumps(
        [data["model_a"], data["model_b"], data["winner"], tstamp, conv_a, conv_b], ensure_ascii=False
    ).encode()).hexdigest()[:32]
    settings = {k: v for k, v in (ours.get("settings") or {}).items() if v is not None}
    if not settings and conv_a and conv_a[0]["role"] == "system":
        settings = {"system_prompt": conv_a[0]["content"]}
    turns = [Turn.from_json(t) for t in ours.get("turns") or []] or _turns_from_conversations(conv_a, conv_b)
    judge = str(data["judge"] or "imported")
    return RoundRecord(
        id=battle_id, tstamp=float(ours.get("started") or tstamp),
        session=judge.removeprefix(JUDGE_PREFIX) if judge != JUDGE_PREFIX else judge,
        mode="blind" if data["anony"] else "named", model_a=data["model_a"], model_b=data["model_b"],
        model_a_info=ModelInfo.from_json(ours.get("model_a_info"), data["model_a"]),
        model_b_info=ModelInfo.from_json(ours.get("model_b_info"), data["model_b"]),
        settings=Settings.from_json(settings), preset_id=data["question_id"], turns=tuple(turns),
        ttft_a=ours.get("ttft_a"), ttft_b=ours.get("ttft_b"), tps_a=ours.get("tps_a"), tps_b=ours.get("tps_b"),
        winner=Winner(data["winner"]), vote_tstamp=tstamp, flag=ours.get("flag"), rated=False, origin=origin,
        hold=bool(ours.get("hold")), category=data["category"], language=from_fastchat(data["language"]))


def _decide_rating(record: RoundRecord, trust: bool, catalog: dict[str, ModelConfig]) -> RoundRecord:
    """Rated only with --trust-import, and then only what the arena itself would rate: a blind
    battle that no file flag marks and whose answers name neither model."""
    if not trust:
        return replace(record, flag=record.flag or UNTRUSTED_FLAG)
    if record.mode != "blind" or record.flag:
        return record
    models = tuple(catalog.get(record.model(s)) or fallback_model(record.model(s), record.info(s)) for s in "ab")
    flag = self_identification(record, models)
    return replace(record, flag=flag, rated=flag is None)


def import_battles(store: Store, path: Path, trust: bool = False, catalog: dict[str, ModelConfig] | None = None,
                   max_bytes: int = MAX_IMPORT_BYTES, prompts: list[Prompt] | None = None) -> tuple[int, int]:
    """Merge a JSONL battle file; returns (added, skipped as duplicates of stored or earlier lines).

    All lines are validated before anything is written, so one bad line stores nothing. Imported
    battles are tagged with their origin ('import:<file name>') and rated only with ``trust``. A battle whose
    file names no category or language gets them from ``prompts`` and its first question (topics.topic).
    """
    by_id = {p.id: p for p in prompts or []}
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ImportError_(f"{path.name} is {size / 1e6:.1f} MB; the import limit is {max_bytes / 1e6:.0f} MB "
                           f"(--max-upload-mb). Split the file and import the parts.")
    records: dict[str, RoundRecord] = {}
    lines = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                if not line.strip():
                    continue
                record = parse_battle(line, origin=f"import:{path.name}")
            except UnicodeDecodeError as exc:
                raise ImportError_(f"{path.name} line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at "
                                   f"position {exc.start + 1}). Save the file as UTF-8 and import again.") from None
            except (ValueError, TypeError) as exc:
                raise ImportError_(f"{path.name} line {number}: {problem_of(exc)}. Nothing was imported; "
                                   f"fix or delete that line and import again.") from None
            record = _decide_rating(record, trust, catalog or {})
            if record.category is None or record.language is None:
                category, language = topic(record.turns[0].question if record.turns else "",
                                           by_id.get(record.preset_id or ""))
                record = replace(record, category=record.category or category, language=record.language or language)
            records.setdefault(record.id, record)
            lines += 1
    existing = store.existing_ids(list(records))
    new = [r for r in records.values() if r.id not in existing]
    added = store.insert_voted_rounds(new) if new else 0
    return added, lines - added
