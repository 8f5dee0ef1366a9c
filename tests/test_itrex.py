"""The legacy ITREX engine: a real answer through an arena worker running in the ITREX
virtualenv when it exists (scripts/install-itrex.sh), and a clear status when it does not."""

import pytest

from arena.config import load_models
from arena.engines.itrex import INSTALL_COMMAND, itrex_python
from arena.rounds import Arena, Settings
from arena.store import Store
from arena.supervisor import Supervisor

from .conftest import ROOT, final_view, smol_catalog

pytestmark = pytest.mark.timeout(900)  # converting and quantizing for ITREX takes minutes

ITREX_ENTRY = """
  - id: qwen-itrex
    name: Qwen ITREX
    engine: itrex
    source: {file: %s}
    quantization: RTN INT4 int8 compute
    license: Apache-2.0
    threads: 2
"""


@pytest.fixture
def catalog(tmp_path):
    gguf = ROOT / "data" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"  # prepared by scripts/install.sh
    return smol_catalog(tmp_path / "models.yaml", ITREX_ENTRY % gguf)


def test_without_the_env_the_status_names_the_install_command(catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_ITREX_VENV", str(tmp_path / "no-such-venv"))
    supervisor = Supervisor(load_models(catalog), catalog, tmp_path / "data", threads=1)
    supervisor.start()
    try:
        status = {s.id: s for s in supervisor.wait_until_settled(60)}
        assert status["qwen-itrex"].state == "unavailable"
        assert INSTALL_COMMAND in status["qwen-itrex"].detail and status["smol-a"].state == "ready"
    finally:
        supervisor.stop()


@pytest.mark.skipif(itrex_python() is None, reason=f"ITREX env not installed (run {INSTALL_COMMAND})")
def test_itrex_answers_through_a_worker_in_its_own_env(catalog, tmp_path):
    supervisor = Supervisor(load_models(catalog), catalog, tmp_path / "data", threads=1)
    supervisor.start()
    try:
        status = {s.id: s for s in supervisor.wait_until_settled(600)}
        assert status["qwen-itrex"].state == "ready", status["qwen-itrex"].describe()
        arena = Arena(supervisor, Store(tmp_path / "arena.db"), [])
        turn = final_view(arena, "What is the capital of Italy? Answer in one word.", mode="named",
                          model_a="qwen-itrex", model_b="smol-a",
                          settings=Settings(temperature=0.0, max_new_tokens=16))["a"]["turns"][-1]
        assert turn["error"] is None and "Rome" in turn["text"] and 0 < turn["output_tokens"] <= 16
    finally:
        supervisor.stop()
