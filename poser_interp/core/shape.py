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
    cfg = _config_of(spec)
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def recorded_base(spec: Any) -> dict[str, Any]:
    """A base model spec as manifests record it: its fields, with the real depth and width from the model's config
    (a spec's `n_layers`/`d_model` are the tiny models' and read 4/64 for any other), read without its weights."""
    from dataclasses import asdict

    cfg = _config_of(spec)
    return {**asdict(spec), "n_layers": int(cfg.num_hidden_layers), "d_model": int(cfg.hidden_size)}


def _config_of(spec: Any) -> Any:
    from transformers import AutoConfig

    from ..core.models import TINY_ARCHS, model_dir, tiny_config
    from .hub import hub_file, is_hub_name

    if spec.name in TINY_ARCHS:
        cfg = tiny_config(spec.name, spec.n_layers, spec.d_model, 16)  # any vocabulary that holds the special ids
    elif is_hub_name(spec.name):  # its config.json alone: a model served by NDIF has no weights here
        cfg = AutoConfig.from_pretrained(hub_file(spec.name, "config.json").parent)
    else:
        cfg = AutoConfig.from_pretrained(model_dir(spec.name))
    return cfg
