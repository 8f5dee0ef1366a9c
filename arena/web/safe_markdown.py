"""Markdown that renders as written but fetches and runs nothing: images become links, HTML becomes text.

Everything a model or a visitor wrote is untrusted. The browser's Markdown renderer would load any
image (``![x](http://tracker/p.png)``, in every one of its forms) and show raw HTML, so before text
reaches the page it goes through here:

- markdown-it-py (a kept, linear-time CommonMark parser) splits the text into top-level blocks, each
  with its line range;
- a block whose source holds none of ``![``, ``<``, ``](``, ``]:`` and ``mermaid``, in which markdown-it
  finds no link, and whose code fences name a plain language, cannot hold an image, HTML, a link or a
  diagram in any reader's reading: it is passed through **verbatim** (what a person copies is what the
  model wrote);
- any other block is **written anew from its tokens**: images become links whose text names the
  image's address, HTML is shown as text, links keep only http(s), mailto and relative destinations
  (written inline), and every character of plain text that Markdown could read as syntax is escaped;
- reference definitions are dropped: every link that used one is written inline.

What is written anew must mean the same to every Markdown reader the page uses: markdown-it here, and
marked with Gradio's extensions in the browser, which differ in places. The writer keeps to what they
agree on, each rule found by the grammar tests and named where it is applied: entities rather than
backslashes for '<', '>' and '`' (and for brackets inside a link's text); no bare URL left for GFM to
autolink; every '|' in a table cell escaped, in code too; single-backtick code spans only; no '*' or
'~~' pairing across a code span; code fences on a line of their own with a plain language name.
tests/web/test_safe_markdown.py reads the output for texts drawn from a grammar of hostile Markdown back
with markdown-it, and tests/web/test_browser_security.py with the page's own components in Chromium.

No backtracking regular expression touches the text, and the cost is linear in its length. A streaming
answer is rendered by live_markdown.LiveMarkdown.
"""
from __future__ import annotations

import html
import logging
from typing import NamedTuple

from markdown_it import MarkdownIt
from markdown_it.token import Token

log = logging.getLogger(__name__)

_MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# Plain text characters that could start Markdown syntax anywhere in a line; ``.``, ``(`` and
# ``)`` need no escape once every ``[`` and ``]`` is escaped (no link can form around them).
# Angle brackets and backticks become entities, not backslash escapes: an entity is text to every reader
# wherever it lands, while the browser's reader (marked) can misread an escape next to other syntax: it made
# "http://x\\<svg>" a link ending in the backslash, leaving a bare '<', and it takes "`\\`" for a code span when
# it decides which '*' pair up, which cut a real code span open.
_ESCAPE = {**{ord(c): "\\" + c for c in "\\*_[]!&~|#$"}, ord("<"): "&lt;", ord(">"): "&gt;", ord("`"): "&#96;"}
# Inside a link's text the browser's reader turns "\\[" and "\\]" back into brackets before it reads the text
# again, so an escaped "[x](javascript:…)" there would become a link: brackets are entities too.
_ESCAPE_IN_LINK = {**_ESCAPE, ord("["): "&#91;", ord("]"): "&#93;"}
_LINE_START = set("-+=:")  # list items, setext underlines and table-like lines when at a line start
_SAFE_SCHEMES = ("http:", "https:", "mailto:")


