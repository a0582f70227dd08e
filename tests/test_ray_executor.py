"""The Ray executor (`--executor ray`, `runtime.executors`) on the tiny testbed, on a Ray instance on this machine.

Rows equal `--executor local` bit for bit; a worker that dies is retried, or the run stops with what was stored
intact and a rerun completes it; bad inputs are one line and write nothing. The tests that start Ray are skipped
when Ray is not installed (it is the optional `[ray]` extra); each starts Ray with 2 CPUs at most and shuts it down.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.evaluation.results import ROWS, ResultsStore, rows_equal
from poser_interp.evaluation.runner import run_detection
from poser_interp.runtime.executors import Executor, ExecutorError, check_executor
from poser_interp.strategies import make

try:
    import ray
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (the optional extra: pip install "
                                                   "'poser_interp[ray]'); the Ray executor is not tested")
TESTS = Path(__file__).resolve().parent


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def detect_args(testbed, out: Path, *extra: str) -> list[str]:
    return ["detect", "--testbed", str(testbed.root), "--out", str(out), "--strategies", "noise", "--samples", "2",
            "--max-prompts", "4", "--no-plots", *extra]


def one_line_refusal(res, new: Path, *excerpts: str) -> None:
    out = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error:") and len(res.output.strip().splitlines()) == 1, res.output
    assert "Traceback" not in res.output
    for excerpt in excerpts:
        assert excerpt in out, res.output
    assert not new.exists()  # nothing written


@pytest.fixture
def ray_stub(monkeypatch, tmp_path):
    """Ray with 2 CPUs whose workers register the `dies_once` strategy (tests/ray_stubs.py) and die once, after
    their first row, where the marker file does not exist yet; the driver registers it too. Shut down after."""
    sys.path.insert(0, str(TESTS))
    import ray_stubs

    from poser_interp.strategies import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the stub is gone after the test
    ray_stubs.setup()
    marker = tmp_path / "died"
    path = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", ray_stubs.DIE_ONCE: str(marker)},
                          "worker_process_setup_hook": "ray_stubs.setup"})
    try:
        yield marker
    finally:
        ray.shutdown()
        sys.path.remove(str(TESTS))


def stub_strategies():
    return [make("dies_once"), make("random", seed=0)]


# --- rows equal to a local run ------------------------------------------------------------------------------
@needs_ray
def test_ray_rows_equal_local_rows_and_a_rerun_computes_nothing(testbed, tmp_path):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    res = cli(*detect_args(testbed, local))
    assert res.exit_code == 0, res.output
    res = cli(*detect_args(testbed, on_ray, "--executor", "ray", "--workers", "2"))
    assert res.exit_code == 0, res.output
    assert "ray: 2 tasks, at most 2 at a time, one CPU each" in res.output
    assert not ray.is_initialized()  # the Ray instance the run started ended with it
    stored = ResultsStore.open(on_ray).rows()
    assert len(stored) == len(ResultsStore.open(local).rows()) > 0
    assert rows_equal(stored, ResultsStore.open(local).rows())  # the stored values, bit for bit
    before = (on_ray / ROWS).read_bytes()
    res = cli(*detect_args(testbed, on_ray, "--executor", "ray", "--workers", "2"))  # resumes: nothing to do
    assert res.exit_code == 0 and (on_ray / ROWS).read_bytes() == before, res.output
    assert "ray:" not in res.output  # nothing to compute: Ray is not even started


# --- a worker that dies ---------------------------------------------------------------------------------------
@needs_ray
def test_a_worker_killed_mid_task_is_retried_and_the_rows_equal_local(testbed, tmp_path, ray_stub):
    reference = tmp_path / "local"
    run_detection(testbed, stub_strategies(), reference, log=lambda _: None)  # no Ray: nothing dies here
    logs: list[str] = []
    run_detection(testbed, stub_strategies(), tmp_path / "ray", log=logs.append, workers=2,
                  executor=Executor("ray", max_retries=1))
    assert ray_stub.exists()  # a worker did die, after its first row
    assert ray.is_initialized()  # Ray started by the caller is left running
    stored = ResultsStore.open(tmp_path / "ray").rows()
    assert len({r.key for r in stored}) == len(stored)  # the dead attempt's row was not stored twice
    assert rows_equal(stored, ResultsStore.open(reference).rows())


@needs_ray
def test_a_worker_dead_beyond_its_retries_stops_the_run_with_the_store_intact_and_a_rerun_completes_it(
        testbed, tmp_path, ray_stub):
    reference, out = tmp_path / "local", tmp_path / "ray"
    run_detection(testbed, stub_strategies(), reference, log=lambda _: None)
    logs: list[str] = []
    with pytest.raises(ExecutorError, match="its Ray worker died and 0 retries did not complete it.*rerun the same "
                                            "command"):
        run_detection(testbed, stub_strategies(), out, log=logs.append, workers=2,
                      executor=Executor("ray", max_retries=0))
    assert any("failed" in line for line in logs)
    partial = ResultsStore.open(out).rows()  # a valid store: every row it holds is a finished, correct one
    full = {r.key: r for r in ResultsStore.open(reference).rows()}
    assert 0 < len(partial) < len(full)
    assert rows_equal(partial, [full[r.key] for r in partial])
    cut = {r.key for r in partial}
    appended: list = []
    real_append = ResultsStore.append
    try:
        ResultsStore.append = lambda self, row: (appended.append(row.key), real_append(self, row))[1]  # type: ignore
        run_detection(testbed, stub_strategies(), out, log=lambda _: None, workers=2,
                      executor=Executor("ray", max_retries=0))
    finally:
        ResultsStore.append = real_append  # type: ignore[method-assign]
    assert appended and not set(appended) & cut  # the rerun computed only what was missing
    assert rows_equal(ResultsStore.open(out).rows(), list(full.values()))


# --- bad inputs: one line naming the fix, nothing written ----------------------------------------------------
def test_an_unknown_executor_is_one_line(testbed, tmp_path):
    new = tmp_path / "new"
    one_line_refusal(cli(*detect_args(testbed, new, "--executor", "bogus")), new,
                     "error: --executor: 'bogus': pass one of local, ray")
    one_line_refusal(cli("suite", "--testbed", str(testbed.root), "--out", str(new), "--executor", "bogus"), new,
                     "pass one of local, ray")
    one_line_refusal(cli(*detect_args(testbed, new, "--ray-address", "auto")), new,
                     "--ray-address auto applies to --executor ray only")


def test_executor_ray_without_ray_installed_is_one_line(testbed, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    new = tmp_path / "new"
    one_line_refusal(cli(*detect_args(testbed, new, "--executor", "ray")), new,
                     "error: --executor ray: Ray is not installed", "pip install 'poser_interp[ray]'",
                     "or pass --executor local")
    one_line_refusal(cli("suite", "--testbed", str(testbed.root), "--out", str(new), "--executor", "ray"), new,
                     "Ray is not installed")


@needs_ray
def test_a_ray_address_that_does_not_answer_is_one_line(testbed, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    new = tmp_path / "new"
    one_line_refusal(cli(*detect_args(testbed, new, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}")), new,
                     f"error: --ray-address 127.0.0.1:{port}: no Ray cluster answers there",
                     "start one with `ray start --head` on that machine")
    one_line_refusal(cli(*detect_args(testbed, new, "--executor", "ray", "--ray-address", "headnode")), new,
                     "'headnode' is not HOST:PORT")
    if importlib.util.find_spec("grpc") is None:  # Ray Client needs ray[client]
        one_line_refusal(cli(*detect_args(testbed, new, "--executor", "ray", "--ray-address", f"ray://127.0.0.1:{port}")),
                         new, "needs the client extra: pip install 'ray[client]'")
    assert not ray.is_initialized()


def test_check_executor_defaults():
    assert check_executor("local") == Executor("local", None) and not Executor().is_ray
    if ray is not None:
        assert check_executor("ray").is_ray
    with pytest.raises(ExecutorError, match="pass one of local, ray"):
        check_executor("Ray")
