"""Residual-stream interventions as hook factories.

Each factory returns a TL hook function; the caller (scoring, the runner) decides when it is
active. The same intervention is available on the nnsight backend (`NNsightModel`), and tests
check both give equal numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxtyping import Float
from torch import Tensor

HookFn = Callable[..., Tensor]


def add_vector(vector: Float[Tensor, " d_model"], scale: float = 1.0) -> HookFn:
    """Hook adding `scale * vector` to the activation at every position.

    Padding positions are changed too; they are masked out of attention, so only real tokens matter.
    """

    def hook(act: Float[Tensor, "batch pos d_model"], hook: Any = None) -> Tensor:
        return act + scale * vector.to(act.dtype)

    return hook
