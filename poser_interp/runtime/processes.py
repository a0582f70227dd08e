"""Calls in spawned worker processes whose messages come back to this one (testbed builds, detection runs).

Each call gets a queue as its last argument; what it puts there is handed to `on_message` here, in order, while
the calls run (so the caller can store results as they arrive), and each call's return value to `on_done`. A failing
call is logged and the first failure raised once every other call has finished, so their work is kept. Every
spawned process (workers and the queue's manager) ends itself within `poll` seconds once this process is gone
(killed without a chance to stop them), so no orphan goes on computing for nobody beside whatever runs next; what
the caller stored (a build's checkpoints, a runner's rows) stays, so a rerun resumes.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing.managers import SyncManager
from typing import Any


def exit_with_parent(parent: int, poll: float) -> None:
    """Process initializer: a daemon thread ends this process (`os._exit(1)`) once `parent` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_in_processes(calls: Mapping[str, tuple[Callable[..., Any], tuple[Any, ...]]], workers: int,
                     on_message: Callable[[Any], None], on_done: Callable[[str, Any], None],
                     log: Callable[[str], None], poll: float = 1.0) -> None:
    """Run `fn(*args, queue)` for each `key: (fn, args)` in `workers` spawned processes (torch + fork is unsafe)."""
    ctx = multiprocessing.get_context("spawn")
    failures: list[BaseException] = []
    watch = (os.getpid(), poll)
    manager = SyncManager(ctx=ctx)
    manager.start(exit_with_parent, watch)
    with manager, ProcessPoolExecutor(max(1, min(workers, len(calls))), mp_context=ctx, initializer=exit_with_parent,
                                      initargs=watch) as pool:
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
