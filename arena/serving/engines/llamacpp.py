"""GGUF models through llama-cpp-python.

``stream_chat`` serves the page (one sequence, llama-cpp-python's high-level API).
``batch_chat`` serves batch runs: several sequences decoded together in one
``llama_batch`` with one ``seq_id`` each, which on 2 cores gives 1.5-1.9x the
aggregate tokens/s of one sequence at a time (DESIGN.md §9, BENCHMARKS.md).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from arena.core.generation import GenerationParams, TokenLogprob, Usage
from arena.serving.engines.base import SCORE_CHUNK, BatchAnswer, BatchRequest, in_groups, top_logprobs
from arena.serving.engines.context import approximate_count

PENALTY_LAST_N = 64  # llama-cpp-python's default window for repeat_penalty (last_n_tokens_size)
MAX_BATCH = 16       # sequences decoded together; more gives little on 2 cores and costs KV memory
N_BATCH = 512        # tokens per llama_decode call during prefill (never above n_ctx: see _context)


class _TokenCounter:
    """A no-op logits processor: llama.cpp calls it once per sampled token, which
    gives exact prompt and completion token counts (its stream carries no usage)."""

    def __init__(self) -> None:
        self.calls = 0
        self.prompt_tokens = 0

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.calls == 0:
            self.prompt_tokens = len(input_ids)
        self.calls += 1
        return scores


def sample_token(logits: np.ndarray, history: list[int], params: GenerationParams,
                 rng: np.random.Generator) -> int:
    """Pick the next token from one sequence's logits, as llama.cpp's default sampler chain would:
    repeat penalty over the last 64 generated tokens (llama.cpp's penalty sampler sees only the tokens
    it sampled, not the prompt), then greedy (temperature 0) or top-k / top-p / min-p /
    temperature sampling with this sequence's own RNG (so an answer does not depend on its batch-mates)."""
    logits = np.array(logits, dtype=np.float32)  # a copy: the buffer belongs to llama.cpp
    if params.repeat_penalty and params.repeat_penalty != 1.0 and history:
        recent = np.unique(np.asarray(history[-PENALTY_LAST_N:], dtype=np.int64))
        values = logits[recent]
        logits[recent] = np.where(values > 0, values / params.repeat_penalty, values * params.repeat_penalty)
    if params.temperature <= 0:
        return int(np.argmax(logits))
    order = np.argsort(-logits)
    if params.top_k:
        order = order[:params.top_k]
    scaled = logits[order] / params.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    keep = len(probs)
    if params.top_p is not None and params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
    if params.min_p:
        keep = min(keep, max(1, int(np.sum(probs >= params.min_p * probs[0]))))
    probs = probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(keep, p=probs)])


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def complete_utf8(data: bytes) -> str:
    """Decode, dropping a multi-byte character cut in half at the end (an answer stopped at max tokens
    can end inside a Chinese character); invalid bytes elsewhere become U+FFFD."""
    for cut in range(4):
        try:
            return data[:len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


class LlamaCppEngine:
    def __init__(self, weights: Path, threads: int, context_length: int, batch_flash_attn: bool = True):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(weights), n_ctx=context_length, n_threads=threads,
                         n_threads_batch=threads, verbose=False)
        self.threads = threads
        self.context_length = context_length
        # Flash attention only for batch runs: +13% prefill here, and the page's path stays as measured.
        self.batch_flash_attn = batch_flash_attn
        self._formatter = None
        self._batch_ctx = None
        self._batch_ctx_key: tuple[int, int] | None = None
        # Tokens held in the batch context's KV cache per sequence id, from the previous call: a request
        # that starts with them (a judge's second turn, the same system prompt) prefills only the rest.
        self._kv_tokens: dict[int, list[int]] = {}

    def n_params(self) -> int:
        return int(self.llm._model.n_params())

    def token_text(self, token: int) -> str:
        """A token as text (a piece of a multi-byte character shows as U+FFFD)."""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens the chat prompt takes (content tokens plus template markers, slightly over)."""
        tokenize = lambda text: len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))  # noqa: E731
        return approximate_count(tokenize)(messages)

    def stream_chat(self, messages: list[dict], params: GenerationParams) -> Iterator[str | Usage]:
        from llama_cpp import LogitsProcessorList

        counter = _TokenCounter()
        extra = {k: v for k, v in (("top_k", params.top_k), ("min_p", params.min_p),
                                   ("repeat_penalty", params.repeat_penalty), ("seed", params.seed))
                 if v is not None}
        finish = "stop"
        for chunk in self.llm.create_chat_completion(
                messages=messages, stream=True, temperature=params.temperature, top_p=params.top_p,
                max_tokens=params.max_new_tokens, logits_processor=LogitsProcessorList([counter]), **extra):
            choice = chunk["choices"][0]
            if text := choice["delta"].get("content"):
                yield text
            finish = choice.get("finish_reason") or finish
        # The end-of-turn token is sampled (and counted) but not part of the answer.
        completion = counter.calls - (1 if finish == "stop" and counter.calls else 0)
        yield Usage(prompt_tokens=counter.prompt_tokens, completion_tokens=completion, finish_reason=finish)

    # -- batched decoding -----------------------------------------------------------------------
    def _prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The chat template embedded in the GGUF, rendered and tokenized as create_chat_completion does."""
        from llama_cpp import llama_chat_format

        if self._formatter is None:
            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise RuntimeError("this GGUF has no embedded chat template; batch decoding needs one")
            model = self.llm._model
            eos, bos = model.token_eos(), model.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "")
        rendered = self._formatter(messages=messages)
        return self.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)

    def _context(self, n_seq: int, per_seq: int):
        """A context for ``n_seq`` sequences of up to ``per_seq`` tokens each, kept between calls.

        llama.cpp splits n_ctx evenly over n_seq_max (kv_unified off), so n_ctx = n_seq x per_seq;
        and it silently caps n_batch at n_ctx, so n_batch is set to at most n_ctx here and the
        prefill below never sends more than n_batch tokens (more hits a GGML_ASSERT that kills
        the process instead of returning an error). The previous context is reused (with its KV
        cache, see ``_reuse``) while it has as many sequences and room enough; a new one gets
        256 tokens of headroom per sequence, so a follow-up turn of the same conversations fits."""
        import llama_cpp
        from llama_cpp._internals import LlamaContext

        if self._batch_ctx is not None and self._batch_ctx_key[0] == n_seq and self._batch_ctx_key[1] >= per_seq:
            return self._batch_ctx
        if self._batch_ctx is not None:
            self._batch_ctx.close()
            self._batch_ctx = None
        per_seq = min(-(-per_seq // 256) * 256 + 256, max(self.context_length, per_seq))
        self._kv_tokens = {}
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = n_seq * per_seq
        p.n_batch = p.n_ubatch = min(N_BATCH, p.n_ctx)
        p.n_seq_max = n_seq
        p.kv_unified = False
        p.n_threads = p.n_threads_batch = self.threads
        p.no_perf = True
        p.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.batch_flash_attn
                             else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._batch_ctx = LlamaContext(model=self.llm._model, params=p, verbose=False)
        self._batch_ctx_key = (n_seq, per_seq)
        return self._batch_ctx

    def _reuse(self, ctx, prompts: dict[int, list[int]]) -> tuple[list[int], dict[int, int]]:
        """Give each request the sequence id whose cached tokens share its longest prefix and drop the
        cached tokens after that prefix. Returns (request index per sequence id, cached prefix length
        per request). A prompt's last token is always decoded again: its logits give the first token."""
        import llama_cpp

        free = list(range(len(prompts)))
        owner: dict[int, int] = {}
        cached: dict[int, int] = {}
        for i, tokens in prompts.items():
            shared = {s: _common_prefix(self._kv_tokens.get(s, []), tokens) for s in free}
            s = max(free, key=shared.__getitem__)
            free.remove(s)
            owner[s] = i
            cached[i] = min(shared[s], len(tokens) - 1)
        memory = llama_cpp.llama_get_memory(ctx.ctx)
        if not all(llama_cpp.llama_memory_seq_rm(memory, s, cached[i], -1) for s, i in owner.items()):
            llama_cpp.llama_memory_clear(memory, True)  # this cache can't drop a tail: prefill everything
            cached = dict.fromkeys(prompts, 0)
        return [owner[s] for s in range(len(prompts))], cached

    def batch_chat(self, requests: list[BatchRequest], params: GenerationParams) -> list[BatchAnswer]:
        return in_groups(requests, MAX_BATCH, lambda group: self._decode_group(group, params))

    def _decode_group(self, requests: list[BatchRequest], params: GenerationParams) -> list[BatchAnswer]:
        """One group of requests decoded together: their prompts prefilled (a prefix already in a sequence's cache
        is reused), then one token per unfinished sequence per step, finished ones leaving the batch."""
        started = time.perf_counter()
        answers = [BatchAnswer() for _ in requests]
        prompts = self._group_prompts(requests, answers)
        if not prompts:
            return answers
        limit = {i: min(params.max_new_tokens, self.context_length - len(t)) for i, t in prompts.items()}
        ctx = self._context(len(prompts), max(len(prompts[i]) + limit[i] for i in prompts))
        seqs, cached = self._reuse(ctx, prompts)  # seq_id s answers request seqs[s]
        self._kv_tokens = {}  # unknown until this call ends well
        group = _Group(self, ctx, requests, params, answers, prompts, limit, seqs, started)
        try:
            group.run(cached)
            self._kv_tokens = {s: prompts[i] + group.generated[i][:group.fed[i]] for s, i in enumerate(seqs)}
        except Exception as exc:
            group.fail(exc)
        finally:
            group.batch.close()
        for i in seqs:
            answer = answers[i]
            answer.text = complete_utf8(self.llm.detokenize(group.generated[i]))
            answer.usage = Usage(len(prompts[i]), len(group.generated[i]), group.finish.get(i, "error"))
            if answer.total_s is None:
                answer.total_s = time.perf_counter() - started
        return answers

    def _group_prompts(self, requests: list[BatchRequest], answers: list[BatchAnswer]) -> dict[int, list[int]]:
        """Each request's prompt tokens, by request index; a prompt that can't be built or can't fit the context
        leaves its answer with the error instead."""
        prompts: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            try:
                tokens = self._prompt_tokens(request.messages)
            except Exception as exc:
                answers[i].error = f"could not build the prompt: {type(exc).__name__}: {exc}"
                continue
            if len(tokens) + 1 >= self.context_length:
                answers[i].error = (f"prompt of {len(tokens)} tokens does not fit the context of "
                                    f"{self.context_length} tokens")
                continue
            prompts[i] = tokens
        return prompts

    # -- scoring a text (python -m arena quality) --------------------------------------------------
    def score_tokens(self, ids: list[int], top: int, gather: list[list[int]] | None, tail: int = 0) -> dict:
        """Teacher forcing over ``ids`` in a context of their own, sized to the text, logits for every token
        (llama-perplexity's logits_all). The chat and batch contexts are left as they were."""
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        from arena.serving.scoring import score_sequence

        p = llama_cpp.llama_context_default_params()
        p.n_ctx = len(ids) + 8
        p.n_batch = p.n_ubatch = SCORE_CHUNK
        p.n_seq_max = 1
        p.n_threads = p.n_threads_batch = self.threads
        p.no_perf = True
        ctx = LlamaContext(model=self.llm._model, params=p, verbose=False)
        batch = LlamaBatch(n_tokens=SCORE_CHUNK, embd=0, n_seq_max=1, verbose=False)
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.llm._model.model))

        def forward(start: int, stop: int) -> np.ndarray:
            b = batch.batch
            for j, pos in enumerate(range(start, stop)):
                b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = ids[pos], pos, 1, True
                b.seq_id[j][0] = 0
            b.n_tokens = stop - start
            if (rc := llama_cpp.llama_decode(ctx.ctx, b)) != 0:
                raise RuntimeError(f"llama_decode returned {rc} at position {start}")
            # valid until the next decode; score_sequence reduces it before asking for more
            return np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx.ctx), shape=(stop - start, n_vocab))

        try:
            return score_sequence(ids, top, gather, SCORE_CHUNK, forward, tail)
        finally:
            batch.close()
            ctx.close()


