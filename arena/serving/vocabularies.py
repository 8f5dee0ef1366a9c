"""A local model's vocabulary, read from its files without loading its weights, so that ``python -m arena
quality`` refuses to compare models with different tokenizers before it spends minutes loading them.

Two readers: a GGUF file through llama.cpp's ``vocab_only`` load (0.5 s for Qwen's 152k tokens), and an
HF-format directory through its ``tokenizer.json``. Both give the token strings by id in the same byte-level
form, so one fingerprint compares a GGUF with the HF directory it was converted from or to. Padding rows are
left out: GGUF converters add ``[PAD<id>]`` entries (marked unused) up to the embedding size, transformers'
GGUF loader keeps them as added tokens, and the original HF tokenizer has none.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from arena.core.config import ModelConfig

_PADDING = re.compile(r"\[PAD(\d{1,7})\]")  # bounded: token strings are short


class VocabularyError(ValueError):
    """A model's vocabulary cannot be read (no tokenizer file, an unreadable GGUF)."""


@dataclass(frozen=True)
class Vocabulary:
    source: str                              # what it was read from, for messages
    size: int                                # tokens, padding rows left out
    fingerprint: str
    tokenize: Callable[[str], list[int]]     # plain text to ids, no special tokens added


def fingerprint(tokens: dict[int, str]) -> str:
    """One hash of a vocabulary: every (id, token) pair in id order, padding rows left out."""
    kept = sorted((i, t) for i, t in tokens.items() if not _is_padding(i, t))
    return hashlib.sha256("\x00".join(f"{i}\x01{t}" for i, t in kept).encode("utf-8", "surrogateescape")).hexdigest()[:20]


def _is_padding(token_id: int, text: str) -> bool:
    match = _PADDING.fullmatch(text)
    return bool(match) and int(match.group(1)) == token_id


def _vocabulary(source: str, tokens: dict[int, str], tokenize: Callable[[str], list[int]]) -> Vocabulary:
    """A vocabulary read by either reader: its size and fingerprint, padding rows left out of both."""
    return Vocabulary(source, sum(not _is_padding(i, t) for i, t in tokens.items()), fingerprint(tokens), tokenize)


def from_gguf(path: Path) -> Vocabulary:
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    try:
        with suppress_stdout_stderr(disable=False):  # a vocab-only context warns about its (unknown) training size
            llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    except Exception as exc:
        raise VocabularyError(f"cannot read the vocabulary of {path}: {type(exc).__name__}: {exc}") from None
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    tokens = {i: llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", "surrogateescape")
              for i in range(llama_cpp.llama_vocab_n_tokens(vocab))
              if llama_cpp.llama_vocab_get_attr(vocab, i) != llama_cpp.LLAMA_TOKEN_ATTR_UNUSED}
    return _vocabulary(f"GGUF {path.name}", tokens,
                       lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def from_hf_dir(path: Path) -> Vocabulary:
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    if not file.is_file():
        raise VocabularyError(f"{path} has no tokenizer.json (a fast tokenizer); the arena compares vocabularies "
                              f"through it. Save one with transformers: AutoTokenizer.from_pretrained(dir)"
                              f".save_pretrained(dir)")
    tokenizer = Tokenizer.from_file(str(file))
    tokens = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    return _vocabulary(f"tokenizer.json in {path}", tokens,
                       lambda text: tokenizer.encode(text, add_special_tokens=False).ids)


def of_model(model: ModelConfig, data_dir: Path) -> Vocabulary:
    """The vocabulary of a local model (its weights resolved, never loaded): a GGUF's own, or the HF
    directory's. An engine that converts a GGUF (transformers, ITREX) keeps its vocabulary."""
    from arena.serving.sources import resolve

    weights = resolve(model, data_dir)
    return from_hf_dir(weights) if weights.is_dir() else from_gguf(weights)
