"""S4 concept probes on a testbed: accuracy per concept and layer, the best layer, a check against POSER's data.

Run:  .venv/bin/python analyses/concept_probes.py                       (testbeds/default)
      .venv/bin/python analyses/concept_probes.py --testbed DIR --max-prompts 32 --layers 4,10,16,22

The best layer of each concept is chosen per model on held-out *contrast* pairs (highest held-out probe
accuracy, ties by d'), never on benchmark prompts or faker labels; the chosen setting (averaging the concepts
at their best layers) was fixed before looking at results. Per-layer rows are the optimistic view: picking
the best of them on these pairs would overfit. External check: each of our directions is scored on POSER's
own concept files (security vs vulnerability, competence vs incompetence), which we never train on.
Results are stored (resumable) and the figures redrawn from them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from poser_interp.analysis import (
    add_config_args,
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

PROBES_ARGS = ("layers", "concepts", "position", "measure")
"""Config fields the script takes as options (`--field-name`, help from the docstring)."""


def poser_check(tb, strategy, console) -> None:  # noqa: ANN001
    """Per layer: accuracy of our directions on POSER's concept files, and cosine with POSER-built directions."""
    from rich.table import Table

    from poser_interp.core.activations import collect
    from poser_interp.core.tokens import PromptFormat, encode
    from poser_interp.data.concepts import POSER_PAIRS, load_poser_contrast
    from poser_interp.errors import DataError
    from poser_interp.strategies.probes import fit_probe

    try:
        theirs = {c: load_poser_contrast(c) for c in POSER_PAIRS if c in strategy.config.concepts}
    except DataError as e:
        console.print(f"POSER check skipped: {e}")
        return
    model_id = tb.pairs[tb.pair_ids()[0]]["aligned"]
    model, c = tb.load(model_id), strategy.config
    fmt = PromptFormat(max_tokens=c.max_tokens)
    table = Table(title=f"external check on {model_id}: our directions on POSER's concept files")
    table.add_column("layer")
    for concept in theirs:
        table.add_column(f"{concept}: accuracy on POSER")
        table.add_column(f"{concept}: cos(ours, POSER's)")
    cells: dict[int, list[str]] = {la: [] for la in c.layers}
    for concept, other in theirs.items():
        ours = strategy.contrast_sets()[concept]
        acts = {}
        for name, s in (("ours", ours), ("theirs", other)):
            ids = [encode(model.tokenizer, t, fmt) for t in s.texts()]
            x, _ = collect(model, ids, c.layers, c.position, c.batch_size)
            acts[name] = (x[:len(s.positive)], x[len(s.positive):])
        probe = fit_probe(*acts["ours"], *acts["theirs"])
        ref = fit_probe(*acts["theirs"], *acts["theirs"])
        cos = (probe.direction * ref.direction).sum(-1) / (probe.direction.norm(dim=-1) * ref.direction.norm(dim=-1))
        for j, la in enumerate(c.layers):
            cells[la] += [f"{float(probe.accuracy[j]):.2f}", f"{float(cos[j]):+.2f}"]
    for la, row in cells.items():
        table.add_row(str(la), *row)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_testbed_args(ap, "probes")
    add_config_args(ap, "probes", PROBES_ARGS)
    add_run_args(ap)
    ap.add_argument("--no-poser-check", action="store_true", help="skip the check on POSER's concept files")
    args = ap.parse_args(argv)

    from rich.table import Table

    from poser_interp.core.shape import shape_of
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.strategies import build
    from poser_interp.testbed.folder import default_testbed_dir
    from poser_interp.viz.lens_plots import probe_layer_figure
    from poser_interp.viz.plots import summary_figure

    console = wide_console()
    tb = open_testbed(args.testbed or default_testbed_dir(), console)
    if tb is None:
        return 2
    start = time.perf_counter()
    probes = build("probes", *shape_of(tb.base_spec()), seed=args.seed, **config_args(args, PROBES_ARGS))
    out = args.out or Path("results") / f"probes-{tb.root.name}"
    pairs = selected_pairs(args.pairs, tb)
    ev = detect_with_baselines(tb, probes, out, pairs, console, seed=args.seed, max_prompts=args.max_prompts)
    store = ResultsStore.open(out)
    concepts = [*probes.config.concepts, "all"]

    table = Table(title=f"S4 at each concept's best held-out layer, {len(pairs)} pairs (* = chosen in advance)")
    for col in ("concept", "score", "accuracy (95% CI)", "AUROC (95% CI)", "decided", "best layers", "probe acc"):
        table.add_column(col)
    for concept in concepts:
        setting = next(s for s in probes.settings() if s.key == f"concept={concept},layer=best")
        rows = [r for r in store.rows("probes") if r.values.setting == setting]
        meta = [r.values.meta for r in rows]
        layers = sorted({int(m["layer"]) for m in meta if "layer" in m})
        acc = sum(m["probe_acc"] for m in meta) / max(1, len(meta))
        for i, r in enumerate(ev.find("probes", setting=setting)):
            m = r.summary
            table.add_row(concept if i == 0 else "", r.score + (" *" if r.is_primary else ""),
                          f"{m.accuracy:.2f} ({m.accuracy_ci[0]:.2f}-{m.accuracy_ci[1]:.2f})",
                          f"{m.auroc:.2f} ({m.auroc_ci[0]:.2f}-{m.auroc_ci[1]:.2f})", f"{m.n_decided}/{m.n_pairs}",
                          ",".join(map(str, layers)) if i == 0 else "", f"{acc:.2f}" if i == 0 else "")
    console.print(table)
    score = ev.primary("probes").score
    by_layer = Table(title=f"accuracy over pairs by layer ({score}; optimistic if a layer is picked from it)")
    by_layer.add_column("layer")
    for concept in probes.config.concepts:
        by_layer.add_column(concept)
    for layer in probes.config.layers:
        cells = []
        for concept in probes.config.concepts:
            (r,) = [r for r in ev.find("probes", score) if r.setting.as_dict() == {"concept": concept, "layer": layer}]
            cells.append(f"{r.summary.accuracy:.2f} (AUROC {r.summary.auroc:.2f})")
        by_layer.add_row(str(layer), *cells)
    console.print(by_layer)
    print_baselines(ev, console)
    if not args.no_poser_check:
        poser_check(tb, probes, console)
    figs = {"summary": summary_figure(ev), "probes_layers": probe_layer_figure(ev, store)}
    write_and_report_figures(figs, out, console, start, results_line=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
