"""The first thing every HTTP request to the page meets: which names and origins may reach it, what a browser may
run there, and how much anyone may upload.

- **Host.** With no admin token (the default: the app listens on loopback) only loopback names are served:
  ``localhost``, ``127.0.0.1``, ``[::1]`` and the names given with ``--allowed-host``. A web page that rebinds
  its own name to 127.0.0.1 (DNS rebinding) gets 403 for every route, so it cannot read conversations through a
  visitor's browser.
- **Origin.** A request that another site's page sent (its ``Origin`` names another host or port) is refused on
  every route, token or not, and no response ever names a foreign origin as allowed.
- **Content-Security-Policy.** Scripts run only from the app itself or inline with this response's nonce (Gradio's
  page has five inline scripts; each gets it), so an inline event handler or a ``javascript:`` link that slipped
  into the page does not run. No plugins, no ``<base>`` pointing elsewhere, forms post only to the app, images
  only from the app, and no other site may frame it.
- **Uploads** (``/gradio_api/upload`` takes files from anyone): a body over the upload limit is cut off with 413,
  and each address may upload a few times a minute. The app deletes uploads after a while (``Blocks.delete_cache``).

It wraps the whole app (``install`` puts it outside Gradio's own middleware, CORS included), so a refused request
never reaches Gradio and gets no CORS header; one that passes reaches Gradio's CORS middleware with an origin
that is the app's own (or an --allowed-host name).
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arena.rounds.rules import ArenaError, _RateLimiter, address_key
from arena.web.access import address_of

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UPLOAD_PATH = "/gradio_api/upload"
_MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and headers around the file itself
_SCRIPT_TAG = re.compile(rb"<script(?=[\s>])", re.IGNORECASE)


def content_security_policy(nonce: str | None) -> str:
    """The page's policy; ``nonce`` admits the inline scripts of one HTML response."""
    scripts = "'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    return ("default-src 'self'; "
            f"script-src {scripts}; "
            "style-src 'self' 'unsafe-inline'; "  # Gradio's components set inline styles
            "img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; "
            # 'self', not 'none': Gradio's page sets <base href="./">, which 'none' blocks (an error on every load);
            # 'self' still refuses a <base> pointing at another site.
            "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


EXTRA_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                 (b"x-frame-options", b"DENY"))


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard admits. ``allowed_hosts`` None: any Host (the app is exposed and has an admin token);
    otherwise the names a request's Host may carry."""

    allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES
    extra_origins: frozenset[str] = frozenset()  # host names whose pages may call the app (--allowed-host)
    trusted_proxies: frozenset[str] = frozenset()
    max_upload_bytes: int = 20_000_000
    uploads_per_minute: int = 10
    limiter: _RateLimiter = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.limiter is None:
            object.__setattr__(self, "limiter", _RateLimiter(self.uploads_per_minute))


def policy_for(token_required: bool, allowed_hosts: list[str], trusted_proxies: frozenset[str],
               max_upload_bytes: int) -> GuardPolicy:
    """The running app's policy: loopback names only while no token guards it; ``allowed_hosts`` always admitted
    (as Host, and as the origin of the page that calls)."""
    extra = frozenset(h.strip().lower().strip("[]") for h in allowed_hosts if h.strip())
    return GuardPolicy(allowed_hosts=None if token_required else LOOPBACK_NAMES | extra, extra_origins=extra,
                       trusted_proxies=trusted_proxies, max_upload_bytes=max_upload_bytes)


