"""The report's tables, written once for HTML and once for Markdown. Cells arrive rendered and escaped by the
caller (report.py's ``_h`` for HTML, ``_md_inline`` for Markdown), because only the caller knows which of its
cells are text from outside and which are its own markup or figures."""
from __future__ import annotations

from typing import Iterable


def html_table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table with one header row."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def markdown_table(header: list[str], rows: Iterable[Iterable[str]]) -> list[str]:
    """A GitHub-flavoured Markdown table, one line each."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]
