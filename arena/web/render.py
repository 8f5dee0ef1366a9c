"""Pure render helpers: a round view (rounds.Arena.view) in, Markdown and Chatbot messages out.

No Gradio here, so tests call them directly. Everything a model or a visitor wrote is
untrusted and goes through safe_markdown.py: HTML is shown as text, and images become plain
links, so no viewer's browser ever fetches a URL that a prompt injection put into an answer.
Every other text from outside (model names and ids, engine and server error messages, a
server's content type, a batch run's errors) is shown as plain text through ``plain``: no
Markdown or HTML in it is read. The costs are linear in the text, and the page's handlers call
these off the event loop.
"""
from __future__ import annotations

import time

from arena.core.config import Prompt
from arena.core.generation import Notice
from arena.core.outcomes import parse_winner
from arena.core.texts import STATE_NAMES, say, t
from arena.rounds.rules import RoundView, SideView
from arena.web.live_markdown import LiveMarkdown
from arena.web.safe_markdown import escape_text, safe_markdown

STATE_ICONS = {"ready": "🟢", "loading": "🟡", "preparing": "🟡", "downloading": "🟡", "restarting": "🟠",
               "failed": "🔴", "unavailable": "⚪", "stopped": "⚪"}

QUEUE_SHOWN_S = 0.5  # a wait for the model this long or longer is shown beside the timings


class PaneRenderer:
    """One pane's conversation rendered update after update, re-rendering only what changed: a finished
    text once (then from the cache, which the two panes of a stream share: both show the same questions), the
    streaming answer through ``LiveMarkdown``. One per pane per stream, used by one thread at a time."""

    def __init__(self, done: dict[str, str] | None = None) -> None:
        self._done: dict[str, str] = {} if done is None else done
        self._live = LiveMarkdown()

    @classmethod
    def pair(cls) -> tuple["PaneRenderer", "PaneRenderer"]:
        """The renderers of a stream's two panes, sharing finished texts."""
        done: dict[str, str] = {}
        return cls(done), cls(done)

    def markdown(self, text: str, streaming: bool = False) -> str:
        if streaming:
            return self._live.render(text)
        if (cached := self._done.get(text)) is None:
            cached = self._done[text] = safe_markdown(text)
        return cached


def plain(text: object) -> str:
    """Any text from outside as Markdown that shows exactly that text (a table cell's '|' included)."""
    return escape_text(str(text))


def _number(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:.2f}{unit}"


def chat_messages(side: SideView, lang: str = "en", pane: PaneRenderer | None = None) -> list[dict]:
    """A pane's conversation as Chatbot messages; a failed answer shows its error in the pane."""
    pane = pane or PaneRenderer()
    messages: list[dict] = []
    for turn in side.turns:
        messages.append({"role": "user", "content": pane.markdown(turn.question)})
        text = pane.markdown(turn.text, streaming=not turn.done)
        if turn.notice:
            text = notice_markdown(turn.notice, lang) + "\n\n" + text
        if turn.error == "failed":  # blind, before the reveal: no model or server named
            text = (text + "\n\n" if text else "") + "⚠️ " + t("blind_error", lang)
        elif turn.error:
            text = (text + "\n\n" if text else "") + f"⚠️ **{t('error', lang)}:** {plain(turn.error)}"
        elif turn.stopped:
            text = (text or "") + "\n\n*" + t("stopped", lang) + "*"
        messages.append({"role": "assistant", "content": text or "…"})
    return messages


def notice_markdown(notice: Notice, lang: str = "en") -> str:
    """Why the model saw less than the whole conversation, or may answer shorter than asked."""
    parts = []
    if notice.dropped_turns:
        parts.append(t("notice_dropped", lang, n=notice.dropped_turns))
    if notice.max_new_tokens:
        parts.append(t("notice_budget", lang, n=notice.max_new_tokens))
    return "*" + " ".join(parts) + "*" if parts else ""


def _queued(seconds: float | None, lang: str) -> str:
    return t("metrics_queued", lang, seconds=seconds) if seconds is not None and seconds >= QUEUE_SHOWN_S else ""


