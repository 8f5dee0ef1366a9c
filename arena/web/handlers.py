"""What each control on the page does, as plain functions of plain values.

Each handler returns (or yields) a dict from output names (see ``ARENA_OUTPUTS``) to
values or ``gr.update(...)`` dicts; page.py maps the names onto components. Tests call
these without a browser; the browser tests check the wiring.
"""
from __future__ import annotations

import asyncio
import html
import time
from pathlib import Path
from typing import AsyncIterator

import gradio as gr

from arena.core.outcomes import Winner
from arena.core.texts import TEXTS, t
from arena.core.topics import TYPED
from arena.quality import board as quality_board
from arena.ratings import charts
from arena.ratings.leaderboard import MIN_BATTLES, SELECTIONS_KEPT, CachedLeaderboard, Memo
from arena.rounds.rules import Arena, ArenaError, RoundView, Settings, _RateLimiter, address_key, mark_retired
from arena.serving.memory import resident_mb
from arena.storage import exports
from arena.web import render
from arena.web.access import AdminAccess, address_of
from arena.web.downloads import Downloads, Offer
from arena.web.safe_markdown import escape_text

VOTE_KEYS = {w.label: w.text_key for w in Winner}  # button label -> output name
VOTE_OUTPUTS = tuple(VOTE_KEYS.values())
ARENA_OUTPUTS = ("chat_a", "chat_b", "metrics_a", "metrics_b", "round_id", "reveal", *VOTE_OUTPUTS)
ALL = "all"  # the category and language selectors' "no filter" value
TABLE_COLUMNS = ("rank", "model", "rating", "ci_95", "battles", "win_rate", "median_tokens_per_s", "mean_ttft_s")


def only_changes(result: dict, sent: dict[str, dict]) -> dict:
    """``result`` for the next update of a stream, with properties the page already has left out: a value goes as a
    plain value, and an output whose properties did not change and that has no value is left out. Gradio answers
    every property update by building a new component and its JSON schema, on the event loop (it was most of the
    loop's work while an answer streamed). ``sent`` remembers what was given, across the stream's updates."""
    out = {}
    for name, value in result.items():
        if not (isinstance(value, dict) and value.get("__type__") == "update"):
            out[name] = value
            continue
        props = {k: v for k, v in value.items() if k not in ("value", "__type__")}
        if props and sent.get(name) != props:
            sent[name] = props
            out[name] = value
        elif "value" in value:
            out[name] = value["value"]
    return out


def page_error(message: str, duration: float = 8) -> gr.Error:
    """A pop-up on the page. Gradio writes its text into the page as HTML (through a sanitizer that let an SVG
    link through), and refusals can quote text from outside (model ids, server errors): escaped here, once."""
    return gr.Error(html.escape(message, quote=False), duration=duration)


def _refusal(exc: ArenaError, lang: str) -> gr.Error:
    return page_error(exc.message(lang))


