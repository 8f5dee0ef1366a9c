"""What each control on the page does, as plain functions of plain values.

Each handler returns (or yields) a dict from output names (see ``ARENA_OUTPUTS``) to
values or ``gr.update(...)`` dicts; page.py maps the names onto components. Tests call
these without a browser; the browser tests check the wiring.
"""
from __future__ import annotations

import hmac
import html
import time
from pathlib import Path
from typing import AsyncIterator

import gradio as gr

from .. import charts, exports
from ..leaderboard import CachedLeaderboard
from ..memory import resident_mb
from ..rounds import VOTE_CHOICES, Arena, ArenaError, Settings
from ..texts import TEXTS, t
from . import render

VOTE_KEYS = dict(zip(VOTE_CHOICES, ("vote_a", "vote_b", "vote_tie", "vote_bothbad")))  # button label -> output
VOTE_OUTPUTS = tuple(VOTE_KEYS.values())
ARENA_OUTPUTS = ("chat_a", "chat_b", "metrics_a", "metrics_b", "round_id", "reveal", *VOTE_OUTPUTS)
TABLE_COLUMNS = ("rank", "model", "rating", "ci_95", "battles", "win_rate", "median_tokens_per_s", "mean_ttft_s")


def _refusal(exc: ArenaError, lang: str) -> gr.Error:
    return gr.Error(exc.message(lang), duration=8)