def metrics_markdown(side: SideView, revealed: bool = True, lang: str = "en", held: bool = False) -> str:
    """Stopwatch figures of the pane's latest answer; in a blind battle only after the vote. A wait for
    the model (a worker busy with another session or a batch) shows apart from them, and so does which
    attempt it is after Regenerate."""
    if not side.turns:
        return t("metrics_empty", lang)
    attempt = side.turns[-1].attempt
    return _metrics(side, revealed, lang, held) + (t("metrics_attempt", lang, n=attempt) if attempt > 1 else "")


def _metrics(side: SideView, revealed: bool, lang: str, held: bool) -> str:
    turn = side.turns[-1]
    streaming = not turn.done
    if held:
        return t("held", lang)
    if not revealed:
        return t("metrics_hidden_streaming" if streaming else "metrics_hidden", lang)
    if streaming:
        return t("metrics_streaming", lang, ttft=_number(turn.ttft_s, " s"),
                 tokens=turn.output_tokens or 0) + _queued(turn.queue_s, lang)
    return t("metrics", lang, ttft=_number(turn.ttft_s, " s"), total=_number(turn.total_s, " s"),
             tokens=turn.output_tokens or "—", tps=_number(turn.tokens_per_s)) + _queued(turn.queue_s, lang)


def reveal_markdown(view: RoundView, lang: str = "en") -> str:
    """After the vote: who was who with their timings, whether it counts, and the reference answer."""
    if not view.vote:
        return ""
    lines = [t("you_voted", lang, vote=t(parse_winner(view.vote).text_key, lang))]
    for key in "ab":
        side = view.side(key)
        lines.append(t("was", lang, side=key.upper(), name=plain(side.label), engine=plain(side.engine or "?"),
                       quantization=plain(side.quantization or "?")))
        if view.mode == "blind" and side.turns:
            turn = side.turns[-1]
            lines.append(t("timings_after_vote", lang, ttft=_number(turn.ttft_s, " s"),
                           total=_number(turn.total_s, " s"), tokens=turn.output_tokens or "—",
                           tps=_number(turn.tokens_per_s)) + _queued(turn.queue_s, lang))
    if view.mode == "blind":
        lines.append(t("counted", lang) if view.rated else t("not_rated", lang, flag=plain(view.flag or "")))
    else:
        lines.append(t("named_not_rated", lang))
    if view.reference:
        lines.append("\n" + t("reference", lang, reference=safe_markdown(view.reference)))
    return "\n".join(lines)


def _detail(status, lang: str) -> str:
    """Why the model is in its state, in the page's language when the supervisor gave the reason's key
    (commands, addresses and engine messages stay as they are)."""
    return say(status.reason, lang) if status.reason else status.detail


def describe_status(status, lang: str = "en", rss_mb: float | None = None) -> str:
    """One model's state in words, with load time and resident memory once ready."""
    memory = t("state_memory", lang, mb=rss_mb) if rss_mb else ""
    if status.state == "ready" and status.remote:
        return t("state_ready_remote", lang, url=status.remote)
    if status.state == "ready":
        text = t("state_ready", lang, seconds=status.load_seconds or 0.0, memory=memory)
        return text + (t("state_restarted", lang, n=status.restarts) if status.restarts else "")
    detail = _detail(status, lang)
    if status.state in ("failed", "unavailable"):
        return t(f"state_{status.state}", lang, detail=detail)
    state = STATE_NAMES.get(lang, STATE_NAMES["en"]).get(status.state, status.state)
    return t("state_waiting", lang, state=state, seconds=time.time() - status.since,
             detail=t("state_detail", lang, detail=detail) if detail else "")


def status_markdown(rows: list[tuple], lang: str = "en") -> str:
    """The status panel: ``rows`` of (ModelStatus, resident MB or None)."""
    lines = [f"| | {t('status_model', lang)} | {t('status_state', lang)} |", "|---|---|---|"]
    for status, rss in rows:
        lines.append(f"| {STATE_ICONS.get(status.state, '')} | {plain(status.name)} | "
                     f"{plain(describe_status(status, lang, rss))} |")
    return "\n".join(lines)


def preset_choices(prompts: list[Prompt], category: str | None) -> list[tuple[str, str]]:
    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= 60 else text[:57] + "…"
    return [(f"{p.id}: {short(p.question)}", p.id) for p in prompts if not category or p.category == category]
