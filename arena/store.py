"""The one module that owns the SQLite database (WAL mode).

A round is one row: who fought, with which settings, every turn's answers and
timings, any error, and the vote. Votes are an atomic ``UPDATE ... WHERE winner
IS NULL`` so two clicks (or two API calls) can never record two votes.

Batch runs live in tables of their own (``batch_runs``, ``batch_answers``,
``judge_pairs``, ``judgments``): a batch answer is not a vote and a judge verdict
is not a human's, so neither can reach the ``rounds`` table or the human leaderboard.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id            TEXT PRIMARY KEY,
    tstamp        REAL NOT NULL,             -- unix time the round started
    session       TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('named', 'blind')),
    model_a       TEXT NOT NULL,
    model_b       TEXT NOT NULL,
    model_a_info  TEXT NOT NULL DEFAULT '{}', -- JSON: name, engine, quantization
    model_b_info  TEXT NOT NULL DEFAULT '{}',
    settings      TEXT NOT NULL DEFAULT '{}', -- JSON: temperature, top_p, max_new_tokens, system_prompt
    preset_id     TEXT,
    turns         TEXT NOT NULL DEFAULT '[]', -- JSON list: question, settings, a/b answer with metrics and error
    error         TEXT,                       -- first failed answer of the round, if any
    ttft_a REAL, ttft_b REAL, tps_a REAL, tps_b REAL, -- first-turn TTFT, overall decode tokens/s
    winner        TEXT CHECK (winner IN ('model_a', 'model_b', 'tie', 'tie (bothbad)')),
    vote_tstamp   REAL,
    rated         INTEGER NOT NULL DEFAULT 0, -- 1 = feeds the Bradley-Terry leaderboard
    flag          TEXT,                       -- why a blind vote is not rated (e.g. a model named itself)
    origin        TEXT NOT NULL DEFAULT 'local' -- 'local', or the file a battle was imported from
);
CREATE INDEX IF NOT EXISTS rounds_rating ON rounds (rated, model_a, model_b, winner, ttft_a, ttft_b, tps_a, tps_b);
CREATE INDEX IF NOT EXISTS rounds_votes ON rounds (vote_tstamp) WHERE winner IS NOT NULL;

CREATE TABLE IF NOT EXISTS batch_runs (
    id            TEXT PRIMARY KEY,
    created       REAL NOT NULL,
    finished      REAL,
    status        TEXT NOT NULL,              -- running, interrupted, done, failed
    config        TEXT NOT NULL DEFAULT '{}', -- JSON: models, presets, repeats, settings, judge
    environment   TEXT NOT NULL DEFAULT '{}'  -- JSON: library versions, CPU, threads, models.yaml entries
);
CREATE TABLE IF NOT EXISTS batch_answers (
    key           TEXT PRIMARY KEY,           -- batch.answer_key(run, model, preset, settings hash, seed, repeat)
    run_id        TEXT NOT NULL,
    model         TEXT NOT NULL,
    preset_id     TEXT NOT NULL,
    repeat        INTEGER NOT NULL,
    seed          INTEGER,
    settings_hash TEXT NOT NULL,
    question      TEXT NOT NULL,
    text          TEXT NOT NULL DEFAULT '',
    error         TEXT,
    ttft_s REAL, total_s REAL, output_tokens INTEGER, prompt_tokens INTEGER, tokens_per_s REAL,
    finish_reason TEXT,
    engine        TEXT,
    quantization  TEXT,
    batched       INTEGER NOT NULL DEFAULT 0, -- 1 = decoded together with others: timings under batching
    batch_size    INTEGER,
    created       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS batch_answers_run ON batch_answers (run_id, model, preset_id, repeat);
CREATE TABLE IF NOT EXISTS judge_pairs (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,              -- 'run:<run id>' or 'file:<name>'
    run_id        TEXT,
    preset_id     TEXT,
    repeat        INTEGER,
    language      TEXT NOT NULL DEFAULT 'en',
    question      TEXT NOT NULL,
    reference     TEXT,
    model_a       TEXT NOT NULL,
    model_b       TEXT NOT NULL,
    answer_a      TEXT NOT NULL,
    answer_b      TEXT NOT NULL,
    human_winner  TEXT CHECK (human_winner IN ('model_a', 'model_b', 'tie', 'tie (bothbad)')),
    created       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS judge_pairs_run ON judge_pairs (run_id);
CREATE TABLE IF NOT EXISTS judgments (
    pair_id       TEXT NOT NULL,
    judge         TEXT NOT NULL,              -- model id of the judge
    shown         TEXT NOT NULL CHECK (shown IN ('ab', 'ba')), -- order the answers were shown in
    label         TEXT NOT NULL CHECK (label IN ('A', 'B', 'tie', 'bothbad', 'unparsed')), -- as shown
    rationale     TEXT NOT NULL DEFAULT '',
    reply         TEXT NOT NULL DEFAULT '',   -- the judge's last raw reply
    attempts      INTEGER NOT NULL,
    prompt_version TEXT NOT NULL,
    ttft_s REAL, total_s REAL,
    created       REAL NOT NULL,
    PRIMARY KEY (pair_id, judge, shown)
);
"""

