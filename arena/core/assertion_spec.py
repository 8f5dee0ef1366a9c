"""What a preset's ``assert:`` may say (prompts.yaml), validated when the presets load: the types, and ``parse``,
which compiles patterns once and names a bad entry. Checking an answer against them is grading's job
(arena/grading/assertions.py); the spec lives here because a preset carries its parsed assertions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import regex

STRING_TYPES = ("contains", "icontains", "regex", "equals")
LIST_TYPES = ("contains-any", "contains-all", "icontains-any", "icontains-all")
RUBRIC = "llm-rubric"
TYPES = (*STRING_TYPES, *LIST_TYPES, RUBRIC)


class AssertionConfigError(ValueError):
    """An ``assert:`` entry that can't be used; the message says which and why."""


@dataclass(frozen=True)
class Assertion:
    type: str                       # as written, e.g. "not-icontains"
    value: str | tuple[str, ...]
    pattern: regex.Pattern | None = field(default=None, compare=False, repr=False)

    @property
    def negated(self) -> bool:
        return self.type.startswith("not-")

    @property
    def base(self) -> str:
        return self.type.removeprefix("not-")

    def describe(self) -> str:
        value = self.value if isinstance(self.value, str) else ", ".join(self.value)
        return f"{self.type} {value!r}"


def parse(entries: object) -> tuple[Assertion, ...]:
    """``assert:`` of one preset, validated; raises AssertionConfigError naming the bad entry."""
    if not isinstance(entries, list) or not entries:
        raise AssertionConfigError("'assert' must be a non-empty list of {type, value} entries")
    parsed = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) - {"type", "value", "__line__"} or "type" not in entry:
            raise AssertionConfigError(f"assert entry {number} must be {{type: ..., value: ...}}, got {entry!r}")
        kind, value = entry["type"], entry.get("value")
        base = str(kind).removeprefix("not-")
        if base not in TYPES or (kind != base and base == RUBRIC):
            raise AssertionConfigError(f"assert entry {number}: unknown type {kind!r}; known: {', '.join(TYPES)} "
                                       f"(and not- before any but {RUBRIC})")
        if base in LIST_TYPES:
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise AssertionConfigError(f"assert entry {number} ({kind}): 'value' must be a list of texts")
            value = tuple(value)
        elif not isinstance(value, str) or not value:
            raise AssertionConfigError(f"assert entry {number} ({kind}): 'value' must be a non-empty text")
        pattern = None
        if base == "regex":
            try:
                pattern = regex.compile(value)
            except regex.error as exc:
                raise AssertionConfigError(f"assert entry {number}: the pattern {value!r} does not compile: {exc}") \
                    from None
        parsed.append(Assertion(kind, value, pattern))
    return tuple(parsed)
