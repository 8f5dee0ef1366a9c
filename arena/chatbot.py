"""A Python API in the spirit of the original report's NeuralChat ``build_chatbot``.

    from arena import build_chatbot
    chatbot = build_chatbot(model="Qwen/Qwen2.5-0.5B-Instruct", hub="modelscope",
                            quantization={"bits": 4, "weight_dtype": "int4", "compute_dtype": "bf16",
                                          "group_size": 32})
    print(chatbot.predict("你好"))
    for piece in chatbot.predict_stream("讲个笑话"):
        print(piece, end="", flush=True)

It loads the model in this process through the same engines, sources and INT4 cache
as the arena's workers, so a model quantized here is a cache hit for the arena.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from arena.core.config import DEFAULT_MODELS_FILE, ConfigError, ModelConfig, ModelSource, QuantizeConfig, load_models
from arena.core.generation import GenerationParams, Usage
from arena.serving.engines.registry import load_engine
from arena.serving.sources import resolve


class Chatbot:
    """One loaded model. ``predict`` returns the answer; ``predict_stream`` yields its pieces."""

    def __init__(self, model: ModelConfig, data_dir: Path, threads: int):
        self.config = model
        self.engine = load_engine(model, resolve(model, data_dir), threads=threads, data_dir=data_dir)
        self.last_usage: Usage | None = None

    def predict_stream(self, query: str | list[dict], **generation: Any) -> Iterator[str]:
        messages = [{"role": "user", "content": query}] if isinstance(query, str) else query
        defaults = {k: v for k, v in self.config.generation.items() if k in GenerationParams.__dataclass_fields__}
        params = GenerationParams(**{**defaults, **generation})
        for item in self.engine.stream_chat(messages, params):
            if isinstance(item, Usage):
                self.last_usage = item
            else:
                yield item

    def predict(self, query: str | list[dict], **generation: Any) -> str:
        return "".join(self.predict_stream(query, **generation))


def _entry_for(model: str, quantization: dict | None, hub: str | None, models_file: Path) -> ModelConfig:
    try:
        catalog = {m.id: m for m in load_models(models_file)} if Path(models_file).is_file() else {}
    except ConfigError:
        catalog = {}
    if model in catalog and quantization is None:
        return catalog[model]
    quantize = None
    if quantization:
        quantize = QuantizeConfig(**{k: v for k, v in quantization.items() if k in QuantizeConfig.__dataclass_fields__})
        if problem := quantize.unsupported():
            raise ConfigError(f"unsupported quantization: {problem}")
        if quantize.backend == "itrex":
            raise ConfigError("backend itrex runs only in ITREX's own environment (scripts/install-itrex.sh): add an "
                              "'engine: itrex' entry with this quantize: to models.yaml and open it in the arena")
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        source = ModelSource(dir=str(path.resolve()))
    elif path.is_file():
        source = ModelSource(file=str(path.resolve()))
    elif hub in ("modelscope", "hf") and "/" in model:
        source = ModelSource(**{hub: model})
    else:
        raise ConfigError(f"model {model!r} is not an id in {models_file}, a local directory or file; "
                          f"for a hub id pass hub='modelscope' or hub='hf'")
    name = path.name if path.exists() else model
    return ModelConfig(id=name, name=name, engine="transformers", source=source,
                       quantization=quantize.describe() if quantize else "fp32", license="see the model card",
                       quantize=quantize)


def build_chatbot(model: str, quantization: dict | None = None, *, hub: str | None = None,
                  models_file: Path | str = DEFAULT_MODELS_FILE, data_dir: Path | str | None = None,
                  threads: int | None = None) -> Chatbot:
    """Load ``model`` — a models.yaml id, a local HF directory or GGUF file, or a hub id with
    ``hub=`` — optionally quantized (``{"bits": 4, "weight_dtype": "int4", "compute_dtype": "bf16",
    "group_size": 32, "backend": "torchao"}``), and return a ready ``Chatbot``."""
    from arena.core.config import default_data_dir

    entry = _entry_for(model, quantization, hub, Path(models_file))
    return Chatbot(entry, Path(data_dir) if data_dir else default_data_dir(), threads or os.cpu_count() or 1)
