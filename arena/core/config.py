"""Load and validate ``models.yaml`` and ``prompts.yaml``.

Every problem is reported as ``ConfigError`` naming the file, the line, the entry
and what to do, because a user editing YAML by hand needs to find the mistake
without reading a traceback.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arena.core import assertion_spec, textcheck
from arena.core.assertion_spec import Assertion

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_MODELS_FILE = PROJECT_DIR / "models.yaml"
DEFAULT_PROMPTS_FILE = PROJECT_DIR / "prompts.yaml"


def default_data_dir() -> Path:
    """Votes database, assembled model files, caches and worker logs: $ARENA_DATA_DIR, else ./data."""
    return Path(os.environ.get("ARENA_DATA_DIR", PROJECT_DIR / "data"))


ENGINES = ("llamacpp", "transformers", "itrex", "vllm", "openai")
# run on this machine, in a process the supervisor starts from the entry's source; openai: a server elsewhere
LOCAL_ENGINES = ("llamacpp", "transformers", "itrex", "vllm")
# served by an arena worker (arena.worker), which adds /v1/arena/* (exact logits, batched decode) to the
# OpenAI protocol; vllm is a local process that speaks the plain OpenAI protocol, as openai servers do
WORKER_ENGINES = ("llamacpp", "transformers", "itrex")
HF_SOURCES = ("file", "package", "parts", "dir", "modelscope", "hf")
SOURCE_KINDS = {"llamacpp": ("file", "package", "parts"), "transformers": HF_SOURCES, "itrex": HF_SOURCES,
                "vllm": HF_SOURCES}
MAX_LABEL = 200  # model ids and names, preset ids: what a battle file may carry (battle_schema.MAX_NAME)
GENERATION_KEYS = {"temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_new_tokens", "seed"}


class ConfigError(ValueError):
    """A config file is unusable; the message says where and how to fix it."""


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records each mapping's line and refuses duplicate keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found. Pass the right path or restore it from git.")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML at {where}: {problem}") from None


def _entries(path: Path, data: Any, key: str) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ConfigError(f"{path}: expected a top-level '{key}:' list of entries")
    for index, entry in enumerate(data[key]):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {key}[{index}] must be a mapping with keys, got {entry!r}")
    return data[key]


class _Entry:
    """Reads typed keys from one YAML entry; every error names file, line and entry."""

    def __init__(self, path: Path, raw: dict, kind: str, index: int):
        self.path, self.raw, self.line = path, raw, raw.get("__line__", "?")
        self.label = f"{kind} {raw.get('id', f'#{index + 1}')!r}"

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}:{self.line}: {self.label}: {problem}")

    def get(self, key: str, kind: type | tuple, required: bool = True, default: Any = None) -> Any:
        if key not in self.raw:
            if required:
                raise self.fail(f"missing required key '{key}'")
            return default
        value = self.raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(f"'{key}' must be {names}, got {value!r}")
        if isinstance(value, str) and not value.strip() and required:
            raise self.fail(f"'{key}' must not be empty")
        return value

    def text(self, key: str, limit: int, required: bool = True) -> str | None:
        """A label the arena stores with every round and writes into its exports: at most ``limit``
        characters and nothing an import would refuse (battle_schema.py), so exports read back."""
        value = self.get(key, str, required)
        if value is None:
            return None
        if len(value) > limit:
            raise self.fail(f"'{key}' is {len(value)} characters long; at most {limit} are allowed")
        try:
            textcheck.check(value)
        except textcheck.TextProblem as exc:
            raise self.fail(f"'{key}' holds {exc}; remove it") from None
        return value

    def reject_unknown(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.raw) - allowed - {"__line__"})
        if unknown:
            raise self.fail(f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from. Exactly one of file / package / parts / dir / modelscope / hf."""

    file: str | None = None
    package: str | None = None
    path: str | None = None
    parts: tuple[str, ...] = ()
    filename: str | None = None
    sha256: str | None = None
    dir: str | None = None          # a local HF-format model directory
    modelscope: str | None = None   # a ModelScope model id, downloaded once into the data dir
    hf: str | None = None           # a Hugging Face model id
    revision: str | None = None     # branch, tag or commit for modelscope / hf


