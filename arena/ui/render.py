"""Pure render helpers: a round view (rounds.Arena.view) in, Markdown and Chatbot messages out.

No Gradio here, so tests call them directly. Everything a model or a visitor wrote is
untrusted: HTML is shown as text, and images become plain links, so no viewer's browser
ever fetches a URL that a prompt injection put into an answer.
"""
from __future__ import annotations

import html
import re
import time

from ..config import Prompt
from ..texts import STATE_NAMES, t

STATE_ICONS = {"ready": "🟢", "loading": "🟡", "preparing": "🟡", "downloading": "🟡", "restarting": "🟠",
               "failed": "🔴", "unavailable": "⚪", "stopped": "⚪"}

_FENCE = re.compile(r"(^|\n)(```|~~~)[^\n]*\n.*?(\n\2[^\n]*(?=\n|$)|$)", re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_IMAGE_REF = re.compile(r"!\[([^\]]*)\]\[([^\]]*)\]")


def _outside_code(text: str, transform) -> str:
    """Apply ``transform`` to the parts of a Markdown text that are not code (fences or spans)."""
    out, last = [], 0
    for match in _FENCE.finditer(text):
        out.append(_outside_spans(text[last:match.start()], transform))
        out.append(match.group(0))
        last = match.end()
    out.append(_outside_spans(text[last:], transform))
    return "".join(out)


def _outside_spans(text: str, transform) -> str:
    out, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        out.append(transform(text[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(transform(text[last:]))
    return "".join(out)


def _defuse(text: str) -> str:
    text = text.replace("<", "&lt;")  # no HTML at all: no <img>, <video>, <iframe>, <style> ...
    text = _IMAGE.sub(lambda m: f"[🖼 {m.group(1) or 'image'}: {m.group(2)}]({m.group(2)})", text)
    return _IMAGE_REF.sub(lambda m: f"[🖼 {m.group(1) or 'image'}][{m.group(2)}]", text)


def safe_markdown(text: str) -> str:
    """Markdown that renders as written but fetches nothing: images become links, HTML becomes text.
    Code blocks and spans are left alone (they never render HTML or images)."""
    return _outside_code(text or "", _defuse)


def _number(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:.2f}{unit}"


def chat_messages(side: dict, lang: str = "en") -> list[dict]:
    """A pane's conversation as Chatbot messages; a failed answer shows its error in the pane."""
    messages: list[dict] = []
    for turn in side["turns"]:
        messages.append({"role": "user", "content": safe_markdown(turn["question"])})
        text = safe_markdown(turn["text"])
        if notice := turn.get("notice"):
            text = notice_markdown(notice, lang) + "\n\n" + text
        if turn.get("error") == "failed":  # blind, before the reveal: no model or server named
            text = (text + "\n\n" if text else "") + "⚠️ " + t("blind_error", lang)
        elif turn.get("error"):
            text = (text + "\n\n" if text else "") + f"⚠️ **{t('error', lang)}:** {html.escape(turn['error'])}"
        elif turn.get("stopped"):
            text = (text or "") + "\n\n*" + t("stopped", lang) + "*"
        messages.append({"role": "assistant", "content": text or "…"})
    return messages


def notice_markdown(notice: dict, lang: str = "en") -> str:
    """Why the model saw less than the whole conversation, or may answer shorter than asked."""
    parts = []
    if notice.get("dropped_turns"):
        parts.append(t("notice_dropped", lang, n=notice["dropped_turns"]))
    if notice.get("max_new_tokens"):
        parts.append(t("notice_budget", lang, n=notice["max_new_tokens"]))
    return "*" + " ".join(parts) + "*" if parts else ""


def metrics_markdown(side: dict, revealed: bool = True, lang: str = "en", held: bool = False) -> str:
    """Stopwatch figures of the pane's latest answer; in a blind battle only after the vote."""
    if not side["turns"]:
        return t("metrics_empty", lang)
    turn = side["turns"][-1]
    streaming = not turn.get("done", True)
    if held:
        return t("held", lang)
    if not revealed:
        return t("metrics_hidden_streaming" if streaming else "metrics_hidden", lang)
    if streaming:
        return t("metrics_streaming", lang, ttft=_number(turn["ttft_s"], " s"), tokens=turn["output_tokens"] or 0)
    return t("metrics", lang, ttft=_number(turn["ttft_s"], " s"), total=_number(turn["total_s"], " s"),
             tokens=turn["output_tokens"] or "—", tps=_number(turn["tokens_per_s"]))


def reveal_markdown(view: dict, lang: str = "en") -> str:
    """After the vote: who was who with their timings, whether it counts, and the reference answer."""
    if not view.get("vote"):
        return ""
    vote_keys = {"A better": "vote_a", "B better": "vote_b", "Tie": "vote_tie", "Both bad": "vote_bothbad"}
    lines = [t("you_voted", lang, vote=t(vote_keys[view["vote"]], lang))]
    for key in "ab":
        side = view[key]
        lines.append(t("was", lang, side=key.upper(), name=html.escape(side["label"]),
                       engine=html.escape(side.get("engine") or "?"),
                       quantization=html.escape(side.get("quantization") or "?")))
        if view["mode"] == "blind" and side["turns"]:
            turn = side["turns"][-1]
            lines.append(t("timings_after_vote", lang, ttft=_number(turn["ttft_s"], " s"),
                           total=_number(turn["total_s"], " s"), tokens=turn["output_tokens"] or "—",
                           tps=_number(turn["tokens_per_s"])))
    if view["mode"] == "blind":
        flag = html.escape(view.get("flag") or "")
        lines.append(t("counted", lang) if view["rated"] else t("not_rated", lang, flag=flag))
    else:
        lines.append(t("named_not_rated", lang))
    if view.get("reference"):
        lines.append("\n" + t("reference", lang, reference=safe_markdown(view["reference"])))
    return "\n".join(lines)


def describe_status(status, lang: str = "en", rss_mb: float | None = None) -> str:
    """One model's state in words, with load time and resident memory once ready."""
    memory = t("state_memory", lang, mb=rss_mb) if rss_mb else ""
    if status.state == "ready" and status.remote:
        return t("state_ready_remote", lang, url=status.remote)
    if status.state == "ready":
        text = t("state_ready", lang, seconds=status.load_seconds or 0.0, memory=memory)
        return text + (t("state_restarted", lang, n=status.restarts) if status.restarts else "")
    if status.state in ("failed", "unavailable"):
        return t(f"state_{status.state}", lang, detail=status.detail)
    state = STATE_NAMES.get(lang, STATE_NAMES["en"]).get(status.state, status.state)
    return t("state_waiting", lang, state=state, seconds=time.time() - status.since,
             detail=f": {status.detail}" if status.detail else "")


def status_markdown(rows: list[tuple], lang: str = "en") -> str:
    """The status panel: ``rows`` of (ModelStatus, resident MB or None)."""
    lines = [f"| | {t('status_model', lang)} | {t('status_state', lang)} |", "|---|---|---|"]
    for status, rss in rows:
        lines.append(f"| {STATE_ICONS.get(status.state, '')} | {html.escape(status.name)} | "
                     f"{html.escape(describe_status(status, lang, rss)).replace('|', '/')} |")
    return "\n".join(lines)


def preset_choices(prompts: list[Prompt], category: str | None) -> list[tuple[str, str]]:
    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= 60 else text[:57] + "…"
    return [(f"{p.id}: {short(p.question)}", p.id) for p in prompts if not category or p.category == category]
