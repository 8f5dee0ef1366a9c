"""The page: a short declarative layout, one small function per panel, and the wiring.

Panels create components and return them by name; ``wire`` connects events to the plain
functions in handlers.py. Every translatable text comes from arena/texts.py: ``gr.I18n``
shows it in the browser's language at once, and the language switch re-labels the page.
"""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from arena.core.records import Settings
from arena.core.texts import LANGUAGES, language_of, t
from arena.web import api, batch_panel, render, review_panel
from arena.web.access import AdminAccess, address_of, session_of
from arena.web.components import answer_pane, text_panel
from arena.web.downloads import Downloads
from arena.web.handlers import ALL, ARENA_OUTPUTS, VOTE_KEYS, Handlers
from arena.web.i18n import I18N

CSS = """
.metrics { font-size: 0.9em; min-height: 1.6em; }
footer { display: none !important; }
#language { max-width: 14em; }
/* A pane's own trash icon would blank the screen but keep the round going: New round is the one way. */
#chat-a button[aria-label='Clear'], #chat-b button[aria-label='Clear'] { display: none !important; }
"""
DEFAULTS = Settings()
Components = dict[str, Any]


def arena_panel(handlers: Handlers) -> Components:
    arena = handlers.arena
    c: Components = {"round_id": gr.State(None), "preset_id": gr.State(None)}
    statuses = arena.supervisor.statuses()
    choices = [(s.name, s.id) for s in statuses]
    default_a, default_b = (statuses[0].id, statuses[1].id) if len(statuses) > 1 else (None, None)
    categories = list(dict.fromkeys(p.category for p in arena.prompts))
    with gr.Row():
        c["mode"] = gr.Radio([(I18N("mode_named"), "named"), (I18N("mode_blind"), "blind")], value="named",
                             label=I18N("mode"), elem_id="mode")
    with gr.Row(visible=True) as c["pickers"]:
        c["model_a"] = gr.Dropdown(choices, value=default_a, label=I18N("model_a"), elem_id="model-a")
        c["model_b"] = gr.Dropdown(choices, value=default_b, label=I18N("model_b"), elem_id="model-b")
    with gr.Row(visible=False) as c["blind_options"]:
        c["hold"] = gr.Checkbox(arena.blind_hold, label=I18N("blind_together"), info=I18N("blind_together_info"),
                                elem_id="blind-hold")
    label_a, label_b = handlers.pane_labels("named", default_a, default_b, "en")
    with gr.Row():
        for key, label in (("a", label_a), ("b", label_b)):
            with gr.Column():
                c[f"chat_{key}"] = answer_pane(label, f"chat-{key}")
                c[f"metrics_{key}"] = text_panel(I18N("metrics_empty"), elem_id=f"metrics-{key}",
                                                  elem_classes="metrics")
    with gr.Row():
        c["category"] = gr.Dropdown(categories, value=None, label=I18N("category"), elem_id="category")
        c["preset"] = gr.Dropdown(render.preset_choices(arena.prompts, None), value=None, label=I18N("preset"),
                                  elem_id="preset", scale=3)
    with gr.Row():
        # lines=1 so Enter sends (Gradio sends multi-line boxes with Shift+Enter); it grows up to 8 lines.
        c["question"] = gr.Textbox(label=I18N("question"), placeholder=I18N("question_placeholder"), lines=1,
                                   max_lines=8, scale=5, max_length=arena.limits.max_question_chars,
                                   elem_id="question")
        with gr.Column(scale=1, min_width=140):
            c["send"] = gr.Button(I18N("send"), variant="primary", elem_id="send")
            c["stop"] = gr.Button(I18N("stop"), variant="stop", elem_id="stop")
    with gr.Row():
        for name in VOTE_KEYS.values():
            c[name] = gr.Button(I18N(name), interactive=False, elem_id=name.replace("_", "-"))
        c["regenerate"] = gr.Button(I18N("regenerate"), elem_id="regenerate")
        c["new_round"] = gr.Button(I18N("new_round"), elem_id="new-round")
    c["reveal"] = text_panel("", elem_id="reveal")
    with gr.Accordion(I18N("settings"), open=False, elem_id="settings") as c["settings"]:
        with gr.Row():
            c["temperature"] = gr.Slider(0, 2, value=DEFAULTS.temperature, step=0.05, label=I18N("temperature"),
                                         elem_id="temperature")
            c["top_p"] = gr.Slider(0.05, 1, value=DEFAULTS.top_p, step=0.05, label=I18N("top_p"), elem_id="top-p")
            c["max_new_tokens"] = gr.Slider(16, 2048, value=DEFAULTS.max_new_tokens, step=16,
                                            label=I18N("max_new_tokens"), elem_id="max-new-tokens")
        c["system_prompt"] = gr.Textbox(label=I18N("system_prompt"), placeholder=I18N("system_placeholder"),
                                        lines=2, elem_id="system-prompt")
    return c


