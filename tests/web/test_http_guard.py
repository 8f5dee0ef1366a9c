"""Public API, with raw HTTP: who may reach the running app (arena/http_guard.py), and whose address counts.

Requests are written as an attacker writes them: a rebound Host name, a foreign Origin, forged
X-Forwarded-For headers, oversized and repeated uploads. Each test runs against the real app process.
"""
from __future__ import annotations

import json
import os
import stat

import httpx

from ..conftest import start_app, wait_for

EXPORT = {"data": ["csv", ""]}


def _post(app, path: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(app.url.rstrip("/") + path, json=body, headers=headers, timeout=30)


def test_a_rebound_host_name_is_refused_on_every_route(stub_app):
    """DNS rebinding: a page on arena.attacker.example whose name now points at 127.0.0.1 asks for every
    conversation. Without an admin token only loopback names (and --allowed-host ones) are served: 403 on every
    route, with no CORS header naming the attacker's origin (before, the CSV came back with
    access-control-allow-origin echoing it and credentials allowed)."""
    port = stub_app.port
    attacker = {"Host": f"arena.attacker.example:{port}", "Origin": f"http://arena.attacker.example:{port}"}
    for method, path in [("POST", "/gradio_api/call/export"), ("GET", "/"), ("GET", "/gradio_api/info"),
                         ("GET", "/gradio_api/file=README.md"), ("GET", "/download/x"), ("POST", "/gradio_api/upload"),
                         ("GET", "/config")]:
        response = httpx.request(method, stub_app.url.rstrip("/") + path, headers=attacker, timeout=30,
                                 json=EXPORT if method == "POST" else None)
        assert response.status_code == 403, (path, response.status_code)
        assert "access-control-allow-origin" not in response.headers, path
        assert "--allowed-host" in response.text
    for name in ("127.0.0.1", "localhost", "[::1]", "arena.test"):  # arena.test: the fixture's --allowed-host
        assert httpx.get(stub_app.url, headers={"Host": f"{name}:{port}"}, timeout=30).status_code == 200, name


def test_a_foreign_origin_is_refused_and_never_reflected(stub_app):
    """A page of another site (or of another port on this machine) posting to the arena through the visitor's
    browser is refused; the arena's own page, which sends its own origin, is served."""
    own = f"http://127.0.0.1:{stub_app.port}"
    for origin in ("http://evil.example", f"http://localhost:{stub_app.port + 1}", "null",
                   f"https://127.0.0.1:{stub_app.port + 1}"):
        response = _post(stub_app, "/gradio_api/call/models", {"data": []}, Origin=origin)
        assert response.status_code == 403 and "access-control-allow-origin" not in response.headers, origin
    response = _post(stub_app, "/gradio_api/call/models", {"data": []}, Origin=own)
    assert response.status_code == 200 and response.headers.get("access-control-allow-origin") in (None, own)


def test_every_page_carries_a_policy_that_runs_only_the_apps_own_scripts(stub_app):
    """The page's Content-Security-Policy: scripts from the app itself or inline with this response's nonce (a
    new one per response, on every inline script Gradio writes), nothing else; no plugins, forms post only to
    the app, no framing. The browser test shows an injected handler does not run under it."""
    pages = [httpx.get(stub_app.url, timeout=30) for _ in range(2)]
    policies = [p.headers["content-security-policy"] for p in pages]
    nonces = [p.split("'nonce-")[1].split("'")[0] for p in policies]
    assert nonces[0] != nonces[1]
    for page, policy, nonce in zip(pages, policies, nonces):
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
        assert directives["script-src"] == f"'self' 'nonce-{nonce}'"  # no 'unsafe-inline', no 'unsafe-eval'
        assert directives["form-action"] == "'self'" and directives["frame-ancestors"] == "'none'"
        assert directives["base-uri"] == "'self'"
        scripts = page.text.count("<script")
        assert scripts >= 5 and page.text.count(f'<script nonce="{nonce}"') == scripts
    info = httpx.get(stub_app.url + "gradio_api/info", timeout=30)
    assert "'nonce-" not in info.headers["content-security-policy"]


def _ask_from(app, address: str) -> str:
    """One /ask through the raw queue API with X-Forwarded-For: ``address``: 'complete' or the error text."""
    headers = {"X-Forwarded-For": address}
    data = ["hello", "named", "stub-a", "stub-b", "", 0.0, 1.0, 32, "", ""]  # question, mode, models, round, settings
    event = _post(app, "/gradio_api/call/ask", {"data": data}, **headers)
    event.raise_for_status()
    stream = httpx.get(f"{app.url}gradio_api/call/ask/{event.json()['event_id']}", headers=headers, timeout=60)
    kind = [line for line in stream.text.splitlines() if line.startswith("event:")][-1].split(":", 1)[1].strip()
    data = [line for line in stream.text.splitlines() if line.startswith("data:")][-1].split(":", 1)[1]
    return kind if kind == "complete" else json.loads(data) or "error"


def test_forged_forwarded_for_headers_do_not_reset_the_per_address_limit(tmp_path_factory, stub):
    """Without --trusted-proxy, X-Forwarded-For never rewrites the client's address (uvicorn believes it from
    127.0.0.1 by default, which every local tunnel is): six questions, each with a new forged address, from one
    real address with a limit of 3 per minute: the fourth is refused (before, all six were answered)."""
    args = ("--questions-per-minute-per-address", "3", "--questions-per-minute", "100")
    app = start_app(tmp_path_factory, "xff", catalog=stub.catalog(), args=args).ready()
    try:
        results = [_ask_from(app, f"203.0.113.{i}") for i in range(6)]
    finally:
        app.stop()
    assert results[:3] == ["complete"] * 3
    assert all("Too many questions from this address" in str(r) for r in results[3:]), results


def test_a_trusted_proxy_names_the_client(tmp_path_factory, stub):
    """With --trusted-proxy 127.0.0.1 the proxy's X-Forwarded-For is believed: six clients behind it, each asking
    once, are six addresses, none over its limit of 3; one client asking four times is refused the fourth."""
    args = ("--questions-per-minute-per-address", "3", "--questions-per-minute", "100", "--trusted-proxy",
            "127.0.0.1")
    app = start_app(tmp_path_factory, "proxied", catalog=stub.catalog(), args=args).ready()
    try:
        assert [_ask_from(app, f"203.0.113.{i}") for i in range(6)] == ["complete"] * 6
        assert [_ask_from(app, "198.51.100.7") for _ in range(3)] == ["complete"] * 3
        assert "Too many questions from this address" in str(_ask_from(app, "198.51.100.7"))
    finally:
        app.stop()


def test_uploads_are_capped_limited_per_address_and_deleted(tmp_path_factory, stub):
    """Anyone may post to /gradio_api/upload: a file over --max-upload-mb is refused (413) and not kept, an
    address may upload a few times a minute (429 after), and what was uploaded is deleted --upload-max-age
    seconds later."""
    args = ("--max-upload-mb", "0.001", "--upload-max-age", "2")
    app = start_app(tmp_path_factory, "uploads", catalog=stub.catalog(), args=args).ready()
    url = app.url + "gradio_api/upload"
    try:
        big = httpx.post(url, files={"files": ("big.jsonl", b"x" * 200_000)}, timeout=30)
        assert big.status_code == 413 and "--max-upload-mb" in big.text
        small = httpx.post(url, files={"files": ("small.jsonl", b"{}\n")}, timeout=30)
        assert small.status_code == 200
        kept = small.json()[0]
        assert os.path.exists(kept)
        statuses = [httpx.post(url, files={"files": ("s.jsonl", b"{}\n")}, timeout=30).status_code
                    for _ in range(12)]
        assert 429 in statuses and statuses.index(429) >= 7  # ten a minute, two used above
        wait_for(lambda: not os.path.exists(kept), 30, "the upload to be deleted")
    finally:
        app.stop()


def test_the_database_is_readable_by_its_owner_only(stub_app):
    """Every conversation is in arena.db: created 0600, not world-readable (it was 0644)."""
    database = stub_app.tmp / "data" / "arena.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    for suffix in ("-wal", "-shm"):
        sidecar = database.with_name(database.name + suffix)
        if sidecar.exists():
            assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, suffix
