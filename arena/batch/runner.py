"""Batch runs: every selected preset through every selected model, stored, resumable, then judged.

The runner talks to models only through the workers the Supervisor runs (the same catalog,
engines and INT4 cache as the page), with one call per group of questions to the worker's
``/v1/arena/batch`` endpoint, so engines that decode several sequences at once do.

Resuming: each answer is keyed by (run, model, preset, settings hash, seed, repeat). The
settings hash covers the generation settings, the model's models.yaml entry and the
question text, so a changed question or model entry is a new key, and ``repeat`` is in the
key so repeats are never served from one cached answer. A resumed run asks only for keys
that have no successful answer yet; ``--fresh`` asks again for everything.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import platform
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from arena.core.config import LOCAL_ENGINES, ModelConfig, Prompt
from arena.core.generation import GenerationParams, decode_speed
from arena.core.language import language_of
from arena.grading import grader as grader_module
from arena.grading import grades as G
from arena.grading import judge as J
from arena.grading.grader import METHODS, Ask, Gradable
from arena.serving import memory
from arena.serving.client import EndpointError, batch_chat
from arena.serving.engines.base import BatchAnswer, BatchRequest, installed_versions
from arena.serving.supervisor import ModelUnavailable, Supervisor, default_threads
from arena.storage.store import Store

JUDGE_MAX_TOKENS = 200
LIBRARIES = ("llama-cpp-python", "torch", "transformers", "torchao", "optimum-quanto", "gradio", "numpy")


class BatchError(ValueError):
    """The batch cannot start (or resume); the message says what to change. Raised before any work."""


@dataclass(frozen=True)
class BatchSettings:
    """Generation settings applied to every model of a run (on top of each model's own defaults)."""

    temperature: float = 0.0          # greedy by default: reproducible
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0                     # answer seed = seed + repeat
    repeats: int = 1
    system_prompt: str = ""
    batch_size: int = 8               # questions per worker call (decoded together where the engine can)
    concurrency: int = 8              # requests in flight to a server without the arena's batch endpoint
    judge_max_tokens: int = JUDGE_MAX_TOKENS  # a short reason and the verdict line


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()


def model_entry(model: ModelConfig) -> dict:
    """The models.yaml entry as stored with a run (what produced the answers)."""
    return json.loads(json.dumps(dataclasses.asdict(model), default=str))


# Fields of a models.yaml entry that only describe the model to people: renaming a model must not make a
# resumed run ask everything again (nor the report show every answer twice).
DISPLAY_FIELDS = ("name", "quantization", "license", "identity_words", "install", "line", "reference", "autostart",
                  "retired")


def settings_hash(settings: BatchSettings, model: ModelConfig, question: str) -> str:
    """What an answer depends on besides run, seed and repeat: settings, the model entry's fields that
    change answers (engine, source, quantize, generation, context, threads, endpoint), question text."""
    generation = {k: v for k, v in dataclasses.asdict(settings).items()
                  if k not in ("repeats", "batch_size", "seed", "judge_max_tokens", "concurrency")}
    entry = {k: v for k, v in model_entry(model).items() if k not in DISPLAY_FIELDS}
    return _digest(generation, entry, question)[:16]


def answer_key(run_id: str, model_id: str, preset_id: str, settings_digest: str, seed: int, repeat: int) -> str:
    """The resume key of one answer."""
    return _digest("answer", run_id, model_id, preset_id, settings_digest, seed, repeat)[:32]


def pair_id(run_id: str, preset_id: str, repeat: int, model_a: str, model_b: str, text_a: str, text_b: str) -> str:
    """A judged pair; the answer texts are part of the id, so re-asked answers are judged again."""
    return _digest("pair", run_id, preset_id, repeat, model_a, model_b, text_a, text_b)[:32]


def params_for(model: ModelConfig, settings: BatchSettings) -> GenerationParams:
    """The run's settings on top of the model's own defaults, as the page does (rounds.Settings.params)."""
    defaults = {k: v for k, v in model.generation.items() if k in GenerationParams.__dataclass_fields__}
    return GenerationParams(**{**defaults, "temperature": settings.temperature, "top_p": settings.top_p,
                               "max_new_tokens": settings.max_new_tokens, "seed": None})


def messages_for(question: str, system_prompt: str) -> list[dict]:
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": question}]


def turn_depths(presets: list[Prompt]) -> dict[str, int]:
    """How many turns come before each preset's (0 for an ordinary preset)."""
    by_id = {p.id: p for p in presets}
    depth: dict[str, int] = {}
    for preset in presets:
        n, cursor = 0, preset
        while cursor.follows and cursor.follows in by_id:
            n, cursor = n + 1, by_id[cursor.follows]
        depth[preset.id] = n
    return depth


def _chunks_by_depth(items: list[tuple], depth: dict[str, int], size: int) -> list[list[tuple]]:
    """Chunks of at most ``size`` items, never mixing turns of different depth (a second turn needs the first's
    answer stored before it is asked); ``items`` sorted by depth."""
    chunks: list[list[tuple]] = []
    for _, same in itertools.groupby(items, key=lambda item: depth[item[1].id]):
        same = list(same)
        chunks += [same[i:i + size] for i in range(0, len(same), size)]
    return chunks


def select_presets(prompts: list[Prompt], preset_ids: list[str] | None, category: str | None) -> list[Prompt]:
    """The presets of a run, in prompts.yaml order; unknown ids or an empty selection are refused."""
    known = {p.id: p for p in prompts}
    if preset_ids:
        unknown = [p for p in preset_ids if p not in known]
        if unknown:
            raise BatchError(f"unknown preset id(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [p for p in prompts if (not preset_ids or p.id in preset_ids) and (not category or p.category == category)]
    if category and not any(p.category == category for p in prompts):
        raise BatchError(f"unknown category {category!r}; known: {', '.join(dict.fromkeys(p.category for p in prompts))}")
    if not chosen:
        raise BatchError("the selection of presets is empty; pick at least one preset (or another category)")
    return chosen


def choose_judge(catalog: list[ModelConfig], ready: set[str] | None = None) -> str | None:
    """The default grader: the local model with the largest weights on disk, read from the files (so a batch
    loads only its own models and the grader), ties broken by catalog order; among ``ready`` ones if given.
    Models whose engine or packages are not installed, remote, retired and ``autostart: false`` models are
    graders only when named."""
    from arena.serving.engines.registry import engine_spec
    from arena.serving.sources import missing_packages, weights_bytes

    candidates = []
    for index, model in enumerate(catalog):
        if model.engine not in LOCAL_ENGINES or (ready is not None and model.id not in ready) or \
                model.retired or not model.autostart:
            continue
        if engine_spec(model.engine).interpreter() is None or (model.install and missing_packages(model)):
            continue
        size = weights_bytes(model)
        if size:
            candidates.append((size, -index, model.id))
    return max(candidates)[2] if candidates else None


def environment(supervisor: Supervisor, model_ids: list[str]) -> dict:
    """Machine, libraries, threads and models.yaml entries, stored with the run (the report's header)."""
    cpu = platform.processor() or ""
    memory = None
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    versions = installed_versions(LIBRARIES)
    models = {}
    for model_id in model_ids:
        model = supervisor.model(model_id)
        models[model_id] = {"entry": model_entry(model),
                            "threads": model.threads or supervisor.threads or default_threads(),
                            "params": next((s.params for s in supervisor.statuses() if s.id == model_id), None)}
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "python": platform.python_version(),
            "platform": platform.platform(), "libraries": versions, "models": models}


@dataclass
class Plan:
    """A validated run: what to ask, of whom, who grades and how."""

    run_id: str
    models: list[str]
    presets: list[Prompt]
    settings: BatchSettings
    judge: str | None           # the grader model (None: assertions only, or no grading)
    resume: bool = False
    fresh: bool = False
    method: str = "auto"        # grader.METHODS
    margin: float = G.DEFAULT_MARGIN  # for a new run: G.default_margin(method) unless --margin
    refused: dict | None = None  # {"grader", "reason", "languages"}: the grader auto would have used, where and
    # why it may not decide (refusal)
    calibration: dict = field(default_factory=dict)  # language -> a person's own calibration of the grader (storage
    # grader_calibrations), copied when the run was planned so that a later fit does not change its report

    def config(self) -> dict:
        return {"models": self.models, "presets": [p.to_json() for p in self.presets],
                "settings": dataclasses.asdict(self.settings), "judge": self.judge, "method": self.method,
                "margin": self.margin, "grade_prompt": G.PAIRWISE_V1 if self.method == "pairwise" else
                J.PROMPT_VERSION if self.method == "generate" else G.REFERENCE_V1,
                "self_judging": self.judge in self.models if self.judge else False, "grader_refused": self.refused,
                "calibration": self.calibration,
                "judge_rule": "named with --judge" if self.judge and self._named_judge else
                "the local model with the largest weights on disk"}

    _named_judge: bool = field(default=False, repr=False)


@dataclass
class Progress:
    run_id: str
    done: int
    total: int
    phase: str
    started: float

    @property
    def eta_s(self) -> float | None:
        """Remaining time at the average pace so far (answers and judgments weigh alike)."""
        if not self.done or self.done >= self.total:
            return None if self.done < self.total else 0.0
        return (time.time() - self.started) / self.done * (self.total - self.done)


def build_pairs(run_id: str, config: dict, answers: list[dict]) -> list[dict]:
    """Every pair of models per (preset, repeat) whose two answers succeeded, in the run's model order."""
    presets = {p["id"]: p for p in config["presets"]}
    by_key = {(a["model"], a["preset_id"], a["repeat"]): a for a in answers}
    pairs = []
    for preset in config["presets"]:
        for repeat in range(config["settings"]["repeats"]):
            for model_a, model_b in itertools.combinations(config["models"], 2):
                a, b = by_key.get((model_a, preset["id"], repeat)), by_key.get((model_b, preset["id"], repeat))
                if not a or not b or a["error"] or b["error"]:
                    continue
                p = presets[preset["id"]]
                pairs.append({
                    "id": pair_id(run_id, preset["id"], repeat, model_a, model_b, a["text"], b["text"]),
                    "source": f"run:{run_id}", "run_id": run_id, "preset_id": preset["id"], "repeat": repeat,
                    "language": language_of(p["question"], p.get("language")), "question": p["question"],
                    "reference": p.get("reference") or None, "model_a": model_a, "model_b": model_b,
                    "answer_a": a["text"], "answer_b": b["text"], "human_winner": None, "created": time.time()})
    return pairs


ProgressCallback = Callable[[Progress], None]


def _ready_models(models: list[str] | None, statuses: dict) -> list[str]:
    """The models a run asks: those named, all ready; or, when none are named, every ready model."""
    if models:
        not_ready = [statuses[m] for m in models if statuses[m].state != "ready"]
        if not_ready:
            raise BatchError("; ".join(f"model {s.id} is not ready: {s.describe()}" for s in not_ready))
        return models
    models = [s.id for s in statuses.values() if s.state == "ready"]
    if not models:
        raise BatchError("no model is ready; see each model's status (python -m arena models prepare)")
    return models


_CALIBRATION_KEYS = ("threshold", "margin", "labels", "positives", "questions", "auc", "auc_low", "auc_high", "kappa",
                     "accuracy", "refused", "sources", "created")


def own_calibration(row: dict, margin: float | None) -> dict:
    """A stored calibration as a run keeps it; a margin named for the run (--margin) overrides the fitted one."""
    kept = {k: row[k] for k in _CALIBRATION_KEYS}
    return kept if margin is None else {**kept, "margin": float(margin)}


def refusal(grader: str | None, languages: set[str], calibration: dict[str, dict]) -> dict | None:
    """Which of a run's languages ``grader`` may not decide pass/fail in under auto, and why: where a person's own
    calibration exists, what it measured; elsewhere what the arena measured (grades.MEASURED_GRADERS). None when it
    may decide every language (or there is no grader)."""
    if grader is None:
        return None
    reasons = {}
    for language in sorted(languages, reverse=True):
        own = calibration.get(language)
        if reason := own["refused"] if own else G.refused_grader(grader, language):
            reasons[language] = reason
    if not reasons:
        return None
    if len(reasons) == 1 or len(set(reasons.values())) == 1:
        reason = next(iter(reasons.values()))  # one reason: its language is named where it is shown
    else:
        reason = "; ".join(f"in {language}, {why}" for language, why in reasons.items())
    return {"grader": grader, "reason": reason, "languages": list(reasons)}


def cutoffs_of(config: dict) -> G.Cutoffs:
    """The pass thresholds and pair margins a run decides with (its margin, its own calibration per language), and
    the languages its grader model may not decide."""
    calibration = config.get("calibration") or {}
    return G.Cutoffs(margin=config.get("margin", G.DEFAULT_MARGIN),
                     calibrated={lang: (row["threshold"], row["margin"]) for lang, row in calibration.items()},
                     refused=frozenset((config.get("grader_refused") or {}).get("languages", ())))


class BatchRunner:
    """Runs a Plan against a running Supervisor and stores everything in the Store."""

    def __init__(self, supervisor: Supervisor, store: Store, prompts: list[Prompt], concurrency: int = 8):
        self.supervisor, self.store, self.prompts = supervisor, store, prompts
        self.concurrency = concurrency  # requests in flight to a server without the arena's batch endpoint

    # -- validation: everything that can be refused is refused here, before any work -------------
    def catalog(self) -> dict[str, ModelConfig]:
        return {s.id: self.supervisor.model(s.id) for s in self.supervisor.statuses()}

    def check_known(self, models: list[str] | None, judge: str | None) -> None:
        catalog = self.catalog()
        unknown = [m for m in (models or []) + ([judge] if judge and judge != "none" else []) if m not in catalog]
        if unknown:
            raise BatchError(f"unknown model id(s) {', '.join(unknown)}; known: {', '.join(catalog)}")

    def plan(self, models: list[str] | None = None, preset_ids: list[str] | None = None,
             category: str | None = None, settings: BatchSettings = BatchSettings(), judge: str | None = None,
             resume: str | None = None, fresh: bool = False, method: str = "auto",
             margin: float | None = None) -> Plan:
        """Validate a new run (or a resume) against the catalog and the models' current states.

        ``judge``: the grader model's id, None for the default grader, or "none" for no model grader
        (then ``method`` auto still grades by assertions). ``method``: grader.METHODS."""
        if method not in METHODS:
            raise BatchError(f"unknown grading method {method!r}; use one of {', '.join(METHODS)}")
        refused, calibration = None, {}
        if resume:
            run = self.store.batch_run(resume)
            if run is None:
                known = ", ".join(r["id"] for r in self.store.batch_runs()[-5:]) or "none yet"
                raise BatchError(f"no batch run {resume!r} to resume; recent runs: {known}")
            config = run["config"]
            models = config["models"]
            stored = {p["id"]: Prompt.from_json(p) for p in config["presets"]}
            presets = list(stored.values())
            settings = BatchSettings(**config["settings"])
            judge = config.get("judge") or "none"  # the run's grader, so its report stays one grader's
            method = config.get("method", "generate")  # runs before grading had only the generative judge
            margin = config.get("margin", margin)
            refused, calibration = config.get("grader_refused"), config.get("calibration") or {}
        self.check_known(models, judge)
        statuses = {s.id: s for s in self.supervisor.statuses()}
        models = _ready_models(models, statuses)
        if len(set(models)) != len(models):
            raise BatchError("a model is listed twice in --models")
        if not resume:  # a multi-turn preset (MT-Bench) is asked turn by turn: one preset per turn
            presets = [turn for preset in select_presets(self.prompts, preset_ids, category) for turn in preset.turns()]
        if settings.repeats < 1 or settings.batch_size < 1 or settings.max_new_tokens < 1:
            raise BatchError("--repeats, --batch-size and --max-new-tokens must be at least 1")
        named = judge not in (None, "none")
        judge = self._grader(judge, method, len(models), statuses)
        languages = {language_of(p.question, p.language) for p in presets}
        if judge and method in ("auto", "reference") and not resume:
            calibration = {lang: own_calibration(row, margin) for lang, row in self.store.calibrations(judge).items()
                           if lang in languages}
        if method == "auto" and (refused_now := refusal(judge, languages, calibration)):
            refused = refused_now
            judge = None if set(refused["languages"]) >= languages else judge  # none left: the rules decide alone
        plan = Plan(run_id=resume or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], models=models,
                    presets=presets, settings=settings, judge=judge, resume=bool(resume), fresh=fresh,
                    method=method, margin=G.default_margin(method) if margin is None else float(margin),
                    refused=refused, calibration=calibration)
        plan._named_judge = named
        return plan

    def _grader(self, judge: str | None, method: str, n_models: int, statuses: dict) -> str | None:
        """The grader model a run uses: the one named, the default one (None: the local model with the largest
        weights among the ready ones) or no model ("none", or a method that needs none)."""
        needs_grader = method != "assert" and (n_models >= 2 or method in ("auto", "reference"))
        if judge is None and needs_grader:
            judge = choose_judge(list(self.catalog().values()),
                                 {s.id for s in statuses.values() if s.state == "ready"})
            if judge is None:
                raise BatchError("no ready local model can grade; name one with --judge ID, or pass --judge none "
                                 "(assertions only)")
        elif judge == "none" or not needs_grader:
            judge = None
        elif statuses[judge].state != "ready":
            raise BatchError(f"grader {judge} is not ready: {statuses[judge].describe()}")
        if judge is None and method in ("reference", "pairwise", "generate"):
            raise BatchError(f"--method {method} needs a grader model: name one with --judge ID")
        return judge

    # -- work ---------------------------------------------------------------------------------------
    def pending_answers(self, plan: Plan) -> list[tuple[str, Prompt, int, str, str]]:
        """(model, preset, repeat, settings hash, key) still to ask, model by model."""
        done = set() if plan.fresh else self.store.answered_keys(plan.run_id)
        pending = []
        for model_id in plan.models:
            model = self.supervisor.model(model_id)
            for preset in plan.presets:
                digest = settings_hash(plan.settings, model, preset.question)
                for repeat in range(plan.settings.repeats):
                    key = answer_key(plan.run_id, model_id, preset.id, digest, plan.settings.seed + repeat, repeat)
                    if key not in done:
                        pending.append((model_id, preset, repeat, digest, key))
        return pending

    def run(self, plan: Plan, on_progress: ProgressCallback | None = None,
            stop: threading.Event | None = None) -> str:
        """Ask, store, grade. Returns the run's final status: 'done' or 'interrupted' (stop set or Ctrl-C)."""
        stop = stop or threading.Event()
        self.concurrency = plan.settings.concurrency
        if not plan.resume:
            self.store.create_batch_run(plan.run_id, time.time(), plan.config(),
                                        environment(self.supervisor, plan.models + ([plan.judge] if plan.judge else [])))
        else:
            self.store.set_batch_run_status(plan.run_id, "running")
        pending = self.pending_answers(plan)
        progress = Progress(plan.run_id, 0, len(pending), "answering", time.time())
        report = on_progress or (lambda p: None)
        report(progress)
        started = time.perf_counter()
        depth = turn_depths(plan.presets)
        try:
            for model_id, group in itertools.groupby(pending, key=lambda item: item[0]):
                # earlier turns first: a later turn's conversation holds this model's answers to them
                items = sorted(group, key=lambda item: depth[item[1].id])
                for chunk in _chunks_by_depth(items, depth, plan.settings.batch_size):
                    if stop.is_set():
                        return self._finish(plan, "interrupted")
                    progress.phase = f"answering: {model_id}"
                    report(progress)
                    self._answer(plan, model_id, chunk)
                    progress.done += len(chunk)
                    report(progress)
                self._record_memory(plan.run_id, model_id, "after its answers")
            answered = time.perf_counter()
            if not self.grade(plan, progress, report, stop):
                return self._finish(plan, "interrupted")
            if plan.judge:
                self._record_memory(plan.run_id, plan.judge, "after grading")
            self._record_phases(plan.run_id, answered - started, time.perf_counter() - answered)
        except KeyboardInterrupt:
            self._finish(plan, "interrupted")
            raise
        progress.phase = "done"
        report(progress)
        return self._finish(plan, "done")

    def _record_phases(self, run_id: str, answering_s: float, grading_s: float) -> None:
        """How long this session's answering and grading took (a resumed run records its last session)."""
        run = self.store.batch_run(run_id)
        run["environment"]["phases"] = {"answering_s": round(answering_s, 1), "grading_s": round(grading_s, 1)}
        self.store.set_batch_run_environment(run_id, run["environment"])

    def _record_memory(self, run_id: str, model_id: str, when: str) -> None:
        """The model's worker memory now (after its answers or verdicts: weights touched, batch context
        allocated) and at its peak, into the run's environment for the report. None for remote models."""
        pid = self.supervisor.pid(model_id)
        rss, peak = (memory.resident_mb(pid), memory.peak_resident_mb(pid)) if pid else (None, None)
        run = self.store.batch_run(run_id)
        info = run["environment"].setdefault("models", {}).setdefault(model_id, {})
        info.update(rss_mb=round(rss, 1) if rss else None, peak_rss_mb=round(peak, 1) if peak else None,
                    rss_when=when)
        self.store.set_batch_run_environment(run_id, run["environment"])

    def _finish(self, plan: Plan, status: str) -> str:
        self.store.set_batch_run_status(plan.run_id, status, time.time() if status == "done" else None)
        return status

    def _call(self, model_id: str, requests: list[BatchRequest], params: GenerationParams) -> tuple[list[BatchAnswer], bool]:
        """One batch call; a failing or vanished model yields one error per request instead of stopping the run."""
        try:
            base = self.supervisor.endpoint(model_id, wait=120.0)
            reply = batch_chat(base, self.supervisor.model(model_id).served_name, requests, params,
                               api_key=self.supervisor.api_key(model_id), concurrency=self.concurrency)
            return reply.answers, reply.batched
        except (EndpointError, ModelUnavailable) as exc:
            return [BatchAnswer(error=str(exc)) for _ in requests], False

    @staticmethod
    def _conversation(plan: Plan, preset: Prompt, repeat: int, stored: dict[tuple[str, int], dict]
                      ) -> list[dict] | str:
        """The messages for one turn: the system prompt, every earlier turn of a multi-turn preset with this
        model's own stored answer to it (``stored``, keyed (preset, repeat)), then the question. A string says
        why it can't be asked (an earlier turn failed)."""
        presets = {p.id: p for p in plan.presets}
        chain = [preset]
        while chain[0].follows:
            chain.insert(0, presets[chain[0].follows])
        if len(chain) == 1:
            return messages_for(preset.question, plan.settings.system_prompt)
        messages = messages_for(chain[0].question, plan.settings.system_prompt)
        for earlier, later in zip(chain, chain[1:]):
            answer = stored.get((earlier.id, repeat))
            if answer is None or answer["error"]:
                return f"turn {earlier.id} has no answer to follow up on"
            messages += [{"role": "assistant", "content": answer["text"]}, {"role": "user", "content": later.question}]
        return messages

    def _answer(self, plan: Plan, model_id: str, chunk: list[tuple]) -> None:
        model = self.supervisor.model(model_id)
        # Earlier turns' answers, read once per chunk and only when it holds a later turn (chunks never mix depths)
        stored = {(a["preset_id"], a["repeat"]): a for a in self.store.batch_answers(plan.run_id)
                  if a["model"] == model_id} if any(preset.follows for _, preset, *_ in chunk) else {}
        conversations = [self._conversation(plan, preset, repeat, stored) for _, preset, repeat, _, _ in chunk]
        askable = [i for i, c in enumerate(conversations) if isinstance(c, list)]
        replies, batched = self._call(model_id, [BatchRequest(conversations[i], plan.settings.seed + chunk[i][2])
                                                 for i in askable], params_for(model, plan.settings)) \
            if askable else ([], False)
        answers = [BatchAnswer(error=c) if isinstance(c, str) else None for c in conversations]
        for i, reply in zip(askable, replies):
            answers[i] = reply
        rows = []
        for (_, preset, repeat, digest, key), answer in zip(chunk, answers):
            tokens = answer.usage.completion_tokens if answer.usage else 0
            rows.append({
                "key": key, "run_id": plan.run_id, "model": model_id, "preset_id": preset.id, "repeat": repeat,
                "seed": plan.settings.seed + repeat, "settings_hash": digest, "question": preset.question,
                "text": answer.text, "error": answer.error, "ttft_s": answer.ttft_s, "total_s": answer.total_s,
                "output_tokens": tokens, "prompt_tokens": answer.usage.prompt_tokens if answer.usage else 0,
                "tokens_per_s": decode_speed(tokens, answer.ttft_s, answer.total_s),
                "finish_reason": answer.usage.finish_reason if answer.usage else "error",
                "engine": model.engine, "quantization": model.quantization, "batched": int(batched),
                "batch_size": len(chunk), "created": time.time()})
        self.store.save_batch_answers(rows)

    # -- grading ------------------------------------------------------------------------------------
    def ask_grader(self, grader: str) -> Ask:
        """The grader model as ``ask(requests, params)``: its worker's batch endpoint, or concurrent requests
        to a remote server; a failed call fails only its own answers."""
        return lambda requests, params: self._call(grader, requests, params)[0]

    def grade(self, plan: Plan, progress: Progress, report: ProgressCallback, stop: threading.Event) -> bool:
        """Grade the run's answers and build its pair verdicts, by ``plan.method`` (README, Grading). False if
        stopped."""
        run = self.store.batch_run(plan.run_id)
        answers = self.store.batch_answers(plan.run_id)
        gradables = run_gradables(run["config"], answers)
        pairs = build_pairs(plan.run_id, run["config"], answers)
        self.store.save_judge_pairs(pairs)
        pair_gradables = {p["id"]: (gradables[(p["model_a"], p["preset_id"], p["repeat"])],
                                    gradables[(p["model_b"], p["preset_id"], p["repeat"])]) for p in pairs}
        return self.grade_pairs(pairs, pair_gradables, list(gradables.values()), plan.judge, plan.method,
                                cutoffs_of(run["config"]), progress, report, stop, plan.fresh,
                                plan.settings.judge_max_tokens, plan.settings.batch_size)

    def grade_pairs(self, pairs: list[dict], pair_gradables: dict[str, tuple[Gradable, Gradable]],
                    answers: list[Gradable], grader: str | None, method: str, cutoffs: G.Cutoffs, progress: Progress,
                    report: ProgressCallback, stop: threading.Event, fresh: bool = False,
                    judge_max_tokens: int = JUDGE_MAX_TOKENS, batch_size: int = 8) -> bool:
        """Grade ``answers`` (each alone) and ``pairs``, and store each pair's verdict for ``grader``/``method``.
        Grades already stored (same grader, method, prompt version and answer) are reused unless ``fresh``.
        ``auto``: assertions where the preset has them, else the grader's P(yes) against the reference; a pair
        with no reference is graded pairwise, and the grader model is not asked about answers in the languages
        ``cutoffs`` refuses it. False if stopped (what was graded is stored)."""
        verdicts: list[dict] = []
        if method == "generate":
            progress.total += 2 * len(pairs)
            if not self.judge_pairs(pairs, grader, progress, report, stop, judge_max_tokens, fresh=fresh):
                return False
            verdicts = generate_verdict_rows(pairs, self.store.judgments(grader, [p["id"] for p in pairs]), grader)
        else:
            pairwise = [p for p in pairs if method == "pairwise" or
                        (method == "auto" and not all(g.basis for g in pair_gradables[p["id"]]))]
            if pairwise and grader:
                done = set() if fresh else {(r["pair_id"], r["shown"]) for r in
                                            self.store.pair_grades([p["id"] for p in pairwise], grader)}
                todo = [p for p in pairwise if not {(p["id"], "ab"), (p["id"], "ba")} <= done]
                progress.total += 2 * len(todo)
                progress.phase = f"grading pairs: {grader}"
                if not grader_module.pairwise_grades(self.ask_grader(grader), todo, grader,
                                                     self.store.save_pair_grades, batch_size,
                                                     lambda n: _advance(progress, report, n), stop):
                    return False
                # A pair graded pairwise for lack of a reference under auto uses the pairwise margin: |p - 1/2|
                # is on another scale than a difference of grades.
                verdicts += grader_module.pairwise_verdict_rows(
                    pairwise, self.store.pair_grades([p["id"] for p in pairwise], grader), grader,
                    cutoffs.margin if method == "pairwise" else G.PAIRWISE_MARGIN, method)
            if method in ("auto", "assert"):
                self.store.save_grades(grader_module.assertion_rows(answers) + grader_module.check_rows(answers))
            if grader and method in ("auto", "reference"):
                by_model = [g if method == "auto" else dataclasses.replace(g, assertions=()) for g in answers
                            if method == "reference" or not (g.rule_decides or g.language in cutoffs.refused)]
                graded = set() if fresh else {r["answer_digest"] for r in
                                              self.store.grades([g.digest() for g in by_model], grader)}
                todo = [g for g in by_model if g.basis and g.digest() not in graded]
                progress.total += len(todo)
                progress.phase = f"grading: {grader}"
                report(progress)
                if not grader_module.reference_grades(self.ask_grader(grader), todo, grader, self.store.save_grades,
                                                      batch_size, lambda n: _advance(progress, report, n), stop):
                    return False
            one_by_one = [p for p in pairs if p not in pairwise]
            counting = counting_grades(self.store, answers, method, grader, cutoffs.refused)
            verdicts += grader_module.verdict_rows(one_by_one, pair_gradables, counting,
                                                   grader or grader_module.ASSERTIONS, method, cutoffs)
        self.store.save_pair_verdicts(verdicts)
        return True

    def judge_pairs(self, pairs: list[dict], judge_id: str, progress: Progress, report: ProgressCallback,
                    stop: threading.Event, max_tokens: int = JUDGE_MAX_TOKENS, fresh: bool = False) -> bool:
        """Judge every pair in both orders (skipping stored judgments), 8 judgments per call; False if
        stopped. Batch runs and ``python -m arena judge FILE`` both judge through here."""
        todo = judge_pending(self.store, pairs, judge_id, fresh)
        progress.done += 2 * len(pairs) - len(todo)
        size = 8
        for start in range(0, len(todo), size):
            if stop.is_set():
                return False
            progress.phase = f"judging: {judge_id}"
            report(progress)
            chunk = todo[start:start + size]
            self.store.save_judgments(judge_batch(lambda reqs, limit: self._call(judge_id, reqs, judge_params(limit))[0],
                                                  chunk, judge_id, max_tokens=max_tokens))
            progress.done += len(chunk)
            report(progress)
        return True


