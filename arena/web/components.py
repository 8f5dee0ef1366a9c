"""The page's components that show text from outside (questions, answers, references, statuses, errors): made only
here, so each is configured the way the browser tests prove safe.

Gradio's Markdown reader has two block extensions that write their text into the page as raw HTML: ``$$…$$``
(LaTeX, on by default) and a fenced ``mermaid`` block. The LaTeX one also looks for its closing ``$$`` anywhere
ahead, even inside code, and then skips that many characters of the text, out of step with the rest of the parse:
escapes and code spans written by safe_markdown.py land in the wrong places and markup comes alive (found by
tests/web/test_browser_security.py). So the page renders no LaTeX (``latex_delimiters=[]``), and safe_markdown
turns every ``mermaid`` fence into a plain code block.
"""
from __future__ import annotations

import gradio as gr

NO_LATEX: list[dict] = []


def answer_pane(label: str, elem_id: str) -> gr.Chatbot:
    """A chat pane as the page shows questions and answers: Markdown (from safe_markdown.py) rendered by the
    browser, with Gradio's HTML sanitizer as a second line of defence."""
    return gr.Chatbot(label=label, elem_id=elem_id, height=420, buttons=["copy"], feedback_options=None,
                      allow_tags=False, sanitize_html=True, latex_delimiters=NO_LATEX)


def text_panel(value="", **kwargs) -> gr.Markdown:
    """A Markdown panel (labels, statuses, the reveal with its reference answer, import results)."""
    return gr.Markdown(value, latex_delimiters=NO_LATEX, **kwargs)
