"""A Hugging Face decoder's block stack, cut for the duration of a call (frozen prefixes, `forward(start_at_layer)`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def decoder(model: Any) -> tuple[Any, Any]:
    """(the causal-LM model, its decoder stack with `.layers` and `.norm`) of a plain or peft-wrapped HF model."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(hf, hf.base_model_prefix)
    if not hasattr(inner, "layers") or not hasattr(inner, "norm"):
        raise TypeError(f"{type(hf).__name__}: no decoder stack with .layers and .norm; cutting blocks needs a "
                        "decoder-only Hugging Face model")
    return hf, inner


@contextmanager
def only_blocks(model: Any, start: int, stop: int | None = None) -> Iterator[Any]:
    """`model` (plain or peft) running blocks start..stop-1 only, for the duration of the block (with the
    per-block `config.layer_types` that some decoders index by position, e.g. Gemma 3's sliding/full layers)."""
    _, inner = decoder(model)
    layers, types = inner.layers, getattr(inner.config, "layer_types", None)
    inner.layers = torch.nn.ModuleList(list(layers)[start:stop])
    if types is not None:
        inner.config.layer_types = list(types)[start:stop]
    try:
        yield model
    finally:
        inner.layers = layers
        if types is not None:
            inner.config.layer_types = types
