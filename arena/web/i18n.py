"""Gradio's side of the translations in arena/texts.py."""
from __future__ import annotations

import gradio as gr

from arena.core.texts import TEXTS

# Translates static labels in the browser before any server round trip; Gradio matches
# "zh-CN" and "zh-TW" browsers to "zh".
I18N = gr.I18n(**{lang: dict(texts) for lang, texts in TEXTS.items()})
