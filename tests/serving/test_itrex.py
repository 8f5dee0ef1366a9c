"""The ITREX engine through real arena workers in the ITREX virtualenv (scripts/install-itrex.sh):
two recipes of one model side by side and their caches, the native path for an architecture
neural-speed reads itself, and a clear status when the env is absent. Tests that need the env
are skipped without it (CI does not build it)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arena.core.config import load_models
from arena.core.generation import GenerationParams
from arena.rounds.rules import Arena, Settings
from arena.serving.engines.itrex import INSTALL_COMMAND, itrex_python
from arena.serving.supervisor import Supervisor
from arena.storage.store import Store

from ..conftest import ROOT, collect, final_view, smol_catalog, wait_for

pytestmark = pytest.mark.timeout(1200)  # converting and quantizing for ITREX takes minutes
needs_itrex = pytest.mark.skipif(itrex_python() is None, reason=f"ITREX env not installed (run {INSTALL_COMMAND})")

GGUF = ROOT / "data" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"  # prepared by scripts/install.sh
RECIPE_ENTRY = """
  - id: {id}
    name: {id}
    engine: itrex
    source: {{file: {gguf}}}
    quantize: {quantize}
    quantization: RTN
    license: Apache-2.0
    threads: 1
"""
REPORT = "{bits: 4, weight_dtype: int4_fullrange, compute_dtype: int8, group_size: 32, scheme: sym}"
OTHER = "{bits: 4, weight_dtype: int4_fullrange, compute_dtype: fp32, group_size: 128, scheme: asym}"


def _two_recipes(path: Path) -> Path:
    return smol_catalog(path, RECIPE_ENTRY.format(id="qwen-g32-int8", gguf=GGUF, quantize=REPORT)
                        + RECIPE_ENTRY.format(id="qwen-g128-fp32", gguf=GGUF, quantize=OTHER))


def test_without_the_env_the_status_names_the_install_command(tmp_path, monkeypatch):
    """No ITREX env: the ITREX model is 'unavailable' with the install command; the other model still loads."""
    monkeypatch.setenv("ARENA_ITREX_VENV", str(tmp_path / "no-such-venv"))
    catalog = _two_recipes(tmp_path / "models.yaml")
    supervisor = Supervisor(load_models(catalog), catalog, tmp_path / "data", threads=1)
    supervisor.start()
    try:
        status = {s.id: s for s in supervisor.wait_until_settled(60)}
        assert status["qwen-g32-int8"].state == "unavailable"
        assert INSTALL_COMMAND in status["qwen-g32-int8"].detail and status["smol-a"].state == "ready"
        # the page's status panel says it in the page's language, keeping the command as it is
        from arena.web.render import describe_status
        assert describe_status(status["qwen-g32-int8"], "zh") == \
            f"不可用：未安装 itrex 引擎；请运行 {INSTALL_COMMAND}，然后重启竞技场"
        assert describe_status(status["qwen-g32-int8"], "en") == \
            f"unavailable: the itrex engine is not installed; run {INSTALL_COMMAND}, then restart the arena"
    finally:
        supervisor.stop()


def _log(data: Path, model_id: str) -> str:
    return (data / "logs" / f"{model_id}.log").read_text(errors="replace")


@needs_itrex
def test_two_recipes_of_one_model_answer_side_by_side_and_a_second_start_reuses_both_caches(tmp_path):
    """Two ITREX recipes of the same Qwen weights load side by side and both answer the same question;
    they share one HF conversion and one fp32 file but each has its own finished quantized file. A second
    start with the same data dir quantizes nothing: both workers report loading from their cache, the
    quantized files are untouched, and both answer again."""
    catalog, data = _two_recipes(tmp_path / "models.yaml"), tmp_path / "data"
    ids = ("qwen-g32-int8", "qwen-g128-fp32")
    for start in (1, 2):
        supervisor = Supervisor(load_models(catalog)[2:], catalog, data, threads=1)
        supervisor.start()
        try:
            status = {s.id: s for s in supervisor.wait_until_settled(900)}
            for model_id in ids:
                assert status[model_id].state == "ready", status[model_id].describe()
            arena = Arena(supervisor, Store(tmp_path / "arena.db"), [])
            view = final_view(arena, "What is the capital of Italy? Answer in one word.", mode="named",
                              model_a=ids[0], model_b=ids[1], settings=Settings(temperature=0.0, max_new_tokens=16))
            for pane in "ab":
                turn = view[pane]["turns"][-1]
                assert turn["error"] is None and 0 < turn["output_tokens"] <= 16, turn
        finally:
            supervisor.stop()
        recipe_dirs = sorted(p for p in (data / "itrex").glob("ns-*/*") if p.name != "f32" and p.is_dir())
        assert len(recipe_dirs) == 2 and all((d / "COMPLETE").is_file() for d in recipe_dirs)
        assert len(list((data / "itrex").glob("hf-*"))) == 1 and len(list((data / "itrex").glob("ns-*"))) == 1
        bins = {p: p.stat().st_mtime_ns for d in recipe_dirs for p in (d / "runtime_outs").glob("ne_*_q_*.bin")}
        assert len(bins) == 2
        if start == 1:
            first_bins = bins
            for model_id in ids:
                assert "quantizing with ITREX RTN" in _log(data, model_id)
                (data / "logs" / f"{model_id}.log").unlink()
        else:
            assert bins == first_bins  # same files, not rewritten
            for model_id in ids:
                log = _log(data, model_id)
                assert "loading the cached ITREX INT4 file" in log and "quantizing" not in log and "converting" not in log


@needs_itrex
def test_a_natively_supported_architecture_skips_the_conversion(tmp_path):
    """A tiny random-weight Llama (built here as an HF directory with a SentencePiece tokenizer) goes to
    ITREX as it is: the worker is given the original directory, no converted HF copy is made, and the
    model returns tokens through the arena worker, request after request."""
    model_dir = tmp_path / "tiny-llama"
    subprocess.run([str(itrex_python()), str(ROOT / "tests" / "make_tiny_llama.py"), str(model_dir)], check=True,
                   cwd=ROOT, capture_output=True)
    catalog = smol_catalog(tmp_path / "models.yaml", f"""
  - id: tiny-llama
    name: Tiny Llama
    engine: itrex
    source: {{dir: {model_dir}}}
    quantization: RTN INT4
    license: none (random weights)
    threads: 1
    context_length: 512
