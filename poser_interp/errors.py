"""Errors raised at the toolkit's boundary.

Every error names what was wrong and what to do about it, so that users never have to read a
traceback from deep inside transformers, TransformerLens or nnsight (STYLE.md, habit 12).
"""

from __future__ import annotations


class PoserInterpError(Exception):
    """Base class: catch this to handle any error the toolkit raises on purpose."""


class DataError(PoserInterpError, ValueError):
    """A data file is missing, unreadable, malformed or empty."""


class ModelLoadError(PoserInterpError, ValueError):
    """A model name, directory or adapter cannot be loaded."""


class AdapterMismatchError(ModelLoadError):
    """A LoRA adapter does not fit the base model it is merged into."""


class LayerError(PoserInterpError, IndexError):
    """A layer index (or hook name) does not exist in the model."""


class PromptTooLongError(PoserInterpError, ValueError):
    """A prompt is longer than the configured token cap."""


class AnswerChoiceError(PoserInterpError, ValueError):
    """A scenario's two answer choices do not map to two distinct tokens."""


class BackendError(PoserInterpError, RuntimeError):
    """A backend (e.g. nnsight, NDIF remote execution) failed; the message says why."""


class StrategyError(PoserInterpError, ValueError):
    """An unknown strategy, or a strategy option that cannot work."""


class NotApplicableError(StrategyError):
    """A strategy has nothing to measure on these prompts (they lack what it reads, e.g. S6 on prompts without
    `critical` facts). `detect` stops on it; `suite` leaves the strategy out with a line on its page."""
