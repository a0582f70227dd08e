"""S5 decision speed on a testbed: accuracy of the logit lens, tuned lens and output probes; per-layer figures.

Run:  .venv/bin/python analyses/decision_speed.py                       (testbeds/default)
      .venv/bin/python analyses/decision_speed.py --testbed DIR --max-prompts 32 --methods logit,probe

Each model's decision layer per prompt is the first layer from which its final answer leads by `--margin`
log-odds at every later layer; a pair is decided by the mean decision layer (later = called the faker). The
reading reported as chosen (logit lens) was fixed in advance. The tuned lens is fitted once per model on
project-written text and cached in the user cache dir (minutes per SmolLM2 model the first time); its
per-layer held-out KL to the final distribution is reported beside the logit lens's. Results are stored
(resumable) and the figures redrawn from them.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbed", type=Path, default=None, help="testbed directory (default: testbeds/default)")
    ap.add_argument("--out", type=Path, default=None, help="results directory (default: results/lens-<testbed>)")
    ap.add_argument("--methods", default="logit,tuned,probe", help="comma-separated readings")
    ap.add_argument("--margin", type=float, default=1.0, help="log-odds lead that counts as decided")
    ap.add_argument("--tuned-texts", type=int, default=None, help="tuned lens: corpus size (default 64)")
    ap.add_argument("--tuned-kl-steps", type=int, default=None, help="tuned lens: KL refinement steps (default 20)")
    ap.add_argument("--max-prompts", type=int, default=None, help="at most N benchmark prompts per pair")
    ap.add_argument("--pairs", default=None, help="comma-separated pair ids (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from poser_interp.lens_plots import kl_figure, lens_curves, lens_heatmap
    from poser_interp.plots import summary_figure, write_figures
    from poser_interp.results import ResultsStore
    from poser_interp.runner import RunConfig, run_detection
    from poser_interp.strategies import make
    from poser_interp.strategies.lens import LensConfig, LensStrategy
    from poser_interp.strategies.tuned_lens import TunedLensConfig
    from poser_interp.testbed import default_testbed_dir

    console = Console(width=max(Console().width, 120))
    tb = open_testbed(args.testbed or default_testbed_dir(), console)
    if tb is None:
        return 2
    start = time.perf_counter()
    methods = _csv(args.methods, str)
    tuned = TunedLensConfig(**{k: v for k, v in (("texts", args.tuned_texts), ("kl_steps", args.tuned_kl_steps))
                               if v is not None})
    lens = LensStrategy(LensConfig(methods=methods, primary_method="logit" if "logit" in methods else methods[0],
                                   margin=args.margin, seed=args.seed, tuned=tuned))
    out = args.out or Path("results") / f"lens-{tb.root.name}"
    pairs = list(_csv(args.pairs, str) or tb.pair_ids())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        ev = run_detection(tb, [lens, make("random", seed=args.seed), make("blackbox")], out, pairs=pairs,
                           config=RunConfig(seed=args.seed, max_prompts=args.max_prompts), progress=progress,
                           log=progress.console.print)
    store = ResultsStore.open(out)
    kinds = {m: e["kind"] for m, e in store.manifest["testbed"]["models"].items()}

    table = Table(title=f"S5 decision speed over {len(pairs)} pairs (* = chosen in advance)")
    for col in ("reading", "score", "accuracy (95% CI)", "AUROC (95% CI)", "decided", "mean decision layer"):
        table.add_column(col)
    for method in methods:
        rows = [r for r in store.rows("lens") if r.values.setting["method"] == method]
        means = {k: [float(r.values.values["decision_layer"].mean()) for r in rows if kinds[r.model] == k]
                 for k in ("aligned", "faker")}
        layer_text = ", ".join(f"{k} {sum(v) / len(v):.2f}" for k, v in means.items() if v)
        for i, r in enumerate(ev.find("lens", setting=next(s for s in lens.settings() if s["method"] == method))):
            m = r.summary
            table.add_row(method if i == 0 else "", r.score + (" *" if r.is_primary else ""),
                          f"{m.accuracy:.2f} ({m.accuracy_ci[0]:.2f}-{m.accuracy_ci[1]:.2f})",
                          f"{m.auroc:.2f} ({m.auroc_ci[0]:.2f}-{m.auroc_ci[1]:.2f})", f"{m.n_decided}/{m.n_pairs}",
                          layer_text if i == 0 else "")
    console.print(table)
    for name in ("blackbox", "random"):
        r = ev.primary(name)
        console.print(f"baseline {name} ({r.score}): accuracy {r.summary.accuracy:.2f} {r.summary.accuracy_ci}, "
                      f"AUROC {r.summary.auroc:.2f}")
    per_layer = Table(title="per layer, mean over models: held-out KL to the final distribution; output-probe "
                            "accuracy by kind")
    for col in ("layer", "KL logit lens", "KL tuned lens", "probe acc (aligned)", "probe acc (faker)"):
        per_layer.add_column(col)
    tuned_rows = [r.values.meta for r in store.rows("lens") if r.values.setting["method"] == "tuned"]
    probe_rows = [(kinds[r.model], r.values.meta) for r in store.rows("lens") if r.values.setting["method"] == "probe"]
    n_layers = max((sum(1 for k in m if k.startswith("acc_L")) for _, m in probe_rows),
                   default=sum(1 for k in (tuned_rows or [{}])[0] if k.startswith("kl_tuned_L")))

    def mean(xs: list[float]) -> str:
        return f"{sum(xs) / len(xs):.3f}" if xs else "-"

    for la in range(n_layers):
        per_layer.add_row(str(la), mean([m[f"kl_logit_L{la}"] for m in tuned_rows]),
                          mean([m[f"kl_tuned_L{la}"] for m in tuned_rows]),
                          *(mean([m[f"acc_L{la}"] for k, m in probe_rows if k == kind])
                            for kind in ("aligned", "faker")))
    console.print(per_layer)
    figs = {"summary": summary_figure(ev), "lens_heatmap": lens_heatmap(store, pairs[0])}
    figs |= {f"lens_curves_{m}": lens_curves(store, m) for m in methods}
    if "tuned" in methods:
        figs["lens_kl"] = kl_figure(store)
    paths, note = write_figures(figs, out / "figures")
    console.print(f"figures in {out / 'figures'} ({len([p for p in paths if p.suffix == '.html'])} HTML; {note}); "
                  f"wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
