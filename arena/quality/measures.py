"""What a quantization costs in quality, as pure functions: the fixed text, which vocabularies can be compared,
and the figures ``llama-perplexity --kl-divergence`` prints, computed from stored next-token distributions.

Teacher forcing: the same token ids (the text, tokenized once) go to a full-precision reference and to each
candidate, and at every position their next-token distributions are compared. The reference keeps only its
top ``TOP_K`` log-probabilities, ``TAIL_SAMPLES`` tokens drawn from the rest and the log-sum-exp per position
(about 2 MB for 2,048 tokens instead of 1.2 GB of logits); a candidate returns its own log-probabilities at
those same token ids. KL(reference ‖ candidate) is exact over the top tokens, with the rest as one tail bucket
plus a sampled estimate of the divergence inside it (``kl_divergence``), which tests/quality/test_quality.py checks
against the exact full-vocabulary KL.

Figures per candidate (each mean over positions with a 95% interval):
- mean KL divergence to the reference, and its 99th percentile;
- same top token: the share of positions where both pick the same most likely token;
- perplexity of each model on the text, and the ratio to the reference's;
- RMS change of the probability of the correct next token.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arena.serving.scoring import FIELDS

TOP_K = 64          # the reference's most likely tokens kept per position
TAIL_SAMPLES = 64   # tokens drawn from the rest of its distribution per position, to estimate the divergence there
TEXT_FILE = Path(__file__).resolve().parents[1] / "data" / "quality-text.md"
_FLOOR = 1e-12  # a candidate's probability mass never quite reaches zero


def load_text(path: Path | str = TEXT_FILE) -> str:
    """The text, without the leading HTML comment that records its source and licence."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("<!--"):
        text = text[text.index("-->") + 3:]
    return text.strip() + "\n"


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]




@dataclass
class Positions:
    """Next-token statistics at every position of the text (position i predicts token i + 1).

    A reference's: its top ``TOP_K`` tokens and ``TAIL_SAMPLES`` tokens drawn from the rest of its
    distribution. A candidate's: its log-probabilities at exactly those ids (``asked_ids``), no tail of its own."""

    top_ids: np.ndarray        # (n, k) int32
    top_logprobs: np.ndarray   # (n, k) float32
    tail_ids: np.ndarray       # (n, m) int32, m = 0 for a candidate
    tail_logprobs: np.ndarray  # (n, m) float32
    lse: np.ndarray            # (n,) log-sum-exp of the logits (NaN where a server did not tell)
    next_logprob: np.ndarray   # (n,) log-probability of the token that actually comes next
    argmax: np.ndarray         # (n,) int32: the most likely next token

    def asked_ids(self) -> np.ndarray:
        """The token ids a candidate is asked about at each position: the top ones, then the tail samples."""
        return np.concatenate([self.top_ids, self.tail_ids], axis=1)

    @classmethod
    def from_json(cls, data: dict) -> "Positions":
        n = len(data["lse"])
        ints = ("top_ids", "tail_ids", "argmax")
        return cls(**{k: np.asarray(data.get(k, np.zeros((n, 0))), dtype=np.int32 if k in ints else np.float32)
                      .reshape((n, -1) if k.startswith(("top", "tail")) else (n,)) for k in FIELDS})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(partial, **{k: getattr(self, k) for k in FIELDS})
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Positions":
        with np.load(path) as data:
            return cls(**{k: data[k] for k in FIELDS})


def from_server_top(reference: Positions, entries: list[dict[int, float]], next_ids: np.ndarray) -> Positions:
    """A candidate known only by its own top-k log-probabilities per position (a vLLM server's prompt logprobs),
    put at the reference's asked ids: where the server named a token its log-probability is used; the rest of
    the candidate's mass (1 minus what the server listed) is shared over the unnamed ids and the tail in
    proportion to the reference's probabilities there. Top-k approximate, and reported as such."""
    asked = reference.asked_ids()
    n, k = reference.top_ids.shape
    if len(entries) != n:
        raise ValueError(f"the server scored {len(entries)} positions, the reference {n}")
    logprobs = np.empty(asked.shape, dtype=np.float32)
    argmax = np.empty(n, dtype=np.int32)
    nxt = np.empty(n, dtype=np.float32)
    for i, entry in enumerate(entries):
        p_top = np.exp(reference.top_logprobs[i].astype(np.float64))
        listed = np.array([int(t) in entry for t in reference.top_ids[i]])
        rest = max(1.0 - sum(math.exp(v) for v in entry.values()), _FLOOR)
        # the reference's mass where the server is silent: its unlisted top tokens and its whole tail
        silent_p = p_top[~listed].sum() + max(1.0 - p_top.sum(), 0.0)
        ref_lp = np.concatenate([reference.top_logprobs[i], reference.tail_logprobs[i]]).astype(np.float64)
        for j, token in enumerate(asked[i]):
            logprobs[i, j] = entry[int(token)] if int(token) in entry else \
                math.log(max(rest * math.exp(ref_lp[j]) / max(silent_p, _FLOOR), _FLOOR))
        argmax[i] = max(entry, key=entry.__getitem__)
        actual = int(next_ids[i])
        if actual not in entry:
            raise ValueError(f"the server gave no log-probability for the actual next token at position {i}")
        nxt[i] = entry[actual]
    return Positions(asked.copy(), logprobs, np.zeros((n, 0), dtype=np.int32), np.zeros((n, 0), dtype=np.float32),
                     np.full(n, np.nan, dtype=np.float32), nxt, argmax)


