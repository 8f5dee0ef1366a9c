"""The web server under load, with the models replaced by a recording OpenAI-compatible stub
(tests/stub_openai.py) so only the arena itself is measured.

    python bench/bench_server.py stall    # longest gap between stream updates while another session imports
    python bench/bench_server.py memory   # app RSS after 100 and after 10,000 API rounds
    python bench/bench_server.py load     # 100 concurrent sessions x 10 rounds: errors, stored vs acknowledged
    python bench/bench_server.py votes    # vote writes per second of the store alone: SQLite, PostgreSQL
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.serving.memory import resident_mb  # noqa: E402
from arena.serving.supervisor import free_port  # noqa: E402
from tests.stub_openai import StubOpenAI  # noqa: E402

OPEN_LIMITS = ("--questions-per-minute", "1000000", "--votes-per-minute", "1000000",
               "--questions-per-minute-per-address", "1000000", "--votes-per-minute-per-address", "1000000",
               "--max-upload-mb", "200")


class App:
    """The real app in a subprocess on the stub's models."""

    def __init__(self, stub: StubOpenAI, tmp: Path):
        from gradio_client import Client

        (tmp / "models.yaml").write_text(stub.catalog())
        self.port, self.tmp = free_port(), tmp
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen([sys.executable, "-m", "arena", "--port", str(self.port), "--models",
                                      str(tmp / "models.yaml"), "--data-dir", str(tmp / "data"), *OPEN_LIMITS],
                                     cwd=ROOT, stdout=open(tmp / "app.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                client = Client(self.url, verbose=False)
                if sum(m["state"] == "ready" for m in client.predict(api_name="/models")) == 2:
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the app did not start; see {tmp / 'app.log'}")

    def client(self):
        from gradio_client import Client
        return Client(self.url, verbose=False)

    def stored_votes(self) -> int:
        with sqlite3.connect(self.tmp / "data" / "arena.db") as db:
            return db.execute("SELECT COUNT(*) FROM rounds WHERE winner IS NOT NULL").fetchone()[0]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def one_round(client, question: str = "hi") -> tuple[dict, float]:
    started = time.perf_counter()
    view = client.predict(question, "named", "stub-a", "stub-b", api_name="/ask")
    client.predict(view["round_id"], "Tie", api_name="/vote")
    return view, time.perf_counter() - started


def bench_stall(app: App, args) -> dict:
    """Longest gap between two stream updates of one session while another imports a big file."""
    from gradio_client import handle_file

    path = app.tmp / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(args.lines):
            fh.write(json.dumps({"id": f"imp{i}", "model_a": "far-1", "model_b": "far-2", "winner": "tie",
                                 "anony": True, "tstamp": float(i),
                                 "conversation_a": [{"role": "user", "content": f"q{i}"},
                                                    {"role": "assistant", "content": "answer a " * 5}],
                                 "conversation_b": [{"role": "user", "content": f"q{i}"},
                                                    {"role": "assistant", "content": "answer b " * 5}]}) + "\n")

    def gaps(pieces: int) -> list[float]:
        job = app.client().submit(f"LONG {pieces}", "named", "stub-a", "stub-b", api_name="/ask")
        stamps = [time.perf_counter() for _ in job]
        return [b - a for a, b in zip(stamps, stamps[1:])]

    quiet = gaps(args.pieces)
    result: dict = {}
    importer = threading.Thread(target=lambda: result.update(
        reply=app.client().predict(handle_file(str(path)), "", api_name="/import"), done=time.perf_counter()))
    started = time.perf_counter()
    importer.start()
    time.sleep(0.2)
    busy = gaps(args.pieces)
    importer.join()
    return {"lines": args.lines, "import_s": round(result["done"] - started, 1), "import": result["reply"][:60],
            "max_gap_quiet_s": round(max(quiet), 3), "max_gap_during_import_s": round(max(busy), 3),
            "max_gap_during_import_before_last_s": round(max(busy[:-1]), 3),
            "median_gap_quiet_s": round(statistics.median(quiet), 3),
            "median_gap_during_import_s": round(statistics.median(busy), 3)}


def bench_memory(app: App, args) -> dict:
    """Resident memory of the app process after 100 rounds and after --rounds rounds."""
    local = threading.local()  # one client (one session) per thread: a session asks one question at a time
    done, marks = 0, {}

    failures = []

    def round_in_thread(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = app.client()
        try:
            one_round(local.client, f"q{i}")
        except Exception as exc:  # counted: the figure is memory, but a failure must show
            failures.append(repr(exc)[:200])

    def run(n: int) -> None:
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(round_in_thread, range(n)))

    started = time.perf_counter()
    for target in sorted({100, args.rounds // 4, args.rounds // 2, 3 * args.rounds // 4, args.rounds}):
        run(target - done)
        done = target
        marks[target] = resident_mb(app.proc.pid)
        print(f"{done} rounds, {time.perf_counter() - started:.0f} s: {marks[target]:.0f} MB", file=sys.stderr, flush=True)
    return {"rounds": done, "rss_mb": {n: round(mb) for n, mb in marks.items()},
            "ratio_last_to_100": round(marks[done] / marks[100], 2), "stored_votes": app.stored_votes(),
            "rounds_per_s": round(done / (time.perf_counter() - started), 1),
            "failed_rounds": len(failures), "first_failures": failures[:3]}


def bench_load(app: App, args) -> dict:
    """--sessions concurrent sessions, each --rounds rounds of ask + vote."""
    errors, ttfts, acknowledged = [], [], [0]
    lock = threading.Lock()

    clients = [app.client() for _ in range(args.sessions)]  # set-up (fetches the API schema), not timed

    def session(index: int) -> None:
        client = clients[index]
        for i in range(args.rounds):
            try:
                view, _ = one_round(client, f"load {i}")
                with lock:
                    acknowledged[0] += 1
                    ttfts.extend(view[k]["turns"][-1]["ttft_s"] for k in "ab")
            except Exception as exc:  # counted, not raised: the figure is the error count
                with lock:
                    errors.append(repr(exc)[:200])

    started = time.perf_counter()
    with ThreadPoolExecutor(args.sessions) as pool:
        list(pool.map(session, range(args.sessions)))
    elapsed = time.perf_counter() - started
    ttfts.sort()
    return {"sessions": args.sessions, "rounds_each": args.rounds, "errors": len(errors),
            "acknowledged_votes": acknowledged[0], "stored_votes": app.stored_votes(),
            "rounds_per_s": round(acknowledged[0] / elapsed, 1),
            "p95_ttft_s": round(ttfts[int(0.95 * (len(ttfts) - 1))], 3) if ttfts else None,
            "first_errors": errors[:3]}


def vote_rate(target: Path | str, n: int, threads: int) -> dict:
    """Vote writes per second of one store: ``n`` rounds saved, then voted from ``threads`` threads,
    one atomic UPDATE per vote in its own transaction, as the app does."""
    from arena.storage.store import RoundRecord, Store

    store = Store(target)
    try:
        for i in range(n):
            store.save_round(RoundRecord(id=f"r{i}", tstamp=float(i), session="s", mode="blind",
                                         model_a="a", model_b="b", turns=[]))
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            stored = sum(pool.map(lambda i: store.record_vote(f"r{i}", "tie", time.time(), True, None), range(n)))
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    return {"backend": store.dialect, "votes": stored, "threads": threads, "votes_per_s": round(stored / elapsed)}


def bench_votes(args) -> list[dict]:
    """SQLite and PostgreSQL side by side: a temp SQLite file and a throwaway PostgreSQL server with
    its default (durable) settings, started like the test fixture; or the --database URLs given."""
    from tests.pg_server import TempPostgres

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.database or [Path(tmp) / "arena.db", "temp-postgresql"]:
            if target != "temp-postgresql":
                results.append(vote_rate(target, args.n, args.threads))
                continue
            server = TempPostgres(durable=True)
            try:
                results.append({**vote_rate(server.new_database(), args.n, args.threads), "server": "temporary"})
            finally:
                server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("stall", "memory", "load", "votes"))
    parser.add_argument("--lines", type=int, default=100_000, help="stall: lines in the imported file")
    parser.add_argument("--pieces", type=int, default=200, help="stall: pieces in the watched stream")
    parser.add_argument("--rounds", type=int, default=None, help="memory: total rounds; load: rounds per session")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--n", type=int, default=20_000, help="votes: how many")
    parser.add_argument("--database", action="append", metavar="URL",
                        help="votes: measure this database (a SQLite path, postgresql://…; repeatable) instead of "
                             "a temp SQLite file and a temporary PostgreSQL server")
    args = parser.parse_args()
    if args.what == "votes":
        for result in bench_votes(args):
            print(json.dumps(result))
        return
    args.rounds = args.rounds or {"memory": 10_000, "load": 10}.get(args.what, 0)
    stub = StubOpenAI(piece_delay=0.02 if args.what == "stall" else 0.001)
    with tempfile.TemporaryDirectory() as tmp:
        app = App(stub, Path(tmp))
        try:
            print(json.dumps({"stall": bench_stall, "memory": bench_memory, "load": bench_load}[args.what](app, args)))
        finally:
            app.stop()
            stub.close()


if __name__ == "__main__":
    main()
