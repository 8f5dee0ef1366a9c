"""The Batch tab's Gradio components, created inside the caller's open ``gr.Blocks()``/``gr.Tab()``.

Usage (in ui.py)::

    with gr.Tab("Batch"):
        build_batch_tab(service)

Progress comes from polling the service with a ``gr.Timer``: ``gr.Progress`` only tracks the event
that owns it, and the run lives in a background thread that outlives any browser session.
"""
from __future__ import annotations

import html

from .batch import BatchError
from .batch_service import DEFAULT_JUDGE, BatchService, describe_progress

POLL_SECONDS = 1.0


def progress_html(state: dict) -> str:
    """A progress bar and one line of text; everything escaped (run ids and errors are data)."""
    total, done = state.get("total") or 0, state.get("done") or 0
    bar = f'<progress value="{done}" max="{max(total, 1)}" style="width:100%"></progress>' \
        if state["state"] != "idle" else ""
    return f'<div class="batch-progress">{bar}<p>{html.escape(describe_progress(state))}</p></div>'


def build_batch_tab(service: BatchService) -> dict:
    """Create the tab's components and events; returns them by name (for the caller and tests).

    API names (``gradio_client``): ``/batch_start`` (models, presets, repeats, judge) -> progress HTML,
    ``/batch_progress`` () -> (progress HTML, report file or None), ``/batch_stop``."""
    import gradio as gr

    gr.Markdown("Run presets through models, one model at a time, judged in both orders; the report opens "
                "below when the run is done. The run continues if you close the page. One batch at a time: "
                "while it runs, the Arena tab's answers from the same model wait for the current group.")
    models = gr.CheckboxGroup(choices=service.list_models(), value=service.ready_models()[:2], label="Models")
    presets = gr.CheckboxGroup(choices=service.list_presets(), value=[], label="Presets")
    with gr.Row():
        repeats = gr.Number(value=1, precision=0, minimum=1, maximum=10, label="Repeats")
        judge = gr.Dropdown(choices=service.list_judges(), value=DEFAULT_JUDGE, label="Judge")
    with gr.Row():
        start = gr.Button("Start batch", variant="primary")
        stop = gr.Button("Stop after the current group")
        refresh = gr.Button("Refresh model list")
    status = gr.HTML(progress_html(service.progress()))
    report_file = gr.File(label="Report (HTML, opens offline)", interactive=False)
    timer = gr.Timer(POLL_SECONDS)

    def on_start(chosen_models: list[str], chosen_presets: list[str], n: float, judge_id: str) -> str:
        try:
            service.start(list(chosen_models or []), list(chosen_presets or []), int(n or 1), judge_id)
        except BatchError as exc:
            raise gr.Error(str(exc)) from None
        return progress_html(service.progress())

    def on_poll() -> tuple[str, str | None]:
        state = service.progress()
        return progress_html(state), state.get("report")

    def on_stop() -> str:
        service.stop()
        return progress_html(service.progress())

    def on_refresh():
        return gr.update(choices=service.list_models()), gr.update(choices=service.list_judges())

    start.click(on_start, [models, presets, repeats, judge], [status], api_name="batch_start")
    timer.tick(on_poll, None, [status, report_file], api_name="batch_progress", show_progress="hidden")
    stop.click(on_stop, None, [status], api_name="batch_stop")
    refresh.click(on_refresh, None, [models, judge], api_name=False)
    return {"models": models, "presets": presets, "repeats": repeats, "judge": judge, "start": start,
            "stop": stop, "status": status, "report": report_file, "timer": timer}


def build_judge_table(service: BatchService):
    """The judge's Bradley-Terry table for the Leaderboard tab (a separate table, never mixed with votes)."""
    import gradio as gr

    gr.Markdown("**Automatic judge** (both orders; a disagreement counts as a tie). Not human votes: "
                "see each batch report for how far the judge can be trusted.")
    table = gr.Dataframe(value=service.judge_leaderboard(), interactive=False)
    return table
