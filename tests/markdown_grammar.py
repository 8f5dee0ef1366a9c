"""A grammar of hostile Markdown for property-based tests of safe_markdown (hypothesis strategies).

Texts are built from the constructs the browser's Markdown reader acts on, nested in each other: tables whose
cells hold code spans of one or more backticks with escaped pipes, emphasis, links and images in every form
(inline, titled, angle-bracketed, reference, shortcut, autolink), raw HTML (SVG, forms, event handlers,
comments), entities, fences (mermaid among them), indented code, blockquotes, lists, headings, math and
reference definitions with hostile destinations. Shared by tests/web/test_safe_markdown.py (markdown-it reads the
output back), tests/web/test_browser.py (Chromium reads it through the page's own components) and
scripts/fuzz-markdown.sh (the long run).
"""
from __future__ import annotations

import re

from hypothesis import strategies as st
from markdown_it import MarkdownIt

# Destinations an attacker would use, obfuscated as Markdown and HTML allow, and harmless ones.
DESTINATIONS = [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", "javascript&#58;alert(1)", "java&#x09;script:alert(1)",
    "&#106;avascript:alert(1)", "javascript%3Aalert(1)", " javascript:alert(1)", "java\\script:alert(1)",
    "vbscript:msgbox(1)", "data:text/html;base64,PHN2Zz4=", "data:image/svg+xml,<svg onload=alert(1)>",
    "DATA:image/png;base64,AAAA", "http://h/p.png", "https://h/a?b=1&c=2|d", "/relative", "#frag",
    "mailto:a@b", "file:///etc/passwd", "x|y", "(x)", "<http://h/angle.png>", "<javascript:alert(1)>",
]
WORDS = ["x", "ab", "h i", "中文", "1.", "a_b", "**", "__", "\\", "\\\\", "\\|", "|", "||", "`", "``", "```", "~~",
         "<", ">", "&", "!", "[", "]", "(", ")", '"', "'", ":", "$", "$$", "#", "=", "-", "+", "*", "_", "{", "}",
         "  ", "\t", "&lt;", "&#60;", "&#x3C;", "&amp;", "&colon;", "&#0;", "&bogus;", "&nbsp;", "http://h/x",
         "www.h.example", "onerror=alert(1)", "javascript:alert(1)", "mermaid", "]:", "](", "![", "\\`", "\\*"]
HTML = [
    "<svg><a href=\"javascript:alert(1)\"><text x=\"5\" y=\"20\">click me</text></a></svg>",
    "<img src=x onerror=alert(1)>", "<a href=\"javascript:alert(1)\">a</a>", "<form action=\"http://h/f\">"
    "<input name=t style=\"position:fixed\"><button>go</button></form>", "<script>alert(1)</script>",
    "<details open ontoggle=alert(1)>", "<iframe src=\"http://h/\"></iframe>", "<!-- c -->", "<![CDATA[x]]>",
    "<?php x ?>", "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>", "<style>*{color:red}</style>",
    "</p>", "<b>", "</b>", "<x-y onclick=alert(1)>", "<div\nonclick=alert(1)>", "<textarea>", "<A HREF=javascript:1>",
    "<object data=\"http://h/o\">", "<base href=\"http://h/\">", "<meta http-equiv=refresh content=\"0;url=http://h\">",
]
BLOCK_HTML = ["<div>", "<svg>", "<pre>", "<script>", "<style>", "<textarea>", "<!--", "<?x", "<!X", "<![CDATA[",
              "<table><tr><td>", "<details>", "</div>"]
LABELS = ["r", "R", "1", "x y", "中"]


def _text() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map("".join)


def _destination() -> st.SearchStrategy[str]:
    return st.sampled_from(DESTINATIONS)


def _title() -> st.SearchStrategy[str]:
    return st.sampled_from(["", ' "t"', " 't'", " (t)", ' "a\\"b"', ' "<svg onload=alert(1)>"'])


