"""Where units of work run: `local` (this machine's processes, `runtime.processes`) or `ray` (Ray tasks, on this
machine or a Ray cluster).

The Ray executor runs one Ray task per unit of work (a detection run's unit is one model with its strategies' missing
settings). Each task is a generator: every message it yields (a computed row, a log line) streams back to this
process while the task runs, and the caller stores it here, so this process stays the one writer of its output folder
(its lock and its resume work as with local workers). A task gets one CPU, and one GPU when the run computes on CUDA
(`--device cuda`; Ray shows each task its own GPU as cuda:0). A task whose worker dies (killed, out of memory, its
node lost) is retried up to `Executor.max_retries` times; Ray re-runs it from the start and passes on only the
messages the dead attempt had not delivered, so no row is stored twice. When the retries are spent, the other tasks
finish, what was stored stays valid, and the run stops with an error that says to rerun it: the rerun computes only
what is missing.

Ray is an optional extra (`pip install 'poser_interp[ray]'`); it is imported only when a Ray executor is used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError

EXECUTORS = ("local", "ray")
"""The executors `--executor` accepts."""

INSTALL_HINT = "pip install 'poser_interp[ray]' (or .venv/bin/pip install 'ray>=2.40')"


class ExecutorError(BackendError):
    """An executor cannot be used (unknown, not installed, its cluster does not answer) or a unit of work failed
    on it beyond its retries; the message names the fix."""


@dataclass(frozen=True)
class Executor:
    """How units of work run (`--executor`, `--ray-address`). Never changes a number: rows are bit-identical
    whatever runs them, so it is no part of a results folder's configuration."""

    kind: str = "local"
    """'local' (this process, or `--workers N` spawned processes) or 'ray' (one Ray task per unit of work)."""
    address: str | None = None
    """Ray only: the cluster to join ('HOST:PORT' of its head node, 'ray://HOST:PORT' for Ray Client, or 'auto'
    for the one `ray start` runs on this machine); None starts a private Ray instance on this machine with
    `--workers` CPUs, ended with the run."""
    max_retries: int = 2
    """Ray only: how many times a task whose worker died is run again before the run stops."""

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"


def check_executor(kind: str, address: str | None = None, connect_timeout: float = 5.0) -> Executor:
    """The executor for `--executor KIND [--ray-address ADDRESS]`, checked before anything is loaded or written:
    an unknown kind, an address without Ray, Ray not installed, and an address where nothing answers raise
    `ExecutorError` naming the fix."""
    if kind not in EXECUTORS:
        raise ExecutorError(f"--executor: {kind!r}: pass one of {', '.join(EXECUTORS)}")
    if address is not None and kind != "ray":
        raise ExecutorError(f"--ray-address {address} applies to --executor ray only; add --executor ray, or leave "
                            "--ray-address out")
    if kind == "ray":
        ray_module()
        if address is not None and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise ExecutorError(f"--ray-address {address}: a ray:// address (Ray Client) needs the client extra: "
                                "pip install 'ray[client]', or pass the head node's HOST:PORT from this cluster")
        if address is not None:
            check_address(address, connect_timeout)
    return Executor(kind, address)


