"""Markdown that renders as written but fetches nothing: images become links, HTML becomes text.

Everything a model or a visitor wrote is untrusted. The browser's Markdown renderer would load any
image (``![x](http://tracker/p.png)``, in every one of its forms) and show raw HTML, so before text
reaches the page it goes through here:

- markdown-it-py (a kept, linear-time CommonMark parser) splits the text into top-level blocks, each
  with its line range;
- a block whose source holds neither ``![`` nor ``<`` cannot hold an image or HTML in any parser's
  reading, nor ``mermaid`` (the page draws a fenced ``mermaid`` block as a diagram, and a diagram can
  load images): it is passed through **verbatim** (what a person copies is what the model wrote);
- any other block is **written anew from its tokens**: images become links whose text names the
  image's address, HTML is shown as text, and every character of plain text that Markdown could read
  as syntax is escaped, so the browser's parser, whatever its quirks, finds nothing to load.

No regular expression touches the text, and the cost is linear in its length. A streaming answer is
rendered by ``LiveMarkdown``, which re-parses only its last block per update (earlier blocks are
final once a later one starts).
"""
from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token

_MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# Plain text characters that could start Markdown syntax anywhere in a line; ``.``, ``(`` and
# ``)`` need no escape once every ``[`` and ``]`` is escaped (no link can form around them).
_ESCAPE = {ord(c): "\\" + c for c in "\\`*_[]<>!&~|#$"}
_LINE_START = set("-+=:")  # list items, setext underlines and table-like lines when at a line start
# While streaming, a growing tail (outside a code fence) with more characters that inline parsing works
# on than this is shown as escaped text until the answer is done: parsing 1,000 brackets takes about
# 18 ms here, and a stream re-parses its tail up to 20 times a second. Prose and code fences cost a
# small fraction of that per character (bench/bench_render.py).
LIVE_PARSE_LIMIT = 1000
_INLINE_SYNTAX = "[]!<`*_~&\\"


def _normalise(text: str) -> str:
    """What markdown-it does to its input first, done here so line numbers match the text we slice."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


def escape_text(text: str) -> str:
    """Plain text as Markdown that renders as exactly this text."""
    lines = text.translate(_ESCAPE).split("\n")
    return "\n".join(_escape_line_start(line) for line in lines)


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
    longest = run = 0
    for ch in content:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if content[:1] in ("`", " ") or content[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{content}{pad}{fence}"


def _fence(content: str, info: str) -> list[str]:
    """A fenced block no line of ``content`` can close, whatever parser reads it."""
    backticks = tildes = run_b = run_t = 0
    for ch in content:
        run_b = run_b + 1 if ch == "`" else 0
        run_t = run_t + 1 if ch == "~" else 0
        backticks, tildes = max(backticks, run_b), max(tildes, run_t)
    char, longest = ("~", tildes) if "`" in info else ("`", backticks)
    fence = char * max(3, longest + 1)
    body = content[:-1] if content.endswith("\n") else content
    return [fence + info.strip().replace("\n", " "), *(body.split("\n") if body else []), fence]


def _destination(url: str) -> str:
    """A link destination no parser can end early: markdown-it already percent-encoded spaces and '<'."""
    return "".join("\\" + c if c in "()\\" else "%20" if c == " " else c for c in url)


class _Writer:
    """Writes the tokens of one block back as Markdown, with images as links and HTML as text."""

    def __init__(self) -> None:
        self.hrefs: list[str] = []  # the open links' destinations, innermost last

    # -- inline ---------------------------------------------------------------------------------
    def inline(self, tokens: list[Token]) -> str:
        out: list[str] = []
        for tok in tokens:
            kind = tok.type
            if kind in ("text", "text_special"):
                out.append(escape_text(tok.content))
            elif kind == "softbreak":
                out.append("\n")
            elif kind == "hardbreak":
                out.append("\\\n")
            elif kind == "code_inline":
                out.append(_code_span(tok.content))
            elif kind in ("em_open", "em_close"):
                out.append("*")
            elif kind in ("strong_open", "strong_close"):
                out.append("**")
            elif kind in ("s_open", "s_close"):
                out.append("~~")
            elif kind == "link_open":
                self.hrefs.append(str(tok.attrs.get("href", "")))
                out.append("[")
            elif kind == "link_close":
                out.append("](" + _destination(self.hrefs.pop() if self.hrefs else "") + ")")
            elif kind == "image":
                out.append(self.image(tok))
            elif kind == "html_inline":
                out.append(escape_text(tok.content))
            else:  # a token type this writer does not know: its text, escaped
                out.append(escape_text(tok.content))
        return "".join(out)

    def image(self, tok: Token) -> str:
        """An image as a link that names its address (inside a link: as text, links don't nest)."""
        src = str(tok.attrs.get("src", ""))
        label = escape_text(f"🖼 {_plain(tok.children or []) or 'image'}: {src}")
        return label if self.hrefs else f"[{label}]({_destination(src)})"

    # -- blocks ---------------------------------------------------------------------------------
    def block(self, tokens: list[Token]) -> list[str]:
        """Markdown lines for the tokens of one block (an opener, its contents and its closer, or one token)."""
        first = tokens[0]
        kind = first.type
        if kind in ("fence", "code_block"):
            info = first.info if kind == "fence" else ""
            return _fence(first.content, "text" if info.strip().startswith("mermaid") else info)
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
            lines.extend([marker + (body[0] if body else "")] + [pad + b if b else "" for b in body[1:]])
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
                cells.append(self.inline(tok.children or []).replace("\n", " "))
            elif tok.type == "tr_close":
                rows.append(cells)
                cells = []
        rule = {"text-align:left": ":--", "text-align:right": "--:", "text-align:center": ":-:"}
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(rule.get(a, "---") for a in aligns) + "|"]
        return lines + ["| " + " | ".join(row) + " |" for row in rows[1:]]


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


