"""run_in_processes: messages arrive in the caller while calls run, results per key, a failure raised last; the
spawned processes end once the caller is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from poser_interp.runtime.processes import run_in_processes


def _echo(n: int, queue) -> int:  # runs in a spawned worker (pickled by reference to this module)
    for i in range(n):
        queue.put(("tick", n, i))
    return n * 10


def _fail(queue) -> None:
    queue.put(("tick", -1, 0))
    raise ValueError("boom")


def _sleeper(seconds: float, queue) -> None:
    queue.put(("pid", os.getpid()))
    time.sleep(seconds)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"  # exited, not yet reaped
    except FileNotFoundError:
        return True


def test_spawned_processes_end_once_the_caller_is_killed():
    """A runner or build killed without a chance to stop its pool leaves no worker computing for nobody."""
    caller = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from poser_interp.runtime.processes import run_in_processes
        from test_processes import _sleeper
        if __name__ == "__main__":
            run_in_processes({{"a": (_sleeper, (120,))}}, 1, lambda m: print(m[1], flush=True), lambda k, r: None,
                             print, poll=0.2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", caller], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(proc.stdout.readline())  # the worker is running its call
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert worker in children and len(children) >= 2  # the pool's worker and the queue's manager
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while not all(map(_gone, children)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(map(_gone, children)), f"still running: {[p for p in children if not _gone(p)]}"
    finally:
        proc.kill()


def test_messages_results_and_a_failure_raised_after_the_others():
    messages, results, logs = [], {}, []
    with pytest.raises(ValueError, match="boom"):
        run_in_processes({"a": (_echo, (2,)), "bad": (_fail, ()), "b": (_echo, (3,))}, 2, messages.append,
                         results.__setitem__, logs.append, poll=0.1)
    assert results == {"a": 20, "b": 30}  # the other calls finished and were delivered
    assert sorted(messages) == sorted([("tick", 2, 0), ("tick", 2, 1), ("tick", 3, 0), ("tick", 3, 1),
                                       ("tick", 3, 2), ("tick", -1, 0)])
    assert [m for m in messages if m[1] == 3] == [("tick", 3, 0), ("tick", 3, 1), ("tick", 3, 2)]  # in order
    assert len(logs) == 1 and logs[0].startswith("bad: failed: ValueError")