def _advance(progress: Progress, report: ProgressCallback, n: int) -> None:
    progress.done += n
    report(progress)


def run_gradables(config: dict, answers: list[dict]) -> dict[tuple[str, str, int], Gradable]:
    """Each successful answer of a run, keyed (model, preset, repeat), with what it is graded against."""
    presets = {p["id"]: Prompt.from_json(p) for p in config["presets"]}
    return {(a["model"], a["preset_id"], a["repeat"]): Gradable(
        a["question"], a["text"], language_of(a["question"], presets[a["preset_id"]].language),
        presets[a["preset_id"]].reference or None, presets[a["preset_id"]].assertions)
        for a in answers if not a["error"] and a["preset_id"] in presets}


def pair_gradables_of(pairs: list[dict], presets: dict[str, Prompt]
                      ) -> tuple[dict[str, tuple[Gradable, Gradable]], list[Gradable]]:
    """A battle file's pairs as gradables: each side against the pair's reference, with the assertions of the
    preset the battle names (``question_id``), if any."""
    by_pair, answers = {}, []
    for pair in pairs:
        preset = presets.get(pair.get("preset_id") or "")
        checks_ = preset.assertions if preset and preset.question == pair["question"] else ()
        sides = tuple(Gradable(pair["question"], pair[f"answer_{s}"], pair["language"], pair.get("reference") or None,
                               checks_) for s in "ab")
        by_pair[pair["id"]] = sides
        answers += sides
    return by_pair, answers


