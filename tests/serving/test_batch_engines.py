"""Engine-level batch decoding on real weights (SmolLM2-135M, which loads in seconds): transformers
INT4 (torchao) batched generate with left padding, and the llama.cpp sampler's arithmetic."""
import numpy as np
import pytest

from arena.core.config import ModelConfig, ModelSource, QuantizeConfig
from arena.core.generation import GenerationParams
from arena.serving.engines.base import BatchRequest
from arena.serving.engines.llamacpp import complete_utf8, sample_token
from arena.serving.engines.registry import load_engine

pytestmark = pytest.mark.timeout(600)


def test_transformers_int4_batch_uses_left_padding_and_times_each_row(smol_weights, tmp_path):
    """Three prompts of different lengths in one generate(): each row's prompt_tokens is its own unpadded
    length, each answer is decoded without padding or end tokens, timings are ordered, and the short
    factual question still gets a sane answer (Paris) despite the padding."""
    model = ModelConfig("smol-int4", "Smol INT4", "transformers", ModelSource(file=str(smol_weights)), "x", "x",
                        quantize=QuantizeConfig())
    engine = load_engine(model, smol_weights, threads=2, data_dir=tmp_path)
    questions = ["What is the capital of France? Answer in one word.", "Hi",
                 "Explain in two sentences why the sky looks blue during the day and red at sunset."]
    convs = [[{"role": "user", "content": q}] for q in questions]
    answers = engine.batch_chat([BatchRequest(c, 0) for c in convs], GenerationParams(temperature=0.0, max_new_tokens=16))
    assert len(answers) == 3 and all(a.error is None for a in answers)
    for conv, a in zip(convs, answers):
        own = engine.tokenizer.apply_chat_template(conv, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert a.usage.prompt_tokens == len(own)
        assert 0 < a.usage.completion_tokens <= 16 and a.text.strip()
        assert 0 < a.ttft_s <= a.total_s
        assert "<|im_end|>" not in a.text and engine.tokenizer.pad_token not in a.text
    assert "Paris" in answers[0].text
    assert engine.n_params() > 100e6


def test_sampler_greedy_penalty_and_seeded_sampling():
    """Greedy is the argmax; the repeat penalty divides positive and multiplies negative logits of
    recent tokens (llama.cpp's rule), which can change the argmax; sampling with the same seed repeats."""
    logits = np.array([1.0, 3.0, 2.9, -1.0], dtype=np.float32)
    greedy = GenerationParams(temperature=0.0)
    assert sample_token(logits, [], greedy, np.random.default_rng(0)) == 1
    assert sample_token(logits, [1], GenerationParams(temperature=0.0, repeat_penalty=1.1),
                        np.random.default_rng(0)) == 2  # 3.0/1.1 = 2.73 < 2.9
    hot = GenerationParams(temperature=1.0, top_p=1.0)
    draws = [sample_token(logits, [], hot, np.random.default_rng(5)) for _ in range(3)]
    assert len(set(draws)) == 1
    top1 = GenerationParams(temperature=1.0, top_k=1)
    assert {sample_token(logits, [], top1, np.random.default_rng(s)) for s in range(20)} == {1}


def test_an_answer_cut_inside_a_chinese_character_drops_the_half_character():
    """A batch answer stopped at max tokens can end mid-character: the tail is dropped, not shown as U+FFFD."""
    data = "白白喜欢明明".encode("utf-8")
    assert complete_utf8(data[:-1]) == "白白喜欢明"
    assert complete_utf8(data) == "白白喜欢明明"


class CountingEngine:
    """A fake engine that counts a token per word and records each batch_chat call's prompts and budget."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int]] = []

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return sum(len(m["content"].split()) for m in messages)

    def batch_chat(self, requests: list[BatchRequest], params: GenerationParams) -> list:
        from arena.serving.engines.base import BatchAnswer

        self.calls.append(([r.messages[-1]["content"][:5] for r in requests], params.max_new_tokens))
        return [BatchAnswer(text="ok") for _ in requests]


def test_batch_fitting_refuses_overflow_and_answers_a_squeezed_request_alone():
    """With a 200-token context and 100 new tokens: a 250-word question is refused with the numbers, a
    120-word one is answered alone with an 80-token budget, and the short ones decode together with 100."""
    from arena.serving.worker import run_fitted_batch

    engine = CountingEngine()
    ask = lambda words, tag: BatchRequest([{"role": "user", "content": tag + " w" * (words - 1)}])  # noqa: E731
    requests = [ask(3, "short"), ask(250, "huge"), ask(120, "tight"), ask(5, "brief")]
    answers, batched = run_fitted_batch(engine, requests, GenerationParams(max_new_tokens=100), context_length=200)
    assert batched
    assert "needs 250 tokens" in answers[1].error and answers[1].text == ""
    assert [a.text for i, a in enumerate(answers) if i != 1] == ["ok", "ok", "ok"]
    assert engine.calls == [(["short", "brief"], 100), (["tight"], 80)]


def test_llamacpp_batch_reuses_a_cached_prefix_with_the_same_greedy_answers(smol_weights, monkeypatch):
    """A second turn of the same conversations (like a judge's one-word question) prefills only what follows
    the tokens already in each sequence's cache, even in the other order, and answers exactly as a fresh
    engine does."""
    import llama_cpp

    from arena.serving.engines.llamacpp import LlamaCppEngine

    greedy = GenerationParams(temperature=0.0, max_new_tokens=12)
    first = [[{"role": "user", "content": q}] for q in ("Name a fruit.", "What is 2 + 2?")]
    engine = LlamaCppEngine(smol_weights, threads=2, context_length=1024)
    replies = engine.batch_chat([BatchRequest(c, 0) for c in first], greedy)
    second = [c + [{"role": "assistant", "content": r.text}, {"role": "user", "content": "One word only."}]
              for c, r in zip(first, replies)][::-1]
    decoded: list[int] = []
    original = llama_cpp.llama_decode
    monkeypatch.setattr(llama_cpp, "llama_decode", lambda ctx, b: decoded.append(b.n_tokens) or original(ctx, b))
    reused = engine.batch_chat([BatchRequest(c, 0) for c in second], greedy)
    monkeypatch.setattr(llama_cpp, "llama_decode", original)
    fresh = LlamaCppEngine(smol_weights, threads=2, context_length=1024).batch_chat(
        [BatchRequest(c, 0) for c in second], greedy)
    assert all(a.error is None for a in reused) and [a.text for a in reused] == [a.text for a in fresh]
    prompts = sum(a.usage.prompt_tokens for a in reused)
    assert decoded[0] < prompts / 2, (decoded[0], prompts)  # the prefill call (both prompts fit one chunk)
