"""The Batch tab: pick models and presets, start a run, watch its progress, open the report.

The run lives in ``BatchService``'s background thread, so it keeps going when the browser
closes; the tab polls it with a ``gr.Timer`` (``gr.Progress`` only follows the event that owns
it). Handlers are plain functions of plain values, like the arena panel's.
"""
from __future__ import annotations

import html
from typing import Any

import gradio as gr

from ..batch import BatchError
from ..batch_service import DEFAULT_JUDGE, NO_JUDGE, BatchService
from ..texts import t
from .i18n import I18N

POLL_SECONDS = 1.0


def progress_markdown(state: dict, lang: str = "en") -> str:
    """The run's state in one line, with a text progress bar; everything from the run is escaped."""
    done, total = state.get("done") or 0, state.get("total") or 0
    values = {"run": html.escape(str(state.get("run_id") or "")), "done": done, "total": total,
              "phase": html.escape(str(state.get("phase") or "")), "error": html.escape(str(state.get("error") or ""))}
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


def start(service: BatchService, models: list[str], presets: list[str], repeats: float, judge: str,
          lang: str) -> str:
    try:
        service.start(list(models or []), list(presets or []), int(repeats or 1), judge)
    except BatchError as exc:
        raise gr.Error(str(exc), duration=10) from None
    return progress_markdown(service.progress(), lang)


def poll(service: BatchService, lang: str) -> tuple[str, Any]:
    state = service.progress()
    return progress_markdown(state, lang), state.get("report")


def batch_panel(service: BatchService) -> dict:
    c: dict = {"batch_intro": gr.Markdown(I18N("batch_intro"))}
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
    c["batch_status"] = gr.Markdown(progress_markdown(service.progress()), elem_id="batch-status")
    c["batch_report"] = gr.File(label=I18N("batch_report"), interactive=False, elem_id="batch-report")
    return c


def wire(service: BatchService, c: dict) -> None:
    """Events of the tab; ``c`` also holds the page's ``lang`` state and the tab itself (``tab_batch``)."""
    lang = c["lang"]
    inputs = [c["batch_models"], c["batch_presets"], c["batch_repeats"], c["batch_judge"], lang]
    c["batch_start"].click(lambda *v: start(service, *v), inputs, [c["batch_status"]], api_name="batch_start")
    c["batch_stop"].click(lambda code: (service.stop(), progress_markdown(service.progress(), code))[1], [lang],
                          [c["batch_status"]], api_name="batch_stop")
    lists = [c["batch_models"], c["batch_judge"]]
    c["batch_refresh"].click(lambda chosen, code: refreshed(service, chosen, code), [c["batch_models"], lang], lists,
                             api_visibility="private")
    c["tab_batch"].select(lambda chosen, code: refreshed(service, chosen, code), [c["batch_models"], lang], lists,
                          api_visibility="private")
    gr.Timer(POLL_SECONDS).tick(lambda code: poll(service, code), [lang], [c["batch_status"], c["batch_report"]],
                                api_name="batch_progress", show_progress="hidden")
