"""Hostile Markdown: what rendering costs, and how long it can stall the web server's event loop.

    python bench/bench_render.py cost    # safe_markdown time against text length, 1k to 64k characters
    python bench/bench_render.py stall   # the app on a stub model server (another process), asked through the
                                         # page's send event: the event loop's longest stall and another
                                         # client's slowest request while a hostile question and answer render
    python bench/bench_render.py stall --browser   # the same, typed into the page in Chromium
    python bench/bench_render.py stall --browser --busy 2   # ... with two CPU-bound processes beside the app

``cost`` shows the render is linear (time per character flat as the text grows 64x). ``stall`` runs the
page's real send path (Handlers.send, the PaneRenderer, Gradio's queue, postprocessing and streaming),
with a monitor task on the server's own event loop that sleeps 5 ms at a time and records how late it
woke. With ``--browser`` Chromium's own Markdown rendering runs on the same two cores, so the figure
also holds the time the server's process waited for a core.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402  (at module level: serve's handler names gr.Request in its annotations)

from arena.web.live_markdown import LiveMarkdown  # noqa: E402
from arena.web.safe_markdown import safe_markdown  # noqa: E402


def _mixed(n: int) -> str:
    sample = "`a` ![x](y) [z] <b> *e* _f_ ~~s~~ | t | \n> q [r]: u\n1. ![i][r]\n```\n<c>\n```\n"
    return (sample * (n // len(sample) + 1))[:n]


GENERATORS = {
    "backticks": lambda n: "`" * n, "brackets": lambda n: "[" * n, "asterisks": lambda n: "*" * n,
    "underscores": lambda n: "_" * n, "image openers": lambda n: "![" * (n // 2), "angle brackets": lambda n: "<" * n,
    "nested lists": lambda n: "".join("  " * (i % 60) + "- x\n" for i in range(n // 60 + 1))[:n],
    "mixed": _mixed, "prose": lambda n: ("A normal answer, with a [link](http://x) and `code`. " * n)[:n],
}


def cost(sizes: list[int], repeats: int) -> None:
    print("| input | " + " | ".join(f"{n // 1000}k chars" for n in sizes) + " | µs per char at 1k / at 64k |")
    print("|---|" + "---|" * len(sizes) + "---|")
    for name, make in GENERATORS.items():
        times = []
        for n in sizes:
            text = make(n)
            times.append(min(_timed(safe_markdown, text) for _ in range(repeats)))
        per_char = [t / n * 1e6 for t, n in zip(times, sizes)]
        print(f"| {name} | " + " | ".join(f"{t * 1000:.1f} ms" for t in times)
              + f" | {per_char[0]:.1f} / {per_char[-1]:.1f} |", flush=True)
    streamed(sizes)


STREAMS = {  # what a model may stream; the review's ```a` streams once skipped the parse limit
    "brackets": lambda n: "[" * n, "```a` then brackets": lambda n: ("```a`" + "[" * n)[:n],
    "```a` then image openers": lambda n: ("```a`" + "![" * n)[:n],
    "a code block": lambda n: ("```python\n" + "    x = [i for i in range(10)]  # <b> ![i](/p.png)\n" * n)[:n],
    "mixed": _mixed, "prose": GENERATORS["prose"],
}


def streamed(sizes: list[int], step: int = 64) -> None:
    """Each stream rendered as the page renders a streaming answer (LiveMarkdown), an update every ``step``
    characters: the total render CPU per size (linear: a 16x longer stream costs about 16x), the slowest update,
    and the one full render at the end."""
    print(f"\n| streamed, an update every {step} characters | " + " | ".join(f"{n // 1000}k: all updates"
                                                                          for n in sizes)
          + " | slowest update | final render at the largest |")
    print("|---|" + "---|" * len(sizes) + "---|---|")
    for name, make in STREAMS.items():
        totals, worst = [], 0.0
        for n in sizes:
            text, live, total = make(n), LiveMarkdown(), 0.0
            for k in range(step, n + step, step):
                took = _timed(live.render, text[:k])
                worst, total = max(worst, took), total + took
            totals.append(total)
        final = _timed(LiveMarkdown().render, make(sizes[-1]), True)
        print(f"| {name} | " + " | ".join(f"{t:.2f} s" for t in totals) + f" | {worst * 1000:.1f} ms | "
              f"{final * 1000:.0f} ms |", flush=True)


def _timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def serve() -> None:
    """The app on a stub model server, in this process, with two endpoints for the measurement: /lag_reset
    (the event loop's longest stall since the last call, from a monitor task on that loop) and /bench_send (the
    page's own send event, made public: Handlers.send, its rendering and Gradio's postprocessing)."""
    from arena.app import build_arena, preload_for_serving, serve_parser
    from arena.core.records import Settings
    from arena.serving.supervisor import free_port
    from arena.web.access import AdminAccess, session_of
    from arena.web.downloads import Downloads
    from arena.web.handlers import ARENA_OUTPUTS, Handlers
    from arena.web.i18n import I18N
    from arena.web.page import CSS, layout
    from tests.stub_openai import StubOpenAI

    stub = StubOpenAI(piece_delay=0.15)
    tmp = Path(tempfile.mkdtemp(prefix="bench-render-"))
    (tmp / "models.yaml").write_text(stub.catalog())
    args = serve_parser().parse_args(["--models", str(tmp / "models.yaml"), "--data-dir", str(tmp / "data")])
    arena = build_arena(args)
    arena.supervisor.start()
    arena.supervisor.wait_until_settled(60)
    handlers = Handlers(arena, Downloads(), AdminAccess())
    demo, c = layout(handlers)
    lag = {"max": 0.0, "task": None}

    async def monitor() -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(0.005)
            lag["max"] = max(lag["max"], loop.time() - asked - 0.005)

    async def lag_reset() -> float:
        if lag["task"] is None:
            lag["task"] = asyncio.create_task(monitor())
        value, lag["max"] = lag["max"], 0.0
        return value

    outputs = [*ARENA_OUTPUTS, "question"]

    async def bench_send(question: str, request: gr.Request):
        async for result in handlers.send(question, "named", "stub-a", "stub-b", Settings(), False, None, None,
                                          "en", session_of(request)):
            yield {c[name]: value for name, value in result.items() if name in outputs}

    with demo:
        gr.api(lag_reset, api_name="lag_reset")
        hidden = gr.Button(visible=False)
        hidden.click(bench_send, [c["question"]], [c[n] for n in outputs], api_name="bench_send")
    port = free_port()
    preload_for_serving()
    if not os.environ.get("BENCH_NO_GC_FREEZE"):  # as the app does before it serves (arena/app.py)
        gc.freeze()
    demo.queue(default_concurrency_limit=8).launch(server_port=port, prevent_thread_lock=True, css=CSS, i18n=I18N,
                                                   quiet=True)
    print(f"READY http://127.0.0.1:{port}/", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        arena.supervisor.stop()
        stub.close()


BUSY = "while True:\n    pass\n"  # a CPU-bound process at normal priority: other work on the machine


def stall(names: list[str], browser: bool, gc_freeze: bool = True, busy: int = 0) -> None:
    """Start ``serve`` in another process, then ask each hostile question (the stub's model repeats it as its
    answer) through the page's send path, measuring the server's loop and another client's requests; with
    ``busy``, that many CPU-bound processes run beside it all the while."""
    import subprocess

    import httpx
    from gradio_client import Client

    env = {**os.environ, **({} if gc_freeze else {"BENCH_NO_GC_FREEZE": "1"})}
    server = subprocess.Popen([sys.executable, __file__, "serve"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env=env)
    url = ""
    while not url.startswith("READY"):
        url = server.stdout.readline()
        if not url and server.poll() is not None:
            raise SystemExit("the bench server did not start")
    url = url.split()[1]
    burners = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    control = Client(url, verbose=False)
    control.predict(api_name="/lag_reset")
    rows = []
    page = pw = chromium = None
    if browser:
        from playwright.sync_api import expect, sync_playwright

        from tests.conftest import CHROMIUM_ARGS
        pw = sync_playwright().start()
        chromium = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        expect(page.locator("#send")).to_be_visible(timeout=30_000)
    try:
        for name in ["prose", *names]:
            latencies, done = [], threading.Event()

            def probe(done=done, latencies=latencies):
                while not done.is_set():
                    started = time.perf_counter()
                    httpx.get(url + "gradio_api/info", timeout=120)
                    latencies.append(time.perf_counter() - started)
                    time.sleep(0.05)
            control.predict(api_name="/lag_reset")
            thread = threading.Thread(target=probe, daemon=True)
            thread.start()
            started = time.perf_counter()
            question = "ECHO " + GENERATORS[name](7995)
            if page is not None:
                page.locator("#question textarea").fill(question)
                page.locator("#send").click()
                expect(page.locator("#vote-a")).to_be_enabled(timeout=300_000)
                page.locator("#new-round").click()
            else:
                for _ in control.submit(question, api_name="/bench_send"):
                    pass
            turn = time.perf_counter() - started
            done.set()
            thread.join(120)
            loop_stall = control.predict(api_name="/lag_reset")
            rows.append((name, loop_stall, max(latencies), statistics.median(latencies), turn))
            print(f"{name}: loop stall {loop_stall * 1000:.0f} ms, other client's slowest request "
                  f"{max(latencies) * 1000:.0f} ms", flush=True)
    finally:
        for burner in burners:
            burner.kill()
        if chromium is not None:
            chromium.close()
            pw.stop()
        server.terminate()
    where = "page in Chromium on the same 2 cores" if browser else "page's send event, streamed to a client"
    where += f", {busy} CPU-bound processes beside it" if busy else ""
    print(f"\n| question and answer (8,000 chars), {where} | event loop's longest stall | other client: slowest / "
          "median request | turn |")
    print("|---|---|---|---|")
    for name, loop_stall, worst, median, turn in rows:
        print(f"| {name} | {loop_stall * 1000:.0f} ms | {worst * 1000:.0f} / {median * 1000:.0f} ms | {turn:.1f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("cost", "stall", "serve"))
    parser.add_argument("--sizes", default="1000,4000,16000,64000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true",
                        help="stall: drive the page in Chromium (on the same machine: it competes for the cores)")
    parser.add_argument("--busy", type=int, default=0,
                        help="stall: run this many CPU-bound processes beside the app (a busy machine)")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="stall: serve without the app's gc.freeze() (shows the full collections it avoids)")
    args = parser.parse_args()
    if args.what == "cost":
        cost([int(s) for s in args.sizes.split(",")], args.repeats)
    elif args.what == "serve":
        serve()
    else:
        stall([n for n in GENERATORS if n != "prose"], args.browser, not args.no_gc_freeze, args.busy)


if __name__ == "__main__":
    main()
