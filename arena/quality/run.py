"""``python -m arena quality``: what each INT4 path costs against its full-precision reference.

One model at a time (so each is timed and measured alone, and the machine holds one set of weights):
1. every local model's vocabulary is read from its files and compared with the reference's, and every
   server's tokenization of the text with the reference's ids, before any weights load;
2. the reference scores the text once (top 64 log-probabilities and log-sum-exp per position), cached in
   ``<data dir>/quality/`` by model files, engine, text and length, with its speed and memory;
3. each candidate scores the same ids, returning its log-probabilities at the reference's top ids; then it
   answers one short greedy question for its decode speed, and its worker's resident memory is read.
Results are stored (``quality_results``) with the engine, recipe and library versions, and printed.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from arena.core.config import LOCAL_ENGINES, ModelConfig
from arena.core.generation import GenerationParams, decode_speed
from arena.quality import measures as quality
from arena.serving import memory
from arena.serving.client import EndpointError, prompt_logprobs, score_text, stream_chat, tokenize_on_server
from arena.serving.engines.base import AnswerCollector
from arena.serving.supervisor import Supervisor
from arena.serving.vocabularies import VocabularyError, of_model
from arena.storage.store import Store

SERVER_TOP = 20  # vLLM's default cap on prompt_logprobs
SPEED_QUESTION = [{"role": "user", "content": "Describe how a lighthouse works, in about one hundred words."}]
SPEED_TOKENS = 128


class QualityError(ValueError):
    """A comparison that cannot be made; the message says what to change."""


@dataclass
class Measured:
    """One model's measurement: its positions and what it cost to run."""

    positions: quality.Positions
    approximate: bool
    decode_tps: float | None
    rss_mb: float | None
    peak_rss_mb: float | None
    score_s: float
    load_s: float | None
    versions: dict


def result_id(model: str, reference: str, text_digest: str, tokens: int) -> str:
    return hashlib.sha256(json.dumps([model, reference, text_digest, tokens]).encode()).hexdigest()[:24]


def recipe(model: ModelConfig) -> dict:
    """The quantization as stored with a result: the entry's words and, where it has one, its recipe."""
    fields = None
    if model.quantize is not None:
        fields = {k: getattr(model.quantize, k) for k in ("bits", "weight_dtype", "compute_dtype", "group_size",
                                                           "scheme", "backend")}
    return {"quantization": model.quantization, "quantize": fields}


def pick_reference(catalog: dict[str, ModelConfig], candidates: list[str], named: str | None) -> ModelConfig:
    """--reference, or the one reference the candidates' entries name."""
    if named is None:
        named_by = {catalog[c].reference for c in candidates} - {None}
        if len(named_by) != 1:
            raise QualityError("name the full-precision model to compare with: --reference ID (or give each "
                               "candidate's models.yaml entry 'reference: ID'"
                               + (f"; the candidates name {', '.join(sorted(named_by))}" if named_by else "") + ")")
        named = named_by.pop()
    if named not in catalog:
        raise QualityError(f"unknown reference {named!r}; known: {', '.join(catalog)}")
    reference = catalog[named]
    if not reference.arena_worker:
        raise QualityError(f"the reference {named} is a server ({reference.engine}); a reference must run in an "
                           f"arena worker, which keeps its top-64 log-probabilities: use a local transformers fp32 "
                           f"or bf16 entry of the same weights")
    if named in candidates:
        raise QualityError(f"{named} is the reference; leave it out of --models")
    return reference