def leaderboard_panel() -> Components:
    c: Components = {"leaderboard_intro": text_panel(I18N("leaderboard_intro"))}
    with gr.Row():
        c["refresh"] = gr.Button(I18N("refresh"), elem_id="refresh-leaderboard")
        c["include_imported"] = gr.Checkbox(True, label=I18N("include_imported"), elem_id="include-imported")
        # The choices come with each view (the stored battles' categories and languages); an API caller may
        # name any, so the value is not checked against the choices the page had when it was built.
        c["board_category"] = gr.Dropdown([(I18N("board_all"), ALL)], value=ALL, label=I18N("board_category"),
                                          allow_custom_value=True, elem_id="board-category")
        c["board_language"] = gr.Dropdown([(I18N("board_all"), ALL)], value=ALL, label=I18N("board_language"),
                                          allow_custom_value=True, elem_id="board-language")
    c["board_note"] = text_panel("", elem_id="board-note")
    c["board"] = gr.Dataframe(label=I18N("rated_table"), elem_id="leaderboard-table", interactive=False)
    c["board_empty"] = text_panel(I18N("chart_no_battles"), elem_id="leaderboard-empty")
    with gr.Column(visible=False) as c["style_panel"]:
        c["style_board"] = gr.Dataframe(label=I18N("style_table"), elem_id="style-table", interactive=False)
        c["style_coefficients"] = gr.Dataframe(label=I18N("style_coefficients"), elem_id="style-coefficients",
                                               interactive=False)
    with gr.Column(visible=False) as c["charts"]:  # shown once there is something to draw
        with gr.Row():
            c["ratings_plot"] = gr.Plot(label=I18N("ratings_plot"), elem_id="ratings-plot")
            c["speed_plot"] = gr.Plot(label=I18N("speed_plot"), elem_id="speed-plot")
        c["matrix_plot"] = gr.Plot(label=I18N("winrate_plot"), elem_id="winrate-plot")
    c["named_board"] = gr.Dataframe(label=I18N("named_table"), elem_id="named-table", interactive=False)
    c["judge_board"] = gr.Dataframe(label=I18N("judge_table"), elem_id="judge-table", interactive=False)
    c["judge_rates"] = gr.Dataframe(label=I18N("judge_rates"), elem_id="judge-rates", interactive=False)
    c["quality_heading"] = text_panel(I18N("quality_heading"))
    c["quality_intro"] = text_panel("", elem_id="quality-intro")
    c["quality_board"] = gr.Dataframe(label=I18N("quality_table"), elem_id="quality-table", interactive=False)
    c["quality_plot"] = gr.Plot(label=I18N("quality_plot"), elem_id="quality-plot")
    return c


def export_panel(admin_required: bool) -> Components:
    c: Components = {"export_intro": text_panel(I18N("export_intro"))}
    c["admin_token"] = gr.Textbox(label=I18N("admin_token"), info=I18N("admin_token_info"), type="password",
                                  visible=admin_required, elem_id="admin-token")
    with gr.Row():
        c["export_csv"] = gr.Button(I18N("export_csv"), elem_id="export-csv")
        c["export_jsonl"] = gr.Button(I18N("export_jsonl"), elem_id="export-jsonl")
    c["export_file"] = text_panel("", elem_id="export-file")
    c["import_file"] = gr.File(label=I18N("import_file"), file_types=[".jsonl", ".json"], elem_id="import-file")
    c["import_result"] = text_panel("", elem_id="import-result")
    return c


