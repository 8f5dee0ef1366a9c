"""Unit: Markdown that renders as written but fetches nothing (arena/safe_markdown.py). The browser tests
show the same in Chromium; here a second parser (markdown-it-py itself) reads every output back, for listed
cases and for texts drawn from a grammar of hostile Markdown (tests/markdown_grammar.py)."""
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena.web.live_markdown import LIVE_PARSE_LIMIT, LiveMarkdown, _EscapedTail
from arena.web.safe_markdown import escape_text, normalise, pieces, safe_markdown

from ..markdown_grammar import READER, dangers, documents

# CI draws this many texts from the grammar; scripts/fuzz-markdown.sh sets more.
GRAMMAR_EXAMPLES = int(os.environ.get("ARENA_FUZZ_EXAMPLES", "3000"))
GRAMMAR = settings(max_examples=GRAMMAR_EXAMPLES, deadline=None, derandomize="ARENA_FUZZ_SEED" not in os.environ,
                   database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


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
    assert dangers(text) and not dangers(out), out
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
    assert "&lt;img src=\"x\"&gt;" in out and not dangers(out)


def test_escaped_text_reads_back_as_the_same_text():
    for text in ("1. not a list", "# not a heading", "a *b* _c_ [d](e) <f> ![g] `h` ~~i~~ | j & k"):
        rendered = READER.render(escape_text(text)).strip()
        assert rendered == "<p>" + READER.utils.escapeHtml(text) + "</p>", rendered


def test_random_markdown_never_fetches_anything_whole_or_streamed():
    """5,000 random strings of Markdown's special characters: the output, and every state a streamed
    rendering passes through, parse without an image, HTML or a diagram."""
    alphabet = ["!", "[", "]", "(", ")", "<", ">", "`", "*", "_", "\n", " ", "x", "http://h/p.png", "![", "](",
                "\\", "~", "|", "-", "#", "&", '"', "'", "  ", "\n\n", "```", ":", "1.", "img", "mermaid", "<img "]
    rng = random.Random(1)
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        assert not dangers(safe_markdown(text)), text
        live = LiveMarkdown()
        for end in range(7, len(text) + 7, 7):
            assert not dangers(live.render(text[:end])), text[:end]


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


@pytest.mark.parametrize("text", ["```a`" + "[" * 1001, "```a`\n" + "[" * 1001, "> ```\n" + "[" * 1001,
                                  "~~~\n~~~\n" + "![" * 501])
def test_no_opening_line_lets_a_growing_tail_skip_the_parse_limit(text):
    """A tail that starts like a fence but is none ("```a`": an info string cannot hold a backtick), or whose
    fence ends early, was parsed in full on every update (16k characters of "```a`" then '[' cost 35 s of
    render CPU). What counts is the inline text the block parser leaves, wherever it is: over the limit, the
    tail is shown as text."""
    assert LiveMarkdown().render(text) == escape_text(text)


@pytest.mark.parametrize("text", ["```\n" + "[" * 1001, "~~~\n" + "![" * 501, "    " + "[" * 1001])
def test_code_is_not_counted_against_the_parse_limit(text):
    """Inside a code fence or indented code nothing is inline-parsed: it renders as the code it is."""
    assert "\\[" not in LiveMarkdown().render(text)


def test_a_text_the_parser_trips_on_is_shown_as_text_not_raised():
    """markdown-it-py 4.3.0 raises IndexError on "> - <pre>\\n>" (found by the grammar tests below)."""
    for text in ("> - <pre>\n>", "> - <!--\n> ", ">> - x\n>> - <pre>\n>>"):
        assert not dangers(safe_markdown(text))
        assert not dangers(LiveMarkdown().render(text))


TABLE_XSS = ('| h | i |\n|---|---|\n| `x\\|<svg><a href="javascript:alert(document.domain)"><text x="5" y="20">'
             'click me</text></a></svg>` | y |')


def test_a_code_span_with_an_escaped_pipe_in_a_table_stays_text():
    """The review's one-click XSS: the escaped pipe came back bare, the cell split there, and the rest of the code
    span was live SVG with a javascript: link. Now the cell's text, pipe included, is escaped text."""
    out = safe_markdown(TABLE_XSS)
    assert not dangers(out), out
    html = READER.render(out)
    assert "<svg" not in html and html.count("<td>") == 2 and "javascript:alert" in html  # shown, as text


@pytest.mark.parametrize("text", [
    "[x](javascript:alert(1))", "[x](java&#x09;script:alert(1))", "[x](JaVaScRiPt:alert(1))",
    "[x][r]\n\n[r]: javascript:alert(1)", "[x]\n\n[x]: data:text/html,hi", "> [x][r]\n>\n> [r]: vbscript:x",
    "<javascript:alert(1)>", "[x](foo:bar)", "[ok](http://h/a|b)",
])
def test_links_keep_only_safe_destinations_and_never_need_a_definition(text):
    out = safe_markdown(text)
    assert not dangers(out), out
    env: dict = {}
    READER.parse(out, env)
    assert not env.get("references"), out  # no definition is left for any reader to resolve differently


def test_a_reference_link_to_a_safe_destination_is_written_inline():
    out = safe_markdown("See [the docs][d].\n\n[d]: https://example.com/docs")
    assert READER.render(out).strip() == '<p>See <a href="https://example.com/docs">the docs</a>.</p>', out


@GRAMMAR
@given(documents())
def test_grammar_of_hostile_markdown_reads_back_harmless(text):
    """Texts drawn from a grammar of tables, code spans with escapes, emphasis, every link and image form, raw
    HTML, entities, fences, blockquotes and lists nested in each other: markdown-it reads the output back and
    finds no raw HTML, image, diagram or link to anything but http(s), mailto or a relative address."""
    out = safe_markdown(text)
    assert not dangers(out), out


@settings(GRAMMAR, max_examples=max(1, GRAMMAR_EXAMPLES // 3))
@given(documents())
def test_grammar_of_hostile_markdown_streamed_reads_back_harmless_at_every_step(text):
    """The same for every state a streamed rendering passes through (LiveMarkdown, in about 20 steps of at least
    three characters: a stream's updates are coalesced, so a step is usually more than a token)."""
    live = LiveMarkdown()
    step = max(3, len(text) // 20)
    for end in range(step, len(text) + step, step):
        out = live.render(text[:end])
        assert not dangers(out), (text[:end], out)


_FENCE_LINES = st.sampled_from(["```", "````", "~~~", "```python", "```py x", "```a`", "~~~ `x`", "``` mermaid",
                                "   ```", "    ```", "``", "x = [i for i in y]", "<svg onload=alert(1)>", "![i](/p.png)",
                                "mermaid", "`code`", "a``b", "", "[r]: /x", "text <b>", "```\t", "~~~~~"])


@settings(GRAMMAR, max_examples=max(1, GRAMMAR_EXAMPLES // 3))
@given(st.lists(_FENCE_LINES, min_size=1, max_size=12).map("\n".join), st.integers(1, 9))
def test_a_growing_fence_or_escaped_tail_renders_as_a_fresh_parse_would(text, step):
    """LiveMarkdown shows an open fence, and a tail over the parse limit, without parsing them again each update:
    what it shows is at every step what a fresh parse of the same tail gives (open fences, closing lines of
    every kind, fences that are none, content that must be written anew)."""
    live = LiveMarkdown()
    text = "Intro.\n\n" + text + "\n" + "[" * (LIVE_PARSE_LIMIT + 1) * (step % 3 == 0)
    for end in range(step, len(text) + step, step):
        shown = live.render(text[:end])
        if live._growing is not None:
            tail = normalise(text[:end])[len(live._source):]
            fresh = escape_text(tail) if isinstance(live._growing, _EscapedTail) else \
                "\n".join(piece.text for piece in pieces(tail))
            assert shown == "\n".join([*live._rendered, fresh]), (text[:end], type(live._growing).__name__)
    assert not dangers(live.render(text))


@settings(GRAMMAR, max_examples=max(1, GRAMMAR_EXAMPLES // 3))
@given(st.lists(st.sampled_from(["[", "![", "\n", "  ", "1.", "12)", "-", "# ", "http://", "://", "www.", "WwW.", "w",
                                 ":", "/", ".", "x", "<b>", "`", "\\", "|", "中文"]), min_size=1, max_size=300)
       .map("".join), st.integers(1, 40))
def test_an_escaped_tail_grows_piece_by_piece_as_it_would_whole(text, step):
    """Over the parse limit the tail is escaped piece by piece, never twice: at every step the result is what
    escaping the whole tail gives, line starts ("1.", "-", "#") and autolink patterns split across steps included."""
    tail, shown = _EscapedTail(), ""
    for end in range(step, len(text) + step, step):
        shown = tail.render(text[:end])
        assert shown == escape_text(text[:end]), text[:end]


def test_a_long_code_block_is_parsed_once_while_it_streams(monkeypatch):
    """An open fence is checked only on its new lines: streaming 64,000 characters of code in steps of 64 parses the
    text twice (when the fence opens, and when it closes), not once per update as before (a fresh parse of the
    whole block each update: quadratic; bench/bench_render.py has the figures)."""
    import arena.web.live_markdown as live_markdown

    parses = []
    real = live_markdown.pieces
    monkeypatch.setattr(live_markdown, "pieces", lambda text: parses.append(len(text)) or real(text))
    line = "    x = [i for i in range(10)]  # <b> ![i](/p.png)\n"
    text = "Some code:\n\n```python\n" + line * 1300 + "```\n\nDone."
    live = LiveMarkdown()
    for end in range(64, len(text) + 64, 64):
        shown = live.render(text[:end])
    assert shown == safe_markdown(text) and len(text) > 64000
    assert len([n for n in parses if n > 1000]) <= 3, len(parses)