class Handlers:
    """The page's behaviour over one ``Arena``; holds no per-visitor state (that lives in gr.State).

    Rendering (Markdown of questions and answers, linear in their length) runs in a worker thread, never
    on the event loop, and re-renders only what changed (render.PaneRenderer)."""

    def __init__(self, arena: Arena, downloads: Downloads | None = None, access: AdminAccess = AdminAccess(),
                 max_upload_bytes: int = exports.MAX_IMPORT_BYTES, batch=None):
        self.arena = arena
        self._downloads = downloads
        self.access = access
        self.batch = batch  # a BatchService: the Batch tab and the judge's table
        self.trusted_proxies = access.trusted_proxies
        self.max_upload_bytes = max_upload_bytes
        self.leaderboard = CachedLeaderboard(arena.store)
        self._views = Memo(SELECTIONS_KEPT)  # the human views with their charts, per selection and language
        self._quality_views = Memo(4)
        self._board_limiter = _RateLimiter(arena.limits.leaderboard_views_per_minute_per_address)

    @property
    def downloads(self) -> Downloads:
        """The app's download directory, or one of our own made on first use (a private temporary directory
        that handlers built without an app, as in tests, would otherwise leave behind unused)."""
        if self._downloads is None:
            self._downloads = Downloads()
        return self._downloads

    def admin(self, request, token: str | None, lang: str) -> None:
        """Export, import and batch runs are admin actions: see arena/access.py for the rule."""
        if key := self.access.refusal(request, token):
            raise page_error(t(key, lang), duration=10)

    # -- the arena panel ---------------------------------------------------------------
    def pane_labels(self, mode: str, a: str | None, b: str | None, lang: str) -> tuple[str, str]:
        if mode == "blind":
            return t("model_a", lang), t("model_b", lang)
        names = {s.id: s.name for s in self.arena.supervisor.statuses()}
        return names.get(a or "", t("model_a", lang)), names.get(b or "", t("model_b", lang))

    def render(self, view: RoundView, lang: str,
               panes: tuple[render.PaneRenderer, render.PaneRenderer] | None = None) -> dict:
        """A round view as the arena panel's outputs. Votes unlock only on a finished, unvoted, unfailed round.
        ``panes`` keep what was rendered for the previous update of the same stream."""
        panes = panes or render.PaneRenderer.pair()
        out = {"round_id": view.round_id, "reveal": render.reveal_markdown(view, lang)}
        for key, pane in zip("ab", panes):
            side = view.side(key)
            label = side.label if view.revealed else t(f"model_{key}", lang)
            out[f"chat_{key}"] = gr.update(value=render.chat_messages(side, lang, pane), label=label)
            out[f"metrics_{key}"] = render.metrics_markdown(side, view.revealed, lang, view.held)
        out.update({name: gr.update(interactive=view.votable) for name in VOTE_OUTPUTS})
        return out

    def cleared(self, mode: str, a: str | None, b: str | None, lang: str) -> dict:
        """Empty panes for a new round: the next question starts a new round id."""
        la, lb = self.pane_labels(mode, a, b, lang)
        empty = t("metrics_empty", lang)
        return {"chat_a": gr.update(value=[], label=la), "chat_b": gr.update(value=[], label=lb),
                "metrics_a": empty, "metrics_b": empty, "round_id": None, "reveal": "",
                **{name: gr.update(interactive=False) for name in VOTE_OUTPUTS}}

    def mode_changed(self, mode: str, a: str | None, b: str | None, lang: str) -> dict:
        return {**self.cleared(mode, a, b, lang), "pickers": gr.update(visible=mode == "named"),
                "blind_options": gr.update(visible=mode == "blind")}

    async def send(self, question: str, mode: str, a: str | None, b: str | None, settings: Settings, hold: bool,
                   round_id: str | None, preset_id: str | None, lang: str, session: str,
                   address: str | None = None) -> AsyncIterator[dict]:
        views = self.arena.ask(session, question, round_id=round_id, mode=mode, model_a=a, model_b=b,
                               settings=settings, preset_id=preset_id, hold=hold, address=address)
        async for result in self._streamed(views, lang):
            yield {**result, "question": ""}

    async def regenerate(self, round_id: str | None, lang: str, session: str,
                         address: str | None = None) -> AsyncIterator[dict]:
        """Both panes answer the round's last question again (Arena.regenerate)."""
        async for result in self._streamed(self.arena.regenerate(session, round_id, address), lang):
            yield result

    async def _streamed(self, views: AsyncIterator[RoundView], lang: str) -> AsyncIterator[dict]:
        """A stream of round views as the arena panel's updates, rendered off the event loop."""
        panes = render.PaneRenderer.pair()
        sent: dict[str, dict] = {}  # the properties each output was last given
        try:
            async for view in views:
                yield only_changes(await asyncio.to_thread(self.render, view, lang, panes), sent)
        except ArenaError as exc:
            raise _refusal(exc, lang) from None

    async def stop(self, round_id: str | None, session: str) -> bool:
        # The running send() generator draws the stopped answers itself.
        return await self.arena.stop(session, round_id)

    async def vote(self, choice: str, round_id: str | None, lang: str, session: str,
                   address: str | None = None) -> dict:
        try:
            view = await self.arena.vote(session, round_id, choice, address)
        except ArenaError as exc:
            raise _refusal(exc, lang) from None
        return await asyncio.to_thread(self.render, view, lang)

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
    async def board_view(self, lang: str, include_imported: bool = True, category: str | None = ALL,
                          language: str | None = ALL, address: str | None = None) -> dict:
        """The Leaderboard tab's view for one client: at most --leaderboard-views-per-minute per address (a view
        that is not cached refits Bradley-Terry with a bootstrap), computed off the event loop."""
        try:
            self._board_limiter.check(address_key(address or "?"), "what_leaderboard", "who_address")
        except ArenaError as exc:
            raise _refusal(exc, lang) from None
        return await asyncio.to_thread(self.leaderboard_view, lang, include_imported, category, language)

    def leaderboard_view(self, lang: str, include_imported: bool = True, category: str | None = ALL,
                         language: str | None = ALL) -> dict:
        """The human leaderboard of one selection (plain and style-controlled), the judge's, and what INT4 costs.
        A selection's tables and charts are kept until the next vote (per language of the page)."""
        names = self.names(lang)
        category = None if category in (None, "", ALL) else category
        language = None if language in (None, "", ALL) else language
        key = (self.arena.store.votes_version(), tuple(sorted(names.items())), lang, include_imported, category,
               language)
        view = self._views.get(key, lambda: self._human_view(names, lang, include_imported, category, language))
        categories, languages = self._selections(lang)
        fresh = {k: dict(v) if isinstance(v, dict) else v for k, v in view.items()}  # Gradio consumes updates
        return {**fresh, "board_category": gr.update(choices=categories), "board_language": gr.update(choices=languages),
                "judge_board": self._judge_table(lang),
                "judge_rates": self.batch.pass_rates() if self.batch is not None else None,
                **self.quality_view(lang)}

    def _human_view(self, names: dict[str, str], lang: str, include_imported: bool, category: str | None,
                    language: str | None) -> dict:
        """Tables and charts of the human votes. With fewer than leaderboard.MIN_BATTLES rated battles, the note
        says so instead of showing ratings."""
        board = self.leaderboard.get(names, include_imported, category, language)
        enough = board.enough
        table = board.table if enough else board.table.iloc[0:0]  # too few battles: no ratings shown or drawn
        note = t("board_battles", lang, n=board.battles) if enough else \
            t("board_too_few", lang, n=board.battles, min=MIN_BATTLES) if board.battles else ""
        return {"board": table.reindex(columns=TABLE_COLUMNS).rename(columns=lambda c: t(f"col_{c}", lang)),
                "board_empty": gr.update(visible=board.battles == 0), "board_note": note,
                "charts": gr.update(visible=enough),
                "ratings_plot": charts.ratings_chart(table, lang),
                "matrix_plot": charts.win_fraction_chart(board.matrix if enough else board.matrix.iloc[0:0], lang),
                "speed_plot": charts.speed_quality_chart(table, lang),
                "named_board": board.named.rename(columns=lambda c: t(f"col_{c}", lang)),
                "style_panel": gr.update(visible=enough),
                "style_board": board.style.rename(columns=lambda c: t(f"col_{c}", lang)),
                "style_coefficients": board.coefficients.assign(
                    feature=[t(f"feature_{f}", lang) for f in board.coefficients["feature"]])
                .rename(columns=lambda c: t(f"col_{c}", lang))}

    def names(self, lang: str) -> dict[str, str]:
        """Display names for the leaderboards: every catalog model, and every model of a stored battle; a retired
        one, or one gone from the catalog, marked so (its battles are never dropped)."""
        return mark_retired(self.arena.model_names(), self.arena.retired_ids(), t("retired", lang))

    def _selections(self, lang: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The category and language choices: All, the presets' categories, and whatever stored battles have."""
        stored = self.arena.store.topics()
        categories = list(dict.fromkeys([p.category for p in self.arena.prompts] + [c for c, _, _ in stored if c]))
        languages = list(dict.fromkeys(["zh", "en"] + [g for _, g, _ in stored if g]))
        label = lambda key, fallback: t(key, lang) if key in TEXTS["en"] else fallback  # noqa: E731
        return ([(t("board_all", lang), ALL)] + [(label("topic_typed", c) if c == TYPED else c, c) for c in categories],
                [(t("board_all", lang), ALL)] + [(label(f"lang_{g}", g), g) for g in languages])

    def quality_view(self, lang: str) -> dict:
        """The newest quality comparison: intro, table and chart (drawn again only when a result is stored)."""
        names = self.arena.model_names()
        rows = quality_board.latest_comparison(self.arena.store.quality_results())
        key = (tuple((r["model"], r["created"]) for r in rows), tuple(sorted(names.items())), lang)
        return self._quality_views.get(key, lambda: {
            "quality_intro": quality_board.intro(rows, names, lang),
            "quality_board": quality_board.frame(rows, names, lang),
            "quality_plot": charts.quality_chart(rows, names, lang)})

    def _judge_table(self, lang: str):
        """The automatic judge's ratings, apart from the human ones (None without a batch service)."""
        if self.batch is None:
            return None
        table = self.batch.judge_leaderboard()
        return table.rename(columns=lambda c: t(f"col_{c}", lang) if f"col_{c}" in TEXTS["en"] else c)

    # -- export / import ---------------------------------------------------------------
    def export(self, kind: str, token: str | None, lang: str, request) -> Offer:
        """Write every vote (csv) or battle (jsonl) to a private file and offer it to this client only."""
        self.admin(request, token, lang)
        if kind not in ("csv", "jsonl"):
            raise page_error(f"unknown export format {kind!r}; use csv or jsonl")
        records = self.arena.store.voted_rounds()
        if not records:
            raise page_error(t("no_votes", lang))
        path = self.downloads.new_file(f".{kind}")
        (exports.write_csv if kind == "csv" else exports.write_jsonl)(records, path, self.arena.retired_ids())
        name = f"arena-{'votes' if kind == 'csv' else 'battles'}-{time.strftime('%Y%m%d-%H%M%S')}.{kind}"
        return self.downloads.offer(path, name, address_of(request, self.trusted_proxies))

    def export_link(self, kind: str, token: str | None, lang: str, request) -> str:
        """The Export tab's download link (HTML: a link that downloads, named for the file)."""
        return download_link(self.export(kind, token, lang, request), lang)

    def import_file(self, path: str | None, token: str | None, lang: str, request=None) -> str:
        """Imports from the page are never rated (anyone can upload); the CLI's --trust-import can."""
        if not path:
            return ""
        self.admin(request, token, lang)
        try:
            added, skipped = exports.import_battles(self.arena.store, Path(path), max_bytes=self.max_upload_bytes,
                                                    prompts=self.arena.prompts)
        except (exports.ImportError_, OSError, UnicodeDecodeError) as exc:
            return f"⚠️ {render.plain(exc)}"
        return t("imported", lang, added=added, skipped=skipped)


def download_link(offer: Offer, lang: str) -> str:
    """Markdown: a link that downloads ``offer`` (relative, so it works behind a path prefix; the route sends it
    as an attachment named for the file), with its expiry. Markdown, not a gr.HTML panel: Gradio renders those
    through ``new Function``, which the page's Content-Security-Policy rightly forbids."""
    minutes = max(1, round(offer.expires_in_s / 60))
    return (f"**[⬇ {escape_text(offer.filename, in_link=True)}]({offer.url})** "
            f"*{escape_text(t('download_note', lang, minutes=minutes))}*")