def kl_divergence(reference: Positions, candidate: Positions) -> np.ndarray:
    """KL(reference ‖ candidate) per position, from what was kept: exact over the reference's top tokens, plus the
    rest of the vocabulary as one tail bucket (a lower bound: grouping never raises KL), plus the divergence
    inside that tail estimated from the reference's tail samples (importance sampling, clipped at zero as the
    true value is). On SmolLM2 the bucket alone is 4.6% low; with the samples, 0.14% off
    (tests/quality/test_quality.py, BENCHMARKS.md §14)."""
    k = reference.top_ids.shape[1]
    p_lp = reference.top_logprobs.astype(np.float64)
    q_lp = candidate.top_logprobs[:, :k].astype(np.float64)
    p_tail = np.clip(1.0 - np.exp(p_lp).sum(axis=1), 0.0, 1.0)
    q_tail = np.clip(1.0 - np.exp(q_lp).sum(axis=1), _FLOOR, 1.0)
    head = (np.exp(p_lp) * (p_lp - q_lp)).sum(axis=1)
    bucket = np.where(p_tail > 0, p_tail * (np.log(np.maximum(p_tail, _FLOOR)) - np.log(q_tail)), 0.0)
    within = np.zeros_like(head)
    if reference.tail_ids.shape[1]:
        ref_tail = reference.tail_logprobs.astype(np.float64) - np.log(np.maximum(p_tail, _FLOOR))[:, None]
        cand_tail = candidate.top_logprobs[:, k:].astype(np.float64) - np.log(q_tail)[:, None]
        within = p_tail * np.maximum((ref_tail - cand_tail).mean(axis=1), 0.0)
    return np.maximum(head + bucket + within, 0.0)


def perplexity(positions: Positions) -> float:
    """exp of the mean negative log-probability of each next token."""
    return float(np.exp(-positions.next_logprob.astype(np.float64).mean()))


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% normal interval (values are per position; like llama-perplexity, positions count as
    independent, which understates the interval a little)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Figures:
    positions: int
    kl_mean: tuple[float, float, float]       # mean, 95% low, high
    kl_p99: float
    same_top: tuple[float, float, float]      # share of positions
    ppl_reference: float
    ppl: float
    ppl_ratio: tuple[float, float, float]     # PPL(candidate) / PPL(reference), with the interval of its log
    rms_dp: tuple[float, float, float]        # RMS change of p(correct token), with a bootstrap interval

    def to_json(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict) -> "Figures":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def figures(reference: Positions, candidate: Positions, seed: int = 0) -> Figures:
    """Every figure of a candidate against the reference (same positions, candidate gathered at the
    reference's top ids)."""
    asked = reference.asked_ids()
    if asked.shape != candidate.top_ids.shape or not np.array_equal(asked, candidate.top_ids):
        raise ValueError("the candidate's log-probabilities are not at the reference's token ids")
    kl = kl_divergence(reference, candidate)
    same = (reference.argmax == candidate.argmax).astype(np.float64)
    log_ratio = reference.next_logprob.astype(np.float64) - candidate.next_logprob.astype(np.float64)
    ratio_mean, ratio_low, ratio_high = _mean_ci(log_ratio)
    dp = np.exp(candidate.next_logprob.astype(np.float64)) - np.exp(reference.next_logprob.astype(np.float64))
    rms = float(np.sqrt(np.mean(dp ** 2)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(dp), size=(200, len(dp)))
    boot = np.sqrt((dp[draws] ** 2).mean(axis=1))
    return Figures(
        positions=len(kl), kl_mean=_mean_ci(kl), kl_p99=float(np.percentile(kl, 99)), same_top=_mean_ci(same),
        ppl_reference=perplexity(reference), ppl=perplexity(candidate),
        ppl_ratio=(math.exp(ratio_mean), math.exp(ratio_low), math.exp(ratio_high)),
        rms_dp=(rms, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))))