def layout(handlers: Handlers, upload_max_age_s: float = 900) -> tuple[gr.Blocks, Components]:
    c: Components = {}
    # Anyone may upload to a Gradio app (/gradio_api/upload): uploads older than upload_max_age_s are deleted,
    # checked every few minutes, and all of them when the app stops.
    sweep = int(max(1, min(300, upload_max_age_s / 3)))
    with gr.Blocks(title="Local LLM Arena", delete_cache=(sweep, int(max(1, upload_max_age_s)))) as demo:
        c["lang"] = gr.State("en")
        with gr.Row():
            c["title"] = text_panel(I18N("title"))
            c["language"] = gr.Radio([(name, code) for code, name in LANGUAGES.items()], value="en",
                                     label=I18N("language"), elem_id="language", scale=0, min_width=160)
        with gr.Accordion(I18N("model_status"), open=True) as c["status_box"]:
            c["status"] = text_panel(handlers.status("en"), elem_id="model-status")
        with gr.Tabs():
            with gr.Tab(I18N("tab_arena"), id="arena") as c["tab_arena"]:
                c.update(arena_panel(handlers))
            with gr.Tab(I18N("tab_leaderboard"), id="leaderboard") as c["tab_leaderboard"]:
                c.update(leaderboard_panel())
            if handlers.batch is not None:
                with gr.Tab(I18N("tab_batch"), id="batch") as c["tab_batch"]:
                    c.update(batch_panel.batch_panel(handlers.batch, handlers.access.token_required))
                    c.update(review_panel.review_panel(handlers.batch))
            with gr.Tab(I18N("tab_export"), id="export") as c["tab_export"]:
                c.update(export_panel(handlers.access.token_required))
        wire(handlers, c, demo)
        if handlers.batch is not None:
            batch_panel.wire(handlers, c)
            review_panel.wire(handlers, c)
        api.register(handlers)
    return demo, c


def _by_name(c: Components, names: tuple[str, ...] | list[str]) -> Callable[[dict], dict]:
    """Turn a handler's {output name: value} into Gradio's {component: value}."""
    return lambda result: {c[name]: value for name, value in result.items() if name in names}


RELABEL = {  # component -> (property, text key) changed by the language switch
    "title": ("value", "title"), "language": ("label", "language"), "status_box": ("label", "model_status"),
    "tab_arena": ("label", "tab_arena"), "tab_leaderboard": ("label", "tab_leaderboard"),
    "tab_export": ("label", "tab_export"), "mode": ("label", "mode"), "model_a": ("label", "model_a"),
    "model_b": ("label", "model_b"), "hold": ("label", "blind_together"), "category": ("label", "category"),
    "preset": ("label", "preset"), "send": ("value", "send"), "stop": ("value", "stop"),
    "new_round": ("value", "new_round"), "regenerate": ("value", "regenerate"), "settings": ("label", "settings"), "temperature": ("label", "temperature"),
    "top_p": ("label", "top_p"), "max_new_tokens": ("label", "max_new_tokens"),
    "system_prompt": ("label", "system_prompt"), "leaderboard_intro": ("value", "leaderboard_intro"),
    "refresh": ("value", "refresh"), "board": ("label", "rated_table"), "board_empty": ("value", "chart_no_battles"),
    "ratings_plot": ("label", "ratings_plot"),
    "speed_plot": ("label", "speed_plot"), "matrix_plot": ("label", "winrate_plot"),
    "named_board": ("label", "named_table"), "export_intro": ("value", "export_intro"),
    "export_csv": ("value", "export_csv"), "export_jsonl": ("value", "export_jsonl"),
    "import_file": ("label", "import_file"),
    "include_imported": ("label", "include_imported"), "judge_board": ("label", "judge_table"),
    "judge_rates": ("label", "judge_rates"), "board_category": ("label", "board_category"),
    "board_language": ("label", "board_language"), "style_board": ("label", "style_table"),
    "style_coefficients": ("label", "style_coefficients"), "quality_heading": ("value", "quality_heading"),
    "quality_board": ("label", "quality_table"), "quality_plot": ("label", "quality_plot"),
    "tab_batch": ("label", "tab_batch"), "batch_intro": ("value", "batch_intro"),
    "batch_models": ("label", "batch_models"), "batch_presets": ("label", "batch_presets"),
    "batch_repeats": ("label", "batch_repeats"), "batch_judge": ("label", "batch_judge"),
    "batch_start": ("value", "batch_start"), "batch_stop": ("value", "batch_stop"),
    "batch_refresh": ("value", "batch_refresh"), "review_intro": ("value", "review_intro"),
    "review_run": ("label", "review_run"), "review_next": ("value", "review_next"),
    **{name: ("value", name) for name in review_panel.LABEL_BUTTONS},
    **{name: ("value", name) for name in VOTE_KEYS.values()},
}


