"""`detect`'s figures of a results store: the summary, and each strategy's own figures drawn with the kit.

Above `kit` (which gathers `plots`' functions with the others), so no module of `viz` imports one that imports it.
"""

from __future__ import annotations

import plotly.graph_objects as go

from ..evaluation.results import ResultsStore
from ..evaluation.runner import Evaluation
from ..strategies.base import figures_of
from ..strategies.registry import from_config, is_baseline
from . import kit
from .plots import summary_figure


def detect_figures(ev: Evaluation, store: ResultsStore) -> dict[str, go.Figure]:
    """`detect`'s figures: the summary, and each strategy's own figures (`StrategyBase.figures`; baselines none)."""
    figs = {"summary": summary_figure(ev)}
    configs = store.manifest["config"]["strategies"]
    for name in ev.strategies():
        if not is_baseline(name):
            figs |= figures_of(from_config(name, configs[name]), ev, store, kit)
    return figs