def _risky(source: str) -> bool:
    """Can this source hold an image, HTML or a diagram? Not without '![', '<' or 'mermaid'."""
    return "![" in source or "<" in source or "mermaid" in source


def _pieces(text: str) -> list[tuple[int, int, str]]:
    """The safe rendering of ``text`` (normalised) as (first line, block's first line, Markdown) pieces:
    one per top-level block, each with the uncovered lines before it (blank lines, reference
    definitions); the last piece also takes the lines after the last block."""
    lines = text.split("\n")
    pieces: list[tuple[int, int, str]] = []
    start = 0
    for group in _siblings(_MD.parse(text)):
        first, end = group[0].map or (start, start)
        out = [_uncovered(line) for line in lines[start:first]]
        block = "\n".join(lines[first:end])
        if _risky(block):
            if out and out[-1] != "":
                out.append("")
            out.extend(_Writer().block(group))
            if end < len(lines) and lines[end].strip():
                out.append("")
        else:
            out.append(block)
        pieces.append((start, first, "\n".join(out)))
        start = end
    tail = [_uncovered(line) for line in lines[start:]]
    if pieces:
        first, block_first, body = pieces[-1]
        pieces[-1] = (first, block_first, "\n".join([body, *tail]) if tail else body)
    elif tail:
        pieces.append((start, start, "\n".join(tail)))
    return pieces


def _uncovered(line: str) -> str:
    """A line outside every block: blank, or a reference definition; shown as text if it could hold more."""
    return escape_text(line) if _risky(line) else line


def safe_markdown(text: str | None) -> str:
    """``text`` as Markdown that renders as written but fetches nothing (see the module's docstring)."""
    if not text:
        return ""
    return "\n".join(piece for _, _, piece in _pieces(_normalise(text)))


class LiveMarkdown:
    """``safe_markdown`` of a text that only grows (a streaming answer), re-parsing only its last block.

    A block is final once a later block has started on a complete line: whether a line starts a block
    is decided by that line (a half-streamed "```" may still turn out to be no fence), and later lines
    can only change the block they join. So the rendering of every block before the last such start is
    kept, and the next update parses from there. While streaming, a growing tail (not a code fence) with
    more than ``LIVE_PARSE_LIMIT`` characters of inline syntax is shown as escaped text: each update then
    costs a copy of it, not a parse. ``final=True`` renders the whole text once, as ``safe_markdown`` would.
    """

    def __init__(self) -> None:
        self._source = ""            # the normalised text whose rendering is kept
        self._rendered: list[str] = []

    def render(self, text: str, final: bool = False) -> str:
        text = _normalise(text or "")
        if final:
            return safe_markdown(text)
        if not text.startswith(self._source):  # not a continuation: start over
            self._source, self._rendered = "", []
        tail = text[len(self._source):]
        in_fence = tail.lstrip(" ")[:3] in ("```", "~~~")  # a fence's content is not parsed inline
        if not in_fence and sum(map(tail.count, _INLINE_SYNTAX)) > LIVE_PARSE_LIMIT:
            return "\n".join([*self._rendered, escape_text(tail)])
        pieces = _pieces(tail)
        last_complete = tail.count("\n") - (0 if tail.endswith("\n") else 1)  # lines after it are still growing
        cut = max((i for i, (_, block_first, _) in enumerate(pieces) if i and block_first <= last_complete),
                  default=0)
        if cut:
            self._source += "\n".join(tail.split("\n")[:pieces[cut][0]]) + "\n"
            self._rendered.extend(piece for _, _, piece in pieces[:cut])
            pieces = pieces[cut:]
        return "\n".join([*self._rendered, *(piece for _, _, piece in pieces)])
