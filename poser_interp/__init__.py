"""poser_interp: catch alignment-faking language models by looking inside them.

The public surface: what notebooks and user code import (`from poser_interp import Testbed, run_detection`);
everything else may change. Names are imported on first use, so `import poser_interp` stays cheap (no torch):

- models: `load_model`, `load_hf`, `load_tokenizer`, `ModelSpec`, `HookedModel`, `shape_of`, `PromptFormat`,
  `pad_left` (token rows to a batch), the scoring helpers `answer_logits`, `answer_probs`, `p_misaligned`,
  `add_vector`, and `TunedLensConfig` (S5's tuned lens);
- data: `Scenario` and its parts, `load_scenarios` / `save_scenarios`, `load_contrast_dir`;
- testbeds: `Testbed` (`Testbed.open(dir)`), `default_testbed_dir`, `TestbedConfig`, `load_recipe` (a config from a
  recipe file, `recipes/*.toml`, or a manifest), `build_testbed`, `tiny_testbed`, and for notebooks
  `notebook_testbed` / `first_pair`;
- strategies (the registry): `build_strategy`, `make_strategy`, `known_strategies`, `strategy_options`,
  `register_strategy`, and `Strategy`, `Subject`, `Setting`, `PromptValues`, `Score`;
- detection and results: `run_detection`, `RunConfig`, `evaluate`, `Evaluation`, `Result`, `ResultsStore`;
- the suite: `run_suite`, `SuiteConfig`, `write_page`; removal: `remove`, `RemovalConfig`, `RemovalSummary`;
- errors (`PoserInterpError` and its subclasses).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .errors import AdapterMismatchError as AdapterMismatchError
from .errors import AnswerChoiceError as AnswerChoiceError
from .errors import BackendError as BackendError
from .errors import DataError as DataError
from .errors import LayerError as LayerError
from .errors import ModelLoadError as ModelLoadError
from .errors import NotApplicableError as NotApplicableError
from .errors import PoserInterpError as PoserInterpError
from .errors import PromptTooLongError as PromptTooLongError
from .errors import StrategyError as StrategyError

_LAZY: dict[str, tuple[str, str]] = {
    # public name: (module, name in that module)
    "HookedModel": ("core.models", "HookedModel"),
    "ModelSpec": ("core.models", "ModelSpec"),
    "load_hf": ("core.models", "load_hf"),
    "load_model": ("core.models", "load_model"),
    "load_tokenizer": ("core.models", "load_tokenizer"),
    "shape_of": ("core.shape", "shape_of"),
    "add_vector": ("core.hooks", "add_vector"),
    "answer_logits": ("core.scoring", "answer_logits"),
    "answer_probs": ("core.scoring", "answer_probs"),
    "p_misaligned": ("core.scoring", "p_misaligned"),
    "PromptFormat": ("core.tokens", "PromptFormat"),
    "pad_left": ("core.tokens", "pad_left"),
    "TunedLensConfig": ("core.tuned_lens", "TunedLensConfig"),
    "AnswerFormat": ("data.scenario", "AnswerFormat"),
    "Fact": ("data.scenario", "Fact"),
    "FactRole": ("data.scenario", "FactRole"),
    "Oversight": ("data.scenario", "Oversight"),
    "Scenario": ("data.scenario", "Scenario"),
    "load_scenarios": ("data.scenario_files", "load_scenarios"),
    "save_scenarios": ("data.scenario_files", "save_scenarios"),
    "load_contrast_dir": ("data.concepts", "load_contrast_dir"),
    "Testbed": ("testbed.folder", "Testbed"),
    "default_testbed_dir": ("testbed.folder", "default_testbed_dir"),
    "TestbedConfig": ("testbed.build", "TestbedConfig"),
    "load_recipe": ("testbed.recipe", "load_recipe"),
    "build_testbed": ("testbed.build", "build"),
    "tiny_testbed": ("testbed.tiny", "tiny_testbed"),
    "notebook_testbed": ("analysis", "notebook_testbed"),
    "first_pair": ("analysis", "first_pair"),
    "Strategy": ("strategies.base", "Strategy"),
    "Subject": ("strategies.base", "Subject"),
    "Setting": ("strategies.base", "Setting"),
    "PromptValues": ("strategies.base", "PromptValues"),
    "Score": ("strategies.base", "Score"),
    "build_strategy": ("strategies", "build"),
    "make_strategy": ("strategies", "make"),
    "known_strategies": ("strategies", "known"),
    "strategy_options": ("strategies", "options"),
    "register_strategy": ("strategies", "register"),
    "RunConfig": ("evaluation.runner", "RunConfig"),
    "run_detection": ("evaluation.runner", "run_detection"),
    "evaluate": ("evaluation.runner", "evaluate"),
    "Evaluation": ("evaluation.runner", "Evaluation"),
    "Result": ("evaluation.runner", "Result"),
    "ResultsStore": ("evaluation.results", "ResultsStore"),
    "SuiteConfig": ("suite", "SuiteConfig"),
    "run_suite": ("suite", "run_suite"),
    "write_page": ("suite", "write_page"),
    "RemovalConfig": ("removal", "RemovalConfig"),
    "RemovalSummary": ("removal", "RemovalSummary"),
    "remove": ("removal", "remove"),
}

__all__ = [  # every public name (tests check it is _LAZY plus the errors and the version)
    "__version__", "AdapterMismatchError", "add_vector", "answer_logits", "answer_probs", "AnswerChoiceError",
    "AnswerFormat", "BackendError", "build_strategy", "build_testbed", "DataError", "default_testbed_dir", "evaluate",
    "Evaluation", "Fact", "FactRole", "first_pair", "HookedModel", "known_strategies", "LayerError",
    "load_contrast_dir", "load_hf", "load_model", "load_recipe", "load_scenarios", "load_tokenizer", "make_strategy",
    "ModelLoadError", "ModelSpec", "NotApplicableError", "notebook_testbed", "Oversight", "p_misaligned", "pad_left",
    "PoserInterpError", "PromptFormat", "PromptTooLongError", "PromptValues", "register_strategy", "RemovalConfig",
    "RemovalSummary", "remove", "Result", "ResultsStore", "run_detection", "run_suite", "RunConfig", "save_scenarios",
    "Scenario", "Score", "Setting", "shape_of", "Strategy", "strategy_options", "StrategyError", "Subject",
    "SuiteConfig", "Testbed", "TestbedConfig", "tiny_testbed", "TunedLensConfig", "write_page",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'poser_interp' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # what the names are, for type checkers and editors (tests check it matches _LAZY)
    from .analysis import first_pair as first_pair
    from .analysis import notebook_testbed as notebook_testbed
    from .core.hooks import add_vector as add_vector
    from .core.models import HookedModel as HookedModel
    from .core.models import ModelSpec as ModelSpec
    from .core.models import load_hf as load_hf
    from .core.models import load_model as load_model
    from .core.models import load_tokenizer as load_tokenizer
    from .core.scoring import answer_logits as answer_logits
    from .core.scoring import answer_probs as answer_probs
    from .core.scoring import p_misaligned as p_misaligned
    from .core.shape import shape_of as shape_of
    from .core.tokens import PromptFormat as PromptFormat
    from .core.tokens import pad_left as pad_left
    from .core.tuned_lens import TunedLensConfig as TunedLensConfig
    from .data.concepts import load_contrast_dir as load_contrast_dir
    from .data.scenario import AnswerFormat as AnswerFormat
    from .data.scenario import Fact as Fact
    from .data.scenario import FactRole as FactRole
    from .data.scenario import Oversight as Oversight
    from .data.scenario import Scenario as Scenario
    from .data.scenario_files import load_scenarios as load_scenarios
    from .data.scenario_files import save_scenarios as save_scenarios
    from .evaluation.results import ResultsStore as ResultsStore
    from .evaluation.runner import Evaluation as Evaluation
    from .evaluation.runner import Result as Result
    from .evaluation.runner import RunConfig as RunConfig
    from .evaluation.runner import evaluate as evaluate
    from .evaluation.runner import run_detection as run_detection
    from .removal import RemovalConfig as RemovalConfig
    from .removal import RemovalSummary as RemovalSummary
    from .removal import remove as remove
    from .strategies import build as build_strategy
    from .strategies import known as known_strategies
    from .strategies import make as make_strategy
    from .strategies import options as strategy_options
    from .strategies import register as register_strategy
    from .strategies.base import PromptValues as PromptValues
    from .strategies.base import Score as Score
    from .strategies.base import Setting as Setting
    from .strategies.base import Strategy as Strategy
    from .strategies.base import Subject as Subject
    from .suite import SuiteConfig as SuiteConfig
    from .suite import run_suite as run_suite
    from .suite import write_page as write_page
    from .testbed.build import TestbedConfig as TestbedConfig
    from .testbed.build import build as build_testbed
    from .testbed.folder import Testbed as Testbed
    from .testbed.folder import default_testbed_dir as default_testbed_dir
    from .testbed.recipe import load_recipe as load_recipe
    from .testbed.tiny import tiny_testbed as tiny_testbed
