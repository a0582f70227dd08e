"""Detection strategies: each computes per-prompt values per setting; the runner decides pairs from them.

`build("noise", n_layers, n_heads, scales=(1.0,))` builds a strategy by name for a model's shape (the registry is
the only way in); `make` takes exact options; `known()` lists the names and `options(name)` their config fields.
Importing this package registers every built-in strategy.
"""

from .base import PromptValues as PromptValues
from .base import Score as Score
from .base import Setting as Setting
from .base import Strategy as Strategy
from .base import StrategyError as StrategyError
from .base import Subject as Subject
from .baselines import ConfidenceBaseline as ConfidenceBaseline
from .baselines import ConfidenceConfig as ConfidenceConfig
from .baselines import RandomBaseline as RandomBaseline
from .baselines import RandomConfig as RandomConfig
from .baselines import WeightDeltaBaseline as WeightDeltaBaseline
from .noise import NoiseConfig as NoiseConfig
from .noise import NoiseStrategy as NoiseStrategy
from .noise import noise_values as noise_values
from .noise_engines import BridgeEngine as BridgeEngine
from .noise_engines import NNsightEngine as NNsightEngine
from .registry import baseline_names as baseline_names
from .registry import build as build
from .registry import from_config as from_config
from .registry import has_option as has_option
from .registry import known as known
from .registry import make as make
from .registry import options as options
from .registry import register as register

__all__ = [
    "baseline_names", "ConfidenceBaseline", "ConfidenceConfig", "NNsightEngine", "BridgeEngine", "NoiseConfig",
    "NoiseStrategy", "PromptValues", "RandomBaseline", "RandomConfig", "Score", "Setting", "Strategy",
    "StrategyError", "Subject", "build", "from_config", "known", "make", "noise_values", "options", "register",
]

# S6 attentiveness, S1 belief steering, S3 learning speed, S5 decision speed (lens), S4 concept probes
# (registered on import)
from . import attention as attention  # noqa: E402
from . import concept_size as concept_size  # noqa: E402
from . import learning_speed as learning_speed  # noqa: E402
from . import lens as lens  # noqa: E402
from . import probes as probes  # noqa: E402
from . import steering as steering  # noqa: E402
