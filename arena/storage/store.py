"""The one module that owns the database: SQLite (the embedded default, WAL mode) or PostgreSQL
(several arena processes behind a load balancer sharing one database; README "Deployment").

A round is one row: who fought, with which settings, every turn's answers and timings, any error,
and the vote. Votes are an atomic ``UPDATE ... WHERE id=? AND winner IS NULL`` so two clicks, two
API calls or two app processes can never record two votes: the database decides, not a process.

Batch runs live in tables of their own (``batch_runs``, ``batch_answers``, ``judge_pairs``,
``judgments``): a batch answer is not a vote and a judge verdict is not a human's, so neither can
reach the ``rounds`` table or the human leaderboard.

Both backends run the same SQLAlchemy Core statements over one schema (the Table objects below).
The one per-dialect choice is which ``insert`` construct renders ``ON CONFLICT``: SQLite's and
PostgreSQL's take the same arguments (``_INSERTS``). JSON columns are TEXT on both.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import (
    URL,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Executable,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    make_url,
    select,
    union_all,
    update,
)
from sqlalchemy import text as _sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import StaticPool

from arena.core.config import ConfigError
from arena.core.outcomes import WINNER_WORDS, Winner
from arena.core.records import ModelInfo, RoundRecord, Settings, Turn
from arena.core.redact import redact_url

WINNERS = "(" + ", ".join(f"'{w}'" for w in WINNER_WORDS) + ")"
EMPTY_OBJECT, EMPTY_LIST = "'{}'", "'[]'"

metadata = MetaData()


def _real(name: str, *args: Any, **kwargs: Any) -> Column:
    """A float column (REAL in SQLite, double precision in PostgreSQL): timings and unix times."""
    return Column(name, Float, *args, **kwargs)


def _int(name: str, *args: Any, **kwargs: Any) -> Column:
    return Column(name, Integer, *args, **kwargs)


def _text(name: str, *args: Any, default: str | None = None, **kwargs: Any) -> Column:
    """A TEXT column; ``default`` is SQL (a quoted literal), as the schema stores it."""
    if default is not None:
        kwargs["server_default"] = _sql(default)
    return Column(name, Text, *args, **kwargs)


ROUNDS = Table(
    "rounds", metadata,
    _text("id", primary_key=True),
    _real("tstamp", nullable=False),                      # unix time the round started
    _text("session", nullable=False),
    _text("mode", CheckConstraint("mode IN ('named', 'blind')"), nullable=False),
    _text("model_a", nullable=False),
    _text("model_b", nullable=False),
    _text("model_a_info", nullable=False, default=EMPTY_OBJECT),  # JSON: name, engine, quantization
    _text("model_b_info", nullable=False, default=EMPTY_OBJECT),
    _text("settings", nullable=False, default=EMPTY_OBJECT),  # JSON: temperature, top_p, max_new_tokens, system_prompt
    _text("preset_id"),
    _text("turns", nullable=False, default=EMPTY_LIST),    # JSON list: question, settings, a/b answer with metrics
    _text("error"),                                        # first failed answer of the round, if any
    _real("ttft_a"), _real("ttft_b"), _real("tps_a"), _real("tps_b"),  # first-turn TTFT, overall decode tokens/s
    _text("winner", CheckConstraint(f"winner IN {WINNERS}")),
    _real("vote_tstamp"),
    _int("rated", nullable=False, server_default=_sql("0")),  # 1 = feeds the Bradley-Terry leaderboard
    _text("flag"),                                         # why a blind vote is not rated (e.g. a model named itself)
    _text("origin", nullable=False, default="'local'"),    # 'local', or the file a battle was imported from
    _int("hold", nullable=False, server_default=_sql("0")),  # blind: answers shown only once both are finished
    _text("category"),                                     # the preset's category, 'typed', NULL: not yet derived
    _text("language"),                                     # 'zh', 'en' (or an imported file's); NULL: not yet derived
)
Index("rounds_rating", *(ROUNDS.c[c] for c in ("rated", "model_a", "model_b", "winner", "ttft_a", "ttft_b",
                                               "tps_a", "tps_b")))
Index("rounds_votes", ROUNDS.c.vote_tstamp, sqlite_where=ROUNDS.c.winner.is_not(None),
      postgresql_where=ROUNDS.c.winner.is_not(None))

# Style features of a voted round's answers (style.py), computed once when a leaderboard first needs them:
# answer length, headers, list items and bold spans per side, as FastChat's style control uses them.
ROUND_STYLES = Table(
    "round_styles", metadata,
    _text("round_id", primary_key=True),
    _text("version", nullable=False),                      # style.VERSION: a new definition recomputes
    _text("style_a", nullable=False),                      # JSON {length, headers, lists, bold}
    _text("style_b", nullable=False),
)

BATCH_RUNS = Table(
    "batch_runs", metadata,
    _text("id", primary_key=True),
    _real("created", nullable=False),
    _real("finished"),
    _text("status", nullable=False),                       # running, interrupted, done, failed
    _text("config", nullable=False, default=EMPTY_OBJECT),  # JSON: models, presets, repeats, settings, judge
    _text("environment", nullable=False, default=EMPTY_OBJECT),  # JSON: library versions, CPU, threads, models.yaml
)
BATCH_ANSWERS = Table(
    "batch_answers", metadata,
    _text("key", primary_key=True),                        # batch/runner.py answer_key(run, model, preset, settings, seed, repeat)
    _text("run_id", nullable=False),
    _text("model", nullable=False),
    _text("preset_id", nullable=False),
    _int("repeat", nullable=False),
    _int("seed"),
    _text("settings_hash", nullable=False),
    _text("question", nullable=False),
    _text("text", nullable=False, default="''"),
    _text("error"),
    _real("ttft_s"), _real("total_s"), _int("output_tokens"), _int("prompt_tokens"), _real("tokens_per_s"),
    _text("finish_reason"),
    _text("engine"),
    _text("quantization"),
    _int("batched", nullable=False, server_default=_sql("0")),  # 1 = decoded together with others: batched timings
    _int("batch_size"),
    _real("created", nullable=False),
)
Index("batch_answers_run", *(BATCH_ANSWERS.c[c] for c in ("run_id", "model", "preset_id", "repeat")))
JUDGE_PAIRS = Table(
    "judge_pairs", metadata,
    _text("id", primary_key=True),
    _text("source", nullable=False),                       # 'run:<run id>' or 'file:<name>'
    _text("run_id"),
    _text("preset_id"),
    _int("repeat"),
    _text("language", nullable=False, default="'en'"),
    _text("question", nullable=False),
    _text("reference"),
    _text("model_a", nullable=False),
    _text("model_b", nullable=False),
    _text("answer_a", nullable=False),
    _text("answer_b", nullable=False),
    _text("human_winner", CheckConstraint(f"human_winner IN {WINNERS}")),
    _real("created", nullable=False),
)
Index("judge_pairs_run", JUDGE_PAIRS.c.run_id)
JUDGMENTS = Table(
    "judgments", metadata,
    _text("pair_id", primary_key=True),
    _text("judge", primary_key=True),                      # model id of the judge
    _text("shown", CheckConstraint("shown IN ('ab', 'ba')"), primary_key=True),  # order the answers were shown in
    _text("label", CheckConstraint("label IN ('A', 'B', 'tie', 'bothbad', 'unparsed')"), nullable=False),  # as shown
    _text("rationale", nullable=False, default="''"),
    _text("reply", nullable=False, default="''"),          # the judge's last raw reply
    _int("attempts", nullable=False),
    _text("prompt_version", nullable=False),
    _real("ttft_s"), _real("total_s"),
    _real("created", nullable=False),
)

# Grades of single answers (grades.py): by assertions (free, exact) or by a grader model's P(yes) against the
# reference. Keyed by the answer's content (question, reference, text), so one answer is graded once per
# grader, method and prompt version, whichever run or file it came from.
GRADES = Table(
    "grades", metadata,
    _text("id", primary_key=True),                         # digest of grader, method, prompt version, answer digest
    _text("answer_digest", nullable=False),                # grading/grader.py answer_digest(question, reference, text)
    _text("grader", nullable=False),                       # model id, or 'assertions'
    _text("method", CheckConstraint("method IN ('assert', 'reference', 'rubric')"), nullable=False),
    _text("prompt_version", nullable=False),
    _real("probability"),                                  # P(yes); assertions: 1 or 0; NULL: the grader said neither
    _text("details", nullable=False, default=EMPTY_OBJECT),  # JSON: assertion results, or the raw top tokens
    _real("seconds"),
    _real("created", nullable=False),
)
Index("grades_answer", GRADES.c.answer_digest, GRADES.c.grader)
# Pairwise grading by probability, one row per order shown: P(the answer shown first is better).
PAIR_GRADES = Table(
    "pair_grades", metadata,
    _text("pair_id", primary_key=True),
    _text("grader", primary_key=True),
    _text("shown", CheckConstraint("shown IN ('ab', 'ba')"), primary_key=True),
    _text("prompt_version", primary_key=True),
    _real("p_first"),                                      # NULL: neither A nor B among the top tokens
    _text("details", nullable=False, default=EMPTY_OBJECT),  # JSON: the raw top tokens
    _real("created", nullable=False),
)
# What a grader concluded about a pair, with the margin it was concluded with: the judge's leaderboard and
# the reports read these (recomputable from grades, pair_grades or judgments and the margin).
PAIR_VERDICTS = Table(
    "pair_verdicts", metadata,
    _text("pair_id", primary_key=True),
    _text("grader", primary_key=True),
    _text("method", primary_key=True),                     # auto, assert, reference, pairwise, generate
    _text("winner", CheckConstraint(f"winner IN {WINNERS}")),  # NULL: abstained or ungraded
    _real("margin"),
    _text("basis", nullable=False, default="''"),         # e.g. 'assertions', 'P(yes) 0.91 vs 0.12'
    _real("created", nullable=False),
)
# A person's correction of a graded batch answer (the Batch tab's review): the answer with what it was held
# against, the label, and the grade it corrects. One row per answer digest: a second review replaces the first.
# python -m arena grader-check measures the graders against these.
ANSWER_LABELS = Table(
    "answer_labels", metadata,
    _text("answer_digest", primary_key=True),              # grading/grader.py answer_digest(question, reference, text)
    _text("run_id", nullable=False),
    _text("answer_key", nullable=False),                   # batch_answers.key
    _text("model", nullable=False),
    _text("preset_id", nullable=False),
    _text("language", nullable=False),
    _text("question", nullable=False),
    _text("reference", nullable=False),
    _text("answer", nullable=False),
    _text("label", CheckConstraint("label IN ('correct', 'partly correct', 'wrong')"), nullable=False),
    _text("grader"),                                       # who graded it: a model id, 'assertions', 'reference-check'
    _real("grade"),                                        # the grade it had: P(yes), or 1/0 for a rule; NULL: none
    _real("created", nullable=False),
)
# A grader model's pass threshold and pair margin fitted to a person's own labels in one language (python -m
# arena grader-check, once there are grading/calibration.py MIN_OWN_LABELS of them), with what they rest on. Batch
# runs graded by the grader copy it into their config; a newer fit replaces the row, never a run's copy.
GRADER_CALIBRATIONS = Table(
    "grader_calibrations", metadata,
    _text("grader", primary_key=True),
    _text("language", primary_key=True),
    _real("threshold", nullable=False),
    _real("margin", nullable=False),
    _int("labels", nullable=False),
    _int("positives", nullable=False),
    _int("questions", nullable=False),
    _real("auc"), _real("auc_low"), _real("auc_high"),     # NULL: not measurable (labels all of one class)
    _real("kappa"), _real("accuracy"),                    # cross-validated (calibration.cross_validated)
    _text("refused"),                                      # why it may not decide pass/fail (grades.Measured); NULL: it may
    _text("sources", nullable=False),                      # where the labels came from
    _real("created", nullable=False),
)

# What a model's quantization costs against its full-precision reference (python -m arena quality): one row
# per (model, reference, text, tokens), replaced by the latest measurement. The reference has a row of its own
# (figures NULL) with its perplexity, speed and memory.
QUALITY_RESULTS = Table(
    "quality_results", metadata,
    _text("id", primary_key=True),                         # quality/run.py result_id(model, reference, text, tokens)
    _text("model", nullable=False),
    _text("reference", nullable=False),
    _text("text_digest", nullable=False),
    _int("tokens", nullable=False),
    _text("engine", nullable=False),
    _text("recipe", nullable=False, default=EMPTY_OBJECT),    # JSON: the entry's quantization text and settings
    _text("versions", nullable=False, default=EMPTY_OBJECT),  # JSON: the worker's engine libraries
    _text("figures"),                                      # JSON: quality.Figures; NULL for the reference itself
    _real("ppl"),
    _int("approximate", nullable=False, server_default=_sql("0")),  # 1 = from a server's top-k log-probabilities
    _real("decode_tps"), _real("rss_mb"), _real("peak_rss_mb"), _real("score_s"), _real("load_s"),
    _real("created", nullable=False),
)

BATCH_RUN_COLUMNS = tuple(BATCH_RUNS.c.keys())
BATCH_ANSWER_COLUMNS = tuple(BATCH_ANSWERS.c.keys())
JUDGE_PAIR_COLUMNS = tuple(JUDGE_PAIRS.c.keys())
JUDGMENT_COLUMNS = tuple(JUDGMENTS.c.keys())

VOTE_COLUMNS = ("winner", "vote_tstamp", "rated", "flag")  # written by record_vote only

# The atomic one-vote rule: the row changes only while it has no winner (rowcount 1 = this call voted).
# Under PostgreSQL's READ COMMITTED a second, concurrent UPDATE waits for the first to commit and then
# re-checks ``winner IS NULL`` on the new row version, so it changes nothing: exactly one vote either way.
VOTE = update(ROUNDS).where(ROUNDS.c.id == bindparam("round_id"), ROUNDS.c.winner.is_(None))

_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}  # same ON CONFLICT API on both
SCHEMA_LOCK = 7_0707  # pg_advisory_xact_lock key: replicas starting together create the schema once
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _add_missing_columns(conn: Connection) -> None:
    """A database made by an earlier version gets the columns added since (``ALTER TABLE … ADD COLUMN``
    with the column's default), so upgrading never needs a manual step and keeps every stored row."""
    have = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in metadata.tables}
    quote = conn.dialect.identifier_preparer.quote
    for table in metadata.sorted_tables:
        for column in table.columns:
            if column.name in have[table.name]:
                continue
            ddl = f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {column.type.compile(conn.dialect)}"
            if column.server_default is not None:
                ddl += f" DEFAULT {column.server_default.arg.text}" + ("" if column.nullable else " NOT NULL")
            conn.exec_driver_sql(ddl)