""")
    data = tmp_path / "data"
    supervisor = Supervisor(load_models(catalog)[2:], catalog, data, threads=1)
    supervisor.start()
    try:
        status = supervisor.wait_until_settled(600)[0]
        assert status.state == "ready", status.describe()
        cmdline = Path(f"/proc/{supervisor.pid('tiny-llama')}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--weights") + 1].decode() == str(model_dir)
        # neural-speed's runtime_outs/ is redirected, not reached by changing the worker's directory
        assert os.readlink(f"/proc/{supervisor.pid('tiny-llama')}/cwd") == str(ROOT)
        # several requests, some ending within ITREX's 0.1 s first-token wait (it used to raise then)
        for tokens in (8, 1, 4):
            _, usage = collect(supervisor.endpoint("tiny-llama"), [{"role": "user", "content": "Count to five."}],
                               GenerationParams(temperature=0.0, max_new_tokens=tokens),
                               api_key=supervisor.api_key("tiny-llama"))
            assert usage.completion_tokens == tokens
    finally:
        supervisor.stop()
    assert not list((data / "itrex").glob("hf-*"))  # the GGUF/Qwen2 conversion step never ran
    assert "converting to an HF directory" not in _log(data, "tiny-llama")
    assert "converting to neural-speed fp32" in _log(data, "tiny-llama")  # neural-speed's own reader did


def tiny_llama_catalog(tmp_path: Path) -> Path:
    """A random-weight Llama built in the ITREX env (tests/make_tiny_llama.py) and a models.yaml serving it."""
    model_dir = tmp_path / "tiny-llama"
    subprocess.run([str(itrex_python()), str(ROOT / "tests" / "make_tiny_llama.py"), str(model_dir)], check=True,
                   cwd=ROOT, capture_output=True)
    catalog = tmp_path / "models.yaml"
    catalog.write_text(f"""models:
  - id: tiny-llama
    name: Tiny Llama
    engine: itrex
    source: {{dir: {model_dir}}}
    quantization: RTN INT4
    license: none
    threads: 1
