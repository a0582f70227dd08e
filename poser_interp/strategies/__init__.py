"""Detection strategies: each computes per-prompt values per setting; the runner decides pairs from them.

`make("noise", layers=(4,))` builds a strategy by name; `known()` lists the names. Importing this package
registers the built-in strategies (S2 noise injection and the two baselines).
"""

from ..core.engines import BridgeEngine as BridgeEngine
from ..core.engines import NNsightEngine as NNsightEngine
from .base import PromptValues as PromptValues
from .base import Score as Score
from .base import Setting as Setting
from .base import Strategy as Strategy
from .base import StrategyError as StrategyError
from .base import Subject as Subject
from .base import from_config as from_config
from .base import has_option as has_option
from .base import known as known
from .base import make as make
from .base import register as register
from .baselines import ConfidenceBaseline as ConfidenceBaseline
from .baselines import ConfidenceConfig as ConfidenceConfig
from .baselines import RandomBaseline as RandomBaseline
from .baselines import RandomConfig as RandomConfig
from .noise import NoiseConfig as NoiseConfig
from .noise import NoiseStrategy as NoiseStrategy
from .noise import noise_values as noise_values

BASELINES = ("random", "blackbox")
"""Reported beside every strategy."""

__all__ = [
    "BASELINES", "ConfidenceBaseline", "ConfidenceConfig", "NNsightEngine", "BridgeEngine", "NoiseConfig",
    "NoiseStrategy", "PromptValues", "RandomBaseline", "RandomConfig", "Score", "Setting", "Strategy",
    "StrategyError", "Subject", "from_config", "known", "make", "noise_values", "register",
]

# S6 attentiveness, S1 belief steering, S3 learning speed, S5 decision speed (lens), S4 concept probes
# (registered on import)
from . import attention as attention  # noqa: E402
from . import learning_speed as learning_speed  # noqa: E402
from . import lens as lens  # noqa: E402
from . import probes as probes  # noqa: E402
from . import steering as steering  # noqa: E402
