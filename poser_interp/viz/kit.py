"""The figure kit: every figure function a strategy may draw its own figures with.

`StrategyBase.figures(ev, store, kit)` and `suite_section` receive this module as `kit` from the presentation layer
(the suite page, `detect`'s figure writing), so that strategies draw with these functions without importing the
presentation layer. Each function returns a `plotly.graph_objects.Figure` drawn from stored results only.
"""

from __future__ import annotations

from .attention_plots import kind_difference_heatmap as kind_difference_heatmap
from .attention_plots import model_curves as model_curves
from .attention_plots import setting_heatmap as setting_heatmap
from .attention_plots import setting_lines as setting_lines
from .lens_plots import lens_curves as lens_curves
from .lens_plots import probe_layer_figure as probe_layer_figure
from .plots import dose_response_figure as dose_response_figure
from .plots import layer_figure as layer_figure
from .plots import setting_figure as setting_figure
from .plots import summary_figure as summary_figure

__all__ = ["dose_response_figure", "kind_difference_heatmap", "layer_figure", "lens_curves", "model_curves",
           "probe_layer_figure", "setting_figure", "setting_heatmap", "setting_lines", "summary_figure"]
