"""What a battle is about, for the leaderboards per category and per language: the category of its preset
(``prompts.yaml``) or "typed" for a question a person wrote, and its language.

Language: the preset's declared one, else read from the text (language.py). Exports also carry FastChat's
names for the two languages it distinguishes.
"""
from __future__ import annotations

from arena.core.config import Prompt
from arena.core.language import language_of

TYPED = "typed"  # the category of a question typed by a person rather than picked from the presets
FASTCHAT_LANGUAGE = {"zh": "Chinese", "en": "English"}
FROM_FASTCHAT = {name: code for code, name in FASTCHAT_LANGUAGE.items()}


def topic(question: str, preset: Prompt | None) -> tuple[str, str]:
    """(category, language) of a round that starts with ``question`` (a preset's when it is one)."""
    if preset is not None:
        return preset.category, language_of(question, preset.language)
    return TYPED, language_of(question)


def from_fastchat(language: str | None) -> str | None:
    """A battle file's language: FastChat's "Chinese"/"English" as our codes, our own codes as they are, any
    other language named as the file names it (lower case); None when the file says nothing."""
    if not language:
        return None
    return FROM_FASTCHAT.get(language, language if language in FASTCHAT_LANGUAGE else language.lower())


def backfill(store, prompts: list[Prompt]) -> int:
    """Give every stored round without them its category and language (rounds stored before this version,
    imported battles whose file named neither). Returns how many rounds were updated."""
    import json

    by_id = {p.id: p for p in prompts}
    done = 0
    while rows := store.rounds_without_topic():
        updates = []
        for round_id, preset_id, turns in rows:
            turns = json.loads(turns)
            question = turns[0]["question"] if turns else ""
            updates.append((round_id, *topic(question, by_id.get(preset_id or ""))))
        store.set_topics(updates)
        done += len(updates)
    return done
