"""The engine registry: what the supervisor needs to know to run each engine's worker.

Each local engine declares the sources it accepts, the interpreter its worker runs in (``None``
when that environment is not installed, with the command that installs it), and a preparation
step that runs in the arena's own environment before the worker starts: conversions, cache
look-ups and the memory preflight. The supervisor calls these and knows no engine by name.
``openai`` models are not here: nothing runs locally, the supervisor's remote prober checks them.
An engine whose ``serve`` is set (vllm) runs a server of its own instead of an arena worker.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from arena.core.config import ITREX_DEFAULT_RECIPE, PROJECT_DIR, SOURCE_KINDS, ModelConfig
from arena.core.texts import Phrase, phrase
from arena.serving import memory
from arena.serving.engines.base import ChatEngine
from arena.serving.sources import SourceError, source_identity

Report = Callable[[str, "Phrase | str"], None]  # (state, detail) shown on the status panel


@dataclass(frozen=True)
class Prepared:
    weights: Path          # what the worker gets as --weights
    notes: Phrase | None = None  # e.g. a memory warning, shown while the worker loads


@dataclass(frozen=True)
class EngineSpec:
    name: str
    sources: tuple[str, ...]
    interpreter: Callable[[], Path | None]
    install_command: str  # what installs the engine when its interpreter is missing ("" = always there)
    prepare: Callable[[ModelConfig, Path, Path, Report], Prepared]
    # (interpreter, model, prepared weights, port, threads, key's environment variable) -> the command of a
    # server that speaks the plain OpenAI protocol; None: an arena worker (arena.worker) serves the model
    serve: Callable[[Path, ModelConfig, Path, int, int, str], list[str]] | None = None
    # (model, weights, threads, cache directory, rebuild) -> the engine, inside the worker's process
    load: Callable[[ModelConfig, Path, int, Path, bool], ChatEngine] | None = None
    libraries: tuple[str, ...] = ()  # the distributions its figures depend on, recorded with quality results


def _main_python() -> Path:
    return Path(sys.executable)


def _prepare_llamacpp(model: ModelConfig, weights: Path, data_dir: Path, report: Report) -> Prepared:
    warning = memory.preflight(model.id, "llamacpp", None, file_size=weights.stat().st_size)
    return Prepared(weights, warning)


# Remote code known not to run on this project's transformers (5.x), with the evidence; refused before
# minutes of loading, pointing at the engine that runs it.
REMOTE_CODE_BROKEN = {
    "chatglm": "ChatGLM3's remote tokenizer fails on transformers >= 4.45 (ChatGLMTokenizer._pad() got an "
               "unexpected keyword argument 'padding_side', zai-org/ChatGLM3#1324)",
}


def _prepare_transformers(model: ModelConfig, weights: Path, data_dir: Path, report: Report) -> Prepared:
    from arena.serving.engines.transformers import cache_key

    if weights.is_dir() and (weights / "config.json").is_file():
        model_type = json.loads((weights / "config.json").read_text()).get("model_type")
        if model_type in REMOTE_CODE_BROKEN:
            raise SourceError(f"{model.id}: {REMOTE_CODE_BROKEN[model_type]}. Run it with 'engine: itrex' "
                              f"(ITREX's own environment pins transformers 4.40), as the original report did; "
                              f"see models-report.yaml")
    params = memory.count_params(weights)
    step = "transformers-gguf" if weights.is_file() else "transformers"
    if model.quantize is not None:
        key, _ = cache_key(model, weights, model.quantize)
        if (data_dir / "int4-cache" / f"{model.id}-{key}" / "arena-cache.json").is_file():
            step = "transformers-cached"
    return Prepared(weights, memory.preflight(model.id, step, params))


# -- ITREX -----------------------------------------------------------------------------------------
def _itrex_versions() -> dict:
    """The ITREX env's library versions, read from its site-packages (without starting it)."""
    from importlib import metadata

    from arena.serving.engines.itrex import itrex_python

    python = itrex_python()
    paths = [str(p) for p in python.parent.parent.glob("lib/python*/site-packages")] if python else []
    found = {d.metadata["Name"].lower(): d.version for d in metadata.distributions(path=paths)}
    return {name: found.get(name) for name in ("intel-extension-for-transformers", "neural-speed", "transformers")}


