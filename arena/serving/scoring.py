"""Scoring a fixed text inside a worker: teacher forcing in chunks, and per position the statistics that
``python -m arena quality`` compares (arena/quality/measures.py). Every engine's logits pass through
``position_stats``, so the workers of all engines store the same fields the same way.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

FIELDS = ("top_ids", "top_logprobs", "tail_ids", "tail_logprobs", "lse", "next_logprob", "argmax")


def _tail_samples(logprobs: np.ndarray, top_ids: np.ndarray, count: int, positions: range) -> np.ndarray:
    """``count`` tokens per row drawn (with replacement) from the distribution outside its top ids, one seeded
    generator per absolute position, so the draws do not depend on how an engine chunks the text."""
    out = np.empty((len(logprobs), count), dtype=np.int32)
    for row, position in enumerate(positions):
        probs = np.exp(logprobs[row])
        probs[top_ids[row]] = 0.0
        cdf = np.cumsum(probs)
        draws = np.random.default_rng([20261202, position]).random(count) * cdf[-1]
        out[row] = np.minimum(np.searchsorted(cdf, draws, side="right"), len(cdf) - 1)
    return out


def position_stats(logits: np.ndarray, next_ids: np.ndarray, top: int, gather: np.ndarray | None,
                   tail: int = 0, start: int = 0) -> dict:
    """Statistics of a block of positions from their raw logits ``(m, vocab)``: the ``top`` most likely tokens
    and ``tail`` samples from the rest (or, with ``gather``, the log-probabilities at those ``(m, j)`` token ids
    instead), the log-sum-exp, the log-probability of each next token and the argmax. ``start`` is the block's
    first position. The one place every engine's logits pass through."""
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max(axis=1, keepdims=True)
    lse = (peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1)))
    logprobs = logits - lse[:, None]
    rows = np.arange(len(logits))
    out = {"lse": lse.astype(np.float32), "argmax": logits.argmax(axis=1).astype(np.int32),
           "next_logprob": logprobs[rows, next_ids].astype(np.float32)}
    if gather is not None:
        ids = np.asarray(gather, dtype=np.int64)
        out["tail_ids"] = np.zeros((len(logits), 0), dtype=np.int32)
    else:
        best = np.argpartition(-logprobs, top - 1, axis=1)[:, :top]
        order = np.argsort(-np.take_along_axis(logprobs, best, axis=1), axis=1, kind="stable")
        ids = np.take_along_axis(best, order, axis=1)
        out["tail_ids"] = _tail_samples(logprobs, ids, tail, range(start, start + len(logits)))
    out["top_ids"] = ids.astype(np.int32)
    out["top_logprobs"] = np.take_along_axis(logprobs, ids, axis=1).astype(np.float32)
    out["tail_logprobs"] = np.take_along_axis(logprobs, out["tail_ids"].astype(np.int64), axis=1).astype(np.float32)
    return out


def score_sequence(ids: list[int], top: int, gather: np.ndarray | list[list[int]] | None, chunk: int,
                   forward: Callable[[int, int], np.ndarray], tail: int = 0) -> dict:
    """Teacher forcing over ``ids`` in chunks: ``forward(start, stop)`` feeds ``ids[start:stop]`` to the model,
    continuing its context, and returns their logits ``(stop - start, vocab)``. Position i predicts
    ``ids[i + 1]``, so the last token is never fed. ``gather``: one row of token ids per position, as an array
    or as the worker received it. Returns the positions as JSON-ready lists."""
    n = len(ids) - 1
    if n < 1:
        raise ValueError("need at least two tokens to score")
    if gather is not None and len(gather) != n:
        raise ValueError(f"gather has {len(gather)} rows for {n} positions")
    target = np.asarray(ids[1:], dtype=np.int64)
    blocks = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        logits = forward(start, stop)
        blocks.append(position_stats(logits, target[start:stop], top, None if gather is None else gather[start:stop],
                                     tail, start))
    return {k: np.concatenate([b[k] for b in blocks]).tolist() for k in FIELDS}
