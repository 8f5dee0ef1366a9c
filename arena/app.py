"""Start-up: parse flags, load config, start the model workers, launch the page."""
from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import sys
from pathlib import Path

from arena.core import topics
from arena.core.config import (
    DEFAULT_MODELS_FILE,
    DEFAULT_PROMPTS_FILE,
    ConfigError,
    default_data_dir,
    load_models,
    load_prompts,
    started_by_default,
)
from arena.rounds.rules import Arena, Limits
from arena.serving.supervisor import Supervisor
from arena.storage.battle_schema import MAX_TEXT, MAX_TURNS
from arena.storage.store import add_database_flag, open_store
from arena.web import http_guard


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_FILE, help="model catalog (default: models.yaml)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS_FILE,
                        help="preset questions (default: prompts.yaml)")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(),
                        help="votes database, assembled model files and worker logs "
                             "(default: $ARENA_DATA_DIR or ./data)")
    add_database_flag(parser)


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m arena", description="Local LLM arena: two local models, "
                                     "one question, timed side by side, with votes and a leaderboard.")
    add_common_flags(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port for the page (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per model worker (default: half the cores, so two answers "
                             "run at once without oversubscribing; see BENCHMARKS.md)")
    parser.add_argument("--schedule", choices=("concurrent", "sequential"), default="concurrent",
                        help="answer both models at once (default) or one after the other")
    parser.add_argument("--rebuild-cache", action="store_true",
                        help="re-quantize transformers INT4 models instead of loading them from the cache")
    parser.add_argument("--blind-together", action="store_true",
                        help="blind battles show both answers only when both are finished, so streaming speed "
                             "can't give a model away (a page setting too; default: stream as they come)")
    parser.add_argument("--max-question-chars", type=int, default=8000,
                        help=f"longest question accepted (at most {MAX_TEXT:,})")
    parser.add_argument("--max-upload-mb", type=float, default=20, help="largest battle file the Export tab accepts")
    parser.add_argument("--votes-per-minute", type=int, default=30, help="vote rate limit per session")
    parser.add_argument("--questions-per-minute", type=int, default=30, help="question rate limit per session")
    parser.add_argument("--votes-per-minute-per-address", type=int, default=120,
                        help="vote rate limit per client address (a new session does not reset it)")
    parser.add_argument("--questions-per-minute-per-address", type=int, default=120,
                        help="question rate limit per client address")
    parser.add_argument("--leaderboard-views-per-minute", type=int, default=60,
                        help="Leaderboard views per client address (one not seen since the last vote refits the "
                             "ratings with a bootstrap)")
    parser.add_argument("--max-turns", type=int, default=20, help=f"questions per round (at most {MAX_TURNS})")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="IP",
                        help="a reverse proxy whose X-Forwarded-For header is believed for rate limits "
                             "(repeatable); without it the direct peer's address counts. Behind a proxy the "
                             "page is exposed, so export, import and batch runs then need the admin token")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="another name the page is reached by (repeatable). Without an admin token the app "
                             "answers only to localhost, 127.0.0.1 and [::1], so that no other site can reach it "
                             "through a visitor's browser (DNS rebinding); pages of these names may also call it")
    parser.add_argument("--upload-max-age", type=float, default=900, metavar="SECONDS",
                        help="uploaded files (battle imports) are deleted this long after they arrive (default 900)")
    return parser


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"error: port {port} on {host} is in use ({exc.strerror}). "
                             f"Start with --port {port + 1} (or another free port), or stop the program using it."
                             ) from None


def check_limits(args: argparse.Namespace) -> None:
    """Limits whose rounds the arena could store but not export and import again (battle_schema.py)."""
    if not 1 <= args.max_turns <= MAX_TURNS:
        raise SystemExit(f"error: --max-turns must be from 1 to {MAX_TURNS}, got {args.max_turns}")
    if not 1 <= args.max_question_chars <= MAX_TEXT:
        raise SystemExit(f"error: --max-question-chars must be from 1 to {MAX_TEXT:,}, got {args.max_question_chars}")


