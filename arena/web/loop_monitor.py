"""How late the web server's event loop runs: the one number that says whether every visitor is being served.

Every handler that could take long runs off the loop, but work can creep back onto it (Gradio answering property
updates with new components and JSON schemas did, while answers streamed), and a busy machine makes every stall
longer. A task on the loop asks to wake every ``INTERVAL_S`` and records how much later it woke; the app serves the
longest lateness of each of the last minutes' seconds at ``/arena/health``, so an operator (or a test) can ask
"how long did the loop stall during the last N seconds?".
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

INTERVAL_S = 0.05
KEPT_S = 300
ROUTE = "/arena/health"


class LoopMonitor:
    """The event loop's lateness, second by second (the longest of each second)."""

    def __init__(self) -> None:
        self._seconds: deque[tuple[int, float]] = deque(maxlen=KEPT_S)  # (whole second, longest lateness in it)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start watching the running loop (call from a coroutine on it, e.g. the app's lifespan)."""
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(INTERVAL_S)
            self.record(max(0.0, loop.time() - asked - INTERVAL_S))

    def record(self, lateness: float, now: float | None = None) -> None:
        second = int(time.time() if now is None else now)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1] = (second, max(self._seconds[-1][1], lateness))
        else:
            self._seconds.append((second, lateness))

    def longest(self, seconds: float, now: float | None = None) -> float:
        """The longest lateness seen in the last ``seconds`` (at most KEPT_S)."""
        since = (time.time() if now is None else now) - min(seconds, KEPT_S)
        return max((lateness for second, lateness in self._seconds if second + 1 > since), default=0.0)

    def route(self) -> Route:
        """GET /arena/health?seconds=N: the loop's longest stall in the last N seconds (default 60)."""

        async def health(request: Request) -> JSONResponse:
            try:
                seconds = float(request.query_params.get("seconds", 60))
            except ValueError:
                return JSONResponse({"error": "seconds must be a number, e.g. ?seconds=60"}, status_code=400)
            return JSONResponse({"status": "ok", "seconds": min(seconds, KEPT_S),
                                 "loop_stall_max_s": round(self.longest(seconds), 4),
                                 "watching": self._task is not None and not self._task.done()})

        return Route(ROUTE, health, methods=["GET"])