def normalise(text: str) -> str:
    """What markdown-it does to its input first, done here so line numbers match the text we slice."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


def escape_text(text: str, in_link: bool = False, start: bool = True) -> str:
    """Plain text as Markdown that renders as exactly this text, to CommonMark and to GFM readers alike
    (``in_link``: inside a link's text; ``start=False``: ``text`` continues a line, so its start is no line's)."""
    lines = _no_autolink(text.translate(_ESCAPE_IN_LINK if in_link else _ESCAPE)).split("\n")
    first = lines[0] if not start else _escape_line_start(lines[0])
    return "\n".join([first, *map(_escape_line_start, lines[1:])])


def _no_autolink(text: str) -> str:
    """``text`` with what GFM readers turn into a link by itself ("http://…", "www.…") escaped, as CommonMark
    has it: plain text. The browser's reader (marked) extends such a link over every character up to a space or
    '<', escapes and code included, so it would otherwise take characters that the rest of the text needs."""
    text = text.replace("://", "\\://")
    lower = text.lower()
    if "www." not in lower:
        return text
    out, start = [], 0
    while (found := lower.find("www.", start)) >= 0:
        out.append(text[start:found + 3] + "\\.")
        start = found + 4
    return "".join(out) + text[start:]


def _escape_line_start(line: str) -> str:
    stripped = line.lstrip(" ")
    if not stripped:
        return line
    indent = line[:len(line) - len(stripped)]
    if stripped[0] in _LINE_START:
        return indent + "\\" + stripped
    digits = len(stripped) - len(stripped.lstrip("0123456789"))
    if digits and stripped[digits:digits + 1] in (".", ")"):  # "1." would start an ordered list
        return indent + stripped[:digits] + "\\" + stripped[digits:]
    return line


def _code_span(content: str) -> str:
    """A single-backtick code span of ``content`` (which holds no backtick). A space at either end is padded:
    readers strip one from each end when both ends have one."""
    pad = " " if content[:1] == " " or content[-1:] == " " else ""
    return f"`{pad}{content}{pad}`"


_LANGUAGE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+#.-")


def language(info: str) -> str:
    """A fence's info string as a language name the page can use: its first word, if that is a plain name. The
    page's code highlighter names the block's class after it, and draws a ``mermaid`` block as a diagram."""
    word = info.strip().split(maxsplit=1)[0] if info.strip() else ""
    return word if set(word) <= _LANGUAGE and not word.lower().startswith("mermaid") else ""


def longest_run(text: str, char: str = "`") -> int:
    """The longest run of ``char`` in ``text``."""
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == char else 0
        longest = max(longest, run)
    return longest


def fence_lines(content: str, info: str, backticks: int | None = None) -> list[str]:
    """A fenced block no line of ``content`` can close, whatever parser reads it (``backticks``: the longest
    run of backticks in ``content``, if the caller has it)."""
    backticks = longest_run(content) if backticks is None else backticks
    body = content[:-1] if content.endswith("\n") else content
    fence = "`" * max(3, backticks + 1)
    return [fence + language(info), *(body.split("\n") if body else []), fence]


# "&" as "&amp;": CommonMark decodes entities in a destination, but the browser's reader copies it into the
# href attribute as written, where the browser decodes it ("&#106;avascript:" would become "javascript:").
_DESTINATION = {"(": "\\(", ")": "\\)", "\\": "\\\\", " ": "%20", "|": "%7C", "&": "&amp;"}


def _destination(url: str) -> str:
    """A link destination no reader can end early (markdown-it already percent-encoded spaces and '<'), nor a
    table cell ('|' percent-encoded, which means the same in a URL), and that every reader decodes alike."""
    return "".join(_DESTINATION.get(c, c) for c in url)


def _safe_href(url: str) -> bool:
    """Only http(s), mailto and relative destinations become links (an empty one is no link: text). markdown-it
    already refuses javascript:, vbscript:, file: and data:; anything else that could be read as a scheme (a
    ':' before the first '/', '?' or '#', once a browser has decoded entities and dropped tabs, newlines and
    leading controls) is refused too, so no browser's reading of it can run or load anything."""
    seen = "".join(c for c in html.unescape(url) if c not in "\t\n\r").strip("".join(map(chr, range(33))))
    head = seen.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return bool(seen) and (":" not in head or seen.lower().startswith(_SAFE_SCHEMES))