@dataclass(frozen=True)
class QuantizeConfig:
    """Weight-only quantization in the original report's (ITREX) vocabulary.

    ``backend`` picks who runs it: torchao / quanto (engine: transformers) or itrex (engine: itrex,
    Intel Extension for Transformers 1.4.2 RTN with neural-speed). ``group_size`` -1 means one scale
    per output channel."""

    bits: int = 4
    weight_dtype: str = "int4"
    compute_dtype: str = "bf16"
    group_size: int = 32
    scheme: str = "asym"
    backend: str = "torchao"

    def describe(self) -> str:
        return (f"{self.backend} bits={self.bits} weight_dtype={self.weight_dtype} compute_dtype={self.compute_dtype} "
                f"group_size={self.group_size} scheme={self.scheme}")

    def slug(self) -> str:
        """A short, file-name-safe name of the recipe, e.g. ``int4_fullrange-cint8-g32-sym``."""
        group = "pc" if self.group_size == -1 else f"g{self.group_size}"
        return f"{self.weight_dtype}-c{self.compute_dtype}-{group}-{self.scheme}"

    def unsupported(self) -> str | None:
        """Why this combination can't run (listing the ones of its backend that can), or None if it can."""
        key = (self.backend, self.bits, self.weight_dtype, self.compute_dtype, self.scheme)
        if self.group_size in SUPPORTED_QUANTIZATION.get(key, ()):
            return None
        rows = {k: g for k, g in SUPPORTED_QUANTIZATION.items() if k[0] == self.backend} or SUPPORTED_QUANTIZATION
        computes: dict[tuple, list[str]] = {}  # one line per (backend, bits, weight, scheme, groups)
        for (b, n, w, c, sc), g in rows.items():
            computes.setdefault((b, n, w, sc, g), []).append(c)
        supported = "; ".join(
            f"backend={b} bits={n} weight_dtype={w} "
            + (f"compute_dtype in {cs}" if len(cs) > 1 else f"compute_dtype={cs[0]}") + f" scheme={sc} group_size in {list(g)}"
            for (b, n, w, sc, g), cs in computes.items())
        return f"unsupported combination ({self.describe()}). Supported: {supported}"


# The original report's recipe, used by an ``engine: itrex`` entry without ``quantize:``:
# RtnConfig(bits=4, compute_dtype="int8", weight_dtype="int4_fullrange"), ITREX's default group 32, sym.
ITREX_DEFAULT_RECIPE = QuantizeConfig(bits=4, weight_dtype="int4_fullrange", compute_dtype="int8", group_size=32,
                                      scheme="sym", backend="itrex")

# (backend, bits, weight_dtype, compute_dtype, scheme) -> allowed group sizes. Anything else is
# refused at config load, before any weights are read.
SUPPORTED_QUANTIZATION: dict[tuple[str, int, str, str, str], tuple[int, ...]] = {
    ("torchao", 4, "int4", "bf16", "asym"): (32, 64, 128, 256),
    ("quanto", 4, "int4", "bf16", "asym"): (128,),  # optimum-quanto qint4: affine, groups of 128
}
# ITREX 1.4.2 RTN through neural-speed 1.0: the combinations measured to quantize AND answer sanely
# on this project's CPUs (bench/itrex_recipes.py; table in BENCHMARKS.md). ITREX maps int4_clip and
# int4_fullrange to the same neural-speed "int4", so both names are accepted with the same rows.
_ITREX_COMPUTE = ("int8", "fp32", "bf16", "fp16")
_ITREX_MEASURED: dict[tuple[int, str, str, str], tuple[int, ...]] = {
    # INT4: every compute type, both schemes, groups 32 / 128 / per channel (-1; runs, but per-channel
    # INT4 answered a capital-city question wrongly on the 0.5B Qwen: a quality trade-off to compare)
    **{(4, w, c, s): (32, 128, -1) for w in ("int4_fullrange", "int4_clip") for c in _ITREX_COMPUTE
       for s in ("sym", "asym")},
    # 4-bit floats and int8: measured with groups 32 and per channel, sym (int8 also asym)
    **{(4, w, c, "sym"): (32, -1) for w in ("nf4", "fp4") for c in _ITREX_COMPUTE},
    **{(8, "int8", c, s): (32, -1) for c in _ITREX_COMPUTE for s in ("sym", "asym")},
    # not fp8_e4m3 / fp8_e5m2: they quantize and generate, but Qwen answered "! The code above is a function that"
}
for (_bits, _w, _c, _s), _groups in _ITREX_MEASURED.items():
    SUPPORTED_QUANTIZATION[("itrex", _bits, _w, _c, _s)] = _groups


