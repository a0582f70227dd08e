"""The suite's computation: every strategy, both baselines and the held-out ensemble on one testbed.

`run_suite` computes what the results directory lacks (through the runner, so a rerun or an earlier `detect`
with the same options is reused row by row), evaluates every stored setting on all prompts and on
confidence-matched prompts, fits the held-out choices (`ensemble`) and gathers the removal results beside the
testbed; `suite.page` draws the `Suite` it returns on one HTML page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.matching import ConfidenceMatch
from ..core.precision import Precision
from ..core.shape import shape_of
from ..evaluation.ensemble import HeldOutResult, Transfer, held_out, model_groups, transfer
from ..evaluation.results import ResultsStore
from ..evaluation.runner import Backend, Evaluation, RunConfig, applicable, evaluate, run_detection
from ..removal import RemovalSummary, find_removals
from ..runtime.executors import Executor
from ..strategies import build, has_option
from ..strategies.noise import default_layers
from ..strategies.registry import baseline_names
from ..testbed.folder import Testbed

STRATEGIES = ("noise", "probes", "lens", "attention", "steering", "learning_speed")
"""Every detection strategy, in the order of the page."""


@dataclass(frozen=True)
class SuiteConfig:
    """Options of a suite run (the detection ones as `poser-interp detect` takes them, so its results are reused)."""

    strategies: tuple[str, ...] = STRATEGIES
    """Strategies to run beside the two baselines."""
    seed: int = 0
    """Seed of every strategy that draws and of the bootstrap (as `detect --seed`)."""
    max_prompts: int | None = 24
    """Benchmark prompts per pair (None: all), as `detect --max-prompts` (default 24)."""
    match_confidence: float = 1.0
    """Confidence-matched column: prompts whose two clean margins are within this many logits."""
    n_boot: int = 2000
    """Bootstrap resamples of every interval (as `report`)."""
    precision: Precision = "fp32"
    """fp32, bf16 or fp16 autocast (`RunConfig.precision`, as `detect --dtype`)."""
    device: str = "cpu"
    """Where models compute (`RunConfig.device`, as `detect --device`)."""
    pairs: tuple[str, ...] | None = None
    """Pairs to compute and report (None: all; as `detect --pairs`): the smallest suite is one pair's."""
    backend: Backend = "tl"
    """What runs the forward passes: 'tl' or 'nnsight' (`RunConfig.backend`, as `detect --backend`; no `--remote`
    here: the suite's S3 and lens need the weights here)."""


def build_strategies(testbed: Testbed, names: Sequence[str], seed: int = 0) -> list[Any]:
    """Strategies with `poser-interp detect`'s defaults for this testbed's base model (same configs, so a suite
    resumes a detect run's results directory and the reverse), followed by the two baselines."""
    n_layers, n_heads = shape_of(testbed.base_spec())
    detect_defaults = {"noise": {"layers": default_layers(n_layers)[:1], "scales": (1.0,)}}
    return [build(name, n_layers, n_heads, **({"seed": seed} if has_option(name, "seed") else {}),
                  **detect_defaults.get(name, {})) for name in dict.fromkeys([*names, *baseline_names()])]


@dataclass
class Suite:
    """Everything the page shows, computed from the store (and the testbed's manifest)."""

    testbed: Testbed
    out: Path
    config: SuiteConfig
    store: ResultsStore
    ev: Evaluation
    matched: Evaluation | None
    held: list[HeldOutResult]
    held_matched: list[HeldOutResult]
    folds: list[Any]
    transfers: list[Transfer]
    seconds: float
    removals: list[Any] = field(default_factory=list)
    treated_detection: dict[str, Evaluation] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Strategies left out because they have nothing to measure on this testbed's prompts -> why."""
    partial: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Strategies whose sweep is only partly stored (a `--quick` run) -> (settings stored, settings in the sweep)."""



def run_suite(testbed: Testbed, out: str | Path, config: SuiteConfig = SuiteConfig(), compute: bool = True,
              progress: Any = None, log: Callable[[str], None] = print, workers: int = 1,
              quick: bool = False, executor: Executor | None = None) -> Suite:
    """Compute the missing rows (unless `compute` is False: then only what is stored is evaluated) and evaluate;
    `workers` models at once (`run_detection`), on `executor` (default local; Ray: one task per model); quick: only
    each strategy's primary setting and what comes free with it (`run_detection(quick=True)`), the rest of every
    sweep left to a later run."""
    start = time.perf_counter()
    out = Path(out)
    runnable, skipped = applicable(testbed, build_strategies(testbed, config.strategies, config.seed),
                                   config.max_prompts)
    for name, why in skipped.items():
        log(f"{name}: left out on this testbed. {why}")
    if compute:
        run_detection(testbed, runnable, out, pairs=config.pairs,
                      config=RunConfig(seed=config.seed, max_prompts=config.max_prompts, precision=config.precision,
                                     device=config.device, backend=config.backend),
                      progress=progress, log=log, workers=workers, quick=quick, executor=executor)
    store = ResultsStore.open(out)
    wanted = {*config.strategies, *baseline_names()} - set(skipped)
    names = [n for n in store.manifest["config"]["strategies"] if n in wanted]  # the order `report` prints
    ev = evaluate(store, config.pairs, seed=config.seed, n_boot=config.n_boot, strategies=names)
    partial = {}
    for strategy in runnable:
        stored, sweep = len({r.setting.key for r in ev.find(strategy.name)}), len(strategy.settings())
        if strategy.name in names and stored < sweep:
            partial[strategy.name] = (stored, sweep)
    pairs = store.manifest["pairs"]
    persona, family = model_groups(testbed.models)
    match = ConfidenceMatch(tol=config.match_confidence)
    matched: Evaluation | None = evaluate(store, config.pairs, seed=config.seed, n_boot=config.n_boot,
                                          strategies=names, match=match)
    if matched is not None and not any(matched.pair_prompts.values()):
        matched = None
    folds, held = held_out(ev, pairs, persona, n_boot=config.n_boot, seed=config.seed)
    held_matched = held_out(matched, pairs, persona, n_boot=config.n_boot, seed=config.seed)[1] if matched else []
    transfers = transfer(ev, pairs, family, [n for n in names if n not in baseline_names()] + ["blackbox"])
    removals = [RemovalSummary.load(p, seed=config.seed) for p in find_removals(testbed.root)]
    treated = {}
    for r in removals:
        folder = out.parent / f"detect-{r.root.name}"
        if (folder / "manifest.json").exists():
            treated[r.method] = evaluate(ResultsStore.open(folder), seed=config.seed, n_boot=config.n_boot)
    return Suite(testbed, out, config, store, ev, matched, held, held_matched, folds, transfers,
                 time.perf_counter() - start, removals, treated, skipped, partial)
