"""ITREX recipes, their cache keys, the native-vs-converted decision and the memory preflight:
everything that runs in the arena's main environment, so CI runs it without the ITREX env."""
import json
import struct

import pytest

from arena.core.config import ITREX_DEFAULT_RECIPE, SUPPORTED_QUANTIZATION, ConfigError, QuantizeConfig, load_models
from arena.core.texts import say
from arena.serving.engines.itrex import cache_dirs, is_complete, mark_complete, native_reason
from arena.serving.engines.registry import itrex_hf_dir
from arena.serving.memory import GB, InsufficientMemory, count_params, estimate, preflight

ENTRY = """models:
  - id: q
    name: Q
    engine: {engine}
    source: {{file: /nonexistent/never-read.gguf}}
    quantization: x
    license: x
{extra}"""


def _catalog(tmp_path, engine="itrex", extra=""):
    path = tmp_path / "models.yaml"
    path.write_text(ENTRY.format(engine=engine, extra=extra))
    return path


def test_an_itrex_entry_without_quantize_gets_the_reports_recipe(tmp_path):
    """No 'quantize:' means the original report's RtnConfig(bits=4, int4_fullrange, int8 compute, group 32, sym)."""
    (model,) = load_models(_catalog(tmp_path))
    assert model.quantize == ITREX_DEFAULT_RECIPE
    assert (model.quantize.weight_dtype, model.quantize.compute_dtype, model.quantize.group_size) == \
        ("int4_fullrange", "int8", 32)


def test_a_measured_itrex_recipe_is_accepted_and_reaches_the_entry(tmp_path):
    """A per-channel fp32-compute recipe (in the measured table) is parsed into the entry as written."""
    extra = "    quantize: {bits: 4, weight_dtype: int4_fullrange, compute_dtype: fp32, group_size: 128, scheme: asym}\n"
    (model,) = load_models(_catalog(tmp_path, extra=extra))
    assert model.quantize == QuantizeConfig(4, "int4_fullrange", "fp32", 128, "asym", "itrex")


@pytest.mark.parametrize("quantize, expected", [
    ("{group_size: 64}", "group_size=64"),                          # neural-speed offers 32, 128, -1 only
    ("{compute_dtype: fp8}", "compute_dtype=fp8"),
    ("{bits: 8, weight_dtype: int4_fullrange}", "bits=8"),         # ITREX would silently turn it into int8
    ("{weight_dtype: int3}", "weight_dtype=int3"),
])
def test_an_unsupported_itrex_recipe_is_refused_with_the_supported_list(tmp_path, quantize, expected):
    """Refused at config load (the GGUF path does not exist, so no weights were read), naming the
    combination, file and line, and listing only the itrex rows that do run."""
    with pytest.raises(ConfigError) as err:
        load_models(_catalog(tmp_path, extra=f"    quantize: {quantize}\n"))
    message = str(err.value)
    assert "unsupported combination" in message and expected in message and "models.yaml:8" in message
    assert "backend=itrex bits=4 weight_dtype=int4_fullrange compute_dtype in ['int8', 'fp32', 'bf16', 'fp16'] scheme=sym group_size in [32, 128, -1]" in message
    assert "backend=torchao" not in message


def test_backends_stay_with_their_engine(tmp_path):
    """torchao on an itrex entry and itrex on a transformers entry are both refused with the fix."""
    with pytest.raises(ConfigError, match="leave out 'backend'"):
        load_models(_catalog(tmp_path, extra="    quantize: {backend: torchao}\n"))
    with pytest.raises(ConfigError, match="set 'engine: itrex'"):
        load_models(_catalog(tmp_path, engine="transformers", extra="    quantize: {backend: itrex}\n"))


def test_the_itrex_table_only_holds_what_neural_speed_offers():
    """Every itrex row uses ITREX 1.4.2's runtime vocabulary: group sizes 32/128/-1, bits 4 or 8."""
    rows = {k: g for k, g in SUPPORTED_QUANTIZATION.items() if k[0] == "itrex"}
    assert rows and ITREX_DEFAULT_RECIPE.unsupported() is None
    for (_, bits, _weight_dtype, compute_dtype, scheme), groups in rows.items():
        assert set(groups) <= {32, 128, -1} and bits in (4, 8) and scheme in ("sym", "asym")
        assert compute_dtype in ("int8", "fp32", "bf16", "fp16")


def test_each_recipe_has_its_own_cache_and_shares_the_fp32_conversion(tmp_path):
    """Two recipes of one source: same fp32 directory, different recipe directories. Another source or
    another library version changes both keys."""
    source = {"files": {"m.gguf": "ab" * 32}}
    versions = {"neural-speed": "1.0", "intel-extension-for-transformers": "1.4.2", "transformers": "4.40.2"}
    other = QuantizeConfig(4, "int4_fullrange", "fp32", 128, "asym", "itrex")
    f32_a, dir_a = cache_dirs(tmp_path, source, ITREX_DEFAULT_RECIPE, versions)
    f32_b, dir_b = cache_dirs(tmp_path, source, other, versions)
    assert f32_a == f32_b and dir_a != dir_b and dir_a.parent == dir_b.parent
    assert dir_a.name.startswith("int4_fullrange-cint8-g32-sym-") and dir_b.name.startswith("int4_fullrange-cfp32-g128-asym-")
    assert cache_dirs(tmp_path, {"files": {"m.gguf": "cd" * 32}}, other, versions)[1] != dir_b
    assert cache_dirs(tmp_path, source, other, {**versions, "neural-speed": "1.1"})[1] != dir_b
    assert cache_dirs(tmp_path, source, other, versions) == (f32_b, dir_b)  # stable


