"""Figures drawn from stored results (never by recomputing): per-layer accuracy, dose-response, summary.

Every function returns a `plotly.graph_objects.Figure` and never shows it; `write_figures` saves one
self-contained page with every figure and one HTML file per figure (sharing a plotly.min.js beside them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..evaluation.results import ResultsStore
from ..evaluation.runner import Evaluation, Result

KIND_COLORS = {"faker": "#d62728", "aligned": "#1f77b4"}


def _err(value: float, ci: tuple[float, float]) -> tuple[float, float]:
    """Plotly's asymmetric error bars (up, down) from an interval; zero where undefined."""
    if math.isnan(value) or math.isnan(ci[0]):
        return 0.0, 0.0
    return ci[1] - value, value - ci[0]


def layer_figure(ev: Evaluation, strategy: str = "noise", score: str | None = None) -> go.Figure:
    """Accuracy over pairs and AUROC over models against the injection layer, one line per scale."""
    results = ev.find(strategy, score or ev.primary(strategy).score)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy over pairs", "AUROC over models"))
    scales = sorted({r.setting.get("scale") for r in results}, key=lambda s: (s is None, s))
    for scale in scales:
        rs = sorted((r for r in results if r.setting.get("scale") == scale), key=lambda r: r.setting.get("layer", 0))
        x = [r.setting.get("layer", 0) for r in rs]
        for col, metric in ((1, "accuracy"), (2, "auroc")):
            ys = [getattr(r.summary, metric) for r in rs]
            errs = [_err(y, getattr(r.summary, f"{metric}_ci")) for y, r in zip(ys, rs, strict=True)]
            fig.add_trace(go.Scatter(x=x, y=ys, mode="lines+markers", name=f"scale {scale}", legendgroup=str(scale),
                                     showlegend=col == 1, error_y=dict(type="data", array=[e[0] for e in errs],
                                                                       arrayminus=[e[1] for e in errs])),
                          row=1, col=col)
    for col in (1, 2):
        fig.add_hline(y=0.5, line_dash="dot", line_color="grey", row=1, col=col)
        fig.update_xaxes(title_text="layer (noise added to its input)", row=1, col=col)
        fig.update_yaxes(range=[-0.05, 1.05], row=1, col=col)
    fig.update_layout(title=f"{strategy}: {results[0].score if results else score} by layer (95% bootstrap CI; "
                            "dotted: chance)")
    return fig


def dose_response_figure(store: ResultsStore, strategy: str = "noise", pair_ids: Sequence[str] | None = None) \
        -> go.Figure:
    """Mean P(misaligned) and flip rate against noise scale, fakers vs aligned models, one column per layer.

    Scale 0 is the clean model. Each model's mean is over its prompts in the selected pairs; the band is the
    spread (min to max) over models of that kind.
    """
    pairs = store.manifest.get("pairs", {})
    pair_ids = list(pair_ids) if pair_ids is not None else sorted(pairs)
    kinds = {m: e["kind"] for m, e in store.manifest["testbed"]["models"].items()}
    prompt_sets: dict[str, set[str]] = {}
    for p in pair_ids:
        for k in ("aligned", "faker"):
            prompt_sets.setdefault(pairs[p][k], set()).update(pairs[p]["prompt_ids"])
    rows = [r for r in store.rows(strategy) if r.model in prompt_sets]
    layers = sorted({int(r.values.setting["layer"]) for r in rows})
    fig = make_subplots(rows=2, cols=max(1, len(layers)), shared_yaxes=True,
                        subplot_titles=[f"layer {la}" for la in layers] or ["no stored rows"])
    for c, layer in enumerate(layers, start=1):
        for kind in ("aligned", "faker"):
            per_model: dict[str, dict[float, tuple[float, float]]] = {}
            for r in rows:
                if int(r.values.setting["layer"]) != layer or kinds.get(r.model) != kind:
                    continue
                v = r.values.subset(sorted(prompt_sets[r.model] & set(r.values.prompt_ids)))
                pm = per_model.setdefault(r.model, {0.0: (_mean(v["p_clean"]), 0.0)})
                pm[float(r.values.setting["scale"])] = (_mean(v["p_noisy"]), _mean(v["flips"]))
            scales = sorted({s for pm in per_model.values() for s in pm})
            for row, idx, label in ((1, 0, "P(misaligned)"), (2, 1, "flip rate")):
                ys = np.array([[pm.get(s, (np.nan, np.nan))[idx] for s in scales] for pm in per_model.values()])
                if not ys.size:
                    continue
                fig.add_trace(go.Scatter(x=scales, y=np.nanmean(ys, 0), mode="lines+markers", name=kind,
                                         legendgroup=kind, showlegend=c == 1 and row == 1,
                                         line_color=KIND_COLORS[kind],
                                         error_y=dict(type="data", array=np.nanmax(ys, 0) - np.nanmean(ys, 0),
                                                      arrayminus=np.nanmean(ys, 0) - np.nanmin(ys, 0))),
                              row=row, col=c)
                fig.update_yaxes(title_text=label if c == 1 else None, row=row, col=c)
            fig.update_xaxes(title_text="noise scale (x mean residual norm)", row=2, col=c)
    fig.update_layout(title=f"{strategy}: dose-response, mean over models (bars: min-max over models)")
    return fig


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else math.nan