class _Writer:
    """Writes the tokens of one block back as Markdown, with images as links and HTML as text."""

    def __init__(self) -> None:
        self.hrefs: list[str | None] = []  # the open links' destinations, innermost last (None: shown as text)
        self.in_cell = False  # writing a table cell: every '|' must be escaped text

    # -- inline ---------------------------------------------------------------------------------
    def inline(self, tokens: list[Token]) -> str:
        out: list[str] = []
        dropped, as_text = _fragile(tokens)
        for index, tok in enumerate(tokens):
            kind = tok.type
            if kind in ("text", "text_special", "html_inline"):
                out.append(self.text(tok.content))
            elif kind == "softbreak":
                out.append("\n")
            elif kind == "hardbreak":
                out.append("\\\n")
            elif kind == "code_inline":  # next to another code span, the two fences would run together
                joined = bool(out) and out[-1].endswith("`")
                out.append(self.text(tok.content) if index in as_text or joined else self.code(tok.content))
            elif kind in _MARKUP:
                out.append("" if index in dropped else _MARKUP[kind])
            elif kind == "link_open":
                href = str(tok.attrs.get("href", ""))
                out.append("[" if _safe_href(href) else self.text("["))  # unsafe: its text only, as text
                self.hrefs.append(href if _safe_href(href) else None)
            elif kind == "link_close":
                href = self.hrefs.pop() if self.hrefs else None
                out.append("](" + _destination(href) + ")" if href is not None else self.text("]"))
            elif kind == "image":
                out.append(self.image(tok))
            else:  # a token type this writer does not know: its text, escaped
                out.append(self.text(tok.content))
        return "".join(out)

    def text(self, content: str) -> str:
        return escape_text(content, in_link=bool(self.hrefs))

    def code(self, content: str) -> str:
        """An inline code span, or its text where a reader could end it early: in a table cell at a '|' (cells
        are split before code spans are read), and wherever it would need a fence of two or more backticks
        (its content holds one): the browser's reader skips only single-backtick spans when it looks for a
        link's ']' or pairs up '*', so a longer one can be cut open."""
        if (self.in_cell and "|" in content) or "`" in content:
            return self.text(content)
        return _code_span(content)

    def image(self, tok: Token) -> str:
        """An image as a link that names its address (inside a link: as text, links don't nest)."""
        src = str(tok.attrs.get("src", ""))
        label = escape_text(f"🖼 {_plain(tok.children or []) or 'image'}: {src}", in_link=True)
        return label if self.hrefs or not _safe_href(src) else f"[{label}]({_destination(src)})"

    # -- blocks ---------------------------------------------------------------------------------
    def block(self, tokens: list[Token]) -> list[str]:
        """Markdown lines for the tokens of one block (an opener, its contents and its closer, or one token)."""
        first = tokens[0]
        kind = first.type
        if kind in ("fence", "code_block"):
            info = first.info if kind == "fence" else ""
            return fence_lines(first.content, info)
        if kind == "hr":
            return ["***"]
        if kind == "html_block":  # shown as the text it is; indentation dropped so no line turns into code
            return [escape_text(line.strip()) for line in first.content.rstrip("\n").split("\n")]
        inner = tokens[1:-1]
        if kind == "paragraph_open":
            return self.inline(inner[0].children or []).split("\n")
        if kind == "heading_open":
            text = self.inline(inner[0].children or []).replace("\n", " ")
            return ["#" * int(first.tag[1:]) + " " + text]
        if kind == "blockquote_open":
            return ["> " + line if line else ">" for line in self.blocks(inner)]
        if kind in ("bullet_list_open", "ordered_list_open"):
            return self.list(first, inner)
        if kind == "table_open":
            return self.table(inner)
        return [escape_text(t.content) for t in tokens if t.content]

    def blocks(self, tokens: list[Token]) -> list[str]:
        """Lines for a sequence of sibling blocks, separated by blank lines."""
        lines: list[str] = []
        for group in _siblings(tokens):
            if lines:
                lines.append("")
            lines.extend(self.block(group))
        return lines

    def list(self, opener: Token, inner: list[Token]) -> list[str]:
        ordered = opener.type == "ordered_list_open"
        number = int(opener.attrs.get("start", 1)) if ordered else 0
        delimiter = opener.markup or ("." if ordered else "-")
        tight = all(t.hidden for t in inner if t.type == "paragraph_open")
        lines: list[str] = []
        for item in _siblings(inner):
            marker = f"{number}{delimiter} " if ordered else f"{delimiter} "
            number += 1
            body = self.blocks(item[1:-1]) if not tight else self._tight(item[1:-1])
            if lines and not tight:
                lines.append("")
            pad = " " * len(marker)
            if body and body[0][:3] in ("```", "~~~"):  # the browser's reader ends an item after a fence on its
                body = ["", *body]                        # marker line: the fence starts on the next line
            lines.extend([(marker + body[0]).rstrip() if body else marker.rstrip()]
                         + [pad + b if b else "" for b in body[1:]])
        return lines

    def _tight(self, tokens: list[Token]) -> list[str]:
        lines: list[str] = []
        for group in _siblings(tokens):
            lines.extend(self.block(group))
        return lines

    def table(self, inner: list[Token]) -> list[str]:
        rows: list[list[str]] = []
        aligns: list[str] = []
        cells: list[str] = []
        for tok in inner:
            if tok.type in ("th_open", "td_open"):
                if tok.type == "th_open":
                    aligns.append(str(tok.attrs.get("style", "")))
            elif tok.type == "inline":
                self.in_cell = True
                try:
                    cells.append(self.inline(tok.children or []).replace("\n", " "))
                finally:
                    self.in_cell = False
            elif tok.type == "tr_close":
                rows.append(cells)
                cells = []
        rule = {"text-align:left": ":--", "text-align:right": "--:", "text-align:center": ":-:"}
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(rule.get(a, "---") for a in aligns) + "|"]
        return lines + ["| " + " | ".join(row) + " |" for row in rows[1:]]


