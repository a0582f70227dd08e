"""The one forward/hook layer: length-sorted batching and the bridge call with hooks.

Every forward pass of the hooked model (`HookedModel.bridge`) goes through `forward`: hooks are added for that
call only and removed in `finally` by the bridge's `hooks` context, even when a hook raises, so no hook outlives
its analysis. A model on another backend (`nnsight_model.NNsightHooked`, `backend="nnsight"`) gets the same call and
applies the same hook functions at the same sites inside one trace. Only the last position is unembedded by default
(`logits_to_keep=1`), which saves the 49k-wide unembedding at every other position; `stop_at_layer` skips the blocks
after the last hooked one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .blocks import only_blocks
from .shared_prefix import SharedPrefix, cache_keyword
from .tokens import Batch, pad_left

Hook = tuple[str, Any]
"""(hook point name, hook function)."""


def length_batches(ids: Sequence[Sequence[int]], batch_size: int, pad: int) -> Iterator[tuple[list[int], Batch]]:
    """(original indices, left-padded batch) in chunks of prompts sorted by length, so padding stays small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, pad_left([ids[i] for i in idx], pad)


def forward(model: Any, batch: Batch, hooks: Sequence[Hook] = (), *, stop_at_layer: int | None = None,
            start_at_layer: int | None = None, resid: Tensor | None = None, logits_to_keep: int | None = 1,
            grad: bool = False, prefix: SharedPrefix | None = None) -> Tensor:
    """The bridge's output on a left-padded batch with `hooks` active for this call only.

    logits_to_keep: unembed only the last N positions (None: the bridge's default). stop_at_layer: run blocks
    0..stop_at_layer-1 only (the output is then the residual). start_at_layer with `resid` (the residual entering
    that block for this batch, e.g. captured at `blocks.{k}.hook_resid_pre` of a clean pass): run blocks k.. only,
    their hooks included; the blocks below are cut for the call, not run and discarded (which the bridge's own
    `start_at_layer` does). grad: keep the autograd graph (saliency). prefix: `batch` holds the texts' own tokens
    after this shared opening, whose cached keys and values they attend to (hooks see the new tokens only).
    The batch (made on the CPU) goes to the model's device here; the output stays there.
    """
    if (start_at_layer is None) != (resid is None):
        raise ValueError("start_at_layer and resid go together")
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):  # the batch follows the model (a no-op on the CPU)
        batch = batch.to(device)
    if prefix is not None and start_at_layer is not None:
        raise ValueError("a shared prefix needs the blocks from the first one (start_at_layer goes without it)")
    if getattr(model, "backend", "tl") != "tl":  # e.g. `nnsight_model.NNsightHooked`: the same hooks in a trace
        if prefix is not None:
            raise ValueError(f"a shared prefix is a bridge cache; the {model.backend} backend runs whole texts")
        return model.run(batch, hooks, stop_at_layer=stop_at_layer, start_at_layer=start_at_layer, resid=resid,
                         logits_to_keep=logits_to_keep, grad=grad)
    kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    if prefix is not None:
        kwargs.update(prefix.call_kwargs(batch))
    if stop_at_layer is not None:
        kwargs["stop_at_layer"] = stop_at_layer
    if start_at_layer is not None:
        kwargs["start_at_layer"] = start_at_layer
    if logits_to_keep is not None:
        kwargs["logits_to_keep"] = logits_to_keep
    cut = only_blocks(model.hf_model, start_at_layer) if start_at_layer is not None else nullcontext()
    cached = cache_keyword(model) if prefix is not None else nullcontext()
    with torch.enable_grad() if grad else torch.no_grad(), model.bridge.hooks(fwd_hooks=list(hooks)), cut, cached:
        return model.bridge(batch.input_ids if resid is None else resid, **kwargs)


def last_logits(model: Any, batch: Batch, fwd_hooks: Sequence[Hook] = (), prefix: SharedPrefix | None = None) \
        -> Float[Tensor, "batch vocab"]:
    """Logits at the last position of each (left-padded) row, with hooks active for this call only."""
    return forward(model, batch, fwd_hooks, prefix=prefix)[:, -1, :]


def stop_after(model: Any, layers: Sequence[int]) -> int | None:
    """`stop_at_layer` that still runs (and fires the hooks of) the deepest of `layers`; None: run every block."""
    stop = max(layers) + 1
    return stop if stop < model.n_layers else None
