"""Per-layer figures of S4 (concept probes) and S5 (decision speed), drawn from stored results only.

Every function returns a `plotly.graph_objects.Figure` and never shows it. Model kinds come from the results
manifest; the strategies themselves never saw them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import DataError
from ..evaluation.results import ResultsStore
from ..evaluation.runner import Evaluation
from ..strategies.base import PromptValues
from ..strategies.lens import per_layer

KINDS = ("aligned", "faker")


def _layers(ev: Evaluation, strategy: str, concept: str) -> list[int]:
    return sorted({int(r.setting["layer"]) for r in ev.find(strategy) if r.setting.get("concept") == concept
                   and r.setting.get("layer") != "best"})


def probe_layer_figure(ev: Evaluation, store: ResultsStore, score: str | None = None,
                       concepts: Sequence[str] | None = None, strategy: str = "probes") -> go.Figure:
    """By layer, one line per concept: held-out probe accuracy (mean over models), score gap (faker - aligned,
    mean over pairs) and accuracy over pairs. The probe accuracy is what the best layer is chosen by."""
    score = score or ev.primary(strategy).score
    concepts = list(concepts) if concepts is not None else sorted(
        {str(r.setting["concept"]) for r in ev.find(strategy) if r.setting["concept"] != "all"})
    if not concepts:
        from .attention_plots import nothing_to_draw

        return nothing_to_draw(f"{strategy}: concept probes by layer", f"no stored per-concept {strategy} result")
    colors = plotly.colors.qualitative.Plotly
    fig = make_subplots(rows=1, cols=3, subplot_titles=("held-out probe accuracy (mean over models)",
                                                        f"score gap, faker - aligned ({score})",
                                                        "accuracy over pairs"))
    for i, concept in enumerate(concepts):
        color = colors[i % len(colors)]  # one colour per concept in all three panels, as its legend entry shows
        layers = _layers(ev, strategy, concept)
        acc, gap, pair_acc = [], [], []
        for layer in layers:
            rows = [r for r in store.rows(strategy) if r.values.setting.key == f"concept={concept},layer={layer}"]
            acc.append(float(np.mean([r.values.meta["probe_acc"] for r in rows])) if rows else math.nan)
            (res,) = [r for r in ev.find(strategy, score) if r.setting.get("concept") == concept
                      and r.setting.get("layer") == layer]
            gaps = [f - a for a, f in res.pair_scores.values()]
            gap.append(float(np.nanmean(gaps)) if gaps and not np.isnan(gaps).all() else math.nan)
            pair_acc.append(res.summary.accuracy)
        for col, ys in ((1, acc), (2, gap), (3, pair_acc)):
            fig.add_trace(go.Scatter(x=layers, y=ys, mode="lines+markers", name=concept, legendgroup=concept,
                                     line=dict(color=color), marker=dict(color=color), showlegend=col == 1),
                          row=1, col=col)
    for col in (1, 3):
        fig.add_hline(y=0.5, line_dash="dot", line_color="grey", row=1, col=col)
        fig.update_yaxes(range=[-0.05, 1.05], row=1, col=col)
    fig.add_hline(y=0.0, line_dash="dot", line_color="grey", row=1, col=2)
    fig.update_xaxes(title_text="layer (resid_post)")
    fig.update_layout(title=f"{strategy}: concept probes by layer (dotted: chance / no gap)")
    return fig


def _pair(store: ResultsStore, pair_id: str | None) -> tuple[str, dict]:
    pairs = store.manifest.get("pairs", {})
    if not pairs:
        raise DataError(f"no pairs in the results at {store.root}")
    pair_id = pair_id or sorted(pairs)[0]
    if pair_id not in pairs:
        raise DataError(f"unknown pair {pair_id!r}; stored: {sorted(pairs)[:6]}")
    return pair_id, pairs[pair_id]


def lens_heatmap(store: ResultsStore, pair_id: str | None = None, prompt_id: str | None = None,
                 strategy: str = "lens") -> go.Figure:
    """P(aligned answer) by layer and reading (logit, tuned, probe), aligned model | faker side by side: for one
    prompt (top; default the pair's first) and averaged over the pair's prompts (bottom)."""
    pair_id, pair = _pair(store, pair_id)
    rows = {f"{k}: {pair[k]}": [r.values for r in store.rows(strategy, pair[k])] for k in KINDS}
    return heatmap_figure(rows, pair["prompt_ids"], prompt_id, f"{strategy}: P(aligned answer) read at each "
                          f"layer, pair {pair_id}")


def heatmap_figure(by_model: Mapping[str, Sequence[PromptValues]], prompt_ids: Sequence[str],
                   prompt_id: str | None = None, title: str = "P(aligned answer) by layer") -> go.Figure:
    """The lens heatmap from per-prompt values: one column per model (label -> its rows, one per reading)."""
    prompt_id = prompt_id or prompt_ids[0]
    labels = list(by_model)
    fig = make_subplots(rows=2, cols=len(labels), shared_xaxes=True, vertical_spacing=0.12,
                        horizontal_spacing=0.06, subplot_titles=[f"{k}, prompt {prompt_id}" for k in labels] +
                        [f"{k}, mean over {len(prompt_ids)} prompts" for k in labels])
    for col, label in enumerate(labels, start=1):
        rows = sorted(by_model[label], key=lambda v: str(v.setting["method"]))
        if not rows:
            continue
        names = [str(v.setting["method"]) for v in rows]
        one = np.stack([per_layer(v.subset([prompt_id]))[0] for v in rows])
        mean = np.stack([per_layer(v.subset(prompt_ids)).mean(0) for v in rows])  # NaN stays NaN (a gap)
        for row, z in ((1, one), (2, mean)):
            fig.add_trace(go.Heatmap(z=z, x=list(range(z.shape[1])), y=names, zmin=0, zmax=1, colorscale="RdBu",
                                     colorbar=dict(title="P(aligned)"), showscale=row == 1 and col == len(labels)),
                          row=row, col=col)
    fig.update_xaxes(title_text="layer", row=2)
    fig.update_layout(title=title)
    return fig


def lens_curves(store: ResultsStore, method: str = "logit", strategy: str = "lens") -> go.Figure:
    """Mean P(final answer) by layer, one line per model, coloured by kind: who settles later?"""
    kinds = {m: e["kind"] for m, e in store.manifest["testbed"]["models"].items()}
    fig = go.Figure()
    for r in store.rows(strategy):
        if r.values.setting["method"] != method:
            continue
        p, fa = per_layer(r.values.values), r.values.values["final_aligned"][:, None]
        y = (fa * p + (1 - fa) * (1 - p)).mean(0)
        kind = kinds.get(r.model, "aligned")
        fig.add_trace(go.Scatter(x=list(range(len(y))), y=y, mode="lines", name=f"{r.model} ({kind})",
                                 line_color={"aligned": "#1f77b4", "faker": "#d62728"}[kind]))
    fig.update_layout(title=f"{strategy} {method}: mean P(final answer) by layer", xaxis_title="layer",
                      yaxis_title="P(final answer)", yaxis_range=[0, 1.02])
    return fig


def kl_figure(store: ResultsStore, strategy: str = "lens") -> go.Figure:
    """Held-out KL to the final distribution by layer, logit vs tuned lens (mean over models; bars: min-max)."""
    return kl_figure_from([r.values for r in store.rows(strategy) if r.values.setting["method"] == "tuned"])


def kl_figure_from(rows: Sequence[PromptValues]) -> go.Figure:
    """The KL figure from tuned-lens rows (their meta holds kl_logit_L{l} and kl_tuned_L{l})."""
    fig = go.Figure()
    for lens, dash in (("logit", "dot"), ("tuned", "solid")):
        per = [[v.meta[k] for k in sorted((k for k in v.meta if k.startswith(f"kl_{lens}_L")),
                                          key=lambda k: int(k.rsplit("L", 1)[1]))] for v in rows]
        if not per:
            continue
        a = np.array(per)
        m = a.mean(0)
        bars = dict(type="data", array=a.max(0) - m, arrayminus=m - a.min(0))
        fig.add_trace(go.Scatter(x=list(range(a.shape[1])), y=m, mode="lines+markers", name=f"{lens} lens",
                                 line_dash=dash, error_y=bars))
    fig.update_layout(title="KL(final || lens) on held-out text, by layer (lower = more faithful)",
                      xaxis_title="layer", yaxis_title="KL (nats)")
    return fig
