"""Start, watch, restart and stop one worker process per model.

The page must be usable while models load, name a model that failed and why,
and bring a crashed worker back for the next round; all of that lives here.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from .config import ModelConfig
from .engines import PHASE_PREFIX
from .engines.itrex import INSTALL_COMMAND as ITREX_INSTALL, itrex_python
from .sources import SourceError, missing_packages, resolve, source_identity
from .worker import ERROR_PREFIX

STATES = ("preparing", "downloading", "loading", "ready", "restarting", "failed", "unavailable", "stopped")


class ModelUnavailable(RuntimeError):
    """The model is not ready; the message says its state and what to do."""


@dataclass(frozen=True)
class ModelStatus:
    id: str
    name: str
    state: str
    detail: str = ""
    load_seconds: float | None = None
    since: float = 0.0
    restarts: int = 0
    remote: str | None = None  # base_url of a model served elsewhere
    params: int | None = None  # parameter count reported by the worker's /health (picks the default judge)

    def describe(self) -> str:
        elapsed = time.time() - self.since
        if self.state == "ready" and self.remote:
            return f"ready (remote: {self.remote})"
        if self.state == "ready":
            return f"ready (loaded in {self.load_seconds:.1f} s)" + (f", restarted {self.restarts}×" if self.restarts else "")
        if self.state in ("failed", "unavailable"):
            return f"{self.state}: {self.detail}"
        return f"{self.state} ({elapsed:.0f} s)" + (f": {self.detail}" if self.detail else "")


def _normal_scheduling() -> None:
    """Runs in the worker child before exec: undo the app's SCHED_BATCH (see app.yield_cpu_to_workers)."""
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


