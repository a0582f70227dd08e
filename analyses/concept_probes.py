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


def _csv(text: str | None, cast: type) -> tuple | None:
    return tuple(cast(x) for x in text.split(",") if x.strip()) if text else None


def open_testbed(root: Path, console) -> object | None:  # noqa: ANN001
    """The testbed at root, or None after saying clearly why it cannot be evaluated yet."""
    from poser_interp.testbed import Testbed

    if not (root / "manifest.json").exists():
        console.print(f"[red]no testbed at {root}[/]: build it with `poser-interp testbed build --out {root}`, or pass "
                      "--testbed DIR.")
        return None
    tb = Testbed.open(root)
    if not tb.pairs:
        kinds = ", ".join(f"{m} ({e['kind']})" for m, e in tb.models.items()) or "none"
        console.print(f"[yellow]testbed {root} has no pairs yet[/] (models so far: {kinds}). A pair needs a verified "
                      "aligned model and a verified faker; the build may still be running. Rerun when it has pairs.")
        return None
    return tb


def poser_check(tb, strategy, console) -> None:  # noqa: ANN001
    """Per layer: accuracy of our directions on POSER's concept files, and cosine with POSER-built directions."""
    from rich.table import Table

    from poser_interp.concepts import POSER_PAIRS, load_poser_contrast
    from poser_interp.errors import DataError
    from poser_interp.strategies.probes import collect, fit_probe
    from poser_interp.tokens import PromptFormat, encode

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
    ap.add_argument("--testbed", type=Path, default=None, help="testbed directory (default: testbeds/default)")
    ap.add_argument("--out", type=Path, default=None, help="results directory (default: results/probes-<testbed>)")
    ap.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
    ap.add_argument("--concepts", default=None, help="comma-separated concepts (default: all four in probes/)")
    ap.add_argument("--position", default="last", choices=("last", "mean"))
    ap.add_argument("--measure", default="cosine", choices=("cosine", "centered", "projection"))
    ap.add_argument("--max-prompts", type=int, default=None, help="at most N benchmark prompts per pair")
    ap.add_argument("--pairs", default=None, help="comma-separated pair ids (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-poser-check", action="store_true", help="skip the check on POSER's concept files")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from poser_interp.lens_plots import probe_layer_figure
    from poser_interp.plots import summary_figure, write_figures
    from poser_interp.results import ResultsStore
    from poser_interp.runner import RunConfig, n_layers_of, run_detection
    from poser_interp.strategies import make
    from poser_interp.strategies.probes import strategy_for
    from poser_interp.testbed import default_testbed_dir

    console = Console(width=max(Console().width, 120))
    tb = open_testbed(args.testbed or default_testbed_dir(), console)
    if tb is None:
        return 2
    start = time.perf_counter()
    opts = {"layers": _csv(args.layers, int), "position": args.position, "measure": args.measure, "seed": args.seed}
    if args.concepts:
        opts["concepts"] = _csv(args.concepts, str)
    probes = strategy_for(n_layers_of(tb.base_spec()), **opts)
    out = args.out or Path("results") / f"probes-{tb.root.name}"
    pairs = list(_csv(args.pairs, str) or tb.pair_ids())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        ev = run_detection(tb, [probes, make("random", seed=args.seed), make("blackbox")], out, pairs=pairs,
                           config=RunConfig(seed=args.seed, max_prompts=args.max_prompts), progress=progress,
                           log=progress.console.print)
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
    for name in ("blackbox", "random"):
        r = ev.primary(name)
        console.print(f"baseline {name} ({r.score}): accuracy {r.summary.accuracy:.2f} {r.summary.accuracy_ci}, "
                      f"AUROC {r.summary.auroc:.2f}")
    if not args.no_poser_check:
        poser_check(tb, probes, console)
    figs = {"summary": summary_figure(ev), "probes_layers": probe_layer_figure(ev, store)}
    paths, note = write_figures(figs, out / "figures")
    console.print(f"figures in {out / 'figures'} ({len([p for p in paths if p.suffix == '.html'])} HTML; {note}); "
                  f"wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