def build_arena(args: argparse.Namespace) -> Arena:
    models = load_models(args.models)
    prompts = load_prompts(args.prompts)
    data_dir = Path(args.data_dir)
    supervisor = Supervisor(started_by_default(models), args.models, data_dir, threads=args.threads,
                            rebuild_cache=args.rebuild_cache)
    limits = Limits(max_question_chars=args.max_question_chars, votes_per_minute=args.votes_per_minute,
                    questions_per_minute=args.questions_per_minute, max_turns=args.max_turns,
                    votes_per_minute_per_address=args.votes_per_minute_per_address,
                    questions_per_minute_per_address=args.questions_per_minute_per_address,
                    leaderboard_views_per_minute_per_address=args.leaderboard_views_per_minute)
    store = open_store(args)
    topics.backfill(store, prompts)  # rounds stored before categories and languages were
    return Arena(supervisor, store, prompts, limits, schedule=args.schedule,
                 blind_hold=args.blind_together, catalog=models)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def admin_token(args: argparse.Namespace) -> str | None:
    """The token export, import and batch runs need, or None when they are open.

    They are open on loopback (only this machine's users reach the page), as long as no request comes
    through a proxy (access.py refuses those). Beyond loopback, with --share or behind a reverse proxy
    (--trusted-proxy) anyone who finds the page could read every conversation, poison the data or keep
    the CPU busy for hours, so a token is required: $ARENA_ADMIN_TOKEN if set (which also closes them
    on loopback), else a new one, printed once at start-up."""
    if token := os.environ.get("ARENA_ADMIN_TOKEN"):
        return token
    if args.share or args.host not in LOOPBACK or args.trusted_proxy:
        import secrets

        token = secrets.token_urlsafe(18)
        print(f"Export, import and batch runs need the admin token {token} (set ARENA_ADMIN_TOKEN to choose one).",
              flush=True)
        return token
    return None


def yield_cpu_to_workers() -> None:
    """Mark the web app as a batch job so its wake-ups (Gradio polls its queue many times a
    second) do not preempt llama.cpp threads, which stall each other when one is descheduled.
    Workers reset themselves to the normal policy when they start (worker._normal_scheduling). Linux only."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            pass


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def serve(argv: list[str] | None = None) -> None:
    args = serve_parser().parse_args(argv)
    check_limits(args)
    try:
        arena = build_arena(args)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    check_port_free(args.host, args.port)
    from arena.web.page import CSS, build_ui

    # SIGTERM (systemd, docker, kill) takes the same clean path as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    yield_cpu_to_workers()
    arena.supervisor.start()
    from arena.batch.service import BatchService
    from arena.web.access import AdminAccess, address_of
    from arena.web.downloads import Downloads
    from arena.web.i18n import I18N

    data_dir = Path(args.data_dir).resolve()
    batch = BatchService(arena.supervisor, arena.store, arena.prompts, data_dir / "reports")
    access = AdminAccess(admin_token(args), frozenset(args.trusted_proxy))
    downloads = Downloads()
    max_upload = int(args.max_upload_mb * 1e6)
    demo = build_ui(arena, downloads, access, max_upload_bytes=max_upload, batch=batch,
                    upload_max_age_s=args.upload_max_age)
    policy = http_guard.policy_for(access.token_required, args.allowed_host, access.trusted_proxies, max_upload)
    print(f"Models are loading in the background; open http://{args.host}:{args.port} now.", flush=True)
    preload_for_serving()
    # What start-up loaded (gradio, pandas, matplotlib: well over a million objects) is set apart from the
    # garbage collector: a full collection scanning it all stalled the event loop, and every visitor, for
    # 200-250 ms (bench/bench_render.py stall --no-gc-freeze).
    gc.freeze()
    try:
        launch(demo.queue(default_concurrency_limit=8), policy, server_name=args.host, server_port=args.port,
               share=args.share, css=CSS, show_error=True, i18n=I18N, max_file_size=max_upload,
               # Nothing of ours is served as a plain file: exports and reports go through download tickets.
               blocked_paths=[str(data_dir), str(downloads.directory)],
               app_kwargs={"routes": [downloads.route(lambda r: address_of(r, access.trusted_proxies))]})
    except KeyboardInterrupt:
        pass
    finally:
        print("Stopping model workers…", file=sys.stderr, flush=True)
        arena.supervisor.stop()
        arena.store.close()
        downloads.close()


def preload_for_serving() -> None:
    """Gradio asks matplotlib for its backend around every event, on the event loop; the first time, that imports
    pyplot (about a quarter of a second during a visitor's first request). Done here, before serving."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot  # noqa: F401


def launch(demo, policy: "http_guard.GuardPolicy", **kwargs):
    """``demo.launch(**kwargs)`` behind the HTTP guard (http_guard.py): Host, Origin, CSP and upload limits on every
    request, and the client address taken from the connection itself, never from a header uvicorn was told to
    believe (it trusts X-Forwarded-For from 127.0.0.1 by default; access.py alone reads that header, and only
    from a --trusted-proxy). The event loop's stalls are served at /arena/health (loop_monitor.py)."""
    import contextlib

    from arena.web.loop_monitor import LoopMonitor

    os.environ["FORWARDED_ALLOW_IPS"] = ""  # read by uvicorn's Config: no peer may rewrite the client address
    app_kwargs = dict(kwargs.pop("app_kwargs", {}))
    monitor = LoopMonitor()  # the event loop's stalls, at /arena/health

    @contextlib.asynccontextmanager
    async def guarded(app):  # runs before the server takes its first request
        http_guard.install(app, policy)
        monitor.start()
        yield
    routes = [*app_kwargs.pop("routes", []), monitor.route()]
    return demo.launch(app_kwargs={**app_kwargs, "routes": routes, "lifespan": guarded}, **kwargs)