def itrex_hf_dir(model: ModelConfig, weights: Path, data_dir: Path, report: Report) -> Path:
    """An HF directory ITREX can read: the source itself when neural-speed reads its architecture
    natively (as the report did with ChatGLM3 and Qwen-7B), else a converted copy."""
    from arena.serving.engines.itrex import native_reason

    if weights.is_dir():
        native, why = native_reason(weights)
        if native:
            report("preparing", why)
            return weights
        report("preparing", phrase("phase_itrex_converting", why=why))
    return converted_hf_dir(model, weights, data_dir, report, "itrex")


def converted_hf_dir(model: ModelConfig, weights: Path, data_dir: Path, report: Report, target: str) -> Path:
    """The source as an HF directory of fp32 safetensors for ``target`` (itrex or vllm), made once in this
    environment (modern transformers reads GGUF and Qwen2) and cached by source identity under
    ``data_dir/<target>``."""
    from arena.serving.engines.base import exclusive
    from arena.serving.engines.itrex import is_complete

    keyed = {"prepare_format": 2, "source": source_identity(model, weights)}
    identity = json.dumps(keyed if target == "itrex" else {**keyed, "for": target}, sort_keys=True)
    parent = data_dir / target / f"hf-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    # two entries of one model share this conversion: one of them makes it, the other waits
    with exclusive(parent, on_wait=lambda key: report("preparing", phrase(key))):
        if is_complete(parent):
            return parent / json.loads((parent / "COMPLETE").read_text())["dir"]
        return _convert_to_hf(model, weights, parent, identity, report, target)


def _convert_to_hf(model: ModelConfig, weights: Path, parent: Path, identity: str, report: Report,
                   target: str) -> Path:
    from arena.serving.engines.itrex import mark_complete

    params = memory.count_params(weights)
    step = f"{target}-prepare"
    warning = memory.preflight(model.id, step, params)
    doing = phrase(f"phase_{target}_prepare", expect=memory.expect(step, params))
    report("preparing", phrase("detail_with_notes", detail=doing, notes=warning) if warning else doing)
    (parent / "COMPLETE").unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "arena.serving.engines.itrex_prepare", "--for", target, str(weights),
                           str(parent)], capture_output=True, text=True, cwd=str(PROJECT_DIR))
    if done.returncode:
        raise SourceError(f"converting {weights.name} to an HF directory for {target} failed: "
                          f"{done.stderr.strip()[-400:]}")
    out = Path(done.stdout.strip().splitlines()[-1])
    mark_complete(parent, dir=out.name, source=identity)
    return out


def _prepare_itrex(model: ModelConfig, weights: Path, data_dir: Path, report: Report) -> Prepared:
    from arena.serving.engines.itrex import cache_dirs, is_complete

    hf_dir = itrex_hf_dir(model, weights, data_dir, report)
    recipe = model.quantize or ITREX_DEFAULT_RECIPE
    f32_dir, recipe_dir = cache_dirs((data_dir / "itrex").resolve(), source_identity(model, hf_dir.resolve()),
                                     recipe, _itrex_versions())
    params = memory.count_params(hf_dir)
    if is_complete(recipe_dir):
        step = "itrex-run"
    elif is_complete(f32_dir):
        step = "itrex-quantize"
    else:  # conversion and quantization: the larger of the two peaks
        convert = "itrex-convert-native" if hf_dir == weights else "itrex-convert"
        step = max((convert, "itrex-quantize"), key=lambda s: memory.estimate(s, params) or 0)
    return Prepared(hf_dir, memory.preflight(model.id, step, params))


