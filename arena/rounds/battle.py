"""One turn of a round: the same question to two models, streamed together, timed.

Gradio runs two listeners on one button one after the other, so both panes can
only stream at once if one generator yields both; ``run_turn`` merges the two
answer streams through an ``asyncio.Queue`` and yields a snapshot per piece.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from arena.core.generation import Notice, Started, Usage, decode_speed
from arena.core.records import MAX_ERROR_CHARS, SideAnswer
from arena.core.textcheck import clean_model_text
from arena.serving.client import EndpointError

log = logging.getLogger(__name__)
STOPPED = "stopped by user"


@dataclass
class Answer:
    """One model's answer to one question while it streams, with the timings a user would take by
    stopwatch. Changed only by its own ``_consume`` task, on the event loop."""

    text: str = ""
    error: str | None = None
    done: bool = False
    ttft_s: float | None = None       # engine started -> first visible text
    total_s: float | None = None      # engine started -> stream finished
    queue_s: float | None = None      # request started -> engine started (waiting for a busy or restarting worker)
    output_tokens: int = 0
    prompt_tokens: int = 0
    notice: Notice | None = None      # the worker fitted the conversation into the context window
    _started: float = field(default=0.0, repr=False)  # when the request started
    _engine: float = field(default=0.0, repr=False)   # when the engine started (the stopwatch's zero)

    @property
    def tokens_per_s(self) -> float | None:
        return decode_speed(self.output_tokens, self.ttft_s, self.total_s)

    def finished(self) -> SideAnswer:
        """The stored answer: a stop is not an error, and an answer that did not end is marked stopped."""
        stopped = self.error == STOPPED
        return SideAnswer(text=self.text, error=None if stopped else self.error, stopped=stopped or not self.done,
                          notice=self.notice, ttft_s=_round(self.ttft_s), total_s=_round(self.total_s),
                          output_tokens=self.output_tokens, tokens_per_s=_round(self.tokens_per_s),
                          prompt_tokens=self.prompt_tokens, queue_s=_round(self.queue_s))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def _consume(side: int, stream: AsyncIterator[str | Usage | Notice | Started], answer: Answer,
                   queue: asyncio.Queue) -> None:
    answer._started = answer._engine = time.perf_counter()
    pieces = 0
    try:
        async for item in stream:
            if isinstance(item, Started):  # the wait so far was a queue, not the engine's time
                answer._engine = time.perf_counter()
                answer.queue_s = answer._engine - answer._started
                continue
            if isinstance(item, Usage):
                answer.output_tokens, answer.prompt_tokens = item.completion_tokens, item.prompt_tokens
                continue
            if isinstance(item, Notice):
                answer.notice = item
                continue
            if answer.ttft_s is None:
                answer.ttft_s = time.perf_counter() - answer._engine
            answer.text += clean_model_text(item)  # storable, exportable and importable, whoever sent it
            pieces += 1
            await queue.put(side)
    except asyncio.CancelledError:
        answer.error = answer.error or STOPPED
        raise
    except EndpointError as exc:  # one model failing must not stop the other pane
        answer.error = clean_model_text(str(exc))[:MAX_ERROR_CHARS]  # a server's message is untrusted text
    except Exception as exc:  # never a raw exception in a pane: the log has the details
        log.exception("answer failed")
        answer.error = f"the answer failed unexpectedly ({type(exc).__name__}); the app's log has the details"
    finally:
        answer.total_s = time.perf_counter() - answer._engine
        if not answer.output_tokens:  # stopped or failed before the usage report: one piece ~ one token
            answer.output_tokens = pieces
        answer.done = True
        queue.put_nowait(side)


async def _changes(queue: asyncio.Queue, finished: Callable[[], bool], min_interval: float) -> AsyncIterator[None]:
    """Wake on every streamed piece, but report at most once per ``min_interval``.

    Every report is re-rendered and sent to the browser; on two cores that work
    competes with llama.cpp for the CPU, so ~20 updates a second is the sweet spot.
    """
    last = 0.0
    while not finished():
        await queue.get()
        while not queue.empty():
            queue.get_nowait()
        now = time.monotonic()
        if now - last >= min_interval or finished():
            last = now
            yield


Stream = Callable[[], AsyncIterator["str | Usage | Notice | Started"]]


async def run_turn(streams: tuple[Stream, Stream],
                   schedule: str = "concurrent", min_interval: float = 0.05,
                   stop: asyncio.Event | None = None) -> AsyncIterator[tuple[Answer, Answer]]:
    """Run both answers and yield ``(answer_a, answer_b)`` as they change, and once at the end.

    ``schedule="sequential"`` answers B only after A (B's pane sits idle meanwhile);
    ``"concurrent"`` streams both at once. BENCHMARKS.md compares them. Setting ``stop``
    ends both answers where they are ("stopped by user") and the turn finishes normally.
    """
    answers = (Answer(), Answer())
    queue: asyncio.Queue = asyncio.Queue()
    tasks: list[asyncio.Task] = []
    stopped = False

    async def stop_all() -> None:
        nonlocal stopped
        await stop.wait()
        stopped = True
        for task in tasks:
            task.cancel()
        for answer in answers:
            if not answer.done and answer._started == 0.0:  # B not started yet (sequential)
                answer.error, answer.done = STOPPED, True
        queue.put_nowait(-1)

    watcher = asyncio.create_task(stop_all()) if stop is not None else None
    try:
        if schedule == "sequential":
            for side in (0, 1):
                if stopped:
                    break
                tasks.append(asyncio.create_task(_consume(side, streams[side](), answers[side], queue)))
                async for _ in _changes(queue, lambda s=side: answers[s].done, min_interval):
                    yield answers
        else:
            tasks = [asyncio.create_task(_consume(side, streams[side](), answers[side], queue)) for side in (0, 1)]
            async for _ in _changes(queue, lambda: all(a.done for a in answers), min_interval):
                yield answers
        yield answers
    finally:
        for task in [*tasks, *([watcher] if watcher else [])]:  # also when the consumer went away early
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
