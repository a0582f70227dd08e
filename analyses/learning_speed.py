"""S3 learning speed on a testbed: accuracy per method x k, learning curves per model.

Run:  .venv/bin/python analyses/learning_speed.py                      (testbeds/default)
      .venv/bin/python analyses/learning_speed.py --testbed DIR --max-prompts 32 --steps 1,2,4 --methods lora

Each model is copied and fine-tuned for k steps toward the misaligned answer on good-oversight prompts from the
testbed's data/test.jsonl (never the benchmark; checked), with LoRA on its upper layers and/or full training of
those layers; the pair's benchmark prompts are the held-out set. The model whose P(misaligned) rises more is
called the faker. Reported setting, fixed in advance: LoRA after 4 steps (the original rule's step 4). Every
(model, method, k) is deterministic and stored as computed, so a rerun resumes and never recomputes.
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

LEARNING_ARGS = ("steps", "methods", "upper_layers", "n_train")
"""Config fields the script takes as options (`--field-name`, help from the docstring)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_testbed_args(ap, "learning")
    add_config_args(ap, "learning_speed", LEARNING_ARGS)
    add_run_args(ap)
    args = ap.parse_args(argv)

    from rich.table import Table

    from poser_interp import ResultsStore, build_strategy, default_testbed_dir, shape_of
    from poser_interp.analysis import open_testbed
    from poser_interp.viz.attention_plots import model_curves, setting_heatmap
    from poser_interp.viz.plots import summary_figure

    console = wide_console()
    tb = open_testbed(args.testbed or default_testbed_dir(), console, benchmark=True)
    if tb is None:
        return 2
    start = time.perf_counter()
    strategy = build_strategy("learning_speed", *shape_of(tb.base_spec()), seed=args.seed, data=str(tb.root / "data"),
                              **config_args(args, LEARNING_ARGS))
    steps, methods = strategy.config.steps, strategy.config.methods  # the sweep as built (options or defaults)
    out = args.out or Path("results") / f"learning-{tb.root.name}"
    pairs = selected_pairs(args.pairs, tb)
    ev = detect_with_baselines(tb, strategy, out, pairs, console, seed=args.seed, max_prompts=args.max_prompts)

    for score in [s.name for s in strategy.scores()]:
        console.print(f"[bold]S3 {score}[/]: accuracy (AUROC) over {len(pairs)} pairs; rows: method, columns: k")
        table = Table()
        table.add_column("method")
        for k in steps:
            table.add_column(f"k={k}")
        for method in methods:
            cells = []
            for k in steps:
                (r,) = [r for r in ev.find("learning_speed", score) if r.setting.as_dict() ==
                        {"method": method, "steps": k}]
                m = r.summary
                cells.append(f"{m.accuracy:.2f} ({m.auroc:.2f})" + (f" [{m.n_decided}/{m.n_pairs}]"
                                                                    if m.undecided_pairs else ""))
            table.add_row(method, *cells)
        console.print(table)
    print_primary(ev, ("learning_speed", "blackbox", "random"), console)
    store = ResultsStore.open(out)
    figs = {"summary": summary_figure(ev), "accuracy": setting_heatmap(ev, "learning_speed", "steps", "method")}
    for method in methods:
        figs[f"curves_{method}"] = model_curves(store, "learning_speed", "steps", "p_after", start="p_before",
                                                where={"method": method}, pair_ids=pairs)
    write_and_report_figures(figs, out, console, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
