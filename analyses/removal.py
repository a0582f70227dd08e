"""Removal of faking by fine-tuning (Poser's second question): misaligned rates before and after, per method.

Run:  .venv/bin/python analyses/removal.py                                  (testbeds/default, sft and noise)
      .venv/bin/python analyses/removal.py DIR --method noise --layers 4 --scale 1.0 --steps 100
      .venv/bin/python analyses/removal.py --pool OUT1,OUT2         (tables of finished runs, pooled; no training)

Each model is fine-tuned for --steps steps on good-oversight prompts with its own answers as targets (`sft`), or
the same with Gaussian noise added to the residual stream at --layers during training (`noise`). The treated
testbed is written beside the source (`<testbed>-removal-<method>`, resumable, hash-checked; the source is never
written). Printed per method: per model and evaluation set (trained oversight wordings, held-out wordings,
held-out topics) the poor-oversight misaligned rate before -> after; the fakers' mean removal rate
(1 - after/before) with a 95% bootstrap CI; the aligned models' misaligned rate after (the control). A figure per
method goes to results/removal-<testbed>/figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from poser_interp.analysis import csv_values, wide_console, write_and_report_figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("testbed", nargs="?", default=None, help="testbed directory (default: testbeds/default)")
    ap.add_argument("--method", default="sft,noise", help="comma-separated: sft, noise")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--layers", default=None, help="noise: comma-separated layers (default: S2's)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--n-eval", type=int, default=None)
    ap.add_argument("--models", default=None, help="comma-separated model ids (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", default=None,
                    help="comma-separated removal outputs of one method and settings on disjoint models: print "
                         "their pooled tables (means and CIs over all their models) and train nothing")
    args = ap.parse_args(argv)
    if args.pool:
        return pooled(csv_values(args.pool, str) or (), args.seed)

    from poser_interp.analysis import open_testbed
    from poser_interp.removal import RemovalConfig, RemovalSummary, removal_tables, remove
    from poser_interp.testbed.folder import default_testbed_dir

    console = wide_console()
    tb = open_testbed(Path(args.testbed) if args.testbed else default_testbed_dir(), console, benchmark=True)
    if tb is None:
        return 2
    start = time.perf_counter()
    figs = {}
    for method in csv_values(args.method, str) or ():
        config = RemovalConfig(method=method, steps=args.steps, lr=args.lr, n_train=args.n_train,
                               batch_size=args.batch_size, layers=csv_values(args.layers, int), scale=args.scale,
                               n_eval=args.n_eval, seed=args.seed, threads=args.threads)
        treated = remove(tb, config, models=csv_values(args.models, str), log=console.print)
        summary = RemovalSummary.load(treated.root, seed=args.seed)
        for table in removal_tables(summary):
            console.print(table)
        figs[f"removal_{method}"] = summary.figure()
    write_and_report_figures(figs, Path("results") / f"removal-{tb.root.name}", console, start)
    return 0


def pooled(roots: tuple[str, ...] | list[str], seed: int) -> int:
    from poser_interp.errors import DataError
    from poser_interp.removal import RemovalSummary, removal_tables

    console = wide_console()
    try:
        summary = RemovalSummary.load(list(roots), seed=seed)
    except DataError as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    for table in removal_tables(summary):
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
