"""Turn a model into an HF-format directory of fp32 safetensors for an engine in another environment.

Runs in the arena's main environment (modern transformers, which reads GGUF) as
``python -m arena.serving.engines.itrex_prepare [--for itrex|vllm] SOURCE PARENT_DIR``.

- ``vllm``: the model as transformers loads it, saved as safetensors (vLLM reads HF directories).
- ``itrex`` (ITREX 1.4.2 + neural-speed 1.0): neural-speed's Qwen graph assumes one key/value head per
  attention head, so grouped-query attention is expanded (K/V heads repeated: mathematically the same
  model); transformers 4.40 needs the old tokenizer.json merges format, ``rope_theta`` at the top of
  config.json and the chat template inside tokenizer_config.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from arena.serving.engines.base import exit_with_parent


def prepare(source: Path, parent: Path, target: str = "itrex") -> Path:
    """Write the converted model to ``parent/<model_type>`` and return that path. ITREX chooses
    its model adapter by matching the directory name ("qwen", "llama", ...), so the name matters."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": source.name} if source.is_file() else {}
    where = str(source.parent if source.is_file() else source)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    config = model.config
    out = parent / config.model_type
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if target == "itrex" and kv_heads != heads:
        repeat, head_dim = heads // kv_heads, config.hidden_size // heads
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.weight = torch.nn.Parameter(proj.weight.view(kv_heads, head_dim, -1)
                                                     .repeat_interleave(repeat, dim=0).reshape(heads * head_dim, -1))
                    if proj.bias is not None:
                        proj.bias = torch.nn.Parameter(proj.bias.view(kv_heads, head_dim)
                                                       .repeat_interleave(repeat, dim=0).reshape(-1))
        config.num_key_value_heads = heads
    # transformers marks a GGUF-loaded model as "quantized with gguf" and refuses to save it;
    # the weights are plain fp32 by now, so drop the marker.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True, max_shard_size="1GB")
    tokenizer.save_pretrained(partial)
    if target == "itrex":
        _compat_for_transformers_4_40(partial, config)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return out


def _compat_for_transformers_4_40(directory: Path, config) -> None:
    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text())
    rope = getattr(config, "rope_theta", None) or (cfg.get("rope_parameters") or {}).get("rope_theta")
    if rope and "rope_theta" not in cfg:
        cfg["rope_theta"] = float(rope)
    cfg.setdefault("torch_dtype", "float32")
    cfg_path.write_text(json.dumps(cfg, indent=2))
    tok_path = directory / "tokenizer.json"
    if tok_path.is_file():
        tok = json.loads(tok_path.read_text(encoding="utf-8"))
        merges = tok.get("model", {}).get("merges")
        if merges and isinstance(merges[0], list):  # tokenizers >= 0.20 writes pairs; 0.19 reads strings
            merges = tok["model"]["merges"] = [" ".join(pair) for pair in merges]
            tok_path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
        # ITREX loads the slow tokenizer, which reads vocab.json + merges.txt and the special
        # tokens from tokenizer_config.json; transformers 5 writes only tokenizer.json.
        if merges and "vocab" in tok.get("model", {}) and not (directory / "vocab.json").is_file():
            (directory / "vocab.json").write_text(json.dumps(tok["model"]["vocab"], ensure_ascii=False),
                                                  encoding="utf-8")
            (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tc_path, template = directory / "tokenizer_config.json", directory / "chat_template.jinja"
    if tc_path.is_file():
        tc = json.loads(tc_path.read_text(encoding="utf-8"))
        if template.is_file():
            tc.setdefault("chat_template", template.read_text(encoding="utf-8"))
        if not tc.get("unk_token"):  # ITREX pads any "qwen" with Qwen1's <|extra_0|>; let it resolve
            tc["unk_token"] = tc.get("pad_token") or tc.get("eos_token")
        if tok_path.is_file() and not tc.get("added_tokens_decoder"):
            tc["added_tokens_decoder"] = {
                str(t["id"]): {k: t.get(k, False) for k in ("content", "lstrip", "normalized", "rstrip",
                                                              "single_word", "special")}
                for t in json.loads(tok_path.read_text(encoding="utf-8")).get("added_tokens", [])}
        tc_path.write_text(json.dumps(tc, indent=1, ensure_ascii=False), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a GGUF file or an HF-format directory")
    parser.add_argument("parent", type=Path, help="the model is written to PARENT/<model_type>")
    parser.add_argument("--for", dest="target", choices=("itrex", "vllm"), default="itrex",
                        help="the engine that will read it (itrex: expanded K/V heads, transformers 4.40 files)")
    args = parser.parse_args()
    # a conversion takes minutes and gigabytes: stop it when the arena that asked for it is gone
    exit_with_parent()
    print(prepare(args.source, args.parent, args.target))


if __name__ == "__main__":
    main()
