"""Unit: Markdown that renders as written but fetches nothing (arena/safe_markdown.py). The browser tests
show the same in Chromium; here a second parser (markdown-it-py itself) reads every output back."""
import random

import pytest
from markdown_it import MarkdownIt

from arena.safe_markdown import LIVE_PARSE_LIMIT, LiveMarkdown, escape_text, safe_markdown

READER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def fetches(markdown: str) -> list[str]:
    """What a Markdown renderer would load or run from ``markdown``: images, HTML, mermaid diagrams."""
    found = []
    for token in READER.parse(markdown):
        if token.type == "html_block" or (token.type == "fence" and token.info.strip().startswith("mermaid")):
            found.append(token.type)
        for child in token.children or []:
            if child.type in ("image", "html_inline"):
                found.append(child.type)
    return found


@pytest.mark.parametrize("text", [
    "![x]\n\n[x]: http://h/ref.png",               # a reference definition
    "![x](http://h/t.png (t))",                     # a title in parentheses
    "![a [b] c](http://h/t.png)",                  # brackets in the description
    "![a\\]b](http://h/t.png)",                     # an escaped bracket
    "![x](<http://h/t.png>)",                       # an address in angle brackets
    "- item ![i](http://h/i.png)\n  > quote ![q](http://h/q.png)",
    "| a |\n|---|\n| ![c](http://h/c.png) |",
    "[![inner](http://h/i.png)](http://h/link)",     # an image inside a link
    "<img src=http://h/t.png> and <b>bold</b>",
    "<div>\n![x](http://h/x.png)\n</div>",
    "```mermaid\ngraph TD\n  A@{ img: 'http://h/m.png' }\n```",
])
def test_every_image_form_becomes_a_link_or_text(text):
    out = safe_markdown(text)
    assert fetches(text) and not fetches(out), out
    assert "h/" in out  # the address stays visible


def test_text_without_image_html_or_diagram_passes_through_verbatim():
    """What a person copies is what the model wrote: no escaping where nothing could be fetched."""
    text = ("# Answer\n\nUse `a < b`? No: *emphasis*, [a link](http://x), 1. 2. 3.\n\n"
            "```python\nprint([i ** 2 for i in range(3)])\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    plain = text.replace("`a < b`", "`a - b`")
    assert safe_markdown(plain) == plain
    assert safe_markdown("冬天：能穿多少穿多少\n夏天：能穿多少穿多少") == "冬天：能穿多少穿多少\n夏天：能穿多少穿多少"


def test_code_keeps_its_characters_and_html_shows_as_text():
    out = safe_markdown('see `![c](http://c)` and\n```\n<b>![d](http://d)</b>\n```\n<img src="x">')
    assert "`![c](http://c)`" in out and "<b>![d](http://d)</b>" in out  # inside code: as written
    assert "\\<img src=\"x\"\\>" in out and not fetches(out)


def test_escaped_text_reads_back_as_the_same_text():
    for text in ("1. not a list", "# not a heading", "a *b* _c_ [d](e) <f> ![g] `h` ~~i~~ | j & k"):
        rendered = READER.render(escape_text(text)).strip()
        assert rendered == "<p>" + READER.utils.escapeHtml(text) + "</p>", rendered


def test_random_markdown_never_fetches_anything_whole_or_streamed():
    """20,000 random strings of Markdown's special characters: the output, and every state a streamed
    rendering passes through, parse without an image, HTML or a diagram."""
    alphabet = ["!", "[", "]", "(", ")", "<", ">", "`", "*", "_", "\n", " ", "x", "http://h/p.png", "![", "](",
                "\\", "~", "|", "-", "#", "&", '"', "'", "  ", "\n\n", "```", ":", "1.", "img", "mermaid", "<img "]
    rng = random.Random(1)
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        assert not fetches(safe_markdown(text)), text
        live = LiveMarkdown()
        for end in range(7, len(text) + 7, 7):
            assert not fetches(live.render(text[:end])), text[:end]


def test_a_streamed_answer_keeps_finished_blocks_and_ends_as_the_whole_text_renders():
    answer = "".join(f"Paragraph {i} with ![img](http://h/{i}.png) and text.\n\n" for i in range(50))
    live = LiveMarkdown()
    for end in range(10, len(answer), 10):
        live.render(answer[:end])
    assert len(live._source) > len(answer) * 0.9  # all but the last block kept, not re-parsed
    assert live.render(answer, final=True) == safe_markdown(answer)


def test_a_huge_growing_paragraph_of_syntax_is_shown_as_text_until_it_ends():
    """More inline syntax than LIVE_PARSE_LIMIT in the growing tail: escaped text (a copy per update, not a
    parse); a code fence is exempt (its content is not parsed)."""
    brackets = "[" * (LIVE_PARSE_LIMIT + 1)
    assert LiveMarkdown().render(brackets) == escape_text(brackets)
    fence = "```\n" + "[" * (LIVE_PARSE_LIMIT + 1)
    assert LiveMarkdown().render(fence) == fence
