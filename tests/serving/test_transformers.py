"""The transformers engine on the real Qwen2.5-Coder-0.5B weights: dequantized from the GGUF,
quantized to INT4 (torchao), a real answer and the INT4 cache hit on the second load (no fp32
model built). The cache's corruption handling and the quanto alternative run the same code on
SmolLM2-135M, which loads in seconds. Plus the engine's clear refusals."""
import dataclasses
import json
from pathlib import Path

import pytest

from arena.core.config import ConfigError, ModelConfig, ModelSource, QuantizeConfig, load_models
from arena.core.generation import GenerationParams, Usage
from arena.serving.engines.registry import load_engine
from arena.serving.sources import SourceError, resolve

from ..conftest import ROOT

QUESTION = [{"role": "user", "content": "What is 2 + 3? Answer with the number only."}]
pytestmark = pytest.mark.timeout(900)  # reading the Qwen GGUF into fp32 takes minutes on a busy host


@pytest.fixture(scope="module")
def qwen_int4(tmp_path_factory):
    """The shipped catalog's torchao entry, with its caches in a fresh data dir."""
    model = next(m for m in load_models(ROOT / "models.yaml") if m.id == "qwen2.5-coder-0.5b-torchao-int4")
    weights = resolve(model, ROOT / "data")  # the assembled GGUF that scripts/install.sh prepared
    return model, weights, tmp_path_factory.mktemp("int4")


def answer(engine) -> tuple[str, Usage]:
    text, usage = "", None
    for item in engine.stream_chat(QUESTION, GenerationParams(temperature=0.0, max_new_tokens=8)):
        if isinstance(item, Usage):
            usage = item
        else:
            text += item
    return text, usage


def _parts(tensor) -> list:
    """A tensor as the plain tensors it is made of: INT4 tensor subclasses (torchao, quanto) are
    flattened into their packed data, scales and zero points."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return [part for name in names for part in _parts(getattr(tensor, name))]
    return [tensor]


def weights_of(engine) -> dict:
    """Every parameter and buffer as plain tensors: what the INT4 cache promises to give back bit for bit."""
    return {name: _parts(t.detach()) for name, t in engine.hf_model.state_dict().items()}


def last_logits(engine):
    """Next-token logits for QUESTION. Compared with a tolerance: bf16 kernels take different paths on
    different CPUs (and after a reload), so greedy text is not something the cache can promise."""
    import torch

    inputs = engine.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)
    with torch.no_grad():
        return engine.hf_model(**inputs).logits[0, -1].float()


def assert_same_model(fresh, reloaded) -> None:
    """The cache's promise: identical tensors, and logits equal within bf16 kernel noise."""
    import torch

    a, b = weights_of(fresh), weights_of(reloaded)
    assert a.keys() == b.keys()
    different = [name for name in a if len(a[name]) != len(b[name])
                 or not all(torch.equal(x, y) for x, y in zip(a[name], b[name]))]
    assert not different, f"tensors changed through the cache: {different[:5]}"
    la, lb = last_logits(fresh), last_logits(reloaded)
    # Measured on an AMD EPYC: at most 0.24 apart on a scale of 17.6. 5% of the scale allows that, not a broken model.
    assert torch.max(torch.abs(la - lb)) <= 0.05 * torch.max(torch.abs(la)), (la - lb).abs().max()
    assert int(la.argmax()) in torch.topk(lb, 3).indices.tolist()


def phases(out: str) -> list[str]:
    """The English text of each phase line a worker printed (the phrase as JSON follows a tab)."""
    return [line.split("ARENA_PHASE: ", 1)[1].split("\t")[0] for line in out.splitlines() if "ARENA_PHASE: " in line]


