"""The page's Batch tab without the browser: start ONE batch run at a time in a background
thread of the app process (so it keeps going when the browser closes), and report its progress,
run id and report path. The Gradio layer (web/batch_panel.py) only calls these methods.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from arena.batch import report, review
from arena.batch.runner import BatchError, BatchRunner, BatchSettings, Plan, Progress
from arena.core.config import Prompt
from arena.ratings import leaderboard
from arena.serving.supervisor import Supervisor
from arena.storage.store import Store

log = logging.getLogger(__name__)
DEFAULT_JUDGE = "default"  # the ready local model with the most parameters
NO_JUDGE = "none"


class BatchService:
    """One batch at a time; thread-safe; every method returns at once."""

    def __init__(self, supervisor: Supervisor, store: Store, prompts: list[Prompt], report_dir: Path,
                 settings: BatchSettings = BatchSettings()):
        self.supervisor, self.store, self.prompts = supervisor, store, prompts
        self.report_dir = Path(report_dir)
        self.settings = settings
        self.runner = BatchRunner(supervisor, store, prompts)
        self._judge_table = leaderboard.CachedJudgeTable(store)
        self._rates = leaderboard.Memo()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = {"state": "idle", "run_id": None, "done": 0, "total": 0, "phase": "", "started": None,
                       "eta_s": None, "report": None, "markdown": None, "error": None}

    # -- choices for the tab ------------------------------------------------------------------------
    def list_models(self) -> list[tuple[str, str]]:
        """(label, id) for every catalog model; the label carries its state so a user sees why one is missing."""
        return [(f"{s.name} ({s.describe()})" if s.state != "ready" else s.name, s.id) for s in self.supervisor.statuses()]

    def ready_models(self) -> list[str]:
        return self.supervisor.ready_ids()

    def list_presets(self) -> list[tuple[str, str]]:
        """(label, id) for every preset, grouped by category in prompts.yaml order."""
        return [(f"{p.category} · {p.id}: {p.question[:40]}{'…' if len(p.question) > 40 else ''}", p.id)
                for p in self.prompts]

    def list_judges(self) -> list[tuple[str, str]]:
        return [("strongest ready local model (default)", DEFAULT_JUDGE), ("no judge", NO_JUDGE)] + \
            [(s.name, s.id) for s in self.supervisor.statuses() if s.state == "ready"]

    # -- running --------------------------------------------------------------------------------------
    def start(self, models: list[str], presets: list[str], repeats: int = 1, judge: str = DEFAULT_JUDGE,
              max_new_tokens: int | None = None) -> str:
        """Validate and start a run in the background; returns its id. BatchError (with the reason)
        when one is already running or the selection is unusable: nothing starts then."""
        if not models:
            raise BatchError("pick at least one model")
        if not presets:
            raise BatchError("pick at least one preset")
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise BatchError(f"batch run {self._state['run_id']} is still running "
                                 f"({self._state['done']}/{self._state['total']}); one batch at a time")
            settings = replace(self.settings, repeats=int(repeats),
                               max_new_tokens=int(max_new_tokens or self.settings.max_new_tokens))
            plan = self.runner.plan(models, presets, None, settings,
                                    None if judge in (None, "", DEFAULT_JUDGE) else judge)
            self._stop = threading.Event()
            self._state = {"state": "running", "run_id": plan.run_id, "done": 0, "total": 0, "phase": "starting",
                           "started": time.time(), "eta_s": None, "report": None, "markdown": None, "error": None}
            self._thread = threading.Thread(target=self._run, args=(plan,), daemon=True, name="batch-run")
            self._thread.start()
        return plan.run_id

    def _run(self, plan: Plan) -> None:
        def on_progress(p: Progress) -> None:
            with self._lock:
                self._state.update(done=p.done, total=p.total, phase=p.phase, eta_s=p.eta_s)

        try:
            status = self.runner.run(plan, on_progress, self._stop)
            html_path, md_path = report.write_report(self.store, plan.run_id, self.report_dir)
            with self._lock:
                self._state.update(state=status, report=str(html_path), markdown=str(md_path), eta_s=0.0)
        except Exception as exc:  # shown on the tab; the run's stored answers stay for --resume
            log.exception("batch run %s failed", plan.run_id)  # the tab shows one line; the log keeps the traceback
            with self._lock:
                self._state.update(state="failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Stop after the current group of questions; the run can be resumed (``--resume RUN_ID``)."""
        self._stop.set()

    def progress(self) -> dict:
        with self._lock:
            return dict(self._state)

    def wait(self, timeout: float) -> dict:
        """Block until the current run ends (tests, scripts)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.progress()

    # -- reviewing grades --------------------------------------------------------------------------------
    def review_runs(self) -> list[tuple[str, str]]:
        """(label, run id) of every stored run, newest first, for the review's run list."""
        runs = sorted(self.store.batch_runs(), key=lambda r: r["created"], reverse=True)
        return [(f"{r['id']} · {', '.join(r['config'].get('models') or [])} · {r['status']}", r["id"]) for r in runs]

    def review_items(self, run_id: str) -> list[review.ReviewItem]:
        return review.items(self.store, run_id)

    def review_label(self, run_id: str, key: str, label: str) -> list[review.ReviewItem]:
        return review.label(self.store, run_id, key, label)

    # -- the Leaderboard tab's second table -------------------------------------------------------------
    def judge_leaderboard(self, judge: str | None = None) -> pd.DataFrame:
        """Bradley-Terry ratings with 95% CIs from the graders' verdicts only (never human votes), cached until
        a verdict changes."""
        table, _ = self._judge_table.get({s.id: s.name for s in self.supervisor.statuses()}, judge)
        return _judge_frame(table)

    def pass_rates(self) -> pd.DataFrame:
        """The graded batch answers' pass rates per model: overall, by category, by language."""
        names = {s.id: s.name for s in self.supervisor.statuses()}
        key = (self._judge_table.version(), tuple(sorted(names.items())))
        return self._rates.get(key, lambda: report.pass_rate_table(self.store, names))


def judge_leaderboard(store: Store, names: dict[str, str] | None = None, judge: str | None = None) -> pd.DataFrame:
    """The judge table for the Leaderboard tab: rank, model, rating, CI, pairs judged, win rate."""
    table, _ = leaderboard.judge_table(store, names, judge)
    return _judge_frame(table)


def _judge_frame(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["ci_low", "ci_high", "mean_tokens_per_s", "mean_ttft_s"], errors="ignore") \
        .rename(columns={"battles": "judged_pairs"})


def describe_progress(state: dict) -> str:
    """One line for people: state, done/total, ETA, phase, run id, report or error."""
    eta = state.get("eta_s")
    eta_text = f", about {int(eta // 60)} min {int(eta % 60)} s left" if eta else ""
    line = {"idle": "No batch run yet.",
            "running": f"Running {state['run_id']}: {state['done']}/{state['total']}{eta_text} ({state['phase']})",
            "done": f"Done: {state['run_id']} ({state['done']}/{state['total']}).",
            "interrupted": f"Stopped: {state['run_id']} at {state['done']}/{state['total']}; resume with "
                           f"python -m arena batch --resume {state['run_id']}",
            "failed": f"Failed: {state['run_id']}: {state.get('error')}"}[state["state"]]
    return line
