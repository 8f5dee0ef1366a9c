"""The Gradio page. Layout and event wiring only: every handler is a thin call into
``Arena`` (rounds.py), the store or the leaderboard, plus pure render helpers that
tests call without a browser.
"""
from __future__ import annotations

import html
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import AsyncIterator

import gradio as gr

from . import charts, exports, leaderboard
from .config import Prompt
from .rounds import VOTE_CHOICES, Arena, ArenaError, Settings

MODE_LABELS = {"Side by side (named)": "named", "Battle (blind)": "blind"}
MODE_BY_NAME = {v: k for k, v in MODE_LABELS.items()}
STATE_ICONS = {"ready": "🟢", "loading": "🟡", "preparing": "🟡", "downloading": "🟡", "restarting": "🟠", "failed": "🔴", "unavailable": "⚪",
               "stopped": "⚪"}

# -- pure render helpers (tested without a browser) ---------------------------------------


def chat_messages(side: dict) -> list[dict]:
    """A pane's conversation as Chatbot messages; a failed answer shows its error in the pane."""
    messages: list[dict] = []
    for turn in side["turns"]:
        # Questions are shown as typed: escaped, so HTML in them is text, never markup.
        messages.append({"role": "user", "content": html.escape(turn["question"], quote=False)})
        text = turn["text"]
        if turn.get("error"):
            text = (text + "\n\n" if text else "") + f"⚠️ **Error:** {html.escape(turn['error'])}"
        elif turn.get("stopped"):
            text = (text or "") + "\n\n*(stopped)*"
        messages.append({"role": "assistant", "content": text or "…"})
    return messages


def metrics_markdown(side: dict) -> str:
    """Stopwatch figures of the pane's latest answer."""
    if not side["turns"]:
        return "Time to first token — · total — · tokens — · tokens/s —"
    t = side["turns"][-1]
    fmt = lambda v, unit="": "—" if v is None else f"{v:.2f}{unit}"  # noqa: E731
    return (f"Time to first token **{fmt(t['ttft_s'], ' s')}** · total **{fmt(t['total_s'], ' s')}** · "
            f"tokens **{t['output_tokens'] or '—'}** · **{fmt(t['tokens_per_s'])}** tokens/s")


def reveal_markdown(view: dict) -> str:
    """After the vote: who was who, whether it counts for the leaderboard, and the reference answer."""
    if not view.get("vote"):
        return ""
    lines = [f"### You voted: {view['vote']}"]
    for key in "ab":
        side = view[key]
        lines.append(f"- **Model {key.upper()}** was **{html.escape(side['label'])}** "
                     f"({html.escape(side.get('engine') or '?')}, {html.escape(side.get('quantization') or '?')})")
    if view["mode"] == "blind":
        lines.append("- Counted for the leaderboard." if view["rated"]
                     else f"- Kept but **not rated**: {html.escape(view.get('flag') or '')}")
    else:
        lines.append("- Named votes are stored and shown apart; only blind battles are rated.")
    if view.get("reference"):
        lines.append(f"\n**Reference answer:** {html.escape(view['reference'])}")
    return "\n".join(lines)


def status_markdown(statuses) -> str:
    rows = ["| | model | status |", "|---|---|---|"]
    for s in statuses:
        rows.append(f"| {STATE_ICONS.get(s.state, '')} | {html.escape(s.name)} | "
                    f"{html.escape(s.describe()).replace('|', '/')} |")
    return "\n".join(rows)


def preset_choices(prompts: list[Prompt], category: str | None) -> list[tuple[str, str]]:
    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= 60 else text[:57] + "…"
    return [(f"{p.id}: {short(p.question)}", p.id) for p in prompts if not category or p.category == category]


def session_of(request: gr.Request | None) -> str:
    return (request.session_hash if request and request.session_hash else "anonymous")


# -- layout -------------------------------------------------------------------------------

CSS = """
.metrics { font-size: 0.9em; min-height: 1.6em; }
footer { display: none !important; }
"""


