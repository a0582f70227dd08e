"""A model's shape (layers, attention heads) from its spec, without loading its weights.

Strategies' defaults scale to it (`StrategyConfig.for_model`).
"""

from __future__ import annotations

from typing import Any


def n_layers_of(spec: Any) -> int:
    """Layer count of a model spec without loading its weights."""
    return shape_of(spec)[0]


def shape_of(spec: Any) -> tuple[int, int]:
    """(layers, attention heads) of a model spec without loading its weights."""
    from transformers import AutoConfig

    from ..core.models import TINY_ARCHS, model_dir, tiny_config

    if spec.name in TINY_ARCHS:
        cfg = tiny_config(spec.name, spec.n_layers, spec.d_model, 16)  # any vocabulary that holds the special ids
    else:
        cfg = AutoConfig.from_pretrained(model_dir(spec.name))
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)
