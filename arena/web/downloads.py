"""Files the page hands to one person: exports (every conversation) and batch reports.

Gradio serves anything under ``allowed_paths`` to anyone who guesses its name, token or not, so
these files never go there. Each is offered through a **ticket**: 32 random bytes, good for one
address (the client that asked, and passed the admin check) and a few minutes. An export is
written under an unguessable name into a private directory (mode 0700, also listed in Gradio's
``blocked_paths``), served once through ``GET /arena/download/<ticket>`` and deleted right after;
whatever nobody fetched is deleted when its ticket expires and when the app stops.
"""
from __future__ import annotations

import hmac
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route

ROUTE = "/arena/download/{ticket}"
TICKET_TTL_S = 600.0


@dataclass(frozen=True)
class _Ticket:
    path: Path
    filename: str
    address: str | None
    expires: float
    owned: bool  # a file of ours (an export): deleted once served or expired; a report stays


@dataclass(frozen=True)
class Offer:
    """What the page and the API show: where to fetch the file, what it is called, until when."""

    url: str  # relative to the app's root (no leading slash), so it works behind a path prefix too
    filename: str
    expires_in_s: float


class Downloads:
    """Tickets for files; thread-safe (exports are written in Gradio's worker threads, fetched on the loop)."""

    def __init__(self, ttl_s: float = TICKET_TTL_S):
        self.directory = Path(tempfile.mkdtemp(prefix="arena-downloads-"))  # mode 0700
        self.ttl_s = ttl_s
        self._tickets: dict[str, _Ticket] = {}
        self._lock = threading.Lock()

    def new_file(self, suffix: str) -> Path:
        """An unguessable path in the private directory for an export about to be written."""
        return self.directory / f"{secrets.token_hex(16)}{suffix}"

    def offer(self, path: Path, filename: str, address: str | None, owned: bool = True) -> Offer:
        """A ticket for ``path``, shown to the client as ``filename``; only ``address`` may use it. A file that
        is not ours (a report, ``owned=False``) keeps its ticket for a client that asks again (the Batch tab
        asks every second) until half its time is up."""
        path = Path(path)
        now = time.time()
        with self._lock:
            self._sweep()
            if not owned:
                for ticket, entry in self._tickets.items():
                    if entry.path == path and entry.address == address and entry.expires - now > self.ttl_s / 2:
                        return Offer(ROUTE.format(ticket=ticket).lstrip("/"), filename, entry.expires - now)
            ticket = secrets.token_urlsafe(32)
            self._tickets[ticket] = _Ticket(path, filename, address, now + self.ttl_s, owned)
        return Offer(ROUTE.format(ticket=ticket).lstrip("/"), filename, self.ttl_s)

    def take(self, ticket: str, address: str | None) -> _Ticket | None:
        """The ticket's file if ``address`` may fetch it now; an export's ticket is used up by this."""
        with self._lock:
            self._sweep()
            found = self._tickets.get(ticket)
            if found is None or not hmac.compare_digest(found.address or "", address or ""):
                return None
            if found.owned:
                del self._tickets[ticket]
            return found

    def _sweep(self) -> None:
        now = time.time()
        for ticket, entry in [(k, v) for k, v in self._tickets.items() if v.expires < now]:
            del self._tickets[ticket]
            if entry.owned:
                entry.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete every file not fetched yet (the app is stopping)."""
        with self._lock:
            self._tickets.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def route(self, address_of) -> Route:
        """The download endpoint; ``address_of(request)`` must be the same function the handlers use."""

        async def download(request: Request):
            entry = self.take(request.path_params["ticket"], address_of(request))
            if entry is None or not entry.path.is_file():
                return PlainTextResponse("This download link is unknown, used or expired. Export again from the "
                                         "Export tab.", status_code=404)
            cleanup = BackgroundTask(os.unlink, entry.path) if entry.owned else None
            return FileResponse(entry.path, filename=entry.filename, background=cleanup,
                                headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

        return Route(ROUTE, download, methods=["GET"])
