"""The supervisor never gives up: its watcher survives a remote /models that answers HTML, health
checks accept only the worker they started (model id and pid), and workers lead their own process
group with normal scheduling even when the app runs SCHED_BATCH."""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from arena.core.config import load_models
from arena.serving.supervisor import Catalog, Supervisor, WorkerProcesses

from ..conftest import ROOT, smol_catalog, spawn_smol_worker, wait_for


class _Server:
    """A real HTTP server on loopback whose /v1/models answer the test switches between HTML and JSON."""

    def __init__(self):
        self.html = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if outer.html:
                    body, kind = b"<html><body>Welcome to nginx!</body></html>", "text/html"
                else:
                    body, kind = json.dumps({"object": "list", "data": [{"id": "m1"}]}).encode(), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@pytest.fixture
def html_server():
    server = _Server()
    yield server
    server.httpd.shutdown()


def test_a_remote_answering_html_is_named_and_the_watcher_keeps_watching(html_server, tmp_path):
    """/models answering an HTML page used to kill the watcher thread (no model ever left 'loading').
    Now the model fails with a message saying what came back, the watcher lives on, and when the
    server starts answering a model list the model becomes ready without a restart."""
    catalog = tmp_path / "models.yaml"
    catalog.write_text(f"""models:
  - id: remote
    name: Remote
    engine: openai
    endpoint: {{base_url: "{html_server.base}", model: m1}}
    quantization: x
    license: x
""")
    supervisor = Supervisor(load_models(catalog), catalog, tmp_path / "data")
    supervisor.start()
    try:
        status = wait_for(lambda: next((s for s in supervisor.statuses() if s.state == "failed"), None), 20,
                          "the HTML answer to be reported")
        assert "text/html" in status.detail and "ending in /v1" in status.detail
        assert supervisor._monitor.is_alive()
        html_server.html = False
        wait_for(lambda: supervisor.ready_ids() == ["remote"], 40, "the model to become ready on the next probe")
        assert supervisor._monitor.is_alive()
    finally:
        supervisor.stop()


@pytest.fixture(scope="module")
def smol_worker(tmp_path_factory, smol_weights):
    models = smol_catalog(tmp_path_factory.mktemp("health") / "models.yaml")
    proc, port = spawn_smol_worker(models, smol_weights, 1)
    wait_for(lambda: _health(port), 60, "the SmolLM2 worker")
    yield models, port, proc
    proc.terminate()
    proc.wait(10)


def _health(port):
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
    except httpx.HTTPError:
        return None


def test_health_accepts_only_the_worker_that_was_started(smol_worker, tmp_path):
    """A /health answer from another model, or from the right model in another process (a stale worker on
    a reused port), is not taken as 'our worker is up'; the reason names both ids and pids."""
    models_file, port, proc = smol_worker
    catalog = Catalog(load_models(models_file))
    processes = WorkerProcesses(catalog, models_file, tmp_path, threads=1, rebuild_cache=False, health_timeout=60)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with httpx.Client(timeout=2) as http:
            ours = catalog.get("smol-a")
            ours.process, ours.port = proc, port
            answer, problem = processes.health(ours, http)
            assert answer and answer["pid"] == proc.pid and problem == ""

            wrong_model = catalog.get("smol-b")
            wrong_model.process, wrong_model.port = proc, port
            answer, problem = processes.health(wrong_model, http)
            assert answer is None and "'smol-a'" in problem and "'smol-b'" in problem

            ours.process = other  # the process we started is not the one answering
            answer, problem = processes.health(ours, http)
            assert answer is None and f"pid {proc.pid}" in problem and f"pid {other.pid}" in problem
            ours.status = ours.status.__class__(**{**ours.status.__dict__, "state": "loading"})
            processes.check(ours, http)
            assert catalog.get("smol-a").status.state == "loading"  # not 'ready'
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="needs Linux scheduling policies")
def test_workers_lead_their_own_group_with_normal_scheduling(tmp_path):
    """The app runs SCHED_BATCH; its workers are started without preexec_fn, in a new session, and reset
    their own policy: the worker is its process group's leader and runs SCHED_OTHER."""
    catalog = smol_catalog(tmp_path / "models.yaml")
    script = ("import os, sys, time; sys.path.insert(0, %r)\n"
              "os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))\n"
              "from arena.serving.supervisor import Supervisor\nfrom arena.core.config import load_models\n"
              "from pathlib import Path\nm = Path(%r)\ns = Supervisor(load_models(m)[:1], m, Path(%r), threads=1)\n"
              "s.start(); s.wait_until_settled(60); print(s.pid('smol-a'), flush=True); time.sleep(60)\n"
              % (str(ROOT), str(catalog), str(tmp_path / "data")))
    app = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        worker = int(app.stdout.readline())
        assert os.sched_getscheduler(app.pid) == os.SCHED_BATCH
        assert os.getpgid(worker) == worker != os.getpgid(app.pid)
        assert os.sched_getscheduler(worker) == os.SCHED_OTHER
    finally:
        app.kill()
        app.wait()
    wait_for(lambda: not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split(") ")[1][:1],
             10, "the worker to follow its killed app")


def test_a_workers_phase_reaches_the_page_in_its_language(tmp_path, capsys):
    """Workers write what they are doing as a phrase (a text key and its values, engines.phase); the supervisor
    reads it from the log, adds neural-speed's tensor count, and the page says it in Chinese or English. Names and
    files stay as they are; a line from an older worker (plain text) is shown as it is."""
    from arena.core.texts import phrase, say
    from arena.serving.engines.base import phase
    from arena.serving.memory import expect
    from arena.serving.supervisor import with_notes
    from arena.web.render import describe_status

    models = load_models(smol_catalog(tmp_path / "models.yaml"))
    processes = WorkerProcesses(Catalog(models), tmp_path / "models.yaml", tmp_path, 1, False, 60)
    worker = processes.catalog.get("smol-a")
    worker.log_path = tmp_path / "smol-a.log"
    phase("phase_itrex_quantize", recipe="int4_fullrange-g32-int8", expect=expect("itrex-quantize", 630_000_000))
    worker.log_path.write_text(capsys.readouterr().out + "[ 12/ 290] layers.1.attention.wq.weight\n", encoding="utf-8")
    said = processes.phase(worker)
    assert say(said) == ("quantizing with ITREX RTN int4_fullrange-g32-int8 (expect about 16 s for 0.63 B "
                         "parameters) — tensor 12/290")
    assert say(said, "zh") == "正在用 ITREX RTN int4_fullrange-g32-int8 量化（0.63 B 参数，预计约 16 秒） — 张量 12/290"
    processes.catalog.set(worker, "loading", with_notes(said, phrase("detail_worker", pid=7, threads=2)))
    shown = describe_status(processes.catalog.get("smol-a").status, "zh")
    assert shown.startswith("加载中") and "进程 7，2 个线程" in shown and "quantizing" not in shown
    assert "tensor 12/290; pid 7, 2 thread(s)" in processes.catalog.get("smol-a").status.detail  # API/CLI: English
    worker.log_path.write_text("ARENA_PHASE: warming up the kettle\n", encoding="utf-8")
    assert processes.phase(worker) == "warming up the kettle"
