"""The real app killed outright (kill -9) while sessions vote, and stopped with SIGTERM: every vote
the server acknowledged is on disk after a restart, a second vote on those rounds is still refused,
and the database is intact. The models are the recording stub server, so the votes come fast."""
import signal
import sqlite3
import threading

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from arena.serving.supervisor import free_port

from ..conftest import RunningApp, start_app

LIMITS = ("--questions-per-minute", "100000", "--votes-per-minute", "100000",
          "--questions-per-minute-per-address", "100000", "--votes-per-minute-per-address", "100000")


def test_kill_9_under_voting_load_loses_no_acknowledged_vote(tmp_path_factory, stub):
    running = start_app(tmp_path_factory, "kill9", catalog=stub.catalog(), args=LIMITS).ready()
    data = running.tmp / "data"
    clients = [Client(running.url, verbose=False) for _ in range(6)]
    acknowledged: list[tuple[str, str]] = []  # (session, round id) the server said it stored
    lock, stop = threading.Lock(), threading.Event()

    def vote_loop(client: Client) -> None:
        while not stop.is_set():
            try:
                view = client.predict("vote", "named", "stub-a", "stub-b", api_name="/ask")
                client.predict(view["round_id"], "A better", api_name="/vote")
            except Exception:  # the server died under us: that vote was not acknowledged
                return
            with lock:
                acknowledged.append((client.session_hash, view["round_id"]))

    threads = [threading.Thread(target=vote_loop, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    while len(acknowledged) < 20:
        threads[0].join(0.1)
    running.proc.send_signal(signal.SIGKILL)
    running.proc.wait(10)
    stop.set()
    for thread in threads:
        thread.join(30)
    running.log.close()

    with sqlite3.connect(data / "arena.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in db.execute("SELECT id FROM rounds WHERE winner='model_a'")}
    missing = [round_id for _, round_id in acknowledged if round_id not in stored]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged vote(s) lost"


def test_after_a_restart_a_voted_round_still_takes_no_second_vote(tmp_path_factory, stub):
    """The one-vote rule lives in the database, not in the process that took the first vote."""
    first = start_app(tmp_path_factory, "restart", catalog=stub.catalog()).ready()
    client = Client(first.url, verbose=False)
    view = client.predict("once", "named", "stub-a", "stub-b", api_name="/ask")
    client.predict(view["round_id"], "Tie", api_name="/vote")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    first.log.close()

    second = RunningApp(first.tmp, free_port(), catalog=stub.catalog()).ready()  # same data dir
    try:
        again = Client(second.url, verbose=False)
        again.session_hash = client.session_hash  # the same visitor, after the restart
        with pytest.raises(AppError, match="already has a vote"):
            again.predict(view["round_id"], "A better", api_name="/vote")
    finally:
        second.stop()


def _children(pid: int) -> set[int]:
    from pathlib import Path

    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def test_sigterm_stops_the_app_and_every_worker(tmp_path_factory):
    """systemd, docker and kill send SIGTERM: the app stops its model workers and leaves no orphan."""
    import os
    import time

    running = start_app(tmp_path_factory, "sigterm").ready()
    workers = _children(running.proc.pid)
    assert len(workers) >= 2
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(30) is not None
    running.log.close()
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") for w in workers):
        time.sleep(0.2)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")], "a worker outlived the app"