@dataclass(frozen=True)
class RemoteEndpoint:
    """An OpenAI-compatible server someone else runs (vLLM, Ollama, TGI, llama.cpp server)."""

    base_url: str               # ends in /v1
    model: str                  # the server's name for the model
    api_key_env: str | None = None  # NAME of the environment variable holding the key, never the key
    timeout_s: float = 300.0


@dataclass(frozen=True)
class ModelConfig:
    id: str
    name: str
    engine: str
    source: ModelSource | None
    quantization: str
    license: str
    generation: dict[str, Any] = field(default_factory=dict)
    identity_words: tuple[str, ...] = ()
    threads: int | None = None
    context_length: int = 4096
    endpoint: RemoteEndpoint | None = None
    quantize: QuantizeConfig | None = None  # transformers: None = fp32; itrex: always a recipe
    trust_remote_code: bool = False
    install: str | None = None  # optional models: the command that installs their packages
    reference: str | None = None  # the full-precision sibling ``python -m arena quality`` compares it with
    autostart: bool = True      # False: loaded only when a command names it (a reference, a slow recipe)
    retired: bool = False       # never loaded or offered; its battles stay in the leaderboard, marked
    line: int = 0

    @property
    def served_name(self) -> str:
        """The ``model`` field of a request to it: a remote server's own name, else the entry's id (the
        arena's workers and the vLLM servers it starts serve under the id)."""
        return self.endpoint.model if self.endpoint else self.id

    @property
    def arena_worker(self) -> bool:
        """Served by an arena worker, so exact logits and batched decode (/v1/arena/*) are there."""
        return self.engine in WORKER_ENGINES


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    question: str
    reference: str
    source: str
    language: str
    assertions: tuple[Assertion, ...] = ()  # prompts.yaml ``assert:`` (assertion_spec.py)
    followups: tuple[str, ...] = ()  # later turns (MT-Bench), asked in the same round after the answers
    follows: str | None = None       # batch runs: the preset whose question and answer come before this turn

    def to_json(self) -> dict:
        """As a batch run stores it (and reads it back on --resume)."""
        data = {f: getattr(self, f) for f in ("id", "category", "question", "reference", "source", "language")}
        extra = {k: v for k, v in (("followups", list(self.followups)), ("follows", self.follows)) if v}
        return {**data, **extra, "assert": [{"type": a.type, "value": a.value if isinstance(a.value, str)
                                             else list(a.value)} for a in self.assertions]}

    @classmethod
    def from_json(cls, data: dict) -> "Prompt":
        values = {k: v for k, v in data.items() if k in ("id", "category", "question", "reference", "source",
                                                         "language", "follows")}
        checks = data.get("assert") or data.get("assertions")
        return cls(**values, assertions=assertion_spec.parse(checks) if checks else (),
                   followups=tuple(data.get("followups") or ()))

    def turns(self) -> list["Prompt"]:
        """This preset and, for a multi-turn one, one preset per later turn (``<id>-turn<n>``) that follows the
        one before it: how a batch run asks them, each turn answered and graded on its own."""
        chain = [self]
        for number, question in enumerate(self.followups, start=2):
            chain.append(Prompt(f"{self.id}-turn{number}", self.category, question, "", self.source, self.language,
                                follows=chain[-1].id))
        return chain