def build_ui(arena: Arena, export_dir: Path | None = None) -> gr.Blocks:
    prompts = arena.prompts
    prompt_by_id = {p.id: p for p in prompts}
    models = [arena.supervisor.model(s.id) for s in arena.supervisor.statuses()]
    model_choices = [(m.name, m.id) for m in models]
    categories = sorted({p.category for p in prompts}, key=[p.category for p in prompts].index)
    export_dir = Path(export_dir or tempfile.mkdtemp(prefix="arena-export-"))
    default_a, default_b = (models[0].id, models[1].id) if len(models) > 1 else (None, None)

    def pane_labels(mode: str, a: str | None, b: str | None) -> tuple[str, str]:
        if mode == "blind":
            return "Model A", "Model B"
        name = {m.id: m.name for m in models}
        return name.get(a or "", "Model A"), name.get(b or "", "Model B")

    with gr.Blocks(title="Local LLM Arena") as demo:
        round_id = gr.State(None)
        preset_id = gr.State(None)
        gr.Markdown("# Local LLM Arena\nAsk two local models the same question, watch both answer, and vote.")
        with gr.Accordion("Model status", open=True):
            status = gr.Markdown(status_markdown(arena.supervisor.statuses()), elem_id="model-status")
        with gr.Tabs():
            with gr.Tab("Arena", id="arena"):
                with gr.Row():
                    mode = gr.Radio(list(MODE_LABELS), value=MODE_BY_NAME["named"], label="Mode", elem_id="mode")
                with gr.Row(visible=True) as pickers:
                    model_a = gr.Dropdown(model_choices, value=default_a, label="Model A", elem_id="model-a")
                    model_b = gr.Dropdown(model_choices, value=default_b, label="Model B", elem_id="model-b")
                label_a, label_b = pane_labels("named", default_a, default_b)
                with gr.Row():
                    with gr.Column():
                        chat_a = gr.Chatbot(label=label_a, elem_id="chat-a", height=420, buttons=["copy"],
                                            feedback_options=None, allow_tags=False, sanitize_html=True)
                        metrics_a = gr.Markdown(metrics_markdown({"turns": []}), elem_id="metrics-a",
                                                elem_classes="metrics")
                    with gr.Column():
                        chat_b = gr.Chatbot(label=label_b, elem_id="chat-b", height=420, buttons=["copy"],
                                            feedback_options=None, allow_tags=False, sanitize_html=True)
                        metrics_b = gr.Markdown(metrics_markdown({"turns": []}), elem_id="metrics-b",
                                                elem_classes="metrics")
                with gr.Row():
                    category = gr.Dropdown(categories, value=None, label="Preset category", elem_id="category")
                    preset = gr.Dropdown(preset_choices(prompts, None), value=None, label="Preset question",
                                         elem_id="preset", scale=3)
                with gr.Row():
                    question = gr.Textbox(label="Your question", placeholder="Ask both models…", lines=2, scale=5,
                                          max_length=arena.limits.max_question_chars, elem_id="question")
                    with gr.Column(scale=1, min_width=140):
                        send = gr.Button("Send to both", variant="primary", elem_id="send")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Row():
                    vote_buttons = [gr.Button(label, interactive=False, elem_id=f"vote-{label.split()[0].lower()}")
                                    for label in VOTE_CHOICES]
                    new_round = gr.Button("New round", elem_id="new-round")
                reveal = gr.Markdown("", elem_id="reveal")
                with gr.Accordion("Generation settings (applied to both models, stored with the round)", open=False):
                    with gr.Row():
                        temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature")
                        top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p")
                        max_new_tokens = gr.Slider(16, 2048, value=512, step=16, label="Max new tokens")
                    system_prompt = gr.Textbox(label="System prompt", placeholder="(none)", lines=2)
            with gr.Tab("Leaderboard", id="leaderboard"):
                gr.Markdown("Bradley-Terry ratings from **blind** battles (Elo scale, mean 1000), with 95% "
                            "bootstrap confidence intervals. Rank = 1 + models whose interval lies wholly above.")
                refresh = gr.Button("Refresh", elem_id="refresh-leaderboard")
                board = gr.Dataframe(label="Rated (blind) battles", elem_id="leaderboard-table", interactive=False)
                with gr.Row():
                    ratings_plot = gr.Plot(label="Ratings with 95% CI", elem_id="ratings-plot")
                    matrix_plot = gr.Plot(label="Pairwise win fraction", elem_id="winrate-plot")
                named_board = gr.Dataframe(label="Named votes (stored, not rated)", interactive=False)
            with gr.Tab("Export / import", id="export"):
                gr.Markdown("Votes as CSV (UTF-8 with BOM, opens in Excel) or battles as FastChat-compatible JSONL.")
                with gr.Row():
                    export_csv = gr.Button("Export votes (CSV)", elem_id="export-csv")
                    export_jsonl = gr.Button("Export battles (JSONL)", elem_id="export-jsonl")
                export_file = gr.File(label="Download", elem_id="export-file", interactive=False)
                import_file = gr.File(label="Import battles (JSONL from another arena or a FastChat log)",
                                      file_types=[".jsonl", ".json"], elem_id="import-file")
                import_result = gr.Markdown("")

        # -- handlers: thin wrappers over Arena ------------------------------------------
        panes = [chat_a, chat_b, metrics_a, metrics_b, round_id, reveal, *vote_buttons]

        def render(view: dict) -> dict:
            votable = not view["streaming"] and not view["vote"] and not view["error"] and bool(view["a"]["turns"])
            return {chat_a: gr.Chatbot(chat_messages(view["a"]), label=view["a"]["label"]),
                    chat_b: gr.Chatbot(chat_messages(view["b"]), label=view["b"]["label"]),
                    metrics_a: metrics_markdown(view["a"]), metrics_b: metrics_markdown(view["b"]),
                    round_id: view["round_id"], reveal: reveal_markdown(view),
                    **{b: gr.Button(interactive=votable) for b in vote_buttons}}

        def cleared(mode_label: str, a: str | None, b: str | None) -> dict:
            la, lb = pane_labels(MODE_LABELS[mode_label], a, b)
            return {chat_a: gr.Chatbot([], label=la), chat_b: gr.Chatbot([], label=lb),
                    metrics_a: metrics_markdown({"turns": []}), metrics_b: metrics_markdown({"turns": []}),
                    round_id: None, reveal: "", **{b_: gr.Button(interactive=False) for b_ in vote_buttons}}

        async def on_send(text, mode_label, a, b, temp, tp, max_tokens, system, current_round, preset_key,
                          request: gr.Request) -> AsyncIterator[dict]:
            settings = Settings(temp, tp, int(max_tokens), system or "")
            try:
                async for view in arena.ask(session_of(request), text, round_id=current_round,
                                            mode=MODE_LABELS[mode_label], model_a=a, model_b=b,
                                            settings=settings, preset_id=preset_key):
                    yield {**render(view), question: ""}
            except ArenaError as exc:
                raise gr.Error(str(exc), duration=8) from None

        async def on_stop(current_round, request: gr.Request) -> None:
            # The running on_send generator draws the stopped answers itself.
            arena.stop(session_of(request), current_round)

        def vote_handler(choice: str):
            def on_vote(current_round, request: gr.Request) -> dict:
                try:
                    return render(arena.vote(session_of(request), current_round, choice))
                except ArenaError as exc:
                    raise gr.Error(str(exc), duration=8) from None
            return on_vote

        def on_mode(mode_label: str, a, b) -> dict:
            return {**cleared(mode_label, a, b), pickers: gr.Row(visible=MODE_LABELS[mode_label] == "named")}

        def on_preset(key: str | None) -> tuple:
            prompt = prompt_by_id.get(key or "")
            return (prompt.question if prompt else gr.update(), key)

        def on_export(kind: str) -> str:
            records = arena.store.voted_rounds()
            if not records:
                raise gr.Error("There are no votes to export yet. Vote on a round first.")
            export_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = export_dir / f"arena-{'votes' if kind == 'csv' else 'battles'}-{stamp}.{kind}"
            return str(exports.write_csv(records, path) if kind == "csv" else exports.write_jsonl(records, path))

        def on_import(path: str | None) -> str:
            if not path:
                return ""
            try:
                added, skipped = exports.import_battles(arena.store, Path(path))
            except (exports.ImportError_, OSError, UnicodeDecodeError) as exc:
                return f"⚠️ {html.escape(str(exc))}"
            return f"Imported **{added}** battle(s); **{skipped}** were already stored."

        def on_refresh() -> tuple:
            names = {s.id: s.name for s in arena.supervisor.statuses()}
            table, matrix, named = leaderboard.from_store(arena.store, names)
            return (table, charts.ratings_chart(table), charts.win_fraction_chart(matrix), named)

        # -- wiring ------------------------------------------------------------------------
        send_inputs = [question, mode, model_a, model_b, temperature, top_p, max_new_tokens, system_prompt,
                       round_id, preset_id]
        for trigger in (send.click, question.submit):
            trigger(on_send, send_inputs, [*panes, question], api_visibility="private", concurrency_limit=None)
        stop.click(on_stop, [round_id], None, api_visibility="private", concurrency_limit=None)
        for button, choice in zip(vote_buttons, VOTE_CHOICES):
            button.click(vote_handler(choice), [round_id], panes, api_visibility="private")
        new_round.click(cleared, [mode, model_a, model_b], panes, api_visibility="private")
        mode.change(on_mode, [mode, model_a, model_b], [*panes, pickers], api_visibility="private")
        for picker in (model_a, model_b):
            picker.change(cleared, [mode, model_a, model_b], panes, api_visibility="private")
        category.change(lambda c: gr.Dropdown(preset_choices(prompts, c), value=None), [category], [preset],
                        api_visibility="private")
        preset.change(on_preset, [preset], [question, preset_id], api_visibility="private")
        refresh.click(on_refresh, None, [board, ratings_plot, matrix_plot, named_board], api_name="leaderboard")
        demo.load(on_refresh, None, [board, ratings_plot, matrix_plot, named_board], api_visibility="private")
        export_csv.click(partial(on_export, "csv"), None, [export_file], api_name="export")
        export_jsonl.click(partial(on_export, "jsonl"), None, [export_file], api_name="export_jsonl")
        import_file.upload(on_import, [import_file], [import_result], api_visibility="private")
        gr.Timer(1.0).tick(lambda: status_markdown(arena.supervisor.statuses()), None, [status],
                           api_visibility="private", show_progress="hidden")

        # -- the public API: same Arena calls, JSON in and out -----------------------------
        async def ask(question: str, mode: str = "named", model_a: str = "", model_b: str = "",
                      round_id: str = "", temperature: float = 0.7, top_p: float = 0.9,
                      max_new_tokens: int = 512, system_prompt: str = "", preset_id: str = "",
                      request: gr.Request = None) -> AsyncIterator[dict]:
            """Ask both models; streams the round view. In blind mode the names stay hidden until /vote."""
            try:
                async for view in arena.ask(session_of(request), question, round_id=round_id or None, mode=mode,
                                            model_a=model_a or None, model_b=model_b or None,
                                            settings=Settings(temperature, top_p, int(max_new_tokens), system_prompt),
                                            preset_id=preset_id or None):
                    yield view
            except ArenaError as exc:
                raise gr.Error(str(exc)) from None

        async def stop_round(round_id: str, request: gr.Request = None) -> bool:
            """Stop both answers of a streaming round; the /ask stream then ends with them marked stopped."""
            return arena.stop(session_of(request), round_id)

        def vote(round_id: str, choice: str, request: gr.Request = None) -> dict:
            """Vote once on a round: 'A better', 'B better', 'Tie' or 'Both bad'. Returns the revealed round."""
            try:
                return arena.vote(session_of(request), round_id, choice)
            except ArenaError as exc:
                raise gr.Error(str(exc)) from None

        def models() -> list[dict]:
            """Every model in the catalog with its state (ready, loading, failed: reason)."""
            return [{"id": s.id, "name": s.name, "state": s.state, "detail": s.describe(),
                     "load_seconds": s.load_seconds} for s in arena.supervisor.statuses()]

        gr.api(ask, api_name="ask", concurrency_limit=None)
        gr.api(vote, api_name="vote")
        gr.api(stop_round, api_name="stop", concurrency_limit=None)
        gr.api(models, api_name="models")
    return demo


