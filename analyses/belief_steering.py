"""S1 belief steering on a testbed: accuracy per layer x alpha, dose-response per model, heatmaps.

Run:  .venv/bin/python analyses/belief_steering.py                     (testbeds/default)
      .venv/bin/python analyses/belief_steering.py --testbed DIR --max-prompts 32 --alphas 1,4 --contrast good

Each model's "poor oversight" direction per layer is built from the testbed's data/test.jsonl (never the
benchmark; checked): poor-oversight prompts minus the same prompts without their critical facts (--contrast
removed, the default) or minus good-oversight prompts (--contrast good). Added x alpha to the benchmark prompts,
the model whose P(misaligned) rises more is called the faker. The reported setting (alpha 4 at ~55% depth) is
fixed in advance; Poser found S1 near chance and this script reports whatever comes out, next to the baselines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from poser_interp.analysis import (
    add_config_args,
    add_run_args,
    add_testbed_args,
    config_args,
    detect_with_baselines,
    print_primary,
    selected_pairs,
    wide_console,
    write_and_report_figures,
)

STEERING_ARGS = ("layers", "alphas", "contrast", "n_prompts")
"""Config fields the script takes as options (`--field-name`, help from the docstring)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_testbed_args(ap, "steering")
    add_config_args(ap, "steering", STEERING_ARGS)
    add_run_args(ap)
    args = ap.parse_args(argv)

    from rich.table import Table

    from poser_interp.analysis import open_testbed
    from poser_interp.core.shape import shape_of
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.strategies import Setting, build
    from poser_interp.testbed.folder import default_testbed_dir
    from poser_interp.viz.attention_plots import model_curves, setting_heatmap, setting_lines
    from poser_interp.viz.plots import summary_figure

    console = wide_console()
    tb = open_testbed(args.testbed or default_testbed_dir(), console, benchmark=True)
    if tb is None:
        return 2
    start = time.perf_counter()
    strategy = build("steering", *shape_of(tb.base_spec()), seed=args.seed, data=str(tb.root / "data"),
                     **config_args(args, STEERING_ARGS))
    out = args.out or Path("results") / f"steering-{tb.root.name}"
    pairs = selected_pairs(args.pairs, tb)
    ev = detect_with_baselines(tb, strategy, out, pairs, console, seed=args.seed, max_prompts=args.max_prompts)

    for score in [s.name for s in strategy.scores()]:
        console.print(f"[bold]S1 {score}[/]: accuracy (AUROC) over {len(pairs)} pairs; rows: layer, columns: alpha")
        table = Table()
        table.add_column("layer")
        for a in strategy.config.alphas:
            table.add_column(f"x{a}")
        for layer in strategy.config.layers:
            cells = []
            for a in strategy.config.alphas:
                (r,) = ev.find("steering", score, Setting.of(layer=layer, alpha=a))
                m = r.summary
                cells.append(f"{m.accuracy:.2f} ({m.auroc:.2f})" + (f" [{m.n_decided}/{m.n_pairs}]"
                                                                    if m.undecided_pairs else ""))
            table.add_row(str(layer), *cells)
        console.print(table)
    print_primary(ev, ("steering", "blackbox", "random"), console)
    store = ResultsStore.open(out)
    primary = strategy.config.primary_layer
    figs = {"summary": summary_figure(ev), "accuracy": setting_heatmap(ev, "steering", "alpha", "layer"),
            "layers": setting_lines(ev, "steering", "layer", "alpha"),
            "dose_response": model_curves(store, "steering", "alpha", "p_steered", start="p_clean",
                                          where={"layer": primary}, pair_ids=pairs)}
    write_and_report_figures(figs, out, console, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
