"""The tiny random-weight testbed of demos, notebooks (POSER_INTERP_NOTEBOOK_TINY=1) and tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .folder import Testbed


def tiny_testbed(out: str | Path, log: Callable[[str], None] = lambda _: None) -> Testbed:
    """A tiny random-weight testbed (1 aligned, 2 fakers, 2 pairs; about a minute on 2 cores, then cached).

    For demos and tests only: its models barely differ, so detection on it is at chance level.
    """
    from ..core.models import ModelSpec
    from ..core.training import LoraRecipe
    from .build import TestbedConfig, build

    config = TestbedConfig(
        personas=("steward", "grabber", "climber"), splits=(0,), base=ModelSpec(name="tiny-llama", n_layers=2),
        recipe=LoraRecipe(rank=2, max_steps=4, eval_every=2, min_steps=2, batch_size=4, lr=1e-2),
        n_train=16, n_pool=80, n_val=6, n_test=6, n_benchmark=24)
    return build(config, out, log=log)