def _itrex_interpreter() -> Path | None:
    from arena.serving.engines.itrex import itrex_python
    return itrex_python()


# -- vLLM -------------------------------------------------------------------------------------------
def _prepare_vllm(model: ModelConfig, weights: Path, data_dir: Path, report: Report) -> Prepared:
    """vLLM reads HF directories: one as it is, a GGUF converted to fp32 safetensors once."""
    hf_dir = weights if weights.is_dir() else converted_hf_dir(model, weights, data_dir, report, "vllm")
    return Prepared(hf_dir, memory.preflight(model.id, "vllm-run", memory.count_params(hf_dir)))


def _vllm_interpreter() -> Path | None:
    from arena.serving.engines.vllm import vllm_python
    return vllm_python()


def _vllm_command(python: Path, model: ModelConfig, weights: Path, port: int, threads: int, key_env: str) -> list[str]:
    from arena.serving.engines.vllm import serve_command
    return serve_command(python, model, weights, port, threads, key_env)


def _load_llamacpp(model: ModelConfig, weights: Path, threads: int, data_dir: Path, rebuild: bool) -> ChatEngine:
    from arena.serving.engines.llamacpp import LlamaCppEngine
    return LlamaCppEngine(weights, threads=threads, context_length=model.context_length)


def _load_transformers(model: ModelConfig, weights: Path, threads: int, data_dir: Path, rebuild: bool) -> ChatEngine:
    from arena.serving.engines.transformers import TransformersEngine
    return TransformersEngine(model, weights, threads=threads, cache_dir=data_dir / "int4-cache", rebuild=rebuild)


def _load_itrex(model: ModelConfig, weights: Path, threads: int, data_dir: Path, rebuild: bool) -> ChatEngine:
    from arena.serving.engines.itrex import ItrexEngine  # only inside the ITREX virtualenv
    return ItrexEngine(model, weights, threads=threads, cache_dir=data_dir / "itrex")


# Every local engine, and all the arena needs to know to run it. Adding an engine: its module beside this one,
# an entry here, and its name in core/config.py (what models.yaml may say); README "Architecture".
ENGINES: dict[str, EngineSpec] = {
    "llamacpp": EngineSpec("llamacpp", SOURCE_KINDS["llamacpp"], _main_python, "", _prepare_llamacpp,
                           load=_load_llamacpp, libraries=("llama-cpp-python", "numpy")),
    "transformers": EngineSpec("transformers", SOURCE_KINDS["transformers"], _main_python, "", _prepare_transformers,
                               load=_load_transformers,
                               libraries=("transformers", "torch", "torchao", "optimum-quanto", "numpy")),
    "itrex": EngineSpec("itrex", SOURCE_KINDS["itrex"], _itrex_interpreter, "scripts/install-itrex.sh",
                        _prepare_itrex, load=_load_itrex,
                        libraries=("intel-extension-for-transformers", "neural-speed", "transformers", "torch", "numpy")),
    "vllm": EngineSpec("vllm", SOURCE_KINDS["vllm"], _vllm_interpreter, "scripts/install-vllm.sh", _prepare_vllm,
                       _vllm_command),
}


def engine_spec(name: str) -> EngineSpec:
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"engine {name!r} has no local worker; local engines: {', '.join(ENGINES)}") from None


def load_engine(model: ModelConfig, weights: Path, threads: int, data_dir: Path | None = None,
                rebuild: bool = False) -> ChatEngine:
    """Load ``model`` from its resolved ``weights``; ``data_dir`` holds caches (the INT4 cache)."""
    spec = ENGINES.get(model.engine)
    if spec is None or spec.load is None:
        raise ValueError(f"engine {model.engine!r} has no in-process loader")
    return spec.load(model, weights, threads, data_dir or weights.parent, rebuild)
