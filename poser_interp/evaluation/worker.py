"""One model's missing rows in a worker process of the parallel runner (`run_detection(..., workers=N)`).

The worker rebuilds the strategies from their stored configs (as `evaluate` does), loads the model from the
testbed folder (hash-checked), and sends every row through the queue as soon as it is computed; the parent
alone writes the results store. A worker whose parent is gone stops (`runtime.processes`) instead of computing for
nobody. `worker_messages` is the same work as a generator: the body of a Ray task (`runtime.executors`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ..core.precision import Precision, computing_in, precision_for
from ..data.prompt_style import using_style
from ..data.scenario import Scenario
from ..strategies.base import Subject, from_config
from ..testbed.folder import Testbed


def rows_in_worker(root: str, model: str, prompts: Sequence[Scenario], specs: Sequence[tuple[str, dict[str, Any]]],
                   todo: Mapping[str, Sequence[str]], queue: Any, threads: int = 1,
                   precision: Precision = "fp32", device: str = "cpu", on: tuple[str, bool] = ("tl", False)) -> None:
    """Compute `model`'s settings in `todo` (strategy name -> setting keys) and put each row on `queue` as
    ("row", model, strategy name, PromptValues, seconds); log lines as ("log", model, None, text, None).
    precision, device: the run's `RunConfig.precision` and `RunConfig.device`; on: the run's (backend, remote)."""
    for message in worker_messages(root, model, prompts, specs, todo, precision, threads, device, on):
        queue.put(message)


def worker_messages(root: str, model: str, prompts: Sequence[Scenario], specs: Sequence[tuple[str, dict[str, Any]]],
                    todo: Mapping[str, Sequence[str]], precision: Precision = "fp32", threads: int = 1,
                    device: str = "cpu", on: tuple[str, bool] = ("tl", False)) -> Iterator[tuple[Any, ...]]:
    """The messages of `rows_in_worker`, yielded as computed: the body of a Ray task (`runtime.executors`), whose
    yields stream back to the runner while it runs. device: a Ray task given a GPU sees it as 'cuda' (cuda:0)."""
    torch.set_num_threads(threads)
    testbed = Testbed.open(root)
    subject = Subject(model, functools.partial(testbed.load, model, device, backend=on[0], remote=on[1]),
                      functools.partial(testbed.spec, model), device)
    for name, config in specs:
        keys = set(todo.get(name, ()))
        if not keys:
            continue
        strategy = from_config(name, config)
        settings = [s for s in strategy.settings() if s.key in keys]
        if strategy.needs_model and not subject.loaded:
            t0 = time.perf_counter()
            _ = subject.model
            yield ("log", model, None, f"{model}: loaded in {time.perf_counter() - t0:.1f} s", None)
        t0 = time.perf_counter()
        with computing_in(precision_for(strategy, precision), device), using_style(testbed.prompt_format):
            for values in strategy.run(subject, prompts, settings):
                now = time.perf_counter()
                yield ("row", model, name, values, now - t0)
                t0 = now
