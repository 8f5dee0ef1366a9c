"""What text the arena accepts, and how it cleans what models send back.

Questions and system prompts are refused, with the position, when they hold a
character that SQLite, JSON or UTF-8 cannot carry (a lone surrogate such as
``\\ud800``), a NUL or another control character (tab, newline and carriage
return are fine), or a text-direction override that can make shown text differ
from what is stored. Model output (and an error text a model server sends) is never
refused, because the answer is already paid for: lone surrogates become U+FFFD, and control
characters and text-direction overrides are dropped, so whatever the arena stores it can also
export and import again (battle_schema.py applies these rules to files).
"""
from __future__ import annotations

import re

ALLOWED_CONTROLS = "\t\n\r"
_BAD = re.compile(r"[\ud800-\udfff]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|[\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_DROPPED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class TextProblem(ValueError):
    """Where the first unacceptable character is, and which kind it is ('surrogate', 'control', 'bidi')."""

    def __init__(self, kind: str, char: str, position: int):
        self.kind, self.code, self.position = kind, f"U+{ord(char):04X}", position
        super().__init__(f"{describe(kind, self.code)} at character {position}")


PROBLEMS = {
    "en": {"surrogate": "an invalid character (a lone surrogate {code})", "control": "a control character ({code})",
           "bidi": "a text-direction override ({code})"},
    "zh": {"surrogate": "无效字符（孤立代理项 {code}）", "control": "控制字符（{code}）",
           "bidi": "文字方向覆盖字符（{code}）"},
}


def describe(kind: str, code: str, lang: str = "en") -> str:
    return PROBLEMS.get(lang, PROBLEMS["en"])[kind].format(code=code)


def check(text: str) -> None:
    """Raise TextProblem at the first character we refuse (1-based position)."""
    match = _BAD.search(text)
    if match:
        char = match.group(0)
        kind = "surrogate" if _SURROGATE.match(char) else "control" if _CONTROL.match(char) else "bidi"
        raise TextProblem(kind, char, match.start() + 1)


def clean_model_text(text: str) -> str:
    """Model output made storable: lone surrogates -> U+FFFD; control characters (but tab, newline and
    CR) and text-direction overrides dropped."""
    if not _BAD.search(text):
        return text
    return _DROPPED.sub("", _SURROGATE.sub("\ufffd", text))