_MARKUP = {"em_open": "*", "em_close": "*", "strong_open": "**", "strong_close": "**", "s_open": "~~", "s_close": "~~"}
_MARKER = {"em_open": "*", "strong_open": "*", "s_open": "~"}  # the character each is written with


def _fragile(tokens: list[Token]) -> tuple[set[int], set[int]]:
    """Where the browser's reader (marked) would pair markers differently from CommonMark and cut a code span
    open (its content is written as it is, not escaped): (indices of strikethrough markers to leave out, indices
    of code spans to write as escaped text). marked closes "*" or "~~" at the first such character it meets,
    inside code too, and does not nest strikethrough: a code span inside strikethrough, or inside emphasis and
    holding '*', is written as text; a strikethrough inside another loses its markers."""
    markers: set[int] = set()
    code: set[int] = set()
    opened: list[int] = []
    for index, tok in enumerate(tokens):
        if tok.type in _MARKER:
            if tok.type == "s_open" and any(tokens[i].type == "s_open" for i in opened):
                markers.add(index)
            opened.append(index)
        elif tok.type in ("em_close", "strong_close", "s_close") and opened:
            start = opened.pop()
            if start in markers:
                markers.add(index)
            mark = _MARKER[tokens[start].type]
            code.update(i for i in range(start + 1, index) if tokens[i].type == "code_inline"
                        and (mark == "~" or mark in tokens[i].content))
    return markers, code


def _plain(tokens: list[Token]) -> str:
    """The text of inline tokens without their markup (an image's description)."""
    out = []
    for tok in tokens:
        if tok.type == "image":
            out.append(_plain(tok.children or []))
        elif tok.type in ("softbreak", "hardbreak"):
            out.append(" ")
        elif tok.type in ("text", "text_special", "code_inline"):
            out.append(tok.content)
    return "".join(out)


def _siblings(tokens: list[Token]) -> list[list[Token]]:
    """Split a token sequence into its top-level groups (an opener to its closer, or a single token)."""
    groups, i = [], 0
    while i < len(tokens):
        if tokens[i].nesting == 1:
            depth, j = 0, i
            while True:
                depth += tokens[j].nesting
                if depth == 0:
                    break
                j += 1
            groups.append(tokens[i:j + 1])
            i = j + 1
        else:
            groups.append([tokens[i]])
            i += 1
    return groups


