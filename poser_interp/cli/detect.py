"""`poser-interp detect` and `poser-interp strategies`: run registered strategies over a testbed's pairs.

Every strategy is built by the registry (`strategies.build`) for the testbed's base model; its options come from
its config's fields: `--option NAME.FIELD=VALUE` sets any of them (parsed by the field's type), and the noise
flags (--layers, --scales, ...) are shorthands for S2's. `detect --help` and `poser-interp strategies` list the
registered strategies and their options from the config fields' docstrings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperCommand

from ..analysis import MATCH_HELP
from .common import (
    MAX_COUNT,
    app,
    at_least,
    at_most,
    bars,
    check_seed,
    check_tolerance,
    choice,
    clean_errors,
    console,
    csv_option,
    numbers,
    out_folder,
    print_table,
    split_csv,
)
from .options import (
    BACKEND_HELP,
    EXECUTOR_HELP,
    QUICK_HELP,
    RAY_ADDRESS_HELP,
    REMOTE_HELP,
    WORKERS_HELP,
    DeviceOpt,
    DtypeOpt,
    PrecisionOpt,
    check_backend_option,
    check_device_option,
    check_executor_option,
    dtype_option,
)
from .tables import detect_table, matched_counts


class _ListsStrategies(TyperCommand):
    """A command whose help ends with the registered strategies and their options (read when help is shown)."""

    @property  # type: ignore[override]
    def epilog(self) -> str:
        from ..strategies import known, options
        from ..strategies.registry import strategy_help

        lines = [f"{name}: {strategy_help(name)} Options: {', '.join(o.name for o in options(name))}."
                 for name in known()]
        return "Registered strategies (`poser-interp strategies NAME` explains each option):\n\n" + "\n\n".join(lines)

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        pass


def _noise_help(field: str, extra: str) -> str:
    from ..strategies.noise import NoiseConfig
    from ..strategies.registry import field_docs

    return f"noise: {field_docs(NoiseConfig)[field]} {extra}"


@app.command(cls=_ListsStrategies)
@clean_errors
def detect(
    strategies: Annotated[str, typer.Option(help="comma-separated registered strategies (listed below); the "
                                                 "baselines (random, blackbox, weight_delta) always run beside "
                                                 "them")] = "noise",
    testbed: Annotated[str, typer.Option(help="testbed directory, or 'default'")] = "default",
    pairs: Annotated[str | None, typer.Option(help="comma-separated pair ids 'aligned__faker' (default: all)")] = None,
    out: Annotated[Path | None, typer.Option(help="results directory; a rerun resumes it (default: "
                                                  "results/detect-<testbed name>)")] = None,
    seed: Annotated[int, typer.Option(help="seed of every strategy that draws (noise draws, S1 direction prompts, "
                                           "S3 data and LoRA init, S4/S5 splits, random) and of the bootstrap")] = 0,
    max_prompts: Annotated[int, typer.Option(help="at most N benchmark prompts per pair (0 = all); the default "
                                                  "aims at ~10 min for the 12-model default testbed on 2 cores")] = 24,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="STRATEGY.FIELD=VALUE: any config option of a strategy in --strategies, e.g. "
                               "steering.alphas=1,2 or probes.position=mean (repeatable; tuples comma-separated)")] \
        = None,
    layers: Annotated[str | None, typer.Option(help=_noise_help("layers", "Comma-separated; the first is the reported "
                                                                "one (default: 15/35/55% of the depth)."))] = None,
    scales: Annotated[str | None, typer.Option(help=_noise_help("scales", "Comma-separated; the reported one is 1.0 "
                                                                "if swept, else the last (default: 1.0)."))] = None,
    samples: Annotated[int | None, typer.Option(help=_noise_help("samples", "(default 3)"))] = None,
    positions: Annotated[str | None, typer.Option(help=_noise_help("positions", "('all' or 'last')"))] = None,
    distribution: Annotated[str | None, typer.Option(help=_noise_help("distribution", "('gaussian' or "
                                                                                       "'uniform')"))] = None,
    plots: Annotated[bool, typer.Option(help="write figures to OUT/figures")] = True,
    match_confidence: Annotated[float | None, typer.Option(help=f"also evaluate every strategy {MATCH_HELP}")] = None,
    workers: Annotated[int, typer.Option(help=WORKERS_HELP)] = 1,
    quick: Annotated[bool, typer.Option(help=QUICK_HELP)] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = None,
    precision: PrecisionOpt = None,
    executor: Annotated[str, typer.Option(help=EXECUTOR_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "tl",
    remote: Annotated[bool, typer.Option(help=REMOTE_HELP)] = False,
) -> None:
    """Run detection strategies over a testbed's pairs and print accuracy, AUROC and 95% CIs beside the baselines.

    The defaults run S2 at scale 1.0 (3 draws, 24 prompts per pair) so that the default testbed finishes in
    minutes; sweep with e.g. --layers 4,10,16 --scales 0.25,0.5,1, or run analyses/noise_injection.py for the
    full S2 table with a held-out choice of defaults.

    Every option is checked before anything is loaded or written; one run writes OUT at a time (a second is
    refused with the first one's pid), while `poser-interp report OUT` can read it.
    """
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..core.matching import ConfidenceMatch
    from ..core.shape import shape_of
    from ..evaluation.results import ResultsStore
    from ..evaluation.runner import RunConfig, applicable, check_backend, evaluate, run_detection
    from ..runtime.locking import hold
    from ..strategies import baseline_names, build, has_option, known
    from ..testbed.folder import Testbed

    start = time.perf_counter()
    check_tolerance(match_confidence)
    at_least(0, max_prompts=max_prompts)
    at_least(1, workers=workers)
    at_most(MAX_COUNT, max_prompts=max_prompts, samples=samples, workers=workers)
    check_seed(seed)
    device = check_device_option(device)
    arithmetic = dtype_option(dtype, precision, device) or "fp32"
    backend = check_backend_option(backend, remote)
    run_on = check_executor_option(executor, ray_address)
    pair_list = csv_option(pairs, "--pairs", "all pairs")
    names = list(dict.fromkeys((csv_option(strategies, "--strategies", "the default") or []) + list(baseline_names())))
    unknown = [n for n in names if n not in known()]
    if unknown:
        raise typer.BadParameter(f"unknown strategy {unknown[0]!r}; known: {', '.join(known())}",
                                 param_hint="--strategies")
    chosen = strategy_options(option, names)
    if out is not None:
        out_folder(out)
    tb = Testbed.open(testbed)
    tb.check_files(tb.pair_ids(pair_list))  # unknown pairs, missing or changed files: refused before OUT is made
    n_layers, n_heads = shape_of(tb.base_spec())
    given_seeds = {name: o["seed"] for name, o in chosen.items() if o.get("seed", seed) != seed}
    if given_seeds and seed != 0:
        name = next(iter(given_seeds))
        raise typer.BadParameter(f"'{name}.seed={given_seeds[name]}' and --seed {seed} set the same option "
                                 "twice; pass one of them", param_hint="--option")
    if "noise" in chosen:  # the noise flags are shorthands for --option noise.FIELD=...; one spelling per option
        flags = {"layers": layers, "scales": scales, "samples": samples, "positions": positions,
                 "distribution": distribution}
        twice = [f for f, v in flags.items() if v is not None and f in chosen["noise"]]
        if twice:
            raise typer.BadParameter(f"--{twice[0]} and -o noise.{twice[0]}= set the same option twice; pass one "
                                     "of them", param_hint="--option")
        chosen["noise"] = noise_options(n_layers, layers, scales, samples, positions, distribution,
                                        set(chosen["noise"])) | chosen["noise"]
    else:
        given = [flag for flag, v in (("--layers", layers), ("--samples", samples), ("--positions", positions),
                                      ("--distribution", distribution)) if v is not None]
        given += ["--scales"] if scales is not None else []
        if given:
            raise typer.BadParameter(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the noise "
                                     "strategy only, and noise is not in --strategies; add it, or leave the option "
                                     "out", param_hint=given[0])
    built = [build(name, n_layers, n_heads, **({"seed": seed} if has_option(name, "seed") else {}) | chosen[name])
             for name in names]  # every strategy with a seed gets --seed
    _, skipped = applicable(tb, [s for s in built if s.name in baseline_names()], max_prompts or None)
    for name, why in skipped.items():  # a baseline that cannot measure these models is left out, said once
        console.print(f"baseline {name} left out on this testbed: {why}", highlight=False)
    built = [s for s in built if s.name not in skipped]
    out = out or Path("results") / f"detect-{tb.root.name}"
    out_folder(out)
    match = ConfidenceMatch(tol=match_confidence) if match_confidence is not None else None
    config = RunConfig(seed=seed, max_prompts=max_prompts or None, match=match, precision=arithmetic,
                       device=device, backend="nnsight" if backend == "nnsight" else "tl",
                       remote=remote)  # the manifest records them
    check_backend(tb, built, config, sorted({tb.pairs[p][k] for p in tb.pair_ids(pair_list) for k in ("aligned",
                                                                                                  "faker")}))
    with hold(out):  # the whole command (rows, then figures) is the one writer of OUT
        with bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("left"), TimeRemainingColumn()) as progress:
            ev = run_detection(tb, built, out, pairs=pair_list, config=config, progress=progress,
                               log=progress.console.print, workers=workers, quick=quick, executor=run_on)
        detect_table(ev, tb.root, len(ev.pair_prompts))
        store = ResultsStore.open(out) if match is not None or plots else None
        if match is not None and store is not None:
            matched = evaluate(store, list(ev.pair_prompts), seed=seed, strategies=ev.strategies(), match=match)
            kept = matched_counts(matched, match)
            if kept:
                detect_table(matched, tb.root, len(kept), f"confidence-matched prompts only (clean margins within "
                             f"{match.tol:g} logit; kept per pair: {kept}; a pair with < {match.min_prompts} is "
                             "undecided)")
        if plots and store is not None:
            from ..viz.figures import detect_figures
            from ..viz.plots import write_figures

            paths, note = write_figures(detect_figures(ev, store), out / "figures")
            console.print(f"figures: {', '.join(str(p) for p in paths if p.suffix == '.html')} ({note})")
    console.print(f"results: {out} (rerun the same command to resume); wall time {time.perf_counter() - start:.0f} s")


def strategy_options(given: Sequence[str] | None, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Strategy name -> options from `--option NAME.FIELD=VALUE`, each parsed by its config field's type."""
    from ..strategies import options

    chosen: dict[str, dict[str, Any]] = {name: {} for name in names}
    for item in given or []:
        key, sep, text = item.partition("=")
        name, dot, field = key.strip().partition(".")
        if not sep or not dot:
            raise typer.BadParameter(f"{item!r}: pass STRATEGY.FIELD=VALUE, e.g. steering.alphas=1,2",
                                     param_hint="--option")
        if not text.strip() or not text.replace(",", " ").split():
            raise typer.BadParameter(f"{item!r} has no value; pass one after '=', e.g. {key.strip()}=VALUE, or "
                                     "leave the option out for its default", param_hint="--option")
        if name not in chosen:
            raise typer.BadParameter(f"{item!r}: {name!r} is not among the strategies run ({', '.join(names)})",
                                     param_hint="--option")
        fields = {o.name: o for o in options(name)}
        if field not in fields or field in chosen[name]:
            why = "is given twice" if field in chosen[name] else f"is not an option of {name} (its options: " \
                                                                  f"{', '.join(fields)})"
            raise typer.BadParameter(f"{item!r}: {field!r} {why}", param_hint="--option")
        chosen[name][field] = fields[field].parse(text)
    return chosen


def noise_options(n_layers: int, layers: str | None, scales: str | None, samples: int | None,
                  positions: str | None, distribution: str | None, set_by_option: set[str] | None = None) \
        -> dict[str, Any]:
    """The noise strategy's shorthand flags as its options, checked against the base model's depth (defaults for
    what neither the flags nor `-o noise.FIELD=` set)."""
    if layers is not None and not split_csv(layers):
        raise typer.BadParameter(f"{layers!r} is empty; pass e.g. --layers 4,10, or leave the option out",
                                 param_hint="--layers")
    if scales is not None and not split_csv(scales):
        raise typer.BadParameter(f"{scales!r} is empty; pass e.g. --scales 0.5,1, or leave the option out",
                                 param_hint="--scales")
    scales = "1.0" if scales is None else scales
    layer_list = numbers(layers, int, "--layers", "a layer number")
    bad = [la for la in layer_list if not 0 <= la < n_layers]
    if bad:
        raise typer.BadParameter(f"layer {bad[0]} does not exist: the testbed's base model has layers "
                                 f"0..{n_layers - 1}", param_hint="--layers")
    scale_list = numbers(scales, float, "--scales", "a number")
    if not scale_list or not all(x > 0 and math.isfinite(x) for x in scale_list):
        raise typer.BadParameter(f"{scales!r}: pass positive numbers (multiples of the mean residual norm), e.g. "
                                 "--scales 0.5,1", param_hint="--scales")
    at_least(1, samples=samples)
    choice(positions, ("all", "last"), "--positions")
    choice(distribution, ("gaussian", "uniform"), "--distribution")
    from ..strategies.noise import default_layers

    # default: the first of S2's default layers only (as before issue 17 and as `suite` builds it), so a suite
    # resumes a default detect run's folder and the main demo stays one layer
    opts: dict[str, Any] = {"layers": tuple(layer_list) or default_layers(n_layers)[:1], "scales": scale_list}
    for name in set_by_option or ():
        opts.pop(name, None)
    opts.update({k: v for k, v in (("samples", samples), ("positions", positions),
                                   ("distribution", distribution)) if v is not None})
    return opts


@app.command("strategies")
@clean_errors
def list_strategies(
    names: Annotated[list[str] | None, typer.Argument(help="strategies to explain (default: all registered)")] = None,
) -> None:
    """The registered strategies and every config option (type, default, meaning): what --option can set."""
    from ..strategies import known, options
    from ..strategies.registry import strategy_help

    for name in names or known():
        if name not in known():
            raise typer.BadParameter(f"unknown strategy {name!r}; known: {', '.join(known())}")
        table = Table(title=f"{name}: {strategy_help(name)}", title_justify="left")
        for col in ("option", "default", "meaning"):
            table.add_column(col, overflow="fold")
        for o in options(name):
            table.add_row(o.name, repr(o.default), o.help)
        print_table(table)
