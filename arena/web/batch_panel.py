"""The Batch tab: pick models and presets, start a run, watch its progress, open the report.

The run lives in ``BatchService``'s background thread, so it keeps going when the browser
closes; the tab polls it with a ``gr.Timer`` (``gr.Progress`` only follows the event that owns
it). Handlers are plain functions of plain values, like the arena panel's.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from arena.batch.runner import BatchError
from arena.batch.service import DEFAULT_JUDGE, NO_JUDGE, BatchService
from arena.core.texts import t
from arena.web.access import address_of
from arena.web.components import text_panel
from arena.web.handlers import Handlers, download_link, page_error
from arena.web.i18n import I18N
from arena.web.render import plain

POLL_SECONDS = 1.0


def progress_markdown(state: dict, lang: str = "en") -> str:
    """The run's state in one line, with a text progress bar; everything from the run is escaped."""
    done, total = state.get("done") or 0, state.get("total") or 0
    values = {"run": plain(state.get("run_id") or ""), "done": done, "total": total,
              "phase": plain(state.get("phase") or ""), "error": plain(state.get("error") or "")}
    line = t(f"batch_{state['state']}", lang, **values)
    if state.get("eta_s") and state["state"] == "running":
        line += " " + t("batch_eta", lang, minutes=int(state["eta_s"] // 60), seconds=int(state["eta_s"] % 60))
    if state["state"] == "idle":
        return line
    filled = int(20 * done / total) if total else 0
    return f"`{'█' * filled}{'░' * (20 - filled)}` {done}/{total} · {line}"


def model_choices(service: BatchService) -> list[tuple[str, str]]:
    """Every catalog model by name; one that is not ready is refused, with its state, when the run starts."""
    return [(s.name, s.id) for s in service.supervisor.statuses()]


def judge_choices(service: BatchService, lang: str) -> list[tuple[str, str]]:
    return [(t("batch_judge_default", lang), DEFAULT_JUDGE), (t("batch_judge_none", lang), NO_JUDGE),
            *model_choices(service)]


def refreshed(service: BatchService, chosen: list[str] | None, lang: str) -> tuple[dict, dict]:
    """Model and judge lists as they are now: models load after the page was built."""
    value = chosen or service.ready_models()[:2]
    return gr.update(choices=model_choices(service), value=value), gr.update(choices=judge_choices(service, lang))


def start(h: Handlers, models: list[str], presets: list[str], repeats: float, judge: str, token: str | None,
          lang: str, request) -> str:
    """Start a run: an admin action (it can take every core for hours), so it needs the token when one is set."""
    h.admin(request, token, lang)
    try:
        h.batch.start(list(models or []), list(presets or []), int(repeats or 1), judge)
    except BatchError as exc:
        raise page_error(str(exc), duration=10) from None
    return progress_markdown(h.batch.progress(), lang)


def stop(h: Handlers, token: str | None, lang: str, request) -> str:
    h.admin(request, token, lang)
    h.batch.stop()
    return progress_markdown(h.batch.progress(), lang)


def poll(h: Handlers, token: str | None, lang: str, request) -> tuple[str, str]:
    """The run's progress and, when its report is written, a download link for this client. Without the
    admin rule met it says so instead (it is polled every second: a refusal is a line, not a pop-up)."""
    if key := h.access.refusal(request, token):
        return "🔒 " + t(key, lang), ""
    state = h.batch.progress()
    link = ""
    if state.get("report") and Path(state["report"]).is_file():
        offer = h.downloads.offer(Path(state["report"]), Path(state["report"]).name,
                                  address_of(request, h.trusted_proxies), owned=False)
        link = download_link(offer, lang)
    return progress_markdown(state, lang), link


def batch_panel(service: BatchService, token_required: bool = False) -> dict:
    c: dict = {"batch_intro": text_panel(I18N("batch_intro"))}
    c["batch_models"] = gr.CheckboxGroup(model_choices(service), value=service.ready_models()[:2],
                                         label=I18N("batch_models"), elem_id="batch-models")
    c["batch_presets"] = gr.CheckboxGroup(service.list_presets(), value=[], label=I18N("batch_presets"),
                                          elem_id="batch-presets")
    with gr.Row():
        c["batch_repeats"] = gr.Number(1, precision=0, minimum=1, maximum=10, label=I18N("batch_repeats"),
                                       elem_id="batch-repeats")
        c["batch_judge"] = gr.Dropdown(judge_choices(service, "en"), value=DEFAULT_JUDGE, label=I18N("batch_judge"),
                                       elem_id="batch-judge")
    with gr.Row():
        c["batch_start"] = gr.Button(I18N("batch_start"), variant="primary", elem_id="batch-start")
        c["batch_stop"] = gr.Button(I18N("batch_stop"), elem_id="batch-stop")
        c["batch_refresh"] = gr.Button(I18N("batch_refresh"), elem_id="batch-refresh")
    c["batch_token"] = gr.Textbox(label=I18N("admin_token"), info=I18N("admin_token_info"), type="password",
                                  visible=token_required, elem_id="batch-token")
    c["batch_status"] = text_panel(progress_markdown(service.progress()), elem_id="batch-status")
    c["batch_report"] = text_panel("", elem_id="batch-report")
    return c


def wire(h: Handlers, c: dict) -> None:
    """Events of the tab; ``c`` also holds the page's ``lang`` state and the tab itself (``tab_batch``)."""
    service, lang, token = h.batch, c["lang"], c["batch_token"]

    def on_start(models: list[str], presets: list[str], repeats: float, judge: str, token_: str | None, code: str,
                 request: gr.Request) -> str:
        """Start a batch run (needs the admin token when the app has one)."""
        return start(h, models, presets, repeats, judge, token_, code, request)

    def on_stop(token_: str | None, code: str, request: gr.Request) -> str:
        """Stop the running batch after its current group (needs the admin token when the app has one)."""
        return stop(h, token_, code, request)

    def on_poll(token_: str | None, code: str, request: gr.Request) -> tuple[str, str]:
        """The batch run's progress and its report link (needs the admin token when the app has one)."""
        return poll(h, token_, code, request)

    inputs = [c["batch_models"], c["batch_presets"], c["batch_repeats"], c["batch_judge"], token, lang]
    c["batch_start"].click(on_start, inputs, [c["batch_status"]], api_name="batch_start")
    c["batch_stop"].click(on_stop, [token, lang], [c["batch_status"]], api_name="batch_stop")
    lists = [c["batch_models"], c["batch_judge"]]
    c["batch_refresh"].click(lambda chosen, code: refreshed(service, chosen, code), [c["batch_models"], lang], lists,
                             api_visibility="private")
    c["tab_batch"].select(lambda chosen, code: refreshed(service, chosen, code), [c["batch_models"], lang], lists,
                          api_visibility="private")
    gr.Timer(POLL_SECONDS).tick(on_poll, [token, lang], [c["batch_status"], c["batch_report"]],
                                api_name="batch_progress", show_progress="hidden")
