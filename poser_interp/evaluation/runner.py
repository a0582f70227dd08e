"""The detection runner: strategies over a testbed's pairs, stored as computed, then evaluated.

Each model is evaluated once, on the union of the benchmark prompts of every testbed pair it belongs to
(whatever `--pairs` selects, so stored rows never depend on the selection), and its per-prompt values are
reused for all its pairs: a pair's model score aggregates the values of that pair's prompts only. When the
testbed grows, a model's union can grow: its rows on the old prompts are then recomputed (and superseded). Models are
loaded lazily (a strategy that needs no model, like random guessing, never loads one) and one at a time.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..core.devices import device_type
from ..core.matching import ConfidenceMatch
from ..core.precision import Precision, check_precision, computing_in, precision_for
from ..data.prompt_style import using_style
from ..data.scenario import Scenario
from ..errors import DataError, NotApplicableError
from ..runtime.executors import Executor
from ..strategies.base import Setting, Strategy, StrategyError, Subject, config_dict, from_config, stable_seed
from ..testbed.folder import Testbed
from .metrics import MetricSummary, summarize
from .results import ResultsStore, Row

Log = Callable[[str], None]
Backend = Literal["tl", "nnsight"]
BACKENDS: tuple[str, ...] = ("tl", "nnsight")


@dataclass(frozen=True)
class RunConfig:
    """Options of a detection run that change its numbers (stored in the results manifest)."""

    seed: int = 0
    """Seed of the bootstrap intervals (the CLI gives it to every strategy's own seed too)."""
    max_prompts: int | None = None
    """At most this many benchmark prompts per pair (a fixed subset, ordered by a hash of the prompt id)."""
    match: ConfidenceMatch | None = None
    """Also evaluated on confidence-matched prompts (`detect --match-confidence`); recorded in the manifest's
    `matching` section, which a rerun with another tolerance replaces (no row depends on it)."""

    precision: Precision = "fp32"
    """Arithmetic of every forward and backward pass: fp32, or bf16 autocast (`core.precision`; ~1.9x faster
    on CPUs with AMX, answer logits within ~0.3). Recorded in the manifest when not fp32; a results folder holds
    one precision."""
    device: str = "cpu"
    """Where models compute: 'cpu', 'cuda', 'cuda:N', or 'auto' (a model split across GPUs), checked by the CLI
    (`core.devices.check_device`); autocast runs on its type. Its type is recorded in the manifest when not 'cpu'
    (a GPU rounds differently), so a results folder holds one; which GPU it was is a run-time choice."""

    backend: Backend = "tl"
    """What runs the forward passes: 'tl' (the TransformerLens bridge) or 'nnsight' (`core.nnsight_model`: the same
    hooks in nnsight traces). Recorded in the manifest when not 'tl' (a results folder holds one backend), and with
    every row it computed."""
    remote: bool = False
    """With backend 'nnsight': run the traces on NDIF (hub models only, key in $NDIF_API_KEY). Not part of the
    manifest's config (the numbers are the model's); each row records where it was computed."""

    def __post_init__(self) -> None:
        check_precision(self.precision, self.device)
        if self.backend not in BACKENDS:
            raise DataError(f"backend {self.backend!r}: pass one of {', '.join(BACKENDS)} (--backend)")
        if self.remote and self.backend != "nnsight":
            raise DataError("--remote runs nnsight traces on NDIF: add --backend nnsight")
        if self.max_prompts is not None and not (isinstance(self.max_prompts, int) and self.max_prompts >= 1):
            raise DataError(f"max_prompts={self.max_prompts!r}: pass a positive number of prompts per pair, or None "
                            "for all (CLI: --max-prompts N, 0 = all)")


def prompt_order(prompt_id: str) -> int:
    """A model-independent order of prompts, so that a cap keeps the same prompts for every model."""
    return stable_seed("order", prompt_id)


@dataclass(frozen=True)
class Plan:
    """What to compute: the selected pairs (with their prompts) and each needed model's prompts."""

    pairs: dict[str, dict[str, Any]]
    """pair id -> {"aligned", "faker", "prompt_ids"}."""
    prompts: dict[str, list[Scenario]]
    """model id -> its prompts: the union over the selected pairs it is in (a run restricted by `--pairs` computes
    no prompt of a pair it leaves out)."""

    def every(self) -> list[Scenario]:
        """Every prompt some model is run on, once."""
        return list({p.id: p for prompts in self.prompts.values() for p in prompts}.values())


def make_plan(testbed: Testbed, pair_ids: Sequence[str] | None = None, max_prompts: int | None = None) -> Plan:
    """Plan a run; unknown pair ids raise DataError naming the known ones.

    Under a cap, each pair keeps the benchmark prompts that the most pair benchmarks of the testbed share (ties in
    `prompt_order`), so that a model's prompts, the union over its pairs, stay few: on v2b at 24 per pair,
    507 model x prompt computations instead of 655 in `prompt_order` alone; on v1 every model's union is its
    24. The choice depends on the testbed's benchmarks only, never on which pairs a run selects."""
    selected = testbed.pair_ids(pair_ids)
    if not selected:
        raise DataError(f"testbed {testbed.root} has no pairs yet ({len(testbed.models)} models trained): its build "
                        "is unfinished, or it lacks an aligned or a faker model. Finish it with `poser-interp testbed "
                        f"build --out {testbed.root}` (same options).")
    benches = {pid: testbed.benchmark(pid) if info.get("benchmark_size", 1) else []
               for pid, info in testbed.pairs.items()}
    shared = Counter(s.id for bench in benches.values() for s in bench)
    per_pair = {pid: sorted(bench, key=lambda s: (-shared[s.id], prompt_order(s.id)))[:max_prompts]
                for pid, bench in benches.items()}
    models = sorted({testbed.pairs[p][k] for p in selected for k in ("aligned", "faker")})
    prompts: dict[str, list[Scenario]] = {}
    for model in models:
        union = {s.id: s for pid in selected if model in (testbed.pairs[pid]["aligned"], testbed.pairs[pid]["faker"])
                 for s in per_pair[pid]}
        prompts[model] = sorted(union.values(), key=lambda s: prompt_order(s.id))
    pairs = {p: {"aligned": testbed.pairs[p]["aligned"], "faker": testbed.pairs[p]["faker"],
                 "prompt_ids": [s.id for s in per_pair[p]]} for p in selected}
    return Plan(pairs=pairs, prompts=prompts)


def manifest_for(testbed: Testbed, strategies: Sequence[Strategy], config: RunConfig, plan: Plan) -> dict[str, Any]:
    from importlib.metadata import version

    from .._version import __version__
    from ..core.shape import recorded_base
    from ..core.versions import versions
    from .results import FORMAT

    models = {m: {"kind": e["kind"], "adapter_sha256": e["adapter_sha256"]} for m, e in testbed.models.items()}
    return {
        "format": FORMAT,
        "config": {"seed": config.seed, "run": {"max_prompts": config.max_prompts,
                                                **({"precision": config.precision} if config.precision != "fp32"
                                                   else {}),
                                                **({"device": device_type(config.device)}
                                                   if device_type(config.device) != "cpu" else {}),
                                                **({"backend": config.backend} if config.backend != "tl" else {})},
                   "strategies": {s.name: config_dict(s) for s in strategies}},
        "testbed": {"root": str(testbed.root), "base": recorded_base(testbed.base_spec()), "models": models,
                    **({"prompt_format": testbed.prompt_format} if testbed.prompt_format != "chat" else {})},
        "versions": {**versions(), "transformer_lens": version("transformer-lens"), "nnsight": version("nnsight"),
                     "poser_interp": __version__},
        "pairs": plan.pairs,
        **({"matching": config.match.as_dict()} if config.match is not None else {}),
    }


def applicable(testbed: Testbed, strategies: Sequence[Strategy], max_prompts: int | None = None) \
        -> tuple[list[Strategy], dict[str, str]]:
    """(the strategies that can run on the testbed's prompts, {name: why not} for those that cannot).

    A strategy cannot run when its preflight raises `NotApplicableError` (the prompts lack what it measures); any
    other preflight error (a missing data file, a bad option) propagates, since it has a fix."""
    every = make_plan(testbed, None, max_prompts).every()
    ok, skipped = [], {}
    for strategy in strategies:
        try:
            strategy.preflight(every, testbed.root)
        except NotApplicableError as e:
            skipped[strategy.name] = str(e)
        else:
            ok.append(strategy)
    return ok, skipped


def check_strategies(strategies: Sequence[Strategy]) -> None:
    names = [s.name for s in strategies]
    if not names:
        raise StrategyError("no strategies to run")
    if len(set(names)) != len(names):
        raise StrategyError(f"strategy listed twice: {names}")


def quick_settings(strategy: Strategy) -> tuple[Setting, ...]:
    """The settings a quick run computes: the strategy's `quick_settings()` (its primary, plus what the same passes
    give for free), or its primary alone for a strategy without that method."""
    quick = getattr(strategy, "quick_settings", None)
    chosen = tuple(quick()) if quick is not None else (strategy.primary(),)
    sweep = set(strategy.settings())
    outside = [s.key for s in chosen if s not in sweep]
    if outside:
        raise StrategyError(f"strategy {strategy.name}: quick_settings() returned {outside[:3]}, which are not in its "
                            "sweep (settings()); return a subset of settings()")
    return chosen


def run_detection(testbed: Testbed, strategies: Sequence[Strategy], out: str | Path,
                  pairs: Sequence[str] | None = None, config: RunConfig = RunConfig(), progress: Any = None,
                  log: Log = print, load: Callable[[str], Any] | None = None, workers: int = 1,
                  quick: bool = False, executor: Executor | None = None, primary_only: bool = False) -> Evaluation:
    """Compute what is missing in `out` (resuming), then evaluate the selected pairs from the store.

    quick: compute only each strategy's `quick_settings` (the primary setting, on which every headline number rests,
    and what comes free with it); the stored configs stay the full ones, so a later run without `quick` on the same
    `out` computes the rest of each sweep and reuses these rows. Evaluation shows the stored settings only.

    progress: an optional `rich.progress.Progress`: one task per model with rows to compute, and one over all of
    them first (rows stored of rows to compute; its time estimate assumes rows cost alike). load: model id -> hooked
    model (default: `testbed.load`, hash-checked). workers > 1: that many models at once, each in a process of its
    own with one thread (`testbed.load` only); this process alone writes the store, row by row as they arrive, so
    the numbers and the resume behaviour are those of one worker. primary_only: compute each strategy's primary
    setting alone, not what comes free with it in a quick run (audit reads nothing else). executor: where models
    are computed (default: local, as `workers` says); a Ray executor runs one Ray task per model with work, at most
    `workers` at a time (`runtime.executors`), its rows streamed back and stored here as they arrive: the same rows,
    the same resume.
    """
    with using_style(testbed.prompt_format):  # every prompt rendered as the testbed's models expect
        return _run_detection(testbed, strategies, out, pairs, config, progress, log, load, workers, quick, executor,
                              primary_only)


def _run_detection(testbed: Testbed, strategies: Sequence[Strategy], out: str | Path, pairs: Sequence[str] | None,
                   config: RunConfig, progress: Any, log: Log, load: Callable[[str], Any] | None, workers: int,
                   quick: bool, executor: Executor | None = None, primary_only: bool = False) -> Evaluation:
    check_strategies(strategies)
    on_ray = executor is not None and executor.is_ray
    if workers < 1 or ((workers > 1 or on_ray) and load is not None):
        raise StrategyError(f"workers={workers}: pass >= 1, and no custom `load` with workers > 1 or a Ray executor "
                            "(workers load models from the testbed folder themselves)")
    plan = make_plan(testbed, pairs, config.max_prompts)
    for strategy in strategies:  # before any model loads or any row is computed: fail in seconds, naming the fix
        strategy.preflight(plan.every(), testbed.root)
    check_backend(testbed, strategies, config, list(plan.prompts))
    for strategy in strategies:
        if config.backend != "tl" and getattr(strategy, "own_model", False):
            log(f"{strategy.name} computes on its own local copy of each model (Hugging Face), whatever --backend: "
                "its rows say backend 'local'")
    wanted = {s.name: (s.primary(),) if primary_only else quick_settings(s) if quick else s.settings()
              for s in strategies}
    manifest = manifest_for(testbed, strategies, config, plan)
    with ResultsStore.open(out, manifest) as store:  # holds the folder's write lock until every row is stored
        todos = {model: _todo(store, model, prompts, wanted) for model, prompts in plan.prompts.items()}
        total = sum(len(sts) for todo in todos.values() for sts in todo.values())
        overall = None
        if progress is not None and total and sum(map(any, (t.values() for t in todos.values()))) > 1:
            overall = progress.add_task(f"all {sum(1 for t in todos.values() if any(t.values()))} models",
                                        total=total)
        if workers > 1 or on_ray:
            _run_parallel(store, testbed, plan.prompts, strategies, todos, progress, overall, log, workers,
                          config.precision, executor, config)
        else:
            loader = load or functools.partial(_load_on, testbed, config)
            for model, prompts in plan.prompts.items():
                _run_model(store, model, prompts, strategies, todos[model], progress, overall, log,
                           loader, config.precision, testbed.spec, config)
    return evaluate(store, list(plan.pairs), seed=config.seed, strategies=[s.name for s in strategies])


def _load_on(testbed: Testbed, config: RunConfig, model: str) -> Any:
    return testbed.load(model, config.device, backend=config.backend, remote=config.remote)


def check_backend(testbed: Testbed, strategies: Sequence[Strategy], config: RunConfig, models: Sequence[str]) -> None:
    """StrategyError or BackendError naming the fix when the run's backend cannot run a strategy or model (before any
    model loads): with --remote, strategies that need the model's weights here (`remote_ok = False`), and models
    that are not hub ids, or no $NDIF_API_KEY."""
    if not config.remote:
        return
    for strategy in strategies:
        if strategy.needs_model and not getattr(strategy, "remote_ok", True):
            raise StrategyError(f"{strategy.name} cannot run with --remote: {getattr(strategy, 'local_reason', '')}; "
                                f"leave it out of --strategies, or drop --remote to run it here")
    for model in models:
        testbed.remote_spec(model)


def row_backend(strategy: Strategy, config: RunConfig) -> str:
    """What computed a strategy's rows: 'tl' (the bridge; also for strategies without a model), 'nnsight',
    'nnsight-remote' (NDIF), or 'local' (a strategy computing on its own local copy of the weights, S3)."""
    if config.backend == "tl" or not strategy.needs_model:
        return "tl"
    if getattr(strategy, "own_model", False):
        return "local"
    return f"{config.backend}-remote" if config.remote else config.backend


def _todo(store: ResultsStore, model: str, prompts: list[Scenario], wanted: dict[str, tuple[Setting, ...]]) \
        -> dict[str, list[Setting]]:
    """Strategy name -> its wanted settings (the sweep, or a quick run's) not yet stored for this model on these
    prompts (a row stored on more prompts, by a run over more pairs, serves: every value is per prompt)."""
    ids = tuple(p.id for p in prompts)
    return {name: [st for st in sts if not _current(store, (model, name, st.key), ids)] for name, sts in wanted.items()}


def _run_model(store: ResultsStore, model: str, prompts: list[Scenario], strategies: Sequence[Strategy],
               todo: dict[str, list[Setting]], progress: Any, overall: Any, log: Log,
               load: Callable[[str], Any], precision: Precision = "fp32",
               spec: Callable[[str], Any] | None = None, config: RunConfig = RunConfig()) -> None:
    """Compute one model's missing rows (nothing, not even a load, when all are stored). spec: model id -> its
    `ModelSpec` (for strategies that read weight files, e.g. the `weight_delta` baseline). config: the run's
    options (its device: where `load` puts the model, autocast on its type; its backend: recorded in each row)."""
    total = sum(map(len, todo.values()))
    if not total:
        return
    _log_stale(store, model, todo, len(prompts), log)
    tasks = [progress.add_task(model, total=total)] if progress is not None else []
    tasks += [overall] if overall is not None else []
    subject = Subject(model, functools.partial(load, model), functools.partial(spec, model) if spec else None,
                      config.device)
    for strategy in strategies:
        if not todo[strategy.name]:
            continue
        if strategy.needs_model and not subject.loaded:
            t0 = time.perf_counter()
            if tasks:
                progress.update(tasks[0], description=f"{model} (loading)")
            _ = subject.model
            if tasks:
                progress.update(tasks[0], description=model)
            log(f"{model}: loaded in {time.perf_counter() - t0:.1f} s")
        with computing_in(precision_for(strategy, precision), config.device):
            _run_one(store, strategy, subject, prompts, todo[strategy.name], progress, tasks,
                     row_backend(strategy, config))


def _log_stale(store: ResultsStore, model: str, todo: dict[str, list[Setting]], n_prompts: int, log: Log) -> None:
    stale = sum((model, name, st.key) in store for name, sts in todo.items() for st in sts)
    if stale:
        log(f"{model}: {stale} stored rows lack some of its {n_prompts} prompts now (an earlier run restricted by "
            "--pairs, or the testbed grew); they are recomputed on all of them and superseded")


def _current(store: ResultsStore, key: tuple[str, str, str], prompt_ids: tuple[str, ...]) -> bool:
    """Whether a row is stored for this key, computed on these prompts (and maybe more: a run over more pairs)."""
    return key in store and set(prompt_ids) <= set(store.row(key).values.prompt_ids)


def _run_one(store: ResultsStore, strategy: Strategy, subject: Subject, prompts: Sequence[Scenario],
             todo: Sequence[Setting], progress: Any, tasks: Sequence[Any], backend: str = "tl") -> None:
    wanted = {s.key for s in todo}
    ids = tuple(p.id for p in prompts)
    t0 = time.perf_counter()
    for values in strategy.run(subject, prompts, todo):
        now = time.perf_counter()
        _store_row(store, strategy.name, subject.id, values, now - t0, wanted, ids, progress, tasks, backend)
        t0 = now
    _check_complete(strategy.name, subject.id, wanted, ids)


def _store_row(store: ResultsStore, name: str, model: str, values: Any, seconds: float, wanted: set[str],
               ids: tuple[str, ...], progress: Any, tasks: Sequence[Any], backend: str = "tl") -> None:
    """Check a returned row against what was asked, append it (superseding a stale one), advance the progress."""
    key = values.setting.key
    if key not in wanted or values.prompt_ids != ids:
        raise StrategyError(f"strategy {name} returned setting {key} on {len(values.prompt_ids)} "
                            f"prompts; expected one of {sorted(wanted)} on the {len(ids)} given prompts")
    store.append(Row(model, name, values, seconds, supersedes=(model, name, key) in store, backend=backend))
    wanted.discard(key)
    for task in tasks:
        progress.advance(task)


def _check_complete(name: str, model: str, wanted: set[str], ids: tuple[str, ...]) -> None:
    if wanted and ids:
        raise StrategyError(f"strategy {name} did not return settings {sorted(wanted)} for {model}")


def _run_parallel(store: ResultsStore, testbed: Testbed, prompts: dict[str, list[Scenario]],
                  strategies: Sequence[Strategy], todos: dict[str, dict[str, list[Setting]]], progress: Any,
                  overall: Any, log: Log, workers: int, precision: Precision = "fp32",
                  executor: Executor | None = None, config: RunConfig = RunConfig()) -> None:
    """`_run_model` for every model with work, `workers` models at once in spawned processes (or Ray tasks);
    rows come back through a queue (or a Ray task's stream) and are stored here as they arrive (so an interruption
    keeps every finished row)."""
    from ..runtime.processes import run_in_processes
    from .worker import rows_in_worker

    specs = [(s.name, config_dict(s)) for s in strategies]
    backends = {s.name: row_backend(s, config) for s in strategies}
    on = (config.backend, config.remote)
    busy = [m for m in prompts if any(todos[m].values())]
    wanted = {(m, name): {st.key for st in sts} for m in busy for name, sts in todos[m].items()}
    ids = {m: tuple(p.id for p in prompts[m]) for m in busy}
    tasks = {m: [progress.add_task(m, total=sum(map(len, todos[m].values())))] if progress is not None else []
             for m in busy}
    for m in busy:
        tasks[m] += [overall] if overall is not None else []
        _log_stale(store, m, todos[m], len(prompts[m]), log)

    def on_message(message: tuple[Any, ...]) -> None:
        kind, model, name, payload, seconds = message
        if kind == "log":
            log(payload)
        else:
            _store_row(store, name, model, payload, seconds, wanted[(model, name)], ids[model], progress, tasks[model],
                       backends[name])

    def on_done(model: str, _: Any) -> None:
        for (m, name), left in wanted.items():
            if m == model:
                _check_complete(name, m, left, ids[m])

    todo_keys = {m: {name: [st.key for st in sts] for name, sts in todos[m].items()} for m in busy}
    if executor is not None and executor.is_ray:
        from ..runtime.executors import run_on_ray
        from .worker import worker_messages

        gpu = device_type(config.device) == "cuda"  # a task sees its one GPU as cuda:0 (no split, no other index)
        run_on_ray({m: (worker_messages, (str(testbed.root), m, prompts[m], specs, todo_keys[m], precision, 1,
                                          "cuda" if gpu else "cpu", on))
                    for m in busy}, workers, on_message, on_done, log, executor, gpus=gpu)
        return
    work = functools.partial(rows_in_worker, precision=precision, device=config.device, on=on)
    calls = {m: (work, (str(testbed.root), m, prompts[m], specs, todo_keys[m])) for m in busy}
    run_in_processes(calls, workers, on_message, on_done, log)


# --- evaluation (from stored results only, so it can be redone without computing) ----------------------
@dataclass(frozen=True)
class Result:
    """One strategy x setting x score over the evaluated pairs."""

    strategy: str
    setting: Setting
    score: str
    description: str
    is_primary: bool
    """The strategy's chosen setting and chosen score (fixed in advance, not selected on these pairs)."""
    summary: MetricSummary
    pair_scores: dict[str, tuple[float, float]]
    """pair id -> (aligned model's score, faker's score)."""
    model_scores: dict[str, float]
    seconds: float
    """Compute time of this strategy and setting, summed over models."""


@dataclass(frozen=True)
class Evaluation:
    results: tuple[Result, ...]
    kinds: dict[str, str]
    """model id -> 'aligned' or 'faker'."""
    pair_prompts: dict[str, list[str]]
    """pair id -> the prompts it was scored on (all of its benchmark prompts, or the confidence-matched ones)."""
    match: ConfidenceMatch | None = None
    """The confidence matching the pairs were evaluated under (None: every benchmark prompt)."""

    def find(self, strategy: str, score: str | None = None, setting: Setting | None = None) -> list[Result]:
        return [r for r in self.results if r.strategy == strategy and score in (None, r.score)
                and setting in (None, r.setting)]

    def primary(self, strategy: str) -> Result:
        hits = [r for r in self.results if r.strategy == strategy and r.is_primary]
        if not hits:
            raise DataError(f"no results for strategy {strategy!r}; stored: {self.strategies()}")
        return hits[0]

    def strategies(self) -> list[str]:
        return list(dict.fromkeys(r.strategy for r in self.results))

    def seconds(self, strategy: str) -> float:
        """Compute time of a strategy over all settings and models (each setting counted once)."""
        return sum({r.setting.key: r.seconds for r in self.results if r.strategy == strategy}.values())


def matched_prompts(store: ResultsStore, pair: dict[str, Any], match: ConfidenceMatch) -> list[str]:
    """The pair's prompts matched in clean confidence, from the stored black-box margins ([] when too few)."""
    ids = pair["prompt_ids"]
    margins = [store.get(pair[k], "blackbox", Setting()).values.subset(ids)["margin"] for k in ("aligned", "faker")]
    return match.kept(ids, *margins)


def evaluate(store: ResultsStore, pair_ids: Sequence[str] | None = None, seed: int = 0, n_boot: int = 2000,
             strategies: Sequence[str] | None = None, match: ConfidenceMatch | None = None) -> Evaluation:
    """Decide every pair for each strategy x setting x score (default: every stored strategy).

    Missing rows give NaN scores: those pairs are reported as undecided; a setting other than the primary with no
    stored row for any of the evaluated models (a quick run's unswept settings) is left out. With `match`, each pair
    is scored on its confidence-matched prompts only, and each model (for the AUROC) on the union of its pairs'
    matched prompts; a pair with too few matched prompts is undecided.
    """
    pairs = store.manifest.get("pairs", {})
    pair_ids = list(pair_ids) if pair_ids is not None else sorted(pairs)
    unknown = sorted(set(pair_ids) - set(pairs))
    if unknown:
        raise DataError(f"pairs {unknown} are not in the results at {store.root}; stored: {sorted(pairs)[:6]}")
    kinds = {m: e["kind"] for m, e in store.manifest["testbed"]["models"].items()}
    models = sorted({pairs[p][k] for p in pair_ids for k in ("aligned", "faker")})
    prompt_ids = {p: matched_prompts(store, pairs[p], match) if match else pairs[p]["prompt_ids"] for p in pair_ids}
    # each model is scored (for the AUROC) on the union of its evaluated pairs' prompts, never on prompts of pairs
    # left out: on a one-pair run both metrics read exactly the pair's prompts, so they cannot contradict
    model_prompts = {m: list(dict.fromkeys(i for p in pair_ids if m in (pairs[p]["aligned"], pairs[p]["faker"])
                                           for i in prompt_ids[p])) for m in models}
    results = []
    configs = store.manifest["config"]["strategies"]
    for name in strategies if strategies is not None else list(configs):
        if name not in configs:
            raise DataError(f"strategy {name!r} has no results in {store.root}; stored: {sorted(configs)}")
        strategy = from_config(name, configs[name])
        primary = strategy.primary()
        for setting in strategy.settings():
            rows = {m: r for m in models for r in store.rows(name, m) if r.values.setting == setting}
            if not rows and setting != primary:
                continue
            seconds = sum(r.seconds for r in rows.values())
            for i, score in enumerate(strategy.scores()):
                pair_scores = {}
                for p in pair_ids:
                    a, f, ids = pairs[p]["aligned"], pairs[p]["faker"], prompt_ids[p]
                    if a in rows and f in rows and ids:
                        pair_scores[p] = score.decide(rows[a].values.subset(ids), rows[f].values.subset(ids))
                    else:
                        pair_scores[p] = (float("nan"), float("nan"))
                model_scores = {m: _model_score(score, rows.get(m), model_prompts[m]) for m in models}
                summary = summarize(pair_ids, [pair_scores[p][0] for p in pair_ids],
                                    [pair_scores[p][1] for p in pair_ids], models, [model_scores[m] for m in models],
                                    [kinds[m] == "faker" for m in models], n_boot=n_boot, seed=seed,
                                    pair_models=[(pairs[p]["aligned"], pairs[p]["faker"]) for p in pair_ids])
                results.append(Result(name, setting, score.name, score.description, setting == primary and i == 0,
                                      summary, pair_scores, model_scores, seconds))
    return Evaluation(tuple(results), kinds, prompt_ids, match)


def _model_score(score: Any, row: Row | None, prompt_ids: list[str] | None) -> float:
    """A model's score on all its stored prompts, or on these (NaN without a row or with no prompts)."""
    if row is None or prompt_ids == []:
        return float("nan")
    return score.model(row.values.values if prompt_ids is None else row.values.subset(prompt_ids))