BATCH_RUN_COLUMNS = ("id", "created", "finished", "status", "config", "environment")
BATCH_ANSWER_COLUMNS = ("key", "run_id", "model", "preset_id", "repeat", "seed", "settings_hash", "question", "text",
                        "error", "ttft_s", "total_s", "output_tokens", "prompt_tokens", "tokens_per_s",
                        "finish_reason", "engine", "quantization", "batched", "batch_size", "created")
JUDGE_PAIR_COLUMNS = ("id", "source", "run_id", "preset_id", "repeat", "language", "question", "reference", "model_a",
                      "model_b", "answer_a", "answer_b", "human_winner", "created")
JUDGMENT_COLUMNS = ("pair_id", "judge", "shown", "label", "rationale", "reply", "attempts", "prompt_version",
                    "ttft_s", "total_s", "created")

JSON_COLUMNS = ("model_a_info", "model_b_info", "settings", "turns")


@dataclass
class RoundRecord:
    id: str
    tstamp: float
    session: str
    mode: str
    model_a: str
    model_b: str
    model_a_info: dict = field(default_factory=dict)
    model_b_info: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    preset_id: str | None = None
    turns: list[dict] = field(default_factory=list)
    error: str | None = None
    ttft_a: float | None = None
    ttft_b: float | None = None
    tps_a: float | None = None
    tps_b: float | None = None
    winner: str | None = None
    vote_tstamp: float | None = None
    rated: int = 0
    flag: str | None = None
    origin: str = "local"

    def conversation(self, side: str) -> list[dict]:
        """FastChat-style message list for side 'a' or 'b' (system prompt first, if any)."""
        messages = []
        if system := self.settings.get("system_prompt"):
            messages.append({"role": "system", "content": system})
        for turn in self.turns:
            messages.append({"role": "user", "content": turn["question"]})
            messages.append({"role": "assistant", "content": turn[side]["text"]})
        return messages


COLUMNS = tuple(RoundRecord.__dataclass_fields__)


