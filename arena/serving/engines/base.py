"""The protocol every engine implements, and what all engines share.

Every engine implements ``ChatEngine.stream_chat``, which yields text pieces and ends with one ``Usage``
(arena/core/generation.py); ``BatchEngine`` and ``TokenScorer`` are optional. The worker wraps any engine in the
OpenAI-compatible HTTP protocol, so nothing above the worker knows engines. Also here: the lines a worker
writes for its supervisor (phases, errors), process hygiene for every child (no orphans, normal scheduling) and
the cross-process lock of cache builds. Standard library only at import: it runs in every engine's environment.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from arena.core.generation import GenerationParams, Notice, Started, TokenLogprob, Usage

PHASE_PREFIX = "ARENA_PHASE: "  # a worker prints this before each slow step; the supervisor shows it
ERROR_PREFIX = "ARENA_WORKER_ERROR: "  # the supervisor shows the text after this as the failure reason


def phase(key: str, **values) -> None:
    """Tell the terminal and the supervisor (which reads the worker's log; the page shows it in the reader's
    language) what we are doing: the English text, a tab, and the texts.py phrase as JSON."""
    import json

    from arena.core.texts import phrase, say

    said = phrase(key, **values)
    print(f"{PHASE_PREFIX}{say(said)}\t{json.dumps(said.to_json(), ensure_ascii=False)}", flush=True)


def exit_with_parent() -> None:
    """No orphans: when the process that started this one dies (even by SIGKILL), follow it within a second,
    and take this process group along (converters, vLLM's engine core) when this process leads one, as the
    supervisor's children do (start_new_session). Standard library only: it runs in every engine's
    environment."""
    import os
    import signal
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def normal_scheduling() -> None:
    """Undo the app's SCHED_BATCH (see app.yield_cpu_to_workers), which a process it starts inherits. Done in
    the child rather than in a preexec_fn, which is deadlock-prone in the app's threaded process."""
    import os

    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


@contextlib.contextmanager
def exclusive(directory: Path, name: str = ".lock", on_wait=None):
    """Hold an exclusive lock (``directory/name``, created if needed) across processes: two workers (two
    recipes of one model) or two arena processes never build the same cache entry at once."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / name, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            (on_wait or phase)("phase_waiting_lock")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def top_logprobs(logits, n: int, token_text) -> tuple[float, tuple[tuple[str, float], ...], "object"]:
    """(log-sum-exp, the ``n`` most likely tokens as (text, logprob), log-probabilities of every token) from
    one position's raw logits (a 1-D numpy array); ``token_text(id)`` names a token."""
    import numpy as np

    values = np.asarray(logits, dtype=np.float64)
    top = values.max()
    lse = float(top + np.log(np.exp(values - top).sum()))
    logprobs = values - lse
    if n <= 0:
        return lse, (), logprobs
    best = np.argpartition(-logprobs, min(n, len(logprobs) - 1))[:n]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    return lse, tuple((token_text(int(i)), float(logprobs[i])) for i in best), logprobs


class LogprobsUnsupported(RuntimeError):
    """The engine cannot return log-probabilities; the message names it."""


class ChatEngine(Protocol):
    def stream_chat(self, messages: list[dict], params: GenerationParams) -> Iterator[str | Usage]:
        """Yield answer text pieces as they are generated, then exactly one Usage."""


@dataclass(frozen=True)
class BatchRequest:
    """One conversation of a batch; ``seed`` is per request so an answer does not depend on its batch-mates."""

    messages: list[dict]
    seed: int | None = None


@dataclass
class BatchAnswer:
    """One answer of a batch with its own stopwatch figures, taken while the batch decoded together."""

    text: str = ""
    usage: Usage | None = None
    ttft_s: float | None = None   # batch start -> this sequence's first token
    total_s: float | None = None  # batch start -> this sequence finished
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None  # with GenerationParams.top_logprobs: one per generated token


class AnswerCollector:
    """Builds one BatchAnswer from a streamed answer (text pieces, a Notice, a Usage), timing it
    from construction: the one place a stream becomes a stored batch answer, local or remote."""

    def __init__(self) -> None:
        self.answer, self.pieces = BatchAnswer(), []
        self.started = time.perf_counter()

    def add(self, item: "str | Usage | Notice | Started") -> None:
        if isinstance(item, Started):  # time spent waiting for the engine is not the answer's
            self.started = time.perf_counter()
        elif isinstance(item, Usage):
            self.answer.usage = item
        elif isinstance(item, str):
            if self.answer.ttft_s is None:
                self.answer.ttft_s = time.perf_counter() - self.started
            self.pieces.append(item)

    def finish(self, error: str | None = None) -> BatchAnswer:
        self.answer.text, self.answer.error = "".join(self.pieces), error
        self.answer.total_s = time.perf_counter() - self.started
        return self.answer


def in_groups(requests: list, size: int, decode: "Callable[[list], list]") -> list:
    """Answers for ``requests``, decoded ``size`` at a time (the engine's batch limit), in order."""
    answers: list = []
    for start in range(0, len(requests), size):
        answers.extend(decode(requests[start:start + size]))
    return answers


class BatchEngine(Protocol):
    """Optional: engines that decode several sequences in one forward pass (batch runs use it)."""

    def batch_chat(self, requests: list[BatchRequest], params: GenerationParams) -> list[BatchAnswer]:
        """Answer every request; the list has the same order and length as ``requests``."""


SCORE_CHUNK = 256  # tokens per forward pass when scoring a text: logits of 256 x 152k vocab are 155 MB


class TokenScorer(Protocol):
    """Optional: engines that score a fixed token sequence by teacher forcing (``python -m arena quality``)."""

    def score_tokens(self, ids: list[int], top: int, gather: "list[list[int]] | None", tail: int = 0) -> dict:
        """Next-token statistics at every position of ``ids`` (serving/scoring.py's JSON)."""


def installed_versions(names: "tuple[str, ...] | list[str]") -> dict[str, str | None]:
    """Installed version of each distribution in this interpreter (None: not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def n_params(engine: object) -> int | None:
    """The model's parameter count if the engine can tell (the default judge is the largest ready model)."""
    getter = getattr(engine, "n_params", None)
    try:
        return int(getter()) if callable(getter) else None
    except Exception:
        return None


