"""The language of a text, 'zh' or 'en', for presets that do not declare one and for typed questions: Chinese
when CJK characters outnumber Latin-script words, in one linear pass (a Chinese question about ``def f(x)``
stays Chinese; "What does 你好 mean?" stays English). The presets' loader and the topics of battles use it.
"""
from __future__ import annotations


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff"


def language_of(text: str, declared: str | None = None) -> str:
    """'zh' or 'en': ``declared`` if it is one of them, else from the text (see the module docstring)."""
    if declared in ("zh", "en"):
        return declared
    cjk = words = 0
    in_word = False
    for ch in text:
        latin = ch.isascii() and ch.isalpha()
        if latin and not in_word:
            words += 1
        in_word = latin
        cjk += _is_cjk(ch)
    return "zh" if cjk > words else "en"
