"""Who is asking, and who may do what.

Export (every conversation), import (new votes) and batch runs (hours of CPU) are admin actions.
They need the admin token whenever one is set, and one is set whenever the page can be reached
from other machines: bound beyond loopback, shared, or behind a reverse proxy (``--trusted-proxy``).
A request that arrives through a proxy (it carries ``X-Forwarded-For``, ``Forwarded`` or
``X-Real-IP``) while no token is set is refused too: the app listens on 127.0.0.1, but the
internet is knocking. The same functions name the client for the rate limits and the download
tickets, so a request is one client everywhere.
"""
from __future__ import annotations

import hashlib
import hmac
import string
from dataclasses import dataclass

PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
_SESSION_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-")
MAX_SESSION = 64


def session_of(request) -> str:
    """The request's session id as the arena stores it. Gradio takes whatever the client sends; one that is
    long or holds odd characters is replaced by a digest of it, so every export can be imported again."""
    raw = getattr(request, "session_hash", None) or "anonymous"
    if len(raw) <= MAX_SESSION and set(raw) <= _SESSION_CHARACTERS:
        return raw
    return "h-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def address_of(request, trusted_proxies: frozenset[str] = frozenset()) -> str | None:
    """The client's address (Gradio's or Starlette's request). X-Forwarded-For is believed only when the
    direct peer is a proxy the operator named (--trusted-proxy): then the nearest address that is not one."""
    client = getattr(request, "client", None)
    peer = getattr(client, "host", None)
    if peer in trusted_proxies:
        forwarded = [a.strip() for a in (request.headers.get("x-forwarded-for") or "").split(",") if a.strip()]
        for address in reversed(forwarded):
            if address not in trusted_proxies:
                return address
    return peer


def proxied(request, trusted_proxies: frozenset[str] = frozenset()) -> bool:
    """Did the request come through a proxy (a forwarding header, or a peer named as a proxy)?"""
    headers = getattr(request, "headers", None) or {}
    peer = getattr(getattr(request, "client", None), "host", None)
    return peer in trusted_proxies or any(headers.get(h) for h in PROXY_HEADERS)


@dataclass(frozen=True)
class AdminAccess:
    """The admin rule of one running app: its token (None = open on loopback) and its trusted proxies."""

    token: str | None = None
    trusted_proxies: frozenset[str] = frozenset()

    @property
    def token_required(self) -> bool:
        return self.token is not None

    def refusal(self, request, typed: str | None) -> str | None:
        """None if ``request`` may take an admin action with the ``typed`` token; else the text key saying why not."""
        if self.token is not None:
            ok = hmac.compare_digest((typed or "").encode(), self.token.encode())
            return None if ok else "admin_needed"
        if proxied(request, self.trusted_proxies):
            return "admin_behind_proxy"
        return None