class Store:
    """Thread-safe access to the arena database; one connection guarded by a lock."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _to_row(record: RoundRecord) -> tuple:
        return tuple(json.dumps(getattr(record, c), ensure_ascii=False) if c in JSON_COLUMNS else getattr(record, c)
                     for c in COLUMNS)

    @staticmethod
    def _from_row(row: tuple) -> RoundRecord:
        values = {c: (json.loads(v) if c in JSON_COLUMNS else v) for c, v in zip(COLUMNS, row)}
        return RoundRecord(**values)

    def save_round(self, record: RoundRecord) -> None:
        """Insert or update everything about a round except its vote."""
        vote_free = [c for c in COLUMNS if c not in ("winner", "vote_tstamp", "rated", "flag")]
        updates = ", ".join(f"{c}=excluded.{c}" for c in vote_free if c != "id")
        with self._transaction() as db:
            db.execute(f"INSERT INTO rounds ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                       f"ON CONFLICT(id) DO UPDATE SET {updates}", self._to_row(record))

    def get_round(self, round_id: str) -> RoundRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM rounds WHERE id=?", (round_id,)).fetchone()
        return self._from_row(row) if row else None

    def record_vote(self, round_id: str, winner: str, tstamp: float, rated: bool, flag: str | None) -> bool:
        """Store the vote unless one exists already; returns whether this call stored it."""
        with self._transaction() as db:
            cur = db.execute("UPDATE rounds SET winner=?, vote_tstamp=?, rated=?, flag=? "
                             "WHERE id=? AND winner IS NULL", (winner, tstamp, int(rated), flag, round_id))
            return cur.rowcount == 1

    def voted_rounds(self) -> list[RoundRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM rounds WHERE winner IS NOT NULL "
                                    f"ORDER BY vote_tstamp").fetchall()
        return [self._from_row(r) for r in rows]

    def existing_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                found.update(r[0] for r in self._db.execute(
                    f"SELECT id FROM rounds WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def insert_voted_rounds(self, records: list[RoundRecord], chunk: int = 2000) -> int:
        """Add imported battles; ids already present are skipped.

        Written ``chunk`` rows per transaction so a live round's save never waits for a whole
        100,000-line import (BENCHMARKS.md). The caller validated every line first; if the process
        dies mid-way, importing the file again adds exactly the missing battles (ids dedupe)."""
        added = 0
        sql = f"INSERT OR IGNORE INTO rounds ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        for start in range(0, len(records), chunk):
            rows = [self._to_row(r) for r in records[start:start + chunk]]
            with self._transaction() as db:
                added += db.executemany(sql, rows).rowcount
        return added

    def speed_samples(self, include_imported: bool = True) -> list[tuple[str, float]]:
        """(model, decode tokens/s) of every side of every rated battle, for medians."""
        local = "" if include_imported else " AND origin='local'"
        with self._lock:
            return self._db.execute(
                f"SELECT model_a, tps_a FROM rounds WHERE rated=1 AND winner IS NOT NULL AND tps_a IS NOT NULL{local} "
                f"UNION ALL SELECT model_b, tps_b FROM rounds WHERE rated=1 AND winner IS NOT NULL "
                f"AND tps_b IS NOT NULL{local}").fetchall()

    def votes_version(self) -> tuple:
        """Changes whenever a vote is stored or imported: the leaderboard's cache key."""
        with self._lock:
            return tuple(self._db.execute(
                "SELECT COUNT(*), MAX(vote_tstamp) FROM rounds WHERE winner IS NOT NULL").fetchone())

    def rating_aggregates(self, kind: str = "rated", include_imported: bool = True) -> list[tuple[Any, ...]]:
        """Voted battles grouped by (model_a, model_b, winner) with counts and metric sums.

        ``kind`` is "rated" (blind, not flagged: the leaderboard) or "named". Grouping
        in SQL over a covering index keeps a million battles well under a second.
        """
        where = {"rated": "rated=1", "named": "rated=0 AND mode='named'"}[kind]
        if not include_imported:
            where += " AND origin='local'"
        with self._lock:
            return self._db.execute(
                "SELECT model_a, model_b, winner, COUNT(*), "
                "SUM(ttft_a), COUNT(ttft_a), SUM(ttft_b), COUNT(ttft_b), "
                "SUM(tps_a), COUNT(tps_a), SUM(tps_b), COUNT(tps_b) "
                f"FROM rounds WHERE {where} AND winner IS NOT NULL GROUP BY model_a, model_b, winner").fetchall()

    # -- batch runs, judge pairs and judgments (never in the rounds table) -------------------------------
    def _insert(self, table: str, columns: tuple[str, ...], rows: list[dict], replace: bool) -> int:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._transaction() as db:
            cur = db.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                                 [tuple(row.get(c) for c in columns) for row in rows])
            return cur.rowcount

    def _select(self, table: str, columns: tuple[str, ...], where: str = "1", args: tuple = (),
                order: str = "rowid") -> list[dict]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE {where} ORDER BY {order}",
                                    args).fetchall()
        return [dict(zip(columns, row)) for row in rows]

    def create_batch_run(self, run_id: str, created: float, config: dict, environment: dict) -> None:
        self._insert("batch_runs", BATCH_RUN_COLUMNS, [{
            "id": run_id, "created": created, "status": "running",
            "config": json.dumps(config, ensure_ascii=False), "environment": json.dumps(environment, ensure_ascii=False)}],
            replace=False)

    def set_batch_run_status(self, run_id: str, status: str, finished: float | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE batch_runs SET status=?, finished=? WHERE id=?", (status, finished, run_id))

    def set_batch_run_environment(self, run_id: str, environment: dict) -> None:
        """Replace a run's environment: measurements taken during the run (a worker's memory) join it."""
        with self._transaction() as db:
            db.execute("UPDATE batch_runs SET environment=? WHERE id=?",
                       (json.dumps(environment, ensure_ascii=False), run_id))

    def batch_run(self, run_id: str) -> dict | None:
        rows = self._select("batch_runs", BATCH_RUN_COLUMNS, "id=?", (run_id,))
        if not rows:
            return None
        row = rows[0]
        return {**row, "config": json.loads(row["config"]), "environment": json.loads(row["environment"])}

    def batch_runs(self) -> list[dict]:
        return [{**r, "config": json.loads(r["config"]), "environment": json.loads(r["environment"])}
                for r in self._select("batch_runs", BATCH_RUN_COLUMNS, order="created")]

    def save_batch_answers(self, answers: list[dict]) -> None:
        """Insert or overwrite answers by key (``--fresh`` overwrites; resume never re-asks a stored one)."""
        self._insert("batch_answers", BATCH_ANSWER_COLUMNS, answers, replace=True)

    def batch_answers(self, run_id: str) -> list[dict]:
        return self._select("batch_answers", BATCH_ANSWER_COLUMNS, "run_id=?", (run_id,),
                            order="model, preset_id, repeat")

    def answered_keys(self, run_id: str) -> set[str]:
        """Keys of the run's answers that succeeded: a failed answer is asked again on resume."""
        with self._lock:
            return {r[0] for r in self._db.execute(
                "SELECT key FROM batch_answers WHERE run_id=? AND error IS NULL", (run_id,))}

    def save_judge_pairs(self, pairs: list[dict]) -> int:
        """Store pairs to judge; a pair already stored (same id) is kept as it was."""
        return self._insert("judge_pairs", JUDGE_PAIR_COLUMNS, pairs, replace=False) if pairs else 0

    def judge_pairs(self, run_id: str | None = None, ids: list[str] | None = None) -> list[dict]:
        if run_id is not None:
            return self._select("judge_pairs", JUDGE_PAIR_COLUMNS, "run_id=?", (run_id,))
        if ids is not None:
            found: list[dict] = []
            for start in range(0, len(ids), 500):
                chunk = tuple(ids[start:start + 500])
                found += self._select("judge_pairs", JUDGE_PAIR_COLUMNS, f"id IN ({', '.join('?' * len(chunk))})",
                                      chunk)
            return found
        return self._select("judge_pairs", JUDGE_PAIR_COLUMNS)

    def save_judgments(self, judgments: list[dict]) -> None:
        self._insert("judgments", JUDGMENT_COLUMNS, judgments, replace=True)

    def judgments_version(self) -> tuple:
        """Changes whenever a judgment is stored or replaced: the judge table's cache key."""
        with self._lock:
            return tuple(self._db.execute("SELECT COUNT(*), MAX(rowid), MAX(created) FROM judgments").fetchone())

    def judgments(self, judge: str | None = None, pair_ids: list[str] | None = None) -> list[dict]:
        where, args = ("judge=?", (judge,)) if judge else ("1", ())
        rows = self._select("judgments", JUDGMENT_COLUMNS, where, args, order="pair_id, shown")
        if pair_ids is not None:
            wanted = set(pair_ids)
            rows = [r for r in rows if r["pair_id"] in wanted]
        return rows
