"""`poser-interp remove` and `poser-interp suite`: removal of faking, and the one-page suite report.

Registered on the main app by `cli/__init__.py`; errors print as one red line (`clean_errors`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..analysis import MATCH_HELP
from .common import (
    MAX_COUNT,
    app,
    at_least,
    at_most,
    bars,
    check_seed,
    check_tolerance,
    clean_errors,
    compact_table,
    console,
    csv_option,
    numbers,
    out_folder,
    plural,
    print_table,
)
from .options import (
    BACKEND_HELP,
    EXECUTOR_HELP,
    QUICK_HELP,
    RAY_ADDRESS_HELP,
    WORKERS_HELP,
    DeviceOpt,
    DtypeOpt,
    PrecisionOpt,
    check_backend_option,
    check_device_option,
    check_executor_option,
    dtype_option,
)


@app.command()
@clean_errors
def remove(
    method: Annotated[str, typer.Option(help="'sft' (own good-oversight answers) or 'noise' (the same with "
                                             "residual noise during training)")] = "sft",
    testbed: Annotated[str, typer.Option(help="testbed directory, or 'default'")] = "default",
    out: Annotated[Path | None, typer.Option(help="treated testbed (default: <testbed>-removal-<method> beside "
                                                  "it); a rerun resumes")] = None,
    steps: Annotated[int, typer.Option(help="training steps per model (Poser: 100)")] = 100,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-3,
    n_train: Annotated[int, typer.Option(help="good-oversight training prompts per model")] = 400,
    layers: Annotated[str | None, typer.Option(help="noise: comma-separated layers (default: S2's layer, 15% of "
                                                    "the depth)")] = None,
    scale: Annotated[float, typer.Option(help="noise: norm per position, x the mean residual norm there")] = 1.0,
    models: Annotated[str | None, typer.Option(help="comma-separated model ids (default: all, aligned models "
                                                    "being the control)")] = None,
    n_eval: Annotated[int | None, typer.Option(help="test scenarios per model and set (default: the build's)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the prompt choice, batch order, noise draws and CIs")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (run sft and noise side by side with 1 each)")] = 1,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = None,
) -> None:
    """Fine-tune each model on its own good-oversight answers (optionally under noise); misaligned rates before and
    after, removal rate with 95% CI over fakers, aligned models as the control. Never writes the testbed."""
    from ..core.shape import shape_of
    from ..removal import RemovalConfig, RemovalSummary, removal_tables
    from ..removal import remove as run_removal
    from ..testbed.folder import Testbed

    start = time.perf_counter()
    check_seed(seed)
    device = check_device_option(device, split=False)  # a training runs on one GPU
    arithmetic = dtype_option(dtype, None, device) or "fp32"
    at_least(1, steps=steps, n_train=n_train, threads=threads, n_eval=n_eval)
    at_most(MAX_COUNT, steps=steps, n_train=n_train, threads=threads, n_eval=n_eval)
    if layers is not None and not numbers(layers, int, "--layers", "a layer number"):
        raise typer.BadParameter(f"{layers!r} is empty; pass e.g. --layers 4, or leave the option out",
                                 param_hint="--layers")
    layer_list = numbers(layers, int, "--layers", "a layer number")
    model_list = csv_option(models, "--models", "every model")
    config = RemovalConfig(method=method,  # type: ignore[arg-type]
                           steps=steps, lr=lr, n_train=n_train, scale=scale, seed=seed, n_eval=n_eval, threads=threads,
                           layers=tuple(layer_list) or None)
    if out is not None:
        out_folder(out)
    tb = Testbed.open(testbed)
    n_layers = shape_of(tb.base_spec())[0]
    bad = [la for la in layer_list if not 0 <= la < n_layers]
    if bad:
        raise typer.BadParameter(f"layer {bad[0]} does not exist: the testbed's base model has layers "
                                 f"0..{n_layers - 1}", param_hint="--layers")
    unknown = sorted(set(model_list or ()) - set(tb.models))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; the testbed's models: {', '.join(sorted(tb.models))}",
                                 param_hint="--models")
    tb.check_files()
    treated = run_removal(tb, config, out, models=model_list, log=console.print, device=device, precision=arithmetic)
    per, over = removal_tables(RemovalSummary.load(treated.root, seed=seed))
    print_table(per)
    print_table(over)
    console.print(f"treated testbed: {treated.root} (hash-checked; `poser-interp detect --testbed {treated.root}` "
                  "asks whether detectors still flag the treated fakers); wall time "
                  f"{time.perf_counter() - start:.0f} s")


@app.command()
@clean_errors
def suite(
    testbed: Annotated[str, typer.Option(help="testbed directory, or 'default'")] = "default",
    out: Annotated[Path | None, typer.Option(help="results directory, shared with `detect` (default: "
                                                  "results/detect-<testbed name>); a rerun resumes")] = None,
    page: Annotated[Path | None, typer.Option(help="the HTML page (default: OUT/suite.html)")] = None,
    strategies: Annotated[str, typer.Option(help="comma-separated strategies; the baselines always run")]
        = "noise,probes,lens,attention,steering,learning_speed",
    pairs: Annotated[str | None, typer.Option(help="comma-separated pair ids 'aligned__faker' (default: all), as "
                                                   "`detect`")] = None,
    seed: Annotated[int, typer.Option(help="seed of every strategy that draws and of the bootstrap")] = 0,
    max_prompts: Annotated[int, typer.Option(help="benchmark prompts per pair (0 = all), as `detect`")] = 24,
    match_confidence: Annotated[float, typer.Option(help=f"the confidence-matched column: {MATCH_HELP}")] = 1.0,
    compute: Annotated[bool, typer.Option(help="compute missing rows (--no-compute: page from stored rows "
                                               "only)")] = True,
    workers: Annotated[int, typer.Option(help=WORKERS_HELP)] = 1,
    quick: Annotated[bool, typer.Option(help=QUICK_HELP)] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = None,
    precision: PrecisionOpt = None,
    executor: Annotated[str, typer.Option(help=EXECUTOR_HELP)] = "local",
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "tl",
) -> None:
    """Every strategy, both baselines and the held-out ensemble; one self-contained HTML page (opens offline)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from ..strategies import known
    from ..suite import SuiteConfig, run_suite, write_page
    from ..testbed.folder import Testbed

    start = time.perf_counter()
    names = tuple(csv_option(strategies, "--strategies", "the default") or [])
    unknown = [n for n in names if n not in known()]
    if unknown:
        raise typer.BadParameter(f"unknown strategy {unknown[0]!r}; known: {', '.join(known())}",
                                 param_hint="--strategies")
    check_tolerance(match_confidence)
    check_seed(seed)
    at_least(0, max_prompts=max_prompts)
    at_least(1, workers=workers)
    at_most(MAX_COUNT, max_prompts=max_prompts, workers=workers)
    device = check_device_option(device)
    arithmetic = dtype_option(dtype, precision, device) or "fp32"
    backend = check_backend_option(backend, False)
    run_on = check_executor_option(executor, ray_address)
    pair_list = csv_option(pairs, "--pairs", "all pairs")
    for path, flag in ((out, "--out"), (page, "--page")):
        if path is not None and flag == "--out":
            out_folder(path)
        elif path is not None and path.is_dir():
            raise typer.BadParameter(f"{path} is a folder; pass a file path, e.g. {path / 'suite.html'}",
                                     param_hint=flag)
    tb = Testbed.open(testbed)
    tb.check_files(tb.pair_ids(pair_list))  # unknown pairs, missing or changed files: refused before OUT is made
    out = out or Path("results") / f"detect-{tb.root.name}"
    config = SuiteConfig(strategies=names, seed=seed, max_prompts=max_prompts or None,
                         match_confidence=match_confidence, precision=arithmetic, device=device,
                         backend="nnsight" if backend == "nnsight" else "tl",
                         pairs=tuple(pair_list) if pair_list else None)
    with bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) \
            as progress:
        result = run_suite(tb, out, config, compute=compute, progress=progress, log=progress.console.print,
                           workers=workers, quick=quick, executor=run_on)
    table = compact_table(f"suite on {tb.root}: {plural(len(result.ev.pair_prompts), 'pair')} (held-out rows: strict "
                        "leave-one-persona-out)")
    for col in ("method", "score", "accuracy (95% CI)", "AUROC (95% CI)", "decided"):
        table.add_column(col)
    for name in result.ev.strategies():
        r = result.ev.primary(name)
        table.add_row(name, r.score, r.summary.accuracy_text(), r.summary.auroc_text(),
                      f"{r.summary.n_decided}/{r.summary.n_pairs}")
    for h in result.held:
        table.add_row(f"held-out {h.name}", "-", h.summary.accuracy_text(), h.summary.auroc_text(),
                      f"{h.summary.n_decided}/{h.summary.n_pairs}")
    print_table(table)
    path = write_page(result, page or out / "suite.html")
    console.print(f"page: {path.resolve()} (self-contained, opens offline); results: {out}; wall time "
                  f"{time.perf_counter() - start:.0f} s")
