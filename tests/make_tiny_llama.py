"""Write a tiny random-weight Llama as an HF directory, with a SentencePiece tokenizer.model
trained here (no hub): ``python tests/make_tiny_llama.py OUT_DIR``. Runs in the ITREX env
(transformers 4.40 + sentencepiece), which is the point: neural-speed reads Llama natively.

The sizes are multiples of 128 so every group size neural-speed offers (32, 128, per-channel)
divides every weight matrix."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

CORPUS = ("The capital of Italy is Rome. The capital of France is Paris. Two plus two is four. "
          "A cat sat on the mat and the dog ran in the park. Models answer questions about numbers, "
          "cities, colours and animals. Red, green and blue are colours. One, two, three, four, five.")
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '\\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def build(out: Path, seed: int = 0, layers: int = 32) -> Path:
    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    model_file = io.BytesIO()
    lines = [f"{CORPUS} Sentence number {i} of {n}." for i in range(400) for n in (7, 13)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model_file, vocab_size=384,
                                   model_type="bpe", character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, hard_vocab_limit=False, minloglevel=2)
    (out / "tokenizer.model").write_bytes(model_file.getvalue())
    tokenizer = LlamaTokenizer(str(out / "tokenizer.model"), legacy=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,  # ITREX always asks for room for 1024 new tokens
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    # neural-speed 1.0 reads sharded safetensors (model-00001-of-N) or pytorch_model.bin, as real 7B checkpoints are
    model.save_pretrained(out, safe_serialization=True, max_shard_size="2MB")
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), layers=int(sys.argv[2]) if len(sys.argv) > 2 else 32))
