"""`poser-interp report`: every setting x score of stored results, without loading a model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ..analysis import MATCH_HELP
from .common import (
    app,
    check_seed,
    check_tolerance,
    clean_errors,
    console,
    csv_option,
    fail,
    out_folder,
    plural,
    print_table,
)
from .tables import matched_counts, metric_cells, results_table, short_setting


@app.command()
@clean_errors
def report(
    out: Annotated[Path, typer.Argument(help="a results directory written by `detect` or an analysis script")],
    strategies: Annotated[str | None, typer.Option(help="comma-separated strategies (default: all stored)")] = None,
    pairs: Annotated[str | None, typer.Option(help="comma-separated pair ids (default: all stored)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap")] = 0,
    match_confidence: Annotated[float | None, typer.Option(help=f"evaluate {MATCH_HELP}")] = None,
    csv: Annotated[Path | None, typer.Option(help="also write every row of the table to this CSV file")] = None,
) -> None:
    """Every setting x score of stored results: accuracy, AUROC and 95% CIs, without loading a model.

    `detect` prints each strategy's chosen setting (and the best one, flagged as optimistic); this prints the
    whole sweep, e.g. S1 per layer x alpha or S3 per method x k. Read-only: safe while a run writes to OUT.
    """
    import csv as csv_module
    import warnings

    from ..core.matching import ConfidenceMatch
    from ..evaluation.results import ResultsStore, ResumeWarning
    from ..evaluation.runner import evaluate

    check_tolerance(match_confidence)
    check_seed(seed)
    pair_list = csv_option(pairs, "--pairs", "every stored pair")
    strategy_list = csv_option(strategies, "--strategies", "every stored strategy")
    if csv is not None and csv.is_dir():
        raise typer.BadParameter(f"{csv} is a folder; pass a file path, e.g. {csv / 'report.csv'}", param_hint="--csv")
    if csv is not None:  # before the table is printed: a file that cannot be written is refused first
        out_folder(csv.parent, "--csv")
        if csv.parent.exists() and not os.access(csv.parent, os.W_OK):
            raise typer.BadParameter(f"cannot write {csv}: {csv.parent} is not writable", param_hint="--csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumeWarning)  # said below, in words that fit a reader
        store = ResultsStore.open(out)
    match = ConfidenceMatch(tol=match_confidence) if match_confidence is not None else None
    ev = evaluate(store, pair_list, seed=seed, strategies=strategy_list, match=match)
    missing = _missing_rows(store, ev)
    if ev.results and all(r.summary.n_decided == 0 for r in ev.results) and missing:
        fail(f"{out} holds no complete result to report: {missing}. Rerun the `detect` command that wrote it "
               "(the same options resume it), or wait for the run writing it to finish.")
    subtitle = ""
    if match is not None:
        kept = matched_counts(ev, match)
        if not kept:
            raise typer.Exit(1)
        subtitle = f"confidence-matched prompts only (within {match_confidence:g} logit; kept per pair: {kept})"
    title = f"stored results in {out}: {plural(len(ev.pair_prompts), 'pair')}, every setting (* = the strategy's " \
            "chosen setting and score, fixed in advance)"
    table = results_table(title + (f"\n{subtitle}" if subtitle else ""), compute=False)
    for r in ev.results:
        table.add_row(r.strategy, short_setting(r.setting), r.score + (" *" if r.is_primary else ""), *metric_cells(r))
    print_table(table)
    if missing:
        console.print(f"[yellow]note:[/] {missing}; their pairs are undecided (NaN) above. Rerun the `detect` "
                      "command that wrote it to complete it.", highlight=False, soft_wrap=True)
    if csv is not None:
        try:
            csv.parent.mkdir(parents=True, exist_ok=True)
            with csv.open("w", newline="") as f:
                w = csv_module.writer(f)
                w.writerow(["strategy", "setting", "score", "primary", "accuracy", "accuracy_lo", "accuracy_hi",
                            "auroc", "auroc_lo", "auroc_hi", "decided", "pairs", "seconds", "match_tol",
                            "match_min_prompts"])
                matching = (ev.match.tol, ev.match.min_prompts) if ev.match is not None else ("", "")
                for r in ev.results:
                    m = r.summary
                    w.writerow([r.strategy, r.setting.key, r.score, r.is_primary, m.accuracy, *m.accuracy_ci,
                                m.auroc, *m.auroc_ci, m.n_decided, m.n_pairs, round(r.seconds, 3), *matching])
        except OSError as e:
            raise typer.BadParameter(f"cannot write {csv}: {e.strerror or e}", param_hint="--csv") from e
        console.print(f"table written to {csv}")


def _missing_rows(store: Any, ev: Any) -> str:
    """'' when every row the evaluated pairs need is stored; else how many are missing, and why if known."""
    from ..strategies.base import from_config

    configs = store.manifest["config"]["strategies"]
    models = sorted({m for p in ev.pair_prompts for m in (store.manifest["pairs"][p]["aligned"],
                                                          store.manifest["pairs"][p]["faker"])})
    want = [(m, name, st.key) for name in ev.strategies() for st in from_config(name, configs[name]).settings()
            for m in models]
    gone = sum(key not in store for key in want)
    if not gone:
        return ""
    why = ("the last line of rows.jsonl is cut off (a run was interrupted, or is writing it now)"
           if store.incomplete_tail else "the run that wrote it stopped early, or is still running")
    return f"{gone} of {len(want)} rows are missing: {why}"
