"""Figures of the sweeps of S6 (attention), S1 (steering) and S3 (learning speed), from stored results only.

Settings are points of a grid (variant x layer x head, layer x alpha, method x steps); these draw one metric
over two of a grid's axes (heatmaps), along one axis (lines, one per value of another), or the per-model
values behind them (fakers red, aligned models blue). Each returns a `plotly.graph_objects.Figure`, never shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..evaluation.results import ResultsStore
from ..evaluation.runner import Evaluation, Result
from .plots import KIND_COLORS

Where = Mapping[str, Any]


def _matches(setting: Any, where: Where | None) -> bool:
    """Whether a setting has each named value (a tuple lists the accepted values; None = not in the setting)."""
    return all(setting.get(k) in v if isinstance(v, tuple) else setting.get(k) == v for k, v in (where or {}).items())


def nothing_to_draw(title: str, why: str) -> go.Figure:
    """A figure that says in words that it has nothing to draw, and why (never an empty pair of axes)."""
    fig = go.Figure()
    fig.add_annotation(text=f"nothing to draw: {why}", x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14))
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=220)
    return fig


def _none_stored(strategy: str, where: Where | None) -> str:
    return (f"no stored {strategy} result" + (f" with {_where(where)}" if where else "") + " (a --quick run computes "
            "only each strategy's chosen setting; a run without --quick on the same results adds the sweep)")


def _axis(values: Sequence[Any]) -> list[Any]:
    """Distinct values in a readable order: numbers ascending, then text (e.g. head 'mean' last)."""
    uniq = list(dict.fromkeys(values))
    return sorted(uniq, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))


def _pick(ev: Evaluation, strategy: str, score: str | None, where: Where | None) -> list[Result]:
    score = score or ev.primary(strategy).score
    return [r for r in ev.find(strategy, score) if _matches(r.setting, where)]


def setting_heatmap(ev: Evaluation, strategy: str, x: str, y: str, score: str | None = None,
                    where: Where | None = None, metric: str = "accuracy") -> go.Figure:
    """`metric` ('accuracy' over pairs or 'auroc' over models) over two setting axes, e.g. head x layer.

    Cells are coloured around chance (0.5, white); a cell without a result is blank. Picking the best cell
    on the pairs it is evaluated on is optimistic: report the strategy's primary setting.
    """
    results = [r for r in _pick(ev, strategy, score, where) if r.setting.get(x) is not None
               and r.setting.get(y) is not None]
    if not results:
        return nothing_to_draw(f"{strategy}: {metric} by {y} x {x}", _none_stored(strategy, where))
    xs, ys = _axis([r.setting.get(x) for r in results]), _axis([r.setting.get(y) for r in results])
    z = np.full((len(ys), len(xs)), np.nan)
    for r in results:
        z[ys.index(r.setting.get(y)), xs.index(r.setting.get(x))] = getattr(r.summary, metric)
    text = [["" if math.isnan(v) else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=[str(v) for v in xs], y=[str(v) for v in ys], zmin=0, zmax=1, zmid=0.5,
                               colorscale="RdBu_r", text=text, texttemplate="%{text}", colorbar_title=metric))
    label = results[0].score if results else score
    fig.update_layout(title=f"{strategy} {label}: {metric} by {y} x {x}" + (f" ({_where(where)})" if where else ""),
                      xaxis_title=x, yaxis_title=y)
    return fig


def setting_lines(ev: Evaluation, strategy: str, x: str, group: str | None = None, score: str | None = None,
                  where: Where | None = None) -> go.Figure:
    """Accuracy over pairs (95% bootstrap CI) along one setting axis, one line per value of `group`."""
    results = [r for r in _pick(ev, strategy, score, where) if r.setting.get(x) is not None]
    if not results:
        return nothing_to_draw(f"{strategy}: accuracy by {x}", _none_stored(strategy, where))
    fig = go.Figure()
    for g in _axis([r.setting.get(group) if group else None for r in results]):
        rs = sorted((r for r in results if (r.setting.get(group) if group else None) == g),
                    key=lambda r: r.setting.get(x))
        acc = [r.summary.accuracy for r in rs]
        up = [0.0 if math.isnan(a) else r.summary.accuracy_ci[1] - a for a, r in zip(acc, rs, strict=True)]
        down = [0.0 if math.isnan(a) else a - r.summary.accuracy_ci[0] for a, r in zip(acc, rs, strict=True)]
        fig.add_trace(go.Scatter(x=[r.setting.get(x) for r in rs], y=acc, mode="lines+markers",
                                 name=f"{group}={g}" if group else "accuracy",
                                 error_y=dict(type="data", array=up, arrayminus=down)))
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey")
    fig.update_layout(title=f"{strategy}: accuracy by {x}" + (f" ({_where(where)})" if where else "") +
                      " (95% bootstrap CI; dotted: chance)", xaxis_title=x, yaxis_title="accuracy",
                      yaxis_range=[-0.05, 1.05])
    return fig


def _model_prompts(store: ResultsStore, pair_ids: Sequence[str] | None) -> dict[str, list[str]]:
    """Each model's prompts in the selected pairs (a model's values are averaged over these only)."""
    pairs = store.manifest.get("pairs", {})
    out: dict[str, set[str]] = {}
    for p in pair_ids if pair_ids is not None else sorted(pairs):
        for k in ("aligned", "faker"):
            out.setdefault(pairs[p][k], set()).update(pairs[p]["prompt_ids"])
    return {m: sorted(s) for m, s in out.items()}


def model_means(store: ResultsStore, strategy: str, value: str, where: Where | None = None,
                pair_ids: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """model id -> setting key -> mean of one stored value over the model's prompts in the selected pairs."""
    prompts = _model_prompts(store, pair_ids)
    out: dict[str, dict[str, float]] = {}
    for r in store.rows(strategy):
        if r.model in prompts and _matches(r.values.setting, where) and value in r.values.values:
            ids = [p for p in prompts[r.model] if p in set(r.values.prompt_ids)]
            out.setdefault(r.model, {})[r.values.setting.key] = float(np.mean(r.values.subset(ids)[value])) \
                if ids else math.nan
    return out


