"""The public JSON API (``/ask``, ``/vote``, ``/stop``, ``/models``): the same ``Arena`` calls the
page makes, with plain values in and round views out. No page state is shared with it."""
from __future__ import annotations

from typing import AsyncIterator

import gradio as gr

from ..rounds import DEFAULTS, Arena, ArenaError, Settings
from .handlers import address_of, session_of


def register(arena: Arena, trusted_proxies: frozenset[str] = frozenset()) -> None:
    """Add the endpoints to the Blocks being built (call inside ``with gr.Blocks()``)."""

    async def ask(question: str, mode: str = "named", model_a: str = "", model_b: str = "", round_id: str = "",
                  temperature: float = DEFAULTS.temperature, top_p: float = DEFAULTS.top_p,
                  max_new_tokens: int = DEFAULTS.max_new_tokens, system_prompt: str = "", preset_id: str = "",
                  request: gr.Request = None) -> AsyncIterator[dict]:
        """Ask both models; streams the round view. In blind mode names and timings stay hidden until /vote."""
        try:
            async for view in arena.ask(session_of(request), question, round_id=round_id or None, mode=mode,
                                        model_a=model_a or None, model_b=model_b or None,
                                        settings=Settings(temperature, top_p, int(max_new_tokens), system_prompt),
                                        preset_id=preset_id or None,
                                        address=address_of(request, trusted_proxies)):
                yield view
        except ArenaError as exc:
            raise gr.Error(str(exc)) from None

    async def stop(round_id: str, request: gr.Request = None) -> bool:
        """Stop both answers of a streaming round; the /ask stream then ends with them marked stopped."""
        return arena.stop(session_of(request), round_id)

    def vote(round_id: str, choice: str, request: gr.Request = None) -> dict:
        """Vote once on a round: 'A better', 'B better', 'Tie' or 'Both bad'. Returns the revealed round."""
        try:
            return arena.vote(session_of(request), round_id, choice, address_of(request, trusted_proxies))
        except ArenaError as exc:
            raise gr.Error(str(exc)) from None

    def models() -> list[dict]:
        """Every model in the catalog with its state (ready, loading, failed: reason)."""
        return [{"id": s.id, "name": s.name, "state": s.state, "detail": s.describe(),
                 "load_seconds": s.load_seconds} for s in arena.supervisor.statuses()]

    gr.api(ask, api_name="ask", concurrency_limit=None)
    gr.api(vote, api_name="vote")
    gr.api(stop, api_name="stop", concurrency_limit=None)
    gr.api(models, api_name="models")