def counting_grades(store: Store, gradables: list[Gradable], method: str, grader: str | None,
                    refused: frozenset[str] = frozenset()) -> dict[str, dict]:
    """The grade that counts for each answer (by answer digest), by the run's method: ``auto`` takes a rule
    where one decides (the preset's assertions, else the exact check of a reference that concludes in a
    number, a choice or yes/no) and the grader model's P(yes) elsewhere, except in the ``refused`` languages;
    ``assert`` only the rules; ``reference`` only the grader model's (against the reference, rules aside)."""
    if method in ("pairwise", "generate"):
        return {}
    digests, languages = {}, {}
    for g in gradables:
        plain = dataclasses.replace(g, assertions=()) if method == "reference" else g
        digests[g.digest()], languages[g.digest()] = plain.digest(), g.language
    rows = store.grades(sorted(set(digests) | set(digests.values())))
    by = {(r["answer_digest"], r["grader"]): r for r in rows}
    counting = {}
    for digest, plain in digests.items():
        found = None
        if method in ("auto", "assert"):
            found = by.get((digest, grader_module.ASSERTIONS)) or by.get((digest, grader_module.REFERENCE_CHECK))
        if found is None and method in ("auto", "reference") and grader and languages[digest] not in refused:
            found = by.get((plain, grader))
        if found is not None:
            counting[digest] = found
    return counting


