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

from poser_interp.analysis import (
    add_run_args,
    add_testbed_args,
    csv_values,
    detect_with_baselines,
    open_testbed,
    print_baselines,
    selected_pairs,
    wide_console,
    write_and_report_figures,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_testbed_args(ap, "lens")
    ap.add_argument("--methods", default="logit,tuned,probe", help="comma-separated readings")
    ap.add_argument("--margin", type=float, default=1.0, help="log-odds lead that counts as decided")
    ap.add_argument("--tuned-texts", type=int, default=None, help="tuned lens: corpus size (default 64)")
    ap.add_argument("--tuned-kl-steps", type=int, default=None, help="tuned lens: KL refinement steps (default 20)")
    add_run_args(ap)
    args = ap.parse_args(argv)

    from rich.table import Table

    from poser_interp.core.tuned_lens import TunedLensConfig
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.strategies.lens import LensConfig, LensStrategy
    from poser_interp.testbed.folder import default_testbed_dir
    from poser_interp.viz.lens_plots import kl_figure, lens_curves, lens_heatmap
    from poser_interp.viz.plots import summary_figure

    console = wide_console()
    tb = open_testbed(args.testbed or default_testbed_dir(), console)
    if tb is None:
        return 2
    start = time.perf_counter()
    methods = csv_values(args.methods, str)
    tuned = TunedLensConfig(**{k: v for k, v in (("texts", args.tuned_texts), ("kl_steps", args.tuned_kl_steps))
                               if v is not None})
    lens = LensStrategy(LensConfig(methods=methods, primary_method="logit" if "logit" in methods else methods[0],
                                   margin=args.margin, seed=args.seed, tuned=tuned))
    out = args.out or Path("results") / f"lens-{tb.root.name}"
    pairs = selected_pairs(args.pairs, tb)
    ev = detect_with_baselines(tb, lens, out, pairs, console, seed=args.seed, max_prompts=args.max_prompts)
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
    print_baselines(ev, console)
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
    write_and_report_figures(figs, out, console, start, results_line=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
