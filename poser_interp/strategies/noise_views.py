"""Plain views of a hooked model for S2's fast path: the same weights, without the bridge's hook points.

`suffix_view` runs only decoder layers L.. on a given residual (`inputs_embeds`); `LastPosition` holds what the
last-position fast path reuses (the clean keys and values of all other positions). Nothing of the bridge is
modified: a view shares parameters and owns its module and hook dicts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.shared_prefix import repeated_cache


@dataclass
class LastPosition:
    """What the last-position fast path reuses: the clean residual entering the layer at the last position,
    and the clean keys / values of all other positions. Slicing selects prompts (rows)."""

    resid: Float[Tensor, "batch 1 d_model"]
    cache: Any

    def __getitem__(self, rows: slice) -> LastPosition:
        cache = copy.deepcopy(self.cache)
        cache.batch_select_indices(torch.arange(self.resid.shape[0], device=self.resid.device)[rows])
        return LastPosition(self.resid[rows], cache)

    def repeated_cache(self, reps: int) -> Any:
        """A fresh copy with each row `reps` times (the forward appends to the cache it is given)."""
        return repeated_cache(self.cache, reps)


_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def plain_view(module: torch.nn.Module, config: Any) -> torch.nn.Module:
    """The module tree with each TL bridge component replaced by the module it wraps (`original_component`).

    Parameters and buffers are shared (no weights are copied); every module is a shallow copy with its own
    child and hook dicts, so changing the view's structure or hooks leaves the original untouched. `config` replaces the
    config of every module that has one (e.g. to pick the attention implementation).
    """
    inner = getattr(module, "original_component", None)
    mod = inner if isinstance(inner, torch.nn.Module) else module
    clone = copy.copy(mod)
    clone._modules = {k: None if v is None else plain_view(v, config) for k, v in mod._modules.items()}
    for name in _HOOK_DICTS:  # own hook dicts: a hook registered on the view never lands on the original
        if isinstance(getattr(mod, name, None), dict):
            setattr(clone, name, type(getattr(mod, name))(getattr(mod, name)))
    if hasattr(clone, "config") and type(clone.config) is type(config):
        clone.config = config
    return clone


def suffix_view(hf_model: Any, layer: int, attention: str = "sdpa") -> Any:
    """A plain view of a Hugging Face causal LM that runs only decoder layers `layer`.. on `inputs_embeds`."""
    config = copy.copy(hf_model.config)
    config._attn_implementation = attention
    view = plain_view(hf_model, config)
    stack = getattr(view, getattr(view, "base_model_prefix", "model"))
    stack.layers = torch.nn.ModuleList(list(stack.layers)[layer:])
    return view