def _parse_endpoint(entry: _Entry) -> RemoteEndpoint:
    if "source" in entry.raw:
        raise entry.fail("engine 'openai' takes 'endpoint:' (base_url, model, api_key_env), not 'source:'")
    raw = entry.get("endpoint", dict)
    ep = _Entry(entry.path, raw, "", 0)
    ep.label = entry.label + " endpoint"
    ep.reject_unknown({"base_url", "model", "api_key_env", "timeout_s"})
    base_url = ep.get("base_url", str).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise ep.fail(f"'base_url' must start with http:// or https://, got {base_url!r}")
    key_env = ep.get("api_key_env", str, required=False)
    if key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env):
        raise ep.fail(f"'api_key_env' is the NAME of an environment variable (like VLLM_API_KEY), not the key "
                      f"itself; got {key_env[:4]}…")
    timeout = ep.get("timeout_s", (int, float), required=False, default=300.0)
    return RemoteEndpoint(base_url=base_url, model=ep.get("model", str), api_key_env=key_env,
                          timeout_s=float(timeout))


def _parse_quantize(entry: _Entry, engine: str) -> QuantizeConfig | None:
    if "quantize" not in entry.raw:
        return ITREX_DEFAULT_RECIPE if engine == "itrex" else None
    if engine not in ("transformers", "itrex"):
        raise entry.fail(f"'quantize' applies to engines 'transformers' and 'itrex' only; a {engine} model's "
                         f"quantization is fixed by its file or server (describe it in 'quantization')")
    raw = entry.get("quantize", dict)
    q = _Entry(entry.path, raw, "", 0)
    q.label = entry.label + " quantize"
    q.reject_unknown({"bits", "weight_dtype", "compute_dtype", "group_size", "scheme", "backend"})
    d = ITREX_DEFAULT_RECIPE if engine == "itrex" else QuantizeConfig()
    config = QuantizeConfig(
        bits=q.get("bits", int, required=False, default=d.bits),
        weight_dtype=q.get("weight_dtype", str, required=False, default=d.weight_dtype),
        compute_dtype=q.get("compute_dtype", str, required=False, default=d.compute_dtype),
        group_size=q.get("group_size", int, required=False, default=d.group_size),
        scheme=q.get("scheme", str, required=False, default=d.scheme),
        backend=q.get("backend", str, required=False, default=d.backend))
    if engine == "itrex" and config.backend != "itrex":
        raise q.fail(f"engine itrex quantizes with ITREX itself: leave out 'backend' or set it to itrex "
                     f"(backend {config.backend} runs with engine: transformers)")
    if engine == "transformers" and config.backend == "itrex":
        raise q.fail("backend itrex runs in ITREX's own environment: set 'engine: itrex' for this entry")
    if problem := config.unsupported():
        hint = "" if engine == "itrex" else " (The report's int4_fullrange/int8-compute recipe runs with engine: itrex.)"
        raise q.fail(f"{problem}.{hint}")
    return config


def _parse_source(entry: _Entry, base_dir: Path, engine: str) -> ModelSource:
    raw = entry.get("source", dict)
    src = _Entry(entry.path, raw, entry.label + " source", 0)
    src.label = entry.label + " source"
    src.reject_unknown({"file", "package", "path", "parts", "filename", "sha256", "dir", "modelscope", "hf",
                        "revision"})
    allowed = SOURCE_KINDS[engine]
    kinds = [k for k in ("file", "package", "parts", "dir", "modelscope", "hf") if k in raw]
    if len(kinds) != 1 or kinds[0] not in allowed:
        meaning = {"file": "'file' (a GGUF path)", "package": "'package' + 'path' (a file inside an installed "
                   "Python package)", "parts": "'parts' (package files to concatenate)",
                   "dir": "'dir' (a local HF-format model directory)", "modelscope": "'modelscope' (a ModelScope id)",
                   "hf": "'hf' (a Hugging Face id)"}
        raise src.fail(f"set exactly one of {', '.join(meaning[k] for k in allowed)} for engine {engine}")
    revision = src.get("revision", str, required=False)
    if "dir" in raw:
        directory = os.path.expanduser(src.get("dir", str))
        return ModelSource(dir=directory if os.path.isabs(directory) else str(base_dir / directory))
    if "modelscope" in raw or "hf" in raw:
        hub = kinds[0]
        repo = src.get(hub, str)
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise src.fail(f"'{hub}' must be an id like 'Qwen/Qwen2.5-0.5B-Instruct', got {repo!r}")
        return ModelSource(**{hub: repo}, revision=revision)
    sha = raw.get("sha256")
    if sha is not None and not isinstance(sha, str):
        raise src.fail(f"'sha256' must be 64 hex digits in quotes, got {sha!r}")
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        raise src.fail(f"'sha256' must be 64 hex digits, got {sha!r}")
    if "file" in raw:
        file = os.path.expanduser(src.get("file", str))
        if not os.path.isabs(file):
            file = str(base_dir / file)
        return ModelSource(file=file, sha256=sha)
    if "package" in raw:
        return ModelSource(package=src.get("package", str), path=src.get("path", str), sha256=sha)
    parts = src.get("parts", list)
    if not parts or not all(isinstance(p, str) and "/" in p for p in parts):
        raise src.fail("'parts' must list files as 'package_name/path/inside/package'")
    return ModelSource(parts=tuple(parts), filename=src.get("filename", str), sha256=sha)


