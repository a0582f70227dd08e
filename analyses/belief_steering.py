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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbed", type=Path, default=None, help="testbed directory (default: testbeds/default)")
    ap.add_argument("--out", type=Path, default=None, help="results directory (default: results/steering-<testbed>)")
    ap.add_argument("--layers", default=None, help="comma-separated layers (default: 15/35/55/75%% of the depth)")
    ap.add_argument("--alphas", default="1,2,4,8", help="comma-separated multiples of the direction")
    ap.add_argument("--contrast", default="removed", choices=("removed", "good"))
    ap.add_argument("--n-prompts", type=int, default=64, help="poor-oversight prompts averaged into the direction")
    ap.add_argument("--max-prompts", type=int, default=None, help="at most N benchmark prompts per pair")
    ap.add_argument("--pairs", default=None, help="comma-separated pair ids (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from poser_interp.attention_plots import model_curves, setting_heatmap, setting_lines
    from poser_interp.plots import summary_figure, write_figures
    from poser_interp.results import ResultsStore
    from poser_interp.runner import RunConfig, n_layers_of, run_detection
    from poser_interp.strategies import Setting, make
    from poser_interp.strategies.steering import strategy_for
    from poser_interp.testbed import default_testbed_dir, open_with_pairs

    console = Console(width=max(Console().width, 120))
    tb = open_with_pairs(args.testbed or default_testbed_dir(), console)
    if tb is None:
        return 2
    start = time.perf_counter()
    layers = tuple(int(x) for x in args.layers.split(",")) if args.layers else None
    alphas = tuple(float(x) for x in args.alphas.split(","))
    strategy = strategy_for(n_layers_of(tb.base_spec()), layers=layers, alphas=alphas, contrast=args.contrast,
                            n_prompts=args.n_prompts, seed=args.seed, data=str(tb.root / "data"))
    out = args.out or Path("results") / f"steering-{tb.root.name}"
    pairs = args.pairs.split(",") if args.pairs else tb.pair_ids()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        ev = run_detection(tb, [strategy, make("random", seed=args.seed), make("blackbox")], out, pairs=pairs,
                           config=RunConfig(seed=args.seed, max_prompts=args.max_prompts), progress=progress,
                           log=progress.console.print)

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
    for name in ("steering", "blackbox", "random"):
        r = ev.primary(name)
        console.print(f"[bold]{name}[/] ({r.setting.key}, {r.score}): accuracy {r.summary.accuracy:.2f} "
                      f"{r.summary.accuracy_ci}, AUROC {r.summary.auroc:.2f} {r.summary.auroc_ci}, compute "
                      f"{ev.seconds(name):.0f} s" + (f"; {r.summary.describe_nan()}" if r.summary.describe_nan()
                                                    else ""))
    store = ResultsStore.open(out)
    primary = strategy.config.primary_layer
    figs = {"summary": summary_figure(ev), "accuracy": setting_heatmap(ev, "steering", "alpha", "layer"),
            "layers": setting_lines(ev, "steering", "layer", "alpha"),
            "dose_response": model_curves(store, "steering", "alpha", "p_steered", start="p_clean",
                                          where={"layer": primary}, pair_ids=pairs)}
    paths, note = write_figures(figs, out / "figures")
    console.print(f"figures in {out / 'figures'} ({len([p for p in paths if p.suffix == '.html'])} HTML; {note})")
    console.print(f"results: {out}; wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