class StoreUnavailable(ConfigError):
    """The database named by --database cannot be opened: a start-up error, said in one line."""


COLUMNS = tuple(f.name for f in fields(RoundRecord))
assert COLUMNS == tuple(ROUNDS.c.keys()), "RoundRecord fields and the rounds table must list the same columns"


def database_url(target: Path | str | URL) -> URL:
    """What ``--database`` (or the default ``<data dir>/arena.db``) names, as the URL to open.

    A plain path or ``sqlite:///path`` is a SQLite file (its folder is created); ``postgresql://``
    (or ``postgres://``) means psycopg 3, the driver requirements.txt installs, rather than
    SQLAlchemy's psycopg2 default."""
    if isinstance(target, URL):
        return target
    text = str(target)
    if "://" not in text:
        return URL.create("sqlite", database=str(_with_folder(Path(text).expanduser())))
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        # Neither the value nor SQLAlchemy's message (which repeats it) may echo a password.
        raise StoreUnavailable(f"--database {redact_url(text)!r} is not a database URL: "
                               f"{redact_url(str(exc)).replace(text, redact_url(text))}") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and url.database:
        return url.set(database=str(_with_folder(Path(url.database).expanduser())))
    raise StoreUnavailable(f"--database {url.render_as_string(hide_password=True)}: use a SQLite file path "
                           f"(the default is <data dir>/arena.db) or postgresql://user@host/database")


