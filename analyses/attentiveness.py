"""S6 attentiveness to oversight facts on a testbed: accuracy per variant, layer and head, heatmaps.

Run:  .venv/bin/python analyses/attentiveness.py                      (testbeds/default)
      .venv/bin/python analyses/attentiveness.py --testbed DIR --max-prompts 32 --variants saliency,counterfactual

Three measures of how much each model attends to the `critical` (oversight) facts of the benchmark prompts:
gradient saliency (the reported setting, fixed in advance: it has no layer to pick), attention from the final
position per layer x head, and the last-token residual shift when the facts are removed. The model that
attends more is called the faker. Best cells of the sweeps are printed too, marked optimistic (chosen on the
same pairs). Results are stored as computed (a rerun resumes); figures are redrawn from them.
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

ATTENTION_ARGS = ("variants", "batch_size")
"""Config fields the script takes as options (`--field-name`, help from the docstring)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_testbed_args(ap, "attention")
    add_config_args(ap, "attention", ATTENTION_ARGS)
    add_run_args(ap)
    args = ap.parse_args(argv)

    from rich.table import Table

    from poser_interp.analysis import open_testbed
    from poser_interp.core.shape import shape_of
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.strategies import build
    from poser_interp.testbed.folder import default_testbed_dir
    from poser_interp.viz.attention_plots import kind_difference_heatmap, setting_heatmap, setting_lines
    from poser_interp.viz.plots import summary_figure

    console = wide_console()
    tb = open_testbed(args.testbed or default_testbed_dir(), console, benchmark=True)
    if tb is None:
        return 2
    start = time.perf_counter()
    strategy = build("attention", *shape_of(tb.base_spec()), **config_args(args, ATTENTION_ARGS))
    out = args.out or Path("results") / f"attention-{tb.root.name}"
    pairs = selected_pairs(args.pairs, tb)
    ev = detect_with_baselines(tb, strategy, out, pairs, console, seed=args.seed, max_prompts=args.max_prompts)

    def cell(r) -> str:  # noqa: ANN001
        m = r.summary
        return f"{m.accuracy:.2f}" + (f" [{m.n_decided}/{m.n_pairs}]" if m.undecided_pairs else "")

    for score in ("attentiveness", "normalized"):
        rs = ev.find("attention", score)
        for variant in strategy.config.variants:
            vr = [r for r in rs if r.setting["variant"] == variant]
            if variant == "saliency":
                console.print(f"S6 saliency, {score}: accuracy {vr[0].summary.accuracy_text()}, AUROC "
                              f"{vr[0].summary.auroc:.2f}")
                continue
            cols = ["mean", *strategy.config.heads] if variant == "attention" else [None]
            console.print(f"[bold]S6 {variant}, {score}[/]: accuracy over {len(pairs)} pairs (rows: layer" +
                          (", columns: head)" if variant == "attention" else ")"))
            table = Table()
            table.add_column("layer")
            for h in cols:
                table.add_column("accuracy" if h is None else str(h))
            for layer in strategy.config.layers:
                row = [r for r in vr if r.setting["layer"] == layer]
                by_head = {r.setting.get("head"): r for r in row}
                table.add_row(str(layer), *[cell(by_head[h]) for h in cols])
            console.print(table)
        best = max(rs, key=lambda r: (r.summary.accuracy == r.summary.accuracy, r.summary.accuracy))
        console.print(f"best {score} setting (optimistic: chosen on these pairs): {best.setting.key} accuracy "
                      f"{cell(best)}")
    print_primary(ev, ("attention", "blackbox", "random"), console)
    store = ResultsStore.open(out)
    figs = {"summary": summary_figure(ev)}
    if "attention" in strategy.config.variants:
        where = {"variant": "attention"}
        figs |= {"attention_accuracy": setting_heatmap(ev, "attention", "head", "layer", where=where),
                 "attention_mass_difference": kind_difference_heatmap(store, "attention", "attentiveness", "head",
                                                                      "layer", where, pairs)}
    figs["layers"] = setting_lines(ev, "attention", "layer", "variant", where={"head": ("mean", None)})
    write_and_report_figures(figs, out, console, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
