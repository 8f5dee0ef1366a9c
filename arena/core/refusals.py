"""Requests the arena refuses, as translatable errors. No gradio here: the rules raise refusals by
key, the page shows them in the reader's language, and the API and CLI read them in English."""
from __future__ import annotations

from arena.core import textcheck
from arena.core.texts import t


class ArenaError(ValueError):
    """A request the arena refuses. ``key`` names the text in arena/texts.py, so the page can show
    it in the reader's language; ``str()`` is the English text the API and CLI show."""

    def __init__(self, key: str, **values):
        self.key, self.values = key, values
        super().__init__(self.message("en"))

    def message(self, lang: str) -> str:
        values = {k: (t(v, lang) if k in ("what", "who") else v) for k, v in self.values.items()}
        if "problem" in values:
            values["problem"] = textcheck.describe(*self.values["problem"], lang=lang)
        return t(self.key, lang, **values)


def checked_text(text: str, what: str) -> str:
    """``text`` if the arena can store and send it; otherwise a refusal naming the character."""
    try:
        textcheck.check(text)
    except textcheck.TextProblem as exc:
        raise ArenaError("bad_text", what=what, problem=(exc.kind, exc.code), position=exc.position) from None
    return text