class QualityRun:
    """Measures candidates against a reference; prints progress through ``say``."""

    def __init__(self, catalog: list[ModelConfig], models_file: Path, data_dir: Path, store: Store,
                 threads: int | None, load_timeout: float = 900.0, say: Callable[[str], None] = print):
        self.catalog = {m.id: m for m in catalog}
        self.models_file, self.data_dir, self.store = Path(models_file), Path(data_dir), store
        self.threads, self.load_timeout, self.say = threads, load_timeout, say

    # -- checks before any weights load ---------------------------------------------------------
    def token_ids(self, reference: ModelConfig, candidates: list[ModelConfig], text: str, tokens: int | None) -> list[int]:
        """The text as the reference's token ids, after checking every candidate shares its vocabulary."""
        try:
            vocab = of_model(reference, self.data_dir)
        except VocabularyError as exc:
            raise QualityError(str(exc)) from None
        ids = vocab.tokenize(text)
        if tokens is not None:
            if tokens > len(ids):
                raise QualityError(f"the text is {len(ids)} tokens long for {reference.id}; ask for --tokens "
                                   f"{len(ids)} or fewer, or give a longer --text")
            ids = ids[:tokens]
        if len(ids) < 16:
            raise QualityError(f"the text is only {len(ids)} tokens long; the figures need at least 16")
        for model in candidates:
            if model.engine in LOCAL_ENGINES:
                try:
                    theirs = of_model(model, self.data_dir)
                except VocabularyError as exc:
                    raise QualityError(str(exc)) from None
                if theirs.fingerprint != vocab.fingerprint:
                    raise QualityError(
                        f"{model.id} ({theirs.source}, {theirs.size:,} tokens) and the reference {reference.id} "
                        f"({vocab.source}, {vocab.size:,} tokens) have different vocabularies, so their next-token "
                        f"distributions cannot be compared; name a reference with the same tokenizer")
            else:
                self._check_server_tokens(model, text, ids, reference)
        return ids

    def _check_server_tokens(self, model: ModelConfig, text: str, ids: list[int], reference: ModelConfig) -> None:
        endpoint = model.endpoint
        from arena.serving.supervisor import RemoteProber
        try:
            theirs = tokenize_on_server(endpoint.base_url, endpoint.model, text, api_key=RemoteProber.api_key(model))
        except EndpointError as exc:
            raise QualityError(f"{model.id}: {exc}") from None
        if theirs is None:
            raise QualityError(f"{model.id}: the server has no /tokenize endpoint, so the arena cannot check that it "
                               f"uses the vocabulary of the reference {reference.id}; vLLM has one")
        if theirs[:len(ids)] != ids:
            raise QualityError(f"{model.id} (server {endpoint.model}) tokenizes the text differently from the reference "
                               f"{reference.id}: their next-token distributions cannot be compared")

    # -- measuring ------------------------------------------------------------------------------
    def reference_cache(self, reference: ModelConfig, digest: str, ids: list[int]) -> Path:
        from arena.serving.sources import resolve, source_identity

        identity = source_identity(reference, resolve(reference, self.data_dir))
        key = hashlib.sha256(json.dumps({"source": identity, "engine": reference.engine, "recipe": recipe(reference),
                                         "text": digest, "ids": hashlib.sha256(np.asarray(ids).tobytes()).hexdigest(),
                                         "top": quality.TOP_K, "tail": quality.TAIL_SAMPLES}, sort_keys=True, default=str).encode()).hexdigest()
        return self.data_dir / "quality" / f"ref-{reference.id}-{key[:16]}.npz"

    def measure(self, model: ModelConfig, ids: list[int], gather: quality.Positions | None) -> Measured:
        """Start the model alone, read its resident memory, score the ids (at the reference's asked ids when
        ``gather``), time a short answer, read its peak memory, stop it."""
        supervisor = Supervisor([model], self.models_file, self.data_dir, threads=self.threads)
        started = time.perf_counter()
        supervisor.start()
        try:
            status = next(s for s in supervisor.wait_until_settled(self.load_timeout) if s.id == model.id)
            if status.state != "ready":
                raise QualityError(f"did not load: {status.describe()}")
            load_s = time.perf_counter() - started
            base, key = supervisor.endpoint(model.id), supervisor.api_key(model.id)
            name = model.served_name
            pid = supervisor.pid(model.id)
            rss = memory.resident_mb(pid) if pid else None  # loaded and warmed up: what keeping it costs
            self.say(f"  {model.id}: scoring {len(ids):,} tokens …")
            t0 = time.perf_counter()
            if model.arena_worker:  # exact, at the reference's top ids
                positions = quality.Positions.from_json(score_text(
                    base, name, ids, quality.TOP_K, None if gather is None else gather.asked_ids().tolist(),
                    quality.TAIL_SAMPLES if gather is None else 0, api_key=key))
            else:  # a server: its own top-k only (pick_reference keeps servers from being the reference)
                entries = prompt_logprobs(base, name, ids, SERVER_TOP, api_key=key)
                positions = quality.from_server_top(gather, entries, np.asarray(ids[1:]))
            score_s = time.perf_counter() - t0
            decode_tps = asyncio.run(self._decode_speed(base, name, key))
            peak = memory.peak_resident_mb(pid) if pid else None  # scoring's logits included
            versions = self._versions(base) if model.arena_worker else self._server_versions(base, model)
            return Measured(positions, not model.arena_worker, decode_tps, rss, peak, score_s,
                            load_s if model.endpoint is None else None, versions)
        except (EndpointError, ValueError) as exc:
            raise QualityError(f"{model.id}: {exc}") from None
        finally:
            supervisor.stop()

    @staticmethod
    async def _decode_speed(base: str, name: str, api_key: str | None) -> float | None:
        """Decode tokens/s of one greedy answer, measured as the page measures it (streamed)."""
        collector = AnswerCollector()
        async for item in stream_chat(base, name, SPEED_QUESTION, GenerationParams(temperature=0.0, top_p=1.0,
                                      max_new_tokens=SPEED_TOKENS), api_key=api_key):
            collector.add(item)
        answer = collector.finish()
        return decode_speed(answer.usage.completion_tokens if answer.usage else 0, answer.ttft_s, answer.total_s)

    @staticmethod
    def _versions(base: str) -> dict:
        import httpx

        try:
            return httpx.get(base.removesuffix("/v1") + "/health", timeout=5.0).json().get("versions", {})
        except (httpx.HTTPError, ValueError):
            return {}

    @staticmethod
    def _server_versions(base: str, model: ModelConfig) -> dict:
        """What a server says it is: its served name, and vLLM's version from its /version route."""
        import httpx

        versions = {"server": model.served_name}
        try:
            answer = httpx.get(base.removesuffix("/v1") + "/version", timeout=5.0).json()
            if isinstance(answer, dict) and isinstance(answer.get("version"), str):
                versions["vllm"] = answer["version"]
        except (httpx.HTTPError, ValueError):
            pass
        return versions

    # -- the whole run ----------------------------------------------------------------------------
    def run(self, candidate_ids: list[str], reference_id: str | None, text: str, tokens: int | None) -> list[dict]:
        unknown = [c for c in candidate_ids if c not in self.catalog]
        if unknown:
            raise QualityError(f"unknown model id(s) {', '.join(unknown)}; known: {', '.join(self.catalog)}")
        reference = pick_reference(self.catalog, candidate_ids, reference_id)
        candidates = [self.catalog[c] for c in candidate_ids]
        ids = self.token_ids(reference, candidates, text, tokens)
        digest = quality.text_digest(text)
        cache = self.reference_cache(reference, digest, ids)
        meta_path = cache.with_suffix(".json")
        total = len(candidates) + 1
        if cache.is_file() and meta_path.is_file():
            ref_positions = quality.Positions.load(cache)
            ref_meta = json.loads(meta_path.read_text())
            self.say(f"[1/{total}] reference {reference.id}: cached ({cache.name})")
        else:
            self.say(f"[1/{total}] reference {reference.id}: loading …")
            measured = self.measure(reference, ids, None)
            ref_positions = measured.positions
            ref_positions.save(cache)
            ref_meta = {"decode_tps": measured.decode_tps, "rss_mb": measured.rss_mb,
                        "peak_rss_mb": measured.peak_rss_mb, "score_s": measured.score_s, "load_s": measured.load_s,
                        "versions": measured.versions}
            meta_path.write_text(json.dumps(ref_meta))
            self.say(f"  {reference.id}: scored in {measured.score_s:.0f} s")
        rows = [self._row(reference, reference.id, digest, len(ids), None,
                          quality.perplexity(ref_positions), False, **ref_meta)]
        self.store.save_quality_result(rows[0])
        for index, model in enumerate(candidates, start=2):
            self.say(f"[{index}/{total}] {model.id}: loading …")
            try:
                measured = self.measure(model, ids, ref_positions)
                figures = quality.figures(ref_positions, measured.positions)
            except QualityError as exc:
                self.say(f"  {model.id}: FAILED: {exc}")
                continue
            row = self._row(model, reference.id, digest, len(ids), figures.to_json(), figures.ppl,
                            measured.approximate, measured.decode_tps, measured.rss_mb, measured.peak_rss_mb,
                            measured.score_s, measured.load_s, measured.versions)
            self.store.save_quality_result(row)
            rows.append(row)
            self.say(f"  {model.id}: scored in {measured.score_s:.0f} s; mean KL {figures.kl_mean[0]:.4f}, "
                     f"same top token {100 * figures.same_top[0]:.1f}%")
        return rows

    @staticmethod
    def _row(model: ModelConfig, reference: str, digest: str, tokens: int, figures: dict | None, ppl: float,
             approximate: bool, decode_tps: float | None, rss_mb: float | None, peak_rss_mb: float | None,
             score_s: float | None, load_s: float | None, versions: dict) -> dict:
        return {"id": result_id(model.id, reference, digest, tokens), "model": model.id, "reference": reference,
                "text_digest": digest, "tokens": tokens, "engine": model.engine, "recipe": recipe(model),
                "versions": versions, "figures": figures, "ppl": ppl, "approximate": int(approximate),
                "decode_tps": decode_tps, "rss_mb": rss_mb, "peak_rss_mb": peak_rss_mb, "score_s": score_s,
                "load_s": load_s, "created": time.time()}


def quality_command(args) -> int:
    """The CLI: checks, runs, prints the table; exit 2 on a refused comparison."""
    from arena.core.config import load_models
    from arena.storage.store import open_store

    catalog = load_models(args.models)
    candidates = [m.strip() for m in args.models_list.split(",") if m.strip()]
    if not candidates:
        print("error: --models is empty; name at least one model id", file=sys.stderr)
        return 2
    try:
        text = quality.load_text(args.text) if args.text else quality.load_text()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read --text {args.text}: {exc}", file=sys.stderr)
        return 2
    run = QualityRun(catalog, args.models, Path(args.data_dir), open_store(args), args.threads, args.load_timeout,
                     say=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        rows = run.run(candidates, args.reference, text, args.tokens)
    except QualityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from arena.quality.board import frame, ordered

    print(frame(ordered(rows)).to_string(index=False))
    return 0 if len(rows) == len(candidates) + 1 else 1