def _host_name(value: str) -> str:
    """The name in a Host header (``[::1]:7860`` -> ``::1``, ``Example.com:80`` -> ``example.com``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HttpGuard:
    """ASGI middleware enforcing a ``GuardPolicy`` (see the module's docstring)."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy):
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        request = Request(scope)
        refusal = self.refusal(request)
        if refusal is None and scope["type"] == "http" and scope["path"].endswith(UPLOAD_PATH):
            refusal, receive = self._upload(request, receive)
        if refusal is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            status, text = refusal
            return await PlainTextResponse(text, status, headers=_plain_headers())(scope, receive, send)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        await self.app(scope, receive, _with_security_headers(send))

    def refusal(self, request: Request) -> tuple[int, str] | None:
        """(status, reason) when ``request`` must not reach the app, else None."""
        host = request.headers.get("host", "")
        allowed = self.policy.allowed_hosts
        if allowed is not None and _host_name(host) not in allowed:
            return 403, (f"This arena answers only to {', '.join(sorted(allowed))} (the request named "
                         f"{host!r}). To reach it under another name, start it with --allowed-host NAME.")
        origin = request.headers.get("origin")
        if origin is not None and not self._same_origin(origin, host):
            return 403, (f"Requests from another site's page ({origin!r}) are refused. To let a page on another "
                         "host call this arena, start it with --allowed-host NAME.")
        return None

    def _same_origin(self, origin: str, host: str) -> bool:
        """Is ``origin`` this app's own (same name and port as the Host header; a Host without a port, as proxies
        send, matches the name), or a name allowed with --allowed-host?"""
        try:
            parts = urlsplit(origin)
            name, port = (parts.hostname or ""), parts.port
        except ValueError:
            return False
        if not name or parts.scheme not in ("http", "https"):
            return False  # "null" (sandboxed frames, files) and anything else
        if name in self.policy.extra_origins:
            return True
        host_name = _host_name(host)
        host_port = host.rsplit(":", 1)[1] if host.count(":") == 1 or host.startswith("[") and "]:" in host else ""
        default = 443 if parts.scheme == "https" else 80
        return name == host_name and (not host_port or str(port or default) == host_port)

    def _upload(self, request: Request, receive: Receive) -> tuple[tuple[int, str] | None, Receive]:
        """Rate and size limits of an upload; the receive channel that cuts a body off at the limit."""
        limit = self.policy.max_upload_bytes + _MULTIPART_OVERHEAD
        try:
            self.policy.limiter.check(address_key(address_of(request, self.policy.trusted_proxies) or "?"),
                                      "what_uploads", "who_address")
        except ArenaError as exc:
            return (429, exc.message("en")), receive
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return (413, f"Uploads are limited to {self.policy.max_upload_bytes / 1e6:g} MB "
                         "(start the arena with a larger --max-upload-mb to raise it)."), receive
        return None, _capped(receive, limit)


def _capped(receive: Receive, limit: int) -> Receive:
    """A receive channel that ends the request (as a disconnect) once the body passes ``limit`` bytes: a body
    sent without Content-Length is not read past the limit."""
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message
    return capped


def _plain_headers() -> dict[str, str]:
    return {"content-security-policy": content_security_policy(None),
            **{k.decode(): v.decode() for k, v in EXTRA_HEADERS}}


def _with_security_headers(send: Send) -> Callable[[Message], Awaitable[None]]:
    """``send`` adding the policy to every response, and a fresh nonce to an HTML page's inline scripts (the
    body is held until it is complete, then sent with the nonce in each ``<script`` tag)."""
    state: dict = {"html": False, "start": None, "body": []}
    nonce = secrets.token_urlsafe(16)

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-security-policy"]
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            state["html"] = content_type.startswith(b"text/html")
            policy = content_security_policy(nonce if state["html"] else None).encode()
            message = {**message, "headers": [*headers, (b"content-security-policy", policy), *EXTRA_HEADERS]}
            if state["html"]:
                state["start"] = message
                return
            return await send(message)
        if message["type"] == "http.response.body" and state["html"]:
            state["body"].append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _SCRIPT_TAG.sub(f'<script nonce="{nonce}"'.encode(), b"".join(state["body"]))
            start = state["start"]
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})
        await send(message)
    return wrapped


def install(app, policy: GuardPolicy) -> None:
    """Put the guard in front of ``app`` (a Starlette/FastAPI app whose middleware stack is built): outside every
    middleware Gradio added, CORS included. Call it from the app's lifespan start-up, which runs before the server
    takes its first request."""
    app.middleware_stack = HttpGuard(app.middleware_stack or app.build_middleware_stack(), policy)
