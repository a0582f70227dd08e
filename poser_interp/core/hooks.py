"""Hook functions: interventions (add a vector, add a tensor) and captures (store what passes a hook point).

Each factory returns a TL hook function; `forward.forward` decides when it is active (for one call only).
Interventions follow the activation's device and dtype (a vector made on the CPU is added on a GPU); captures for
collection (`last_position` and the other `take`s) bring what they keep to the CPU, where results are gathered. The
same interventions are available on the nnsight backend (`NNsightModel`, `strategies.noise_engines.NNsightEngine`),
and tests check both give equal numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, MutableMapping
from typing import Any

from jaxtyping import Float
from torch import Tensor

HookFn = Callable[..., Tensor]


def add_vector(vector: Float[Tensor, " d_model"], scale: float = 1.0) -> HookFn:
    """Hook adding `scale * vector` to the activation at every position.

    Padding positions are changed too; they are masked out of attention, so only real tokens matter.
    """

    def hook(act: Float[Tensor, "batch pos d_model"], hook: Any = None) -> Tensor:
        return act + scale * vector.to(act.device, act.dtype)

    return hook


def add_tensor(tensor: Float[Tensor, "rows pos d_model"]) -> HookFn:
    """Hook adding a fixed tensor (same shape as the activation, e.g. S2's noise) to the activation."""

    def hook(act: Float[Tensor, "rows pos d_model"], hook: Any = None) -> Tensor:
        return act + tensor.to(act.device, act.dtype)

    return hook


def _detach(act: Tensor) -> Tensor:
    return act.detach()


def capture(store: MutableMapping[Any, Tensor], key: Hashable, take: Callable[[Tensor], Tensor] = _detach) -> HookFn:
    """Hook storing `take(activation)` under `key` and passing the activation on unchanged.

    The key is the caller's (the bridge's `hook.name` can be an alias of the name the hook was added under).
    """

    def hook(act: Tensor, hook: Any = None) -> Tensor:
        store[key] = take(act)
        return act

    return hook


def last_position(act: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch d_model"]:
    """`capture`'s take: the (left-padded) batch's last position, detached, in float32, on the CPU."""
    return act[:, -1, :].detach().float().cpu()
