"""One turn of a round: the same question to two models, streamed together, timed.

Gradio runs two listeners on one button one after the other, so both panes can
only stream at once if one generator yields both; ``run_turn`` merges the two
answer streams through an ``asyncio.Queue`` and yields a snapshot per piece.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from .engines import GenerationParams, Usage

# (messages, params) -> stream of text pieces ending in Usage; client.stream_chat bound to one endpoint
StreamFn = Callable[[list[dict], GenerationParams], AsyncIterator[str | Usage]]


@dataclass
class Answer:
    """One model's answer to one question, with the timings a user would take by stopwatch."""

    text: str = ""
    error: str | None = None
    done: bool = False
    ttft_s: float | None = None       # request sent -> first visible text
    total_s: float | None = None      # request sent -> stream finished
    output_tokens: int = 0
    prompt_tokens: int = 0
    _started: float = field(default=0.0, repr=False)

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed: tokens after the first, over the time after the first token."""
        if self.ttft_s is None or self.total_s is None or self.output_tokens < 2:
            return None
        decode = self.total_s - self.ttft_s
        return (self.output_tokens - 1) / decode if decode > 0 else None

    def metrics(self) -> dict:
        return {"ttft_s": _round(self.ttft_s), "total_s": _round(self.total_s), "output_tokens": self.output_tokens,
                "tokens_per_s": _round(self.tokens_per_s), "prompt_tokens": self.prompt_tokens}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def _consume(side: int, stream: AsyncIterator[str | Usage], answer: Answer, queue: asyncio.Queue) -> None:
    answer._started = time.perf_counter()
    try:
        async for item in stream:
            now = time.perf_counter() - answer._started
            if isinstance(item, Usage):
                answer.output_tokens, answer.prompt_tokens = item.completion_tokens, item.prompt_tokens
                continue
            if answer.ttft_s is None:
                answer.ttft_s = now
            answer.text += item
            await queue.put(side)
    except asyncio.CancelledError:
        answer.error = answer.error or "stopped by user"
        raise
    except Exception as exc:  # one model failing must not stop the other pane
        answer.error = str(exc) or type(exc).__name__
    finally:
        answer.total_s = time.perf_counter() - answer._started
        answer.done = True
        queue.put_nowait(side)


async def run_turn(streams: tuple[Callable[[], AsyncIterator[str | Usage]], Callable[[], AsyncIterator[str | Usage]]],
                   schedule: str = "concurrent") -> AsyncIterator[tuple[Answer, Answer]]:
    """Run both answers and yield ``(answer_a, answer_b)`` after every change.

    ``schedule="sequential"`` answers B only after A (fastest in total on 2 cores,
    but B's pane sits idle); ``"concurrent"`` streams both at once.
    """
    answers = (Answer(), Answer())
    queue: asyncio.Queue = asyncio.Queue()
    tasks: list[asyncio.Task] = []
    try:
        if schedule == "sequential":
            for side in (0, 1):
                tasks.append(asyncio.create_task(_consume(side, streams[side](), answers[side], queue)))
                while not answers[side].done:
                    await queue.get()
                    yield answers
        else:
            tasks = [asyncio.create_task(_consume(side, streams[side](), answers[side], queue)) for side in (0, 1)]
            while not all(a.done for a in answers):
                await queue.get()
                yield answers
        yield answers
    finally:
        for task in tasks:  # the consumer stopped early (Stop button): cancel generation on both sides
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