def test_int4_answers_then_reloads_from_cache_without_building_fp32(qwen_int4, capfd):
    model, weights, data = qwen_int4
    engine = load_engine(model, weights, threads=2, data_dir=data)
    first = phases(capfd.readouterr().out)
    assert any(p.startswith("quantizing to INT4") for p in first)
    text, usage = answer(engine)
    assert "5" in text and usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 8
    linear = engine.hf_model.model.layers[0].mlp.down_proj.weight
    assert "Int4" in type(linear).__name__  # really quantized, not fp32

    reloaded = load_engine(model, weights, threads=2, data_dir=data)
    second = phases(capfd.readouterr().out)
    assert second == ["loading INT4 weights from the cache"]  # no fp32 load, no quantize
    assert_same_model(engine, reloaded)
    meta = json.loads(next((data / "int4-cache").glob("*/arena-cache.json")).read_text())
    assert meta["quantize"]["group_size"] == 32 and meta["versions"]["torchao"]


@pytest.fixture
def smol_int4(smol_weights, tmp_path):
    """SmolLM2-135M through the same transformers INT4 path: the cache mechanics, fast."""
    model = ModelConfig("smol-int4", "Smol INT4", "transformers", ModelSource(file=str(smol_weights)), "x", "x",
                        quantize=QuantizeConfig(group_size=32))
    return model, smol_weights, tmp_path


