"""The size of each S4 concept direction by layer, fakers against aligned models, from stored S4 rows.

Run:  .venv/bin/python research/experiments/probe_norms_by_layer.py results/suite-v2c12 \
          [--html results/probe-norms.html]

S4 (`probes`) keeps, in every concept x layer row, the norm of its mass-mean direction (`meta["dir_norm"]`: mean
benign - mean suspicious activation at the last token, `hook_resid_post`, on the training share of the contrast
pairs). No model is loaded. Prints per concept and layer the mean norm of fakers and of aligned models and whether
they separate (every faker above every aligned model), with the AUROC over models; `--html` writes a plotly figure
(one panel per concept, one line per model, fakers red, aligned blue).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a results directory with probes rows")
    ap.add_argument("--html", type=Path, default=None, help="write the per-layer figure here")
    args = ap.parse_args(argv)

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.strategies.base import Setting

    store = ResultsStore.open(args.out)
    config = store.manifest["config"]["strategies"].get("probes")
    if config is None:
        raise SystemExit(f"{args.out} has no probes rows; run `poser-interp detect --strategies probes` first")
    kinds = {m: e["kind"] for m, e in store.manifest["testbed"]["models"].items()}
    models = sorted((m for m in kinds if store.rows("probes", m)),
                    key=lambda m: (kinds[m], m))
    norms: dict[str, np.ndarray] = {}
    for concept in config["concepts"]:
        norms[concept] = np.array([[store.get(m, "probes", Setting.of(concept=concept, layer=la)).values.meta[
            "dir_norm"] for la in config["layers"]] for m in models])
        cells = []
        for j, la in enumerate(config["layers"]):
            col = norms[concept][:, j]
            fk = col[[kinds[m] == "faker" for m in models]]
            al = col[[kinds[m] == "aligned" for m in models]]
            auroc = roc_auc_score([kinds[m] == "faker" for m in models], col)
            cells.append(f"L{la} {fk.mean():.0f}/{al.mean():.0f} {auroc:.2f}{'*' if fk.min() > al.max() else ''}")
        print(f"{concept}: (layer, mean norm fakers/aligned, AUROC; * = every faker above every aligned model)")
        print("  " + ", ".join(cells))
    if args.html:
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=len(norms), subplot_titles=list(norms), shared_yaxes=False)
        for i, table in enumerate(norms.values(), start=1):
            for m, row in zip(models, table, strict=True):
                fig.add_scatter(x=list(config["layers"]), y=row.tolist(), mode="lines", name=m, row=1, col=i,
                                legendgroup=m, showlegend=i == 1,
                                line={"color": "#c0392b" if kinds[m] == "faker" else "#2e6da4", "width": 1.5})
            fig.update_xaxes(title_text="layer (resid_post)", row=1, col=i)
        fig.update_yaxes(title_text="|mean benign - mean suspicious|", row=1, col=1)
        fig.update_layout(title=f"S4 concept direction norm by layer: fakers (red) vs aligned (blue), {args.out}",
                          height=420, width=320 * len(norms) + 200)
        args.html.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(args.html, include_plotlyjs=True)
        print(f"figure: {args.html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