def load_models(path: Path | str = DEFAULT_MODELS_FILE) -> list[ModelConfig]:
    """Parse the model catalog; the first two entries are the default pair."""
    path = Path(path)
    models: list[ModelConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(_entries(path, _load_yaml(path), "models")):
        entry = _Entry(path, raw, "model", index)
        entry.reject_unknown({"id", "name", "engine", "source", "endpoint", "quantization", "license",
                              "generation", "identity_words", "threads", "context_length", "quantize",
                              "trust_remote_code", "install", "reference", "autostart", "retired"})
        model_id = entry.text("id", MAX_LABEL)
        if model_id in seen:
            raise entry.fail(f"duplicate id (first defined at line {seen[model_id]}); ids must be unique")
        seen[model_id] = entry.line
        engine = entry.get("engine", str)
        if engine not in ENGINES:
            raise entry.fail(f"unknown engine {engine!r}; supported engines: {', '.join(ENGINES)}")
        generation = entry.get("generation", dict, required=False, default={})
        generation = {k: v for k, v in generation.items() if k != "__line__"}
        bad = sorted(set(generation) - GENERATION_KEYS)
        if bad:
            raise entry.fail(f"unknown generation key(s) {bad}; allowed: {sorted(GENERATION_KEYS)}")
        words = entry.get("identity_words", list, required=False, default=[])
        threads = entry.get("threads", int, required=False)
        if threads is not None and threads < 1:
            raise entry.fail("'threads' must be at least 1 (or leave it out to let the app decide)")
        models.append(ModelConfig(
            id=model_id,
            name=entry.text("name", MAX_LABEL),
            engine=engine,
            source=_parse_source(entry, path.parent, engine) if engine in LOCAL_ENGINES else None,
            endpoint=_parse_endpoint(entry) if engine == "openai" else None,
            quantize=_parse_quantize(entry, engine),
            trust_remote_code=entry.get("trust_remote_code", bool, required=False, default=False),
            quantization=entry.text("quantization", 1000),
            license=entry.get("license", str),
            generation=generation,
            identity_words=tuple(str(w) for w in words),
            threads=threads,
            context_length=entry.get("context_length", int, required=False, default=4096),
            install=entry.get("install", str, required=False),
            reference=entry.get("reference", str, required=False),
            autostart=entry.get("autostart", bool, required=False, default=True),
            retired=entry.get("retired", bool, required=False, default=False),
            line=entry.line,
        ))
    if not models:
        raise ConfigError(f"{path}: the 'models:' list is empty; add at least two models")
    for model in models:  # a reference missing from this file is refused by the command that needs it
        if model.reference == model.id:
            raise ConfigError(f"{path}:{model.line}: model {model.id!r}: 'reference' names the model itself; name "
                              f"its full-precision sibling")
    return models


def started_by_default(models: list[ModelConfig]) -> list[ModelConfig]:
    """The models the app loads and offers: neither retired nor ``autostart: false``."""
    return [m for m in models if m.autostart and not m.retired]


def load_prompts(path: Path | str = DEFAULT_PROMPTS_FILE) -> list[Prompt]:
    """Parse the preset questions, in file order: prompts.yaml, or FastChat's MT-Bench ``question.jsonl``."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return load_mt_bench(path)
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(_entries(path, _load_yaml(path), "prompts")):
        entry = _Entry(path, raw, "prompt", index)
        entry.reject_unknown({"id", "category", "question", "reference", "source", "language", "assert"})
        prompt_id = entry.text("id", MAX_LABEL)
        if prompt_id in seen:
            raise entry.fail(f"duplicate id (first defined at line {seen[prompt_id]}); ids must be unique")
        seen[prompt_id] = entry.line
        prompts.append(Prompt(
            id=prompt_id,
            category=entry.get("category", str),
            question=entry.get("question", str).strip(),
            reference=entry.get("reference", str).strip(),
            source=entry.get("source", str),
            language=entry.get("language", str, required=False, default="en"),
            assertions=_parse_assertions(entry),
        ))
    return prompts


def _parse_assertions(entry: _Entry) -> tuple[Assertion, ...]:
    if "assert" not in entry.raw:
        return ()
    try:
        return assertion_spec.parse(entry.raw["assert"])
    except assertion_spec.AssertionConfigError as exc:
        raise entry.fail(str(exc)) from None


MT_BENCH_MAX_LINE = 1_000_000  # bytes: a question line longer than this is not a question


def _jsonl(path: Path, what: str) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line; the first bad one is a ConfigError naming it."""
    import json

    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    rows = []
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        if len(raw) > MT_BENCH_MAX_LINE:
            raise ConfigError(f"{path}:{number}: a line of {len(raw):,} bytes; at most {MT_BENCH_MAX_LINE:,}")
        try:
            data = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}:{number}: not a JSON object ({exc}); nothing was loaded") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}:{number}: not a JSON object; nothing was loaded")
        rows.append((number, data))
    return rows


