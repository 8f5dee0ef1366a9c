"""Start, watch, restart and stop one worker process per model.

The page must be usable while models load, name a model that failed and why,
and bring a crashed worker back for the next round; all of that lives here.

Three jobs, three parts: ``Catalog`` (the models and their statuses), ``WorkerProcesses``
(spawning, health-checking and killing local workers, each in its own process group so a
converter it started dies with it) and ``RemoteProber`` (``engine: openai`` servers). What is
special about an engine (its interpreter, its preparation step, its sources) comes from the engine
registry (``arena.serving.engines.registry``). ``Supervisor`` ties them together and runs the watcher,
which survives any error in one model's check: it logs it, backs off and keeps watching.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from arena.core.config import PROJECT_DIR, ModelConfig
from arena.core.redact import without_credentials
from arena.core.texts import Phrase, phrase, say
from arena.serving import memory
from arena.serving.client import auth_headers
from arena.serving.engines.base import ERROR_PREFIX, PHASE_PREFIX
from arena.serving.engines.registry import engine_spec
from arena.serving.memory import InsufficientMemory
from arena.serving.sources import SourceError, missing_packages, resolve

_STEP = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
WORKER_KEY_ENV = "ARENA_WORKER_KEY"
STATES = ("preparing", "downloading", "loading", "ready", "restarting", "failed", "unavailable", "stopped")
log = logging.getLogger("arena.serving.supervisor")


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
    remote: str | None = None  # base_url of a model served elsewhere, without any credentials in it
    params: int | None = None  # parameter count reported by the worker's /health (picks the default judge)
    reason: Phrase | None = None  # ``detail`` as a phrase, for the page's language

    def describe(self) -> str:
        elapsed = time.time() - self.since
        if self.state == "ready" and self.remote:
            return f"ready (remote: {self.remote})"
        if self.state == "ready":
            return f"ready (loaded in {self.load_seconds:.1f} s)" + (f", restarted {self.restarts}×" if self.restarts else "")
        if self.state in ("failed", "unavailable"):
            return f"{self.state}: {self.detail}"
        return f"{self.state} ({elapsed:.0f} s)" + (f": {self.detail}" if self.detail else "")


def default_threads() -> int:
    """Half the cores per worker: both models answer at once, and llama.cpp threads that
    outnumber the cores stall each other badly (6.6x slower here, see BENCHMARKS.md)."""
    return max(1, (os.cpu_count() or 2) // 2)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _Worker:
    """Everything the supervisor tracks about one model."""

    def __init__(self, model: ModelConfig):
        self.model = model
        self.status = ModelStatus(model.id, model.name, "preparing", since=time.time(),
                                  remote=without_credentials(model.endpoint.base_url) if model.endpoint else None)
        self.checked = 0.0  # last probe of a remote endpoint
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.weights: Path | None = None
        self.log_path: Path | None = None
        self.notes = ""            # shown while loading (e.g. a memory warning)
        self.errors = 0            # consecutive errors of the watcher on this model
        self.next_check = 0.0      # back-off after an error


class Catalog:
    """The models and their statuses; thread-safe."""

    def __init__(self, models: list[ModelConfig]):
        self.workers = {m.id: _Worker(m) for m in models}
        self.lock = threading.RLock()

    def get(self, model_id: str) -> _Worker:
        try:
            return self.workers[model_id]
        except KeyError:
            raise ModelUnavailable(f"unknown model {model_id!r}; known: {', '.join(self.workers)}") from None

    def statuses(self) -> list[ModelStatus]:
        with self.lock:
            return [w.status for w in self.workers.values()]

    def set(self, worker: _Worker, state: str, detail: "Phrase | str" = "", **changes) -> None:
        """``detail``: why the model is in its state, a phrase the page reads in its language (the status keeps
        its English text for the API, CLI and logs), or a text from elsewhere shown as it is."""
        with self.lock:
            if worker.status.state == "stopped":
                return
            since = worker.status.since if worker.status.state == state else time.time()
            reason = detail if isinstance(detail, Phrase) else None
            worker.status = replace(worker.status, state=state, detail=say(detail), since=since, reason=reason,
                                    **changes)


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the worker's whole process group (it is the group leader): converters it started go too."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def with_notes(detail: "Phrase | str", notes: "Phrase | None") -> "Phrase | str":
    """A status detail with the notes the preparation left (a memory warning), if any."""
    return phrase("detail_with_notes", detail=detail, notes=notes) if notes else detail


class WorkerProcesses:
    """Spawns worker processes, reads their logs and checks their health."""

    def __init__(self, catalog: Catalog, models_file: Path, data_dir: Path, threads: int | None,
                 rebuild_cache: bool, health_timeout: float):
        self.catalog, self.models_file, self.data_dir = catalog, models_file, data_dir
        self.threads, self.rebuild_cache, self.health_timeout = threads, rebuild_cache, health_timeout
        self.stopping = threading.Event()
        # Every worker of this supervisor takes requests only with this key (handed over in the environment,
        # never on a command line that `ps` shows): other programs and web pages on the machine can find the
        # port, not the key.
        self.key = secrets.token_urlsafe(32)

    def prepare_and_spawn(self, worker: _Worker) -> None:
        spec = engine_spec(worker.model.engine)
        if spec.interpreter() is None:
            values = {"engine": spec.name, "command": spec.install_command}
            self.catalog.set(worker, "unavailable", phrase("reason_engine_missing", **values))
            return
        if worker.model.install and missing_packages(worker.model):
            values = {"command": worker.model.install}
            self.catalog.set(worker, "unavailable", phrase("reason_optional_missing", **values))
            return
        source = worker.model.source
        if source.modelscope or source.hf:
            self.catalog.set(worker, "downloading", source.modelscope or source.hf)
        try:
            weights = resolve(worker.model, self.data_dir)
            prepared = spec.prepare(worker.model, weights, self.data_dir,
                                    lambda state, detail: self.catalog.set(worker, state, detail))
        except (SourceError, InsufficientMemory) as exc:
            self.catalog.set(worker, "failed", exc.reason if isinstance(exc, InsufficientMemory) else str(exc))
            return
        except Exception as exc:
            log.exception("preparing %s failed", worker.model.id)
            values = {"error": f"{type(exc).__name__}: {exc}"}
            self.catalog.set(worker, "failed", phrase("reason_prepare_failed", **values))
            return
        worker.weights, worker.notes = prepared.weights, prepared.notes
        self.spawn(worker, "loading")

    def spawn(self, worker: _Worker, state: str) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        worker.log_path = logs / f"{worker.model.id}.log"
        threads = worker.model.threads or self.threads or default_threads()
        port = free_port()
        spec = engine_spec(worker.model.engine)
        python = spec.interpreter()
        if spec.serve:
            cmd = spec.serve(python, worker.model, worker.weights, port, threads, WORKER_KEY_ENV)
        else:
            cmd = [str(python), "-m", "arena.serving.worker", "--models", str(self.models_file), "--model", worker.model.id,
                   "--weights", str(worker.weights), "--port", str(port), "--threads", str(threads),
                   "--exit-with-parent", "--data-dir", str(self.data_dir), "--api-key-env", WORKER_KEY_ENV]
            if self.rebuild_cache and worker.status.restarts == 0:
                cmd.append("--rebuild-cache")
        with self.catalog.lock:
            if self.stopping.is_set():
                return
            with open(worker.log_path, "ab") as log_file:
                # Its own session and process group: stop() and the worker's parent-watch kill the group,
                # grandchildren included. No preexec_fn (unsafe in a threaded parent): the worker resets
                # its own scheduling policy when it starts.
                worker.process = subprocess.Popen(
                    cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=str(PROJECT_DIR), start_new_session=True, env={**os.environ, WORKER_KEY_ENV: self.key})
            worker.port = port
            self.catalog.set(worker, state, with_notes(phrase("detail_worker", pid=worker.process.pid, threads=threads),
                                                       worker.notes))

    def stop(self) -> None:
        self.stopping.set()
        with self.catalog.lock:
            procs = [w.process for w in self.catalog.workers.values() if w.process and w.process.poll() is None]
        for proc in procs:
            kill_group(proc, signal.SIGTERM)
        deadline = time.time() + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            kill_group(proc, signal.SIGKILL)  # the worker, and whatever it left behind in its group
            proc.wait()

    def phase(self, worker: _Worker) -> "Phrase | str | None":
        """The worker's latest ARENA_PHASE line (e.g. 'quantizing to INT4'), read from the end of its log: a
        phrase (engines/base.py phase() writes one as JSON), or the line's text if it is none."""
        try:
            with open(worker.log_path, "rb") as log_file:
                log_file.seek(max(0, log_file.seek(0, 2) - 8192))
                tail = log_file.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return None
        lines = tail.splitlines()
        at = max((i for i, line in enumerate(lines) if line.startswith(PHASE_PREFIX)), default=None)
        if at is None:
            return None
        text, _, data = lines[at][len(PHASE_PREFIX):].partition("\t")
        try:
            said: Phrase | str = Phrase.from_json(json.loads(data))
            say(said)  # a key this version knows
        except (ValueError, TypeError, KeyError, AttributeError):
            said = text
        # neural-speed prints "[ 285/ 291] layers.31.attention.wv.weight ..." per tensor while quantizing
        steps = [m for line in lines[at + 1:] if (m := _STEP.match(line))]
        return phrase("phase_tensor", phase=said, done=steps[-1][1], total=steps[-1][2]) if steps else said

    def failure_reason(self, worker: _Worker, code: int) -> str:
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

    def health(self, worker: _Worker, http: httpx.Client) -> tuple[dict | None, str]:
        """(the worker's /health answer if it is OUR worker, else None; why not)."""
        try:
            answer = http.get(f"http://127.0.0.1:{worker.port}/health").json()
        except (httpx.HTTPError, ValueError):
            return None, ""
        if not isinstance(answer, dict):
            return None, f"port {worker.port} answered /health with {type(answer).__name__}"
        if answer.get("model") != worker.model.id or answer.get("pid") != worker.process.pid:
            return None, (f"port {worker.port} is answered by model {answer.get('model')!r} pid {answer.get('pid')}, "
                          f"not by our worker ({worker.model.id!r} pid {worker.process.pid})")
        return answer, ""

    def served_health(self, worker: _Worker, http: httpx.Client) -> tuple[dict | None, str]:
        """The same for a server of the plain OpenAI protocol (vLLM): it is OURS when it lists the model for
        our key and refuses a request without it (a server someone else started on the port knows no key of
        ours). None while it starts."""
        url = f"http://127.0.0.1:{worker.port}/v1/models"
        try:
            ours = http.get(url, headers=auth_headers(self.key))
            if ours.status_code != 200:
                return None, ""
            served = [m.get("id") for m in ours.json().get("data", []) if isinstance(m, dict)]
            anyone = http.get(url).status_code
        except (httpx.HTTPError, ValueError, AttributeError):
            return None, ""
        if anyone != 401 or worker.model.id not in served:
            return None, (f"port {worker.port} is answered by another server (it serves {', '.join(map(str, served))}"
                          f"{'' if anyone == 401 else ' without a key'}), not by ours for {worker.model.id!r}")
        return {"load_seconds": round(time.time() - worker.status.since, 1),
                "n_params": memory.count_params(worker.weights)}, ""

    def check(self, worker: _Worker, http: httpx.Client) -> None:
        state, proc = worker.status.state, worker.process
        if proc is None or state in ("failed", "stopped", "preparing"):
            return
        code = proc.poll()
        if code is not None:
            kill_group(proc, signal.SIGKILL)  # anything the worker started dies with it
            if state == "ready":  # crashed after serving: bring it back for the next round
                self.catalog.set(worker, "restarting", phrase("reason_restarting", code=code), restarts=worker.status.restarts + 1)
                self.spawn(worker, "restarting")
            else:
                self.catalog.set(worker, "failed", self.failure_reason(worker, code))
            return
        if state in ("loading", "restarting"):
            served = engine_spec(worker.model.engine).serve is not None
            answer, problem = (self.served_health if served else self.health)(worker, http)
            if answer is None:
                detail = problem or self.phase(worker)
                if detail:
                    self.catalog.set(worker, state, with_notes(detail, worker.notes))
                if time.time() - worker.status.since > self.health_timeout:
                    kill_group(proc, signal.SIGKILL)
                    values = {"seconds": round(self.health_timeout), "problem": f" ({problem})" if problem else ""}
                    self.catalog.set(worker, "failed", phrase("reason_not_healthy", **values))
                return
            self.catalog.set(worker, "ready", load_seconds=answer.get("load_seconds"), params=answer.get("n_params"))


