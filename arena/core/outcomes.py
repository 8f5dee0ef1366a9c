"""The one vocabulary of battle outcomes: FastChat's winner words, the page's vote labels, the
score each outcome gives model A, and the three classes agreement is measured in.

Votes, imports, exports, the store's CHECK constraint, the leaderboard, the judge and the report
all read these names from here, so a label can't drift between them.
"""
from __future__ import annotations

from enum import Enum


class Winner(str, Enum):
    """A battle's outcome in FastChat's words (the ``winner`` field of its battle logs)."""

    A = "model_a"
    B = "model_b"
    TIE = "tie"
    BOTH_BAD = "tie (bothbad)"

    @property
    def label(self) -> str:
        """The page's button label, which the API's ``/vote`` also accepts: 'A better', …"""
        return _LABELS[self]

    @property
    def text_key(self) -> str:
        """The key of the label in arena/texts.py (and the button's name on the page)."""
        return _TEXT_KEYS[self]

    @property
    def score(self) -> float:
        """What the outcome is worth to model A: win 1, loss 0, tie and "both bad" ½ (FastChat's rule)."""
        return {Winner.A: 1.0, Winner.B: 0.0}.get(self, 0.5)

    @property
    def outcome(self) -> str:
        """Three classes for agreement figures: 'A', 'B' or 'tie' (both bad counts as a tie)."""
        return {Winner.A: "A", Winner.B: "B"}.get(self, "tie")

    def swapped(self) -> "Winner":
        """The same outcome with the two sides exchanged."""
        return {Winner.A: Winner.B, Winner.B: Winner.A}.get(self, self)


_LABELS = {Winner.A: "A better", Winner.B: "B better", Winner.TIE: "Tie", Winner.BOTH_BAD: "Both bad"}
_TEXT_KEYS = {Winner.A: "vote_a", Winner.B: "vote_b", Winner.TIE: "vote_tie", Winner.BOTH_BAD: "vote_bothbad"}
WINNER_WORDS: tuple[str, ...] = tuple(w.value for w in Winner)
VOTE_LABELS: tuple[str, ...] = tuple(w.label for w in Winner)


def parse_winner(value: "str | Winner") -> Winner:
    """A vote as the page labels it ('A better') or as FastChat writes it ('model_a'); ValueError otherwise."""
    if isinstance(value, Winner):
        return value
    for winner in Winner:
        if value in (winner.value, winner.label):
            return winner
    raise ValueError(f"unknown vote {value!r}; use one of: {', '.join(VOTE_LABELS)}")


def score_of(word: str) -> float:
    """The score for model A of a stored winner word (the store and imports hold the FastChat words)."""
    return Winner(word).score
