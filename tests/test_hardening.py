"""Hardening: one writer per results folder, options checked before anything is written, no silent wrong result.

On the tiny testbed and tiny random models only. docs/bad-inputs.md lists the bad inputs; `test_bad_inputs` drives
the ones that need no real model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.errors import DataError
from poser_interp.locking import LOCK_NAME, FolderInUseError, hold, holder
from poser_interp.results import ROWS, ResultsStore
from poser_interp.runner import RunConfig, run_detection, tiny_testbed
from poser_interp.strategies import make

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (the lock file, empty between runs, is not results)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def baselines(seed: int = 0):
    return [make("random", seed=seed), make("blackbox")]


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    return tiny_testbed(tmp_path_factory.mktemp("tiny_testbed"))


@pytest.fixture(scope="module")
def results(testbed, tmp_path_factory) -> Path:
    """A complete results folder: the baselines on 4 prompts per pair."""
    out = tmp_path_factory.mktemp("results")
    run_detection(testbed, baselines(), out, config=RunConfig(max_prompts=4), log=lambda _: None)
    return out


def detect_args(testbed, out: Path, *extra: str) -> list[str]:
    return ["detect", "--strategies", "blackbox", "--testbed", str(testbed.root), "--out", str(out),
            "--max-prompts", "4", "--no-plots", *extra]


# --- one writer per results folder --------------------------------------------------------------------------
def test_a_second_writer_is_refused_and_readers_keep_working(testbed, results, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(results, out)
    code = ("import sys, time\nfrom poser_interp.locking import hold\nwith hold(sys.argv[1]):\n"
            "    print('ready', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert holder(out)["pid"] == proc.pid
        before = digest(out)
        res = cli(*detect_args(testbed, out))
        assert res.exit_code == 2, res.output
        assert f"is being written by process {proc.pid}" in res.output and "Traceback" not in res.output
        assert "pick another --out" in res.output
        with pytest.raises(FolderInUseError, match=str(proc.pid)):
            run_detection(testbed, baselines(), out, config=RunConfig(max_prompts=4), log=lambda _: None)
        read = cli("report", str(out))  # a reader needs no lock
        assert read.exit_code == 0 and "neg_margin" in read.output, read.output
        assert digest(out) == before
    finally:
        proc.kill()  # SIGKILL: no clean-up runs, the OS drops the flock
        proc.wait()
    res = cli(*detect_args(testbed, out))  # the killed run's lock is stale: taken over
    assert res.exit_code == 0, res.output
    assert (out / LOCK_NAME).read_text() == ""  # released, no pid left behind
    assert digest(out)[ROWS] == before[ROWS]  # nothing was left to compute


def test_a_lock_whose_holder_is_gone_is_taken_over(tmp_path):
    """A dead holder whose lock is still held (a child it forked inherited it) is stale too."""
    import fcntl

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"pid": gone.pid, "host": socket.gethostname()}).encode())
        with hold(tmp_path):
            assert holder(tmp_path)["pid"] == os.getpid()
            with hold(tmp_path):  # re-entrant within a process
                pass
            assert holder(tmp_path)["pid"] == os.getpid()
        assert holder(tmp_path) is None
    finally:
        os.close(fd)


def test_a_live_holder_is_never_taken_over(tmp_path):
    import fcntl

    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"pid": os.getppid(), "host": socket.gethostname()}).encode())
        with pytest.raises(FolderInUseError, match=f"process {os.getppid()}"), hold(tmp_path):
            pass
    finally:
        os.close(fd)


def test_a_read_only_store_never_writes(results):
    store = ResultsStore.open(results)
    with pytest.raises(DataError, match="read-only"):
        store.append(store.rows()[0])


# --- options checked before anything is written --------------------------------------------------------------
def test_a_refused_option_leaves_no_folder_and_the_fix_runs(testbed, tmp_path):
    out = tmp_path / "out"
    for bad, message in ((["--layers", "99"], "layer 99 does not exist: the testbed's base model has layers 0..1"),
                         (["--layers", "four"], "'four' is not a layer number"),
                         (["--scales", "abc"], "'abc' is not a number"),
                         (["--max-prompts", "-1"], "must be >= 0, got -1")):
        res = cli(*detect_args(testbed, out, "--strategies", "noise"), *bad)
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("error: --")
        assert not out.exists()  # refused before anything was written
    res = cli(*detect_args(testbed, out, "--strategies", "noise", "--layers", "1", "--samples", "1"))
    assert res.exit_code == 0, res.output


def test_a_manifest_without_rows_does_not_block_a_new_config(testbed, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def killed(self, row):
        raise KeyboardInterrupt  # killed before the first row was stored

    monkeypatch.setattr(ResultsStore, "append", killed)
    with pytest.raises(KeyboardInterrupt):
        run_detection(testbed, baselines(), out, config=RunConfig(max_prompts=4), log=lambda _: None)
    monkeypatch.undo()
    assert (out / "manifest.json").exists() and not (out / ROWS).exists()
    ev = run_detection(testbed, baselines(seed=1), out, config=RunConfig(max_prompts=3, seed=1), log=lambda _: None)
    assert ev.primary("random").summary.n_decided == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 1 and manifest["config"]["run"]["max_prompts"] == 3
    with pytest.raises(DataError, match="another configuration.*Use a new --out directory"):  # rows exist now
        run_detection(testbed, baselines(), out, config=RunConfig(max_prompts=4), log=lambda _: None)


def test_run_config_refuses_a_negative_prompt_cap():
    with pytest.raises(DataError, match="--max-prompts"):
        RunConfig(max_prompts=-1)