class RemoteProber:
    """Probes ``GET {base_url}/models``: at once, then every 15 s while it fails, every 60 s when up."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    @staticmethod
    def api_key(model: ModelConfig) -> str | None:
        endpoint = model.endpoint
        return os.environ.get(endpoint.api_key_env) if endpoint and endpoint.api_key_env else None

    def check(self, worker: _Worker, http: httpx.Client) -> None:
        endpoint, status = worker.model.endpoint, worker.status
        url = without_credentials(endpoint.base_url)  # what the page and the API may show

        def fail(key: str, **values) -> None:
            self.catalog.set(worker, "failed", phrase(key, url=url, **values))

        now = time.time()
        interval = 60 if status.state == "ready" else 15
        if status.state != "loading" and now - worker.checked < interval:
            return
        worker.checked = now
        if endpoint.api_key_env and not os.environ.get(endpoint.api_key_env):
            fail("reason_key_unset", variable=endpoint.api_key_env)
            return
        key = self.api_key(worker.model)
        try:
            response = http.get(endpoint.base_url + "/models", headers=auth_headers(key))
        except httpx.HTTPError as exc:
            fail("reason_unreachable", error=type(exc).__name__)
            return
        if response.status_code in (401, 403):
            fail("reason_key_refused", status=response.status_code, variable=endpoint.api_key_env or "api_key_env")
            return
        if response.status_code != 200:
            fail("reason_http", status=response.status_code)
            return
        try:
            body = response.json()
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise ValueError("no 'data' list")
        except ValueError as exc:
            kind = response.headers.get("content-type", "unknown content type").split(";")[0]
            fail("reason_not_openai", error=f"{kind}: {exc}")
            return
        served = [m.get("id") for m in data if isinstance(m, dict)]
        if served and endpoint.model not in served:
            fail("reason_not_served", model=endpoint.model, served=", ".join(map(str, served[:5])))
        elif status.state != "ready":
            self.catalog.set(worker, "ready", load_seconds=0.0)


class Supervisor:
    """Owns the worker processes. Thread-safe; all public methods return quickly."""

    def __init__(self, models: list[ModelConfig], models_file: Path, data_dir: Path,
                 threads: int | None = None, health_timeout: float = 900.0, rebuild_cache: bool = False):
        self.models_file, self.data_dir = Path(models_file), Path(data_dir)
        self.threads = threads
        self.rebuild_cache = rebuild_cache
        self.health_timeout = health_timeout
        self.catalog = Catalog(models)
        self.processes = WorkerProcesses(self.catalog, self.models_file, self.data_dir, threads, rebuild_cache,
                                         health_timeout)
        self.remote = RemoteProber(self.catalog)
        self._workers = self.catalog.workers
        self._lock = self.catalog.lock
        self._stopping = self.processes.stopping
        self._monitor: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Prepare and spawn every worker in the background, then keep watching them."""
        for worker in self._workers.values():
            if worker.model.endpoint is not None:  # a remote server: nothing to start, only to check
                url = without_credentials(worker.model.endpoint.base_url)
                self.catalog.set(worker, "loading", phrase("reason_checking", url=url))
                continue
            threading.Thread(target=self.processes.prepare_and_spawn, args=(worker,), daemon=True,
                             name=f"prepare-{worker.model.id}").start()
        self._monitor = threading.Thread(target=self._watch, daemon=True, name="supervisor")
        self._monitor.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for worker in self._workers.values():
                self.catalog.set(worker, "stopped")
        self.processes.stop()

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
        return self.catalog.statuses()

    def model(self, model_id: str) -> ModelConfig:
        return self.catalog.get(model_id).model

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
        """The key for one of our workers, or for a remote model the one its entry's environment variable holds."""
        model = self.model(model_id)
        return self.processes.key if model.endpoint is None else RemoteProber.api_key(model)

    def pid(self, model_id: str) -> int | None:
        with self._lock:
            proc = self.catalog.get(model_id).process
            return proc.pid if proc and proc.poll() is None else None

    # -- the watcher -----------------------------------------------------------------
    def _watch(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while not self._stopping.wait(0.25):
                for worker in list(self._workers.values()):
                    self._check_safely(worker, http)

    def _check_safely(self, worker: _Worker, http: httpx.Client) -> None:
        """One model's check; an error is logged, shown and retried with back-off, never fatal."""
        now = time.time()
        if now < worker.next_check:
            return
        try:
            if worker.model.endpoint is not None:
                self.remote.check(worker, http)
            else:
                self.processes.check(worker, http)
            worker.errors = 0
        except Exception as exc:
            worker.errors += 1
            delay = min(30.0, 0.5 * 2 ** worker.errors)
            worker.next_check = now + delay
            log.exception("checking %s failed (%d in a row); retrying in %.0f s", worker.model.id, worker.errors, delay)
            if worker.status.state not in ("ready", "stopped"):
                self.catalog.set(worker, worker.status.state,
                                 f"check failed ({type(exc).__name__}: {exc}); retrying in {delay:.0f} s")
