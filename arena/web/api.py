"""The public JSON API (``/ask``, ``/vote``, ``/stop``, ``/models``, ``/export``): the same ``Arena`` and
``Handlers`` calls the page makes, with plain values in and JSON out. No page state is shared with it."""
from __future__ import annotations

from dataclasses import asdict
from typing import AsyncIterator

import gradio as gr

from arena.rounds.rules import DEFAULTS, ArenaError, Settings
from arena.web.access import address_of, session_of
from arena.web.handlers import Handlers


def register(handlers: Handlers) -> None:
    """Add the endpoints to the Blocks being built (call inside ``with gr.Blocks()``)."""
    arena, proxies = handlers.arena, handlers.trusted_proxies

    async def ask(question: str, mode: str = "named", model_a: str = "", model_b: str = "", round_id: str = "",
                  temperature: float = DEFAULTS.temperature, top_p: float = DEFAULTS.top_p,
                  max_new_tokens: int = DEFAULTS.max_new_tokens, system_prompt: str = "", preset_id: str = "",
                  request: gr.Request = None) -> AsyncIterator[dict]:
        """Ask both models; streams the round view. In blind mode names and timings stay hidden until /vote.
        A round_id of a round already voted on starts a new round."""
        try:
            async for view in arena.ask(session_of(request), question, round_id=round_id or None, mode=mode,
                                        model_a=model_a or None, model_b=model_b or None,
                                        settings=Settings(temperature, top_p, int(max_new_tokens), system_prompt),
                                        preset_id=preset_id or None, address=address_of(request, proxies)):
                yield view.as_dict()
        except ArenaError as exc:
            raise gr.Error(str(exc)) from None

    async def regenerate(round_id: str, request: gr.Request = None) -> AsyncIterator[dict]:
        """Answer the round's last question again with a new seed (before the vote); streams the round view. The
        answers replaced stay in the round (each turn's ``attempt``); a vote applies to the answers shown."""
        try:
            async for view in arena.regenerate(session_of(request), round_id, address_of(request, proxies)):
                yield view.as_dict()
        except ArenaError as exc:
            raise gr.Error(str(exc)) from None

    async def stop(round_id: str, request: gr.Request = None) -> bool:
        """Stop both answers of a streaming round; the /ask stream then ends with them marked stopped."""
        return await arena.stop(session_of(request), round_id)

    async def vote(round_id: str, choice: str, request: gr.Request = None) -> dict:
        """Vote once on a round: 'A better', 'B better', 'Tie' or 'Both bad'. Returns the revealed round."""
        try:
            view = await arena.vote(session_of(request), round_id, choice, address_of(request, proxies))
        except ArenaError as exc:
            raise gr.Error(str(exc)) from None
        return view.as_dict()

    def models() -> list[dict]:
        """Every model in the catalog with its state (ready, loading, failed: reason). Remote servers are shown
        without credentials."""
        return [{"id": s.id, "name": s.name, "state": s.state, "detail": s.describe(),
                 "load_seconds": s.load_seconds} for s in arena.supervisor.statuses()]

    def export(kind: str = "csv", token: str = "", request: gr.Request = None) -> dict:
        """Every vote (kind csv) or battle (kind jsonl) as a one-time download for this client: fetch ``url``
        (relative to the app) within ``expires_in_s``. Needs the admin token when the app has one."""
        return asdict(handlers.export(kind, token, "en", request))

    gr.api(ask, api_name="ask", concurrency_limit=None)
    gr.api(vote, api_name="vote", concurrency_limit=None)
    gr.api(regenerate, api_name="regenerate", concurrency_limit=None)
    gr.api(stop, api_name="stop", concurrency_limit=None)
    gr.api(models, api_name="models")
    gr.api(export, api_name="export")