def default_threads() -> int:
    """Half the cores per worker: both models answer at once, and llama.cpp threads that
    outnumber the cores stall each other badly (6.6x slower here, see BENCHMARKS.md)."""
    return max(1, (os.cpu_count() or 2) // 2)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _Worker:
    def __init__(self, model: ModelConfig):
        self.model = model
        self.status = ModelStatus(model.id, model.name, "preparing", since=time.time(),
                                  remote=model.endpoint.base_url if model.endpoint else None)
        self.checked = 0.0  # last probe of a remote endpoint
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.weights: Path | None = None
        self.log_path: Path | None = None


class Supervisor:
    """Owns the worker processes. Thread-safe; all public methods return quickly."""

    def __init__(self, models: list[ModelConfig], models_file: Path, data_dir: Path,
                 threads: int | None = None, health_timeout: float = 900.0, rebuild_cache: bool = False):
        self.models_file, self.data_dir = Path(models_file), Path(data_dir)
        self.threads = threads
        self.rebuild_cache = rebuild_cache
        self.health_timeout = health_timeout
        self._workers = {m.id: _Worker(m) for m in models}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Prepare and spawn every worker in the background, then keep watching them."""
        for worker in self._workers.values():
            threading.Thread(target=self._prepare_and_spawn, args=(worker,), daemon=True,
                             name=f"prepare-{worker.model.id}").start()
        self._monitor = threading.Thread(target=self._watch, daemon=True, name="supervisor")
        self._monitor.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            procs = [w.process for w in self._workers.values() if w.process and w.process.poll() is None]
            for worker in self._workers.values():
                self._set(worker, "stopped")
        for proc in procs:
            proc.terminate()
        deadline = time.time() + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_until_settled(self, timeout: float) -> list[ModelStatus]:
        """Block until no model is still preparing or loading (for the CLI and tests)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            statuses = self.statuses()
            if all(s.state in ("ready", "failed", "unavailable", "stopped") for s in statuses):
                return statuses
            time.sleep(0.2)
        return self.statuses()

    # -- queries ---------------------------------------------------------------------
    def statuses(self) -> list[ModelStatus]:
        with self._lock:
            return [w.status for w in self._workers.values()]

    def model(self, model_id: str) -> ModelConfig:
        try:
            return self._workers[model_id].model
        except KeyError:
            raise ModelUnavailable(f"unknown model {model_id!r}; known: {', '.join(self._workers)}") from None

    def ready_ids(self) -> list[str]:
        return [s.id for s in self.statuses() if s.state == "ready"]

    def endpoint(self, model_id: str, wait: float = 0.0) -> str:
        """Base URL (``.../v1``) of a ready model, waiting up to ``wait`` s for a restart."""
        self.model(model_id)
        deadline = time.time() + wait
        while True:
            with self._lock:
                worker = self._workers[model_id]
                if worker.status.state == "ready" and worker.model.endpoint is not None:
                    return worker.model.endpoint.base_url
                if worker.status.state == "ready" and worker.process and worker.process.poll() is None:
                    return f"http://127.0.0.1:{worker.port}/v1"
                status = worker.status
            if status.state in ("failed", "unavailable", "stopped") or time.time() >= deadline:
                raise ModelUnavailable(f"{status.name} is not ready: {status.describe()}")
            time.sleep(0.1)

    def api_key(self, model_id: str) -> str | None:
        """The key for a remote model, read from the environment variable its entry names."""
        endpoint = self.model(model_id).endpoint
        return os.environ.get(endpoint.api_key_env) if endpoint and endpoint.api_key_env else None

    def pid(self, model_id: str) -> int | None:
        with self._lock:
            proc = self._workers[model_id].process
            return proc.pid if proc and proc.poll() is None else None

    # -- internals -------------------------------------------------------------------
    def _set(self, worker: _Worker, state: str, detail: str = "", **changes) -> None:
        with self._lock:
            if worker.status.state == "stopped":
                return
            since = worker.status.since if worker.status.state == state else time.time()
            worker.status = replace(worker.status, state=state, detail=detail, since=since, **changes)

    def _prepare_and_spawn(self, worker: _Worker) -> None:
        if worker.model.endpoint is not None:  # a remote server: nothing to start, only to check
            self._set(worker, "loading", f"checking {worker.model.endpoint.base_url}")
            return
        source = worker.model.source
        if worker.model.engine == "itrex" and itrex_python() is None:
            self._set(worker, "unavailable", f"ITREX engine not installed; run {ITREX_INSTALL} "
                                             f"(its own 2 GB virtualenv), then restart the arena")
            return
        if worker.model.install and missing_packages(worker.model):
            self._set(worker, "unavailable", f"optional model, not installed; run {worker.model.install} "
                                             f"then restart the arena")
            return
        if source.modelscope or source.hf:
            self._set(worker, "downloading", source.modelscope or source.hf)
        try:
            worker.weights = resolve(worker.model, self.data_dir)
            if worker.model.engine == "itrex":
                worker.weights = self._itrex_dir(worker)
        except SourceError as exc:
            self._set(worker, "failed", str(exc))
            return
        except Exception as exc:
            self._set(worker, "failed", f"could not prepare weights: {type(exc).__name__}: {exc}")
            return
        self._spawn(worker, "loading")

    def _itrex_dir(self, worker: _Worker) -> Path:
        """ITREX needs an HF directory it can read; convert once (in this env) and cache it."""
        weights = worker.weights
        identity = json.dumps(source_identity(worker.model, weights), sort_keys=True)
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        parent = self.data_dir / "itrex" / f"{worker.model.id}-{key}"
        ready = [d for d in parent.glob("*") if (d / "config.json").is_file()] if parent.is_dir() else []
        if ready:
            return ready[0]
        self._set(worker, "preparing", "converting to an HF directory for ITREX")
        parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "arena.engines.itrex_prepare", str(weights), str(parent)],
                              capture_output=True, text=True, cwd=str(Path(__file__).resolve().parent.parent))
        if done.returncode:
            raise SourceError(f"converting {weights.name} for ITREX failed: {done.stderr.strip()[-400:]}")
        return Path(done.stdout.strip().splitlines()[-1])

    def _spawn(self, worker: _Worker, state: str) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        worker.log_path = logs / f"{worker.model.id}.log"
        threads = worker.model.threads or self.threads or default_threads()
        port = free_port()
        python = itrex_python() if worker.model.engine == "itrex" else sys.executable
        cmd = [str(python), "-m", "arena.worker", "--models", str(self.models_file), "--model", worker.model.id,
               "--weights", str(worker.weights), "--port", str(port), "--threads", str(threads), "--exit-with-parent",
               "--data-dir", str(self.data_dir)]
        if self.rebuild_cache and worker.status.restarts == 0:
            cmd.append("--rebuild-cache")
        with self._lock:
            if self._stopping.is_set():
                return
            with open(worker.log_path, "ab") as log:
                worker.process = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=str(Path(__file__).resolve().parent.parent), preexec_fn=_normal_scheduling)
            worker.port = port
            self._set(worker, state, f"pid {worker.process.pid}, {threads} thread(s)")

    def _phase(self, worker: _Worker) -> str | None:
        """The worker's latest ARENA_PHASE line (e.g. 'quantizing to INT4'), read from the end of its log."""
        try:
            with open(worker.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, 2) - 8192))
                tail = log.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return None
        phases = [line[len(PHASE_PREFIX):] for line in tail.splitlines() if line.startswith(PHASE_PREFIX)]
        return phases[-1] if phases else None

    def _failure_reason(self, worker: _Worker, code: int) -> str:
        lines: list[str] = []
        try:
            lines = worker.log_path.read_text(errors="replace").splitlines()[-40:] if worker.log_path else []
        except OSError:
            pass
        for line in reversed(lines):
            if line.startswith(ERROR_PREFIX):
                return line[len(ERROR_PREFIX):]
        tail = next((line for line in reversed(lines) if line.strip()), "")
        return f"worker exited with code {code}" + (f": {tail.strip()}" if tail else "") + f" (log: {worker.log_path})"

    def _watch(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while not self._stopping.wait(0.25):
                for worker in list(self._workers.values()):
                    self._check(worker, http)

    def _check(self, worker: _Worker, http: httpx.Client) -> None:
        if worker.model.endpoint is not None:
            self._check_remote(worker, http)
            return
        state, proc = worker.status.state, worker.process
        if proc is None or state in ("failed", "stopped", "preparing"):
            return
        code = proc.poll()
        if code is not None:
            if state == "ready":  # crashed after serving: bring it back for the next round
                self._set(worker, "restarting", f"worker exited with code {code}; restarting",
                          restarts=worker.status.restarts + 1)
                self._spawn(worker, "restarting")
            else:
                self._set(worker, "failed", self._failure_reason(worker, code))
            return
        if state in ("loading", "restarting"):
            try:
                health = http.get(f"http://127.0.0.1:{worker.port}/health").json()
            except (httpx.HTTPError, ValueError):
                if phase := self._phase(worker):
                    self._set(worker, state, phase)
                if time.time() - worker.status.since > self.health_timeout:
                    proc.kill()
                    self._set(worker, "failed", f"not healthy after {self.health_timeout:.0f} s")
                return
            self._set(worker, "ready", load_seconds=health.get("load_seconds"), params=health.get("n_params"))

    def _check_remote(self, worker: _Worker, http: httpx.Client) -> None:
        """Probe ``GET {base_url}/models``: at once, then every 15 s while it fails, every 60 s when up."""
        endpoint, status = worker.model.endpoint, worker.status
        now = time.time()
        interval = 60 if status.state == "ready" else 15
        if status.state != "loading" and now - worker.checked < interval:
            return
        worker.checked = now
        if endpoint.api_key_env and not os.environ.get(endpoint.api_key_env):
            self._set(worker, "failed", f"environment variable {endpoint.api_key_env} is not set; export it with "
                                        f"the API key of {endpoint.base_url} and restart the arena")
            return
        key = self.api_key(worker.model.id)
        try:
            response = http.get(endpoint.base_url + "/models", headers={"Authorization": f"Bearer {key}"} if key else {})
        except httpx.HTTPError as exc:
            self._set(worker, "failed", f"cannot reach {endpoint.base_url} ({type(exc).__name__}); "
                                        f"is the server running? Retrying every 15 s")
            return
        if response.status_code in (401, 403):
            self._set(worker, "failed", f"{endpoint.base_url} refused the API key (HTTP {response.status_code}); "
                                        f"check {endpoint.api_key_env or 'api_key_env'}")
        elif response.status_code != 200:
            self._set(worker, "failed", f"{endpoint.base_url}/models answered HTTP {response.status_code}")
        else:
            served = [m.get("id") for m in (response.json().get("data") or []) if isinstance(m, dict)]
            if served and endpoint.model not in served:
                self._set(worker, "failed", f"{endpoint.base_url} does not serve {endpoint.model!r}; it serves "
                                            f"{', '.join(map(str, served[:5]))}. Fix 'endpoint.model' in models.yaml")
            elif status.state != "ready":
                self._set(worker, "ready", load_seconds=0.0)