def kind_difference_heatmap(store: ResultsStore, strategy: str, value: str, x: str, y: str,
                            where: Where | None = None, pair_ids: Sequence[str] | None = None) -> go.Figure:
    """Mean of a value over fakers minus over aligned models, per cell of two setting axes (e.g. head x layer)."""
    kinds = {m: e["kind"] for m, e in store.manifest["testbed"]["models"].items()}
    means = model_means(store, strategy, value, where, pair_ids)
    settings = {r.values.setting.key: r.values.setting for r in store.rows(strategy)
                if _matches(r.values.setting, where) and r.values.setting.get(x) is not None
                and r.values.setting.get(y) is not None}
    xs = _axis([s.get(x) for s in settings.values()])
    ys = _axis([s.get(y) for s in settings.values()])
    z = np.full((len(ys), len(xs)), np.nan)
    for key, s in settings.items():
        by_kind = {k: [v[key] for m, v in means.items() if kinds.get(m) == k and key in v] for k in KIND_COLORS}
        if by_kind["faker"] and by_kind["aligned"]:
            z[ys.index(s.get(y)), xs.index(s.get(x))] = np.nanmean(by_kind["faker"]) - np.nanmean(by_kind["aligned"])
    fig = go.Figure(go.Heatmap(z=z, x=[str(v) for v in xs], y=[str(v) for v in ys], zmid=0, colorscale="RdBu_r",
                               colorbar_title="faker - aligned"))
    fig.update_layout(title=f"{strategy}: mean {value}, fakers minus aligned models" +
                      (f" ({_where(where)})" if where else ""), xaxis_title=x, yaxis_title=y)
    return fig


def model_curves(store: ResultsStore, strategy: str, x: str, value: str, start: str | None = None,
                 where: Where | None = None, pair_ids: Sequence[str] | None = None) -> go.Figure:
    """Per-model mean of `value` along a setting axis (e.g. P(misaligned) after k steps), coloured by kind.

    start: a value giving the point at x = 0 (e.g. 'p_before', the model before any training step).
    """
    kinds = {m: e["kind"] for m, e in store.manifest["testbed"]["models"].items()}
    settings = {r.values.setting.key: r.values.setting for r in store.rows(strategy) if _matches(r.values.setting,
                                                                                                 where)}
    means = model_means(store, strategy, value, where, pair_ids)
    starts = model_means(store, strategy, start, where, pair_ids) if start else {}
    fig, shown = go.Figure(), set()
    for model in sorted(means):
        pts = sorted((settings[k].get(x), v) for k, v in means[model].items())
        if start and starts.get(model):
            pts = [(0, next(iter(starts[model].values())))] + pts
        kind = kinds.get(model, "aligned")
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=kind,
                                 legendgroup=kind, showlegend=kind not in shown, line_color=KIND_COLORS.get(kind),
                                 hovertext=model))
        shown.add(kind)
    fig.update_layout(title=f"{strategy}: mean {value} per model by {x}" + (f" ({_where(where)})" if where else ""),
                      xaxis_title=x, yaxis_title=value)
    return fig


def _where(where: Where | None) -> str:
    """'head=mean' for {'head': ('mean', None)}: the accepted values in words (None: the setting has no such key)."""
    def text(v: Any) -> str:
        return " or ".join(str(x) for x in v if x is not None) if isinstance(v, tuple) else str(v)
    return ", ".join(f"{k}={text(v)}" for k, v in (where or {}).items())
