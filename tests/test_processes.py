"""run_in_processes: messages arrive in the caller while calls run, results per key, a failure raised last."""

from __future__ import annotations

import pytest

from poser_interp.core.processes import run_in_processes


def _echo(n: int, queue) -> int:  # runs in a spawned worker (pickled by reference to this module)
    for i in range(n):
        queue.put(("tick", n, i))
    return n * 10


def _fail(queue) -> None:
    queue.put(("tick", -1, 0))
    raise ValueError("boom")


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