def _with_folder(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _sqlite_engine(url: URL) -> Engine:
    """SQLite with the driver in autocommit: Store says BEGIN IMMEDIATE itself for writes (the write
    lock is taken up front, so two processes never deadlock upgrading a read), and a read is one
    statement, as the store always did. A new database file is made readable by its owner only: it holds
    every conversation (SQLite gives its -wal and -shm files the database's permissions)."""
    if url.database and url.database != ":memory:":
        _private_file(Path(url.database))
    engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        for pragma in SQLITE_PRAGMAS:
            dbapi_connection.execute(pragma)

    return engine


def _private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 if it does not exist yet (an existing file keeps the mode its owner gave)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def _postgresql_engine(url: URL) -> Engine:
    """A small pool per process: each thread gets its own connection, PostgreSQL does the locking.
    pre_ping replaces a connection the server dropped (a restart) instead of failing a vote with it."""
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True,
                         connect_args={"connect_timeout": 10, "application_name": "llm-arena"})


class Store:
    """Thread-safe access to the arena database. Every method blocks: callers on the event loop use
    ``asyncio.to_thread``."""

    def __init__(self, target: Path | str | URL):
        self.url = database_url(target)
        self.dialect = self.url.get_backend_name()
        sqlite_file = self.dialect == "sqlite"
        self._engine = _sqlite_engine(self.url) if sqlite_file else _postgresql_engine(self.url)
        # SQLite: one connection for the store's life, used under a lock, as the store always did:
        # writes are serial in SQLite anyway, threads then queue in Python instead of spinning in
        # SQLite's busy handler, and no pool round trip per vote (BENCHMARKS.md section 8).
        # PostgreSQL: a connection from the pool per call; the server does the locking.
        self._sqlite = self._engine.connect() if sqlite_file else None
        self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self._lock: AbstractContextManager = threading.Lock() if sqlite_file else nullcontext()
        self._insert = _INSERTS[self.dialect]
        try:
            self._create_schema()
        except OperationalError as exc:
            self._engine.dispose()
            raise StoreUnavailable(f"cannot open the database {self.describe()}: {str(exc.orig).strip()}") from None
        upsert = self._insert(ROUNDS)
        self._save_round = upsert.on_conflict_do_update(
            index_elements=[ROUNDS.c.id],
            set_={c: upsert.excluded[c] for c in COLUMNS if c != "id" and c not in VOTE_COLUMNS})

    def describe(self) -> str:
        """The database's URL without its password: for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    def _create_schema(self) -> None:
        """CREATE TABLE/INDEX IF NOT EXISTS, in one transaction. On PostgreSQL an advisory lock makes
        replicas that start at once take turns (two concurrent CREATE TABLEs of one name collide)."""
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
            metadata.create_all(conn)
            _add_missing_columns(conn)

    def close(self) -> None:
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
            self._engine.dispose()

    def _connection(self, autocommit: bool = False) -> AbstractContextManager[Connection]:
        if self._sqlite is not None:  # its driver is in autocommit already
            return nullcontext(self._sqlite)
        return (self._autocommit if autocommit else self._engine).connect()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction: committed on exit, rolled back on an exception."""
        with self._lock, self._connection() as conn, conn.begin():
            if self._sqlite is not None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def _write_one(self, statement: Executable, params: dict[str, Any]) -> int:
        """One statement that is atomic on its own (a vote, a round's upsert), run without BEGIN and
        COMMIT: on PostgreSQL that is one round trip instead of three, on SQLite one statement
        fewer (BENCHMARKS.md section 8). Returns the rows it changed."""
        with self._lock, self._connection(autocommit=True) as conn:
            # The driver is in autocommit, so commit/rollback here only end SQLAlchemy's implicit
            # transaction (the SQLite connection is reused: it must be left clean even after an error).
            try:
                changed = conn.execute(statement, params).rowcount
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        return changed

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._lock, self._connection() as conn:
            try:
                yield conn
            finally:
                conn.rollback()  # ends the implicit transaction of a read: the next begin() starts clean

    @staticmethod
    def _to_row(record: RoundRecord) -> dict[str, Any]:
        """The database edge: the typed record as column values (JSON text for the nested parts)."""
        row = {c: getattr(record, c) for c in COLUMNS}
        row.update(model_a_info=_json(record.model_a_info.to_json()), model_b_info=_json(record.model_b_info.to_json()),
                   settings=_json(record.settings.to_json()), turns=_json([t.to_json() for t in record.turns]),
                   winner=record.winner.value if record.winner else None, rated=int(record.rated),
                   hold=int(record.hold))
        return row

    @staticmethod
    def _from_row(row) -> RoundRecord:
        values = dict(zip(COLUMNS, row))
        return RoundRecord(**{
            **values, "model_a_info": ModelInfo.from_json(json.loads(values["model_a_info"]), values["model_a"]),
            "model_b_info": ModelInfo.from_json(json.loads(values["model_b_info"]), values["model_b"]),
            "settings": Settings.from_json(json.loads(values["settings"])),
            "turns": tuple(Turn.from_json(t) for t in json.loads(values["turns"])),
            "winner": Winner(values["winner"]) if values["winner"] else None, "rated": bool(values["rated"]),
            "hold": bool(values["hold"])})

    def save_round(self, record: RoundRecord) -> None:
        """Insert or update everything about a round except its vote."""
        self._write_one(self._save_round, self._to_row(record))

    def get_round(self, round_id: str) -> RoundRecord | None:
        with self._read() as conn:
            row = conn.execute(select(ROUNDS).where(ROUNDS.c.id == round_id)).first()
        return self._from_row(row) if row else None

    def record_vote(self, round_id: str, winner: Winner, tstamp: float, rated: bool, flag: str | None) -> bool:
        """Store the vote unless one exists already; returns whether this call stored it."""
        word = winner.value if isinstance(winner, Winner) else winner  # anything else: the CHECK constraint decides
        return self._write_one(VOTE, {"round_id": round_id, "winner": word, "vote_tstamp": tstamp,
                                      "rated": int(rated), "flag": flag}) == 1

    def voted_rounds(self) -> list[RoundRecord]:
        with self._read() as conn:
            rows = conn.execute(select(ROUNDS).where(ROUNDS.c.winner.is_not(None))
                                .order_by(ROUNDS.c.vote_tstamp)).all()
        return [self._from_row(r) for r in rows]

    def existing_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        with self._read() as conn:
            for start in range(0, len(ids), 500):
                found.update(conn.scalars(select(ROUNDS.c.id).where(ROUNDS.c.id.in_(ids[start:start + 500]))))
        return found

    def insert_voted_rounds(self, records: list[RoundRecord], chunk: int = 2000) -> int:
        """Add imported battles; ids already present are skipped.

        Written ``chunk`` rows per transaction so a live round's save never waits for a whole
        100,000-line import (BENCHMARKS.md). The caller validated every line first; if the process
        dies mid-way, importing the file again adds exactly the missing battles (ids dedupe)."""
        return self.insert_round_rows([self._to_row(r) for r in records], chunk)

    def insert_round_rows(self, rows: list[dict[str, Any]], chunk: int = 2000) -> int:
        """``insert_voted_rounds`` for rows already in ``_to_row`` form (benchmarks fill millions)."""
        return sum(self._put(ROUNDS, rows[start:start + chunk], replace=False) for start in range(0, len(rows), chunk))

    def speed_samples(self, include_imported: bool = True) -> list[tuple[str, float]]:
        """(model, decode tokens/s) of every side of every rated battle, for medians."""
        sides = [select(ROUNDS.c[f"model_{s}"], ROUNDS.c[f"tps_{s}"])
                 .where(*self._rated_votes("rated", include_imported), ROUNDS.c[f"tps_{s}"].is_not(None))
                 for s in "ab"]
        with self._read() as conn:
            return [tuple(r) for r in conn.execute(union_all(*sides))]

    def votes_version(self) -> tuple:
        """Changes whenever a vote is stored or imported: the leaderboard's cache key. Read from the
        database each time, so a vote taken by another replica changes it too."""
        with self._read() as conn:
            return tuple(conn.execute(select(func.count(), func.max(ROUNDS.c.vote_tstamp))
                                      .where(ROUNDS.c.winner.is_not(None))).one())

    @staticmethod
    def _rated_votes(kind: str, include_imported: bool, category: str | None = None,
                     language: str | None = None) -> list:
        """WHERE terms: voted battles of one ``kind``, "rated" (blind, not flagged) or "named", optionally of
        one category and one language."""
        terms = [ROUNDS.c.winner.is_not(None)]
        terms += [ROUNDS.c.rated == 1] if kind == "rated" else [ROUNDS.c.rated == 0, ROUNDS.c.mode == "named"]
        terms += [ROUNDS.c.category == category] if category else []
        terms += [ROUNDS.c.language == language] if language else []
        return terms if include_imported else [*terms, ROUNDS.c.origin == "local"]

    def rating_aggregates(self, kind: str = "rated", include_imported: bool = True, category: str | None = None,
                          language: str | None = None) -> list[tuple[Any, ...]]:
        """Voted battles grouped by (model_a, model_b, winner) with counts and metric sums.

        ``kind`` is "rated" (blind, not flagged: the leaderboard) or "named". Grouping
        in SQL over a covering index keeps a million battles well under a second.
        """
        if kind not in ("rated", "named"):
            raise KeyError(kind)
        c = ROUNDS.c
        metrics = [f(c[m]) for m in ("ttft_a", "ttft_b", "tps_a", "tps_b") for f in (func.sum, func.count)]
        query = (select(c.model_a, c.model_b, c.winner, func.count(), *metrics)
                 .where(*self._rated_votes(kind, include_imported, category, language))
                 .group_by(c.model_a, c.model_b, c.winner))
        with self._read() as conn:
            return [tuple(r) for r in conn.execute(query)]

    def topics(self) -> list[tuple[str | None, str | None, int]]:
        """(category, language, voted battles) present in the database: the leaderboard's choices."""
        c = ROUNDS.c
        with self._read() as conn:
            return [tuple(r) for r in conn.execute(select(c.category, c.language, func.count())
                                                   .where(c.winner.is_not(None)).group_by(c.category, c.language))]

    def rounds_without_topic(self, limit: int = 5000) -> list[tuple[str, str | None, str]]:
        """(id, preset_id, turns JSON) of rounds stored before categories and languages were (backfill)."""
        c = ROUNDS.c
        with self._read() as conn:
            return [tuple(r) for r in conn.execute(select(c.id, c.preset_id, c.turns)
                                                   .where(c.language.is_(None)).limit(limit))]

    def set_topics(self, rows: list[tuple[str, str, str]]) -> None:
        """Store (id, category, language) of rounds derived after the fact."""
        stmt = update(ROUNDS).where(ROUNDS.c.id == bindparam("rid")).values(category=bindparam("cat"),
                                                                             language=bindparam("lang"))
        with self._write() as conn:
            conn.execute(stmt, [{"rid": i, "cat": c, "lang": lang} for i, c, lang in rows])

    def battle_model_ids(self) -> set[str]:
        """Every model id that took part in a voted battle (retired or gone from the catalog included)."""
        c = ROUNDS.c
        with self._read() as conn:
            voted = c.winner.is_not(None)
            return set(conn.scalars(select(c.model_a).where(voted).distinct())) | \
                set(conn.scalars(select(c.model_b).where(voted).distinct()))

    def rated_battles(self, include_imported: bool = True, category: str | None = None,
                      language: str | None = None) -> list[dict]:
        """One row per rated battle (not grouped): id, models, winner and the stored style of both answers
        (None where not computed yet), for the style-controlled fit."""
        c, s = ROUNDS.c, ROUND_STYLES.c
        query = (select(c.id, c.model_a, c.model_b, c.winner, s.version, s.style_a, s.style_b)
                 .join_from(ROUNDS, ROUND_STYLES, s.round_id == c.id, isouter=True)
                 .where(*self._rated_votes("rated", include_imported, category, language)).order_by(c.id))
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            for side in ("style_a", "style_b"):
                row[side] = json.loads(row[side]) if row[side] else None
        return rows

    def answer_texts(self, round_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Each round's answers, turn by turn, as (text A, text B)."""
        out: dict[str, list[tuple[str, str]]] = {}
        with self._read() as conn:
            for start in range(0, len(round_ids), 500):
                for rid, turns in conn.execute(select(ROUNDS.c.id, ROUNDS.c.turns)
                                               .where(ROUNDS.c.id.in_(round_ids[start:start + 500]))):
                    out[rid] = [(t["a"].get("text") or "", t["b"].get("text") or "") for t in json.loads(turns)]
        return out

    def save_styles(self, rows: list[dict]) -> None:
        self._put(ROUND_STYLES, [{**r, "style_a": _json(r["style_a"]), "style_b": _json(r["style_b"])} for r in rows],
                  replace=True)

    # -- batch runs, judge pairs and judgments (never in the rounds table) -------------------------------
    def _put(self, table: Table, rows: list[dict], replace: bool) -> int:
        """Insert rows; on a primary-key clash overwrite the stored row (``replace``) or keep it.
        Returns how many rows were written: counted from RETURNING, because psycopg reports no
        rowcount for a batch of statements."""
        if not rows:
            return 0
        keys = [c.name for c in table.primary_key]
        stmt = self._insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c.name: stmt.excluded[c.name] for c in table.c
                                                                     if not c.primary_key}) \
            if replace else stmt.on_conflict_do_nothing(index_elements=keys)
        columns = table.c.keys()
        every = set(columns)  # rows from _to_row have every column: passed as they are (imports of 100,000)
        params = [row if row.keys() == every else {c: row.get(c) for c in columns} for row in rows]
        with self._write() as conn:
            return len(conn.execute(stmt.returning(*table.primary_key), params).all())

    def _select(self, table: Table, *where, order: tuple = ()) -> list[dict]:
        """Rows as dicts; by default in the order they were created (ties by primary key)."""
        order = order or (table.c.created, *table.primary_key)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(select(table).where(*where).order_by(*order))]

    def create_batch_run(self, run_id: str, created: float, config: dict, environment: dict) -> None:
        self._put(BATCH_RUNS, [{
            "id": run_id, "created": created, "status": "running",
            "config": json.dumps(config, ensure_ascii=False), "environment": json.dumps(environment, ensure_ascii=False)}],
            replace=False)

    def _update_run(self, run_id: str, **values: Any) -> None:
        with self._write() as conn:
            conn.execute(update(BATCH_RUNS).where(BATCH_RUNS.c.id == run_id).values(**values))

    def set_batch_run_status(self, run_id: str, status: str, finished: float | None = None) -> None:
        self._update_run(run_id, status=status, finished=finished)

    def set_batch_run_environment(self, run_id: str, environment: dict) -> None:
        """Replace a run's environment: measurements taken during the run (a worker's memory) join it."""
        self._update_run(run_id, environment=json.dumps(environment, ensure_ascii=False))

    @staticmethod
    def _decoded_run(row: dict) -> dict:
        return {**row, "config": json.loads(row["config"]), "environment": json.loads(row["environment"])}

    def batch_run(self, run_id: str) -> dict | None:
        rows = self._select(BATCH_RUNS, BATCH_RUNS.c.id == run_id)
        return self._decoded_run(rows[0]) if rows else None

    def batch_runs(self) -> list[dict]:
        return [self._decoded_run(r) for r in self._select(BATCH_RUNS)]

    def save_answer_label(self, row: dict) -> None:
        """Store a person's label of a batch answer, replacing an earlier label of the same answer."""
        self._put(ANSWER_LABELS, [row], replace=True)

    def answer_labels(self, run_id: str | None = None) -> list[dict]:
        """Stored labels, of one run if given, oldest first."""
        return self._select(ANSWER_LABELS, *([ANSWER_LABELS.c.run_id == run_id] if run_id else []))

    def save_calibrations(self, rows: list[dict]) -> None:
        """Store fitted calibrations, replacing the grader's earlier fit in the same language."""
        self._put(GRADER_CALIBRATIONS, rows, replace=True)

    def calibrations(self, grader: str) -> dict[str, dict]:
        """The grader's stored calibrations by language."""
        return {r["language"]: r for r in self._select(GRADER_CALIBRATIONS, GRADER_CALIBRATIONS.c.grader == grader)}

    def save_batch_answers(self, answers: list[dict]) -> None:
        """Insert or overwrite answers by key (``--fresh`` overwrites; resume never re-asks a stored one)."""
        self._put(BATCH_ANSWERS, answers, replace=True)

    def batch_answers(self, run_id: str) -> list[dict]:
        """The run's answers, one per (model, preset, repeat): the newest where an older key left two (runs
        resumed after a models.yaml edit that, before, changed the key of answers it did not change)."""
        c = BATCH_ANSWERS.c
        rows = self._select(BATCH_ANSWERS, c.run_id == run_id, order=(c.model, c.preset_id, c.repeat, c.created))
        return list({(r["model"], r["preset_id"], r["repeat"]): r for r in rows}.values())

    def answered_keys(self, run_id: str) -> set[str]:
        """Keys of the run's answers that succeeded: a failed answer is asked again on resume."""
        c = BATCH_ANSWERS.c
        with self._read() as conn:
            return set(conn.scalars(select(c.key).where(c.run_id == run_id, c.error.is_(None))))

    def save_judge_pairs(self, pairs: list[dict]) -> int:
        """Store pairs to judge; a pair already stored (same id) is kept as it was."""
        return self._put(JUDGE_PAIRS, pairs, replace=False)

    def judge_pairs(self, run_id: str | None = None, ids: list[str] | None = None,
                    human_only: bool = False) -> list[dict]:
        """Pairs of one run, of some ids, with a human vote (``human_only``), or all of them."""
        if human_only:
            return self._select(JUDGE_PAIRS, JUDGE_PAIRS.c.human_winner.is_not(None))
        if run_id is not None:
            return self._select(JUDGE_PAIRS, JUDGE_PAIRS.c.run_id == run_id)
        if ids is not None:
            found: list[dict] = []
            for start in range(0, len(ids), 500):
                found += self._select(JUDGE_PAIRS, JUDGE_PAIRS.c.id.in_(ids[start:start + 500]))
            return found
        return self._select(JUDGE_PAIRS)

    def save_judgments(self, judgments: list[dict]) -> None:
        self._put(JUDGMENTS, judgments, replace=True)

    def judgments_version(self) -> tuple:
        """Changes whenever a judgment is stored or replaced (a replacement gets a new ``created``):
        the judge table's cache key, read from the database so another replica's judgments count."""
        created = JUDGMENTS.c.created
        with self._read() as conn:
            return tuple(conn.execute(select(func.count(), func.max(created), func.sum(created))).one())

    def judgments(self, judge: str | None = None, pair_ids: list[str] | None = None) -> list[dict]:
        """Stored judgments, of one judge and of some pairs if given, filtered by the database."""
        c = JUDGMENTS.c
        where = [c.judge == judge] if judge else []
        order = (c.pair_id, c.shown)
        if pair_ids is None:
            return self._select(JUDGMENTS, *where, order=order)
        rows: list[dict] = []
        for start in range(0, len(pair_ids), 500):
            rows += self._select(JUDGMENTS, *where, c.pair_id.in_(pair_ids[start:start + 500]), order=order)
        return sorted(rows, key=lambda r: (r["pair_id"], r["shown"]))

    # -- grades ------------------------------------------------------------------------------------------
    def save_grades(self, rows: list[dict]) -> None:
        self._put(GRADES, rows, replace=True)

    def grades(self, digests: list[str], grader: str | None = None) -> list[dict]:
        """Stored grades of these answers (by answer digest), of one grader if given; details decoded."""
        c = GRADES.c
        rows: list[dict] = []
        for start in range(0, len(digests), 500):
            rows += self._select(GRADES, c.answer_digest.in_(digests[start:start + 500]),
                                 *([c.grader == grader] if grader else []))
        return [{**r, "details": json.loads(r["details"])} for r in rows]

    def save_pair_grades(self, rows: list[dict]) -> None:
        self._put(PAIR_GRADES, rows, replace=True)

    def pair_grades(self, pair_ids: list[str], grader: str) -> list[dict]:
        c = PAIR_GRADES.c
        rows: list[dict] = []
        for start in range(0, len(pair_ids), 500):
            rows += self._select(PAIR_GRADES, c.pair_id.in_(pair_ids[start:start + 500]), c.grader == grader,
                                 order=(c.pair_id, c.shown))
        return [{**r, "details": json.loads(r["details"])} for r in rows]

    def save_pair_verdicts(self, rows: list[dict]) -> None:
        self._put(PAIR_VERDICTS, rows, replace=True)

    def pair_verdicts(self, pair_ids: list[str] | None = None, grader: str | None = None) -> list[dict]:
        c = PAIR_VERDICTS.c
        where = [c.grader == grader] if grader else []
        if pair_ids is None:
            return self._select(PAIR_VERDICTS, *where)
        rows: list[dict] = []
        for start in range(0, len(pair_ids), 500):
            rows += self._select(PAIR_VERDICTS, c.pair_id.in_(pair_ids[start:start + 500]), *where)
        return rows

    def verdict_matchups(self, grader: str | None = None) -> list[dict]:
        """(pair_id, model_a, model_b, grader, method, winner) of every stored pair verdict, joined in the
        database: the judge's leaderboard, without the answer texts."""
        v, p = PAIR_VERDICTS.c, JUDGE_PAIRS.c
        query = select(v.pair_id, p.model_a, p.model_b, v.grader, v.method, v.winner) \
            .join_from(PAIR_VERDICTS, JUDGE_PAIRS, v.pair_id == p.id).order_by(v.pair_id)
        if grader:
            query = query.where(v.grader == grader)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def grading_version(self) -> tuple:
        """Changes whenever a verdict or grade is stored or replaced: the judge table's cache key."""
        with self._read() as conn:
            verdicts = conn.execute(select(func.count(), func.max(PAIR_VERDICTS.c.created))).one()
            grades = conn.execute(select(func.count(), func.max(GRADES.c.created))).one()
        return (*verdicts, *grades)

    def judged_matchups(self, judge: str | None = None) -> list[dict]:
        """(pair_id, model_a, model_b, judge, shown, label) of every stored judgment, joined in the database:
        what the judge's leaderboard needs, without loading the answer texts of every pair."""
        j, p = JUDGMENTS.c, JUDGE_PAIRS.c
        query = select(j.pair_id, p.model_a, p.model_b, j.judge, j.shown, j.label) \
            .join_from(JUDGMENTS, JUDGE_PAIRS, j.pair_id == p.id).order_by(j.pair_id, j.shown)
        if judge:
            query = query.where(j.judge == judge)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def save_quality_result(self, row: dict) -> None:
        encoded = {**row, **{k: None if row.get(k) is None else _json(row[k]) for k in ("recipe", "versions", "figures")}}
        self._put(QUALITY_RESULTS, [encoded], replace=True)

    def quality_results(self) -> list[dict]:
        """Every stored quality measurement, newest first, JSON decoded."""
        rows = self._select(QUALITY_RESULTS, order=(QUALITY_RESULTS.c.created.desc(),))
        return [{**r, **{k: None if r[k] is None else json.loads(r[k]) for k in ("recipe", "versions", "figures")}}
                for r in rows]


def add_database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", default=os.environ.get("ARENA_DATABASE"), metavar="URL",
                        help="where votes, rounds and batch runs are stored: postgresql://user@host/db for several "
                             "app processes on one database, or a SQLite file path "
                             "(default: $ARENA_DATABASE, else <data dir>/arena.db)")


def open_store(args: argparse.Namespace) -> Store:
    """The store every command uses: --database if given, else the SQLite file in --data-dir
    (where it always was, so existing data dirs keep working)."""
    return Store(args.database or Path(args.data_dir) / "arena.db")