def test_a_directory_counts_as_finished_only_after_its_marker(tmp_path):
    """A half-written conversion (files but no COMPLETE) is not finished; the marker is written atomically."""
    (tmp_path / "ne_qwen2_f32.bin").write_bytes(b"half")
    assert not is_complete(tmp_path)
    mark_complete(tmp_path, seconds=1)
    assert is_complete(tmp_path) and not (tmp_path / "COMPLETE.partial").exists()
    assert json.loads((tmp_path / "COMPLETE").read_text())["seconds"] == 1


def _hf_dir(path, model_type, files=("model-00001-of-00002.safetensors", "tokenizer.model")):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    for name in files:
        (path / name).write_bytes(b"")
    return path


def test_native_architectures_go_to_itrex_as_they_are(tmp_path):
    """Llama with sharded weights and a SentencePiece model, ChatGLM and Qwen(1) are read natively; the
    ITREX preparation returns the very same directory and creates no converted copy. Qwen2 and a Llama
    without tokenizer.model are converted."""
    data = tmp_path / "data"
    for model_type in ("llama", "chatglm", "qwen"):
        directory = _hf_dir(tmp_path / model_type, model_type)
        assert native_reason(directory)[0]
        (model,) = load_models(_catalog(tmp_path, extra=""))
        assert itrex_hf_dir(model, directory, data, lambda state, detail: None) == directory
    assert not (data / "itrex").exists()
    assert not native_reason(_hf_dir(tmp_path / "qwen2", "qwen2"))[0]
    assert "tokenizer.model" in say(native_reason(_hf_dir(tmp_path / "llama-tj", "llama", files=("tokenizer.json",)))[1])


def _safetensors(path, shapes):
    header = {name: {"dtype": "F32", "shape": list(shape), "data_offsets": [0, 0]} for name, shape in shapes.items()}
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


def test_parameters_are_counted_from_headers(tmp_path):
    """count_params sums tensor shapes from safetensors headers (index-listed shards), reading no weights."""
    directory = tmp_path / "m"
    directory.mkdir()
    _safetensors(directory / "model-00001-of-00002.safetensors", {"a": (1000, 1000)})
    _safetensors(directory / "model-00002-of-00002.safetensors", {"b": (10, 10), "c": (7,)})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors"}}))
    assert count_params(directory) == 1_000_000 + 100 + 7


def test_memory_preflight_refuses_or_warns_with_numbers(monkeypatch):
    """A 6B model's neural-speed conversion (about 6.4 B/param) does not fit in 24 GB: refused with the
    need, the available memory and what to do; close to the limit: a warning; ARENA_MEMORY_CHECK=warn downgrades."""
    monkeypatch.delenv("ARENA_MEMORY_CHECK", raising=False)
    need = estimate("itrex-convert", 6_200_000_000)
    assert 35 * GB < need < 45 * GB
    with pytest.raises(InsufficientMemory) as err:
        preflight("chatglm3-6b", "itrex-convert", 6_200_000_000, available=int(24 * GB))
    assert "needs about" in str(err.value) and "24.0 GB is available" in str(err.value) and "6.20 B" in str(err.value)
    assert preflight("small", "itrex-convert", 500_000_000, available=int(24 * GB)) is None
    small = estimate("itrex-convert", 500_000_000)
    tight = preflight("tight", "itrex-convert", 500_000_000, available=int(small / 0.9))
    assert say(tight).startswith("warning") and say(tight, "zh").startswith("注意")
    assert "转换为 neural-speed fp32 chatglm3-6b" in say(err.value.reason, "zh")  # the page reads it in Chinese
    monkeypatch.setenv("ARENA_MEMORY_CHECK", "warn")
    assert say(preflight("chatglm3-6b", "itrex-convert", 6_200_000_000, available=int(24 * GB))).startswith("warning")


def test_the_itrex_catalog_opens_with_two_recipes_of_the_same_weights():
    """models-itrex.yaml's default pair is two ITREX entries of one source under clearly different recipes."""
    from ..conftest import ROOT

    a, b = load_models(ROOT / "models-itrex.yaml")[:2]
    assert a.engine == b.engine == "itrex" and a.source == b.source
    assert a.quantize == ITREX_DEFAULT_RECIPE
    assert (b.quantize.group_size, b.quantize.compute_dtype) != (a.quantize.group_size, a.quantize.compute_dtype)


def test_the_report_catalog_loads_and_refuses_chatglm_under_transformers(tmp_path):
    """models-report.yaml parses; ChatGLM3 under transformers is refused before loading, naming engine: itrex."""
    from arena.serving.engines.registry import _prepare_transformers
    from arena.serving.sources import SourceError

    from ..conftest import ROOT

    models = {m.id: m for m in load_models(ROOT / "models-report.yaml")}
    assert models["chatglm3-6b-itrex-int4"].trust_remote_code and models["qwen-7b-chat-itrex-int4"].engine == "itrex"
    directory = _hf_dir(tmp_path / "chatglm3-6b", "chatglm", files=("pytorch_model-00001-of-00007.bin",))
    with pytest.raises(SourceError, match="engine: itrex"):
        _prepare_transformers(models["chatglm3-6b-torchao-int4"], directory, tmp_path, lambda state, detail: None)