def _code_span(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    ticks = st.sampled_from(["`", "``", "```"])
    return st.tuples(ticks, inner, ticks).map(lambda t: t[0] + t[1] + t[2])


def inline() -> st.SearchStrategy[str]:
    """One line of inline Markdown, constructs nested in each other."""
    leaf = st.one_of(_text(), st.sampled_from(HTML),
                     _code_span(st.one_of(_text(), st.sampled_from(HTML), st.just("x\\|<svg onload=alert(1)>"))),
                     st.tuples(_destination()).map(lambda d: f"<{d[0].strip('<>')}>"),  # autolink
                     st.sampled_from(LABELS).map(lambda r: f"[{r}]"))  # shortcut reference

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        pair = st.tuples(inner, inner)
        return st.one_of(
            pair.map("".join),
            st.tuples(st.sampled_from(["*", "_", "**", "__", "~~", "***"]), inner).map(lambda t: t[0] + t[1] + t[0]),
            st.tuples(inner, _destination(), _title()).map(lambda t: f"[{t[0]}]({t[1]}{t[2]})"),
            st.tuples(inner, _destination(), _title()).map(lambda t: f"![{t[0]}]({t[1]}{t[2]})"),
            st.tuples(inner, st.sampled_from(LABELS)).map(lambda t: f"[{t[0]}][{t[1]}]"),
            st.tuples(inner, st.sampled_from(LABELS)).map(lambda t: f"![{t[0]}][{t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"[{t[0]}]({t[1]})"),  # a destination that is itself syntax
            inner.map(lambda s: f"$${s}$$"),
            inner.map(lambda s: s + "\\\n" + s),  # a hard break
        )
    return st.recursive(leaf, extend, max_leaves=6)


def _table(cell: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    cell_text = cell.map(lambda c: c.replace("\n", " "))
    row = st.lists(cell_text, min_size=1, max_size=3)
    delimiter = st.sampled_from(["---", ":--", "--:", ":-:"])

    def build(parts) -> str:
        header, aligns, rows, outer = parts
        def line(cells):
            text = " | ".join(cells)
            return f"| {text} |" if outer else text
        return "\n".join([line(header), line(aligns[:len(header)] + ["---"] * (len(header) - len(aligns))),
                          *(line(r) for r in rows)])
    return st.tuples(row, st.lists(delimiter, min_size=1, max_size=3), st.lists(row, max_size=3),
                     st.booleans()).map(build)


def block() -> st.SearchStrategy[str]:
    """One block, blocks nested in blockquotes and list items."""
    line = inline()
    leaf = st.one_of(
        line,
        st.lists(line, min_size=2, max_size=3).map("\n".join),
        _table(line),
        st.tuples(st.sampled_from(["#", "##", "######"]), line).map(lambda t: f"{t[0]} {t[1]}"),
        st.tuples(line, st.sampled_from(["===", "---"])).map(lambda t: f"{t[0]}\n{t[1]}"),
        st.tuples(st.sampled_from(["```", "~~~", "````", "``` mermaid", "```mermaid", "~~~ `x`", "```a`"]),
                  st.lists(st.one_of(line, st.sampled_from(HTML)), max_size=3),
                  st.sampled_from(["```", "~~~", "````", ""])).map(lambda t: "\n".join([t[0], *t[1], t[2]])),
        line.map(lambda s: "    " + s),  # indented code
        st.tuples(st.sampled_from(BLOCK_HTML), line).map(lambda t: f"{t[0]}\n{t[1]}"),
        st.tuples(st.sampled_from(LABELS), _destination(), _title()).map(lambda t: f"[{t[0]}]: {t[1]}{t[2]}"),
        st.sampled_from(["---", "***", "- - -", ""]),
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            inner.map(lambda s: "\n".join("> " + ln for ln in s.split("\n"))),
            inner.map(lambda s: "\n".join(">" + ln for ln in s.split("\n"))),
            st.tuples(st.sampled_from(["- ", "* ", "+ ", "1. ", "2) "]), st.lists(inner, min_size=1, max_size=3))
            .map(lambda t: "\n".join(t[0] + "\n".join(("   " if i else "") + ln for i, ln in enumerate(s.split("\n")))
                                     for s in t[1])),
            st.tuples(inner, st.sampled_from(["\n", "\n\n"]), inner).map("".join),
        )
    return st.recursive(leaf, extend, max_leaves=5)


def _documents() -> st.SearchStrategy[str]:
    return st.lists(st.tuples(block(), st.sampled_from(["\n", "\n\n"])), min_size=1, max_size=4).map(
        lambda parts: "".join(b + sep for b, sep in parts).rstrip("\n"))


DOCUMENTS = _documents()


def documents() -> st.SearchStrategy[str]:
    """A whole text: blocks separated by one or two newlines (built once: a strategy's repr is costly)."""
    return DOCUMENTS


# -- the oracle: what a reader finds in Markdown -------------------------------------------------------------
READER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# A destination is harmless when a browser reads it as http(s), mailto or a relative address: after dropping
# leading controls and spaces, and tabs and newlines anywhere, it has no scheme (a letter, then letters, digits,
# '+', '-' or '.', then ':'), or one of those three.
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):", re.IGNORECASE)


def harmless_href(href: str) -> bool:
    seen = re.sub(r"[\t\n\r]", "", href).lstrip("".join(map(chr, range(33))))
    scheme = _SCHEME.match(seen)
    return scheme is None or scheme.group(1).lower() in ("http", "https", "mailto")


def dangers(markdown: str) -> list[tuple[str, str]]:
    """What markdown-it (CommonMark with GFM tables and strikethrough, raw HTML on, as a browser's reader would
    have it) finds in ``markdown`` that could load or run something: raw HTML, images, diagrams, and links
    whose destination is not plainly http(s), mailto or relative."""
    found = []
    for token in READER.parse(markdown):
        if token.type == "html_block":
            found.append(("html_block", token.content))
        if token.type == "fence" and token.info.strip().startswith("mermaid"):
            found.append(("mermaid", token.info))
        for child in token.children or []:
            if child.type in ("image", "html_inline"):
                found.append((child.type, child.content))
            elif child.type == "link_open" and not harmless_href(str(child.attrs.get("href", ""))):
                found.append(("link", str(child.attrs.get("href"))))
    return found
