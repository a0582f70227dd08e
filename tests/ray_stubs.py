"""A strategy whose Ray worker dies once (tests/test_ray_executor.py); not a test module.

Ray workers import this module through the test's `runtime_env` (`worker_process_setup_hook="ray_stubs.setup"`,
with tests/ on their PYTHONPATH), which registers the strategy there as the test registers it in the driver. The
worker dies only where `DIE_ONCE` names a marker file that does not exist yet: in the test's Ray workers on the first
attempt, never in the pytest process.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from poser_interp.strategies import PromptValues, Setting
from poser_interp.strategies.base import Score, mean_of

DIE_ONCE = "POSER_INTERP_TEST_DIE_ONCE"
"""Environment variable: the marker file whose absence makes a worker die after its first row (and create it)."""


@dataclass(frozen=True)
class DiesOnceConfig:
    steps: int = 2
    """Settings computed one after the other (the worker dies after the first, once)."""


class DiesOnce:
    """Deterministic per-prompt values (a hash of model, step and prompt) over `steps` settings; no model."""

    name: ClassVar[str] = "dies_once"
    needs_model: ClassVar[bool] = False

    def __init__(self, config: DiesOnceConfig = DiesOnceConfig()):
        self.config = config

    def settings(self) -> tuple[Setting, ...]:
        return tuple(Setting.of(step=i) for i in range(self.config.steps))

    def primary(self) -> Setting:
        return self.settings()[0]

    def preflight(self, prompts, testbed_root) -> None:
        pass

    def scores(self) -> tuple[Score, ...]:
        return (Score("v", "a hash of model, step and prompt", mean_of("v")),)

    def run(self, subject, prompts, settings) -> Iterator[PromptValues]:
        ids = tuple(p.id for p in prompts)
        for i, setting in enumerate(settings):
            values = [int.from_bytes(hashlib.sha256(f"{subject.id}/{setting.key}/{p}".encode()).digest()[:4], "big")
                      / 2**32 for p in ids]
            yield PromptValues(setting, ids, {"v": np.array(values)})
            marker = os.environ.get(DIE_ONCE)
            if i == 0 and marker and not os.path.exists(marker):
                open(marker, "w").close()
                time.sleep(1.0)  # the row just yielded reaches the driver first
                os._exit(1)  # as a kill or the OOM killer would end the worker: no exception, no cleanup


def setup() -> None:
    """Register the strategy (in a Ray worker at start-up; in the driver by the test)."""
    from poser_interp.strategies import registry

    if DiesOnce.name not in registry._REGISTRY:
        registry.register(DiesOnceConfig)(DiesOnce)