def test_a_corrupt_cache_entry_is_detected_and_rebuilt(smol_int4, capfd):
    model, weights, data = smol_int4
    first = load_engine(model, weights, threads=2, data_dir=data)
    capfd.readouterr()
    (cache,) = [p for p in (data / "int4-cache").iterdir() if p.is_dir()]
    with open(cache / "weights.pt", "r+b") as fh:  # damage that torch.load itself would not notice
        fh.seek(fh.seek(0, 2) // 2)
        fh.write(b"corrupted!")
    engine = load_engine(model, weights, threads=2, data_dir=data)
    rebuilt = phases(capfd.readouterr().out)
    assert "weights.pt is corrupt (checksum mismatch)" in rebuilt[0]
    assert any(p.startswith("quantizing") for p in rebuilt)
    assert_same_model(first, engine)
    load_engine(model, weights, threads=2, data_dir=data)
    assert phases(capfd.readouterr().out) == ["loading INT4 weights from the cache"]  # the rebuilt entry is good


class _Payload:
    """Unpickling this would run code (create a file): what a planted cache entry could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_cache_entry_that_would_run_code_is_refused_not_unpickled(smol_int4, capfd):
    """Someone who can write the cache directory replaces weights.pt with a pickle that runs code, and fixes
    the checksum in arena-cache.json to match: the load refuses it (weights_only) and rebuilds the entry,
    and the payload never ran."""
    import torch

    from arena.serving.sources import sha256_of

    model, weights, data = smol_int4
    load_engine(model, weights, threads=2, data_dir=data)
    capfd.readouterr()
    (cache,) = [p for p in (data / "int4-cache").iterdir() if p.is_dir()]
    marker = data / "payload-ran"
    torch.save({"model.embed_tokens.weight": _Payload(marker)}, cache / "weights.pt")
    meta = json.loads((cache / "arena-cache.json").read_text())
    meta["weights_sha256"] = sha256_of(cache / "weights.pt")
    (cache / "arena-cache.json").write_text(json.dumps(meta))
    engine = load_engine(model, weights, threads=2, data_dir=data)
    rebuilt = phases(capfd.readouterr().out)
    assert not marker.exists(), "the planted pickle ran code"
    assert any("the INT4 cache is not usable (UnpicklingError" in p for p in rebuilt), rebuilt
    assert any(p.startswith("quantizing") for p in rebuilt)
    assert answer(engine)[1].completion_tokens > 0


def test_unsupported_quantization_is_refused_before_any_weights_load(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("""models:
  - id: q
    name: Q
    engine: transformers
    source: {dir: somewhere}
    quantize: {bits: 3, weight_dtype: int3, compute_dtype: fp32}
    quantization: x
    license: x
""")
    with pytest.raises(ConfigError, match=r"unsupported combination .*Supported: backend=torchao bits=4"):
        load_models(path)
    path.write_text(path.read_text().replace("engine: transformers", "engine: llamacpp")
                    .replace("{dir: somewhere}", "{file: a.gguf}"))
    with pytest.raises(ConfigError, match="'quantize' applies to engines 'transformers' and 'itrex' only"):
        load_models(path)


def _hf_model(tmp_path: Path, config: dict) -> ModelConfig:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return ModelConfig("custom", "Custom", "transformers", ModelSource(dir=str(directory)), "x", "x",
                       quantize=QuantizeConfig(), line=7)


def test_model_needing_remote_code_names_the_setting(tmp_path):
    model = _hf_model(tmp_path, {"model_type": "my_arch", "auto_map": {"AutoConfig": "cfg.MyConfig"}})
    with pytest.raises(RuntimeError, match="set 'trust_remote_code: true' in models.yaml line 7"):
        load_engine(model, resolve(model, tmp_path), threads=1, data_dir=tmp_path)


def test_unknown_architecture_names_the_transformers_version(tmp_path):
    model = _hf_model(tmp_path, {"model_type": "totally_unknown_arch"})
    with pytest.raises(RuntimeError, match=r"transformers 5\.\d+\.\d+ cannot load custom"):
        load_engine(model, resolve(model, tmp_path), threads=1, data_dir=tmp_path)


@pytest.mark.parametrize("hub", ["modelscope", "hf"])
def test_hub_download_without_network_or_cache_says_what_was_tried(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MODELSCOPE_OFFLINE", "1")
    model = ModelConfig("m", "M", "transformers", ModelSource(**{hub: "no-such-org/no-such-model"}), "x", "x", line=3)
    with pytest.raises(SourceError) as err:
        resolve(model, tmp_path)
    message = str(err.value)
    assert f"{hub} model 'no-such-org/no-such-model'" in message and str(tmp_path / hub) in message
    assert "point 'source.dir' at it (models.yaml line 3)" in message


def test_build_chatbot_python_api(qwen_int4, tmp_path):
    from arena import build_chatbot

    model, weights, data = qwen_int4
    bot = build_chatbot(model.id, data_dir=data, threads=2)  # the catalog entry, its INT4 cache already built
    assert "5" in bot.predict(QUESTION[0]["content"], temperature=0.0, max_new_tokens=8)
    pieces = list(bot.predict_stream("Say hi.", temperature=0.0, max_new_tokens=6))
    assert len(pieces) >= 1 and bot.last_usage.completion_tokens <= 6
    with pytest.raises(ConfigError, match="unsupported quantization"):
        build_chatbot(str(weights), quantization={"bits": 4, "weight_dtype": "int4_fullrange",
                                                  "compute_dtype": "int8", "group_size": 32})


def test_quanto_alternative_quantizes_and_reloads_from_its_cache(smol_int4, capfd):
    base, weights, data = smol_int4
    model = dataclasses.replace(base, id="smol-quanto", quantize=QuantizeConfig(group_size=128, backend="quanto"))
    fresh = load_engine(model, weights, threads=2, data_dir=data)
    assert any(p.startswith("quantizing to INT4 (quanto") for p in phases(capfd.readouterr().out))
    engine = load_engine(model, weights, threads=2, data_dir=data)
    assert phases(capfd.readouterr().out) == ["loading INT4 weights from the cache"]
    assert "QBits" in type(engine.hf_model.model.layers[0].mlp.down_proj.weight).__name__
    assert_same_model(fresh, engine)
    assert answer(engine)[0]  # and it still answers


def test_a_build_lock_left_by_a_killed_process_does_not_hang_quanto():
    """A process killed while compiling quanto's kernels leaves torch's build lock file behind; the next quanto
    load removes it under the arena's own lock (which dies with its holder) instead of waiting on it forever.
    Found as a suite that hung 10 minutes in the quanto test after an earlier run was killed."""
    import subprocess
    import sys

    from optimum.quanto.library.extensions import get_extension

    build = Path(get_extension("quanto_cpp").build_directory)
    build.mkdir(parents=True, exist_ok=True)
    (build / "lock").touch()
    done = subprocess.run([sys.executable, "-c", "from arena.serving.engines.transformers import quanto_kernels; "
                           "quanto_kernels()"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (build / "lock").exists()