def ray_module() -> Any:
    """`import ray`, or `ExecutorError` naming how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ExecutorError(f"--executor ray: Ray is not installed ({e}); {INSTALL_HINT}, or pass --executor "
                            "local") from None
    return ray


def check_address(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a Ray address where nothing answers (`ray.init` would retry for minutes); 'auto' is left
    to Ray, which finds a local cluster or says there is none."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ExecutorError(f"--ray-address: {address!r} is not HOST:PORT; pass the head node's address, e.g. "
                            "10.0.0.5:6379 (as `ray start --head` prints it), or 'auto'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ExecutorError(f"--ray-address {address}: no Ray cluster answers there ({e.strerror or e}); start one "
                            "with `ray start --head` on that machine, or leave --ray-address out to start Ray on "
                            "this one") from None


@contextlib.contextmanager
def ray_session(executor: Executor, workers: int) -> Iterator[Any]:
    """The `ray` module, connected: to Ray as already initialised in this process (left running), else to
    `executor.address`, else to a private local instance with `workers` CPUs; what this call started ends with it."""
    ray = ray_module()
    if ray.is_initialized():
        yield ray
        return
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING, "include_dashboard": False}
    try:
        if executor.address is not None:
            ray.init(address=executor.address, **common)
        else:
            ray.init(address="local", num_cpus=workers, **common)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = executor.address or "a local instance"
        raise ExecutorError(f"Ray could not start or connect to {where}: {e}; check --ray-address (or run `ray "
                            "status` there), or pass --executor local") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_on_ray(calls: Mapping[str, tuple[Callable[..., Iterator[Any]], tuple[Any, ...]]], workers: int,
               on_message: Callable[[Any], None], on_done: Callable[[str, Any], None], log: Callable[[str], None],
               executor: Executor, poll: float = 1.0, gpus: bool = False) -> None:
    """Run each `key: (fn, args)` as one Ray task, `fn(*args)` a generator, at most `workers` tasks at a time;
    every yielded message goes to `on_message` here, in order, as it arrives, and `on_done(key, None)` follows a
    task's last one. `fn` must be importable on the workers (a module-level function of an installed package).

    A failing task is logged and the first failure raised once every other task has finished (so their work is
    kept): an error raised by `fn` as itself, a worker that died beyond `executor.max_retries` as `ExecutorError`.
    gpus: each task asks for one GPU (a run on 'cuda'; Ray then shows the task its GPU as cuda:0); a CPU run's
    tasks ask for none, so they never hold a GPU they do not use. No call: Ray is not started."""
    if not calls:
        return
    with ray_session(executor, workers) as ray:
        if gpus and ray.cluster_resources().get("GPU", 0) < 1:
            raise ExecutorError("--device cuda with --executor ray: the Ray cluster has no GPU; pass --device cpu, "
                                "or join a cluster with GPUs (--ray-address)")
        remote = {fn: ray.remote(fn) for fn, _ in calls.values()}
        todo = list(calls.items())
        running: dict[Any, str] = {}
        failures: list[BaseException] = []
        log(f"ray: {len(calls)} tasks, at most {workers} at a time, "
            f"{'one GPU' if gpus else 'one CPU'} each ({_where(ray, executor)})")

        def submit() -> None:
            while todo and len(running) < workers:
                key, (fn, args) = todo.pop(0)
                task = remote[fn].options(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=executor.max_retries,
                                          name=f"poser_interp:{key}")
                running[task.remote(*args)] = key

        submit()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=poll)
            for gen in ready:
                key = running[gen]
                try:
                    ref = next(gen)
                except StopIteration:
                    del running[gen]
                    on_done(key, None)
                    continue
                try:
                    message = ray.get(ref)
                except Exception as e:  # the task failed: keep the others' work, raise once they are done
                    del running[gen]
                    failure = _unwrap(ray, key, e, executor)
                    log(f"{key}: failed: {failure}")
                    failures.append(failure)
                    continue
                on_message(message)
            submit()
    if failures:
        raise failures[0]


def _where(ray: Any, executor: Executor) -> str:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    where = f"cluster at {executor.address}" if executor.address else "this machine"
    return f"{where}: {len(nodes)} node{'s' if len(nodes) != 1 else ''}, pid {os.getpid()} stores the rows"


def _unwrap(ray: Any, key: str, error: BaseException, executor: Executor) -> BaseException:
    """The error to raise for a failed task: the task's own exception (without Ray's remote traceback), or, for
    a worker or node that died beyond the retries, `ExecutorError` saying the stored rows are kept."""
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    if isinstance(error, ray.exceptions.RayError):
        return ExecutorError(f"{key}: its Ray worker died and {executor.max_retries} retries did not complete it "
                             f"({type(error).__name__}); every row stored so far is kept: rerun the same command to "
                             "compute the rest")
    return error