_RISKY = ("![", "<", "](", "]:", "mermaid")
_RISKY_TOKENS = frozenset({"image", "html_inline", "html_block", "link_open"})


def risky(source: str) -> bool:
    """Could any reader find an image, HTML, a link or a diagram in this source? Not without one of _RISKY."""
    return any(mark in source for mark in _RISKY)


def _risky_block(source: str, tokens: list[Token]) -> bool:
    """Must this block be written anew? Its source says so, markdown-it found a link in it (a reference link:
    its definition elsewhere is dropped, so the link is written inline), or a fence's info string is more than a
    language name."""
    return risky(source) or any(child.type in _RISKY_TOKENS for tok in tokens for child in tok.children or []) \
        or any(tok.type == "fence" and tok.info.strip() != language(tok.info) for tok in tokens)


def parse(parser: MarkdownIt, text: str) -> list[Token] | None:
    """``parser``'s tokens for ``text``, or None where it fails. markdown-it-py 4.3.0 raises IndexError on a
    text ending in an unclosed HTML block inside a list inside a blockquote ("> - <pre>\\n>"; found by the
    grammar tests): a final newline avoids that case, and any other failure is shown as text, not raised
    into the page's stream."""
    try:
        return parser.parse(text if text.endswith("\n") else text + "\n")
    except Exception:  # noqa: BLE001 - whatever the parser trips on, the text must still be shown safely
        log.warning("markdown-it failed on a %d-character text; shown as plain text", len(text), exc_info=True)
        return None


class Piece(NamedTuple):
    """One top-level block of a text and its safe rendering."""

    first_line: int   # where the piece starts: the uncovered lines before its block (blank lines, definitions)
    block_line: int   # where its block starts
    text: str         # the rendering
    token: Token | None  # the block's first token (None: no block, or the text could not be parsed)


def pieces(text: str) -> list[Piece]:
    """The safe rendering of ``text`` (normalised) as pieces, one per top-level block, each with the uncovered
    lines before it; the last piece also takes the lines after the last block."""
    lines = text.split("\n")
    parts: list[Piece] = []
    start = 0
    tokens = parse(_MD, text)
    if tokens is None:  # the parser failed on this text: all of it is shown as text
        return [Piece(0, 0, escape_text(text), None)]
    for group in _siblings(tokens):
        first, end = group[0].map or (start, start)
        out = [uncovered(line) for line in lines[start:first]]
        block = "\n".join(lines[first:end])
        if _risky_block(block, group):  # set apart by blank lines: no reader may take it as the
            if not out and parts and lines[first - 1].strip():  # continuation of its neighbour (the line
                parts[-1] = parts[-1]._replace(text=parts[-1].text + "\n")  # goes with the block before,
            out.extend(_Writer().block(group))                                # which stays as it is)
            if end < len(lines) and lines[end].strip():
                out.append("")
        else:
            out.append(block)
        parts.append(Piece(start, first, "\n".join(out), group[0]))
        start = end
    tail = [uncovered(line) for line in lines[start:]]
    if parts:
        last = parts[-1]
        parts[-1] = last._replace(text="\n".join([last.text, *tail]) if tail else last.text)
    elif tail:
        parts.append(Piece(start, start, "\n".join(tail), None))
    return parts


def uncovered(line: str) -> str:
    """A line outside every block: blank, or part of a reference definition, which is dropped (the links
    that used it are written inline) so that no reader can take it for a link's destination."""
    return "" if line.strip() else line


def safe_markdown(text: str | None) -> str:
    """``text`` as Markdown that renders as written but fetches nothing (see the module's docstring)."""
    if not text:
        return ""
    return "\n".join(piece.text for piece in pieces(normalise(text)))
