"""What an answer looks like, for style control (leaderboard.style_table): the features FastChat's
``add_markdown_info.count_markdown_elements`` counts, read here by markdown-it-py (one linear parse, no
regular expression over untrusted text, and Markdown inside code blocks is code, not formatting):

- length: characters (Unicode code points) over the answer's turns. FastChat counts tokens of one tokenizer;
  the two sides of a battle here use different tokenizers, and characters count Chinese and English alike;
- headers: ATX and setext headings of every level;
- lists: list items, ordered and unordered;
- bold: ``**strong**`` and ``__strong__`` spans.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

FEATURES = ("length", "headers", "lists", "bold")
VERSION = "v1"  # stored with each round's features: a new definition recomputes them


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def features(answers: Iterable[str]) -> dict[str, int]:
    """The style features of one side's answers (all turns of a round)."""
    counts = dict.fromkeys(FEATURES, 0)
    for text in answers:
        counts["length"] += len(text)
        for token in _parser().parse(text):
            counts["headers"] += token.type == "heading_open"
            counts["lists"] += token.type == "list_item_open"
            for child in token.children or ():
                counts["bold"] += child.type == "strong_open"
    return counts