def run_grades(store: Store, config: dict, gradables: dict[tuple[str, str, int], Gradable], method: str
               ) -> dict[tuple[str, str, int], dict]:
    """The grade that counts for each of a run's answers (keyed as run_gradables), by ``method`` with the run's
    grader, leaving out the languages it was refused in: what the report, the leaderboard's pass rates and the
    review all count."""
    counting = counting_grades(store, list(gradables.values()), method, config.get("judge"),
                               cutoffs_of(config).refused)
    return {key: counting[g.digest()] for key, g in gradables.items() if g.digest() in counting}


def generate_verdict_rows(pairs: list[dict], judgments: list[dict], grader: str) -> list[dict]:
    """The generative judge's verdicts (both orders aggregated, judge.aggregate) as pair-verdict rows."""
    verdicts = J.verdicts_by_pair(judgments, grader)
    rows = []
    for pair in pairs:
        v = verdicts.get(pair["id"])
        rows.append({"pair_id": pair["id"], "grader": grader, "method": "generate",
                     "winner": v.winner if v and v.winner else None, "margin": None,
                     "basis": v.status if v else "incomplete", "created": time.time()})
    return rows


def judge_params(max_tokens: int = JUDGE_MAX_TOKENS) -> GenerationParams:
    """Greedy, short: a reason (and under v1 the verdict line), or v2's one-word choice."""
    return GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=max_tokens)