def load_mt_bench(path: Path) -> list[Prompt]:
    """FastChat's MT-Bench ``question.jsonl`` (``question_id``, ``category``, ``turns``) as presets; the first
    turn is the question, later turns are asked as follow-ups in the same round. A reference answer comes from
    the line's own ``reference`` list or from ``reference_answer/*.jsonl`` beside the file (the first turn of
    its first choice). Any wrong line is refused with its number and nothing is loaded."""
    from arena.core.language import language_of

    references: dict[str, str] = {}
    for ref_file in sorted((path.parent / "reference_answer").glob("*.jsonl")):
        for number, data in _jsonl(ref_file, "reference answers"):
            try:
                references.setdefault(str(data["question_id"]), str(data["choices"][0]["turns"][0]))
            except (KeyError, IndexError, TypeError):
                raise ConfigError(f"{ref_file}:{number}: a reference answer needs question_id and choices[0].turns[0]"
                                  f"; nothing was loaded") from None
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for number, data in _jsonl(path, "MT-Bench questions"):
        where = f"{path}:{number}"
        qid, category, turns = data.get("question_id"), data.get("category"), data.get("turns")
        if not isinstance(qid, (int, str)) or isinstance(qid, bool) or str(qid) == "":
            raise ConfigError(f"{where}: 'question_id' must be a number or a string; nothing was loaded")
        if not isinstance(category, str) or not category.strip():
            raise ConfigError(f"{where}: 'category' must be a non-empty string; nothing was loaded")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ConfigError(f"{where}: 'turns' must be a list of one or more questions; nothing was loaded")
        prompt_id = str(qid)
        if prompt_id in seen:
            raise ConfigError(f"{where}: duplicate question_id {prompt_id} (first at line {seen[prompt_id]})")
        seen[prompt_id] = number
        own = data.get("reference")
        reference = own[0] if isinstance(own, list) and own and isinstance(own[0], str) else references.get(prompt_id, "")
        for text in (prompt_id, category, *turns, reference):
            try:
                textcheck.check(text)
            except textcheck.TextProblem as exc:
                raise ConfigError(f"{where}: holds {exc}; nothing was loaded") from None
        prompts.append(Prompt(prompt_id, category.strip(), turns[0].strip(), reference.strip(),
                              f"MT-Bench {path.name} line {number}", language_of(turns[0]),
                              followups=tuple(t.strip() for t in turns[1:])))
    if not prompts:
        raise ConfigError(f"{path} holds no questions")
    return prompts