""")
    return catalog


@needs_itrex
def test_a_converter_dies_with_its_worker_when_the_app_is_killed(tmp_path):
    """The worker runs neural-speed's converter as a child. SIGKILL the app mid-conversion: the worker's
    parent-watch kills its process group, so neither the worker nor the converter survives."""
    catalog = tiny_llama_catalog(tmp_path)
    model_dir = tmp_path / "tiny-llama"
    script = ("import sys, time; sys.path.insert(0, %r)\n"
              "from arena.serving.supervisor import Supervisor\nfrom arena.core.config import load_models\n"
              "from pathlib import Path\nm = Path(%r)\ns = Supervisor(load_models(m), m, Path(%r), threads=1)\n"
              "s.start(); time.sleep(600)\n" % (str(ROOT), str(catalog), str(tmp_path / "data")))
    app = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        def converter():
            for proc in Path("/proc").iterdir():
                try:
                    cmd = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"convert_llama.py" in cmd and str(model_dir).encode() in cmd:
                    return int(proc.name)
            return None
        grandchild = wait_for(converter, 300, "neural-speed's converter to start")
        worker = int(Path(f"/proc/{grandchild}/stat").read_text().split(") ")[1].split()[1])  # its parent
        assert os.getpgid(worker) == worker == os.getpgid(grandchild)  # the worker leads its own group
    finally:
        os.kill(app.pid, signal.SIGKILL)
        app.wait()
    deadline = time.time() + 15
    while time.time() < deadline and (_alive(grandchild) or _alive(worker)):
        time.sleep(0.2)
    assert not _alive(grandchild) and not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return False
    return "zombie" not in state


@needs_itrex
def test_a_half_written_quantization_is_redone_not_used(tmp_path):
    """Simulate a worker killed while writing its INT4 file: the file is truncated and COMPLETE is
    missing. The next start does not trust it: it quantizes again and the model answers."""
    catalog = tiny_llama_catalog(tmp_path)
    data = tmp_path / "data"
    for start in (1, 2):
        supervisor = Supervisor(load_models(catalog), catalog, data, threads=1)
        supervisor.start()
        try:
            status = supervisor.wait_until_settled(600)[0]
            assert status.state == "ready", status.describe()
            _, usage = collect(supervisor.endpoint("tiny-llama"), [{"role": "user", "content": "Count to five."}],
                               GenerationParams(temperature=0.0, max_new_tokens=8),
                               api_key=supervisor.api_key("tiny-llama"))
            assert usage.completion_tokens > 0
        finally:
            supervisor.stop()
        (recipe,) = [d for d in (data / "itrex").glob("ns-*/*") if d.is_dir() and d.name != "f32"]
        (quantized,) = recipe.glob("runtime_outs/ne_*_q_*.bin")
        log = data / "logs" / "tiny-llama.log"
        assert "quantizing with ITREX RTN" in log.read_text(errors="replace")
        if start == 1:  # interrupted mid-write: half the file, no marker
            (recipe / "COMPLETE").unlink()
            with open(quantized, "r+b") as handle:
                handle.truncate(quantized.stat().st_size // 2)
            log.unlink()
    assert (recipe / "COMPLETE").is_file()