def relabel(lang: str) -> dict:
    """Every static text of the page in ``lang`` (the switch overrides the browser's language)."""
    updates = {name: gr.update(**{prop: t(key, lang)}) for name, (prop, key) in RELABEL.items()}
    updates["mode"] = gr.update(label=t("mode", lang), choices=[(t("mode_named", lang), "named"),
                                                                 (t("mode_blind", lang), "blind")])
    updates["hold"] = gr.update(label=t("blind_together", lang), info=t("blind_together_info", lang))
    updates["question"] = gr.update(label=t("question", lang), placeholder=t("question_placeholder", lang))
    updates["system_prompt"] = gr.update(label=t("system_prompt", lang), placeholder=t("system_placeholder", lang))
    for name in ("admin_token", "batch_token"):
        updates[name] = gr.update(label=t("admin_token", lang), info=t("admin_token_info", lang))
    return updates


def wire(h: Handlers, c: Components, demo: gr.Blocks) -> None:
    private = {"api_visibility": "private"}
    arena_out = [c[n] for n in ARENA_OUTPUTS]
    picks = [c["mode"], c["model_a"], c["model_b"], c["lang"]]
    send_in = [c[n] for n in ("question", "mode", "model_a", "model_b", "temperature", "top_p", "max_new_tokens",
                              "system_prompt", "hold", "round_id", "preset_id", "lang")]

    async def on_send(question, mode, a, b, temp, top_p, max_tokens, system, hold, round_id, preset_id, lang,
                      request: gr.Request):
        settings = Settings(temp, top_p, int(max_tokens), system or "")
        async for result in h.send(question, mode, a, b, settings, hold, round_id, preset_id, lang,
                                   session_of(request), address_of(request, h.trusted_proxies)):
            yield _by_name(c, [*ARENA_OUTPUTS, "question"])(result)

    for trigger in (c["send"].click, c["question"].submit):
        trigger(on_send, send_in, [*arena_out, c["question"]], concurrency_limit=None, **private)

    async def on_stop(round_id, request: gr.Request) -> None:  # on the event loop, like the stream it stops
        await h.stop(round_id, session_of(request))

    c["stop"].click(on_stop, [c["round_id"]], None, concurrency_limit=None, **private)

    async def on_regenerate(round_id, lang, request: gr.Request):
        async for result in h.regenerate(round_id, lang, session_of(request), address_of(request, h.trusted_proxies)):
            yield _by_name(c, ARENA_OUTPUTS)(result)

    c["regenerate"].click(on_regenerate, [c["round_id"], c["lang"]], arena_out, concurrency_limit=None, **private)
    for name, choice in zip(VOTE_KEYS.values(), VOTE_KEYS):
        c[name].click(_vote_handler(h, choice, c), [c["round_id"], c["lang"]], arena_out, **private)
    c["new_round"].click(lambda *v: _by_name(c, ARENA_OUTPUTS)(h.cleared(*v)), picks, arena_out, **private)
    mode_out = [*arena_out, c["pickers"], c["blind_options"]]
    c["mode"].change(lambda *v: _by_name(c, [*ARENA_OUTPUTS, "pickers", "blind_options"])(h.mode_changed(*v)),
                     picks, mode_out, **private)
    for picker in (c["model_a"], c["model_b"]):
        picker.change(lambda *v: _by_name(c, ARENA_OUTPUTS)(h.cleared(*v)), picks, arena_out, **private)
    c["category"].change(lambda cat: h.category_changed(cat)["preset"], [c["category"]], [c["preset"]], **private)
    c["preset"].change(lambda key: tuple(h.preset_picked(key).values()), [c["preset"]],
                       [c["question"], c["preset_id"]], **private)
    _wire_other_tabs(h, c)
    _wire_language(h, c, demo)


