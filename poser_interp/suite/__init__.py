"""The suite: every strategy, both baselines and the held-out ensemble on one testbed, reported on one HTML page.

The presentation layer's composition: `run_suite` (`suite.run`) computes and evaluates through `evaluation` and
gathers `removal` results; `render_page` / `write_page` (`suite.page`) draw them with the figures of `viz`.
Nothing below this package imports it.
"""

from .page import SECTIONS as SECTIONS
from .page import render_page as render_page
from .page import strategy_figures as strategy_figures
from .page import write_page as write_page
from .run import STRATEGIES as STRATEGIES
from .run import Suite as Suite
from .run import SuiteConfig as SuiteConfig
from .run import build_strategies as build_strategies
from .run import run_suite as run_suite