class Handlers:
    """The page's behaviour over one ``Arena``; holds no per-visitor state (that lives in gr.State)."""

    def __init__(self, arena: Arena, export_dir: Path, admin_token: str | None = None,
                 max_upload_bytes: int = exports.MAX_IMPORT_BYTES, trusted_proxies: frozenset[str] = frozenset(),
                 batch=None):
        self.arena, self.export_dir = arena, Path(export_dir)
        self.batch = batch  # a BatchService: the Batch tab and the judge's table
        self.trusted_proxies = trusted_proxies
        self.admin_token, self.max_upload_bytes = admin_token, max_upload_bytes
        self.leaderboard = CachedLeaderboard(arena.store)

    def _admin(self, token: str | None, lang: str) -> None:
        """Export (every conversation) and import (new votes) need the admin token when one is set."""
        if self.admin_token and not hmac.compare_digest((token or "").encode(), self.admin_token.encode()):
            raise gr.Error(t("admin_needed", lang), duration=10)

    # -- the arena panel ---------------------------------------------------------------
    def pane_labels(self, mode: str, a: str | None, b: str | None, lang: str) -> tuple[str, str]:
        if mode == "blind":
            return t("model_a", lang), t("model_b", lang)
        names = {s.id: s.name for s in self.arena.supervisor.statuses()}
        return names.get(a or "", t("model_a", lang)), names.get(b or "", t("model_b", lang))

    def render(self, view: dict, lang: str) -> dict:
        """A round view as the arena panel's outputs. Votes unlock only on a finished, unvoted, unfailed round."""
        votable = not view["streaming"] and not view["vote"] and not view["error"] and bool(view["a"]["turns"])
        labels = [view[k]["label"] if view["revealed"] else t(f"model_{k}", lang) for k in "ab"]
        out = {"round_id": view["round_id"], "reveal": render.reveal_markdown(view, lang)}
        for key, label in zip("ab", labels):
            out[f"chat_{key}"] = gr.update(value=render.chat_messages(view[key], lang), label=label)
            out[f"metrics_{key}"] = render.metrics_markdown(view[key], view["revealed"], lang, view.get("held", False))
        out.update({name: gr.update(interactive=votable) for name in VOTE_OUTPUTS})
        return out

    def cleared(self, mode: str, a: str | None, b: str | None, lang: str) -> dict:
        """Empty panes for a new round: the next question starts a new round id."""
        la, lb = self.pane_labels(mode, a, b, lang)
        empty = render.metrics_markdown({"turns": []}, lang=lang)
        return {"chat_a": gr.update(value=[], label=la), "chat_b": gr.update(value=[], label=lb),
                "metrics_a": empty, "metrics_b": empty, "round_id": None, "reveal": "",
                **{name: gr.update(interactive=False) for name in VOTE_OUTPUTS}}

    def mode_changed(self, mode: str, a: str | None, b: str | None, lang: str) -> dict:
        return {**self.cleared(mode, a, b, lang), "pickers": gr.update(visible=mode == "named"),
                "blind_options": gr.update(visible=mode == "blind")}

    async def send(self, question: str, mode: str, a: str | None, b: str | None, settings: Settings, hold: bool,
                   round_id: str | None, preset_id: str | None, lang: str, session: str,
                   address: str | None = None) -> AsyncIterator[dict]:
        try:
            async for view in self.arena.ask(session, question, round_id=round_id, mode=mode, model_a=a, model_b=b,
                                             settings=settings, preset_id=preset_id, hold=hold, address=address):
                yield {**self.render(view, lang), "question": ""}
        except ArenaError as exc:
            raise _refusal(exc, lang) from None

    def stop(self, round_id: str | None, session: str) -> bool:
        # The running send() generator draws the stopped answers itself.
        return self.arena.stop(session, round_id)

    def vote(self, choice: str, round_id: str | None, lang: str, session: str, address: str | None = None) -> dict:
        try:
            return self.render(self.arena.vote(session, round_id, choice, address), lang)
        except ArenaError as exc:
            raise _refusal(exc, lang) from None

    def category_changed(self, category: str | None) -> dict:
        return {"preset": gr.update(choices=render.preset_choices(self.arena.prompts, category), value=None)}

    def preset_picked(self, key: str | None) -> dict:
        prompt = next((p for p in self.arena.prompts if p.id == key), None)
        return {"question": prompt.question if prompt else gr.update(), "preset_id": key}

    def status(self, lang: str) -> str:
        rows = []
        for status in self.arena.supervisor.statuses():
            pid = self.arena.supervisor.pid(status.id) if status.state == "ready" and not status.remote else None
            rows.append((status, resident_mb(pid) if pid else None))
        return render.status_markdown(rows, lang)

    # -- leaderboard -------------------------------------------------------------------
    def leaderboard_view(self, lang: str, include_imported: bool = True) -> dict:
        names = {s.id: s.name for s in self.arena.supervisor.statuses()}
        table, matrix, named = self.leaderboard.get(names, include_imported)
        shown = table[list(TABLE_COLUMNS)] if not table.empty else table.reindex(columns=TABLE_COLUMNS)
        return {"board": shown.rename(columns=lambda c: t(f"col_{c}", lang)),
                "board_empty": gr.update(visible=table.empty), "charts": gr.update(visible=not table.empty),
                "ratings_plot": charts.ratings_chart(table, lang),
                "matrix_plot": charts.win_fraction_chart(matrix, lang),
                "speed_plot": charts.speed_quality_chart(table, lang),
                "named_board": named.rename(columns=lambda c: t(f"col_{c}", lang)),
                "judge_board": self._judge_table(lang)}

    def _judge_table(self, lang: str):
        """The automatic judge's ratings, apart from the human ones (None without a batch service)."""
        if self.batch is None:
            return None
        table = self.batch.judge_leaderboard()
        return table.rename(columns=lambda c: t(f"col_{c}", lang) if f"col_{c}" in TEXTS["en"] else c)

    # -- export / import ---------------------------------------------------------------
    def export(self, kind: str, token: str | None = None, lang: str = "en") -> str:
        self._admin(token, lang)
        records = self.arena.store.voted_rounds()
        if not records:
            raise gr.Error(t("no_votes", lang))
        self.export_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.export_dir / f"arena-{'votes' if kind == 'csv' else 'battles'}-{stamp}.{kind}"
        return str(exports.write_csv(records, path) if kind == "csv" else exports.write_jsonl(records, path))

    def import_file(self, path: str | None, token: str | None, lang: str) -> str:
        """Imports from the page are never rated (anyone can upload); the CLI's --trust-import can."""
        if not path:
            return ""
        self._admin(token, lang)
        try:
            added, skipped = exports.import_battles(self.arena.store, Path(path), max_bytes=self.max_upload_bytes)
        except (exports.ImportError_, OSError, UnicodeDecodeError) as exc:
            return f"⚠️ {html.escape(str(exc))}"
        return t("imported", lang, added=added, skipped=skipped)


def session_of(request: gr.Request | None) -> str:
    return request.session_hash if request and request.session_hash else "anonymous"


def address_of(request: gr.Request | None, trusted_proxies: frozenset[str] = frozenset()) -> str | None:
    """The client's address for rate limits. X-Forwarded-For is believed only when the direct peer
    is a proxy the operator named (--trusted-proxy): then the nearest address that is not one."""
    client = getattr(request, "client", None)
    peer = getattr(client, "host", None)
    if peer in trusted_proxies:
        forwarded = [a.strip() for a in (request.headers.get("x-forwarded-for") or "").split(",") if a.strip()]
        for address in reversed(forwarded):
            if address not in trusted_proxies:
                return address
    return peer