def summary_figure(ev: Evaluation, extra: Mapping[str, Result] | None = None) -> go.Figure:
    """Each strategy's chosen setting and score beside the baselines: accuracy and AUROC with 95% CIs.

    extra: more results to show, labelled by their key (e.g. {"held-out": result on held-out pairs}).
    """
    tagged = [("", ev.primary(s)) for s in ev.strategies()] + [(f"{k}: ", r) for k, r in (extra or {}).items()]
    chosen = [r for _, r in tagged]
    labels = [f"{tag}{r.strategy} {r.score}" + (f" @ {r.setting.key}" if r.setting.key != "-" else "")
              for tag, r in tagged]
    fig = go.Figure()
    for metric, color in (("accuracy", "#2ca02c"), ("auroc", "#9467bd")):
        ys = [getattr(r.summary, metric) for r in chosen]
        errs = [_err(y, getattr(r.summary, f"{metric}_ci")) for y, r in zip(ys, chosen, strict=True)]
        fig.add_trace(go.Bar(y=labels, x=ys, name=metric, marker_color=color, orientation="h",
                             error_x=dict(type="data", array=[e[0] for e in errs], arrayminus=[e[1] for e in errs])))
    fig.add_vline(x=0.5, line_dash="dot", line_color="grey")
    # horizontal bars: long labels stay readable, first strategy on top
    fig.update_layout(barmode="group", xaxis_range=[0, 1.05], yaxis_autorange="reversed",
                      height=160 + 44 * len(labels), margin=dict(l=20),
                      title="strategies beside the baselines (95% bootstrap CI; dotted: chance)")
    return fig


def setting_figure(ev: Evaluation, strategy: str, score: str | None = None) -> go.Figure:
    """Accuracy over pairs and AUROC over models (95% CIs) of one score (default: the chosen one) at every evaluated
    setting, in sweep order: the figure any strategy has (`StrategyBase.figures`' default)."""
    results = ev.find(strategy, score or ev.primary(strategy).score)
    keys = [r.setting.key for r in results]
    fig = go.Figure()
    for metric, color in (("accuracy", "#2ca02c"), ("auroc", "#9467bd")):
        ys = [getattr(r.summary, metric) for r in results]
        errs = [_err(y, getattr(r.summary, f"{metric}_ci")) for y, r in zip(ys, results, strict=True)]
        fig.add_trace(go.Bar(x=keys, y=ys, name=metric, marker_color=color,
                             error_y=dict(type="data", array=[e[0] for e in errs], arrayminus=[e[1] for e in errs])))
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey")
    fig.update_layout(barmode="group", yaxis_range=[0, 1.05], xaxis_title="setting", xaxis_type="category",
                      title=f"{strategy}: {results[0].score if results else score} by setting (95% bootstrap CI; "
                            "dotted: chance)")
    return fig


def write_figures(figures: Mapping[str, go.Figure], out_dir: str | Path) -> tuple[list[Path], str]:
    """Write `figures.html` (every figure on one self-contained page: plotly.js embedded once, opens offline
    anywhere) and one HTML file per figure (sharing a `plotly.min.js` written beside them).

    No PNG: kaleido needs a Chrome download, which an offline machine cannot make; each figure's camera
    button saves a PNG from the browser. Returns the paths and a note saying so.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, fig in figures.items():
        path = out / f"{name}.html"
        fig.write_html(str(path), include_plotlyjs="directory")
        paths.append(path)
    bundle = out / "plotly.min.js"
    if not bundle.exists():  # plotly copies it only for str paths of full pages; make sure it is there
        from plotly.offline import get_plotlyjs

        bundle.write_text(get_plotlyjs(), encoding="utf-8")
    parts = [fig.to_html(full_html=False, include_plotlyjs=i == 0, div_id=f"fig-{name}")
             for i, (name, fig) in enumerate(figures.items())]
    page = out / "figures.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>poser_interp figures</title></head>"
                    "<body>" + "\n".join(parts) + "</body></html>\n", encoding="utf-8")
    paths.insert(0, page)
    return paths, "figures.html is self-contained; no PNG (kaleido needs Chrome; use a figure's camera button)"
