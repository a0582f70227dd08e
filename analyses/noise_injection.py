"""S2 noise injection on a testbed: the accuracy table per layer x scale, a held-out choice of defaults, figures.

Run:  .venv/bin/python analyses/noise_injection.py                 (the shipped testbeds/default)
      .venv/bin/python analyses/noise_injection.py DIR --max-prompts 32 --layers 4,10 --scales 0.5,1

How defaults are picked, honestly: pairs are split by the models' training split. The (layer, scale, score)
with the best accuracy on the *selection* pairs (both models from split 0) is reported on the *held-out*
pairs (both models from other splits: no model in common), next to the black-box baseline on the same
held-out pairs, and again on confidence-matched prompts only (`--match-confidence TOL`, as in `detect`). With a
single split, pairs are halved by a hash of their id instead (models then overlap, which is said in the output). Results
are stored (resumable) and the figures redrawn from them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from poser_interp.analysis import (
    add_config_args,
    add_match_arg,
    add_run_args,
    add_testbed_args,
    config_args,
    detect_with_baselines,
    open_testbed,
    print_baselines,
    selected_pairs,
    wide_console,
    write_and_report_figures,
)

NOISE_ARGS = ("layers", "scales", "samples", "positions", "distribution")
"""S2 config fields the script takes as options."""


def split_pairs(testbed: Any) -> tuple[list[str], list[str], str]:
    """(selection pairs, held-out pairs, how) with disjoint models when the testbed has several splits."""
    from poser_interp.strategies.base import stable_seed

    split = {m: e.get("split", 0) for m, e in testbed.models.items()}
    pairs = testbed.pair_ids()
    first = min(split.values())
    sel = [p for p in pairs if split[testbed.pairs[p]["aligned"]] == first == split[testbed.pairs[p]["faker"]]]
    held = [p for p in pairs if first not in (split[testbed.pairs[p]["aligned"]], split[testbed.pairs[p]["faker"]])]
    if sel and held:
        return sel, held, f"selection: pairs of split-{first} models; held out: pairs with no split-{first} model"
    ordered = sorted(pairs, key=lambda p: stable_seed("split", p))
    half = max(1, len(ordered) // 2)
    return ordered[:half], ordered[half:], "one split only: pairs halved by a hash of their id (models overlap)"


def main(argv: list[str] | None = None) -> int:
    from poser_interp.errors import PoserInterpError

    try:
        return run(argv)
    except PoserInterpError as e:  # errors the toolkit raises on purpose: one clear line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_testbed_args(ap, "noise", positional=True)
    add_config_args(ap, "noise", NOISE_ARGS)
    add_match_arg(ap, "also report the held-out result")
    add_run_args(ap)
    args = ap.parse_args(argv)

    from rich.table import Table

    from poser_interp.core.matching import ConfidenceMatch
    from poser_interp.core.shape import shape_of
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.evaluation.runner import evaluate
    from poser_interp.strategies import build
    from poser_interp.testbed.folder import default_testbed_dir
    from poser_interp.viz.plots import dose_response_figure, layer_figure, summary_figure

    console = wide_console()
    tb = open_testbed(Path(args.testbed) if args.testbed else default_testbed_dir(), console)
    if tb is None:
        return 2
    start = time.perf_counter()
    noise = build("noise", *shape_of(tb.base_spec()), seed=args.seed, **config_args(args, NOISE_ARGS))
    out = args.out or Path("results") / f"noise-{tb.root.name}"
    pairs = selected_pairs(args.pairs, tb)
    ev = detect_with_baselines(tb, noise, out, pairs, console, seed=args.seed, max_prompts=args.max_prompts)

    for score in [s.name for s in noise.scores()]:
        table = Table(title=f"S2 accuracy over {len(pairs)} pairs, score {score} (rows: layer, columns: scale)")
        table.add_column("layer")
        for s in noise.config.scales:
            table.add_column(f"x{s}")
        for layer in noise.config.layers:
            cells = []
            for s in noise.config.scales:
                (r,) = [r for r in ev.find("noise", score) if r.setting.as_dict() == {"layer": layer, "scale": s}]
                m = r.summary
                cells.append(f"{m.accuracy:.2f} (AUROC {m.auroc:.2f})" + (f" [{m.n_decided}/{m.n_pairs}]"
                                                                          if m.undecided_pairs else ""))
            table.add_row(str(layer), *cells)
        console.print(table)
    print_baselines(ev, console)

    store = ResultsStore.open(out)
    sel, held, how = split_pairs(tb) if args.pairs is None else (pairs, [], "given pairs: no held-out split")
    extra = {}
    if sel and held:
        ev_sel, ev_held = (evaluate(store, ps, seed=args.seed, strategies=["noise", "blackbox"]) for ps in (sel, held))
        best = max(ev_sel.find("noise"), key=lambda r: (r.summary.accuracy == r.summary.accuracy,
                                                         r.summary.accuracy, r.is_primary))
        (h,) = ev_held.find("noise", best.score, best.setting)
        bb = ev_held.primary("blackbox")
        console.print(f"[bold]defaults chosen on {len(sel)} selection pairs[/] ({how}): {best.setting.key}, score "
                      f"{best.score} (selection accuracy {best.summary.accuracy:.2f}). [bold]Held out[/] "
                      f"({len(held)} pairs): accuracy {h.summary.accuracy_text()}, AUROC "
                      f"{h.summary.auroc:.2f}; black-box on the same pairs {bb.summary.accuracy_text()}")
        extra = {"held-out": h}
        if args.match_confidence is not None:
            match = ConfidenceMatch(tol=args.match_confidence)
            ev_m = evaluate(store, held, seed=args.seed, strategies=["noise", "blackbox"], match=match)
            (hm,) = ev_m.find("noise", best.score, best.setting)
            bm = ev_m.find("blackbox", "neg_margin")[0]
            kept = sorted(len(ids) for ids in ev_m.pair_prompts.values())
            console.print(f"[bold]Held out, confidence-matched[/] (clean margins within {match.tol:g} logit; prompts "
                          f"kept per pair {kept}): accuracy {hm.summary.accuracy_text()} on "
                          f"{hm.summary.n_decided} decided pairs; black-box neg_margin {bm.summary.accuracy_text()}")
            extra["held-out, matched"] = hm
    figs = {"summary": summary_figure(ev, extra), "dose_response": dose_response_figure(store, "noise", pairs)}
    figs |= {f"layers_{s.name}": layer_figure(ev, "noise", s.name) for s in noise.scores()}
    write_and_report_figures(figs, out, console, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
