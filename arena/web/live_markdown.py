"""safe_markdown for a text that only grows (a streaming answer), at a cost that stays linear in its length.

A stream is rendered up to 20 times a second. Re-parsing all of it each time would cost its length squared, so:

- a block is final once a later block has started on a complete line (whether a line starts a block is decided
  by that line, and later lines can only change the block they join): the rendering of every block before the
  last such start is kept, and the next update parses only from there (the *tail*);
- a growing tail that is an open code fence is not parsed again: each update checks only the lines that are new
  for the line that would close it, and writes the fence around the text (its content is never parsed inline);
- a growing tail whose inline text holds more than ``LIVE_PARSE_LIMIT`` characters that inline parsing works on
  is shown as escaped text until the answer ends, each line escaped once. The count covers the inline text the
  block parser leaves, wherever it is: no opening line (a "```a`", which is no fence) can skip it.

``render(text, final=True)`` renders the whole text once, as ``safe_markdown`` does.
"""
from __future__ import annotations

from markdown_it import MarkdownIt

from arena.web.safe_markdown import (
    Piece,
    escape_text,
    fence_lines,
    language,
    longest_run,
    normalise,
    parse,
    pieces,
    risky,
    safe_markdown,
    uncovered,
)

# Parsing 1,000 brackets takes about 18 ms here, and a stream re-parses its tail up to 20 times a second; block
# parsing is linear and cheap per character (bench/bench_render.py).
LIVE_PARSE_LIMIT = 1000
_INLINE_SYNTAX = "[]!<`*_~&\\"
_BLOCKS = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).disable("inline")


def _inline_syntax(text: str) -> int:
    """How many characters inline parsing would work on in ``text``: those of its inline content."""
    if sum(map(text.count, _INLINE_SYNTAX)) <= LIVE_PARSE_LIMIT:  # all of them are under the limit: no parse
        return 0
    tokens = parse(_BLOCKS, text)
    if tokens is None:
        return sum(map(text.count, _INLINE_SYNTAX))
    return sum(sum(map(tok.content.count, _INLINE_SYNTAX)) for tok in tokens if tok.type == "inline")


class _EscapedTail:
    """A tail shown as escaped text, each character escaped once: complete lines when they end, and the growing
    last line in pieces, each cut where no escaping rule can reach across (escape_text is line by line; a rule
    looks at most at the start of a line and at "://" or "www.")."""

    def __init__(self) -> None:
        self._done = 0                 # characters of the tail escaped so far
        self._lines: list[str] = []    # the escaped complete lines
        self._line: list[str] = []     # the escaped pieces of the growing line

    def render(self, tail: str) -> str:
        end = tail.rfind("\n") + 1
        if end > self._done:  # lines ended: escape what is left of them at once
            self._lines.append("".join(self._line) + escape_text(tail[self._done:end - 1], start=not self._line))
            self._done, self._line = end, []
        cut = _safe_cut(tail, self._done, len(tail) - _ESCAPE_REACH)
        if cut > self._done:
            self._line.append(escape_text(tail[self._done:cut], start=not self._line))
            self._done = cut
        return "\n".join([*self._lines, "".join(self._line) + escape_text(tail[self._done:], start=not self._line)])


_ESCAPE_REACH = 16  # characters a cut keeps from the end of the growing line, and from its start


def _safe_cut(tail: str, start: int, limit: int) -> int:
    """The furthest point at or before ``limit`` where the growing line may be cut: past its first _ESCAPE_REACH
    characters (the line-start rules) and after a character no autolink pattern holds. ``start`` if there is none."""
    line_start = tail.rfind("\n", 0, max(start, 1)) + 1 if start else 0
    floor = max(start, line_start + _ESCAPE_REACH + len(tail[line_start:]) - len(tail[line_start:].lstrip(" ")))
    for at in range(limit, floor, -1):
        if tail[at - 1] not in "wW:/.":
            return at
    return start


