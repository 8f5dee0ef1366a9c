"""Two real app processes on one PostgreSQL database (README "Many machines"): rounds
asked on either replica, then every round voted from both replicas at the same moment. Each round
ends with exactly one vote, the one the servers acknowledged, and the other replica refuses its
attempt: the one-vote rule lives in the shared database, not in either process."""
from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client
from gradio_client.exceptions import AppError

from arena.storage.store import Store

from ..conftest import start_app
from ..storage.test_durability import LIMITS

SESSIONS, ROUNDS_EACH = 6, 4
CHOICES = {"A better": "model_a", "B better": "model_b"}


def test_two_replicas_on_one_postgresql_vote_each_round_exactly_once(tmp_path_factory, stub, postgres):
    url = postgres.new_database()
    replicas = [start_app(tmp_path_factory, f"replica-{k}", catalog=stub.catalog(), args=(*LIMITS, "--database", url))
                for k in "ab"]
    try:
        for replica in replicas:
            replica.ready()
        # one visitor = one session on both replicas (a load balancer without sticky sessions)
        sessions = []
        for _ in range(SESSIONS):
            first = Client(replicas[0].url, verbose=False)
            second = Client(replicas[1].url, verbose=False)
            second.session_hash = first.session_hash
            sessions.append((first, second))

        def ask_rounds(pair) -> list[str]:  # alternate replicas: rounds live on both
            return [pair[i % 2].predict(f"q{i}", "named", "stub-a", "stub-b", api_name="/ask")["round_id"]
                    for i in range(ROUNDS_EACH)]

        with ThreadPoolExecutor(SESSIONS) as pool:
            round_ids = list(pool.map(ask_rounds, sessions))

        # In waves (gradio_client keeps one job in flight per client): every session's k-th round is
        # voted from both replicas at the same moment, both jobs submitted before either is collected.
        acknowledged: dict[str, list[str]] = {}
        for k in range(ROUNDS_EACH):
            jobs = [(ids[k], choice, client.submit(ids[k], choice, api_name="/vote"))
                    for pair, ids in zip(sessions, round_ids) for client, choice in zip(pair, CHOICES)]
            for round_id, choice, job in jobs:
                acknowledged.setdefault(round_id, [])
                try:
                    job.result(timeout=60)
                    acknowledged[round_id].append(CHOICES[choice])
                except AppError as exc:
                    assert "already has a vote" in str(exc), exc

        assert all(len(won) == 1 for won in acknowledged.values()), \
            {k: v for k, v in acknowledged.items() if len(v) != 1}
        store = Store(url)
        try:
            stored = {round_id: store.get_round(round_id).winner for round_id in acknowledged}
            assert stored == {round_id: won[0] for round_id, won in acknowledged.items()}
            assert store.votes_version()[0] == SESSIONS * ROUNDS_EACH
        finally:
            store.close()
    finally:
        for replica in replicas:
            replica.stop()