# ask(requests, max_new_tokens) -> one answer per request: a judge's batch endpoint, greedy.
JudgeAsk = Callable[[list[BatchRequest], int], list[BatchAnswer]]


def _ordered(pair: dict, shown: str) -> tuple[str, str]:
    return (pair["answer_a"], pair["answer_b"]) if shown == "ab" else (pair["answer_b"], pair["answer_a"])


def _asked(ask: JudgeAsk, conversations: list[list[dict]], max_tokens: int) -> list[BatchAnswer]:
    return ask([BatchRequest(m, 0) for m in conversations], max_tokens) if conversations else []


def _v1_label(text: str) -> str | None:
    return J.parse_verdict(text).label


def _second_turn(ask: JudgeAsk, conversations: list[list[dict]], first: list[BatchAnswer]) -> list[BatchAnswer]:
    """v2's one-word turn for every conversation whose first turn succeeded (a failed one keeps its error)."""
    replies = list(first)
    asked = [i for i, r in enumerate(first) if not r.error]
    for i, reply in zip(asked, _asked(ask, [conversations[i] for i in asked], J.CHOICE_MAX_TOKENS)):
        replies[i] = reply
    return replies


def judge_batch(ask: JudgeAsk, chunk: list[tuple[dict, str]], judge_id: str, version: str = J.PROMPT_VERSION,
                max_tokens: int = JUDGE_MAX_TOKENS) -> list[dict]:
    """Judge (pair, shown order) items with one call per turn, retry the unparseable ones once, and return
    judgment rows. v1: one turn with the verdict format. v2: a reason first, then (same conversation) a
    one-word choice. A failed call is stored as unparsed with attempts 0 and the error as its reply."""
    prompts = [J.build_messages(p["question"], *_ordered(p, shown), p.get("reference"), p["language"], version)
               for p, shown in chunk]
    replies = ask([BatchRequest(m, 0) for m in prompts], max_tokens)
    if version == J.PROMPT_V1:
        reasons, conversations, limit, parse = None, prompts, max_tokens, _v1_label
    else:
        reasons = ["" if r.error else r.text.strip() for r in replies]
        conversations = [J.choice_messages(m, r.text, p["language"]) for m, r, (p, _) in zip(prompts, replies, chunk)]
        limit, parse = J.CHOICE_MAX_TOKENS, J.parse_choice
        replies = _second_turn(ask, conversations, replies)
    # attempts = 0 marks a failed call (not a verdict): a resumed run asks again.
    results = [(None if r.error else parse(r.text), r, 0 if r.error else 1) for r in replies]
    retry = [i for i, (label, reply, _) in enumerate(results) if label is None and not reply.error]
    again = _asked(ask, [J.retry_messages(conversations[i], results[i][1].text, chunk[i][0]["language"], version)
                         for i in retry], limit)
    for i, reply in zip(retry, again):
        results[i] = (None if reply.error else parse(reply.text), reply, 0 if reply.error else 2)
    rows = []
    for i, ((pair, shown), (label, reply, attempts)) in enumerate(zip(chunk, results)):
        rationale = reasons[i] if reasons is not None else "" if reply.error else J.parse_verdict(reply.text).rationale
        rows.append({"pair_id": pair["id"], "judge": judge_id, "shown": shown, "label": label or "unparsed",
                     "rationale": "" if reply.error else rationale[:J.RATIONALE_CHARS],
                     "reply": reply.error or reply.text, "attempts": attempts, "prompt_version": version,
                     "ttft_s": reply.ttft_s, "total_s": reply.total_s, "created": time.time()})
    return rows


def judge_pending(store: Store, pairs: list[dict], judge_id: str, fresh: bool = False,
                  version: str = J.PROMPT_VERSION) -> list[tuple[dict, str]]:
    """(pair, shown order) items still to judge: those without a stored verdict attempt of this prompt
    version (all of them with ``fresh``)."""
    done = set() if fresh else {(j["pair_id"], j["shown"]) for j in store.judgments(judge_id, [p["id"] for p in pairs])
                                if j["prompt_version"] == version and j["attempts"] > 0}
    return [(p, shown) for p in pairs for shown in ("ab", "ba") if (p["id"], shown) not in done]