class _Group:
    """The state of one batch group while llama.cpp decodes it: the sequences' generated tokens, their finish
    reasons and the answers' timings. ``seqs[s]`` is the request that sequence ``s`` answers."""

    def __init__(self, engine: "LlamaCppEngine", ctx, requests: list[BatchRequest], params: GenerationParams,
                 answers: list[BatchAnswer], prompts: dict[int, list[int]], limit: dict[int, int], seqs: list[int],
                 started: float):
        import llama_cpp
        from llama_cpp._internals import LlamaBatch

        self.lib = llama_cpp  # imported once here, not per sampled token
        self.engine, self.ctx, self.params, self.answers = engine, ctx, params, answers
        self.prompts, self.limit, self.seqs = prompts, limit, seqs
        self.started = started  # the answers' stopwatch, from when the group was handed over
        self.fed = dict.fromkeys(seqs, 0)  # generated tokens decoded into the cache, per request
        self.n_batch = llama_cpp.llama_n_batch(ctx.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(engine.llm._model.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.rngs = {i: np.random.default_rng(requests[i].seed if requests[i].seed is not None else 0) for i in seqs}
        self.generated: dict[int, list[int]] = {i: [] for i in seqs}
        self.finish: dict[int, str] = {}
        self.batch = LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)

    def run(self, cached: dict[int, int]) -> None:
        """Prefill every prompt in chunks of at most n_batch tokens, with logits only for each prompt's last token
        (a prefix already in this sequence's cache, ``cached``, is not decoded again); then decode one token per
        unfinished sequence per step."""
        seqs, prompts, generated = self.seqs, self.prompts, self.generated
        flat = [(s, pos, tok, pos == len(prompts[i]) - 1)
                for s, i in enumerate(seqs) for pos, tok in enumerate(prompts[i]) if pos >= cached[i]]
        for at in range(0, len(flat), self.n_batch):
            chunk = flat[at:at + self.n_batch]
            self.decode(chunk)
            for j, (s, _, _, want) in enumerate(chunk):
                if want:
                    self.take(j, seqs[s])
        while active := [s for s, i in enumerate(seqs) if i not in self.finish]:
            self.decode([(s, len(prompts[seqs[s]]) + len(generated[seqs[s]]) - 1, generated[seqs[s]][-1], True)
                         for s in active])
            for j, s in enumerate(active):
                self.fed[seqs[s]] += 1
                self.take(j, seqs[s])

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """entries: (seq_id, position, token, wants_logits); len(entries) <= n_batch."""
        assert len(entries) <= self.n_batch  # a larger batch would abort the process inside ggml
        b = self.batch.batch
        for j, (s, pos, tok, want) in enumerate(entries):
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = tok, pos, 1, want
            b.seq_id[j][0] = s
        b.n_tokens = len(entries)
        rc = self.lib.llama_decode(self.ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def take(self, j: int, i: int) -> None:
        """Sample request i's next token from output row j; note first-token and finish times (and, asked for,
        the token's log-probability and its best alternatives)."""
        params, answer, generated = self.params, self.answers[i], self.generated[i]
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx.ctx, j), shape=(self.n_vocab,))
        token = sample_token(logits, generated, params, self.rngs[i])
        if params.top_logprobs is not None:
            _, top, logprobs = top_logprobs(logits, params.top_logprobs, self.engine.token_text)
            answer.logprobs = (answer.logprobs or []) + [
                TokenLogprob(self.engine.token_text(token), float(logprobs[token]), top)]
        now = time.perf_counter() - self.started
        if answer.ttft_s is None:
            answer.ttft_s = now
        if self.lib.llama_vocab_is_eog(self.vocab, token):
            self.finish[i] = "stop"
        else:
            generated.append(token)
            if len(generated) >= self.limit[i]:
                self.finish[i] = "length"
        if i in self.finish:
            answer.total_s = now

    def fail(self, exc: Exception) -> None:
        """A failed decode: the cache is cleared and every unfinished answer says why."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx.ctx), True)
        for i in self.seqs:
            if i not in self.finish:
                self.answers[i].error = f"batch decoding failed: {type(exc).__name__}: {exc}"