class _OpenFence:
    """A tail that is a code fence still open, shown without parsing: the fence around its content as
    ``safe_markdown`` writes it (verbatim, or written anew when the block must be). ``render`` returns None once a
    line closes the fence: then the tail is parsed again."""

    def __init__(self, tail: str, opener: int, token) -> None:
        self.opener = opener                                              # where the opening line starts
        self.head = opener + len(tail[opener:].split("\n", 1)[0]) + 1  # where the content starts
        # the lines before the opener, as safe_markdown shows them (blank, or a dropped definition)
        self.before = [uncovered(line) for line in tail[:opener].split("\n")[:-1]]
        self.char, self.length = token.markup[0], len(token.markup)
        self.info, self.anew = token.info, token.info.strip() != language(token.info)
        self.checked = self.head     # content up to here was checked (whole lines)
        self.backticks = 0

    @classmethod
    def starting(cls, tail: str, piece: Piece) -> "_OpenFence | None":
        """The open fence ``piece`` starts, if it is one: a top-level fence, its opening line complete and at
        the margin, no line after it closing it."""
        token = piece.token
        if token is None or token.type != "fence" or token.level != 0:
            return None
        lines = tail.split("\n")
        opener = sum(len(line) + 1 for line in lines[:piece.block_line])
        if piece.block_line >= len(lines) - 1 or not lines[piece.block_line].startswith(token.markup):
            return None
        fence = cls(tail, opener, token)
        return fence if fence.render(tail) is not None else None

    def closes(self, line: str) -> bool:
        stripped = line.lstrip(" ")
        return len(line) - len(stripped) <= 3 and len(stripped.rstrip(" \t")) >= self.length \
            and set(stripped.rstrip(" \t")) == {self.char}

    def render(self, tail: str) -> str | None:
        end = tail.rfind("\n") + 1
        for line in tail[self.checked:max(self.checked, end - 1)].split("\n") if end > self.checked else ():
            if self.closes(line):
                return None
            self.anew = self.anew or risky(line)
            self.backticks = max(self.backticks, longest_run(line))
        self.checked = max(self.checked, end)
        growing = tail[self.checked:]
        if self.closes(growing):
            return None
        if self.anew or risky(growing):  # written anew, and the empty line after it if the tail ends a line
            body = fence_lines(tail[self.head:], self.info, max(self.backticks, longest_run(growing)))
            body += [""] if tail.endswith("\n") else []
        else:
            body = [tail[self.opener:]]  # verbatim: the opening line and the content as written
        return "\n".join([*self.before, *body])


class LiveMarkdown:
    """``safe_markdown`` of a growing text (see the module's docstring). One per stream, one thread at a time."""

    def __init__(self) -> None:
        self._source = ""              # the normalised text whose rendering is kept
        self._rendered: list[str] = []
        self._growing: _EscapedTail | _OpenFence | None = None  # how the tail is shown without a parse

    def render(self, text: str, final: bool = False) -> str:
        text = normalise(text or "")
        if final:
            return safe_markdown(text)
        if not text.startswith(self._source):  # not a continuation: start over
            self._source, self._rendered, self._growing = "", [], None
        tail = text[len(self._source):]
        if self._growing is not None and (shown := self._growing.render(tail)) is not None:
            return "\n".join([*self._rendered, shown])
        self._growing = None
        if _inline_syntax(tail) > LIVE_PARSE_LIMIT:
            self._growing = _EscapedTail()
            return "\n".join([*self._rendered, self._growing.render(tail)])
        parts = self._parsed(tail)  # first: it moves final blocks into the kept rendering
        return "\n".join([*self._rendered, *(piece.text for piece in parts)])

    def _parsed(self, tail: str) -> list[Piece]:
        """The tail parsed; blocks that are final are moved to the kept rendering, and an open fence left as the
        tail is shown without parsing from the next update on."""
        parts = pieces(tail)
        last_complete = tail.count("\n") - (0 if tail.endswith("\n") else 1)  # lines after it are still growing
        cut = max((i for i, part in enumerate(parts) if i and part.block_line <= last_complete), default=0)
        if cut:
            kept = "\n".join(tail.split("\n")[:parts[cut].first_line]) + "\n"
            self._source += kept
            self._rendered.extend(part.text for part in parts[:cut])
            tail = tail[len(kept):]
            parts = [p._replace(first_line=p.first_line - parts[cut].first_line,
                                block_line=p.block_line - parts[cut].first_line) for p in parts[cut:]]
        if len(parts) == 1:
            self._growing = _OpenFence.starting(tail, parts[0])
        return parts
