"""Calls in spawned worker processes whose messages come back to this one (testbed builds, detection runs).

Each call gets a queue as its last argument; what it puts there is handed to `on_message` here, in order, while
the calls run (so the caller can store results as they arrive), and each call's return value to `on_done`. A failing
call is logged and the first failure raised once every other call has finished, so their work is kept.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any


def run_in_processes(calls: Mapping[str, tuple[Callable[..., Any], tuple[Any, ...]]], workers: int,
                     on_message: Callable[[Any], None], on_done: Callable[[str, Any], None],
                     log: Callable[[str], None], poll: float = 1.0) -> None:
    """Run `fn(*args, queue)` for each `key: (fn, args)` in `workers` spawned processes (torch + fork is unsafe)."""
    ctx = multiprocessing.get_context("spawn")
    failures: list[BaseException] = []
    with ctx.Manager() as manager, ProcessPoolExecutor(max(1, min(workers, len(calls))), mp_context=ctx) as pool:
        messages = manager.Queue()
        futures = {pool.submit(fn, *args, messages): key for key, (fn, args) in calls.items()}

        def drain() -> None:
            while True:
                try:
                    message = messages.get_nowait()
                except queue_module.Empty:
                    return
                on_message(message)

        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=poll, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                try:
                    result = future.result()
                    drain()  # what the call put just before it returned
                    on_done(futures[future], result)
                except Exception as e:  # keep the other calls' work; raise once they are done
                    log(f"{futures[future]}: failed: {e!r}")
                    failures.append(e)
        drain()
    if failures:
        raise failures[0]