def _vote_handler(h: Handlers, choice: str, c: Components) -> Callable:
    async def on_vote(round_id, lang, request: gr.Request) -> dict:  # on the event loop: one owner per round
        return _by_name(c, ARENA_OUTPUTS)(await h.vote(choice, round_id, lang, session_of(request),
                                                       address_of(request, h.trusted_proxies)))
    return on_vote


def _wire_other_tabs(h: Handlers, c: Components) -> None:
    private = {"api_visibility": "private"}
    board_names = ("board", "board_empty", "board_note", "charts", "ratings_plot", "matrix_plot", "speed_plot",
                   "named_board", "style_panel", "style_board", "style_coefficients", "board_category",
                   "board_language", "judge_board", "judge_rates", "quality_intro", "quality_board", "quality_plot")
    board_out = [c[n] for n in board_names]

    async def show_board(lang: str, imported: bool, category: str | None = ALL, language: str | None = ALL,
                         request: gr.Request = None) -> dict:
        address = address_of(request, h.trusted_proxies) if request else None
        return _by_name(c, board_names)(await h.board_view(lang, imported, category, language, address))
    board_in = [c["lang"], c["include_imported"], c["board_category"], c["board_language"]]
    c["refresh"].click(show_board, board_in, board_out, api_name="leaderboard")
    c["tab_leaderboard"].select(show_board, board_in, board_out, **private)
    # .input, not .change: the view itself updates the selectors' choices, which must not re-trigger it
    for control in ("include_imported", "board_category", "board_language"):
        c[control].input(show_board, board_in, board_out, **private)
    token = c["admin_token"]
    for kind in ("csv", "jsonl"):  # the API's /export does the same (api.py)
        c[f"export_{kind}"].click(_export_handler(h, kind), [token, c["lang"]], [c["export_file"]], **private)
    c["import_file"].upload(_import_handler(h), [c["import_file"], token, c["lang"]], [c["import_result"]],
                            api_name="import")
    gr.Timer(1.0).tick(h.status, [c["lang"]], [c["status"]], show_progress="hidden", **private)



def _export_handler(h: Handlers, kind: str) -> Callable:
    def export_link(token: str | None, lang: str, request: gr.Request) -> str:  # not "export": the API's name
        return h.export_link(kind, token, lang, request)
    return export_link


def _import_handler(h: Handlers) -> Callable:
    def import_file(path: str | None, token: str | None, lang: str, request: gr.Request) -> str:
        """Merge a JSONL battle file (needs the admin token when the app has one)."""
        return h.import_file(path, token, lang, request)
    return import_file


def _wire_language(h: Handlers, c: Components, demo: gr.Blocks) -> None:
    """The page opens in the browser's language; the switch changes every label (and an empty round's panes)."""
    relabeled = [n for n in (*RELABEL, "question", "system_prompt", "admin_token", "batch_token")
                 if n in c]  # no Batch tab: fewer
    panes = ["chat_a", "chat_b", "metrics_a", "metrics_b"]
    outputs = [c["lang"], *(c[n] for n in relabeled + panes)]

    def switch(lang, mode, a, b, round_id):
        result = relabel(lang)
        if round_id is None:  # nothing on screen to lose: re-label the panes too
            result.update({k: v for k, v in h.cleared(mode, a, b, lang).items() if k in panes})
        return {c["lang"]: lang, **_by_name(c, relabeled + panes)(result)}

    def on_load(request: gr.Request):
        # The page is built in English (gr.I18n already shows the browser's language): only another
        # language fires the switch, and its relabel round trip.
        return language_of(request.headers.get("accept-language") if request else None)

    c["language"].change(switch, [c["language"], c["mode"], c["model_a"], c["model_b"], c["round_id"]], outputs,
                         api_visibility="private")
    demo.load(on_load, None, [c["language"]], api_visibility="private")


def build_ui(arena, downloads: Downloads | None = None, access: AdminAccess = AdminAccess(),
             max_upload_bytes: int = 20_000_000, batch=None, upload_max_age_s: float = 900) -> gr.Blocks:
    """The whole page over ``arena``. Exports and reports are offered through ``downloads`` (whose route the
    app must serve); ``access`` says who may export, import and run batches."""
    demo, _ = layout(Handlers(arena, downloads, access, max_upload_bytes, batch), upload_max_age_s)
    return demo
